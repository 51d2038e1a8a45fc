//! Authentication of REST callers: `Authorization: Bearer <API key>` on every `/api/v1` route
//! except the OpenAPI document.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use time::OffsetDateTime;

use crate::AppState;
use crate::domain::{ApiKeyId, Role, TenantScope, secrets};
use crate::error::{Error, ErrorCode};
use crate::storage::StoreError;

/// Who is calling, and what they may see.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key used.
    pub key_id: ApiKeyId,
    /// Its name, for logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The tenants it may see.
    pub scope: TenantScope,
}

/// Middleware: finds the caller's key, or answers 401 with a problem document.
pub async fn require_principal(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, Error> {
    let refuse = |message: &str| Error::new(ErrorCode::Unauthenticated, message);
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| refuse("send Authorization: Bearer <API key>"))?;
    let key = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| refuse("the Authorization header must be: Bearer <API key>"))?;
    let now = OffsetDateTime::now_utc();
    let stored = match state.store.use_api_key(&secrets::hash(key), now).await {
        Ok(stored) => stored,
        Err(StoreError::NotFound) => return Err(refuse("the API key is not valid")),
        Err(e) => return Err(Error::from_store(e, "API key")),
    };
    if stored.revoked_at.is_some() || stored.expires_at.is_some_and(|at| at <= now) {
        return Err(refuse("the API key is not valid"));
    }
    let scope = match stored.role {
        Role::Administrator => TenantScope::All,
    };
    request.extensions_mut().insert(Principal {
        key_id: stored.id,
        name: stored.name,
        role: stored.role,
        scope,
    });
    Ok(next.run(request).await)
}

//! API keys: created by administrators with a role, assigned tenants and (for integrations)
//! named operations; shown once, stored hashed, optionally expiring, revocable, and listed with
//! when they were last used.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json as ResponseJson};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit;
use super::auth::Principal;
use super::page::{PageQuery, encode};
use super::problem::{Json, Path, Problem, Query};
use crate::AppState;
use crate::domain::{ApiKey, ApiKeyId, AuditAction, NewApiKey, Operation, Role, TenantId, secrets};
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

/// A role: what a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    /// Everything, on every tenant.
    Administrator,
    /// Reads and acts (run-now, enrollment tokens) on its assigned tenants.
    Technician,
    /// Reads its assigned tenants.
    Viewer,
    /// Only the operations its key names, on its assigned tenants (API keys only).
    Integration,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Administrator => Role::Administrator,
            RoleName::Technician => Role::Technician,
            RoleName::Viewer => Role::Viewer,
            RoleName::Integration => Role::Integration,
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Administrator => RoleName::Administrator,
            Role::Technician => RoleName::Technician,
            Role::Viewer => RoleName::Viewer,
            Role::Integration => RoleName::Integration,
        }
    }
}

/// `Ok(name)` trimmed, or a 400 naming the rule.
pub(super) fn valid_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::invalid("name must be 1 to 200 printable characters"));
    }
    Ok(name.to_owned())
}

/// A 400 unless the tenant assignments fit the role.
pub(super) fn check_assignments(role: Role, tenants: &[Uuid]) -> Result<(), Error> {
    match role {
        Role::Administrator if !tenants.is_empty() => Err(Error::invalid(
            "an administrator sees every tenant; leave tenant_ids empty",
        )),
        Role::Technician | Role::Viewer | Role::Integration if tenants.is_empty() => {
            Err(Error::invalid(format!(
                "a {} sees only its assigned tenants; name at least one in tenant_ids",
                role.as_str()
            )))
        }
        _ if tenants.len() > 1000 => Err(Error::invalid("at most 1000 tenant_ids")),
        _ => Ok(()),
    }
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Whose or what it is, such as `halopsa-sync` or `alice@msp.example`.
    #[schema(example = "halopsa-sync")]
    pub name: String,
    /// What it may do.
    #[schema(example = "integration")]
    pub role: RoleName,
    /// The tenants it may see; required for every role but administrator (which sees all).
    #[serde(default)]
    pub tenant_ids: Vec<Uuid>,
    /// For an integration, the operations it may perform (at least one), any of:
    /// `tenants.read`, `agents.read`, `agents.run`, `status.read`, `fleet.read`, `checks.read`,
    /// `enrollment_tokens.read`, `enrollment_tokens.manage`. Empty for other roles.
    #[serde(default)]
    #[schema(example = json!(["status.read"]))]
    pub operations: Vec<String>,
    /// Days until it expires, 1 to 3650; omit for a key that does not expire.
    #[schema(example = 90)]
    pub expires_in_days: Option<u32>,
}

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Its id.
    pub id: Uuid,
    /// Whose or what it is.
    pub name: String,
    /// What it may do.
    pub role: RoleName,
    /// The tenants it may see (empty for an administrator, which sees all).
    pub tenant_ids: Vec<Uuid>,
    /// For an integration, the operations it may perform.
    pub operations: Vec<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// When it stops working, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.0,
            name: k.name,
            role: k.role.into(),
            tenant_ids: k.tenants.into_iter().map(|t| t.0).collect(),
            operations: k
                .operations
                .into_iter()
                .map(|o| o.as_str().to_owned())
                .collect(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just created: the only response that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The secret, to send as `Authorization: Bearer <key>`. It is not shown again.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub record: ApiKeyView,
}

/// A page of API keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyPage {
    /// The keys, in creation order.
    pub items: Vec<ApiKeyView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Creates an API key. Administrators only.
#[utoipa::path(
    post,
    path = "/api-keys",
    tag = "access",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; the secret is in `key` and is not shown again", body = CreatedApiKey),
        (status = 400, description = "Malformed body, or assignments that do not fit the role", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A tenant in tenant_ids does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_api_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, ResponseJson<CreatedApiKey>), Error> {
    principal.require(Operation::ManageApiKeys)?;
    let name = valid_name(&body.name)?;
    let role = Role::from(body.role);
    check_assignments(role, &body.tenant_ids)?;
    let operations = body
        .operations
        .iter()
        .map(|o| {
            Operation::parse(o)
                .filter(|op| !op.is_administrative())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "operation {o:?} is not one an integration may be granted"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match (role, operations.is_empty()) {
        (Role::Integration, true) => {
            return Err(Error::invalid(
                "an integration key must name at least one operation",
            ));
        }
        (Role::Administrator | Role::Technician | Role::Viewer, false) => {
            return Err(Error::invalid(
                "operations are only for integration keys; other roles get their role's operations",
            ));
        }
        _ => {}
    }
    let expires_at = match body.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(OffsetDateTime::now_utc() + Duration::days(i64::from(days))),
        Some(days) => {
            return Err(Error::invalid(format!(
                "expires_in_days {days} is out of range; use 1 to 3650"
            )));
        }
    };
    let secret = secrets::generate("wbh_key_");
    let key = state
        .store
        .create_api_key(NewApiKey {
            name,
            role,
            tenants: body.tenant_ids.iter().copied().map(TenantId).collect(),
            operations,
            key_hash: secrets::hash(&secret),
            expires_at,
        })
        .await
        .map_err(|e| Error::from_store(e, "a tenant in tenant_ids"))?;
    if let Some(owner) = principal.owner {
        // The key belongs to the user the caller acts for (signed in, or through a key that
        // user owns): it dies with the user and never does more than the user may. Its secret
        // is not out yet, so a failure here leaves nothing usable.
        if let Err(e) = state.store.set_api_key_owner(key.id, owner).await {
            let _ = state
                .store
                .revoke_api_key(key.id, OffsetDateTime::now_utc())
                .await;
            return Err(Error::from_store(e, "API key"));
        }
    }
    audit::record(
        &state,
        principal.audit_event(AuditAction::ApiKeyCreated, None, Some(key.id.0)),
    )
    .await?;
    tracing::info!(key_id = %key.id, role = key.role.as_str(), by = %principal.name, "api key created");
    Ok((
        StatusCode::CREATED,
        ResponseJson(CreatedApiKey {
            key: secret,
            record: key.into(),
        }),
    ))
}

/// Lists API keys (revoked and expired ones too), without their secrets. Administrators only.
#[utoipa::path(
    get,
    path = "/api-keys",
    tag = "access",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of API keys", body = ApiKeyPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_api_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PageQuery>,
) -> Result<ResponseJson<ApiKeyPage>, Error> {
    principal.require(Operation::ManageApiKeys)?;
    let page = state
        .store
        .list_api_keys(query.to_request()?)
        .await
        .map_err(|e| Error::from_store(e, "API key"))?;
    let next_cursor = if page.has_more {
        page.items.last().map(|k| encode(&k.id.0))
    } else {
        None
    };
    Ok(ResponseJson(ApiKeyPage {
        items: page
            .items
            .into_iter()
            .map(|k| state.activity.overlay_api_key(k).into())
            .collect(),
        next_cursor,
    }))
}

/// Revokes an API key at once. Administrators only.
#[utoipa::path(
    delete,
    path = "/api-keys/{key_id}",
    tag = "access",
    params(("key_id" = Uuid, Path, description = "The API key")),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = ApiKeyView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such API key", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(key_id): Path<Uuid>,
) -> Result<ResponseJson<ApiKeyView>, Error> {
    principal.require(Operation::ManageApiKeys)?;
    let id = ApiKeyId(key_id);
    let key = state
        .store
        .revoke_api_key(id, OffsetDateTime::now_utc())
        .await
        .map_err(|e| Error::from_store(e, format_args!("API key {id}")))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::ApiKeyRevoked, None, Some(id.0)),
    )
    .await?;
    tracing::info!(key_id = %id, by = %principal.name, "api key revoked");
    Ok(ResponseJson(state.activity.overlay_api_key(key).into()))
}

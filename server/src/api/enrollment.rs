//! Enrollment tokens: created per tenant, expiring, limited in uses, revocable. The secret is
//! shown once, in the response that creates it; only its hash is kept.

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
use super::problem::{Json, Path, Problem};
use crate::AppState;
use crate::domain::{
    AuditAction, EnrollmentToken, EnrollmentTokenId, NewEnrollmentToken, Operation, TenantId,
    secrets,
};
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// A new enrollment token.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// What the token is for, such as the server it will enroll.
    #[schema(example = "AADCONNECT01")]
    #[serde(default)]
    pub description: String,
    /// Hours until it expires, 1 to 720 (default 24).
    #[schema(example = 24)]
    pub expires_in_hours: Option<u32>,
    /// How many agents it may enroll, 1 to 1000 (default 1).
    #[schema(example = 1)]
    pub max_uses: Option<u32>,
}

/// An enrollment token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// Its id.
    pub id: Uuid,
    /// The tenant agents enrolled with it join.
    pub tenant_id: Uuid,
    /// What it is for.
    pub description: String,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// How many agents it may enroll.
    pub max_uses: u32,
    /// How many it has enrolled.
    pub uses: u32,
    /// When it was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<EnrollmentToken> for EnrollmentTokenView {
    fn from(t: EnrollmentToken) -> Self {
        Self {
            id: t.id.0,
            tenant_id: t.tenant_id.0,
            description: t.description,
            expires_at: t.expires_at,
            max_uses: t.max_uses,
            uses: t.uses,
            revoked_at: t.revoked_at,
            created_at: t.created_at,
        }
    }
}

/// A token just created: the only response that carries its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The secret to give to `wbhealth-agent enroll --token`. It is not shown again.
    pub token: String,
    /// The token's record.
    #[serde(flatten)]
    pub record: EnrollmentTokenView,
}

/// Creates an enrollment token for a tenant.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/enrollment-tokens",
    tag = "enrollment",
    params(("tenant_id" = Uuid, Path, description = "The tenant agents will join")),
    request_body = CreateEnrollmentToken,
    responses(
        (status = 201, description = "Created; the secret is in `token` and is not shown again", body = CreatedEnrollmentToken),
        (status = 400, description = "Malformed body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
    Json(body): Json<CreateEnrollmentToken>,
) -> Result<(StatusCode, ResponseJson<CreatedEnrollmentToken>), Error> {
    principal.require(Operation::ManageEnrollmentTokens)?;
    let hours = body.expires_in_hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(Error::invalid(format!(
            "expires_in_hours {hours} is out of range; use 1 to 720"
        )));
    }
    let max_uses = body.max_uses.unwrap_or(1);
    if !(1..=1000).contains(&max_uses) {
        return Err(Error::invalid(format!(
            "max_uses {max_uses} is out of range; use 1 to 1000"
        )));
    }
    let description = body.description.trim();
    if description.chars().count() > 200 || description.chars().any(char::is_control) {
        return Err(Error::invalid(
            "description must be at most 200 printable characters",
        ));
    }
    let tenant = TenantId(tenant_id);
    let secret = secrets::generate("wbh_enroll_");
    let token = state
        .store
        .create_enrollment_token(
            &principal.scope,
            NewEnrollmentToken {
                tenant_id: tenant,
                token_hash: secrets::hash(&secret),
                description: description.to_owned(),
                expires_at: OffsetDateTime::now_utc() + Duration::hours(i64::from(hours)),
                max_uses,
            },
        )
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {tenant}")))?;
    audit::record(
        &state,
        principal.audit_event(
            AuditAction::EnrollmentTokenCreated,
            Some(tenant),
            Some(token.id.0),
        ),
    )
    .await?;
    tracing::info!(tenant_id = %tenant, token_id = %token.id, by = %principal.name, "enrollment token created");
    Ok((
        StatusCode::CREATED,
        ResponseJson(CreatedEnrollmentToken {
            token: secret,
            record: token.into(),
        }),
    ))
}

/// Lists a tenant's enrollment tokens, without their secrets.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/enrollment-tokens",
    tag = "enrollment",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tokens, oldest first", body = Vec<EnrollmentTokenView>),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<Vec<EnrollmentTokenView>>, Error> {
    principal.require(Operation::ReadEnrollmentTokens)?;
    let tenant = TenantId(tenant_id);
    let tokens = state
        .store
        .list_enrollment_tokens(&principal.scope, tenant)
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {tenant}")))?;
    Ok(ResponseJson(tokens.into_iter().map(Into::into).collect()))
}

/// Revokes an enrollment token; agents it already enrolled keep working.
#[utoipa::path(
    delete,
    path = "/tenants/{tenant_id}/enrollment-tokens/{token_id}",
    tag = "enrollment",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant"),
        ("token_id" = Uuid, Path, description = "The token"),
    ),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = EnrollmentTokenView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token in this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant_id, token_id)): Path<(Uuid, Uuid)>,
) -> Result<ResponseJson<EnrollmentTokenView>, Error> {
    principal.require(Operation::ManageEnrollmentTokens)?;
    let (tenant, id) = (TenantId(tenant_id), EnrollmentTokenId(token_id));
    let token = state
        .store
        .revoke_enrollment_token(&principal.scope, tenant, id, OffsetDateTime::now_utc())
        .await
        .map_err(|e| {
            Error::from_store(e, format_args!("enrollment token {id} in tenant {tenant}"))
        })?;
    audit::record(
        &state,
        principal.audit_event(
            AuditAction::EnrollmentTokenRevoked,
            Some(tenant),
            Some(id.0),
        ),
    )
    .await?;
    tracing::info!(tenant_id = %tenant, token_id = %id, by = %principal.name, "enrollment token revoked");
    Ok(ResponseJson(token.into()))
}

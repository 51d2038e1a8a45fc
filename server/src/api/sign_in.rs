//! Signing in and out: a user trades name and password for a short-lived session token
//! (`POST /sign-in`, the one `/api/v1` route that needs no credential) and revokes it with
//! `POST /sign-out`. The token is then sent as `Authorization: Bearer <token>`; what it may do
//! is read from the user record on every request (`auth`).
//!
//! Failed sign-ins count toward the failed-authentication limit of the client's address and
//! all get the same 401, whether the name is unknown, the user has no password or the
//! password is wrong; each takes one argon2id verification.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::{Extension, Json as ResponseJson};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit;
use super::auth::{Principal, client_ip, failed, refuse_if_throttled};
use super::problem::{Json, Problem};
use crate::AppState;
use crate::domain::{AuditAction, password};
use crate::error::{Error, ErrorCode};
use crate::storage::StoreError;

/// Password checks running at once. Each argon2id verification takes about 19 MiB and tens of
/// milliseconds of a core, so an unauthenticated flood of sign-ins could otherwise exhaust
/// memory and every core; beyond this, sign-ins wait briefly and then get 503.
static PASSWORD_CHECKS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cores)
});

/// How long a sign-in waits for a free password check.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(5);

/// The routes that need no credential.
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in))
}

/// The routes that need the session token itself.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_out))
}

/// A user's name and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The user's name, as an administrator created it.
    #[schema(example = "alice@msp.example")]
    pub name: String,
    /// The password an administrator set with `PUT /users/{user_id}/password`.
    #[schema(value_type = String, example = "correct horse battery staple")]
    pub password: SecretString,
}

/// A session token, shown once.
#[derive(Serialize, ToSchema)]
pub struct SessionTokenView {
    /// Send as `Authorization: Bearer <token>` on every request until it expires.
    pub token: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// When the token stops working; sign in again then.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Signs a user in with name and password and returns a session token. Needs no credential.
#[utoipa::path(
    post,
    path = "/sign-in",
    tag = "access",
    security(()),
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in", body = SessionTokenView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong name or password (the same answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn sign_in(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: http::HeaderMap,
    Json(body): Json<SignIn>,
) -> Result<
    (
        [(http::HeaderName, &'static str); 1],
        ResponseJson<SessionTokenView>,
    ),
    Error,
> {
    let peer = connect.map(|Extension(ConnectInfo(addr))| addr.ip());
    let client_ip = client_ip(&state, peer, &headers);
    refuse_if_throttled(&state, client_ip)?;
    let found = match state.store.user_by_name(&body.name).await {
        Ok(found) => Some(found),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(Error::from_store(e, "user")),
    };
    let stored = found.as_ref().and_then(|(_, hash)| hash.clone());
    let busy = || {
        Error::new(
            ErrorCode::Unavailable,
            "too many sign-ins are being checked at once; try again in a few seconds",
        )
    };
    let _permit = tokio::time::timeout(PASSWORD_CHECK_WAIT, PASSWORD_CHECKS.acquire())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    let matches = tokio::task::spawn_blocking(move || {
        password::verify(body.password.expose_secret(), stored.as_deref())
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "password verification did not finish");
        Error::new(
            ErrorCode::Internal,
            "the server could not check the password",
        )
    })?;
    let Some((user, _)) = found.filter(|(user, _)| matches && user.disabled_at.is_none()) else {
        return Err(failed(
            &state,
            client_ip,
            &"wrong name or password at sign-in",
        ));
    };
    let issued = state
        .session_tokens
        .issue(user.id, OffsetDateTime::now_utc());
    let principal = Principal::from_user(user, client_ip);
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserSignedIn, None, Some(principal.id)),
    )
    .await?;
    tracing::info!(user_id = %principal.id, session = %issued.jti, "user signed in");
    // A token response must not be kept by caches (RFC 6749 §5.1).
    Ok((
        [(http::header::CACHE_CONTROL, "no-store")],
        ResponseJson(SessionTokenView {
            token: issued.token,
            token_type: "Bearer",
            expires_at: issued.expires_at,
        }),
    ))
}

/// Signs out: revokes the session token this request carries, at once and on every replica.
#[utoipa::path(
    post,
    path = "/sign-out",
    tag = "access",
    responses(
        (status = 204, description = "Signed out; the token no longer works"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential is not a session token (API keys are revoked through /api-keys)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn sign_out(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<StatusCode, Error> {
    let Some(session) = principal.session else {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "only a session token can be signed out; revoke an API key with DELETE /api/v1/api-keys/{key_id}",
        ));
    };
    state
        .store
        .revoke_session_token(
            session.jti,
            session.user,
            session.expires_at,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| Error::from_store(e, "session token"))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserSignedOut, None, Some(principal.id)),
    )
    .await?;
    tracing::info!(user_id = %principal.id, session = %session.jti, "user signed out");
    Ok(StatusCode::NO_CONTENT)
}

//! Users and their tenant assignments, managed by administrators. An administrator sets a
//! user's password; the user then signs in (`sign_in`) for a session token, whose principal is
//! built from the user record on every request (`auth::Principal::from_user`), so changing the
//! assignments or deleting the user takes effect at once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json as ResponseJson};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::api_keys::{RoleName, check_assignments, valid_name};
use super::audit;
use super::auth::Principal;
use super::page::{PageQuery, encode};
use super::problem::{Json, Path, Problem, Query};
use crate::AppState;
use crate::domain::{AuditAction, NewUser, Operation, Role, TenantId, User, UserId};
use crate::error::{Error, ErrorCode};
use crate::storage::StoreError;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(user, delete_user))
        .routes(routes!(set_user_tenants))
        .routes(routes!(set_user_password))
        .routes(routes!(set_user_role))
        .routes(routes!(set_user_disabled))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// A unique name, such as the person's e-mail address.
    #[schema(example = "alice@msp.example")]
    pub name: String,
    /// What the user may do: administrator, technician or viewer.
    #[schema(example = "technician")]
    pub role: RoleName,
    /// The tenants the user may see; required for every role but administrator.
    #[serde(default)]
    pub tenant_ids: Vec<Uuid>,
}

/// A user's tenant assignments, replacing the previous ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserTenants {
    /// The tenants the user may see from now on.
    pub tenant_ids: Vec<Uuid>,
}

/// A user's new role with the tenants that go with it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserRole {
    /// What the user may do from now on: administrator, technician or viewer.
    #[schema(example = "viewer")]
    pub role: RoleName,
    /// The tenants the user may see from now on; required for every role but administrator.
    #[serde(default)]
    pub tenant_ids: Vec<Uuid>,
}

/// Whether a user is disabled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserDisabled {
    /// `true` disables the user: no sign-in, and its session tokens and API keys stop working
    /// at once. `false` enables it again.
    pub disabled: bool,
}

/// A user's new password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserPassword {
    /// 12 to 1024 bytes; stored only as an argon2id hash. `null` removes the password, so the
    /// user can no longer sign in with one.
    #[schema(value_type = Option<String>, example = "correct horse battery staple")]
    pub password: Option<secrecy::SecretString>,
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Its id.
    pub id: Uuid,
    /// Its unique name.
    pub name: String,
    /// What the user may do.
    pub role: RoleName,
    /// The tenants the user may see (empty for an administrator, which sees all).
    pub tenant_ids: Vec<Uuid>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was disabled; null while it is enabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.0,
            name: u.name,
            role: u.role.into(),
            tenant_ids: u.tenants.into_iter().map(|t| t.0).collect(),
            created_at: u.created_at,
            disabled_at: u.disabled_at,
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    /// The users, in creation order.
    pub items: Vec<UserView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Creates a user. Administrators only.
#[utoipa::path(
    post,
    path = "/users",
    tag = "access",
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Malformed body, or assignments that do not fit the role", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A tenant in tenant_ids does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, ResponseJson<UserView>), Error> {
    principal.require(Operation::ManageUsers)?;
    let name = valid_name(&body.name)?;
    let role = Role::from(body.role);
    if role == Role::Integration {
        return Err(Error::invalid(
            "integration is a role for API keys; give a user administrator, technician or viewer",
        ));
    }
    check_assignments(role, &body.tenant_ids)?;
    let user = state
        .store
        .create_user(NewUser {
            name,
            role,
            tenants: body.tenant_ids.iter().copied().map(TenantId).collect(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(message) => Error::new(ErrorCode::Conflict, message),
            e => Error::from_store(e, "a tenant in tenant_ids"),
        })?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserCreated, None, Some(user.id.0)),
    )
    .await?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), by = %principal.name, "user created");
    Ok((StatusCode::CREATED, ResponseJson(user.into())))
}

/// Lists users, in creation order. Administrators only.
#[utoipa::path(
    get,
    path = "/users",
    tag = "access",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PageQuery>,
) -> Result<ResponseJson<UserPage>, Error> {
    principal.require(Operation::ManageUsers)?;
    let page = state
        .store
        .list_users(query.to_request()?)
        .await
        .map_err(|e| Error::from_store(e, "user"))?;
    let next_cursor = if page.has_more {
        page.items.last().map(|u| encode(&u.id.0))
    } else {
        None
    };
    Ok(ResponseJson(UserPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Shows one user. Administrators only.
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
) -> Result<ResponseJson<UserView>, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id}")))?;
    Ok(ResponseJson(user.into()))
}

/// Replaces a user's tenant assignments. Administrators only.
#[utoipa::path(
    put,
    path = "/users/{user_id}/tenants",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    request_body = SetUserTenants,
    responses(
        (status = 200, description = "The user with its new assignments", body = UserView),
        (status = 400, description = "Malformed body or id, or assignments that do not fit the role", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or a tenant in tenant_ids does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_user_tenants(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetUserTenants>,
) -> Result<ResponseJson<UserView>, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    let current = state
        .store
        .user(id)
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id}")))?;
    check_assignments(current.role, &body.tenant_ids)?;
    let user = state
        .store
        .set_user_tenants(id, body.tenant_ids.iter().copied().map(TenantId).collect())
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id} or a tenant in tenant_ids")))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserTenantsSet, None, Some(id.0)),
    )
    .await?;
    tracing::info!(user_id = %id, by = %principal.name, "user tenants set");
    Ok(ResponseJson(user.into()))
}

/// Sets or removes a user's password, with which the user signs in at `POST /sign-in`.
/// Session tokens already issued keep working until they expire or the user signs out.
/// Administrators only.
#[utoipa::path(
    put,
    path = "/users/{user_id}/password",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    request_body = SetUserPassword,
    responses(
        (status = 204, description = "The password is set"),
        (status = 400, description = "Malformed body or id, or a password of the wrong length", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_user_password(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetUserPassword>,
) -> Result<StatusCode, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    let hash = match body.password {
        Some(password) => Some(
            tokio::task::spawn_blocking(move || {
                crate::domain::password::hash(secrecy::ExposeSecret::expose_secret(&password))
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing did not finish");
                Error::new(
                    ErrorCode::Internal,
                    "the server could not hash the password",
                )
            })?
            .map_err(|e| match e {
                crate::domain::password::PasswordError::Length => Error::invalid(e.to_string()),
                crate::domain::password::PasswordError::Hash(_) => {
                    tracing::error!(error = %e, "password hashing failed");
                    Error::new(
                        ErrorCode::Internal,
                        "the server could not hash the password",
                    )
                }
            })?,
        ),
        None => None,
    };
    // Sessions signed in before now end: a password reset after a compromise must lock out
    // whoever held the old one. (Microseconds, as the databases keep them.)
    let now = OffsetDateTime::now_utc();
    let sessions_valid_after = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    state
        .store
        .set_user_password(id, hash, sessions_valid_after)
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id}")))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserPasswordSet, None, Some(id.0)),
    )
    .await?;
    tracing::info!(user_id = %id, by = %principal.name, "user password set");
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a user. Its session tokens stop working at once; its audit events stay.
/// Administrators only.
#[utoipa::path(
    delete,
    path = "/users/{user_id}",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    responses(
        (status = 204, description = "The user is deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    state
        .store
        .delete_user(id)
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id}")))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserDeleted, None, Some(id.0)),
    )
    .await?;
    tracing::info!(user_id = %id, by = %principal.name, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a user's role and tenant assignments together. The user's session tokens carry
/// the change from their next request. Administrators only.
#[utoipa::path(
    put,
    path = "/users/{user_id}/role",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    request_body = SetUserRole,
    responses(
        (status = 200, description = "The user with its new role and assignments", body = UserView),
        (status = 400, description = "Malformed body or id, or assignments that do not fit the role", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user, or a tenant in tenant_ids does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_user_role(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetUserRole>,
) -> Result<ResponseJson<UserView>, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    let role = Role::from(body.role);
    if role == Role::Integration {
        return Err(Error::invalid(
            "integration is a role for API keys; give a user administrator, technician or viewer",
        ));
    }
    check_assignments(role, &body.tenant_ids)?;
    let user = state
        .store
        .set_user_role(
            id,
            role,
            body.tenant_ids.iter().copied().map(TenantId).collect(),
        )
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id} or a tenant in tenant_ids")))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::UserRoleSet, None, Some(id.0)),
    )
    .await?;
    tracing::info!(user_id = %id, role = role.as_str(), by = %principal.name, "user role set");
    Ok(ResponseJson(user.into()))
}

/// Disables or enables a user. A disabled user cannot sign in, and its session tokens and the
/// API keys it created stop working at once; enabling it again revives the keys and the
/// session tokens that have not expired (delete the user to end them for good).
/// Administrators only.
#[utoipa::path(
    put,
    path = "/users/{user_id}/disabled",
    tag = "access",
    params(("user_id" = Uuid, Path, description = "The user")),
    request_body = SetUserDisabled,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 400, description = "Malformed body or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_user_disabled(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(user_id): Path<Uuid>,
    Json(body): Json<SetUserDisabled>,
) -> Result<ResponseJson<UserView>, Error> {
    principal.require(Operation::ManageUsers)?;
    let id = UserId(user_id);
    let at = body.disabled.then(OffsetDateTime::now_utc);
    let user = state
        .store
        .set_user_disabled(id, at)
        .await
        .map_err(|e| Error::from_store(e, format_args!("user {id}")))?;
    let action = if body.disabled {
        AuditAction::UserDisabled
    } else {
        AuditAction::UserEnabled
    };
    audit::record(&state, principal.audit_event(action, None, Some(id.0))).await?;
    tracing::info!(user_id = %id, disabled = body.disabled, by = %principal.name, "user disabled set");
    Ok(ResponseJson(user.into()))
}

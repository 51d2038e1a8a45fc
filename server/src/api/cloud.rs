//! Cloud checks through Microsoft Graph: a tenant's Graph credential (set, shown without its
//! secret, removed), the last cloud run, an on-demand run, the readiness of one user, and the
//! self-service password activity of the tenant's audit log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json as ResponseJson};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use wbhealth_catalogue::Status;

use super::audit;
use super::auth::Principal;
use super::problem::{Json, Path, Problem, Query};
use super::status::{ResultSource, ResultView};
use crate::AppState;
use crate::cloud::token::{self, SealedSecret};
use crate::cloud::{CloudError, SEAL_PURPOSE};
use crate::domain::{
    AuditAction, CloudRun, GraphCloud, GraphCredential, GraphCredentialKind, NewGraphCredential,
    Operation, SsprActivity, SsprActivityGroup, TenantId,
};
use crate::error::{Error, ErrorCode};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            set_graph_credential,
            show_graph_credential,
            delete_graph_credential
        ))
        .routes(routes!(show_cloud_checks))
        .routes(routes!(run_cloud_checks))
        .routes(routes!(check_user))
        .routes(routes!(show_sspr_activity))
}

/// Which Microsoft cloud the customer's tenant lives in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloudName {
    /// Commercial (login.microsoftonline.com, graph.microsoft.com).
    #[default]
    Global,
    /// US Government (login.microsoftonline.us, graph.microsoft.us).
    UsGov,
    /// China, operated by 21Vianet (login.chinacloudapi.cn, microsoftgraph.chinacloudapi.cn).
    China,
}

impl From<CloudName> for GraphCloud {
    fn from(c: CloudName) -> Self {
        match c {
            CloudName::Global => GraphCloud::Global,
            CloudName::UsGov => GraphCloud::UsGov,
            CloudName::China => GraphCloud::China,
        }
    }
}

impl From<GraphCloud> for CloudName {
    fn from(c: GraphCloud) -> Self {
        match c {
            GraphCloud::Global => CloudName::Global,
            GraphCloud::UsGov => CloudName::UsGov,
            GraphCloud::China => CloudName::China,
        }
    }
}

/// A tenant's Graph credential: the app's client id with either a client secret or a
/// certificate and its private key. The common case is one multi-tenant app of the MSP,
/// consented in each customer tenant with the application permissions Organization.Read.All,
/// User.Read.All, Domain.Read.All, RoleManagement.Read.Directory, Policy.Read.All,
/// AuditLog.Read.All, Application.Read.All and Synchronization.Read.All.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetGraphCredential {
    /// The customer's Entra directory (tenant) id or verified domain; defaults to the tenant's
    /// `entra_tenant_id`.
    #[schema(example = "8a7c4a4e-2f49-4c1e-9d35-1b7c1a9f0e11")]
    pub directory_id: Option<String>,
    /// The app's client (application) id.
    pub client_id: Uuid,
    /// The cloud; `global` when absent.
    #[serde(default)]
    pub cloud: CloudName,
    /// The client secret's value (not its id). Give this or a certificate.
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<SecretString>,
    /// The certificate uploaded to the app registration, PEM.
    pub certificate_pem: Option<String>,
    /// The certificate's RSA private key, PEM (PKCS#8 or PKCS#1).
    #[schema(value_type = Option<String>, format = Password)]
    pub private_key_pem: Option<SecretString>,
}

/// How the app authenticates.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKindView {
    /// A client secret.
    Secret,
    /// A certificate.
    Certificate,
}

/// A tenant's Graph credential without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphCredentialView {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The customer's directory id.
    pub directory_id: String,
    /// The app's client id.
    pub client_id: String,
    /// The cloud.
    pub cloud: CloudName,
    /// Secret or certificate.
    pub kind: CredentialKindView,
    /// The certificate's SHA-1 thumbprint, as the app registration shows it.
    pub certificate_thumbprint: Option<String>,
    /// When it was set.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When a token was last obtained with it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_token_ok_at: Option<OffsetDateTime>,
    /// When getting a token last failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_token_error_at: Option<OffsetDateTime>,
    /// Why it last failed, and the fix.
    pub last_token_error: Option<String>,
}

impl From<GraphCredential> for GraphCredentialView {
    fn from(c: GraphCredential) -> Self {
        Self {
            tenant_id: c.tenant_id.0,
            directory_id: c.directory_id,
            client_id: c.client_id,
            cloud: c.cloud.into(),
            kind: match c.kind {
                GraphCredentialKind::Secret => CredentialKindView::Secret,
                GraphCredentialKind::Certificate => CredentialKindView::Certificate,
            },
            certificate_thumbprint: c.thumbprint,
            updated_at: c.updated_at,
            last_token_ok_at: c.last_token_ok_at,
            last_token_error_at: c.last_token_error_at,
            last_token_error: c.last_token_error,
        }
    }
}

/// Self-service password audit events with the same activity, result and reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct SsprActivityGroupView {
    /// Such as `Reset password (self-service)`.
    pub activity: String,
    /// `success` or `failure`.
    pub result: String,
    /// The failure reason as Graph gives it; empty on success.
    pub reason: String,
    /// How many events.
    pub count: u64,
    /// The check that explains this failure, when one does.
    pub check_id: Option<String>,
    /// That check's title.
    pub check_title: Option<String>,
    /// The newest event of the group.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
}

impl From<SsprActivityGroup> for SsprActivityGroupView {
    fn from(g: SsprActivityGroup) -> Self {
        Self {
            check_title: g
                .check_id
                .as_deref()
                .and_then(wbhealth_catalogue::find)
                .map(|d| d.title.to_owned()),
            activity: g.activity,
            result: g.result,
            reason: g.reason,
            count: g.count,
            check_id: g.check_id,
            last_seen: g.last_seen,
        }
    }
}

/// The failures users actually hit: the tenant's Self-service Password Management audit events
/// of the last 24 hours, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct SsprActivityView {
    /// The start of the window read.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// How many events.
    pub total: u64,
    /// How many failed.
    pub failures: u64,
    /// Counts by activity, result and reason, most frequent first.
    pub groups: Vec<SsprActivityGroupView>,
    /// Why the audit log could not be read, and the fix, when it could not.
    pub error: Option<String>,
}

impl From<SsprActivity> for SsprActivityView {
    fn from(a: SsprActivity) -> Self {
        Self {
            since: a.since,
            total: a.total,
            failures: a.failures,
            groups: a.groups.into_iter().map(Into::into).collect(),
            error: a.error,
        }
    }
}

/// The last cloud run of a tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudRunView {
    /// The worst status of its results.
    pub status: Option<Status>,
    /// The tenant-level cloud checks, worst first.
    pub results: Vec<ResultView>,
    /// The self-service password activity of the last 24 hours.
    pub sspr_activity: SsprActivityView,
    /// When the run started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

impl From<CloudRun> for CloudRunView {
    fn from(run: CloudRun) -> Self {
        let mut results = run.results;
        results.sort_by(|a, b| {
            b.status
                .rank()
                .cmp(&a.status.rank())
                .then_with(|| a.check_id.cmp(&b.check_id))
        });
        Self {
            status: results.iter().map(|r| r.status).reduce(Status::worst),
            results: results
                .into_iter()
                .map(|r| ResultView::produced(r, ResultSource::Cloud))
                .collect(),
            sspr_activity: run.sspr.into(),
            started_at: run.started_at,
            finished_at: run.finished_at,
        }
    }
}

/// A tenant's cloud checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct CloudChecksView {
    /// Whether the tenant has a Graph credential.
    pub credential_set: bool,
    /// The last run; absent until one ran.
    pub last_run: Option<CloudRunView>,
}

/// The user to check.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// The user's UPN (or object id), such as `adele@contoso.com`.
    pub upn: Option<String>,
}

fn not_found(tenant: TenantId) -> impl Fn(crate::storage::StoreError) -> Error {
    move |e| Error::from_store(e, format_args!("tenant {tenant}"))
}

fn no_credential(tenant: TenantId) -> impl Fn(crate::storage::StoreError) -> Error {
    move |e| Error::from_store(e, format_args!("a Graph credential of tenant {tenant}"))
}

/// Sets (or replaces) a tenant's Graph credential. The secret is sealed and never shown again.
#[utoipa::path(
    put,
    path = "/tenants/{tenant_id}/graph-credentials",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    request_body = SetGraphCredential,
    responses(
        (status = 200, description = "Set; the cloud checks run shortly", body = GraphCredentialView),
        (status = 400, description = "Malformed body or id, or neither (or both) a secret and a certificate", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn set_graph_credential(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
    Json(body): Json<SetGraphCredential>,
) -> Result<ResponseJson<GraphCredentialView>, Error> {
    principal.require(Operation::ManageGraphCredentials)?;
    let id = TenantId(tenant_id);
    let tenant = state
        .store
        .tenant(&principal.scope, id)
        .await
        .map_err(not_found(id))?;
    let directory_id = match body.directory_id.as_deref().map(str::trim) {
        None | Some("") => tenant.entra_tenant_id.to_string(),
        Some(d) => {
            if d.len() > 253
                || !d
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(Error::invalid(
                    "directory_id must be a directory (tenant) id or a verified domain name",
                ));
            }
            d.to_owned()
        }
    };
    let (kind, thumbprint, secret) = match (
        body.client_secret,
        body.certificate_pem,
        body.private_key_pem,
    ) {
        (Some(secret), None, None) => {
            let value = secret.expose_secret().trim();
            if value.is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "client_secret must be the secret's value: 1 to 1024 printable characters",
                ));
            }
            (
                GraphCredentialKind::Secret,
                None,
                SealedSecret::Secret {
                    secret: value.to_owned(),
                },
            )
        }
        (None, Some(certificate_pem), Some(private_key_pem)) => {
            let der = token::certificate_der(&certificate_pem).ok_or_else(|| {
                Error::invalid(
                    "certificate_pem holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                )
            })?;
            if jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
                .is_err()
            {
                return Err(Error::invalid(
                    "private_key_pem is not an RSA private key in PEM; Entra accepts RSA certificates for client assertions",
                ));
            }
            (
                GraphCredentialKind::Certificate,
                Some(token::thumbprint_sha1(&der)),
                SealedSecret::Certificate {
                    certificate_pem,
                    private_key_pem: private_key_pem.expose_secret().to_owned(),
                },
            )
        }
        _ => {
            return Err(Error::invalid(
                "give either client_secret, or certificate_pem with private_key_pem",
            ));
        }
    };
    let plain = serde_json::to_vec(&secret)
        .map_err(|_| Error::new(ErrorCode::Internal, "the credential could not be sealed"))?;
    let sealed = state.master_key.seal(SEAL_PURPOSE, id.0.as_bytes(), &plain);
    drop(plain);
    let stored = state
        .store
        .put_graph_credential(
            &principal.scope,
            NewGraphCredential {
                tenant_id: id,
                directory_id,
                client_id: body.client_id.to_string(),
                cloud: body.cloud.into(),
                kind,
                thumbprint,
                not_after: None,
                sealed,
            },
        )
        .await
        .map_err(not_found(id))?;
    state.cloud.forget(id);
    audit::record(
        &state,
        principal.audit_event(AuditAction::GraphCredentialSet, Some(id), None),
    )
    .await?;
    tracing::info!(tenant_id = %id, client_id = %stored.client_id, kind = stored.kind.as_str(), by = %principal.name, "graph credential set");
    Ok(ResponseJson(stored.into()))
}

/// Shows a tenant's Graph credential without its secret, with the last token outcome.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/graph-credentials",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The credential's metadata", body = GraphCredentialView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant, or it has no Graph credential", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_graph_credential(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<GraphCredentialView>, Error> {
    principal.require(Operation::ReadGraphCredentials)?;
    let id = TenantId(tenant_id);
    let cred = state
        .store
        .graph_credential(&principal.scope, id)
        .await
        .map_err(no_credential(id))?;
    Ok(ResponseJson(cred.into()))
}

/// Removes a tenant's Graph credential and its cloud results; its cloud checks stop.
#[utoipa::path(
    delete,
    path = "/tenants/{tenant_id}/graph-credentials",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant, or it has no Graph credential", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_graph_credential(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<StatusCode, Error> {
    principal.require(Operation::ManageGraphCredentials)?;
    let id = TenantId(tenant_id);
    state
        .store
        .delete_graph_credential(&principal.scope, id)
        .await
        .map_err(no_credential(id))?;
    state.cloud.forget(id);
    audit::record(
        &state,
        principal.audit_event(AuditAction::GraphCredentialDeleted, Some(id), None),
    )
    .await?;
    tracing::info!(tenant_id = %id, by = %principal.name, "graph credential removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Shows the last run of a tenant's cloud checks.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/cloud-checks",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "Whether a credential is set, and the last run", body = CloudChecksView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_cloud_checks(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<CloudChecksView>, Error> {
    principal.require(Operation::ReadCloudChecks)?;
    let id = TenantId(tenant_id);
    let run = state
        .store
        .cloud_run(&principal.scope, id)
        .await
        .map_err(not_found(id))?;
    let credential_set = match state.store.graph_credential(&principal.scope, id).await {
        Ok(_) => true,
        Err(crate::storage::StoreError::NotFound) => false,
        Err(e) => return Err(not_found(id)(e)),
    };
    Ok(ResponseJson(CloudChecksView {
        credential_set,
        last_run: run.map(Into::into),
    }))
}

/// Runs a tenant's cloud checks now and returns the outcome (Graph failures are `error`
/// results naming the missing permission or consent and the fix).
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/cloud-checks/run",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The run's results", body = CloudRunView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant, or it has no Graph credential", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A run of this tenant is already in progress", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn run_cloud_checks(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<CloudRunView>, Error> {
    principal.require(Operation::RunCloudChecks)?;
    let id = TenantId(tenant_id);
    // In scope and with a credential, or 404 before anything runs.
    state
        .store
        .graph_credential(&principal.scope, id)
        .await
        .map_err(no_credential(id))?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::CloudChecksRunRequested, Some(id), None),
    )
    .await?;
    let run = state
        .cloud
        .run_tenant(state.store.as_ref(), &state.master_key, id)
        .await
        .map_err(|e| cloud_error(e, id))?;
    let next = OffsetDateTime::now_utc() + state.cloud.interval();
    if let Err(e) = state.store.set_next_cloud_run(id, next).await {
        tracing::warn!(tenant_id = %id, error = %format!("{e:#}"), "next cloud run not moved");
    }
    Ok(ResponseJson(run.into()))
}

fn cloud_error(e: CloudError, id: TenantId) -> Error {
    match e {
        CloudError::Store(e) => no_credential(id)(e),
        CloudError::Busy => Error::new(
            ErrorCode::Conflict,
            format!("a cloud run of tenant {id} is already in progress; try again shortly"),
        ),
    }
}

/// Checks one user's readiness through Graph: licence (TEN-02), SSPR registration (TEN-05)
/// and sync state.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/cloud-checks/user",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant"), UserQuery),
    responses(
        (status = 200, description = "The user's results", body = Vec<ResultView>),
        (status = 400, description = "Malformed id or missing upn", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant, or it has no Graph credential", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn check_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
    Query(query): Query<UserQuery>,
) -> Result<ResponseJson<Vec<ResultView>>, Error> {
    principal.require(Operation::RunCloudChecks)?;
    let id = TenantId(tenant_id);
    let cred = state
        .store
        .graph_credential(&principal.scope, id)
        .await
        .map_err(no_credential(id))?;
    let upn = query.upn.as_deref().map(str::trim).unwrap_or("");
    if upn.is_empty()
        || upn.len() > 320
        || upn
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/')
    {
        return Err(Error::invalid(
            "upn must be the user's user principal name, such as adele@contoso.com",
        ));
    }
    let results = state
        .cloud
        .check_user(
            state.store.as_ref(),
            &state.master_key,
            &principal.scope,
            cred.tenant_id,
            upn,
        )
        .await
        .map_err(|e| cloud_error(e, id))?;
    Ok(ResponseJson(
        results
            .into_iter()
            .map(|r| ResultView::produced(r, ResultSource::Cloud))
            .collect(),
    ))
}

/// Shows the self-service password activity of a tenant's audit log (last 24 hours, as of the
/// last cloud run), counted by activity, result and reason, each failure linked to its check.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/sspr-activity",
    tag = "cloud",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The activity; empty until the cloud checks ran", body = SsprActivityView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn show_sspr_activity(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<SsprActivityView>, Error> {
    principal.require(Operation::ReadCloudChecks)?;
    let id = TenantId(tenant_id);
    let run = state
        .store
        .cloud_run(&principal.scope, id)
        .await
        .map_err(not_found(id))?;
    Ok(ResponseJson(run.map(|r| r.sspr).unwrap_or_default().into()))
}

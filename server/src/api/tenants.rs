//! Tenants and their agents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json as ResponseJson};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use wbhealth_catalogue::Status;

use super::audit;
use super::auth::Principal;
use super::page::{PageQuery, encode};
use super::problem::{Json, Path, Problem, Query};
use crate::AppState;
use crate::domain::{
    Agent, AgentId, AuditAction, NewTenant, Operation, ReportSummary, Tenant, TenantId,
};
use crate::error::{Error, ErrorCode};
use crate::sessions::NotSole;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(tenant))
        .routes(routes!(list_agents))
        .routes(routes!(run_agent_now))
        .routes(routes!(revoke_agent))
        .routes(routes!(rotate_agent_credential))
        .routes(routes!(list_reports))
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// A name people recognise, unique across the server.
    #[schema(example = "Contoso Ltd")]
    pub name: String,
    /// The customer's Microsoft Entra tenant id.
    #[schema(example = "72f988bf-86f1-41af-91ab-2d7cd011db47")]
    pub entra_tenant_id: Uuid,
}

/// A customer tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The customer's Microsoft Entra tenant id.
    pub entra_tenant_id: Uuid,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.0,
            name: t.name,
            entra_tenant_id: t.entra_tenant_id,
            created_at: t.created_at,
        }
    }
}

/// A page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    /// The tenants, in creation order.
    pub items: Vec<TenantView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An enrolled agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// The host it runs on.
    pub hostname: String,
    /// The host's operating system.
    pub os: String,
    /// The agent's version.
    pub agent_version: String,
    /// The domain controller it reads, as configured on the agent.
    pub domain_controller: String,
    /// When it enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When it last talked to the server.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Whether it has a stream open to this server now.
    pub connected: bool,
    /// When it was revoked, if it was; a revoked agent can never connect again.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl AgentView {
    pub fn new(agent: Agent, connected: bool) -> Self {
        Self {
            id: agent.id.0,
            tenant_id: agent.tenant_id.0,
            hostname: agent.host.hostname,
            os: agent.host.os,
            agent_version: agent.host.agent_version,
            domain_controller: agent.host.domain_controller,
            enrolled_at: agent.enrolled_at,
            last_seen_at: agent.last_seen_at,
            connected,
            revoked_at: agent.revoked_at,
        }
    }
}

/// Creates a tenant.
#[utoipa::path(
    post,
    path = "/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = TenantView),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name or the Entra tenant id is taken", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn create_tenant(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, ResponseJson<TenantView>), Error> {
    principal.require(Operation::CreateTenant)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Error::invalid("name must be 1 to 200 printable characters"));
    }
    if body.entra_tenant_id.is_nil() {
        return Err(Error::invalid(
            "entra_tenant_id must be the customer's Entra tenant id, not the nil UUID",
        ));
    }
    let tenant = state
        .store
        .create_tenant(NewTenant {
            name: name.to_owned(),
            entra_tenant_id: body.entra_tenant_id,
        })
        .await
        .map_err(|e| match e {
            crate::storage::StoreError::Conflict(message) => {
                Error::new(ErrorCode::Conflict, message)
            }
            e => Error::from_store(e, "tenant"),
        })?;
    audit::record(
        &state,
        principal.audit_event(
            AuditAction::TenantCreated,
            Some(tenant.id),
            Some(tenant.id.0),
        ),
    )
    .await?;
    tracing::info!(tenant_id = %tenant.id, by = %principal.name, "tenant created");
    Ok((StatusCode::CREATED, ResponseJson(tenant.into())))
}

/// Lists tenants, in creation order.
#[utoipa::path(
    get,
    path = "/tenants",
    tag = "tenants",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 400, description = "Bad cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_tenants(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<PageQuery>,
) -> Result<ResponseJson<TenantPage>, Error> {
    principal.require(Operation::ReadTenants)?;
    let page = state
        .store
        .list_tenants(&principal.scope, query.to_request()?)
        .await
        .map_err(|e| Error::from_store(e, "tenant"))?;
    let next_cursor = if page.has_more {
        page.items.last().map(|t| encode(&t.id.0))
    } else {
        None
    };
    Ok(ResponseJson(TenantPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Shows one tenant.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}",
    tag = "tenants",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tenant(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<TenantView>, Error> {
    principal.require(Operation::ReadTenants)?;
    let id = TenantId(tenant_id);
    let tenant = state
        .store
        .tenant(&principal.scope, id)
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {id}")))?;
    Ok(ResponseJson(tenant.into()))
}

/// Lists the agents of a tenant.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/agents",
    tag = "tenants",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant's agents, in enrollment order", body = Vec<AgentView>),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_agents(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<Vec<AgentView>>, Error> {
    principal.require(Operation::ReadAgents)?;
    let id = TenantId(tenant_id);
    let agents = state
        .agents(&principal.scope, id)
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {id}")))?;
    Ok(ResponseJson(
        agents
            .into_iter()
            .map(|a| {
                let connected = state.sessions.is_connected(a.id);
                AgentView::new(a, connected)
            })
            .collect(),
    ))
}

/// Asks a connected agent to run its checks now.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/agents/{agent_id}/run",
    tag = "tenants",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant"),
        ("agent_id" = Uuid, Path, description = "The agent"),
    ),
    responses(
        (status = 202, description = "The agent was asked to run its checks; results follow in the tenant status"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent is not connected", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn run_agent_now(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant_id, agent_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    principal.require(Operation::RunAgents)?;
    let (tenant, agent) = (TenantId(tenant_id), AgentId(agent_id));
    let agents = state
        .agents(&principal.scope, tenant)
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {tenant}")))?;
    if !agents.iter().any(|a| a.id == agent) {
        return Err(Error::not_found(format_args!(
            "agent {agent} in tenant {tenant}"
        )));
    }
    let outbox = state.sessions.outbox(agent).ok_or_else(|| {
        Error::new(
            ErrorCode::Conflict,
            format!("agent {agent} is not connected; it runs its checks when it reconnects"),
        )
    })?;
    let message = wbhealth_proto::v1::ServerMessage {
        kind: Some(wbhealth_proto::v1::server_message::Kind::RunNow(
            wbhealth_proto::v1::RunNow {
                request_id: Uuid::now_v7().to_string(),
            },
        )),
    };
    outbox.send(Ok(message)).await.map_err(|_| {
        Error::new(
            ErrorCode::Conflict,
            format!("agent {agent} disconnected; try again when it is back"),
        )
    })?;
    audit::record(
        &state,
        principal.audit_event(AuditAction::AgentRunRequested, Some(tenant), Some(agent.0)),
    )
    .await?;
    tracing::info!(agent_id = %agent, by = %principal.name, "run-now requested");
    Ok(StatusCode::ACCEPTED)
}

/// Revokes an agent: its open stream is closed at once and its credential is refused from
/// then on. To bring the machine back, enroll it again with a new token.
#[utoipa::path(
    delete,
    path = "/tenants/{tenant_id}/agents/{agent_id}",
    tag = "tenants",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant"),
        ("agent_id" = Uuid, Path, description = "The agent"),
    ),
    responses(
        (status = 200, description = "Revoked (revoking again keeps the first time)", body = AgentView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent in this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_agent(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant_id, agent_id)): Path<(Uuid, Uuid)>,
) -> Result<ResponseJson<AgentView>, Error> {
    principal.require(Operation::ManageAgents)?;
    let (tenant, agent) = (TenantId(tenant_id), AgentId(agent_id));
    let revoked = state
        .store
        .revoke_agent(&principal.scope, tenant, agent, OffsetDateTime::now_utc())
        .await
        .map_err(|e| Error::from_store(e, format_args!("agent {agent} in tenant {tenant}")))?;
    let was_connected = state.sessions.revoke(agent);
    audit::record(
        &state,
        principal.audit_event(AuditAction::AgentRevoked, Some(tenant), Some(agent.0)),
    )
    .await?;
    tracing::info!(agent_id = %agent, by = %principal.name, was_connected, "agent revoked");
    Ok(ResponseJson(AgentView::new(revoked, false)))
}

/// Rotates a connected agent's credential: the server sends it a new one over its stream,
/// the agent stores it and confirms, and from then on its old credential is refused. Until the
/// confirmation both work, so a lost message never locks the agent out.
#[utoipa::path(
    post,
    path = "/tenants/{tenant_id}/agents/{agent_id}/credential-rotation",
    tag = "tenants",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant"),
        ("agent_id" = Uuid, Path, description = "The agent"),
    ),
    responses(
        (status = 202, description = "The new credential was sent; the agent's confirmation retires the old one"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent in this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The agent is revoked, not connected, connected more than once (its credential was copied: revoke it and enroll it again), or a rotation already waits for its confirmation", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rotate_agent_credential(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant_id, agent_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    principal.require(Operation::ManageAgents)?;
    let (tenant, agent) = (TenantId(tenant_id), AgentId(agent_id));
    let what = format!("agent {agent} in tenant {tenant}");
    let agents = state
        .agents(&principal.scope, tenant)
        .await
        .map_err(|e| Error::from_store(e, format_args!("tenant {tenant}")))?;
    if !agents.iter().any(|a| a.id == agent) {
        return Err(Error::not_found(&what));
    }
    // The credential travels only over the agent's own stream, so it must be connected, and
    // only once: with a copied credential, the copy's stream would receive the new one.
    let outbox = state.sessions.sole_outbox(agent).map_err(|e| match e {
        NotSole::NotConnected => Error::new(
            ErrorCode::Conflict,
            format!("agent {agent} is not connected; rotate its credential when it is"),
        ),
        NotSole::Several(n) => Error::new(
            ErrorCode::Conflict,
            format!(
                "agent {agent} has {n} live connections, so its credential is in use in more than one place and was probably copied; \
                 the new credential is not sent: revoke the agent (DELETE /api/v1/tenants/{tenant}/agents/{agent}) and enroll it again"
            ),
        ),
    })?;
    let secret = crate::domain::secrets::generate("wbh_agent_");
    state
        .store
        .begin_credential_rotation(
            &principal.scope,
            tenant,
            agent,
            &crate::domain::secrets::hash(&secret),
        )
        .await
        .map_err(|e| match e {
            crate::storage::StoreError::Conflict(message) => {
                Error::new(ErrorCode::Conflict, message)
            }
            e => Error::from_store(e, &what),
        })?;
    let message = wbhealth_proto::v1::ServerMessage {
        kind: Some(wbhealth_proto::v1::server_message::Kind::RotateCredential(
            wbhealth_proto::v1::RotateCredential {
                credential: format!("{agent}.{secret}"),
            },
        )),
    };
    // Should the agent have gone away, the pending credential was never delivered; the old
    // one keeps working, and the agent's next login with it drops the pending one.
    outbox.send(Ok(message)).await.map_err(|_| {
        Error::new(
            ErrorCode::Conflict,
            format!("agent {agent} disconnected; try again when it is back"),
        )
    })?;
    audit::record(
        &state,
        principal.audit_event(
            AuditAction::AgentCredentialRotationStarted,
            Some(tenant),
            Some(agent.0),
        ),
    )
    .await?;
    tracing::info!(agent_id = %agent, by = %principal.name, "agent credential rotation started");
    Ok(StatusCode::ACCEPTED)
}

/// A stored report, without its results.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportView {
    /// The report's id, chosen by the agent.
    pub id: Uuid,
    /// When the run started on the agent.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the run ended on the agent.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    /// When the server stored it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// How many results it holds.
    pub results: u32,
    /// The worst of its results; absent for an empty report.
    pub status: Option<Status>,
}

impl From<ReportSummary> for ReportView {
    fn from(r: ReportSummary) -> Self {
        Self {
            id: r.id.0,
            started_at: r.started_at,
            finished_at: r.finished_at,
            received_at: r.received_at,
            results: r.results,
            status: r.worst,
        }
    }
}

/// A page of reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportPage {
    /// The reports, oldest first.
    pub items: Vec<ReportView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Lists the reports an agent delivered, oldest first: each one stored once, whatever the
/// agent resent after an outage.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/agents/{agent_id}/reports",
    tag = "tenants",
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant"),
        ("agent_id" = Uuid, Path, description = "The agent"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "A page of reports", body = ReportPage),
        (status = 400, description = "Malformed id, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agent in this tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_reports(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((tenant_id, agent_id)): Path<(Uuid, Uuid)>,
    Query(query): Query<PageQuery>,
) -> Result<ResponseJson<ReportPage>, Error> {
    principal.require(Operation::ReadAgents)?;
    let (tenant, agent) = (TenantId(tenant_id), AgentId(agent_id));
    let page = state
        .store
        .list_reports(&principal.scope, tenant, agent, query.to_request()?)
        .await
        .map_err(|e| Error::from_store(e, format_args!("agent {agent} in tenant {tenant}")))?;
    let next_cursor = if page.has_more {
        page.items.last().map(|r| encode(&r.id.0))
    } else {
        None
    };
    Ok(ResponseJson(ReportPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

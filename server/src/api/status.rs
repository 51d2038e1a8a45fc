//! What is broken, where: the latest results per tenant, and counts across the fleet.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::{Extension, Json as ResponseJson};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use wbhealth_catalogue::{Category, Severity, Status};

use super::auth::Principal;
use super::problem::{Path, Problem};
use super::tenants::{AgentView, TenantView};
use crate::AppState;
use crate::domain::{AgentId, LatestResult, Operation, TenantId, fleet};
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tenant_status))
        .routes(routes!(fleet_summary))
}

/// The latest result of one check.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultView {
    /// The check's catalogue id.
    #[schema(example = "network.passwordreset_https")]
    pub check_id: String,
    /// The check's title, when this server's catalogue knows the id.
    pub title: Option<String>,
    /// The check's category, when known.
    pub category: Option<Category>,
    /// How much of writeback a failure breaks, when known.
    pub severity: Option<Severity>,
    /// Microsoft's documentation for the cause, when known.
    pub docs_url: Option<String>,
    /// What the check concluded.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// What was observed.
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// The fix for this case; empty when nothing is to be done.
    pub remediation: String,
    /// How long the check took.
    pub duration_ms: u64,
    /// When it was observed.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    /// Who produced it: an agent, the server's cloud checks, or (later) fleet correlation.
    pub source: ResultSource,
    /// The report it came in; absent for results the server produced itself.
    pub report_id: Option<Uuid>,
}

/// Where a result comes from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResultSource {
    /// An agent on the customer's sync server.
    Agent {
        /// The agent.
        agent_id: Uuid,
    },
    /// The server, through Microsoft Graph.
    Cloud,
    /// The server, comparing what several agents report.
    Fleet,
}

impl ResultView {
    /// A result the server produced itself (`source` says how).
    pub fn produced(r: crate::domain::ResultRecord, source: ResultSource) -> Self {
        let def = wbhealth_catalogue::find(&r.check_id);
        Self {
            title: def.map(|d| d.title.to_owned()),
            category: def.map(|d| d.category),
            severity: def.map(|d| d.severity),
            docs_url: def.map(|d| d.docs_url.to_owned()),
            check_id: r.check_id,
            status: r.status,
            summary: r.summary,
            evidence: r.evidence,
            remediation: r.remediation,
            duration_ms: r.duration_ms,
            observed_at: r.observed_at,
            source,
            report_id: None,
        }
    }
}

impl From<LatestResult> for ResultView {
    fn from(latest: LatestResult) -> Self {
        let r = latest.result;
        let def = wbhealth_catalogue::find(&r.check_id);
        Self {
            source: ResultSource::Agent {
                agent_id: latest.agent_id.0,
            },
            title: def.map(|d| d.title.to_owned()),
            category: def.map(|d| d.category),
            severity: def.map(|d| d.severity),
            docs_url: def.map(|d| d.docs_url.to_owned()),
            check_id: r.check_id,
            status: r.status,
            summary: r.summary,
            evidence: r.evidence,
            remediation: r.remediation,
            duration_ms: r.duration_ms,
            observed_at: r.observed_at,
            report_id: Some(latest.report_id.0),
        }
    }
}

/// One agent with its latest results.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentStatus {
    /// The agent.
    pub agent: AgentView,
    /// The worst of its latest results; absent until it has reported.
    pub status: Option<Status>,
    /// The latest result of each check, worst first.
    pub results: Vec<ResultView>,
}

/// A tenant's writeback health.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStatus {
    /// The tenant.
    pub tenant: TenantView,
    /// The worst status of all its results (agents and cloud checks); absent until something
    /// reported.
    pub status: Option<Status>,
    /// Each agent with its latest results.
    pub agents: Vec<AgentStatus>,
    /// The last run of its cloud checks through Microsoft Graph; absent until one ran.
    pub cloud: Option<super::cloud::CloudRunView>,
    /// What the server concludes by comparing its agents (one active server with writeback,
    /// agreement on the PDC emulator, silent agents), worst first.
    pub fleet: Vec<ResultView>,
}

/// Counts by worst status. `unknown` counts those with nothing reported yet.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    /// All checks pass.
    pub pass: u64,
    /// Nothing worse than not applicable.
    pub not_applicable: u64,
    /// At least one warning.
    pub warn: u64,
    /// At least one check could not look.
    pub error: u64,
    /// At least one failure.
    pub fail: u64,
    /// Nothing reported yet.
    pub unknown: u64,
}

impl StatusCounts {
    fn add(&mut self, status: Option<Status>) {
        let slot = match status {
            None => &mut self.unknown,
            Some(Status::Pass) => &mut self.pass,
            Some(Status::NotApplicable) => &mut self.not_applicable,
            Some(Status::Warn) => &mut self.warn,
            Some(Status::Error) => &mut self.error,
            Some(Status::Fail) => &mut self.fail,
        };
        *slot += 1;
    }
}

/// Totals and counts by worst status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    /// How many in all.
    pub total: u64,
    /// How many by their worst status.
    pub by_status: StatusCounts,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    /// Tenants by the worst status of their agents and cloud checks.
    pub tenants: Counts,
    /// Agents by the worst status of their latest results.
    pub agents: Counts,
}

fn worst(statuses: impl IntoIterator<Item = Status>) -> Option<Status> {
    statuses.into_iter().reduce(Status::worst)
}

/// Shows the latest result of every check of every agent of a tenant.
#[utoipa::path(
    get,
    path = "/tenants/{tenant_id}/status",
    tag = "status",
    params(("tenant_id" = Uuid, Path, description = "The tenant")),
    responses(
        (status = 200, description = "The tenant's writeback health", body = TenantStatus),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn tenant_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(tenant_id): Path<Uuid>,
) -> Result<ResponseJson<TenantStatus>, Error> {
    principal.require(Operation::ReadStatus)?;
    let id = TenantId(tenant_id);
    let not_found = |e| Error::from_store(e, format_args!("tenant {id}"));
    let tenant = state
        .store
        .tenant(&principal.scope, id)
        .await
        .map_err(not_found)?;
    let agents = state
        .agents(&principal.scope, id)
        .await
        .map_err(not_found)?;
    let latest = state
        .store
        .latest_results(&principal.scope, id)
        .await
        .map_err(not_found)?;
    let mut fleet: Vec<ResultView> = fleet_results(
        &state,
        &tenant.name,
        &agents,
        &latest,
        OffsetDateTime::now_utc(),
    )
    .into_iter()
    .map(|r| ResultView::produced(r, ResultSource::Fleet))
    .collect();
    fleet.sort_by(|a, b| {
        b.status
            .rank()
            .cmp(&a.status.rank())
            .then_with(|| a.check_id.cmp(&b.check_id))
    });
    let mut results: HashMap<AgentId, Vec<LatestResult>> = HashMap::new();
    for latest in latest {
        results.entry(latest.agent_id).or_default().push(latest);
    }
    let agents: Vec<AgentStatus> = agents
        .into_iter()
        .map(|agent| {
            let mut mine = results.remove(&agent.id).unwrap_or_default();
            mine.sort_by(|a, b| {
                b.result
                    .status
                    .rank()
                    .cmp(&a.result.status.rank())
                    .then_with(|| a.result.check_id.cmp(&b.result.check_id))
            });
            let connected = state.sessions.is_connected(agent.id);
            AgentStatus {
                status: worst(mine.iter().map(|r| r.result.status)),
                results: mine.into_iter().map(Into::into).collect(),
                agent: AgentView::new(agent, connected),
            }
        })
        .collect();
    let cloud = state
        .store
        .cloud_run(&principal.scope, id)
        .await
        .map_err(not_found)?
        .map(super::cloud::CloudRunView::from);
    Ok(ResponseJson(TenantStatus {
        status: worst(
            agents
                .iter()
                .filter_map(|a| a.status)
                .chain(cloud.as_ref().and_then(|c| c.status))
                .chain(fleet.iter().map(|r| r.status)),
        ),
        tenant: tenant.into(),
        agents,
        cloud,
        fleet,
    }))
}

/// The fleet checks of one tenant, from its agents and their latest results.
fn fleet_results(
    state: &AppState,
    tenant_name: &str,
    agents: &[crate::domain::Agent],
    latest: &[LatestResult],
    now: OffsetDateTime,
) -> Vec<crate::domain::ResultRecord> {
    let fleet: Vec<fleet::FleetAgent<'_>> = agents
        .iter()
        .map(|agent| fleet::FleetAgent {
            agent,
            connected: state.sessions.is_connected(agent.id),
        })
        .collect();
    fleet::correlate(
        tenant_name,
        &fleet,
        latest,
        state.config.agent_interval(),
        now,
    )
}

/// Counts tenants and agents by their worst status.
#[utoipa::path(
    get,
    path = "/fleet/summary",
    tag = "status",
    responses(
        (status = 200, description = "Counts across every tenant the caller may see", body = FleetSummary),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn fleet_summary(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<ResponseJson<FleetSummary>, Error> {
    principal.require(Operation::ReadFleet)?;
    let rollups = state
        .store
        .agent_rollups(&principal.scope)
        .await
        .map_err(|e| Error::from_store(e, "fleet"))?;
    let tenant_total = state
        .store
        .count_tenants(&principal.scope)
        .await
        .map_err(|e| Error::from_store(e, "fleet"))?;
    let mut agents = StatusCounts::default();
    let mut per_tenant: BTreeMap<TenantId, Option<Status>> = BTreeMap::new();
    for rollup in &rollups {
        agents.add(rollup.worst);
        let slot = per_tenant.entry(rollup.tenant_id).or_insert(None);
        *slot = match (*slot, rollup.worst) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
    }
    for (tenant, status) in state
        .store
        .cloud_rollups(&principal.scope)
        .await
        .map_err(|e| Error::from_store(e, "fleet"))?
    {
        let slot = per_tenant.entry(tenant).or_insert(None);
        *slot = match (*slot, status) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
    }
    // Fleet checks compare a tenant's agents: recomputed for each tenant that has agents,
    // two reads each.
    let now = OffsetDateTime::now_utc();
    let with_agents: Vec<TenantId> = per_tenant.keys().copied().collect();
    for tenant_id in with_agents {
        let store_error = |e| Error::from_store(e, "fleet");
        let agents = state
            .agents(&principal.scope, tenant_id)
            .await
            .map_err(store_error)?;
        if agents.is_empty() {
            continue;
        }
        let latest = state
            .store
            .latest_results(&principal.scope, tenant_id)
            .await
            .map_err(store_error)?;
        let worst_fleet = worst(
            fleet_results(&state, "", &agents, &latest, now)
                .iter()
                .map(|r| r.status),
        );
        let slot = per_tenant.entry(tenant_id).or_insert(None);
        *slot = match (*slot, worst_fleet) {
            (Some(a), Some(b)) => Some(a.worst(b)),
            (a, b) => a.or(b),
        };
    }
    let mut tenants = StatusCounts::default();
    for status in per_tenant.values() {
        tenants.add(*status);
    }
    // Tenants without any agent have reported nothing.
    tenants.unknown += tenant_total.saturating_sub(per_tenant.len() as u64);
    Ok(ResponseJson(FleetSummary {
        tenants: Counts {
            total: tenant_total,
            by_status: tenants,
        },
        agents: Counts {
            total: rollups.len() as u64,
            by_status: agents,
        },
    }))
}

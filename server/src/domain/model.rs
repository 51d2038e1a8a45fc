//! The records the server keeps.

use serde_json::Value;
use time::OffsetDateTime;
use wbhealth_catalogue::Status;

use crate::domain::{
    AgentId, ApiKeyId, AuditAction, AuditEventId, EnrollmentTokenId, Operation, ReportId, TenantId,
    UserId,
};

/// A customer tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// A name people recognise, unique across the server.
    pub name: String,
    /// The customer's Microsoft Entra tenant id.
    pub entra_tenant_id: uuid::Uuid,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// What is needed to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Its name.
    pub name: String,
    /// The customer's Microsoft Entra tenant id.
    pub entra_tenant_id: uuid::Uuid,
}

/// An enrollment token as stored: the secret itself is only kept as a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentToken {
    /// Its id.
    pub id: EnrollmentTokenId,
    /// The tenant that agents enrolled with it join.
    pub tenant_id: TenantId,
    /// What it is for, as the administrator wrote it.
    pub description: String,
    /// After this instant it is refused.
    pub expires_at: OffsetDateTime,
    /// How many enrollments it allows.
    pub max_uses: u32,
    /// How many enrollments it has made.
    pub uses: u32,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// What is needed to create an enrollment token.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    /// The tenant it enrolls agents into.
    pub tenant_id: TenantId,
    /// SHA-256 of the token secret.
    pub token_hash: Vec<u8>,
    /// What it is for.
    pub description: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// How many enrollments it allows.
    pub max_uses: u32,
}

/// Why an enrollment token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// No token has this secret.
    Unknown,
    /// Its expiry has passed.
    Expired,
    /// Its uses are used up.
    Exhausted,
    /// An administrator revoked it.
    Revoked,
}

/// What an agent tells about its host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostFacts {
    /// The host name.
    pub hostname: String,
    /// Operating system name and version.
    pub os: String,
    /// The agent's version.
    pub agent_version: String,
    /// The domain controller it reads, as configured on the agent.
    pub domain_controller: String,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// What it last told about its host.
    pub host: HostFacts,
    /// When it enrolled.
    pub enrolled_at: OffsetDateTime,
    /// When it last talked to the server.
    pub last_seen_at: Option<OffsetDateTime>,
    /// When its credential was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// What is needed to create an agent at enrollment.
#[derive(Debug, Clone)]
pub struct NewAgent {
    /// Its id, chosen by the server.
    pub id: AgentId,
    /// SHA-256 of its credential secret.
    pub credential_hash: Vec<u8>,
    /// What it told about its host.
    pub host: HostFacts,
}

/// An agent with the hash of its credential, for authenticating a session.
#[derive(Debug, Clone)]
pub struct AgentCredential {
    /// The agent.
    pub agent: Agent,
    /// SHA-256 of its credential secret.
    pub credential_hash: Vec<u8>,
    /// SHA-256 of the credential a rotation under way has sent it, accepted as well until the
    /// agent confirms it and it replaces `credential_hash`.
    pub pending_credential_hash: Option<Vec<u8>>,
}

/// One check result, as reported by an agent or produced by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRecord {
    /// The catalogue id of the check.
    pub check_id: String,
    /// What it concluded.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// A JSON object with what was observed.
    pub evidence: Value,
    /// The fix for this case; empty when nothing is to be done.
    pub remediation: String,
    /// How long it took.
    pub duration_ms: u64,
    /// When it was observed.
    pub observed_at: OffsetDateTime,
}

/// One run of the checks on one agent.
#[derive(Debug, Clone)]
pub struct Report {
    /// Chosen by the agent, unique per run.
    pub id: ReportId,
    /// The agent that sent it.
    pub agent_id: AgentId,
    /// The agent's tenant.
    pub tenant_id: TenantId,
    /// When the run started.
    pub started_at: OffsetDateTime,
    /// When the run ended.
    pub finished_at: OffsetDateTime,
    /// What each check concluded.
    pub results: Vec<ResultRecord>,
}

/// What the server keeps about one stored report, for listing an agent's history.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportSummary {
    /// The report's id, chosen by the agent.
    pub id: ReportId,
    /// The agent that sent it.
    pub agent_id: AgentId,
    /// When the run started.
    pub started_at: OffsetDateTime,
    /// When the run ended.
    pub finished_at: OffsetDateTime,
    /// When the server stored it.
    pub received_at: OffsetDateTime,
    /// How many results it holds.
    pub results: u32,
    /// The worst of its results; `None` for an empty report.
    pub worst: Option<Status>,
}

/// Whether a report was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now.
    Stored,
    /// Already stored before; nothing changed.
    Duplicate,
}

/// The latest result of one check on one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestResult {
    /// The agent.
    pub agent_id: AgentId,
    /// The report it came from.
    pub report_id: ReportId,
    /// The result.
    pub result: ResultRecord,
}

/// An agent with the worst status among its latest results, for fleet counts.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRollup {
    /// The agent's tenant.
    pub tenant_id: TenantId,
    /// The agent.
    pub agent_id: AgentId,
    /// The worst latest status, or `None` when it has reported nothing yet.
    pub worst: Option<Status>,
    /// When it last talked to the server.
    pub last_seen_at: Option<OffsetDateTime>,
}

/// What a principal may do; [`authorize`](crate::domain::authorize) says exactly what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, on every tenant.
    Administrator,
    /// Reads and acts (run-now, enrollment tokens) on the tenants assigned to it.
    Technician,
    /// Reads the tenants assigned to it.
    Viewer,
    /// A key for another system: only the operations it names, on the tenants assigned to it.
    Integration,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [
        Role::Administrator,
        Role::Technician,
        Role::Viewer,
        Role::Integration,
    ];

    /// The stable spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Technician => "technician",
            Role::Viewer => "viewer",
            Role::Integration => "integration",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An API key as stored: the secret itself is only kept as a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    /// Its id.
    pub id: ApiKeyId,
    /// A name that says whose or what it is.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The tenants it may see, in id order; ignored for administrators.
    pub tenants: Vec<TenantId>,
    /// For an integration, the operations it may perform, in order; empty otherwise.
    pub operations: Vec<Operation>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was last used.
    pub last_used_at: Option<OffsetDateTime>,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// What is needed to create an API key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The tenants it may see. A tenant that does not exist makes the creation `NotFound`.
    pub tenants: Vec<TenantId>,
    /// For an integration, the operations it may perform.
    pub operations: Vec<Operation>,
    /// SHA-256 of the key.
    pub key_hash: Vec<u8>,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
}

/// A person who uses wbhealth, who signs in with a password for a session token.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// A unique name, such as an e-mail address.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The tenants the user may see, in id order; ignored for administrators.
    pub tenants: Vec<TenantId>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was disabled, if it is: it can then neither sign in nor use its session tokens
    /// or API keys.
    pub disabled_at: Option<OffsetDateTime>,
    /// Session tokens issued before this instant are refused: the last time its password was
    /// set or cleared.
    pub sessions_valid_after: Option<OffsetDateTime>,
}

/// What is needed to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Its unique name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The tenants the user may see. A tenant that does not exist makes the creation `NotFound`.
    pub tenants: Vec<TenantId>,
}

/// One change made through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Its id (time-ordered).
    pub id: AuditEventId,
    /// When the change was made.
    pub at: OffsetDateTime,
    /// The API key or user that made it.
    pub principal_id: uuid::Uuid,
    /// That principal's name at the time.
    pub principal_name: String,
    /// What was done.
    pub action: AuditAction,
    /// The tenant changed, if the change was in one.
    pub tenant_id: Option<TenantId>,
    /// The object created or changed, if any.
    pub target_id: Option<uuid::Uuid>,
    /// The client's IP address, when known.
    pub client_ip: Option<String>,
}

/// What is needed to record a change.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    /// The API key or user that made it.
    pub principal_id: uuid::Uuid,
    /// That principal's name.
    pub principal_name: String,
    /// What was done.
    pub action: AuditAction,
    /// The tenant changed, if any.
    pub tenant_id: Option<TenantId>,
    /// The object created or changed, if any.
    pub target_id: Option<uuid::Uuid>,
    /// The client's IP address, when known.
    pub client_ip: Option<String>,
}

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only events in this tenant.
    pub tenant: Option<TenantId>,
    /// Only events by this principal.
    pub principal: Option<uuid::Uuid>,
}

/// A request for one page of a list.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Start after this id (exclusive); `None` starts at the beginning.
    pub after: Option<uuid::Uuid>,
    /// At most this many items.
    pub limit: u32,
}

/// One page of a list, in id order (ids are time-ordered, so this is creation order).
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether more items follow the last one.
    pub has_more: bool,
}

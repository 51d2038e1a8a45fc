//! Persistence behind one [`Store`] trait, with SQLite (the embedded default) and PostgreSQL
//! implementations that pass the same conformance suite (`storage::conformance`).
//!
//! Every read or write of a tenant's data takes a [`TenantScope`]: a row outside the scope is
//! reported as `NotFound`, exactly like a row that does not exist.

mod convert;
mod error;
mod postgres;
mod sqlite;
mod transaction;

#[cfg(test)]
mod conformance;

use async_trait::async_trait;
use time::OffsetDateTime;
use wbhealth_catalogue::Status;

use crate::domain::{
    Agent, AgentCredential, AgentId, AgentRollup, ApiKey, ApiKeyId, AuditEvent, AuditFilter,
    CloudRun, EnrollmentToken, EnrollmentTokenId, GraphCredential, HostFacts, IngestOutcome,
    LatestResult, NewAgent, NewApiKey, NewAuditEvent, NewEnrollmentToken, NewGraphCredential,
    NewTenant, NewUser, Page, PageRequest, Report, ReportSummary, Role, Tenant, TenantId,
    TenantScope, TokenRejection, User, UserId,
};

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Everything the server keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers; used by `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a tenant. A name already in use is a `Conflict`.
    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, StoreError>;
    /// One tenant.
    async fn tenant(&self, scope: &TenantScope, id: TenantId) -> Result<Tenant, StoreError>;
    /// A page of tenants, in creation order.
    async fn list_tenants(
        &self,
        scope: &TenantScope,
        page: PageRequest,
    ) -> Result<Page<Tenant>, StoreError>;

    /// Creates an enrollment token for a tenant in scope.
    async fn create_enrollment_token(
        &self,
        scope: &TenantScope,
        new: NewEnrollmentToken,
    ) -> Result<EnrollmentToken, StoreError>;
    /// The enrollment tokens of a tenant, newest last.
    async fn list_enrollment_tokens(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<EnrollmentToken>, StoreError>;
    /// Revokes a token; revoking twice keeps the first revocation time.
    async fn revoke_enrollment_token(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        id: EnrollmentTokenId,
        at: OffsetDateTime,
    ) -> Result<EnrollmentToken, StoreError>;
    /// Atomically checks the token with this hash (known, not revoked, not expired at `now`,
    /// uses left), counts one use and creates the agent. Two concurrent enrollments can never
    /// both take a token's last use.
    async fn redeem_enrollment_token(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
        agent: NewAgent,
    ) -> Result<Result<Agent, TokenRejection>, StoreError>;

    /// An agent and its credential hash, for authenticating a session (no scope: the caller
    /// is the agent itself).
    async fn agent_credential(&self, id: AgentId) -> Result<AgentCredential, StoreError>;
    /// Records that an agent talked to the server, and what it said about its host.
    async fn touch_agent(
        &self,
        id: AgentId,
        at: OffsetDateTime,
        host: Option<&HostFacts>,
    ) -> Result<(), StoreError>;
    /// Revokes an agent's credential (and any rotation under way) so it can never open a
    /// session again; revoking twice keeps the first revocation time. `NotFound` when the
    /// tenant is out of scope or the agent is not the tenant's.
    async fn revoke_agent(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        at: OffsetDateTime,
    ) -> Result<Agent, StoreError>;
    /// Starts a credential rotation: `pending_hash` is accepted besides the current credential
    /// until [`complete_credential_rotation`](Store::complete_credential_rotation). A pending
    /// rotation is never replaced: the agent may already hold its credential. `NotFound` as for
    /// `revoke_agent`; `Conflict` when the agent is revoked or a rotation is pending.
    async fn begin_credential_rotation(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<Agent, StoreError>;
    /// Makes the pending credential with this hash the agent's only credential, the old one
    /// refused from then on. `false` (and nothing changes) when no such rotation is pending or
    /// the agent is revoked. No scope: the caller is the agent itself, proving it holds the
    /// new credential.
    async fn complete_credential_rotation(
        &self,
        agent: AgentId,
        pending_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Drops the pending credential with this hash, for an agent that logged in with its
    /// current one and so evidently never stored the new one. `false` (and nothing changes)
    /// when that rotation is no longer pending.
    async fn discard_pending_credential(
        &self,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<bool, StoreError>;
    /// The agents of a tenant, in enrollment order.
    async fn list_agents(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<Agent>, StoreError>;

    /// Stores a report once: a report id seen before is a `Duplicate` and changes nothing.
    /// The latest result per (agent, check) moves forward only, so a late duplicate or an old
    /// report replayed from a spool never hides a newer result.
    async fn ingest_report(&self, report: &Report) -> Result<IngestOutcome, StoreError>;
    /// Stores several reports, each as [`ingest_report`](Store::ingest_report) would, with
    /// one outcome per report in order. An implementation may commit them in one transaction;
    /// an `Err` then means none of them was stored.
    async fn ingest_reports(
        &self,
        reports: &[Report],
    ) -> Result<Vec<Result<IngestOutcome, StoreError>>, StoreError> {
        let mut outcomes = Vec::with_capacity(reports.len());
        for report in reports {
            outcomes.push(self.ingest_report(report).await);
        }
        Ok(outcomes)
    }
    /// How many writers the store serves at once to good effect: ingest runs that many
    /// batches side by side.
    fn write_concurrency(&self) -> usize {
        1
    }
    /// An agent's stored reports, in id order (agents make time-ordered ids). `NotFound` when
    /// the tenant is out of scope or the agent is not the tenant's.
    async fn list_reports(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        page: PageRequest,
    ) -> Result<Page<ReportSummary>, StoreError>;
    /// The latest result of every check of every agent of a tenant.
    async fn latest_results(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<LatestResult>, StoreError>;
    /// Every agent in scope with its worst latest status, for fleet counts.
    async fn agent_rollups(&self, scope: &TenantScope) -> Result<Vec<AgentRollup>, StoreError>;
    /// How many tenants are in scope.
    async fn count_tenants(&self, scope: &TenantScope) -> Result<u64, StoreError>;

    /// Creates an API key with its tenant assignments and operations. A tenant that does not
    /// exist is `NotFound` and creates nothing.
    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey, StoreError>;
    /// Creates `new` only when no API key exists yet, and returns it; `None` when a key
    /// exists. Atomic across processes, so replicas starting together on an empty database
    /// create one first key between them.
    async fn create_first_api_key(&self, new: NewApiKey) -> Result<Option<ApiKey>, StoreError>;
    /// How many API keys exist, revoked ones included; zero means a fresh database.
    async fn count_api_keys(&self) -> Result<u64, StoreError>;
    /// The key with this hash, and marks it used at `now`. Revoked and expired keys are
    /// returned too; the caller decides.
    async fn use_api_key(&self, key_hash: &[u8], now: OffsetDateTime)
    -> Result<ApiKey, StoreError>;
    /// The key with this hash, revoked and expired keys included (the caller decides); a
    /// read only: when it was used is recorded through [`record_activity`](Store::record_activity).
    async fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<ApiKey, StoreError>;
    /// Moves agents' `last_seen_at` and API keys' `last_used_at` forward to the given times
    /// (never back), in one transaction. Ids that no longer exist are skipped.
    async fn record_activity(
        &self,
        agents: &[(AgentId, OffsetDateTime)],
        api_keys: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), StoreError>;
    /// A page of API keys, revoked and expired ones included, in creation order.
    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>, StoreError>;
    /// Revokes a key; revoking twice keeps the first revocation time.
    async fn revoke_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<ApiKey, StoreError>;

    /// Creates a user with its tenant assignments. A name in use is a `Conflict`; a tenant
    /// that does not exist is `NotFound` and creates nothing.
    async fn create_user(&self, new: NewUser) -> Result<User, StoreError>;
    /// One user.
    async fn user(&self, id: UserId) -> Result<User, StoreError>;
    /// A page of users, in creation order.
    async fn list_users(&self, page: PageRequest) -> Result<Page<User>, StoreError>;
    /// Replaces a user's tenant assignments. A tenant that does not exist is `NotFound` and
    /// changes nothing.
    async fn set_user_tenants(
        &self,
        id: UserId,
        tenants: Vec<TenantId>,
    ) -> Result<User, StoreError>;

    /// Sets (or replaces) a tenant's Graph credential; its cloud checks become due now.
    async fn put_graph_credential(
        &self,
        scope: &TenantScope,
        new: NewGraphCredential,
    ) -> Result<GraphCredential, StoreError>;
    /// A tenant's Graph credential. `NotFound` when the tenant is out of scope or has none.
    async fn graph_credential(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<GraphCredential, StoreError>;
    /// Removes a tenant's Graph credential and its last cloud run. `NotFound` when it has none.
    async fn delete_graph_credential(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<(), StoreError>;
    /// Records whether getting a token worked (`error` is `None`) or why it did not.
    async fn record_token_outcome(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Claims up to `limit` tenants whose cloud checks are due at `now` by moving their next
    /// run to `next_run_at`, atomically: two replicas never claim the same tenant for one slot.
    async fn claim_due_cloud_tenants(
        &self,
        now: OffsetDateTime,
        next_run_at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError>;
    /// Moves a tenant's next cloud run (after an on-demand run). No-op without a credential.
    async fn set_next_cloud_run(
        &self,
        tenant: TenantId,
        next_run_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Replaces a tenant's last cloud run; stores nothing when the tenant no longer has a Graph
    /// credential (it was removed while the run went on).
    async fn save_cloud_run(&self, run: &CloudRun) -> Result<(), StoreError>;
    /// A tenant's last cloud run; `None` when none ran yet. `NotFound` when out of scope.
    async fn cloud_run(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Option<CloudRun>, StoreError>;
    /// The worst status of the last cloud run of every tenant in scope that has one.
    async fn cloud_rollups(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<(TenantId, Option<Status>)>, StoreError>;
    /// Changes a user's role and replaces its tenant assignments in one step. A tenant that
    /// does not exist is `NotFound` and changes nothing.
    async fn set_user_role(
        &self,
        id: UserId,
        role: Role,
        tenants: Vec<TenantId>,
    ) -> Result<User, StoreError>;
    /// Records that `user` created (and owns) the API key. A key that does not exist is
    /// `NotFound`.
    async fn set_api_key_owner(&self, key: ApiKeyId, user: UserId) -> Result<(), StoreError>;
    /// The user who owns the API key, if a user created it.
    async fn api_key_owner(&self, key: ApiKeyId) -> Result<Option<UserId>, StoreError>;
    /// Disables a user at `at` (disabling twice keeps the first time), or enables it with
    /// `None`.
    async fn set_user_disabled(
        &self,
        id: UserId,
        at: Option<OffsetDateTime>,
    ) -> Result<User, StoreError>;
    /// Sets or clears a user's password hash (an argon2id PHC string); session tokens issued
    /// before `sessions_valid_after` stop working.
    async fn set_user_password(
        &self,
        id: UserId,
        password_hash: Option<String>,
        sessions_valid_after: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// The user with this name and its password hash, for signing in; `NotFound` when no user
    /// has the name.
    async fn user_by_name(&self, name: &str) -> Result<(User, Option<String>), StoreError>;
    /// Deletes a user and its assignments. Its session tokens stop working because the user
    /// is gone; its audit events stay.
    async fn delete_user(&self, id: UserId) -> Result<(), StoreError>;
    /// Refuses a session token (by its `jti`) until `expires_at`; revoking twice changes
    /// nothing. Drops revocations of tokens that expired before `now`.
    async fn revoke_session_token(
        &self,
        jti: uuid::Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Whether the session token with this `jti` was revoked.
    async fn session_token_revoked(&self, jti: uuid::Uuid) -> Result<bool, StoreError>;

    /// Appends an event to the audit log.
    async fn record_audit_event(&self, new: NewAuditEvent) -> Result<AuditEvent, StoreError>;
    /// A page of audit events matching `filter`, oldest first.
    async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError>;
}

/// Opens the store that `url` names (`sqlite:…` or `postgres://…`) and brings its schema up
/// to date.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    }
}

/// The `Conflict` message of a rotation begun while another waits for the agent's confirmation.
fn pending_rotation_message(agent: AgentId) -> String {
    format!(
        "a rotation of agent {agent}'s credential is already waiting for the agent's confirmation; \
         it is dropped when the agent reconnects with its current credential, then try again"
    )
}

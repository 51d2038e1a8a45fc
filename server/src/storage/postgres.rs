//! The store on PostgreSQL, for several stateless server replicas sharing one database.
//!
//! Ids are `uuid`, instants `timestamptz`, evidence `jsonb` (see
//! `migrations/postgres/0001_initial.sql`). Transactions run at READ COMMITTED; where a
//! decision depends on a row that a concurrent transaction could change (an enrollment
//! token's uses), the row is locked with `SELECT … FOR UPDATE` first. Nothing relies on
//! catching an error inside a transaction, which would abort it.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;
use wbhealth_catalogue::Status;

use crate::domain::{
    Agent, AgentCredential, AgentId, AgentRollup, ApiKey, ApiKeyId, AuditEvent, AuditEventId,
    AuditFilter, CloudRun, EnrollmentToken, EnrollmentTokenId, GraphCloud, GraphCredential,
    GraphCredentialKind, HostFacts, IngestOutcome, LatestResult, NewAgent, NewApiKey,
    NewAuditEvent, NewEnrollmentToken, NewGraphCredential, NewTenant, NewUser, Operation, Page,
    PageRequest, Report, ReportId, ReportSummary, ResultRecord, Tenant, TenantId, TenantScope,
    TokenRejection, User, UserId,
};
use crate::storage::convert::{
    self, STATUS_RANK_SQL, check_unique_checks, conflict_as, fetch_limit, instant, into_page,
    rejection,
};
use crate::storage::{Store, StoreError, transaction};

/// Connections per server replica.
const MAX_CONNECTIONS: u32 = 10;
/// How long a request waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database that `url` (`postgres://…`) names and brings its schema up to
    /// date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // The URL may carry a password, so it is never repeated in a message.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(options).await
    }

    /// Connects with options already parsed, and brings the schema up to date.
    pub(crate) async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A session that comes back from a request still inside a transaction is closed,
            // never reused (`storage::transaction`).
            .after_release(|conn, _| transaction::postgres_outside_transaction(conn))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open(format!("cannot connect to PostgreSQL: {e}")))?;
        // The migrator takes an advisory lock, so replicas starting together migrate once.
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Open(format!(
                    "cannot bring the PostgreSQL schema up to date: {e}"
                ))
            })?;
        Ok(Self { pool })
    }
}

/// The scope as a bind value for `$n::uuid[]`: `NULL` for every tenant. Queries test it as
/// `($n::uuid[] IS NULL OR tenant_id = ANY($n::uuid[]))`.
fn scope_param(scope: &TenantScope) -> Option<Vec<Uuid>> {
    match scope {
        TenantScope::All => None,
        TenantScope::Only(ids) => Some(ids.iter().map(|id| id.0).collect()),
    }
}

/// `NotFound` unless the tenant exists and is in scope.
async fn tenant_in_scope(
    conn: &mut PgConnection,
    scope: &TenantScope,
    tenant: TenantId,
) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT 1 FROM tenants \
         WHERE id = $1 AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))",
    )
    .bind(tenant.0)
    .bind(scope_param(scope))
    .fetch_optional(conn)
    .await?
    .map(|_| ())
    .ok_or(StoreError::NotFound)
}

#[derive(FromRow)]
struct ReportSummaryRow {
    id: Uuid,
    agent_id: Uuid,
    started_at: OffsetDateTime,
    finished_at: OffsetDateTime,
    received_at: OffsetDateTime,
    results: i64,
    worst_rank: Option<i64>,
}

impl ReportSummaryRow {
    fn into_domain(self) -> Result<ReportSummary, StoreError> {
        Ok(ReportSummary {
            id: ReportId(self.id),
            agent_id: AgentId(self.agent_id),
            started_at: self.started_at,
            finished_at: self.finished_at,
            received_at: self.received_at,
            results: convert::to_u32(self.results, "report result count")?,
            worst: convert::status_of_rank(self.worst_rank)?,
        })
    }
}

#[derive(FromRow)]
struct CredentialRow {
    tenant_id: Uuid,
    directory_id: String,
    client_id: String,
    cloud: String,
    kind: String,
    thumbprint: Option<String>,
    not_after: Option<OffsetDateTime>,
    sealed: Vec<u8>,
    updated_at: OffsetDateTime,
    last_token_ok_at: Option<OffsetDateTime>,
    last_token_error_at: Option<OffsetDateTime>,
    last_token_error: Option<String>,
}

const CREDENTIAL_COLUMNS: &str = "tenant_id, directory_id, client_id, cloud, kind, thumbprint, \
     not_after, sealed, updated_at, last_token_ok_at, last_token_error_at, last_token_error";

impl CredentialRow {
    fn into_domain(self) -> Result<GraphCredential, StoreError> {
        Ok(GraphCredential {
            tenant_id: TenantId(self.tenant_id),
            directory_id: self.directory_id,
            client_id: self.client_id,
            cloud: GraphCloud::parse(&self.cloud)
                .ok_or_else(|| convert::corrupt("graph credential cloud", &self.cloud))?,
            kind: GraphCredentialKind::parse(&self.kind)
                .ok_or_else(|| convert::corrupt("graph credential kind", &self.kind))?,
            thumbprint: self.thumbprint,
            not_after: self.not_after,
            sealed: self.sealed,
            updated_at: self.updated_at,
            last_token_ok_at: self.last_token_ok_at,
            last_token_error_at: self.last_token_error_at,
            last_token_error: self.last_token_error,
        })
    }
}

#[derive(FromRow)]
struct TenantRow {
    id: Uuid,
    name: String,
    entra_tenant_id: Uuid,
    created_at: OffsetDateTime,
}

const TENANT_COLUMNS: &str = "id, name, entra_tenant_id, created_at";

impl TenantRow {
    fn into_domain(self) -> Tenant {
        Tenant {
            id: TenantId(self.id),
            name: self.name,
            entra_tenant_id: self.entra_tenant_id,
            created_at: self.created_at,
        }
    }
}

#[derive(FromRow)]
struct TokenRow {
    id: Uuid,
    tenant_id: Uuid,
    description: String,
    expires_at: OffsetDateTime,
    max_uses: i64,
    uses: i64,
    revoked_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, description, expires_at, max_uses, uses, revoked_at, created_at";

impl TokenRow {
    fn into_domain(self) -> Result<EnrollmentToken, StoreError> {
        Ok(EnrollmentToken {
            id: EnrollmentTokenId(self.id),
            tenant_id: TenantId(self.tenant_id),
            description: self.description,
            expires_at: self.expires_at,
            max_uses: convert::to_u32(self.max_uses, "enrollment token max_uses")?,
            uses: convert::to_u32(self.uses, "enrollment token uses")?,
            revoked_at: self.revoked_at,
            created_at: self.created_at,
        })
    }
}

#[derive(FromRow)]
struct AgentRow {
    id: Uuid,
    tenant_id: Uuid,
    hostname: String,
    os: String,
    agent_version: String,
    domain_controller: String,
    enrolled_at: OffsetDateTime,
    last_seen_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

const AGENT_COLUMNS: &str = "id, tenant_id, hostname, os, agent_version, domain_controller, \
                             enrolled_at, last_seen_at, revoked_at";

impl AgentRow {
    fn into_domain(self) -> Agent {
        Agent {
            id: AgentId(self.id),
            tenant_id: TenantId(self.tenant_id),
            host: HostFacts {
                hostname: self.hostname,
                os: self.os,
                agent_version: self.agent_version,
                domain_controller: self.domain_controller,
            },
            enrolled_at: self.enrolled_at,
            last_seen_at: self.last_seen_at,
            revoked_at: self.revoked_at,
        }
    }
}

#[derive(FromRow)]
struct AgentCredentialRow {
    #[sqlx(flatten)]
    agent: AgentRow,
    credential_hash: Vec<u8>,
    pending_credential_hash: Option<Vec<u8>>,
}

#[derive(FromRow)]
struct LatestRow {
    agent_id: Uuid,
    report_id: Uuid,
    check_id: String,
    status: String,
    summary: String,
    evidence: Json<serde_json::Value>,
    remediation: String,
    duration_ms: i64,
    observed_at: OffsetDateTime,
}

impl LatestRow {
    fn into_domain(self) -> Result<LatestResult, StoreError> {
        Ok(LatestResult {
            agent_id: AgentId(self.agent_id),
            report_id: ReportId(self.report_id),
            result: ResultRecord {
                check_id: self.check_id,
                status: convert::status(&self.status)?,
                summary: self.summary,
                evidence: self.evidence.0,
                remediation: self.remediation,
                duration_ms: convert::to_u64(self.duration_ms, "latest result duration_ms")?,
                observed_at: self.observed_at,
            },
        })
    }
}

#[derive(FromRow)]
struct RollupRow {
    id: Uuid,
    tenant_id: Uuid,
    last_seen_at: Option<OffsetDateTime>,
    worst_rank: Option<i64>,
}

impl RollupRow {
    fn into_domain(self) -> Result<AgentRollup, StoreError> {
        Ok(AgentRollup {
            tenant_id: TenantId(self.tenant_id),
            agent_id: AgentId(self.id),
            worst: convert::status_of_rank(self.worst_rank)?,
            last_seen_at: self.last_seen_at,
        })
    }
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: Uuid,
    name: String,
    role: String,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

const API_KEY_COLUMNS: &str = "id, name, role, created_at, last_used_at, expires_at, revoked_at";

impl ApiKeyRow {
    fn into_domain(
        self,
        (tenants, operations): (Vec<TenantId>, Vec<Operation>),
    ) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: ApiKeyId(self.id),
            name: self.name,
            role: convert::role(&self.role)?,
            tenants,
            operations,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

fn uuids(tenants: &[TenantId]) -> Vec<Uuid> {
    tenants.iter().map(|t| t.0).collect()
}

/// `NotFound` unless every one of `tenants` (distinct) exists.
async fn tenants_exist(conn: &mut PgConnection, tenants: &[TenantId]) -> Result<(), StoreError> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tenants WHERE id = ANY($1::uuid[])")
        .bind(uuids(tenants))
        .fetch_one(conn)
        .await?;
    if usize::try_from(n).ok() == Some(tenants.len()) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// A key's tenant assignments and operations, in order.
async fn key_grants(
    conn: &mut PgConnection,
    key: Uuid,
) -> Result<(Vec<TenantId>, Vec<Operation>), StoreError> {
    let tenants: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT tenant_id FROM api_key_tenants WHERE api_key_id = $1 ORDER BY tenant_id",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let operations: Vec<(String,)> =
        sqlx::query_as("SELECT operation FROM api_key_operations WHERE api_key_id = $1")
            .bind(key)
            .fetch_all(&mut *conn)
            .await?;
    let operations = operations
        .iter()
        .map(|(op,)| convert::operation(op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        tenants.into_iter().map(|(t,)| TenantId(t)).collect(),
        convert::distinct_operations(operations),
    ))
}

/// A user's tenant assignments, in order.
async fn user_tenants(conn: &mut PgConnection, user: Uuid) -> Result<Vec<TenantId>, StoreError> {
    let rows: Vec<(Uuid,)> =
        sqlx::query_as("SELECT tenant_id FROM user_tenants WHERE user_id = $1 ORDER BY tenant_id")
            .bind(user)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(t,)| TenantId(t)).collect())
}

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    name: String,
    role: String,
    created_at: OffsetDateTime,
    disabled_at: Option<OffsetDateTime>,
    sessions_valid_after: Option<OffsetDateTime>,
}

const USER_COLUMNS: &str = "id, name, role, created_at, disabled_at, sessions_valid_after";

impl UserRow {
    fn into_domain(self, tenants: Vec<TenantId>) -> Result<User, StoreError> {
        Ok(User {
            id: UserId(self.id),
            name: self.name,
            role: convert::role(&self.role)?,
            tenants,
            created_at: self.created_at,
            disabled_at: self.disabled_at,
            sessions_valid_after: self.sessions_valid_after,
        })
    }
}

/// The user with its assignments, or `NotFound`.
async fn load_user(conn: &mut PgConnection, id: UserId) -> Result<User, StoreError> {
    let row: UserRow = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let tenants = user_tenants(conn, row.id).await?;
    row.into_domain(tenants)
}

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    at: OffsetDateTime,
    principal_id: Uuid,
    principal_name: String,
    action: String,
    tenant_id: Option<Uuid>,
    target_id: Option<Uuid>,
    client_ip: Option<String>,
}

const AUDIT_COLUMNS: &str =
    "id, at, principal_id, principal_name, action, tenant_id, target_id, client_ip";

impl AuditRow {
    fn into_domain(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: AuditEventId(self.id),
            at: self.at,
            principal_id: self.principal_id,
            principal_name: self.principal_name,
            action: convert::action(&self.action)?,
            tenant_id: self.tenant_id.map(TenantId),
            target_id: self.target_id,
            client_ip: self.client_ip,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, StoreError> {
        let row: TenantRow = sqlx::query_as(&format!(
            "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES ($1, $2, $3, $4) \
             RETURNING {TENANT_COLUMNS}"
        ))
        .bind(TenantId::new().0)
        .bind(&new.name)
        .bind(new.entra_tenant_id)
        .bind(convert::now())
        .fetch_one(&self.pool)
        .await
        .map_err(conflict_as(|| {
            format!(
                "a tenant named {:?} or for Entra tenant {} already exists",
                new.name, new.entra_tenant_id
            )
        }))?;
        Ok(row.into_domain())
    }

    async fn tenant(&self, scope: &TenantScope, id: TenantId) -> Result<Tenant, StoreError> {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants \
             WHERE id = $1 AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))"
        ))
        .bind(id.0)
        .bind(scope_param(scope))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.ok_or(StoreError::NotFound)?.into_domain())
    }

    async fn list_tenants(
        &self,
        scope: &TenantScope,
        page: PageRequest,
    ) -> Result<Page<Tenant>, StoreError> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants \
             WHERE ($1::uuid IS NULL OR id > $1::uuid) \
               AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[])) \
             ORDER BY id LIMIT $3"
        ))
        .bind(page.after)
        .bind(scope_param(scope))
        .bind(fetch_limit(page.limit))
        .fetch_all(&self.pool)
        .await?;
        let items = rows.into_iter().map(TenantRow::into_domain).collect();
        Ok(into_page(items, page.limit))
    }

    async fn create_enrollment_token(
        &self,
        scope: &TenantScope,
        new: NewEnrollmentToken,
    ) -> Result<EnrollmentToken, StoreError> {
        // The foreign key keeps the tenant from disappearing; the scope is checked in the same
        // statement that inserts.
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "INSERT INTO enrollment_tokens \
               (id, tenant_id, token_hash, description, expires_at, max_uses, uses, created_at) \
             SELECT $1, t.id, $3, $4, $5, $6, 0, $7 FROM tenants t \
             WHERE t.id = $2 AND ($8::uuid[] IS NULL OR t.id = ANY($8::uuid[])) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(EnrollmentTokenId::new().0)
        .bind(new.tenant_id.0)
        .bind(&new.token_hash)
        .bind(&new.description)
        .bind(instant(new.expires_at))
        .bind(i64::from(new.max_uses))
        .bind(convert::now())
        .bind(scope_param(scope))
        .fetch_optional(&self.pool)
        .await
        .map_err(conflict_as(|| {
            "an enrollment token with this secret already exists".to_owned()
        }))?;
        row.ok_or(StoreError::NotFound)?.into_domain()
    }

    async fn list_enrollment_tokens(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<EnrollmentToken>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(TokenRow::into_domain).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        id: EnrollmentTokenId,
        at: OffsetDateTime,
    ) -> Result<EnrollmentToken, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $1) \
             WHERE id = $2 AND tenant_id = $3 \
               AND ($4::uuid[] IS NULL OR tenant_id = ANY($4::uuid[])) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(instant(at))
        .bind(id.0)
        .bind(tenant.0)
        .bind(scope_param(scope))
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or(StoreError::NotFound)?.into_domain()
    }

    async fn redeem_enrollment_token(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
        agent: NewAgent,
    ) -> Result<Result<Agent, TokenRejection>, StoreError> {
        let now = instant(now);
        let mut tx = transaction::begin(&self.pool, None).await?;
        // FOR UPDATE: a concurrent redemption of the same token waits here until this one
        // commits, then reads the uses this one counted.
        let token: Option<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE"
        ))
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else {
            return Ok(Err(TokenRejection::Unknown));
        };
        let token = token.into_domain()?;
        if let Some(rejection) = rejection(&token, now) {
            return Ok(Err(rejection));
        }
        sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1")
            .bind(token.id.0)
            .execute(&mut *tx)
            .await?;
        let row: AgentRow = sqlx::query_as(&format!(
            "INSERT INTO agents (id, tenant_id, credential_hash, hostname, os, agent_version, \
                                 domain_controller, enrolled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(agent.id.0)
        .bind(token.tenant_id.0)
        .bind(&agent.credential_hash)
        .bind(&agent.host.hostname)
        .bind(&agent.host.os)
        .bind(&agent.host.agent_version)
        .bind(&agent.host.domain_controller)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            format!("an agent with id {} already exists", agent.id)
        }))?;
        tx.commit().await?;
        Ok(Ok(row.into_domain()))
    }

    async fn agent_credential(&self, id: AgentId) -> Result<AgentCredential, StoreError> {
        let row: Option<AgentCredentialRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS}, credential_hash, pending_credential_hash FROM agents WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok(AgentCredential {
            agent: row.agent.into_domain(),
            credential_hash: row.credential_hash,
            pending_credential_hash: row.pending_credential_hash,
        })
    }

    async fn revoke_agent(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        at: OffsetDateTime,
    ) -> Result<Agent, StoreError> {
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $1), pending_credential_hash = NULL \
             WHERE id = $2 AND tenant_id = $3 \
               AND ($4::uuid[] IS NULL OR tenant_id = ANY($4::uuid[])) \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(instant(at))
        .bind(agent.0)
        .bind(tenant.0)
        .bind(scope_param(scope))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.ok_or(StoreError::NotFound)?.into_domain())
    }

    async fn begin_credential_rotation(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<Agent, StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        // FOR UPDATE: a revocation between this read and the update below waits for us.
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND tenant_id = $2 \
               AND ($3::uuid[] IS NULL OR tenant_id = ANY($3::uuid[])) FOR UPDATE"
        ))
        .bind(agent.0)
        .bind(tenant.0)
        .bind(scope_param(scope))
        .fetch_optional(&mut *tx)
        .await?;
        let found = row.ok_or(StoreError::NotFound)?.into_domain();
        if found.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "agent {agent} is revoked; enroll it again"
            )));
        }
        // Never replaces a pending credential: the agent may have stored it already and lost
        // only its confirmation.
        let started = sqlx::query(
            "UPDATE agents SET pending_credential_hash = $1 \
             WHERE id = $2 AND pending_credential_hash IS NULL",
        )
        .bind(pending_hash)
        .bind(agent.0)
        .execute(&mut *tx)
        .await?;
        if started.rows_affected() == 0 {
            return Err(StoreError::Conflict(super::pending_rotation_message(agent)));
        }
        tx.commit().await?;
        Ok(found)
    }

    async fn complete_credential_rotation(
        &self,
        agent: AgentId,
        pending_hash: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET credential_hash = pending_credential_hash, \
                pending_credential_hash = NULL, credential_rotated_at = $3 \
             WHERE id = $1 AND pending_credential_hash = $2 AND revoked_at IS NULL",
        )
        .bind(agent.0)
        .bind(pending_hash)
        .bind(instant(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn discard_pending_credential(
        &self,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET pending_credential_hash = NULL \
             WHERE id = $1 AND pending_credential_hash = $2",
        )
        .bind(agent.0)
        .bind(pending_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_agent(
        &self,
        id: AgentId,
        at: OffsetDateTime,
        host: Option<&HostFacts>,
    ) -> Result<(), StoreError> {
        // last_seen_at only moves forward (GREATEST ignores NULL): a late, slow request never
        // makes an agent look older than it is.
        let done = sqlx::query(
            "UPDATE agents SET last_seen_at = GREATEST(last_seen_at, $2), \
                hostname = COALESCE($3, hostname), os = COALESCE($4, os), \
                agent_version = COALESCE($5, agent_version), domain_controller = COALESCE($6, domain_controller) \
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(instant(at))
        .bind(host.map(|h| h.hostname.as_str()))
        .bind(host.map(|h| h.os.as_str()))
        .bind(host.map(|h| h.agent_version.as_str()))
        .bind(host.map(|h| h.domain_controller.as_str()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn list_agents(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 ORDER BY enrolled_at, id"
        ))
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(AgentRow::into_domain).collect())
    }

    async fn list_reports(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        page: PageRequest,
    ) -> Result<Page<ReportSummary>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<ReportSummaryRow> = sqlx::query_as(&format!(
            "SELECT r.id, r.agent_id, r.started_at, r.finished_at, r.received_at, \
                    COUNT(l.check_id) AS results, MAX({rank})::bigint AS worst_rank \
             FROM reports r LEFT JOIN report_results l ON l.report_id = r.id \
             WHERE r.tenant_id = $1 AND r.agent_id = $2 AND ($3::uuid IS NULL OR r.id > $3::uuid) \
             GROUP BY r.id ORDER BY r.id LIMIT $4",
            rank = &*STATUS_RANK_SQL
        ))
        .bind(tenant.0)
        .bind(agent.0)
        .bind(page.after)
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() && page.after.is_none() {
            sqlx::query("SELECT 1 FROM agents WHERE id = $1 AND tenant_id = $2")
                .bind(agent.0)
                .bind(tenant.0)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound)?;
        }
        let items = rows
            .into_iter()
            .map(ReportSummaryRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, page.limit))
    }

    async fn ingest_report(&self, report: &Report) -> Result<IngestOutcome, StoreError> {
        check_unique_checks(report)?;
        let mut tx = transaction::begin(&self.pool, None).await?;
        // FOR SHARE: a revocation racing this report waits for it, and a revoked agent's
        // report is never stored.
        let owner: Option<(Uuid,)> = sqlx::query_as(
            "SELECT tenant_id FROM agents WHERE id = $1 AND revoked_at IS NULL FOR SHARE",
        )
        .bind(report.agent_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        if owner.is_none_or(|(t,)| t != report.tenant_id.0) {
            return Err(StoreError::NotFound);
        }
        // ON CONFLICT DO NOTHING rather than catching a unique violation, which would abort
        // the transaction. A concurrent insert of the same id waits for the other to finish.
        let inserted = sqlx::query(
            "INSERT INTO reports (id, agent_id, tenant_id, started_at, finished_at, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(report.id.0)
        .bind(report.agent_id.0)
        .bind(report.tenant_id.0)
        .bind(instant(report.started_at))
        .bind(instant(report.finished_at))
        .bind(convert::now())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Dropping the transaction rolls it back; nothing was changed.
            return Ok(IngestOutcome::Duplicate);
        }
        let results = &report.results;
        sqlx::query(
            "INSERT INTO report_results (report_id, check_id, status, summary, evidence, \
                                         remediation, duration_ms, observed_at) \
             SELECT $1, r.* FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[], \
                                        $6::text[], $7::bigint[], $8::timestamptz[]) \
                AS r (check_id, status, summary, evidence, remediation, duration_ms, observed_at)",
        )
        .bind(report.id.0)
        .bind(
            results
                .iter()
                .map(|r| r.check_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| r.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| r.summary.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| Json(&r.evidence))
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| r.remediation.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| convert::from_u64(r.duration_ms))
                .collect::<Vec<_>>(),
        )
        .bind(
            results
                .iter()
                .map(|r| instant(r.observed_at))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        // Forward only: a result replaces the stored one only if it was observed at the same
        // time or later. Rows are taken in check order so two reports of one agent lock the
        // same rows in the same order and cannot deadlock.
        sqlx::query(
            "INSERT INTO latest_results (agent_id, check_id, tenant_id, report_id, status, \
                                         summary, evidence, remediation, duration_ms, observed_at) \
             SELECT $2, r.check_id, $3, r.report_id, r.status, r.summary, r.evidence, \
                    r.remediation, r.duration_ms, r.observed_at \
             FROM report_results r WHERE r.report_id = $1 ORDER BY r.check_id COLLATE \"C\" \
             ON CONFLICT (agent_id, check_id) DO UPDATE SET \
                report_id = excluded.report_id, status = excluded.status, \
                summary = excluded.summary, evidence = excluded.evidence, \
                remediation = excluded.remediation, duration_ms = excluded.duration_ms, \
                observed_at = excluded.observed_at \
             WHERE excluded.observed_at >= latest_results.observed_at",
        )
        .bind(report.id.0)
        .bind(report.agent_id.0)
        .bind(report.tenant_id.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IngestOutcome::Stored)
    }

    async fn latest_results(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<LatestResult>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        // COLLATE "C": byte order, the same order SQLite returns.
        let rows: Vec<LatestRow> = sqlx::query_as(
            "SELECT agent_id, report_id, check_id, status, summary, evidence, remediation, \
                    duration_ms, observed_at \
             FROM latest_results WHERE tenant_id = $1 \
             ORDER BY agent_id, check_id COLLATE \"C\"",
        )
        .bind(tenant.0)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(LatestRow::into_domain).collect()
    }

    async fn agent_rollups(&self, scope: &TenantScope) -> Result<Vec<AgentRollup>, StoreError> {
        let rows: Vec<RollupRow> = sqlx::query_as(&format!(
            "SELECT a.id, a.tenant_id, a.last_seen_at, MAX({rank})::bigint AS worst_rank \
             FROM agents a LEFT JOIN latest_results l ON l.agent_id = a.id \
             WHERE ($1::uuid[] IS NULL OR a.tenant_id = ANY($1::uuid[])) \
             GROUP BY a.id ORDER BY a.id",
            rank = &*STATUS_RANK_SQL
        ))
        .bind(scope_param(scope))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RollupRow::into_domain).collect()
    }

    async fn count_tenants(&self, scope: &TenantScope) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tenants \
             WHERE $1::uuid[] IS NULL OR id = ANY($1::uuid[])",
        )
        .bind(scope_param(scope))
        .fetch_one(&self.pool)
        .await?;
        convert::to_u64(n, "tenant count")
    }

    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey, StoreError> {
        let tenants = convert::distinct(new.tenants);
        let operations = convert::distinct_operations(new.operations);
        let mut tx = transaction::begin(&self.pool, None).await?;
        tenants_exist(&mut tx, &tenants).await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(ApiKeyId::new().0)
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(&new.key_hash)
        .bind(convert::now())
        .bind(new.expires_at.map(instant))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            "an API key with this secret already exists".to_owned()
        }))?;
        sqlx::query(
            "INSERT INTO api_key_tenants (api_key_id, tenant_id) \
             SELECT $1, t FROM UNNEST($2::uuid[]) AS t",
        )
        .bind(row.id)
        .bind(uuids(&tenants))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO api_key_operations (api_key_id, operation) \
             SELECT $1, o FROM UNNEST($2::text[]) AS o",
        )
        .bind(row.id)
        .bind(operations.iter().map(|o| o.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_domain((tenants, operations))
    }

    async fn create_first_api_key(&self, new: NewApiKey) -> Result<Option<ApiKey>, StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        // SHARE ROW EXCLUSIVE conflicts with itself: concurrent bootstraps take turns, and the
        // second one sees the first one's key.
        sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM api_keys) \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(ApiKeyId::new().0)
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(&new.key_hash)
        .bind(convert::now())
        .bind(new.expires_at.map(instant))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|row| row.into_domain((Vec::new(), Vec::new())))
            .transpose()
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        convert::to_u64(n, "api key count")
    }

    async fn use_api_key(
        &self,
        key_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $2) \
             WHERE key_hash = $1 RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(key_hash)
        .bind(instant(now))
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let mut conn = self.pool.acquire().await?;
        let grants = key_grants(&mut conn, row.id).await?;
        row.into_domain(grants)
    }

    async fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<ApiKey, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        let grants = key_grants(&mut conn, row.id).await?;
        row.into_domain(grants)
    }

    async fn record_activity(
        &self,
        agents: &[(AgentId, OffsetDateTime)],
        api_keys: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        // One statement per table: the ids and times as arrays.
        let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) =
            agents.iter().map(|(id, at)| (id.0, instant(*at))).unzip();
        sqlx::query(
            "UPDATE agents a SET last_seen_at = GREATEST(a.last_seen_at, v.at) \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, at) WHERE a.id = v.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        let (ids, times): (Vec<Uuid>, Vec<OffsetDateTime>) =
            api_keys.iter().map(|(id, at)| (id.0, instant(*at))).unzip();
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, v.at) \
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(id, at) WHERE k.id = v.id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE ($1::uuid IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let grants = key_grants(&mut conn, row.id).await?;
            items.push(row.into_domain(grants)?);
        }
        Ok(into_page(items, page.limit))
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<ApiKey, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(id.0)
        .bind(instant(at))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        let grants = key_grants(&mut conn, row.id).await?;
        row.into_domain(grants)
    }

    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let tenants = convert::distinct(new.tenants);
        let mut tx = transaction::begin(&self.pool, None).await?;
        tenants_exist(&mut tx, &tenants).await?;
        let row: UserRow = sqlx::query_as(&format!(
            "INSERT INTO users (id, name, role, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {USER_COLUMNS}"
        ))
        .bind(UserId::new().0)
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(convert::now())
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            format!("a user named {:?} already exists", new.name)
        }))?;
        sqlx::query(
            "INSERT INTO user_tenants (user_id, tenant_id) SELECT $1, t FROM UNNEST($2::uuid[]) AS t",
        )
        .bind(row.id)
        .bind(uuids(&tenants))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_domain(tenants)
    }

    async fn user(&self, id: UserId) -> Result<User, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_user(&mut conn, id).await
    }

    async fn list_users(&self, page: PageRequest) -> Result<Page<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        ))
        .bind(page.after)
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let tenants = user_tenants(&mut conn, row.id).await?;
            items.push(row.into_domain(tenants)?);
        }
        Ok(into_page(items, page.limit))
    }

    async fn set_user_tenants(
        &self,
        id: UserId,
        tenants: Vec<TenantId>,
    ) -> Result<User, StoreError> {
        let tenants = convert::distinct(tenants);
        let mut tx = transaction::begin(&self.pool, None).await?;
        // Locks the user, so two replacements of its assignments take turns.
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenants_exist(&mut tx, &tenants).await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO user_tenants (user_id, tenant_id) SELECT $1, t FROM UNNEST($2::uuid[]) AS t",
        )
        .bind(id.0)
        .bind(uuids(&tenants))
        .execute(&mut *tx)
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn put_graph_credential(
        &self,
        scope: &TenantScope,
        new: NewGraphCredential,
    ) -> Result<GraphCredential, StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        tenant_in_scope(&mut tx, scope, new.tenant_id).await?;
        let row: CredentialRow = sqlx::query_as(&format!(
            "INSERT INTO graph_credentials \
               (tenant_id, directory_id, client_id, cloud, kind, thumbprint, not_after, sealed, \
                updated_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
               directory_id = excluded.directory_id, client_id = excluded.client_id, \
               cloud = excluded.cloud, kind = excluded.kind, thumbprint = excluded.thumbprint, \
               not_after = excluded.not_after, sealed = excluded.sealed, \
               updated_at = excluded.updated_at, next_run_at = excluded.next_run_at, \
               last_token_ok_at = NULL, last_token_error_at = NULL, last_token_error = NULL \
             RETURNING {CREDENTIAL_COLUMNS}"
        ))
        .bind(new.tenant_id.0)
        .bind(&new.directory_id)
        .bind(&new.client_id)
        .bind(new.cloud.as_str())
        .bind(new.kind.as_str())
        .bind(&new.thumbprint)
        .bind(new.not_after.map(convert::instant))
        .bind(&new.sealed)
        .bind(convert::now())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn graph_credential(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<GraphCredential, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let row: Option<CredentialRow> = sqlx::query_as(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM graph_credentials WHERE tenant_id = $1"
        ))
        .bind(tenant.0)
        .fetch_optional(&mut *conn)
        .await?;
        row.ok_or(StoreError::NotFound)?.into_domain()
    }

    async fn delete_graph_credential(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<(), StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        tenant_in_scope(&mut tx, scope, tenant).await?;
        let done = sqlx::query("DELETE FROM graph_credentials WHERE tenant_id = $1")
            .bind(tenant.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM cloud_runs WHERE tenant_id = $1")
            .bind(tenant.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_token_outcome(
        &self,
        tenant: TenantId,
        at: OffsetDateTime,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let query = match error {
            None => sqlx::query(
                "UPDATE graph_credentials SET last_token_ok_at = $2 WHERE tenant_id = $1 \
                 AND $3::text IS NULL",
            ),
            Some(_) => sqlx::query(
                "UPDATE graph_credentials SET last_token_error_at = $2, last_token_error = $3 \
                 WHERE tenant_id = $1",
            ),
        };
        query
            .bind(tenant.0)
            .bind(convert::instant(at))
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn claim_due_cloud_tenants(
        &self,
        now: OffsetDateTime,
        next_run_at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE graph_credentials SET next_run_at = $2 \
             WHERE tenant_id IN (SELECT tenant_id FROM graph_credentials \
                                 WHERE next_run_at <= $1 ORDER BY next_run_at LIMIT $3 \
                                 FOR UPDATE SKIP LOCKED) \
             RETURNING tenant_id",
        )
        .bind(convert::instant(now))
        .bind(convert::instant(next_run_at))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| TenantId(id)).collect())
    }

    async fn set_next_cloud_run(
        &self,
        tenant: TenantId,
        next_run_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE graph_credentials SET next_run_at = $2 WHERE tenant_id = $1")
            .bind(tenant.0)
            .bind(convert::instant(next_run_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_cloud_run(&self, run: &CloudRun) -> Result<(), StoreError> {
        let sspr =
            serde_json::to_value(&run.sspr).map_err(|e| convert::corrupt("sspr activity", e))?;
        sqlx::query(
            "INSERT INTO cloud_runs (tenant_id, results, sspr, worst, started_at, finished_at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE EXISTS (SELECT 1 FROM graph_credentials WHERE tenant_id = $1) \
             ON CONFLICT (tenant_id) DO UPDATE SET results = excluded.results, \
               sspr = excluded.sspr, worst = excluded.worst, started_at = excluded.started_at, \
               finished_at = excluded.finished_at",
        )
        .bind(run.tenant_id.0)
        .bind(Json(convert::results_json(&run.results)))
        .bind(Json(sspr))
        .bind(convert::worst_of(&run.results))
        .bind(convert::instant(run.started_at))
        .bind(convert::instant(run.finished_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cloud_run(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Option<CloudRun>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        #[allow(clippy::type_complexity)]
        let row: Option<(
            Json<serde_json::Value>,
            Json<serde_json::Value>,
            OffsetDateTime,
            OffsetDateTime,
        )> = sqlx::query_as(
            "SELECT results, sspr, started_at, finished_at FROM cloud_runs WHERE tenant_id = $1",
        )
        .bind(tenant.0)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((results, sspr, started_at, finished_at)) = row else {
            return Ok(None);
        };
        Ok(Some(CloudRun {
            tenant_id: tenant,
            results: convert::results_of_json(results.0)?,
            sspr: serde_json::from_value(sspr.0)
                .map_err(|e| convert::corrupt("sspr activity", e))?,
            started_at,
            finished_at,
        }))
    }

    async fn cloud_rollups(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<(TenantId, Option<Status>)>, StoreError> {
        let rows: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT tenant_id, worst FROM cloud_runs \
             WHERE $1::uuid[] IS NULL OR tenant_id = ANY($1::uuid[]) ORDER BY tenant_id",
        )
        .bind(scope_param(scope))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tenant, worst)| {
                Ok((
                    TenantId(tenant),
                    worst.as_deref().map(convert::status).transpose()?,
                ))
            })
            .collect()
    }

    async fn set_user_role(
        &self,
        id: UserId,
        role: crate::domain::Role,
        tenants: Vec<TenantId>,
    ) -> Result<User, StoreError> {
        let tenants = convert::distinct(tenants);
        let mut tx = transaction::begin(&self.pool, None).await?;
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        tenants_exist(&mut tx, &tenants).await?;
        sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
            .bind(id.0)
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO user_tenants (user_id, tenant_id) SELECT $1, t FROM UNNEST($2::uuid[]) AS t",
        )
        .bind(id.0)
        .bind(uuids(&tenants))
        .execute(&mut *tx)
        .await?;
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn set_api_key_owner(&self, key: ApiKeyId, user: UserId) -> Result<(), StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        sqlx::query("SELECT 1 FROM api_keys WHERE id = $1")
            .bind(key.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query(
            "INSERT INTO api_key_owners (api_key_id, user_id) VALUES ($1, $2) \
             ON CONFLICT (api_key_id) DO UPDATE SET user_id = excluded.user_id",
        )
        .bind(key.0)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key_owner(&self, key: ApiKeyId) -> Result<Option<UserId>, StoreError> {
        let owner: Option<(Uuid,)> =
            sqlx::query_as("SELECT user_id FROM api_key_owners WHERE api_key_id = $1")
                .bind(key.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(owner.map(|(id,)| UserId(id)))
    }

    async fn set_user_disabled(
        &self,
        id: UserId,
        at: Option<OffsetDateTime>,
    ) -> Result<User, StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        // Disabling twice keeps the first time.
        let done = sqlx::query(
            "UPDATE users SET disabled_at = CASE WHEN $2::timestamptz IS NULL THEN NULL \
             ELSE COALESCE(disabled_at, $2) END WHERE id = $1",
        )
        .bind(id.0)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn set_user_password(
        &self,
        id: UserId,
        password_hash: Option<String>,
        sessions_valid_after: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $2, sessions_valid_after = $3 WHERE id = $1",
        )
        .bind(id.0)
        .bind(password_hash)
        .bind(sessions_valid_after)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<(User, Option<String>), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let found: Option<(Uuid, Option<String>)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?;
        let (id, password_hash) = found.ok_or(StoreError::NotFound)?;
        let user = load_user(&mut conn, UserId(id)).await?;
        Ok((user, password_hash))
    }

    async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_session_token(
        &self,
        jti: Uuid,
        user: UserId,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = transaction::begin(&self.pool, None).await?;
        sqlx::query("DELETE FROM revoked_session_tokens WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_session_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(user.0)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_token_revoked(&self, jti: Uuid) -> Result<bool, StoreError> {
        let found: Option<(i32,)> =
            sqlx::query_as("SELECT 1 FROM revoked_session_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn record_audit_event(&self, new: NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let row: AuditRow = sqlx::query_as(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {AUDIT_COLUMNS}"
        ))
        .bind(AuditEventId::new().0)
        .bind(convert::now())
        .bind(new.principal_id)
        .bind(&new.principal_name)
        .bind(new.action.as_str())
        .bind(new.tenant_id.map(|t| t.0))
        .bind(new.target_id)
        .bind(&new.client_ip)
        .fetch_one(&self.pool)
        .await?;
        row.into_domain()
    }

    async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE ($1::uuid IS NULL OR id > $1) AND ($2::uuid IS NULL OR tenant_id = $2) \
               AND ($3::uuid IS NULL OR principal_id = $3) \
             ORDER BY id LIMIT $4"
        ))
        .bind(page.after)
        .bind(filter.tenant.map(|t| t.0))
        .bind(filter.principal)
        .bind(fetch_limit(page.limit))
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .into_iter()
            .map(AuditRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, page.limit))
    }
}

//! The embedded store: one SQLite file, nothing to install (or an in-memory database for trials
//! and tests).
//!
//! Representation (see `migrations/sqlite/0001_initial.sql`): ids are lowercase hyphenated UUID
//! text, which sorts exactly like the UUID bytes, so UUIDv7 ids page in creation order as they
//! do on PostgreSQL; instants are integer microseconds since the Unix epoch, UTC.
//!
//! Write locking: every write runs in a `BEGIN IMMEDIATE` transaction on a pool of exactly one
//! connection, while reads use a separate pool.
//! - The single write connection queues this process's writers fairly inside the async pool
//!   instead of letting them spin in SQLite's sleeping busy handler.
//! - `BEGIN IMMEDIATE` takes the database's write lock before the first read of the
//!   transaction, so a read-then-write transaction (redeeming a token) can never find its
//!   snapshot stale when it comes to write, and another process writing the same file (a
//!   second server, the `sqlite3` shell) is waited for, up to the busy timeout, at `BEGIN`.
//! - `Pool::begin_with` lets sqlx track the transaction: dropping it unfinished (an error, a
//!   cancelled request) rolls it back before the connection is reused.
//!
//! WAL mode lets the readers run beside the writer. An in-memory database uses one connection
//! for everything: the database lives exactly as long as that connection, and one connection
//! avoids shared-cache table locks, which the busy timeout does not cover.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, Sqlite, SqliteConnection, Transaction};
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
    self, STATUS_RANK_SQL, check_unique_checks, conflict_as, corrupt, fetch_limit, into_page,
    rejection,
};
use crate::storage::{Store, StoreError, transaction};

/// How long a writer waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers of a file database; SQLite runs each connection on its own thread.
const READ_CONNECTIONS: u32 = 4;

/// The store on SQLite.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads only; several connections, each seeing the last committed state.
    read: SqlitePool,
    /// Every write, on exactly one connection (see the module documentation).
    write: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database that `url` names and brings its schema up
    /// to date. Accepts `sqlite:path`, `sqlite://path`, a bare path and `sqlite::memory:`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(format!("invalid SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // FULL: a report acknowledged to an agent (which then deletes it from its spool)
            // must survive a power cut, not only a crash of this process.
            .synchronous(SqliteSynchronous::Full);
        let memory = is_memory(url);
        let options = if memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        let open_error = |e: sqlx::Error| {
            StoreError::Open(format!("cannot open the SQLite database {url:?}: {e}"))
        };

        let write = write_pool_options(memory)
            .max_connections(1)
            .min_connections(if memory { 1 } else { 0 })
            // An in-memory database lives as long as its one connection.
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            })
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&write)
            .await
            .map_err(|e| {
                StoreError::Open(format!(
                    "cannot bring the SQLite schema in {url:?} up to date: {e}"
                ))
            })?;
        let read = if memory {
            write.clone()
        } else {
            // Reads never begin a transaction, so they need no probe on release.
            SqlitePoolOptions::new()
                .max_connections(READ_CONNECTIONS)
                .connect_with(options)
                .await
                .map_err(open_error)?
        };
        Ok(Self { read, write })
    }

    /// Starts a write transaction holding the database's write lock.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        transaction::begin(&self.write, Some("BEGIN IMMEDIATE")).await
    }
}

/// The write pool's settings: a file database's connection that comes back from a request
/// still inside a transaction is closed, never reused (`storage::transaction`). An in-memory
/// database is not checked: closing its one connection would lose the database.
fn write_pool_options(memory: bool) -> SqlitePoolOptions {
    let options = SqlitePoolOptions::new();
    if memory {
        options
    } else {
        options.after_release(|conn, _| transaction::sqlite_outside_transaction(conn))
    }
}

/// Whether `url` names an in-memory database (`sqlite::memory:` or `?mode=memory`).
fn is_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|p| p == "mode=memory")
}

/// The stored form of an id.
fn id_text(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

/// Reads a stored id.
fn id_of(s: &str, what: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| corrupt(what, e))
}

/// The stored form of an instant: microseconds since the Unix epoch.
fn micros(t: OffsetDateTime) -> i64 {
    let us = t.unix_timestamp_nanos().div_euclid(1_000);
    // Only reachable with the `large-dates` feature of `time`, far outside any real instant.
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

/// Reads a stored instant.
fn instant_of(us: i64, what: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).map_err(|e| corrupt(what, e))
}

fn opt_instant_of(us: Option<i64>, what: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    us.map(|us| instant_of(us, what)).transpose()
}

/// The scope as a bind value: `NULL` for every tenant, otherwise a JSON array of ids for
/// `json_each`. Queries test it as `(?n IS NULL OR tenant_id IN (SELECT value FROM json_each(?n)))`.
fn scope_param(scope: &TenantScope) -> Option<String> {
    match scope {
        TenantScope::All => None,
        TenantScope::Only(ids) => Some(
            serde_json::Value::from(ids.iter().map(|id| id_text(&id.0)).collect::<Vec<_>>())
                .to_string(),
        ),
    }
}

/// `NotFound` unless the agent belongs to the tenant.
async fn agent_of_tenant(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    agent: AgentId,
) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM agents WHERE id = ?1 AND tenant_id = ?2")
        .bind(id_text(&agent.0))
        .bind(id_text(&tenant.0))
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

#[derive(FromRow)]
struct ReportSummaryRow {
    id: String,
    agent_id: String,
    started_at: i64,
    finished_at: i64,
    received_at: i64,
    results: i64,
    worst_rank: Option<i64>,
}

impl ReportSummaryRow {
    fn into_domain(self) -> Result<ReportSummary, StoreError> {
        Ok(ReportSummary {
            id: ReportId(id_of(&self.id, "report id")?),
            agent_id: AgentId(id_of(&self.agent_id, "agent id")?),
            started_at: instant_of(self.started_at, "report started_at")?,
            finished_at: instant_of(self.finished_at, "report finished_at")?,
            received_at: instant_of(self.received_at, "report received_at")?,
            results: convert::to_u32(self.results, "report result count")?,
            worst: convert::status_of_rank(self.worst_rank)?,
        })
    }
}

/// `NotFound` unless the tenant exists and is in scope.
async fn tenant_in_scope(
    conn: &mut SqliteConnection,
    scope: &TenantScope,
    tenant: TenantId,
) -> Result<(), StoreError> {
    sqlx::query(
        "SELECT 1 FROM tenants \
         WHERE id = ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))",
    )
    .bind(id_text(&tenant.0))
    .bind(scope_param(scope))
    .fetch_optional(conn)
    .await?
    .map(|_| ())
    .ok_or(StoreError::NotFound)
}

#[derive(FromRow)]
struct TenantRow {
    id: String,
    name: String,
    entra_tenant_id: String,
    created_at: i64,
}

const TENANT_COLUMNS: &str = "id, name, entra_tenant_id, created_at";

impl TenantRow {
    fn into_domain(self) -> Result<Tenant, StoreError> {
        Ok(Tenant {
            id: TenantId(id_of(&self.id, "tenant id")?),
            name: self.name,
            entra_tenant_id: id_of(&self.entra_tenant_id, "tenant entra_tenant_id")?,
            created_at: instant_of(self.created_at, "tenant created_at")?,
        })
    }
}

#[derive(FromRow)]
struct TokenRow {
    id: String,
    tenant_id: String,
    description: String,
    expires_at: i64,
    max_uses: i64,
    uses: i64,
    revoked_at: Option<i64>,
    created_at: i64,
}

const TOKEN_COLUMNS: &str =
    "id, tenant_id, description, expires_at, max_uses, uses, revoked_at, created_at";

impl TokenRow {
    fn into_domain(self) -> Result<EnrollmentToken, StoreError> {
        Ok(EnrollmentToken {
            id: EnrollmentTokenId(id_of(&self.id, "enrollment token id")?),
            tenant_id: TenantId(id_of(&self.tenant_id, "enrollment token tenant_id")?),
            description: self.description,
            expires_at: instant_of(self.expires_at, "enrollment token expires_at")?,
            max_uses: convert::to_u32(self.max_uses, "enrollment token max_uses")?,
            uses: convert::to_u32(self.uses, "enrollment token uses")?,
            revoked_at: opt_instant_of(self.revoked_at, "enrollment token revoked_at")?,
            created_at: instant_of(self.created_at, "enrollment token created_at")?,
        })
    }
}

#[derive(FromRow)]
struct AgentRow {
    id: String,
    tenant_id: String,
    hostname: String,
    os: String,
    agent_version: String,
    domain_controller: String,
    enrolled_at: i64,
    last_seen_at: Option<i64>,
    revoked_at: Option<i64>,
}

const AGENT_COLUMNS: &str = "id, tenant_id, hostname, os, agent_version, domain_controller, \
                             enrolled_at, last_seen_at, revoked_at";

impl AgentRow {
    fn into_domain(self) -> Result<Agent, StoreError> {
        Ok(Agent {
            id: AgentId(id_of(&self.id, "agent id")?),
            tenant_id: TenantId(id_of(&self.tenant_id, "agent tenant_id")?),
            host: HostFacts {
                hostname: self.hostname,
                os: self.os,
                agent_version: self.agent_version,
                domain_controller: self.domain_controller,
            },
            enrolled_at: instant_of(self.enrolled_at, "agent enrolled_at")?,
            last_seen_at: opt_instant_of(self.last_seen_at, "agent last_seen_at")?,
            revoked_at: opt_instant_of(self.revoked_at, "agent revoked_at")?,
        })
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
struct CredentialRow {
    tenant_id: String,
    directory_id: String,
    client_id: String,
    cloud: String,
    kind: String,
    thumbprint: Option<String>,
    not_after: Option<i64>,
    sealed: Vec<u8>,
    updated_at: i64,
    last_token_ok_at: Option<i64>,
    last_token_error_at: Option<i64>,
    last_token_error: Option<String>,
}

const CREDENTIAL_COLUMNS: &str = "tenant_id, directory_id, client_id, cloud, kind, thumbprint, \
     not_after, sealed, updated_at, last_token_ok_at, last_token_error_at, last_token_error";

impl CredentialRow {
    fn into_domain(self) -> Result<GraphCredential, StoreError> {
        Ok(GraphCredential {
            tenant_id: TenantId(id_of(&self.tenant_id, "graph credential tenant_id")?),
            directory_id: self.directory_id,
            client_id: self.client_id,
            cloud: GraphCloud::parse(&self.cloud)
                .ok_or_else(|| corrupt("graph credential cloud", &self.cloud))?,
            kind: GraphCredentialKind::parse(&self.kind)
                .ok_or_else(|| corrupt("graph credential kind", &self.kind))?,
            thumbprint: self.thumbprint,
            not_after: opt_instant_of(self.not_after, "graph credential not_after")?,
            sealed: self.sealed,
            updated_at: instant_of(self.updated_at, "graph credential updated_at")?,
            last_token_ok_at: opt_instant_of(self.last_token_ok_at, "last_token_ok_at")?,
            last_token_error_at: opt_instant_of(self.last_token_error_at, "last_token_error_at")?,
            last_token_error: self.last_token_error,
        })
    }
}

#[derive(FromRow)]
struct LatestRow {
    agent_id: String,
    report_id: String,
    check_id: String,
    status: String,
    summary: String,
    evidence: String,
    remediation: String,
    duration_ms: i64,
    observed_at: i64,
}

impl LatestRow {
    fn into_domain(self) -> Result<LatestResult, StoreError> {
        Ok(LatestResult {
            agent_id: AgentId(id_of(&self.agent_id, "latest result agent_id")?),
            report_id: ReportId(id_of(&self.report_id, "latest result report_id")?),
            result: ResultRecord {
                check_id: self.check_id,
                status: convert::status(&self.status)?,
                summary: self.summary,
                evidence: serde_json::from_str(&self.evidence)
                    .map_err(|e| corrupt("latest result evidence", e))?,
                remediation: self.remediation,
                duration_ms: convert::to_u64(self.duration_ms, "latest result duration_ms")?,
                observed_at: instant_of(self.observed_at, "latest result observed_at")?,
            },
        })
    }
}

#[derive(FromRow)]
struct RollupRow {
    id: String,
    tenant_id: String,
    last_seen_at: Option<i64>,
    worst_rank: Option<i64>,
}

impl RollupRow {
    fn into_domain(self) -> Result<AgentRollup, StoreError> {
        Ok(AgentRollup {
            tenant_id: TenantId(id_of(&self.tenant_id, "agent tenant_id")?),
            agent_id: AgentId(id_of(&self.id, "agent id")?),
            worst: convert::status_of_rank(self.worst_rank)?,
            last_seen_at: opt_instant_of(self.last_seen_at, "agent last_seen_at")?,
        })
    }
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
}

const API_KEY_COLUMNS: &str = "id, name, role, created_at, last_used_at, expires_at, revoked_at";

impl ApiKeyRow {
    fn into_domain(
        self,
        (tenants, operations): (Vec<TenantId>, Vec<Operation>),
    ) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: ApiKeyId(id_of(&self.id, "api key id")?),
            name: self.name,
            role: convert::role(&self.role)?,
            tenants,
            operations,
            created_at: instant_of(self.created_at, "api key created_at")?,
            last_used_at: opt_instant_of(self.last_used_at, "api key last_used_at")?,
            expires_at: opt_instant_of(self.expires_at, "api key expires_at")?,
            revoked_at: opt_instant_of(self.revoked_at, "api key revoked_at")?,
        })
    }
}

/// A JSON array of ids, for `json_each`.
fn id_array(tenants: &[TenantId]) -> String {
    serde_json::Value::from(tenants.iter().map(|t| id_text(&t.0)).collect::<Vec<_>>()).to_string()
}

/// `NotFound` unless every one of `tenants` (distinct) exists.
async fn tenants_exist(
    conn: &mut SqliteConnection,
    tenants: &[TenantId],
) -> Result<(), StoreError> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM tenants WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(id_array(tenants))
    .fetch_one(conn)
    .await?;
    if usize::try_from(n).ok() == Some(tenants.len()) {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

fn tenant_ids(rows: Vec<(String,)>) -> Result<Vec<TenantId>, StoreError> {
    rows.into_iter()
        .map(|(id,)| id_of(&id, "assigned tenant_id").map(TenantId))
        .collect()
}

/// A key's tenant assignments and operations, in order.
async fn key_grants(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<(Vec<TenantId>, Vec<Operation>), StoreError> {
    let tenants: Vec<(String,)> = sqlx::query_as(
        "SELECT tenant_id FROM api_key_tenants WHERE api_key_id = ?1 ORDER BY tenant_id",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let operations: Vec<(String,)> =
        sqlx::query_as("SELECT operation FROM api_key_operations WHERE api_key_id = ?1")
            .bind(key)
            .fetch_all(&mut *conn)
            .await?;
    let operations = operations
        .iter()
        .map(|(op,)| convert::operation(op))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        tenant_ids(tenants)?,
        convert::distinct_operations(operations),
    ))
}

/// A user's tenant assignments, in order.
async fn user_tenants(
    conn: &mut SqliteConnection,
    user: &str,
) -> Result<Vec<TenantId>, StoreError> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT tenant_id FROM user_tenants WHERE user_id = ?1 ORDER BY tenant_id")
            .bind(user)
            .fetch_all(conn)
            .await?;
    tenant_ids(rows)
}

#[derive(FromRow)]
struct UserRow {
    id: String,
    name: String,
    role: String,
    created_at: i64,
    disabled_at: Option<i64>,
    sessions_valid_after: Option<i64>,
}

const USER_COLUMNS: &str = "id, name, role, created_at, disabled_at, sessions_valid_after";

impl UserRow {
    fn into_domain(self, tenants: Vec<TenantId>) -> Result<User, StoreError> {
        Ok(User {
            id: UserId(id_of(&self.id, "user id")?),
            name: self.name,
            role: convert::role(&self.role)?,
            tenants,
            created_at: instant_of(self.created_at, "user created_at")?,
            disabled_at: opt_instant_of(self.disabled_at, "user disabled_at")?,
            sessions_valid_after: opt_instant_of(
                self.sessions_valid_after,
                "user sessions_valid_after",
            )?,
        })
    }
}

/// The user with its assignments, or `NotFound`.
async fn load_user(conn: &mut SqliteConnection, id: UserId) -> Result<User, StoreError> {
    let row: UserRow = sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
        .bind(id_text(&id.0))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    let tenants = user_tenants(conn, &row.id).await?;
    row.into_domain(tenants)
}

#[derive(FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    principal_id: String,
    principal_name: String,
    action: String,
    tenant_id: Option<String>,
    target_id: Option<String>,
    client_ip: Option<String>,
}

const AUDIT_COLUMNS: &str =
    "id, at, principal_id, principal_name, action, tenant_id, target_id, client_ip";

impl AuditRow {
    fn into_domain(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: AuditEventId(id_of(&self.id, "audit event id")?),
            at: instant_of(self.at, "audit event at")?,
            principal_id: id_of(&self.principal_id, "audit principal_id")?,
            principal_name: self.principal_name,
            action: convert::action(&self.action)?,
            tenant_id: self
                .tenant_id
                .map(|t| id_of(&t, "audit tenant_id").map(TenantId))
                .transpose()?,
            target_id: self
                .target_id
                .map(|t| id_of(&t, "audit target_id"))
                .transpose()?,
            client_ip: self.client_ip,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn create_tenant(&self, new: NewTenant) -> Result<Tenant, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: TenantRow = sqlx::query_as(&format!(
            "INSERT INTO tenants ({TENANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4) \
             RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id_text(&TenantId::new().0))
        .bind(&new.name)
        .bind(id_text(&new.entra_tenant_id))
        .bind(micros(convert::now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            format!(
                "a tenant named {:?} or for Entra tenant {} already exists",
                new.name, new.entra_tenant_id
            )
        }))?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn tenant(&self, scope: &TenantScope, id: TenantId) -> Result<Tenant, StoreError> {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants \
             WHERE id = ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))"
        ))
        .bind(id_text(&id.0))
        .bind(scope_param(scope))
        .fetch_optional(&self.read)
        .await?;
        row.ok_or(StoreError::NotFound)?.into_domain()
    }

    async fn list_tenants(
        &self,
        scope: &TenantScope,
        page: PageRequest,
    ) -> Result<Page<Tenant>, StoreError> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants \
             WHERE (?1 IS NULL OR id > ?1) \
               AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2))) \
             ORDER BY id LIMIT ?3"
        ))
        .bind(page.after.as_ref().map(id_text))
        .bind(scope_param(scope))
        .bind(fetch_limit(page.limit))
        .fetch_all(&self.read)
        .await?;
        let items = rows
            .into_iter()
            .map(TenantRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, page.limit))
    }

    async fn create_enrollment_token(
        &self,
        scope: &TenantScope,
        new: NewEnrollmentToken,
    ) -> Result<EnrollmentToken, StoreError> {
        let mut tx = self.begin_write().await?;
        tenant_in_scope(&mut tx, scope, new.tenant_id).await?;
        let row: TokenRow = sqlx::query_as(&format!(
            "INSERT INTO enrollment_tokens \
               (id, tenant_id, token_hash, description, expires_at, max_uses, uses, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id_text(&EnrollmentTokenId::new().0))
        .bind(id_text(&new.tenant_id.0))
        .bind(&new.token_hash)
        .bind(&new.description)
        .bind(micros(new.expires_at))
        .bind(i64::from(new.max_uses))
        .bind(micros(convert::now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            "an enrollment token with this secret already exists".to_owned()
        }))?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn list_enrollment_tokens(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<EnrollmentToken>, StoreError> {
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE tenant_id = ?1 ORDER BY id"
        ))
        .bind(id_text(&tenant.0))
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
        let mut tx = self.begin_write().await?;
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?1) \
             WHERE id = ?2 AND tenant_id = ?3 \
               AND (?4 IS NULL OR tenant_id IN (SELECT value FROM json_each(?4))) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(micros(at))
        .bind(id_text(&id.0))
        .bind(id_text(&tenant.0))
        .bind(scope_param(scope))
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn redeem_enrollment_token(
        &self,
        token_hash: &[u8],
        now: OffsetDateTime,
        agent: NewAgent,
    ) -> Result<Result<Agent, TokenRejection>, StoreError> {
        let now = convert::instant(now);
        // IMMEDIATE: no other writer can take a use between this read and the update below.
        let mut tx = self.begin_write().await?;
        let token: Option<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = ?1"
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
        sqlx::query("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?1")
            .bind(id_text(&token.id.0))
            .execute(&mut *tx)
            .await?;
        let row: AgentRow = sqlx::query_as(&format!(
            "INSERT INTO agents (id, tenant_id, credential_hash, hostname, os, agent_version, \
                                 domain_controller, enrolled_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(id_text(&agent.id.0))
        .bind(id_text(&token.tenant_id.0))
        .bind(&agent.credential_hash)
        .bind(&agent.host.hostname)
        .bind(&agent.host.os)
        .bind(&agent.host.agent_version)
        .bind(&agent.host.domain_controller)
        .bind(micros(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            format!("an agent with id {} already exists", agent.id)
        }))?;
        tx.commit().await?;
        Ok(Ok(row.into_domain()?))
    }

    async fn agent_credential(&self, id: AgentId) -> Result<AgentCredential, StoreError> {
        let row: Option<AgentCredentialRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS}, credential_hash, pending_credential_hash FROM agents WHERE id = ?1"
        ))
        .bind(id_text(&id.0))
        .fetch_optional(&self.read)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok(AgentCredential {
            agent: row.agent.into_domain()?,
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
        let mut tx = self.begin_write().await?;
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?1), pending_credential_hash = NULL \
             WHERE id = ?2 AND tenant_id = ?3 \
               AND (?4 IS NULL OR tenant_id IN (SELECT value FROM json_each(?4))) \
             RETURNING {AGENT_COLUMNS}"
        ))
        .bind(micros(at))
        .bind(id_text(&agent.0))
        .bind(id_text(&tenant.0))
        .bind(scope_param(scope))
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn begin_credential_rotation(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<Agent, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: Option<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1 AND tenant_id = ?2 \
               AND (?3 IS NULL OR tenant_id IN (SELECT value FROM json_each(?3)))"
        ))
        .bind(id_text(&agent.0))
        .bind(id_text(&tenant.0))
        .bind(scope_param(scope))
        .fetch_optional(&mut *tx)
        .await?;
        let found = row.ok_or(StoreError::NotFound)?.into_domain()?;
        if found.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "agent {agent} is revoked; enroll it again"
            )));
        }
        // Never replaces a pending credential: the agent may have stored it already and lost
        // only its confirmation.
        let started = sqlx::query(
            "UPDATE agents SET pending_credential_hash = ?1 \
             WHERE id = ?2 AND pending_credential_hash IS NULL",
        )
        .bind(pending_hash)
        .bind(id_text(&agent.0))
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE agents SET credential_hash = pending_credential_hash, \
                pending_credential_hash = NULL, credential_rotated_at = ?3 \
             WHERE id = ?1 AND pending_credential_hash = ?2 AND revoked_at IS NULL",
        )
        .bind(id_text(&agent.0))
        .bind(pending_hash)
        .bind(micros(at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn discard_pending_credential(
        &self,
        agent: AgentId,
        pending_hash: &[u8],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE agents SET pending_credential_hash = NULL \
             WHERE id = ?1 AND pending_credential_hash = ?2",
        )
        .bind(id_text(&agent.0))
        .bind(pending_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_agent(
        &self,
        id: AgentId,
        at: OffsetDateTime,
        host: Option<&HostFacts>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // last_seen_at only moves forward: a late, slow request never makes an agent look
        // older than it is.
        let done = sqlx::query(
            "UPDATE agents SET last_seen_at = MAX(COALESCE(last_seen_at, ?2), ?2), \
                hostname = COALESCE(?3, hostname), os = COALESCE(?4, os), \
                agent_version = COALESCE(?5, agent_version), domain_controller = COALESCE(?6, domain_controller) \
             WHERE id = ?1",
        )
        .bind(id_text(&id.0))
        .bind(micros(at))
        .bind(host.map(|h| h.hostname.as_str()))
        .bind(host.map(|h| h.os.as_str()))
        .bind(host.map(|h| h.agent_version.as_str()))
        .bind(host.map(|h| h.domain_controller.as_str()))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_agents(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<AgentRow> = sqlx::query_as(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = ?1 ORDER BY enrolled_at, id"
        ))
        .bind(id_text(&tenant.0))
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(AgentRow::into_domain).collect()
    }

    async fn list_reports(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
        agent: AgentId,
        page: PageRequest,
    ) -> Result<Page<ReportSummary>, StoreError> {
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<ReportSummaryRow> = sqlx::query_as(&format!(
            "SELECT r.id, r.agent_id, r.started_at, r.finished_at, r.received_at, \
                    COUNT(l.check_id) AS results, MAX({rank}) AS worst_rank \
             FROM reports r LEFT JOIN report_results l ON l.report_id = r.id \
             WHERE r.tenant_id = ?1 AND r.agent_id = ?2 AND (?3 IS NULL OR r.id > ?3) \
             GROUP BY r.id ORDER BY r.id LIMIT ?4",
            rank = &*STATUS_RANK_SQL
        ))
        .bind(id_text(&tenant.0))
        .bind(id_text(&agent.0))
        .bind(page.after.as_ref().map(id_text))
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() && page.after.is_none() {
            agent_of_tenant(&mut conn, tenant, agent).await?;
        }
        let items = rows
            .into_iter()
            .map(ReportSummaryRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, page.limit))
    }

    async fn ingest_report(&self, report: &Report) -> Result<IngestOutcome, StoreError> {
        check_unique_checks(report)?;
        let report_id = id_text(&report.id.0);
        let agent_id = id_text(&report.agent_id.0);
        let tenant_id = id_text(&report.tenant_id.0);

        let mut tx = self.begin_write().await?;
        // A revoked agent's report is never stored, even one racing the revocation.
        let owner: Option<(String,)> =
            sqlx::query_as("SELECT tenant_id FROM agents WHERE id = ?1 AND revoked_at IS NULL")
                .bind(&agent_id)
                .fetch_optional(&mut *tx)
                .await?;
        if owner.is_none_or(|(t,)| t != tenant_id) {
            return Err(StoreError::NotFound);
        }
        let inserted = sqlx::query(
            "INSERT INTO reports (id, agent_id, tenant_id, started_at, finished_at, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&report_id)
        .bind(&agent_id)
        .bind(&tenant_id)
        .bind(micros(report.started_at))
        .bind(micros(report.finished_at))
        .bind(micros(convert::now()))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // Dropping the transaction rolls it back; nothing was changed.
            return Ok(IngestOutcome::Duplicate);
        }
        for r in &report.results {
            sqlx::query(
                "INSERT INTO report_results (report_id, check_id, status, summary, evidence, \
                                             remediation, duration_ms, observed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(&report_id)
            .bind(&r.check_id)
            .bind(r.status.as_str())
            .bind(&r.summary)
            .bind(r.evidence.to_string())
            .bind(&r.remediation)
            .bind(convert::from_u64(r.duration_ms))
            .bind(micros(r.observed_at))
            .execute(&mut *tx)
            .await?;
        }
        // Forward only: a result replaces the stored one only if it was observed at the same
        // time or later. (SQLite's parser needs the SELECT of an upsert to have a WHERE.)
        sqlx::query(
            "INSERT INTO latest_results (agent_id, check_id, tenant_id, report_id, status, \
                                         summary, evidence, remediation, duration_ms, observed_at) \
             SELECT ?2, r.check_id, ?3, r.report_id, r.status, r.summary, r.evidence, \
                    r.remediation, r.duration_ms, r.observed_at \
             FROM report_results r WHERE r.report_id = ?1 ORDER BY r.check_id \
             ON CONFLICT (agent_id, check_id) DO UPDATE SET \
                report_id = excluded.report_id, status = excluded.status, \
                summary = excluded.summary, evidence = excluded.evidence, \
                remediation = excluded.remediation, duration_ms = excluded.duration_ms, \
                observed_at = excluded.observed_at \
             WHERE excluded.observed_at >= latest_results.observed_at",
        )
        .bind(&report_id)
        .bind(&agent_id)
        .bind(&tenant_id)
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
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let rows: Vec<LatestRow> = sqlx::query_as(
            "SELECT agent_id, report_id, check_id, status, summary, evidence, remediation, \
                    duration_ms, observed_at \
             FROM latest_results WHERE tenant_id = ?1 ORDER BY agent_id, check_id",
        )
        .bind(id_text(&tenant.0))
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(LatestRow::into_domain).collect()
    }

    async fn agent_rollups(&self, scope: &TenantScope) -> Result<Vec<AgentRollup>, StoreError> {
        let rows: Vec<RollupRow> = sqlx::query_as(&format!(
            "SELECT a.id, a.tenant_id, a.last_seen_at, MAX({rank}) AS worst_rank \
             FROM agents a LEFT JOIN latest_results l ON l.agent_id = a.id \
             WHERE (?1 IS NULL OR a.tenant_id IN (SELECT value FROM json_each(?1))) \
             GROUP BY a.id, a.tenant_id, a.last_seen_at ORDER BY a.id",
            rank = &*STATUS_RANK_SQL
        ))
        .bind(scope_param(scope))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(RollupRow::into_domain).collect()
    }

    async fn count_tenants(&self, scope: &TenantScope) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tenants \
             WHERE ?1 IS NULL OR id IN (SELECT value FROM json_each(?1))",
        )
        .bind(scope_param(scope))
        .fetch_one(&self.read)
        .await?;
        convert::to_u64(n, "tenant count")
    }

    async fn create_api_key(&self, new: NewApiKey) -> Result<ApiKey, StoreError> {
        let tenants = convert::distinct(new.tenants);
        let operations = convert::distinct_operations(new.operations);
        let mut tx = self.begin_write().await?;
        tenants_exist(&mut tx, &tenants).await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(id_text(&ApiKeyId::new().0))
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(&new.key_hash)
        .bind(micros(convert::now()))
        .bind(new.expires_at.map(micros))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            "an API key with this secret already exists".to_owned()
        }))?;
        for tenant in &tenants {
            sqlx::query("INSERT INTO api_key_tenants (api_key_id, tenant_id) VALUES (?1, ?2)")
                .bind(&row.id)
                .bind(id_text(&tenant.0))
                .execute(&mut *tx)
                .await?;
        }
        for op in &operations {
            sqlx::query("INSERT INTO api_key_operations (api_key_id, operation) VALUES (?1, ?2)")
                .bind(&row.id)
                .bind(op.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        row.into_domain((tenants, operations))
    }

    async fn create_first_api_key(&self, new: NewApiKey) -> Result<Option<ApiKey>, StoreError> {
        // BEGIN IMMEDIATE serializes this with every other writer, other processes included.
        let mut tx = self.begin_write().await?;
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "INSERT INTO api_keys (id, name, role, key_hash, created_at, expires_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM api_keys) \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(id_text(&ApiKeyId::new().0))
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(&new.key_hash)
        .bind(micros(convert::now()))
        .bind(new.expires_at.map(micros))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|row| row.into_domain((Vec::new(), Vec::new())))
            .transpose()
    }

    async fn count_api_keys(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.read)
            .await?;
        convert::to_u64(n, "api key count")
    }

    async fn use_api_key(
        &self,
        key_hash: &[u8],
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) \
             WHERE key_hash = ?1 RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(key_hash)
        .bind(micros(now))
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        let grants = key_grants(&mut tx, &row.id).await?;
        tx.commit().await?;
        row.into_domain(grants)
    }

    async fn api_key_by_hash(&self, key_hash: &[u8]) -> Result<ApiKey, StoreError> {
        let mut conn = self.read.acquire().await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1"
        ))
        .bind(key_hash)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        let grants = key_grants(&mut conn, &row.id).await?;
        row.into_domain(grants)
    }

    async fn record_activity(
        &self,
        agents: &[(AgentId, OffsetDateTime)],
        api_keys: &[(ApiKeyId, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        for (id, at) in agents {
            sqlx::query(
                "UPDATE agents SET last_seen_at = MAX(COALESCE(last_seen_at, ?2), ?2) WHERE id = ?1",
            )
            .bind(id_text(&id.0))
            .bind(micros(*at))
            .execute(&mut *tx)
            .await?;
        }
        for (id, at) in api_keys {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) WHERE id = ?1",
            )
            .bind(id_text(&id.0))
            .bind(micros(convert::instant(*at)))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE (?1 IS NULL OR id > ?1) \
             ORDER BY id LIMIT ?2"
        ))
        .bind(page.after.as_ref().map(id_text))
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let grants = key_grants(&mut conn, &row.id).await?;
            items.push(row.into_domain(grants)?);
        }
        Ok(into_page(items, page.limit))
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<ApiKey, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: ApiKeyRow = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1 \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(id_text(&id.0))
        .bind(micros(convert::instant(at)))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let grants = key_grants(&mut tx, &row.id).await?;
        tx.commit().await?;
        row.into_domain(grants)
    }

    async fn create_user(&self, new: NewUser) -> Result<User, StoreError> {
        let tenants = convert::distinct(new.tenants);
        let mut tx = self.begin_write().await?;
        tenants_exist(&mut tx, &tenants).await?;
        let row: UserRow = sqlx::query_as(&format!(
            "INSERT INTO users (id, name, role, created_at) VALUES (?1, ?2, ?3, ?4) \
             RETURNING {USER_COLUMNS}"
        ))
        .bind(id_text(&UserId::new().0))
        .bind(&new.name)
        .bind(new.role.as_str())
        .bind(micros(convert::now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(conflict_as(|| {
            format!("a user named {:?} already exists", new.name)
        }))?;
        for tenant in &tenants {
            sqlx::query("INSERT INTO user_tenants (user_id, tenant_id) VALUES (?1, ?2)")
                .bind(&row.id)
                .bind(id_text(&tenant.0))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        row.into_domain(tenants)
    }

    async fn user(&self, id: UserId) -> Result<User, StoreError> {
        let mut conn = self.read.acquire().await?;
        load_user(&mut conn, id).await
    }

    async fn list_users(&self, page: PageRequest) -> Result<Page<User>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2"
        ))
        .bind(page.after.as_ref().map(id_text))
        .bind(fetch_limit(page.limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let tenants = user_tenants(&mut conn, &row.id).await?;
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
        let mut tx = self.begin_write().await?;
        load_user(&mut tx, id).await?;
        tenants_exist(&mut tx, &tenants).await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = ?1")
            .bind(id_text(&id.0))
            .execute(&mut *tx)
            .await?;
        for tenant in &tenants {
            sqlx::query("INSERT INTO user_tenants (user_id, tenant_id) VALUES (?1, ?2)")
                .bind(id_text(&id.0))
                .bind(id_text(&tenant.0))
                .execute(&mut *tx)
                .await?;
        }
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn put_graph_credential(
        &self,
        scope: &TenantScope,
        new: NewGraphCredential,
    ) -> Result<GraphCredential, StoreError> {
        let mut tx = self.begin_write().await?;
        tenant_in_scope(&mut tx, scope, new.tenant_id).await?;
        let now = micros(convert::now());
        let row: CredentialRow = sqlx::query_as(&format!(
            "INSERT INTO graph_credentials \
               (tenant_id, directory_id, client_id, cloud, kind, thumbprint, not_after, sealed, \
                updated_at, next_run_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
             ON CONFLICT (tenant_id) DO UPDATE SET \
               directory_id = excluded.directory_id, client_id = excluded.client_id, \
               cloud = excluded.cloud, kind = excluded.kind, thumbprint = excluded.thumbprint, \
               not_after = excluded.not_after, sealed = excluded.sealed, \
               updated_at = excluded.updated_at, next_run_at = excluded.next_run_at, \
               last_token_ok_at = NULL, last_token_error_at = NULL, last_token_error = NULL \
             RETURNING {CREDENTIAL_COLUMNS}"
        ))
        .bind(id_text(&new.tenant_id.0))
        .bind(&new.directory_id)
        .bind(&new.client_id)
        .bind(new.cloud.as_str())
        .bind(new.kind.as_str())
        .bind(&new.thumbprint)
        .bind(new.not_after.map(micros))
        .bind(&new.sealed)
        .bind(now)
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
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let row: Option<CredentialRow> = sqlx::query_as(&format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM graph_credentials WHERE tenant_id = ?1"
        ))
        .bind(id_text(&tenant.0))
        .fetch_optional(&mut *conn)
        .await?;
        row.ok_or(StoreError::NotFound)?.into_domain()
    }

    async fn delete_graph_credential(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        tenant_in_scope(&mut tx, scope, tenant).await?;
        let done = sqlx::query("DELETE FROM graph_credentials WHERE tenant_id = ?1")
            .bind(id_text(&tenant.0))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM cloud_runs WHERE tenant_id = ?1")
            .bind(id_text(&tenant.0))
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
        let mut tx = self.begin_write().await?;
        let query = match error {
            None => sqlx::query(
                "UPDATE graph_credentials SET last_token_ok_at = ?2 WHERE tenant_id = ?1",
            ),
            Some(_) => sqlx::query(
                "UPDATE graph_credentials SET last_token_error_at = ?2, last_token_error = ?3 \
                 WHERE tenant_id = ?1",
            ),
        };
        query
            .bind(id_text(&tenant.0))
            .bind(micros(at))
            .bind(error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_cloud_tenants(
        &self,
        now: OffsetDateTime,
        next_run_at: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        // BEGIN IMMEDIATE holds the write lock from the select to the update.
        let mut tx = self.begin_write().await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE graph_credentials SET next_run_at = ?2 \
             WHERE tenant_id IN (SELECT tenant_id FROM graph_credentials \
                                 WHERE next_run_at <= ?1 ORDER BY next_run_at LIMIT ?3) \
             RETURNING tenant_id",
        )
        .bind(micros(now))
        .bind(micros(next_run_at))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        tenant_ids(rows)
    }

    async fn set_next_cloud_run(
        &self,
        tenant: TenantId,
        next_run_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE graph_credentials SET next_run_at = ?2 WHERE tenant_id = ?1")
            .bind(id_text(&tenant.0))
            .bind(micros(next_run_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn save_cloud_run(&self, run: &CloudRun) -> Result<(), StoreError> {
        let sspr = serde_json::to_string(&run.sspr).map_err(|e| corrupt("sspr activity", e))?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO cloud_runs (tenant_id, results, sspr, worst, started_at, finished_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
             WHERE EXISTS (SELECT 1 FROM graph_credentials WHERE tenant_id = ?1) \
             ON CONFLICT (tenant_id) DO UPDATE SET results = excluded.results, \
               sspr = excluded.sspr, worst = excluded.worst, started_at = excluded.started_at, \
               finished_at = excluded.finished_at",
        )
        .bind(id_text(&run.tenant_id.0))
        .bind(convert::results_json(&run.results).to_string())
        .bind(sspr)
        .bind(convert::worst_of(&run.results))
        .bind(micros(run.started_at))
        .bind(micros(run.finished_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cloud_run(
        &self,
        scope: &TenantScope,
        tenant: TenantId,
    ) -> Result<Option<CloudRun>, StoreError> {
        let mut conn = self.read.acquire().await?;
        tenant_in_scope(&mut conn, scope, tenant).await?;
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT results, sspr, started_at, finished_at FROM cloud_runs WHERE tenant_id = ?1",
        )
        .bind(id_text(&tenant.0))
        .fetch_optional(&mut *conn)
        .await?;
        let Some((results, sspr, started_at, finished_at)) = row else {
            return Ok(None);
        };
        Ok(Some(CloudRun {
            tenant_id: tenant,
            results: convert::results_of_json(
                serde_json::from_str(&results).map_err(|e| corrupt("cloud results", e))?,
            )?,
            sspr: serde_json::from_str(&sspr).map_err(|e| corrupt("sspr activity", e))?,
            started_at: instant_of(started_at, "cloud run started_at")?,
            finished_at: instant_of(finished_at, "cloud run finished_at")?,
        }))
    }

    async fn cloud_rollups(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<(TenantId, Option<Status>)>, StoreError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT tenant_id, worst FROM cloud_runs \
             WHERE ?1 IS NULL OR tenant_id IN (SELECT value FROM json_each(?1)) \
             ORDER BY tenant_id",
        )
        .bind(scope_param(scope))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|(tenant, worst)| {
                Ok((
                    TenantId(id_of(&tenant, "cloud run tenant_id")?),
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
        let mut tx = self.begin_write().await?;
        load_user(&mut tx, id).await?;
        tenants_exist(&mut tx, &tenants).await?;
        sqlx::query("UPDATE users SET role = ?2 WHERE id = ?1")
            .bind(id_text(&id.0))
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = ?1")
            .bind(id_text(&id.0))
            .execute(&mut *tx)
            .await?;
        for tenant in &tenants {
            sqlx::query("INSERT INTO user_tenants (user_id, tenant_id) VALUES (?1, ?2)")
                .bind(id_text(&id.0))
                .bind(id_text(&tenant.0))
                .execute(&mut *tx)
                .await?;
        }
        let user = load_user(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn set_api_key_owner(&self, key: ApiKeyId, user: UserId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM api_keys WHERE id = ?1")
            .bind(id_text(&key.0))
            .fetch_optional(&mut *tx)
            .await?;
        exists.ok_or(StoreError::NotFound)?;
        sqlx::query(
            "INSERT INTO api_key_owners (api_key_id, user_id) VALUES (?1, ?2) \
             ON CONFLICT (api_key_id) DO UPDATE SET user_id = excluded.user_id",
        )
        .bind(id_text(&key.0))
        .bind(id_text(&user.0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn api_key_owner(&self, key: ApiKeyId) -> Result<Option<UserId>, StoreError> {
        let mut conn = self.read.acquire().await?;
        let owner: Option<(String,)> =
            sqlx::query_as("SELECT user_id FROM api_key_owners WHERE api_key_id = ?1")
                .bind(id_text(&key.0))
                .fetch_optional(&mut *conn)
                .await?;
        owner
            .map(|(id,)| id_of(&id, "api key owner").map(UserId))
            .transpose()
    }

    async fn set_user_disabled(
        &self,
        id: UserId,
        at: Option<OffsetDateTime>,
    ) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        // Disabling twice keeps the first time.
        let done = sqlx::query(
            "UPDATE users SET disabled_at = CASE WHEN ?2 IS NULL THEN NULL \
             ELSE COALESCE(disabled_at, ?2) END WHERE id = ?1",
        )
        .bind(id_text(&id.0))
        .bind(at.map(micros))
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
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?2, sessions_valid_after = ?3 WHERE id = ?1",
        )
        .bind(id_text(&id.0))
        .bind(password_hash)
        .bind(micros(sessions_valid_after))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn user_by_name(&self, name: &str) -> Result<(User, Option<String>), StoreError> {
        let mut conn = self.read.acquire().await?;
        let found: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT id, password_hash FROM users WHERE name = ?1")
                .bind(name)
                .fetch_optional(&mut *conn)
                .await?;
        let (id, password_hash) = found.ok_or(StoreError::NotFound)?;
        let user = load_user(&mut conn, UserId(id_of(&id, "user id")?)).await?;
        Ok((user, password_hash))
    }

    async fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM user_tenants WHERE user_id = ?1")
            .bind(id_text(&id.0))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = ?1")
            .bind(id_text(&id.0))
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
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM revoked_session_tokens WHERE expires_at < ?1")
            .bind(micros(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_session_tokens (jti, user_id, expires_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(id_text(&jti))
        .bind(id_text(&user.0))
        .bind(micros(expires_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_token_revoked(&self, jti: Uuid) -> Result<bool, StoreError> {
        let mut conn = self.read.acquire().await?;
        let found: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM revoked_session_tokens WHERE jti = ?1")
                .bind(id_text(&jti))
                .fetch_optional(&mut *conn)
                .await?;
        Ok(found.is_some())
    }

    async fn record_audit_event(&self, new: NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let mut tx = self.begin_write().await?;
        let row: AuditRow = sqlx::query_as(&format!(
            "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             RETURNING {AUDIT_COLUMNS}"
        ))
        .bind(id_text(&AuditEventId::new().0))
        .bind(micros(convert::now()))
        .bind(id_text(&new.principal_id))
        .bind(&new.principal_name)
        .bind(new.action.as_str())
        .bind(new.tenant_id.map(|t| id_text(&t.0)))
        .bind(new.target_id.as_ref().map(id_text))
        .bind(&new.client_ip)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        row.into_domain()
    }

    async fn list_audit_events(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events \
             WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR tenant_id = ?2) \
               AND (?3 IS NULL OR principal_id = ?3) \
             ORDER BY id LIMIT ?4"
        ))
        .bind(page.after.as_ref().map(id_text))
        .bind(filter.tenant.map(|t| id_text(&t.0)))
        .bind(filter.principal.as_ref().map(id_text))
        .bind(fetch_limit(page.limit))
        .fetch_all(&self.read)
        .await?;
        let items = rows
            .into_iter()
            .map(AuditRow::into_domain)
            .collect::<Result<_, _>>()?;
        Ok(into_page(items, page.limit))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::secrets;

    #[test]
    fn memory_urls_are_recognised() {
        assert!(is_memory("sqlite::memory:"));
        assert!(is_memory("sqlite://:memory:"));
        assert!(is_memory("sqlite://?mode=memory"));
        assert!(!is_memory("sqlite:wbhealth.db"));
        assert!(!is_memory("sqlite://data/wbhealth.db?mode=rwc"));
    }

    #[test]
    fn stored_ids_sort_like_uuids() {
        let mut ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let mut texts: Vec<String> = ids.iter().map(id_text).collect();
        ids.sort();
        texts.sort();
        assert_eq!(texts, ids.iter().map(id_text).collect::<Vec<_>>());
    }

    #[test]
    fn stored_instants_read_back_to_the_microsecond() {
        for t in [
            time::macros::datetime!(2025-06-01 12:34:56.789_012 UTC),
            time::macros::datetime!(1960-01-01 00:00:00.000_001 UTC),
        ] {
            assert_eq!(instant_of(micros(t), "t").expect("in range"), t);
        }
    }

    #[tokio::test]
    async fn every_url_form_opens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.db");
        let path = path.to_str().expect("utf-8 temp path");
        for url in [
            format!("sqlite:{path}"),
            format!("sqlite://{path}"),
            path.to_owned(),
            "sqlite::memory:".to_owned(),
        ] {
            let store = SqliteStore::connect(&url).await.expect(&url);
            store.ping().await.expect("ping");
        }
        assert!(std::path::Path::new(path).exists());
    }

    #[tokio::test]
    async fn every_connection_has_wal_foreign_keys_and_a_busy_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("a.db").display());
        let store = SqliteStore::connect(&url).await.expect("open");
        for pool in [&store.read, &store.write] {
            let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .expect("journal_mode");
            let (fk,): (i64,) = sqlx::query_as("PRAGMA foreign_keys")
                .fetch_one(pool)
                .await
                .expect("foreign_keys");
            let (busy,): (i64,) = sqlx::query_as("PRAGMA busy_timeout")
                .fetch_one(pool)
                .await
                .expect("busy_timeout");
            assert_eq!((mode.as_str(), fk, busy), ("wal", 1, 5000));
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_is_one_database() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("memory db");
        let new = NewTenant {
            name: "Contoso".into(),
            entra_tenant_id: Uuid::new_v4(),
        };
        let t = store.create_tenant(new).await.expect("create");
        // read through the read path
        assert_eq!(store.tenant(&TenantScope::All, t.id).await.expect("get"), t);
    }

    #[tokio::test]
    async fn a_missing_folder_is_an_open_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}/no/such/folder/a.db", dir.path().display());
        let err = SqliteStore::connect(&url).await.expect_err("cannot open");
        assert!(
            matches!(err, StoreError::Open(ref m) if m.contains("no/such/folder")),
            "{err}"
        );
    }

    /// Two stores on one file stand for two server processes: `BEGIN IMMEDIATE` and the busy
    /// timeout, not the in-process write pool, must keep them from sharing a token's last use.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_cannot_share_a_last_use() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("a.db").display());
        let a = Arc::new(SqliteStore::connect(&url).await.expect("open a"));
        let b = Arc::new(SqliteStore::connect(&url).await.expect("open b"));
        let tenant = a
            .create_tenant(NewTenant {
                name: "Contoso".into(),
                entra_tenant_id: Uuid::new_v4(),
            })
            .await
            .expect("tenant");
        let hash = secrets::hash("token");
        a.create_enrollment_token(
            &TenantScope::All,
            NewEnrollmentToken {
                tenant_id: tenant.id,
                token_hash: hash.clone(),
                description: "race".into(),
                expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
                max_uses: 3,
            },
        )
        .await
        .expect("token");

        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let hash = hash.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .redeem_enrollment_token(
                        &hash,
                        OffsetDateTime::now_utc(),
                        NewAgent {
                            id: AgentId::new(),
                            credential_hash: secrets::hash(&format!("cred{i}")),
                            host: HostFacts::default(),
                        },
                    )
                    .await
            }));
        }
        let mut enrolled = 0;
        for task in tasks {
            match task.await.expect("task").expect("no database error") {
                Ok(_) => enrolled += 1,
                Err(r) => assert_eq!(r, TokenRejection::Exhausted),
            }
        }
        assert_eq!(enrolled, 3);
        let agents = b
            .list_agents(&TenantScope::All, tenant.id)
            .await
            .expect("agents");
        assert_eq!(agents.len(), 3);
    }
}

//! One suite of behaviour every [`Store`] must show, written once against the trait object and
//! run against SQLite (a temporary file per test) and PostgreSQL (a fresh database per test on
//! the server that `WBH_TEST_DATABASE_URL` names).
//!
//! Without `WBH_TEST_DATABASE_URL` the PostgreSQL variants print why they skipped and pass,
//! unless `WBH_TEST_REQUIRE_SERVICES=1` (as in CI), which turns the skip into a failure.
//!
//! Each test exists twice: `storage::conformance::sqlite::<name>` and
//! `storage::conformance::postgres::<name>`.

use std::str::FromStr;
use std::sync::Arc;

use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use wbhealth_catalogue::Status;

use crate::domain::{
    AgentId, ApiKey, ApiKeyId, AuditAction, AuditFilter, CloudRun, EnrollmentTokenId, GraphCloud,
    GraphCredentialKind, HostFacts, IngestOutcome, NewAgent, NewApiKey, NewAuditEvent,
    NewEnrollmentToken, NewGraphCredential, NewTenant, NewUser, Operation, PageRequest, Report,
    ReportId, ResultRecord, Role, SsprActivity, SsprActivityGroup, Tenant, TenantId, TenantScope,
    TokenRejection, UserId, secrets,
};
use crate::storage::{PostgresStore, SqliteStore, Store, StoreError};

/// A SQLite store in a temporary folder that lives as long as the harness.
struct SqliteHarness {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl SqliteHarness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("wbhealth.db").display());
        let store = SqliteStore::connect(&url).await.expect("open SQLite");
        Self {
            store: Arc::new(store),
            _dir: dir,
        }
    }
}

/// A PostgreSQL store on a database created for one test and dropped after it passes (a
/// failed test leaves its database behind to look at).
struct PostgresHarness {
    store: Arc<dyn Store>,
    admin: PgConnectOptions,
    database: String,
}

impl PostgresHarness {
    /// `None` when no server is configured and none is required.
    async fn new() -> Option<Self> {
        let Ok(url) = std::env::var("WBH_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("WBH_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "WBH_TEST_REQUIRE_SERVICES=1 but WBH_TEST_DATABASE_URL is not set"
            );
            println!("skipped: WBH_TEST_DATABASE_URL not set");
            return None;
        };
        let admin = PgConnectOptions::from_str(&url).expect("WBH_TEST_DATABASE_URL is a URL");
        let database = format!("wbh_test_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("connect to WBH_TEST_DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.expect("close the admin connection");
        let store = PostgresStore::connect_with(admin.clone().database(&database))
            .await
            .expect("open PostgreSQL");
        Some(Self {
            store: Arc::new(store),
            admin,
            database,
        })
    }

    async fn drop_database(self) {
        self.assert_no_session_left_in_a_transaction().await;
        drop(self.store);
        let mut conn = PgConnection::connect_with(&self.admin)
            .await
            .expect("connect to WBH_TEST_DATABASE_URL");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&mut conn)
        .await
        .expect("drop the test database");
    }
}

impl PostgresHarness {
    /// No connection of the store sits `idle in transaction` once the test is done: such a
    /// session would hold its locks and leave later statements on it uncommitted. A connection
    /// on its way back to the pool may still be rolling back, so this waits a moment.
    async fn assert_no_session_left_in_a_transaction(&self) {
        let mut conn = PgConnection::connect_with(&self.admin)
            .await
            .expect("connect to WBH_TEST_DATABASE_URL");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let stuck: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            )
            .bind(&self.database)
            .fetch_one(&mut conn)
            .await
            .expect("read pg_stat_activity");
            if stuck == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stuck} session(s) of the store left idle in a transaction"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Runs each named suite function against both stores.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = super::SqliteHarness::new().await;
                    super::$name(harness.store.clone()).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(harness) = super::PostgresHarness::new().await else { return };
                    super::$name(harness.store.clone()).await;
                    harness.drop_database().await;
                }
            )*
        }
    };
}

conformance!(
    tenants_are_created_read_and_paged,
    tenant_names_are_unique,
    a_scope_hides_other_tenants,
    an_enrollment_token_enrolls_an_agent,
    enrollment_tokens_are_refused_for_each_reason,
    rejections_follow_their_precedence,
    revoking_twice_keeps_the_first_time,
    concurrent_enrollments_share_no_last_use,
    a_report_is_stored_once,
    reports_are_listed_per_agent_in_order,
    latest_results_only_move_forward,
    a_report_is_refused_for_an_agent_of_another_tenant,
    rollups_show_each_agents_worst_status,
    agents_are_touched,
    api_keys_are_created_used_and_counted,
    only_one_first_api_key_is_created,
    api_keys_carry_their_tenants_and_operations,
    api_keys_are_listed_and_revoked,
    users_are_created_listed_and_assigned,
    users_sign_in_by_name_and_are_deleted,
    session_tokens_are_revoked_until_they_expire,
    api_keys_remember_the_user_who_created_them,
    agents_are_revoked_within_scope,
    a_credential_rotation_completes_only_with_the_pending_hash,
    audit_events_are_recorded_and_filtered,
    the_database_answers,
    graph_credentials_are_set_scoped_replaced_and_removed,
    due_cloud_tenants_are_claimed_once,
    cloud_runs_are_kept_per_tenant_and_rolled_up,
    cancelled_writes_never_wedge_the_store,
    activity_moves_last_seen_and_last_used_forward,
    a_batch_of_reports_has_one_outcome_each,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn now() -> OffsetDateTime {
    // Whole microseconds, as both databases keep them, so values compare equal after a read.
    OffsetDateTime::now_utc().truncate_to_microsecond()
}

async fn tenant(store: &dyn Store, name: &str) -> Tenant {
    store
        .create_tenant(NewTenant {
            name: name.to_owned(),
            entra_tenant_id: Uuid::new_v4(),
        })
        .await
        .expect("create tenant")
}

fn host(name: &str) -> HostFacts {
    HostFacts {
        hostname: name.to_owned(),
        os: "Windows Server 2022".to_owned(),
        agent_version: "0.1.0".to_owned(),
        domain_controller: "corp.contoso.test".to_owned(),
    }
}

fn new_agent(name: &str) -> NewAgent {
    NewAgent {
        id: AgentId::new(),
        credential_hash: secrets::hash(&format!("credential of {name}")),
        host: host(name),
    }
}

/// Creates a token and returns its id and its secret's hash.
async fn token(
    store: &dyn Store,
    tenant: TenantId,
    max_uses: u32,
    expires_at: OffsetDateTime,
) -> (EnrollmentTokenId, Vec<u8>) {
    let hash = secrets::hash(&secrets::generate("wbh_enr_"));
    let token = store
        .create_enrollment_token(
            &TenantScope::All,
            NewEnrollmentToken {
                tenant_id: tenant,
                token_hash: hash.clone(),
                description: "test".to_owned(),
                expires_at,
                max_uses,
            },
        )
        .await
        .expect("create token");
    assert_eq!(
        (token.tenant_id, token.uses, token.max_uses),
        (tenant, 0, max_uses)
    );
    (token.id, hash)
}

async fn enroll(store: &dyn Store, tenant: TenantId, name: &str) -> AgentId {
    let (_, hash) = token(store, tenant, 1, now() + Duration::hours(1)).await;
    store
        .redeem_enrollment_token(&hash, now(), new_agent(name))
        .await
        .expect("no database error")
        .expect("token accepted")
        .id
}

fn result(check_id: &str, status: Status, observed_at: OffsetDateTime) -> ResultRecord {
    ResultRecord {
        check_id: check_id.to_owned(),
        status,
        summary: format!("{check_id} is {}", status.as_str()),
        evidence: json!({ "host": "dc01.corp.contoso.test", "observed": observed_at.unix_timestamp() }),
        remediation: if status == Status::Pass {
            String::new()
        } else {
            format!("fix {check_id}")
        },
        duration_ms: 42,
        observed_at,
    }
}

fn report(tenant: TenantId, agent: AgentId, results: Vec<ResultRecord>) -> Report {
    let at = results.first().map_or_else(now, |r| r.observed_at);
    Report {
        id: ReportId::new(),
        agent_id: agent,
        tenant_id: tenant,
        started_at: at - Duration::seconds(5),
        finished_at: at,
        results,
    }
}

fn page(after: Option<Uuid>, limit: u32) -> PageRequest {
    PageRequest { after, limit }
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn tenants_are_created_read_and_paged(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let mut created = Vec::new();
    for name in ["Alpha", "Bravo", "Charlie", "Delta", "Echo"] {
        created.push(tenant(store, name).await);
    }
    let first = &created[0];
    assert_eq!(
        store
            .tenant(&TenantScope::All, first.id)
            .await
            .expect("get"),
        *first
    );
    assert!(matches!(
        store.tenant(&TenantScope::All, TenantId::new()).await,
        Err(StoreError::NotFound)
    ));

    let p1 = store
        .list_tenants(&TenantScope::All, page(None, 2))
        .await
        .expect("page 1");
    assert_eq!(p1.items, created[0..2]);
    assert!(p1.has_more);
    let p2 = store
        .list_tenants(&TenantScope::All, page(Some(p1.items[1].id.0), 2))
        .await
        .expect("page 2");
    assert_eq!(p2.items, created[2..4]);
    assert!(p2.has_more);
    let p3 = store
        .list_tenants(&TenantScope::All, page(Some(p2.items[1].id.0), 2))
        .await
        .expect("page 3");
    assert_eq!(p3.items, created[4..]);
    assert!(!p3.has_more);
    let exact = store
        .list_tenants(&TenantScope::All, page(None, 5))
        .await
        .expect("all");
    assert_eq!(exact.items, created);
    assert!(!exact.has_more);
    assert_eq!(
        store.count_tenants(&TenantScope::All).await.expect("count"),
        5
    );
}

async fn tenant_names_are_unique(store: Arc<dyn Store>) {
    let store = store.as_ref();
    tenant(store, "Contoso").await;
    let again = store
        .create_tenant(NewTenant {
            name: "Contoso".to_owned(),
            entra_tenant_id: Uuid::new_v4(),
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict(ref m)) if m.contains("Contoso")),
        "{again:?}"
    );
    assert_eq!(
        store.count_tenants(&TenantScope::All).await.expect("count"),
        1
    );
}

async fn a_scope_hides_other_tenants(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let mine = tenant(store, "Mine").await;
    let theirs = tenant(store, "Theirs").await;
    let agent = enroll(store, theirs.id, "dc-theirs").await;
    store
        .ingest_report(&report(
            theirs.id,
            agent,
            vec![result("a.check", Status::Fail, now())],
        ))
        .await
        .expect("ingest");
    let scope = TenantScope::Only(vec![mine.id]);

    assert_eq!(
        store.tenant(&scope, mine.id).await.expect("own tenant"),
        mine
    );
    assert!(matches!(
        store.tenant(&scope, theirs.id).await,
        Err(StoreError::NotFound)
    ));
    let listed = store
        .list_tenants(&scope, page(None, 10))
        .await
        .expect("list");
    assert_eq!(listed.items, vec![mine.clone()]);
    assert_eq!(store.count_tenants(&scope).await.expect("count"), 1);
    assert!(matches!(
        store.latest_results(&scope, theirs.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .latest_results(&scope, mine.id)
            .await
            .expect("own results")
            .is_empty()
    );
    assert!(matches!(
        store.list_agents(&scope, theirs.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.list_enrollment_tokens(&scope, theirs.id).await,
        Err(StoreError::NotFound)
    ));
    let foreign_token = store
        .create_enrollment_token(
            &scope,
            NewEnrollmentToken {
                tenant_id: theirs.id,
                token_hash: secrets::hash("foreign"),
                description: "not mine".to_owned(),
                expires_at: now() + Duration::hours(1),
                max_uses: 1,
            },
        )
        .await;
    assert!(
        matches!(foreign_token, Err(StoreError::NotFound)),
        "{foreign_token:?}"
    );
    let their_token = store
        .list_enrollment_tokens(&TenantScope::All, theirs.id)
        .await
        .expect("tokens")[0]
        .id;
    assert!(matches!(
        store
            .revoke_enrollment_token(&scope, theirs.id, their_token, now())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .agent_rollups(&scope)
            .await
            .expect("rollups")
            .is_empty()
    );
    // An empty scope sees nothing at all.
    let nothing = TenantScope::Only(vec![]);
    assert!(
        store
            .list_tenants(&nothing, page(None, 10))
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(store.count_tenants(&nothing).await.expect("count"), 0);
}

async fn an_enrollment_token_enrolls_an_agent(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let (_, hash) = token(store, t.id, 2, now() + Duration::hours(1)).await;
    let at = now();
    let new = new_agent("dc01");
    let agent = store
        .redeem_enrollment_token(&hash, at, new.clone())
        .await
        .expect("no database error")
        .expect("accepted");
    assert_eq!(agent.id, new.id);
    assert_eq!(agent.tenant_id, t.id);
    assert_eq!(agent.host, new.host);
    assert_eq!(agent.enrolled_at, at);
    assert_eq!(agent.revoked_at, None);

    let tokens = store
        .list_enrollment_tokens(&TenantScope::All, t.id)
        .await
        .expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].uses, 1);
    assert_eq!(tokens[0].max_uses, 2);
    let credential = store.agent_credential(agent.id).await.expect("credential");
    assert_eq!(credential.credential_hash, new.credential_hash);
    assert_eq!(credential.agent, agent);
    assert_eq!(
        store
            .list_agents(&TenantScope::All, t.id)
            .await
            .expect("agents"),
        vec![agent]
    );
    assert!(matches!(
        store.agent_credential(AgentId::new()).await,
        Err(StoreError::NotFound)
    ));
}

async fn enrollment_tokens_are_refused_for_each_reason(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let redeem = |hash: Vec<u8>, at: OffsetDateTime| async move {
        store
            .redeem_enrollment_token(&hash, at, new_agent("dc"))
            .await
            .expect("no database error")
    };

    assert_eq!(
        redeem(secrets::hash("never issued"), now()).await,
        Err(TokenRejection::Unknown)
    );

    let expires = now() + Duration::hours(1);
    let (_, expiring) = token(store, t.id, 5, expires).await;
    assert!(
        redeem(expiring.clone(), expires).await.is_ok(),
        "valid up to its expiry"
    );
    assert_eq!(
        redeem(expiring, expires + Duration::seconds(1)).await,
        Err(TokenRejection::Expired)
    );

    let (_, once) = token(store, t.id, 1, now() + Duration::hours(1)).await;
    assert!(redeem(once.clone(), now()).await.is_ok());
    assert_eq!(redeem(once, now()).await, Err(TokenRejection::Exhausted));

    let (id, revoked) = token(store, t.id, 5, now() + Duration::hours(1)).await;
    store
        .revoke_enrollment_token(&TenantScope::All, t.id, id, now())
        .await
        .expect("revoke");
    assert_eq!(redeem(revoked, now()).await, Err(TokenRejection::Revoked));

    // A refused redemption changes nothing: only the two accepted ones made agents.
    assert_eq!(
        store
            .list_agents(&TenantScope::All, t.id)
            .await
            .expect("agents")
            .len(),
        2
    );
}

async fn rejections_follow_their_precedence(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let later = now() + Duration::hours(2);

    // Used up, expired and revoked at once: revoked wins.
    let (id, hash) = token(store, t.id, 1, now() + Duration::hours(1)).await;
    store
        .redeem_enrollment_token(&hash, now(), new_agent("dc1"))
        .await
        .expect("no database error")
        .expect("first use");
    store
        .revoke_enrollment_token(&TenantScope::All, t.id, id, now())
        .await
        .expect("revoke");
    let outcome = store
        .redeem_enrollment_token(&hash, later, new_agent("dc2"))
        .await
        .expect("no database error");
    assert_eq!(outcome, Err(TokenRejection::Revoked));

    // Used up and expired: expired wins.
    let (_, hash) = token(store, t.id, 1, now() + Duration::hours(1)).await;
    store
        .redeem_enrollment_token(&hash, now(), new_agent("dc3"))
        .await
        .expect("no database error")
        .expect("first use");
    let outcome = store
        .redeem_enrollment_token(&hash, later, new_agent("dc4"))
        .await
        .expect("no database error");
    assert_eq!(outcome, Err(TokenRejection::Expired));

    // A token with no uses at all is exhausted from the start.
    let (_, hash) = token(store, t.id, 0, now() + Duration::hours(1)).await;
    let outcome = store
        .redeem_enrollment_token(&hash, now(), new_agent("dc5"))
        .await
        .expect("no database error");
    assert_eq!(outcome, Err(TokenRejection::Exhausted));
}

async fn revoking_twice_keeps_the_first_time(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let (id, _) = token(store, t.id, 1, now() + Duration::hours(1)).await;
    let first = now();
    let revoked = store
        .revoke_enrollment_token(&TenantScope::All, t.id, id, first)
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_at, Some(first));
    let again = store
        .revoke_enrollment_token(&TenantScope::All, t.id, id, first + Duration::minutes(5))
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_at, Some(first));
    assert!(matches!(
        store
            .revoke_enrollment_token(&TenantScope::All, t.id, EnrollmentTokenId::new(), first)
            .await,
        Err(StoreError::NotFound)
    ));
    // The right token in the wrong tenant is not found either.
    let other = tenant(store, "Other").await;
    assert!(matches!(
        store
            .revoke_enrollment_token(&TenantScope::All, other.id, id, first)
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn concurrent_enrollments_share_no_last_use(store: Arc<dyn Store>) {
    let t = tenant(store.as_ref(), "Contoso").await;
    let (_, hash) = token(store.as_ref(), t.id, 3, now() + Duration::hours(1)).await;
    // Take two uses, leaving one.
    for name in ["dc1", "dc2"] {
        store
            .redeem_enrollment_token(&hash, now(), new_agent(name))
            .await
            .expect("no database error")
            .expect("accepted");
    }

    let start = Arc::new(tokio::sync::Barrier::new(24));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            let hash = hash.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                store
                    .redeem_enrollment_token(&hash, now(), new_agent(&format!("racer{i}")))
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.expect("task").expect("no database error") {
            Ok(_) => accepted += 1,
            Err(rejection) => assert_eq!(rejection, TokenRejection::Exhausted),
        }
    }
    assert_eq!(accepted, 1, "exactly one enrollment takes the last use");
    let tokens = store
        .list_enrollment_tokens(&TenantScope::All, t.id)
        .await
        .expect("tokens");
    assert_eq!(tokens[0].uses, 3);
    assert_eq!(
        store
            .list_agents(&TenantScope::All, t.id)
            .await
            .expect("agents")
            .len(),
        3
    );
}

async fn a_report_is_stored_once(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let agent = enroll(store, t.id, "dc01").await;
    let at = now();
    let first = report(t.id, agent, vec![result("network.https", Status::Pass, at)]);
    assert_eq!(
        store.ingest_report(&first).await.expect("ingest"),
        IngestOutcome::Stored
    );

    // The same report id again, even with different (newer) content, changes nothing.
    let mut replay = first.clone();
    replay.results = vec![
        result("network.https", Status::Fail, at + Duration::minutes(1)),
        result("topology.pdc", Status::Fail, at + Duration::minutes(1)),
    ];
    assert_eq!(
        store.ingest_report(&replay).await.expect("replay"),
        IngestOutcome::Duplicate
    );
    let latest = store
        .latest_results(&TenantScope::All, t.id)
        .await
        .expect("latest");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].report_id, first.id);
    assert_eq!(latest[0].result, first.results[0]);

    // A report without results (every check disabled) is a report too.
    let empty = report(t.id, agent, vec![]);
    assert_eq!(
        store.ingest_report(&empty).await.expect("empty"),
        IngestOutcome::Stored
    );
    assert_eq!(
        store.ingest_report(&empty).await.expect("empty again"),
        IngestOutcome::Duplicate
    );
    assert_eq!(
        store
            .latest_results(&TenantScope::All, t.id)
            .await
            .expect("latest")
            .len(),
        1
    );

    // A report that names a check twice is refused whole.
    let twice = report(
        t.id,
        agent,
        vec![
            result("x.y", Status::Pass, at),
            result("x.y", Status::Fail, at),
        ],
    );
    assert!(matches!(
        store.ingest_report(&twice).await,
        Err(StoreError::Conflict(_))
    ));
    // ... and was not stored, so a corrected report with the same id is accepted.
    let mut fixed = twice.clone();
    fixed.results.pop();
    assert_eq!(
        store.ingest_report(&fixed).await.expect("fixed"),
        IngestOutcome::Stored
    );
}

async fn reports_are_listed_per_agent_in_order(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let other = tenant(store, "Fabrikam").await;
    let agent = enroll(store, t.id, "dc01").await;
    let neighbour = enroll(store, t.id, "dc02").await;
    let at = now();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = report(
            t.id,
            agent,
            vec![
                result("network.https", Status::Pass, at + Duration::seconds(i)),
                result(
                    "topology.pdc",
                    if i == 1 { Status::Fail } else { Status::Warn },
                    at + Duration::seconds(i),
                ),
            ],
        );
        ids.push(r.id);
        store.ingest_report(&r).await.expect("ingest");
    }
    store
        .ingest_report(&report(
            t.id,
            neighbour,
            vec![result("network.https", Status::Pass, at)],
        ))
        .await
        .expect("neighbour ingest");

    let first = store
        .list_reports(&TenantScope::All, t.id, agent, page(None, 2))
        .await
        .expect("page 1");
    assert!(first.has_more);
    assert_eq!(
        first.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..2]
    );
    assert_eq!(first.items[0].results, 2);
    assert_eq!(first.items[0].worst, Some(Status::Warn));
    assert_eq!(first.items[1].worst, Some(Status::Fail));
    let last = first.items.last().map(|r| r.id.0);
    let second = store
        .list_reports(&TenantScope::All, t.id, agent, page(last, 2))
        .await
        .expect("page 2");
    assert!(!second.has_more);
    assert_eq!(
        second.items.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[2..]
    );

    // An agent of the tenant with no reports lists nothing; an agent or tenant outside the
    // scope is not found.
    let quiet = enroll(store, t.id, "dc03").await;
    assert!(
        store
            .list_reports(&TenantScope::All, t.id, quiet, page(None, 10))
            .await
            .expect("empty")
            .items
            .is_empty()
    );
    assert!(matches!(
        store
            .list_reports(&TenantScope::All, other.id, agent, page(None, 10))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .list_reports(
                &TenantScope::Only(vec![other.id]),
                t.id,
                agent,
                page(None, 10)
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn latest_results_only_move_forward(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let agent = enroll(store, t.id, "dc01").await;
    let t0 = now() - Duration::hours(1);

    let newer = report(
        t.id,
        agent,
        vec![
            result("network.https", Status::Pass, t0 + Duration::minutes(10)),
            result("topology.pdc", Status::Warn, t0 + Duration::minutes(10)),
        ],
    );
    store.ingest_report(&newer).await.expect("newer");
    // An older report, replayed late from a spool, with one check the newer one lacks.
    let older = report(
        t.id,
        agent,
        vec![
            result("network.https", Status::Fail, t0),
            result("permissions.reset", Status::Error, t0),
        ],
    );
    assert_eq!(
        store.ingest_report(&older).await.expect("older"),
        IngestOutcome::Stored
    );

    let latest = store
        .latest_results(&TenantScope::All, t.id)
        .await
        .expect("latest");
    let by_check = |id: &str| {
        latest
            .iter()
            .find(|l| l.result.check_id == id)
            .unwrap_or_else(|| panic!("{id} in latest results"))
    };
    assert_eq!(latest.len(), 3);
    assert_eq!(by_check("network.https").result, newer.results[0]);
    assert_eq!(by_check("network.https").report_id, newer.id);
    assert_eq!(by_check("topology.pdc").result, newer.results[1]);
    assert_eq!(by_check("permissions.reset").result, older.results[1]);
    assert_eq!(by_check("permissions.reset").report_id, older.id);
    assert!(latest.iter().all(|l| l.agent_id == agent));
    // Ordered by agent, then check id.
    let ids: Vec<_> = latest.iter().map(|l| l.result.check_id.as_str()).collect();
    assert_eq!(ids, ["network.https", "permissions.reset", "topology.pdc"]);

    // A newer one replaces, and one observed at the same instant replaces too.
    let newest = report(
        t.id,
        agent,
        vec![
            result("network.https", Status::Fail, t0 + Duration::minutes(20)),
            result("topology.pdc", Status::Pass, t0 + Duration::minutes(10)),
        ],
    );
    store.ingest_report(&newest).await.expect("newest");
    let latest = store
        .latest_results(&TenantScope::All, t.id)
        .await
        .expect("latest");
    let https = latest
        .iter()
        .find(|l| l.result.check_id == "network.https")
        .expect("https");
    assert_eq!(https.result, newest.results[0]);
    let pdc = latest
        .iter()
        .find(|l| l.result.check_id == "topology.pdc")
        .expect("pdc");
    assert_eq!(
        (pdc.report_id, &pdc.result),
        (newest.id, &newest.results[1])
    );
}

async fn a_report_is_refused_for_an_agent_of_another_tenant(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let agent = enroll(store, a.id, "dc-a").await;
    let wrong = report(b.id, agent, vec![result("x.y", Status::Fail, now())]);
    assert!(matches!(
        store.ingest_report(&wrong).await,
        Err(StoreError::NotFound)
    ));
    let unknown = report(
        a.id,
        AgentId::new(),
        vec![result("x.y", Status::Fail, now())],
    );
    assert!(matches!(
        store.ingest_report(&unknown).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .latest_results(&TenantScope::All, b.id)
            .await
            .expect("b")
            .is_empty()
    );
    assert!(
        store
            .latest_results(&TenantScope::All, a.id)
            .await
            .expect("a")
            .is_empty()
    );
}

async fn rollups_show_each_agents_worst_status(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let at = now();
    // One agent per possible worst status, plus one that has reported nothing.
    let cases = [
        (a.id, vec![Status::Pass, Status::Pass], Some(Status::Pass)),
        (
            a.id,
            vec![Status::Pass, Status::NotApplicable],
            Some(Status::NotApplicable),
        ),
        (
            a.id,
            vec![Status::NotApplicable, Status::Warn, Status::Pass],
            Some(Status::Warn),
        ),
        (
            b.id,
            vec![Status::Warn, Status::Error, Status::Pass],
            Some(Status::Error),
        ),
        (
            b.id,
            vec![Status::Error, Status::Fail, Status::Warn],
            Some(Status::Fail),
        ),
        (b.id, vec![], None),
    ];
    let mut expected = Vec::new();
    for (i, (tenant_id, statuses, worst)) in cases.into_iter().enumerate() {
        let agent = enroll(store, tenant_id, &format!("dc{i}")).await;
        let results = statuses
            .iter()
            .enumerate()
            .map(|(n, s)| result(&format!("check.{n}"), *s, at))
            .collect::<Vec<_>>();
        if !results.is_empty() {
            store
                .ingest_report(&report(tenant_id, agent, results))
                .await
                .expect("ingest");
        }
        expected.push((tenant_id, agent, worst));
    }
    store
        .touch_agent(expected[0].1, at, None)
        .await
        .expect("touch");

    let rollups = store
        .agent_rollups(&TenantScope::All)
        .await
        .expect("rollups");
    let got: Vec<_> = rollups
        .iter()
        .map(|r| (r.tenant_id, r.agent_id, r.worst))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(rollups[0].last_seen_at, Some(at));
    assert_eq!(rollups[1].last_seen_at, None);

    let only_b = store
        .agent_rollups(&TenantScope::Only(vec![b.id]))
        .await
        .expect("rollups of b");
    let got: Vec<_> = only_b
        .iter()
        .map(|r| (r.tenant_id, r.agent_id, r.worst))
        .collect();
    assert_eq!(got, expected[3..]);
}

async fn agents_are_touched(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let agent = enroll(store, t.id, "dc01").await;
    let at = now();
    store.touch_agent(agent, at, None).await.expect("touch");
    let seen = store.agent_credential(agent).await.expect("agent").agent;
    assert_eq!(seen.last_seen_at, Some(at));
    assert_eq!(seen.host, host("dc01"));

    let moved = HostFacts {
        agent_version: "0.2.0".to_owned(),
        ..host("dc01-renamed")
    };
    let later = at + Duration::minutes(1);
    store
        .touch_agent(agent, later, Some(&moved))
        .await
        .expect("touch with facts");
    let seen = store.agent_credential(agent).await.expect("agent").agent;
    assert_eq!(seen.last_seen_at, Some(later));
    assert_eq!(seen.host, moved);

    // A late request from before does not make the agent look older.
    store
        .touch_agent(agent, at, None)
        .await
        .expect("late touch");
    let seen = store.agent_credential(agent).await.expect("agent").agent;
    assert_eq!(seen.last_seen_at, Some(later));

    assert!(matches!(
        store.touch_agent(AgentId::new(), at, None).await,
        Err(StoreError::NotFound)
    ));
}

async fn api_keys_are_created_used_and_counted(store: Arc<dyn Store>) {
    let store = store.as_ref();
    assert_eq!(store.count_api_keys().await.expect("count"), 0);
    let secret = secrets::generate("wbh_key_");
    let expires = now() + Duration::days(30);
    let key = store
        .create_api_key(NewApiKey {
            name: "automation".to_owned(),
            role: Role::Administrator,
            tenants: Vec::new(),
            operations: Vec::new(),
            key_hash: secrets::hash(&secret),
            expires_at: Some(expires),
        })
        .await
        .expect("create");
    assert_eq!(key.name, "automation");
    assert_eq!(key.role, Role::Administrator);
    assert_eq!(key.expires_at, Some(expires));
    assert_eq!(key.last_used_at, None);
    assert_eq!(key.revoked_at, None);
    assert_eq!(store.count_api_keys().await.expect("count"), 1);

    let at = now();
    let used = store
        .use_api_key(&secrets::hash(&secret), at)
        .await
        .expect("use");
    assert_eq!(
        used,
        ApiKey {
            last_used_at: Some(at),
            ..key.clone()
        }
    );
    assert!(matches!(
        store
            .use_api_key(&secrets::hash("wbh_key_unknown"), at)
            .await,
        Err(StoreError::NotFound)
    ));

    let same_secret = store
        .create_api_key(NewApiKey {
            name: "copy".to_owned(),
            role: Role::Administrator,
            tenants: Vec::new(),
            operations: Vec::new(),
            key_hash: secrets::hash(&secret),
            expires_at: None,
        })
        .await;
    assert!(
        matches!(same_secret, Err(StoreError::Conflict(_))),
        "{same_secret:?}"
    );
    assert_eq!(store.count_api_keys().await.expect("count"), 1);
}

async fn only_one_first_api_key_is_created(store: Arc<dyn Store>) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_first_api_key(NewApiKey {
                        name: format!("bootstrap {i}"),
                        role: Role::Administrator,
                        tenants: Vec::new(),
                        operations: Vec::new(),
                        key_hash: vec![i; 32],
                        expires_at: None,
                    })
                    .await
                    .expect("no database error")
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        created += usize::from(attempt.await.expect("task").is_some());
    }
    assert_eq!(created, 1, "exactly one first key");
    assert_eq!(store.count_api_keys().await.expect("count"), 1);
}

async fn the_database_answers(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
}

fn scoped_key(
    name: &str,
    role: Role,
    tenants: Vec<TenantId>,
    operations: Vec<Operation>,
) -> NewApiKey {
    NewApiKey {
        name: name.to_owned(),
        role,
        tenants,
        operations,
        key_hash: secrets::hash(&secrets::generate("wbh_key_")),
        expires_at: None,
    }
}

async fn api_keys_carry_their_tenants_and_operations(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let mut expected = vec![a.id, b.id];
    expected.sort();

    let secret = secrets::generate("wbh_key_");
    let key = store
        .create_api_key(NewApiKey {
            key_hash: secrets::hash(&secret),
            ..scoped_key(
                "psa",
                Role::Integration,
                vec![b.id, a.id, b.id],
                vec![
                    Operation::ReadTenants,
                    Operation::ReadStatus,
                    Operation::ReadStatus,
                ],
            )
        })
        .await
        .expect("create");
    assert_eq!(key.role, Role::Integration);
    assert_eq!(key.tenants, expected, "sorted, without repeats");
    assert_eq!(
        key.operations,
        vec![Operation::ReadTenants, Operation::ReadStatus]
    );
    let used = store
        .use_api_key(&secrets::hash(&secret), now())
        .await
        .expect("use");
    assert_eq!(used.tenants, key.tenants);
    assert_eq!(used.operations, key.operations);

    // A tenant that does not exist creates nothing.
    let before = store.count_api_keys().await.expect("count");
    let missing = store
        .create_api_key(scoped_key(
            "ghost",
            Role::Viewer,
            vec![a.id, TenantId::new()],
            Vec::new(),
        ))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert_eq!(store.count_api_keys().await.expect("count"), before);

    let viewer = store
        .create_api_key(scoped_key("viewer", Role::Viewer, vec![a.id], Vec::new()))
        .await
        .expect("viewer");
    assert_eq!((viewer.tenants, viewer.operations), (vec![a.id], vec![]));
}

async fn api_keys_are_listed_and_revoked(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let mut created = Vec::new();
    for i in 0..3 {
        created.push(
            store
                .create_api_key(scoped_key(
                    &format!("k{i}"),
                    Role::Technician,
                    vec![a.id],
                    vec![],
                ))
                .await
                .expect("create"),
        );
    }
    let first = store.list_api_keys(page(None, 2)).await.expect("page 1");
    assert!(first.has_more);
    assert_eq!(first.items, created[..2].to_vec());
    let rest = store
        .list_api_keys(page(Some(created[1].id.0), 2))
        .await
        .expect("page 2");
    assert!(!rest.has_more);
    assert_eq!(rest.items, created[2..].to_vec());

    let at = now();
    let revoked = store
        .revoke_api_key(created[0].id, at)
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_at, Some(at));
    assert_eq!(revoked.tenants, vec![a.id]);
    let again = store
        .revoke_api_key(created[0].id, at + Duration::hours(1))
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_at, Some(at), "the first revocation stays");
    assert!(matches!(
        store.revoke_api_key(ApiKeyId::new(), at).await,
        Err(StoreError::NotFound)
    ));
    let listed = store.list_api_keys(page(None, 10)).await.expect("list");
    assert_eq!(listed.items[0].revoked_at, Some(at));
    assert_eq!(listed.items[1].revoked_at, None);
}

async fn users_are_created_listed_and_assigned(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let alice = store
        .create_user(NewUser {
            name: "alice@msp.example".to_owned(),
            role: Role::Technician,
            tenants: vec![a.id, a.id],
        })
        .await
        .expect("create");
    assert_eq!(
        (alice.role, alice.tenants.clone()),
        (Role::Technician, vec![a.id])
    );
    assert_eq!(store.user(alice.id).await.expect("read"), alice);

    let taken = store
        .create_user(NewUser {
            name: "alice@msp.example".to_owned(),
            role: Role::Viewer,
            tenants: vec![b.id],
        })
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    let ghost = store
        .create_user(NewUser {
            name: "ghost".to_owned(),
            role: Role::Viewer,
            tenants: vec![TenantId::new()],
        })
        .await;
    assert!(matches!(ghost, Err(StoreError::NotFound)), "{ghost:?}");

    let bob = store
        .create_user(NewUser {
            name: "bob".to_owned(),
            role: Role::Administrator,
            tenants: Vec::new(),
        })
        .await
        .expect("bob");
    let listed = store.list_users(page(None, 1)).await.expect("list");
    assert!(listed.has_more);
    assert_eq!(listed.items, vec![alice.clone()]);
    let listed = store
        .list_users(page(Some(alice.id.0), 10))
        .await
        .expect("list");
    assert_eq!(listed.items, vec![bob]);

    let mut both = vec![a.id, b.id];
    both.sort();
    let moved = store
        .set_user_tenants(alice.id, vec![b.id, a.id])
        .await
        .expect("set");
    assert_eq!(moved.tenants, both);
    let refused = store
        .set_user_tenants(alice.id, vec![TenantId::new()])
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    assert_eq!(
        store.user(alice.id).await.expect("read").tenants,
        both,
        "a refused change changes nothing"
    );
    let cleared = store
        .set_user_tenants(alice.id, vec![b.id])
        .await
        .expect("set");
    assert_eq!(cleared.tenants, vec![b.id]);
    assert!(matches!(
        store.user(UserId::new()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_user_tenants(UserId::new(), vec![a.id]).await,
        Err(StoreError::NotFound)
    ));
}

async fn audit_events_are_recorded_and_filtered(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let mut recorded = Vec::new();
    for (who, tenant, action) in [
        (alice, Some(a.id), AuditAction::EnrollmentTokenCreated),
        (bob, Some(b.id), AuditAction::AgentRunRequested),
        (alice, None, AuditAction::ApiKeyCreated),
        (alice, Some(b.id), AuditAction::EnrollmentTokenRevoked),
    ] {
        let before = now();
        let event = store
            .record_audit_event(NewAuditEvent {
                principal_id: who,
                principal_name: format!("{who}"),
                action,
                tenant_id: tenant,
                target_id: Some(Uuid::now_v7()),
                client_ip: Some("192.0.2.7".to_owned()),
            })
            .await
            .expect("record");
        assert!(event.at >= before);
        assert_eq!(
            (event.principal_id, event.action, event.tenant_id),
            (who, action, tenant)
        );
        assert_eq!(event.client_ip.as_deref(), Some("192.0.2.7"));
        recorded.push(event);
    }
    let all = store
        .list_audit_events(&AuditFilter::default(), page(None, 3))
        .await
        .expect("all");
    assert!(all.has_more);
    assert_eq!(all.items, recorded[..3].to_vec());
    let rest = store
        .list_audit_events(&AuditFilter::default(), page(Some(recorded[2].id.0), 3))
        .await
        .expect("rest");
    assert_eq!(rest.items, recorded[3..].to_vec());
    assert!(!rest.has_more);

    let in_b = store
        .list_audit_events(
            &AuditFilter {
                tenant: Some(b.id),
                principal: None,
            },
            page(None, 10),
        )
        .await
        .expect("tenant b");
    assert_eq!(in_b.items, vec![recorded[1].clone(), recorded[3].clone()]);
    let by_alice_in_b = store
        .list_audit_events(
            &AuditFilter {
                tenant: Some(b.id),
                principal: Some(alice),
            },
            page(None, 10),
        )
        .await
        .expect("alice in b");
    assert_eq!(by_alice_in_b.items, vec![recorded[3].clone()]);
    let by_bob = store
        .list_audit_events(
            &AuditFilter {
                tenant: None,
                principal: Some(bob),
            },
            page(None, 10),
        )
        .await
        .expect("bob");
    assert_eq!(by_bob.items, vec![recorded[1].clone()]);
}

fn credential(tenant: TenantId, client: &str) -> NewGraphCredential {
    NewGraphCredential {
        tenant_id: tenant,
        directory_id: "contoso.onmicrosoft.com".to_owned(),
        client_id: client.to_owned(),
        cloud: GraphCloud::UsGov,
        kind: GraphCredentialKind::Certificate,
        thumbprint: Some("AB".repeat(20)),
        not_after: None,
        sealed: vec![1, 2, 3, 4],
    }
}

async fn graph_credentials_are_set_scoped_replaced_and_removed(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    let only_b = TenantScope::Only(vec![b.id]);
    assert!(matches!(
        store
            .put_graph_credential(&only_b, credential(a.id, "x"))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.graph_credential(&TenantScope::All, a.id).await,
        Err(StoreError::NotFound)
    ));
    let set = store
        .put_graph_credential(&TenantScope::All, credential(a.id, "first"))
        .await
        .expect("set");
    assert_eq!(
        (
            set.client_id.as_str(),
            set.cloud,
            set.kind,
            set.sealed.clone()
        ),
        (
            "first",
            GraphCloud::UsGov,
            GraphCredentialKind::Certificate,
            vec![1, 2, 3, 4]
        )
    );
    assert!(matches!(
        store.graph_credential(&only_b, a.id).await,
        Err(StoreError::NotFound)
    ));
    store
        .record_token_outcome(a.id, now(), Some("refused; fix: consent"))
        .await
        .expect("record failure");
    let read = store
        .graph_credential(&TenantScope::All, a.id)
        .await
        .expect("read");
    assert_eq!(
        read.last_token_error.as_deref(),
        Some("refused; fix: consent")
    );
    assert!(read.last_token_ok_at.is_none());
    store
        .record_token_outcome(a.id, now(), None)
        .await
        .expect("record success");
    assert!(
        store
            .graph_credential(&TenantScope::All, a.id)
            .await
            .expect("read")
            .last_token_ok_at
            .is_some()
    );
    // Replacing starts the token history afresh.
    let replaced = store
        .put_graph_credential(&TenantScope::All, credential(a.id, "second"))
        .await
        .expect("replace");
    assert_eq!(replaced.client_id, "second");
    assert!(replaced.last_token_error.is_none() && replaced.last_token_ok_at.is_none());
    assert!(matches!(
        store.delete_graph_credential(&only_b, a.id).await,
        Err(StoreError::NotFound)
    ));
    store
        .delete_graph_credential(&TenantScope::All, a.id)
        .await
        .expect("delete");
    assert!(matches!(
        store.delete_graph_credential(&TenantScope::All, a.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn due_cloud_tenants_are_claimed_once(store: Arc<dyn Store>) {
    let store = Arc::new(store);
    let a = tenant(store.as_ref().as_ref(), "A").await;
    let b = tenant(store.as_ref().as_ref(), "B").await;
    let _without = tenant(store.as_ref().as_ref(), "No credential").await;
    for t in [a.id, b.id] {
        store
            .put_graph_credential(&TenantScope::All, credential(t, "c"))
            .await
            .expect("set");
    }
    let later = now() + Duration::hours(1);
    // Two replicas claiming at once get each due tenant exactly once between them.
    let (one, two) = tokio::join!(
        store.claim_due_cloud_tenants(now() + Duration::seconds(1), later, 10),
        store.claim_due_cloud_tenants(now() + Duration::seconds(1), later, 10),
    );
    let mut claimed = [one.expect("claim"), two.expect("claim")].concat();
    claimed.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(claimed, expected);
    assert!(
        store
            .claim_due_cloud_tenants(now() + Duration::seconds(1), later, 10)
            .await
            .expect("claim")
            .is_empty(),
        "nothing is due until the next run"
    );
    store.set_next_cloud_run(a.id, now()).await.expect("move");
    assert_eq!(
        store
            .claim_due_cloud_tenants(now() + Duration::seconds(1), later, 1)
            .await
            .expect("claim"),
        vec![a.id]
    );
}

async fn cloud_runs_are_kept_per_tenant_and_rolled_up(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let b = tenant(store, "B").await;
    assert!(
        store
            .cloud_run(&TenantScope::All, a.id)
            .await
            .expect("none yet")
            .is_none()
    );
    for t in [a.id, b.id] {
        store
            .put_graph_credential(&TenantScope::All, credential(t, "c"))
            .await
            .expect("set");
    }
    let at = now();
    let run = CloudRun {
        tenant_id: a.id,
        results: vec![
            result("tenant.writeback_licence", Status::Pass, at),
            result("tenant.sspr_enabled", Status::Fail, at),
        ],
        sspr: SsprActivity {
            since: Some(at - Duration::hours(24)),
            total: 2,
            failures: 2,
            groups: vec![SsprActivityGroup {
                activity: "Reset password (self-service)".into(),
                result: "failure".into(),
                reason: "UserNotLicensed".into(),
                count: 2,
                check_id: Some("tenant.user_licence".into()),
                last_seen: Some(at),
            }],
            error: None,
        },
        started_at: at,
        finished_at: at,
    };
    store.save_cloud_run(&run).await.expect("save");
    let read = store
        .cloud_run(&TenantScope::All, a.id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(read.results, run.results);
    assert_eq!(read.sspr, run.sspr);
    assert!(matches!(
        store.cloud_run(&TenantScope::Only(vec![b.id]), a.id).await,
        Err(StoreError::NotFound)
    ));
    let mut second = run.clone();
    second.results = vec![result("tenant.writeback_licence", Status::Pass, at)];
    store.save_cloud_run(&second).await.expect("replace");
    assert_eq!(
        store
            .cloud_rollups(&TenantScope::All)
            .await
            .expect("rollups"),
        vec![(a.id, Some(Status::Pass))]
    );
    assert!(
        store
            .cloud_rollups(&TenantScope::Only(vec![b.id]))
            .await
            .expect("rollups")
            .is_empty()
    );
    // A run that finishes after its credential was removed leaves nothing behind.
    store
        .delete_graph_credential(&TenantScope::All, a.id)
        .await
        .expect("delete");
    store.save_cloud_run(&run).await.expect("save is a no-op");
    assert!(
        store
            .cloud_run(&TenantScope::All, a.id)
            .await
            .expect("read")
            .is_none()
    );
}

async fn users_sign_in_by_name_and_are_deleted(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "A").await;
    let bob = store
        .create_user(NewUser {
            name: "bob@msp.example".to_owned(),
            role: Role::Viewer,
            tenants: vec![a.id],
        })
        .await
        .expect("create");
    assert_eq!(
        store
            .user_by_name("bob@msp.example")
            .await
            .expect("by name"),
        (bob.clone(), None),
        "a new user has no password"
    );
    let changed = now();
    store
        .set_user_password(bob.id, Some("$argon2id$stand-in".to_owned()), changed)
        .await
        .expect("set password");
    let (read, hash) = store
        .user_by_name("bob@msp.example")
        .await
        .expect("by name");
    assert_eq!(hash.as_deref(), Some("$argon2id$stand-in"));
    assert_eq!(
        read.sessions_valid_after,
        Some(changed),
        "sessions before it end"
    );
    let bob = read;
    assert!(matches!(
        store.user_by_name("BOB@msp.example").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.set_user_password(UserId::new(), None, now()).await,
        Err(StoreError::NotFound)
    ));

    let c = tenant(store, "C").await;
    let promoted = store
        .set_user_role(bob.id, Role::Technician, vec![c.id, a.id, c.id])
        .await
        .expect("change role");
    assert_eq!(
        (promoted.role, promoted.tenants.clone()),
        (Role::Technician, {
            let mut both = vec![a.id, c.id];
            both.sort();
            both
        })
    );
    assert_eq!(store.user(bob.id).await.expect("read"), promoted);
    assert!(matches!(
        store
            .set_user_role(bob.id, Role::Viewer, vec![TenantId::new()])
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.user(bob.id).await.expect("read"),
        promoted,
        "a failed change changes nothing"
    );
    let admin = store
        .set_user_role(bob.id, Role::Administrator, vec![])
        .await
        .expect("promote");
    assert_eq!((admin.role, admin.tenants), (Role::Administrator, vec![]));
    assert!(matches!(
        store
            .set_user_role(UserId::new(), Role::Viewer, vec![])
            .await,
        Err(StoreError::NotFound)
    ));

    let t0 = now();
    let disabled = store
        .set_user_disabled(bob.id, Some(t0))
        .await
        .expect("disable");
    assert_eq!(disabled.disabled_at, Some(t0));
    let again = store
        .set_user_disabled(bob.id, Some(t0 + Duration::minutes(1)))
        .await
        .expect("disable again");
    assert_eq!(
        again.disabled_at,
        Some(t0),
        "disabling twice keeps the first time"
    );
    assert_eq!(
        store
            .user_by_name("bob@msp.example")
            .await
            .expect("by name")
            .0
            .disabled_at,
        Some(t0)
    );
    let enabled = store.set_user_disabled(bob.id, None).await.expect("enable");
    assert_eq!(enabled.disabled_at, None);
    assert!(matches!(
        store.set_user_disabled(UserId::new(), None).await,
        Err(StoreError::NotFound)
    ));

    store.delete_user(bob.id).await.expect("delete");
    assert!(matches!(
        store.user(bob.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.user_by_name("bob@msp.example").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_user(bob.id).await,
        Err(StoreError::NotFound)
    ));
    // The name is free again, and the tenant can still be assigned.
    store
        .create_user(NewUser {
            name: "bob@msp.example".to_owned(),
            role: Role::Viewer,
            tenants: vec![a.id],
        })
        .await
        .expect("the name is free again");
}

async fn session_tokens_are_revoked_until_they_expire(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let user = UserId::new();
    let (old, live) = (Uuid::now_v7(), Uuid::now_v7());
    let t0 = now();
    assert!(!store.session_token_revoked(live).await.expect("read"));
    store
        .revoke_session_token(old, user, t0 + Duration::minutes(1), t0)
        .await
        .expect("revoke");
    store
        .revoke_session_token(live, user, t0 + Duration::hours(1), t0)
        .await
        .expect("revoke");
    store
        .revoke_session_token(live, user, t0 + Duration::hours(1), t0)
        .await
        .expect("revoking twice changes nothing");
    assert!(store.session_token_revoked(old).await.expect("read"));
    assert!(store.session_token_revoked(live).await.expect("read"));
    // Once a token has expired its revocation is dropped; the token is refused by its expiry.
    let later = t0 + Duration::minutes(2);
    store
        .revoke_session_token(Uuid::now_v7(), user, later + Duration::hours(1), later)
        .await
        .expect("revoke");
    assert!(!store.session_token_revoked(old).await.expect("read"));
    assert!(store.session_token_revoked(live).await.expect("read"));
}

async fn api_keys_remember_the_user_who_created_them(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let owned = store
        .create_api_key(scoped_key("owned", Role::Administrator, vec![], vec![]))
        .await
        .expect("create");
    let plain = store
        .create_api_key(scoped_key("plain", Role::Administrator, vec![], vec![]))
        .await
        .expect("create");
    let user = UserId::new();
    assert_eq!(store.api_key_owner(owned.id).await.expect("read"), None);
    store
        .set_api_key_owner(owned.id, user)
        .await
        .expect("set owner");
    assert_eq!(
        store.api_key_owner(owned.id).await.expect("read"),
        Some(user)
    );
    assert_eq!(store.api_key_owner(plain.id).await.expect("read"), None);
    assert!(matches!(
        store.set_api_key_owner(ApiKeyId::new(), user).await,
        Err(StoreError::NotFound)
    ));
}

async fn agents_are_revoked_within_scope(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "Contoso").await;
    let b = tenant(store, "Fabrikam").await;
    let agent = enroll(store, a.id, "dc01").await;
    let only_b = TenantScope::Only(vec![b.id]);
    let at = now();
    for (scope, tenant_id) in [(&only_b, a.id), (&TenantScope::All, b.id)] {
        assert!(
            matches!(
                store.revoke_agent(scope, tenant_id, agent, at).await,
                Err(StoreError::NotFound)
            ),
            "another tenant's agent is not found"
        );
    }
    store
        .begin_credential_rotation(&TenantScope::All, a.id, agent, &secrets::hash("next"))
        .await
        .expect("rotation starts");
    let revoked = store
        .revoke_agent(&TenantScope::Only(vec![a.id]), a.id, agent, at)
        .await
        .expect("revoked");
    assert_eq!(revoked.revoked_at, Some(at));
    let again = store
        .revoke_agent(&TenantScope::All, a.id, agent, at + Duration::minutes(1))
        .await
        .expect("revoked again");
    assert_eq!(again.revoked_at, Some(at), "the first revocation stays");
    let stored = store.agent_credential(agent).await.expect("agent");
    assert_eq!(stored.agent.revoked_at, Some(at));
    assert_eq!(
        stored.pending_credential_hash, None,
        "revocation ends the rotation under way"
    );
    assert!(
        !store
            .complete_credential_rotation(agent, &secrets::hash("next"), now())
            .await
            .expect("no database error"),
        "a revoked agent cannot take its pending credential"
    );
    assert!(matches!(
        store
            .begin_credential_rotation(&TenantScope::All, a.id, agent, &secrets::hash("later"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // A report that raced the revocation is refused, never stored.
    assert!(matches!(
        store
            .ingest_report(&report(
                a.id,
                agent,
                vec![result("x.y", Status::Fail, now())]
            ))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .latest_results(&TenantScope::All, a.id)
            .await
            .expect("a")
            .is_empty(),
        "nothing of a revoked agent's report is stored"
    );
}

async fn a_credential_rotation_completes_only_with_the_pending_hash(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let a = tenant(store, "Contoso").await;
    let b = tenant(store, "Fabrikam").await;
    let agent = enroll(store, a.id, "dc01").await;
    let original = store
        .agent_credential(agent)
        .await
        .expect("agent")
        .credential_hash;
    assert!(matches!(
        store
            .begin_credential_rotation(&TenantScope::Only(vec![b.id]), a.id, agent, b"x")
            .await,
        Err(StoreError::NotFound)
    ));
    let (first, second) = (secrets::hash("first"), secrets::hash("second"));
    store
        .begin_credential_rotation(&TenantScope::All, a.id, agent, &first)
        .await
        .expect("rotation starts");
    // The agent may have stored the first credential and lost only its confirmation: a second
    // rotation must not replace it.
    match store
        .begin_credential_rotation(&TenantScope::Only(vec![a.id]), a.id, agent, &second)
        .await
    {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains("already waiting for the agent's confirmation"),
            "{message}"
        ),
        other => panic!("a pending rotation is never replaced: {other:?}"),
    }
    let stored = store.agent_credential(agent).await.expect("agent");
    assert_eq!(
        stored.credential_hash, original,
        "the old one works until confirmed"
    );
    assert_eq!(stored.pending_credential_hash, Some(first.clone()));

    // The agent came back with its current credential: the first rotation is dropped, only
    // when it is still the pending one, and a new one can start.
    assert!(
        !store
            .discard_pending_credential(agent, &second)
            .await
            .expect("no database error"),
        "another pending credential is not dropped"
    );
    assert!(
        store
            .discard_pending_credential(agent, &first)
            .await
            .expect("no database error")
    );
    assert_eq!(
        store
            .agent_credential(agent)
            .await
            .expect("agent")
            .pending_credential_hash,
        None
    );
    store
        .begin_credential_rotation(&TenantScope::Only(vec![a.id]), a.id, agent, &second)
        .await
        .expect("a rotation starts once the dropped one is gone");
    assert!(
        !store
            .complete_credential_rotation(agent, &first, now())
            .await
            .expect("no database error"),
        "a dropped credential is not promoted"
    );
    assert!(
        store
            .complete_credential_rotation(agent, &second, now())
            .await
            .expect("no database error")
    );
    let stored = store.agent_credential(agent).await.expect("agent");
    assert_eq!(stored.credential_hash, second);
    assert_eq!(stored.pending_credential_hash, None);
    assert!(
        !store
            .complete_credential_rotation(agent, &second, now())
            .await
            .expect("no database error"),
        "completing twice changes nothing"
    );
    assert!(
        !store
            .discard_pending_credential(agent, &second)
            .await
            .expect("no database error"),
        "a completed rotation is not dropped"
    );
    assert_eq!(
        store
            .agent_credential(agent)
            .await
            .expect("agent")
            .credential_hash,
        second
    );
    store
        .begin_credential_rotation(&TenantScope::All, a.id, agent, &first)
        .await
        .expect("the next rotation starts after a completed one");
}

/// Writes cancelled at any await point (a client that went away, a request timeout, a server
/// shutting down) never leave a connection inside a transaction or a lock held: every write
/// after them works, and each cancelled write happened whole or not at all.
async fn cancelled_writes_never_wedge_the_store(store: Arc<dyn Store>) {
    use rand::Rng;

    let t = tenant(store.as_ref(), "Contoso").await;
    let agent = enroll(store.as_ref(), t.id, "dc01").await;
    let results_per_report = 20;
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));

    for round in 0..100u32 {
        let mut writers = tokio::task::JoinSet::new();
        for writer in 0..12u32 {
            let store = store.clone();
            let sent = sent.clone();
            // From "before the first await" to "well after the commit", so every await point
            // of the write paths is hit in some round.
            let cancel_after =
                std::time::Duration::from_micros(rand::thread_rng().gen_range(0..2_500));
            writers.spawn(async move {
                let at = now();
                let results = (0..results_per_report)
                    .map(|i| result(&format!("check.n{i}"), Status::Fail, at))
                    .collect();
                let r = report(t.id, agent, results);
                sent.lock().expect("not poisoned").push(r.id);
                let write = async {
                    match writer % 3 {
                        0 => {
                            let _ = store.ingest_report(&r).await;
                        }
                        1 => {
                            let _ = store
                                .create_tenant(NewTenant {
                                    name: format!("tenant {round}.{writer}"),
                                    entra_tenant_id: Uuid::new_v4(),
                                })
                                .await;
                        }
                        _ => {
                            let hash = secrets::hash(&secrets::generate("wbh_enr_"));
                            let created = store
                                .create_enrollment_token(
                                    &TenantScope::All,
                                    NewEnrollmentToken {
                                        tenant_id: t.id,
                                        token_hash: hash.clone(),
                                        description: "cancelled".to_owned(),
                                        expires_at: now() + Duration::hours(1),
                                        max_uses: 1,
                                    },
                                )
                                .await;
                            if created.is_ok() {
                                let _ = store
                                    .redeem_enrollment_token(&hash, now(), new_agent("dcx"))
                                    .await;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(cancel_after, write).await;
            });
        }
        while let Some(joined) = writers.join_next().await {
            joined.expect("a writer does not panic");
        }
    }

    // Every kind of write still works, at once and not only after a pool time-out.
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let fresh = tenant(store.as_ref(), "Fabrikam").await;
        let fresh_agent = enroll(store.as_ref(), fresh.id, "dc02").await;
        let r = report(
            fresh.id,
            fresh_agent,
            vec![result("network.https", Status::Pass, now())],
        );
        store
            .ingest_report(&r)
            .await
            .expect("a report after the cancelled writes")
    })
    .await
    .expect("writes after cancelled writes do not hang");
    assert_eq!(after, IngestOutcome::Stored);

    // Each report that was stored was stored whole.
    let reports = store
        .list_reports(&TenantScope::All, t.id, agent, page(None, 1_000))
        .await
        .expect("list reports");
    assert!(reports.items.len() <= sent.lock().expect("not poisoned").len());
    for summary in &reports.items {
        assert_eq!(
            summary.results, results_per_report,
            "report {} was stored in part",
            summary.id
        );
    }
}

/// The coalesced write of last-seen and last-used times: forward only, unknown ids skipped,
/// and the key lookup that authentication uses writes nothing.
async fn activity_moves_last_seen_and_last_used_forward(store: Arc<dyn Store>) {
    let store = store.as_ref();
    let t = tenant(store, "Contoso").await;
    let (a, b) = (
        enroll(store, t.id, "dc01").await,
        enroll(store, t.id, "dc02").await,
    );
    let secret = secrets::generate("wbh_key_");
    let key = store
        .create_api_key(NewApiKey {
            name: "automation".to_owned(),
            role: Role::Administrator,
            tenants: Vec::new(),
            operations: Vec::new(),
            key_hash: secrets::hash(&secret),
            expires_at: None,
        })
        .await
        .expect("create");
    let found = store
        .api_key_by_hash(&secrets::hash(&secret))
        .await
        .expect("look up");
    assert_eq!(found, key, "looking a key up changes nothing");
    assert!(matches!(
        store
            .api_key_by_hash(&secrets::hash("wbh_key_unknown"))
            .await,
        Err(StoreError::NotFound)
    ));

    let at = now();
    let later = at + Duration::minutes(1);
    store
        .record_activity(
            &[(a, later), (b, at), (AgentId::new(), at)],
            &[(key.id, at)],
        )
        .await
        .expect("record");
    // Older times than stored move nothing back.
    store
        .record_activity(&[(a, at)], &[(key.id, at - Duration::minutes(5))])
        .await
        .expect("record older");
    store
        .record_activity(&[], &[])
        .await
        .expect("record nothing");
    let seen = |id| async move {
        store
            .agent_credential(id)
            .await
            .expect("agent")
            .agent
            .last_seen_at
    };
    assert_eq!(seen(a).await, Some(later));
    assert_eq!(seen(b).await, Some(at));
    let used = store
        .api_key_by_hash(&secrets::hash(&secret))
        .await
        .expect("look up");
    assert_eq!(used.last_used_at, Some(at));
}

/// Several reports stored in one call: each gets its own outcome, in order, as one at a time
/// would have.
async fn a_batch_of_reports_has_one_outcome_each(store: Arc<dyn Store>) {
    let t = tenant(store.as_ref(), "Contoso").await;
    let other = tenant(store.as_ref(), "Fabrikam").await;
    let agent = enroll(store.as_ref(), t.id, "dc01").await;
    let stranger = enroll(store.as_ref(), other.id, "dc02").await;
    let at = now();
    let first = report(t.id, agent, vec![result("network.https", Status::Pass, at)]);
    let second = report(
        t.id,
        agent,
        vec![result(
            "network.https",
            Status::Fail,
            at + Duration::minutes(1),
        )],
    );
    // Filed under a tenant that is not its agent's.
    let misfiled = report(
        t.id,
        stranger,
        vec![result("network.https", Status::Pass, at)],
    );
    let outcomes = store
        .ingest_reports(&[first.clone(), second.clone(), first.clone(), misfiled])
        .await
        .expect("a batch");
    assert_eq!(outcomes.len(), 4);
    assert!(matches!(outcomes[0], Ok(IngestOutcome::Stored)));
    assert!(matches!(outcomes[1], Ok(IngestOutcome::Stored)));
    assert!(matches!(outcomes[2], Ok(IngestOutcome::Duplicate)));
    assert!(matches!(outcomes[3], Err(StoreError::NotFound)));
    let latest = store
        .latest_results(&TenantScope::All, t.id)
        .await
        .expect("latest");
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].report_id, second.id);
    assert_eq!(
        store
            .ingest_reports(&[])
            .await
            .expect("an empty batch")
            .len(),
        0
    );
}

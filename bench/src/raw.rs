//! The yardstick for ingest: the same rows a report stores (its header, its results, and the
//! upsert of each latest result), written straight into the same database with nothing in
//! between: one transaction per report, multi-row statements, as many writers at once as the
//! server's pool allows. `ratio_to_raw` is the server's rate over this one.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;
use wbhealth_proto::v1::Report;

/// Reports per second written straight into the database at `url` for `seconds`, for the
/// agents (`(agent id, tenant id)`) the server enrolled.
pub async fn reports_per_second(
    url: &str,
    agents: &[(Uuid, Uuid)],
    make: impl Fn(usize) -> Report + Send + Sync + Clone + 'static,
    seconds: u64,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let written = if url.starts_with("postgres") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(url)
            .await?;
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..10 {
            let (pool, agents, make) = (pool.clone(), agents.to_vec(), make.clone());
            writers.spawn(async move {
                let mut n = 0u64;
                let mut i = w;
                while Instant::now() < deadline {
                    let (agent, tenant) = agents[i % agents.len()];
                    let mut tx = pool.begin().await?;
                    insert_postgres(&mut tx, agent, tenant, &make(i)).await?;
                    tx.commit().await?;
                    n += 1;
                    i += 10;
                }
                anyhow::Ok(n)
            });
        }
        let mut n = 0;
        while let Some(w) = writers.join_next().await {
            n += w??;
        }
        n
    } else {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
        let mut conn = sqlx::SqliteConnection::connect_with(
            &options
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .foreign_keys(true),
        )
        .await?;
        let mut n = 0u64;
        let mut i = 0;
        while Instant::now() < deadline {
            let (agent, tenant) = agents[i % agents.len()];
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            insert_sqlite(&mut tx, agent, tenant, &make(i)).await?;
            tx.commit().await?;
            n += 1;
            i += 1;
        }
        n
    };
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

fn instant(t: &Option<prost_types::Timestamp>) -> anyhow::Result<OffsetDateTime> {
    let t = t.as_ref().context("a timestamp")?;
    Ok(OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
    )?)
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

const STATUS: [&str; 6] = ["pass", "pass", "warn", "fail", "error", "not_applicable"];

fn status(r: &wbhealth_proto::v1::CheckResult) -> &'static str {
    STATUS
        .get(usize::try_from(r.status).unwrap_or(0))
        .copied()
        .unwrap_or("pass")
}

async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    agent: Uuid,
    tenant: Uuid,
    report: &Report,
) -> anyhow::Result<()> {
    let id = Uuid::now_v7().hyphenated().to_string();
    let (agent, tenant) = (
        agent.hyphenated().to_string(),
        tenant.hyphenated().to_string(),
    );
    sqlx::query(
        "INSERT INTO reports (id, agent_id, tenant_id, started_at, finished_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(&agent)
    .bind(&tenant)
    .bind(micros(instant(&report.started_at)?))
    .bind(micros(instant(&report.finished_at)?))
    .bind(micros(OffsetDateTime::now_utc()))
    .execute(&mut *conn)
    .await?;
    let mut results = QueryBuilder::new(
        "INSERT INTO report_results (report_id, check_id, status, summary, evidence, remediation, duration_ms, observed_at) ",
    );
    results.push_values(&report.results, |mut row, r| {
        row.push_bind(&id)
            .push_bind(&r.check_id)
            .push_bind(status(r))
            .push_bind(&r.summary)
            .push_bind(&r.evidence_json)
            .push_bind(&r.remediation)
            .push_bind(i64::try_from(r.duration_ms).unwrap_or(0))
            .push_bind(instant(&r.observed_at).map(micros).unwrap_or(0));
    });
    results.build().execute(&mut *conn).await?;
    let mut latest = QueryBuilder::new(
        "INSERT INTO latest_results (agent_id, check_id, tenant_id, report_id, status, summary, evidence, remediation, duration_ms, observed_at) ",
    );
    latest.push_values(&report.results, |mut row, r| {
        row.push_bind(&agent)
            .push_bind(&r.check_id)
            .push_bind(&tenant)
            .push_bind(&id)
            .push_bind(status(r))
            .push_bind(&r.summary)
            .push_bind(&r.evidence_json)
            .push_bind(&r.remediation)
            .push_bind(i64::try_from(r.duration_ms).unwrap_or(0))
            .push_bind(instant(&r.observed_at).map(micros).unwrap_or(0));
    });
    latest.push(LATEST_UPSERT);
    latest.build().execute(&mut *conn).await?;
    Ok(())
}

async fn insert_postgres(
    conn: &mut sqlx::PgConnection,
    agent: Uuid,
    tenant: Uuid,
    report: &Report,
) -> anyhow::Result<()> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO reports (id, agent_id, tenant_id, started_at, finished_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(agent)
    .bind(tenant)
    .bind(instant(&report.started_at)?)
    .bind(instant(&report.finished_at)?)
    .bind(OffsetDateTime::now_utc())
    .execute(&mut *conn)
    .await?;
    let evidence = |r: &wbhealth_proto::v1::CheckResult| {
        sqlx::types::Json(
            serde_json::from_str::<serde_json::Value>(&r.evidence_json).unwrap_or_default(),
        )
    };
    let observed = |r: &wbhealth_proto::v1::CheckResult| {
        instant(&r.observed_at).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let mut results = QueryBuilder::new(
        "INSERT INTO report_results (report_id, check_id, status, summary, evidence, remediation, duration_ms, observed_at) ",
    );
    results.push_values(&report.results, |mut row, r| {
        row.push_bind(id)
            .push_bind(&r.check_id)
            .push_bind(status(r))
            .push_bind(&r.summary)
            .push_bind(evidence(r))
            .push_bind(&r.remediation)
            .push_bind(i64::try_from(r.duration_ms).unwrap_or(0))
            .push_bind(observed(r));
    });
    results.build().execute(&mut *conn).await?;
    let mut latest = QueryBuilder::new(
        "INSERT INTO latest_results (agent_id, check_id, tenant_id, report_id, status, summary, evidence, remediation, duration_ms, observed_at) ",
    );
    latest.push_values(&report.results, |mut row, r| {
        row.push_bind(agent)
            .push_bind(&r.check_id)
            .push_bind(tenant)
            .push_bind(id)
            .push_bind(status(r))
            .push_bind(&r.summary)
            .push_bind(evidence(r))
            .push_bind(&r.remediation)
            .push_bind(i64::try_from(r.duration_ms).unwrap_or(0))
            .push_bind(observed(r));
    });
    latest.push(LATEST_UPSERT);
    latest.build().execute(&mut *conn).await?;
    Ok(())
}

/// The latest result moves forward only, as the server keeps it.
const LATEST_UPSERT: &str = " ON CONFLICT (agent_id, check_id) DO UPDATE SET \
    report_id = excluded.report_id, status = excluded.status, summary = excluded.summary, \
    evidence = excluded.evidence, remediation = excluded.remediation, \
    duration_ms = excluded.duration_ms, observed_at = excluded.observed_at \
    WHERE excluded.observed_at >= latest_results.observed_at";

/// The agents of the bench's tenant, read from the database the server wrote.
pub async fn agents(url: &str) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        Ok(sqlx::query_as("SELECT id, tenant_id FROM agents")
            .fetch_all(&mut conn)
            .await?)
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await?;
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, tenant_id FROM agents")
            .fetch_all(&mut conn)
            .await?;
        rows.into_iter()
            .map(|(a, t)| Ok((a.parse()?, t.parse()?)))
            .collect()
    }
}

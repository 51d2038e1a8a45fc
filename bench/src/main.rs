//! `wbhealth-bench`: drives the real `wbhealth-server` binary over real gRPC and REST with
//! simulated agents and prints one JSON line per measurement. Benchmarks, not tests: they
//! print figures and judge nothing. `docs/performance.md` has the commands and the figures.

mod fleet;
mod raw;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use sqlx::Connection as _;

use crate::fleet::{Delivery, Session};
use crate::server::ServerProcess;

#[derive(Parser)]
#[command(about = "Benchmarks of the wbhealth server: one JSON line per measurement")]
struct Cli {
    /// The server binary; by default `wbhealth-server` next to this one.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// A PostgreSQL server to create a throw-away database on, for `--backend postgres`.
    #[arg(long, global = true, env = "WBH_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    #[command(subcommand)]
    command: Bench,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Subcommand)]
enum Bench {
    /// Reports per second, acknowledgement latency, and the ratio to writing the same rows
    /// straight into the same database.
    Ingest {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: Backend,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Server memory with N connected, heartbeating agents; a probe agent's acknowledgement
    /// latency meanwhile; and how long a reconnect storm of all of them takes to settle.
    Streams {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: Backend,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Seconds between each agent's heartbeats.
        #[arg(long, default_value_t = 5)]
        heartbeat_seconds: u64,
        /// How long the agents stay connected while the probe measures.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Latency and rate of the fleet summary, a tenant's status and its agent list, beside
    /// the bare health endpoint, and SQL statements per request.
    Reads {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: Backend,
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        #[arg(long, default_value_t = 2)]
        agents_per_tenant: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// K `kill -9` of the server under load; every acknowledged report must be stored exactly
    /// once and the database must pass its integrity check.
    Soak {
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: Backend,
        #[arg(long, default_value_t = 10)]
        kills: u32,
        #[arg(long, default_value_t = 100)]
        agents: usize,
        /// Seconds of load between kills.
        #[arg(long, default_value_t = 3)]
        every_seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_file_limit();
    let binary = match cli.server_bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("the bench's folder")?
            .join("wbhealth-server"),
    };
    let dir = tempfile::tempdir()?;
    let database = |backend: Backend| Database::create(backend, &dir, cli.postgres_url.as_deref());
    match cli.command {
        Bench::Ingest {
            backend,
            agents,
            seconds,
        } => ingest(&binary, &dir, database(backend).await?, agents, seconds).await,
        Bench::Streams {
            backend,
            agents,
            heartbeat_seconds,
            seconds,
        } => {
            streams(
                &binary,
                &dir,
                database(backend).await?,
                agents,
                heartbeat_seconds,
                seconds,
            )
            .await
        }
        Bench::Reads {
            backend,
            tenants,
            agents_per_tenant,
            seconds,
            concurrency,
        } => {
            reads(
                &binary,
                &dir,
                database(backend).await?,
                tenants,
                agents_per_tenant,
                seconds,
                concurrency,
            )
            .await
        }
        Bench::Soak {
            backend,
            kills,
            agents,
            every_seconds,
        } => {
            soak(
                &binary,
                &dir,
                database(backend).await?,
                kills,
                agents,
                every_seconds,
            )
            .await
        }
    }
}

/// Ten thousand agents need twenty thousand sockets on this machine (both ends).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// The database of one run.
struct Database {
    url: String,
    backend: &'static str,
}

impl Database {
    async fn create(
        backend: Backend,
        dir: &tempfile::TempDir,
        postgres: Option<&str>,
    ) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("bench.db").display()),
                backend: "sqlite",
            },
            Backend::Postgres => {
                let base = postgres.context(
                    "--backend postgres needs --postgres-url (or WBH_BENCH_POSTGRES_URL) naming a server to create a database on",
                )?;
                let name = format!("wbh_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(base).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await?;
                let (prefix, _) = base.rsplit_once('/').context("a URL with a database")?;
                Self {
                    url: format!("{prefix}/{name}"),
                    backend: "postgres",
                }
            }
        })
    }
}

/// The path of the i-th request to an endpoint.
type PathOf = Box<dyn Fn(usize) -> String + Send + Sync>;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn print(line: serde_json::Value) {
    println!("{line}");
}

/// Enrolls `n` agents in a new tenant and opens a session for each, each on its own
/// connection.
async fn connected_fleet(
    server: &ServerProcess,
    tenant_name: &str,
    n: usize,
) -> anyhow::Result<(Vec<fleet::SimAgent>, Vec<Session>)> {
    let tenant = server.create_tenant(tenant_name).await?;
    let tokens = server.enrollment_tokens(&tenant, n).await?;
    let agents = fleet::enroll(&server.grpc, tokens, tenant_name).await?;
    let sessions = open_sessions(&server.grpc, &agents).await?;
    Ok((agents, sessions))
}

async fn open_sessions(grpc: &str, agents: &[fleet::SimAgent]) -> anyhow::Result<Vec<Session>> {
    use futures::StreamExt as _;
    let opened = futures::stream::iter(agents.iter().cloned())
        .map(|agent| async move {
            let channel = fleet::channel(grpc).await?;
            Session::open(channel, &agent).await
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

async fn ingest(
    binary: &std::path::Path,
    dir: &tempfile::TempDir,
    db: Database,
    n: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let server = ServerProcess::start(binary, dir.path(), &db.url).await?;
    let (agents, sessions) = connected_fleet(&server, "ingest", n).await?;
    let checks = fleet::agent_checks();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (agent, mut session) in agents.into_iter().zip(sessions) {
        let checks = checks.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                match session
                    .deliver(fleet::report(&agent.hostname, &checks))
                    .await?
                {
                    Delivery::Acked(took) => latencies.push(took),
                    Delivery::Rejected(reason) => anyhow::bail!("report rejected: {reason}"),
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let reports_per_second = latencies.len() as f64 / elapsed;
    let bytes = database_bytes(&db).await?;
    let stored = latencies.len() as f64;
    drop(server);

    // The yardstick, on the same database once the server is gone.
    let enrolled = raw::agents(&db.url).await?;
    let hosts: Vec<String> = (0..enrolled.len()).map(|i| format!("raw-{i}")).collect();
    let checks_for_raw = checks.clone();
    let raw_rate = raw::reports_per_second(
        &db.url,
        &enrolled,
        move |i| fleet::report(&hosts[i % hosts.len()], &checks_for_raw),
        seconds.min(10),
    )
    .await?;
    print(json!({
        "bench": "ingest",
        "backend": db.backend,
        "agents": n,
        "seconds": seconds,
        "results_per_report": checks.len(),
        "reports_per_second": reports_per_second,
        "results_per_second": reports_per_second * checks.len() as f64,
        "ack_p50_ms": percentile(&latencies, 0.5),
        "ack_p99_ms": percentile(&latencies, 0.99),
        "raw_reports_per_second": raw_rate,
        "ratio_to_raw": reports_per_second / raw_rate,
        "database_bytes": bytes,
        "bytes_per_report": bytes as f64 / stored.max(1.0),
    }));
    Ok(())
}

/// How much room the database takes: the SQLite file with its WAL, or PostgreSQL's own count.
async fn database_bytes(db: &Database) -> anyhow::Result<u64> {
    if db.backend == "postgres" {
        let mut conn = sqlx::PgConnection::connect(&db.url).await?;
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await?;
        Ok(u64::try_from(size).unwrap_or(0))
    } else {
        let path = db.url.trim_start_matches("sqlite://");
        let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        Ok(size(path.to_owned()) + size(format!("{path}-wal")))
    }
}

async fn streams(
    binary: &std::path::Path,
    dir: &tempfile::TempDir,
    db: Database,
    n: usize,
    heartbeat_seconds: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let server = ServerProcess::start(binary, dir.path(), &db.url).await?;
    let (probe_agents, mut probe) = connected_fleet(&server, "probe", 1).await?;
    let mut probe_session = probe.pop().context("the probe's session")?;
    let idle_rss = server.rss_bytes()?;
    let (agents, sessions) = connected_fleet(&server, "streams", n).await?;
    let connected_rss = server.rss_bytes()?;

    // Every agent heartbeats on its interval, spread evenly, while the probe reports.
    let stop = Arc::new(tokio::sync::Notify::new());
    let beats = Arc::new(AtomicU64::new(0));
    let mut beaters = tokio::task::JoinSet::new();
    for (i, session) in sessions.into_iter().enumerate() {
        let (stop, beats) = (stop.clone(), beats.clone());
        let offset = Duration::from_millis((i as u64 * heartbeat_seconds * 1000) / n.max(1) as u64);
        beaters.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut every = tokio::time::interval(Duration::from_secs(heartbeat_seconds));
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if session.heartbeat().await.is_err() { break; }
                        beats.fetch_add(1, Ordering::Relaxed);
                    }
                    () = stop.notified() => break,
                }
            }
            session
        });
    }
    let checks = fleet::agent_checks();
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Delivery::Acked(took) = probe_session
            .deliver(fleet::report(&probe_agents[0].hostname, &checks))
            .await?
        {
            latencies.push(took);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let heartbeating_rss = server.rss_bytes()?;
    stop.notify_waiters();
    let mut sessions = Vec::new();
    while let Some(s) = beaters.join_next().await {
        sessions.push(s?);
    }
    latencies.sort();

    // The storm: every agent drops its connection and all come back at once.
    drop(sessions);
    let storm = Instant::now();
    let reopened = open_sessions(&server.grpc, &agents).await?;
    let settled = storm.elapsed();
    print(json!({
        "bench": "streams",
        "backend": db.backend,
        "agents": n,
        "heartbeat_seconds": heartbeat_seconds,
        "heartbeats_sent": beats.load(Ordering::Relaxed),
        "rss_idle_bytes": idle_rss,
        "rss_connected_bytes": connected_rss,
        "rss_heartbeating_bytes": heartbeating_rss,
        "bytes_per_agent": (heartbeating_rss.saturating_sub(idle_rss)) as f64 / n.max(1) as f64,
        "probe_ack_p50_ms": percentile(&latencies, 0.5),
        "probe_ack_p99_ms": percentile(&latencies, 0.99),
        "reconnect_storm_settled_seconds": settled.as_secs_f64(),
        "reconnected": reopened.len(),
    }));
    Ok(())
}

async fn reads(
    binary: &std::path::Path,
    dir: &tempfile::TempDir,
    db: Database,
    tenants: usize,
    per_tenant: usize,
    seconds: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let server = ServerProcess::start(binary, dir.path(), &db.url).await?;
    // Seed: tenants with agents that each stored one full report.
    let checks = fleet::agent_checks();
    let seeded = futures::stream::iter(0..tenants)
        .map(|t| {
            let (server, checks) = (&server, &checks);
            async move {
                let name = format!("t{t:05}");
                let tenant = server.create_tenant(&name).await?;
                let tokens = server.enrollment_tokens(&tenant, per_tenant).await?;
                let agents = fleet::enroll(&server.grpc, tokens, &name).await?;
                let channel = fleet::channel(&server.grpc).await?;
                for agent in &agents {
                    let mut session = Session::open(channel.clone(), agent).await?;
                    session
                        .deliver(fleet::report(&agent.hostname, checks))
                        .await?;
                }
                anyhow::Ok(tenant)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let tenant_ids: Vec<String> = seeded.into_iter().collect::<Result<_, _>>()?;
    let tenant_ids = Arc::new(tenant_ids);

    let endpoints: [(&str, PathOf); 4] = [
        ("healthz", Box::new(|_| "/healthz".to_owned())),
        (
            "fleet_summary",
            Box::new(|_| "/api/v1/fleet/summary".to_owned()),
        ),
        ("tenant_status", {
            let ids = tenant_ids.clone();
            Box::new(move |i| format!("/api/v1/tenants/{}/status", ids[i % ids.len()]))
        }),
        ("agent_list", {
            let ids = tenant_ids.clone();
            Box::new(move |i| format!("/api/v1/tenants/{}/agents", ids[i % ids.len()]))
        }),
    ];
    let mut bare_rate = f64::NAN;
    for (name, path) in &endpoints {
        let path = Arc::new(path);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let counter = AtomicU64::new(0);
        let workers = (0..concurrency).map(|_| {
            let (path, counter, server) = (path.clone(), &counter, &server);
            async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed) as usize;
                    let t = Instant::now();
                    let response = server
                        .client()
                        .get(format!("{}{}", server.http, path(i)))
                        .bearer_auth(&server.key)
                        .send()
                        .await?;
                    anyhow::ensure!(
                        response.status().is_success(),
                        "{} answered {}",
                        path(i),
                        response.status()
                    );
                    response.bytes().await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            }
        });
        let mut latencies = Vec::new();
        for done in futures::future::join_all(workers).await {
            latencies.extend(done?);
        }
        let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        if *name == "healthz" {
            bare_rate = rate;
        }
        print(json!({
            "bench": "reads",
            "backend": db.backend,
            "tenants": tenants,
            "agents_per_tenant": per_tenant,
            "endpoint": name,
            "concurrency": concurrency,
            "p50_ms": percentile(&latencies, 0.5),
            "p99_ms": percentile(&latencies, 0.99),
            "requests_per_second": rate,
            "ratio_to_bare": rate / bare_rate,
        }));
    }
    let key = server.key.clone();
    drop(server);

    // Statements per request: the same server with sqlx's statement log on, one request each.
    let mut logged =
        ServerProcess::start_counting_statements(binary, dir.path(), &db.url, &key).await?;
    for (name, path) in endpoints.iter().skip(1) {
        let before = logged.statements();
        let response = logged
            .client()
            .get(format!("{}{}", logged.http, path(0)))
            .bearer_auth(&logged.key)
            .send()
            .await?;
        response.bytes().await?;
        // The log line of the last statement may trail the response by a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        print(json!({
            "bench": "reads_statements",
            "backend": db.backend,
            "tenants": tenants,
            "endpoint": name,
            "sql_statements_per_request": logged.statements() - before,
        }));
    }
    logged.kill().await?;
    Ok(())
}

async fn soak(
    binary: &std::path::Path,
    dir: &tempfile::TempDir,
    db: Database,
    kills: u32,
    n: usize,
    every_seconds: u64,
) -> anyhow::Result<()> {
    let mut server = ServerProcess::start(binary, dir.path(), &db.url).await?;
    let tenant = server.create_tenant("soak").await?;
    let tokens = server.enrollment_tokens(&tenant, n).await?;
    let agents = fleet::enroll(&server.grpc, tokens, "soak").await?;
    let checks = fleet::agent_checks();
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for agent in agents {
        let (grpc, checks, acked, stop) = (
            server.grpc.clone(),
            checks.clone(),
            acked.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            // Like the real agent: a report is kept until the server acknowledges it, and
            // sent again after every reconnect.
            let mut pending = fleet::report(&agent.hostname, &checks);
            while !stop.load(Ordering::Relaxed) {
                let session = async {
                    let channel = fleet::channel(&grpc).await?;
                    Session::open(channel, &agent).await
                };
                let Ok(mut session) = session.await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                while !stop.load(Ordering::Relaxed) {
                    match session.deliver(pending.clone()).await {
                        Ok(Delivery::Acked(_)) => {
                            acked
                                .lock()
                                .expect("not poisoned")
                                .push(pending.report_id.clone());
                            pending = fleet::report(&agent.hostname, &checks);
                        }
                        Ok(Delivery::Rejected(reason)) => {
                            anyhow::bail!("report rejected: {reason}")
                        }
                        Err(_) => break,
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_secs(every_seconds)).await;
        server.kill().await?;
        server.restart().await?;
    }
    tokio::time::sleep(Duration::from_secs(every_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    server.kill().await?;
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let acked = acked.lock().expect("not poisoned").clone();
    let (stored_once, whole, integrity) = verify_soak(&db, &acked, checks.len()).await?;
    print(json!({
        "bench": "soak",
        "backend": db.backend,
        "kills": kills,
        "agents": n,
        "acknowledged_reports": acked.len(),
        "acknowledged_and_stored_once": stored_once,
        "lost": acked.len() as u64 - stored_once,
        "stored_whole": whole,
        "integrity_check": integrity,
    }));
    Ok(())
}

/// How many acknowledged reports are stored (once: the id is the primary key), whether each
/// holds all its results, and what the database's own integrity check says.
async fn verify_soak(
    db: &Database,
    acked: &[String],
    results: usize,
) -> anyhow::Result<(u64, bool, String)> {
    let acked_json = serde_json::to_string(acked)?;
    if db.backend == "postgres" {
        let mut conn = sqlx::PgConnection::connect(&db.url).await?;
        let ids: Vec<uuid::Uuid> = acked.iter().filter_map(|s| s.parse().ok()).collect();
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM reports WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&mut conn)
            .await?;
        let partial: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reports r WHERE r.id = ANY($1) AND \
             (SELECT count(*) FROM report_results x WHERE x.report_id = r.id) <> $2",
        )
        .bind(&ids)
        .bind(i64::try_from(results)?)
        .fetch_one(&mut conn)
        .await?;
        Ok((
            u64::try_from(stored)?,
            partial == 0,
            "not run (PostgreSQL has none built in)".into(),
        ))
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await?;
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reports WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(&acked_json)
        .fetch_one(&mut conn)
        .await?;
        let partial: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM reports r WHERE r.id IN (SELECT value FROM json_each($1)) AND \
             (SELECT count(*) FROM report_results x WHERE x.report_id = r.id) <> $2",
        )
        .bind(&acked_json)
        .bind(i64::try_from(results)?)
        .fetch_one(&mut conn)
        .await?;
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await?;
        Ok((u64::try_from(stored)?, partial == 0, integrity))
    }
}

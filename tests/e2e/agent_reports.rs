//! The walking skeleton end to end: a real agent enrolls over gRPC, checks a real domain
//! controller and real TLS endpoints, and its results come back through REST, on SQLite and
//! on PostgreSQL.

use std::time::Duration;

use serde_json::Value;

use crate::support::agent::AgentHome;
use crate::support::eventually;
use crate::support::lab::Lab;
use crate::support::postgres;
use crate::support::server::{TestServer, results_by_check, sqlite_url};
use crate::support::tls::{HttpsEndpoint, TestCa, refusing_port};

const CHECKS: [&str; 5] = [
    "network.dns_resolution",
    "network.passwordreset_https",
    "network.servicebus_relay",
    "topology.pdc_emulator",
    "policy.min_password_age",
];

/// Whether the agent's first report is in: every check this walking skeleton proves is there.
/// (The agent runs more checks; the host and permission checks have their own tests.)
fn has_all_results(status: &Value) -> bool {
    let results = results_by_check(status);
    CHECKS.iter().all(|id| results.contains_key(*id))
}

async fn healthy_site_passes_every_check(database_url: &str) -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let server = TestServer::start(database_url).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;

    let home = AgentHome::new(&lab.healthy_agent_config())?;
    home.enroll(&server.grpc_url(), &token)?;
    let _agent = home.start()?;

    let status = server
        .wait_for_status(&tenant, Duration::from_secs(60), has_all_results)
        .await?;
    let results = results_by_check(&status);
    for id in CHECKS {
        assert_eq!(
            results[id]["status"], "pass",
            "{id} should pass on a healthy site: {:#}",
            results[id]
        );
        assert_eq!(
            results[id]["remediation"], "",
            "{id} passed, so there is nothing to fix"
        );
    }
    let pdc = &results["topology.pdc_emulator"];
    assert!(
        pdc.to_string().contains(&lab.dc.fqdn()),
        "the PDC result names the PDC emulator {}: {pdc:#}",
        lab.dc.fqdn()
    );
    let agent = &status["agents"][0]["agent"];
    assert!(
        agent["last_seen_at"].is_string(),
        "last contact is shown: {agent:#}"
    );
    assert_eq!(agent["connected"], true);

    let fleet = server.get("/fleet/summary").await?;
    assert_eq!(fleet["tenants"]["total"], 1);
    assert_eq!(fleet["tenants"]["total"], 1);
    assert_eq!(fleet["agents"]["total"], 1);
    let worst = status["status"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        fleet["tenants"]["by_status"][&worst], 1,
        "the tenant counts under its worst status {worst}"
    );

    // A technician asks for a fresh run; a new report replaces the first in the status.
    let agent_id = agent["id"].as_str().unwrap_or_default().to_owned();
    let first_report = status["agents"][0]["results"][0]["report_id"].clone();
    let (code, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/tenants/{tenant}/agents/{agent_id}/run"),
            None,
        )
        .await?;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for_status(&tenant, Duration::from_secs(60), |s| {
            has_all_results(s) && s["agents"][0]["results"][0]["report_id"] != first_report
        })
        .await?;

    // A second use of a one-use token is refused, and the spool is empty once acknowledged.
    let err = home
        .enroll(&server.grpc_url(), &token)
        .expect_err("the token is used up");
    assert!(err.to_string().contains("no uses left"), "{err}");
    assert_eq!(home.spooled(), 0, "acknowledged reports leave the spool");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_site_passes_every_check_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    healthy_site_passes_every_check(&sqlite_url(&dir)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_site_passes_every_check_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres::fresh_database().await else {
        return Ok(());
    };
    healthy_site_passes_every_check(&url).await
}

async fn broken_site_fails_the_matching_checks(database_url: &str) -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let zone = lab.zone();
    // The domain's minimum password age is one day.
    lab.dc.set_min_password_age_days(1).await?;
    // The password reset service refuses connections, and a second name does not resolve.
    let refused = format!("passwordreset.{zone}:{}", refusing_port());
    let unresolvable = format!("nowhere.{zone}:443");
    // One relay presents a certificate from a CA the machine does not trust (TLS inspection).
    let rogue = TestCa::new();
    let (cert, key) = rogue.issue(&[&format!("untrusted.{zone}")]);
    let intercepted = HttpsEndpoint::start(&cert, &key, 200, "")?;
    let intercepted_name = format!("untrusted.{zone}:{}", intercepted.port());
    let relays = vec![lab.relay_endpoints()[0].clone(), intercepted_name.clone()];

    let server = TestServer::start(database_url).await?;
    let tenant = server.create_tenant("Fabrikam").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home =
        AgentHome::new(&lab.agent_config(&[refused.clone(), unresolvable.clone()], &relays))?;
    home.enroll(&server.grpc_url(), &token)?;
    let _agent = home.start()?;

    let status = server
        .wait_for_status(&tenant, Duration::from_secs(60), has_all_results)
        .await?;
    let results = results_by_check(&status);
    let summary = |id: &str| {
        results[id]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    assert_eq!(results["network.dns_resolution"]["status"], "fail");
    assert!(
        summary("network.dns_resolution").contains(&format!("nowhere.{zone}")),
        "{}",
        summary("network.dns_resolution")
    );

    assert_eq!(results["network.passwordreset_https"]["status"], "fail");
    assert!(
        summary("network.passwordreset_https").contains("refused"),
        "{}",
        summary("network.passwordreset_https")
    );
    let fix = results["network.passwordreset_https"]["remediation"]
        .as_str()
        .unwrap_or_default();
    assert!(
        fix.contains("passwordreset") && !fix.contains('{'),
        "the fix names the host: {fix}"
    );

    assert_eq!(results["network.servicebus_relay"]["status"], "fail");
    let relay = summary("network.servicebus_relay");
    assert!(
        relay.contains(&format!("untrusted.{zone}")) && relay.contains("trust"),
        "{relay}"
    );
    assert!(
        !relay.contains("relay1"),
        "the healthy relay is not blamed: {relay}"
    );

    assert_eq!(results["policy.min_password_age"]["status"], "warn");
    assert!(
        summary("policy.min_password_age").contains("1 day"),
        "{}",
        summary("policy.min_password_age")
    );
    let fix = results["policy.min_password_age"]["remediation"]
        .as_str()
        .unwrap_or_default();
    assert!(
        fix.contains(&zone) && fix.contains("MinPasswordAge 0"),
        "the fix names the domain: {fix}"
    );

    assert_eq!(
        results["topology.pdc_emulator"]["status"], "pass",
        "the PDC is still reachable"
    );
    assert_eq!(status["status"], "fail");
    let fleet = server.get("/fleet/summary").await?;
    assert_eq!(fleet["tenants"]["by_status"]["fail"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_site_fails_the_matching_checks_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    broken_site_fails_the_matching_checks(&sqlite_url(&dir)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_site_fails_the_matching_checks_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres::fresh_database().await else {
        return Ok(());
    };
    broken_site_fails_the_matching_checks(&url).await
}

/// Reports made while the server is down wait in the agent's spool and arrive, once each,
/// when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_a_server_restart() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let mut server =
        TestServer::start_with(&sqlite_url(&dir), |c| c.agent_interval_seconds = 10).await?;
    let tenant = server.create_tenant("Northwind").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home = AgentHome::new(&lab.healthy_agent_config())?;
    home.enroll(&server.grpc_url(), &token)?;
    let _agent = home.start()?;
    let first = server
        .wait_for_status(&tenant, Duration::from_secs(60), has_all_results)
        .await?;
    let first_report = first["agents"][0]["results"][0]["report_id"].clone();
    let agent_id = first["agents"][0]["agent"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    server.stop().await?;
    // The next runs happen with the server away; they must wait in the spool.
    eventually(
        Duration::from_secs(60),
        "the agent kept running while the server was down",
        || home.spooled() >= 2,
    )
    .await;
    let spooled: Vec<String> = std::fs::read_dir(home.spool())?
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".report"))
                .map(|n| {
                    n.split_once('-')
                        .map(|(_, id)| id.to_owned())
                        .unwrap_or_default()
                })
        })
        .collect();

    server.restart().await?;
    eventually(
        Duration::from_secs(60),
        "the spool drained after the restart",
        || home.spooled() == 0,
    )
    .await;
    let reports = server
        .get(&format!(
            "/tenants/{tenant}/agents/{agent_id}/reports?limit=200"
        ))
        .await?;
    let stored: Vec<String> = reports["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    for id in &spooled {
        assert_eq!(
            stored.iter().filter(|s| *s == id).count(),
            1,
            "report {id} made while the server was down is stored exactly once: {stored:?}"
        );
    }
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "no report is stored twice");
    assert!(
        stored
            .iter()
            .any(|s| Value::String(s.clone()) == first_report)
    );
    let now = server.get(&format!("/tenants/{tenant}/status")).await?;
    assert_ne!(
        now["agents"][0]["results"][0]["report_id"], first_report,
        "the status moved on to the newer reports"
    );
    Ok(())
}

//! Fleet correlation end to end: agents report over real gRPC sessions, and the tenant status
//! shows what only a comparison of them reveals (two active servers with writeback, agents
//! that disagree about the PDC emulator, agents gone silent), with `source: fleet`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_client::AgentServiceClient;
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{self, AgentMessage, EnrollRequest, HostFacts};

use crate::support::server::{TestServer, sqlite_url};

async fn client(
    server: &TestServer,
) -> anyhow::Result<AgentServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())?
        .connect()
        .await?;
    Ok(AgentServiceClient::new(channel))
}

/// Enrolls an agent on `hostname` and returns its credential.
async fn enroll(server: &TestServer, tenant: &str, hostname: &str) -> anyhow::Result<String> {
    let (_, token) = server.enrollment_token(tenant, 1).await?;
    let enrolled = client(server)
        .await?
        .enroll(EnrollRequest {
            token,
            host: Some(HostFacts {
                hostname: hostname.to_owned(),
                os: "Windows Server 2022".to_owned(),
                agent_version: "0".to_owned(),
                domain_controller: String::new(),
            }),
            client_public_key: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(enrolled.credential)
}

/// Sends one report over a session, as the agent does, waits for the ack and disconnects.
async fn report(
    server: &TestServer,
    credential: &str,
    results: &[(&str, v1::Status, Value)],
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    let mut inbound = client(server).await?.session(request).await?.into_inner();
    let now = Some(prost_types::Timestamp {
        seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
        nanos: 0,
    });
    let id = uuid::Uuid::now_v7().to_string();
    tx.send(AgentMessage {
        kind: Some(AgentKind::Report(v1::Report {
            report_id: id.clone(),
            started_at: now,
            finished_at: now,
            results: results
                .iter()
                .map(|(check, status, evidence)| v1::CheckResult {
                    check_id: (*check).to_owned(),
                    status: (*status).into(),
                    summary: format!("{check} as the test reports it"),
                    evidence_json: evidence.to_string(),
                    remediation: String::new(),
                    duration_ms: 1,
                    observed_at: now,
                })
                .collect(),
        })),
    })
    .await?;
    while let Some(message) = inbound.message().await? {
        if let Some(ServerKind::Ack(ack)) = message.kind {
            anyhow::ensure!(ack.report_id == id, "ack for another report: {ack:?}");
            return Ok(());
        }
    }
    anyhow::bail!("the stream ended before the report was acknowledged")
}

fn host_results(staging: v1::Status, pdc: &str) -> Vec<(&'static str, v1::Status, Value)> {
    vec![
        (
            "server.staging_mode",
            staging,
            json!({ "StagingModeEnabled": staging != v1::Status::Pass }),
        ),
        ("server.writeback_enabled", v1::Status::Pass, json!({})),
        (
            "topology.pdc_emulator",
            v1::Status::Pass,
            json!({ "domain": "contoso.com", "pdc": { "dns_host_name": pdc } }),
        ),
    ]
}

fn fleet_result<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["fleet"]
        .as_array()
        .and_then(|results| results.iter().find(|r| r["check_id"] == id))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_checks_compare_the_agents_of_a_tenant() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(&sqlite_url(&dir), |config| {
        config.agent_interval_seconds = 10;
    })
    .await?;
    let tenant = server.create_tenant("Contoso").await?;
    let status = server.get(&format!("/tenants/{tenant}/status")).await?;
    assert_eq!(
        status["fleet"],
        json!([]),
        "no agents, nothing to compare: {status:#}"
    );
    assert_eq!(status["status"], Value::Null);

    let sync01 = enroll(&server, &tenant, "SYNC01").await?;
    let sync02 = enroll(&server, &tenant, "SYNC02").await?;
    report(
        &server,
        &sync01,
        &host_results(v1::Status::Pass, "dc1.contoso.com"),
    )
    .await?;
    report(
        &server,
        &sync02,
        &host_results(v1::Status::Pass, "dc2.contoso.com"),
    )
    .await?;

    let status = server.get(&format!("/tenants/{tenant}/status")).await?;
    let active = fleet_result(&status, "fleet.single_active_server");
    assert_eq!(active["status"], "fail", "{status:#}");
    assert_eq!(active["source"]["kind"], "fleet");
    assert_eq!(active["report_id"], Value::Null);
    assert_eq!(active["severity"], "blocker");
    let summary = active["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("SYNC01, SYNC02"), "{summary}");
    assert!(
        active["remediation"]
            .as_str()
            .is_some_and(|r| r.contains("Contoso") && r.contains("staging")),
        "{active:#}"
    );
    let pdc = fleet_result(&status, "fleet.pdc_agreement");
    assert_eq!(pdc["status"], "warn", "{pdc:#}");
    assert!(
        pdc["summary"].as_str().is_some_and(
            |s| s.contains("SYNC01 say dc1.contoso.com but SYNC02 say dc2.contoso.com")
        ),
        "{pdc:#}"
    );
    assert_eq!(
        fleet_result(&status, "fleet.agent_silent")["status"],
        "pass"
    );
    assert_eq!(
        status["status"], "fail",
        "the fleet's failure is the tenant's: {status:#}"
    );
    let summary = server.get("/fleet/summary").await?;
    assert_eq!(summary["tenants"]["by_status"]["fail"], 1, "{summary:#}");

    // SYNC02 goes into staging mode and learns the real PDC: one active server, agreement.
    report(
        &server,
        &sync02,
        &host_results(v1::Status::Fail, "dc1.contoso.com"),
    )
    .await?;
    let status = server.get(&format!("/tenants/{tenant}/status")).await?;
    let active = fleet_result(&status, "fleet.single_active_server");
    assert_eq!(active["status"], "pass", "{active:#}");
    assert!(
        active["summary"]
            .as_str()
            .is_some_and(|s| s.contains("SYNC01 is the only")),
        "{active:#}"
    );
    assert_eq!(
        fleet_result(&status, "fleet.pdc_agreement")["status"],
        "pass"
    );

    // An agent that enrolls and never connects, and the two that stopped reporting, turn
    // silent once three 10-second intervals pass without a word.
    let began = Instant::now();
    enroll(&server, &tenant, "SYNC03").await?;
    let deadline = began + Duration::from_secs(60);
    let silent = loop {
        let status = server.get(&format!("/tenants/{tenant}/status")).await?;
        let silent = fleet_result(&status, "fleet.agent_silent").clone();
        if silent["summary"]
            .as_str()
            .is_some_and(|s| s.contains("SYNC03"))
        {
            break silent;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "SYNC03 never turned silent: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        began.elapsed() >= Duration::from_secs(29),
        "silent too early: {:?}",
        began.elapsed()
    );
    assert_eq!(silent["status"], "fail", "{silent:#}");
    let text = silent["summary"].as_str().unwrap_or_default();
    assert!(
        text.contains("SYNC03 (never reported since it enrolled at")
            && text.contains("SYNC01 (last heard at"),
        "{text}"
    );
    assert!(
        silent["remediation"]
            .as_str()
            .is_some_and(|r| r.contains("SYNC03")),
        "{silent:#}"
    );
    Ok(())
}

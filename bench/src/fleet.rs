//! Simulated agents: enrollment over the real `Enroll` call, and one real `Session` stream per
//! agent on a TCP connection of its own, sending reports shaped like the real agent's (every
//! agent check of the catalogue, with evidence and remediation of realistic size).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use wbhealth_catalogue::{CATALOGUE, RunsOn};
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_client::AgentServiceClient;
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{
    AgentMessage, CheckResult, EnrollRequest, Heartbeat, Hello, HostFacts, Report, ServerMessage,
    Status,
};

/// An enrolled agent.
#[derive(Clone)]
pub struct SimAgent {
    /// `<agent id>.<secret>`, as the server issued it.
    pub credential: String,
    /// The host name it reports.
    pub hostname: String,
}

/// A connection to the gRPC listener; `own_connection` makes a TCP connection of its own.
pub async fn channel(grpc: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(grpc.to_owned())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

fn host(hostname: &str) -> HostFacts {
    HostFacts {
        hostname: hostname.to_owned(),
        os: "Microsoft Windows Server 2022 Datacenter 10.0.20348".to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        domain_controller: "dc01.corp.contoso.test".to_owned(),
    }
}

/// Enrolls one agent per token, `concurrency` at a time, over one shared connection.
pub async fn enroll(
    grpc: &str,
    tokens: Vec<String>,
    prefix: &str,
) -> anyhow::Result<Vec<SimAgent>> {
    let channel = channel(grpc).await?;
    let enrolled = futures::stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let channel = channel.clone();
            let hostname = format!("{prefix}-{i:05}.corp.contoso.test");
            async move {
                let response = AgentServiceClient::new(channel)
                    .enroll(EnrollRequest {
                        token,
                        host: Some(host(&hostname)),
                        client_public_key: Vec::new(),
                    })
                    .await
                    .context("enroll")?
                    .into_inner();
                anyhow::Ok(SimAgent {
                    credential: response.credential,
                    hostname,
                })
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    enrolled.into_iter().collect()
}

/// An open session of one agent.
pub struct Session {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<ServerMessage>,
}

/// What became of a report.
pub enum Delivery {
    /// Acknowledged after this long.
    Acked(Duration),
    /// The server said it can never accept it.
    Rejected(String),
}

impl Session {
    /// Opens the agent's stream on `channel` and waits for the server's first configuration.
    pub async fn open(channel: Channel, agent: &SimAgent) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(8);
        tx.send(AgentMessage {
            kind: Some(AgentKind::Hello(Hello {
                host: Some(host(&agent.hostname)),
                spooled_reports: 0,
            })),
        })
        .await?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", agent.credential).parse()?,
        );
        let mut rx = AgentServiceClient::new(channel)
            .session(request)
            .await?
            .into_inner();
        loop {
            match rx.message().await?.and_then(|m| m.kind) {
                Some(ServerKind::Config(_)) => break,
                Some(_) => {}
                None => bail!("the server closed the session before configuring the agent"),
            }
        }
        Ok(Self { tx, rx })
    }

    /// Sends a report and waits for its acknowledgement.
    pub async fn deliver(&mut self, report: Report) -> anyhow::Result<Delivery> {
        let id = report.report_id.clone();
        let sent = Instant::now();
        self.tx
            .send(AgentMessage {
                kind: Some(AgentKind::Report(report)),
            })
            .await?;
        loop {
            match self.rx.message().await?.and_then(|m| m.kind) {
                Some(ServerKind::Ack(ack)) if ack.report_id == id => {
                    return Ok(Delivery::Acked(sent.elapsed()));
                }
                Some(ServerKind::Rejected(r)) if r.report_id == id => {
                    return Ok(Delivery::Rejected(r.reason));
                }
                Some(_) => {}
                None => bail!("the server closed the session"),
            }
        }
    }

    /// Sends a heartbeat (the server answers none).
    pub async fn heartbeat(&self) -> anyhow::Result<()> {
        self.tx
            .send(AgentMessage {
                kind: Some(AgentKind::Heartbeat(Heartbeat {
                    sent_at: Some(timestamp(time::OffsetDateTime::now_utc())),
                })),
            })
            .await?;
        Ok(())
    }
}

/// The wire form of an instant.
pub fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// The agent checks of the catalogue: what a real report holds.
pub fn agent_checks() -> Vec<&'static str> {
    CATALOGUE
        .iter()
        .filter(|c| c.runs_on == RunsOn::Agent)
        .map(|c| c.id)
        .collect()
}

/// A report as the real agent sends it: one result per agent check. A steady fleet says the
/// same thing every time, so the content depends only on the host and the check; a few checks
/// warn or fail, as in a real fleet.
pub fn report(hostname: &str, checks: &[&str]) -> Report {
    let now = time::OffsetDateTime::now_utc();
    let results = checks
        .iter()
        .enumerate()
        .map(|(i, check)| {
            let status = match i % 10 {
                0 => Status::Warn,
                5 => Status::Fail,
                _ => Status::Pass,
            };
            let evidence = serde_json::json!({
                "host": hostname,
                "dc": "dc01.corp.contoso.test",
                "target": format!("CN=MSOL_0123456789ab,CN=Users,DC=corp,DC=contoso,DC=test"),
                "observed": { "check": check, "values": [1, 2, 3], "detail": "x".repeat(120) },
            });
            CheckResult {
                check_id: (*check).to_owned(),
                status: status as i32,
                summary: format!("{check} on {hostname}: as expected for this bench"),
                evidence_json: evidence.to_string(),
                remediation: if status == Status::Pass {
                    String::new()
                } else {
                    format!(
                        "Run on {hostname}: Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName MSOL_0123456789ab -ADConnectorAccountDomain corp.contoso.test; then re-run {check}"
                    )
                },
                duration_ms: 12,
                observed_at: Some(timestamp(now)),
            }
        })
        .collect();
    Report {
        report_id: uuid::Uuid::now_v7().to_string(),
        started_at: Some(timestamp(now - time::Duration::seconds(3))),
        finished_at: Some(timestamp(now)),
        results,
    }
}

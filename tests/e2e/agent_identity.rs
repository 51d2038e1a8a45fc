//! Agent identity over gRPC: revocation closes an open stream at once and for good, a
//! credential rotation keeps the agent reporting and retires the old credential, and no
//! credential reaches another agent or tenant. (A used-up enrollment token is refused with
//! "no uses left" in `bad_input::grpc_refuses_bad_tokens_and_credentials` and, through the real
//! agent, in `agent_reports`.)

use std::time::Duration;

use reqwest::Method;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_client::AgentServiceClient;
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{self as v1, AgentMessage, EnrollRequest, HostFacts, ServerMessage};

use crate::support::agent::AgentHome;
use crate::support::eventually;
use crate::support::postgres;
use crate::support::server::{TestServer, sqlite_url};
use crate::support::tls::refusing_port;

/// An open session as a raw gRPC client sees it.
pub struct RawSession {
    /// Messages to the server.
    pub tx: mpsc::Sender<AgentMessage>,
    /// Messages from the server.
    pub inbound: Streaming<ServerMessage>,
}

async fn client(
    server: &TestServer,
) -> anyhow::Result<AgentServiceClient<tonic::transport::Channel>> {
    Ok(AgentServiceClient::new(server.grpc_channel().await?))
}

/// Enrolls over gRPC and returns the response (agent id and credential).
pub async fn enroll(server: &TestServer, tenant: &str) -> anyhow::Result<v1::EnrollResponse> {
    enroll_with_key(server, tenant, Vec::new()).await
}

/// Enrolls offering `client_public_key` for a client certificate.
pub async fn enroll_with_key(
    server: &TestServer,
    tenant: &str,
    client_public_key: Vec<u8>,
) -> anyhow::Result<v1::EnrollResponse> {
    let (_, token) = server.enrollment_token(tenant, 1).await?;
    Ok(client(server)
        .await?
        .enroll(EnrollRequest {
            token,
            host: Some(HostFacts {
                hostname: "AADCONNECT01".into(),
                os: "test".into(),
                agent_version: "0".into(),
                domain_controller: String::new(),
            }),
            client_public_key,
        })
        .await?
        .into_inner())
}

/// Opens a session with `credential` and reads the configuration the server sends first.
/// The outer error is a test failure; the inner one is the server's refusal.
pub async fn open_session(
    server: &TestServer,
    credential: &str,
) -> anyhow::Result<Result<RawSession, Status>> {
    open_session_as(server, credential, None).await
}

/// Like [`open_session`], presenting a client certificate when given.
pub async fn open_session_as(
    server: &TestServer,
    credential: &str,
    client_certificate: Option<tonic::transport::Identity>,
) -> anyhow::Result<Result<RawSession, Status>> {
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    let channel = server.grpc_channel_as(client_certificate).await?;
    let mut inbound = match AgentServiceClient::new(channel).session(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(Err(status)),
    };
    let first = inbound.message().await?.and_then(|m| m.kind);
    assert!(
        matches!(first, Some(ServerKind::Config(_))),
        "a session starts with the configuration: {first:?}"
    );
    Ok(Ok(RawSession { tx, inbound }))
}

fn report() -> AgentMessage {
    let now = Some(prost_types::Timestamp {
        seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
        nanos: 0,
    });
    AgentMessage {
        kind: Some(AgentKind::Report(v1::Report {
            report_id: uuid::Uuid::now_v7().to_string(),
            started_at: now,
            finished_at: now,
            results: vec![v1::CheckResult {
                check_id: "policy.min_password_age".into(),
                status: v1::Status::Pass.into(),
                summary: "minimum password age is 0".into(),
                evidence_json: "{}".into(),
                remediation: String::new(),
                duration_ms: 1,
                observed_at: now,
            }],
        })),
    }
}

/// Sends a report and expects its acknowledgement.
pub async fn report_acked(session: &mut RawSession) -> anyhow::Result<()> {
    let message = report();
    let Some(AgentKind::Report(ref sent)) = message.kind else {
        unreachable!("report() makes reports")
    };
    let id = sent.report_id.clone();
    session.tx.send(message).await?;
    let reply = session.inbound.message().await?.and_then(|m| m.kind);
    assert!(
        matches!(reply, Some(ServerKind::Ack(ref a)) if a.report_id == id),
        "{reply:?}"
    );
    Ok(())
}

async fn report_count(server: &TestServer, tenant: &str, agent: &str) -> anyhow::Result<usize> {
    let reports = server
        .get(&format!("/tenants/{tenant}/agents/{agent}/reports"))
        .await?;
    Ok(reports["items"].as_array().map_or(0, Vec::len))
}

async fn a_revoked_agent_is_cut_off_mid_stream(database_url: &str) -> anyhow::Result<()> {
    let server = TestServer::start(database_url).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let agent = &enrolled.agent_id;
    let mut session = open_session(&server, &enrolled.credential)
        .await?
        .expect("a fresh credential opens a session");
    report_acked(&mut session).await?;

    let (code, body) = server
        .call(
            Method::DELETE,
            &format!("/tenants/{tenant}/agents/{agent}"),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    assert!(body["revoked_at"].is_string(), "{body}");
    assert_eq!(body["connected"], false, "{body}");

    // The open stream ends at once with a status that says why.
    let end = tokio::time::timeout(Duration::from_secs(5), session.inbound.message())
        .await
        .expect("the stream is closed without waiting for the agent")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    assert!(end.message().contains("revoked"), "{end:?}");

    // Whatever it still sends is not stored, and it can never come back with that credential.
    let _ = session.tx.send(report()).await;
    assert_eq!(report_count(&server, &tenant, agent).await?, 1);
    let refused = open_session(&server, &enrolled.credential)
        .await?
        .err()
        .expect("a revoked credential opens no session");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{refused:?}");

    // Revoking again keeps the first time; a revoked agent's credential cannot be rotated.
    let (code, again) = server
        .call(
            Method::DELETE,
            &format!("/tenants/{tenant}/agents/{agent}"),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["revoked_at"], body["revoked_at"]);
    let (code, conflict) = server
        .call(
            Method::POST,
            &format!("/tenants/{tenant}/agents/{agent}/credential-rotation"),
            None,
        )
        .await?;
    assert_eq!(code, 409, "{conflict}");

    let audit = server.get("/audit-events").await?;
    assert!(
        audit.to_string().contains("agent.revoked"),
        "revocation is audited: {audit:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_off_mid_stream_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    a_revoked_agent_is_cut_off_mid_stream(&sqlite_url(&dir)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_cut_off_mid_stream_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres::fresh_database().await else {
        return Ok(());
    };
    a_revoked_agent_is_cut_off_mid_stream(&url).await
}

/// An agent configuration whose probes fail fast on loopback: no domain controller, every
/// Microsoft endpoint a refusing port.
pub fn offline_agent_config() -> String {
    let port = refusing_port();
    format!(
        r#"
[network]
dns_servers = ["127.0.0.1:{port}"]
passwordreset_endpoints = ["127.0.0.1:{port}"]
servicebus_endpoints = ["127.0.0.1:{port}"]
connect_endpoints = ["127.0.0.1:{port}"]
crl_endpoints = ["127.0.0.1:{port}"]
dc_ports = []
dc_dynamic_ports = []
timeout_seconds = 2
"#
    )
}

fn stored_credential(home: &AgentHome) -> anyhow::Result<String> {
    let path = home
        .config()
        .parent()
        .expect("the config lives in the home folder")
        .join("state")
        .join("agent.json");
    let stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(stored["credential"].as_str().unwrap_or_default().to_owned())
}

async fn agent_connected(server: &TestServer, tenant: &str) -> anyhow::Result<bool> {
    let agents = server.get(&format!("/tenants/{tenant}/agents")).await?;
    Ok(agents[0]["connected"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_agent_keeps_reporting_and_its_old_credential_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home = AgentHome::new(&offline_agent_config())?;
    home.enroll(&server.grpc_url(), &token)?;
    let old = stored_credential(&home)?;
    let agent = old
        .split_once('.')
        .map(|(id, _)| id.to_owned())
        .expect("credentials are <agent id>.<secret>");

    let running = home.start()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(agent_connected(&server, &tenant).await?
        && report_count(&server, &tenant, &agent).await? > 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent connects and reports"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (code, body) = server
        .call(
            Method::POST,
            &format!("/tenants/{tenant}/agents/{agent}/credential-rotation"),
            None,
        )
        .await?;
    assert_eq!(code, 202, "{body}");
    eventually(
        Duration::from_secs(20),
        "the agent stores its new credential",
        || stored_credential(&home).is_ok_and(|c| !c.is_empty() && c != old),
    )
    .await;
    let new = stored_credential(&home)?;
    assert!(
        new.starts_with(&format!("{agent}.")),
        "same agent, new secret"
    );

    // Once the agent has confirmed, the old credential is refused. (Presenting it before the
    // confirmation would drop the rotation, as from an agent that never stored the new one.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !server
        .get("/audit-events")
        .await?
        .to_string()
        .contains("agent.credential_rotated")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent confirms its new credential"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = open_session(&server, &old)
        .await?
        .err()
        .expect("the old credential is retired after the agent's confirmation");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The agent, restarted, comes back with its stored credential and keeps reporting.
    drop(running);
    let _running = home.start()?;
    let before = report_count(&server, &tenant, &agent).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while report_count(&server, &tenant, &agent).await? <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted agent reports with its new credential"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = server.get("/audit-events").await?.to_string();
    for action in [
        "agent.credential_rotation_started",
        "agent.credential_rotated",
    ] {
        assert!(audit.contains(action), "{action} is audited: {audit}");
    }
    assert!(
        !audit.contains(&new),
        "the credential is never in the audit log"
    );
    Ok(())
}

/// Asks for a rotation of `agent`'s credential; the status and the problem document.
async fn rotate(
    server: &TestServer,
    tenant: &str,
    agent: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (code, body) = server
        .call(
            Method::POST,
            &format!("/tenants/{tenant}/agents/{agent}/credential-rotation"),
            None,
        )
        .await?;
    Ok((code, body))
}

/// Asks for a rotation until the server has noticed that a dropped stream is gone.
async fn rotate_when_alone(server: &TestServer, tenant: &str, agent: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = rotate(server, tenant, agent).await?;
        if code == 202 {
            return Ok(());
        }
        assert!(
            code == 409
                && body.to_string().contains("live connections")
                && std::time::Instant::now() < deadline,
            "{code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the next message and expects the new credential.
async fn rotated_credential(session: &mut RawSession) -> anyhow::Result<String> {
    let message = session.inbound.message().await?.and_then(|m| m.kind);
    let Some(ServerKind::RotateCredential(rotate)) = message else {
        panic!("the new credential comes over the stream: {message:?}");
    };
    Ok(rotate.credential)
}

fn heartbeat() -> AgentMessage {
    AgentMessage {
        kind: Some(AgentKind::Heartbeat(v1::Heartbeat { sent_at: None })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_rotation_confirmation_never_locks_the_agent_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let agent = &enrolled.agent_id;
    let mut session = open_session(&server, &enrolled.credential)
        .await?
        .expect("session");
    let (code, body) = rotate(&server, &tenant, agent).await?;
    assert_eq!(code, 202, "{body}");
    let first = rotated_credential(&mut session).await?;

    // The agent stored the first credential but its confirmation was lost: a second rotation
    // must not replace it, or the agent could never log in again.
    let (code, body) = rotate(&server, &tenant, agent).await?;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already waiting for the agent's confirmation")),
        "{body}"
    );
    drop(session);

    // Presenting the new credential is confirmation enough; the old one is refused after it.
    let mut new = open_session(&server, &first)
        .await?
        .expect("the stored credential works after two rotation attempts");
    report_acked(&mut new).await?;
    let refused = open_session(&server, &enrolled.credential)
        .await?
        .err()
        .expect("the old credential is retired");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // A confirmation that names another agent is a broken message.
    new.tx
        .send(AgentMessage {
            kind: Some(AgentKind::CredentialStored(v1::CredentialStored {
                credential: format!("{}.x", uuid::Uuid::now_v7()),
            })),
        })
        .await?;
    let end = new
        .inbound
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::InvalidArgument, "{end:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_stored_its_new_credential_drops_the_rotation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let agent = &enrolled.agent_id;
    let mut session = open_session(&server, &enrolled.credential)
        .await?
        .expect("session");
    let (code, body) = rotate(&server, &tenant, agent).await?;
    assert_eq!(code, 202, "{body}");
    let lost = rotated_credential(&mut session).await?;
    drop(session);

    // Back with its current credential: it never stored the new one, which is dropped so that
    // a new rotation can start.
    let mut session = open_session(&server, &enrolled.credential)
        .await?
        .expect("the current credential still works");
    report_acked(&mut session).await?;
    rotate_when_alone(&server, &tenant, agent).await?;
    let second = rotated_credential(&mut session).await?;
    let refused = open_session(&server, &lost)
        .await?
        .err()
        .expect("the dropped credential opens no session");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // Confirmed on this stream, which goes on with the new credential.
    session
        .tx
        .send(AgentMessage {
            kind: Some(AgentKind::CredentialStored(v1::CredentialStored {
                credential: second.clone(),
            })),
        })
        .await?;
    session.tx.send(heartbeat()).await?;
    report_acked(&mut session).await?;
    let refused = open_session(&server, &enrolled.credential)
        .await?
        .err()
        .expect("the old credential is retired");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    open_session(&server, &second)
        .await?
        .expect("the new credential works");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_credential_gets_no_rotation_and_retired_streams_are_closed() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let agent = &enrolled.agent_id;
    let mut real = open_session(&server, &enrolled.credential)
        .await?
        .expect("session");
    // A thief with a copy of the credential connects after the real agent.
    let mut thief = open_session(&server, &enrolled.credential)
        .await?
        .expect("a copied credential still logs in");
    let (code, body) = rotate(&server, &tenant, agent).await?;
    assert_eq!(code, 409, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("2 live connections") && detail.contains("revoke"),
        "{body}"
    );
    report_acked(&mut thief).await?;

    // Once only one stream is left, the rotation goes to it, and a stream that logs in with the
    // new credential ends every stream that logged in with the old one.
    drop(thief);
    rotate_when_alone(&server, &tenant, agent).await?;
    let new = rotated_credential(&mut real).await?;
    let mut replacement = open_session(&server, &new)
        .await?
        .expect("the new credential works");
    let end = tokio::time::timeout(Duration::from_secs(5), real.inbound.message())
        .await
        .expect("the stream on the retired credential is closed at once")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(end.message().contains("retired"), "{end:?}");
    report_acked(&mut replacement).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_completed_on_another_replica_ends_the_old_stream_at_the_next_heartbeat()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(&dir);
    let server = TestServer::start(&url).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let mut stale = open_session(&server, &enrolled.credential)
        .await?
        .expect("session");
    report_acked(&mut stale).await?;
    // Another replica rotates and completes through the shared database; this process's
    // registry never hears of it.
    let store = wbhealth_server::storage::open(&url).await?;
    let next = wbhealth_server::domain::secrets::hash("wbh_agent_next");
    let agent_id = enrolled.agent_id.parse()?;
    store
        .begin_credential_rotation(
            &wbhealth_server::domain::TenantScope::All,
            tenant.parse()?,
            agent_id,
            &next,
        )
        .await?;
    assert!(
        store
            .complete_credential_rotation(agent_id, &next, time::OffsetDateTime::now_utc())
            .await?
    );
    stale.tx.send(heartbeat()).await?;
    let end = tokio::time::timeout(Duration::from_secs(5), stale.inbound.message())
        .await
        .expect("the heartbeat is answered by closing the stream")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    assert!(end.message().contains("retired"), "{end:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_act_for_another_agent_or_tenant() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let contoso = server.create_tenant("Contoso").await?;
    let fabrikam = server.create_tenant("Fabrikam").await?;
    let a = enroll(&server, &contoso).await?;
    let b = enroll(&server, &fabrikam).await?;
    let secret = |credential: &str| {
        credential
            .split_once('.')
            .map(|(_, s)| s.to_owned())
            .expect("credentials are <agent id>.<secret>")
    };

    // Another agent's id with one's own secret, and one's own id with another's secret.
    for credential in [
        format!("{}.{}", b.agent_id, secret(&a.credential)),
        format!("{}.{}", a.agent_id, secret(&b.credential)),
    ] {
        let refused = open_session(&server, &credential)
            .await?
            .err()
            .expect("a mixed credential opens no session");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(!refused.message().contains(&secret(&a.credential)));
    }

    // What agent A reports is filed under A in Contoso, never in Fabrikam.
    let mut session = open_session(&server, &a.credential)
        .await?
        .expect("session");
    report_acked(&mut session).await?;
    assert_eq!(report_count(&server, &contoso, &a.agent_id).await?, 1);
    assert_eq!(report_count(&server, &fabrikam, &b.agent_id).await?, 0);
    let (code, body) = server
        .call(
            Method::GET,
            &format!("/tenants/{fabrikam}/agents/{}/reports", a.agent_id),
            None,
        )
        .await?;
    assert_eq!(code, 404, "{body}");
    let status = server.get(&format!("/tenants/{fabrikam}/status")).await?;
    assert!(
        !status.to_string().contains("policy.min_password_age"),
        "{status:#}"
    );

    // Agents are managed through their own tenant only.
    for (method, path) in [
        (
            Method::DELETE,
            format!("/tenants/{fabrikam}/agents/{}", a.agent_id),
        ),
        (
            Method::POST,
            format!(
                "/tenants/{fabrikam}/agents/{}/credential-rotation",
                a.agent_id
            ),
        ),
    ] {
        let (code, body) = server.call(method, &path, None).await?;
        assert_eq!(code, 404, "{path}: {body}");
    }
    report_acked(&mut session).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_by_another_replica_ends_the_stream_at_the_next_heartbeat()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(&dir);
    let server = TestServer::start(&url).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let enrolled = enroll(&server, &tenant).await?;
    let mut session = open_session(&server, &enrolled.credential)
        .await?
        .expect("session");
    // Another replica revokes through the shared database; this process's registry never
    // hears of it.
    let store = wbhealth_server::storage::open(&url).await?;
    store
        .revoke_agent(
            &wbhealth_server::domain::TenantScope::All,
            tenant.parse()?,
            enrolled.agent_id.parse()?,
            time::OffsetDateTime::now_utc(),
        )
        .await?;
    session
        .tx
        .send(AgentMessage {
            kind: Some(AgentKind::Heartbeat(v1::Heartbeat { sent_at: None })),
        })
        .await?;
    let end = tokio::time::timeout(Duration::from_secs(5), session.inbound.message())
        .await
        .expect("the heartbeat is answered by closing the stream")
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::PermissionDenied, "{end:?}");
    Ok(())
}

/// An agent whose stored credential the server no longer knows (a rotation it saved but the
/// server dropped, its confirmation lost) falls back to the credential it kept from before
/// the rotation, reports, and then forgets the one the server refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_falls_back_to_its_previous_credential_when_a_rotation_was_dropped()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home = AgentHome::new(&offline_agent_config())?;
    home.enroll(&server.grpc_url(), &token)?;
    let real = stored_credential(&home)?;
    let agent = real
        .split_once('.')
        .map(|(id, _)| id.to_owned())
        .expect("credentials are <agent id>.<secret>");

    // As the agent leaves it after saving a rotation the server then dropped.
    let path = home
        .config()
        .parent()
        .expect("the config lives in the home folder")
        .join("state")
        .join("agent.json");
    let mut stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    stored["credential"] = serde_json::json!(format!("{agent}.never-confirmed"));
    stored["previous_credential"] = serde_json::json!(real);
    std::fs::write(&path, serde_json::to_string_pretty(&stored)?)?;

    let _running = home.start()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while report_count(&server, &tenant, &agent).await? == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent reports with its previous credential"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(
        Duration::from_secs(20),
        "the agent keeps the accepted credential and forgets the other",
        || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|s| {
                    s["credential"] == real.as_str() && s.get("previous_credential").is_none()
                })
        },
    )
    .await;
    Ok(())
}

//! Bad input gets a clear answer and changes nothing: REST problem documents, gRPC statuses,
//! and one line naming the setting for a bad configuration.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use tonic::Code;
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_client::AgentServiceClient;
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{self, AgentMessage, EnrollRequest, HostFacts};

use crate::support::agent::{AgentHome, server_binary};
use crate::support::server::{TestServer, sqlite_url};

fn assert_problem(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body:#}");
    assert_eq!(body["status"], expected_status, "{body:#}");
    assert_eq!(body["code"], code, "{body:#}");
    assert_eq!(body["type"], format!("urn:wbhealth:problem:{code}"));
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body:#}"
    );
}

#[tokio::test]
async fn rest_answers_bad_requests_with_problem_documents() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;

    // Authentication.
    let (s, b) = server.call_as(None, Method::GET, "/tenants", None).await?;
    assert_problem(s, &b, 401, "unauthenticated");
    let (s, b) = server
        .call_as(
            Some("wbh_key_not-a-real-key"),
            Method::GET,
            "/tenants",
            None,
        )
        .await?;
    assert_problem(s, &b, 401, "unauthenticated");
    let (s, b) = server
        .call_as(
            None,
            Method::GET,
            &format!("/tenants/{tenant}/status"),
            None,
        )
        .await?;
    assert_problem(s, &b, 401, "unauthenticated");

    // Malformed and invalid bodies.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/tenants", server.base_url()))
        .bearer_auth(server.key())
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await?;
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let s = response.status().as_u16();
    assert_problem(s, &response.json().await?, 400, "invalid_request");
    for body in [
        json!({ "name": "x" }),
        json!({ "name": "x", "entra_tenant_id": "not-a-uuid" }),
        json!({ "name": "  ", "entra_tenant_id": uuid::Uuid::new_v4() }),
        json!({ "name": "x", "entra_tenant_id": uuid::Uuid::new_v4(), "colour": "red" }),
    ] {
        let (s, b) = server
            .call(Method::POST, "/tenants", Some(body.clone()))
            .await?;
        assert_problem(s, &b, 400, "invalid_request");
    }
    let (s, b) = server
        .call(
            Method::POST,
            "/tenants",
            Some(json!({ "name": "Contoso", "entra_tenant_id": uuid::Uuid::new_v4() })),
        )
        .await?;
    assert_problem(s, &b, 409, "conflict");
    for body in [
        json!({ "max_uses": 0 }),
        json!({ "expires_in_hours": 100000 }),
    ] {
        let (s, b) = server
            .call(
                Method::POST,
                &format!("/tenants/{tenant}/enrollment-tokens"),
                Some(body),
            )
            .await?;
        assert_problem(s, &b, 400, "invalid_request");
    }

    // Unknown and malformed ids, cursors and routes.
    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/tenants/{unknown}"),
        format!("/tenants/{unknown}/status"),
        format!("/tenants/{unknown}/agents"),
        format!("/tenants/{tenant}/agents/{unknown}/reports"),
    ] {
        let (s, b) = server.call(Method::GET, &path, None).await?;
        assert_problem(s, &b, 404, "not_found");
    }
    let (s, b) = server
        .call(
            Method::DELETE,
            &format!("/tenants/{tenant}/enrollment-tokens/{unknown}"),
            None,
        )
        .await?;
    assert_problem(s, &b, 404, "not_found");
    let (s, b) = server
        .call(
            Method::POST,
            &format!("/tenants/{unknown}/enrollment-tokens"),
            Some(json!({})),
        )
        .await?;
    assert_problem(s, &b, 404, "not_found");
    let (s, b) = server
        .call(Method::GET, "/tenants/not-a-uuid", None)
        .await?;
    assert_problem(s, &b, 400, "invalid_request");
    let (s, b) = server
        .call(Method::GET, "/tenants?cursor=!!!", None)
        .await?;
    assert_problem(s, &b, 400, "invalid_request");
    let (s, b) = server.call(Method::GET, "/tenants?limit=0", None).await?;
    assert_problem(s, &b, 400, "invalid_request");
    let (s, b) = server.call(Method::GET, "/no-such-thing", None).await?;
    assert_problem(s, &b, 404, "not_found");
    let (s, _) = server
        .call(Method::PUT, "/tenants", Some(json!({})))
        .await?;
    assert_eq!(s, 405);

    // A run-now for an agent that is not connected is a conflict, not a crash.
    let (s, b) = server
        .call(
            Method::POST,
            &format!("/tenants/{tenant}/agents/{unknown}/run"),
            None,
        )
        .await?;
    assert_problem(s, &b, 404, "not_found");

    // Nothing above changed anything.
    let tenants = server.get("/tenants").await?;
    assert_eq!(tenants["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        server
            .get(&format!("/tenants/{tenant}/enrollment-tokens"))
            .await?
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // The public surface still works.
    let openapi = reqwest::get(format!("{}/api/v1/openapi.json", server.base_url())).await?;
    assert_eq!(openapi.status(), 200);
    let docs = reqwest::get(format!("{}/docs/", server.base_url())).await?;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await?.contains("swagger"),
        "Swagger UI is served from vendored assets"
    );
    Ok(())
}

fn host() -> Option<HostFacts> {
    Some(HostFacts {
        hostname: "AADCONNECT01".into(),
        os: "test".into(),
        agent_version: "0".into(),
        domain_controller: String::new(),
    })
}

async fn client(
    server: &TestServer,
) -> anyhow::Result<AgentServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())?
        .connect()
        .await?;
    Ok(AgentServiceClient::new(channel))
}

async fn enroll(server: &TestServer, token: &str) -> Result<v1::EnrollResponse, tonic::Status> {
    let mut client = client(server)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    client
        .enroll(EnrollRequest {
            token: token.into(),
            host: host(),
            client_public_key: Vec::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_refuses_bad_tokens_and_credentials() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(&dir);
    let server = TestServer::start(&url).await?;
    let tenant = server.create_tenant("Contoso").await?;

    let status = enroll(&server, "").await.expect_err("empty token");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = enroll(&server, "wbh_enroll_made-up")
        .await
        .expect_err("unknown token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("not valid"), "{status:?}");

    let (_, once) = server.enrollment_token(&tenant, 1).await?;
    let missing_host = client(&server)
        .await?
        .enroll(EnrollRequest {
            token: once.clone(),
            host: None,
            client_public_key: Vec::new(),
        })
        .await
        .expect_err("no host facts");
    assert_eq!(missing_host.code(), Code::InvalidArgument);
    let enrolled = enroll(&server, &once).await?;
    let status = enroll(&server, &once).await.expect_err("used up");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("no uses left"), "{status:?}");

    let (token_id, revoked) = server.enrollment_token(&tenant, 5).await?;
    let (s, body) = server
        .call(
            Method::DELETE,
            &format!("/tenants/{tenant}/enrollment-tokens/{token_id}"),
            None,
        )
        .await?;
    assert_eq!(s, 200, "{body}");
    assert!(body["revoked_at"].is_string());
    let status = enroll(&server, &revoked).await.expect_err("revoked");
    assert!(status.message().contains("revoked"), "{status:?}");

    // An expired token: written through the store, as the REST API only makes future expiries.
    let store = wbhealth_server::storage::open(&url).await?;
    let expired = "wbh_enroll_expired-for-the-test";
    store
        .create_enrollment_token(
            &wbhealth_server::domain::TenantScope::All,
            wbhealth_server::domain::NewEnrollmentToken {
                tenant_id: tenant.parse()?,
                token_hash: wbhealth_server::domain::secrets::hash(expired),
                description: "expired".into(),
                expires_at: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
                max_uses: 1,
            },
        )
        .await?;
    let status = enroll(&server, expired).await.expect_err("expired");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");

    // Sessions need a credential this server issued.
    for credential in [
        None,
        Some("garbage".to_owned()),
        Some(format!("{}.wrong-secret", enrolled.agent_id)),
        Some(format!("{}.x", uuid::Uuid::now_v7())),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(1);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(c) = credential {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {c}").parse()?);
        }
        let status = client(&server)
            .await?
            .session(request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        drop(tx);
    }

    // A valid session: a malformed report is rejected (and dropped by the agent), a good one
    // sent twice is acknowledged twice and stored once, an empty message ends the stream.
    let (tx, rx) = tokio::sync::mpsc::channel::<AgentMessage>(8);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", enrolled.credential).parse()?,
    );
    let mut inbound = client(&server).await?.session(request).await?.into_inner();
    let first = inbound.message().await?.and_then(|m| m.kind);
    assert!(
        matches!(first, Some(ServerKind::Config(ref c)) if c.interval_seconds == 300),
        "{first:?}"
    );

    let now = Some(prost_types::Timestamp {
        seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
        nanos: 0,
    });
    let bad = v1::Report {
        report_id: "not-a-uuid".into(),
        started_at: now,
        finished_at: now,
        results: vec![],
    };
    tx.send(AgentMessage {
        kind: Some(AgentKind::Report(bad)),
    })
    .await?;
    let reply = inbound.message().await?.and_then(|m| m.kind);
    assert!(
        matches!(reply, Some(ServerKind::Rejected(ref r)) if r.report_id == "not-a-uuid"),
        "{reply:?}"
    );

    let good_id = uuid::Uuid::now_v7().to_string();
    let good = v1::Report {
        report_id: good_id.clone(),
        started_at: now,
        finished_at: now,
        results: vec![v1::CheckResult {
            check_id: "policy.min_password_age".into(),
            status: v1::Status::Pass.into(),
            summary: "minimum password age is 0".into(),
            evidence_json: "{\"min_pwd_age\":0}".into(),
            remediation: String::new(),
            duration_ms: 3,
            observed_at: now,
        }],
    };
    for _ in 0..2 {
        tx.send(AgentMessage {
            kind: Some(AgentKind::Report(good.clone())),
        })
        .await?;
        let reply = inbound.message().await?.and_then(|m| m.kind);
        assert!(
            matches!(reply, Some(ServerKind::Ack(ref a)) if a.report_id == good_id),
            "{reply:?}"
        );
    }
    let reports = server
        .get(&format!(
            "/tenants/{tenant}/agents/{}/reports",
            enrolled.agent_id
        ))
        .await?;
    assert_eq!(
        reports["items"].as_array().map(Vec::len),
        Some(1),
        "stored once: {reports:#}"
    );

    tx.send(AgentMessage { kind: None }).await?;
    let end = inbound
        .message()
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(end.code(), Code::InvalidArgument);
    Ok(())
}

#[test]
fn a_bad_server_setting_exits_64_naming_it() {
    let output = Command::new(server_binary())
        .env("WBH_DATABASE_URL", "mysql://nope")
        .env("WBH_HTTP_ADDR", "127.0.0.1:0")
        .env("WBH_GRPC_ADDR", "127.0.0.1:0")
        .output()
        .expect("run the server");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("WBH_DATABASE_URL"), "{stderr}");

    let output = Command::new(server_binary())
        .env("WBH_AGENT_INTERVAL_SECONDS", "1")
        .output()
        .expect("run the server");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("WBH_AGENT_INTERVAL_SECONDS"));
}

#[test]
fn a_bad_agent_setting_exits_64_naming_it() -> anyhow::Result<()> {
    let home = AgentHome::new(
        "[network]\npasswordreset_endpoints = [\"https://passwordreset.microsoftonline.com\"]\n",
    )?;
    let output = home.run(&["diagnose"])?;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("network.passwordreset_endpoints"),
        "{stderr}"
    );

    let home = AgentHome::new("[ldap]\nhost = \"dc1.contoso.com\"\n")?;
    let output = home.run(&["diagnose"])?;
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ldap.bind_dn"));

    let home = AgentHome::new("[ldapp]\nhost = 1\n")?;
    let output = home.run(&["diagnose"])?;
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ldapp"));
    Ok(())
}

/// Every operation in the OpenAPI document, called without a key, is refused (signing in, the
/// one public operation, refuses the empty body instead); a route added
/// later is covered without anyone remembering to add it here.
#[tokio::test]
async fn every_documented_operation_requires_a_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base_url()))
        .await?
        .json()
        .await?;
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    assert!(paths.len() >= 8, "the document lists the API: {paths:?}");
    let mut called = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{tenant_id}", &tenant)
            .replace("{agent_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{token_id}", &uuid::Uuid::now_v7().to_string());
        let relative = concrete
            .strip_prefix("/api/v1")
            .expect("every path is under /api/v1");
        for method in item
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let body = (method == Method::POST).then(|| json!({}));
            let public = item[method.as_str().to_lowercase()]["security"] == json!([{}]);
            let (status, problem) = server.call_as(None, method.clone(), relative, body).await?;
            if public {
                // Signing in needs no key; an empty body is refused as malformed.
                assert_problem(status, &problem, 400, "invalid_request");
            } else {
                assert_problem(status, &problem, 401, "unauthenticated");
            }
            called += 1;
        }
    }
    assert!(called >= 11, "walked {called} operations");
    // Nothing was created by the refused calls.
    assert_eq!(
        server.get("/tenants").await?["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    Ok(())
}

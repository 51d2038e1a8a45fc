//! TLS on both listeners with certificates from `wbhealth-server dev-certs`: REST and gRPC
//! over TLS, a real agent enrolling and reporting over `https://`, an agent that does not trust
//! the CA refused with a clear error, and the rule against plain HTTP off loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::agent_identity::{offline_agent_config, open_session};
use crate::support::agent::{AgentHome, server_binary};
use crate::support::server::{TestServer, sqlite_url};

/// Runs the real `dev-certs` command into `out` and returns its standard output.
fn dev_certs(out: &Path) -> anyhow::Result<String> {
    let output = Command::new(server_binary())
        .args(["dev-certs", "--out"])
        .arg(out)
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "dev-certs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs() -> anyhow::Result<(Certs, String)> {
    let dir = tempfile::tempdir()?;
    let printed = dev_certs(dir.path())?;
    Ok((
        Certs {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server-key.pem"),
            _dir: dir,
        },
        printed,
    ))
}

fn agent_home(ca: Option<&Path>) -> anyhow::Result<AgentHome> {
    let server = ca
        .map(|ca| format!("[server]\nca_file = {:?}\n", ca.display().to_string()))
        .unwrap_or_default();
    AgentHome::new(&format!("{server}{}", offline_agent_config()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_grpc_and_an_agent_work_over_tls_with_dev_certs() -> anyhow::Result<()> {
    let (certs, printed) = make_certs()?;
    assert!(
        printed.contains("--tls-cert") && printed.contains("ca_file"),
        "dev-certs says how to use what it wrote: {printed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&certs.key)?.permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is private");
    }
    let db = tempfile::tempdir()?;
    let server =
        TestServer::start_tls(&sqlite_url(&db), &certs.cert, &certs.key, &certs.ca).await?;
    assert!(server.base_url().starts_with("https://"));

    // REST over TLS; plain HTTP on the same port gets no answer.
    let tenant = server.create_tenant("Contoso").await?;
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/healthz",
            server.base_url().replace("https://", "http://")
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| !r.status().is_success()),
        "plain HTTP is not served: {plain:?}"
    );

    // A real agent trusting the dev CA enrolls and reports over https://.
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home = agent_home(Some(&certs.ca))?;
    home.enroll(&server.grpc_url(), &token)?;
    let _agent = home.start()?;
    let agents = server.get(&format!("/tenants/{tenant}/agents")).await?;
    let agent = agents[0]["id"].as_str().unwrap_or_default().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reports = server
            .get(&format!("/tenants/{tenant}/agents/{agent}/reports"))
            .await?;
        if reports["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent reports over TLS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A raw gRPC session over TLS, and a plain-text one refused.
    let enrolled = crate::agent_identity::enroll(&server, &tenant).await?;
    open_session(&server, &enrolled.credential)
        .await?
        .expect("a session over TLS");
    let plain =
        tonic::transport::Endpoint::from_shared(server.grpc_url().replace("https://", "http://"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await;
    if let Ok(channel) = plain {
        let refused = wbhealth_proto::v1::agent_service_client::AgentServiceClient::new(channel)
            .enroll(wbhealth_proto::v1::EnrollRequest::default())
            .await
            .expect_err("plain-text gRPC is not served");
        assert_ne!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_trust_the_ca_is_refused() -> anyhow::Result<()> {
    let (certs, _) = make_certs()?;
    let (other, _) = make_certs()?;
    let db = tempfile::tempdir()?;
    let server =
        TestServer::start_tls(&sqlite_url(&db), &certs.cert, &certs.key, &certs.ca).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    // Without a CA file (the system's roots) and with another CA's file.
    for ca in [None, Some(other.ca.as_path())] {
        let home = agent_home(ca)?;
        let err = home
            .enroll(&server.grpc_url(), &token)
            .expect_err("an untrusted server certificate");
        let text = err.to_string();
        assert!(
            text.contains("not trusted") && text.contains("ca_file"),
            "the agent says the certificate is not trusted and what to set: {text}"
        );
    }
    // The refused attempts spent nothing: a trusting agent enrolls with the same token.
    agent_home(Some(&certs.ca))?.enroll(&server.grpc_url(), &token)?;
    Ok(())
}

#[test]
fn plain_http_off_loopback_is_refused_unless_allowed() -> anyhow::Result<()> {
    use wbhealth_server::config::Config;
    let open = |allow: bool| Config {
        http_addr: "0.0.0.0:0".parse().expect("address"),
        allow_plain_http: allow,
        ..Config::for_tests("sqlite://x.db")
    };
    let err = open(false).validate().expect_err("plain HTTP on 0.0.0.0");
    let text = err.to_string();
    assert!(
        text.contains("--http-addr")
            && text.contains("--allow-plain-http")
            && text.contains("--tls-cert"),
        "{text}"
    );
    open(true).validate().expect("explicitly allowed");
    let (certs, _) = make_certs()?;
    Config {
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(certs.key.clone()),
        ..open(false)
    }
    .validate()
    .expect("with TLS");
    let err = Config {
        tls_cert: Some(certs.ca.clone()),
        tls_key: Some(certs.ca.clone()),
        ..open(false)
    }
    .validate()
    .expect_err("a certificate is not a key");
    assert!(err.to_string().contains("--tls-key"), "{err}");

    // The binary says it in one line and exits 64, before binding anything.
    let dir = tempfile::tempdir()?;
    let output = Command::new(server_binary())
        .current_dir(dir.path())
        .env_remove("WBH_ALLOW_PLAIN_HTTP")
        .args(["--grpc-addr", "0.0.0.0:0", "--http-addr", "127.0.0.1:0"])
        .output()?;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--grpc-addr") && stderr.contains("--allow-plain-http"),
        "{stderr}"
    );
    Ok(())
}

/// A TLS server with mutual TLS for agents, its agent CA key in `dir`.
async fn mtls_server(certs: &Certs, dir: &tempfile::TempDir) -> anyhow::Result<TestServer> {
    let ca_key = dir.path().join("agent-ca.key");
    TestServer::start_tls_with(
        &sqlite_url(dir),
        &certs.cert,
        &certs.key,
        &certs.ca,
        |config| {
            config.agent_mtls = true;
            config.agent_ca_key_file = ca_key;
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_reports_over_mutual_tls() -> anyhow::Result<()> {
    let (certs, _) = make_certs()?;
    let dir = tempfile::tempdir()?;
    let server = mtls_server(&certs, &dir).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (_, token) = server.enrollment_token(&tenant, 1).await?;
    let home = agent_home(Some(&certs.ca))?;
    home.enroll(&server.grpc_url(), &token)?;
    let state = std::fs::read_to_string(
        home.config()
            .parent()
            .expect("home folder")
            .join("state")
            .join("agent.json"),
    )?;
    assert!(
        state.contains("BEGIN CERTIFICATE") && state.contains("PRIVATE KEY"),
        "the agent keeps its client certificate and the key it made"
    );
    let _agent = home.start()?;
    let agents = server.get(&format!("/tenants/{tenant}/agents")).await?;
    let agent = agents[0]["id"].as_str().unwrap_or_default().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reports = server
            .get(&format!("/tenants/{tenant}/agents/{agent}/reports"))
            .await?;
        if reports["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the agent reports over mutual TLS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_need_the_agents_own_client_certificate() -> anyhow::Result<()> {
    use crate::agent_identity::{enroll_with_key, open_session_as, report_acked};
    let (certs, _) = make_certs()?;
    let dir = tempfile::tempdir()?;
    let server = mtls_server(&certs, &dir).await?;
    let tenant = server.create_tenant("Contoso").await?;

    // Enrollment needs a public key, and checks it before spending the token.
    let refused = enroll_with_key(&server, &tenant, Vec::new())
        .await
        .expect_err("no public key");
    assert!(refused.to_string().contains("mutual TLS"), "{refused:#}");

    let key_a = rcgen::KeyPair::generate()?;
    let key_b = rcgen::KeyPair::generate()?;
    let a = enroll_with_key(&server, &tenant, key_a.public_key_raw().to_vec()).await?;
    let b = enroll_with_key(&server, &tenant, key_b.public_key_raw().to_vec()).await?;
    assert!(a.client_certificate_pem.contains("BEGIN CERTIFICATE"));
    let identity = |cert: &str, key: &rcgen::KeyPair| {
        Some(tonic::transport::Identity::from_pem(
            cert,
            key.serialize_pem(),
        ))
    };

    let missing = open_session_as(&server, &a.credential, None)
        .await?
        .err()
        .expect("no client certificate");
    assert_eq!(missing.code(), tonic::Code::Unauthenticated, "{missing:?}");
    assert!(
        missing.message().contains("client certificate"),
        "{missing:?}"
    );

    let borrowed = open_session_as(
        &server,
        &a.credential,
        identity(&b.client_certificate_pem, &key_b),
    )
    .await?
    .err()
    .expect("another agent's certificate");
    assert_eq!(
        borrowed.code(),
        tonic::Code::Unauthenticated,
        "{borrowed:?}"
    );
    assert!(
        borrowed.message().contains("not issued to this agent"),
        "{borrowed:?}"
    );

    let mut own = open_session_as(
        &server,
        &a.credential,
        identity(&a.client_certificate_pem, &key_a),
    )
    .await?
    .expect("its own certificate and credential");
    report_acked(&mut own).await?;
    drop(own);

    // Revocation stops the certificate too.
    let (code, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/tenants/{tenant}/agents/{}", a.agent_id),
            None,
        )
        .await?;
    assert_eq!(code, 200, "{body}");
    let revoked = open_session_as(
        &server,
        &a.credential,
        identity(&a.client_certificate_pem, &key_a),
    )
    .await?
    .err()
    .expect("revoked");
    assert_eq!(revoked.code(), tonic::Code::PermissionDenied, "{revoked:?}");
    Ok(())
}

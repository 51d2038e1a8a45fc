//! Cloud checks end to end: a real server calls a fake of Microsoft's login service and
//! Graph over TLS (`support::graph`), on SQLite and PostgreSQL.
//!
//! Covered: a healthy tenant, a tenant broken for every check, per-user readiness, the
//! self-service password activity of the audit log, administrator resets that never reached
//! Active Directory (TEN-09), a quarantined Cloud Sync job (CS-06), a throttled and paged
//! tenant that still completes, consent withdrawn and a permission missing (errors naming the
//! fix, other tenants untouched), a list cut short at the page cap (an error, never a silent
//! pass), a certificate credential, the interval scheduler, and a client secret that never
//! appears in a response or a log line.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use http::Method;
use serde_json::{Value, json};

use crate::support::agent::server_binary;
use crate::support::graph::{AppCredential, Directory, FakeGraph, admin_reset};
use crate::support::postgres::fresh_database;
use crate::support::server::{TestServer, sqlite_url};
use crate::support::tls::TestCa;

const CLIENT_ID: &str = "3f6c1d2e-8b7a-4c5d-9e0f-1a2b3c4d5e6f";

struct Lab {
    _ca: TestCa,
    graph: FakeGraph,
    server: TestServer,
}

async fn lab(database_url: &str) -> anyhow::Result<Lab> {
    lab_with(database_url, 10, 60).await
}

async fn lab_with(
    database_url: &str,
    request_timeout: u32,
    run_timeout: u32,
) -> anyhow::Result<Lab> {
    let ca = TestCa::new();
    let graph = FakeGraph::start(&ca)?;
    let url = graph.url();
    let ca_file = ca.pem_path().to_path_buf();
    let server = TestServer::start_with(database_url, |c| {
        c.graph_authority_url = Some(url.clone());
        c.graph_base_url = Some(url);
        c.graph_ca_file = Some(ca_file);
        c.graph_request_timeout_seconds = request_timeout;
        c.cloud_check_timeout_seconds = run_timeout;
    })
    .await?;
    Ok(Lab {
        _ca: ca,
        graph,
        server,
    })
}

/// A tenant whose Entra directory the fake serves as `directory`, with a secret credential.
async fn tenant_with(
    lab: &Lab,
    name: &str,
    secret: &str,
    directory: Directory,
) -> anyhow::Result<(String, String)> {
    let tenant = lab.server.create_tenant(name).await?;
    let (_, t) = lab
        .server
        .call(Method::GET, &format!("/tenants/{tenant}"), None)
        .await?;
    let directory_id = t["entra_tenant_id"]
        .as_str()
        .context("entra_tenant_id")?
        .to_owned();
    lab.graph.put(&directory_id, directory);
    let (s, cred) = lab
        .server
        .call(
            Method::PUT,
            &format!("/tenants/{tenant}/graph-credentials"),
            Some(json!({"client_id": CLIENT_ID, "client_secret": secret})),
        )
        .await?;
    anyhow::ensure!(s == 200, "set credential: {s} {cred}");
    Ok((tenant, directory_id))
}

async fn run(lab: &Lab, tenant: &str) -> anyhow::Result<Value> {
    let (s, run) = lab
        .server
        .call(
            Method::POST,
            &format!("/tenants/{tenant}/cloud-checks/run"),
            None,
        )
        .await?;
    anyhow::ensure!(s == 200, "run: {s} {run}");
    Ok(run)
}

fn by_check(results: &Value) -> BTreeMap<String, Value> {
    results
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["check_id"].as_str()?.to_owned(), r.clone())))
        .collect()
}

fn statuses(results: &Value) -> BTreeMap<String, String> {
    by_check(results)
        .into_iter()
        .map(|(k, v)| (k, v["status"].as_str().unwrap_or("").to_owned()))
        .collect()
}

async fn healthy_and_broken(database_url: &str) -> anyhow::Result<()> {
    let lab = lab(database_url).await?;
    let mut healthy = Directory::healthy(CLIENT_ID, AppCredential::Secret("h-secret".into()));
    // Small pages: every collection is read across @odata.nextLink.
    healthy.page_size = 1;
    let (good, good_dir) = tenant_with(&lab, "Healthy Ltd", "h-secret", healthy).await?;
    let (bad, _) = tenant_with(
        &lab,
        "Broken plc",
        "b-secret",
        Directory::broken(CLIENT_ID, AppCredential::Secret("b-secret".into())),
    )
    .await?;

    let run_good = run(&lab, &good).await?;
    let s = statuses(&run_good["results"]);
    assert_eq!(s.len(), 9, "{run_good:#}");
    for (check, status) in &s {
        let expected = if check == "tenant.writeback_toggle" {
            "not_applicable"
        } else {
            "pass"
        };
        assert_eq!(status, expected, "{check}: {run_good:#}");
    }
    let toggle = &by_check(&run_good["results"])["tenant.writeback_toggle"];
    assert!(
        toggle["summary"]
            .as_str()
            .unwrap_or("")
            .contains("no supported API")
            || toggle["summary"]
                .as_str()
                .unwrap_or("")
                .contains("supported API"),
        "{toggle}"
    );
    assert_eq!(toggle["source"]["kind"], "cloud");
    // Two self-service resets and two administrator resets.
    assert_eq!(run_good["sspr_activity"]["total"], 4, "{run_good:#}");
    assert_eq!(run_good["sspr_activity"]["failures"], 0);
    assert!(
        lab.graph
            .requests(&good_dir)
            .iter()
            .any(|r| r.contains("skiptoken")),
        "paging was followed: {:?}",
        lab.graph.requests(&good_dir)
    );

    let run_bad = run(&lab, &bad).await?;
    let expected: BTreeMap<String, String> = [
        ("tenant.writeback_licence", "fail"),
        ("tenant.licensed_admin", "warn"),
        ("tenant.sspr_enabled", "fail"),
        ("tenant.writeback_toggle", "not_applicable"),
        ("tenant.sspr_for_admins", "fail"),
        ("tenant.writeback_admin_cloud_only", "fail"),
        ("tenant.sync_freshness", "warn"),
        ("tenant.admin_reset_not_written_back", "warn"),
        ("tenant.cloud_sync_quarantine", "warn"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(statuses(&run_bad["results"]), expected, "{run_bad:#}");
    let bad_results = by_check(&run_bad["results"]);
    assert!(
        bad_results["tenant.sspr_for_admins"]["remediation"]
            .as_str()
            .unwrap_or("")
            .contains("it.admin@contoso.com")
    );
    assert!(
        bad_results["tenant.writeback_admin_cloud_only"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("through a group")
    );
    assert!(
        bad_results["tenant.writeback_admin_cloud_only"]["summary"]
            .as_str()
            .unwrap_or("")
            .contains("hia@fed.contoso.com (Hybrid Identity Administrator) signs in through a federated domain"),
        "{run_bad:#}"
    );
    assert!(
        bad_results["tenant.writeback_licence"]["docs_url"]
            .as_str()
            .unwrap_or("")
            .starts_with("https://learn.microsoft.com/")
    );
    let text = |check: &str, field: &str| -> String {
        bad_results[check][field].as_str().unwrap_or("").to_owned()
    };
    // TEN-09: the synced user reset in the cloud only, and who did it.
    assert!(
        text("tenant.admin_reset_not_written_back", "summary")
            .contains("adele@contoso.com (reset by it.admin@contoso.com)"),
        "{run_bad:#}"
    );
    assert!(
        text("tenant.admin_reset_not_written_back", "remediation").contains("Entra admin center"),
        "{run_bad:#}"
    );
    assert_eq!(
        bad_results["tenant.admin_reset_not_written_back"]["severity"], "info",
        "{run_bad:#}"
    );
    // CS-06: the quarantined job and its reason.
    let quarantine = text("tenant.cloud_sync_quarantine", "summary");
    assert!(
        quarantine.contains("EncounteredQuarantineException")
            && quarantine.contains("AD2AADProvisioning")
            && quarantine.contains("could not reach a domain controller"),
        "{run_bad:#}"
    );
    assert!(
        text("tenant.cloud_sync_quarantine", "remediation").contains("Restart sync"),
        "{run_bad:#}"
    );
    assert_eq!(run_bad["status"], "fail");

    // Tokens are cached until shortly before they expire.
    let issued = lab.graph.tokens_issued();
    run(&lab, &good).await?;
    run(&lab, &bad).await?;
    assert_eq!(lab.graph.tokens_issued(), issued, "tokens were reused");

    // The failures users hit: last 24 hours only, counted and linked to the checks.
    let (s, activity) = lab
        .server
        .call(Method::GET, &format!("/tenants/{bad}/sspr-activity"), None)
        .await?;
    assert_eq!(s, 200, "{activity}");
    assert_eq!(
        (activity["total"].clone(), activity["failures"].clone()),
        (json!(4), json!(3)),
        "{activity:#}"
    );
    let top = &activity["groups"][0];
    assert_eq!(
        (top["count"].clone(), top["check_id"].clone()),
        (json!(2), json!("tenant.user_licence")),
        "{activity:#}"
    );
    let disabled = activity["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| {
            g["reason"]
                .as_str()
                .unwrap_or("")
                .contains("TenantSSPRFlagDisabled")
        })
        .context("the SSPR-disabled failures are grouped")?;
    assert_eq!(disabled["check_id"], "tenant.sspr_enabled", "{activity:#}");

    // Tenant status and the fleet summary carry the cloud results.
    let (_, status) = lab
        .server
        .call(Method::GET, &format!("/tenants/{bad}/status"), None)
        .await?;
    assert_eq!(status["status"], "fail", "{status:#}");
    assert_eq!(status["cloud"]["results"].as_array().map(Vec::len), Some(9));
    let (_, status) = lab
        .server
        .call(Method::GET, &format!("/tenants/{good}/status"), None)
        .await?;
    assert_eq!(status["status"], "not_applicable", "{status:#}");
    let (_, fleet) = lab.server.call(Method::GET, "/fleet/summary", None).await?;
    assert_eq!(fleet["tenants"]["by_status"]["fail"], 1, "{fleet:#}");
    assert_eq!(
        fleet["tenants"]["by_status"]["not_applicable"], 1,
        "{fleet:#}"
    );

    // Per-user readiness on demand.
    let user = async |tenant: &str, upn: &str| -> anyhow::Result<BTreeMap<String, String>> {
        let (s, r) = lab
            .server
            .call(
                Method::GET,
                &format!("/tenants/{tenant}/cloud-checks/user?upn={upn}"),
                None,
            )
            .await?;
        anyhow::ensure!(s == 200, "{s} {r}");
        Ok(statuses(&r))
    };
    let all = |status: &str| -> BTreeMap<String, String> {
        [
            "tenant.user_licence",
            "tenant.user_registration",
            "tenant.user_sync_state",
        ]
        .into_iter()
        .map(|c| (c.to_owned(), status.to_owned()))
        .collect()
    };
    assert_eq!(user(&good, "adele@contoso.com").await?, all("pass"));
    let nolic = user(&good, "nolicence@contoso.com").await?;
    assert_eq!(
        (
            nolic["tenant.user_licence"].as_str(),
            nolic["tenant.user_registration"].as_str(),
            nolic["tenant.user_sync_state"].as_str()
        ),
        ("fail", "fail", "pass")
    );
    assert_eq!(
        user(&good, "cloudonly@contoso.onmicrosoft.com").await?["tenant.user_sync_state"],
        "fail"
    );
    assert_eq!(user(&good, "nobody@contoso.com").await?, all("fail"));
    let (s, _) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{good}/cloud-checks/user"),
            None,
        )
        .await?;
    assert_eq!(s, 400);
    Ok(())
}

#[tokio::test]
async fn a_healthy_and_a_broken_tenant_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    healthy_and_broken(&sqlite_url(&dir)).await
}

#[tokio::test]
async fn a_healthy_and_a_broken_tenant_on_postgres() -> anyhow::Result<()> {
    let Some(url) = fresh_database().await else {
        return Ok(());
    };
    healthy_and_broken(&url).await
}

#[tokio::test]
async fn a_throttled_tenant_completes_and_a_withdrawn_consent_or_missing_permission_touches_no_other_tenant()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lab = lab(&sqlite_url(&dir)).await?;
    let mut throttled = Directory::healthy(CLIENT_ID, AppCredential::Secret("t-secret".into()));
    throttled.throttle_every = 2;
    let (slow, slow_dir) = tenant_with(&lab, "Throttled Inc", "t-secret", throttled).await?;
    let (gone, gone_dir) = tenant_with(
        &lab,
        "Withdrawn GmbH",
        "w-secret",
        Directory::healthy(CLIENT_ID, AppCredential::Secret("w-secret".into())),
    )
    .await?;
    let mut narrow = Directory::healthy(CLIENT_ID, AppCredential::Secret("n-secret".into()));
    narrow.denied.insert("AuditLog.Read.All");
    narrow.denied.insert("Synchronization.Read.All");
    let (limited, _) = tenant_with(&lab, "Narrow SA", "n-secret", narrow).await?;

    let started = std::time::Instant::now();
    let r = run(&lab, &slow).await?;
    for (check, status) in statuses(&r["results"]) {
        assert!(
            status == "pass" || check == "tenant.writeback_toggle",
            "{check} {status}: {r:#}"
        );
    }
    assert!(lab.graph.requests(&slow_dir).len() > 7);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );

    // Consent withdrawn after a good run: every check says why and how to fix it.
    run(&lab, &gone).await?;
    lab.graph.change(&gone_dir, |d| d.consented = false);
    // A new credential drops the cached token, as an administrator re-entering it would.
    let (s, _) = lab
        .server
        .call(
            Method::PUT,
            &format!("/tenants/{gone}/graph-credentials"),
            Some(json!({"client_id": CLIENT_ID, "client_secret": "w-secret"})),
        )
        .await?;
    assert_eq!(s, 200);
    let r = run(&lab, &gone).await?;
    for result in r["results"].as_array().context("results")? {
        assert_eq!(result["status"], "error", "{result:#}");
        assert!(
            result["summary"]
                .as_str()
                .unwrap_or("")
                .contains("AADSTS700016"),
            "{result:#}"
        );
        assert!(
            result["remediation"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("{gone_dir}/adminconsent?client_id={CLIENT_ID}")),
            "{result:#}"
        );
    }
    let (_, cred) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{gone}/graph-credentials"),
            None,
        )
        .await?;
    assert!(
        cred["last_token_error"]
            .as_str()
            .unwrap_or("")
            .contains("admin consent"),
        "{cred:#}"
    );

    // A permission missing: the checks that need it say which one; the others still pass.
    let r = run(&lab, &limited).await?;
    let results = by_check(&r["results"]);
    assert_eq!(results["tenant.sspr_enabled"]["status"], "error");
    assert!(
        results["tenant.sspr_enabled"]["remediation"]
            .as_str()
            .unwrap_or("")
            .contains("AuditLog.Read.All"),
        "{r:#}"
    );
    assert_eq!(results["tenant.writeback_licence"]["status"], "pass");
    // Never a pass without the audit log or the jobs: an error naming the permission.
    for (check, permission) in [
        ("tenant.admin_reset_not_written_back", "AuditLog.Read.All"),
        ("tenant.cloud_sync_quarantine", "Synchronization.Read.All"),
    ] {
        assert_eq!(results[check]["status"], "error", "{check}: {r:#}");
        assert!(
            results[check]["remediation"]
                .as_str()
                .unwrap_or("")
                .contains(permission),
            "{check}: {r:#}"
        );
    }
    assert!(
        r["sspr_activity"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("AuditLog.Read.All"),
        "{r:#}"
    );

    // The others were not touched by either.
    let (_, status) = lab
        .server
        .call(Method::GET, &format!("/tenants/{slow}/status"), None)
        .await?;
    assert_eq!(status["cloud"]["status"], "not_applicable", "{status:#}");
    Ok(())
}

/// An RSA certificate and key made by openssl, with its SHA-1 thumbprint and `x5t#S256`.
fn rsa_certificate(dir: &std::path::Path) -> anyhow::Result<(String, String, String, String)> {
    let (cert, key) = (dir.join("app.pem"), dir.join("app.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wbhealth e2e app",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .context("run openssl")?
        .success();
    anyhow::ensure!(ok, "openssl req failed");
    let der = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(&cert)
        .output()?
        .stdout;
    let fingerprint = |algorithm: &str| -> anyhow::Result<Vec<u8>> {
        let mut child = Command::new("openssl")
            .args(["dgst", algorithm, "-binary"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, &der)?;
        Ok(child.wait_with_output()?.stdout)
    };
    let sha1: String = fingerprint("-sha1")?
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let x5t = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        fingerprint("-sha256")?,
    );
    Ok((
        std::fs::read_to_string(cert)?,
        std::fs::read_to_string(key)?,
        sha1,
        x5t,
    ))
}

#[tokio::test]
async fn a_certificate_credential_gets_tokens_and_the_scheduler_runs_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key, sha1, x5t) = rsa_certificate(dir.path())?;
    let lab = lab(&sqlite_url(&dir)).await?;
    let tenant = lab.server.create_tenant("Certified BV").await?;
    let (_, t) = lab
        .server
        .call(Method::GET, &format!("/tenants/{tenant}"), None)
        .await?;
    let directory_id = t["entra_tenant_id"]
        .as_str()
        .context("directory")?
        .to_owned();
    lab.graph.put(
        &directory_id,
        Directory::healthy(CLIENT_ID, AppCredential::Certificate(x5t)),
    );
    let (s, cred) = lab.server.call(Method::PUT, &format!("/tenants/{tenant}/graph-credentials"), Some(json!({
        "client_id": CLIENT_ID, "cloud": "global", "certificate_pem": cert, "private_key_pem": key
    }))).await?;
    assert_eq!(s, 200, "{cred}");
    assert_eq!(cred["kind"], "certificate");
    assert_eq!(cred["certificate_thumbprint"], sha1.as_str());
    assert!(!cred.to_string().contains("PRIVATE KEY"));

    // No run asked for: the scheduler finds the new credential due and runs it.
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, s) = lab
            .server
            .call(Method::GET, &format!("/tenants/{tenant}/status"), None)
            .await?;
        status = s;
        if !status["cloud"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status["cloud"]["status"], "not_applicable", "{status:#}");
    let (_, cred) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{tenant}/graph-credentials"),
            None,
        )
        .await?;
    assert!(cred["last_token_ok_at"].is_string(), "{cred:#}");

    // A key that does not fit is refused when set, and removing the credential stops it all.
    let (s, body) = lab
        .server
        .call(
            Method::PUT,
            &format!("/tenants/{tenant}/graph-credentials"),
            Some(json!({
                "client_id": CLIENT_ID, "certificate_pem": "nope", "private_key_pem": "nope"
            })),
        )
        .await?;
    assert_eq!(s, 400, "{body}");
    let (s, _) = lab
        .server
        .call(
            Method::DELETE,
            &format!("/tenants/{tenant}/graph-credentials"),
            None,
        )
        .await?;
    assert_eq!(s, 204);
    let (s, _) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{tenant}/graph-credentials"),
            None,
        )
        .await?;
    assert_eq!(s, 404);
    let (_, checks) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{tenant}/cloud-checks"),
            None,
        )
        .await?;
    assert_eq!(checks, json!({"credential_set": false, "last_run": null}));
    Ok(())
}

/// Runs the real binary with debug logs, sets a secret, gets it refused, and greps every log
/// line and response for it.
#[tokio::test]
async fn a_graph_secret_never_appears_in_logs_or_responses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new();
    let graph = FakeGraph::start(&ca)?;
    let secret = "Gr4ph~s3cret.value-0123456789abcdefXYZ";
    let mut child = Command::new(server_binary())
        .env("WBH_DATABASE_URL", sqlite_url(&dir))
        .env("WBH_HTTP_ADDR", "127.0.0.1:0")
        .env("WBH_GRPC_ADDR", "127.0.0.1:0")
        .env("WBH_SECRET_KEY_FILE", dir.path().join("key"))
        .env("WBH_GRAPH_AUTHORITY_URL", graph.url())
        .env("WBH_GRAPH_BASE_URL", graph.url())
        .env("WBH_GRAPH_CA_FILE", ca.pem_path())
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start wbhealth-server")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (out, err) = (
        child.stdout.take().context("stdout")?,
        child.stderr.take().context("stderr")?,
    );
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| {
                let _ = tx.send(l);
            })
    });
    let t2 = std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| {
                let _ = tx2.send(l);
            })
    });
    let mut printed = Vec::new();
    let (mut base, mut admin) = (None, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while base.is_none() || admin.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .context("banner")?;
        if let Some(rest) = line.split("REST and Swagger UI on ").nth(1) {
            base = rest.split("/docs").next().map(str::to_owned);
        }
        if line.trim_start().starts_with("wbh_key_") {
            admin = Some(line.trim().to_owned());
        }
        printed.push(line);
    }
    let (base, admin) = (base.context("base")?, admin.context("admin")?);
    let client = reqwest::Client::new();
    let mut responses = String::new();
    let mut call =
        async |method: Method, path: &str, body: Option<Value>| -> anyhow::Result<(u16, Value)> {
            let mut rq = client
                .request(method, format!("{base}/api/v1{path}"))
                .bearer_auth(&admin);
            if let Some(b) = body {
                rq = rq.json(&b);
            }
            let response = rq.send().await?;
            let status = response.status().as_u16();
            let text = response.text().await?;
            responses.push_str(&text);
            Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        };
    let (_, tenant) = call(
        Method::POST,
        "/tenants",
        Some(json!({"name": "Secretive", "entra_tenant_id": uuid::Uuid::new_v4()})),
    )
    .await?;
    let tenant_id = tenant["id"].as_str().context("tenant")?.to_owned();
    let directory = tenant["entra_tenant_id"]
        .as_str()
        .context("directory")?
        .to_owned();
    // The directory expects another secret: the token request is refused (AADSTS7000215).
    graph.put(
        &directory,
        Directory::healthy(CLIENT_ID, AppCredential::Secret("the-right-one".into())),
    );
    let (s, _) = call(
        Method::PUT,
        &format!("/tenants/{tenant_id}/graph-credentials"),
        Some(json!({"client_id": CLIENT_ID, "client_secret": secret})),
    )
    .await?;
    assert_eq!(s, 200);
    let (s, bad) = call(Method::PUT, &format!("/tenants/{tenant_id}/graph-credentials"), Some(json!({"client_id": CLIENT_ID, "client_secret": secret, "certificate_pem": "x", "private_key_pem": "y"}))).await?;
    assert_eq!(s, 400, "{bad}");
    let (s, run) = call(
        Method::POST,
        &format!("/tenants/{tenant_id}/cloud-checks/run"),
        None,
    )
    .await?;
    assert_eq!(s, 200, "{run}");
    assert!(run.to_string().contains("AADSTS7000215"), "{run:#}");
    call(
        Method::GET,
        &format!("/tenants/{tenant_id}/graph-credentials"),
        None,
    )
    .await?;
    call(Method::GET, &format!("/tenants/{tenant_id}/status"), None).await?;
    call(Method::GET, "/audit-events", None).await?;
    child.kill()?;
    child.wait()?;
    t1.join().ok();
    t2.join().ok();
    printed.extend(rx.try_iter());
    let logs = printed.join("\n");
    assert!(
        logs.contains("graph credential set") && logs.contains("graph token refused"),
        "debug logs were captured:\n{logs}"
    );
    assert!(!logs.contains(secret), "the secret is in the logs");
    assert!(!responses.contains(secret), "the secret is in a response");
    let db = std::fs::read(dir.path().join("wbhealth.db"))?;
    let wal = std::fs::read(dir.path().join("wbhealth.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is stored in plain text"
        );
    }
    Ok(())
}

async fn cloud_of(lab: &Lab, tenant: &str) -> anyhow::Result<Value> {
    let (_, status) = lab
        .server
        .call(Method::GET, &format!("/tenants/{tenant}/status"), None)
        .await?;
    Ok(status["cloud"].clone())
}

#[tokio::test]
async fn a_tenant_that_times_out_is_reported_without_holding_up_the_others() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Requests give up after 4 s, a whole tenant run after 6 s.
    let lab = lab_with(&sqlite_url(&dir), 4, 6).await?;
    let mut hanging = Directory::healthy(CLIENT_ID, AppCredential::Secret("s-secret".into()));
    hanging.delay = Some(Duration::from_secs(30));
    let (slow, _) = tenant_with(&lab, "Hanging Ltd", "s-secret", hanging).await?;
    let (fast, _) = tenant_with(
        &lab,
        "Quick Ltd",
        "q-secret",
        Directory::healthy(CLIENT_ID, AppCredential::Secret("q-secret".into())),
    )
    .await?;
    // The scheduler picks both up at once; the quick one is judged while the other hangs.
    let mut fast_cloud = Value::Null;
    for _ in 0..50 {
        fast_cloud = cloud_of(&lab, &fast).await?;
        if !fast_cloud.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(fast_cloud["status"], "not_applicable", "{fast_cloud:#}");
    assert!(
        cloud_of(&lab, &slow).await?.is_null(),
        "the hanging tenant is still waiting for its token"
    );
    let mut slow_cloud = Value::Null;
    for _ in 0..100 {
        slow_cloud = cloud_of(&lab, &slow).await?;
        if !slow_cloud.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for result in slow_cloud["results"].as_array().context("results")? {
        assert_eq!(result["status"], "error", "{result:#}");
        assert!(
            result["summary"]
                .as_str()
                .unwrap_or("")
                .contains("timed out"),
            "{result:#}"
        );
    }
    let (_, cred) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{slow}/graph-credentials"),
            None,
        )
        .await?;
    assert!(
        cred["last_token_error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{cred:#}"
    );
    Ok(())
}

/// The usual set-up is one multi-tenant app of the MSP, consented in every customer's
/// directory: a credential whose directory id names another customer's directory must read
/// nothing of it, for the tenant's runs and for one user's readiness alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_pointed_at_another_customers_directory_reads_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lab = lab(&sqlite_url(&dir)).await?;
    let app = || AppCredential::Secret("msp-app-secret".into());
    let (alpha, _) = tenant_with(
        &lab,
        "Alpha",
        "msp-app-secret",
        Directory::healthy(CLIENT_ID, app()),
    )
    .await?;
    let (_, beta_dir) = tenant_with(
        &lab,
        "Beta",
        "msp-app-secret",
        Directory::broken(CLIENT_ID, app()),
    )
    .await?;
    let (s, cred) = lab
        .server
        .call(
            Method::PUT,
            &format!("/tenants/{alpha}/graph-credentials"),
            Some(json!({"client_id": CLIENT_ID, "client_secret": "msp-app-secret", "directory_id": beta_dir})),
        )
        .await?;
    anyhow::ensure!(s == 200, "set credential: {s} {cred}");

    let run = run(&lab, &alpha).await?;
    let results = by_check(&run["results"]);
    assert!(!results.is_empty(), "{run:#}");
    for (check, r) in &results {
        assert_eq!(r["status"], "error", "{check}: {r:#}");
        assert!(
            r["summary"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("signs in to directory {beta_dir}"))
                    && s.contains("not to this tenant's Entra tenant")),
            "{check}: {r:#}"
        );
    }
    assert_eq!(run["sspr_activity"]["total"], 0, "{run:#}");
    let (s, user) = lab
        .server
        .call(
            Method::GET,
            &format!("/tenants/{alpha}/cloud-checks/user?upn=adele@contoso.com"),
            None,
        )
        .await?;
    anyhow::ensure!(s == 200, "{s} {user}");
    for (check, status) in statuses(&user) {
        assert_eq!(status, "error", "{check}: {user:#}");
    }
    // Only the organization id was asked for in Beta's directory.
    let asked = lab.graph.requests(&beta_dir);
    assert!(
        asked
            .iter()
            .filter(|r| !r.contains("/oauth2/"))
            .all(|r| r.contains("/organization")),
        "{asked:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_list_cut_short_at_the_page_cap_is_never_a_silent_pass() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lab = lab(&sqlite_url(&dir)).await?;
    let mut busy = Directory::healthy(CLIENT_ID, AppCredential::Secret("p-secret".into()));
    // One item a page and more administrator resets than the page cap lets through: the
    // resets past the cap could be the ones that never reached Active Directory.
    busy.page_size = 1;
    let now = time::OffsetDateTime::now_utc();
    for i in 0..60 {
        busy.audits.push(admin_reset(
            ("u-adele", "adele@contoso.com"),
            "admin@contoso.onmicrosoft.com",
            "Microsoft Entra Connect",
            now - Duration::from_secs(60 * (i + 1)),
        ));
    }
    // No Cloud Sync in this tenant.
    busy.service_principals.clear();
    busy.sync_jobs.clear();
    let (tenant, _) = tenant_with(&lab, "Busy Ltd", "p-secret", busy).await?;

    let r = run(&lab, &tenant).await?;
    let results = by_check(&r["results"]);
    let resets = &results["tenant.admin_reset_not_written_back"];
    assert_eq!(resets["status"], "error", "{r:#}");
    assert!(
        resets["summary"]
            .as_str()
            .unwrap_or("")
            .contains("only the first 50 pages"),
        "{r:#}"
    );
    // The SSPR counts are kept but say they are incomplete.
    assert!(
        r["sspr_activity"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("the counts are incomplete"),
        "{r:#}"
    );
    assert_eq!(r["sspr_activity"]["total"], 50, "{r:#}");
    let cloud_sync = &results["tenant.cloud_sync_quarantine"];
    assert_eq!(cloud_sync["status"], "not_applicable", "{r:#}");
    assert!(
        cloud_sync["summary"]
            .as_str()
            .unwrap_or("")
            .contains("no Cloud Sync"),
        "{r:#}"
    );
    Ok(())
}

//! The network checks against real peers: a Samba AD DC (its DNS, with a CNAME chain, and its
//! ports), loopback TLS endpoints from a test CA, a plain HTTP CRL host, a `CONNECT` proxy,
//! and relays that keep or drop idle connections. Each check is shown healthy, then broken.

use std::time::Duration;

use serde_json::Value;

use crate::support::agent::AgentHome;
use crate::support::lab::Lab;
use crate::support::netpeers::{ConnectProxy, IdleDroppingTls, ProxyMode};
use crate::support::tls::{HttpsEndpoint, TestCa, refusing_port};

/// Runs `diagnose --format json` (plus `extra` arguments) with `config`, returning the report
/// and the agent's stderr.
fn diagnose(config: &str, extra: &[&str]) -> anyhow::Result<(Value, String)> {
    let home = AgentHome::new(config)?;
    let mut args = vec!["diagnose", "--format", "json"];
    args.extend_from_slice(extra);
    let output = home.run(&args)?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        anyhow::anyhow!(
            "diagnose printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    Ok((report, stderr))
}

/// The result of check `id` in a report.
fn result<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .and_then(|results| results.iter().find(|r| r["check_id"] == id))
        .unwrap_or(&Value::Null)
}

#[track_caller]
fn assert_status(report: &Value, id: &str, status: &str) {
    let r = result(report, id);
    assert_eq!(r["status"], status, "{id}: {r:#}");
}

fn summary<'a>(report: &'a Value, id: &str) -> &'a str {
    result(report, id)["summary"].as_str().unwrap_or_default()
}

/// Inserts `lines` into the `[network]` section of a lab configuration.
fn with_network(config: &str, lines: &str) -> String {
    config.replacen("[network]\n", &format!("[network]\n{lines}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_checks_follow_real_peers_through_broken_states() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let zone = lab.zone();
    let healthy = lab.healthy_agent_config();

    // Healthy: every network check passes; the opt-in ones say they were not run.
    let (report, _) = diagnose(&healthy, &[])?;
    for id in [
        "network.dns_resolution",
        "network.passwordreset_https",
        "network.servicebus_relay",
        "network.servicebus_missing_token",
        "network.tls_inspection",
        "network.connect_endpoints",
        "network.crl_ocsp",
        "network.dc_ports",
    ] {
        assert_status(&report, id, "pass");
    }
    assert_status(&report, "network.idle_timeout", "not_applicable");
    assert_status(&report, "network.legacy_relay_ports", "not_applicable");
    // The CNAME chain made in the DC's DNS is recorded and shown.
    let dns = summary(&report, "network.dns_resolution");
    assert!(
        dns.contains(&format!("crl.{zone} → crlhost.{zone}")),
        "{dns}"
    );
    let dc = summary(&report, "network.dc_ports");
    assert!(
        dc.contains(&lab.dc.fqdn())
            && dc.contains("PDC emulator")
            && dc.contains("53, 88, 135, 389, 445, 636")
            && dc.contains("CLDAP (UDP 389)"),
        "{dc}"
    );
    assert!(
        summary(&report, "network.tls_inspection").contains("wbhealth test CA"),
        "the issuers seen are named"
    );

    // NET-02(b): a relay that answers 200 instead of 401 MissingToken.
    let (cert, key) = lab.ca.issue(&[&format!("relay1.{zone}")]);
    let impostor = HttpsEndpoint::start(&cert, &key, 200, "<html>Welcome</html>")?;
    let config = lab.agent_config(
        &[lab.passwordreset_endpoint()],
        &[format!("relay1.{zone}:{}", impostor.port())],
    );
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.servicebus_relay", "pass");
    assert_status(&report, "network.servicebus_missing_token", "fail");
    assert!(
        summary(&report, "network.servicebus_missing_token").contains("answered HTTP 200"),
        "{report:#}"
    );

    // NET-07: a relay whose chain does not build (another CA), and a session from an issuer
    // that is not on the accepted list.
    let other_ca = TestCa::named("Contoso Inspection CA");
    let (cert, key) = other_ca.issue(&[&format!("relay1.{zone}")]);
    let inspected = HttpsEndpoint::start(&cert, &key, 401, "")?;
    let config = lab.agent_config(
        &[lab.passwordreset_endpoint()],
        &[format!("relay1.{zone}:{}", inspected.port())],
    );
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.tls_inspection", "fail");
    let text = summary(&report, "network.tls_inspection");
    assert!(
        text.starts_with("TLS inspection?")
            && text.contains("Contoso Inspection CA")
            && text.contains("does not build"),
        "{text}"
    );
    let config = healthy.replace(
        "accepted_issuers = [\"CN=wbhealth test CA\"]",
        "accepted_issuers = [\"O=Microsoft Corporation\", \"O=DigiCert\"]",
    );
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.tls_inspection", "fail");
    assert!(
        summary(&report, "network.tls_inspection").contains("not a public Microsoft/DigiCert CA"),
        "{report:#}"
    );

    // NET-08: a CRL host nobody answers for.
    let config = healthy.replace(
        &lab.crl_endpoint(),
        &format!("crl.{zone}:{}", refusing_port()),
    );
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.crl_ocsp", "warn");
    assert!(
        summary(&report, "network.crl_ocsp").contains("refused"),
        "{report:#}"
    );

    // NET-09: a port the DC does not serve (ADWS, 9389, which Samba lacks).
    let config = with_network(&healthy, "dc_ports = [389, 636, 9389]");
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.dc_ports", "fail");
    let text = summary(&report, "network.dc_ports");
    assert!(
        text.contains("TCP 9389 refused") && !text.contains("TCP 389 "),
        "{text}"
    );
    assert!(
        result(&report, "network.dc_ports")["remediation"]
            .as_str()
            .is_some_and(
                |r| r.contains(&format!("Test-NetConnection {} -Port 9389", lab.dc.fqdn()))
            ),
        "{report:#}"
    );

    // NET-05's proxy: the probes go through a CONNECT proxy when one is set...
    let proxy = ConnectProxy::start(ProxyMode::Forward)?;
    let config = with_network(&healthy, &format!("proxy = {:?}", proxy.url()));
    let (report, _) = diagnose(&config, &[])?;
    for id in [
        "network.passwordreset_https",
        "network.servicebus_relay",
        "network.servicebus_missing_token",
        "network.connect_endpoints",
        "network.crl_ocsp",
    ] {
        assert_status(&report, id, "pass");
    }
    let seen = proxy.requests();
    assert!(
        seen.iter()
            .any(|r| r.starts_with(&format!("CONNECT {}", lab.connect_endpoint())))
            && seen
                .iter()
                .any(|r| r.starts_with(&format!("GET http://{}/", lab.crl_endpoint()))),
        "{seen:?}"
    );
    // ...and a proxy that denies them is named as the cause.
    let denying = ConnectProxy::start(ProxyMode::Refuse(403))?;
    let config = with_network(&healthy, &format!("proxy = {:?}", denying.url()));
    let (report, _) = diagnose(&config, &[])?;
    assert_status(&report, "network.connect_endpoints", "fail");
    assert!(
        summary(&report, "network.connect_endpoints").contains("denied by the proxy (HTTP 403)"),
        "{report:#}"
    );
    assert_status(&report, "network.crl_ocsp", "warn");
    Ok(())
}

/// An agent configuration with no directory, whose only reachable peer is the relay at
/// `127.0.0.1:relay_port` (certificate for the IP), held idle for 2 seconds when asked.
fn idle_hold_config(ca: &TestCa, relay_port: u16) -> String {
    let closed = refusing_port();
    format!(
        r#"[network]
dns_servers = ["127.0.0.1:{closed}"]
extra_ca_file = {ca:?}
passwordreset_endpoints = ["127.0.0.1:{closed}"]
servicebus_endpoints = ["127.0.0.1:{relay_port}"]
connect_endpoints = []
crl_endpoints = []
accepted_issuers = ["CN=wbhealth test CA"]
idle_hold_seconds = 2
timeout_seconds = 3
"#,
        ca = ca.pem_path().display().to_string(),
    )
}

#[test]
fn the_idle_hold_survives_a_patient_relay_and_fails_on_one_that_drops_idle_connections()
-> anyhow::Result<()> {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1"]);

    // Keeps idle connections (for 10 s): the 2-second hold survives and the request after it
    // gets the relay's 401.
    let patient = HttpsEndpoint::start(&cert, &key, 401, "MissingToken")?;
    let config = idle_hold_config(&ca, patient.port());
    let (report, stderr) = diagnose(&config, &[])?;
    assert_status(&report, "network.idle_timeout", "not_applicable");
    assert!(
        !stderr.contains("idle-hold"),
        "never in the default run: {stderr}"
    );

    let (report, stderr) = diagnose(&config, &["--idle-hold"])?;
    assert_status(&report, "network.idle_timeout", "pass");
    assert!(
        summary(&report, "network.idle_timeout")
            .contains("still usable after 0:02 idle (HTTP 401)"),
        "{report:#}"
    );
    assert!(
        stderr.contains("idle-hold: TLS session to 127.0.0.1:")
            && stderr.contains("idle-hold: done"),
        "progress is shown on stderr: {stderr}"
    );

    // Drops connections idle for 1 s, as a firewall with a short idle time-out.
    let dropping = IdleDroppingTls::start(&cert, &key, Duration::from_secs(1))?;
    let config = idle_hold_config(&ca, dropping.port());
    let (report, _) = diagnose(&config, &["--idle-hold"])?;
    assert_status(&report, "network.idle_timeout", "fail");
    let text = summary(&report, "network.idle_timeout");
    assert!(text.contains("closed while idle"), "{text}");
    assert!(
        result(&report, "network.idle_timeout")["remediation"]
            .as_str()
            .is_some_and(|r| r.contains("at least 6 minutes")),
        "{report:#}"
    );
    Ok(())
}

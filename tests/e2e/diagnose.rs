//! `wbhealth-agent diagnose`: one run with no server, a readable or JSON report, and an exit
//! code a script can act on.

use serde_json::Value;

use crate::support::agent::AgentHome;
use crate::support::lab::Lab;
use crate::support::tls::refusing_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_reports_a_healthy_then_a_broken_site() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };

    // The walking skeleton's five checks; the permission, host and other checks have their
    // own end-to-end tests (a Samba DC is not a complete writeback site: it lacks the
    // policy-hints control, and this lab names no connector account or host snapshot).
    let home = AgentHome::new(&lab.healthy_agent_config())?;
    let output = home.run(&[
        "diagnose",
        "--check",
        "network.dns_resolution",
        "--check",
        "network.passwordreset_https",
        "--check",
        "network.servicebus_relay",
        "--check",
        "topology.pdc_emulator",
        "--check",
        "policy.min_password_age",
    ])?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for heading in ["Network", "Domain topology", "Password policy"] {
        assert!(text.contains(heading), "grouped by category: {text}");
    }
    assert!(
        text.contains(" pass, 0 warn, 0 fail, 0 could not be evaluated"),
        "{text}"
    );
    assert!(
        !text.contains("\u{1b}["),
        "no colour codes when stdout is not a terminal"
    );

    lab.dc.set_min_password_age_days(2).await?;
    let refused = format!("passwordreset.{}:{}", lab.zone(), refusing_port());
    let home =
        AgentHome::new(&lab.agent_config(std::slice::from_ref(&refused), &lab.relay_endpoints()))?;
    let output = home.run(&["diagnose"])?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failing check makes a non-zero exit: {text}"
    );
    assert!(text.contains("FAIL") && text.contains("refused"), "{text}");
    assert!(
        text.contains("fix:") && text.contains("Test-NetConnection"),
        "failures carry their fix: {text}"
    );
    assert!(text.contains("evidence:"), "{text}");

    let output = home.run(&["diagnose", "--format", "json"])?;
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["status"], "fail");
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["check_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(by_id("network.passwordreset_https")["status"], "fail");
    assert_eq!(by_id("policy.min_password_age")["status"], "warn");
    assert_eq!(by_id("topology.pdc_emulator")["status"], "pass");
    Ok(())
}

#[test]
fn diagnose_without_ldap_settings_reports_error_not_pass() -> anyhow::Result<()> {
    // Endpoints on a closed loopback port: nothing here can pass, and LDAP is not configured.
    let port = refusing_port();
    let home = AgentHome::new(&format!(
        "[network]\ndns_servers = [\"127.0.0.1:{port}\"]\ntimeout_seconds = 2\npasswordreset_endpoints = [\"passwordreset.invalid:443\"]\nservicebus_endpoints = [\"relay.invalid:443\"]\n"
    ))?;
    let output = home.run(&["diagnose", "--format", "json"])?;
    let report: Value = serde_json::from_slice(&output.stdout)?;
    let results = report["results"].as_array().cloned().unwrap_or_default();
    for id in ["topology.pdc_emulator", "policy.min_password_age"] {
        let r = results
            .iter()
            .find(|r| r["check_id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            r["status"], "error",
            "{id} could not look, so it is an error: {r:#}"
        );
        assert!(
            r["summary"].as_str().is_some_and(|s| s.contains("LDAP")),
            "{r:#}"
        );
    }
    assert!(
        results.iter().all(|r| r["status"] != "pass"),
        "nothing passes unseen: {report:#}"
    );
    assert_ne!(output.status.code(), Some(0));
    Ok(())
}

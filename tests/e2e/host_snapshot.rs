//! `wbhealth-agent diagnose --snapshot`: the host checks judge a captured host snapshot on any
//! machine, and `collect` refuses politely where there is no Windows host to capture.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::agent::AgentHome;

fn snapshot(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/fixtures/snapshots")
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

/// Runs `diagnose --snapshot FILE --offline --format json` and returns the exit code and the
/// host results.
fn diagnose(home: &AgentHome, file: &str) -> anyhow::Result<(Option<i32>, Vec<Value>)> {
    let output = home.run(&[
        "diagnose",
        "--snapshot",
        file,
        "--offline",
        "--format",
        "json",
    ])?;
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        anyhow::anyhow!(
            "not a JSON report ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let results = report["results"].as_array().cloned().unwrap_or_default();
    Ok((output.status.code(), results))
}

fn by_id<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["check_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {results:#?}"))
}

#[test]
fn a_healthy_snapshot_raises_no_failure() -> anyhow::Result<()> {
    let home = AgentHome::new("")?;
    let (code, results) = diagnose(&home, &snapshot("healthy"))?;
    assert_eq!(code, Some(0), "{results:#?}");
    assert!(results.len() >= 24, "{results:#?}");
    for r in &results {
        let id = r["check_id"].as_str().unwrap_or_default();
        assert!(
            id.starts_with("server."),
            "--offline reports only host checks: {id}"
        );
        let status = r["status"].as_str().unwrap_or_default();
        let expected = if id.starts_with("server.cloudsync_") {
            "not_applicable"
        } else {
            "pass"
        };
        assert_eq!(status, expected, "{r:#}");
    }
    assert_eq!(
        by_id(&results, "server.connect_version")["evidence"]["server_configuration_version"],
        "2.5.79.0"
    );
    Ok(())
}

#[test]
fn a_broken_snapshot_fails_with_the_real_connector_in_the_fix() -> anyhow::Result<()> {
    let home = AgentHome::new("")?;
    let (code, results) = diagnose(&home, &snapshot("bad-credentials"))?;
    assert_eq!(code, Some(1), "a failing check exits 1: {results:#?}");
    let credentials = by_id(&results, "server.connector_credentials");
    assert_eq!(credentials["status"], "fail", "{credentials:#}");
    let fix = credentials["remediation"].as_str().unwrap_or_default();
    assert!(
        fix.contains(r"contoso.com\MSOL_1a2b3c4d5e6f")
            && fix.contains("Connectors → contoso.com → Properties"),
        "the fix names the connector and its account: {fix}"
    );
    assert_eq!(credentials["evidence"]["events"][0]["id"], 6000);

    let (code, results) = diagnose(&home, &snapshot("connect-old"))?;
    assert_eq!(code, Some(1));
    let version = by_id(&results, "server.connect_version");
    assert_eq!(version["status"], "fail");
    assert!(
        version["summary"]
            .as_str()
            .is_some_and(|s| s.contains("2.4.131.0") && s.contains("2026-09-30")),
        "{version:#}"
    );

    let (_, results) = diagnose(&home, &snapshot("listener-down"))?;
    let listener = by_id(&results, "server.writeback_listener");
    assert_eq!(listener["status"], "fail", "{listener:#}");
    assert_eq!(listener["evidence"]["errors_after_last_heartbeat"], 2);
    Ok(())
}

#[test]
fn an_unreadable_snapshot_is_an_error_with_the_reason_never_a_pass() -> anyhow::Result<()> {
    let home = AgentHome::new("")?;
    let (code, results) = diagnose(&home, "/nonexistent/host-snapshot.json")?;
    assert_eq!(
        code,
        Some(2),
        "nothing failed, nothing could be evaluated: {results:#?}"
    );
    for r in &results {
        assert_eq!(r["status"], "error", "{r:#}");
        let summary = r["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains("/nonexistent/host-snapshot.json") && summary.contains("No such file"),
            "{summary}"
        );
    }

    let (_, results) = diagnose(&home, &snapshot("unreadable"))?;
    let staging = by_id(&results, "server.staging_mode");
    assert_eq!(staging["status"], "error", "{staging:#}");
    assert!(
        staging["summary"]
            .as_str()
            .is_some_and(|s| s.contains("Access is denied")),
        "{staging:#}"
    );
    Ok(())
}

#[test]
fn collect_needs_windows_and_says_so_with_exit_64() -> anyhow::Result<()> {
    if cfg!(windows) {
        return Ok(());
    }
    let home = AgentHome::new("")?;
    let output = home.run(&["collect", "--output", "snapshot.json"])?;
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("only on Windows") && stderr.contains("--snapshot"),
        "{stderr}"
    );
    Ok(())
}

//! `bench_diagnose`: the full `wbhealth-agent diagnose` against a local Samba AD DC and
//! loopback endpoints, run several times, printing the median wall time and the peak memory
//! (maximum resident set size) of the agent process. Not part of the test suite's verdict:
//! it is `#[ignore]`d and asserts nothing about speed. Run it with
//!
//! ```sh
//! cargo test --release -p wbhealth-tests --test e2e bench_diagnose -- --ignored --nocapture
//! ```
//!
//! `WBH_BENCH_RUNS` sets the number of runs (default 10). The target is under 2 s and under
//! 30 MiB without the idle-hold probe.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::support::agent::{AgentHome, binary};
use crate::support::lab::Lab;

/// Measures one run of `program args…` from a Python parent that reports the child's wall
/// time and `ru_maxrss` (KiB on Linux) as `seconds kib`; Python comes with Samba.
const MEASURE: &str = "import resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
w = time.perf_counter() - t
print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it on purpose, with --release"]
async fn bench_diagnose() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let runs: usize = std::env::var("WBH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10);
    let home = AgentHome::new(&lab.healthy_agent_config())?;
    let agent = binary();
    // One run first, to build the binary and warm the DC's caches; not counted.
    let warm = home.run(&["diagnose", "--format", "json"])?;
    let report: serde_json::Value = serde_json::from_slice(&warm.stdout).with_context(|| {
        format!(
            "diagnose printed no JSON: {}",
            String::from_utf8_lossy(&warm.stderr)
        )
    })?;
    let checks = report["results"].as_array().map_or(0, Vec::len);

    let mut walls = Vec::with_capacity(runs);
    let mut peak_kib = 0u64;
    for _ in 0..runs {
        let output = Command::new("python3")
            .arg("-c")
            .arg(MEASURE)
            .arg(&agent)
            .arg("--config")
            .arg(home.config())
            .args(["diagnose", "--format", "json"])
            .env("NO_COLOR", "1")
            .output()
            .context("run python3 (installed with Samba) to measure the agent")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut fields = text.split_whitespace();
        let (Some(wall), Some(kib)) = (fields.next(), fields.next()) else {
            bail!(
                "cannot read the measurement: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        walls.push(Duration::from_secs_f64(wall.parse().context("wall time")?));
        peak_kib = peak_kib.max(kib.parse().context("max RSS")?);
    }
    walls.sort();
    let median = walls[walls.len() / 2];
    let (min, max) = (walls[0], walls[walls.len() - 1]);
    println!(
        "bench_diagnose: {runs} runs of `wbhealth-agent diagnose` ({checks} checks, {}, against {}): \
median wall {:.0} ms (min {:.0} ms, max {:.0} ms); peak RSS {:.1} MiB (targets: under 2 s, under 30 MiB)",
        if cfg!(debug_assertions) {
            "debug build: use --release for real figures"
        } else {
            "release build"
        },
        lab.dc.fqdn(),
        median.as_secs_f64() * 1000.0,
        min.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        peak_kib as f64 / 1024.0,
    );
    Ok(())
}

//! The real `wbhealth-agent` binary, configured for a test's peers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// The `wbhealth-agent` binary of this build, built first if needed.
pub fn binary() -> PathBuf {
    built("wbhealth-agent")
}

/// The `wbhealth-server` binary of this build, built first if needed.
pub fn server_binary() -> PathBuf {
    built("wbhealth-server")
}

/// Cargo builds another package's binaries only when asked, so the first test that needs
/// them asks (a no-op when they are fresh). They land next to this test binary's folder:
/// target/<profile>/deps/e2e-<hash> → target/<profile>/<name>.
fn built(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let release = cfg!(not(debug_assertions));
        let mut command = Command::new(cargo);
        command.args([
            "build",
            "--quiet",
            "-p",
            "wbhealth-agent",
            "-p",
            "wbhealth-server",
            "--bins",
        ]);
        if release {
            command.arg("--release");
        }
        let output = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| format!("run cargo: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    });
    if let Err(e) = result {
        panic!("cannot build the binaries under test: {e}");
    }
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// An agent's configuration file and state folder in a temporary folder.
pub struct AgentHome {
    dir: tempfile::TempDir,
}

impl AgentHome {
    /// Writes `agent.toml` (with `state_dir` pointing into the same folder).
    pub fn new(config_body: &str) -> anyhow::Result<AgentHome> {
        let dir = tempfile::tempdir()?;
        let state = dir.path().join("state");
        let text = format!(
            "state_dir = {:?}\n{config_body}",
            state.display().to_string()
        );
        std::fs::write(dir.path().join("agent.toml"), text)?;
        Ok(AgentHome { dir })
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    /// The spool folder.
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("state").join("spool")
    }

    /// How many reports wait in the spool.
    pub fn spooled(&self) -> usize {
        std::fs::read_dir(self.spool())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "report"))
                    .count()
            })
            .unwrap_or(0)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command.arg("--config").arg(self.config()).args(args);
        // The test's own environment must not leak settings into the agent.
        for (key, _) in std::env::vars() {
            if key.starts_with("WBH_") {
                command.env_remove(key);
            }
        }
        command.env("NO_COLOR", "1");
        command
    }

    /// Runs `wbhealth-agent --config … ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", binary().display()))?;
        Ok(output)
    }

    /// Enrolls, failing with the agent's own words when it cannot.
    pub fn enroll(&self, server_url: &str, token: &str) -> anyhow::Result<()> {
        let output = self.run(&["enroll", "--server", server_url, "--token", token])?;
        if !output.status.success() {
            bail!("enroll failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Starts `wbhealth-agent run` in the background; it stops when the returned guard drops.
    pub fn start(&self) -> anyhow::Result<RunningAgent> {
        let child = self
            .command(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the agent")?;
        Ok(RunningAgent { child })
    }
}

/// A `wbhealth-agent run` process, killed when dropped.
pub struct RunningAgent {
    child: Child,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

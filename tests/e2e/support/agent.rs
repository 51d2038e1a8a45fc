//! The real `wbhealth-agent` binary, configured for a test's peers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{Context as _, bail};

/// The agent binary cargo built next to this test binary.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/wbhealth-agent
    let dir = exe.parent().and_then(Path::parent).expect("test binaries live in target/<profile>/deps");
    dir.join(format!("wbhealth-agent{}", std::env::consts::EXE_SUFFIX))
}

/// The server binary cargo built next to this test binary.
pub fn server_binary() -> PathBuf {
    binary().with_file_name(format!("wbhealth-server{}", std::env::consts::EXE_SUFFIX))
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
        let text = format!("state_dir = {:?}\n{config_body}", state.display().to_string());
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
            .map(|entries| entries.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "report")).count())
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
        let output = self.command(args).stdin(Stdio::null()).output().with_context(|| format!("run {}", binary().display()))?;
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

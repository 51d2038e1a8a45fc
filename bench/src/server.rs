//! The server under test: the real `wbhealth-server` binary as a child process, on loopback
//! ports of its own choosing, in a temporary folder, with a REST client holding the first
//! administrator key it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running server process.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:port` of the REST listener.
    pub http: String,
    /// `http://127.0.0.1:port` of the gRPC listener.
    pub grpc: String,
    /// The administrator key printed at the first start; kept across restarts.
    pub key: String,
    client: reqwest::Client,
    binary: PathBuf,
    dir: PathBuf,
    database_url: String,
    ports: Option<(String, String)>,
    /// SQL statements the server logged, when started with the statement log on.
    statements: Option<Arc<AtomicU64>>,
}

impl ServerProcess {
    /// Starts `binary` on `database_url` (an empty database) with its files in `dir`.
    pub async fn start(binary: &Path, dir: &Path, database_url: &str) -> anyhow::Result<Self> {
        Self::start_inner(binary, dir, database_url, None).await
    }

    /// Starts `binary` on a database it already used, with sqlx's statement log on, counting
    /// the statements it runs ([`statements`](Self::statements)).
    pub async fn start_counting_statements(
        binary: &Path,
        dir: &Path,
        database_url: &str,
        key: &str,
    ) -> anyhow::Result<Self> {
        let mut server =
            Self::start_inner(binary, dir, database_url, Some(Arc::new(AtomicU64::new(0)))).await?;
        server.key = key.to_owned();
        Ok(server)
    }

    /// How many SQL statements the server ran so far (only when counting).
    pub fn statements(&self) -> u64 {
        self.statements
            .as_ref()
            .map_or(0, |n| n.load(Ordering::SeqCst))
    }

    async fn start_inner(
        binary: &Path,
        dir: &Path,
        database_url: &str,
        statements: Option<Arc<AtomicU64>>,
    ) -> anyhow::Result<Self> {
        let first = statements.is_none();
        let mut server = Self {
            child: Command::new("true").spawn()?,
            http: String::new(),
            grpc: String::new(),
            key: String::new(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256)
                .build()?,
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            database_url: database_url.to_owned(),
            ports: None,
            statements,
        };
        server.spawn(first).await?;
        Ok(server)
    }

    /// Starts the process again on the same ports and database (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn(false).await
    }

    async fn spawn(&mut self, first: bool) -> anyhow::Result<()> {
        let (http, grpc) = self
            .ports
            .clone()
            .unwrap_or(("127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()));
        let mut child = Command::new(&self.binary)
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                if self.statements.is_some() {
                    "warn,sqlx::query=debug"
                } else {
                    "warn"
                },
            )
            .args(["--database-url", &self.database_url])
            .args(["--http-addr", &http, "--grpc-addr", &grpc])
            .args(["--secret-key-file", "wbhealth.key"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut key_next = false;
        loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .context("the server did not say where it listens within 60 s")??
                .context("the server exited before it listened")?;
            if let Some(rest) =
                line.strip_prefix("wbhealth server listening: REST and Swagger UI on ")
            {
                let (rest_url, grpc_url) = rest
                    .split_once(", agents (gRPC) on ")
                    .context("the listening line names both listeners")?;
                self.http = rest_url.trim_end_matches("/docs").to_owned();
                self.grpc = grpc_url.to_owned();
                if !first {
                    break;
                }
            } else if line.starts_with("First start:") {
                key_next = true;
            } else if key_next && !line.trim().is_empty() {
                self.key = line.trim().to_owned();
                break;
            }
        }
        if first && self.key.is_empty() {
            bail!("the server printed no administrator key");
        }
        // Whatever else it prints must not fill the pipe and stall it. The server logs to
        // stdout; sqlx's statement log line is the one with `rows_returned`.
        let count = self.statements.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(count) = &count
                    && line.contains("rows_returned")
                {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        self.ports = Some((
            self.http.trim_start_matches("http://").to_owned(),
            self.grpc.trim_start_matches("http://").to_owned(),
        ));
        self.child = child;
        Ok(())
    }

    /// The process id, to read its memory.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `SIGKILL`, as a power cut or the OOM killer would: no shutdown code runs.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// The server's resident memory in bytes, from `/proc`.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("the server is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// A REST call with the administrator key; the JSON body of a 2xx answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.http))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// The shared HTTP client (connection pool) for load.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Creates a tenant and returns its id.
    pub async fn create_tenant(&self, name: &str) -> anyhow::Result<String> {
        let tenant = self
            .call(
                reqwest::Method::POST,
                "/tenants",
                Some(json!({ "name": name, "entra_tenant_id": uuid::Uuid::new_v4() })),
            )
            .await?;
        tenant["id"]
            .as_str()
            .map(str::to_owned)
            .context("tenant id")
    }

    /// Enrollment tokens for `agents` agents of a tenant (one token holds at most 1,000 uses).
    pub async fn enrollment_tokens(
        &self,
        tenant: &str,
        agents: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::new();
        let mut left = agents;
        while left > 0 {
            let uses = left.min(1000);
            let created = self
                .call(
                    reqwest::Method::POST,
                    &format!("/tenants/{tenant}/enrollment-tokens"),
                    Some(
                        json!({ "description": "bench", "max_uses": uses, "expires_in_hours": 24 }),
                    ),
                )
                .await?;
            let token = created["token"].as_str().context("token")?.to_owned();
            tokens.extend(std::iter::repeat_n(token, uses));
            left -= uses;
        }
        Ok(tokens)
    }
}

//! A real wbhealth server on loopback ports, and a small REST client for it.
//!
//! The server runs in the test process through the library (`Server::with_listeners`), the
//! same code `wbhealth-server` runs. Stopping and starting it again on the same ports and
//! database is how tests simulate a server restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wbhealth_server::Server;
use wbhealth_server::config::Config;

/// A running server.
pub struct TestServer {
    http: SocketAddr,
    grpc: SocketAddr,
    database_url: String,
    /// The configuration it started with; a restart keeps it (and so its secret key).
    config: Config,
    key: String,
    /// The CA the server's certificate chains to, when it serves TLS.
    tls_ca: Option<std::path::PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    client: reqwest::Client,
}

/// A SQLite database in a temporary folder, with the folder kept alive.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("wbhealth.db").display())
}

impl TestServer {
    /// Starts a server on fresh ports with an empty database, keeping the first
    /// administrator key it creates.
    pub async fn start(database_url: &str) -> anyhow::Result<TestServer> {
        Self::start_with(database_url, |_| {}).await
    }

    /// Like [`start`](Self::start), with a chance to change the configuration.
    pub async fn start_with(
        database_url: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestServer> {
        let mut config = Config::for_tests(database_url);
        tweak(&mut config);
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let server = Server::with_listeners(config.clone(), http, grpc).await?;
        let key = server
            .initial_admin_key()
            .context("an empty database yields an admin key")?
            .to_owned();
        Ok(Self::spawn(server, database_url, config, key, None))
    }

    /// Starts a server serving TLS on both listeners with `cert` and `key`, whose REST client
    /// trusts `ca`.
    pub async fn start_tls(
        database_url: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> anyhow::Result<TestServer> {
        Self::start_tls_with(database_url, cert, key, ca, |_| {}).await
    }

    /// Like [`start_tls`](Self::start_tls), with a chance to change the configuration.
    pub async fn start_tls_with(
        database_url: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        tweak: impl FnOnce(&mut Config),
    ) -> anyhow::Result<TestServer> {
        let mut server = Self::start_with(database_url, |config| {
            config.tls_cert = Some(cert.to_path_buf());
            config.tls_key = Some(key.to_path_buf());
            tweak(config);
        })
        .await?;
        server.tls_ca = Some(ca.to_path_buf());
        server.client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?)
            .build()?;
        Ok(server)
    }

    fn spawn(
        server: Server,
        database_url: &str,
        config: Config,
        key: String,
        tls_ca: Option<std::path::PathBuf>,
    ) -> TestServer {
        let (http, grpc) = (server.http_addr(), server.grpc_addr());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            grpc,
            database_url: database_url.to_owned(),
            config,
            key,
            tls_ca,
            stop: Some(stop),
            task: Some(task),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a plain client builds"),
        }
    }

    /// Stops the server and waits until both listeners are closed.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("server did not stop")???;
        }
        Ok(())
    }

    /// Starts the server again on the same ports and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_with(|_| {}).await
    }

    /// Like [`restart`](Self::restart), with a chance to change the configuration (the
    /// change is kept for later restarts).
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) -> anyhow::Result<()> {
        self.stop().await?;
        let mut config = Config {
            http_addr: self.http,
            grpc_addr: self.grpc,
            ..self.config.clone()
        };
        tweak(&mut config);
        let server = Server::build(config.clone()).await?;
        assert!(
            server.initial_admin_key().is_none(),
            "a restart must not create another admin key"
        );
        let client = self.client.clone();
        let mut restarted = Self::spawn(
            server,
            &self.database_url,
            config,
            self.key.clone(),
            self.tls_ca.clone(),
        );
        restarted.client = client;
        *self = restarted;
        Ok(())
    }

    /// The gRPC URL agents use.
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc)
    }

    /// The REST base URL, such as `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.http)
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A gRPC channel to the server, trusting its CA when it serves TLS.
    pub async fn grpc_channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.grpc_channel_as(None).await
    }

    /// Like [`grpc_channel`](Self::grpc_channel), presenting a client certificate when given.
    pub async fn grpc_channel_as(
        &self,
        client: Option<tonic::transport::Identity>,
    ) -> anyhow::Result<tonic::transport::Channel> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.grpc_url())?;
        if let Some(ca) = &self.tls_ca {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(ca)?));
            if let Some(client) = client {
                tls = tls.identity(client);
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint.connect().await?)
    }

    /// The administrator key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends a request to `/api/v1{path}` with the administrator key and returns status and
    /// JSON body (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        self.call_as(Some(&self.key), method, path, body).await
    }

    /// Like [`call`](Self::call) with a chosen bearer key, or none.
    pub async fn call_as(
        &self,
        key: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base_url()));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?
        };
        Ok((status, value))
    }

    /// `GET /api/v1{path}`, expecting 200.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Creates a tenant and returns its id.
    pub async fn create_tenant(&self, name: &str) -> anyhow::Result<String> {
        let body = json!({ "name": name, "entra_tenant_id": uuid::Uuid::new_v4() });
        let (status, tenant) = self
            .call(reqwest::Method::POST, "/tenants", Some(body))
            .await?;
        if status != 201 {
            bail!("creating tenant {name} answered {status}: {tenant}");
        }
        Ok(tenant["id"].as_str().context("tenant id")?.to_owned())
    }

    /// Creates an enrollment token and returns (token id, secret).
    pub async fn enrollment_token(
        &self,
        tenant: &str,
        max_uses: u32,
    ) -> anyhow::Result<(String, String)> {
        let body = json!({ "description": "e2e", "max_uses": max_uses });
        let (status, token) = self
            .call(
                reqwest::Method::POST,
                &format!("/tenants/{tenant}/enrollment-tokens"),
                Some(body),
            )
            .await?;
        if status != 201 {
            bail!("creating an enrollment token answered {status}: {token}");
        }
        Ok((
            token["id"].as_str().context("id")?.to_owned(),
            token["token"].as_str().context("token")?.to_owned(),
        ))
    }

    /// Creates an API key with the administrator key and returns (key id, secret).
    pub async fn create_key(
        &self,
        name: &str,
        role: &str,
        tenants: &[&str],
        operations: &[&str],
    ) -> anyhow::Result<(String, String)> {
        let body = json!({
            "name": name,
            "role": role,
            "tenant_ids": tenants,
            "operations": operations,
        });
        let (status, key) = self
            .call(reqwest::Method::POST, "/api-keys", Some(body))
            .await?;
        if status != 201 {
            bail!("creating API key {name} answered {status}: {key}");
        }
        Ok((
            key["id"].as_str().context("id")?.to_owned(),
            key["key"].as_str().context("key")?.to_owned(),
        ))
    }

    /// Creates a user with the administrator key, sets its password and signs it in; returns
    /// (user id, session token).
    pub async fn create_signed_in_user(
        &self,
        name: &str,
        role: &str,
        tenants: &[&str],
        password: &str,
    ) -> anyhow::Result<(String, String)> {
        let (status, user) = self
            .call(
                reqwest::Method::POST,
                "/users",
                Some(json!({"name": name, "role": role, "tenant_ids": tenants})),
            )
            .await?;
        if status != 201 {
            bail!("creating user {name} answered {status}: {user}");
        }
        let id = user["id"].as_str().context("user id")?.to_owned();
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/users/{id}/password"),
                Some(json!({ "password": password })),
            )
            .await?;
        if status != 204 {
            bail!("setting the password of {name} answered {status}: {body}");
        }
        let (status, session) = self.sign_in(name, password).await?;
        if status != 200 {
            bail!("signing in {name} answered {status}: {session}");
        }
        Ok((id, session["token"].as_str().context("token")?.to_owned()))
    }

    /// `POST /api/v1/sign-in` with no credential; returns status and body.
    pub async fn sign_in(&self, name: &str, password: &str) -> anyhow::Result<(u16, Value)> {
        self.call_as(
            None,
            reqwest::Method::POST,
            "/sign-in",
            Some(json!({ "name": name, "password": password })),
        )
        .await
    }

    /// Enrolls an agent into `tenant` over gRPC, as `wbhealth-agent enroll` does, and returns
    /// its id.
    pub async fn enroll_agent(&self, tenant: &str, hostname: &str) -> anyhow::Result<String> {
        let (_, token) = self.enrollment_token(tenant, 1).await?;
        let channel = self.grpc_channel().await?;
        let enrolled = wbhealth_proto::v1::agent_service_client::AgentServiceClient::new(channel)
            .enroll(wbhealth_proto::v1::EnrollRequest {
                token,
                host: Some(wbhealth_proto::v1::HostFacts {
                    hostname: hostname.to_owned(),
                    os: "test".to_owned(),
                    agent_version: "0".to_owned(),
                    domain_controller: String::new(),
                }),
                client_public_key: Vec::new(),
            })
            .await?
            .into_inner();
        Ok(enrolled.agent_id)
    }

    /// Polls the tenant status until `ready` accepts it, or fails after `timeout` with the
    /// last status seen.
    pub async fn wait_for_status(
        &self,
        tenant: &str,
        timeout: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.get(&format!("/tenants/{tenant}/status")).await?;
            if ready(&status) {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "tenant status did not reach the expected state in {timeout:?}; last seen: {status:#}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The results of the first agent in a tenant status, by check id.
pub fn results_by_check(status: &Value) -> std::collections::BTreeMap<String, Value> {
    status["agents"][0]["results"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .map(|r| {
                    (
                        r["check_id"].as_str().unwrap_or_default().to_owned(),
                        r.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

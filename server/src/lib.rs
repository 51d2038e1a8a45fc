//! wbhealth server: keeps the password-writeback health of every tenant an MSP manages.
//!
//! Two listeners share one [`AppState`] and one shutdown signal: REST (`api`, with Swagger UI)
//! for people and ticketing systems, and gRPC (`grpc`) for agents. Both call into `domain`
//! and persist through `storage`.

pub mod activity;
pub mod agent_ca;
pub mod api;
pub mod cloud;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod ingest;
pub mod oidc;
pub mod sessions;
pub mod storage;
pub mod telemetry;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::session_token::SessionTokens;
use crate::domain::{MasterKey, NewApiKey, Role, secrets};
use crate::oidc::OidcVerifier;
use crate::sessions::Sessions;
use crate::storage::Store;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The agents connected to this server right now.
    pub sessions: Sessions,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Failed authentications per client IP, for rate limiting.
    pub failed_auth: Arc<api::auth::FailedAuth>,
    /// The server's secret key: seals stored secrets, signs sessions.
    pub master_key: Arc<MasterKey>,
    /// Stores agents' reports in group commits.
    pub ingest: ingest::Ingest,
    /// Last-seen and last-used times not written to the store yet.
    pub activity: Arc<activity::Activity>,
    /// Cloud checks through Microsoft Graph.
    pub cloud: Arc<cloud::Cloud>,
    /// Issues and verifies users' session tokens (keyed from `master_key`).
    pub session_tokens: Arc<SessionTokens>,
    /// The external OIDC provider whose tokens are accepted, if one is configured.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// The CA that issues agents' client certificates, when mutual TLS is on.
    pub agent_ca: Option<Arc<agent_ca::AgentCa>>,
}

impl AppState {
    /// A tenant's agents, their last-seen times as this process knows them (see `activity`).
    pub async fn agents(
        &self,
        scope: &domain::TenantScope,
        tenant: domain::TenantId,
    ) -> Result<Vec<domain::Agent>, storage::StoreError> {
        let agents = self.store.list_agents(scope, tenant).await?;
        Ok(agents
            .into_iter()
            .map(|a| self.activity.overlay_agent(a))
            .collect())
    }
}

/// A server whose listeners are bound, ready to [`run`](Server::run).
pub struct Server {
    state: AppState,
    http: TcpListener,
    grpc: TcpListener,
    initial_admin_key: Option<String>,
    tls: Option<config::TlsFiles>,
}

impl Server {
    /// Opens the store (creating or migrating it), binds both listeners and, on an empty
    /// database, creates the first administrator key.
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen for REST on {}", config.http_addr))?;
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("cannot listen for gRPC on {}", config.grpc_addr))?;
        Self::with_listeners(config, http, grpc).await
    }

    /// Like [`build`](Server::build), with listeners the caller bound (tests use port 0).
    pub async fn with_listeners(
        config: Config,
        http: TcpListener,
        grpc: TcpListener,
    ) -> anyhow::Result<Server> {
        let store = storage::open(&config.database_url).await.with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database_url)
            )
        })?;
        let master_key = load_master_key(&config)?;
        let tls = config.tls()?;
        let agent_ca = if config.agent_mtls {
            Some(Arc::new(agent_ca::AgentCa::load_or_create(
                &config.agent_ca_key_file,
                &master_key,
            )?))
        } else {
            None
        };
        let initial_admin_key = bootstrap_admin_key(store.as_ref()).await?;
        let cloud = Arc::new(cloud::Cloud::new(&config)?);
        let session_tokens = SessionTokens::new(&master_key, config.session_token_lifetime());
        let oidc = match config.oidc().map_err(|e| anyhow::anyhow!("{e}"))? {
            Some(settings) => {
                tracing::info!(issuer = %settings.issuer, claim = settings.role_map.claim(), "accepting tokens of an OIDC provider");
                Some(Arc::new(OidcVerifier::new(settings)?))
            }
            None => None,
        };
        let state = AppState {
            cloud,
            ingest: ingest::Ingest::start(store.clone(), store.write_concurrency()),
            activity: Arc::default(),
            store,
            sessions: Sessions::default(),
            config: Arc::new(config),
            failed_auth: Arc::default(),
            master_key: Arc::new(master_key),
            session_tokens: Arc::new(session_tokens),
            oidc,
            agent_ca,
        };
        Ok(Server {
            state,
            http,
            grpc,
            initial_admin_key,
            tls,
        })
    }

    /// Whether both listeners speak TLS (`https://`).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Where REST listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where gRPC listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The administrator key created on this start, if the database was empty. Shown once.
    pub fn initial_admin_key(&self) -> Option<&str> {
        self.initial_admin_key.as_deref()
    }

    /// Serves both listeners until `shutdown` completes, then drains open requests and agent
    /// streams.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        let rest = api::router(self.state.clone());
        let http_cancel = cancel.clone();
        let rest_tls = self.tls.as_ref().map(tls::rest_config).transpose()?;
        let http = async move {
            let service = rest.into_make_service_with_connect_info::<SocketAddr>();
            match rest_tls {
                None => {
                    axum::serve(self.http, service)
                        .with_graceful_shutdown(http_cancel.cancelled_owned())
                        .await
                }
                Some(config) => {
                    use axum::serve::ListenerExt as _;
                    // tap_io: axum hands the peer address to handlers through it.
                    let listener = tls::TlsListener::new(self.http, config)?.tap_io(|_| {});
                    axum::serve(listener, service)
                        .with_graceful_shutdown(http_cancel.cancelled_owned())
                        .await
                }
            }
            .context("REST listener failed")
        };

        let grpc_cancel = cancel.clone();
        let grpc_state = self.state.clone();
        // Keepalive pings reap half-open agent streams (a NAT or firewall dropped the idle
        // connection) within 40 s, so an agent never looks connected forever.
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
        if let Some(files) = &self.tls {
            let mut config = tls::grpc_config(files);
            if let Some(ca) = &self.state.agent_ca {
                // Optional at the handshake: enrollment comes before the certificate does;
                // sessions demand it (grpc::AgentGrpc::authenticate).
                config = config
                    .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
                    .client_auth_optional(true);
            }
            builder = builder
                .tls_config(config)
                .context("--tls-cert / --tls-key: unusable for gRPC")?;
        }
        let grpc = async move {
            // TCP keepalive as well (the builder's own setting is ignored for a given
            // listener), for peers that vanish without closing.
            // No Nagle: an acknowledgement is one small frame that must leave at once (with
            // Nagle's algorithm each waited up to 40 ms for the peer's delayed ACK).
            let incoming = tonic::transport::server::TcpIncoming::from(self.grpc)
                .with_nodelay(Some(true))
                .with_keepalive(Some(std::time::Duration::from_secs(60)))
                .with_keepalive_interval(Some(std::time::Duration::from_secs(15)));
            builder
                .add_service(grpc::service(grpc_state))
                .serve_with_incoming_shutdown(incoming, grpc_cancel.cancelled_owned())
                .await
                .context("gRPC listener failed")
        };

        let scheduler = self.state.cloud.clone().spawn_scheduler(
            self.state.store.clone(),
            self.state.master_key.clone(),
            cancel.clone(),
        );

        // Agent streams never end by themselves; closing them lets the gRPC server drain.
        let sessions = self.state.sessions.clone();
        let closer = cancel.clone();
        tokio::spawn(async move {
            closer.cancelled().await;
            sessions.close_all();
        });

        let flusher = self.state.activity.clone().spawn_flusher(
            self.state.store.clone(),
            activity::flush_interval(self.state.config.agent_interval()),
            cancel.clone(),
        );

        let result = tokio::try_join!(http, grpc);
        cancel.cancel();
        scheduler.abort();
        // The last flush: times noted by the streams and requests that just drained.
        let _ = flusher.await;
        result.map(|_| ())
    }
}

/// The secret key from the configuration: inline, or read from its file, which is created
/// (readable by the owner only) when it does not exist yet.
fn load_master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(bytes) = config.inline_secret_key() {
        return Ok(MasterKey::from_bytes(bytes));
    }
    let path = &config.secret_key_file;
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = <[u8; MasterKey::LEN]>::try_from(bytes).map_err(|_| {
                anyhow::anyhow!(
                    "--secret-key-file / WBH_SECRET_KEY_FILE: {} does not hold exactly {} bytes; restore the original key file (a new one cannot open secrets sealed with the old)",
                    path.display(),
                    MasterKey::LEN
                )
            })?;
            Ok(MasterKey::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = MasterKey::generate();
            write_new_key_file(path, &bytes).with_context(|| {
                format!(
                    "--secret-key-file / WBH_SECRET_KEY_FILE: cannot create {}",
                    path.display()
                )
            })?;
            tracing::warn!(path = %path.display(), "created a new secret key file; back it up and give every replica the same key");
            Ok(MasterKey::from_bytes(bytes))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "--secret-key-file / WBH_SECRET_KEY_FILE: cannot read {}",
            path.display()
        ))),
    }
}

/// Writes a key file that only its owner can read, refusing to replace an existing file.
fn write_new_key_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates the first administrator key when no key exists yet, and returns it.
async fn bootstrap_admin_key(store: &dyn Store) -> anyhow::Result<Option<String>> {
    let key = secrets::generate("wbh_key_");
    let created = store
        .create_first_api_key(NewApiKey {
            name: "initial administrator".into(),
            role: Role::Administrator,
            tenants: Vec::new(),
            operations: Vec::new(),
            key_hash: secrets::hash(&key),
            expires_at: None,
        })
        .await?;
    match created {
        Some(stored) => {
            tracing::info!(key_id = %stored.id, "created the initial administrator API key");
            Ok(Some(key))
        }
        None => Ok(None),
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://wb:s3cret@db:5432/wb"),
            "postgres://wb:***@db:5432/wb"
        );
        assert_eq!(redact_url("postgres://wb@db/wb"), "postgres://wb@db/wb");
        assert_eq!(redact_url("sqlite://wbhealth.db"), "sqlite://wbhealth.db");
    }
}

//! The agent's side of the wire: enrollment, and the long-lived session that delivers spooled
//! reports, takes the server's configuration and reconnects with jittered back-off.
//!
//! Two tasks share the spool. The scheduler runs the checks on the interval (and on run-now)
//! and spools each report whether or not the server is reachable. The connection sends what
//! is spooled and deletes a report only when the server acknowledges it.

use std::collections::HashSet;
use std::time::Duration;

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use std::path::Path;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use wbhealth_proto::v1::agent_message::Kind as AgentKind;
use wbhealth_proto::v1::agent_service_client::AgentServiceClient;
use wbhealth_proto::v1::server_message::Kind as ServerKind;
use wbhealth_proto::v1::{
    AgentConfig, AgentMessage, CredentialStored, EnrollRequest, Heartbeat, Hello, HostFacts,
};

use crate::config::{Endpoint as NetEndpoint, Settings};
use crate::runner::{Selection, run_once};
use crate::spool::Spool;
use crate::state::{ClientTls, Identity};
use crate::wire;

/// How long to wait for the server to answer a connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeats keep idle-timeout firewalls from cutting the stream and tell the server the
/// agent is alive between runs.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not usable.
    #[error(
        "server URL {0:?} is not valid; use https://HOST:PORT (http:// only for a server on loopback)"
    )]
    BadUrl(String),
    /// The server URL is plain `http://` to a host that is not this machine.
    #[error(
        "server URL {0:?} uses http:// to a host that is not loopback, so the agent credential would cross the network unencrypted; enroll again with --server https://HOST:PORT and set ca_file under [server] in agent.toml to the CA that signed the server's certificate"
    )]
    PlainHttpOffLoopback(String),
    /// The server could not be reached, or its certificate was not trusted.
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// The server's CA file could not be used.
    #[error("server.ca_file {path}: {problem}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The server refused or failed the call.
    #[error("{}", .0.message())]
    Status(#[from] tonic::Status),
    /// The server closed the session.
    #[error("the server closed the session")]
    Closed,
    /// The key pair for a client certificate could not be made.
    #[error("cannot generate a key pair for the client certificate: {0}")]
    Key(String),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

impl From<tonic::transport::Error> for ClientError {
    fn from(e: tonic::transport::Error) -> Self {
        // tonic's own message is just "transport error"; the cause is in the chain.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if text.contains("certificate") || text.contains("UnknownIssuer") {
            text.push_str(
                "; the server's certificate is not trusted: set ca_file under [server] in agent.toml to the CA that signed it",
            );
        }
        ClientError::Connect(text)
    }
}

/// A channel to the server; `https://` URLs verify the server against `ca_file` when given,
/// the system's trusted roots otherwise.
async fn channel(
    url: &str,
    ca_file: Option<&Path>,
    client_tls: Option<&ClientTls>,
) -> Result<Channel, ClientError> {
    require_tls_off_loopback(url)?;
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ClientError::CaFile {
                    path: path.display().to_string(),
                    problem: e.to_string(),
                })?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        if let Some(client) = client_tls {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &client.cert_pem,
                client.key_pem.expose_secret(),
            ));
        }
        endpoint = endpoint.tls_config(tls)?;
    } else if !url.starts_with("http://") {
        return Err(ClientError::BadUrl(url.to_owned()));
    }
    Ok(endpoint.connect().await?)
}

/// Refuses `http://` unless the host is this machine (`localhost`, 127.0.0.0/8, `::1`): the
/// credential travels in every session's metadata.
pub fn require_tls_off_loopback(url: &str) -> Result<(), ClientError> {
    if !url.starts_with("http://") {
        return Ok(());
    }
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|_| ClientError::BadUrl(url.to_owned()))?;
    let host = uri
        .host()
        .ok_or_else(|| ClientError::BadUrl(url.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(ClientError::PlainHttpOffLoopback(url.to_owned()))
    }
}

/// What the agent says about its host.
pub fn host_facts(host_name: &str, settings: &Settings) -> HostFacts {
    HostFacts {
        hostname: host_name.to_owned(),
        os: crate::config::os_description(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        domain_controller: settings
            .ldap
            .as_ref()
            .map(|l| l.host.clone())
            .unwrap_or_default(),
    }
}

/// Trades an enrollment token for an identity.
pub async fn enroll(
    server_url: &str,
    ca_file: Option<&Path>,
    token: &str,
    host: HostFacts,
) -> Result<Identity, ClientError> {
    let mut client = AgentServiceClient::new(channel(server_url, ca_file, None).await?);
    // Over TLS the agent offers a public key for a client certificate; the private key is
    // made here and never leaves this machine. A server without mutual TLS ignores it.
    let key = if server_url.starts_with("https://") {
        Some(rcgen::KeyPair::generate().map_err(|e| ClientError::Key(e.to_string()))?)
    } else {
        None
    };
    let response = client
        .enroll(EnrollRequest {
            token: token.to_owned(),
            host: Some(host),
            client_public_key: key
                .as_ref()
                .map(|k| k.public_key_raw().to_vec())
                .unwrap_or_default(),
        })
        .await?
        .into_inner();
    let client_tls = match key {
        Some(key) if !response.client_certificate_pem.is_empty() => Some(ClientTls {
            cert_pem: response.client_certificate_pem,
            key_pem: SecretString::from(key.serialize_pem()),
        }),
        _ => None,
    };
    Ok(Identity {
        server_url: server_url.to_owned(),
        agent_id: response.agent_id,
        tenant_id: response.tenant_id,
        credential: SecretString::from(response.credential),
        previous_credential: None,
        client_tls,
    })
}

/// What the server told the agent to do.
#[derive(Debug, Clone, PartialEq)]
struct RunConfig {
    interval: Duration,
    selection: Selection,
    passwordreset_endpoints: Vec<NetEndpoint>,
    servicebus_endpoints: Vec<NetEndpoint>,
}

impl RunConfig {
    fn apply(&self, settings: &Settings) -> Settings {
        let mut settings = settings.clone();
        if !self.passwordreset_endpoints.is_empty() {
            settings.network.passwordreset_endpoints = self.passwordreset_endpoints.clone();
        }
        if !self.servicebus_endpoints.is_empty() {
            settings.network.servicebus_endpoints = self.servicebus_endpoints.clone();
        }
        settings
    }

    fn from_wire(config: AgentConfig) -> RunConfig {
        let endpoints =
            |list: Vec<String>| list.iter().filter_map(|e| NetEndpoint::parse(e)).collect();
        RunConfig {
            // A server cannot make the agent spin: at least ten seconds between runs.
            interval: Duration::from_secs(u64::from(config.interval_seconds.max(10))),
            selection: Selection::only(config.enabled_checks),
            passwordreset_endpoints: endpoints(config.passwordreset_endpoints),
            servicebus_endpoints: endpoints(config.servicebus_endpoints),
        }
    }
}

/// Runs the agent until `shutdown` resolves: checks on the interval, delivery over the
/// session, reconnecting as needed.
pub async fn run(
    settings: Settings,
    identity: Identity,
    host_name: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ClientError> {
    let spool = Spool::open(settings.state_dir.join("spool"))?;
    let (config_tx, config_rx) = watch::channel(RunConfig {
        interval: Duration::from_secs(300),
        selection: Selection::all(),
        passwordreset_endpoints: Vec::new(),
        servicebus_endpoints: Vec::new(),
    });
    let shared = Shared {
        settings,
        identity: std::sync::Mutex::new(identity),
        host_name,
        spool,
        config: config_tx,
        run_now: Notify::new(),
        spooled: Notify::new(),
    };
    tokio::select! {
        () = shutdown => {
            tracing::info!("agent stopping");
            Ok(())
        }
        result = schedule(&shared, config_rx) => result,
        () = stay_connected(&shared) => Ok(()),
    }
}

/// What the scheduler and the connection share.
struct Shared {
    settings: Settings,
    /// Replaced when the server rotates the credential.
    identity: std::sync::Mutex<Identity>,
    host_name: String,
    spool: Spool,
    /// The server's latest configuration; the connection writes it, the scheduler reads it.
    config: watch::Sender<RunConfig>,
    /// The server asked for a run now.
    run_now: Notify,
    /// A new report waits in the spool.
    spooled: Notify,
}

async fn schedule(
    shared: &Shared,
    mut config: watch::Receiver<RunConfig>,
) -> Result<(), ClientError> {
    let Shared {
        settings,
        host_name,
        spool,
        run_now,
        spooled,
        ..
    } = shared;
    loop {
        let current = config.borrow_and_update().clone();
        let run = run_once(&current.apply(settings), host_name, &current.selection).await;
        let report = wire::report(&run);
        match spool.push(&report) {
            Ok(()) => {
                tracing::info!(report_id = %report.report_id, checks = report.results.len(), "checks ran; report spooled");
                spooled.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "cannot spool the report; it is lost"),
        }
        let interval = current.interval;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = run_now.notified() => tracing::info!("run requested by the server"),
            changed = config.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // A new interval starts counting now; wait for it instead of running at once.
                let interval = config.borrow().interval;
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = run_now.notified() => tracing::info!("run requested by the server"),
                }
            }
        }
    }
}

async fn stay_connected(shared: &Shared) {
    let mut backoff = Duration::from_secs(1);
    // Whether the last refusal made the agent swap credentials: both refused means waiting.
    let mut just_swapped = false;
    loop {
        let result = session(shared).await;
        if result.is_ok() {
            just_swapped = false;
        }
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(ClientError::Status(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                if swap_in_previous_credential(shared) && !just_swapped {
                    // The server dropped a rotation it never saw confirmed: the old
                    // credential is still the current one there.
                    tracing::warn!(reason = %status.message(), "the server refused the rotated credential; trying the previous one");
                    backoff = Duration::from_secs(1);
                    just_swapped = true;
                    let jittered = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                    tokio::time::sleep(jittered).await;
                    continue;
                } else {
                    tracing::error!(reason = %status.message(), "the server refused this agent's credential; retrying slowly");
                    backoff = MAX_BACKOFF;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "session lost")
            }
        }
        // Jitter spreads a fleet's reconnections after a server restart.
        let jittered = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        tokio::time::sleep(jittered).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Swaps the current credential with the one from before the last rotation, if one is kept
/// (keeping both: a refusal for another reason must not lose the newer one), and stores that.
fn swap_in_previous_credential(shared: &Shared) -> bool {
    let mut identity = lock(&shared.identity);
    let Some(previous) = identity.previous_credential.clone() else {
        return false;
    };
    let mut next = identity.clone();
    next.previous_credential = Some(next.credential.clone());
    next.credential = previous;
    match next.save(&shared.settings.state_dir) {
        Ok(()) => {
            *identity = next;
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store the previous credential");
            false
        }
    }
}

/// Forgets the credential from before the last rotation once the server has accepted the
/// current one (accepting it completes the rotation there).
fn forget_previous_credential(shared: &Shared) {
    let mut identity = lock(&shared.identity);
    if identity.previous_credential.is_none() {
        return;
    }
    let mut next = identity.clone();
    next.previous_credential = None;
    match next.save(&shared.settings.state_dir) {
        Ok(()) => *identity = next,
        Err(e) => {
            tracing::warn!(error = %e, "cannot forget the previous credential; will try again")
        }
    }
}

fn lock(identity: &std::sync::Mutex<Identity>) -> std::sync::MutexGuard<'_, Identity> {
    // Replacing the identity is one assignment; a panic cannot leave it half-written.
    identity
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn session(shared: &Shared) -> Result<(), ClientError> {
    let Shared {
        settings,
        identity,
        host_name,
        spool,
        config,
        run_now,
        spooled,
    } = shared;
    let current = lock(identity).clone();
    let mut client = AgentServiceClient::new(
        channel(
            &current.server_url,
            settings.server_ca_file.as_deref(),
            current.client_tls.as_ref(),
        )
        .await?,
    );
    let (tx, rx) = mpsc::channel::<AgentMessage>(32);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let bearer = format!("Bearer {}", current.credential.expose_secret());
    request.metadata_mut().insert(
        "authorization",
        bearer.parse().map_err(|_| {
            tonic::Status::invalid_argument(
                "the stored credential is not valid metadata; enroll again",
            )
        })?,
    );
    let send = |kind| {
        let tx = tx.clone();
        async move {
            tx.send(AgentMessage { kind: Some(kind) })
                .await
                .map_err(|_| ClientError::Closed)
        }
    };
    send(AgentKind::Hello(Hello {
        host: Some(host_facts(host_name, settings)),
        spooled_reports: u32::try_from(spool.len()?).unwrap_or(u32::MAX),
    }))
    .await?;
    let mut inbound = client.session(request).await?.into_inner();
    tracing::info!(server = %current.server_url, "connected");
    let mut accepted = false;

    let mut sent: HashSet<String> = HashSet::new();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    // Whatever waited in the spool goes first.
    spooled.notify_one();
    loop {
        tokio::select! {
            message = inbound.message() => {
                let Some(message) = message? else { return Err(ClientError::Closed) };
                if !accepted {
                    // A message means the server accepted this session's credential.
                    accepted = true;
                    if current.previous_credential.is_some() {
                        forget_previous_credential(shared);
                    }
                }
                match message.kind {
                    Some(ServerKind::Ack(ack)) => {
                        spool.remove(&ack.report_id)?;
                        sent.remove(&ack.report_id);
                        tracing::debug!(report_id = %ack.report_id, "report acknowledged");
                    }
                    Some(ServerKind::Rejected(rejected)) => {
                        tracing::error!(report_id = %rejected.report_id, reason = %rejected.reason, "the server rejected a report; dropping it");
                        spool.remove(&rejected.report_id)?;
                        sent.remove(&rejected.report_id);
                    }
                    Some(ServerKind::Config(new)) => {
                        let new = RunConfig::from_wire(new);
                        tracing::info!(interval_s = new.interval.as_secs(), "configuration from the server");
                        config.send_if_modified(|current| {
                            let changed = *current != new;
                            *current = new;
                            changed
                        });
                    }
                    Some(ServerKind::RunNow(_)) => run_now.notify_one(),
                    Some(ServerKind::RotateCredential(rotate)) => {
                        let credential = rotate.credential;
                        let mut next = lock(identity).clone();
                        next.previous_credential = Some(next.credential.clone());
                        next.credential = SecretString::from(credential.clone());
                        // Stored before it is confirmed: the server refuses the old credential
                        // once it has the confirmation. Should saving fail, the old one keeps
                        // working and the server may try again.
                        match next.save(&settings.state_dir) {
                            Ok(()) => {
                                *lock(identity) = next;
                                tracing::info!("the server rotated this agent's credential; the new one is stored");
                                send(AgentKind::CredentialStored(CredentialStored { credential })).await?;
                            }
                            Err(e) => tracing::error!(error = %e, "cannot store the new credential; keeping the old one"),
                        }
                    }
                    None => tracing::debug!("ignoring a server message of an unknown kind"),
                }
            }
            () = spooled.notified() => {
                for report in spool.pending()? {
                    if sent.insert(report.report_id.clone()) {
                        send(AgentKind::Report(report)).await?;
                    }
                }
            }
            _ = heartbeat.tick() => {
                send(AgentKind::Heartbeat(Heartbeat { sent_at: Some(wire::timestamp(time::OffsetDateTime::now_utc())) })).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_accepted_only_to_loopback() {
        for url in [
            "http://localhost:50051",
            "http://LOCALHOST:50051",
            "http://127.0.0.1:50051",
            "http://127.8.9.10:50051",
            "http://[::1]:50051",
            "https://wbhealth.example.net:50051",
            "https://10.0.0.5:50051",
        ] {
            assert!(require_tls_off_loopback(url).is_ok(), "{url}");
        }
        for url in [
            "http://wbhealth.example.net:50051",
            "http://10.0.0.5:50051",
            "http://[2001:db8::1]:50051",
            "http://localhost.example.net:50051",
            "http://128.0.0.1:50051",
        ] {
            let refused = require_tls_off_loopback(url)
                .expect_err("plain http off loopback is refused")
                .to_string();
            assert!(
                refused.contains("https://") && refused.contains("ca_file"),
                "{url}: {refused}"
            );
        }
    }
}

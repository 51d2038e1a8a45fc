//! Real TLS on loopback: test CAs, certificates they issue, and HTTPS endpoints
//! that stand in for Microsoft's services (password reset, Service Bus, login,
//! Graph).
//!
//! Certificates carry their names as subjectAltName entries, because rustls
//! (like every webpki client) never looks at the CN. An "untrusted" endpoint
//! is an [`HttpsEndpoint`] whose certificate comes from a second [`TestCa`]
//! the client under test does not trust.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

/// How long one connection to an [`HttpsEndpoint`] may take before it is dropped.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Largest request head an [`HttpsEndpoint`] reads.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// A throw-away certificate authority for one test.
///
/// Its certificate is also written to a PEM file that lives as long as the CA,
/// for peers and clients that take a CA file path.
pub struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
    pem_file: tempfile::NamedTempFile,
}

impl TestCa {
    /// Creates a CA with a fresh ECDSA P-256 key and writes its PEM file.
    pub fn new() -> Self {
        Self::named("wbhealth test CA")
    }

    /// Like [`TestCa::new`], with its own common name: a client finds issuers by name, so a
    /// second CA that stands for a TLS-inspecting proxy needs a name of its own.
    pub fn named(common_name: &str) -> Self {
        let key = KeyPair::generate().expect("ring generates ECDSA P-256 keys");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .expect("a CA without names always signs");
        let mut pem_file = tempfile::Builder::new()
            .prefix("wbhealth-test-ca-")
            .suffix(".pem")
            .tempfile()
            .expect("the temporary folder is writable");
        pem_file
            .write_all(cert.pem().as_bytes())
            .and_then(|()| pem_file.flush())
            .expect("the temporary folder is writable");
        Self {
            key,
            cert,
            pem_file,
        }
    }

    /// The CA certificate as PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Path of a file holding the CA certificate as PEM; removed when the CA is dropped.
    pub fn pem_path(&self) -> &Path {
        self.pem_file.path()
    }

    /// Issues a server certificate for `names` (DNS names, or IP addresses which
    /// become IP SANs) and returns `(cert_pem, key_pem)`; the key is PKCS#8.
    ///
    /// # Panics
    /// When a name is neither an IP address nor a valid DNS name.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("ring generates ECDSA P-256 keys");
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("{names:?} are not valid certificate names: {e}"));
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("the test CA signs any valid name");
        (cert.pem(), key.serialize_pem())
    }

    /// A rustls client configuration that trusts this CA and nothing else.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("rcgen makes well-formed CA certificates");
        client_config_with(roots)
    }
}

/// A rustls client configuration that trusts only the CA certificates in the PEM file `ca_file`,
/// the way a client configured with a CA file path (like the agent) does.
pub fn client_config_trusting(ca_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("open {}", ca_file.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parse {}", ca_file.display()))?)
            .with_context(|| format!("trust {}", ca_file.display()))?;
    }
    Ok(client_config_with(roots))
}

fn client_config_with(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// An HTTPS server on `127.0.0.1` that answers every request with one fixed
/// HTTP/1.1 response and records the request heads it received.
///
/// It runs on its own thread and runtime, so it works from any test, async or
/// not, and stops when dropped.
pub struct HttpsEndpoint {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpsEndpoint {
    /// Starts serving on `127.0.0.1:0` with the given certificate chain and key
    /// (PEM), answering every request with `status` and `body` (`text/plain`).
    ///
    /// Issue the certificate for `127.0.0.1` (and `localhost`) so clients can
    /// verify it; e.g. Service Bus without a token answers
    /// `start(&cert, &key, 401, "MissingToken: The request contains no authorization header")`.
    pub fn start(cert_pem: &str, key_pem: &str, status: u16, body: &str) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse the endpoint certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .context("parse the endpoint key PEM")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("use the endpoint certificate")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let response = Arc::new(fixed_response(status, body)?);

        let listener = StdTcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        listener
            .set_nonblocking(true)
            .context("make the listener non-blocking")?;
        let addr = listener.local_addr().context("read the bound address")?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, stop) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build the endpoint runtime")?;
        let recorded = Arc::clone(&requests);
        let thread = std::thread::Builder::new()
            .name(format!("https-endpoint-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, acceptor, response, recorded, stop)))
            .context("spawn the endpoint thread")?;
        Ok(Self {
            addr,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The port it listens on at `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The heads (request line and headers) of every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for HttpsEndpoint {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may already have stopped after a panic; nothing to tell it then.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Builds the bytes of the one response an endpoint sends.
fn fixed_response(status: u16, body: &str) -> anyhow::Result<Vec<u8>> {
    let code = http::StatusCode::from_u16(status).context("invalid HTTP status")?;
    let reason = code.canonical_reason().unwrap_or("Unknown");
    let mut bytes = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    Ok(bytes)
}

async fn serve(
    listener: StdTcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    response: Arc<Vec<u8>>,
    requests: Arc<Mutex<Vec<String>>>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let response = Arc::clone(&response);
                let requests = Arc::clone(&requests);
                connections.spawn(async move {
                    // A client that gives up (or rejects our certificate) is not an error here.
                    let _ = tokio::time::timeout(
                        CONNECTION_DEADLINE,
                        answer(acceptor, stream, &response, &requests),
                    )
                    .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn answer(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    response: &[u8],
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buffer.len() > MAX_REQUEST_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let mut chunk = [0_u8; 4096];
        let read = tls.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let body_len = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut remaining = body_len.saturating_sub(buffer.len() - head_end - 4);
    while remaining > 0 {
        let mut chunk = [0_u8; 4096];
        let read = tls.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        remaining = remaining.saturating_sub(read);
    }
    requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(head);
    tls.write_all(response).await?;
    tls.shutdown().await
}

/// A loopback port on `127.0.0.1` that refuses connections: bound, read, released.
///
/// Another process could take it again in between, which is unlikely enough in a test.
pub fn refusing_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("loopback has free ports");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

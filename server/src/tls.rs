//! TLS for both listeners, and the development certificates of `wbhealth-server dev-certs`.
//!
//! REST is served by axum over [`TlsListener`], which completes handshakes concurrently so a
//! slow or silent client never holds up the others; gRPC uses tonic's own TLS with the same
//! certificate and key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::TlsFiles;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls configuration of the REST listener: the configured chain and key, HTTP/2 and
/// HTTP/1.1 through ALPN.
pub fn rest_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = rustls_pemfile::certs(&mut files.cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("--tls-cert: not a PEM certificate chain")?;
    let key = rustls_pemfile::private_key(&mut files.key_pem.expose_secret().as_slice())
        .context("--tls-key: not a PEM private key")?
        .context("--tls-key: no private key in the file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--tls-cert / --tls-key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// tonic's TLS configuration of the gRPC listener, from the same files.
pub fn grpc_config(files: &TlsFiles) -> tonic::transport::ServerTlsConfig {
    tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &files.cert_pem,
            files.key_pem.expose_secret(),
        ))
        .timeout(HANDSHAKE_TIMEOUT)
}

/// A TCP listener whose connections come out after a completed TLS handshake.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `listener` and completes handshakes in the background until the returned
    /// listener is dropped.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: wait rather than spin.
                            tracing::warn!(error = %e, "cannot accept a REST connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = tx.closed() => return,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The files `dev-certs` wrote.
#[derive(Debug)]
pub struct DevCerts {
    /// The development CA's certificate: what agents and browsers trust.
    pub ca_cert: PathBuf,
    /// The server's certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// Makes a development CA and a server certificate for `hosts` (DNS names or IP addresses),
/// written into `out` as `ca.pem`, `server.pem` and `server-key.pem`. The CA's key is not
/// kept: nothing else can ever be signed with it.
pub fn write_dev_certs(out: &Path, hosts: &[String]) -> anyhow::Result<DevCerts> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    anyhow::ensure!(!hosts.is_empty(), "name at least one --host");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;

    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "wbhealth development CA");
    ca.distinguished_name = name;
    let ca_cert = ca.self_signed(&ca_key).context("sign the CA")?;

    let server_key = KeyPair::generate().context("generate the server key")?;
    let mut server = CertificateParams::new(hosts.to_vec())
        .context("--host: each must be a DNS name or an IP address")?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hosts[0].clone());
    server.distinguished_name = name;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .context("sign the server certificate")?;

    let files = DevCerts {
        ca_cert: out.join("ca.pem"),
        server_cert: out.join("server.pem"),
        server_key: out.join("server-key.pem"),
    };
    std::fs::write(&files.ca_cert, ca_cert.pem())
        .with_context(|| format!("cannot write {}", files.ca_cert.display()))?;
    std::fs::write(&files.server_cert, server_cert.pem())
        .with_context(|| format!("cannot write {}", files.server_cert.display()))?;
    write_private(&files.server_key, server_key.serialize_pem().as_bytes())
        .with_context(|| format!("cannot write {}", files.server_key.display()))?;
    Ok(files)
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_certs_make_a_chain_the_server_can_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_dev_certs(dir.path(), &["localhost".into(), "127.0.0.1".into()])
            .expect("dev certs");
        let config = crate::config::Config {
            tls_cert: Some(files.server_cert.clone()),
            tls_key: Some(files.server_key.clone()),
            ..crate::config::Config::for_tests("sqlite::memory:")
        };
        let tls = config
            .tls()
            .expect("the files parse")
            .expect("TLS is configured");
        rest_config(&tls).expect("the key matches the certificate");
        let ca = std::fs::read_to_string(&files.ca_cert).expect("ca");
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}

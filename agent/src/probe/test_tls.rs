//! Test support: a loopback TLS server whose certificate comes from a private CA, the way a
//! TLS-inspecting proxy presents one, and a trust store that knows that CA.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tls::TrustStore;

/// The private CA (PEM).
pub const CA: &str = include_str!("testdata/ca.pem");
const CERT: &str = include_str!("testdata/endpoint.pem");
const KEY: &str = include_str!("testdata/endpoint.key");

/// The name the server's certificate is valid for.
pub const SERVER_NAME: &str = "passwordreset.test";

/// Starts a TLS server on loopback presenting a certificate for [`SERVER_NAME`] issued by
/// [`CA`]; it answers each HTTP request with 401 and leaves anything else unanswered.
pub async fn tls_server() -> SocketAddr {
    let certs: Vec<_> = rustls_pemfile::certs(&mut CERT.as_bytes())
        .map(|c| c.expect("cert"))
        .collect();
    let key = rustls_pemfile::private_key(&mut KEY.as_bytes())
        .expect("key")
        .expect("one key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 401 MissingToken\r\nContent-Length: 0\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

/// A trust store with the system roots plus [`CA`]; keep the directory alive while it is used.
pub fn trust_with_test_ca() -> (tempfile::TempDir, TrustStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, CA).expect("write CA");
    let trust = TrustStore::load(Some(&path)).expect("trust store");
    (dir, trust)
}

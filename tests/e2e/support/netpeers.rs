//! Small network peers for the network checks, all on `127.0.0.1`: a plain HTTP server that
//! stands in for a CRL/OCSP host, an HTTP proxy that tunnels `CONNECT` (or refuses it with
//! 403), and a TLS server that drops connections left idle, like a firewall with a short idle
//! time-out.
//!
//! Each runs on its own thread and runtime, so it works from any test, and stops when dropped.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A background server on `127.0.0.1:0`, stopped when dropped.
struct Background {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Runs `serve(listener, stop)` on its own thread.
    fn start<F, Fut>(name: &str, serve: F) -> anyhow::Result<Background>
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let listener = StdTcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true).context("non-blocking")?;
        let addr = listener.local_addr().context("bound address")?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("build the peer runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stop => {}
                        () = serve(listener) => {}
                    }
                });
            })
            .context("spawn the peer thread")?;
        Ok(Background {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads an HTTP request head (up to the blank line), byte by byte.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
        head.push(stream.read_u8().await?);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A plain HTTP server answering every request with one status, like a CRL host on port 80.
pub struct PlainHttp {
    server: Background,
}

impl PlainHttp {
    /// Starts answering `status` to every request.
    pub fn start(status: u16) -> anyhow::Result<PlainHttp> {
        let server = Background::start("plain-http", move |listener| async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if read_head(&mut stream).await.is_ok() {
                        let answer = format!(
                            "HTTP/1.1 {status} Whatever\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        })?;
        Ok(PlainHttp { server })
    }

    /// Its port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }
}

/// What the test proxy does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Tunnels `CONNECT` and forwards absolute-form requests, always to `127.0.0.1` at the
    /// requested port (every test peer lives there, whatever its DNS name).
    Forward,
    /// Answers every request with this status, as a proxy that denies (403) or wants
    /// authentication (407).
    Refuse(u16),
}

/// A tiny HTTP proxy that records the request lines it got.
pub struct ConnectProxy {
    server: Background,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// Starts the proxy.
    pub fn start(mode: ProxyMode) -> anyhow::Result<ConnectProxy> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let server = Background::start("connect-proxy", move |listener| async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let _ = proxy_one(stream, mode, &recorded).await;
                });
            }
        })?;
        Ok(ConnectProxy { server, requests })
    }

    /// `http://127.0.0.1:<port>`, as the agent's `network.proxy` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The request lines received so far (`CONNECT host:port HTTP/1.1`, `GET http://… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn proxy_one(
    mut client: TcpStream,
    mode: ProxyMode,
    recorded: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let line = head.lines().next().unwrap_or_default().to_owned();
    recorded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(line.clone());
    if let ProxyMode::Refuse(status) = mode {
        let answer =
            format!("HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let port_of = |authority: &str| -> Option<u16> { authority.rsplit_once(':')?.1.parse().ok() };
    if method == "CONNECT" {
        let Some(port) = port_of(target) else {
            return client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        };
        let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
            return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // An absolute-form request: http://host:port/path.
    let authority = target
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let port = port_of(authority).unwrap_or(80);
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
    };
    upstream.write_all(head.as_bytes()).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// A TLS server that closes every connection idle for `idle_limit`, and otherwise answers a
/// request with 401, as a relay behind a firewall with a short idle time-out would seem.
pub struct IdleDroppingTls {
    server: Background,
}

impl IdleDroppingTls {
    /// Starts serving with the given certificate chain and key (PEM).
    pub fn start(cert_pem: &str, key_pem: &str, idle_limit: Duration) -> anyhow::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse the certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse the key PEM")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("use the certificate")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let server = Background::start("idle-dropping-tls", move |listener| async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    match tokio::time::timeout(idle_limit, tls.read(&mut buf)).await {
                        // Idle too long: drop it, as the firewall would.
                        Err(_) => {
                            let _ = tls.shutdown().await;
                        }
                        Ok(Ok(n)) if n > 0 => {
                            let _ = tls
                                .write_all(b"HTTP/1.1 401 MissingToken\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            let _ = tls.shutdown().await;
                        }
                        Ok(_) => {}
                    }
                });
            }
        })?;
        Ok(IdleDroppingTls { server })
    }

    /// Its port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.server.addr.port()
    }
}

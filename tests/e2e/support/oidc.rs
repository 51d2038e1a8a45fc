//! A fake OIDC provider on loopback HTTPS (signed by a [`TestCa`]): the discovery document at
//! `<issuer>/.well-known/openid-configuration` and a JWKS that a test can change while the
//! server runs (key rotation), in the shapes Entra ID serves. It also signs tokens with its
//! keys, and counts how often the JWKS was fetched.

use std::net::TcpListener as StdTcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

use super::tls::TestCa;

/// The audience the tests configure.
pub const AUDIENCE: &str = "api://wbhealth-e2e";

/// A key the provider signs with.
pub struct SigningKey {
    /// Its key id.
    pub kid: String,
    /// The algorithm its JWK declares and tokens use.
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// Its public JWK.
    pub jwk: Value,
    /// For RSA keys, the public key as PEM (what an HS/RS confusion attack signs with).
    pub public_pem: Option<Vec<u8>>,
}

impl SigningKey {
    /// A fresh ECDSA P-256 key (ES256).
    pub fn ec(kid: &str) -> anyhow::Result<SigningKey> {
        let pair = rcgen::KeyPair::generate().context("generate a P-256 key")?;
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?;
        Self::with(kid, Algorithm::ES256, encoding, None)
    }

    /// A fresh RSA 2048 key (RS256), made by the `openssl` command; `None` without it.
    pub fn rsa(kid: &str) -> anyhow::Result<Option<SigningKey>> {
        let Ok(private) = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
        else {
            return Ok(None);
        };
        if !private.status.success() {
            return Ok(None);
        }
        let mut public = std::process::Command::new("openssl")
            .args(["pkey", "-pubout"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("run openssl pkey")?;
        {
            use std::io::Write as _;
            public
                .stdin
                .take()
                .context("openssl stdin")?
                .write_all(&private.stdout)?;
        }
        let public = public.wait_with_output()?;
        anyhow::ensure!(public.status.success(), "openssl pkey -pubout failed");
        let encoding = EncodingKey::from_rsa_pem(&private.stdout)?;
        Self::with(kid, Algorithm::RS256, encoding, Some(public.stdout)).map(Some)
    }

    fn with(
        kid: &str,
        alg: Algorithm,
        encoding: EncodingKey,
        public_pem: Option<Vec<u8>>,
    ) -> anyhow::Result<SigningKey> {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg)?;
        jwk.common.key_id = Some(kid.to_owned());
        Ok(SigningKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk: serde_json::to_value(&jwk)?,
            public_pem,
        })
    }

    /// A token with these claims, signed with this key and naming it.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        self.sign_as(self.alg, claims)
    }

    /// Like [`sign`](Self::sign) with another algorithm of the same family in the header.
    pub fn sign_as(&self, alg: Algorithm, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }
}

/// The fake provider.
pub struct FakeIdp {
    /// Its issuer URL, shaped like Entra ID's v2.0 issuer.
    pub issuer: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    /// Trusts the provider's certificate; pass as `--oidc-ca-file`.
    pub ca: TestCa,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeIdp {
    /// Starts serving `keys` on a loopback port.
    pub fn start(keys: &[&SigningKey]) -> anyhow::Result<FakeIdp> {
        let ca = TestCa::named("wbhealth fake OIDC provider CA");
        let (cert_pem, key_pem) = ca.issue(&["127.0.0.1", "localhost"]);
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse the provider certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse the key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = StdTcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let tenant = uuid::Uuid::new_v4();
        let issuer = format!("https://{addr}/{tenant}/v2.0");
        let jwks = Arc::new(Mutex::new(Value::Null));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (shutdown, stop) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let routes = Routes {
            discovery_path: format!("/{tenant}/v2.0/.well-known/openid-configuration"),
            discovery: json!({
                "issuer": issuer,
                "jwks_uri": format!("https://{addr}/{tenant}/discovery/v2.0/keys"),
                "id_token_signing_alg_values_supported": ["RS256"],
            }),
            jwks_path: format!("/{tenant}/discovery/v2.0/keys"),
            jwks: Arc::clone(&jwks),
            fetches: Arc::clone(&fetches),
        };
        let thread = std::thread::Builder::new()
            .name(format!("fake-idp-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, acceptor, Arc::new(routes), stop)))?;
        let idp = FakeIdp {
            issuer,
            jwks,
            fetches,
            ca,
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        idp.serve_keys(keys);
        Ok(idp)
    }

    /// From now on, the JWKS holds exactly `keys`.
    pub fn serve_keys(&self, keys: &[&SigningKey]) {
        let set = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        *self
            .jwks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The claims of a valid token for `roles`, for `subject`, valid for ten minutes.
    pub fn claims(&self, subject: &str, roles: &[&str]) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "oid": uuid::Uuid::new_v4(),
            "tid": self.issuer.split('/').nth(3),
            "preferred_username": format!("{subject}@customer.example"),
            "roles": roles,
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            "ver": "2.0",
        })
    }

    /// Writes a role map for `claim` with `grants` of (value, role, tenants) and returns
    /// its path (kept in `dir`).
    pub fn role_map(
        dir: &tempfile::TempDir,
        claim: &str,
        grants: &[(&str, &str, &[&str])],
    ) -> anyhow::Result<PathBuf> {
        let mut text = format!("claim = {claim:?}\n");
        for (value, role, tenants) in grants {
            text.push_str(&format!(
                "\n[[grant]]\nvalue = {value:?}\nrole = {role:?}\ntenants = {tenants:?}\n"
            ));
        }
        let path = dir.path().join("oidc-role-map.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Points `config` at this provider (discovery, its CA, `AUDIENCE`, the role map).
    pub fn configure(&self, config: &mut wbhealth_server::config::Config, role_map: PathBuf) {
        config.oidc_issuer = Some(self.issuer.clone());
        config.oidc_audience = vec![AUDIENCE.to_owned()];
        config.oidc_ca_file = Some(self.ca.pem_path().to_owned());
        config.oidc_role_map = Some(role_map);
        config.oidc_jwks_refetch_seconds = 1;
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Routes {
    discovery_path: String,
    discovery: Value,
    jwks_path: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Routes {
    fn answer(&self, path: &str) -> (u16, String) {
        if path == self.discovery_path {
            (200, self.discovery.to_string())
        } else if path == self.jwks_path {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let jwks = self
                .jwks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .to_string();
            (200, jwks)
        } else {
            (404, json!({"error": "not_found"}).to_string())
        }
    }
}

async fn serve(
    listener: StdTcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    routes: Arc<Routes>,
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
                let routes = Arc::clone(&routes);
                connections.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(acceptor, stream, &routes)).await;
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
    routes: &Routes,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(stream).await?;
    let mut buffer = Vec::new();
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0_u8; 4096];
        let read = tls.read(&mut chunk).await?;
        if read == 0 || buffer.len() > 64 * 1024 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&buffer);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = routes.answer(&path);
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Not Found" },
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

//! The server's configuration: flags, each with a `WBH_*` environment variable.
//!
//! This is the only module that reads the environment. [`Config::load`] validates everything
//! before any port is bound; a bad value becomes one line naming the setting and the fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

/// Password-writeback health for the fleets that MSPs run.
#[derive(Debug, Clone, Parser)]
#[command(name = "wbhealth-server", version, about)]
pub struct Config {
    /// Where to keep data: `sqlite://FILE` (created if missing) or `postgres://…`.
    #[arg(long, env = "WBH_DATABASE_URL", default_value = "sqlite://wbhealth.db")]
    pub database_url: String,

    /// Address of the REST API, Swagger UI and health endpoints.
    #[arg(long, env = "WBH_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC endpoint that agents connect to.
    #[arg(long, env = "WBH_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Seconds between check runs, pushed to every agent.
    #[arg(long, env = "WBH_AGENT_INTERVAL_SECONDS", default_value_t = 300)]
    pub agent_interval_seconds: u32,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "WBH_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// File holding the server's secret key (32 random bytes), which seals Graph secrets and
    /// signs sessions. Created with mode 0600 on first start when missing; every replica must
    /// use the same key, and losing it means entering the Graph secrets again.
    #[arg(long, env = "WBH_SECRET_KEY_FILE", default_value = "wbhealth.key")]
    pub secret_key_file: PathBuf,

    /// The secret key itself, base64 (standard alphabet) of 32 bytes; takes precedence over
    /// `--secret-key-file`. For deployments that inject secrets through the environment.
    #[arg(long = "secret-key", env = "WBH_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<SecretString>,

    /// Seconds between two cloud-check runs of a tenant (Microsoft Graph), 60 to 86400.
    #[arg(long, env = "WBH_CLOUD_CHECK_INTERVAL_SECONDS", default_value_t = 3600)]
    pub cloud_check_interval_seconds: u32,

    /// How many tenants' cloud checks run at once, 1 to 64.
    #[arg(long, env = "WBH_CLOUD_CHECK_CONCURRENCY", default_value_t = 4)]
    pub cloud_check_concurrency: u32,

    /// Seconds one tenant's cloud run may take in all before it is cut off, 5 to 3600.
    #[arg(long, env = "WBH_CLOUD_CHECK_TIMEOUT_SECONDS", default_value_t = 300)]
    pub cloud_check_timeout_seconds: u32,

    /// Seconds one Graph or login request may take, 1 to 300.
    #[arg(long, env = "WBH_GRAPH_REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    pub graph_request_timeout_seconds: u32,

    /// Replaces the login authority of every cloud (such as `https://login.example:8443`);
    /// for tests and private endpoints. By default each credential's cloud decides.
    #[arg(long, env = "WBH_GRAPH_AUTHORITY_URL")]
    pub graph_authority_url: Option<String>,

    /// Replaces the Microsoft Graph base URL of every cloud (such as `https://graph.example`).
    #[arg(long, env = "WBH_GRAPH_BASE_URL")]
    pub graph_base_url: Option<String>,

    /// A PEM file of extra CA certificates trusted for login and Graph, besides the system's.
    #[arg(long, env = "WBH_GRAPH_CA_FILE")]
    pub graph_ca_file: Option<PathBuf>,
    /// Minutes a session token from `POST /api/v1/sign-in` stays valid.
    #[arg(long, env = "WBH_SESSION_TOKEN_MINUTES", default_value_t = 60)]
    pub session_token_minutes: u32,

    /// Issuer (`iss`) of the external OIDC provider whose access tokens are accepted as bearer
    /// tokens, such as `https://login.microsoftonline.com/<tenant id>/v2.0` for Entra ID.
    /// Unset: no OIDC.
    #[arg(long, env = "WBH_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// Accepted audiences (`aud`) of OIDC tokens, comma-separated: for Entra ID the API's
    /// application id URI (`api://…`) or its client id.
    #[arg(long, env = "WBH_OIDC_AUDIENCE", value_delimiter = ',')]
    pub oidc_audience: Vec<String>,

    /// The provider's JWKS URL; unset: `jwks_uri` from `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "WBH_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,

    /// A PEM file of extra CA certificates to trust when fetching the discovery document and
    /// JWKS (besides the system's).
    #[arg(long, env = "WBH_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,

    /// TOML file mapping values of a token claim (`roles` or `groups`) to a wbhealth role and
    /// tenants; see `deploy/oidc-role-map.example.toml`. Required with `--oidc-issuer`.
    #[arg(long, env = "WBH_OIDC_ROLE_MAP")]
    pub oidc_role_map: Option<PathBuf>,

    /// Fewest seconds between two JWKS fetches caused by a token with an unknown key id.
    #[arg(long, env = "WBH_OIDC_JWKS_REFETCH_SECONDS", default_value_t = 60)]
    pub oidc_jwks_refetch_seconds: u32,

    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For`
    /// names the client, for the failed-authentication limit and the audit log. From any other
    /// peer the header is ignored.
    #[arg(long, env = "WBH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpRange>,

    /// PEM file with the server's certificate chain (leaf first), served on both listeners.
    /// With `--tls-key`, REST and gRPC speak only HTTPS. `wbhealth-server dev-certs` makes a
    /// pair for trying it out.
    #[arg(long, env = "WBH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WBH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP on addresses other than loopback. Without TLS the server refuses to,
    /// since API keys and agent credentials would cross the network in clear text; use it
    /// only behind a proxy that terminates TLS.
    #[arg(long, env = "WBH_ALLOW_PLAIN_HTTP")]
    pub allow_plain_http: bool,

    /// Mutual TLS for agents: each agent gets a client certificate at enrollment, and a
    /// session needs both that certificate and the agent's credential. Needs `--tls-cert`.
    /// Agents enrolled before it was turned on must enroll again.
    #[arg(long, env = "WBH_AGENT_MTLS")]
    pub agent_mtls: bool,

    /// File holding the key of the agent CA that signs agents' client certificates, sealed
    /// with the secret key. Created on first start with `--agent-mtls`; every replica needs
    /// the same file.
    #[arg(
        long,
        env = "WBH_AGENT_CA_KEY_FILE",
        default_value = "wbhealth-agent-ca.key"
    )]
    pub agent_ca_key_file: PathBuf,
}

/// The server's certificate and key, read and checked at start-up.
pub struct TlsFiles {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: secrecy::SecretBox<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").finish_non_exhaustive()
    }
}

/// `wbhealth-server dev-certs`: a development CA and a server certificate signed by it.
#[derive(Debug, Clone, Parser)]
#[command(name = "wbhealth-server dev-certs")]
pub struct DevCertsArgs {
    /// Folder to write `ca.pem`, `server.pem` and `server-key.pem` into (created if missing).
    #[arg(long, default_value = "dev-certs")]
    pub out: PathBuf,

    /// A DNS name or IP address agents and browsers use to reach the server; repeat for more.
    /// The first also names the certificate.
    #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
    pub hosts: Vec<String>,
}

impl DevCertsArgs {
    /// Parses the arguments after `dev-certs`; `--help` prints and exits 0.
    pub fn load(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Self, ConfigError> {
        let parsed = match DevCertsArgs::try_parse_from(args) {
            Ok(parsed) => parsed,
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.exit(),
            Err(e) => {
                let rendered = e.render().to_string();
                let first = rendered
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
                    .to_owned();
                return Err(ConfigError {
                    setting: "dev-certs",
                    problem: format!("{first}; run wbhealth-server dev-certs --help"),
                });
            }
        };
        if let Some(bad) = parsed.hosts.iter().find(|h| {
            h.is_empty() || h.contains(['/', ':', ' ']) && h.parse::<std::net::IpAddr>().is_err()
        }) {
            return Err(ConfigError {
                setting: "dev-certs --host",
                problem: format!("{bad:?} is neither a DNS name nor an IP address"),
            });
        }
        Ok(parsed)
    }
}

/// An address or a CIDR range of addresses, such as `10.0.0.0/8` or `::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let network: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range such as 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a prefix length outside 0..={max}"))?
        };
        Ok(IpRange { network, prefix })
    }
}

/// The validated OIDC settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The expected `iss`.
    pub issuer: String,
    /// The accepted `aud` values.
    pub audiences: Vec<String>,
    /// Where the keys are; `None`: discover them from the issuer.
    pub jwks_url: Option<String>,
    /// Extra trusted CA certificates (PEM), if any.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// The claim mapping.
    pub role_map: crate::oidc::RoleMap,
    /// Fewest seconds between two fetches caused by an unknown key id.
    pub refetch_interval: Duration,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A bad setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The flag and its environment variable.
    pub setting: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl Config {
    /// Parses the command line and the environment, then validates.
    ///
    /// `--help` and `--version` print and exit 0 here; any other problem is a [`ConfigError`].
    pub fn load() -> Result<Config, ConfigError> {
        let config = match Config::try_parse() {
            Ok(config) => config,
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                e.exit()
            }
            Err(e) => {
                let rendered = e.render().to_string();
                let first = rendered
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ");
                return Err(ConfigError {
                    setting: "command line",
                    problem: format!("{first}; run with --help"),
                });
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError {
                setting: "--database-url / WBH_DATABASE_URL",
                problem: format!("{url:?} is neither sqlite://FILE nor postgres://USER@HOST/DB"),
            });
        }
        if !(10..=86_400).contains(&self.agent_interval_seconds) {
            return Err(ConfigError {
                setting: "--agent-interval-seconds / WBH_AGENT_INTERVAL_SECONDS",
                problem: format!(
                    "{} is out of range; use 10 to 86400 seconds",
                    self.agent_interval_seconds
                ),
            });
        }
        if self.http_addr == self.grpc_addr && self.http_addr.port() != 0 {
            return Err(ConfigError {
                setting: "--grpc-addr / WBH_GRPC_ADDR",
                problem: format!(
                    "{} is also the REST address; give each listener its own port",
                    self.grpc_addr
                ),
            });
        }
        if let Some(key) = &self.secret_key {
            self.secret_key_bytes(key)?;
        }
        self.tls()?;
        if self.agent_mtls && self.tls_cert.is_none() {
            return Err(ConfigError {
                setting: "--agent-mtls / WBH_AGENT_MTLS",
                problem: "mutual TLS needs TLS; give --tls-cert and --tls-key too".into(),
            });
        }
        if self.tls_cert.is_none() && !self.allow_plain_http {
            for (setting, addr) in [
                ("--http-addr / WBH_HTTP_ADDR", self.http_addr),
                ("--grpc-addr / WBH_GRPC_ADDR", self.grpc_addr),
            ] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError {
                        setting,
                        problem: format!(
                            "{addr} is not loopback and TLS is off; give --tls-cert and --tls-key (try `wbhealth-server dev-certs`), or pass --allow-plain-http behind a TLS-terminating proxy"
                        ),
                    });
                }
            }
        }
        for (setting, value, range) in [
            (
                "--cloud-check-interval-seconds / WBH_CLOUD_CHECK_INTERVAL_SECONDS",
                self.cloud_check_interval_seconds,
                60..=86_400,
            ),
            (
                "--cloud-check-concurrency / WBH_CLOUD_CHECK_CONCURRENCY",
                self.cloud_check_concurrency,
                1..=64,
            ),
            (
                "--cloud-check-timeout-seconds / WBH_CLOUD_CHECK_TIMEOUT_SECONDS",
                self.cloud_check_timeout_seconds,
                5..=3600,
            ),
            (
                "--graph-request-timeout-seconds / WBH_GRAPH_REQUEST_TIMEOUT_SECONDS",
                self.graph_request_timeout_seconds,
                1..=300,
            ),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError {
                    setting,
                    problem: format!(
                        "{value} is out of range; use {} to {}",
                        range.start(),
                        range.end()
                    ),
                });
            }
        }
        for (setting, url) in [
            (
                "--graph-authority-url / WBH_GRAPH_AUTHORITY_URL",
                &self.graph_authority_url,
            ),
            (
                "--graph-base-url / WBH_GRAPH_BASE_URL",
                &self.graph_base_url,
            ),
        ] {
            if let Some(url) = url
                && !url.starts_with("https://")
            {
                return Err(ConfigError {
                    setting,
                    problem: format!(
                        "{url:?} is not an https:// URL; give one such as https://graph.example"
                    ),
                });
            }
        }
        if let Some(path) = &self.graph_ca_file
            && !path.is_file()
        {
            return Err(ConfigError {
                setting: "--graph-ca-file / WBH_GRAPH_CA_FILE",
                problem: format!(
                    "{} is not a readable file; give a PEM file of CA certificates",
                    path.display()
                ),
            });
        }
        if !(1..=1440).contains(&self.session_token_minutes) {
            return Err(ConfigError {
                setting: "--session-token-minutes / WBH_SESSION_TOKEN_MINUTES",
                problem: format!(
                    "{} is out of range; use 1 to 1440 minutes",
                    self.session_token_minutes
                ),
            });
        }
        self.oidc()?;
        Ok(())
    }

    /// The OIDC settings, with the role map read and checked; `None` without `--oidc-issuer`.
    pub fn oidc(&self) -> Result<Option<OidcSettings>, ConfigError> {
        let Some(issuer) = &self.oidc_issuer else {
            if self.oidc_role_map.is_some()
                || !self.oidc_audience.is_empty()
                || self.oidc_jwks_url.is_some()
            {
                return Err(ConfigError {
                    setting: "--oidc-issuer / WBH_OIDC_ISSUER",
                    problem: "is not set but other --oidc-* settings are; set the provider's issuer URL or remove them".into(),
                });
            }
            return Ok(None);
        };
        // Each token with an unknown key id may cause a fetch: without a floor, made-up key
        // ids would make the server fetch the JWKS for every request.
        if self.oidc_jwks_refetch_seconds < 1 {
            return Err(ConfigError {
                setting: "--oidc-jwks-refetch-seconds / WBH_OIDC_JWKS_REFETCH_SECONDS",
                problem: format!(
                    "{} is too short; use 1 second or more (60 by default)",
                    self.oidc_jwks_refetch_seconds
                ),
            });
        }
        if !issuer.starts_with("https://") {
            return Err(ConfigError {
                setting: "--oidc-issuer / WBH_OIDC_ISSUER",
                problem: format!(
                    "{issuer:?} is not an https:// URL; use the provider's issuer exactly as its tokens carry it"
                ),
            });
        }
        let audiences: Vec<String> = self
            .oidc_audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(ConfigError {
                setting: "--oidc-audience / WBH_OIDC_AUDIENCE",
                problem: "is required with --oidc-issuer; give the audience (aud) the provider puts in tokens for wbhealth".into(),
            });
        }
        if let Some(url) = &self.oidc_jwks_url
            && !url.starts_with("https://")
        {
            return Err(ConfigError {
                setting: "--oidc-jwks-url / WBH_OIDC_JWKS_URL",
                problem: format!("{url:?} is not an https:// URL"),
            });
        }
        let extra_ca_pem = match &self.oidc_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| ConfigError {
                setting: "--oidc-ca-file / WBH_OIDC_CA_FILE",
                problem: format!(
                    "cannot read {}: {e}; give a readable PEM file",
                    path.display()
                ),
            })?),
            None => None,
        };
        let Some(map_path) = &self.oidc_role_map else {
            return Err(ConfigError {
                setting: "--oidc-role-map / WBH_OIDC_ROLE_MAP",
                problem: "is required with --oidc-issuer; write one like deploy/oidc-role-map.example.toml".into(),
            });
        };
        let role_map = std::fs::read_to_string(map_path)
            .map_err(|e| format!("cannot read {}: {e}", map_path.display()))
            .and_then(|text| crate::oidc::RoleMap::parse(&text))
            .map_err(|problem| ConfigError {
                setting: "--oidc-role-map / WBH_OIDC_ROLE_MAP",
                problem: format!("{problem}; see deploy/oidc-role-map.example.toml"),
            })?;
        Ok(Some(OidcSettings {
            issuer: issuer.clone(),
            audiences,
            jwks_url: self.oidc_jwks_url.clone(),
            extra_ca_pem,
            role_map,
            refetch_interval: Duration::from_secs(u64::from(self.oidc_jwks_refetch_seconds)),
        }))
    }

    /// How long session tokens stay valid.
    pub fn session_token_lifetime(&self) -> time::Duration {
        time::Duration::minutes(i64::from(self.session_token_minutes))
    }

    /// The certificate and key, when TLS is configured; checked to parse as a chain and a key.
    pub fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let cert_pem = std::fs::read(cert).map_err(|e| ConfigError {
            setting: "--tls-cert / WBH_TLS_CERT",
            problem: format!(
                "cannot read {}: {e}; give a PEM certificate file",
                cert.display()
            ),
        })?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        if chain.is_empty() {
            return Err(ConfigError {
                setting: "--tls-cert / WBH_TLS_CERT",
                problem: format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the server's certificate chain",
                    cert.display()
                ),
            });
        }
        let key_pem = std::fs::read(key).map_err(|e| ConfigError {
            setting: "--tls-key / WBH_TLS_KEY",
            problem: format!(
                "cannot read {}: {e}; give the PEM private key of --tls-cert",
                key.display()
            ),
        })?;
        if !matches!(
            rustls_pemfile::private_key(&mut key_pem.as_slice()),
            Ok(Some(_))
        ) {
            return Err(ConfigError {
                setting: "--tls-key / WBH_TLS_KEY",
                problem: format!(
                    "{} holds no PEM private key; give the key of --tls-cert (PKCS#8, PKCS#1 or SEC1)",
                    key.display()
                ),
            });
        }
        Ok(Some(TlsFiles {
            cert_pem,
            key_pem: secrecy::SecretBox::new(Box::new(key_pem)),
        }))
    }

    fn secret_key_bytes(&self, key: &SecretString) -> Result<[u8; 32], ConfigError> {
        base64::engine::general_purpose::STANDARD
            .decode(key.expose_secret().trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(ConfigError {
                setting: "--secret-key / WBH_SECRET_KEY",
                problem:
                    "is not base64 of exactly 32 bytes; make one with `openssl rand -base64 32`"
                        .into(),
            })
    }

    /// The secret key given inline, if any (already validated).
    pub fn inline_secret_key(&self) -> Option<[u8; 32]> {
        self.secret_key
            .as_ref()
            .and_then(|key| self.secret_key_bytes(key).ok())
    }

    /// The interval pushed to agents.
    pub fn agent_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.agent_interval_seconds))
    }

    /// A configuration for tests: SQLite at `database_url`, both listeners on port 0.
    pub fn for_tests(database_url: impl Into<String>) -> Config {
        Config {
            database_url: database_url.into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            agent_interval_seconds: 300,
            log_format: LogFormat::Text,
            secret_key_file: PathBuf::from("wbhealth.key"),
            secret_key: Some(SecretString::from(
                base64::engine::general_purpose::STANDARD
                    .encode(crate::domain::MasterKey::generate()),
            )),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            agent_mtls: false,
            agent_ca_key_file: PathBuf::from("wbhealth-agent-ca.key"),
            cloud_check_interval_seconds: 3600,
            cloud_check_concurrency: 4,
            cloud_check_timeout_seconds: 300,
            graph_request_timeout_seconds: 30,
            graph_authority_url: None,
            graph_base_url: None,
            graph_ca_file: None,
            session_token_minutes: 60,
            oidc_issuer: None,
            oidc_audience: Vec::new(),
            oidc_jwks_url: None,
            oidc_ca_file: None,
            oidc_role_map: None,
            oidc_jwks_refetch_seconds: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, IpRange, PathBuf};

    #[test]
    fn bad_oidc_settings_name_the_setting_and_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let map = dir.path().join("map.toml");
        std::fs::write(
            &map,
            "claim = \"roles\"\n[[grant]]\nvalue = \"a\"\nrole = \"administrator\"\n",
        )
        .expect("write the map");
        let good = || {
            let mut config = Config::for_tests("sqlite://x.db");
            config.oidc_issuer = Some("https://login.example/tenant/v2.0".into());
            config.oidc_audience = vec!["api://wbhealth".into()];
            config.oidc_role_map = Some(map.clone());
            config
        };
        assert!(good().validate().is_ok());
        type Change<'a> = &'a dyn Fn(&mut Config);
        let cases: [(Change, &str); 7] = [
            (
                &|c| c.oidc_jwks_refetch_seconds = 0,
                "--oidc-jwks-refetch-seconds",
            ),
            (
                &|c| c.oidc_issuer = Some("http://login.example".into()),
                "--oidc-issuer",
            ),
            (&|c| c.oidc_audience.clear(), "--oidc-audience"),
            (&|c| c.oidc_role_map = None, "--oidc-role-map"),
            (
                &|c| c.oidc_role_map = Some("/nonexistent/map.toml".into()),
                "--oidc-role-map",
            ),
            (
                &|c| c.oidc_jwks_url = Some("http://keys.example".into()),
                "--oidc-jwks-url",
            ),
            (&|c| c.oidc_issuer = None, "--oidc-issuer"),
        ];
        for (change, setting) in cases {
            let mut config = good();
            change(&mut config);
            let e = config.validate().expect_err(setting);
            assert!(e.setting.starts_with(setting), "{setting}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        let mut config = Config::for_tests("sqlite://x.db");
        config.session_token_minutes = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn ip_ranges_contain_what_they_should() {
        let range: IpRange = "10.1.0.0/16".parse().expect("range");
        assert!(range.contains([10, 1, 200, 3].into()));
        assert!(!range.contains([10, 2, 0, 1].into()));
        let one: IpRange = "127.0.0.1".parse().expect("address");
        assert!(one.contains([127, 0, 0, 1].into()));
        assert!(!one.contains([127, 0, 0, 2].into()));
        assert!(one.contains("::ffff:127.0.0.1".parse().expect("mapped")));
        let all: IpRange = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains([192, 0, 2, 1].into()));
        let v6: IpRange = "fd00::/8".parse().expect("v6");
        assert!(v6.contains("fd12::1".parse().expect("v6")));
        assert!(!v6.contains([10, 0, 0, 1].into()));
        for bad in ["10.0.0.0/33", "proxy.example", "fd00::/129", "10.0.0.0/x"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_cloud_check_settings_name_the_setting_and_the_fix() {
        let mut config = Config::for_tests("sqlite::memory:");
        assert!(config.validate().is_ok());
        config.cloud_check_interval_seconds = 5;
        let e = config.validate().expect_err("too short an interval");
        assert_eq!(
            e.setting,
            "--cloud-check-interval-seconds / WBH_CLOUD_CHECK_INTERVAL_SECONDS"
        );
        assert!(e.problem.contains("use 60 to 86400"), "{e}");
        let mut config = Config::for_tests("sqlite::memory:");
        config.graph_base_url = Some("http://graph.example".into());
        let e = config.validate().expect_err("plain http");
        assert!(
            e.to_string()
                .starts_with("--graph-base-url / WBH_GRAPH_BASE_URL: "),
            "{e}"
        );
        let mut config = Config::for_tests("sqlite::memory:");
        config.graph_ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        assert!(config.validate().is_err());
    }
}

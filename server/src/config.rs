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
        Ok(())
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
        }
    }
}

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
        Ok(())
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
            cloud_check_interval_seconds: 3600,
            cloud_check_concurrency: 4,
            cloud_check_timeout_seconds: 300,
            graph_request_timeout_seconds: 30,
            graph_authority_url: None,
            graph_base_url: None,
            graph_ca_file: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The agent's configuration: a TOML file, overridden by `WBH_*` environment variables.
//!
//! This is the only module that reads the environment. A bad value is reported as one
//! [`ConfigError`] line naming the setting and the fix; `main` exits with status 64 for it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// The default password reset service endpoint (public cloud).
pub const DEFAULT_PASSWORDRESET_ENDPOINTS: &[&str] = &["passwordreset.microsoftonline.com:443"];
/// The Service Bus relay hosts Microsoft names for testing writeback (public cloud).
pub const DEFAULT_SERVICEBUS_ENDPOINTS: &[&str] = &[
    "ssprdedicatedsbprodscu.servicebus.windows.net:443",
    "ssprdedicatedsbprodncu.servicebus.windows.net:443",
];
/// The Entra Connect endpoints of the public cloud probed besides writeback's own (§4.2 of the
/// reference: sign-in, the provisioning web service that Microsoft's proxy test uses).
pub const DEFAULT_CONNECT_ENDPOINTS: &[&str] = &[
    "login.microsoftonline.com:443",
    "adminwebservice.microsoftonline.com:443",
    "provisioningapi.microsoftonline.com:443",
    "login.windows.net:443",
];
/// The certificate revocation (CRL) and OCSP hosts of the public cloud, on plain HTTP (NET-08).
pub const DEFAULT_CRL_ENDPOINTS: &[&str] = &[
    "mscrl.microsoft.com:80",
    "crl.microsoft.com:80",
    "oneocsp.microsoft.com:80",
    "ocsp.msocsp.com:80",
    "crl3.digicert.com:80",
    "crl4.digicert.com:80",
    "ocsp.digicert.com:80",
];
/// Text that the issuer of a genuine Microsoft endpoint certificate contains (NET-07): its
/// issuing CAs belong to Microsoft or DigiCert.
pub const DEFAULT_ACCEPTED_ISSUERS: &[&str] = &["O=Microsoft Corporation", "O=DigiCert"];
/// The TCP ports of a domain controller that the sync server needs (NET-09): DNS, Kerberos,
/// RPC endpoint mapper, LDAP, SMB and LDAPS.
pub const DEFAULT_DC_PORTS: &[u16] = &[53, 88, 135, 389, 445, 636];
/// A sample of the dynamic RPC range 49152–65535 probed on each domain controller (NET-09).
pub const DEFAULT_DC_DYNAMIC_PORTS: &[u16] = &[49152, 49664, 65535];
/// How long the idle-hold probe stays idle by default: past the 4–6 minutes that breaks the relay.
pub const DEFAULT_IDLE_HOLD: Duration = Duration::from_secs(300);

/// How many users in scope the directory probe reads by default.
pub const DEFAULT_MAX_USERS: usize = 500;

/// A bad configuration value: which setting, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The setting, as written in the file or the environment (`ldap.host`, `WBH_LDAP_HOST`).
    pub setting: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl ConfigError {
    fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            problem: problem.into(),
        }
    }
}

/// Everything the agent needs to run its checks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The folder that holds the credential and the report spool.
    pub state_dir: PathBuf,
    /// How to reach a domain controller; `None` when not configured, in which case the
    /// directory checks report `error` saying so.
    pub ldap: Option<LdapSettings>,
    /// How to probe Microsoft's endpoints.
    pub network: NetworkSettings,
    /// Where the host facts come from: this machine (the default) or a snapshot file, which
    /// `diagnose --snapshot` sets.
    pub host: crate::host::HostSource,
    /// A PEM file of CA certificates to trust for an `https://` wbhealth server instead of the
    /// system's store (a private or development CA).
    pub server_ca_file: Option<PathBuf>,
}

/// How LDAP is secured. Domain controllers refuse simple binds over plain LDAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LdapSecurity {
    /// TLS from the first byte, port 636 by default.
    Ldaps,
    /// Plain LDAP upgraded with StartTLS, port 389 by default.
    Starttls,
}

/// How to reach and bind to a domain controller.
#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// The DC's host name, as its certificate names it.
    pub host: String,
    /// The port; 636 for LDAPS and 389 for StartTLS when not set.
    pub port: u16,
    /// LDAPS or StartTLS.
    pub security: LdapSecurity,
    /// The account to bind as: a DN, `user@domain` or `DOMAIN\user`.
    pub bind_dn: String,
    /// Its password.
    pub bind_password: SecretString,
    /// A PEM file of CA certificates to trust for the DC, besides the system store.
    pub ca_file: Option<PathBuf>,
    /// Time-out for connecting and for each operation.
    pub timeout: Duration,
    /// The AD DS connector account (`MSOL_abc123`, `CONTOSO\\MSOL_abc123`, a UPN or a DN), whose
    /// rights the permission checks evaluate; `None` when not configured.
    pub connector_account: Option<String>,
    /// The OUs (or the domain head) whose users and OUs are in scope; empty for the domain head.
    pub scope_dns: Vec<String>,
    /// How many users in scope the probe reads at most.
    pub max_users: usize,
    /// How long a change may take to reach every DC before a DC that lacks it counts as
    /// behind (AD-05). Replication within a site takes seconds; between sites the default
    /// schedule is every 180 minutes, so sites replicating on a schedule may want more.
    pub replication_grace: Duration,
    /// The Cloud Sync provisioning agent's gMSA, whose writeback rights CS-04 evaluates when it
    /// exists in the domain (`provAgentgMSA$` unless the admin chose another at install).
    pub cloud_sync_account: String,
}

/// The gMSA the Cloud Sync provisioning agent creates by default.
pub const DEFAULT_CLOUD_SYNC_ACCOUNT: &str = "provAgentgMSA$";

/// The default of `ldap.replication_grace_minutes`.
pub const DEFAULT_REPLICATION_GRACE: Duration = Duration::from_secs(15 * 60);

/// A `host:port` to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The DNS name.
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port`.
    pub fn parse(s: &str) -> Option<Endpoint> {
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse().ok()?;
        (!host.is_empty() && !host.contains(['/', ' '])).then(|| Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How to probe Microsoft's endpoints.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// DNS servers to ask instead of the system's resolver configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// A PEM file of CA certificates to trust besides the system store.
    pub extra_ca_file: Option<PathBuf>,
    /// The password reset service endpoints (NET-01).
    pub passwordreset_endpoints: Vec<Endpoint>,
    /// The Service Bus relay endpoints (NET-02).
    pub servicebus_endpoints: Vec<Endpoint>,
    /// The other Entra Connect endpoints (§4.2), probed like the writeback ones.
    pub connect_endpoints: Vec<Endpoint>,
    /// The CRL and OCSP endpoints, probed with a plain HTTP GET (NET-08).
    pub crl_endpoints: Vec<Endpoint>,
    /// Issuer texts that mark a genuine Microsoft certificate; any other issuer on an
    /// established session is reported as possible TLS inspection (NET-07).
    pub accepted_issuers: Vec<String>,
    /// The TCP ports to test on the configured DC and the PDC emulator (NET-09).
    pub dc_ports: Vec<u16>,
    /// Sampled ports of the dynamic RPC range to test on them (NET-09).
    pub dc_dynamic_ports: Vec<u16>,
    /// Whether to test the legacy relay ports 9350–9354 (NET-10).
    pub legacy_relay_ports: bool,
    /// The HTTP proxy the probes go through, when one is set.
    pub proxy: Option<Proxy>,
    /// The idle-hold probe (NET-04): `Some(how long to stay idle)` when enabled.
    pub idle_hold: Option<Duration>,
    /// How long the idle-hold probe stays idle when `--idle-hold` turns it on.
    pub idle_hold_duration: Duration,
    /// Time-out for each DNS lookup, connection and handshake.
    pub timeout: Duration,
}

/// An HTTP proxy: TLS goes through it with `CONNECT`, plain HTTP with absolute-form requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Its host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Proxy {
    /// Parses `http://host:port`; the port must be written out.
    pub fn parse(s: &str) -> Option<Proxy> {
        let rest = s.trim().strip_prefix("http://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let endpoint = Endpoint::parse(rest)?;
        Some(Proxy {
            host: endpoint.host,
            port: endpoint.port,
        })
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    server: FileServer,
    ldap: Option<FileLdap>,
    #[serde(default)]
    network: FileNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLdap {
    host: Option<String>,
    port: Option<u16>,
    security: Option<LdapSecurity>,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    ca_file: Option<PathBuf>,
    timeout_seconds: Option<u64>,
    connector_account: Option<String>,
    scope_dns: Option<Vec<String>>,
    max_users: Option<usize>,
    replication_grace_minutes: Option<u64>,
    cloud_sync_account: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    dns_servers: Option<Vec<String>>,
    extra_ca_file: Option<PathBuf>,
    passwordreset_endpoints: Option<Vec<String>>,
    servicebus_endpoints: Option<Vec<String>>,
    connect_endpoints: Option<Vec<String>>,
    crl_endpoints: Option<Vec<String>>,
    accepted_issuers: Option<Vec<String>>,
    dc_ports: Option<Vec<u16>>,
    dc_dynamic_ports: Option<Vec<u16>>,
    legacy_relay_ports: Option<bool>,
    proxy: Option<String>,
    idle_hold: Option<bool>,
    idle_hold_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
}

/// The default configuration file: `%ProgramData%\wbhealth\agent.toml` on Windows,
/// `/etc/wbhealth/agent.toml` elsewhere.
pub fn default_config_path() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("wbhealth").join("agent.toml")
    } else {
        PathBuf::from("/etc/wbhealth/agent.toml")
    }
}

fn default_state_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").unwrap_or_else(|| "C:\\ProgramData".into());
        PathBuf::from(base).join("wbhealth").join("state")
    } else {
        PathBuf::from("/var/lib/wbhealth-agent")
    }
}

/// Reads the configuration. `path` is the `--config` flag: a file named there must exist;
/// the default file may be absent. `state_dir` is the `--state-dir` flag.
pub fn load(path: Option<&Path>, state_dir: Option<&Path>) -> Result<Settings, ConfigError> {
    let file = match path {
        Some(p) => read_file(p, true)?,
        None => {
            let env_path = env("WBH_AGENT_CONFIG").map(PathBuf::from);
            match env_path {
                Some(p) => read_file(&p, true)?,
                None => read_file(&default_config_path(), false)?,
            }
        }
    };
    resolve(file, state_dir)
}

fn read_file(path: &Path, must_exist: bool) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(ConfigError::new(
                "--config",
                format!(
                    "cannot read {}: {e}; pass an existing TOML file",
                    path.display()
                ),
            ));
        }
    };
    toml::from_str(&text).map_err(|e| {
        let what = e.message().to_owned();
        ConfigError::new(
            path.display().to_string(),
            format!("{what}; see deploy/agent.example.toml for the accepted settings"),
        )
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_seconds(
    setting: &str,
    raw: Option<u64>,
    env_name: &str,
    default: u64,
) -> Result<Duration, ConfigError> {
    let value = match env(env_name) {
        Some(v) => v.parse::<u64>().map_err(|_| {
            ConfigError::new(env_name, format!("{v:?} is not a whole number of seconds"))
        })?,
        None => raw.unwrap_or(default),
    };
    if value == 0 || value > 600 {
        return Err(ConfigError::new(
            setting,
            format!("{value} is out of range; use 1 to 600 seconds"),
        ));
    }
    Ok(Duration::from_secs(value))
}

fn parse_endpoints(setting: &str, values: Vec<String>) -> Result<Vec<Endpoint>, ConfigError> {
    values
        .iter()
        .map(|v| {
            Endpoint::parse(v).ok_or_else(|| {
                ConfigError::new(
                    setting,
                    format!("{v:?} is not host:port, as in passwordreset.microsoftonline.com:443"),
                )
            })
        })
        .collect()
}

fn list_from_env(name: &str) -> Option<Vec<String>> {
    env(name).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn resolve(file: FileConfig, state_dir_flag: Option<&Path>) -> Result<Settings, ConfigError> {
    let state_dir = state_dir_flag
        .map(Path::to_path_buf)
        .or_else(|| env("WBH_AGENT_STATE_DIR").map(PathBuf::from))
        .or(file.state_dir)
        .unwrap_or_else(default_state_dir);

    let net = file.network;
    let dns_servers = match list_from_env("WBH_DNS_SERVERS").or(net.dns_servers) {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        ConfigError::new(
                            "network.dns_servers",
                            format!("{s:?} is not an IP address such as 10.0.0.10"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let passwordreset_endpoints = parse_endpoints(
        "network.passwordreset_endpoints",
        list_from_env("WBH_PASSWORDRESET_ENDPOINTS")
            .or(net.passwordreset_endpoints)
            .unwrap_or_else(|| {
                DEFAULT_PASSWORDRESET_ENDPOINTS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
    )?;
    let servicebus_endpoints = parse_endpoints(
        "network.servicebus_endpoints",
        list_from_env("WBH_SERVICEBUS_ENDPOINTS")
            .or(net.servicebus_endpoints)
            .unwrap_or_else(|| {
                DEFAULT_SERVICEBUS_ENDPOINTS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            }),
    )?;
    let extra_ca_file = env("WBH_EXTRA_CA_FILE")
        .map(PathBuf::from)
        .or(net.extra_ca_file);
    check_readable("network.extra_ca_file", extra_ca_file.as_deref())?;
    let defaults = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let connect_endpoints = parse_endpoints(
        "network.connect_endpoints",
        list_from_env("WBH_CONNECT_ENDPOINTS")
            .or(net.connect_endpoints)
            .unwrap_or_else(|| defaults(DEFAULT_CONNECT_ENDPOINTS)),
    )?;
    let crl_endpoints = parse_endpoints(
        "network.crl_endpoints",
        list_from_env("WBH_CRL_ENDPOINTS")
            .or(net.crl_endpoints)
            .unwrap_or_else(|| defaults(DEFAULT_CRL_ENDPOINTS)),
    )?;
    let accepted_issuers = net
        .accepted_issuers
        .unwrap_or_else(|| defaults(DEFAULT_ACCEPTED_ISSUERS));
    if accepted_issuers.iter().any(|i| i.trim().is_empty()) {
        return Err(ConfigError::new(
            "network.accepted_issuers",
            "an empty entry would accept every issuer; list texts such as \"O=DigiCert\"",
        ));
    }
    let proxy = match env("WBH_PROXY").or(net.proxy) {
        None => None,
        Some(text) => Some(Proxy::parse(&text).ok_or_else(|| {
            ConfigError::new(
                "network.proxy",
                format!("{text:?} is not http://host:port, as in http://proxy.contoso.com:8080"),
            )
        })?),
    };
    let idle_hold_duration = match net.idle_hold_seconds {
        None => DEFAULT_IDLE_HOLD,
        Some(secs) if (1..=3600).contains(&secs) => Duration::from_secs(secs),
        Some(secs) => {
            return Err(ConfigError::new(
                "network.idle_hold_seconds",
                format!("{secs} is out of range; use 1 to 3600 seconds (default 300)"),
            ));
        }
    };
    let network = NetworkSettings {
        dns_servers,
        extra_ca_file,
        passwordreset_endpoints,
        servicebus_endpoints,
        connect_endpoints,
        crl_endpoints,
        accepted_issuers,
        dc_ports: net.dc_ports.unwrap_or_else(|| DEFAULT_DC_PORTS.to_vec()),
        dc_dynamic_ports: net
            .dc_dynamic_ports
            .unwrap_or_else(|| DEFAULT_DC_DYNAMIC_PORTS.to_vec()),
        legacy_relay_ports: net.legacy_relay_ports.unwrap_or(false),
        proxy,
        idle_hold: net.idle_hold.unwrap_or(false).then_some(idle_hold_duration),
        idle_hold_duration,
        timeout: parse_seconds(
            "network.timeout_seconds",
            net.timeout_seconds,
            "WBH_NETWORK_TIMEOUT_SECONDS",
            10,
        )?,
    };

    let file_ldap = file.ldap.unwrap_or_default();
    let host = env("WBH_LDAP_HOST").or(file_ldap.host);
    let ldap = match host {
        None => None,
        Some(host) => {
            let security = match env("WBH_LDAP_SECURITY") {
                Some(v) => match v.as_str() {
                    "ldaps" => LdapSecurity::Ldaps,
                    "starttls" => LdapSecurity::Starttls,
                    _ => {
                        return Err(ConfigError::new(
                            "WBH_LDAP_SECURITY",
                            format!("{v:?} is neither ldaps nor starttls"),
                        ));
                    }
                },
                None => file_ldap.security.unwrap_or(LdapSecurity::Ldaps),
            };
            let port = match env("WBH_LDAP_PORT") {
                Some(v) => v.parse().map_err(|_| {
                    ConfigError::new("WBH_LDAP_PORT", format!("{v:?} is not a port number"))
                })?,
                None => file_ldap.port.unwrap_or(match security {
                    LdapSecurity::Ldaps => 636,
                    LdapSecurity::Starttls => 389,
                }),
            };
            let bind_dn = env("WBH_LDAP_BIND_DN").or(file_ldap.bind_dn).ok_or_else(|| {
                ConfigError::new("ldap.bind_dn", "missing; set the account to bind as (user@domain or a DN), or WBH_LDAP_BIND_DN")
            })?;
            let bind_password = env("WBH_LDAP_BIND_PASSWORD")
                .or(file_ldap.bind_password)
                .ok_or_else(|| {
                    ConfigError::new(
                        "ldap.bind_password",
                        "missing; set it in the file or in WBH_LDAP_BIND_PASSWORD",
                    )
                })?;
            let ca_file = env("WBH_LDAP_CA_FILE")
                .map(PathBuf::from)
                .or(file_ldap.ca_file);
            check_readable("ldap.ca_file", ca_file.as_deref())?;
            Some(LdapSettings {
                host,
                port,
                security,
                bind_dn,
                bind_password: SecretString::from(bind_password),
                ca_file,
                timeout: parse_seconds(
                    "ldap.timeout_seconds",
                    file_ldap.timeout_seconds,
                    "WBH_LDAP_TIMEOUT_SECONDS",
                    10,
                )?,
                connector_account: env("WBH_CONNECTOR_ACCOUNT").or(file_ldap.connector_account),
                // DNs hold commas, so the variable separates them with semicolons.
                scope_dns: env("WBH_LDAP_SCOPE_DNS")
                    .map(|v| {
                        v.split(';')
                            .map(|s| s.trim().to_owned())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .or(file_ldap.scope_dns)
                    .unwrap_or_default(),
                max_users: match file_ldap.max_users {
                    Some(0) => {
                        return Err(ConfigError::new(
                            "ldap.max_users",
                            "0 would read no user; use 1 or more (500 by default)",
                        ));
                    }
                    Some(n) => n,
                    None => DEFAULT_MAX_USERS,
                },
                cloud_sync_account: file_ldap
                    .cloud_sync_account
                    .filter(|name| !name.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_CLOUD_SYNC_ACCOUNT.to_owned()),
                replication_grace: match file_ldap.replication_grace_minutes {
                    None => DEFAULT_REPLICATION_GRACE,
                    Some(minutes) if minutes <= 7 * 24 * 60 => Duration::from_secs(minutes * 60),
                    Some(minutes) => {
                        return Err(ConfigError::new(
                            "ldap.replication_grace_minutes",
                            format!(
                                "{minutes} is out of range; use 0 to 10080 minutes (15 by default)"
                            ),
                        ));
                    }
                },
            })
        }
    };

    let server_ca_file = env("WBH_SERVER_CA_FILE")
        .map(PathBuf::from)
        .or(file.server.ca_file);
    check_readable("server.ca_file", server_ca_file.as_deref())?;
    Ok(Settings {
        state_dir,
        ldap,
        network,
        host: crate::host::HostSource::default(),
        server_ca_file,
    })
}

fn check_readable(setting: &str, path: Option<&Path>) -> Result<(), ConfigError> {
    match path {
        Some(p) if !p.is_file() => Err(ConfigError::new(
            setting,
            format!(
                "{} does not exist or is not a file; point it at a PEM file of CA certificates",
                p.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// This machine's host name, as the sync server is known to people.
pub fn local_host_name() -> String {
    if let Some(name) = env("COMPUTERNAME") {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| env("HOSTNAME"))
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// The operating system, as precisely as the agent can tell without a host probe.
pub fn os_description() -> String {
    let pretty = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        });
    pretty.unwrap_or_else(|| std::env::consts::OS.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        resolve(
            toml::from_str(text).map_err(|e| ConfigError::new("file", e.to_string()))?,
            Some(Path::new("/tmp/x")),
        )
    }

    #[test]
    fn defaults_probe_the_public_cloud_endpoints_and_leave_ldap_unset() {
        let s = parse("").expect("empty config is valid");
        assert!(s.ldap.is_none());
        assert_eq!(
            s.network.passwordreset_endpoints[0].to_string(),
            "passwordreset.microsoftonline.com:443"
        );
        assert_eq!(s.network.servicebus_endpoints.len(), 2);
    }

    #[test]
    fn the_connector_account_and_scope_are_read_with_a_bounded_sample() {
        let base = "[ldap]\nhost = \"dc1\"\nbind_dn = \"a\"\nbind_password = \"b\"\n";
        let s = parse(base).expect("valid");
        let ldap = s.ldap.expect("ldap set");
        assert_eq!(ldap.connector_account, None);
        assert!(ldap.scope_dns.is_empty());
        assert_eq!(ldap.max_users, DEFAULT_MAX_USERS);
        let s = parse(&format!(
            "{base}connector_account = 'CONTOSO\\MSOL_abc123'\nscope_dns = [\"OU=Staff,DC=contoso,DC=com\"]\nmax_users = 50\n"
        ))
        .expect("valid");
        let ldap = s.ldap.expect("ldap set");
        assert_eq!(
            ldap.connector_account.as_deref(),
            Some("CONTOSO\\MSOL_abc123")
        );
        assert_eq!(ldap.scope_dns, ["OU=Staff,DC=contoso,DC=com"]);
        assert_eq!(ldap.max_users, 50);
        let e = parse(&format!("{base}max_users = 0\n")).expect_err("zero users");
        assert_eq!(e.setting, "ldap.max_users");
    }

    #[test]
    fn ldap_without_password_names_the_setting() {
        let e = parse("[ldap]\nhost = \"dc1.contoso.com\"\nbind_dn = \"svc@contoso.com\"\n")
            .expect_err("incomplete");
        assert_eq!(e.setting, "ldap.bind_password");
    }

    #[test]
    fn bad_endpoint_names_the_setting() {
        let e = parse("[network]\npasswordreset_endpoints = [\"https://x\"]\n")
            .expect_err("bad endpoint");
        assert_eq!(e.setting, "network.passwordreset_endpoints");
    }

    #[test]
    fn proxy_and_idle_hold_parse_and_bad_values_name_the_setting() {
        let s = parse("[network]\nproxy = \"http://proxy.contoso.com:3128\"\nidle_hold = true\nidle_hold_seconds = 2\n")
            .expect("valid");
        assert_eq!(
            s.network.proxy.map(|p| p.to_string()),
            Some("http://proxy.contoso.com:3128".to_owned())
        );
        assert_eq!(s.network.idle_hold, Some(Duration::from_secs(2)));
        let d = parse("").expect("valid");
        assert_eq!(d.network.idle_hold, None, "never in the default run");
        assert_eq!(d.network.idle_hold_duration, DEFAULT_IDLE_HOLD);
        assert_eq!(d.network.crl_endpoints.len(), 7);
        let e = parse("[network]\nproxy = \"proxy:3128\"\n").expect_err("no scheme");
        assert_eq!(e.setting, "network.proxy");
        let e = parse("[network]\nidle_hold_seconds = 0\n").expect_err("zero");
        assert_eq!(e.setting, "network.idle_hold_seconds");
    }

    #[test]
    fn starttls_defaults_to_port_389() {
        let s = parse("[ldap]\nhost = \"dc1\"\nsecurity = \"starttls\"\nbind_dn = \"a\"\nbind_password = \"b\"\n").expect("valid");
        assert_eq!(s.ldap.expect("ldap set").port, 389);
    }
}

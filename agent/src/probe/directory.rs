//! The directory probe: LDAP reads against a domain controller, and an LDAP bind to the PDC
//! emulator (AD-01, USR-01).
//!
//! The DC's name is resolved with the probes' [`Resolver`] (AD names live in the DC's DNS),
//! the agent opens the TCP connection itself so that it knows and reports the address, and
//! ldap3 runs TLS (LDAPS or StartTLS, validated against the system store plus `ldap.ca_file`)
//! and a simple bind over it. Then it reads the rootDSE, `fSMORoleOwner` and `minPwdAge` on the
//! domain head and the PDC's `dNSHostName`, and binds to the PDC as well when it is another
//! host. Every step has `ldap.timeout`; a failure names its step, and the connection is
//! unbound at the end.

use std::net::SocketAddr;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, StdStream};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;

use super::network::Resolver;
use super::tls::{self, RecordingVerifier, TlsFailureKind, TrustStore};
use crate::ad::{DcView, DomainController};
use crate::config::{LdapSecurity, LdapSettings};
use crate::facts::{
    DirectoryFacts, DnsLookup, LdapEndpoint, PdcFacts, PdcReach, ProbeFailure, ProbeStep,
};

/// Reads what the directory checks need from the configured domain controller.
///
/// `Err` when the agent has no LDAP settings, or when it could not resolve, connect to, secure,
/// bind to or read the rootDSE of the DC. Once the DC is read, a failure to read the domain
/// head or to find or reach the PDC lands in the fields it concerns instead.
pub async fn probe(
    settings: Option<&LdapSettings>,
    resolver: &Resolver,
) -> Result<DirectoryFacts, ProbeFailure> {
    let connector = settings.and_then(|s| s.connector_account.as_deref());
    probe_with_connector(settings, resolver, connector).await
}

/// [`probe`], with the connector account named by the caller: the seam through which the host
/// probe supplies the account it read from the ADSync connector. `None` when nobody knows it;
/// the permission checks then report `error` saying how to name it.
pub async fn probe_with_connector(
    settings: Option<&LdapSettings>,
    resolver: &Resolver,
    connector: Option<&str>,
) -> Result<DirectoryFacts, ProbeFailure> {
    let Some(settings) = settings else {
        return Err(ProbeFailure::new(
            ProbeStep::NotConfigured,
            "no [ldap] settings in agent.toml",
        ));
    };
    let trust = TrustStore::load(settings.ca_file.as_deref()).map_err(|e| {
        ProbeFailure::new(ProbeStep::Tls, format!("cannot set up TLS for LDAP: {e}"))
    })?;
    let lookup = resolver.lookup(&settings.host).await;
    let address = first_address(&lookup, settings.port)?;
    let mut ldap = connect_and_bind(settings, &settings.host, address, &trust).await?;
    let facts = read_directory(&mut ldap, settings, address, resolver, &trust, connector).await;
    unbind(ldap).await;
    facts
}

fn first_address(lookup: &DnsLookup, port: u16) -> Result<SocketAddr, ProbeFailure> {
    match &lookup.outcome {
        Ok(resolution) => resolution
            .addresses
            .first()
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or_else(|| {
                ProbeFailure::new(ProbeStep::Dns, format!("{} has no address", lookup.host))
            }),
        // The resolver's messages already name the host.
        Err(e) => Err(ProbeFailure::new(ProbeStep::Dns, e.message.clone())),
    }
}

fn security_name(security: LdapSecurity) -> &'static str {
    match security {
        LdapSecurity::Ldaps => "ldaps",
        LdapSecurity::Starttls => "starttls",
    }
}

/// Connects to `address` over TCP, secures the connection for `host` and binds.
async fn connect_and_bind(
    settings: &LdapSettings,
    host: &str,
    address: SocketAddr,
    trust: &TrustStore,
) -> Result<Ldap, ProbeFailure> {
    let timeout = settings.timeout;
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => {
            return Err(ProbeFailure::new(
                ProbeStep::Connect,
                format!(
                    "TCP connect to {host} ({address}) timed out after {}s",
                    timeout.as_secs_f32()
                ),
            ));
        }
        Ok(Err(e)) => {
            let how = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "refused"
            } else {
                "failed"
            };
            return Err(ProbeFailure::new(
                ProbeStep::Connect,
                format!("TCP connect to {host} ({address}) {how}: {e}"),
            ));
        }
        Ok(Ok(tcp)) => tcp,
    };
    let tcp = tcp.into_std().map_err(|e| {
        ProbeFailure::new(
            ProbeStep::Connect,
            format!("cannot hand the connection to {host} to LDAP: {e}"),
        )
    })?;

    let (config, recorder) = trust.client_config().map_err(|e| {
        ProbeFailure::new(ProbeStep::Tls, format!("cannot set up TLS for LDAP: {e}"))
    })?;
    let starttls = settings.security == LdapSecurity::Starttls;
    let scheme = if starttls { "ldap" } else { "ldaps" };
    let url_host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let url = format!("{scheme}://{url_host}:{}", address.port());
    let conn_settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_config(config)
        .set_starttls(starttls)
        .set_std_stream(StdStream::Tcp(tcp));
    let (conn, mut ldap) = LdapConnAsync::with_settings(conn_settings, &url)
        .await
        .map_err(|e| tls_failure(host, address, starttls, &e, &recorder, timeout))?;
    tokio::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!(error = %e, "ldap connection ended with an error");
        }
    });

    let bound = ldap
        .with_timeout(timeout)
        .simple_bind(&settings.bind_dn, settings.bind_password.expose_secret())
        .await;
    let failure = match bound {
        Err(e) => format!(
            "bind as {} to {host} ({address}) did not complete: {e}",
            settings.bind_dn
        ),
        Ok(result) => match result.success() {
            Ok(_) => return Ok(ldap),
            Err(e) => format!(
                "{host} ({address}) rejected the bind as {}: {e}",
                settings.bind_dn
            ),
        },
    };
    unbind(ldap).await;
    Err(ProbeFailure::new(ProbeStep::Bind, failure))
}

fn tls_failure(
    host: &str,
    address: SocketAddr,
    starttls: bool,
    error: &LdapError,
    recorder: &RecordingVerifier,
    timeout: std::time::Duration,
) -> ProbeFailure {
    let what = if starttls { "StartTLS" } else { "LDAPS" };
    let kind = match error {
        LdapError::Io { source } => tls::classify(source),
        LdapError::Rustls { source } => tls::classify_rustls(source),
        _ => TlsFailureKind::Handshake,
    };
    let message = match kind {
        TlsFailureKind::Untrusted => {
            let issuer = recorder
                .presented()
                .map(|cert| format!(" issued by \"{}\"", cert.issuer))
                .unwrap_or_default();
            format!(
                "{what} to {host} ({address}): the certificate{issuer} is not trusted ({error}); \
                 put the CA certificate that issued it in ldap.ca_file"
            )
        }
        TlsFailureKind::Invalid => {
            format!("{what} to {host} ({address}): certificate rejected: {error}")
        }
        TlsFailureKind::Handshake => match error {
            LdapError::Timeout { .. } => {
                format!(
                    "{what} to {host} ({address}): no TLS handshake within {}s",
                    timeout.as_secs_f32()
                )
            }
            _ => format!("{what} to {host} ({address}) failed: {error}"),
        },
    };
    ProbeFailure::new(ProbeStep::Tls, message)
}

async fn unbind(mut ldap: Ldap) {
    // The connection closes either way; an unbind that fails has nothing left to clean up.
    let _ = ldap.unbind().await;
}

/// Reads one entry with a base-scope search.
async fn read_entry(
    ldap: &mut Ldap,
    dn: &str,
    attrs: &[&str],
    timeout: std::time::Duration,
) -> Result<SearchEntry, String> {
    let (entries, _) = ldap
        .with_timeout(timeout)
        .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
        .await
        .and_then(|r| r.success())
        .map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .next()
        .map(SearchEntry::construct)
        .ok_or_else(|| "no entry returned: the bind account may lack read access".to_owned())
}

/// The first value of `name`, matched without regard to case as LDAP does.
fn attribute(entry: &SearchEntry, name: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .and_then(|(_, values)| values.first().cloned())
}

async fn read_directory(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    address: SocketAddr,
    resolver: &Resolver,
    trust: &TrustStore,
    connector: Option<&str>,
) -> Result<DirectoryFacts, ProbeFailure> {
    let host = settings.host.as_str();
    let timeout = settings.timeout;
    let root = read_entry(ldap, "", &["defaultNamingContext", "dnsHostName"], timeout)
        .await
        .map_err(|e| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!("reading the rootDSE of {host} failed: {e}"),
            )
        })?;
    let naming_context = attribute(&root, "defaultNamingContext").ok_or_else(|| {
        ProbeFailure::new(
            ProbeStep::Search,
            format!("the rootDSE of {host} has no defaultNamingContext"),
        )
    })?;
    let dc_dns_host_name = attribute(&root, "dnsHostName");

    let head = read_entry(
        ldap,
        &naming_context,
        &["fSMORoleOwner", "minPwdAge"],
        timeout,
    )
    .await
    .map_err(|e| {
        ProbeFailure::new(
            ProbeStep::Search,
            format!("reading {naming_context} on {host} failed: {e}"),
        )
    });
    let min_pwd_age = head.as_ref().map_err(Clone::clone).and_then(|entry| {
        let raw = attribute(entry, "minPwdAge").ok_or_else(|| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!("{host} returned no minPwdAge for {naming_context}: the bind account may lack read access"),
            )
        })?;
        raw.trim().parse::<i64>().map_err(|_| {
            ProbeFailure::new(ProbeStep::Search, format!("minPwdAge of {naming_context} is {raw:?}, not a number"))
        })
    });
    let role_owner = head.and_then(|entry| {
        attribute(&entry, "fSMORoleOwner").ok_or_else(|| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!("{host} returned no fSMORoleOwner for {naming_context}: the bind account may lack read access"),
            )
        })
    });
    let mut ad = super::ad::read(ldap, settings, &naming_context, connector).await;
    ad.dcs = read_dc_views(
        ldap,
        settings,
        address,
        dc_dns_host_name.as_deref(),
        &naming_context,
        &ad.domain_controllers,
        resolver,
        trust,
    )
    .await;
    let pdc = match role_owner {
        Err(e) => Err(e),
        Ok(role_owner_dn) => {
            find_pdc(
                ldap,
                settings,
                address,
                dc_dns_host_name.as_deref(),
                role_owner_dn,
                resolver,
                trust,
            )
            .await
        }
    };

    Ok(DirectoryFacts {
        dc: LdapEndpoint {
            host: host.to_owned(),
            address,
            security: security_name(settings.security),
        },
        dc_dns_host_name,
        domain_dns_name: domain_dns_name(&naming_context),
        default_naming_context: naming_context,
        pdc,
        min_pwd_age,
        ad,
    })
}

/// Follows the role owner (`CN=NTDS Settings,CN=<DC>,…`) to its server object's `dNSHostName`,
/// then checks that the PDC answers an authenticated bind.
async fn find_pdc(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    address: SocketAddr,
    dc_dns_host_name: Option<&str>,
    role_owner_dn: String,
    resolver: &Resolver,
    trust: &TrustStore,
) -> Result<PdcFacts, ProbeFailure> {
    let host = settings.host.as_str();
    let server_dn = parent_dn(&role_owner_dn).ok_or_else(|| {
        ProbeFailure::new(
            ProbeStep::Search,
            format!("fSMORoleOwner {role_owner_dn:?} has no parent server object"),
        )
    })?;
    let server = read_entry(ldap, &server_dn, &["dNSHostName"], settings.timeout)
        .await
        .map_err(|e| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!("reading the PDC's server object {server_dn} on {host} failed: {e}"),
            )
        })?;
    let dns_host_name = attribute(&server, "dNSHostName").ok_or_else(|| {
        ProbeFailure::new(
            ProbeStep::Search,
            format!("the PDC's server object {server_dn} has no dNSHostName"),
        )
    })?;

    let reach = if same_host(&dns_host_name, host)
        || dc_dns_host_name.is_some_and(|dc| same_host(&dns_host_name, dc))
    {
        PdcReach::SameAsContacted { address }
    } else {
        let lookup = resolver.lookup(&dns_host_name).await;
        match first_address(&lookup, settings.port) {
            Err(e) => PdcReach::Probed {
                lookup,
                address: None,
                outcome: Err(e),
            },
            Ok(pdc_address) => {
                let outcome =
                    match connect_and_bind(settings, &dns_host_name, pdc_address, trust).await {
                        Ok(pdc) => {
                            unbind(pdc).await;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                PdcReach::Probed {
                    lookup,
                    address: Some(pdc_address),
                    outcome,
                }
            }
        }
    };
    Ok(PdcFacts {
        role_owner_dn,
        server_dn,
        dns_host_name,
        reach,
    })
}

/// At most this many DCs are read for the checks that compare DCs.
const MAX_DC_VIEWS: usize = 20;

/// Reads every DC's own view (AD-03, AD-05, PERM-10): the contacted DC over the open
/// connection, the others each over a new connection to its `dNSHostName`, all at once.
#[allow(clippy::too_many_arguments)]
async fn read_dc_views(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    address: SocketAddr,
    dc_dns_host_name: Option<&str>,
    naming_context: &str,
    dcs: &Result<Vec<DomainController>, ProbeFailure>,
    resolver: &Resolver,
    trust: &TrustStore,
) -> Vec<DcView> {
    let Ok(dcs) = dcs else {
        return Vec::new();
    };
    let is_contacted = |name: &str| {
        same_host(name, &settings.host) || dc_dns_host_name.is_some_and(|dc| same_host(name, dc))
    };
    let mut views = Vec::new();
    let mut others = Vec::new();
    for dc in dcs.iter().take(MAX_DC_VIEWS) {
        if is_contacted(&dc.name) {
            let reading =
                super::ad::read_dc(ldap, &dc.name, settings.timeout, naming_context, address).await;
            views.push(DcView {
                name: dc.name.clone(),
                contacted: true,
                read_only: dc.is_read_only(),
                reading,
            });
        } else {
            others.push(dc);
        }
    }
    let remote = others.into_iter().map(|dc| async move {
        let reading = async {
            let lookup = resolver.lookup(&dc.name).await;
            let dc_address = first_address(&lookup, settings.port)?;
            let mut conn = connect_and_bind(settings, &dc.name, dc_address, trust).await?;
            let reading = super::ad::read_dc(
                &mut conn,
                &dc.name,
                settings.timeout,
                naming_context,
                dc_address,
            )
            .await;
            unbind(conn).await;
            reading
        }
        .await;
        DcView {
            name: dc.name.clone(),
            contacted: false,
            read_only: dc.is_read_only(),
            reading,
        }
    });
    views.extend(futures::future::join_all(remote).await);
    views
}

/// Whether two DNS names are the same host (case and a trailing dot do not matter).
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Splits a DN at its unescaped commas into RDNs.
fn rdns(dn: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(dn[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(dn[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The DN without its first RDN; `None` for a single-RDN DN.
fn parent_dn(dn: &str) -> Option<String> {
    let parts = rdns(dn);
    (parts.len() > 1).then(|| parts[1..].join(","))
}

/// The DNS name of a domain from its NC head: `DC=contoso,DC=com` → `contoso.com`.
fn domain_dns_name(naming_context: &str) -> String {
    rdns(naming_context)
        .into_iter()
        .filter_map(|rdn| {
            let (kind, value) = rdn.split_once('=')?;
            kind.trim()
                .eq_ignore_ascii_case("DC")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::probe::test_tls::{SERVER_NAME, tls_server, trust_with_test_ca};

    #[test]
    fn the_pdc_server_object_is_the_parent_of_ntds_settings() {
        let owner = "CN=NTDS Settings,CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=contoso,DC=com";
        assert_eq!(
            parent_dn(owner).as_deref(),
            Some(
                "CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=contoso,DC=com"
            )
        );
        assert_eq!(parent_dn("DC=com"), None);
    }

    #[test]
    fn escaped_commas_stay_inside_their_rdn() {
        assert_eq!(
            parent_dn(r"CN=Smith\, John,OU=Users,DC=x").as_deref(),
            Some("OU=Users,DC=x")
        );
    }

    #[test]
    fn the_domain_dns_name_comes_from_the_dc_parts() {
        assert_eq!(
            domain_dns_name("DC=Corp,DC=Contoso,DC=com"),
            "corp.contoso.com"
        );
        assert_eq!(
            domain_dns_name("dc=samdom, dc=example, dc=com"),
            "samdom.example.com"
        );
    }

    #[test]
    fn host_names_compare_without_case_or_trailing_dot() {
        assert!(same_host("DC1.contoso.com.", "dc1.CONTOSO.com"));
        assert!(!same_host("dc1.contoso.com", "dc2.contoso.com"));
    }

    fn settings(host: &str, port: u16) -> LdapSettings {
        LdapSettings {
            host: host.to_owned(),
            port,
            security: LdapSecurity::Ldaps,
            bind_dn: "svc-wbhealth@contoso.com".to_owned(),
            bind_password: SecretString::from("not-used"),
            ca_file: None,
            timeout: Duration::from_secs(2),
            connector_account: None,
            scope_dns: Vec::new(),
            max_users: 500,
            replication_grace: crate::config::DEFAULT_REPLICATION_GRACE,
            cloud_sync_account: crate::config::DEFAULT_CLOUD_SYNC_ACCOUNT.to_owned(),
        }
    }

    #[tokio::test]
    async fn no_settings_is_not_configured() {
        let resolver = Resolver::new(&[], Duration::from_secs(1));
        let err = probe(None, &resolver).await.expect_err("not configured");
        assert_eq!(err.step, ProbeStep::NotConfigured);
    }

    #[tokio::test]
    async fn a_closed_ldaps_port_fails_at_connect_naming_the_host() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let resolver = Resolver::new(
            &["127.0.0.1:9".parse().expect("addr")],
            Duration::from_secs(1),
        );
        let err = probe(Some(&settings("127.0.0.1", port)), &resolver)
            .await
            .expect_err("nothing listens");
        if err.step == ProbeStep::Tls && err.message.contains("cannot set up TLS") {
            eprintln!("skipped: this machine has no system root certificates");
            return;
        }
        assert_eq!(err.step, ProbeStep::Connect, "{}", err.message);
        assert!(
            err.message.contains("127.0.0.1") && err.message.contains("refused"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn ldaps_with_a_trusted_chain_gets_to_the_bind() {
        let address = tls_server().await;
        let (_dir, trust) = trust_with_test_ca();
        let settings = settings(SERVER_NAME, address.port());
        // The test server speaks TLS but not LDAP, so the bind never gets an answer.
        let err = connect_and_bind(&settings, SERVER_NAME, address, &trust)
            .await
            .expect_err("no LDAP server");
        assert_eq!(err.step, ProbeStep::Bind, "{}", err.message);
        assert!(err.message.contains("did not complete"), "{}", err.message);
    }

    #[tokio::test]
    async fn ldaps_with_an_unknown_issuer_fails_at_tls_naming_the_issuer_and_the_setting() {
        let address = tls_server().await;
        let Ok(trust) = TrustStore::load(None) else {
            eprintln!("skipped: this machine has no system root certificates");
            return;
        };
        let settings = settings(SERVER_NAME, address.port());
        let err = connect_and_bind(&settings, SERVER_NAME, address, &trust)
            .await
            .expect_err("untrusted");
        assert_eq!(err.step, ProbeStep::Tls, "{}", err.message);
        assert!(
            err.message.contains("wbhealth Test Proxy CA") && err.message.contains("ldap.ca_file"),
            "{}",
            err.message
        );
    }
}

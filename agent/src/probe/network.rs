//! The network probe: DNS, TCP, TLS and one HTTP request to each of Microsoft's endpoints.
//!
//! Each endpoint host is looked up once (NET-03); then every endpoint is probed concurrently:
//! TCP connect to its first address, a TLS handshake validated against the machine's trust
//! store (NET-01, NET-02, NET-07), and `GET /` to see that an HTTP answer comes back. Every
//! step has the configured time-out, and a failure records the step, not just the text.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::{self, TlsFailureKind, TrustStore};
use crate::config::{Endpoint, NetworkSettings};
use crate::facts::{
    DnsFailure, DnsFailureKind, DnsLookup, EndpointFailure, EndpointProbe, EndpointPurpose,
    EndpointStep, NetworkFacts, Resolution, TlsSession,
};

/// A DNS resolver for the probes: the configured name servers, or the system's configuration.
///
/// Cheap to clone. When the system configuration cannot be read, the resolver still exists
/// and every look-up reports [`DnsFailureKind::ResolverUnavailable`] with the reason, so the
/// checks say `error` rather than blaming DNS.
#[derive(Clone)]
pub struct Resolver {
    inner: Result<TokioResolver, String>,
    timeout: Duration,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("ready", &self.inner.is_ok())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver that asks exactly `dns_servers` (UDP, then TCP) when any are given, and
    /// otherwise follows the system configuration (`/etc/resolv.conf`, or the registry on
    /// Windows). Each look-up gives up after `timeout`.
    pub fn new(dns_servers: &[SocketAddr], timeout: Duration) -> Resolver {
        let provider = TokioConnectionProvider::default();
        let builder = if dns_servers.is_empty() {
            TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))
        } else {
            let servers: Vec<NameServerConfig> = dns_servers
                .iter()
                .flat_map(|addr| {
                    [Protocol::Udp, Protocol::Tcp].map(|p| NameServerConfig::new(*addr, p))
                })
                .collect();
            let config =
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers));
            let mut builder = TokioResolver::builder_with_config(config, provider);
            // Only the servers named in the settings answer, not the local hosts file.
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            Ok(builder)
        };
        let inner = builder.map(|mut builder| {
            let options: &mut ResolverOpts = builder.options_mut();
            // Two tries fit in one time-out, so a lost UDP packet is not reported as an outage.
            options.timeout = (timeout / 2).max(Duration::from_millis(500));
            options.attempts = 2;
            options.try_tcp_on_error = true;
            options.preserve_intermediates = true;
            builder.build()
        });
        Resolver { inner, timeout }
    }

    /// Looks up `host`'s addresses, following and recording its CNAME chain.
    pub async fn lookup(&self, host: &str) -> DnsLookup {
        let started = Instant::now();
        let outcome = match &self.inner {
            Err(reason) => Err(DnsFailure {
                kind: DnsFailureKind::ResolverUnavailable,
                message: reason.clone(),
            }),
            Ok(resolver) => {
                match tokio::time::timeout(self.timeout, resolver.lookup_ip(host)).await {
                    Err(_) => Err(DnsFailure {
                        kind: DnsFailureKind::Timeout,
                        message: format!(
                            "no answer for {host} within {}s",
                            self.timeout.as_secs_f32()
                        ),
                    }),
                    Ok(Err(e)) => Err(dns_failure(host, &e)),
                    Ok(Ok(found)) => {
                        let mut addresses: Vec<IpAddr> = Vec::new();
                        for ip in found.iter() {
                            if !addresses.contains(&ip) {
                                addresses.push(ip);
                            }
                        }
                        let cname_chain = cname_chain(found.as_lookup().records());
                        if addresses.is_empty() {
                            Err(DnsFailure {
                                kind: DnsFailureKind::NoAnswer,
                                message: format!("{host} has no A or AAAA records"),
                            })
                        } else {
                            Ok(Resolution {
                                cname_chain,
                                addresses,
                            })
                        }
                    }
                }
            }
        };
        DnsLookup {
            host: host.to_owned(),
            duration: started.elapsed(),
            outcome,
        }
    }
}

fn dns_failure(host: &str, error: &ResolveError) -> DnsFailure {
    let (kind, message) = match error.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => (
                DnsFailureKind::NxDomain,
                format!("{host} does not exist (NXDOMAIN)"),
            ),
            ResponseCode::NoError => (
                DnsFailureKind::NoAnswer,
                format!("{host} exists but has no A or AAAA records"),
            ),
            code => (
                DnsFailureKind::ServerError,
                format!("the DNS server answered {code} for {host}"),
            ),
        },
        Some(ProtoErrorKind::Timeout) => (
            DnsFailureKind::Timeout,
            format!("no answer for {host}: {error}"),
        ),
        Some(ProtoErrorKind::NoConnections | ProtoErrorKind::Io(_) | ProtoErrorKind::Busy) => (
            DnsFailureKind::Unreachable,
            format!("no DNS server answered for {host}: {error}"),
        ),
        _ => (
            DnsFailureKind::Other,
            format!("looking up {host} failed: {error}"),
        ),
    };
    DnsFailure { kind, message }
}

/// The CNAME targets in the answer, in the order they chain from the name asked for.
fn cname_chain(records: &[Record]) -> Vec<String> {
    let links: Vec<(&Name, &Name)> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::CNAME(target) => Some((r.name(), &target.0)),
            _ => None,
        })
        .collect();
    // The chain starts at the alias that no other alias points to.
    let Some(mut current) = links
        .iter()
        .map(|(from, _)| *from)
        .find(|from| !links.iter().any(|(_, to)| to == from))
    else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    while let Some((_, to)) = links.iter().find(|(from, _)| *from == current) {
        if chain.len() >= links.len() {
            break;
        }
        chain.push(display_name(to));
        current = to;
    }
    chain
}

/// A DNS name without its trailing dot, as people write it.
fn display_name(name: &Name) -> String {
    let text = name.to_utf8();
    text.strip_suffix('.').map(str::to_owned).unwrap_or(text)
}

/// Looks up every endpoint host once, then probes every endpoint concurrently.
pub async fn probe(settings: &NetworkSettings, resolver: &Resolver) -> NetworkFacts {
    let endpoints: Vec<(EndpointPurpose, &Endpoint)> = settings
        .passwordreset_endpoints
        .iter()
        .map(|e| (EndpointPurpose::PasswordReset, e))
        .chain(
            settings
                .servicebus_endpoints
                .iter()
                .map(|e| (EndpointPurpose::ServiceBus, e)),
        )
        .collect();

    let mut hosts: Vec<&str> = Vec::new();
    for (_, endpoint) in &endpoints {
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&endpoint.host)) {
            hosts.push(&endpoint.host);
        }
    }
    let lookups = join_all(hosts.iter().map(|host| resolver.lookup(host))).await;
    let by_host: HashMap<String, &DnsLookup> = lookups
        .iter()
        .map(|l| (l.host.to_ascii_lowercase(), l))
        .collect();

    let trust = TrustStore::load(settings.extra_ca_file.as_deref()).map_err(|e| e.to_string());
    let probes = join_all(endpoints.iter().map(|(purpose, endpoint)| {
        let lookup = by_host.get(&endpoint.host.to_ascii_lowercase()).copied();
        probe_endpoint(*purpose, endpoint, lookup, &trust, settings.timeout)
    }))
    .await;

    NetworkFacts {
        lookups,
        endpoints: probes,
    }
}

async fn probe_endpoint(
    purpose: EndpointPurpose,
    endpoint: &Endpoint,
    lookup: Option<&DnsLookup>,
    trust: &Result<TrustStore, String>,
    timeout: Duration,
) -> EndpointProbe {
    let started = Instant::now();
    let mut probe = EndpointProbe {
        purpose,
        host: endpoint.host.clone(),
        port: endpoint.port,
        address: None,
        duration: Duration::ZERO,
        outcome: Err(failure(EndpointStep::Setup, "not probed")),
    };
    let address = match lookup.map(|l| &l.outcome) {
        Some(Ok(resolution)) => resolution
            .addresses
            .first()
            .map(|ip| SocketAddr::new(*ip, endpoint.port)),
        Some(Err(e)) => {
            let step = match e.kind {
                DnsFailureKind::ResolverUnavailable => EndpointStep::Setup,
                _ => EndpointStep::Dns,
            };
            probe.outcome = Err(failure(step, e.message.clone()));
            return probe;
        }
        None => None,
    };
    let Some(address) = address else {
        probe.outcome = Err(failure(
            EndpointStep::Dns,
            format!("{} has no address", endpoint.host),
        ));
        return probe;
    };
    probe.address = Some(address);
    probe.outcome = match trust {
        Err(reason) => Err(failure(EndpointStep::Setup, reason.clone())),
        Ok(trust) => handshake(endpoint, address, trust, timeout).await,
    };
    probe.duration = started.elapsed();
    probe
}

fn failure(step: EndpointStep, message: impl Into<String>) -> EndpointFailure {
    EndpointFailure {
        step,
        message: message.into(),
        presented: None,
    }
}

/// Connects over TCP, then establishes TLS, then asks `GET /`.
async fn handshake(
    endpoint: &Endpoint,
    address: SocketAddr,
    trust: &TrustStore,
    timeout: Duration,
) -> Result<TlsSession, EndpointFailure> {
    let (config, recorder) = trust
        .client_config()
        .map_err(|e| failure(EndpointStep::Setup, e.to_string()))?;
    let server_name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
        failure(
            EndpointStep::Setup,
            format!("{:?} is not a valid DNS name: {e}", endpoint.host),
        )
    })?;

    let tcp = connect_tcp(address, timeout)
        .await
        .map_err(|(step, message)| failure(step, message))?;

    let connector = TlsConnector::from(config);
    let mut stream = match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await
    {
        Err(_) => {
            return Err(failure(
                EndpointStep::TlsHandshake,
                format!(
                    "no TLS handshake with {address} within {}s",
                    timeout.as_secs_f32()
                ),
            ));
        }
        Ok(Err(e)) => {
            let presented = recorder.presented();
            let (step, message) = match tls::classify(&e) {
                TlsFailureKind::Untrusted => (
                    EndpointStep::CertificateUntrusted,
                    match &presented {
                        Some(cert) => format!(
                            "certificate issued by \"{}\" is not trusted: {e}",
                            cert.issuer
                        ),
                        None => format!("certificate not trusted: {e}"),
                    },
                ),
                TlsFailureKind::Invalid => (
                    EndpointStep::CertificateInvalid,
                    format!("certificate rejected: {e}"),
                ),
                TlsFailureKind::Handshake => (
                    EndpointStep::TlsHandshake,
                    format!("TLS handshake failed: {e}"),
                ),
            };
            return Err(EndpointFailure {
                step,
                message,
                presented,
            });
        }
        Ok(Ok(stream)) => stream,
    };

    let (_, connection) = stream.get_ref();
    let protocol = tls::protocol_name(connection.protocol_version());
    let cipher_suite = connection
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let (peer_subject, peer_issuer) = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| super::x509::subject_and_issuer(leaf))
        .unwrap_or_default();

    let http_status = match tokio::time::timeout(timeout, http_get(&mut stream, endpoint)).await {
        Err(_) => Err(format!("no HTTP answer within {}s", timeout.as_secs_f32())),
        Ok(result) => result,
    };
    // A polite close; the answer is already in hand, so a failure here changes nothing.
    let _ = stream.shutdown().await;

    Ok(TlsSession {
        protocol,
        cipher_suite,
        peer_subject,
        peer_issuer,
        http_status,
    })
}

/// Connects, telling a refusal (RST) from a time-out (dropped packets).
async fn connect_tcp(
    address: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, (EndpointStep, String)> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => Err((
            EndpointStep::TcpTimeout,
            format!(
                "TCP connect to {address} timed out after {}s",
                timeout.as_secs_f32()
            ),
        )),
        Ok(Err(e)) => Err(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => (
                EndpointStep::TcpRefused,
                format!("TCP connect to {address} refused: {e}"),
            ),
            std::io::ErrorKind::TimedOut => (
                EndpointStep::TcpTimeout,
                format!("TCP connect to {address} timed out: {e}"),
            ),
            _ => (
                EndpointStep::TcpError,
                format!("TCP connect to {address} failed: {e}"),
            ),
        }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Sends a minimal `GET /` and returns the status code of the answer.
async fn http_get<S>(stream: &mut S, endpoint: &Endpoint) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let host = if endpoint.port == 443 {
        endpoint.host.clone()
    } else {
        endpoint.to_string()
    };
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wbhealth-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the HTTP request failed: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("sending the HTTP request failed: {e}"))?;

    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if head.is_empty() => {
                return Err(format!("reading the HTTP answer failed: {e}"));
            }
            Err(_) => break,
        }
    }
    if head.is_empty() {
        return Err("the server closed the connection without an HTTP answer".to_owned());
    }
    parse_status_line(&head)
}

/// The status code of an HTTP/1.x status line.
fn parse_status_line(head: &[u8]) -> Result<u16, String> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = String::from_utf8_lossy(&head[..line_end]);
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse()
            .map_err(|_| format!("not an HTTP status line: {:.80}", line)),
        _ => Err(format!("not an HTTP status line: {:.80}", line)),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_resolver::proto::rr::rdata::{A, CNAME};

    use super::*;
    use crate::probe::test_tls::{CA, tls_server, trust_with_test_ca};

    #[test]
    fn the_cname_chain_is_followed_from_the_name_asked_for() {
        let name = |s: &str| Name::from_str(s).expect("valid name");
        // Deliberately out of order: the chain is rebuilt from the links, not the order.
        let records = vec![
            Record::from_rdata(
                name("b.example.net."),
                60,
                RData::CNAME(CNAME(name("c.example.org."))),
            ),
            Record::from_rdata(
                name("a.example.com."),
                60,
                RData::CNAME(CNAME(name("b.example.net."))),
            ),
            Record::from_rdata(name("c.example.org."), 60, RData::A(A::new(192, 0, 2, 7))),
        ];
        assert_eq!(
            cname_chain(&records),
            vec!["b.example.net", "c.example.org"]
        );
    }

    #[test]
    fn no_cname_means_an_empty_chain() {
        let records = vec![Record::from_rdata(
            Name::from_str("a.example.com.").expect("name"),
            60,
            RData::A(A::new(192, 0, 2, 7)),
        )];
        assert!(cname_chain(&records).is_empty());
    }

    #[test]
    fn status_lines_parse_and_garbage_does_not() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 401 Unauthorized\r\nServer: x\r\n"),
            Ok(401)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK\r\n"), Ok(200));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH_9.6\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 abc\r\n").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_not_timed_out() {
        // Bind to learn a free port, then close it so the connect is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let err = connect_tcp(address, Duration::from_secs(5))
            .await
            .expect_err("nothing listens");
        assert_eq!(err.0, EndpointStep::TcpRefused, "{}", err.1);
    }

    #[tokio::test]
    async fn an_unreadable_system_configuration_is_reported_as_such() {
        let resolver = Resolver {
            inner: Err("cannot read the system DNS configuration: gone".to_owned()),
            timeout: Duration::from_secs(1),
        };
        let lookup = resolver.lookup("passwordreset.microsoftonline.com").await;
        let err = lookup.outcome.expect_err("no resolver");
        assert_eq!(err.kind, DnsFailureKind::ResolverUnavailable);
    }

    #[tokio::test]
    async fn an_ip_literal_resolves_to_itself_without_asking_dns() {
        let resolver = Resolver::new(
            &["127.0.0.1:9".parse().expect("addr")],
            Duration::from_secs(2),
        );
        let lookup = resolver.lookup("192.0.2.10").await;
        assert_eq!(
            lookup.addresses(),
            &["192.0.2.10".parse::<IpAddr>().expect("ip")]
        );
    }

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port,
        }
    }

    #[tokio::test]
    async fn a_trusted_chain_establishes_tls_and_reads_the_http_status() {
        let address = tls_server().await;
        let (_dir, trust) = trust_with_test_ca();
        let session = handshake(
            &endpoint("passwordreset.test", address.port()),
            address,
            &trust,
            Duration::from_secs(5),
        )
        .await
        .expect("TLS established");
        assert!(
            session.protocol.starts_with("TLS 1."),
            "{}",
            session.protocol
        );
        assert_eq!(session.peer_subject, "CN=passwordreset.test");
        assert_eq!(
            session.peer_issuer,
            "CN=wbhealth Test Proxy CA, O=wbhealth tests"
        );
        assert_eq!(session.http_status, Ok(401));
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_reported_as_untrusted_with_the_issuer_named() {
        let address = tls_server().await;
        let Ok(trust) = TrustStore::load(None) else {
            eprintln!("skipped: this machine has no system root certificates");
            return;
        };
        let err = handshake(
            &endpoint("passwordreset.test", address.port()),
            address,
            &trust,
            Duration::from_secs(5),
        )
        .await
        .expect_err("private CA is not trusted");
        assert_eq!(
            err.step,
            EndpointStep::CertificateUntrusted,
            "{}",
            err.message
        );
        let presented = err.presented.expect("presented certificate recorded");
        assert_eq!(
            presented.issuer,
            "CN=wbhealth Test Proxy CA, O=wbhealth tests"
        );
        assert!(
            err.message.contains("wbhealth Test Proxy CA"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_rejected_not_untrusted() {
        let address = tls_server().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CA).expect("write CA");
        let settings = NetworkSettings {
            dns_servers: vec!["127.0.0.1:9".parse().expect("addr")],
            extra_ca_file: Some(ca),
            // An IP literal skips DNS; the certificate names passwordreset.test, not the address.
            passwordreset_endpoints: vec![endpoint("127.0.0.1", address.port())],
            servicebus_endpoints: vec![],
            timeout: Duration::from_secs(5),
        };
        let resolver = Resolver::new(&settings.dns_servers, settings.timeout);
        let facts = probe(&settings, &resolver).await;
        assert_eq!(facts.lookups.len(), 1);
        assert_eq!(facts.endpoints.len(), 1);
        let probe = &facts.endpoints[0];
        assert_eq!(probe.address, Some(address));
        let err = probe.outcome.as_ref().expect_err("name mismatch");
        assert_eq!(
            err.step,
            EndpointStep::CertificateInvalid,
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn an_unresolvable_host_stops_at_dns_without_connecting() {
        let lookup = DnsLookup {
            host: "passwordreset.test".to_owned(),
            duration: Duration::ZERO,
            outcome: Err(DnsFailure {
                kind: DnsFailureKind::NxDomain,
                message: "passwordreset.test does not exist (NXDOMAIN)".to_owned(),
            }),
        };
        let (_dir, trust) = trust_with_test_ca();
        let probe = probe_endpoint(
            EndpointPurpose::PasswordReset,
            &endpoint("passwordreset.test", 443),
            Some(&lookup),
            &Ok(trust),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(probe.address, None);
        assert_eq!(
            probe.outcome.expect_err("no address").step,
            EndpointStep::Dns
        );
    }
}

//! The network probe: DNS, TCP, TLS and one HTTP request to each of Microsoft's endpoints.
//!
//! Each endpoint host is looked up once (NET-03); then every endpoint is probed concurrently:
//! TCP connect to its first address (or a `CONNECT` tunnel through the configured proxy), a
//! TLS handshake validated against the machine's trust store (NET-01, NET-02, NET-07), and
//! `GET /` to see which HTTP answer comes back (NET-02(b) expects 401 from the relay). The
//! CRL/OCSP hosts get a plain HTTP `GET` (NET-08), the DCs a TCP connect per port (NET-09),
//! the relays optionally their legacy ports (NET-10), and one relay optionally the slow
//! idle-hold probe (NET-04). Every step has the configured time-out, and a failure records
//! the step, not just the text.

use std::collections::HashMap;
use std::future::Future;
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
use tokio_rustls::client::TlsStream;

use super::tls::{self, TlsFailureKind, TrustStore};
use crate::config::{Endpoint, NetworkSettings, Proxy};
use crate::facts::{
    DcPorts, DnsFailure, DnsFailureKind, DnsLookup, EndpointFailure, EndpointProbe,
    EndpointPurpose, EndpointStep, HostPorts, HttpProbe, IdleHold, IdleHoldOutcome, NetworkFacts,
    PortOutcome, PortProbe, Resolution, TlsSession,
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

/// Looks up every endpoint host once, then probes every endpoint concurrently: TLS to the
/// writeback and Connect endpoints, plain HTTP to the CRL/OCSP hosts, the legacy relay ports
/// when asked, and the idle-hold probe when asked (`cancel` ends that one early).
pub async fn probe(
    settings: &NetworkSettings,
    resolver: &Resolver,
    cancel: impl Future<Output = ()>,
) -> NetworkFacts {
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
        .chain(
            settings
                .connect_endpoints
                .iter()
                .map(|e| (EndpointPurpose::Connect, e)),
        )
        .collect();

    let mut hosts: Vec<&str> = Vec::new();
    for endpoint in endpoints
        .iter()
        .map(|(_, e)| *e)
        .chain(&settings.crl_endpoints)
    {
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&endpoint.host)) {
            hosts.push(&endpoint.host);
        }
    }
    let lookups = join_all(hosts.iter().map(|host| resolver.lookup(host))).await;
    let by_host: HashMap<String, &DnsLookup> = lookups
        .iter()
        .map(|l| (l.host.to_ascii_lowercase(), l))
        .collect();
    let lookup_of = |host: &str| by_host.get(&host.to_ascii_lowercase()).copied();

    let route = match &settings.proxy {
        None => Route::Direct,
        Some(proxy) => Route::Proxy(proxy.clone(), resolve_proxy(proxy, resolver).await),
    };
    let trust = TrustStore::load(settings.extra_ca_file.as_deref()).map_err(|e| e.to_string());
    let timeout = settings.timeout;

    let tls_probes = join_all(endpoints.iter().map(|(purpose, endpoint)| {
        probe_endpoint(
            *purpose,
            endpoint,
            lookup_of(&endpoint.host),
            &route,
            &trust,
            timeout,
        )
    }));
    let crl_probes = join_all(
        settings
            .crl_endpoints
            .iter()
            .map(|endpoint| probe_http(endpoint, lookup_of(&endpoint.host), &route, timeout)),
    );
    let legacy = async {
        if !settings.legacy_relay_ports {
            return None;
        }
        let mut relays: Vec<&Endpoint> = Vec::new();
        for e in &settings.servicebus_endpoints {
            if !relays.iter().any(|r| r.host.eq_ignore_ascii_case(&e.host)) {
                relays.push(e);
            }
        }
        let probed = join_all(relays.iter().filter_map(|relay| {
            let address = *lookup_of(&relay.host)?.addresses().first()?;
            Some(probe_ports(
                &relay.host,
                address,
                LEGACY_RELAY_PORTS.iter().map(|p| (*p, false)),
                timeout,
            ))
        }))
        .await;
        Some(probed)
    };
    let idle = async {
        let hold = settings.idle_hold?;
        let relay = settings.servicebus_endpoints.first()?;
        Some(
            idle_hold(
                relay,
                lookup_of(&relay.host),
                &route,
                &trust,
                hold,
                timeout,
                cancel,
            )
            .await,
        )
    };
    let (endpoints, crl, legacy_relay_ports, idle_hold) =
        tokio::join!(tls_probes, crl_probes, legacy, idle);

    NetworkFacts {
        lookups,
        endpoints,
        proxy: settings.proxy.as_ref().map(ToString::to_string),
        accepted_issuers: settings.accepted_issuers.clone(),
        crl,
        dc_ports: Vec::new(),
        legacy_relay_ports,
        idle_hold,
    }
}

/// The legacy Service Bus relay ports that event 32011 still names (NET-10).
const LEGACY_RELAY_PORTS: [u16; 5] = [9350, 9351, 9352, 9353, 9354];

/// How the probes reach the outside: directly, or through the configured proxy (with its
/// address, or why it has none). The DC ports and the legacy relay ports are always tested
/// directly: a TCP port test means nothing through an HTTP proxy.
enum Route {
    Direct,
    Proxy(Proxy, Result<SocketAddr, String>),
}

async fn resolve_proxy(proxy: &Proxy, resolver: &Resolver) -> Result<SocketAddr, String> {
    let lookup = resolver.lookup(&proxy.host).await;
    match &lookup.outcome {
        Ok(resolution) => resolution
            .addresses
            .first()
            .map(|ip| SocketAddr::new(*ip, proxy.port))
            .ok_or_else(|| format!("the proxy {proxy} has no address")),
        Err(e) => Err(format!("the proxy {proxy} does not resolve: {}", e.message)),
    }
}

/// The address to connect to for `endpoint`: its own first address when direct, or a
/// failure saying why there is none.
fn direct_address(
    endpoint: &Endpoint,
    lookup: Option<&DnsLookup>,
) -> Result<SocketAddr, EndpointFailure> {
    match lookup.map(|l| &l.outcome) {
        Some(Ok(resolution)) => resolution
            .addresses
            .first()
            .map(|ip| SocketAddr::new(*ip, endpoint.port))
            .ok_or_else(|| {
                failure(
                    EndpointStep::Dns,
                    format!("{} has no address", endpoint.host),
                )
            }),
        Some(Err(e)) => {
            let step = match e.kind {
                DnsFailureKind::ResolverUnavailable => EndpointStep::Setup,
                _ => EndpointStep::Dns,
            };
            Err(failure(step, e.message.clone()))
        }
        None => Err(failure(
            EndpointStep::Dns,
            format!("{} has no address", endpoint.host),
        )),
    }
}

/// Opens a TCP stream that leads to `endpoint`: a direct connection, or a `CONNECT` tunnel
/// through the proxy. Returns the stream and the address connected to.
async fn open_stream(
    endpoint: &Endpoint,
    lookup: Option<&DnsLookup>,
    route: &Route,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), (Option<SocketAddr>, EndpointFailure)> {
    match route {
        Route::Direct => {
            let address = direct_address(endpoint, lookup).map_err(|f| (None, f))?;
            let tcp = connect_tcp(address, timeout)
                .await
                .map_err(|(step, message)| (Some(address), failure(step, message)))?;
            Ok((tcp, address))
        }
        Route::Proxy(proxy, address) => {
            let address = proxy_address(address).map_err(|f| (None, f))?;
            let tcp = connect_proxy(proxy, address, timeout)
                .await
                .map_err(|f| (Some(address), f))?;
            let tcp = tokio::time::timeout(timeout, tunnel(tcp, proxy, endpoint))
                .await
                .unwrap_or_else(|_| {
                    Err(failure(
                        EndpointStep::Proxy,
                        format!(
                            "the proxy {proxy} did not answer CONNECT {endpoint} within {}s",
                            timeout.as_secs_f32()
                        ),
                    ))
                })
                .map_err(|f| (Some(address), f))?;
            Ok((tcp, address))
        }
    }
}

/// The proxy's address, or the failure saying why it has none.
fn proxy_address(address: &Result<SocketAddr, String>) -> Result<SocketAddr, EndpointFailure> {
    address
        .as_ref()
        .copied()
        .map_err(|message| failure(EndpointStep::Proxy, message.clone()))
}

async fn connect_proxy(
    proxy: &Proxy,
    address: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, EndpointFailure> {
    connect_tcp(address, timeout).await.map_err(|(_, message)| {
        failure(
            EndpointStep::Proxy,
            format!("cannot reach the proxy {proxy}: {message}"),
        )
    })
}

/// Asks the proxy for a tunnel to `endpoint` with `CONNECT` and reads its answer.
async fn tunnel(
    mut tcp: TcpStream,
    proxy: &Proxy,
    endpoint: &Endpoint,
) -> Result<TcpStream, EndpointFailure> {
    let request = format!(
        "CONNECT {endpoint} HTTP/1.1\r\nHost: {endpoint}\r\nUser-Agent: wbhealth-agent/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let proxy_failure = |message: String| failure(EndpointStep::Proxy, message);
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| proxy_failure(format!("sending CONNECT to the proxy {proxy} failed: {e}")))?;
    // Byte by byte, so that nothing of the tunnelled stream is read past the answer's head.
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(proxy_failure(format!(
                "the proxy {proxy} sent an oversized answer to CONNECT"
            )));
        }
        match tcp.read_u8().await {
            Ok(b) => head.push(b),
            Err(e) => {
                return Err(proxy_failure(format!(
                    "the proxy {proxy} closed the connection without answering CONNECT {endpoint}: {e}"
                )));
            }
        }
    }
    let status = parse_status_line(&head)
        .map_err(|e| proxy_failure(format!("the proxy {proxy} answered CONNECT oddly: {e}")))?;
    match status {
        200..=299 => Ok(tcp),
        code => Err(proxy_status_failure(proxy, endpoint, code)),
    }
}

/// The failure for a proxy's refusal to carry a request to `endpoint`.
fn proxy_status_failure(proxy: &Proxy, endpoint: &Endpoint, code: u16) -> EndpointFailure {
    match code {
        403 => failure(
            EndpointStep::ProxyDenied,
            format!("the proxy {proxy} denied {endpoint} (HTTP 403): the URL is not allowed"),
        ),
        407 => failure(
            EndpointStep::ProxyAuthRequired,
            format!(
                "the proxy {proxy} wants authentication for {endpoint} (HTTP 407); the sync server's .NET proxy settings need useDefaultCredentials=\"true\""
            ),
        ),
        code => failure(
            EndpointStep::Proxy,
            format!("the proxy {proxy} could not carry {endpoint} (HTTP {code})"),
        ),
    }
}

async fn probe_endpoint(
    purpose: EndpointPurpose,
    endpoint: &Endpoint,
    lookup: Option<&DnsLookup>,
    route: &Route,
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
    let trust = match trust {
        Ok(trust) => trust,
        Err(reason) => {
            probe.outcome = Err(failure(EndpointStep::Setup, reason.clone()));
            return probe;
        }
    };
    probe.outcome = match open_stream(endpoint, lookup, route, timeout).await {
        Err((address, e)) => {
            probe.address = address;
            Err(e)
        }
        Ok((tcp, address)) => {
            probe.address = Some(address);
            session(tcp, endpoint, address, trust, timeout).await
        }
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
#[cfg(test)]
async fn handshake(
    endpoint: &Endpoint,
    address: SocketAddr,
    trust: &TrustStore,
    timeout: Duration,
) -> Result<TlsSession, EndpointFailure> {
    let tcp = connect_tcp(address, timeout)
        .await
        .map_err(|(step, message)| failure(step, message))?;
    session(tcp, endpoint, address, trust, timeout).await
}

/// Establishes TLS over `tcp`, validating the chain against `trust`.
async fn open_tls(
    tcp: TcpStream,
    endpoint: &Endpoint,
    address: SocketAddr,
    trust: &TrustStore,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, EndpointFailure> {
    let (config, recorder) = trust
        .client_config()
        .map_err(|e| failure(EndpointStep::Setup, e.to_string()))?;
    let server_name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
        failure(
            EndpointStep::Setup,
            format!("{:?} is not a valid DNS name: {e}", endpoint.host),
        )
    })?;
    let connector = TlsConnector::from(config);
    match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
        Err(_) => Err(failure(
            EndpointStep::TlsHandshake,
            format!(
                "no TLS handshake with {address} within {}s",
                timeout.as_secs_f32()
            ),
        )),
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
            Err(EndpointFailure {
                step,
                message,
                presented,
            })
        }
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Establishes TLS over `tcp`, then asks `GET /` and records the session.
async fn session(
    tcp: TcpStream,
    endpoint: &Endpoint,
    address: SocketAddr,
    trust: &TrustStore,
    timeout: Duration,
) -> Result<TlsSession, EndpointFailure> {
    let mut stream = open_tls(tcp, endpoint, address, trust, timeout).await?;
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

    let request = get_request("/", &host_header(endpoint, 443));
    let http_status =
        match tokio::time::timeout(timeout, http_exchange(&mut stream, &request)).await {
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

/// NET-08: a plain HTTP `GET /`, where any HTTP answer from the host means reachable.
async fn probe_http(
    endpoint: &Endpoint,
    lookup: Option<&DnsLookup>,
    route: &Route,
    timeout: Duration,
) -> HttpProbe {
    let started = Instant::now();
    let mut probe = HttpProbe {
        host: endpoint.host.clone(),
        port: endpoint.port,
        address: None,
        duration: Duration::ZERO,
        outcome: Err(failure(EndpointStep::Setup, "not probed")),
    };
    // Through a proxy, plain HTTP is an absolute-form request to the proxy, not a tunnel.
    let (tcp, request, proxy) = match route {
        Route::Direct => match direct_address(endpoint, lookup) {
            Err(e) => {
                probe.outcome = Err(e);
                return probe;
            }
            Ok(address) => {
                probe.address = Some(address);
                match connect_tcp(address, timeout).await {
                    Err((step, message)) => {
                        probe.outcome = Err(failure(step, message));
                        probe.duration = started.elapsed();
                        return probe;
                    }
                    Ok(tcp) => (tcp, get_request("/", &host_header(endpoint, 80)), None),
                }
            }
        },
        Route::Proxy(proxy, address) => {
            let address = match proxy_address(address) {
                Ok(address) => address,
                Err(e) => {
                    probe.outcome = Err(e);
                    return probe;
                }
            };
            probe.address = Some(address);
            match connect_proxy(proxy, address, timeout).await {
                Err(e) => {
                    probe.outcome = Err(e);
                    probe.duration = started.elapsed();
                    return probe;
                }
                Ok(tcp) => (
                    tcp,
                    get_request(
                        &format!("http://{}/", host_header(endpoint, 80)),
                        &host_header(endpoint, 80),
                    ),
                    Some(proxy),
                ),
            }
        }
    };
    let mut tcp = tcp;
    let answer = tokio::time::timeout(timeout, http_exchange(&mut tcp, &request)).await;
    probe.outcome = match (answer, proxy) {
        (Err(_), _) => Err(failure(
            EndpointStep::Http,
            format!(
                "no HTTP answer from {} within {}s",
                probe.target(),
                timeout.as_secs_f32()
            ),
        )),
        (Ok(Err(message)), _) => Err(failure(EndpointStep::Http, message)),
        // A proxy speaks for itself with these; the host was never reached.
        (Ok(Ok(code @ (403 | 407 | 502 | 503 | 504))), Some(proxy)) => {
            Err(proxy_status_failure(proxy, endpoint, code))
        }
        (Ok(Ok(code)), _) => Ok(code),
    };
    probe.duration = started.elapsed();
    probe
}

/// TCP connects to each of `ports` (with whether it is a dynamic-range sample) of `address`.
async fn probe_ports(
    host: &str,
    address: IpAddr,
    ports: impl Iterator<Item = (u16, bool)>,
    timeout: Duration,
) -> HostPorts {
    let probes = join_all(ports.map(|(port, dynamic)| async move {
        let outcome = match connect_tcp(SocketAddr::new(address, port), timeout).await {
            Ok(_) => PortOutcome::Open,
            Err((EndpointStep::TcpRefused, _)) => PortOutcome::Refused,
            Err((EndpointStep::TcpTimeout, _)) => PortOutcome::TimedOut,
            Err((_, message)) => PortOutcome::Error(message),
        };
        PortProbe {
            port,
            dynamic,
            outcome,
        }
    }))
    .await;
    HostPorts {
        host: host.to_owned(),
        address,
        ports: probes,
    }
}

/// NET-09: the DC ports of the configured DC and the PDC emulator (one entry when they are
/// the same machine). Direct, never through the proxy: DCs are on the inside.
pub async fn probe_dc_ports(
    settings: &NetworkSettings,
    configured_dc: Option<&str>,
    pdc: Option<&str>,
    resolver: &Resolver,
) -> Vec<DcPorts> {
    let mut dcs: Vec<(String, Vec<String>)> = Vec::new();
    for (host, role) in [(configured_dc, "configured DC"), (pdc, "PDC emulator")] {
        let Some(host) = host else { continue };
        match dcs.iter_mut().find(|(h, _)| h.eq_ignore_ascii_case(host)) {
            Some((_, roles)) => roles.push(role.to_owned()),
            None => dcs.push((host.to_owned(), vec![role.to_owned()])),
        }
    }
    let ports: Vec<(u16, bool)> = settings
        .dc_ports
        .iter()
        .map(|p| (*p, false))
        .chain(settings.dc_dynamic_ports.iter().map(|p| (*p, true)))
        .collect();
    join_all(dcs.into_iter().map(|(host, roles)| {
        let ports = ports.clone();
        async move {
            let lookup = resolver.lookup(&host).await;
            let (probed, cldap) = match lookup.addresses().first() {
                Some(address) => {
                    let (ports, cldap) = tokio::join!(
                        probe_ports(&host, *address, ports.into_iter(), settings.timeout),
                        cldap_ping(*address, settings.timeout)
                    );
                    (Ok(ports), Some(cldap))
                }
                None => (
                    Err(match &lookup.outcome {
                        Err(e) => e.message.clone(),
                        Ok(_) => format!("{host} has no address"),
                    }),
                    None,
                ),
            };
            DcPorts {
                host,
                roles,
                ports: probed,
                cldap,
            }
        }
    }))
    .await
}

/// A CLDAP ping: message 1, a base search of the rootDSE with the filter `(NtVer=6)` for the
/// `Netlogon` attribute, as DC locators send it over UDP 389.
const CLDAP_PING: [u8; 51] = [
    0x30, 0x31, 0x02, 0x01, 0x01, // LDAPMessage, messageID 1
    0x63, 0x2c, // SearchRequest
    0x04, 0x00, // baseObject ""
    0x0a, 0x01, 0x00, // scope baseObject
    0x0a, 0x01, 0x00, // derefAliases never
    0x02, 0x01, 0x00, // sizeLimit 0
    0x02, 0x01, 0x00, // timeLimit 0
    0x01, 0x01, 0x00, // typesOnly false
    0xa3, 0x0d, 0x04, 0x05, b'N', b't', b'V', b'e', b'r', 0x04, 0x04, 0x06, 0x00, 0x00,
    0x00, // (NtVer=\06\00\00\00)
    0x30, 0x0a, 0x04, 0x08, b'N', b'e', b't', b'l', b'o', b'g', b'o', b'n', // attributes
];

/// Sends a CLDAP ping to `address` (UDP 389), once more halfway through the time-out in case
/// a datagram was lost. Any LDAP message back means CLDAP works.
async fn cldap_ping(address: IpAddr, timeout: Duration) -> PortOutcome {
    let local: SocketAddr = if address.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(e) => return PortOutcome::Error(format!("cannot open a UDP socket: {e}")),
    };
    if let Err(e) = socket.connect(SocketAddr::new(address, 389)).await {
        return PortOutcome::Error(format!("UDP to {address}:389 failed: {e}"));
    }
    let mut answer = [0u8; 4096];
    for _ in 0..2 {
        if let Err(e) = socket.send(&CLDAP_PING).await {
            return PortOutcome::Error(format!("sending a CLDAP ping to {address} failed: {e}"));
        }
        match tokio::time::timeout(timeout / 2, socket.recv(&mut answer)).await {
            Err(_) => continue,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return PortOutcome::Refused;
            }
            Ok(Err(e)) => return PortOutcome::Error(format!("CLDAP from {address} failed: {e}")),
            Ok(Ok(n)) if n > 0 && answer[0] == 0x30 => return PortOutcome::Open,
            Ok(Ok(_)) => {
                return PortOutcome::Error(format!(
                    "{address} answered UDP 389 with something other than LDAP"
                ));
            }
        }
    }
    PortOutcome::TimedOut
}

/// NET-04: opens a TLS session to the relay, keeps it idle for `hold` (showing progress on
/// stderr), then sends a request on it. A close or reset while idle, or no answer after it,
/// means something in the path drops idle connections. `cancel` (Ctrl-C) ends it early.
async fn idle_hold(
    relay: &Endpoint,
    lookup: Option<&DnsLookup>,
    route: &Route,
    trust: &Result<TrustStore, String>,
    hold: Duration,
    timeout: Duration,
    cancel: impl Future<Output = ()>,
) -> IdleHold {
    let target = relay.to_string();
    let outcome = async {
        let trust = trust
            .as_ref()
            .map_err(|reason| failure(EndpointStep::Setup, reason.clone()))?;
        let (tcp, address) = open_stream(relay, lookup, route, timeout)
            .await
            .map_err(|(_, e)| e)?;
        open_tls(tcp, relay, address, trust, timeout).await
    }
    .await;
    let mut stream = match outcome {
        Ok(stream) => stream,
        Err(failure) => {
            return IdleHold {
                target,
                hold,
                outcome: IdleHoldOutcome::NotStarted { failure },
            };
        }
    };

    eprintln!(
        "idle-hold: TLS session to {target} open; staying idle for {} (Ctrl-C to stop)",
        clock(hold)
    );
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + hold;
    let step = (hold / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
    tokio::pin!(cancel);
    let mut byte = [0u8; 1];
    let dropped = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break None,
            () = &mut cancel => {
                eprintln!("idle-hold: cancelled after {}", clock(started.elapsed()));
                return IdleHold {
                    target,
                    hold,
                    outcome: IdleHoldOutcome::Cancelled { after: started.elapsed() },
                };
            }
            _ = ticks.tick() => {
                eprintln!("idle-hold: {} of {} idle on {target}", clock(started.elapsed()), clock(hold));
            }
            read = stream.read(&mut byte) => match read {
                Ok(0) => break Some("the connection was closed while idle".to_owned()),
                Err(e) => break Some(format!("the connection was reset while idle: {e}")),
                // Unasked data (a TLS record the peer sent) is no sign of a drop.
                Ok(_) => {}
            },
        }
    };
    let outcome = match dropped {
        Some(how) => IdleHoldOutcome::Dropped {
            after: started.elapsed(),
            how,
        },
        None => {
            let request = get_request("/", &host_header(relay, 443));
            match tokio::time::timeout(timeout, http_exchange(&mut stream, &request)).await {
                Ok(Ok(http_status)) => IdleHoldOutcome::Survived { http_status },
                Ok(Err(e)) => IdleHoldOutcome::Dropped {
                    after: started.elapsed(),
                    how: format!("after the idle time the session carried no request: {e}"),
                },
                Err(_) => IdleHoldOutcome::Dropped {
                    after: started.elapsed(),
                    how: format!(
                        "after the idle time no answer came within {}s (the connection was silently dropped?)",
                        timeout.as_secs_f32()
                    ),
                },
            }
        }
    };
    let _ = stream.shutdown().await;
    eprintln!("idle-hold: done after {}", clock(started.elapsed()));
    IdleHold {
        target,
        hold,
        outcome,
    }
}

/// `m:ss`.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
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

/// The `Host` header for `endpoint`: the port is left out when it is the scheme's default.
fn host_header(endpoint: &Endpoint, default_port: u16) -> String {
    if endpoint.port == default_port {
        endpoint.host.clone()
    } else {
        endpoint.to_string()
    }
}

/// A minimal `GET` request for `target` (a path, or an absolute URL for a proxy).
fn get_request(target: &str, host: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: wbhealth-agent/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Sends `request` and returns the status code of the answer.
async fn http_exchange<S>(stream: &mut S, request: &str) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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

    /// Settings that probe nothing, to be filled in by each test.
    fn test_settings() -> NetworkSettings {
        NetworkSettings {
            dns_servers: vec!["127.0.0.1:9".parse().expect("addr")],
            extra_ca_file: None,
            passwordreset_endpoints: vec![],
            servicebus_endpoints: vec![],
            connect_endpoints: vec![],
            crl_endpoints: vec![],
            accepted_issuers: vec![],
            dc_ports: vec![],
            dc_dynamic_ports: vec![],
            legacy_relay_ports: false,
            proxy: None,
            idle_hold: None,
            idle_hold_duration: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
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
            ..test_settings()
        };
        let resolver = Resolver::new(&settings.dns_servers, settings.timeout);
        let facts = probe(&settings, &resolver, std::future::pending()).await;
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
            &Route::Direct,
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

    #[tokio::test]
    async fn an_idle_session_to_a_patient_server_survives_the_hold() {
        let address = tls_server().await;
        let (_dir, trust) = trust_with_test_ca();
        let relay = endpoint("passwordreset.test", address.port());
        let lookup = DnsLookup {
            host: relay.host.clone(),
            duration: Duration::ZERO,
            outcome: Ok(Resolution {
                cname_chain: vec![],
                addresses: vec![address.ip()],
            }),
        };
        let hold = idle_hold(
            &relay,
            Some(&lookup),
            &Route::Direct,
            &Ok(trust),
            Duration::from_secs(2),
            Duration::from_secs(5),
            std::future::pending(),
        )
        .await;
        assert_eq!(hold.outcome, IdleHoldOutcome::Survived { http_status: 401 });
    }

    /// A one-connection-at-a-time proxy on loopback: tunnels `CONNECT` to `upstream`, or
    /// answers every request with `refuse` when set.
    async fn proxy(upstream: SocketAddr, refuse: Option<u16>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read_u8().await {
                            Ok(b) => head.push(b),
                            Err(_) => return,
                        }
                    }
                    if let Some(code) = refuse {
                        let answer = format!("HTTP/1.1 {code} No\r\n\r\n");
                        let _ = client.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Proxy {
            host: "127.0.0.1".to_owned(),
            port: address.port(),
        }
    }

    #[tokio::test]
    async fn tls_goes_through_a_connect_proxy_and_its_refusals_are_named() {
        let server = tls_server().await;
        let (_dir, trust) = trust_with_test_ca();
        let trust = Ok(trust);
        // The name does not resolve here: through a proxy, only the proxy needs an address.
        let target = endpoint("passwordreset.test", server.port());
        let forwarding = proxy(server, None).await;
        let route = Route::Proxy(
            forwarding.clone(),
            Ok(SocketAddr::from(([127, 0, 0, 1], forwarding.port))),
        );
        let probe = probe_endpoint(
            EndpointPurpose::PasswordReset,
            &target,
            None,
            &route,
            &trust,
            Duration::from_secs(5),
        )
        .await;
        let session = probe.outcome.expect("tunnelled TLS");
        assert_eq!(session.http_status, Ok(401));
        assert_eq!(probe.address.map(|a| a.port()), Some(forwarding.port));

        for (code, step) in [
            (403, EndpointStep::ProxyDenied),
            (407, EndpointStep::ProxyAuthRequired),
            (502, EndpointStep::Proxy),
        ] {
            let refusing = proxy(server, Some(code)).await;
            let route = Route::Proxy(
                refusing.clone(),
                Ok(SocketAddr::from(([127, 0, 0, 1], refusing.port))),
            );
            let probe = probe_endpoint(
                EndpointPurpose::Connect,
                &target,
                None,
                &route,
                &trust,
                Duration::from_secs(5),
            )
            .await;
            let err = probe.outcome.expect_err("refused by the proxy");
            assert_eq!(err.step, step, "{}", err.message);
            assert!(
                err.message.contains(&refusing.to_string()),
                "{}",
                err.message
            );
        }
    }
}

//! What the probes observed on this machine: plain data that the checks judge.
//!
//! Probes ([`crate::probe`]) fill these in and never decide pass or fail; checks
//! ([`crate::checks`]) read them and never touch the network. Everything here serializes, so a
//! check can put exactly what it saw into its evidence, and a failure always says which step
//! failed and why, because a check must report `error` (not `pass`) when a probe could not look.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

/// Everything one probe run gathered.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The sync server's host name, as the remediation texts name it.
    pub host_name: String,
    /// When the probes started.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    /// DNS, TCP and TLS towards Microsoft's endpoints.
    pub network: NetworkFacts,
    /// What the domain controller said, or the step at which reading it failed.
    pub directory: Result<DirectoryFacts, ProbeFailure>,
    /// The sync server itself (services, registry, cmdlets, event log), live or from a
    /// snapshot, or why it could not be read.
    pub host: Result<crate::host::HostFacts, crate::host::HostFailure>,
    /// How long each probe took.
    pub durations: ProbeDurations,
}

/// Wall-clock time of each probe; the probes run concurrently.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProbeDurations {
    /// The network probe: all look-ups and all endpoint probes.
    #[serde(rename = "network_ms", with = "millis")]
    pub network: Duration,
    /// The directory probe: connect, bind, reads and the PDC probe.
    #[serde(rename = "directory_ms", with = "millis")]
    pub directory: Duration,
    /// The host probe: reading the snapshot, or collecting it on Windows.
    #[serde(rename = "host_ms", with = "millis")]
    pub host: Duration,
}

/// What the network probe saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetworkFacts {
    /// One look-up per distinct endpoint host, in the order the endpoints are configured.
    pub lookups: Vec<DnsLookup>,
    /// One probe per configured endpoint, password reset endpoints first.
    pub endpoints: Vec<EndpointProbe>,
    /// The HTTP proxy the probes went through, as `http://host:port`; `None` when direct.
    pub proxy: Option<String>,
    /// Issuer texts accepted as Microsoft's public CAs (NET-07), from the settings.
    pub accepted_issuers: Vec<String>,
    /// One plain-HTTP probe per CRL/OCSP endpoint (NET-08).
    pub crl: Vec<HttpProbe>,
    /// The DC ports of the configured DC and the PDC emulator (NET-09); empty when no DC is
    /// known (LDAP not configured or the PDC not found).
    pub dc_ports: Vec<DcPorts>,
    /// The legacy relay ports 9350–9354 of each relay host (NET-10); `None` when not probed.
    pub legacy_relay_ports: Option<Vec<HostPorts>>,
    /// The idle-hold probe (NET-04); `None` when it was not asked for.
    pub idle_hold: Option<IdleHold>,
}

/// A plain HTTP `GET /` to a `host:port`, where any HTTP answer means reachable.
#[derive(Debug, Clone, Serialize)]
pub struct HttpProbe {
    /// The DNS name.
    pub host: String,
    /// The TCP port, 80 for Microsoft's CRL and OCSP hosts.
    pub port: u16,
    /// The address connected to (the proxy's when one is set); `None` when there was none.
    pub address: Option<SocketAddr>,
    /// How long the probe took, DNS excluded.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// The HTTP status code, or the step that failed.
    pub outcome: Result<u16, EndpointFailure>,
}

impl HttpProbe {
    /// `host:port`, as people write it.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The TCP ports tested on one domain controller.
#[derive(Debug, Clone, Serialize)]
pub struct DcPorts {
    /// The DC's name.
    pub host: String,
    /// Whether it is the PDC emulator, the configured DC, or both.
    pub roles: Vec<String>,
    /// The ports, or why none could be tested (the name did not resolve).
    pub ports: Result<HostPorts, String>,
    /// The CLDAP ping (an LDAP search for `Netlogon` over UDP 389) that DC locators send;
    /// `None` when the name did not resolve.
    pub cldap: Option<PortOutcome>,
}

/// TCP connects to several ports of one address.
#[derive(Debug, Clone, Serialize)]
pub struct HostPorts {
    /// The host name.
    pub host: String,
    /// The address tried.
    pub address: IpAddr,
    /// One result per port, in the order probed.
    pub ports: Vec<PortProbe>,
}

/// One TCP connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortProbe {
    /// The port.
    pub port: u16,
    /// Whether it is a sample of the dynamic RPC range, where a refusal still shows that
    /// the path is open (the DC itself answered).
    pub dynamic: bool,
    /// What happened.
    pub outcome: PortOutcome,
}

/// The result of a TCP connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortOutcome {
    /// The connection was accepted.
    Open,
    /// The host answered with a reset: nothing listens there, or a firewall rejects it.
    Refused,
    /// No answer within the time-out: a firewall drops the packets.
    TimedOut,
    /// Another error (no route, network unreachable, …).
    Error(String),
}

impl PortOutcome {
    /// A word or two for summaries.
    pub fn describe(&self) -> &str {
        match self {
            PortOutcome::Open => "open",
            PortOutcome::Refused => "refused",
            PortOutcome::TimedOut => "timed out",
            PortOutcome::Error(e) => e,
        }
    }
}

/// The idle-hold probe: a TLS session to a relay held idle, then used again (NET-04).
#[derive(Debug, Clone, Serialize)]
pub struct IdleHold {
    /// The relay, `host:port`.
    pub target: String,
    /// How long the session was to stay idle.
    #[serde(rename = "hold_ms", with = "millis")]
    pub hold: Duration,
    /// What happened.
    pub outcome: IdleHoldOutcome,
}

/// What became of the idle session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdleHoldOutcome {
    /// After the whole idle time the session still carried a request and its answer.
    Survived {
        /// The status of the answer to the request sent after the idle time.
        http_status: u16,
    },
    /// The session was closed or reset while idle, or did not carry the request after it.
    Dropped {
        /// How long it had been idle when the drop was noticed.
        #[serde(rename = "after_ms", with = "millis")]
        after: Duration,
        /// What was seen: a close, a reset, or no answer.
        how: String,
    },
    /// The session could not be opened in the first place, so nothing was held.
    NotStarted {
        /// The step that failed.
        failure: EndpointFailure,
    },
    /// The technician interrupted it (Ctrl-C) before the time was up.
    Cancelled {
        /// How long it had been idle.
        #[serde(rename = "after_ms", with = "millis")]
        after: Duration,
    },
}

/// One DNS look-up of a host's addresses.
#[derive(Debug, Clone, Serialize)]
pub struct DnsLookup {
    /// The name asked for.
    pub host: String,
    /// How long the look-up took.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// The answer, or why there was none.
    pub outcome: Result<Resolution, DnsFailure>,
}

impl DnsLookup {
    /// The addresses found; empty when the look-up failed.
    pub fn addresses(&self) -> &[IpAddr] {
        match &self.outcome {
            Ok(resolution) => &resolution.addresses,
            Err(_) => &[],
        }
    }
}

/// A successful look-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The names the CNAME records pointed to, in the order they were followed (empty when
    /// the host has its own address records).
    pub cname_chain: Vec<String>,
    /// The addresses of the last name in the chain, never empty.
    pub addresses: Vec<IpAddr>,
}

/// Why a look-up found no address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsFailure {
    /// The kind of failure.
    pub kind: DnsFailureKind,
    /// The resolver's message.
    pub message: String,
}

/// The kinds of DNS failure that call for different fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsFailureKind {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no address records (NOERROR with an empty answer).
    NoAnswer,
    /// A name server answered with an error such as SERVFAIL or REFUSED.
    ServerError,
    /// No answer within the time-out.
    Timeout,
    /// No name server could be reached.
    Unreachable,
    /// The agent could not set up a resolver (for example, it could not read the system's
    /// DNS configuration): nothing was asked, so this says nothing about the network.
    ResolverUnavailable,
    /// Anything else.
    Other,
}

impl DnsFailureKind {
    /// A few words for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            DnsFailureKind::NxDomain => "NXDOMAIN, the name does not exist",
            DnsFailureKind::NoAnswer => "no address records",
            DnsFailureKind::ServerError => "the DNS server returned an error",
            DnsFailureKind::Timeout => "DNS timed out",
            DnsFailureKind::Unreachable => "no DNS server reachable",
            DnsFailureKind::ResolverUnavailable => "no DNS resolver configuration",
            DnsFailureKind::Other => "DNS failed",
        }
    }
}

/// Which writeback channel an endpoint carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointPurpose {
    /// The password reset service (NET-01).
    PasswordReset,
    /// The Service Bus relay (NET-02).
    ServiceBus,
    /// Another Entra Connect endpoint (§4.2 of the reference: sign-in, provisioning).
    Connect,
}

impl fmt::Display for EndpointPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointPurpose::PasswordReset => "password reset service",
            EndpointPurpose::ServiceBus => "Service Bus relay",
            EndpointPurpose::Connect => "Entra Connect endpoint",
        })
    }
}

/// One TCP + TLS + HTTP probe of an endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointProbe {
    /// The channel it carries.
    pub purpose: EndpointPurpose,
    /// The DNS name, which the certificate must match.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The address connected to; `None` when DNS gave none.
    pub address: Option<SocketAddr>,
    /// How long the probe took, DNS excluded.
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// The established session, or the step that failed.
    pub outcome: Result<TlsSession, EndpointFailure>,
}

impl EndpointProbe {
    /// `host:port`, as people write it.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A TLS session that was established with a certificate chain the machine trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsSession {
    /// `TLS 1.2` or `TLS 1.3`.
    pub protocol: String,
    /// The negotiated cipher suite.
    pub cipher_suite: String,
    /// The peer certificate's subject, as `CN=…, O=…`.
    pub peer_subject: String,
    /// The peer certificate's issuer.
    pub peer_issuer: String,
    /// The status code of the answer to `GET /`, or why no answer came.
    pub http_status: Result<u16, String>,
}

/// The step at which an endpoint probe stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointFailure {
    /// The step.
    pub step: EndpointStep,
    /// What went wrong there.
    pub message: String,
    /// For certificate failures, the certificate the server presented, when it was seen.
    pub presented: Option<PresentedCertificate>,
}

/// The subject and issuer of a certificate a server presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresentedCertificate {
    /// The leaf certificate's subject.
    pub subject: String,
    /// The leaf certificate's issuer: for TLS inspection, the proxy's CA.
    pub issuer: String,
}

/// The steps of an endpoint probe, in order, plus local set-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointStep {
    /// The agent could not prepare the probe (for example, an unreadable CA file): nothing
    /// was sent, so this says nothing about the network.
    Setup,
    /// The host did not resolve.
    Dns,
    /// The connection was actively refused (RST).
    TcpRefused,
    /// The connection attempt timed out (packets dropped).
    TcpTimeout,
    /// The connection failed otherwise (no route, network unreachable, …).
    TcpError,
    /// The certificate chain does not lead to a trusted root: typical of TLS inspection by a
    /// proxy or firewall (NET-07), or of a missing root CA.
    CertificateUntrusted,
    /// The certificate was rejected for another reason (expired, wrong name, revoked, …).
    CertificateInvalid,
    /// The TLS handshake failed otherwise (reset, protocol or cipher mismatch, time-out).
    TlsHandshake,
    /// The configured proxy could not be reached, or did not answer `CONNECT` properly.
    Proxy,
    /// The proxy refused the destination (HTTP 403: the URL is not allowed).
    ProxyDenied,
    /// The proxy asked for authentication (HTTP 407).
    ProxyAuthRequired,
    /// The connection opened but no HTTP answer came back (NET-08's plain HTTP probes).
    Http,
}

impl EndpointStep {
    /// A few words for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            EndpointStep::Setup => "could not be probed",
            EndpointStep::Dns => "does not resolve",
            EndpointStep::TcpRefused => "refused",
            EndpointStep::TcpTimeout => "timed out",
            EndpointStep::TcpError => "unreachable",
            EndpointStep::CertificateUntrusted => "certificate not trusted (TLS inspection?)",
            EndpointStep::CertificateInvalid => "certificate rejected",
            EndpointStep::TlsHandshake => "TLS handshake failed",
            EndpointStep::Proxy => "proxy failed",
            EndpointStep::ProxyDenied => "denied by the proxy (HTTP 403)",
            EndpointStep::ProxyAuthRequired => "proxy wants authentication (HTTP 407)",
            EndpointStep::Http => "no HTTP answer",
        }
    }
}

/// What the directory probe read from a domain controller.
#[derive(Debug, Clone, Serialize)]
pub struct DirectoryFacts {
    /// The domain controller contacted.
    pub dc: LdapEndpoint,
    /// The DC's own name from its rootDSE (`dnsHostName`), when it gave one.
    pub dc_dns_host_name: Option<String>,
    /// The domain NC head, from the rootDSE.
    pub default_naming_context: String,
    /// The domain's DNS name, derived from the `DC=` parts of the NC head.
    pub domain_dns_name: String,
    /// The PDC emulator and whether it could be reached, or why it could not be found.
    pub pdc: Result<PdcFacts, ProbeFailure>,
    /// The raw `minPwdAge` of the domain head (a negative count of 100-ns intervals, `0` for
    /// none), or why it could not be read.
    pub min_pwd_age: Result<i64, ProbeFailure>,
    /// Security descriptors, the connector account, users and OUs in scope, DCs and PSOs.
    pub ad: crate::ad::AdFacts,
}

/// A domain controller's LDAP service as the agent reached it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LdapEndpoint {
    /// The host name used for DNS and certificate validation.
    pub host: String,
    /// The address connected to.
    pub address: SocketAddr,
    /// `ldaps` or `starttls`.
    pub security: &'static str,
}

/// The PDC emulator, found through `fSMORoleOwner` on the domain head.
#[derive(Debug, Clone, Serialize)]
pub struct PdcFacts {
    /// The role owner: the DN of the PDC's `NTDS Settings` object.
    pub role_owner_dn: String,
    /// The DN of its parent server object.
    pub server_dn: String,
    /// The server object's `dNSHostName`: the PDC's FQDN.
    pub dns_host_name: String,
    /// Whether the sync server can reach it over LDAP.
    pub reach: PdcReach,
}

/// Whether the PDC emulator answered an authenticated LDAP bind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PdcReach {
    /// The PDC is the DC the probe was already bound to, which proves it reachable.
    SameAsContacted {
        /// The address of that connection.
        address: SocketAddr,
    },
    /// The PDC is another DC, which was resolved, connected to and bound to separately.
    Probed {
        /// The look-up of its name.
        lookup: DnsLookup,
        /// The address tried, when the name resolved.
        address: Option<SocketAddr>,
        /// `Ok` when TCP, TLS and the bind all succeeded.
        outcome: Result<(), ProbeFailure>,
    },
}

impl PdcReach {
    /// The address used to reach the PDC, when there was one.
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            PdcReach::SameAsContacted { address } => Some(*address),
            PdcReach::Probed { address, .. } => *address,
        }
    }
}

/// The step at which a directory probe stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{step}: {message}")]
pub struct ProbeFailure {
    /// The step.
    pub step: ProbeStep,
    /// What went wrong there, naming the host.
    pub message: String,
}

impl ProbeFailure {
    /// A failure at `step`.
    pub fn new(step: ProbeStep, message: impl Into<String>) -> Self {
        Self {
            step,
            message: message.into(),
        }
    }
}

/// The steps of talking to a domain controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStep {
    /// The agent has no LDAP settings, so it did not try.
    NotConfigured,
    /// The DC's name did not resolve.
    Dns,
    /// TCP connect failed.
    Connect,
    /// TLS (LDAPS or StartTLS) failed.
    Tls,
    /// The simple bind was rejected or did not answer.
    Bind,
    /// A read failed, or did not return the attribute needed.
    Search,
}

impl ProbeStep {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeStep::NotConfigured => "not_configured",
            ProbeStep::Dns => "dns",
            ProbeStep::Connect => "connect",
            ProbeStep::Tls => "tls",
            ProbeStep::Bind => "bind",
            ProbeStep::Search => "search",
        }
    }
}

impl fmt::Display for ProbeStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeStep::NotConfigured => "not configured",
            ProbeStep::Dns => "DNS",
            ProbeStep::Connect => "TCP connect",
            ProbeStep::Tls => "TLS",
            ProbeStep::Bind => "bind",
            ProbeStep::Search => "read",
        })
    }
}

/// Serializes a [`Duration`] as whole milliseconds.
mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

//! Network reachability of Microsoft's writeback endpoints (NET-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{CONNECT_PREREQUISITES, TROUBLESHOOT_WRITEBACK};

/// Microsoft's page on Connect's connectivity: proxy, required URLs, 403/407.
const TROUBLESHOOT_CONNECTIVITY: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/tshoot-connect-connectivity";
/// Microsoft's page on the ports hybrid identity needs.
const CONNECT_PORTS: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/reference-connect-ports";

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "network.dns_resolution",
        refs: &["NET-03"],
        title: "Microsoft endpoints resolve in DNS",
        description: "Every password-writeback endpoint resolves to at least one address, following its whole CNAME chain.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: CONNECT_PREREQUISITES,
        remediation: "Fix DNS forwarding on {server} so that it resolves internet names as well as the domain's: {failed}. \
The sync server needs both intranet and internet resolution. Test with: Resolve-DnsName {first_failed}",
        verified_by: "Unit tests over facts (NXDOMAIN, no answer, unreachable resolver). End to end: a Samba DC's DNS zone without the name makes it fail.",
    },
    CheckDef {
        id: "network.passwordreset_https",
        refs: &["NET-01"],
        title: "Password reset service reachable over HTTPS",
        description: "A TCP connection and a TLS handshake with a valid certificate chain succeed to the password reset service on port 443.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Allow outbound HTTPS (TCP 443) from {server} to *.passwordreset.microsoftonline.com on every firewall and proxy in the path, \
and exempt it from TLS inspection. Failing: {failed}. Test with: Test-NetConnection {first_failed_host} -Port {first_failed_port}",
        verified_by: "Unit tests over facts (refused, timed out, untrusted certificate). End to end: a loopback TLS endpoint passes; a refusing port fails.",
    },
    CheckDef {
        id: "network.servicebus_relay",
        refs: &["NET-02"],
        title: "Service Bus relay reachable over HTTPS",
        description: "A TCP connection and a TLS handshake with a valid certificate chain succeed to the Service Bus relay hosts that carry writeback requests.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Allow outbound TCP 443 from {server} to *.servicebus.windows.net (or the Azure service tags, updated weekly), \
exempt it from TLS inspection, then run Restart-Service ADSync. Failing: {failed}. Test with: Test-NetConnection {first_failed_host} -Port {first_failed_port}",
        verified_by: "Unit tests over facts. End to end: two loopback TLS relays pass; one presenting a certificate from an untrusted CA fails as TLS inspection.",
    },
    CheckDef {
        id: "network.servicebus_missing_token",
        refs: &["NET-02"],
        title: "Service Bus relay answers without interference",
        description: "An unauthenticated GET to each Service Bus relay gets Microsoft's own answer, HTTP 401 (MissingToken); any other answer means something in the path (a proxy, a captive portal, a block page) speaks for the relay.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Something between {server} and the Service Bus relay answers in its place: {answers}. Expected HTTP 401 (MissingToken) from the relay itself. \
Let *.servicebus.windows.net:443 through the proxy and firewall untouched (no block page, no authentication, no TLS inspection), then run Restart-Service ADSync. \
Test with: Invoke-WebRequest https://{first_host}/ (a 401 error is the healthy answer).",
        verified_by: "Unit tests over facts. End to end: a loopback relay answering 401 passes; one answering 200 fails.",
    },
    CheckDef {
        id: "network.tls_inspection",
        refs: &["NET-07"],
        title: "No TLS inspection on Microsoft's endpoints",
        description: "Every endpoint's certificate chain builds to a root this machine trusts and is issued by one of Microsoft's public CAs (Microsoft or DigiCert); a chain that does not build, or a foreign issuer, is the mark of TLS inspection, which Entra Connect does not support.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: CONNECT_PREREQUISITES,
        remediation: "TLS inspection? {inspected}. Exempt {server}'s traffic to Microsoft's endpoints (*.passwordreset.microsoftonline.com, *.servicebus.windows.net, *.microsoftonline.com) \
from TLS inspection (break-and-inspect) on the proxy or firewall that issued \"{issuer}\". If the issuer is genuine, install the missing roots listed at \
https://learn.microsoft.com/azure/security/fundamentals/tls-certificate-changes. Then run Restart-Service ADSync.",
        verified_by: "Unit tests over facts (untrusted chain, foreign issuer, nothing seen). End to end: loopback endpoints issued by the accepted CA pass; a relay whose certificate comes from another CA fails naming its issuer.",
    },
    CheckDef {
        id: "network.connect_endpoints",
        refs: &["NET-05"],
        title: "Entra Connect endpoints reachable over HTTPS",
        description: "A TCP connection (through the configured proxy, if any) and a TLS handshake succeed to the Entra Connect endpoints besides writeback's own: sign-in and the provisioning web service that Microsoft's proxy test uses. A proxy's 403 or 407 is named as such.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_CONNECTIVITY,
        remediation: "Allow outbound HTTPS from {server} to *.microsoftonline.com and login.windows.net on every firewall and proxy in the path. Failing: {failed}. \
A 403 from the proxy means the URL is not allowed there; a 407 means it wants authentication: set useDefaultCredentials=\"true\" in machine.config's <defaultProxy>. \
Test with: Invoke-WebRequest -Uri https://{first_failed_host}/",
        verified_by: "Unit tests over facts. End to end: a loopback endpoint passes directly and through a CONNECT proxy; the proxy answering 403 fails naming it.",
    },
    CheckDef {
        id: "network.crl_ocsp",
        refs: &["NET-08"],
        title: "CRL and OCSP hosts reachable over HTTP",
        description: "A plain HTTP GET on port 80 to each certificate revocation (CRL) and OCSP host of Microsoft and DigiCert gets an HTTP answer; without them certificate validation fails or stalls.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_CONNECTIVITY,
        remediation: "Allow outbound HTTP (TCP 80) from {server} to the CRL and OCSP hosts: {failed}. \
Test with: Invoke-WebRequest -UseBasicParsing http://{first_failed}/",
        verified_by: "Unit tests over facts. End to end: a loopback HTTP server passes; a refusing port warns.",
    },
    CheckDef {
        id: "network.dc_ports",
        refs: &["NET-09", "AD-01"],
        title: "Domain controller ports reachable",
        description: "The configured domain controller and the PDC emulator accept TCP on DNS 53, Kerberos 88, RPC 135, LDAP 389, SMB 445 and LDAPS 636, answer a CLDAP ping (UDP 389), and a sample of the dynamic RPC range 49152-65535 is not filtered (a refusal there still shows the DC answered).",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::LdapAndNetwork,
        docs_url: CONNECT_PORTS,
        remediation: "Open the ports from {server} to the domain controllers, above all the PDC emulator: {blocked}. \
Writeback uses LDAP, Kerberos, RPC and SMB 445. Test with: Test-NetConnection {first_host} -Port {first_port}",
        verified_by: "Unit tests over facts. End to end: the Samba DC's ports and CLDAP pass; a port the DC does not listen on fails naming it.",
    },
    CheckDef {
        id: "network.idle_timeout",
        refs: &["NET-04"],
        title: "Idle relay connections survive",
        description: "Opt-in and slow (diagnose --idle-hold): a TLS session to the Service Bus relay is kept idle for the configured time (5 minutes by default) and then used again. A firewall or proxy that drops idle connections sooner breaks writeback's long-lived relay connection.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Network,
        docs_url: CONNECT_PREREQUISITES,
        remediation: "Raise the idle time-out for {server}'s connections to {relay} to at least 6 minutes on every firewall and proxy in the path: {observed}.",
        verified_by: "Unit tests over facts. End to end: a 2-second hold survives on a loopback relay that keeps idle connections and fails on one that drops them after 1 second.",
    },
    CheckDef {
        id: "network.legacy_relay_ports",
        refs: &["NET-10"],
        title: "Legacy relay ports 9350-9354 open",
        description: "Opt-in (network.legacy_relay_ports = true): TCP 9350-9354 to each Service Bus relay, which event 32011's text still names. Only relevant when event 32011 appears while port 443 is open.",
        category: Category::Network,
        runs_on: RunsOn::Agent,
        severity: Severity::Info,
        data_source: DataSource::Network,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "If event 32011 appears while TCP 443 is open, allow outbound TCP 9350-9354 from {server} to *.servicebus.windows.net. Closed: {blocked}.",
        verified_by: "Unit tests over facts (open, closed, not asked for).",
    },
];

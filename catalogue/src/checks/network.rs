//! Network reachability of Microsoft's writeback endpoints (NET-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{CONNECT_PREREQUISITES, TROUBLESHOOT_WRITEBACK};

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
];

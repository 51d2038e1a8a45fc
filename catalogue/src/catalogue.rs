//! The catalogue itself: one entry per check, keyed by a stable id.
//!
//! Ids are `<category>.<subject>` and never change once published: results, incidents and
//! tickets are keyed by them. The `refs` point into the cause catalogue of
//! `writeback-checks.md` (NET-01, AD-01, …) so a reader can find the reasoning behind a check.

use serde::Serialize;

use crate::{Category, RunsOn, Severity};

/// Where a check gets its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// LDAP reads against a domain controller.
    Ldap,
    /// Active network probes from the sync server.
    Network,
    /// LDAP to find a host, then a network probe against it.
    LdapAndNetwork,
    /// Microsoft Graph, called by the central server.
    Graph,
}

/// The definition of one check.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckDef {
    /// The stable id, such as `network.passwordreset_https`.
    pub id: &'static str,
    /// The causes in the writeback failure catalogue that this check detects.
    pub refs: &'static [&'static str],
    /// A short title.
    pub title: &'static str,
    /// What the check verifies, in one or two sentences.
    pub description: &'static str,
    /// The area it belongs to.
    pub category: Category,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// How much of writeback a failure breaks.
    pub severity: Severity,
    /// Where its facts come from.
    pub data_source: DataSource,
    /// Microsoft's documentation for the cause.
    pub docs_url: &'static str,
    /// The fix, with `{placeholders}` filled in from the evidence of the case.
    pub remediation: &'static str,
}

/// Looks a check up by its id.
pub fn find(id: &str) -> Option<&'static CheckDef> {
    CATALOGUE.iter().find(|c| c.id == id)
}

const TROUBLESHOOT_WRITEBACK: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/troubleshoot-sspr-writeback";
const CONNECT_PREREQUISITES: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-install-prerequisites";
const ENABLE_WRITEBACK: &str = "https://learn.microsoft.com/en-us/entra/identity/authentication/tutorial-enable-sspr-writeback";

/// Every check wbhealth runs, in report order.
pub static CATALOGUE: &[CheckDef] = &[
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
    },
    CheckDef {
        id: "topology.pdc_emulator",
        refs: &["AD-01"],
        title: "PDC emulator found and reachable over LDAP",
        description: "The domain's PDC emulator is found through fSMORoleOwner and answers an authenticated LDAP bind from the sync server; writeback always contacts it.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::LdapAndNetwork,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Allow {server} to reach the PDC emulator {pdc} ({pdc_address}) on TCP 389/636, 88, 135, 445 and 49152-65535, and make sure {pdc} resolves in DNS. \
If the AD connector uses preferred domain controllers, include {pdc}: Synchronization Service Manager → Connectors → the AD connector → Properties → \
Configure Directory Partitions → Only use preferred domain controllers. Then run Restart-Service ADSync. Observed: {problem}",
    },
    CheckDef {
        id: "policy.min_password_age",
        refs: &["USR-01"],
        title: "Domain minimum password age is zero",
        description: "The domain's minimum password age (minPwdAge on the domain head) is zero, so a user can reset or change a password again right after a change.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Set Minimum password age to 0 days for {domain} (now {min_age}): Group Policy Management → Default Domain Policy → Computer Configuration → Policies → \
Windows Settings → Security Settings → Account Policies → Password Policy, then run gpupdate /force on the domain controllers. \
Or in PowerShell: Set-ADDefaultDomainPasswordPolicy -Identity {domain} -MinPasswordAge 0.00:00:00",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_shaped_category_dot_subject() {
        let mut seen = HashSet::new();
        for check in CATALOGUE {
            assert!(seen.insert(check.id), "duplicate id {}", check.id);
            let (category, subject) = check.id.split_once('.').expect("id has a dot");
            assert_eq!(
                category,
                check.category.as_str(),
                "{} sits in the wrong category",
                check.id
            );
            assert!(
                !subject.is_empty() && subject.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(check.docs_url.starts_with("https://learn.microsoft.com/"));
            assert!(!check.refs.is_empty());
        }
    }

    #[test]
    fn find_returns_the_named_check_only() {
        assert_eq!(
            find("policy.min_password_age").map(|c| c.severity),
            Some(Severity::Warning)
        );
        assert!(find("policy.nope").is_none());
    }
}

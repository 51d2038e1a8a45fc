//! Checks: pure functions from [`Facts`] to a [`CheckOutcome`].
//!
//! A check never touches the network or the directory; it judges what the probes recorded,
//! so every status and every remediation text is unit-tested on hand-built facts. A check
//! whose facts are missing (a probe could not look) reports `error` with the reason, never
//! `pass`.

#[cfg(test)]
pub(crate) mod ad_fixtures;
pub mod cloudsync;
pub mod dcs;
pub mod directory;
pub mod events;
pub mod network;
pub mod permissions;
pub mod policy;
pub mod server;
pub mod topology;

use std::time::Duration;

use serde_json::{Value, json};
use wbhealth_catalogue::{CATALOGUE, CheckDef, Status};

use crate::facts::{Facts, ProbeFailure, ProbeStep};
use crate::result::CheckOutcome;

/// A check: judges the facts.
pub type CheckFn = fn(&Facts) -> CheckOutcome;

/// The checks this agent implements, by catalogue id.
pub const AGENT_CHECKS: &[(&str, CheckFn)] = &[
    (network::DNS_RESOLUTION, network::dns_resolution),
    (network::PASSWORDRESET_HTTPS, network::passwordreset_https),
    (network::SERVICEBUS_RELAY, network::servicebus_relay),
    (
        network::SERVICEBUS_MISSING_TOKEN,
        network::servicebus_missing_token,
    ),
    (network::TLS_INSPECTION, network::tls_inspection),
    (network::CONNECT_ENDPOINTS, network::connect_endpoints),
    (network::CRL_OCSP, network::crl_ocsp),
    (network::DC_PORTS, network::dc_ports),
    (network::IDLE_TIMEOUT, network::idle_timeout),
    (network::LEGACY_RELAY_PORTS, network::legacy_relay_ports),
    (topology::PDC_EMULATOR, topology::pdc_emulator),
    (policy::MIN_PASSWORD_AGE, policy::min_password_age),
    (policy::PASSWORD_COMPLEXITY, policy::password_complexity),
    (policy::DISABLED_USERS, policy::disabled_users),
    (policy::LOCKED_OUT_USERS, policy::locked_out_users),
    (policy::MUST_CHANGE_PASSWORD, policy::must_change_password),
    (
        policy::PASSWORD_NEVER_EXPIRES,
        policy::password_never_expires,
    ),
    (directory::READ_ONLY_DC, directory::read_only_dc),
    (dcs::POLICY_HINTS_CONTROL, dcs::policy_hints_control),
    (dcs::REPLICATION, dcs::replication),
    (dcs::RIGHTS_ON_EVERY_DC, dcs::rights_on_every_dc),
    (permissions::CLOUD_SYNC_GMSA, permissions::cloud_sync_gmsa),
    (directory::FUNCTIONAL_LEVEL, directory::functional_level),
    (
        directory::OU_RESERVED_CHARACTERS,
        directory::ou_reserved_characters,
    ),
    (
        directory::FINE_GRAINED_MIN_AGE,
        directory::fine_grained_min_age,
    ),
    (
        permissions::CONNECTOR_ACCOUNT,
        permissions::connector_account,
    ),
    (permissions::RESET_PASSWORD, permissions::reset_password),
    (permissions::CHANGE_PASSWORD, permissions::change_password),
    (
        permissions::WRITE_LOCKOUT_TIME,
        permissions::write_lockout_time,
    ),
    (
        permissions::WRITE_PWD_LAST_SET,
        permissions::write_pwd_last_set,
    ),
    (
        permissions::UNEXPIRE_PASSWORD,
        permissions::unexpire_password,
    ),
    (
        permissions::INHERITANCE_BLOCKED,
        permissions::inheritance_blocked,
    ),
    (
        permissions::PROTECTED_ACCOUNTS,
        permissions::protected_accounts,
    ),
    (
        permissions::ORPHANED_ADMIN_COUNT,
        permissions::orphaned_admin_count,
    ),
    (
        permissions::CANNOT_CHANGE_PASSWORD,
        permissions::user_cannot_change_password,
    ),
    (
        permissions::PRE_WINDOWS_2000_ACCESS,
        permissions::pre_windows_2000_access,
    ),
    (permissions::SAM_READ_ACCESS, permissions::sam_read_access),
    (server::ADSYNC_SERVICE, server::adsync_service),
    (server::WRITEBACK_ENABLED, server::writeback_enabled),
    (server::STAGING_MODE, server::staging_mode),
    (server::CONNECT_VERSION, server::connect_version),
    (server::AUTO_UPGRADE, server::auto_upgrade),
    (server::DOTNET_VERSION, server::dotnet_version),
    (server::OS_SUPPORT, server::os_support),
    (server::CLOCK_SKEW, server::clock_skew),
    (server::CONNECT_ON_DC, server::connect_on_dc),
    (server::RESTRICT_REMOTE_SAM, server::restrict_remote_sam),
    (server::IMPERSONATE_PRIVILEGE, server::impersonate_privilege),
    (server::DOTNET_PROXY, server::dotnet_proxy),
    (server::TLS12_REGISTRY, server::tls12_registry),
    (server::INITIAL_SYNC, server::initial_sync),
    (server::SYNC_SCHEDULER, server::sync_scheduler),
    (events::WRITEBACK_LISTENER, events::writeback_listener),
    (
        events::WRITEBACK_CONFIGURATION,
        events::writeback_configuration,
    ),
    (events::CONNECTOR_CREDENTIALS, events::connector_credentials),
    (
        events::CONNECTOR_PASSWORD_LENGTH,
        events::connector_password_length,
    ),
    (events::LDAP_SIGN_AND_SEAL, events::ldap_sign_and_seal),
    (
        events::FOREST_WRITEBACK_ENABLEMENT,
        events::forest_writeback_enablement,
    ),
    (events::WRITEBACK_ERRORS, events::writeback_errors),
    (cloudsync::AGENT_VERSION, cloudsync::agent_version),
    (cloudsync::AGENT_SERVICES, cloudsync::agent_services),
    (
        cloudsync::AGENT_NETWORK_CONFIG,
        cloudsync::agent_network_config,
    ),
];

/// Runs every check the agent implements whose id `enabled` accepts, in catalogue order.
pub fn evaluate(facts: &Facts, enabled: &dyn Fn(&str) -> bool) -> Vec<CheckOutcome> {
    CATALOGUE
        .iter()
        .filter(|def| enabled(def.id))
        .filter_map(|def| AGENT_CHECKS.iter().find(|(id, _)| *id == def.id))
        .map(|(_, check)| check(facts))
        .collect()
}

/// The catalogue entry of a check this agent implements.
fn def(id: &str) -> &'static CheckDef {
    wbhealth_catalogue::find(id).expect("every check the agent implements is in the catalogue")
}

/// What a check concluded, before the facts' timing is attached.
struct Verdict {
    status: Status,
    summary: String,
    evidence: Value,
    remediation: String,
}

impl Verdict {
    fn into_outcome(
        self,
        def: &'static CheckDef,
        facts: &Facts,
        duration: Duration,
    ) -> CheckOutcome {
        let remediation = if self.status == Status::Pass {
            String::new()
        } else {
            self.remediation
        };
        CheckOutcome {
            check: def,
            status: self.status,
            summary: self.summary,
            evidence: self.evidence,
            remediation,
            duration,
            observed_at: facts.observed_at,
        }
    }
}

/// The summary when the agent has no LDAP settings.
pub const LDAP_NOT_CONFIGURED: &str =
    "LDAP is not configured: set [ldap] host, bind_dn and bind_password in agent.toml";

/// The `error` verdict of a directory check whose facts could not be gathered.
///
/// `what` says which fact was missing; the remediation says how to let the agent look.
fn directory_error(facts: &Facts, what: &str, failure: &ProbeFailure) -> Verdict {
    let evidence = json!({ "failed_step": failure.step.as_str(), "error": failure.message });
    if failure.step == ProbeStep::NotConfigured {
        return Verdict {
            status: Status::Error,
            summary: LDAP_NOT_CONFIGURED.to_owned(),
            evidence,
            remediation: format!(
                "On {}, set [ldap] host, bind_dn and bind_password in agent.toml (or WBH_LDAP_HOST, WBH_LDAP_BIND_DN and \
                 WBH_LDAP_BIND_PASSWORD) to a domain controller and an account that can read the domain, then run \
                 wbhealth-agent diagnose again.",
                facts.host_name
            ),
        };
    }
    Verdict {
        status: Status::Error,
        summary: format!(
            "could not read {what}: {} failed: {}",
            failure.step, failure.message
        ),
        evidence,
        remediation: format!(
            "Let {} read the directory: fix the {} step ({}), then run wbhealth-agent diagnose again.",
            facts.host_name, failure.step, failure.message
        ),
    }
}

/// `n thing` or `n things`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Hand-built facts: a healthy sync server, to be broken one fact at a time by the tests.

    use std::net::SocketAddr;
    use std::time::Duration;

    use time::macros::datetime;

    use crate::facts::*;

    pub const SERVER: &str = "AADC01";
    pub const PDC: &str = "dc2.contoso.com";

    pub fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    pub fn lookup(host: &str, ip: &str) -> DnsLookup {
        DnsLookup {
            host: host.to_owned(),
            duration: Duration::from_millis(12),
            outcome: Ok(Resolution {
                cname_chain: vec![format!("{host}.trafficmanager.net")],
                addresses: vec![ip.parse().expect("ip")],
            }),
        }
    }

    pub fn session(http_status: u16) -> TlsSession {
        TlsSession {
            protocol: "TLS 1.3".to_owned(),
            cipher_suite: "TLS13_AES_256_GCM_SHA384".to_owned(),
            peer_subject: "CN=*.microsoftonline.com".to_owned(),
            peer_issuer: "CN=Microsoft Azure RSA TLS Issuing CA 03, O=Microsoft Corporation, C=US"
                .to_owned(),
            http_status: Ok(http_status),
        }
    }

    pub fn endpoint(
        purpose: EndpointPurpose,
        host: &str,
        ip: &str,
        http_status: u16,
    ) -> EndpointProbe {
        EndpointProbe {
            purpose,
            host: host.to_owned(),
            port: 443,
            address: Some(addr(&format!("{ip}:443"))),
            duration: Duration::from_millis(80),
            outcome: Ok(session(http_status)),
        }
    }

    pub fn healthy() -> Facts {
        Facts {
            host_name: SERVER.to_owned(),
            observed_at: datetime!(2025-01-02 03:04:05 UTC),
            network: NetworkFacts {
                lookups: vec![
                    lookup("passwordreset.microsoftonline.com", "20.190.128.1"),
                    lookup("ssprdedicatedsbprodscu.servicebus.windows.net", "20.36.1.1"),
                    lookup("ssprdedicatedsbprodncu.servicebus.windows.net", "20.36.2.2"),
                ],
                endpoints: vec![
                    endpoint(EndpointPurpose::PasswordReset, "passwordreset.microsoftonline.com", "20.190.128.1", 200),
                    endpoint(EndpointPurpose::ServiceBus, "ssprdedicatedsbprodscu.servicebus.windows.net", "20.36.1.1", 401),
                    endpoint(EndpointPurpose::ServiceBus, "ssprdedicatedsbprodncu.servicebus.windows.net", "20.36.2.2", 401),
                    endpoint(EndpointPurpose::Connect, "login.microsoftonline.com", "20.190.128.2", 200),
                ],
                proxy: None,
                accepted_issuers: vec!["O=Microsoft Corporation".to_owned(), "O=DigiCert".to_owned()],
                crl: vec![HttpProbe {
                    host: "crl.microsoft.com".to_owned(),
                    port: 80,
                    address: Some(addr("23.0.0.1:80")),
                    duration: Duration::from_millis(20),
                    outcome: Ok(200),
                }],
                dc_ports: vec![DcPorts {
                    host: PDC.to_owned(),
                    roles: vec!["PDC emulator".to_owned()],
                    ports: Ok(HostPorts {
                        host: PDC.to_owned(),
                        address: "10.0.0.6".parse().expect("ip"),
                        ports: [53, 88, 135, 389, 445, 636]
                            .map(|port| PortProbe { port, dynamic: false, outcome: PortOutcome::Open })
                            .into_iter()
                            .chain([PortProbe { port: 49152, dynamic: true, outcome: PortOutcome::Refused }])
                            .collect(),
                    }),
                    cldap: Some(PortOutcome::Open),
                }],
                legacy_relay_ports: Some(vec![HostPorts {
                    host: "ssprdedicatedsbprodscu.servicebus.windows.net".to_owned(),
                    address: "20.36.1.1".parse().expect("ip"),
                    ports: (9350..=9354)
                        .map(|port| PortProbe { port, dynamic: false, outcome: PortOutcome::Open })
                        .collect(),
                }]),
                idle_hold: Some(IdleHold {
                    target: "ssprdedicatedsbprodscu.servicebus.windows.net:443".to_owned(),
                    hold: Duration::from_secs(300),
                    outcome: IdleHoldOutcome::Survived { http_status: 401 },
                }),
            },
            directory: Ok(DirectoryFacts {
                dc: LdapEndpoint { host: "dc1.contoso.com".to_owned(), address: addr("10.0.0.5:636"), security: "ldaps" },
                dc_dns_host_name: Some("dc1.contoso.com".to_owned()),
                default_naming_context: "DC=contoso,DC=com".to_owned(),
                domain_dns_name: "contoso.com".to_owned(),
                pdc: Ok(PdcFacts {
                    role_owner_dn: "CN=NTDS Settings,CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=contoso,DC=com".to_owned(),
                    server_dn: "CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=contoso,DC=com".to_owned(),
                    dns_host_name: PDC.to_owned(),
                    reach: PdcReach::Probed { lookup: lookup(PDC, "10.0.0.6"), address: Some(addr("10.0.0.6:636")), outcome: Ok(()) },
                }),
                min_pwd_age: Ok(0),
                ad: super::ad_fixtures::healthy(),
            }),
            host: Ok(healthy_host()),
            durations: ProbeDurations { network: Duration::from_millis(150), directory: Duration::from_millis(90), host: Duration::from_millis(5) },
        }
    }

    /// The healthy host snapshot fixture (`agent/tests/fixtures/snapshots/healthy.json`).
    pub fn healthy_host() -> crate::host::HostFacts {
        crate::host::HostFacts {
            source: "snapshot healthy.json".to_owned(),
            snapshot: crate::host::parse_snapshot(include_str!(
                "../../tests/fixtures/snapshots/healthy.json"
            ))
            .expect("the healthy snapshot fixture parses"),
        }
    }

    /// Asserts a rendered remediation names `names` and has no placeholder left.
    pub fn assert_rendered(remediation: &str, names: &[&str]) {
        assert!(
            !remediation.contains('{') && !remediation.contains('}'),
            "placeholder left in: {remediation}"
        );
        for name in names {
            assert!(
                remediation.contains(name),
                "{name:?} missing from: {remediation}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agent_check_is_in_the_catalogue_and_runs_on_the_agent() {
        for (id, _) in AGENT_CHECKS {
            let def = wbhealth_catalogue::find(id).expect("in catalogue");
            assert_eq!(def.runs_on, wbhealth_catalogue::RunsOn::Agent, "{id}");
        }
    }

    #[test]
    fn evaluate_keeps_catalogue_order_and_skips_disabled_checks() {
        let facts = fixtures::healthy();
        let all: Vec<&str> = evaluate(&facts, &|_| true)
            .iter()
            .map(|o| o.check.id)
            .collect();
        let catalogue_order: Vec<&str> = CATALOGUE
            .iter()
            .map(|d| d.id)
            .filter(|id| AGENT_CHECKS.iter().any(|(a, _)| a == id))
            .collect();
        assert_eq!(all, catalogue_order);
        assert_eq!(all.len(), AGENT_CHECKS.len());

        let some = evaluate(&facts, &|id| id != "topology.pdc_emulator");
        assert!(some.iter().all(|o| o.check.id != "topology.pdc_emulator"));
        assert_eq!(some.len(), AGENT_CHECKS.len() - 1);
    }

    #[test]
    fn a_healthy_server_passes_everything_with_empty_remediation() {
        let facts = fixtures::healthy();
        for outcome in evaluate(&facts, &|_| true) {
            // The healthy sync server has no Cloud Sync agent: those checks do not apply.
            let expected = if outcome.check.id.starts_with("server.cloudsync_")
                || outcome.check.id == permissions::CLOUD_SYNC_GMSA
            {
                Status::NotApplicable
            } else {
                Status::Pass
            };
            assert_eq!(
                outcome.status, expected,
                "{}: {}",
                outcome.check.id, outcome.summary
            );
            assert!(outcome.remediation.is_empty());
            assert!(outcome.evidence.is_object());
            assert_eq!(outcome.observed_at, facts.observed_at);
        }
    }
}

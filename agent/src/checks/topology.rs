//! Topology checks: the PDC emulator is found and answers an authenticated LDAP bind (AD-01).
//!
//! Writeback always contacts the PDC emulator, even when the AD connector prefers other DCs.

use serde_json::{Value, json};
use wbhealth_catalogue::{Status, render};

use super::{Verdict, def, directory_error};
use crate::facts::{DirectoryFacts, Facts, PdcFacts, PdcReach, ProbeStep};
use crate::result::CheckOutcome;

/// Catalogue id of the PDC emulator check.
pub const PDC_EMULATOR: &str = "topology.pdc_emulator";

/// AD-01: the PDC emulator is found through `fSMORoleOwner` and accepts a bind.
pub fn pdc_emulator(facts: &Facts) -> CheckOutcome {
    let def = def(PDC_EMULATOR);
    let verdict = match &facts.directory {
        Err(failure) => directory_error(facts, "the domain controller", failure),
        Ok(directory) => match &directory.pdc {
            Err(failure) => {
                let mut verdict = directory_error(facts, "the PDC emulator's name", failure);
                verdict.evidence = json!({
                    "dc": dc_evidence(directory),
                    "failed_step": failure.step.as_str(),
                    "error": failure.message,
                });
                verdict
            }
            Ok(pdc) => judge(facts, def.remediation, directory, pdc),
        },
    };
    verdict.into_outcome(def, facts, facts.durations.directory)
}

fn judge(facts: &Facts, template: &str, directory: &DirectoryFacts, pdc: &PdcFacts) -> Verdict {
    let evidence = json!({
        "dc": dc_evidence(directory),
        "domain": directory.domain_dns_name,
        "pdc": pdc_evidence(pdc),
    });
    let pdc_host = pdc.dns_host_name.as_str();
    match &pdc.reach {
        PdcReach::SameAsContacted { address } => Verdict {
            status: Status::Pass,
            summary: format!(
                "the PDC emulator {pdc_host} is the DC the agent bound to at {address}"
            ),
            evidence,
            remediation: String::new(),
        },
        PdcReach::Probed {
            address,
            outcome: Ok(()),
            ..
        } => Verdict {
            status: Status::Pass,
            summary: match address {
                Some(address) => format!(
                    "the PDC emulator {pdc_host} answers an authenticated LDAP bind at {address}"
                ),
                None => format!("the PDC emulator {pdc_host} answers an authenticated LDAP bind"),
            },
            evidence,
            remediation: String::new(),
        },
        PdcReach::Probed {
            address,
            outcome: Err(failure),
            ..
        } => {
            let summary = match (failure.step, address) {
                (ProbeStep::Dns, _) => format!(
                    "the PDC emulator {pdc_host} does not resolve: {}",
                    failure.message
                ),
                (step, Some(address)) => {
                    format!(
                        "the PDC emulator {pdc_host} ({address}) cannot be reached: {step} failed: {}",
                        failure.message
                    )
                }
                (step, None) => format!(
                    "the PDC emulator {pdc_host} cannot be reached: {step} failed: {}",
                    failure.message
                ),
            };
            let pdc_address = address
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "address unresolved".to_owned());
            let remediation = render(
                template,
                &[
                    ("server", &facts.host_name),
                    ("pdc", pdc_host),
                    ("pdc_address", &pdc_address),
                    ("problem", &summary),
                ],
            );
            Verdict {
                status: Status::Fail,
                summary,
                evidence,
                remediation,
            }
        }
    }
}

fn dc_evidence(directory: &DirectoryFacts) -> Value {
    json!({
        "host": directory.dc.host,
        "address": directory.dc.address,
        "security": directory.dc.security,
        "dns_host_name": directory.dc_dns_host_name,
        "default_naming_context": directory.default_naming_context,
    })
}

fn pdc_evidence(pdc: &PdcFacts) -> Value {
    let mut value = json!({
        "dns_host_name": pdc.dns_host_name,
        "role_owner_dn": pdc.role_owner_dn,
        "server_dn": pdc.server_dn,
        "address": pdc.reach.address(),
    });
    let extra = match &pdc.reach {
        PdcReach::SameAsContacted { .. } => json!({ "same_as_contacted_dc": true, "bound": true }),
        PdcReach::Probed {
            lookup, outcome, ..
        } => json!({
            "same_as_contacted_dc": false,
            "addresses": lookup.addresses(),
            "cname_chain": lookup.outcome.as_ref().ok().map(|r| &r.cname_chain),
            "dns_error": lookup.outcome.as_ref().err().map(|e| &e.message),
            "bound": outcome.is_ok(),
            "failed_step": outcome.as_ref().err().map(|e| e.step.as_str()),
            "error": outcome.as_ref().err().map(|e| &e.message),
        }),
    };
    if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
        map.extend(more);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::LDAP_NOT_CONFIGURED;
    use crate::checks::fixtures::{PDC, SERVER, addr, assert_rendered, healthy};
    use crate::facts::{DnsFailure, DnsFailureKind, ProbeFailure};

    fn pdc_mut(facts: &mut Facts) -> &mut PdcFacts {
        match &mut facts.directory {
            Ok(d) => d.pdc.as_mut().expect("fixture has a PDC"),
            Err(_) => panic!("fixture has a directory"),
        }
    }

    #[test]
    fn a_reachable_pdc_passes_with_its_fqdn_and_address_in_evidence() {
        let outcome = pdc_emulator(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert!(outcome.summary.contains(PDC));
        assert_eq!(outcome.evidence["pdc"]["dns_host_name"], PDC);
        assert_eq!(outcome.evidence["pdc"]["address"], "10.0.0.6:636");
        assert_eq!(outcome.evidence["domain"], "contoso.com");
        assert!(outcome.remediation.is_empty());
    }

    #[test]
    fn the_contacted_dc_being_the_pdc_passes() {
        let mut facts = healthy();
        pdc_mut(&mut facts).reach = PdcReach::SameAsContacted {
            address: addr("10.0.0.5:636"),
        };
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Pass);
        assert_eq!(outcome.evidence["pdc"]["same_as_contacted_dc"], true);
        assert_eq!(outcome.evidence["pdc"]["address"], "10.0.0.5:636");
    }

    #[test]
    fn an_unresolvable_pdc_fails_naming_it() {
        let mut facts = healthy();
        pdc_mut(&mut facts).reach = PdcReach::Probed {
            lookup: crate::facts::DnsLookup {
                host: PDC.to_owned(),
                duration: Default::default(),
                outcome: Err(DnsFailure {
                    kind: DnsFailureKind::NxDomain,
                    message: format!("{PDC} does not exist (NXDOMAIN)"),
                }),
            },
            address: None,
            outcome: Err(ProbeFailure::new(
                ProbeStep::Dns,
                format!("{PDC} does not resolve: NXDOMAIN"),
            )),
        };
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains(PDC) && outcome.summary.contains("does not resolve"),
            "{}",
            outcome.summary
        );
        assert_rendered(&outcome.remediation, &[SERVER, PDC, "address unresolved"]);
    }

    #[test]
    fn an_unreachable_pdc_fails_with_its_address_in_the_fix() {
        let mut facts = healthy();
        let PdcReach::Probed { outcome, .. } = &mut pdc_mut(&mut facts).reach else {
            panic!("fixture probes the PDC")
        };
        *outcome = Err(ProbeFailure::new(
            ProbeStep::Connect,
            format!("TCP connect to {PDC} (10.0.0.6:636) timed out after 10s"),
        ));
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains(PDC) && outcome.summary.contains("timed out"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, PDC, "(10.0.0.6)", "timed out"],
        );
        assert_eq!(outcome.evidence["pdc"]["failed_step"], "connect");
    }

    #[test]
    fn a_rejected_bind_on_the_pdc_fails() {
        let mut facts = healthy();
        let PdcReach::Probed { outcome, .. } = &mut pdc_mut(&mut facts).reach else {
            panic!("fixture probes the PDC")
        };
        *outcome = Err(ProbeFailure::new(
            ProbeStep::Bind,
            format!("{PDC} rejected the bind: rc=49 (invalidCredentials)"),
        ));
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("bind failed"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn no_ldap_settings_is_an_error_saying_what_to_set() {
        let mut facts = healthy();
        facts.directory = Err(ProbeFailure::new(
            ProbeStep::NotConfigured,
            "no [ldap] settings in agent.toml",
        ));
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(outcome.summary, LDAP_NOT_CONFIGURED);
        assert_rendered(&outcome.remediation, &[SERVER, "bind_dn"]);
    }

    #[test]
    fn an_unreadable_dc_is_an_error_not_a_pass() {
        let mut facts = healthy();
        facts.directory = Err(ProbeFailure::new(
            ProbeStep::Bind,
            "dc1.contoso.com (10.0.0.5:636) rejected the bind as svc@contoso.com: rc=49 (invalidCredentials)",
        ));
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert!(
            outcome.summary.contains("dc1.contoso.com") && outcome.summary.contains("bind"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["failed_step"], "bind");
    }

    #[test]
    fn an_unreadable_role_owner_is_an_error() {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            d.pdc = Err(ProbeFailure::new(
                ProbeStep::Search,
                "dc1.contoso.com returned no fSMORoleOwner for DC=contoso,DC=com",
            ));
        }
        let outcome = pdc_emulator(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert!(
            outcome.summary.contains("fSMORoleOwner"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["dc"]["host"], "dc1.contoso.com");
    }
}

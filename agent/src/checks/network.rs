//! Network checks: the endpoints resolve (NET-03), and the password reset service (NET-01)
//! and the Service Bus relay (NET-02) accept a TLS session with a trusted chain (NET-07).

use std::time::Duration;

use serde_json::{Value, json};
use wbhealth_catalogue::{Status, render};

use super::{Verdict, def, plural};
use crate::facts::{
    DnsFailureKind, DnsLookup, EndpointProbe, EndpointPurpose, EndpointStep, Facts,
};
use crate::result::CheckOutcome;

/// Catalogue id of the DNS check.
pub const DNS_RESOLUTION: &str = "network.dns_resolution";
/// Catalogue id of the password reset service check.
pub const PASSWORDRESET_HTTPS: &str = "network.passwordreset_https";
/// Catalogue id of the Service Bus relay check.
pub const SERVICEBUS_RELAY: &str = "network.servicebus_relay";

/// NET-03: every endpoint host resolves to at least one address.
pub fn dns_resolution(facts: &Facts) -> CheckOutcome {
    let def = def(DNS_RESOLUTION);
    let lookups = &facts.network.lookups;
    let duration = lookups.iter().map(|l| l.duration).max().unwrap_or_default();
    let evidence = json!({ "lookups": lookups.iter().map(lookup_evidence).collect::<Vec<_>>() });

    let failed: Vec<&DnsLookup> = lookups.iter().filter(|l| l.outcome.is_err()).collect();
    let could_not_look = failed
        .iter()
        .filter_map(|l| l.outcome.as_ref().err())
        .find(|e| e.kind == DnsFailureKind::ResolverUnavailable);

    let verdict = if lookups.is_empty() {
        Verdict {
            status: Status::Error,
            summary: "no endpoints are configured, so no host was looked up".to_owned(),
            evidence,
            remediation: "Set network.passwordreset_endpoints and network.servicebus_endpoints in agent.toml, or remove them to use the defaults."
                .to_owned(),
        }
    } else if let Some(reason) = could_not_look {
        Verdict {
            status: Status::Error,
            summary: format!("could not look up the endpoints: {}", reason.message),
            evidence,
            remediation: format!(
                "Give {} a readable DNS configuration, or set network.dns_servers in agent.toml: {}",
                facts.host_name, reason.message
            ),
        }
    } else if failed.is_empty() {
        Verdict {
            status: Status::Pass,
            summary: format!(
                "{} resolve",
                plural(lookups.len(), "endpoint host", "endpoint hosts")
            ),
            evidence,
            remediation: String::new(),
        }
    } else {
        let described: Vec<String> = failed
            .iter()
            .filter_map(|l| {
                l.outcome
                    .as_ref()
                    .err()
                    .map(|e| format!("{} ({})", l.host, e.kind.describe()))
            })
            .collect();
        let failed_list = described.join(", ");
        let first = failed.first().map(|l| l.host.as_str()).unwrap_or_default();
        Verdict {
            status: Status::Fail,
            summary: format!(
                "{} of {} do not resolve: {failed_list}",
                failed.len(),
                plural(lookups.len(), "endpoint host", "endpoint hosts")
            ),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("failed", &failed_list),
                    ("first_failed", first),
                ],
            ),
        }
    };
    verdict.into_outcome(def, facts, duration)
}

/// NET-01: the password reset service accepts TCP and TLS with a trusted chain.
pub fn passwordreset_https(facts: &Facts) -> CheckOutcome {
    endpoint_check(
        facts,
        PASSWORDRESET_HTTPS,
        EndpointPurpose::PasswordReset,
        "network.passwordreset_endpoints",
    )
}

/// NET-02: the Service Bus relay accepts TCP and TLS with a trusted chain.
pub fn servicebus_relay(facts: &Facts) -> CheckOutcome {
    endpoint_check(
        facts,
        SERVICEBUS_RELAY,
        EndpointPurpose::ServiceBus,
        "network.servicebus_endpoints",
    )
}

fn endpoint_check(
    facts: &Facts,
    id: &str,
    purpose: EndpointPurpose,
    setting: &str,
) -> CheckOutcome {
    let def = def(id);
    let probes: Vec<&EndpointProbe> = facts
        .network
        .endpoints
        .iter()
        .filter(|p| p.purpose == purpose)
        .collect();
    let duration = probes
        .iter()
        .map(|p| p.duration + lookup_duration(facts, &p.host))
        .max()
        .unwrap_or_default();
    let tls_inspection_suspected = probes
        .iter()
        .any(|p| matches!(&p.outcome, Err(e) if e.step == EndpointStep::CertificateUntrusted));
    let evidence = json!({
        "endpoints": probes.iter().map(|p| endpoint_evidence(p)).collect::<Vec<_>>(),
        "tls_inspection_suspected": tls_inspection_suspected,
    });

    let failed: Vec<&EndpointProbe> = probes
        .iter()
        .copied()
        .filter(|p| matches!(&p.outcome, Err(e) if e.step != EndpointStep::Setup))
        .collect();
    let not_probed = probes.iter().find_map(|p| match &p.outcome {
        Err(e) if e.step == EndpointStep::Setup => Some((p, e)),
        _ => None,
    });

    let verdict = if probes.is_empty() {
        Verdict {
            status: Status::Error,
            summary: format!("no {purpose} endpoints are configured ({setting} is empty)"),
            evidence,
            remediation: format!(
                "Remove {setting} from agent.toml to probe Microsoft's defaults, or list the endpoints to probe."
            ),
        }
    } else if !failed.is_empty() {
        let described: Vec<String> = failed.iter().map(|p| describe_failure(p)).collect();
        let failed_list = described.join("; ");
        let first = failed[0];
        let port = first.port.to_string();
        Verdict {
            status: Status::Fail,
            summary: format!("{purpose} not reachable: {failed_list}"),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("failed", &failed_list),
                    ("first_failed_host", &first.host),
                    ("first_failed_port", &port),
                ],
            ),
        }
    } else if let Some((probe, failure)) = not_probed {
        Verdict {
            status: Status::Error,
            summary: format!("could not probe {}: {}", probe.target(), failure.message),
            evidence,
            remediation: format!(
                "Fix the agent's set-up on {} so it can probe: {}",
                facts.host_name, failure.message
            ),
        }
    } else {
        let described: Vec<String> = probes
            .iter()
            .filter_map(|p| {
                let session = p.outcome.as_ref().ok()?;
                let http = match &session.http_status {
                    Ok(code) => format!("HTTP {code}"),
                    Err(e) => format!("no HTTP answer: {e}"),
                };
                Some(format!("{} ({}, {http})", p.target(), session.protocol))
            })
            .collect();
        Verdict {
            status: Status::Pass,
            summary: format!("TLS established with {}", described.join(", ")),
            evidence,
            remediation: String::new(),
        }
    };
    verdict.into_outcome(def, facts, duration)
}

fn lookup_duration(facts: &Facts, host: &str) -> Duration {
    facts
        .network
        .lookups
        .iter()
        .find(|l| l.host.eq_ignore_ascii_case(host))
        .map(|l| l.duration)
        .unwrap_or_default()
}

/// `host:port refused (1.2.3.4:443)`, naming the issuer for an untrusted certificate.
fn describe_failure(probe: &EndpointProbe) -> String {
    let Err(failure) = &probe.outcome else {
        return probe.target();
    };
    let mut text = format!("{} {}", probe.target(), failure.step.describe());
    if let (EndpointStep::CertificateUntrusted, Some(cert)) = (failure.step, &failure.presented) {
        text.push_str(&format!(", issued by \"{}\"", cert.issuer));
    }
    if let Some(address) = probe.address {
        text.push_str(&format!(" ({address})"));
    }
    text
}

fn lookup_evidence(lookup: &DnsLookup) -> Value {
    match &lookup.outcome {
        Ok(resolution) => json!({
            "host": lookup.host,
            "resolved": true,
            "cname_chain": resolution.cname_chain,
            "addresses": resolution.addresses,
            "duration_ms": millis(lookup.duration),
        }),
        Err(e) => json!({
            "host": lookup.host,
            "resolved": false,
            "error_kind": e.kind,
            "error": e.message,
            "duration_ms": millis(lookup.duration),
        }),
    }
}

fn endpoint_evidence(probe: &EndpointProbe) -> Value {
    let mut value = json!({
        "host": probe.host,
        "port": probe.port,
        "address": probe.address,
        "duration_ms": millis(probe.duration),
    });
    let extra = match &probe.outcome {
        Ok(session) => json!({
            "established": true,
            "protocol": session.protocol,
            "cipher_suite": session.cipher_suite,
            "peer_subject": session.peer_subject,
            "peer_issuer": session.peer_issuer,
            "http_status": session.http_status.as_ref().ok(),
            "http_error": session.http_status.as_ref().err(),
        }),
        Err(e) => json!({
            "established": false,
            "failed_step": e.step,
            "error": e.message,
            "presented_subject": e.presented.as_ref().map(|c| &c.subject),
            "presented_issuer": e.presented.as_ref().map(|c| &c.issuer),
        }),
    };
    if let (Value::Object(map), Value::Object(more)) = (&mut value, extra) {
        map.extend(more);
    }
    value
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixtures::{SERVER, assert_rendered, healthy};
    use crate::facts::{DnsFailure, EndpointFailure, PresentedCertificate};

    const RESET: &str = "passwordreset.microsoftonline.com";
    const RELAY: &str = "ssprdedicatedsbprodncu.servicebus.windows.net";

    fn break_lookup(facts: &mut Facts, host: &str, kind: DnsFailureKind) {
        let lookup = facts
            .network
            .lookups
            .iter_mut()
            .find(|l| l.host == host)
            .expect("host in fixture");
        lookup.outcome = Err(DnsFailure {
            kind,
            message: format!("{host}: {}", kind.describe()),
        });
    }

    fn break_endpoint(
        facts: &mut Facts,
        host: &str,
        step: EndpointStep,
        presented: Option<PresentedCertificate>,
    ) {
        let probe = facts
            .network
            .endpoints
            .iter_mut()
            .find(|p| p.host == host)
            .expect("host in fixture");
        probe.outcome = Err(EndpointFailure {
            step,
            message: format!("{host}: {}", step.describe()),
            presented,
        });
    }

    #[test]
    fn all_hosts_resolving_passes_with_the_chain_in_evidence() {
        let outcome = dns_resolution(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert_eq!(outcome.summary, "3 endpoint hosts resolve");
        assert_eq!(
            outcome.evidence["lookups"][0]["cname_chain"][0],
            format!("{RESET}.trafficmanager.net")
        );
        assert_eq!(
            outcome.evidence["lookups"][0]["addresses"][0],
            "20.190.128.1"
        );
        assert!(outcome.remediation.is_empty());
    }

    #[test]
    fn an_unresolvable_host_fails_and_is_named() {
        let mut facts = healthy();
        break_lookup(&mut facts, RELAY, DnsFailureKind::NxDomain);
        let outcome = dns_resolution(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains(RELAY) && outcome.summary.contains("NXDOMAIN"),
            "{}",
            outcome.summary
        );
        assert!(
            !outcome.summary.contains(RESET),
            "only failing hosts are named: {}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, RELAY, &format!("Resolve-DnsName {RELAY}")],
        );
        assert_eq!(outcome.evidence["lookups"][2]["error_kind"], "nx_domain");
    }

    #[test]
    fn a_dns_timeout_fails_too() {
        let mut facts = healthy();
        break_lookup(&mut facts, RESET, DnsFailureKind::Timeout);
        let outcome = dns_resolution(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("DNS timed out"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn no_resolver_configuration_is_an_error_not_a_failure() {
        let mut facts = healthy();
        for host in [RESET, RELAY] {
            break_lookup(&mut facts, host, DnsFailureKind::ResolverUnavailable);
        }
        let outcome = dns_resolution(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert!(outcome.remediation.contains(SERVER));
    }

    #[test]
    fn no_endpoints_is_an_error_never_a_pass() {
        let mut facts = healthy();
        facts.network = Default::default();
        assert_eq!(dns_resolution(&facts).status, Status::Error);
        assert_eq!(passwordreset_https(&facts).status, Status::Error);
        assert_eq!(servicebus_relay(&facts).status, Status::Error);
    }

    #[test]
    fn established_tls_passes_with_protocol_and_status() {
        let outcome = servicebus_relay(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert!(
            outcome.summary.contains("HTTP 401") && outcome.summary.contains("TLS 1.3"),
            "{}",
            outcome.summary
        );
        assert_eq!(
            outcome.evidence["endpoints"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            outcome.evidence["endpoints"][0]["peer_issuer"],
            "CN=Microsoft Azure RSA TLS Issuing CA 03, O=Microsoft Corporation, C=US"
        );
        assert_eq!(outcome.evidence["tls_inspection_suspected"], false);
    }

    #[test]
    fn a_refused_connection_fails_naming_host_and_how() {
        let mut facts = healthy();
        break_endpoint(&mut facts, RESET, EndpointStep::TcpRefused, None);
        let outcome = passwordreset_https(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains(RESET) && outcome.summary.contains("refused"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, &format!("Test-NetConnection {RESET} -Port 443")],
        );
        // The other channel is judged on its own.
        assert_eq!(servicebus_relay(&facts).status, Status::Pass);
    }

    #[test]
    fn a_timeout_fails_naming_host_and_how() {
        let mut facts = healthy();
        break_endpoint(&mut facts, RELAY, EndpointStep::TcpTimeout, None);
        let outcome = servicebus_relay(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains(RELAY) && outcome.summary.contains("timed out"),
            "{}",
            outcome.summary
        );
        assert!(
            outcome.summary.contains("20.36.2.2:443"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, RELAY, "Restart-Service ADSync"],
        );
    }

    #[test]
    fn an_untrusted_issuer_points_at_tls_inspection() {
        let mut facts = healthy();
        let presented = PresentedCertificate {
            subject: format!("CN={RESET}"),
            issuer: "CN=Contoso Proxy CA, O=Contoso".to_owned(),
        };
        break_endpoint(
            &mut facts,
            RESET,
            EndpointStep::CertificateUntrusted,
            Some(presented),
        );
        let outcome = passwordreset_https(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome
                .summary
                .contains("certificate not trusted (TLS inspection?)"),
            "{}",
            outcome.summary
        );
        assert!(
            outcome.summary.contains("Contoso Proxy CA"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["tls_inspection_suspected"], true);
        assert_eq!(
            outcome.evidence["endpoints"][0]["presented_issuer"],
            "CN=Contoso Proxy CA, O=Contoso"
        );
        assert_rendered(&outcome.remediation, &[SERVER, RESET]);
    }

    #[test]
    fn another_certificate_problem_is_not_called_inspection() {
        let mut facts = healthy();
        break_endpoint(&mut facts, RESET, EndpointStep::CertificateInvalid, None);
        let outcome = passwordreset_https(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            !outcome.summary.contains("inspection"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["tls_inspection_suspected"], false);
    }

    #[test]
    fn a_local_setup_problem_is_an_error_not_a_failure() {
        let mut facts = healthy();
        break_endpoint(&mut facts, RESET, EndpointStep::Setup, None);
        let outcome = passwordreset_https(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert!(outcome.summary.contains(RESET), "{}", outcome.summary);
    }
}

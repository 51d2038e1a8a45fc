//! Network checks: the endpoints resolve (NET-03); the password reset service (NET-01), the
//! Service Bus relay (NET-02) and the other Connect endpoints (NET-05) accept a TLS session;
//! the relay answers like itself (NET-02(b)); no chain shows TLS inspection (NET-07); the
//! CRL/OCSP hosts answer (NET-08); the DCs' ports are open (NET-09); and, when asked for,
//! idle sessions survive (NET-04) and the legacy relay ports are open (NET-10).

use std::time::Duration;

use serde_json::{Value, json};
use wbhealth_catalogue::{Status, render};

use super::{LDAP_NOT_CONFIGURED, Verdict, def, plural};
use crate::facts::{
    DnsFailureKind, DnsLookup, EndpointProbe, EndpointPurpose, EndpointStep, Facts, HttpProbe,
    IdleHoldOutcome, PortOutcome, PortProbe, ProbeStep,
};
use crate::result::CheckOutcome;

/// Catalogue id of the DNS check.
pub const DNS_RESOLUTION: &str = "network.dns_resolution";
/// Catalogue id of the password reset service check.
pub const PASSWORDRESET_HTTPS: &str = "network.passwordreset_https";
/// Catalogue id of the Service Bus relay check.
pub const SERVICEBUS_RELAY: &str = "network.servicebus_relay";
/// Catalogue id of the relay's unauthenticated answer check.
pub const SERVICEBUS_MISSING_TOKEN: &str = "network.servicebus_missing_token";
/// Catalogue id of the TLS inspection check.
pub const TLS_INSPECTION: &str = "network.tls_inspection";
/// Catalogue id of the other Entra Connect endpoints check.
pub const CONNECT_ENDPOINTS: &str = "network.connect_endpoints";
/// Catalogue id of the CRL/OCSP check.
pub const CRL_OCSP: &str = "network.crl_ocsp";
/// Catalogue id of the DC ports check.
pub const DC_PORTS: &str = "network.dc_ports";
/// Catalogue id of the idle-hold check.
pub const IDLE_TIMEOUT: &str = "network.idle_timeout";
/// Catalogue id of the legacy relay ports check.
pub const LEGACY_RELAY_PORTS: &str = "network.legacy_relay_ports";

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
        let chains: Vec<String> = lookups
            .iter()
            .filter_map(|l| match &l.outcome {
                Ok(r) if !r.cname_chain.is_empty() => {
                    Some(format!("{} → {}", l.host, r.cname_chain.join(" → ")))
                }
                _ => None,
            })
            .collect();
        let chains = if chains.is_empty() {
            String::new()
        } else {
            format!("; CNAME chains: {}", chains.join("; "))
        };
        Verdict {
            status: Status::Pass,
            summary: format!(
                "{} resolve{chains}",
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

/// NET-02(b): an unauthenticated GET to each relay gets the relay's own 401 (MissingToken).
pub fn servicebus_missing_token(facts: &Facts) -> CheckOutcome {
    let def = def(SERVICEBUS_MISSING_TOKEN);
    let relays: Vec<&EndpointProbe> = facts
        .network
        .endpoints
        .iter()
        .filter(|p| p.purpose == EndpointPurpose::ServiceBus)
        .collect();
    let answered: Vec<(&EndpointProbe, &Result<u16, String>)> = relays
        .iter()
        .filter_map(|p| p.outcome.as_ref().ok().map(|s| (*p, &s.http_status)))
        .collect();
    let duration = relays.iter().map(|p| p.duration).max().unwrap_or_default();
    let evidence = json!({
        "answers": answered.iter().map(|(p, status)| json!({
            "endpoint": p.target(),
            "http_status": status.as_ref().ok(),
            "http_error": status.as_ref().err(),
        })).collect::<Vec<_>>(),
        "expected_status": 401,
    });
    let odd: Vec<String> = answered
        .iter()
        .filter(|(_, status)| **status != Ok(401))
        .map(|(p, status)| match status {
            Ok(code) => format!("{} answered HTTP {code}", p.target()),
            Err(e) => format!("{} gave no HTTP answer ({e})", p.target()),
        })
        .collect();
    let verdict = if answered.is_empty() {
        Verdict {
            status: Status::Error,
            summary: format!(
                "no TLS session to a Service Bus relay was established, so its answer could not be seen (see {SERVICEBUS_RELAY})"
            ),
            evidence,
            remediation: format!(
                "Fix {SERVICEBUS_RELAY} first; this check needs a TLS session to the relay."
            ),
        }
    } else if !odd.is_empty() {
        let first_host = answered
            .iter()
            .find(|(_, status)| **status != Ok(401))
            .map(|(p, _)| {
                if p.port == 443 {
                    p.host.clone()
                } else {
                    p.target()
                }
            })
            .unwrap_or_default();
        let answers = odd.join("; ");
        Verdict {
            status: Status::Fail,
            summary: format!(
                "{answers}, not the relay's 401 MissingToken: something in the path answers for it (interception?)"
            ),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("answers", &answers),
                    ("first_host", &first_host),
                ],
            ),
        }
    } else {
        Verdict {
            status: Status::Pass,
            summary: format!(
                "{} answered HTTP 401 without a token, as the relay itself does",
                plural(answered.len(), "relay", "relays")
            ),
            evidence,
            remediation: String::new(),
        }
    };
    verdict.into_outcome(def, facts, duration)
}

/// NET-07: every certificate chain builds and comes from one of Microsoft's public CAs.
pub fn tls_inspection(facts: &Facts) -> CheckOutcome {
    let def = def(TLS_INSPECTION);
    let accepted = &facts.network.accepted_issuers;
    let is_public = |issuer: &str| {
        let issuer = issuer.to_ascii_lowercase();
        accepted
            .iter()
            .any(|a| issuer.contains(&a.to_ascii_lowercase()))
    };
    let probes = &facts.network.endpoints;
    let duration = probes.iter().map(|p| p.duration).max().unwrap_or_default();
    // (endpoint, issuer, why suspicious) for each chain that was seen.
    let mut seen: Vec<(String, String, Option<&str>)> = Vec::new();
    for probe in probes {
        match &probe.outcome {
            Ok(session) => {
                let suspicious = (!is_public(&session.peer_issuer))
                    .then_some("not a public Microsoft/DigiCert CA");
                seen.push((probe.target(), session.peer_issuer.clone(), suspicious));
            }
            Err(e) if e.step == EndpointStep::CertificateUntrusted => {
                let issuer = e
                    .presented
                    .as_ref()
                    .map(|c| c.issuer.clone())
                    .unwrap_or_else(|| "an unknown issuer".to_owned());
                seen.push((
                    probe.target(),
                    issuer,
                    Some("the chain does not build to a trusted root"),
                ));
            }
            Err(_) => {}
        }
    }
    let evidence = json!({
        "accepted_issuers": accepted,
        "chains": seen.iter().map(|(endpoint, issuer, why)| json!({
            "endpoint": endpoint,
            "issuer": issuer,
            "suspicious": why,
        })).collect::<Vec<_>>(),
        "not_seen": probes.len() - seen.len(),
    });
    let suspicious: Vec<&(String, String, Option<&str>)> =
        seen.iter().filter(|(_, _, why)| why.is_some()).collect();
    let verdict = if seen.is_empty() {
        Verdict {
            status: Status::Error,
            summary: "no endpoint presented a certificate, so no chain could be looked at (see the reachability checks)".to_owned(),
            evidence,
            remediation: format!(
                "Let {} reach Microsoft's endpoints first; this check needs a TLS handshake to look at.",
                facts.host_name
            ),
        }
    } else if let Some((_, first_issuer, _)) = suspicious.first() {
        let inspected = suspicious
            .iter()
            .map(|(endpoint, issuer, why)| {
                format!(
                    "{endpoint} presented a certificate issued by \"{issuer}\" ({})",
                    why.unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Verdict {
            status: Status::Fail,
            summary: format!("TLS inspection? {inspected}"),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("inspected", &inspected),
                    ("issuer", first_issuer),
                ],
            ),
        }
    } else {
        let mut issuers: Vec<&str> = seen.iter().map(|(_, i, _)| i.as_str()).collect();
        issuers.sort_unstable();
        issuers.dedup();
        let unseen = probes.len() - seen.len();
        let tail = if unseen > 0 {
            format!(" ({} not reached)", plural(unseen, "endpoint", "endpoints"))
        } else {
            String::new()
        };
        Verdict {
            status: Status::Pass,
            summary: format!(
                "{} present chains from public CAs: {}{tail}",
                plural(seen.len(), "endpoint", "endpoints"),
                issuers.join("; ")
            ),
            evidence,
            remediation: String::new(),
        }
    };
    verdict.into_outcome(def, facts, duration)
}

/// §4.2 and NET-05: the other Entra Connect endpoints accept TLS, through the proxy if set.
pub fn connect_endpoints(facts: &Facts) -> CheckOutcome {
    endpoint_check(
        facts,
        CONNECT_ENDPOINTS,
        EndpointPurpose::Connect,
        "network.connect_endpoints",
    )
}

/// NET-08: each CRL/OCSP host gives an HTTP answer on port 80.
pub fn crl_ocsp(facts: &Facts) -> CheckOutcome {
    let def = def(CRL_OCSP);
    let probes = &facts.network.crl;
    let duration = probes
        .iter()
        .map(|p| p.duration + lookup_duration(facts, &p.host))
        .max()
        .unwrap_or_default();
    let evidence = json!({
        "proxy": facts.network.proxy,
        "endpoints": probes.iter().map(|p| match &p.outcome {
            Ok(code) => json!({ "endpoint": p.target(), "address": p.address, "http_status": code }),
            Err(e) => json!({ "endpoint": p.target(), "address": p.address, "failed_step": e.step, "error": e.message }),
        }).collect::<Vec<_>>(),
    });
    let failed: Vec<&HttpProbe> = probes
        .iter()
        .filter(|p| matches!(&p.outcome, Err(e) if e.step != EndpointStep::Setup))
        .collect();
    let not_probed = probes.iter().find_map(|p| match &p.outcome {
        Err(e) if e.step == EndpointStep::Setup => Some((p, e)),
        _ => None,
    });
    let verdict = if probes.is_empty() {
        Verdict {
            status: Status::Error,
            summary: "no CRL/OCSP endpoints are configured (network.crl_endpoints is empty)"
                .to_owned(),
            evidence,
            remediation:
                "Remove network.crl_endpoints from agent.toml to probe Microsoft's defaults."
                    .to_owned(),
        }
    } else if let Some(first) = failed.first() {
        let described = failed
            .iter()
            .map(|p| match &p.outcome {
                Err(e) => format!("{} {}", p.target(), e.step.describe()),
                Ok(_) => p.target(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        Verdict {
            status: Status::Warn,
            summary: format!(
                "{} of {} not reachable over HTTP: {described}",
                failed.len(),
                plural(probes.len(), "CRL/OCSP host", "CRL/OCSP hosts")
            ),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("failed", &described),
                    ("first_failed", &first.target()),
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
        Verdict {
            status: Status::Pass,
            summary: format!(
                "{} answer over HTTP",
                plural(probes.len(), "CRL/OCSP host", "CRL/OCSP hosts")
            ),
            evidence,
            remediation: String::new(),
        }
    };
    verdict.into_outcome(def, facts, duration)
}

/// Whether a port result shows the path open: an accepted connection, or, for a sample of the
/// dynamic RPC range, a refusal too (the DC itself answered; nothing filtered the packets).
fn port_reachable(probe: &PortProbe) -> bool {
    match probe.outcome {
        PortOutcome::Open => true,
        PortOutcome::Refused => probe.dynamic,
        PortOutcome::TimedOut | PortOutcome::Error(_) => false,
    }
}

/// NET-09: the configured DC and the PDC emulator accept the ports writeback needs.
pub fn dc_ports(facts: &Facts) -> CheckOutcome {
    let def = def(DC_PORTS);
    let dcs = &facts.network.dc_ports;
    let evidence = json!({
        "domain_controllers": dcs.iter().map(|dc| match &dc.ports {
            Ok(ports) => json!({
                "host": dc.host,
                "roles": dc.roles,
                "address": ports.address,
                "ports": ports.ports.iter().map(|p| json!({
                    "port": p.port,
                    "dynamic_rpc_sample": p.dynamic,
                    "outcome": p.outcome.describe(),
                })).collect::<Vec<_>>(),
                "cldap_udp_389": dc.cldap.as_ref().map(PortOutcome::describe),
            }),
            Err(e) => json!({ "host": dc.host, "roles": dc.roles, "error": e }),
        }).collect::<Vec<_>>(),
    });
    // (dc, port or None for "does not resolve", description)
    let mut blocked: Vec<(String, Option<u16>, String)> = Vec::new();
    for dc in dcs {
        let name = format!("{} ({})", dc.host, dc.roles.join(", "));
        match &dc.ports {
            Err(e) => blocked.push((
                dc.host.clone(),
                None,
                format!("{name} does not resolve: {e}"),
            )),
            Ok(ports) => {
                let bad: Vec<&PortProbe> =
                    ports.ports.iter().filter(|p| !port_reachable(p)).collect();
                let cldap = dc.cldap.as_ref().filter(|c| **c != PortOutcome::Open);
                if !bad.is_empty() || cldap.is_some() {
                    let list = bad
                        .iter()
                        .map(|p| format!("TCP {} {}", p.port, p.outcome.describe()))
                        .chain(cldap.map(|c| format!("CLDAP (UDP 389) {}", c.describe())))
                        .collect::<Vec<_>>()
                        .join(", ");
                    blocked.push((
                        dc.host.clone(),
                        Some(bad.first().map_or(389, |p| p.port)),
                        format!("{name} at {}: {list}", ports.address),
                    ));
                }
            }
        }
    }
    let verdict = if dcs.is_empty() {
        let reason = match &facts.directory {
            Err(e) if e.step == ProbeStep::NotConfigured => LDAP_NOT_CONFIGURED.to_owned(),
            Err(e) => format!("the directory could not be read ({e})"),
            Ok(d) => match &d.pdc {
                Err(e) => format!("the PDC emulator was not found ({e})"),
                Ok(_) => "no domain controller was named".to_owned(),
            },
        };
        Verdict {
            status: Status::Error,
            summary: format!("no domain controller to test: {reason}"),
            evidence,
            remediation: format!(
                "On {}, set [ldap] host in agent.toml to a domain controller so that its ports and the PDC emulator's can be tested.",
                facts.host_name
            ),
        }
    } else if let Some((host, port, _)) = blocked.first() {
        let list = blocked
            .iter()
            .map(|(_, _, d)| d.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let port = port
            .map(|p| p.to_string())
            .unwrap_or_else(|| "389".to_owned());
        Verdict {
            status: Status::Fail,
            summary: format!("not reachable: {list}"),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("server", &facts.host_name),
                    ("blocked", &list),
                    ("first_host", host),
                    ("first_port", &port),
                ],
            ),
        }
    } else {
        let described = dcs
            .iter()
            .filter_map(|dc| {
                let ports = dc.ports.as_ref().ok()?;
                let list = |dynamic: bool| {
                    ports
                        .ports
                        .iter()
                        .filter(|p| p.dynamic == dynamic)
                        .map(|p| p.port.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let cldap = if dc.cldap.is_some() {
                    " and CLDAP (UDP 389)"
                } else {
                    ""
                };
                Some(format!(
                    "{} ({}) answers on TCP {}{cldap}; dynamic RPC sample {} not filtered",
                    dc.host,
                    dc.roles.join(", "),
                    list(false),
                    list(true)
                ))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Verdict {
            status: Status::Pass,
            summary: described,
            evidence,
            remediation: String::new(),
        }
    };
    verdict.into_outcome(def, facts, Duration::ZERO)
}

/// NET-04: an idle TLS session to the relay survives the configured idle time (opt-in).
pub fn idle_timeout(facts: &Facts) -> CheckOutcome {
    let def = def(IDLE_TIMEOUT);
    let Some(hold) = &facts.network.idle_hold else {
        return Verdict {
            status: Status::NotApplicable,
            summary: "not run: the idle-hold probe is slow and opt-in (wbhealth-agent diagnose --idle-hold, or network.idle_hold = true)".to_owned(),
            evidence: json!({ "run": false }),
            remediation: String::new(),
        }
        .into_outcome(def, facts, Duration::ZERO);
    };
    let evidence = json!({ "run": true, "relay": hold.target, "hold_seconds": hold.hold.as_secs(), "outcome": hold.outcome });
    let held = clock(hold.hold);
    let verdict = match &hold.outcome {
        IdleHoldOutcome::Survived { http_status } => Verdict {
            status: Status::Pass,
            summary: format!(
                "a TLS session to {} was still usable after {held} idle (HTTP {http_status})",
                hold.target
            ),
            evidence,
            remediation: String::new(),
        },
        IdleHoldOutcome::Dropped { after, how } => {
            let observed = format!("{how}, after {} of the {held} idle", clock(*after));
            Verdict {
                status: Status::Fail,
                summary: format!(
                    "the idle TLS session to {} was dropped: {observed}",
                    hold.target
                ),
                evidence,
                remediation: render(
                    def.remediation,
                    &[
                        ("server", &facts.host_name),
                        ("relay", &hold.target),
                        ("observed", &observed),
                    ],
                ),
            }
        }
        IdleHoldOutcome::NotStarted { failure } => Verdict {
            status: Status::Error,
            summary: format!(
                "could not open a session to hold idle: {} {} ({})",
                hold.target,
                failure.step.describe(),
                failure.message
            ),
            evidence,
            remediation: format!(
                "Fix {SERVICEBUS_RELAY} first; the idle-hold probe needs a TLS session to the relay."
            ),
        },
        IdleHoldOutcome::Cancelled { after } => Verdict {
            status: Status::Error,
            summary: format!(
                "cancelled after {} of the {held} idle, so nothing was concluded",
                clock(*after)
            ),
            evidence,
            remediation: "Run wbhealth-agent diagnose --idle-hold again and let it finish."
                .to_owned(),
        },
    };
    let duration = match &hold.outcome {
        IdleHoldOutcome::Dropped { after, .. } | IdleHoldOutcome::Cancelled { after } => *after,
        _ => hold.hold,
    };
    verdict.into_outcome(def, facts, duration)
}

/// NET-10: the legacy relay ports 9350–9354 (opt-in).
pub fn legacy_relay_ports(facts: &Facts) -> CheckOutcome {
    let def = def(LEGACY_RELAY_PORTS);
    let Some(relays) = &facts.network.legacy_relay_ports else {
        return Verdict {
            status: Status::NotApplicable,
            summary: "not probed: set network.legacy_relay_ports = true to test TCP 9350-9354 (only relevant when event 32011 appears)".to_owned(),
            evidence: json!({ "probed": false }),
            remediation: String::new(),
        }
        .into_outcome(def, facts, Duration::ZERO);
    };
    let evidence = json!({
        "probed": true,
        "relays": relays.iter().map(|r| json!({
            "host": r.host,
            "address": r.address,
            "ports": r.ports.iter().map(|p| json!({ "port": p.port, "outcome": p.outcome.describe() })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let closed: Vec<String> = relays
        .iter()
        .flat_map(|r| {
            r.ports
                .iter()
                .filter(|p| p.outcome != PortOutcome::Open)
                .map(move |p| format!("{}:{} {}", r.host, p.port, p.outcome.describe()))
        })
        .collect();
    let verdict = if relays.is_empty() {
        Verdict {
            status: Status::Error,
            summary:
                "no relay host resolved, so no port could be tested (see network.dns_resolution)"
                    .to_owned(),
            evidence,
            remediation: format!("Fix {DNS_RESOLUTION} first."),
        }
    } else if closed.is_empty() {
        Verdict {
            status: Status::Pass,
            summary: format!(
                "TCP 9350-9354 open on {}",
                plural(relays.len(), "relay", "relays")
            ),
            evidence,
            remediation: String::new(),
        }
    } else {
        let blocked = closed.join(", ");
        Verdict {
            status: Status::Warn,
            summary: format!("legacy relay ports closed: {blocked}"),
            evidence,
            remediation: render(
                def.remediation,
                &[("server", &facts.host_name), ("blocked", &blocked)],
            ),
        }
    };
    verdict.into_outcome(def, facts, Duration::ZERO)
}

/// `m:ss`.
fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{}:{:02}", secs / 60, secs % 60)
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
        assert!(
            outcome.summary.starts_with("3 endpoint hosts resolve; CNAME chains: passwordreset.microsoftonline.com → passwordreset.microsoftonline.com.trafficmanager.net"),
            "{}",
            outcome.summary
        );
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

    fn relay_status(facts: &mut Facts, status: Result<u16, String>) {
        for probe in facts.network.endpoints.iter_mut() {
            if probe.purpose == EndpointPurpose::ServiceBus
                && let Ok(session) = probe.outcome.as_mut()
            {
                session.http_status = status.clone();
            }
        }
    }

    #[test]
    fn the_relay_answering_401_passes_and_anything_else_fails_as_interception() {
        let outcome = servicebus_missing_token(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);

        let mut facts = healthy();
        relay_status(&mut facts, Ok(200));
        let outcome = servicebus_missing_token(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("answered HTTP 200")
                && outcome.summary.contains("interception"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[
                SERVER,
                "Invoke-WebRequest https://ssprdedicatedsbprodscu.servicebus.windows.net/",
            ],
        );
    }

    #[test]
    fn no_relay_session_means_the_answer_was_not_seen() {
        let mut facts = healthy();
        for host in ["ssprdedicatedsbprodscu.servicebus.windows.net", RELAY] {
            break_endpoint(&mut facts, host, EndpointStep::TcpRefused, None);
        }
        assert_eq!(servicebus_missing_token(&facts).status, Status::Error);
    }

    #[test]
    fn public_issuers_pass_and_a_foreign_issuer_is_called_tls_inspection() {
        let outcome = tls_inspection(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert!(
            outcome
                .summary
                .contains("Microsoft Azure RSA TLS Issuing CA 03"),
            "{}",
            outcome.summary
        );

        let mut facts = healthy();
        if let Ok(session) = facts.network.endpoints[0].outcome.as_mut() {
            session.peer_issuer = "CN=Contoso Inspection CA, O=Contoso".to_owned();
        }
        let outcome = tls_inspection(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.starts_with("TLS inspection?")
                && outcome.summary.contains("Contoso Inspection CA")
                && outcome
                    .summary
                    .contains("not a public Microsoft/DigiCert CA"),
            "{}",
            outcome.summary
        );
        assert_rendered(&outcome.remediation, &[SERVER, "Contoso Inspection CA"]);
    }

    #[test]
    fn an_untrusted_chain_is_tls_inspection_with_its_issuer() {
        let mut facts = healthy();
        let presented = PresentedCertificate {
            subject: format!("CN={RELAY}"),
            issuer: "CN=Fortinet CA".to_owned(),
        };
        break_endpoint(
            &mut facts,
            RELAY,
            EndpointStep::CertificateUntrusted,
            Some(presented),
        );
        let outcome = tls_inspection(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("Fortinet CA") && outcome.summary.contains("does not build"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn no_chain_seen_is_an_error_not_a_pass() {
        let mut facts = healthy();
        for probe in facts.network.endpoints.iter_mut() {
            probe.outcome = Err(EndpointFailure {
                step: EndpointStep::TcpTimeout,
                message: "timed out".to_owned(),
                presented: None,
            });
        }
        assert_eq!(tls_inspection(&facts).status, Status::Error);
    }

    #[test]
    fn a_proxy_denial_fails_the_connect_endpoints_naming_the_proxy() {
        let mut facts = healthy();
        break_endpoint(
            &mut facts,
            "login.microsoftonline.com",
            EndpointStep::ProxyDenied,
            None,
        );
        let outcome = connect_endpoints(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("denied by the proxy (HTTP 403)"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, "https://login.microsoftonline.com/"],
        );
    }

    #[test]
    fn an_unreachable_crl_host_warns_and_any_http_answer_passes() {
        let mut facts = healthy();
        facts.network.crl[0].outcome = Ok(404);
        assert_eq!(
            crl_ocsp(&facts).status,
            Status::Pass,
            "any HTTP answer means reachable"
        );
        facts.network.crl[0].outcome = Err(EndpointFailure {
            step: EndpointStep::TcpTimeout,
            message: "timed out".to_owned(),
            presented: None,
        });
        let outcome = crl_ocsp(&facts);
        assert_eq!(outcome.status, Status::Warn);
        assert!(
            outcome.summary.contains("crl.microsoft.com:80 timed out"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, "http://crl.microsoft.com:80/"],
        );
        facts.network.crl.clear();
        assert_eq!(crl_ocsp(&facts).status, Status::Error);
    }

    #[test]
    fn dc_ports_pass_fail_on_a_closed_port_and_error_without_a_dc() {
        let outcome = dc_ports(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert!(
            outcome.summary.contains("53, 88, 135, 389, 445, 636"),
            "{}",
            outcome.summary
        );

        let mut facts = healthy();
        if let Ok(ports) = facts.network.dc_ports[0].ports.as_mut() {
            ports.ports[4].outcome = PortOutcome::TimedOut;
            // A refused named port fails too: nothing serves SMB there.
            ports.ports[1].outcome = PortOutcome::Refused;
        }
        let outcome = dc_ports(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("TCP 445 timed out")
                && outcome.summary.contains("TCP 88 refused")
                && outcome.summary.contains("PDC emulator"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[SERVER, "Test-NetConnection dc2.contoso.com -Port 88"],
        );

        let mut facts = healthy();
        if let Ok(ports) = facts.network.dc_ports[0].ports.as_mut() {
            ports.ports[6].outcome = PortOutcome::TimedOut;
        }
        assert_eq!(
            dc_ports(&facts).status,
            Status::Fail,
            "a filtered dynamic port fails"
        );

        let mut facts = healthy();
        facts.network.dc_ports[0].cldap = Some(PortOutcome::TimedOut);
        let outcome = dc_ports(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("CLDAP (UDP 389) timed out"),
            "{}",
            outcome.summary
        );

        let mut facts = healthy();
        facts.network.dc_ports.clear();
        facts.directory = Err(crate::facts::ProbeFailure::new(
            ProbeStep::NotConfigured,
            "no [ldap]",
        ));
        let outcome = dc_ports(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert!(
            outcome.summary.contains("LDAP is not configured"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn the_idle_hold_passes_fails_or_is_not_applicable_when_not_asked_for() {
        assert_eq!(idle_timeout(&healthy()).status, Status::Pass);
        let mut facts = healthy();
        if let Some(hold) = facts.network.idle_hold.as_mut() {
            hold.outcome = IdleHoldOutcome::Dropped {
                after: Duration::from_secs(120),
                how: "the connection was reset while idle".to_owned(),
            };
        }
        let outcome = idle_timeout(&facts);
        assert_eq!(outcome.status, Status::Fail);
        assert!(
            outcome.summary.contains("after 2:00 of the 5:00 idle"),
            "{}",
            outcome.summary
        );
        assert_rendered(&outcome.remediation, &[SERVER, "at least 6 minutes"]);

        if let Some(hold) = facts.network.idle_hold.as_mut() {
            hold.outcome = IdleHoldOutcome::Cancelled {
                after: Duration::from_secs(30),
            };
        }
        assert_eq!(
            idle_timeout(&facts).status,
            Status::Error,
            "cancelled is not a pass"
        );

        facts.network.idle_hold = None;
        let outcome = idle_timeout(&facts);
        assert_eq!(outcome.status, Status::NotApplicable);
        assert!(
            outcome.summary.contains("--idle-hold"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn legacy_relay_ports_are_info_and_opt_in() {
        assert_eq!(legacy_relay_ports(&healthy()).status, Status::Pass);
        let mut facts = healthy();
        if let Some(relays) = facts.network.legacy_relay_ports.as_mut() {
            relays[0].ports[2].outcome = PortOutcome::TimedOut;
        }
        let outcome = legacy_relay_ports(&facts);
        assert_eq!(outcome.status, Status::Warn);
        assert!(
            outcome.summary.contains(":9352 timed out"),
            "{}",
            outcome.summary
        );
        facts.network.legacy_relay_ports = None;
        assert_eq!(legacy_relay_ports(&facts).status, Status::NotApplicable);
    }
}

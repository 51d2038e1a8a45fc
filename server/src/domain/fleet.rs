//! Fleet correlation: checks that compare the latest reports of all agents of one tenant
//! (SRV-04, PDC agreement) or notice an agent that stopped talking. Pure functions over what
//! the store already holds; the results join the tenant status with `source: fleet`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use wbhealth_catalogue::{Status, render};

use super::{Agent, AgentId, LatestResult, ResultRecord};

/// Catalogue id of the single-active-server check (SRV-04).
pub const SINGLE_ACTIVE_SERVER: &str = "fleet.single_active_server";
/// Catalogue id of the PDC agreement check.
pub const PDC_AGREEMENT: &str = "fleet.pdc_agreement";
/// Catalogue id of the silent-agent check.
pub const AGENT_SILENT: &str = "fleet.agent_silent";

/// An agent is silent once it has not been heard from for this many check intervals.
pub const SILENT_AFTER_INTERVALS: u32 = 3;

/// The agent checks whose latest results the fleet checks read.
const STAGING_MODE: &str = "server.staging_mode";
const WRITEBACK_ENABLED: &str = "server.writeback_enabled";
const PDC_EMULATOR: &str = "topology.pdc_emulator";

/// One agent as the fleet checks see it.
pub struct FleetAgent<'a> {
    /// The agent.
    pub agent: &'a Agent,
    /// Whether its stream is open right now.
    pub connected: bool,
}

/// Everything the fleet checks conclude about one tenant, one result per check.
pub fn correlate(
    tenant_name: &str,
    agents: &[FleetAgent<'_>],
    latest: &[LatestResult],
    interval: Duration,
    now: OffsetDateTime,
) -> Vec<ResultRecord> {
    let active: Vec<FleetAgent<'_>> = agents
        .iter()
        .filter(|a| a.agent.revoked_at.is_none())
        .map(|a| FleetAgent {
            agent: a.agent,
            connected: a.connected,
        })
        .collect();
    // A tenant without agents has nothing to compare; its status stays "nothing reported".
    if active.is_empty() {
        return Vec::new();
    }
    let by_agent = |id: AgentId, check: &str| {
        latest
            .iter()
            .find(|l| l.agent_id == id && l.result.check_id == check)
    };
    vec![
        single_active_server(tenant_name, &active, &by_agent, now),
        pdc_agreement(tenant_name, &active, &by_agent, now),
        agent_silent(tenant_name, &active, interval, now),
    ]
}

fn record(
    check_id: &str,
    status: Status,
    summary: String,
    evidence: serde_json::Value,
    remediation: &[(&str, &str)],
    now: OffsetDateTime,
) -> ResultRecord {
    let remediation = if matches!(status, Status::Fail | Status::Warn) {
        wbhealth_catalogue::find(check_id)
            .map(|def| render(def.remediation, remediation))
            .unwrap_or_default()
    } else {
        String::new()
    };
    ResultRecord {
        check_id: check_id.to_owned(),
        status,
        summary,
        evidence,
        remediation,
        duration_ms: 0,
        observed_at: now,
    }
}

fn host(agent: &Agent) -> String {
    if agent.host.hostname.is_empty() {
        format!("agent {}", agent.id)
    } else {
        agent.host.hostname.clone()
    }
}

type Lookup<'r> = dyn Fn(AgentId, &str) -> Option<&'r LatestResult> + 'r;

/// SRV-04: at most one agent reports an active (non-staging) server with writeback enabled.
fn single_active_server(
    tenant: &str,
    agents: &[FleetAgent<'_>],
    by_agent: &Lookup<'_>,
    now: OffsetDateTime,
) -> ResultRecord {
    let mut active = Vec::new();
    let mut unknown = Vec::new();
    let mut passive = Vec::new();
    for a in agents {
        let staging = by_agent(a.agent.id, STAGING_MODE).map(|l| l.result.status);
        let writeback = by_agent(a.agent.id, WRITEBACK_ENABLED).map(|l| l.result.status);
        match (staging, writeback) {
            (Some(Status::Pass), Some(Status::Pass)) => active.push(host(a.agent)),
            (Some(Status::Fail), _) | (_, Some(Status::Fail)) => passive.push(host(a.agent)),
            _ => unknown.push(host(a.agent)),
        }
    }
    let evidence = json!({
        "active_with_writeback": active,
        "staging_or_writeback_off": passive,
        "not_known": unknown,
    });
    let (status, summary) = if active.len() >= 2 {
        (
            Status::Fail,
            format!(
                "{} sync servers are active with writeback: {}; only one may be, the others must be in staging mode",
                active.len(),
                active.join(", ")
            ),
        )
    } else if active.len() + unknown.len() <= 1 {
        (
            Status::Pass,
            match (active.first(), unknown.first()) {
                (Some(one), _) => format!("{one} is the only active sync server with writeback"),
                (None, Some(_)) if agents.len() == 1 => {
                    "one agent: there is no other sync server to compare with".to_owned()
                }
                _ => "no sync server is active with writeback (the others are in staging or have it off)"
                    .to_owned(),
            },
        )
    } else {
        (
            Status::Error,
            format!(
                "cannot tell whether more than one sync server is active with writeback: the staging-mode or writeback results of {} are missing or in error{}",
                unknown.join(", "),
                active
                    .first()
                    .map(|a| format!(", and {a} is active"))
                    .unwrap_or_default()
            ),
        )
    };
    let servers = active.join(", ");
    record(
        SINGLE_ACTIVE_SERVER,
        status,
        summary,
        evidence,
        &[("servers", &servers), ("tenant", tenant)],
        now,
    )
}

/// Agents that read the same domain name the same PDC emulator.
fn pdc_agreement(
    tenant: &str,
    agents: &[FleetAgent<'_>],
    by_agent: &Lookup<'_>,
    now: OffsetDateTime,
) -> ResultRecord {
    // domain → PDC → agents that named it.
    let mut seen: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for a in agents {
        let Some(latest) = by_agent(a.agent.id, PDC_EMULATOR) else {
            continue;
        };
        let evidence = &latest.result.evidence;
        let (Some(domain), Some(pdc)) = (
            evidence["domain"].as_str(),
            evidence["pdc"]["dns_host_name"].as_str(),
        ) else {
            continue;
        };
        seen.entry(domain.to_ascii_lowercase())
            .or_default()
            .entry(pdc.trim_end_matches('.').to_ascii_lowercase())
            .or_default()
            .push(host(a.agent));
    }
    let disagreeing: Vec<(&String, &BTreeMap<String, Vec<String>>)> =
        seen.iter().filter(|(_, pdcs)| pdcs.len() > 1).collect();
    let evidence = json!({ "pdc_by_domain": seen });
    let (status, summary) = if seen.is_empty() {
        (
            Status::NotApplicable,
            "no agent has named a PDC emulator yet".to_owned(),
        )
    } else if disagreeing.is_empty() {
        let agreed: Vec<String> = seen
            .iter()
            .filter_map(|(domain, pdcs)| pdcs.keys().next().map(|pdc| format!("{domain}: {pdc}")))
            .collect();
        (
            Status::Pass,
            format!(
                "the agents agree on the PDC emulator ({})",
                agreed.join("; ")
            ),
        )
    } else {
        let detail: Vec<String> = disagreeing
            .iter()
            .map(|(domain, pdcs)| {
                let views: Vec<String> = pdcs
                    .iter()
                    .map(|(pdc, hosts)| format!("{} say {pdc}", hosts.join(", ")))
                    .collect();
                format!("{domain}: {}", views.join(" but "))
            })
            .collect();
        (
            Status::Warn,
            format!(
                "the agents disagree about the PDC emulator: {}",
                detail.join("; ")
            ),
        )
    };
    let domains: Vec<&str> = disagreeing.iter().map(|(d, _)| d.as_str()).collect();
    record(
        PDC_AGREEMENT,
        status,
        summary,
        evidence,
        &[("tenant", tenant), ("domains", &domains.join(", "))],
        now,
    )
}

/// Every agent was heard from within [`SILENT_AFTER_INTERVALS`] intervals. A connected agent
/// heartbeats, so one that looks connected but was not heard from that long is behind a
/// half-open connection (a NAT or firewall dropped it) and is silent too.
fn agent_silent(
    tenant: &str,
    agents: &[FleetAgent<'_>],
    interval: Duration,
    now: OffsetDateTime,
) -> ResultRecord {
    let allowed =
        time::Duration::try_from(interval * SILENT_AFTER_INTERVALS).unwrap_or(time::Duration::MAX);
    let mut silent = Vec::new();
    for a in agents {
        let last = a.agent.last_seen_at.unwrap_or(a.agent.enrolled_at);
        if now - last > allowed {
            let when = last
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| last.to_string());
            silent.push((
                host(a.agent),
                a.agent.id,
                when,
                a.agent.last_seen_at.is_none(),
                a.connected,
            ));
        }
    }
    let evidence = json!({
        "allowed_seconds": allowed.whole_seconds(),
        "silent": silent.iter().map(|(host, id, when, never, connected)| json!({
            "host": host, "agent_id": id.to_string(), "last_seen_at": if *never { None } else { Some(when) },
            "connected": connected,
        })).collect::<Vec<_>>(),
        "agents": agents.len(),
    });
    let names: Vec<String> = silent
        .iter()
        .map(|(host, _, when, never, connected)| {
            if *never {
                format!("{host} (never reported since it enrolled at {when})")
            } else if *connected {
                format!("{host} (last heard at {when}; its connection looks open but is silent)")
            } else {
                format!("{host} (last heard at {when})")
            }
        })
        .collect();
    let (status, summary) = if agents.is_empty() {
        (
            Status::NotApplicable,
            "no agent is enrolled in this tenant".to_owned(),
        )
    } else if silent.is_empty() {
        (
            Status::Pass,
            format!(
                "all {} reported within {} minutes",
                if agents.len() == 1 {
                    "1 agent".to_owned()
                } else {
                    format!("{} agents", agents.len())
                },
                allowed.whole_minutes()
            ),
        )
    } else {
        (
            Status::Fail,
            format!(
                "no word for more than {} minutes from {}",
                allowed.whole_minutes(),
                names.join(", ")
            ),
        )
    };
    let listed = names.join(", ");
    record(
        AGENT_SILENT,
        status,
        summary,
        evidence,
        &[("agents", &listed), ("tenant", tenant)],
        now,
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::domain::{HostFacts, ReportId, TenantId};

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);
    const INTERVAL: Duration = Duration::from_secs(300);

    fn agent(n: u128, host: &str, last_seen_minutes_ago: Option<i64>) -> Agent {
        Agent {
            id: AgentId(uuid::Uuid::from_u128(n)),
            tenant_id: TenantId(uuid::Uuid::from_u128(99)),
            host: HostFacts {
                hostname: host.to_owned(),
                os: "Windows Server 2022".to_owned(),
                agent_version: "0.1.0".to_owned(),
                domain_controller: String::new(),
            },
            enrolled_at: NOW - time::Duration::days(1),
            last_seen_at: last_seen_minutes_ago.map(|m| NOW - time::Duration::minutes(m)),
            revoked_at: None,
        }
    }

    fn result(
        agent: &Agent,
        check: &str,
        status: Status,
        evidence: serde_json::Value,
    ) -> LatestResult {
        LatestResult {
            agent_id: agent.id,
            report_id: ReportId(uuid::Uuid::from_u128(7)),
            result: ResultRecord {
                check_id: check.to_owned(),
                status,
                summary: String::new(),
                evidence,
                remediation: String::new(),
                duration_ms: 1,
                observed_at: NOW,
            },
        }
    }

    fn active(agent: &Agent, staging: Status) -> Vec<LatestResult> {
        vec![
            result(agent, STAGING_MODE, staging, json!({})),
            result(agent, WRITEBACK_ENABLED, Status::Pass, json!({})),
        ]
    }

    fn run(agents: &[Agent], latest: &[LatestResult]) -> BTreeMap<String, ResultRecord> {
        let fleet: Vec<FleetAgent<'_>> = agents
            .iter()
            .map(|agent| FleetAgent {
                agent,
                connected: false,
            })
            .collect();
        correlate("Contoso", &fleet, latest, INTERVAL, NOW)
            .into_iter()
            .map(|r| (r.check_id.clone(), r))
            .collect()
    }

    #[test]
    fn two_active_servers_fail() {
        let (a, b) = (agent(1, "SYNC01", Some(1)), agent(2, "SYNC02", Some(1)));
        let latest = [active(&a, Status::Pass), active(&b, Status::Pass)].concat();
        let r = &run(&[a.clone(), b.clone()], &latest)[SINGLE_ACTIVE_SERVER];
        assert_eq!(r.status, Status::Fail, "{}", r.summary);
        assert!(r.summary.contains("SYNC01, SYNC02"), "{}", r.summary);
        assert!(r.remediation.contains("SYNC01, SYNC02") && r.remediation.contains("Contoso"));

        // One of them in staging mode: one active server.
        let latest = [active(&a, Status::Pass), active(&b, Status::Fail)].concat();
        let r = &run(&[a.clone(), b.clone()], &latest)[SINGLE_ACTIVE_SERVER];
        assert_eq!(r.status, Status::Pass, "{}", r.summary);
        assert!(r.summary.contains("SYNC01 is the only"), "{}", r.summary);
        assert!(r.remediation.is_empty());

        // One unknown next to one active: cannot tell.
        let b = agent(2, "SYNC02", Some(1));
        let latest = active(&a, Status::Pass);
        let r = &run(&[a.clone(), b.clone()], &latest)[SINGLE_ACTIVE_SERVER];
        assert_eq!(r.status, Status::Error, "{}", r.summary);
        assert!(r.summary.contains("SYNC02"), "{}", r.summary);

        // A revoked agent no longer counts.
        let mut revoked = b.clone();
        revoked.revoked_at = Some(NOW);
        let latest = [active(&a, Status::Pass), active(&revoked, Status::Pass)].concat();
        let r = &run(&[a, revoked], &latest)[SINGLE_ACTIVE_SERVER];
        assert_eq!(r.status, Status::Pass, "{}", r.summary);

        // Nothing to compare without agents: no fleet results at all.
        assert!(run(&[], &[]).is_empty());
        // A single agent whose host could not be read: no second server to clash with.
        let r = &run(&[agent(5, "SYNC05", Some(1))], &[])[SINGLE_ACTIVE_SERVER];
        assert_eq!(r.status, Status::Pass, "{}", r.summary);
    }

    #[test]
    fn agents_that_disagree_about_the_pdc_warn() {
        let pdc =
            |domain: &str, pdc: &str| json!({ "domain": domain, "pdc": { "dns_host_name": pdc } });
        let (a, b, c) = (
            agent(1, "SYNC01", Some(1)),
            agent(2, "SYNC02", Some(1)),
            agent(3, "SYNC03", Some(1)),
        );
        let latest = vec![
            result(
                &a,
                PDC_EMULATOR,
                Status::Pass,
                pdc("contoso.com", "dc1.contoso.com"),
            ),
            result(
                &b,
                PDC_EMULATOR,
                Status::Pass,
                pdc("CONTOSO.com", "DC1.contoso.com."),
            ),
            result(
                &c,
                PDC_EMULATOR,
                Status::Pass,
                pdc("fabrikam.com", "dc9.fabrikam.com"),
            ),
        ];
        let r = &run(&[a.clone(), b.clone(), c.clone()], &latest)[PDC_AGREEMENT];
        assert_eq!(r.status, Status::Pass, "{}", r.summary);

        let latest = vec![
            result(
                &a,
                PDC_EMULATOR,
                Status::Pass,
                pdc("contoso.com", "dc1.contoso.com"),
            ),
            result(
                &b,
                PDC_EMULATOR,
                Status::Fail,
                pdc("contoso.com", "dc2.contoso.com"),
            ),
        ];
        let r = &run(&[a, b], &latest)[PDC_AGREEMENT];
        assert_eq!(r.status, Status::Warn, "{}", r.summary);
        assert!(
            r.summary
                .contains("SYNC01 say dc1.contoso.com but SYNC02 say dc2.contoso.com"),
            "{}",
            r.summary
        );
        assert!(
            r.remediation.contains("contoso.com") && r.remediation.contains("netdom query fsmo")
        );
        assert_eq!(run(&[c], &[])[PDC_AGREEMENT].status, Status::NotApplicable);
    }

    #[test]
    fn a_silent_agent_fails_naming_it() {
        let fresh = agent(1, "SYNC01", Some(14));
        let stale = agent(2, "SYNC02", Some(16));
        let never = agent(3, "SYNC03", None);
        let r = &run(std::slice::from_ref(&fresh), &[])[AGENT_SILENT];
        assert_eq!(r.status, Status::Pass, "{}", r.summary);
        let r = &run(&[fresh.clone(), stale.clone(), never], &[])[AGENT_SILENT];
        assert_eq!(r.status, Status::Fail, "{}", r.summary);
        assert!(
            r.summary
                .contains("SYNC02 (last heard at 2026-11-25T11:44:00Z)")
                && r.summary.contains("SYNC03 (never reported")
                && !r.summary.contains("SYNC01"),
            "{}",
            r.summary
        );
        assert!(r.remediation.contains("SYNC02"));
        // Connected agents heartbeat: one heard from recently passes, one that looks connected
        // but was not heard from for three intervals is behind a half-open connection.
        let fleet = [FleetAgent {
            agent: &fresh,
            connected: true,
        }];
        let r = correlate("Contoso", &fleet, &[], INTERVAL, NOW);
        assert_eq!(r[2].status, Status::Pass, "{}", r[2].summary);
        let fleet = [FleetAgent {
            agent: &stale,
            connected: true,
        }];
        let r = correlate("Contoso", &fleet, &[], INTERVAL, NOW);
        assert_eq!(r[2].status, Status::Fail, "{}", r[2].summary);
        assert!(
            r[2].summary.contains("SYNC02 (last heard at 2026-11-25T11:44:00Z; its connection looks open but is silent)"),
            "{}",
            r[2].summary
        );
    }
}

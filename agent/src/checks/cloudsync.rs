//! Cloud Sync agent host checks (the local parts of CS-01, CS-02 and CS-05): the Microsoft
//! Entra provisioning agent's version, services, TLS 1.2 values and proxy configuration.
//!
//! On a host without the provisioning agent they are `not_applicable`: that is observed, not
//! assumed (the file and the services were read and are absent).

use serde_json::json;
use wbhealth_catalogue::{Status, render};

use super::Verdict;
use super::server::{
    Host, Version, audit_registry, default_proxy, finish, host_facts, unreadable, verdict,
};
use crate::facts::Facts;
use crate::host::snapshot::{Service, Snapshot, paths};
use crate::result::CheckOutcome;

/// CS-01.
pub const AGENT_VERSION: &str = "server.cloudsync_agent_version";
/// CS-02.
pub const AGENT_SERVICES: &str = "server.cloudsync_agent_services";
/// CS-05 (local part).
pub const AGENT_NETWORK_CONFIG: &str = "server.cloudsync_agent_network_config";

/// The first agent build that writes passwords back [S4].
const MINIMUM: Version = Version::new(1, 1, 977, 0);

/// The agent's services by display name, current and earlier names.
const SERVICES: &[(&str, &[&str])] = &[
    (
        "Microsoft Entra Provisioning Agent",
        &[
            "Microsoft Entra Provisioning Agent",
            "Microsoft Azure AD Connect Provisioning Agent",
        ],
    ),
    (
        "Microsoft Entra Connect Agent Updater",
        &[
            "Microsoft Entra Connect Agent Updater",
            "Microsoft Azure AD Connect Agent Updater",
        ],
    ),
];

/// The [S24] subset of the TLS 1.2 values.
const TLS_VALUES: &[(&str, &str, u64)] = &[
    (paths::TLS12_CLIENT, "Enabled", 1),
    (paths::TLS12_CLIENT, "DisabledByDefault", 0),
    (paths::TLS12_SERVER, "Enabled", 1),
    (paths::TLS12_SERVER, "DisabledByDefault", 0),
    (paths::DOTNET_64, "SchUseStrongCrypto", 1),
    (paths::DOTNET_32, "SchUseStrongCrypto", 1),
];

fn agent_service<'a>(snap: &'a Snapshot, names: &[&str]) -> Result<Option<&'a Service>, String> {
    let services = snap
        .services
        .as_result()
        .map_err(|e| format!("services: {e}"))?;
    Ok(services
        .0
        .iter()
        .find(|s| names.iter().any(|n| s.display_name.eq_ignore_ascii_case(n))))
}

/// Whether the provisioning agent is installed: its executable or its service exists.
pub(super) fn agent_installed(snap: &Snapshot) -> Result<bool, String> {
    let file = snap.file(paths::PROVISIONING_AGENT_EXE);
    let service = agent_service(snap, SERVICES[0].1);
    match (file, service) {
        (Ok(Some(_)), _) | (_, Ok(Some(_))) => Ok(true),
        (Ok(None), Ok(None)) => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Runs `body` on a Cloud Sync agent host; `not_applicable` elsewhere.
fn with_agent(
    id: &'static str,
    facts: &Facts,
    body: impl FnOnce(&Host<'_>) -> Verdict,
) -> CheckOutcome {
    let verdict = match host_facts(facts) {
        Err(v) => v,
        Ok(host) => match agent_installed(host.snap) {
            Err(e) => unreadable(
                &host,
                "whether the Cloud Sync provisioning agent is installed",
                &e,
            ),
            Ok(false) => verdict(
                Status::NotApplicable,
                format!("no Cloud Sync provisioning agent on {}", host.server),
                json!({ "agent_exe": paths::PROVISIONING_AGENT_EXE, "installed": false }),
                String::new(),
            ),
            Ok(true) => body(&host),
        },
    };
    finish(id, facts, verdict)
}

/// CS-01: the agent is 1.1.977.0 or later.
pub fn agent_version(facts: &Facts) -> CheckOutcome {
    with_agent(AGENT_VERSION, facts, |host| {
        let def = super::def(AGENT_VERSION);
        let found = match host.snap.file(paths::PROVISIONING_AGENT_EXE) {
            Err(e) => return unreadable(host, "the provisioning agent's version", &e),
            Ok(None) => {
                return unreadable(
                    host,
                    "the provisioning agent's version",
                    "AADConnectProvisioningAgent.exe is missing although the service exists",
                );
            }
            Ok(Some(f)) => f.file_version.clone().unwrap_or_default(),
        };
        let Some(version) = Version::parse(&found) else {
            return unreadable(
                host,
                "the provisioning agent's version",
                &format!("not a version: {found:?}"),
            );
        };
        let shown = version.to_string();
        let evidence = json!({ "file": paths::PROVISIONING_AGENT_EXE, "version": shown, "minimum": MINIMUM.to_string() });
        if version >= MINIMUM {
            verdict(
                Status::Pass,
                format!("the provisioning agent on {} is {shown}", host.server),
                evidence,
                String::new(),
            )
        } else {
            verdict(
                Status::Fail,
                format!(
                    "the provisioning agent on {} is {shown}, older than {MINIMUM}, the first that writes passwords back",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("version", &shown)],
                ),
            )
        }
    })
}

/// CS-02: both agent services run.
pub fn agent_services(facts: &Facts) -> CheckOutcome {
    with_agent(AGENT_SERVICES, facts, |host| {
        let def = super::def(AGENT_SERVICES);
        let mut rows = Vec::new();
        let mut stopped = Vec::new();
        for (label, names) in SERVICES {
            match agent_service(host.snap, names) {
                Err(e) => return unreadable(host, "the services", &e),
                Ok(None) => {
                    rows.push(json!({ "service": label, "status": "not installed" }));
                    stopped.push(format!("{label} (not installed)"));
                }
                Ok(Some(s)) => {
                    rows.push(json!({ "service": label, "name": s.name, "status": s.status, "start_type": s.start_type }));
                    if s.status != "Running" {
                        stopped.push(format!("{label} ({})", s.status));
                    }
                }
            }
        }
        let evidence = json!({ "services": rows });
        if stopped.is_empty() {
            verdict(
                Status::Pass,
                format!(
                    "the provisioning agent services on {} are running",
                    host.server
                ),
                evidence,
                String::new(),
            )
        } else {
            let list = stopped.join(", ");
            verdict(
                Status::Fail,
                format!(
                    "provisioning agent services not running on {}: {list}",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("services", &list)],
                ),
            )
        }
    })
}

/// CS-05: TLS 1.2 values set, and the agent's own config carries the proxy machine.config has.
pub fn agent_network_config(facts: &Facts) -> CheckOutcome {
    with_agent(AGENT_NETWORK_CONFIG, facts, |host| {
        let def = super::def(AGENT_NETWORK_CONFIG);
        let audit = match audit_registry(host.snap, TLS_VALUES) {
            Err(e) => return unreadable(host, "the TLS 1.2 registry values", &e),
            Ok(a) => a,
        };
        let machine = match host.snap.config_file(paths::MACHINE_CONFIG) {
            Ok(Some(f)) => default_proxy(&f.text),
            _ => None,
        };
        let agent = match host.snap.config_file(paths::PROVISIONING_AGENT_CONFIG) {
            Err(e) => return unreadable(host, "AADConnectProvisioningAgent.exe.config", &e),
            Ok(Some(f)) => default_proxy(&f.text),
            Ok(None) => None,
        };
        let mut problems: Vec<String> = audit
            .wrong
            .iter()
            .chain(&audit.missing)
            .map(|v| format!("set {v}"))
            .collect();
        let machine_proxy = machine.as_ref().filter(|p| p.routes_through_proxy());
        let agent_proxy = agent.as_ref().filter(|p| p.routes_through_proxy());
        if let (Some(m), None) = (machine_proxy, agent_proxy) {
            problems.push(format!(
                "machine.config routes .NET through {} but AADConnectProvisioningAgent.exe.config has no proxy",
                m.proxy_address.as_deref().unwrap_or("a proxy")
            ));
        }
        let evidence = json!({
            "tls_values": audit.evidence,
            "machine_config_default_proxy": machine,
            "agent_config_default_proxy": agent,
        });
        if problems.is_empty() {
            verdict(
                Status::Pass,
                format!(
                    "TLS 1.2 and the proxy are configured for the provisioning agent on {}",
                    host.server
                ),
                evidence,
                String::new(),
            )
        } else {
            let detail = problems.join("; ");
            verdict(
                Status::Fail,
                format!(
                    "the provisioning agent on {} is not configured for its network: {detail}",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("detail", &detail)],
                ),
            )
        }
    })
}

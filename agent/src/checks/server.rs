//! Sync server checks (SRV-01…SRV-13, NET-05, NET-06, OBJ-01, OBJ-04): the host facts of the
//! Entra Connect server, read live on Windows or from a host snapshot.
//!
//! Every age is measured from the snapshot's `collected_at`, so a snapshot analysed a week
//! later gives the verdict it would have given on the day. The helpers here are shared with
//! the event-log and Cloud Sync checks.

use std::fmt;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;
use wbhealth_catalogue::{CheckDef, Status, render};

use super::{Verdict, def, events};
use crate::facts::Facts;
use crate::host::snapshot::{Collected, Snapshot, paths};
use crate::host::{HostFacts, HostFailure, connector_accounts_of};
use crate::result::CheckOutcome;

/// SRV-01.
pub const ADSYNC_SERVICE: &str = "server.adsync_service";
/// SRV-02.
pub const WRITEBACK_ENABLED: &str = "server.writeback_enabled";
/// SRV-03.
pub const STAGING_MODE: &str = "server.staging_mode";
/// SRV-07.
pub const CONNECT_VERSION: &str = "server.connect_version";
/// SRV-08.
pub const AUTO_UPGRADE: &str = "server.auto_upgrade";
/// SRV-09.
pub const DOTNET_VERSION: &str = "server.dotnet_version";
/// SRV-10.
pub const OS_SUPPORT: &str = "server.os_support";
/// SRV-11.
pub const CLOCK_SKEW: &str = "server.clock_skew";
/// SRV-12.
pub const CONNECT_ON_DC: &str = "server.connect_on_dc";
/// SRV-13.
pub const RESTRICT_REMOTE_SAM: &str = "server.restrict_remote_sam";
/// SRV-14.
pub const IMPERSONATE_PRIVILEGE: &str = "server.impersonate_privilege";
/// NET-05.
pub const DOTNET_PROXY: &str = "server.dotnet_proxy";
/// NET-06.
pub const TLS12_REGISTRY: &str = "server.tls_registry";
/// OBJ-01.
pub const INITIAL_SYNC: &str = "server.initial_sync";
/// OBJ-04 (its local part).
pub const SYNC_SCHEDULER: &str = "server.sync_scheduler";

/// The host facts a check works on, and the server's name for the texts.
pub(super) struct Host<'a> {
    /// Where the facts came from.
    pub facts: &'a HostFacts,
    /// What was read.
    pub snap: &'a Snapshot,
    /// The sync server's name.
    pub server: &'a str,
}

impl Host<'_> {
    /// `collected_at`: "now" for every age.
    pub fn now(&self) -> OffsetDateTime {
        self.snap.collected_at
    }
}

/// The host facts, or the `error` verdict saying how to get them.
pub(super) fn host_facts(facts: &Facts) -> Result<Host<'_>, Verdict> {
    match &facts.host {
        Ok(host) => Ok(Host {
            facts: host,
            snap: &host.snapshot,
            server: host.computer_name(&facts.host_name),
        }),
        Err(failure) => Err(host_unavailable(failure)),
    }
}

fn host_unavailable(failure: &HostFailure) -> Verdict {
    Verdict {
        status: Status::Error,
        summary: failure.to_string(),
        evidence: json!({ "host_probe": failure }),
        remediation: "Run wbhealth-agent diagnose on the Entra Connect sync server itself, or there run `wbhealth-agent collect --output host-snapshot.json` \
and analyse the file on any machine with `wbhealth-agent diagnose --snapshot host-snapshot.json`."
            .to_owned(),
    }
}

/// The `error` verdict of a host check whose item could not be read.
pub(super) fn unreadable(host: &Host<'_>, what: &str, reason: &str) -> Verdict {
    Verdict {
        status: Status::Error,
        summary: format!("could not read {what}: {reason}"),
        evidence: json!({ "source": host.facts.source, "unreadable": what, "error": reason }),
        remediation: format!(
            "On {}, run wbhealth-agent as a local administrator (the registry, the ADSync cmdlets and the event log need it) so that it can read {what}: {reason}",
            host.server
        ),
    }
}

/// The host facts of a check that only concerns Entra Connect Sync: `not_applicable` on a
/// host where it is not installed at all (a Cloud Sync agent host), which
/// `server.adsync_service` reports as a failure when nothing is installed.
pub(super) fn connect_host(facts: &Facts) -> Result<Host<'_>, Verdict> {
    let host = host_facts(facts)?;
    if connect_installed(host.snap) == Ok(false) {
        return Err(Verdict {
            status: Status::NotApplicable,
            summary: format!(
                "Entra Connect Sync is not installed on {} (no ADSync service, no miiserver.exe)",
                host.server
            ),
            evidence: json!({ "source": host.facts.source, "adsync_service": null, "miiserver_exe": null }),
            remediation: String::new(),
        });
    }
    Ok(host)
}

/// Whether Entra Connect Sync is installed: the ADSync service or miiserver.exe exists.
pub(super) fn connect_installed(snap: &Snapshot) -> Result<bool, String> {
    let service = snap.service("ADSync");
    let file = snap.file(paths::MIISERVER_EXE);
    match (service, file) {
        (Ok(Some(_)), _) | (_, Ok(Some(_))) => Ok(true),
        (Ok(None), Ok(None)) => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// A time as RFC 3339, the way the evidence shows times.
pub(super) fn stamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A verdict.
pub(super) fn verdict(
    status: Status,
    summary: impl Into<String>,
    evidence: Value,
    remediation: String,
) -> Verdict {
    Verdict {
        status,
        summary: summary.into(),
        evidence,
        remediation,
    }
}

/// Attaches the host probe's timing.
pub(super) fn finish(id: &str, facts: &Facts, verdict: Verdict) -> CheckOutcome {
    verdict.into_outcome(def(id), facts, facts.durations.host)
}

/// Runs `body` on the host facts, or reports why there are none.
fn with_host(
    id: &str,
    facts: &Facts,
    connect_only: bool,
    body: impl FnOnce(&Host<'_>, &'static CheckDef) -> Verdict,
) -> CheckOutcome {
    let host = if connect_only {
        connect_host(facts)
    } else {
        host_facts(facts)
    };
    let verdict = match host {
        Ok(host) => body(&host, def(id)),
        Err(verdict) => verdict,
    };
    finish(id, facts, verdict)
}

/// A dotted four-part version, such as `2.5.79.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Version([u32; 4]);

impl Version {
    /// Parses the leading `a.b[.c[.d]]` of `text` (file versions may carry a suffix).
    pub fn parse(text: &str) -> Option<Version> {
        let head = text.split_whitespace().next()?;
        let mut parts = [0u32; 4];
        let mut count = 0;
        for (i, part) in head.split('.').enumerate() {
            if i >= 4 {
                return None;
            }
            parts[i] = part.parse().ok()?;
            count += 1;
        }
        (count >= 2).then_some(Version(parts))
    }

    /// A version from its parts.
    pub const fn new(a: u32, b: u32, c: u32, d: u32) -> Version {
        Version([a, b, c, d])
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

// ---------------------------------------------------------------------------------------
// SRV-01

/// SRV-01: the ADSync service is running and starts automatically.
pub fn adsync_service(facts: &Facts) -> CheckOutcome {
    with_host(ADSYNC_SERVICE, facts, false, |host, def| {
        let service = match host.snap.service("ADSync") {
            Err(e) => return unreadable(host, "the services", &e),
            Ok(service) => service,
        };
        let Some(service) = service else {
            if super::cloudsync::agent_installed(host.snap) == Ok(true) {
                return verdict(
                    Status::NotApplicable,
                    format!(
                        "{} is a Cloud Sync agent host without Entra Connect Sync",
                        host.server
                    ),
                    json!({ "adsync_service": null }),
                    String::new(),
                );
            }
            return verdict(
                Status::Fail,
                format!(
                    "no ADSync service on {}: Entra Connect Sync is not installed",
                    host.server
                ),
                json!({ "adsync_service": null }),
                render(
                    def.remediation,
                    &[
                        ("server", host.server),
                        ("state", "not installed"),
                        ("start_type", "none"),
                    ],
                ),
            );
        };
        let evidence = json!({
            "service": service.name, "display_name": service.display_name,
            "status": service.status, "start_type": service.start_type,
        });
        let vars = [
            ("server", host.server),
            ("state", service.status.as_str()),
            ("start_type", service.start_type.as_str()),
        ];
        let running = service.status == "Running";
        let automatic = service.start_type.starts_with("Automatic");
        if !running {
            verdict(
                Status::Fail,
                format!(
                    "the ADSync service on {} is {}: writeback requests are not answered",
                    host.server, service.status
                ),
                evidence,
                render(def.remediation, &vars),
            )
        } else if !automatic {
            verdict(
                Status::Warn,
                format!(
                    "the ADSync service on {} runs but starts {}: it will not come back after a reboot",
                    host.server, service.start_type
                ),
                evidence,
                render(def.remediation, &vars),
            )
        } else {
            verdict(
                Status::Pass,
                format!(
                    "the ADSync service on {} is running and starts automatically",
                    host.server
                ),
                evidence,
                String::new(),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// SRV-02, SRV-03

/// SRV-02: `Get-ADSyncAADPasswordResetConfiguration` reports `Enabled`.
pub fn writeback_enabled(facts: &Facts) -> CheckOutcome {
    with_host(WRITEBACK_ENABLED, facts, true, |host, def| {
        let configs = match host.snap.adsync.password_reset_configuration.as_result() {
            Err(e) => return unreadable(host, "Get-ADSyncAADPasswordResetConfiguration", e),
            Ok(configs) => &configs.0,
        };
        let evidence = json!({ "password_reset_configuration": configs });
        if configs.is_empty() {
            return verdict(
                Status::Error,
                "no Entra connector found, so writeback could not be asked about",
                evidence,
                format!(
                    "On {}, check that Get-ADSyncConnector lists the Entra connector (SubType 'Windows Azure Active Directory (Microsoft)').",
                    host.server
                ),
            );
        }
        if let Some(enabled) = configs.iter().find(|c| c.enabled) {
            return verdict(
                Status::Pass,
                format!(
                    "password writeback is enabled on the Entra connector {}",
                    enabled.connector_name
                ),
                evidence,
                String::new(),
            );
        }
        let aad = configs[0].connector_name.as_str();
        verdict(
            Status::Fail,
            format!(
                "password writeback is not enabled in Entra Connect on {} (connector {aad})",
                host.server
            ),
            evidence,
            render(
                def.remediation,
                &[("server", host.server), ("aad_connector", aad)],
            ),
        )
    })
}

/// SRV-03: `Get-ADSyncScheduler` reports `StagingModeEnabled` False.
pub fn staging_mode(facts: &Facts) -> CheckOutcome {
    with_host(STAGING_MODE, facts, true, |host, def| {
        let scheduler = match host.snap.adsync.scheduler.as_result() {
            Err(e) => return unreadable(host, "Get-ADSyncScheduler", e),
            Ok(s) => s,
        };
        let evidence = json!({ "StagingModeEnabled": scheduler.staging_mode_enabled });
        if scheduler.staging_mode_enabled {
            verdict(
                Status::Fail,
                format!(
                    "{} is in staging mode: it does not write passwords back (fine only for a standby server)",
                    host.server
                ),
                evidence,
                render(def.remediation, &[("server", host.server)]),
            )
        } else {
            verdict(
                Status::Pass,
                format!("{} is not in staging mode", host.server),
                evidence,
                String::new(),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// SRV-07, SRV-08

/// When every sync service of builds below 2.5.79.0 stops [S9].
const MANDATORY_2_5_79_DEADLINE: OffsetDateTime = datetime!(2026-09-30 0:00 UTC);

/// SRV-07: the Connect build against the retirement rules.
pub fn connect_version(facts: &Facts) -> CheckOutcome {
    with_host(CONNECT_VERSION, facts, true, |host, def| {
        let file = host.snap.file(paths::MIISERVER_EXE);
        let file_version = match &file {
            Ok(Some(f)) => f.file_version.as_deref().and_then(Version::parse),
            _ => None,
        };
        let config = match host.snap.adsync.global_settings.as_result() {
            Ok(settings) => Ok(settings
                .parameters
                .text("Microsoft.Synchronize.ServerConfigurationVersion")),
            Err(e) => Err(e.to_owned()),
        };
        let config_version = config
            .as_ref()
            .ok()
            .and_then(|v| v.as_deref())
            .and_then(Version::parse);
        let evidence = json!({
            "miiserver_file_version": file_version.map(|v| v.to_string()),
            "server_configuration_version": config_version.map(|v| v.to_string()),
            "collected_at": stamp(host.now()),
            "not_evaluated": "whether a 2.x build was superseded more than 12 months ago (needs Microsoft's release table)",
        });
        let Some(version) = config_version.or(file_version) else {
            let reason = match (&file, &config) {
                (Err(e), _) => e.clone(),
                (_, Err(e)) => format!("Get-ADSyncGlobalSettings: {e}"),
                _ => "neither miiserver.exe nor Get-ADSyncGlobalSettings gave a version".to_owned(),
            };
            return unreadable(host, "the Entra Connect version", &reason);
        };
        let shown = version.to_string();
        let vars = [("server", host.server), ("version", shown.as_str())];
        let fail = |summary: String| {
            verdict(
                Status::Fail,
                summary,
                evidence.clone(),
                render(def.remediation, &vars),
            )
        };
        if version <= Version::new(1, 0, 8641, 0) {
            return fail(format!(
                "Entra Connect {shown} on {}: writeback stopped working when Azure ACS retired on 2018-11-07",
                host.server
            ));
        }
        if version < Version::new(1, 1, 443, 0) {
            return fail(format!(
                "Entra Connect {shown} on {} predates the writeback endpoints Microsoft documents (1.1.443.0)",
                host.server
            ));
        }
        if version < Version::new(2, 0, 0, 0) {
            return fail(format!(
                "Entra Connect {shown} on {} is V1, retired on 2022-08-31; its sync stopped on 2023-10-01",
                host.server
            ));
        }
        if version < Version::new(2, 5, 79, 0) {
            if host.now() >= MANDATORY_2_5_79_DEADLINE {
                return fail(format!(
                    "Entra Connect {shown} on {} is below 2.5.79.0: all its sync services stopped on 2026-09-30",
                    host.server
                ));
            }
            return verdict(
                Status::Warn,
                format!(
                    "Entra Connect {shown} on {} is below 2.5.79.0: all its sync services stop on 2026-09-30",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            );
        }
        if let (Some(installed), Some(configured)) = (file_version, config_version)
            && installed != configured
        {
            return verdict(
                Status::Warn,
                format!(
                    "Entra Connect on {} is partly upgraded: miiserver.exe is {installed} but the configuration is {configured}",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            );
        }
        verdict(
            Status::Pass,
            format!("Entra Connect {shown} on {} is supported", host.server),
            evidence,
            String::new(),
        )
    })
}

/// SRV-08: automatic upgrade is enabled.
pub fn auto_upgrade(facts: &Facts) -> CheckOutcome {
    with_host(AUTO_UPGRADE, facts, true, |host, def| {
        let state = match host.snap.adsync.auto_upgrade.as_result() {
            Err(e) => return unreadable(host, "Get-ADSyncAutoUpgrade", e),
            Ok(state) => state.as_str(),
        };
        let reason = match host.snap.adsync.global_settings.as_result() {
            Ok(g) => g
                .parameters
                .text("Microsoft.OptionalFeature.AutoUpgradeSuspensionReason"),
            Err(_) => None,
        };
        let evidence = json!({ "auto_upgrade": state, "suspension_reason": reason });
        match state {
            "Enabled" => verdict(
                Status::Pass,
                format!("automatic upgrade is enabled on {}", host.server),
                evidence,
                String::new(),
            ),
            "Disabled" | "Suspended" => {
                let because = reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                verdict(
                    Status::Warn,
                    format!(
                        "automatic upgrade is {} on {}{because}: the server will drift into a retired version",
                        state.to_lowercase(),
                        host.server
                    ),
                    evidence,
                    render(
                        def.remediation,
                        &[
                            ("server", host.server),
                            ("state", state),
                            ("reason", &because),
                        ],
                    ),
                )
            }
            other => unreadable(
                host,
                "Get-ADSyncAutoUpgrade",
                &format!("unexpected state {other:?}"),
            ),
        }
    })
}

// ---------------------------------------------------------------------------------------
// SRV-09, SRV-10, SRV-11, SRV-12

/// The .NET Framework version a `Release` value stands for [A8].
fn dotnet_name(release: u64) -> &'static str {
    match release {
        533_320.. => "4.8.1",
        528_040.. => "4.8",
        461_808.. => "4.7.2",
        461_308.. => "4.7.1",
        460_798.. => "4.7",
        394_802.. => "4.6.2",
        _ => "older than 4.6.2",
    }
}

/// SRV-09: .NET Framework 4.8 or later.
pub fn dotnet_version(facts: &Facts) -> CheckOutcome {
    with_host(DOTNET_VERSION, facts, false, |host, def| {
        let release = match host.snap.registry_value(paths::NDP_V4_FULL, "Release") {
            Err(e) => return unreadable(host, "the .NET Framework version", &e),
            Ok(v) => v.and_then(Value::as_u64),
        };
        let Some(release) = release else {
            return verdict(
                Status::Fail,
                format!(
                    "{} has no .NET Framework 4.5 or later (no Release value under {})",
                    host.server,
                    paths::NDP_V4_FULL
                ),
                json!({ "key": paths::NDP_V4_FULL, "Release": null }),
                render(
                    def.remediation,
                    &[("server", host.server), ("dotnet", "none")],
                ),
            );
        };
        let name = dotnet_name(release);
        let shown = format!(".NET Framework {name} (Release {release})");
        let evidence = json!({ "key": paths::NDP_V4_FULL, "Release": release, "version": name });
        let vars = [("server", host.server), ("dotnet", shown.as_str())];
        if release >= 528_040 {
            verdict(
                Status::Pass,
                format!("{} has {shown}", host.server),
                evidence,
                String::new(),
            )
        } else if release >= 461_808 {
            verdict(
                Status::Warn,
                format!(
                    "{} has {shown}; Microsoft asks for 4.8 or later",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            )
        } else {
            verdict(
                Status::Fail,
                format!(
                    "{} has {shown}; current Entra Connect builds need 4.7.2 or later",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            )
        }
    })
}

/// SRV-10: a supported Windows Server.
pub fn os_support(facts: &Facts) -> CheckOutcome {
    with_host(OS_SUPPORT, facts, false, |host, def| {
        let key = match host.snap.registry_key(paths::WINDOWS_NT_CURRENT_VERSION) {
            Err(e) => return unreadable(host, "the Windows version", &e),
            Ok(None) => {
                return unreadable(
                    host,
                    "the Windows version",
                    "the CurrentVersion key is missing",
                );
            }
            Ok(Some(key)) => key,
        };
        let text = |name: &str| {
            key.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let product = text("ProductName");
        let installation = text("InstallationType");
        let build: u32 = text("CurrentBuild").parse().unwrap_or(0);
        let evidence = json!({ "ProductName": product, "CurrentBuild": build, "InstallationType": installation });
        let release = match build {
            14_393 => Some("Windows Server 2016"),
            17_763 => Some("Windows Server 2019"),
            20_348 => Some("Windows Server 2022"),
            26_100 => Some("Windows Server 2025"),
            _ => None,
        };
        let os = format!("{product} (build {build}, {installation})");
        let vars = [("server", host.server), ("os", os.as_str())];
        let warn = |summary: String| {
            verdict(
                Status::Warn,
                summary,
                evidence.clone(),
                render(def.remediation, &vars),
            )
        };
        if installation.eq_ignore_ascii_case("Server Core") {
            return warn(format!(
                "{} runs Server Core ({product}), which Entra Connect does not support",
                host.server
            ));
        }
        if !installation.eq_ignore_ascii_case("Server") {
            return warn(format!("{} runs {os}, not Windows Server", host.server));
        }
        match release {
            Some("Windows Server 2025") => warn(format!(
                "{} runs Windows Server 2025, unsupported for Entra Connect and with a known sync issue unless KB5070773 or later is installed",
                host.server
            )),
            Some(name) => verdict(
                Status::Pass,
                format!("{} runs {name}, supported for Entra Connect", host.server),
                evidence,
                String::new(),
            ),
            None => warn(format!(
                "{} runs {os}, not one of the supported Windows Server 2016, 2019 or 2022",
                host.server
            )),
        }
    })
}

/// Parses the reference time: RFC 3339 or the `Date` header's RFC 1123 form.
fn parse_reference_time(text: &str) -> Option<OffsetDateTime> {
    if let Some(t) = crate::host::snapshot::parse_ps_date(text) {
        return Some(t);
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// `45 seconds`, `7 minutes`, `3 hours`.
pub(super) fn human_seconds(seconds: u64) -> String {
    let (n, unit) = match seconds {
        0..120 => (seconds, "second"),
        120..7_200 => (seconds / 60, "minute"),
        7_200..172_800 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// SRV-11: the clock is within 60 s of Microsoft's (warn), 5 minutes (fail).
pub fn clock_skew(facts: &Facts) -> CheckOutcome {
    with_host(CLOCK_SKEW, facts, false, |host, def| {
        let clock = match host.snap.clock.as_result() {
            Err(e) => return unreadable(host, "the clock", e),
            Ok(c) => c,
        };
        let reference = match clock.reference_utc.as_result() {
            Err(e) => {
                return unreadable(
                    host,
                    &format!("the reference time from {}", clock.reference),
                    e,
                );
            }
            Ok(r) => r,
        };
        let Some(reference_time) = parse_reference_time(reference) else {
            return unreadable(
                host,
                "the reference time",
                &format!("not a time: {reference:?}"),
            );
        };
        let skew = (clock.local_utc - reference_time).whole_seconds();
        let evidence = json!({
            "local_utc": stamp(clock.local_utc), "reference_utc": stamp(reference_time),
            "reference": clock.reference, "skew_seconds": skew,
        });
        let shown = human_seconds(skew.unsigned_abs());
        let direction = if skew >= 0 { "ahead of" } else { "behind" };
        let vars = [
            ("server", host.server),
            ("skew", shown.as_str()),
            ("direction", direction),
        ];
        match skew.unsigned_abs() {
            0..=60 => verdict(
                Status::Pass,
                format!(
                    "the clock of {} is within {shown} of Microsoft's",
                    host.server
                ),
                evidence,
                String::new(),
            ),
            61..=300 => verdict(
                Status::Warn,
                format!(
                    "the clock of {} is {shown} {direction} Microsoft's",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            ),
            _ => verdict(
                Status::Fail,
                format!(
                    "the clock of {} is {shown} {direction} Microsoft's: tokens for the writeback service are refused",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            ),
        }
    })
}

/// SRV-12: Connect is not on a domain controller.
pub fn connect_on_dc(facts: &Facts) -> CheckOutcome {
    with_host(CONNECT_ON_DC, facts, true, |host, def| {
        let role = host.snap.computer.as_result().map(|c| c.domain_role);
        let product_type = host
            .snap
            .registry_value(paths::PRODUCT_OPTIONS, "ProductType");
        let product_type = match &product_type {
            Ok(Some(Value::String(s))) => Some(s.as_str()),
            _ => None,
        };
        if role.is_err() && product_type.is_none() {
            let reason = role.err().unwrap_or("no DomainRole");
            return unreadable(host, "the domain role", reason);
        }
        let evidence = json!({ "DomainRole": role.ok(), "ProductType": product_type });
        let is_dc = matches!(role, Ok(4 | 5))
            || product_type.is_some_and(|p| p.eq_ignore_ascii_case("LanmanNt"));
        if is_dc {
            let connector = connector_accounts_of(host.snap)
                .first()
                .map_or_else(|| "the AD connector".to_owned(), |a| a.connector.clone());
            verdict(
                Status::Warn,
                format!(
                    "Entra Connect runs on the domain controller {}: writeback may fail with SSPR_0029",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("connector", &connector)],
                ),
            )
        } else {
            verdict(
                Status::Pass,
                format!(
                    "{} is a member server, not a domain controller",
                    host.server
                ),
                evidence,
                String::new(),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// SRV-13

/// SDDL aliases of groups that contain every domain account, so an allow ACE for them
/// admits the connector account.
const BROAD_TRUSTEES: &[(&str, &str)] = &[
    ("WD", "S-1-1-0"),
    ("AU", "S-1-5-11"),
    ("BU", "S-1-5-32-545"),
    ("DU", "Domain Users"),
];
/// SDDL aliases of administrators and the system: the connector account is in none of them.
const ADMIN_TRUSTEES: &[&str] = &["BA", "SY", "S-1-5-32-544", "S-1-5-18", "DA", "EA", "LA"];

/// The trustees of the allow ACEs of an SDDL's DACL.
fn sddl_allowed_trustees(sddl: &str) -> Vec<String> {
    let dacl = sddl.split_once("D:").map_or("", |(_, d)| d);
    let dacl = dacl.split("S:").next().unwrap_or(dacl);
    dacl.split('(')
        .filter_map(|ace| ace.split(')').next())
        .filter_map(|ace| {
            let fields: Vec<&str> = ace.split(';').collect();
            (fields.len() == 6 && fields[0] == "A").then(|| fields[5].trim().to_owned())
        })
        .collect()
}

/// SRV-13: RestrictRemoteSam, when set, allows the connector account.
pub fn restrict_remote_sam(facts: &Facts) -> CheckOutcome {
    with_host(RESTRICT_REMOTE_SAM, facts, true, |host, def| {
        let value = match host.snap.registry_value(paths::LSA, "RestrictRemoteSam") {
            Err(e) => return unreadable(host, "RestrictRemoteSam", &e),
            Ok(v) => v.and_then(Value::as_str),
        };
        let accounts = connector_accounts_of(host.snap);
        let account = accounts.first();
        let account_name = account.map_or_else(
            || "the AD DS connector account (MSOL_…)".to_owned(),
            |a| a.qualified(),
        );
        let sid = account.and_then(|a| a.sid.clone());
        let vars = [("server", host.server), ("account", account_name.as_str())];
        let hits = events::owned_events(host, RESTRICT_REMOTE_SAM);
        let recent = hits.iter().filter(|e| events::is_recent(host, e)).count();
        let mut evidence = json!({
            "key": paths::LSA, "RestrictRemoteSam": value, "connector_account": account_name, "connector_sid": sid,
            "events_admaexport_2944": events::evidence_list(&hits),
        });
        if recent > 0 {
            return verdict(
                Status::Fail,
                format!(
                    "{recent} recent 6329 event(s) say \"admaexport.cpp(2944): Failed to acquire user information … ERROR_ACCESS_DENIED\": RestrictRemoteSam on {} or on the DCs blocks {account_name}",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            );
        }
        let Some(sddl) = value else {
            return verdict(
                Status::Pass,
                format!("RestrictRemoteSam is not set on {}", host.server),
                evidence,
                String::new(),
            );
        };
        let trustees = sddl_allowed_trustees(sddl);
        evidence["allowed_trustees"] = json!(trustees);
        let broad = trustees.iter().find(|t| {
            BROAD_TRUSTEES
                .iter()
                .any(|(alias, sid)| t.eq_ignore_ascii_case(alias) || t.eq_ignore_ascii_case(sid))
                || t.ends_with("-513")
        });
        if let Some(group) = broad {
            return verdict(
                Status::Pass,
                format!(
                    "RestrictRemoteSam on {} allows {group}, which includes {account_name}",
                    host.server
                ),
                evidence,
                String::new(),
            );
        }
        if let Some(sid) = &sid
            && trustees.iter().any(|t| t.eq_ignore_ascii_case(sid))
        {
            return verdict(
                Status::Pass,
                format!(
                    "RestrictRemoteSam on {} allows {account_name} ({sid})",
                    host.server
                ),
                evidence,
                String::new(),
            );
        }
        let others: Vec<&String> = trustees
            .iter()
            .filter(|t| !ADMIN_TRUSTEES.iter().any(|a| t.eq_ignore_ascii_case(a)))
            .collect();
        if others.is_empty() {
            verdict(
                Status::Fail,
                format!(
                    "RestrictRemoteSam on {} allows only administrators ({sddl}): {account_name} is refused, writeback fails with SSPR_0029",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            )
        } else {
            let list = others
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            verdict(
                Status::Warn,
                format!(
                    "RestrictRemoteSam on {} allows {list} but not {account_name} directly; confirm the account is in one of them",
                    host.server
                ),
                evidence,
                render(def.remediation, &vars),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// SRV-14

/// The default holders of "Impersonate a client after authentication" [K2]: SID and the
/// name secedit may write instead.
const IMPERSONATE_DEFAULTS: &[(&str, &str)] = &[
    ("S-1-5-32-544", "Administrators"),
    ("S-1-5-19", "LOCAL SERVICE"),
    ("S-1-5-20", "NETWORK SERVICE"),
    ("S-1-5-6", "SERVICE"),
];

/// SRV-14: SeImpersonatePrivilege keeps its default holders.
pub fn impersonate_privilege(facts: &Facts) -> CheckOutcome {
    with_host(IMPERSONATE_PRIVILEGE, facts, true, |host, def| {
        let rights = match host.snap.user_rights.as_result() {
            Err(e) => return unreadable(host, "the user rights (secedit /export)", e),
            Ok(r) => r,
        };
        let holders: Vec<String> = rights
            .get("SeImpersonatePrivilege")
            .map(|h| {
                h.0.iter()
                    .map(|s| s.trim_start_matches('*').to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<String> = IMPERSONATE_DEFAULTS
            .iter()
            .filter(|(sid, name)| {
                !holders.iter().any(|h| {
                    h.eq_ignore_ascii_case(sid)
                        || h.eq_ignore_ascii_case(name)
                        || h.ends_with(&format!("\\{name}"))
                })
            })
            .map(|(sid, name)| format!("{name} (*{sid})"))
            .collect();
        let evidence = json!({ "SeImpersonatePrivilege": holders, "missing": missing });
        if missing.is_empty() {
            verdict(
                Status::Pass,
                format!(
                    "\"Impersonate a client after authentication\" on {} keeps its default holders",
                    host.server
                ),
                evidence,
                String::new(),
            )
        } else {
            let list = missing.join(", ");
            verdict(
                Status::Warn,
                format!(
                    "\"Impersonate a client after authentication\" on {} lacks {list}",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("missing", &list)],
                ),
            )
        }
    })
}

// ---------------------------------------------------------------------------------------
// NET-05

/// The `<system.net><defaultProxy>` of a .NET configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(super) struct DefaultProxy {
    /// `enabled` of `<defaultProxy>`.
    pub enabled: Option<String>,
    /// `useDefaultCredentials` of `<defaultProxy>`.
    pub use_default_credentials: Option<String>,
    /// `proxyaddress` of `<proxy>`.
    pub proxy_address: Option<String>,
    /// `bypassonlocal` of `<proxy>`.
    pub bypass_on_local: Option<String>,
    /// `usesystemdefault` of `<proxy>`.
    pub use_system_default: Option<String>,
}

impl DefaultProxy {
    /// Whether it routes .NET through a proxy: enabled and with an address.
    pub fn routes_through_proxy(&self) -> bool {
        !self
            .enabled
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("false"))
            && self
                .proxy_address
                .as_deref()
                .is_some_and(|a| !a.trim().is_empty())
    }
}

/// Parses `<system.net><defaultProxy …><proxy …/></defaultProxy></system.net>` out of a
/// configuration file, ignoring comments; `None` when there is no `<defaultProxy>`.
pub(super) fn default_proxy(text: &str) -> Option<DefaultProxy> {
    let text = strip_xml_comments(text);
    let start = find_open_tag(&text, "system.net")?;
    let section = &text[start..];
    let section = section
        .find("</system.net>")
        .map_or(section, |end| &section[..end]);
    let dp_at = find_open_tag(section, "defaultProxy")?;
    let dp = &section[dp_at..];
    let dp_attrs = tag_attributes(dp);
    let body = dp.find("</defaultProxy>").map_or(dp, |end| &dp[..end]);
    let proxy_attrs = find_open_tag(body, "proxy")
        .map(|at| tag_attributes(&body[at..]))
        .unwrap_or_default();
    let get = |attrs: &[(String, String)], name: &str| {
        attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(DefaultProxy {
        enabled: get(&dp_attrs, "enabled"),
        use_default_credentials: get(&dp_attrs, "useDefaultCredentials"),
        proxy_address: get(&proxy_attrs, "proxyaddress"),
        bypass_on_local: get(&proxy_attrs, "bypassonlocal"),
        use_system_default: get(&proxy_attrs, "usesystemdefault"),
    })
}

fn strip_xml_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = &rest[start + end + 3..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// The byte offset of the first `<name` tag (followed by a space, `/` or `>`).
fn find_open_tag(text: &str, name: &str) -> Option<usize> {
    let needle = format!("<{name}");
    let mut from = 0;
    while let Some(at) = text[from..].find(&needle) {
        let at = from + at;
        let next = text[at + needle.len()..].chars().next();
        if matches!(next, Some(c) if c.is_whitespace() || c == '/' || c == '>') {
            return Some(at);
        }
        from = at + needle.len();
    }
    None
}

/// The attributes of the tag that `tag` starts with.
fn tag_attributes(tag: &str) -> Vec<(String, String)> {
    let end = tag.find('>').unwrap_or(tag.len());
    let inner = &tag[1..end];
    let inner = inner.trim_end_matches('/');
    let mut attrs = Vec::new();
    let mut rest = inner.split_once(char::is_whitespace).map_or("", |(_, r)| r);
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let value_and_rest = &after[1..];
        let Some(close) = value_and_rest.find(quote) else {
            break;
        };
        attrs.push((name, value_and_rest[..close].to_owned()));
        rest = &value_and_rest[close + 1..];
    }
    attrs
}

/// NET-05: the proxy .NET uses is in machine.config, in effect, and not only in
/// miiserver.exe.config.
pub fn dotnet_proxy(facts: &Facts) -> CheckOutcome {
    with_host(DOTNET_PROXY, facts, true, |host, def| {
        let machine = match host.snap.config_file(paths::MACHINE_CONFIG) {
            Err(e) => return unreadable(host, "machine.config", &e),
            Ok(None) => {
                return unreadable(
                    host,
                    "machine.config",
                    &format!("{} does not exist", paths::MACHINE_CONFIG),
                );
            }
            Ok(Some(file)) => file,
        };
        let machine_proxy = default_proxy(&machine.text);
        let mii = match host.snap.config_file(paths::MIISERVER_CONFIG) {
            Ok(Some(file)) => default_proxy(&file.text),
            _ => None,
        };
        let adsync_started = match host.snap.processes.as_result() {
            Ok(list) => list
                .0
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case("miiserver"))
                .and_then(|p| p.start_time),
            Err(_) => None,
        };
        let evidence = json!({
            "machine_config": paths::MACHINE_CONFIG,
            "machine_config_default_proxy": machine_proxy,
            "machine_config_last_write_utc": machine.last_write_utc.map(stamp),
            "miiserver_exe_config_default_proxy": mii,
            "adsync_process_started_utc": adsync_started.map(stamp),
        });
        let in_machine = machine_proxy
            .as_ref()
            .is_some_and(DefaultProxy::routes_through_proxy);
        let in_mii = mii.as_ref().is_some_and(DefaultProxy::routes_through_proxy);
        let proxy = machine_proxy
            .as_ref()
            .filter(|p| p.routes_through_proxy())
            .or(mii.as_ref().filter(|p| p.routes_through_proxy()))
            .and_then(|p| p.proxy_address.clone())
            .unwrap_or_else(|| "http://proxy.example:8080".to_owned());
        let remediation = |detail: &str| {
            render(
                def.remediation,
                &[
                    ("server", host.server),
                    ("proxy", &proxy),
                    ("detail", detail),
                ],
            )
        };
        if in_mii && !in_machine {
            return verdict(
                Status::Fail,
                format!(
                    "the proxy {proxy} is set only in miiserver.exe.config on {}, which the next Entra Connect upgrade overwrites",
                    host.server
                ),
                evidence,
                remediation("Then remove the <defaultProxy> from miiserver.exe.config."),
            );
        }
        if in_mii && in_machine {
            return verdict(
                Status::Warn,
                format!(
                    "a proxy is set in both machine.config and miiserver.exe.config on {}; the latter wins until an upgrade removes it",
                    host.server
                ),
                evidence,
                remediation(
                    "Remove the <defaultProxy> from miiserver.exe.config so that only machine.config decides.",
                ),
            );
        }
        if in_machine {
            if let (Some(started), Some(written)) = (adsync_started, machine.last_write_utc)
                && started < written
            {
                return verdict(
                    Status::Warn,
                    format!(
                        "machine.config on {} changed after ADSync started: the proxy {proxy} is not in effect until ADSync restarts",
                        host.server
                    ),
                    evidence,
                    remediation(
                        "The proxy is already in machine.config: only Restart-Service ADSync is needed.",
                    ),
                );
            }
            return verdict(
                Status::Pass,
                format!(
                    ".NET on {} uses the proxy {proxy} from machine.config",
                    host.server
                ),
                evidence,
                String::new(),
            );
        }
        verdict(
            Status::Pass,
            format!(
                "no proxy is configured for .NET on {}: Entra Connect connects directly (the network checks show whether that works)",
                host.server
            ),
            evidence,
            String::new(),
        )
    })
}

// ---------------------------------------------------------------------------------------
// NET-06

/// The 8 TLS 1.2 registry values of [S11]: key, value, required data.
pub(super) const TLS12_VALUES: &[(&str, &str, u64)] = &[
    (paths::DOTNET_32, "SystemDefaultTlsVersions", 1),
    (paths::DOTNET_32, "SchUseStrongCrypto", 1),
    (paths::DOTNET_64, "SystemDefaultTlsVersions", 1),
    (paths::DOTNET_64, "SchUseStrongCrypto", 1),
    (paths::TLS12_SERVER, "Enabled", 1),
    (paths::TLS12_SERVER, "DisabledByDefault", 0),
    (paths::TLS12_CLIENT, "Enabled", 1),
    (paths::TLS12_CLIENT, "DisabledByDefault", 0),
];

/// What the registry holds for a list of required values.
pub(super) struct RegistryAudit {
    /// Values that exist with other data: `key\name = found (needs required)`.
    pub wrong: Vec<String>,
    /// Values that do not exist: `key\name`.
    pub missing: Vec<String>,
    /// Every value as found, for the evidence.
    pub evidence: Value,
}

/// Reads `values`; `Err` when a key could not be read.
pub(super) fn audit_registry(
    snap: &Snapshot,
    values: &[(&str, &str, u64)],
) -> Result<RegistryAudit, String> {
    let mut audit = RegistryAudit {
        wrong: Vec::new(),
        missing: Vec::new(),
        evidence: json!([]),
    };
    let mut rows = Vec::new();
    for (key, name, required) in values {
        let found = snap.registry_value(key, name)?;
        let number = found.and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        rows.push(json!({ "key": key, "name": name, "found": found.cloned().unwrap_or(Value::String("Not Found".to_owned())), "required": required }));
        match (found, number) {
            (None, _) => audit.missing.push(format!("{key}\\{name}={required}")),
            (Some(_), Some(n)) if n == *required => {}
            (Some(v), _) => audit
                .wrong
                .push(format!("{key}\\{name}={required} (now {v})")),
        }
    }
    audit.evidence = Value::Array(rows);
    Ok(audit)
}

/// The Windows build, when the snapshot has it.
pub(super) fn windows_build(snap: &Snapshot) -> Option<u32> {
    snap.registry_value(paths::WINDOWS_NT_CURRENT_VERSION, "CurrentBuild")
        .ok()
        .flatten()
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// NET-06: the 8 TLS 1.2 values exist with the documented data.
pub fn tls12_registry(facts: &Facts) -> CheckOutcome {
    with_host(TLS12_REGISTRY, facts, true, |host, def| {
        let audit = match audit_registry(host.snap, TLS12_VALUES) {
            Err(e) => return unreadable(host, "the TLS 1.2 registry values", &e),
            Ok(a) => a,
        };
        let build = windows_build(host.snap);
        let evidence = json!({ "values": audit.evidence, "windows_build": build });
        let all: Vec<String> = audit.wrong.iter().chain(&audit.missing).cloned().collect();
        let remediation = render(
            def.remediation,
            &[("server", host.server), ("missing", &all.join("; "))],
        );
        if !audit.wrong.is_empty() {
            return verdict(
                Status::Fail,
                format!(
                    "TLS 1.2 is turned off for .NET or SChannel on {}: {}",
                    host.server,
                    audit.wrong.join("; ")
                ),
                evidence,
                remediation,
            );
        }
        if audit.missing.is_empty() {
            return verdict(
                Status::Pass,
                format!("all 8 TLS 1.2 registry values are set on {}", host.server),
                evidence,
                String::new(),
            );
        }
        // Windows Server 2016 (build 14393) and later use TLS 1.2 by default, so missing
        // values are a risk there rather than an outage.
        let status = if build.is_some_and(|b| b >= 14_393) {
            Status::Warn
        } else {
            Status::Fail
        };
        verdict(
            status,
            format!(
                "{} of the 8 TLS 1.2 registry values are missing on {}: {}",
                audit.missing.len(),
                host.server,
                audit.missing.join("; ")
            ),
            evidence,
            remediation,
        )
    })
}

// ---------------------------------------------------------------------------------------
// OBJ-01, OBJ-04

fn is_success(result: &str) -> bool {
    result.eq_ignore_ascii_case("success")
}

/// OBJ-01: every connector had a successful full import and full synchronization (or the
/// delta runs that only follow them).
pub fn initial_sync(facts: &Facts) -> CheckOutcome {
    with_host(INITIAL_SYNC, facts, true, |host, def| {
        let runs = match host.snap.adsync.run_profile_results.as_result() {
            Err(e) => return unreadable(host, "Get-ADSyncRunProfileResult", e),
            Ok(runs) => &runs.0,
        };
        let mut connectors: Vec<String> = match host.snap.adsync.connectors.as_result() {
            Ok(list) => list.0.iter().map(|c| c.name.clone()).collect(),
            Err(_) => Vec::new(),
        };
        for run in runs {
            if !connectors.contains(&run.connector_name) {
                connectors.push(run.connector_name.clone());
            }
        }
        let ran = |connector: &str, profile: &str| {
            runs.iter().any(|r| {
                r.connector_name == *connector
                    && r.run_profile_name.eq_ignore_ascii_case(profile)
                    && is_success(&r.result)
            })
        };
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for connector in &connectors {
            let full = ran(connector, "Full Import") && ran(connector, "Full Synchronization");
            let delta = ran(connector, "Delta Import") && ran(connector, "Delta Synchronization");
            rows.push(json!({ "connector": connector, "full_import_and_sync": full, "delta_import_and_sync": delta }));
            if !full && !delta {
                missing.push(connector.clone());
            }
        }
        let evidence = json!({ "connectors": rows, "runs_in_history": runs.len() });
        if runs.is_empty() || connectors.is_empty() {
            return verdict(
                Status::Fail,
                format!(
                    "the run history of {} is empty: no import or synchronization has run",
                    host.server
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("connectors", "all")],
                ),
            );
        }
        if missing.is_empty() {
            verdict(
                Status::Pass,
                format!(
                    "every connector on {} has completed its imports and synchronizations",
                    host.server
                ),
                evidence,
                String::new(),
            )
        } else {
            let list = missing.join(", ");
            verdict(
                Status::Fail,
                format!(
                    "no successful full import and full synchronization for {list}: writeback cannot find the users' on-premises objects"
                ),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("connectors", &list)],
                ),
            )
        }
    })
}

/// OBJ-04: the scheduler runs and the latest run of every run profile succeeded.
pub fn sync_scheduler(facts: &Facts) -> CheckOutcome {
    with_host(SYNC_SCHEDULER, facts, true, |host, def| {
        let scheduler = match host.snap.adsync.scheduler.as_result() {
            Err(e) => return unreadable(host, "Get-ADSyncScheduler", e),
            Ok(s) => s,
        };
        let mut problems = Vec::new();
        if !scheduler.sync_cycle_enabled {
            problems.push("the sync scheduler is disabled (SyncCycleEnabled False)".to_owned());
        }
        if scheduler.scheduler_suspended == Some(true) {
            problems.push("the sync scheduler is suspended (SchedulerSuspended True)".to_owned());
        }
        let mut latest: Vec<&crate::host::snapshot::RunProfileResult> = Vec::new();
        if let Collected::Ok(runs) = &host.snap.adsync.run_profile_results {
            let mut sorted: Vec<_> = runs.0.iter().collect();
            sorted.sort_by_key(|r| std::cmp::Reverse(r.start_date));
            for run in sorted {
                if !latest.iter().any(|l| {
                    l.connector_name == run.connector_name
                        && l.run_profile_name == run.run_profile_name
                }) {
                    latest.push(run);
                }
            }
        }
        for run in &latest {
            if !is_success(&run.result) && !run.result.eq_ignore_ascii_case("completed-no-objects")
            {
                problems.push(format!(
                    "the last {} on {} ended in {}",
                    run.run_profile_name, run.connector_name, run.result
                ));
            }
        }
        let evidence = json!({
            "SyncCycleEnabled": scheduler.sync_cycle_enabled, "SchedulerSuspended": scheduler.scheduler_suspended,
            "NextSyncCycleStartTimeInUTC": scheduler.next_sync_cycle_start_utc.map(stamp),
            "latest_runs": latest.iter().map(|r| json!({ "connector": r.connector_name, "profile": r.run_profile_name, "result": r.result })).collect::<Vec<_>>(),
        });
        if problems.is_empty() {
            verdict(
                Status::Pass,
                format!(
                    "the sync scheduler on {} runs and the latest runs succeeded",
                    host.server
                ),
                evidence,
                String::new(),
            )
        } else {
            let detail = problems.join("; ");
            verdict(
                Status::Warn,
                format!("{detail} on {}", host.server),
                evidence,
                render(
                    def.remediation,
                    &[("server", host.server), ("detail", &detail)],
                ),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::checks::fixtures::{assert_rendered, healthy, healthy_host};
    use crate::checks::{AGENT_CHECKS, evaluate};
    use crate::host::{HostFacts, read_snapshot};

    fn fixture(name: &str) -> HostFacts {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/snapshots")
            .join(format!("{name}.json"));
        read_snapshot(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn with_host(host: HostFacts) -> Facts {
        let mut facts = healthy();
        facts.host = Ok(host);
        facts
    }

    fn with_snapshot(change: impl FnOnce(&mut Snapshot)) -> Facts {
        let mut host = healthy_host();
        change(&mut host.snapshot);
        with_host(host)
    }

    /// Checks that only concern Entra Connect Sync (not applicable on a Cloud Sync host).
    const CONNECT_ONLY: &[&str] = &[
        WRITEBACK_ENABLED,
        STAGING_MODE,
        CONNECT_VERSION,
        AUTO_UPGRADE,
        CONNECT_ON_DC,
        RESTRICT_REMOTE_SAM,
        IMPERSONATE_PRIVILEGE,
        DOTNET_PROXY,
        TLS12_REGISTRY,
        INITIAL_SYNC,
        SYNC_SCHEDULER,
        events::WRITEBACK_LISTENER,
        events::WRITEBACK_CONFIGURATION,
        events::CONNECTOR_CREDENTIALS,
        events::CONNECTOR_PASSWORD_LENGTH,
        events::LDAP_SIGN_AND_SEAL,
        events::FOREST_WRITEBACK_ENABLEMENT,
        events::WRITEBACK_ERRORS,
    ];

    /// What each fixture must produce, besides `pass` (and `not_applicable` for the Cloud
    /// Sync checks on a Connect server).
    fn expected(name: &str) -> Vec<(&'static str, Status)> {
        use Status::*;
        match name {
            "healthy" => vec![],
            "adsync-stopped" => vec![(ADSYNC_SERVICE, Fail), (events::WRITEBACK_LISTENER, Fail)],
            "writeback-disabled" => vec![
                (WRITEBACK_ENABLED, Fail),
                (events::WRITEBACK_LISTENER, NotApplicable),
            ],
            "staging-mode" => vec![
                (STAGING_MODE, Fail),
                (events::WRITEBACK_LISTENER, NotApplicable),
            ],
            "connect-old" => vec![(CONNECT_VERSION, Fail)],
            "auto-upgrade-suspended" => vec![(AUTO_UPGRADE, Warn)],
            "dotnet-old" => vec![(DOTNET_VERSION, Warn)],
            "os-unsupported" => vec![(OS_SUPPORT, Warn)],
            "clock-skew" => vec![(CLOCK_SKEW, Fail)],
            "on-dc" => vec![(CONNECT_ON_DC, Warn)],
            "restrict-remote-sam" => vec![(RESTRICT_REMOTE_SAM, Fail)],
            "impersonate-missing" => vec![(IMPERSONATE_PRIVILEGE, Warn)],
            "proxy-in-miiserver-config" => vec![(DOTNET_PROXY, Fail)],
            "tls12-disabled" => vec![(TLS12_REGISTRY, Fail)],
            "no-full-sync" => vec![(INITIAL_SYNC, Fail), (SYNC_SCHEDULER, Warn)],
            "scheduler-disabled" => vec![(SYNC_SCHEDULER, Warn)],
            "listener-down" => vec![(events::WRITEBACK_LISTENER, Fail)],
            "config-corrupt" => vec![(events::WRITEBACK_CONFIGURATION, Fail)],
            "bad-credentials" => vec![
                (events::CONNECTOR_CREDENTIALS, Fail),
                (SYNC_SCHEDULER, Warn),
            ],
            "password-errors" => vec![
                (events::WRITEBACK_ERRORS, Fail),
                (events::CONNECTOR_PASSWORD_LENGTH, Fail),
            ],
            "sign-and-seal" => vec![(events::LDAP_SIGN_AND_SEAL, Fail)],
            "forest-added" => vec![(events::FOREST_WRITEBACK_ENABLEMENT, Fail)],
            "cloudsync-broken" => {
                let mut v: Vec<_> = CONNECT_ONLY.iter().map(|id| (*id, NotApplicable)).collect();
                v.push((ADSYNC_SERVICE, NotApplicable));
                v.push((super::super::cloudsync::AGENT_VERSION, Fail));
                v.push((super::super::cloudsync::AGENT_SERVICES, Fail));
                v.push((super::super::cloudsync::AGENT_NETWORK_CONFIG, Fail));
                v
            }
            "unreadable" => [
                WRITEBACK_ENABLED,
                STAGING_MODE,
                AUTO_UPGRADE,
                INITIAL_SYNC,
                SYNC_SCHEDULER,
                events::WRITEBACK_LISTENER,
                events::WRITEBACK_CONFIGURATION,
                events::CONNECTOR_CREDENTIALS,
                events::CONNECTOR_PASSWORD_LENGTH,
                events::LDAP_SIGN_AND_SEAL,
                events::FOREST_WRITEBACK_ENABLEMENT,
                events::WRITEBACK_ERRORS,
            ]
            .iter()
            .map(|id| (*id, Error))
            .collect(),
            other => panic!("no expectations for fixture {other}"),
        }
    }

    /// PowerShell hashtables keep their braces; `{name}` placeholders must all be filled.
    fn assert_no_placeholder(fixture: &str, id: &str, remediation: &str) {
        assert!(!remediation.is_empty(), "{fixture}: {id}: no remediation");
        let mut rest = remediation;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name.is_empty() || !after[name.len()..].starts_with('}'),
                "{fixture}: {id}: placeholder {{{name}}} left in: {remediation}"
            );
            rest = after;
        }
    }

    #[test]
    fn every_fixture_parses_and_fails_exactly_its_checks() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/snapshots");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("fixtures folder")
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        assert!(names.len() >= 20, "{names:?}");
        for name in &names {
            let facts = with_host(fixture(name));
            let expected: HashMap<&str, Status> = expected(name).into_iter().collect();
            for outcome in evaluate(&facts, &|id| id.starts_with("server.")) {
                let id = outcome.check.id;
                let want =
                    expected
                        .get(id)
                        .copied()
                        .unwrap_or(if id.starts_with("server.cloudsync_") {
                            Status::NotApplicable
                        } else {
                            Status::Pass
                        });
                assert_eq!(outcome.status, want, "{name}: {id}: {}", outcome.summary);
                match outcome.status {
                    Status::Pass | Status::NotApplicable => {
                        assert!(outcome.remediation.is_empty(), "{name}: {id}")
                    }
                    _ => assert_no_placeholder(name, id, &outcome.remediation),
                }
            }
        }
        let host_checks = AGENT_CHECKS
            .iter()
            .filter(|(id, _)| id.starts_with("server."))
            .count();
        assert_eq!(host_checks, 25);
    }

    #[test]
    fn broken_fixtures_name_the_real_connector_account_and_versions() {
        let facts = with_host(fixture("bad-credentials"));
        let outcome = events::connector_credentials(&facts);
        assert_rendered(
            &outcome.remediation,
            &[
                "contoso.com\\MSOL_1a2b3c4d5e6f",
                "Connectors → contoso.com → Properties",
                "AADC01",
            ],
        );
        assert!(
            outcome.summary.contains("no-start-credentials"),
            "{}",
            outcome.summary
        );

        let outcome = connect_version(&with_host(fixture("connect-old")));
        assert!(
            outcome.summary.contains("2.4.131.0")
                && outcome.summary.contains("stopped on 2026-09-30"),
            "{}",
            outcome.summary
        );
        assert_rendered(&outcome.remediation, &["(now 2.4.131.0)"]);

        let outcome = writeback_enabled(&with_host(fixture("writeback-disabled")));
        assert_rendered(
            &outcome.remediation,
            &[
                "Set-ADSyncAADPasswordResetConfiguration -Connector 'contoso.onmicrosoft.com - AAD' -Enable $true",
            ],
        );

        let outcome = restrict_remote_sam(&with_host(fixture("restrict-remote-sam")));
        assert_rendered(
            &outcome.remediation,
            &["contoso.com\\MSOL_1a2b3c4d5e6f", "Remove-ItemProperty"],
        );

        let outcome = tls12_registry(&with_host(fixture("tls12-disabled")));
        assert!(
            outcome
                .summary
                .contains(r"TLS 1.2\Client\Enabled=1 (now 0)"),
            "{}",
            outcome.summary
        );
        assert_rendered(
            &outcome.remediation,
            &[r"WOW6432Node\Microsoft\.NETFramework\v4.0.30319\SchUseStrongCrypto=1"],
        );

        let outcome = events::writeback_errors(&with_host(fixture("password-errors")));
        assert!(
            outcome.summary.contains("80230626") && outcome.summary.contains("33004"),
            "{}",
            outcome.summary
        );
        assert_eq!(
            outcome.evidence["causes"][0]["explained_by"],
            "PERM-02 (connector account Reset Password right)"
        );
    }

    #[test]
    fn no_host_facts_is_an_error_that_says_how_to_get_them() {
        let mut facts = healthy();
        facts.host = Err(HostFailure::Unavailable);
        for outcome in evaluate(&facts, &|id| id.starts_with("server.")) {
            assert_eq!(outcome.status, Status::Error, "{}", outcome.check.id);
            assert!(
                outcome.summary.contains("--snapshot"),
                "{}",
                outcome.summary
            );
            assert!(outcome.remediation.contains("wbhealth-agent collect"));
        }
    }

    #[test]
    fn connect_version_follows_the_retirement_rules() {
        let at = |version: &str, collected: OffsetDateTime| {
            let facts = with_snapshot(|s| {
                s.collected_at = collected;
                if let Collected::Ok(g) = &mut s.adsync.global_settings {
                    g.parameters.0.insert(
                        "Microsoft.Synchronize.ServerConfigurationVersion".into(),
                        json!(version),
                    );
                }
                s.files.insert(
                    paths::MIISERVER_EXE.into(),
                    Collected::Ok(Some(crate::host::snapshot::FileVersion {
                        file_version: Some(version.into()),
                        product_version: None,
                    })),
                );
            });
            connect_version(&facts)
        };
        let now = datetime!(2026-11-25 16:00 UTC);
        let before = datetime!(2026-09-01 0:00 UTC);
        assert!(at("1.0.8641.0", now).summary.contains("ACS"));
        assert!(at("1.1.380.0", now).summary.contains("1.1.443.0"));
        assert!(at("1.6.16.0", now).summary.contains("V1"));
        assert_eq!(at("2.4.131.0", now).status, Status::Fail);
        assert_eq!(at("2.4.131.0", before).status, Status::Warn);
        assert_eq!(at("2.5.79.0", now).status, Status::Pass);
        assert_eq!(at("2.5.190.0", now).status, Status::Pass);

        let partial = with_snapshot(|s| {
            s.files.insert(
                paths::MIISERVER_EXE.into(),
                Collected::Ok(Some(crate::host::snapshot::FileVersion {
                    file_version: Some("2.5.190.0".into()),
                    product_version: None,
                })),
            );
        });
        let outcome = connect_version(&partial);
        assert_eq!(outcome.status, Status::Warn);
        assert!(
            outcome.summary.contains("partly upgraded"),
            "{}",
            outcome.summary
        );
    }

    #[test]
    fn clock_skew_thresholds() {
        let skewed = |seconds: i64| {
            clock_skew(&with_snapshot(|s| {
                if let Collected::Ok(c) = &mut s.clock {
                    c.reference_utc = Collected::Ok("2026-11-25T16:00:00Z".into());
                    c.local_utc =
                        datetime!(2026-11-25 16:00 UTC) + time::Duration::seconds(seconds);
                }
            }))
        };
        assert_eq!(skewed(59).status, Status::Pass);
        assert_eq!(skewed(-90).status, Status::Warn);
        assert!(skewed(-90).summary.contains("behind"));
        assert_eq!(skewed(301).status, Status::Fail);
        let unknown = clock_skew(&with_snapshot(|s| {
            if let Collected::Ok(c) = &mut s.clock {
                c.reference_utc = Collected::Error("The remote name could not be resolved".into());
            }
        }));
        assert_eq!(unknown.status, Status::Error);
        assert!(unknown.summary.contains("could not be resolved"));
        assert_eq!(
            parse_reference_time("Wed, 25 Nov 2026 16:00:01 GMT"),
            Some(datetime!(2026-11-25 16:00:01 UTC))
        );
    }

    #[test]
    fn restrict_remote_sam_sddl_is_judged_by_its_allow_aces() {
        let with_sddl = |sddl: &str| {
            restrict_remote_sam(&with_snapshot(|s| {
                if let Some(Collected::Ok(Some(lsa))) = s.registry.get_mut(paths::LSA) {
                    lsa.insert("RestrictRemoteSam".into(), json!(sddl));
                }
            }))
        };
        assert_eq!(with_sddl("O:BAG:BAD:(A;;RC;;;BA)").status, Status::Fail);
        assert_eq!(
            with_sddl("O:BAG:BAD:(A;;RC;;;BA)(A;;RC;;;AU)").status,
            Status::Pass
        );
        assert_eq!(
            with_sddl(
                "O:BAG:BAD:(A;;RC;;;BA)(A;;RC;;;S-1-5-21-1004336348-1177238915-682003330-1105)"
            )
            .status,
            Status::Pass
        );
        let group = with_sddl(
            "O:BAG:BAD:(A;;RC;;;BA)(A;;RC;;;S-1-5-21-1004336348-1177238915-682003330-4242)",
        );
        assert_eq!(group.status, Status::Warn);
        assert!(group.summary.contains("-4242"));
        assert_eq!(
            sddl_allowed_trustees("O:BAG:BAD:(A;;RC;;;BA)(D;;RC;;;WD)"),
            vec!["BA"]
        );
    }

    #[test]
    fn default_proxy_is_read_from_system_net_and_comments_are_ignored() {
        let text = r#"<configuration><!-- <system.net><defaultProxy><proxy proxyaddress="http://old" /></defaultProxy></system.net> -->
            <system.net><defaultProxy enabled="true" useDefaultCredentials='true'>
            <proxy usesystemdefault="true" proxyaddress="http://proxy:8080" bypassonlocal="true"/></defaultProxy></system.net></configuration>"#;
        let proxy = default_proxy(text).expect("a defaultProxy");
        assert_eq!(proxy.proxy_address.as_deref(), Some("http://proxy:8080"));
        assert_eq!(proxy.use_default_credentials.as_deref(), Some("true"));
        assert!(proxy.routes_through_proxy());
        assert!(
            default_proxy(
                "<configuration><!-- <system.net><defaultProxy/></system.net> --></configuration>"
            )
            .is_none()
        );
        let disabled = default_proxy(r#"<system.net><defaultProxy enabled="false"><proxy proxyaddress="http://p:1"/></defaultProxy></system.net>"#)
            .expect("parsed");
        assert!(!disabled.routes_through_proxy());
    }

    #[test]
    fn a_machine_config_newer_than_adsync_asks_for_a_restart() {
        let outcome = dotnet_proxy(&with_snapshot(|s| {
            if let Collected::Ok(p) = &mut s.processes {
                p.0[0].start_time = Some(datetime!(2026-10-01 0:00 UTC));
            }
        }));
        assert_eq!(outcome.status, Status::Warn);
        assert!(outcome.summary.contains("restarts"), "{}", outcome.summary);
        assert_rendered(
            &outcome.remediation,
            &["Restart-Service ADSync", "http://proxy.contoso.com:8080"],
        );
    }

    #[test]
    fn versions_parse_and_order() {
        assert!(Version::parse("2.5.79.0").expect("v") < Version::parse("2.5.190.0").expect("v"));
        assert_eq!(
            Version::parse("1.1.977.0 (built by: x)")
                .map(|v| v.to_string())
                .as_deref(),
            Some("1.1.977.0")
        );
        assert_eq!(Version::parse("2.4"), Some(Version::new(2, 4, 0, 0)));
        assert!(Version::parse("garbage").is_none());
        assert!(Version::parse("1.2.3.4.5").is_none());
    }
}

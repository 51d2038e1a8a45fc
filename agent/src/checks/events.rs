//! Event-log checks (§3 of the catalogue): the Application log's `PasswordResetService` and
//! `ADSync` events, with the HRESULTs inside their messages, classified into causes.
//!
//! [`SIGNATURES`] is the signature catalogue: each entry names the cause it stands for and the
//! check that explains it. Signatures owned by a dedicated check (the listener, the onboarding
//! state, the connector credentials, …) are judged there; the rest are summarised by
//! [`writeback_errors`]. An event counts as recent within a day of the snapshot.

use serde_json::{Value, json};
use time::Duration;
use wbhealth_catalogue::{Status, render};

use super::Verdict;
use super::server::{
    Host, RESTRICT_REMOTE_SAM, connect_host, finish, human_seconds, stamp, unreadable, verdict,
};
use crate::facts::Facts;
use crate::host::connector_accounts_of;
use crate::host::snapshot::{Collected, EventRecord};
use crate::result::CheckOutcome;

/// SRV-05.
pub const WRITEBACK_LISTENER: &str = "server.writeback_listener";
/// SRV-06.
pub const WRITEBACK_CONFIGURATION: &str = "server.writeback_configuration";
/// SRV-15.
pub const CONNECTOR_CREDENTIALS: &str = "server.connector_credentials";
/// SRV-16.
pub const CONNECTOR_PASSWORD_LENGTH: &str = "server.connector_password_length";
/// SRV-17.
pub const LDAP_SIGN_AND_SEAL: &str = "server.ldap_sign_and_seal";
/// SRV-18.
pub const FOREST_WRITEBACK_ENABLEMENT: &str = "server.forest_writeback_enablement";
/// §3: every other writeback error.
pub const WRITEBACK_ERRORS: &str = "server.writeback_errors";

/// How old an event may be and still count as recent.
const RECENT: Duration = Duration::days(1);
/// How old the last 31019 heartbeat may be (Microsoft sends one every 5 minutes [S2]; the
/// 15-minute threshold is ours).
const HEARTBEAT_MAX_AGE: Duration = Duration::minutes(15);

/// How much of writeback an event says is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weight {
    /// A success or a by-design condition.
    Info,
    /// Degraded, or a user's own doing.
    Warn,
    /// Some users or operations fail.
    Partial,
    /// Writeback fails for everyone.
    Blocker,
}

/// One event signature of §3.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// The provider, or `None` for any writeback provider.
    pub provider: Option<&'static str>,
    /// The event ids, or empty for any.
    pub ids: &'static [u32],
    /// Lowercase text the message must contain (an HRESULT, a source line).
    pub needle: Option<&'static str>,
    /// A short name.
    pub name: &'static str,
    /// The causes of the catalogue it stands for.
    pub cause: &'static str,
    /// The check that explains it or detects its cause.
    pub explained_by: &'static str,
    /// How bad it is.
    pub weight: Weight,
    /// How many in the last day make it count (retry warnings are normal one at a time).
    pub min_recent: usize,
    /// The dedicated check that reports it, if not [`writeback_errors`].
    pub owner: Option<&'static str>,
}

const PRS: Option<&str> = Some("PasswordResetService");
const ADSYNC: Option<&str> = Some("ADSync");

#[allow(clippy::too_many_arguments)] // one per field of a signature
const fn sig(
    provider: Option<&'static str>,
    ids: &'static [u32],
    needle: Option<&'static str>,
    name: &'static str,
    cause: &'static str,
    explained_by: &'static str,
    weight: Weight,
    owner: Option<&'static str>,
) -> Signature {
    Signature {
        provider,
        ids,
        needle,
        name,
        cause,
        explained_by,
        weight,
        min_recent: 1,
        owner,
    }
}

/// The signature catalogue, most specific first: an event takes the first that matches.
pub const SIGNATURES: &[Signature] = &[
    // HRESULTs and source lines inside messages (§3.2), whichever event carries them.
    sig(
        None,
        &[],
        Some("admaexport.cpp(2944)"),
        "admaexport.cpp(2944) Failed to acquire user information (ERROR_ACCESS_DENIED)",
        "SRV-13, PERM-12",
        RESTRICT_REMOTE_SAM,
        Weight::Blocker,
        Some(RESTRICT_REMOTE_SAM),
    ),
    sig(
        None,
        &[],
        Some("800700ce"),
        "hr=800700CE The filename or extension is too long",
        "SRV-16",
        CONNECTOR_PASSWORD_LENGTH,
        Weight::Partial,
        Some(CONNECTOR_PASSWORD_LENGTH),
    ),
    sig(
        None,
        &[],
        Some("8023062c"),
        "8023062C a 128 bit TLS or SSL connection is required",
        "SRV-17",
        LDAP_SIGN_AND_SEAL,
        Weight::Blocker,
        Some(LDAP_SIGN_AND_SEAL),
    ),
    sig(
        None,
        &[],
        Some("8023061f"),
        "0x8023061f password synchronization is not enabled on this Management Agent",
        "SRV-18",
        FOREST_WRITEBACK_ENABLEMENT,
        Weight::Partial,
        Some(FOREST_WRITEBACK_ENABLEMENT),
    ),
    sig(
        None,
        &[],
        Some("ldap password policy control"),
        "The server doesn't contain the LDAP password policy control",
        "AD-03",
        "AD-03 (DC must be Windows Server 2016 or later)",
        Weight::Blocker,
        None,
    ),
    sig(
        None,
        &[],
        Some("80230619"),
        "0x80230619 A restriction prevents the password from being changed",
        "USR-01, USR-02, PERM-11",
        "policy.min_password_age",
        Weight::Warn,
        None,
    ),
    sig(
        None,
        &[],
        Some("80230626"),
        "0x80230626 the management agent credentials were denied access",
        "PERM-02, PERM-11",
        "PERM-02 (connector account Reset Password right)",
        Weight::Partial,
        None,
    ),
    sig(
        None,
        &[],
        Some("80231367"),
        "hr=80231367 admin reset of an AdminCount=1 user",
        "PERM-08, PERM-09",
        "PERM-08 (protected accounts)",
        Weight::Partial,
        None,
    ),
    sig(
        None,
        &[],
        Some("80230402"),
        "hr=80230402 duplicated entries with the same anchor",
        "OBJ-03",
        "OBJ-03 (one enabled account per person across forests)",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[31034],
        Some("remote certificate is invalid"),
        "31034 ServiceBusListenerError: the remote certificate is invalid",
        "NET-07, SRV-05",
        WRITEBACK_LISTENER,
        Weight::Blocker,
        Some(WRITEBACK_LISTENER),
    ),
    // ADSync (§3.2).
    sig(
        ADSYNC,
        &[6000],
        None,
        "6000 management agent failed to run: credentials invalid",
        "SRV-15",
        CONNECTOR_CREDENTIALS,
        Weight::Blocker,
        Some(CONNECTOR_CREDENTIALS),
    ),
    sig(
        ADSYNC,
        &[6800],
        None,
        "6800 the password management extension encountered an error",
        "SRV-05",
        WRITEBACK_LISTENER,
        Weight::Blocker,
        Some(WRITEBACK_LISTENER),
    ),
    sig(
        ADSYNC,
        &[6306],
        None,
        "6306 unexpected error performing an operation for the client",
        "SRV-11 (context)",
        "server.clock_skew",
        Weight::Warn,
        None,
    ),
    sig(
        ADSYNC,
        &[6329],
        None,
        "6329 password export error (read the message)",
        "PERM-*, USR-*",
        "the HRESULT in the message",
        Weight::Partial,
        None,
    ),
    // PasswordResetService (§3.1).
    sig(
        PRS,
        &[31016, 31034, 31044],
        None,
        "31016/31034/31044 writeback listener stopped or disconnected from the relay",
        "SRV-05, NET-02",
        WRITEBACK_LISTENER,
        Weight::Blocker,
        Some(WRITEBACK_LISTENER),
    ),
    sig(
        PRS,
        &[32000, 32004, 32005, 32007, 32008, 32010],
        None,
        "3200x onboarding state corrupt (keys, configuration file, service response)",
        "SRV-06",
        WRITEBACK_CONFIGURATION,
        Weight::Blocker,
        Some(WRITEBACK_CONFIGURATION),
    ),
    sig(
        PRS,
        &[32003],
        None,
        "32003 InputValidationError",
        "SRV-06",
        WRITEBACK_CONFIGURATION,
        Weight::Warn,
        Some(WRITEBACK_CONFIGURATION),
    ),
    sig(
        PRS,
        &[31003, 31008, 31011],
        None,
        "31003/31008/31011 reset or change failed in AD (policy, permissions or protected account)",
        "USR-01, USR-02, PERM-02, PERM-08",
        "the permission and password policy checks",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[31014, 32009, 32011],
        None,
        "31014/32009/32011 onboarding or offboarding failed: admin account federated, wrong password, or firewall",
        "TEN-08, NET-02, NET-10",
        "TEN-08 (use a cloud-only, directly assigned Global or Hybrid Identity Administrator)",
        Weight::Blocker,
        None,
    ),
    sig(
        PRS,
        &[32013],
        None,
        "32013 OffBoardingError",
        "TEN-08",
        "TEN-08",
        Weight::Warn,
        None,
    ),
    sig(
        PRS,
        &[32001],
        None,
        "32001 cannot reach the password reset web service",
        "NET-01, SRV-11",
        "network.passwordreset_https",
        Weight::Blocker,
        None,
    ),
    sig(
        PRS,
        &[32002],
        None,
        "32002 cannot reach the Service Bus",
        "NET-02",
        "network.servicebus_relay",
        Weight::Blocker,
        None,
    ),
    Signature {
        min_recent: 5,
        ..sig(
            PRS,
            &[32014],
            None,
            "32014 ServiceBusWarning: Service Bus connection retried",
            "NET-04",
            WRITEBACK_LISTENER,
            Weight::Warn,
            None,
        )
    },
    sig(
        PRS,
        &[32015],
        None,
        "32015 health heartbeat to the web service failed",
        "NET-01",
        "network.passwordreset_https",
        Weight::Warn,
        None,
    ),
    sig(
        PRS,
        &[33001],
        None,
        "33001 ADUnKnownError (also reserved characters in the OU path)",
        "AD-06",
        "AD-06 (OU names with reserved characters)",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[33002],
        None,
        "33002 ADUserNotFoundError",
        "OBJ-02",
        "OBJ-02 (sync scope and lineage)",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[33003],
        None,
        "33003 ADMutliMatchError",
        "OBJ-03",
        "OBJ-03",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[33004],
        None,
        "33004 ADPermissionsError",
        "PERM-02…PERM-12",
        "the connector account permission checks",
        Weight::Partial,
        None,
    ),
    sig(
        PRS,
        &[33005],
        None,
        "33005 ADUserAccountDisabled",
        "USR-03",
        "USR-03 (account disabled on-premises)",
        Weight::Warn,
        None,
    ),
    sig(
        PRS,
        &[33006],
        None,
        "33006 ADUserAccountLockedOut",
        "USR-04",
        "USR-04 (account locked on-premises)",
        Weight::Warn,
        None,
    ),
    sig(
        PRS,
        &[33007],
        None,
        "33007 ADUserIncorrectPassword",
        "USR-07",
        "USR-07 (the user typed a wrong current password)",
        Weight::Info,
        None,
    ),
    sig(
        PRS,
        &[33008],
        None,
        "33008 ADPasswordPolicyError",
        "USR-01, USR-02",
        "policy.min_password_age",
        Weight::Warn,
        None,
    ),
    sig(
        PRS,
        &[33009],
        None,
        "33009 ADConfigurationError",
        "AD configuration (see the ADSync events)",
        "the ADSync events around it",
        Weight::Partial,
        None,
    ),
    // Positive signals.
    sig(
        PRS,
        &[
            31001, 31002, 31004, 31005, 31006, 31007, 31009, 31010, 31012, 31013, 31015, 31017,
            31018, 31019,
        ],
        None,
        "writeback information event",
        "-",
        "-",
        Weight::Info,
        None,
    ),
];

/// The signature an event matches, if any.
pub fn classify(event: &EventRecord) -> Option<&'static Signature> {
    let message = event.message.to_ascii_lowercase();
    SIGNATURES.iter().find(|s| {
        s.provider
            .is_none_or(|p| p.eq_ignore_ascii_case(&event.provider))
            && (s.ids.is_empty() || s.ids.contains(&event.id))
            && s.needle.is_none_or(|n| message.contains(n))
    })
}

/// The events whose signature `owner` reports.
pub(super) fn owned_events<'a>(host: &Host<'a>, owner: &str) -> Vec<&'a EventRecord> {
    match &host.snap.events {
        Collected::Ok(log) => log
            .records
            .0
            .iter()
            .filter(|e| classify(e).is_some_and(|s| s.owner == Some(owner)))
            .collect(),
        Collected::Error(_) => Vec::new(),
    }
}

/// Whether `event` happened within a day of the snapshot.
pub(super) fn is_recent(host: &Host<'_>, event: &EventRecord) -> bool {
    event.time > host.now() - RECENT
}

/// The first 300 characters of a message, on one line.
fn excerpt(message: &str) -> String {
    let one_line: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Events as evidence: provider, id, time, cause and message excerpt, newest first.
pub(super) fn evidence_list(events: &[&EventRecord]) -> Value {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.time));
    Value::Array(
        sorted
            .iter()
            .take(20)
            .map(|e| {
                let s = classify(e);
                json!({
                    "provider": e.provider, "id": e.id, "time": stamp(e.time),
                    "signature": s.map(|s| s.name), "cause": s.map(|s| s.cause),
                    "explained_by": s.map(|s| s.explained_by), "message": excerpt(&e.message),
                })
            })
            .collect(),
    )
}

/// The AD connector and its account, for the texts.
fn connector_and_account(host: &Host<'_>) -> (String, String) {
    connector_accounts_of(host.snap).first().map_or_else(
        || {
            (
                "the AD connector".to_owned(),
                "the AD DS connector account".to_owned(),
            )
        },
        |a| (a.connector.clone(), a.qualified()),
    )
}

/// The event log, or the `error` verdict.
fn event_log<'a>(host: &Host<'a>) -> Result<&'a [EventRecord], Verdict> {
    match &host.snap.events {
        Collected::Ok(log) => Ok(&log.records.0),
        Collected::Error(e) => Err(unreadable(host, "the Application event log", e)),
    }
}

/// A check that fails on its signatures' recent events and warns on older ones.
fn owned_check(
    id: &'static str,
    facts: &Facts,
    extra: impl Fn(&Host<'_>) -> Vec<String>,
    what: &str,
) -> CheckOutcome {
    let verdict = match connect_host(facts) {
        Err(v) => v,
        Ok(host) => match event_log(&host) {
            Err(v) => v,
            Ok(_) => {
                let def = super::def(id);
                let hits = owned_events(&host, id);
                let recent: Vec<&EventRecord> = hits
                    .iter()
                    .copied()
                    .filter(|e| is_recent(&host, e))
                    .collect();
                let extra = extra(&host);
                let (connector, account) = connector_and_account(&host);
                let ids: Vec<String> = {
                    let mut ids: Vec<String> = hits.iter().map(|e| e.id.to_string()).collect();
                    ids.dedup();
                    ids
                };
                let connectors = connector_accounts_of(host.snap)
                    .iter()
                    .map(|a| a.connector.clone())
                    .collect::<Vec<_>>()
                    .join(", ");
                let vars = [
                    ("server", host.server),
                    ("connector", connector.as_str()),
                    ("account", account.as_str()),
                    ("events", &ids.join(", ")),
                    (
                        "connectors",
                        if connectors.is_empty() {
                            "a forest"
                        } else {
                            connectors.as_str()
                        },
                    ),
                ];
                let evidence = json!({ "events": evidence_list(&hits), "recent": recent.len(), "other_signals": extra });
                if !recent.is_empty() || !extra.is_empty() {
                    let mut reasons = Vec::new();
                    if let Some(latest) = recent.iter().max_by_key(|e| e.time) {
                        let name = classify(latest).map_or("", |s| s.name);
                        reasons.push(format!(
                            "{} event(s) in the last day, latest {name}",
                            recent.len()
                        ));
                    }
                    reasons.extend(extra);
                    verdict(
                        Status::Fail,
                        format!("{what} on {}: {}", host.server, reasons.join("; ")),
                        evidence,
                        render(def.remediation, &vars),
                    )
                } else if let Some(latest) = hits.iter().max_by_key(|e| e.time) {
                    let age =
                        human_seconds((host.now() - latest.time).whole_seconds().unsigned_abs());
                    verdict(
                        Status::Warn,
                        format!(
                            "{what} on {} {age} ago ({} event(s) in the window), none in the last day",
                            host.server,
                            hits.len()
                        ),
                        evidence,
                        render(def.remediation, &vars),
                    )
                } else {
                    let names: Vec<&str> = SIGNATURES
                        .iter()
                        .filter(|s| s.owner == Some(id))
                        .filter_map(|s| s.name.split(' ').next())
                        .collect();
                    let since = host
                        .snap
                        .events
                        .as_result()
                        .map(|l| stamp(l.since))
                        .unwrap_or_default();
                    verdict(
                        Status::Pass,
                        format!(
                            "no {} event in the event log of {} since {since}",
                            names.join("/"),
                            host.server
                        ),
                        evidence,
                        String::new(),
                    )
                }
            }
        },
    };
    finish(id, facts, verdict)
}

/// SRV-06: no corrupt-onboarding events.
pub fn writeback_configuration(facts: &Facts) -> CheckOutcome {
    owned_check(
        WRITEBACK_CONFIGURATION,
        facts,
        |_| Vec::new(),
        "the writeback onboarding state is corrupt",
    )
}

/// SRV-15: no invalid-credentials events, no `no-start-credentials` runs in the last day.
pub fn connector_credentials(facts: &Facts) -> CheckOutcome {
    owned_check(
        CONNECTOR_CREDENTIALS,
        facts,
        |host| match &host.snap.adsync.run_profile_results {
            Collected::Ok(runs) => runs
                .0
                .iter()
                .filter(|r| r.result.eq_ignore_ascii_case("no-start-credentials"))
                .filter(|r| r.start_date.is_none_or(|t| t > host.now() - RECENT))
                .map(|r| {
                    format!(
                        "{} on {} ended in no-start-credentials",
                        r.run_profile_name, r.connector_name
                    )
                })
                .collect(),
            Collected::Error(_) => Vec::new(),
        },
        "the AD DS connector account cannot sign in",
    )
}

/// SRV-16: no `hr=800700CE` events.
pub fn connector_password_length(facts: &Facts) -> CheckOutcome {
    owned_check(
        CONNECTOR_PASSWORD_LENGTH,
        facts,
        |_| Vec::new(),
        "the connector account password is too long (800700CE)",
    )
}

/// SRV-17: no `8023062C` events.
pub fn ldap_sign_and_seal(facts: &Facts) -> CheckOutcome {
    owned_check(
        LDAP_SIGN_AND_SEAL,
        facts,
        |_| Vec::new(),
        "Sign and Encrypt LDAP Traffic is off on the AD connector (8023062C)",
    )
}

/// SRV-18: no `0x8023061f` events.
pub fn forest_writeback_enablement(facts: &Facts) -> CheckOutcome {
    owned_check(
        FOREST_WRITEBACK_ENABLEMENT,
        facts,
        |_| Vec::new(),
        "writeback is not enabled for a forest added later (0x8023061f)",
    )
}

/// SRV-05: the listener is connected: a fresh 31019 heartbeat and no listener error after it.
pub fn writeback_listener(facts: &Facts) -> CheckOutcome {
    let verdict = match connect_host(facts) {
        Err(v) => v,
        Ok(host) => match event_log(&host) {
            Err(v) => v,
            Ok(records) => listener_verdict(&host, records),
        },
    };
    finish(WRITEBACK_LISTENER, facts, verdict)
}

fn listener_verdict(host: &Host<'_>, records: &[EventRecord]) -> Verdict {
    let def = super::def(WRITEBACK_LISTENER);
    let snap = host.snap;
    let staging = matches!(&snap.adsync.scheduler, Collected::Ok(s) if s.staging_mode_enabled);
    let disabled = matches!(&snap.adsync.password_reset_configuration, Collected::Ok(c) if !c.0.is_empty() && c.0.iter().all(|c| !c.enabled));
    if staging || disabled {
        let why = if staging {
            "it is in staging mode (server.staging_mode)"
        } else {
            "writeback is not enabled (server.writeback_enabled)"
        };
        return verdict(
            Status::NotApplicable,
            format!(
                "the writeback listener is not expected to run on {}: {why}",
                host.server
            ),
            json!({ "staging_mode": staging, "writeback_disabled": disabled }),
            String::new(),
        );
    }
    let stopped = matches!(snap.service("ADSync"), Ok(Some(s)) if s.status != "Running");
    let heartbeat = records
        .iter()
        .filter(|e| e.provider == "PasswordResetService" && e.id == 31019)
        .map(|e| e.time)
        .max();
    let errors: Vec<&EventRecord> = owned_events(host, WRITEBACK_LISTENER);
    let after: Vec<&EventRecord> = errors
        .iter()
        .copied()
        .filter(|e| heartbeat.is_none_or(|h| e.time > h))
        .collect();
    let recent: Vec<&EventRecord> = errors
        .iter()
        .copied()
        .filter(|e| is_recent(host, e))
        .collect();
    let retries = records
        .iter()
        .filter(|e| e.provider == "PasswordResetService" && e.id == 32014 && is_recent(host, e))
        .count();
    let age = heartbeat.map(|h| host.now() - h);
    let evidence = json!({
        "last_heartbeat_31019": heartbeat.map(stamp),
        "heartbeat_age_seconds": age.map(|a| a.whole_seconds()),
        "listener_errors": evidence_list(&errors),
        "errors_after_last_heartbeat": after.len(),
        "service_bus_retries_32014_last_day": retries,
    });
    let remediation = |detail: &str| {
        render(
            def.remediation,
            &[("server", host.server), ("detail", detail)],
        )
    };
    let fail = |summary: String| {
        verdict(
            Status::Fail,
            summary.clone(),
            evidence.clone(),
            remediation(&summary),
        )
    };
    if stopped {
        return fail(
            "the ADSync service is stopped, so the writeback listener is not running".to_owned(),
        );
    }
    let Some(age) = age else {
        return fail(format!(
            "no 31019 ServiceBusHeartBeat in the event log since {}: the writeback listener is not connected to the relay",
            snap.events
                .as_result()
                .map(|l| stamp(l.since))
                .unwrap_or_default()
        ));
    };
    let shown = human_seconds(age.whole_seconds().unsigned_abs());
    if age > HEARTBEAT_MAX_AGE {
        let latest = after
            .iter()
            .max_by_key(|e| e.time)
            .and_then(|e| classify(e))
            .map(|s| format!("; since then: {}", s.name))
            .unwrap_or_default();
        return fail(format!(
            "the last 31019 ServiceBusHeartBeat was {shown} ago (expected every 5 minutes){latest}"
        ));
    }
    if let Some(error) = after.iter().max_by_key(|e| e.time) {
        let name = classify(error).map_or("a listener error", |s| s.name);
        return fail(format!(
            "{name} came after the last heartbeat ({shown} ago)"
        ));
    }
    if !recent.is_empty() || retries >= 5 {
        let summary = format!(
            "the listener is connected (heartbeat {shown} ago) but dropped in the last day: {} listener error(s), {retries} Service Bus retries; check the proxy and firewall idle time-out (NET-04)",
            recent.len()
        );
        return verdict(
            Status::Warn,
            summary.clone(),
            evidence,
            remediation(&summary),
        );
    }
    verdict(
        Status::Pass,
        format!(
            "the writeback listener on {} is connected: last 31019 heartbeat {shown} ago",
            host.server
        ),
        evidence,
        String::new(),
    )
}

/// §3: every classified error of the last day that no dedicated check reports, by cause.
pub fn writeback_errors(facts: &Facts) -> CheckOutcome {
    let verdict = match connect_host(facts) {
        Err(v) => v,
        Ok(host) => match event_log(&host) {
            Err(v) => v,
            Ok(records) => errors_verdict(&host, records),
        },
    };
    finish(WRITEBACK_ERRORS, facts, verdict)
}

fn errors_verdict(host: &Host<'_>, records: &[EventRecord]) -> Verdict {
    let def = super::def(WRITEBACK_ERRORS);
    // Per signature: its recent events.
    let mut groups: Vec<(&'static Signature, Vec<&EventRecord>)> = Vec::new();
    let mut unclassified = Vec::new();
    for event in records.iter().filter(|e| is_recent(host, e)) {
        match classify(event) {
            Some(s) if s.owner.is_none() && s.weight > Weight::Info => {
                match groups.iter_mut().find(|(g, _)| std::ptr::eq(*g, s)) {
                    Some((_, list)) => list.push(event),
                    None => groups.push((s, vec![event])),
                }
            }
            Some(_) => {}
            None if event.level != 0 && event.level <= 2 => unclassified.push(event),
            None => {}
        }
    }
    groups.retain(|(s, list)| list.len() >= s.min_recent);
    groups.sort_by(|a, b| b.0.weight.cmp(&a.0.weight).then(b.1.len().cmp(&a.1.len())));
    let causes: Vec<String> = groups
        .iter()
        .map(|(s, list)| {
            format!(
                "{} ×{} ({} → {})",
                s.name,
                list.len(),
                s.cause,
                s.explained_by
            )
        })
        .collect();
    let evidence = json!({
        "causes": groups.iter().map(|(s, list)| json!({
            "signature": s.name, "cause": s.cause, "explained_by": s.explained_by, "weight": s.weight,
            "count": list.len(), "events": evidence_list(list),
        })).collect::<Vec<_>>(),
        "unclassified_errors": evidence_list(&unclassified),
    });
    let worst = groups.iter().map(|(s, _)| s.weight).max();
    let remediation = || {
        render(
            def.remediation,
            &[("server", host.server), ("causes", &causes.join("; "))],
        )
    };
    match worst {
        Some(Weight::Blocker | Weight::Partial) => verdict(
            Status::Fail,
            format!(
                "writeback errors on {} in the last day: {}",
                host.server,
                causes.join("; ")
            ),
            evidence,
            remediation(),
        ),
        Some(_) => verdict(
            Status::Warn,
            format!(
                "writeback warnings on {} in the last day: {}",
                host.server,
                causes.join("; ")
            ),
            evidence,
            remediation(),
        ),
        None if !unclassified.is_empty() => verdict(
            Status::Warn,
            format!(
                "{} unrecognised writeback error event(s) on {} in the last day; read them in the evidence",
                unclassified.len(),
                host.server
            ),
            evidence,
            format!(
                "On {}, read the PasswordResetService and ADSync errors of the last day in Event Viewer → Application.",
                host.server
            ),
        ),
        None => verdict(
            Status::Pass,
            format!(
                "no writeback errors in the event log of {} in the last day",
                host.server
            ),
            evidence,
            String::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::checks::fixtures::{healthy, healthy_host};
    use crate::host::snapshot::Snapshot;

    fn record(provider: &str, id: u32, minutes_ago: i64, message: &str) -> EventRecord {
        EventRecord {
            provider: provider.to_owned(),
            id,
            time: datetime!(2026-11-25 16:00 UTC) - Duration::minutes(minutes_ago),
            level: 2,
            message: message.to_owned(),
        }
    }

    fn with_events(records: Vec<EventRecord>) -> Facts {
        let mut host = healthy_host();
        let snap: &mut Snapshot = &mut host.snapshot;
        if let Collected::Ok(log) = &mut snap.events {
            log.records.0 = records;
        }
        let mut facts = healthy();
        facts.host = Ok(host);
        facts
    }

    #[test]
    fn hresults_inside_messages_win_over_the_event_id() {
        let e = record(
            "PasswordResetService",
            31003,
            1,
            "PasswordResetFail: hr=80230626, message=…denied access",
        );
        assert_eq!(classify(&e).map(|s| s.cause), Some("PERM-02, PERM-11"));
        let e = record(
            "ADSync",
            6329,
            1,
            "BAIL: MMS(4236): admaexport.cpp(2991): 0x8023062C (…128 bit TLS or SSL…)",
        );
        assert_eq!(classify(&e).and_then(|s| s.owner), Some(LDAP_SIGN_AND_SEAL));
        let e = record(
            "ADSync",
            6329,
            1,
            "MMS(3040): admaexport.cpp(2837): The server doesn't contain the LDAP password policy control",
        );
        assert_eq!(classify(&e).map(|s| s.cause), Some("AD-03"));
        let e = record("ADSync", 6329, 1, "something new");
        assert_eq!(classify(&e).map(|s| s.cause), Some("PERM-*, USR-*"));
        let e = record("PasswordResetService", 33008, 1, "ADPasswordPolicyError");
        assert_eq!(classify(&e).map(|s| s.weight), Some(Weight::Warn));
        assert!(classify(&record("Other", 1, 1, "")).is_none());
    }

    #[test]
    fn the_heartbeat_may_be_fifteen_minutes_old_and_no_more() {
        let beat = |minutes| {
            with_events(vec![record(
                "PasswordResetService",
                31019,
                minutes,
                "ServiceBusHeartBeat",
            )])
        };
        assert_eq!(writeback_listener(&beat(14)).status, Status::Pass);
        let stale = writeback_listener(&beat(16));
        assert_eq!(stale.status, Status::Fail);
        assert!(
            stale.summary.contains("16 minutes ago"),
            "{}",
            stale.summary
        );
        let none = writeback_listener(&with_events(vec![]));
        assert_eq!(none.status, Status::Fail);
        assert!(none.summary.contains("no 31019"), "{}", none.summary);
    }

    #[test]
    fn a_listener_that_dropped_and_recovered_warns() {
        let facts = with_events(vec![
            record("PasswordResetService", 31019, 2, "ServiceBusHeartBeat"),
            record("PasswordResetService", 31034, 90, "ServiceBusListenerError"),
        ]);
        let outcome = writeback_listener(&facts);
        assert_eq!(outcome.status, Status::Warn, "{}", outcome.summary);
        assert!(outcome.summary.contains("NET-04"));
    }

    #[test]
    fn old_events_warn_and_recent_ones_fail() {
        let old = with_events(vec![
            record("PasswordResetService", 31019, 1, "ServiceBusHeartBeat"),
            record(
                "PasswordResetService",
                32004,
                3 * 24 * 60,
                "DecryptionError",
            ),
        ]);
        assert_eq!(writeback_configuration(&old).status, Status::Warn);
        let recent = with_events(vec![record(
            "PasswordResetService",
            32004,
            60,
            "DecryptionError",
        )]);
        assert_eq!(writeback_configuration(&recent).status, Status::Fail);
    }

    #[test]
    fn a_few_service_bus_retries_are_normal_many_are_not() {
        let retries = |n: i64| {
            let mut records = vec![record(
                "PasswordResetService",
                31019,
                1,
                "ServiceBusHeartBeat",
            )];
            records.extend(
                (0..n).map(|i| record("PasswordResetService", 32014, 10 + i, "ServiceBusWarning")),
            );
            writeback_errors(&with_events(records)).status
        };
        assert_eq!(retries(2), Status::Pass);
        assert_eq!(retries(6), Status::Warn);
    }
}

//! The cloud checks as pure functions: facts read from Graph in, results out. A fact that
//! could not be read is an `Err` with the reason (and the fix), and the checks that need it
//! report `error` with that reason, never `pass`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use wbhealth_catalogue::Status;

use crate::domain::{ResultRecord, SsprActivity, SsprActivityGroup};

/// Global Administrator's role template id.
pub const GLOBAL_ADMINISTRATOR: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Hybrid Identity Administrator's role template id.
pub const HYBRID_IDENTITY_ADMINISTRATOR: &str = "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2";
/// Service plans that carry Entra ID P1/P2 (and with them, writeback).
pub const PREMIUM_PLANS: [&str; 2] = ["AAD_PREMIUM", "AAD_PREMIUM_P2"];
/// How old the last directory sync may be before it is stale (two or three cycles).
pub const SYNC_STALE_AFTER: Duration = Duration::hours(3);

/// A fact, or why it could not be read (with the fix).
pub type Fact<T> = Result<T, String>;

/// The tenant's `organization` object, as far as the checks need it.
#[derive(Debug, Clone, Default)]
pub struct Organization {
    /// Its display name.
    pub display_name: String,
    /// Whether it syncs from on-premises.
    pub on_premises_sync_enabled: Option<bool>,
    /// When it last synced.
    pub on_premises_last_sync: Option<OffsetDateTime>,
}

/// One subscribed SKU.
#[derive(Debug, Clone)]
pub struct Sku {
    /// Such as `AAD_PREMIUM`.
    pub sku_part_number: String,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted`, `LockedOut`.
    pub capability_status: String,
    /// `prepaidUnits.enabled`.
    pub enabled_units: i64,
    /// The names of its service plans.
    pub service_plans: Vec<String>,
}

/// A principal holding a directory role.
#[derive(Debug, Clone)]
pub struct RoleHolder {
    /// The role definition (template) id.
    pub role_definition_id: String,
    /// The principal's object id.
    pub principal_id: String,
    /// The user, when the principal is a user (a group or app otherwise).
    pub user: Option<DirectoryUser>,
    /// For Global and Hybrid Identity Administrators who are users: the service plans whose
    /// provisioning succeeded.
    pub premium_plans: Option<Fact<Vec<String>>>,
    /// For Global and Hybrid Identity Administrators who are users: whether their UPN's domain
    /// is federated (`domains/{name}.authenticationType`).
    pub federated: Option<Fact<bool>>,
}

/// A user as the checks need it.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    /// Its UPN.
    pub user_principal_name: String,
    /// Whether it is synced from on-premises.
    pub on_premises_sync_enabled: Option<bool>,
    /// Its on-premises SID, when synced.
    pub on_premises_security_identifier: Option<String>,
}

impl RoleHolder {
    /// Whether this holder can configure writeback: Global or Hybrid Identity Administrator.
    pub fn configures_writeback(&self) -> bool {
        self.role_definition_id == GLOBAL_ADMINISTRATOR
            || self.role_definition_id == HYBRID_IDENTITY_ADMINISTRATOR
    }

    fn label(&self) -> String {
        let role = match self.role_definition_id.as_str() {
            GLOBAL_ADMINISTRATOR => "Global Administrator",
            HYBRID_IDENTITY_ADMINISTRATOR => "Hybrid Identity Administrator",
            _ => "a directory role",
        };
        match &self.user {
            Some(u) => format!("{} ({role})", u.user_principal_name),
            None => format!("principal {} ({role}, a group or app)", self.principal_id),
        }
    }
}

/// Everything the tenant-level checks read.
#[derive(Debug, Clone)]
pub struct TenantFacts {
    /// The tenant's name in wbhealth, for messages.
    pub tenant: String,
    /// When the facts were read.
    pub now: OffsetDateTime,
    /// `GET /organization`.
    pub organization: Fact<Organization>,
    /// `GET /subscribedSkus`.
    pub skus: Fact<Vec<Sku>>,
    /// `GET /roleManagement/directory/roleAssignments` with the principals.
    pub role_holders: Fact<Vec<RoleHolder>>,
    /// How many users `userRegistrationDetails` shows with `isSsprEnabled` (0 or at least 1).
    pub sspr_enabled_users: Fact<usize>,
    /// `authorizationPolicy.allowedToUseSSPR`.
    pub allowed_to_use_sspr: Fact<bool>,
    /// `Reset password (by admin)` audit events of the last 24 hours (TEN-09).
    pub admin_resets: Fact<AdminResets>,
    /// Cloud Sync synchronization jobs (CS-06).
    pub cloud_sync_jobs: Fact<CloudSyncJobs>,
}

/// An administrator's password reset (`Reset password (by admin)` audit event) that did not
/// go through an on-premises agent (`additionalDetails` `OnPremisesAgent` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudOnlyReset {
    /// The target user's object id.
    pub user_id: String,
    /// The target user's UPN as the event names it (empty when it names none).
    pub user_principal_name: String,
    /// Who reset it: a user's UPN or an app's display name.
    pub reset_by: String,
    /// `activityDateTime`.
    pub at: String,
    /// Whether the target is synced from on-premises (`onPremisesSyncEnabled`), looked up after
    /// the event was read; `None` when the user no longer exists or is cloud-only.
    pub synced: Option<bool>,
}

/// TEN-09's facts: the last 24 hours of administrator resets that stayed in the cloud.
#[derive(Debug, Clone, Default)]
pub struct AdminResets {
    /// How many `Reset password (by admin)` events were read.
    pub events: usize,
    /// The successful ones with `OnPremisesAgent` `None`, with the target's sync state.
    pub cloud_only: Vec<CloudOnlyReset>,
    /// Set when the audit list was cut short at the page cap (what it says).
    pub truncated: Option<String>,
}

/// One Cloud Sync (AD2AAD) synchronization job.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncJob {
    /// The service principal's display name (the AD domain, when set up in the portal).
    pub service_principal: String,
    /// The job id.
    pub job_id: String,
    /// Such as `AD2AADProvisioning` or `AD2AADPasswordHash`.
    pub template_id: String,
    /// `status.code`: `NotConfigured`, `NotRun`, `Active`, `Paused` or `Quarantine`.
    pub status_code: String,
    /// `status.quarantine.reason`, when quarantined.
    pub quarantine_reason: Option<String>,
    /// `status.quarantine.error.message` (or code), when Graph gives one.
    pub quarantine_error: Option<String>,
    /// `status.quarantine.seriesBegan`.
    pub quarantined_since: Option<String>,
}

/// CS-06's facts: the Cloud Sync jobs of the tenant.
#[derive(Debug, Clone, Default)]
pub struct CloudSyncJobs {
    /// Every AD2AAD job of every Cloud Sync service principal.
    pub jobs: Vec<SyncJob>,
    /// Set when a list was cut short at the page cap (what it says).
    pub truncated: Option<String>,
}

/// A result being built.
fn result(
    check_id: &str,
    status: Status,
    summary: String,
    evidence: Value,
    vars: &[(&str, &str)],
    now: OffsetDateTime,
) -> ResultRecord {
    let remediation = match status {
        Status::Pass => String::new(),
        _ => wbhealth_catalogue::find(check_id)
            .map(|def| wbhealth_catalogue::render(def.remediation, vars))
            .unwrap_or_default(),
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

/// A check that could not look: `error` with the reason; the fix is in the reason.
fn could_not_look(check_id: &str, reason: &str, now: OffsetDateTime) -> ResultRecord {
    let (cause, fix) = reason.split_once("; fix: ").unwrap_or((reason, ""));
    ResultRecord {
        check_id: check_id.to_owned(),
        status: Status::Error,
        summary: format!("could not look: {cause}"),
        evidence: json!({ "error": reason }),
        remediation: fix.to_owned(),
        duration_ms: 0,
        observed_at: now,
    }
}

/// Every tenant-level cloud check over `facts`, in catalogue order.
pub fn evaluate(facts: &TenantFacts) -> Vec<ResultRecord> {
    vec![
        writeback_licence(facts),
        licensed_admin(facts),
        sspr_enabled(facts),
        writeback_toggle(facts),
        sspr_for_admins(facts),
        writeback_admin_cloud_only(facts),
        sync_freshness(facts),
        admin_resets_not_written_back(facts),
        cloud_sync_quarantine(facts),
    ]
}

/// The audit activity TEN-09 reads.
pub const ADMIN_RESET_ACTIVITY: &str = "Reset password (by admin)";

/// The successful `Reset password (by admin)` events whose `OnPremisesAgent` is `None`, with
/// `synced` not yet known.
pub fn cloud_only_resets(events: &[Value]) -> Vec<CloudOnlyReset> {
    events
        .iter()
        .filter(|e| e["activityDisplayName"] == ADMIN_RESET_ACTIVITY)
        .filter(|e| e["result"] == "success")
        .filter(|e| {
            e["additionalDetails"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| {
                    d["key"] == "OnPremisesAgent"
                        && d["value"]
                            .as_str()
                            .is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
                })
        })
        .flat_map(|e| {
            let initiator = &e["initiatedBy"];
            let reset_by = initiator["user"]["userPrincipalName"]
                .as_str()
                .or_else(|| initiator["app"]["displayName"].as_str())
                .unwrap_or("unknown")
                .to_owned();
            let at = e["activityDateTime"].as_str().unwrap_or("").to_owned();
            e["targetResources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["type"] == "User")
                .filter_map(move |t| {
                    Some(CloudOnlyReset {
                        user_id: t["id"].as_str()?.to_owned(),
                        user_principal_name: t["userPrincipalName"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                        reset_by: reset_by.clone(),
                        at: at.clone(),
                        synced: None,
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// TEN-09: administrator resets of synced users that never reached Active Directory.
pub fn admin_resets_not_written_back(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.admin_reset_not_written_back";
    let resets = match &facts.admin_resets {
        Ok(r) => r,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let flagged: Vec<&CloudOnlyReset> = resets
        .cloud_only
        .iter()
        .filter(|r| r.synced == Some(true))
        .collect();
    let evidence = json!({
        "admin_reset_events": resets.events,
        "synced_users_reset_in_the_cloud_only": flagged.iter().map(|r| json!({
            "user": r.user_principal_name,
            "user_id": r.user_id,
            "reset_by": r.reset_by,
            "at": r.at,
        })).collect::<Vec<_>>(),
        "truncated": resets.truncated,
    });
    if flagged.is_empty() {
        if let Some(note) = &resets.truncated {
            // The events not read could hold exactly the resets this check looks for.
            return ResultRecord {
                check_id: ID.to_owned(),
                status: Status::Error,
                summary: format!(
                    "could not look at every administrator reset of the last 24 hours: {note}"
                ),
                evidence,
                remediation: "Review the audit log by hand: Entra admin center → Monitoring → Audit logs → Activity Reset password (by admin), and check the OnPremisesAgent detail of synced users.".into(),
                duration_ms: 0,
                observed_at: facts.now,
            };
        }
        return result(
            ID,
            Status::Pass,
            format!(
                "no synced user's password was reset by an administrator in the cloud only in the last 24 hours ({} administrator resets read)",
                resets.events
            ),
            evidence,
            &[],
            facts.now,
        );
    }
    let mut named: Vec<String> = flagged
        .iter()
        .map(|r| {
            let user = if r.user_principal_name.is_empty() {
                r.user_id.as_str()
            } else {
                r.user_principal_name.as_str()
            };
            format!("{user} (reset by {})", r.reset_by)
        })
        .collect();
    named.sort();
    named.dedup();
    let resets_text = named.join(", ");
    let mut summary = format!(
        "{} administrator reset(s) of synced users stayed in the cloud (OnPremisesAgent None) and never reached Active Directory: {resets_text}",
        flagged.len()
    );
    if let Some(note) = &resets.truncated {
        summary.push_str(&format!("; the list may be longer: {note}"));
    }
    // Info by design: the severity is info, the status warns so that it shows.
    result(
        ID,
        Status::Warn,
        summary,
        evidence,
        &[("tenant", &facts.tenant), ("resets", &resets_text)],
        facts.now,
    )
}

/// CS-06: Cloud Sync provisioning jobs in quarantine.
pub fn cloud_sync_quarantine(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.cloud_sync_quarantine";
    let found = match &facts.cloud_sync_jobs {
        Ok(j) => j,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let evidence = json!({
        "jobs": found.jobs.iter().map(|j| json!({
            "service_principal": j.service_principal,
            "job_id": j.job_id,
            "template_id": j.template_id,
            "status_code": j.status_code,
            "quarantine_reason": j.quarantine_reason,
            "quarantine_error": j.quarantine_error,
            "quarantined_since": j.quarantined_since,
        })).collect::<Vec<_>>(),
        "truncated": found.truncated,
    });
    let quarantined: Vec<&SyncJob> = found
        .jobs
        .iter()
        .filter(|j| j.status_code.eq_ignore_ascii_case("Quarantine"))
        .collect();
    if !quarantined.is_empty() {
        let jobs = quarantined
            .iter()
            .map(|j| {
                let mut text = format!(
                    "{} job {} ({}) since {}: {}",
                    j.service_principal,
                    j.job_id,
                    j.template_id,
                    j.quarantined_since.as_deref().unwrap_or("an unknown time"),
                    j.quarantine_reason.as_deref().unwrap_or("no reason given")
                );
                if let Some(e) = &j.quarantine_error {
                    text.push_str(&format!(" ({e})"));
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mut summary = format!("Cloud Sync is quarantined: {jobs}");
        if let Some(note) = &found.truncated {
            summary.push_str(&format!("; more jobs may exist: {note}"));
        }
        let first = quarantined[0];
        return result(
            ID,
            Status::Warn,
            summary,
            evidence,
            &[
                ("tenant", &facts.tenant),
                ("jobs", &jobs),
                ("service_principal", &first.service_principal),
                ("job_id", &first.job_id),
            ],
            facts.now,
        );
    }
    if let Some(note) = &found.truncated {
        // A job on a page not read could be the quarantined one.
        return ResultRecord {
            check_id: ID.to_owned(),
            status: Status::Error,
            summary: format!("could not read every Cloud Sync job: {note}"),
            evidence,
            remediation: "Check the Cloud Sync configurations by hand: Entra admin center → Identity → Hybrid management → Microsoft Entra Connect → Cloud sync.".into(),
            duration_ms: 0,
            observed_at: facts.now,
        };
    }
    if found.jobs.is_empty() {
        return result(
            ID,
            Status::NotApplicable,
            "the tenant has no Cloud Sync (AD2AAD) provisioning job".into(),
            evidence,
            &[("tenant", &facts.tenant)],
            facts.now,
        );
    }
    let states = found
        .jobs
        .iter()
        .map(|j| {
            format!(
                "{} {} is {}",
                j.service_principal, j.template_id, j.status_code
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    result(
        ID,
        Status::Pass,
        format!("no Cloud Sync job is quarantined ({states})"),
        evidence,
        &[],
        facts.now,
    )
}

/// TEN-01.
pub fn writeback_licence(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.writeback_licence";
    let skus = match &facts.skus {
        Ok(skus) => skus,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let premium = |s: &Sku| {
        s.service_plans
            .iter()
            .any(|p| PREMIUM_PLANS.contains(&p.as_str()))
    };
    let evidence = json!({
        "skus": skus.iter().map(|s| json!({
            "sku_part_number": s.sku_part_number,
            "capability_status": s.capability_status,
            "enabled_units": s.enabled_units,
            "includes_p1": premium(s),
        })).collect::<Vec<_>>()
    });
    if let Some(good) = skus
        .iter()
        .find(|s| premium(s) && s.capability_status == "Enabled" && s.enabled_units > 0)
    {
        return result(
            ID,
            Status::Pass,
            format!(
                "{} includes Entra ID P1/P2 ({} enabled units)",
                good.sku_part_number, good.enabled_units
            ),
            evidence,
            &[],
            facts.now,
        );
    }
    let problem = match skus.iter().find(|s| premium(s)) {
        Some(s) => format!(
            "{} includes P1 but its status is {} with {} enabled units",
            s.sku_part_number, s.capability_status, s.enabled_units
        ),
        None if skus.is_empty() => "no subscriptions at all".to_owned(),
        None => format!(
            "subscriptions without P1: {}",
            skus.iter()
                .map(|s| s.sku_part_number.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    result(
        ID,
        Status::Fail,
        format!("no enabled licence includes Entra ID P1/P2: {problem}"),
        evidence,
        &[("tenant", &facts.tenant), ("problem", &problem)],
        facts.now,
    )
}

/// TEN-03.
pub fn licensed_admin(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.licensed_admin";
    let holders = match &facts.role_holders {
        Ok(h) => h,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let admins: Vec<&RoleHolder> = holders
        .iter()
        .filter(|h| h.configures_writeback() && h.user.is_some())
        .collect();
    let mut unreadable = Vec::new();
    let mut evidence = Vec::new();
    for admin in &admins {
        match &admin.premium_plans {
            Some(Ok(plans)) => {
                evidence.push(json!({"admin": admin.label(), "premium_plans": plans}));
                if !plans.is_empty() {
                    return result(
                        ID,
                        Status::Pass,
                        format!("{} holds Entra ID P1/P2", admin.label()),
                        json!({"admins": evidence}),
                        &[],
                        facts.now,
                    );
                }
            }
            Some(Err(e)) => unreadable.push(e.clone()),
            None => {}
        }
    }
    if let Some(e) = unreadable.first() {
        return could_not_look(ID, e, facts.now);
    }
    let names = admins
        .iter()
        .map(|a| a.label())
        .collect::<Vec<_>>()
        .join(", ");
    let names = if names.is_empty() {
        "none found".to_owned()
    } else {
        names
    };
    result(
        ID,
        Status::Warn,
        format!("no Global or Hybrid Identity Administrator holds Entra ID P1/P2 ({names})"),
        json!({"admins": evidence}),
        &[("tenant", &facts.tenant), ("admins", &names)],
        facts.now,
    )
}

/// TEN-04, through the documented proxy.
pub fn sspr_enabled(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.sspr_enabled";
    match &facts.sspr_enabled_users {
        Err(e) => could_not_look(ID, e, facts.now),
        Ok(0) => result(ID, Status::Fail, "no user is enabled for self-service password reset (userRegistrationDetails has none with isSsprEnabled)".into(), json!({"users_with_sspr_enabled": 0}), &[("tenant", &facts.tenant)], facts.now),
        Ok(_) => result(ID, Status::Pass, "self-service password reset is enabled for users (userRegistrationDetails; whether it is scoped to a group cannot be read through a supported API)".into(), json!({"users_with_sspr_enabled": "at least 1"}), &[], facts.now),
    }
}

/// TEN-06: no supported API.
pub fn writeback_toggle(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.writeback_toggle";
    result(ID, Status::NotApplicable, "the portal's writeback option cannot be read through a supported API (Graph's passwordWritebackEnabled is documented as not in use); the sync server's checks cover the on-premises side".into(), json!({"reason": "no supported API"}), &[("tenant", &facts.tenant)], facts.now)
}

/// TEN-07.
pub fn sspr_for_admins(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.sspr_for_admins";
    let allowed = match &facts.allowed_to_use_sspr {
        Ok(a) => *a,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    if allowed {
        return result(
            ID,
            Status::Pass,
            "administrators may use self-service password reset (allowedToUseSSPR is true)".into(),
            json!({"allowed_to_use_sspr": true}),
            &[],
            facts.now,
        );
    }
    let holders = match &facts.role_holders {
        Ok(h) => h,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let mut synced: Vec<String> = holders
        .iter()
        .filter_map(|h| h.user.as_ref())
        .filter(|u| u.on_premises_sync_enabled == Some(true))
        .map(|u| u.user_principal_name.clone())
        .collect();
    synced.sort();
    synced.dedup();
    let evidence = json!({"allowed_to_use_sspr": false, "synced_role_holders": synced});
    if synced.is_empty() {
        return result(
            ID,
            Status::Pass,
            "SSPR for administrators is off, but no synced user holds an admin role".into(),
            evidence,
            &[],
            facts.now,
        );
    }
    let names = synced.join(", ");
    result(
        ID,
        Status::Fail,
        format!(
            "SSPR for administrators is off and synced users hold admin roles: {names} (they get SSPR_009)"
        ),
        evidence,
        &[("tenant", &facts.tenant), ("admins", &names)],
        facts.now,
    )
}

/// TEN-08, the Graph part.
pub fn writeback_admin_cloud_only(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.writeback_admin_cloud_only";
    let holders = match &facts.role_holders {
        Ok(h) => h,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let admins: Vec<&RoleHolder> = holders
        .iter()
        .filter(|h| h.configures_writeback())
        .collect();
    let evidence = json!({
        "holders": admins.iter().map(|h| json!({
            "holder": h.label(),
            "direct_user": h.user.is_some(),
            "on_premises_sync_enabled": h.user.as_ref().and_then(|u| u.on_premises_sync_enabled),
        })).collect::<Vec<_>>()
    });
    let cloud_only = |h: &&&RoleHolder| {
        h.user
            .as_ref()
            .is_some_and(|u| u.on_premises_sync_enabled != Some(true))
    };
    if let Some(good) = admins
        .iter()
        .filter(cloud_only)
        .find(|h| matches!(h.federated, Some(Ok(false)) | None))
    {
        return result(
            ID,
            Status::Pass,
            format!(
                "{} is cloud-only, on a managed domain, and holds the role directly",
                good.label()
            ),
            evidence,
            &[],
            facts.now,
        );
    }
    if let Some(e) = admins
        .iter()
        .filter(cloud_only)
        .find_map(|h| match &h.federated {
            Some(Err(e)) => Some(e),
            _ => None,
        })
    {
        return could_not_look(ID, e, facts.now);
    }
    let problem = if admins.is_empty() {
        "nobody holds Global or Hybrid Identity Administrator".to_owned()
    } else {
        admins
            .iter()
            .map(|h| match &h.user {
                Some(u) if u.on_premises_sync_enabled == Some(true) => {
                    format!("{} is synced from on-premises", h.label())
                }
                Some(_) => format!("{} signs in through a federated domain", h.label()),
                None => format!("{} holds the role through a group or app", h.label()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    result(
        ID,
        Status::Fail,
        format!(
            "no cloud-only, directly assigned administrator can configure writeback: {problem}"
        ),
        evidence,
        &[("tenant", &facts.tenant), ("problem", &problem)],
        facts.now,
    )
}

/// OBJ-04, the Graph part.
pub fn sync_freshness(facts: &TenantFacts) -> ResultRecord {
    const ID: &str = "tenant.sync_freshness";
    let org = match &facts.organization {
        Ok(o) => o,
        Err(e) => return could_not_look(ID, e, facts.now),
    };
    let last = org.on_premises_last_sync.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    });
    let evidence = json!({
        "on_premises_sync_enabled": org.on_premises_sync_enabled,
        "on_premises_last_sync_date_time": last,
    });
    if org.on_premises_sync_enabled != Some(true) {
        return result(ID, Status::NotApplicable, "the tenant does not synchronize from on-premises (onPremisesSyncEnabled is not true), so writeback has nothing to write to".into(), evidence, &[("tenant", &facts.tenant), ("last_sync", "never"), ("problem", "sync is not enabled")], facts.now);
    }
    let Some(at) = org.on_premises_last_sync else {
        return result(
            ID,
            Status::Warn,
            "sync is enabled but the tenant never synchronized".into(),
            evidence,
            &[
                ("tenant", &facts.tenant),
                ("last_sync", "never"),
                ("problem", "no sync has completed"),
            ],
            facts.now,
        );
    };
    let age = facts.now - at;
    let last = last.unwrap_or_default();
    if age > SYNC_STALE_AFTER {
        let problem = format!(
            "{} hours ago, more than {} hours",
            age.whole_hours(),
            SYNC_STALE_AFTER.whole_hours()
        );
        return result(
            ID,
            Status::Warn,
            format!("the last directory sync was {problem}"),
            evidence,
            &[
                ("tenant", &facts.tenant),
                ("last_sync", &last),
                ("problem", &problem),
            ],
            facts.now,
        );
    }
    result(
        ID,
        Status::Pass,
        format!(
            "the last directory sync was {} minutes ago",
            age.whole_minutes()
        ),
        evidence,
        &[],
        facts.now,
    )
}

/// What the on-demand user check reads.
#[derive(Debug, Clone)]
pub struct UserFacts {
    /// The UPN asked for.
    pub upn: String,
    /// The user; `Ok(None)` when it does not exist.
    pub user: Fact<Option<DirectoryUser>>,
    /// Premium service plans provisioned for the user.
    pub premium_plans: Fact<Vec<String>>,
    /// `userRegistrationDetails` of the user: (isSsprEnabled, isSsprRegistered, isSsprCapable).
    pub registration: Fact<Option<(bool, bool, bool)>>,
    /// When.
    pub now: OffsetDateTime,
}

/// TEN-02, TEN-05 and the sync state for one user.
pub fn evaluate_user(facts: &UserFacts) -> Vec<ResultRecord> {
    let now = facts.now;
    let upn = facts.upn.as_str();
    let user = match &facts.user {
        Err(e) => {
            return [
                "tenant.user_licence",
                "tenant.user_registration",
                "tenant.user_sync_state",
            ]
            .into_iter()
            .map(|id| could_not_look(id, e, now))
            .collect();
        }
        Ok(None) => {
            return [
                "tenant.user_licence",
                "tenant.user_registration",
                "tenant.user_sync_state",
            ]
            .into_iter()
            .map(|id| {
                result(
                    id,
                    Status::Fail,
                    format!("{upn} does not exist in the tenant"),
                    json!({"user": upn, "exists": false}),
                    &[("user", upn), ("problem", "the user does not exist")],
                    now,
                )
            })
            .collect();
        }
        Ok(Some(user)) => user,
    };
    let licence = match &facts.premium_plans {
        Err(e) => could_not_look("tenant.user_licence", e, now),
        Ok(plans) if !plans.is_empty() => result(
            "tenant.user_licence",
            Status::Pass,
            format!("{upn} holds {}", plans.join(", ")),
            json!({"user": upn, "premium_plans": plans}),
            &[],
            now,
        ),
        Ok(_) => result(
            "tenant.user_licence",
            Status::Fail,
            format!(
                "{upn} has no Entra ID P1/P2 service plan provisioned (the user would see SSPR_0012)"
            ),
            json!({"user": upn, "premium_plans": []}),
            &[("user", upn)],
            now,
        ),
    };
    let registration = match &facts.registration {
        Err(e) => could_not_look("tenant.user_registration", e, now),
        Ok(None) => result(
            "tenant.user_registration",
            Status::Fail,
            format!("{upn} has no registration details"),
            json!({"user": upn}),
            &[("user", upn), ("problem", "no registration details")],
            now,
        ),
        Ok(Some((enabled, registered, capable))) => {
            let evidence = json!({"user": upn, "is_sspr_enabled": enabled, "is_sspr_registered": registered, "is_sspr_capable": capable});
            let mut problems = Vec::new();
            if !enabled {
                problems.push("not enabled for SSPR (SSPR_0013 when SSPR is scoped to a group)");
            }
            if !registered {
                problems.push("not registered for SSPR (SSPR_0014)");
            }
            if !capable && *registered {
                problems.push("registered methods do not satisfy the policy");
            }
            if problems.is_empty() {
                result(
                    "tenant.user_registration",
                    Status::Pass,
                    format!("{upn} is enabled, registered and capable for SSPR"),
                    evidence,
                    &[],
                    now,
                )
            } else {
                let problem = problems.join("; ");
                result(
                    "tenant.user_registration",
                    Status::Fail,
                    format!("{upn}: {problem}"),
                    evidence,
                    &[("user", upn), ("problem", &problem)],
                    now,
                )
            }
        }
    };
    let evidence = json!({"user": upn, "on_premises_sync_enabled": user.on_premises_sync_enabled, "on_premises_security_identifier": user.on_premises_security_identifier});
    let sync = if user.on_premises_sync_enabled == Some(true) {
        result(
            "tenant.user_sync_state",
            Status::Pass,
            format!("{upn} is synchronized from on-premises"),
            evidence,
            &[],
            now,
        )
    } else {
        result(
            "tenant.user_sync_state",
            Status::Fail,
            format!(
                "{upn} is cloud-only (onPremisesSyncEnabled is not true): its password is never written back"
            ),
            evidence,
            &[("user", upn)],
            now,
        )
    };
    vec![licence, registration, sync]
}

/// The check that explains an SSPR audit failure reason, after section 3.4 of the reference.
pub fn check_for_reason(reason: &str) -> Option<&'static str> {
    let r = reason.to_ascii_lowercase();
    let table: [(&[&str], &str); 9] = [
        (
            &["usernotlicensed", "not licensed", "licence", "license"],
            "tenant.user_licence",
        ),
        (
            &[
                "tenantssprflagdisabled",
                "ssprnotenabledinuserpolicy",
                "usernotmemberofscopedaccessgroup",
                "not enabled for sspr",
                "not a member of the scoped",
            ],
            "tenant.sspr_enabled",
        ),
        (
            &[
                "usernotproperlyconfigured",
                "not registered",
                "properly configured",
            ],
            "tenant.user_registration",
        ),
        (
            &["writebacknotenabled", "writeback not enabled"],
            "tenant.writeback_toggle",
        ),
        (
            &[
                "onpremisesadminactionrequired",
                "admin action required",
                "access denied",
            ],
            "permissions.reset_password",
        ),
        (
            &[
                "onpremisesconnectivityerror",
                "connectivity",
                "on-premises service",
            ],
            "network.servicebus_relay",
        ),
        (
            &[
                "fuzzypolicyviolation",
                "complexity",
                "passwordpolicy",
                "password policy",
            ],
            "policy.password_complexity",
        ),
        (
            &[
                "passwordtooyoung",
                "minimum password age",
                "min password age",
            ],
            "policy.min_password_age",
        ),
        (&["sspr_009", "administrator"], "tenant.sspr_for_admins"),
    ];
    table
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| r.contains(n)))
        .map(|(_, id)| *id)
}

/// Counts Self-service Password Management audit events by activity, result and reason.
pub fn sspr_activity(events: &[Value], since: OffsetDateTime) -> SsprActivity {
    let mut groups: BTreeMap<(String, String, String), (u64, Option<OffsetDateTime>)> =
        BTreeMap::new();
    let mut failures = 0;
    for e in events {
        let activity = e["activityDisplayName"].as_str().unwrap_or("").to_owned();
        let result = e["result"].as_str().unwrap_or("unknown").to_owned();
        let reason = e["resultReason"].as_str().unwrap_or("").trim().to_owned();
        let at = e["activityDateTime"].as_str().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
        if result != "success" {
            failures += 1;
        }
        let slot = groups
            .entry((activity, result, reason))
            .or_insert((0, None));
        slot.0 += 1;
        slot.1 = match (slot.1, at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut groups: Vec<SsprActivityGroup> = groups
        .into_iter()
        .map(
            |((activity, result, reason), (count, last_seen))| SsprActivityGroup {
                check_id: (result != "success")
                    .then(|| check_for_reason(&reason))
                    .flatten()
                    .map(str::to_owned),
                activity,
                result,
                reason,
                count,
                last_seen,
            },
        )
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.activity.cmp(&b.activity))
    });
    SsprActivity {
        since: Some(since),
        total: events.len() as u64,
        failures,
        groups,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> TenantFacts {
        let now = time::macros::datetime!(2026-11-25 12:00 UTC);
        TenantFacts {
            tenant: "Contoso".into(),
            now,
            organization: Ok(Organization {
                display_name: "Contoso".into(),
                on_premises_sync_enabled: Some(true),
                on_premises_last_sync: Some(now - Duration::minutes(20)),
            }),
            skus: Ok(vec![Sku {
                sku_part_number: "AAD_PREMIUM".into(),
                capability_status: "Enabled".into(),
                enabled_units: 10,
                service_plans: vec!["AAD_PREMIUM".into(), "MFA_PREMIUM".into()],
            }]),
            role_holders: Ok(vec![RoleHolder {
                role_definition_id: GLOBAL_ADMINISTRATOR.into(),
                principal_id: "1".into(),
                user: Some(DirectoryUser {
                    user_principal_name: "admin@contoso.onmicrosoft.com".into(),
                    on_premises_sync_enabled: None,
                    on_premises_security_identifier: None,
                }),
                premium_plans: Some(Ok(vec!["AAD_PREMIUM".into()])),
                federated: Some(Ok(false)),
            }]),
            sspr_enabled_users: Ok(1),
            allowed_to_use_sspr: Ok(true),
            admin_resets: Ok(AdminResets {
                events: 1,
                cloud_only: vec![CloudOnlyReset {
                    user_id: "u-cloud".into(),
                    user_principal_name: "cloud@contoso.onmicrosoft.com".into(),
                    reset_by: "admin@contoso.onmicrosoft.com".into(),
                    at: "2026-11-25T10:00:00Z".into(),
                    synced: None,
                }],
                truncated: None,
            }),
            cloud_sync_jobs: Ok(CloudSyncJobs {
                jobs: vec![SyncJob {
                    service_principal: "contoso.com".into(),
                    job_id: "AD2AADProvisioning.fd1c9b9e8077402c8bc03a7186c8f976".into(),
                    template_id: "AD2AADProvisioning".into(),
                    status_code: "Active".into(),
                    quarantine_reason: None,
                    quarantine_error: None,
                    quarantined_since: None,
                }],
                truncated: None,
            }),
        }
    }

    fn statuses(results: &[ResultRecord]) -> Vec<(String, Status)> {
        results
            .iter()
            .map(|r| (r.check_id.clone(), r.status))
            .collect()
    }

    #[test]
    fn a_healthy_tenant_passes_and_the_toggle_says_why_it_cannot_tell() {
        let results = evaluate(&healthy());
        for r in &results {
            let expected = if r.check_id == "tenant.writeback_toggle" {
                Status::NotApplicable
            } else {
                Status::Pass
            };
            assert_eq!(r.status, expected, "{r:?}");
        }
        assert!(
            results
                .iter()
                .all(|r| wbhealth_catalogue::find(&r.check_id).is_some())
        );
    }

    #[test]
    fn broken_facts_fail_each_check() {
        let mut f = healthy();
        f.skus = Ok(vec![Sku {
            sku_part_number: "O365_BUSINESS_ESSENTIALS".into(),
            capability_status: "Enabled".into(),
            enabled_units: 5,
            service_plans: vec!["EXCHANGE_S_STANDARD".into()],
        }]);
        f.role_holders = Ok(vec![
            RoleHolder {
                role_definition_id: GLOBAL_ADMINISTRATOR.into(),
                principal_id: "2".into(),
                user: Some(DirectoryUser {
                    user_principal_name: "synced@contoso.com".into(),
                    on_premises_sync_enabled: Some(true),
                    on_premises_security_identifier: Some("S-1-5-21-1".into()),
                }),
                premium_plans: Some(Ok(vec![])),
                federated: Some(Ok(false)),
            },
            RoleHolder {
                role_definition_id: HYBRID_IDENTITY_ADMINISTRATOR.into(),
                principal_id: "3".into(),
                user: Some(DirectoryUser {
                    user_principal_name: "hia@fed.contoso.com".into(),
                    on_premises_sync_enabled: None,
                    on_premises_security_identifier: None,
                }),
                premium_plans: Some(Ok(vec![])),
                federated: Some(Ok(true)),
            },
        ]);
        f.sspr_enabled_users = Ok(0);
        f.allowed_to_use_sspr = Ok(false);
        f.organization = Ok(Organization {
            display_name: "C".into(),
            on_premises_sync_enabled: Some(true),
            on_premises_last_sync: Some(f.now - Duration::days(2)),
        });
        let results = evaluate(&f);
        assert_eq!(
            statuses(&results),
            vec![
                ("tenant.writeback_licence".into(), Status::Fail),
                ("tenant.licensed_admin".into(), Status::Warn),
                ("tenant.sspr_enabled".into(), Status::Fail),
                ("tenant.writeback_toggle".into(), Status::NotApplicable),
                ("tenant.sspr_for_admins".into(), Status::Fail),
                ("tenant.writeback_admin_cloud_only".into(), Status::Fail),
                ("tenant.sync_freshness".into(), Status::Warn),
                ("tenant.admin_reset_not_written_back".into(), Status::Pass),
                ("tenant.cloud_sync_quarantine".into(), Status::Pass),
            ]
        );
        assert!(
            results[4].remediation.contains("synced@contoso.com"),
            "{}",
            results[4].remediation
        );
        assert!(results[4].remediation.contains("@{allowedToUseSSPR=$true}"));
        assert!(results[5].summary.contains("hia@fed.contoso.com (Hybrid Identity Administrator) signs in through a federated domain"), "{}", results[5].summary);
    }

    #[test]
    fn what_could_not_be_read_is_an_error_never_a_pass() {
        let mut f = healthy();
        let denied = "the app may not read x: 403; fix: add the application permission AuditLog.Read.All and grant admin consent".to_owned();
        f.sspr_enabled_users = Err(denied.clone());
        f.role_holders = Err(denied.clone());
        let results = evaluate(&f);
        for id in [
            "tenant.sspr_enabled",
            "tenant.licensed_admin",
            "tenant.writeback_admin_cloud_only",
        ] {
            let r = results.iter().find(|r| r.check_id == id).expect("present");
            assert_eq!(r.status, Status::Error, "{id}");
            assert!(r.remediation.contains("grant admin consent"), "{r:?}");
        }
    }

    #[test]
    fn audit_events_are_grouped_and_linked_to_checks() {
        let since = time::macros::datetime!(2026-11-24 12:00 UTC);
        let events = vec![
            json!({"activityDisplayName": "Reset password (self-service)", "result": "failure", "resultReason": "User is not licensed (UserNotLicensed)", "activityDateTime": "2026-11-25T10:00:00Z"}),
            json!({"activityDisplayName": "Reset password (self-service)", "result": "failure", "resultReason": "User is not licensed (UserNotLicensed)", "activityDateTime": "2026-11-25T11:00:00Z"}),
            json!({"activityDisplayName": "Reset password (self-service)", "result": "success", "resultReason": "", "activityDateTime": "2026-11-25T09:00:00Z"}),
        ];
        let a = sspr_activity(&events, since);
        assert_eq!((a.total, a.failures, a.groups.len()), (3, 2, 2));
        assert_eq!(a.groups[0].count, 2);
        assert_eq!(a.groups[0].check_id.as_deref(), Some("tenant.user_licence"));
        assert_eq!(a.groups[1].check_id, None);
        for id in [
            "tenant.user_licence",
            "tenant.sspr_enabled",
            "network.servicebus_relay",
            "policy.password_complexity",
            "permissions.reset_password",
        ] {
            assert!(
                wbhealth_catalogue::find(id).is_some(),
                "{id} is in the catalogue"
            );
        }
    }

    fn admin_reset(target: &str, upn: &str, agent: &str, result: &str) -> Value {
        json!({
            "id": "SSPR_0b1d",
            "category": "UserManagement",
            "activityDisplayName": "Reset password (by admin)",
            "activityDateTime": "2026-11-25T10:00:00Z",
            "loggedByService": "Self-service Password Management",
            "result": result,
            "resultReason": "",
            "initiatedBy": {"app": null, "user": {"id": "u-it", "userPrincipalName": "it.admin@contoso.com"}},
            "targetResources": [{"id": target, "type": "User", "userPrincipalName": upn, "modifiedProperties": []}],
            "additionalDetails": [{"key": "OnPremisesAgent", "value": agent}]
        })
    }

    #[test]
    fn only_successful_resets_without_an_on_premises_agent_are_cloud_only() {
        let events = vec![
            admin_reset("u-1", "adele@contoso.com", "None", "success"),
            admin_reset(
                "u-2",
                "megan@contoso.com",
                "Microsoft Entra Connect",
                "success",
            ),
            admin_reset("u-3", "lee@contoso.com", "CloudSync", "success"),
            admin_reset("u-4", "joni@contoso.com", "None", "failure"),
        ];
        let found = cloud_only_resets(&events);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (
                found[0].user_principal_name.as_str(),
                found[0].reset_by.as_str()
            ),
            ("adele@contoso.com", "it.admin@contoso.com")
        );
    }

    #[test]
    fn a_cloud_only_reset_of_a_synced_user_warns_naming_user_and_resetter() {
        let mut f = healthy();
        let mut reset =
            cloud_only_resets(&[admin_reset("u-1", "adele@contoso.com", "None", "success")]);
        reset[0].synced = Some(true);
        f.admin_resets = Ok(AdminResets {
            events: 1,
            cloud_only: reset,
            truncated: None,
        });
        let r = admin_resets_not_written_back(&f);
        assert_eq!(r.status, Status::Warn, "{r:?}");
        assert!(
            r.summary
                .contains("adele@contoso.com (reset by it.admin@contoso.com)"),
            "{}",
            r.summary
        );
        assert!(
            r.remediation.contains("Contoso") && r.remediation.contains("adele@contoso.com"),
            "{}",
            r.remediation
        );
        assert!(!r.remediation.contains('{'), "{}", r.remediation);
        assert_eq!(
            wbhealth_catalogue::find(&r.check_id).map(|d| d.severity),
            Some(wbhealth_catalogue::Severity::Info)
        );
    }

    #[test]
    fn a_cut_short_audit_list_with_nothing_found_is_an_error_not_a_pass() {
        let mut f = healthy();
        f.admin_resets = Ok(AdminResets {
            events: 5000,
            cloud_only: vec![],
            truncated: Some(
                "only the first 50 pages (5000 items) were read; Graph offered more".into(),
            ),
        });
        let r = admin_resets_not_written_back(&f);
        assert_eq!(r.status, Status::Error, "{r:?}");
        assert!(r.summary.contains("first 50 pages"), "{}", r.summary);
        f.admin_resets = Err("the app may not read the directory audit log: Graph answered 403; fix: add the application permission AuditLog.Read.All to the app registration and grant admin consent".into());
        let r = admin_resets_not_written_back(&f);
        assert_eq!(r.status, Status::Error);
        assert!(r.remediation.contains("AuditLog.Read.All"), "{r:?}");
    }

    #[test]
    fn a_quarantined_cloud_sync_job_warns_with_its_reason_and_none_is_not_applicable() {
        let mut f = healthy();
        f.cloud_sync_jobs = Ok(CloudSyncJobs {
            jobs: vec![SyncJob {
                service_principal: "contoso.com".into(),
                job_id: "AD2AADProvisioning.fd1c9b9e".into(),
                template_id: "AD2AADProvisioning".into(),
                status_code: "Quarantine".into(),
                quarantine_reason: Some("EncounteredQuarantineException".into()),
                quarantine_error: Some("The agent could not reach the domain controller".into()),
                quarantined_since: Some("2026-11-25T08:00:00Z".into()),
            }],
            truncated: None,
        });
        let r = cloud_sync_quarantine(&f);
        assert_eq!(r.status, Status::Warn, "{r:?}");
        assert!(
            r.summary.contains("EncounteredQuarantineException"),
            "{}",
            r.summary
        );
        assert!(
            r.remediation
                .contains("jobs/AD2AADProvisioning.fd1c9b9e/restart")
                && r.remediation.contains("/servicePrincipals/{id}/"),
            "{}",
            r.remediation
        );
        f.cloud_sync_jobs = Ok(CloudSyncJobs::default());
        assert_eq!(cloud_sync_quarantine(&f).status, Status::NotApplicable);
        f.cloud_sync_jobs = Ok(CloudSyncJobs {
            jobs: vec![],
            truncated: Some("only the first 50 pages".into()),
        });
        assert_eq!(cloud_sync_quarantine(&f).status, Status::Error);
    }
}

//! Tenant settings in Microsoft Entra ID (TEN-*, and the Graph half of OBJ-04), checked by the
//! central server through Microsoft Graph with each tenant's app credentials.

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{ENABLE_WRITEBACK, TROUBLESHOOT_WRITEBACK};

/// Who may use SSPR and writeback, by licence.
const SSPR_LICENSING: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-licensing";
/// How SSPR decides who may reset, and registration.
const SSPR_HOW_IT_WORKS: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-howitworks";
/// The administrator reset policy.
const SSPR_POLICY: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-policy";
/// How writeback works, and which password changes never reach on-premises.
const SSPR_WRITEBACK: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-writeback";
/// Troubleshooting Cloud Sync, quarantine included.
const CLOUD_SYNC_TROUBLESHOOT: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/cloud-sync/how-to-troubleshoot";
/// The sync scheduler.
const SYNC_SCHEDULER: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-sync-feature-scheduler";

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "tenant.writeback_licence",
        refs: &["TEN-01"],
        title: "Tenant has a licence that includes password writeback",
        description: "subscribedSkus holds an enabled SKU with prepaid units whose service plans include AAD_PREMIUM or AAD_PREMIUM_P2 (Entra ID P1/P2, Microsoft 365 Business Premium, E3/E5, EMS).",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Blocker,
        data_source: DataSource::Graph,
        docs_url: SSPR_LICENSING,
        remediation: "Tenant {tenant} has no enabled licence with Entra ID P1 or P2 ({problem}). Buy or assign Entra ID P1/P2, Microsoft 365 Business Premium, or a suite that contains P1 (E3/E5, EMS), then run the cloud checks again.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph serves a tenant with only Business Basic, and one whose P1 subscription is suspended.",
    },
    CheckDef {
        id: "tenant.licensed_admin",
        refs: &["TEN-03"],
        title: "An administrator holds an Entra ID P1/P2 licence",
        description: "At least one holder of Global Administrator or Hybrid Identity Administrator has an AAD_PREMIUM or AAD_PREMIUM_P2 service plan provisioned (licenseDetails); without one the Password reset blade is missing.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Warning,
        data_source: DataSource::Graph,
        docs_url: SSPR_LICENSING,
        remediation: "None of the administrators of {tenant} ({admins}) holds Entra ID P1/P2. Assign a P1 licence to at least one of them: Entra admin center → Users → the administrator → Licenses → Assignments.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has a Global Administrator with only Business Basic.",
    },
    CheckDef {
        id: "tenant.sspr_enabled",
        refs: &["TEN-04"],
        title: "Self-service password reset is enabled for someone",
        description: "Through the documented proxy: userRegistrationDetails has at least one user with isSsprEnabled. No supported API reads the SSPR enablement policy itself, so a scoped policy is not judged here.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Blocker,
        data_source: DataSource::Graph,
        docs_url: SSPR_HOW_IT_WORKS,
        remediation: "No user of {tenant} is enabled for self-service password reset. Entra admin center → Protection → Password reset → Properties → set Self service password reset enabled to Selected (with the right group) or All → Save.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has no user with isSsprEnabled.",
    },
    CheckDef {
        id: "tenant.writeback_toggle",
        refs: &["TEN-06"],
        title: "Cloud-side writeback option (not readable through a supported API)",
        description: "The portal option \"Write back passwords to your on-premises directory\" has no supported API (Graph features.passwordWritebackEnabled is documented as not in use), so this result is always not_applicable; the sync server's own checks cover the on-premises side.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Blocker,
        data_source: DataSource::Graph,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Check it by hand in {tenant}: Entra admin center → Protection → Password reset → On-premises integration → tick Write back passwords to your on-premises directory → Save.",
        verified_by: "Unit tests cloud::checks::tests (always not_applicable with the reason).",
    },
    CheckDef {
        id: "tenant.sspr_for_admins",
        refs: &["TEN-07"],
        title: "Synced administrators may use SSPR",
        description: "authorizationPolicy.allowedToUseSSPR is true, or no holder of a directory role is synced from on-premises (a synced administrator would get SSPR_009).",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Partial,
        data_source: DataSource::Graph,
        docs_url: SSPR_POLICY,
        remediation: "SSPR for administrators is off in {tenant} and these synced users hold admin roles: {admins}. Run Update-MgPolicyAuthorizationPolicy -BodyParameter @{{allowedToUseSSPR=$true}} (Microsoft Graph PowerShell, Policy.ReadWrite.Authorization).",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has allowedToUseSSPR false and a synced Global Administrator.",
    },
    CheckDef {
        id: "tenant.writeback_admin_cloud_only",
        refs: &["TEN-08"],
        title: "Accounts that configure writeback are cloud-only and directly assigned",
        description: "Some holder of Global Administrator or Hybrid Identity Administrator is a cloud-only user (onPremisesSyncEnabled not true) on a managed (not federated) domain, with the role assigned directly to the user, not through a group: the Connect wizard needs one to enable or disable writeback.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Blocker,
        data_source: DataSource::Graph,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "No directly assigned, cloud-only Global Administrator or Hybrid Identity Administrator exists in {tenant} ({problem}). Create or use a cloud-only account (for example on the .onmicrosoft.com domain), assign it Hybrid Identity Administrator directly (not through a group), license it, and use it in the Connect wizard.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has a synced administrator, one on a federated domain and a group assignment.",
    },
    CheckDef {
        id: "tenant.sync_freshness",
        refs: &["OBJ-04"],
        title: "Directory synchronization ran recently",
        description: "organization.onPremisesLastSyncDateTime is at most three hours old (more than two or three sync cycles means sync is failing or stopped).",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Warning,
        data_source: DataSource::Graph,
        docs_url: SYNC_SCHEDULER,
        remediation: "{tenant} last synchronized at {last_sync} ({problem}). On the sync server run Get-ADSyncScheduler: if SyncCycleEnabled is False run Set-ADSyncScheduler -SyncCycleEnabled $true; if SchedulerSuspended is True wait for the running operation or restart ADSync; then fix the errors that Get-ADSyncRunProfileResult shows.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant last synced two days ago.",
    },
    CheckDef {
        id: "tenant.admin_reset_not_written_back",
        refs: &["TEN-09"],
        title: "Administrator resets of synced users reached Active Directory",
        description: "auditLogs/directoryAudits with activityDisplayName 'Reset password (by admin)' of the last 24 hours: a successful event whose additionalDetails OnPremisesAgent is None, for a target user with onPremisesSyncEnabled true, is a reset that stayed in the cloud (the Microsoft 365 admin center, PowerShell, or Graph paths that never write back). Reported as warn so that it shows; the severity is info. A missing AuditLog.Read.All or User.Read.All is an error, and so is an audit list cut short at the page cap with nothing found.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Info,
        data_source: DataSource::Graph,
        docs_url: SSPR_WRITEBACK,
        remediation: "In {tenant} these synced users had their password reset in the cloud only, so Active Directory still has the old one: {resets}. Reset synced users from the Entra admin center (Users → the user → Reset password) or let them use SSPR, or through Graph with authenticationMethod resetPassword (delegated); not from the Microsoft 365 admin center or the old MSOnline/AzureAD PowerShell. Reset these users again that way, or in Active Directory.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has a cloud-only admin reset of a synced user, next to one written back by Entra Connect and one of a cloud-only user; a tenant without AuditLog.Read.All gets an error naming it.",
    },
    CheckDef {
        id: "tenant.cloud_sync_quarantine",
        refs: &["CS-06"],
        title: "No Cloud Sync provisioning job is quarantined",
        description: "The tenant's Cloud Sync service principals (instantiated from the AD2AAD application template 1a4721b3-e57f-4451-ae87-ef078703ec94, found with servicePrincipals?$filter=applicationTemplateId eq '…') and their synchronization/jobs whose templateId starts with AD2AAD: a job with status.code Quarantine, with status.quarantine.reason, warns. not_applicable when the tenant has no Cloud Sync job. Needs Application.Read.All and Synchronization.Read.All; a missing one is an error naming it. The provisioning agents' health has no v1.0 API and is not judged.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Warning,
        data_source: DataSource::Graph,
        docs_url: CLOUD_SYNC_TROUBLESHOOT,
        remediation: "Cloud Sync of {tenant} is quarantined: {jobs}. Fix the cause the reason names (provisioning logs of the configuration {service_principal}), then in the Entra admin center → Microsoft Entra Connect → Cloud sync → the configuration choose Restart sync, or call POST /servicePrincipals/{{id}}/synchronization/jobs/{job_id}/restart with criteria resetScope Full.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's broken tenant has a quarantined AD2AADProvisioning job; the healthy tenant an active one; a tenant without Synchronization.Read.All gets an error naming it.",
    },
    CheckDef {
        id: "tenant.user_licence",
        refs: &["TEN-02"],
        title: "The user holds an Entra ID P1/P2 licence",
        description: "On demand, for a user a technician names: licenseDetails has AAD_PREMIUM or AAD_PREMIUM_P2 with provisioningStatus Success (otherwise the user sees SSPR_0012).",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Partial,
        data_source: DataSource::Graph,
        docs_url: SSPR_LICENSING,
        remediation: "Assign {user} a licence that includes Entra ID P1 (group-based licensing recommended), wait until it is provisioned, then retry.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's unlicensed user.",
    },
    CheckDef {
        id: "tenant.user_registration",
        refs: &["TEN-05", "TEN-04"],
        title: "The user is enabled and registered for SSPR",
        description: "On demand: the user's userRegistrationDetails has isSsprEnabled, isSsprRegistered and isSsprCapable (otherwise SSPR_0013 or SSPR_0014).",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Partial,
        data_source: DataSource::Graph,
        docs_url: SSPR_HOW_IT_WORKS,
        remediation: "{user}: {problem}. Have the user register at https://aka.ms/ssprsetup (or pre-populate their authentication methods), and make sure they are in the SSPR group when SSPR is scoped to Selected.",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's unregistered user.",
    },
    CheckDef {
        id: "tenant.user_sync_state",
        refs: &["OBJ-02", "TEN-09"],
        title: "The user is synchronized from on-premises",
        description: "On demand: the user has onPremisesSyncEnabled true and an on-premises security identifier; writeback only applies to synced users.",
        category: Category::Tenant,
        runs_on: RunsOn::Cloud,
        severity: Severity::Partial,
        data_source: DataSource::Graph,
        docs_url: ENABLE_WRITEBACK,
        remediation: "{user} is a cloud-only account: its password lives in Entra ID and is never written back. Reset it in the cloud, or sync the on-premises account (check the sync scope and the object's lineage).",
        verified_by: "Unit tests cloud::checks::tests. End to end: the fake Graph's cloud-only user.",
    },
];

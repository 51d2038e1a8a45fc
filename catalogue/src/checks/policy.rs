//! Password policy and per-user state (USR-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{ENABLE_WRITEBACK, TROUBLESHOOT_WRITEBACK};

/// Implement password hash synchronization (ForcePasswordChangeOnLogOn).
const PASSWORD_HASH_SYNC: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-password-hash-synchronization";
/// How SSPR writeback works (supported operations).
const HOW_WRITEBACK_WORKS: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-writeback";

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "policy.min_password_age",
        refs: &["USR-01"],
        title: "Domain minimum password age is zero",
        description: "The domain's minimum password age (minPwdAge on the domain head) is zero, so a user can reset or change a password again right after a change.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Set Minimum password age to 0 days for {domain} (now {min_age}): Group Policy Management → Default Domain Policy → Computer Configuration → Policies → \
Windows Settings → Security Settings → Account Policies → Password Policy, then run gpupdate /force on the domain controllers. \
Or in PowerShell: Set-ADDefaultDomainPasswordPolicy -Identity {domain} -MinPasswordAge 0.00:00:00",
        verified_by: "Unit tests over facts. End to end: a Samba DC with minimum password age 0 passes; `samba-tool domain passwordsettings set --min-pwd-age=1` makes it warn.",
    },
    CheckDef {
        id: "policy.fine_grained_min_age",
        refs: &["USR-01"],
        title: "No fine-grained password policy sets a minimum age",
        description: "No password settings object (PSO) that applies to users or groups sets msDS-MinimumPasswordAge; the users in scope it applies to (msDS-ResultantPSO) are named.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Set the minimum password age of these fine-grained password policies to 0:\n{commands}",
        verified_by: "Unit tests directory::tests::a_pso_with_a_minimum_age_warns_naming_it_and_the_users. End to end (Samba): `samba-tool domain passwordsettings pso create` with --min-pwd-age=1 applied to a user makes it warn.",
    },
    CheckDef {
        id: "policy.password_complexity",
        refs: &["USR-02"],
        title: "Domain and fine-grained password rules are reported",
        description: "Reports the history, minimum length and complexity rules of the domain (pwdHistoryLength, minPwdLength, pwdProperties & 1) and of every password settings object \
(msDS-PasswordHistoryLength, msDS-MinimumPasswordLength, msDS-PasswordComplexityEnabled), which a password chosen in SSPR must meet on-premises (33008 ADPasswordPolicyError). \
Information: it passes when the rules could be read; password filters and the DCs' Security log are not read.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Info,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "A password chosen in SSPR must meet the on-premises rules of {domain}: {rules}. If users see \"your on-premises policy does not allow it\", \
have them pick a password that meets these rules, and review the Entra Password Protection or third-party password filter logs on the domain controllers.",
        verified_by: "Unit tests policy::tests::password_rules_are_reported_and_unreadable_rules_are_an_error. End to end (Samba): the default domain rules and a PSO's rules appear in the summary and evidence.",
    },
    CheckDef {
        id: "policy.disabled_users",
        refs: &["USR-03"],
        title: "No user in scope is disabled",
        description: "No sampled user in scope (other than the built-in Guest, krbtgt, DefaultAccount and WDAGUtilityAccount) has ACCOUNTDISABLE (userAccountControl & 0x2); writeback for a disabled user fails with 33005 ADUserAccountDisabled.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "{count} in scope are disabled on-premises, so password reset and unlock fail for them (33005). If they should use SSPR, enable them:\n{commands}",
        verified_by: "Unit tests policy::tests::disabled_users_warn_naming_them_and_built_ins_are_ignored. End to end (Samba): `samba-tool user disable` on a user in scope makes it warn naming the DN.",
    },
    CheckDef {
        id: "policy.locked_out_users",
        refs: &["USR-04"],
        title: "No user in scope is locked out",
        description: "No sampled user in scope is locked out (msDS-User-Account-Control-Computed & 0x10); a reset for a locked-out user fails with 33006 ADUserAccountLockedOut unless unlocking is allowed.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "{count} in scope are locked out on-premises (33006). Unlock them:\n{commands}\n\
Or let users unlock themselves: Entra admin center → Protection → Password reset → On-premises integration → \
Allow users to unlock accounts without resetting their password (the connector account also needs Write lockoutTime).",
        verified_by: "Unit tests policy::tests::locked_out_users_warn_and_an_uncomputed_flag_is_an_error. End to end (Samba): failed binds past the lockout threshold make it warn naming the DN.",
    },
    CheckDef {
        id: "policy.must_change_password",
        refs: &["USR-05"],
        title: "No user in scope must change password at next logon",
        description: "No sampled enabled user in scope has pwdLastSet = 0 (User must change password at next logon): temporary passwords are not synced unless ForcePasswordChangeOnLogOn is on, which Microsoft says to use only with SSPR and writeback.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: PASSWORD_HASH_SYNC,
        remediation: "{count} in scope must change password at next logon: {users}. Their temporary password is not synced to Entra ID unless \
the ForcePasswordChangeOnLogOn feature is on (Connect 2.0.3.0 or later: Set-ADSyncAADCompanyFeature -ForcePasswordChangeOnLogOn $true), \
and Microsoft says to use that feature only when SSPR and password writeback are enabled. With pass-through authentication, tell users to wait \
at least 2 minutes after an on-premises reset before signing in. Users flagged before the feature was enabled need the box cleared and set again.",
        verified_by: "Unit tests policy::tests::users_who_must_change_password_warn. End to end (Samba): pwdLastSet set to 0 on a user in scope makes it warn naming the DN.",
    },
    CheckDef {
        id: "policy.password_never_expires",
        refs: &["USR-06"],
        title: "Users whose password never expires are listed",
        description: "Lists the sampled users in scope with DONT_EXPIRE_PASSWORD (userAccountControl & 0x10000): an admin reset with \"require change at next sign-in\" does not set the force-change flag on-premises for them. Expected behaviour, reported as information.",
        category: Category::Policy,
        runs_on: RunsOn::Agent,
        severity: Severity::Info,
        data_source: DataSource::Ldap,
        docs_url: HOW_WRITEBACK_WORKS,
        remediation: "Expected behaviour: for {users}, an admin reset with require change at next sign-in does not set User must change password at next logon on-premises.",
        verified_by: "Unit tests policy::tests::password_never_expires_is_information_listing_the_users. End to end (Samba): `samba-tool user setexpiry --noexpiry` on a user in scope lists it in the evidence.",
    },
];

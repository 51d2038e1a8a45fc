//! Password policy and per-user state (USR-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::ENABLE_WRITEBACK;

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
];

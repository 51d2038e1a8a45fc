//! Rights of the AD DS connector account (PERM-*), evaluated from the real security
//! descriptors for the account and the groups in its `tokenGroups`.

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{ENABLE_WRITEBACK, TROUBLESHOOT_WRITEBACK};

/// Configure AD DS connector account permissions (ADSyncConfig).
const CLOUD_SYNC_WRITEBACK: &str = "https://learn.microsoft.com/en-us/entra/identity/authentication/tutorial-enable-cloud-sync-sspr-writeback";
const CONNECTOR_PERMISSIONS: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-configure-ad-ds-connector-account";
/// How SSPR writeback works (protected accounts).
const HOW_WRITEBACK_WORKS: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-writeback";

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "permissions.connector_account",
        refs: &["PERM-01", "SRV-15"],
        title: "Connector account found, enabled, not locked out or expired",
        description: "The AD DS connector account named in the agent configuration (or by the ADSync connector) is found in the domain with its SID and tokenGroups, and is enabled, not locked out and not expired.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: CONNECTOR_PERMISSIONS,
        remediation: "The connector account {account} ({connector_dn}) is {problem}. Enable and unlock it and clear its expiry: \
Enable-ADAccount -Identity '{connector_dn}'; Unlock-ADAccount -Identity '{connector_dn}'; Clear-ADAccountExpiration -Identity '{connector_dn}'. \
Then run Restart-Service ADSync.",
        verified_by: "Unit tests permissions::tests::a_disabled_or_expired_connector_fails_and_an_unknown_one_is_an_error and a_healthy_domain_passes_every_permission_check. \
End to end (Samba): found by sAMAccountName with its tokenGroups in the healthy state; `samba-tool user disable` makes it fail.",
    },
    CheckDef {
        id: "permissions.reset_password",
        refs: &["PERM-02"],
        title: "Connector account has Reset password on users",
        description: "The connector account (or a group in its tokenGroups) is allowed the Reset password extended right on every sampled user in scope, and no deny ACE takes it away.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: CONNECTOR_PERMISSIONS,
        remediation: "Grant the writeback permissions to {account} on {failing}. As an Enterprise Admin on a domain-joined machine with the ADSyncConfig module: \
Import-Module 'C:\\Program Files\\Microsoft Azure Active Directory Connect\\AdSyncConfig\\AdSyncConfig.psd1'; \
Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {account} -ADConnectorAccountDomain {domain} \
(for one OU or user with blocked inheritance: Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountDN '{connector_dn}' -ADobjectDN '<that DN>'). \
Allow up to an hour for replication and SDProp.",
        verified_by: "Unit tests permissions::tests::rights_on_descriptors_captured_from_a_samba_dc (real Samba DACL bytes), without_reset_password_on_the_domain_head_every_user_fails_naming_the_cmdlet, a_user_with_blocked_inheritance_fails_partially_with_a_per_object_command, a_right_granted_to_a_group_of_the_connector_counts. \
End to end (Samba): the grant of Set-ADSyncPasswordWritebackPermissions on the domain head passes; removing the Reset password ACE fails; blocking inheritance on an OU fails for its users only.",
    },
    CheckDef {
        id: "permissions.change_password",
        refs: &["PERM-03"],
        title: "Connector account has Change password on users",
        description: "The connector account (directly, through its groups, or through Everyone as in AD's default user ACL) is allowed the Change password extended right on every sampled user in scope.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Grant Change password to {account} on descendant user objects of {domain_dn}: dsacls \"{domain_dn}\" /I:S /G \"{account}:CA;Change Password;user\". Failing: {failing}",
        verified_by: "Unit tests permissions::tests::a_deny_ace_beats_the_allow_and_is_reported_as_cannot_change_password. \
End to end (Samba): a deny Change password ACE for Everyone on one user makes it fail for that user.",
    },
    CheckDef {
        id: "permissions.write_lockout_time",
        refs: &["PERM-04"],
        title: "Connector account may write lockoutTime on users",
        description: "The connector account is allowed to write lockoutTime (or all properties) on every sampled user in scope, which unlocking needs.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: CONNECTOR_PERMISSIONS,
        remediation: "Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {account} -ADConnectorAccountDomain {domain} grants Write lockoutTime on {domain_dn}. Failing: {failing}",
        verified_by: "Unit tests permissions::tests (healthy, domain head without the grant, group trustee). End to end (Samba): passes with the cmdlet's grant; blocked inheritance on an OU fails its users.",
    },
    CheckDef {
        id: "permissions.write_pwd_last_set",
        refs: &["PERM-05"],
        title: "Connector account may write pwdLastSet on users",
        description: "The connector account is allowed to write pwdLastSet (or all properties) on every sampled user in scope.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: CONNECTOR_PERMISSIONS,
        remediation: "Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {account} -ADConnectorAccountDomain {domain} grants Write pwdLastSet on {domain_dn}. Failing: {failing}",
        verified_by: "Unit tests permissions::tests (healthy, group trustee, unreadable). End to end (Samba): passes with the cmdlet's grant; blocked inheritance on an OU fails its users.",
    },
    CheckDef {
        id: "permissions.unexpire_password",
        refs: &["PERM-06"],
        title: "Connector account has Unexpire password on the domain",
        description: "The Unexpire password extended right is allowed on the domain head to the connector account, a group of it, or Authenticated Users (AD's default).",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Add Unexpire Password for {account} on {domain_dn} (This object and all descendant objects): dsacls \"{domain_dn}\" /G \"{account}:CA;Unexpire Password\", \
or upgrade Entra Connect to 2.1.15.0 or later and run Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {account} -ADConnectorAccountDomain {domain} again.",
        verified_by: "Unit tests permissions::tests::unexpire_missing_protected_users_and_pre2000_are_reported. End to end (Samba): passes with the grant on the domain head.",
    },
    CheckDef {
        id: "permissions.inheritance_blocked",
        refs: &["PERM-07"],
        title: "No OU or user in scope blocks inheritance",
        description: "No OU in scope and no sampled (non-protected) user has SE_DACL_PROTECTED, which keeps the domain-level rights from reaching the users below it.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: CONNECTOR_PERMISSIONS,
        remediation: "Enable inheritance on these objects (Active Directory Users and Computers → Advanced Features → Security → Advanced → Enable inheritance), \
or grant the writeback rights on each of them as an Enterprise Admin:\n{commands}",
        verified_by: "Unit tests permissions::tests::a_user_with_blocked_inheritance_fails_partially_with_a_per_object_command and unreadable_descriptors_are_errors_not_passes. \
End to end (Samba): `samba-tool dsacl set` with a protected SDDL (D:P…) on an OU makes it fail naming the OU.",
    },
    CheckDef {
        id: "permissions.protected_accounts",
        refs: &["PERM-08"],
        title: "Protected accounts in scope",
        description: "Lists the users in scope with adminCount set (AdminSDHolder-protected), besides the built-in Administrator and krbtgt: writeback cannot reset their passwords, by design.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: HOW_WRITEBACK_WORKS,
        remediation: "Protected accounts cannot reset their passwords through writeback, by design: {users}. Have them change passwords on premises. \
If it is really needed (Microsoft does not recommend it): Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {account} -ADConnectorAccountDomain {domain} -IncludeAdminSdHolders. \
If an account left the protected groups, clear adminCount and enable inheritance on it.",
        verified_by: "Unit tests permissions::tests::unexpire_missing_protected_users_and_pre2000_are_reported. \
End to end (Samba): a user with adminCount=1 and a protected ACL makes it warn; the built-in Administrator alone passes (listed in the evidence).",
    },
    CheckDef {
        id: "permissions.orphaned_admin_count",
        refs: &["PERM-09"],
        title: "No orphaned adminCount",
        description: "Every user in scope with adminCount set is still in a protected group (its tokenGroups hold one); one that left them keeps a protected ACL that the connector's rights never reach.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Clear adminCount and enable inheritance on these users (SDProp no longer protects them):\n{commands}",
        verified_by: "Unit tests permissions::tests::admin_count_without_a_protected_group_is_orphaned. \
End to end (Samba): a user given adminCount=1 and a protected ACL while in no protected group fails; the built-in Administrator passes.",
    },
    CheckDef {
        id: "permissions.rights_on_every_dc",
        refs: &["PERM-10"],
        title: "Every DC grants the connector the same writeback rights",
        description: "The connector account's Reset password, Change password, Write lockoutTime, Write pwdLastSet and Unexpire password rights, evaluated on the domain head's DACL as each DC holds it, are the same on every DC; a difference means a permission change has not reached every DC yet (SDProp and replication can take an hour).",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "The DCs of {domain} disagree about {account}: {differences}. Wait up to an hour for replication (longer in large directories), make permission changes on the DC writeback uses (the AD connector's preferred DC), and if it persists fix replication (`repadmin /replsummary`, `dcdiag`).",
        verified_by: "Unit tests dcs::tests::a_permission_fix_missing_on_one_dc_warns. End to end (Samba): two DCs pass; with the second DC's inbound replication disabled and Reset password removed on the first, it warns naming both.",
    },
    CheckDef {
        id: "permissions.cloud_sync_gmsa",
        refs: &["CS-04"],
        title: "Cloud Sync gMSA holds the writeback rights",
        description: "When the domain has the Cloud Sync provisioning agent's gMSA (provAgentgMSA$, or ldap.cloud_sync_account), it holds Reset password, Write lockoutTime and Write pwdLastSet on users and Unexpire password on the domain head, evaluated for the account and its tokenGroups. Not applicable when no such account exists.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: CLOUD_SYNC_WRITEBACK,
        remediation: "The Cloud Sync gMSA {account} lacks {missing} on {domain_dn}. On the provisioning agent host, run as a domain admin: Import-Module 'C:\\Program Files\\Microsoft Azure AD Connect Provisioning Agent\\Microsoft.CloudSync.Powershell.dll'; Set-AADCloudSyncPermissions -PermissionType PasswordWriteBack -EACredential (Get-Credential). Allow up to an hour for the change to reach every DC of {domain}.",
        verified_by: "Unit tests permissions::tests::cloud_sync_gmsa_needs_the_writeback_rights. End to end (Samba, which cannot create a gMSA before 4.20): an account named provAgentgMSA$ without rights fails naming the missing ones, passes once granted; a domain without it is not applicable.",
    },
    CheckDef {
        id: "permissions.user_cannot_change_password",
        refs: &["PERM-11"],
        title: "Users with \"user cannot change password\"",
        description: "No sampled user has a deny Change password ACE for Everyone or SELF, which is how AD stores \"user cannot change password\".",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Clear \"User cannot change password\" where it is not intended:\n{commands}",
        verified_by: "Unit tests permissions::tests::a_deny_ace_beats_the_allow_and_is_reported_as_cannot_change_password. \
End to end (Samba): `samba-tool dsacl set` adding (OD;;CR;ab721a53-…;;WD) on a user makes it warn.",
    },
    CheckDef {
        id: "permissions.pre_windows_compatible_access",
        refs: &["PERM-12"],
        title: "Pre-Windows 2000 Compatible Access holds Authenticated Users",
        description: "Authenticated Users (or the connector account) is a member of Pre-Windows 2000 Compatible Access, the read access NetUserGetInfo needs.",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Add Authenticated Users back to {group}: Add-ADGroupMember -Identity 'Pre-Windows 2000 Compatible Access' -Members 'S-1-5-11' \
(or net localgroup \"Pre-Windows 2000 Compatible Access\" \"NT AUTHORITY\\Authenticated Users\" /add on a DC of {domain}).",
        verified_by: "Unit tests permissions::tests::unexpire_missing_protected_users_and_pre2000_are_reported. End to end (Samba): Samba's default membership passes.",
    },
    CheckDef {
        id: "permissions.sam_read_access",
        refs: &["PERM-12"],
        title: "Domain head, Builtin and samServer grant read access",
        description: "The DACLs of the domain head, CN=Builtin and CN=Server,CN=System (samServer) grant list contents, read all properties and read permissions \
to Authenticated Users, Pre-Windows 2000 Compatible Access or the connector account and its groups, the read access NetUserGetInfo needs (SSPR_0029, 33004).",
        category: Category::Permissions,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Restore the default read access that {account} needs ({missing}). As a Domain Admin:\n{commands}\n\
Or point Connect at domain controllers that are not hardened this way, or move it off the DC.",
        verified_by: "Unit tests permissions::tests::sam_read_access_passes_by_default_and_fails_when_builtin_is_hardened. End to end (Samba): the default DACLs pass; \
removing the Authenticated Users and Pre-Windows 2000 read ACEs from CN=Builtin makes it fail naming CN=Builtin.",
    },
];

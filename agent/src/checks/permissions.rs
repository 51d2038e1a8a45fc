//! Connector-account permission checks (PERM-01…08, PERM-11, PERM-12, SRV-15's LDAP part).
//!
//! Rights are evaluated as Windows does for the connector account: its SID, the SIDs of its
//! `tokenGroups`, Everyone and Authenticated Users are its trustees; the ACEs of an object's
//! DACL are read in order (canonical order puts explicit denies first, then explicit allows,
//! then inherited ones) and the first ACE that covers the right decides. Rights on users are
//! evaluated on each sampled user's own DACL, which holds the ACEs it inherited; protected
//! accounts (`adminCount`) are left to [`protected_accounts`], where they belong by design.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;
use wbhealth_catalogue::{Status, render};

use super::{Verdict, def, directory_error, plural};
use crate::ad::{
    AUTHENTICATED_USERS, Ace, AceKind, AdFacts, CONTAINER_INHERIT, ConnectorAccount,
    DS_CONTROL_ACCESS, DS_LIST_CHILDREN, DS_READ_PROP, DS_WRITE_PROP, EVERYONE, GENERIC_ALL,
    GENERIC_READ, GENERIC_WRITE, INHERIT_ONLY, PRE_WINDOWS_2000, READ_CONTROL, RightGuids, SELF,
    ScopedUser, SecurityDescriptor,
};
use crate::facts::{DirectoryFacts, Facts, ProbeFailure, ProbeStep};
use crate::result::CheckOutcome;

/// Catalogue id of the connector account check (PERM-01, SRV-15).
pub const CONNECTOR_ACCOUNT: &str = "permissions.connector_account";
/// Catalogue id of the Reset password check (PERM-02).
pub const RESET_PASSWORD: &str = "permissions.reset_password";
/// Catalogue id of the Change password check (PERM-03).
pub const CHANGE_PASSWORD: &str = "permissions.change_password";
/// Catalogue id of the write `lockoutTime` check (PERM-04).
pub const WRITE_LOCKOUT_TIME: &str = "permissions.write_lockout_time";
/// Catalogue id of the write `pwdLastSet` check (PERM-05).
pub const WRITE_PWD_LAST_SET: &str = "permissions.write_pwd_last_set";
/// Catalogue id of the Unexpire password check (PERM-06).
pub const UNEXPIRE_PASSWORD: &str = "permissions.unexpire_password";
/// Catalogue id of the inheritance check (PERM-07).
pub const INHERITANCE_BLOCKED: &str = "permissions.inheritance_blocked";
/// Catalogue id of the protected accounts check (PERM-08).
pub const PROTECTED_ACCOUNTS: &str = "permissions.protected_accounts";
/// Catalogue id of the orphaned `adminCount` check (PERM-09).
pub const ORPHANED_ADMIN_COUNT: &str = "permissions.orphaned_admin_count";
/// Catalogue id of the "user cannot change password" check (PERM-11).
pub const CANNOT_CHANGE_PASSWORD: &str = "permissions.user_cannot_change_password";
/// Catalogue id of the `NetUserGetInfo` read access check (PERM-12).
pub const PRE_WINDOWS_2000_ACCESS: &str = "permissions.pre_windows_compatible_access";
/// Catalogue id of the Cloud Sync gMSA rights check (CS-04).
pub const CLOUD_SYNC_GMSA: &str = "permissions.cloud_sync_gmsa";
/// Catalogue id of the SAM read access check (PERM-12, DACLs).
pub const SAM_READ_ACCESS: &str = "permissions.sam_read_access";

/// How many DNs a summary or a remediation lists before saying "and n more".
const LISTED: usize = 10;

/// A right as an ACE grants it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Right<'a> {
    /// An extended right (control access) with this GUID.
    Extended(&'a str),
    /// Writing the property with this schemaIDGUID.
    WriteProperty(&'a str),
    /// A right of the access mask that applies to the whole object (list contents, read all
    /// properties, read permissions), granted by an ACE without an object type.
    Object(u32),
}

/// What a DACL decides about a right for a set of trustees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// An allow ACE for this trustee grants it.
    Allowed(String),
    /// A deny ACE for this trustee refuses it.
    Denied(String),
    /// No ACE grants it.
    NotGranted,
}

fn covers(ace: &Ace, right: Right<'_>) -> bool {
    let (bits, guid) = match right {
        Right::Extended(g) => (DS_CONTROL_ACCESS | GENERIC_ALL, g),
        Right::WriteProperty(g) => (DS_WRITE_PROP | GENERIC_ALL | GENERIC_WRITE, g),
        Right::Object(bit) => {
            return ace.mask & (bit | GENERIC_ALL | GENERIC_READ) != 0 && ace.object_type.is_none();
        }
    };
    ace.mask & bits != 0
        && ace
            .object_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(guid))
}

/// Evaluates `right` on the object that holds `sd`, for `trustees`.
pub(crate) fn access(sd: &SecurityDescriptor, trustees: &[&str], right: Right<'_>) -> Access {
    for ace in &sd.dacl {
        if ace.flags & INHERIT_ONLY != 0 || !trustees.contains(&ace.sid.as_str()) {
            continue;
        }
        if covers(ace, right) {
            return match ace.kind {
                AceKind::Allow => Access::Allowed(ace.sid.clone()),
                AceKind::Deny => Access::Denied(ace.sid.clone()),
            };
        }
    }
    Access::NotGranted
}

/// The ACEs of a container's DACL that a new user object below it inherits, as they apply to
/// that user.
pub(crate) fn inherited_by_users(sd: &SecurityDescriptor, user_class: &str) -> SecurityDescriptor {
    SecurityDescriptor {
        control: 0,
        dacl: sd
            .dacl
            .iter()
            .filter(|ace| {
                ace.flags & CONTAINER_INHERIT != 0
                    && ace
                        .inherited_object_type
                        .as_deref()
                        .is_none_or(|t| t.eq_ignore_ascii_case(user_class))
            })
            .map(|ace| Ace {
                flags: ace.flags & !INHERIT_ONLY,
                ..ace.clone()
            })
            .collect(),
    }
}

/// The writeback rights the connector holds through a domain head's DACL.
pub(super) fn rights_granted(
    head: &SecurityDescriptor,
    guids: &RightGuids,
    trustees: &[&str],
) -> BTreeMap<&'static str, bool> {
    let on_users = inherited_by_users(head, &guids.user_class);
    let allowed = |sd, right| matches!(access(sd, trustees, right), Access::Allowed(_));
    BTreeMap::from([
        (
            "Reset password",
            allowed(&on_users, Right::Extended(&guids.reset_password)),
        ),
        (
            "Change password",
            allowed(&on_users, Right::Extended(&guids.change_password)),
        ),
        (
            "Write lockoutTime",
            allowed(&on_users, Right::WriteProperty(&guids.lockout_time)),
        ),
        (
            "Write pwdLastSet",
            allowed(&on_users, Right::WriteProperty(&guids.pwd_last_set)),
        ),
        (
            "Unexpire password",
            allowed(head, Right::Extended(&guids.unexpire_password)),
        ),
    ])
}

/// The connector's trustees: itself, its groups, Everyone and Authenticated Users.
pub(super) fn trustees(connector: &ConnectorAccount) -> Vec<&str> {
    let mut t: Vec<&str> = vec![connector.sid.as_str(), EVERYONE, AUTHENTICATED_USERS];
    t.extend(connector.token_groups.iter().map(String::as_str));
    t
}

/// The directory facts, or the `error` verdict saying why there are none.
pub(super) fn directory(facts: &Facts) -> Result<&DirectoryFacts, Verdict> {
    facts
        .directory
        .as_ref()
        .map_err(|failure| directory_error(facts, "the domain controller", failure))
}

/// One part of the AD facts, or the `error` verdict saying why it could not be read.
pub(super) fn part<'a, T>(
    facts: &Facts,
    what: &str,
    value: &'a Result<T, ProbeFailure>,
) -> Result<&'a T, Verdict> {
    value.as_ref().map_err(|failure| {
        if failure.step == ProbeStep::NotConfigured {
            Verdict {
                status: Status::Error,
                summary: format!("could not read {what}: {}", failure.message),
                evidence: json!({ "failed_step": failure.step.as_str(), "error": failure.message }),
                remediation: format!(
                    "On {}, name the AD DS connector account in agent.toml: [ldap] connector_account = \"MSOL_…\" \
                     (or WBH_CONNECTOR_ACCOUNT). Find it with: (Get-ADSyncConnector | ? Type -eq 'AD').ConnectivityParameters['forest-login-user'].Value",
                    facts.host_name
                ),
            }
        } else {
            directory_error(facts, what, failure)
        }
    })
}

/// `a, b, c and 4 more`.
pub(super) fn listed(items: &[String]) -> String {
    let shown = items
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > LISTED {
        format!("{shown} and {} more", items.len() - LISTED)
    } else {
        shown
    }
}

fn account_name(c: &ConnectorAccount) -> &str {
    if c.sam_account_name.is_empty() {
        &c.configured_as
    } else {
        &c.sam_account_name
    }
}

/// Users whose rights the permission checks evaluate: readable and not protected.
fn eligible(users: &[ScopedUser]) -> impl Iterator<Item = &ScopedUser> {
    users.iter().filter(|u| u.admin_count == 0 && u.sd.is_ok())
}

fn connector_evidence(c: &ConnectorAccount) -> Value {
    json!({ "dn": c.dn, "sam_account_name": c.sam_account_name, "sid": c.sid, "token_groups": c.token_groups.len() })
}

/// PERM-02/03/04/05: a right the connector needs on every user in scope.
fn user_right(
    facts: &Facts,
    id: &str,
    right_name: &str,
    pick: fn(&RightGuids) -> Right<'_>,
) -> CheckOutcome {
    let def = def(id);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let ad = &dir.ad;
        let guids = part(facts, "the rights' GUIDs", &ad.guids)?;
        let connector = part(facts, "the connector account", &ad.connector)?;
        let head = part(facts, "the domain head's security descriptor", &ad.domain_head_sd)?;
        let sample = part(facts, "the users in scope", &ad.users)?;
        let right = pick(guids);
        let who = trustees(connector);
        let account = account_name(connector);
        let head_access = access(&inherited_by_users(head, &guids.user_class), &who, right);
        let mut lacking = Vec::new();
        let mut denied = Vec::new();
        let mut checked = 0usize;
        for user in eligible(&sample.users) {
            let Ok(sd) = &user.sd else { continue };
            checked += 1;
            match access(sd, &who, right) {
                Access::Allowed(_) => {}
                Access::Denied(sid) => denied.push(format!("{} (denied to {sid})", user.dn)),
                Access::NotGranted => lacking.push(user.dn.clone()),
            }
        }
        let evidence = json!({
            "connector": connector_evidence(connector),
            "right": right_name,
            "domain_head": dir.default_naming_context,
            "domain_head_grants_users": matches!(head_access, Access::Allowed(_)),
            "users_checked": checked,
            "users_sampled": sample.users.len(),
            "sample_truncated": sample.truncated,
            "users_lacking": lacking.iter().take(50).collect::<Vec<_>>(),
            "users_denied": denied.iter().take(50).collect::<Vec<_>>(),
        });
        let domain = dir.domain_dns_name.as_str();
        let vars = |failing: &str| {
            render(
                def.remediation,
                &[
                    ("account", account),
                    ("domain", domain),
                    ("connector_dn", &connector.dn),
                    ("domain_dn", &dir.default_naming_context),
                    ("failing", failing),
                ],
            )
        };
        let mut bad: Vec<String> = denied.clone();
        bad.extend(lacking.iter().cloned());
        if !matches!(head_access, Access::Allowed(_)) && (checked == 0 || bad.len() == checked) {
            return Ok(Verdict {
                status: Status::Fail,
                summary: format!(
                    "the connector account {account} has no {right_name} right on the users of {domain}: the domain head {} does not grant it{}",
                    dir.default_naming_context,
                    match &head_access {
                        Access::Denied(sid) => format!(" (denied to {sid})"),
                        _ => String::new(),
                    }
                ),
                evidence,
                remediation: vars(&dir.default_naming_context),
            });
        }
        if bad.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!(
                    "the connector account {account} has {right_name} on all {} of {domain}",
                    plural(checked, "user checked", "users checked")
                ),
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Fail,
            summary: format!(
                "the connector account {account} lacks {right_name} on {} of {}: {}",
                plural(bad.len(), "user", "users"),
                checked,
                listed(&bad)
            ),
            evidence,
            remediation: vars(&listed(&bad)),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-02: Reset password on users in scope.
pub fn reset_password(facts: &Facts) -> CheckOutcome {
    user_right(facts, RESET_PASSWORD, "Reset password", |g| {
        Right::Extended(&g.reset_password)
    })
}

/// PERM-03: Change password on users in scope.
pub fn change_password(facts: &Facts) -> CheckOutcome {
    user_right(facts, CHANGE_PASSWORD, "Change password", |g| {
        Right::Extended(&g.change_password)
    })
}

/// PERM-04: write `lockoutTime` on users in scope.
pub fn write_lockout_time(facts: &Facts) -> CheckOutcome {
    user_right(facts, WRITE_LOCKOUT_TIME, "Write lockoutTime", |g| {
        Right::WriteProperty(&g.lockout_time)
    })
}

/// PERM-05: write `pwdLastSet` on users in scope.
pub fn write_pwd_last_set(facts: &Facts) -> CheckOutcome {
    user_right(facts, WRITE_PWD_LAST_SET, "Write pwdLastSet", |g| {
        Right::WriteProperty(&g.pwd_last_set)
    })
}

/// PERM-06: Unexpire password on the domain head.
pub fn unexpire_password(facts: &Facts) -> CheckOutcome {
    let def = def(UNEXPIRE_PASSWORD);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let ad = &dir.ad;
        let guids = part(facts, "the rights' GUIDs", &ad.guids)?;
        let connector = part(facts, "the connector account", &ad.connector)?;
        let head = part(facts, "the domain head's security descriptor", &ad.domain_head_sd)?;
        let account = account_name(connector);
        let decided = access(head, &trustees(connector), Right::Extended(&guids.unexpire_password));
        let evidence = json!({
            "connector": connector_evidence(connector),
            "domain_head": dir.default_naming_context,
            "access": match &decided { Access::Allowed(s) => format!("allowed to {s}"), Access::Denied(s) => format!("denied to {s}"), Access::NotGranted => "not granted".to_owned() },
        });
        Ok(match decided {
            Access::Allowed(sid) => Verdict {
                status: Status::Pass,
                summary: format!("{account} may unexpire passwords on {} (granted to {sid})", dir.default_naming_context),
                evidence,
                remediation: String::new(),
            },
            other => Verdict {
                status: Status::Fail,
                summary: format!(
                    "{account} may not unexpire passwords on {}{}: resetting an expired password fails",
                    dir.default_naming_context,
                    if let Access::Denied(sid) = other { format!(" (denied to {sid})") } else { String::new() }
                ),
                evidence,
                remediation: render(
                    def.remediation,
                    &[("account", account), ("domain", &dir.domain_dns_name), ("domain_dn", &dir.default_naming_context), ("connector_dn", &connector.dn)],
                ),
            },
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-07: no OU or user in scope blocks inheritance.
pub fn inheritance_blocked(facts: &Facts) -> CheckOutcome {
    let def = def(INHERITANCE_BLOCKED);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let ad: &AdFacts = &dir.ad;
        let ous = part(facts, "the OUs in scope", &ad.ous)?;
        let sample = part(facts, "the users in scope", &ad.users)?;
        let mut blocked: Vec<String> = ous
            .iter()
            .filter(|ou| ou.sd.as_ref().is_ok_and(SecurityDescriptor::inheritance_blocked))
            .map(|ou| ou.dn.clone())
            .collect();
        blocked.extend(
            eligible(&sample.users)
                .filter(|u| u.sd.as_ref().is_ok_and(SecurityDescriptor::inheritance_blocked))
                .map(|u| u.dn.clone()),
        );
        let unreadable = ous.iter().filter(|o| o.sd.is_err()).count()
            + sample.users.iter().filter(|u| u.sd.is_err()).count();
        let evidence = json!({
            "scope": ad.scope_dns,
            "ous_checked": ous.len(),
            "users_checked": sample.users.len(),
            "unreadable": unreadable,
            "inheritance_blocked": blocked.iter().take(50).collect::<Vec<_>>(),
        });
        if blocked.is_empty() && unreadable > 0 {
            return Err(Verdict {
                status: Status::Error,
                summary: format!("could not read the security descriptors of {} in scope", plural(unreadable, "object", "objects")),
                evidence,
                remediation: format!("Give the account {} binds as Read permissions on the OUs and users in scope.", facts.host_name),
            });
        }
        if blocked.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!("no OU or user in scope blocks inheritance ({} and {} checked)", plural(ous.len(), "OU", "OUs"), plural(sample.users.len(), "user", "users")),
                evidence,
                remediation: String::new(),
            });
        }
        let connector_dn = ad.connector.as_ref().map(|c| c.dn.clone()).unwrap_or_else(|_| "<connector account DN>".to_owned());
        let commands = blocked
            .iter()
            .take(LISTED)
            .map(|dn| format!("Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountDN '{connector_dn}' -ADobjectDN '{dn}'"))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Verdict {
            status: Status::Fail,
            summary: format!("inheritance is blocked on {}, so the domain-level rights do not reach the users there: {}", plural(blocked.len(), "object", "objects"), listed(&blocked)),
            evidence,
            remediation: render(def.remediation, &[("commands", &commands)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-08: protected accounts (`adminCount`) in scope, whose passwords writeback cannot set.
pub fn protected_accounts(facts: &Facts) -> CheckOutcome {
    let def = def(PROTECTED_ACCOUNTS);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let sample = part(facts, "the users in scope", &dir.ad.users)?;
        // The built-in Administrator and krbtgt are protected in every domain; naming them in
        // every report would only teach people to ignore this check.
        let built_in = |u: &ScopedUser| {
            matches!(&u.protection, Some(Ok(g)) if g.sid.rsplit('-').next().is_some_and(|rid| rid == "500" || rid == "502"))
        };
        let (built_ins, protected): (Vec<&ScopedUser>, Vec<&ScopedUser>) =
            sample.users.iter().filter(|u| u.admin_count > 0).partition(|u| built_in(u));
        let protected: Vec<String> = protected.iter().map(|u| u.dn.clone()).collect();
        let evidence = json!({
            "users_checked": sample.users.len(),
            "protected": protected.iter().take(50).collect::<Vec<_>>(),
            "built_in_protected": built_ins.iter().map(|u| u.dn.as_str()).collect::<Vec<_>>(),
        });
        if protected.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!(
                    "no protected account among {} in scope besides the built-in Administrator and krbtgt",
                    plural(sample.users.len(), "user", "users")
                ),
                evidence,
                remediation: String::new(),
            });
        }
        let account = dir.ad.connector.as_ref().map(|c| account_name(c).to_owned()).unwrap_or_else(|_| "<connector account>".to_owned());
        Ok(Verdict {
            status: Status::Warn,
            summary: format!(
                "{} in scope {} protected (adminCount): writeback cannot reset {}, by design: {}",
                plural(protected.len(), "user", "users"),
                if protected.len() == 1 { "is" } else { "are" },
                if protected.len() == 1 { "its password" } else { "their passwords" },
                listed(&protected)
            ),
            evidence,
            remediation: render(def.remediation, &[("users", &listed(&protected)), ("account", &account), ("domain", &dir.domain_dns_name)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// Built-in groups whose members AdminSDHolder protects (`S-1-5-32-…`).
const PROTECTED_BUILTIN: &[&str] = &[
    "S-1-5-32-544",
    "S-1-5-32-548",
    "S-1-5-32-549",
    "S-1-5-32-550",
    "S-1-5-32-551",
    "S-1-5-32-552",
];
/// RIDs of the domain's protected groups (Domain Admins, Domain Controllers, Schema Admins,
/// Enterprise Admins, Read-only DCs, Key Admins, Enterprise Key Admins) and accounts
/// (Administrator, krbtgt).
const PROTECTED_RIDS: &[&str] = &[
    "512", "516", "518", "519", "521", "526", "527", "500", "502",
];

fn protected_sid(sid: &str) -> bool {
    PROTECTED_BUILTIN.contains(&sid)
        || (sid.starts_with("S-1-5-21-")
            && sid
                .rsplit('-')
                .next()
                .is_some_and(|rid| PROTECTED_RIDS.contains(&rid)))
}

/// PERM-09: no user keeps `adminCount` after leaving every protected group.
pub fn orphaned_admin_count(facts: &Facts) -> CheckOutcome {
    let def = def(ORPHANED_ADMIN_COUNT);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let sample = part(facts, "the users in scope", &dir.ad.users)?;
        let protected: Vec<&ScopedUser> = sample.users.iter().filter(|u| u.admin_count > 0).collect();
        let mut orphaned = Vec::new();
        let mut unreadable = Vec::new();
        for user in &protected {
            match &user.protection {
                Some(Ok(groups)) => {
                    if !protected_sid(&groups.sid) && !groups.token_groups.iter().any(|g| protected_sid(g)) {
                        orphaned.push(user.dn.clone());
                    }
                }
                Some(Err(e)) => unreadable.push(format!("{}: {e}", user.dn)),
                None => unreadable.push(format!("{}: groups not read", user.dn)),
            }
        }
        let evidence = json!({
            "protected_users": protected.len(),
            "orphaned": orphaned.iter().take(50).collect::<Vec<_>>(),
            "unreadable": unreadable.iter().take(50).collect::<Vec<_>>(),
        });
        if orphaned.is_empty() && !unreadable.is_empty() {
            return Err(Verdict {
                status: Status::Error,
                summary: format!("could not read the groups of {}: {}", plural(unreadable.len(), "protected user", "protected users"), listed(&unreadable)),
                evidence,
                remediation: format!("Let the account {} binds as read tokenGroups of the protected users.", facts.host_name),
            });
        }
        if orphaned.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!("every one of {} in scope is still in a protected group", plural(protected.len(), "protected user", "protected users")),
                evidence,
                remediation: String::new(),
            });
        }
        let commands = orphaned
            .iter()
            .take(LISTED)
            .map(|dn| format!("Set-ADUser -Identity '{dn}' -Clear adminCount; $acl = Get-Acl 'AD:{dn}'; $acl.SetAccessRuleProtection($false, $true); Set-Acl 'AD:{dn}' $acl"))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Verdict {
            status: Status::Fail,
            summary: format!(
                "{} adminCount set but {} in no protected group, so {} protected ACL keeps the connector's rights out: {}",
                if orphaned.len() == 1 { "1 user has".to_owned() } else { format!("{} users have", orphaned.len()) },
                if orphaned.len() == 1 { "is" } else { "are" },
                if orphaned.len() == 1 { "its" } else { "their" },
                listed(&orphaned)
            ),
            evidence,
            remediation: render(def.remediation, &[("commands", &commands)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-11: "user cannot change password" (deny Change password to Everyone or SELF).
pub fn user_cannot_change_password(facts: &Facts) -> CheckOutcome {
    let def = def(CANNOT_CHANGE_PASSWORD);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let guids = part(facts, "the rights' GUIDs", &dir.ad.guids)?;
        let sample = part(facts, "the users in scope", &dir.ad.users)?;
        let right = Right::Extended(&guids.change_password);
        let flagged: Vec<&ScopedUser> = sample
            .users
            .iter()
            .filter(|u| {
                u.sd.as_ref().is_ok_and(|sd| {
                    sd.dacl.iter().any(|ace| {
                        ace.kind == AceKind::Deny && ace.flags & INHERIT_ONLY == 0 && (ace.sid == EVERYONE || ace.sid == SELF) && covers(ace, right)
                    })
                })
            })
            .collect();
        let dns: Vec<String> = flagged.iter().map(|u| u.dn.clone()).collect();
        let evidence = json!({ "users_checked": sample.users.len(), "cannot_change_password": dns.iter().take(50).collect::<Vec<_>>() });
        if dns.is_empty() {
            return Ok(Verdict { status: Status::Pass, summary: format!("none of {} in scope has \"user cannot change password\"", plural(sample.users.len(), "user", "users")), evidence, remediation: String::new() });
        }
        let commands = flagged.iter().take(LISTED).map(|u| format!("Set-ADUser -Identity '{}' -CannotChangePassword $false", u.dn)).collect::<Vec<_>>().join("\n");
        Ok(Verdict {
            status: Status::Warn,
            summary: format!("{} \"user cannot change password\" (a deny ACE for Everyone or SELF), so changing it through writeback fails: {}", if dns.len() == 1 { "1 user has".to_owned() } else { format!("{} users have", dns.len()) }, listed(&dns)),
            evidence,
            remediation: render(def.remediation, &[("commands", &commands)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-12: Pre-Windows 2000 Compatible Access holds Authenticated Users (or the connector).
pub fn pre_windows_2000_access(facts: &Facts) -> CheckOutcome {
    let def = def(PRE_WINDOWS_2000_ACCESS);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let members = part(facts, "Pre-Windows 2000 Compatible Access", &dir.ad.pre_windows_2000_members)?;
        let group = format!("CN=Pre-Windows 2000 Compatible Access,CN=Builtin,{}", dir.default_naming_context);
        let has_au = members.iter().any(|m| m.to_ascii_uppercase().starts_with(&format!("CN={AUTHENTICATED_USERS},")));
        let via_connector = dir.ad.connector.as_ref().is_ok_and(|c| c.token_groups.iter().any(|g| g == "S-1-5-32-554"));
        let evidence = json!({ "group": group, "members": members, "authenticated_users_member": has_au, "connector_is_member": via_connector });
        if has_au || via_connector {
            return Ok(Verdict {
                status: Status::Pass,
                summary: if has_au { "Authenticated Users are in Pre-Windows 2000 Compatible Access".to_owned() } else { "the connector account is in Pre-Windows 2000 Compatible Access".to_owned() },
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Fail,
            summary: format!("Pre-Windows 2000 Compatible Access ({}) holds neither Authenticated Users nor the connector account: the connector may not read users through NetUserGetInfo", plural(members.len(), "member", "members")),
            evidence,
            remediation: render(def.remediation, &[("group", &group), ("domain", &dir.domain_dns_name)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// PERM-12 (2): the DACLs of the domain head, `CN=Builtin` and `CN=Server,CN=System` grant
/// list contents, read all properties and read permissions to Authenticated Users, Pre-Windows
/// 2000 Compatible Access or the connector account (with its groups).
pub fn sam_read_access(facts: &Facts) -> CheckOutcome {
    let def = def(SAM_READ_ACCESS);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let head = part(facts, "the domain head's security descriptor", &dir.ad.domain_head_sd)?;
        let mut objects = vec![(dir.default_naming_context.as_str(), head)];
        for (dn, sd) in &dir.ad.sam_sds {
            objects.push((dn.as_str(), part(facts, dn, sd)?));
        }
        let mut who: Vec<&str> = vec![AUTHENTICATED_USERS, PRE_WINDOWS_2000, EVERYONE];
        let connector = dir.ad.connector.as_ref().ok();
        if let Some(c) = connector {
            who = trustees(c);
            who.push(PRE_WINDOWS_2000);
        }
        let rights = [
            (DS_LIST_CHILDREN, "list contents"),
            (DS_READ_PROP, "read all properties"),
            (READ_CONTROL, "read permissions"),
        ];
        let mut missing: Vec<String> = Vec::new();
        let mut evidence_objects = Vec::new();
        for (dn, sd) in &objects {
            let mut lacking = Vec::new();
            let mut granted = serde_json::Map::new();
            for (bit, name) in rights {
                match access(sd, &who, Right::Object(bit)) {
                    Access::Allowed(sid) => {
                        granted.insert(name.to_owned(), json!({ "allowed_to": sid }));
                    }
                    Access::Denied(sid) => {
                        granted.insert(name.to_owned(), json!({ "denied_to": sid }));
                        lacking.push(format!("{name} (denied to {sid})"));
                    }
                    Access::NotGranted => {
                        granted.insert(name.to_owned(), Value::Null);
                        lacking.push(name.to_owned());
                    }
                }
            }
            if !lacking.is_empty() {
                missing.push(format!("{dn}: {}", lacking.join(", ")));
            }
            evidence_objects.push(json!({ "dn": dn, "rights": granted, "missing": lacking }));
        }
        let evidence = json!({
            "objects": evidence_objects,
            "trustees": who,
            "connector": connector.map(connector_evidence),
        });
        if missing.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: "the domain head, CN=Builtin and CN=Server,CN=System grant the read access NetUserGetInfo needs".to_owned(),
                evidence,
                remediation: String::new(),
            });
        }
        let account = connector.map_or("the connector account", account_name);
        let commands = objects
            .iter()
            .filter(|(dn, _)| missing.iter().any(|m| m.starts_with(&format!("{dn}: "))))
            .map(|(dn, _)| format!("dsacls \"{dn}\" /G \"NT AUTHORITY\\Authenticated Users:LCRPRC\""))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Verdict {
            status: Status::Fail,
            summary: format!(
                "{account} may not read what NetUserGetInfo needs (SSPR_0029, 33004): {}",
                listed(&missing)
            ),
            evidence,
            remediation: render(def.remediation, &[("missing", &listed(&missing)), ("commands", &commands), ("account", account)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// 100-ns intervals between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

/// PERM-01 and SRV-15: the connector account is found, enabled, not locked out and not expired.
pub fn connector_account(facts: &Facts) -> CheckOutcome {
    let def = def(CONNECTOR_ACCOUNT);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let c = part(facts, "the connector account", &dir.ad.connector)?;
        let account = account_name(c);
        let disabled = c.user_account_control & 0x2 != 0;
        let locked = c.uac_computed.is_some_and(|v| v & 0x10 != 0);
        let now = (facts.observed_at - OffsetDateTime::UNIX_EPOCH).whole_nanoseconds() / 100;
        let expired = c.account_expires != 0
            && c.account_expires != i64::MAX
            && i128::from(c.account_expires) - i128::from(FILETIME_UNIX_EPOCH) < now;
        let problems: Vec<&str> = [(disabled, "disabled"), (locked, "locked out"), (expired, "expired")]
            .into_iter()
            .filter_map(|(bad, what)| bad.then_some(what))
            .collect();
        let evidence = json!({
            "connector": connector_evidence(c),
            "configured_as": c.configured_as,
            "user_account_control": c.user_account_control,
            "uac_computed": c.uac_computed,
            "account_expires": c.account_expires,
            "disabled": disabled, "locked_out": locked, "expired": expired,
        });
        if problems.is_empty() {
            return Ok(Verdict { status: Status::Pass, summary: format!("the connector account {account} ({}) is enabled, not locked out and not expired", c.dn), evidence, remediation: String::new() });
        }
        let problem = problems.join(" and ");
        Ok(Verdict {
            status: Status::Fail,
            summary: format!("the connector account {account} ({}) is {problem}: writeback and sync cannot bind as it", c.dn),
            evidence,
            remediation: render(def.remediation, &[("account", account), ("connector_dn", &c.dn), ("problem", &problem), ("domain", &dir.domain_dns_name)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// The rights Cloud Sync's gMSA needs on the domain head for writeback (CS-04).
const CLOUD_SYNC_RIGHTS: [&str; 4] = [
    "Reset password",
    "Write lockoutTime",
    "Write pwdLastSet",
    "Unexpire password",
];

/// CS-04: when the domain has the Cloud Sync provisioning agent's gMSA, it holds the writeback
/// rights on the domain head.
pub fn cloud_sync_gmsa(facts: &Facts) -> CheckOutcome {
    let def = def(CLOUD_SYNC_GMSA);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let ad = &dir.ad;
        let Some(gmsa) = part(facts, "the Cloud Sync gMSA", &ad.cloud_sync_account)? else {
            return Ok(Verdict {
                status: Status::NotApplicable,
                summary: format!(
                    "{} has no Cloud Sync provisioning agent account (ldap.cloud_sync_account, provAgentgMSA$ by default): Cloud Sync is not deployed here",
                    dir.domain_dns_name
                ),
                evidence: json!({ "domain": dir.domain_dns_name }),
                remediation: String::new(),
            });
        };
        let guids = part(facts, "the rights' GUIDs", &ad.guids)?;
        let head = part(facts, "the domain head's security descriptor", &ad.domain_head_sd)?;
        let granted = rights_granted(head, guids, &trustees(gmsa));
        let missing: Vec<String> = CLOUD_SYNC_RIGHTS
            .iter()
            .filter(|right| !granted.get(*right).copied().unwrap_or(false))
            .map(|right| (*right).to_owned())
            .collect();
        let account = account_name(gmsa);
        let evidence = json!({
            "gmsa": connector_evidence(gmsa),
            "domain_head": dir.default_naming_context,
            "rights": granted,
            "missing": missing,
        });
        if missing.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!("the Cloud Sync gMSA {account} holds {} on {}", CLOUD_SYNC_RIGHTS.join(", "), dir.default_naming_context),
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Fail,
            summary: format!(
                "the Cloud Sync gMSA {account} lacks {} on {}: Cloud Sync cannot write passwords back",
                missing.join(", "),
                dir.default_naming_context
            ),
            evidence,
            remediation: render(def.remediation, &[("account", account), ("missing", &missing.join(", ")), ("domain", &dir.domain_dns_name), ("domain_dn", &dir.default_naming_context)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checks::ad_fixtures::CONNECTOR_SID;
    use crate::checks::fixtures::{assert_rendered, healthy};

    fn with_ad(change: impl FnOnce(&mut AdFacts)) -> Facts {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            change(&mut d.ad);
        }
        facts
    }

    fn gmsa(sid: &str) -> ConnectorAccount {
        ConnectorAccount {
            configured_as: "provAgentgMSA$".to_owned(),
            dn: "CN=provAgentgMSA,CN=Managed Service Accounts,DC=contoso,DC=com".to_owned(),
            sam_account_name: "provAgentgMSA$".to_owned(),
            sid: sid.to_owned(),
            token_groups: vec!["S-1-5-21-1-2-3-515".to_owned()],
            user_account_control: 0x1000,
            uac_computed: Some(0),
            account_expires: 0,
        }
    }

    #[test]
    fn cloud_sync_gmsa_needs_the_writeback_rights() {
        let o = cloud_sync_gmsa(&healthy());
        assert_eq!(o.status, Status::NotApplicable, "{}", o.summary);
        assert!(o.summary.contains("provAgentgMSA$"), "{}", o.summary);

        // The head grants the rights to this SID (as Set-AADCloudSyncPermissions does).
        let o = cloud_sync_gmsa(&with_ad(|ad| {
            ad.cloud_sync_account = Ok(Some(gmsa(CONNECTOR_SID)))
        }));
        assert_eq!(o.status, Status::Pass, "{}", o.summary);

        let o = cloud_sync_gmsa(&with_ad(|ad| {
            ad.cloud_sync_account = Ok(Some(gmsa("S-1-5-21-1-2-3-4242")))
        }));
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.summary.contains(
                "lacks Reset password, Write lockoutTime, Write pwdLastSet, Unexpire password"
            ),
            "{}",
            o.summary
        );
        assert_rendered(
            &o.remediation,
            &[
                "provAgentgMSA$",
                "Set-AADCloudSyncPermissions -PermissionType PasswordWriteBack",
                "DC=contoso,DC=com",
            ],
        );

        let o = cloud_sync_gmsa(&with_ad(|ad| {
            ad.cloud_sync_account = Err(crate::facts::ProbeFailure::new(
                ProbeStep::Search,
                "size limit",
            ));
        }));
        assert_eq!(o.status, Status::Error);
    }

    #[test]
    fn sam_read_access_passes_by_default_and_fails_when_builtin_is_hardened() {
        let o = sam_read_access(&healthy());
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        assert_eq!(o.evidence["objects"].as_array().map(Vec::len), Some(3));

        // Hardened: CN=Builtin grants Authenticated Users only list contents.
        let builtin = "CN=Builtin,DC=contoso,DC=com";
        let o = sam_read_access(&with_ad(|ad| {
            if let Ok(sd) = &mut ad.sam_sds[0].1 {
                sd.dacl[0].mask = DS_LIST_CHILDREN;
            }
        }));
        assert_eq!(o.status, Status::Fail, "{}", o.summary);
        assert!(
            o.summary
                .contains(&format!("{builtin}: read all properties, read permissions"))
                && o.summary.contains("MSOL_abc123"),
            "{}",
            o.summary
        );
        assert!(!o.summary.contains("CN=Server"), "{}", o.summary);
        assert_rendered(
            &o.remediation,
            &[&format!(
                "dsacls \"{builtin}\" /G \"NT AUTHORITY\\Authenticated Users:LCRPRC\""
            )],
        );

        // A grant to Pre-Windows 2000 Compatible Access or GENERIC_READ counts; a deny wins.
        let o = sam_read_access(&with_ad(|ad| {
            if let Ok(sd) = &mut ad.sam_sds[1].1 {
                sd.dacl[0].sid = PRE_WINDOWS_2000.to_owned();
                sd.dacl[0].mask = GENERIC_READ;
            }
        }));
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        let o = sam_read_access(&with_ad(|ad| {
            if let Ok(sd) = &mut ad.sam_sds[1].1 {
                let mut deny = sd.dacl[0].clone();
                deny.kind = AceKind::Deny;
                deny.mask = READ_CONTROL;
                sd.dacl.insert(0, deny);
            }
        }));
        assert_eq!(o.status, Status::Fail, "{}", o.summary);
        assert!(o.summary.contains("denied to S-1-5-11"), "{}", o.summary);
    }

    #[test]
    fn an_unreadable_sam_descriptor_is_an_error() {
        let o = sam_read_access(&with_ad(|ad| {
            ad.sam_sds[1].1 = Err(ProbeFailure::new(
                ProbeStep::Search,
                "dc1.contoso.com returned no entry for CN=Server,CN=System,DC=contoso,DC=com: the bind account may lack read access",
            ));
        }));
        assert_eq!(o.status, Status::Error, "{}", o.summary);
        assert!(o.summary.contains("CN=Server,CN=System"), "{}", o.summary);
    }

    const ALL: &[fn(&Facts) -> CheckOutcome] = &[
        connector_account,
        reset_password,
        change_password,
        write_lockout_time,
        write_pwd_last_set,
        unexpire_password,
        inheritance_blocked,
        protected_accounts,
        orphaned_admin_count,
        user_cannot_change_password,
        pre_windows_2000_access,
    ];

    /// The domain SID of the Samba DC the descriptors in `testdata/` were captured from.
    const CAPTURED_DOMAIN: &str = "S-1-5-21-2223247103-3762509082-3211981945";

    #[test]
    fn rights_on_descriptors_captured_from_a_samba_dc() {
        // nTSecurityDescriptor read with the SD flags control (DACL only) from a freshly
        // provisioned Samba 4.17 DC: its domain head, and a user created in CN=Users.
        let head =
            SecurityDescriptor::parse(include_bytes!("../../testdata/samba_domain_head_sd.bin"))
                .expect("domain head parses");
        let user =
            SecurityDescriptor::parse(include_bytes!("../../testdata/samba_captured_user_sd.bin"))
                .expect("user parses");
        // As many ACEs as Samba's own NDR parser finds (python3 samba.ndr.ndr_unpack).
        assert_eq!((head.dacl.len(), user.dacl.len()), (46, 44));
        assert_eq!((head.control, user.control), (0x8404, 0x8404));
        assert!(!head.inheritance_blocked() && !user.inheritance_blocked());
        let reset = Right::Extended("00299570-246d-11d0-a768-00aa006e0529");
        let change = Right::Extended("ab721a53-1e2f-11d0-9819-00aa0040529b");
        let unexpire = Right::Extended("ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501");
        let lockout = Right::WriteProperty("28630ebf-41d5-11d1-a9c1-0000f80367c1");
        // A plain account: Everyone's Change password, AD's default Unexpire password for
        // Authenticated Users, and nothing else writeback needs.
        let plain = [
            "S-1-5-21-2223247103-3762509082-3211981945-1105",
            EVERYONE,
            AUTHENTICATED_USERS,
        ];
        assert_eq!(
            access(&user, &plain, change),
            Access::Allowed(EVERYONE.to_owned())
        );
        assert_eq!(access(&user, &plain, reset), Access::NotGranted);
        assert_eq!(access(&user, &plain, lockout), Access::NotGranted);
        assert_eq!(
            access(&head, &plain, unexpire),
            Access::Allowed(AUTHENTICATED_USERS.to_owned())
        );
        let inherited = inherited_by_users(&head, "bf967aba-0de6-11d0-a285-00aa003049e2");
        assert_eq!(access(&inherited, &plain, reset), Access::NotGranted);
        // Domain Admins hold full control on the user, which includes every extended right.
        let admins = format!("{CAPTURED_DOMAIN}-512");
        assert_eq!(
            access(&user, &[admins.as_str()], reset),
            Access::Allowed(admins.clone())
        );
        assert_eq!(
            access(&user, &[admins.as_str()], lockout),
            Access::Allowed(admins)
        );
    }

    #[test]
    fn a_healthy_domain_passes_every_permission_check() {
        let facts = healthy();
        for check in ALL {
            let o = check(&facts);
            assert_eq!(o.status, Status::Pass, "{}: {}", o.check.id, o.summary);
        }
    }

    #[test]
    fn without_reset_password_on_the_domain_head_every_user_fails_naming_the_cmdlet() {
        let facts = with_ad(|ad| {
            let reset = "00299570-246d-11d0-a768-00aa006e0529";
            if let Ok(sd) = &mut ad.domain_head_sd {
                sd.dacl.retain(|a| a.object_type.as_deref() != Some(reset));
            }
            if let Ok(s) = &mut ad.users {
                for u in &mut s.users {
                    if let Ok(sd) = &mut u.sd {
                        sd.dacl.retain(|a| a.object_type.as_deref() != Some(reset));
                    }
                }
            }
        });
        let o = reset_password(&facts);
        assert_eq!(o.status, Status::Fail, "{}", o.summary);
        assert!(
            o.summary.contains("MSOL_abc123") && o.summary.contains("DC=contoso,DC=com"),
            "{}",
            o.summary
        );
        assert_rendered(
            &o.remediation,
            &[
                "Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName MSOL_abc123 -ADConnectorAccountDomain contoso.com",
            ],
        );
        assert_eq!(change_password(&facts).status, Status::Pass);
        assert_eq!(write_lockout_time(&facts).status, Status::Pass);
    }

    #[test]
    fn a_user_with_blocked_inheritance_fails_partially_with_a_per_object_command() {
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users {
                s.users[1].sd = Ok(SecurityDescriptor {
                    control: crate::ad::SE_DACL_PROTECTED,
                    dacl: Vec::new(),
                });
            }
        });
        let o = reset_password(&facts);
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.summary.contains("1 user of 2") && o.summary.contains("CN=Bob"),
            "{}",
            o.summary
        );
        let o = inheritance_blocked(&facts);
        assert_eq!(o.status, Status::Fail);
        assert_rendered(
            &o.remediation,
            &[
                "-ADConnectorAccountDN 'CN=MSOL_abc123,CN=Users,DC=contoso,DC=com' -ADobjectDN 'CN=Bob,OU=Sales,DC=contoso,DC=com'",
            ],
        );
    }

    #[test]
    fn a_deny_ace_beats_the_allow_and_is_reported_as_cannot_change_password() {
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users
                && let Ok(sd) = &mut s.users[0].sd
            {
                sd.dacl.insert(
                    0,
                    Ace {
                        kind: AceKind::Deny,
                        flags: 0,
                        mask: DS_CONTROL_ACCESS,
                        object_type: Some("ab721a53-1e2f-11d0-9819-00aa0040529b".to_owned()),
                        inherited_object_type: None,
                        sid: EVERYONE.to_owned(),
                    },
                );
            }
        });
        let o = change_password(&facts);
        assert_eq!(o.status, Status::Fail);
        assert!(o.summary.contains("denied to S-1-1-0"), "{}", o.summary);
        let o = user_cannot_change_password(&facts);
        assert_eq!(o.status, Status::Warn);
        assert_rendered(
            &o.remediation,
            &[
                "Set-ADUser -Identity 'CN=Alice,OU=Sales,DC=contoso,DC=com' -CannotChangePassword $false",
            ],
        );
    }

    #[test]
    fn a_right_granted_to_a_group_of_the_connector_counts() {
        let facts = with_ad(|ad| {
            let group = "S-1-5-21-1-2-3-2001".to_owned();
            if let Ok(c) = &mut ad.connector {
                c.token_groups = vec![group.clone()];
            }
            let regrant = |sd: &mut SecurityDescriptor| {
                for a in &mut sd.dacl {
                    if a.sid == CONNECTOR_SID {
                        a.sid = group.clone();
                    }
                }
            };
            if let Ok(sd) = &mut ad.domain_head_sd {
                regrant(sd);
            }
            if let Ok(s) = &mut ad.users {
                for u in &mut s.users {
                    if let Ok(sd) = &mut u.sd {
                        regrant(sd);
                    }
                }
            }
        });
        for check in ALL {
            assert_eq!(check(&facts).status, Status::Pass);
        }
    }

    #[test]
    fn unexpire_missing_protected_users_and_pre2000_are_reported() {
        let facts = with_ad(|ad| {
            if let Ok(sd) = &mut ad.domain_head_sd {
                sd.dacl.retain(|a| {
                    a.object_type.as_deref() != Some("ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501")
                });
            }
            if let Ok(s) = &mut ad.users {
                s.users[0].admin_count = 1;
            }
            ad.pre_windows_2000_members = Ok(Vec::new());
        });
        let o = unexpire_password(&facts);
        assert_eq!(o.status, Status::Fail, "{}", o.summary);
        assert_rendered(&o.remediation, &["MSOL_abc123", "DC=contoso,DC=com"]);
        let o = protected_accounts(&facts);
        assert_eq!(o.status, Status::Warn);
        assert!(o.summary.contains("CN=Alice"), "{}", o.summary);
        assert_rendered(&o.remediation, &["-IncludeAdminSdHolders"]);
        assert_eq!(pre_windows_2000_access(&facts).status, Status::Fail);
        // The protected user is left out of the rights checks.
        assert!(reset_password(&facts).summary.contains("1 user checked"));
    }

    #[test]
    fn the_built_in_administrator_alone_is_not_reported_as_protected() {
        use crate::ad::UserGroups;
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users {
                s.users[0].admin_count = 1;
                s.users[0].protection = Some(Ok(UserGroups {
                    sid: "S-1-5-21-1-2-3-500".to_owned(),
                    token_groups: vec!["S-1-5-21-1-2-3-512".to_owned()],
                }));
            }
        });
        let o = protected_accounts(&facts);
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        assert_eq!(
            o.evidence["built_in_protected"][0],
            "CN=Alice,OU=Sales,DC=contoso,DC=com"
        );
        assert_eq!(orphaned_admin_count(&facts).status, Status::Pass);
    }

    #[test]
    fn admin_count_without_a_protected_group_is_orphaned() {
        use crate::ad::UserGroups;
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users {
                s.users[0].admin_count = 1;
                s.users[0].protection = Some(Ok(UserGroups {
                    sid: "S-1-5-21-1-2-3-1200".to_owned(),
                    token_groups: vec!["S-1-5-21-1-2-3-513".to_owned()],
                }));
                s.users[1].admin_count = 1;
                s.users[1].protection = Some(Ok(UserGroups {
                    sid: "S-1-5-21-1-2-3-1201".to_owned(),
                    token_groups: vec!["S-1-5-21-1-2-3-512".to_owned()],
                }));
            }
        });
        let o = orphaned_admin_count(&facts);
        assert_eq!(o.status, Status::Fail, "{}", o.summary);
        assert!(
            o.summary.contains("CN=Alice") && !o.summary.contains("CN=Bob"),
            "{}",
            o.summary
        );
        assert_rendered(
            &o.remediation,
            &["Set-ADUser -Identity 'CN=Alice,OU=Sales,DC=contoso,DC=com' -Clear adminCount"],
        );
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users {
                s.users[0].admin_count = 1;
                s.users[0].protection = Some(Err("denied".to_owned()));
            }
        });
        assert_eq!(orphaned_admin_count(&facts).status, Status::Error);
    }

    #[test]
    fn a_disabled_or_expired_connector_fails_and_an_unknown_one_is_an_error() {
        let facts = with_ad(|ad| {
            if let Ok(c) = &mut ad.connector {
                c.user_account_control |= 0x2;
                c.account_expires = 1;
            }
        });
        let o = connector_account(&facts);
        assert_eq!(o.status, Status::Fail);
        assert!(o.summary.contains("disabled and expired"), "{}", o.summary);
        assert_rendered(
            &o.remediation,
            &["Enable-ADAccount -Identity 'CN=MSOL_abc123"],
        );

        let facts = with_ad(|ad| {
            ad.connector = Err(ProbeFailure::new(
                ProbeStep::NotConfigured,
                "the connector account is not known",
            ));
        });
        let needs_connector: [fn(&Facts) -> CheckOutcome; 6] = [
            connector_account,
            reset_password,
            change_password,
            write_lockout_time,
            write_pwd_last_set,
            unexpire_password,
        ];
        for check in needs_connector {
            let o = check(&facts);
            assert_eq!(o.status, Status::Error, "{}", o.check.id);
            assert!(
                o.remediation.contains("connector_account"),
                "{}",
                o.remediation
            );
        }
    }

    #[test]
    fn unreadable_descriptors_are_errors_not_passes() {
        let facts = with_ad(|ad| {
            ad.domain_head_sd = Err(ProbeFailure::new(
                ProbeStep::Search,
                "dc1.contoso.com returned no entry",
            ));
            ad.users = Err(ProbeFailure::new(ProbeStep::Search, "size limit"));
        });
        for check in ALL.iter().skip(1).take(5) {
            assert_eq!(check(&facts).status, Status::Error);
        }
        let facts = with_ad(|ad| {
            if let Ok(s) = &mut ad.users {
                for u in &mut s.users {
                    u.sd = Err("no nTSecurityDescriptor".to_owned());
                }
            }
            ad.ous = Ok(Vec::new());
        });
        assert_eq!(inheritance_blocked(&facts).status, Status::Error);
    }
}

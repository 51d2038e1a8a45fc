//! LDAP reads for the permission, topology and policy checks (PERM-*, AD-02…06, USR-*): the
//! rootDSE's controls and functional levels, the DCs' computer objects, the GUIDs of the rights
//! writeback needs (from the extended-rights and schema containers, never hard-coded), the
//! connector account with its `tokenGroups`, the security descriptors of the domain head and of
//! the OUs and a bounded sample of users in scope, the PSOs, and Pre-Windows 2000 Compatible
//! Access.
//!
//! Security descriptors are read with the SD flags control (DACL only), so the bind account
//! needs no right to read SACLs. Every part is read on its own and records its own failure.

use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry, SearchOptions, ldap_escape};

use crate::ad::{
    AdFacts, ConnectorAccount, DcReading, DomainController, OrganizationalUnit, PasswordRules,
    PasswordSettings, RightGuids, RootDse, ScopedUser, SecurityDescriptor, UserGroups, UserSample,
    guid_to_string, parse_replication_metadata, sid_to_string,
};
use crate::config::LdapSettings;
use crate::facts::{ProbeFailure, ProbeStep};

/// `LDAP_SERVER_SD_FLAGS_OID`.
const SD_FLAGS_OID: &str = "1.2.840.113556.1.4.801";
/// The BER value `SEQUENCE { INTEGER 4 }`: DACL only.
const SD_FLAGS_DACL: [u8; 5] = [0x30, 0x03, 0x02, 0x01, 0x04];
/// LDAP result codes the probe tells apart.
const RC_SIZE_LIMIT_EXCEEDED: u32 = 4;
const RC_NO_SUCH_OBJECT: u32 = 32;
/// At most this many OUs are read per scope DN.
const MAX_OUS: usize = 2_000;
/// At most this many protected users get their groups read, one base read each.
const MAX_PROTECTED_READS: usize = 100;

/// One search's entries, and whether the size limit cut it short.
struct Found {
    entries: Vec<SearchEntry>,
    truncated: bool,
}

struct Reader<'a> {
    ldap: &'a mut Ldap,
    timeout: Duration,
    host: &'a str,
}

impl Reader<'_> {
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        with_sd: bool,
        limit: Option<usize>,
    ) -> Result<Found, ProbeFailure> {
        let fail = |e: String| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!("searching {base} for {filter} on {} failed: {e}", self.host),
            )
        };
        let ldap = &mut *self.ldap;
        if with_sd {
            ldap.with_controls(RawControl {
                ctype: SD_FLAGS_OID.to_owned(),
                crit: true,
                val: Some(SD_FLAGS_DACL.to_vec()),
            });
        }
        if let Some(limit) = limit {
            ldap.with_search_options(
                SearchOptions::new().sizelimit(i32::try_from(limit).unwrap_or(i32::MAX)),
            );
        }
        let result = ldap
            .with_timeout(self.timeout)
            .search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let ldap3::SearchResult(entries, status) = result;
        let truncated = match status.rc {
            0 => false,
            RC_SIZE_LIMIT_EXCEEDED => true,
            rc => {
                return Err(ProbeFailure::new(
                    ProbeStep::Search,
                    format!(
                        "searching {base} for {filter} on {}: result code {rc}{}",
                        self.host,
                        if status.text.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", status.text)
                        }
                    ),
                ));
            }
        };
        Ok(Found {
            entries: entries.into_iter().map(SearchEntry::construct).collect(),
            truncated,
        })
    }

    async fn base(
        &mut self,
        dn: &str,
        attrs: &[&str],
        with_sd: bool,
    ) -> Result<SearchEntry, ProbeFailure> {
        let found = self
            .search(dn, Scope::Base, "(objectClass=*)", attrs, with_sd, None)
            .await?;
        found.entries.into_iter().next().ok_or_else(|| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!(
                    "{} returned no entry for {dn}: the bind account may lack read access",
                    self.host
                ),
            )
        })
    }
}

/// Every value of `name` as bytes, whether ldap3 filed it as text or as binary.
fn bytes<'e>(entry: &'e SearchEntry, name: &str) -> Vec<&'e [u8]> {
    if let Some((_, values)) = entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        return values.iter().map(Vec::as_slice).collect();
    }
    texts(entry, name).into_iter().map(str::as_bytes).collect()
}

fn texts<'e>(entry: &'e SearchEntry, name: &str) -> Vec<&'e str> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, values)| values.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

fn text(entry: &SearchEntry, name: &str) -> Option<String> {
    texts(entry, name).first().map(|s| (*s).to_owned())
}

fn number<T: std::str::FromStr>(entry: &SearchEntry, name: &str) -> Option<T> {
    text(entry, name).and_then(|v| v.trim().parse().ok())
}

/// `userAccountControl` and friends are signed 32-bit in LDAP; the checks test bits.
fn flags(entry: &SearchEntry, name: &str) -> Option<u32> {
    number::<i64>(entry, name).map(|v| v as u32)
}

fn sd_of(entry: &SearchEntry) -> Result<SecurityDescriptor, String> {
    let values = bytes(entry, "nTSecurityDescriptor");
    let raw = values.first().ok_or_else(|| {
        "no nTSecurityDescriptor returned: the bind account may lack Read permissions".to_owned()
    })?;
    SecurityDescriptor::parse(raw).map_err(|e| e.to_string())
}

/// Reads everything [`AdFacts`] holds. `connector` names the connector account; `None` when
/// neither the configuration nor the host probe named it.
pub(super) async fn read(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    naming_context: &str,
    connector: Option<&str>,
) -> AdFacts {
    let mut r = Reader {
        ldap,
        timeout: settings.timeout,
        host: &settings.host,
    };
    let root = r
        .base(
            "",
            &[
                "supportedControl",
                "domainFunctionality",
                "forestFunctionality",
                "domainControllerFunctionality",
                "configurationNamingContext",
                "schemaNamingContext",
            ],
            false,
        )
        .await;
    let (root_dse, config_nc, schema_nc) = match &root {
        Ok(entry) => (
            RootDse {
                supported_controls: texts(entry, "supportedControl")
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                domain_functionality: number(entry, "domainFunctionality"),
                forest_functionality: number(entry, "forestFunctionality"),
                dc_functionality: number(entry, "domainControllerFunctionality"),
            },
            text(entry, "configurationNamingContext"),
            text(entry, "schemaNamingContext"),
        ),
        Err(_) => (RootDse::default(), None, None),
    };
    let guids = match (&root, config_nc, schema_nc) {
        (Err(e), _, _) => Err(e.clone()),
        (Ok(_), Some(config), Some(schema)) => read_guids(&mut r, &config, &schema).await,
        _ => Err(ProbeFailure::new(
            ProbeStep::Search,
            format!(
                "the rootDSE of {} names no configuration or schema naming context",
                settings.host
            ),
        )),
    };
    let domain_controllers = read_dcs(&mut r, naming_context).await;
    let connector = match connector {
        None => Err(ProbeFailure::new(
            ProbeStep::NotConfigured,
            "the connector account is not known: set [ldap] connector_account (or WBH_CONNECTOR_ACCOUNT)",
        )),
        Some(name) => read_connector(&mut r, naming_context, name).await,
    };
    let cloud_sync_account =
        read_optional_account(&mut r, naming_context, &settings.cloud_sync_account).await;
    let domain_head_sd = r
        .base(naming_context, &["nTSecurityDescriptor"], true)
        .await
        .and_then(|entry| {
            sd_of(&entry).map_err(|e| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("security descriptor of {naming_context}: {e}"),
                )
            })
        });
    let scope_dns = if settings.scope_dns.is_empty() {
        vec![naming_context.to_owned()]
    } else {
        settings.scope_dns.clone()
    };
    let ous = read_ous(&mut r, &scope_dns).await;
    let users = read_users(&mut r, &scope_dns, settings.max_users).await;
    let psos = read_psos(&mut r, naming_context).await;
    let domain_password_rules = read_password_rules(&mut r, naming_context).await;
    let mut sam_sds = Vec::new();
    for dn in [
        format!("CN=Builtin,{naming_context}"),
        format!("CN=Server,CN=System,{naming_context}"),
    ] {
        let sd = r
            .base(&dn, &["nTSecurityDescriptor"], true)
            .await
            .and_then(|entry| {
                sd_of(&entry).map_err(|e| {
                    ProbeFailure::new(
                        ProbeStep::Search,
                        format!("security descriptor of {dn}: {e}"),
                    )
                })
            });
        sam_sds.push((dn, sd));
    }
    let pre_windows_2000_members = r
        .base(
            &format!("CN=Pre-Windows 2000 Compatible Access,CN=Builtin,{naming_context}"),
            &["member"],
            false,
        )
        .await
        .map(|entry| {
            texts(&entry, "member")
                .into_iter()
                .map(str::to_owned)
                .collect()
        });
    AdFacts {
        root_dse,
        domain_controllers,
        guids,
        connector,
        domain_head_sd,
        scope_dns,
        ous,
        users,
        psos,
        domain_password_rules,
        sam_sds,
        pre_windows_2000_members,
        // Filled by the directory probe, which opens a connection to each DC.
        dcs: Vec::new(),
        replication_grace: settings.replication_grace,
        cloud_sync_account,
    }
}

/// Reads, over a connection bound to the DC `host`, what must agree on every DC: the rootDSE's
/// `supportedControl`, and the domain head's DACL and replication metadata.
pub(super) async fn read_dc(
    ldap: &mut Ldap,
    host: &str,
    timeout: Duration,
    naming_context: &str,
    address: std::net::SocketAddr,
) -> Result<DcReading, ProbeFailure> {
    let mut r = Reader {
        ldap,
        timeout,
        host,
    };
    let root = r.base("", &["supportedControl"], false).await?;
    let head_sd = r
        .base(naming_context, &["nTSecurityDescriptor"], true)
        .await
        .and_then(|entry| {
            sd_of(&entry).map_err(|e| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("security descriptor of {naming_context} on {host}: {e}"),
                )
            })
        });
    let head_metadata = r
        .base(naming_context, &["replPropertyMetaData"], false)
        .await
        .and_then(|entry| {
            let values = bytes(&entry, "replPropertyMetaData");
            let raw = values.first().ok_or_else(|| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("{host} returned no replPropertyMetaData for {naming_context}: the bind account may lack read access"),
                )
            })?;
            parse_replication_metadata(raw).map_err(|e| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("replPropertyMetaData of {naming_context} on {host}: {e}"),
                )
            })
        });
    Ok(DcReading {
        address,
        supported_controls: texts(&root, "supportedControl")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        head_sd,
        head_metadata,
    })
}

async fn read_guids(
    r: &mut Reader<'_>,
    config: &str,
    schema: &str,
) -> Result<RightGuids, ProbeFailure> {
    let rights = r
        .search(
            &format!("CN=Extended-Rights,{config}"),
            Scope::OneLevel,
            "(|(cn=User-Force-Change-Password)(cn=User-Change-Password)(cn=Unexpire-Password))",
            &["cn", "rightsGuid"],
            false,
            None,
        )
        .await?;
    let right = |cn: &str| {
        rights
            .entries
            .iter()
            .find(|e| text(e, "cn").is_some_and(|v| v.eq_ignore_ascii_case(cn)))
            .and_then(|e| text(e, "rightsGuid"))
            .map(|g| g.trim().trim_matches(['{', '}']).to_ascii_lowercase())
            .ok_or_else(|| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("no rightsGuid for CN={cn},CN=Extended-Rights,{config}"),
                )
            })
    };
    let attrs = r
        .search(
            schema,
            Scope::OneLevel,
            "(|(lDAPDisplayName=lockoutTime)(lDAPDisplayName=pwdLastSet)(lDAPDisplayName=user))",
            &["lDAPDisplayName", "schemaIDGUID"],
            false,
            None,
        )
        .await?;
    let schema_guid = |name: &str| {
        attrs
            .entries
            .iter()
            .find(|e| text(e, "lDAPDisplayName").is_some_and(|v| v.eq_ignore_ascii_case(name)))
            .and_then(|e| {
                bytes(e, "schemaIDGUID")
                    .first()
                    .and_then(|b| guid_to_string(b))
            })
            .ok_or_else(|| {
                ProbeFailure::new(
                    ProbeStep::Search,
                    format!("no schemaIDGUID for {name} in {schema}"),
                )
            })
    };
    Ok(RightGuids {
        reset_password: right("User-Force-Change-Password")?,
        change_password: right("User-Change-Password")?,
        unexpire_password: right("Unexpire-Password")?,
        lockout_time: schema_guid("lockoutTime")?,
        pwd_last_set: schema_guid("pwdLastSet")?,
        user_class: schema_guid("user")?,
    })
}

async fn read_dcs(r: &mut Reader<'_>, nc: &str) -> Result<Vec<DomainController>, ProbeFailure> {
    // Read-only DCs do not carry SERVER_TRUST_ACCOUNT (8192), hence the primary group too.
    let found = r
        .search(
            nc,
            Scope::Subtree,
            "(&(objectCategory=computer)(|(userAccountControl:1.2.840.113556.1.4.803:=8192)(primaryGroupID=521)))",
            &["dNSHostName", "operatingSystem", "operatingSystemVersion", "primaryGroupID", "userAccountControl"],
            false,
            None,
        )
        .await?;
    Ok(found
        .entries
        .iter()
        .map(|e| DomainController {
            name: text(e, "dNSHostName").unwrap_or_else(|| e.dn.clone()),
            operating_system: text(e, "operatingSystem"),
            operating_system_version: text(e, "operatingSystemVersion"),
            primary_group_id: number(e, "primaryGroupID").unwrap_or(0),
            user_account_control: flags(e, "userAccountControl").unwrap_or(0),
        })
        .collect())
}

/// The LDAP filter that finds the account named `name` (`sam`, `DOMAIN\sam` or a UPN).
fn account_filter(name: &str) -> String {
    let (_, sam) = name.rsplit_once('\\').unwrap_or(("", name));
    if name.contains('@') {
        let before = name.split('@').next().unwrap_or(name);
        format!(
            "(&(objectClass=user)(|(userPrincipalName={})(sAMAccountName={})))",
            ldap_escape(name),
            ldap_escape(before)
        )
    } else {
        format!("(&(objectClass=user)(sAMAccountName={}))", ldap_escape(sam))
    }
}

/// Whether `name` is a DN rather than an account name.
fn is_dn(name: &str) -> bool {
    name.contains('=') && name.contains(',')
}

async fn read_connector(
    r: &mut Reader<'_>,
    nc: &str,
    name: &str,
) -> Result<ConnectorAccount, ProbeFailure> {
    let name = name.trim();
    let dn = if is_dn(name) {
        name.to_owned()
    } else {
        let filter = account_filter(name);
        let found = r
            .search(nc, Scope::Subtree, &filter, &["1.1"], false, Some(2))
            .await?;
        match found.entries.as_slice() {
            [one] => one.dn.clone(),
            [] => {
                return Err(ProbeFailure::new(
                    ProbeStep::Search,
                    format!("no account {name:?} in {nc}: check the connector account's name"),
                ));
            }
            _ => {
                return Err(ProbeFailure::new(
                    ProbeStep::Search,
                    format!("more than one account matches {name:?} in {nc}; name it by DN"),
                ));
            }
        }
    };
    // tokenGroups is constructed and only returned by a base-scope read.
    let entry = r
        .base(
            &dn,
            &[
                "sAMAccountName",
                "objectSid",
                "tokenGroups",
                "userAccountControl",
                "msDS-User-Account-Control-Computed",
                "accountExpires",
            ],
            false,
        )
        .await?;
    let sid = bytes(&entry, "objectSid")
        .first()
        .and_then(|b| sid_to_string(b))
        .ok_or_else(|| {
            ProbeFailure::new(ProbeStep::Search, format!("{dn} has no readable objectSid"))
        })?;
    Ok(ConnectorAccount {
        configured_as: name.to_owned(),
        sam_account_name: text(&entry, "sAMAccountName").unwrap_or_default(),
        sid,
        token_groups: bytes(&entry, "tokenGroups")
            .into_iter()
            .filter_map(sid_to_string)
            .collect(),
        user_account_control: flags(&entry, "userAccountControl").unwrap_or(0),
        uac_computed: flags(&entry, "msDS-User-Account-Control-Computed"),
        account_expires: number(&entry, "accountExpires").unwrap_or(0),
        dn: entry.dn,
    })
}

/// The account `name` when the domain has exactly one, `None` when it has none.
async fn read_optional_account(
    r: &mut Reader<'_>,
    nc: &str,
    name: &str,
) -> Result<Option<ConnectorAccount>, ProbeFailure> {
    let found = r
        .search(
            nc,
            Scope::Subtree,
            &account_filter(name),
            &["1.1"],
            false,
            Some(2),
        )
        .await?;
    match found.entries.as_slice() {
        [] => Ok(None),
        [one] => {
            let dn = one.dn.clone();
            let mut account = read_connector(r, nc, &dn).await?;
            name.clone_into(&mut account.configured_as);
            Ok(Some(account))
        }
        _ => Err(ProbeFailure::new(
            ProbeStep::Search,
            format!(
                "more than one account matches {name:?} in {nc}; name it by DN in ldap.cloud_sync_account"
            ),
        )),
    }
}

async fn read_ous(
    r: &mut Reader<'_>,
    scope_dns: &[String],
) -> Result<Vec<OrganizationalUnit>, ProbeFailure> {
    let mut ous = Vec::new();
    for base in scope_dns {
        let found = r
            .search(
                base,
                Scope::Subtree,
                "(objectClass=organizationalUnit)",
                &["nTSecurityDescriptor"],
                true,
                Some(MAX_OUS),
            )
            .await?;
        ous.extend(found.entries.iter().map(|e| OrganizationalUnit {
            dn: e.dn.clone(),
            sd: sd_of(e),
        }));
    }
    Ok(ous)
}

async fn read_users(
    r: &mut Reader<'_>,
    scope_dns: &[String],
    limit: usize,
) -> Result<UserSample, ProbeFailure> {
    let mut users = Vec::new();
    let mut truncated = false;
    for base in scope_dns {
        let left = limit.saturating_sub(users.len());
        if left == 0 {
            truncated = true;
            break;
        }
        let found = r
            .search(
                base,
                Scope::Subtree,
                "(&(objectCategory=person)(objectClass=user))",
                &[
                    "sAMAccountName",
                    "userAccountControl",
                    "adminCount",
                    "pwdLastSet",
                    "msDS-User-Account-Control-Computed",
                    "msDS-ResultantPSO",
                    "nTSecurityDescriptor",
                ],
                true,
                Some(left),
            )
            .await?;
        truncated |= found.truncated;
        users.extend(found.entries.iter().map(|e| ScopedUser {
            dn: e.dn.clone(),
            sam_account_name: text(e, "sAMAccountName").unwrap_or_default(),
            user_account_control: flags(e, "userAccountControl").unwrap_or(0),
            admin_count: number(e, "adminCount").unwrap_or(0),
            pwd_last_set: number(e, "pwdLastSet").unwrap_or(0),
            uac_computed: flags(e, "msDS-User-Account-Control-Computed"),
            resultant_pso: text(e, "msDS-ResultantPSO"),
            sd: sd_of(e),
            protection: None,
        }));
    }
    // tokenGroups needs a base-scope read per user: only for the protected ones, bounded.
    for user in users
        .iter_mut()
        .filter(|u| u.admin_count > 0)
        .take(MAX_PROTECTED_READS)
    {
        user.protection = Some(
            r.base(&user.dn, &["objectSid", "tokenGroups"], false)
                .await
                .map_err(|e| e.message)
                .and_then(|entry| {
                    let sid = bytes(&entry, "objectSid")
                        .first()
                        .and_then(|b| sid_to_string(b))
                        .ok_or_else(|| format!("{} has no readable objectSid", user.dn))?;
                    Ok(UserGroups {
                        sid,
                        token_groups: bytes(&entry, "tokenGroups")
                            .into_iter()
                            .filter_map(sid_to_string)
                            .collect(),
                    })
                }),
        );
    }
    Ok(UserSample {
        users,
        limit,
        truncated,
    })
}

async fn read_psos(r: &mut Reader<'_>, nc: &str) -> Result<Vec<PasswordSettings>, ProbeFailure> {
    let base = format!("CN=Password Settings Container,CN=System,{nc}");
    let found = match r
        .search(
            &base,
            Scope::OneLevel,
            "(objectClass=msDS-PasswordSettings)",
            &[
                "msDS-MinimumPasswordAge",
                "msDS-PasswordSettingsPrecedence",
                "msDS-PSOAppliesTo",
                "msDS-PasswordHistoryLength",
                "msDS-MinimumPasswordLength",
                "msDS-PasswordComplexityEnabled",
            ],
            false,
            None,
        )
        .await
    {
        // A domain that never had a PSO may have no container.
        Err(e)
            if e.message
                .contains(&format!("result code {RC_NO_SUCH_OBJECT}")) =>
        {
            return Ok(Vec::new());
        }
        other => other?,
    };
    Ok(found
        .entries
        .iter()
        .map(|e| PasswordSettings {
            dn: e.dn.clone(),
            min_age: number(e, "msDS-MinimumPasswordAge").unwrap_or(0),
            precedence: number(e, "msDS-PasswordSettingsPrecedence").unwrap_or(0),
            applies_to: texts(e, "msDS-PSOAppliesTo")
                .into_iter()
                .map(str::to_owned)
                .collect(),
            rules: PasswordRules {
                history_length: number(e, "msDS-PasswordHistoryLength").unwrap_or(0),
                min_length: number(e, "msDS-MinimumPasswordLength").unwrap_or(0),
                complexity: text(e, "msDS-PasswordComplexityEnabled")
                    .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
            },
        })
        .collect())
}

/// The domain head's `pwdHistoryLength`, `minPwdLength` and `pwdProperties`.
async fn read_password_rules(r: &mut Reader<'_>, nc: &str) -> Result<PasswordRules, ProbeFailure> {
    let entry = r
        .base(
            nc,
            &["pwdHistoryLength", "minPwdLength", "pwdProperties"],
            false,
        )
        .await?;
    let value = |name: &str| {
        number::<u32>(&entry, name).ok_or_else(|| {
            ProbeFailure::new(
                ProbeStep::Search,
                format!(
                    "{} returned no {name} for {nc}: the bind account may lack read access",
                    r.host
                ),
            )
        })
    };
    Ok(PasswordRules {
        history_length: value("pwdHistoryLength")?,
        min_length: value("minPwdLength")?,
        complexity: value("pwdProperties")? & 1 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_names_become_filters() {
        assert_eq!(
            account_filter("MSOL_abc"),
            "(&(objectClass=user)(sAMAccountName=MSOL_abc))"
        );
        assert_eq!(
            account_filter("CONTOSO\\MSOL_abc"),
            "(&(objectClass=user)(sAMAccountName=MSOL_abc))"
        );
        assert_eq!(
            account_filter("msol@contoso.com"),
            "(&(objectClass=user)(|(userPrincipalName=msol@contoso.com)(sAMAccountName=msol)))"
        );
        assert_eq!(
            account_filter("a*)(b"),
            "(&(objectClass=user)(sAMAccountName=a\\2a\\29\\28b))"
        );
        assert!(is_dn("CN=MSOL_abc,CN=Users,DC=contoso,DC=com"));
        assert!(!is_dn("MSOL_abc"));
    }
}

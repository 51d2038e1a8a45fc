//! Domain-wide directory checks beyond the PDC and the domain policy: read-only DCs (AD-02),
//! functional levels and DC operating systems (AD-04),
//! OU names with reserved characters (AD-06) and fine-grained password policies (USR-01).

use serde_json::json;
use wbhealth_catalogue::{Status, render};

use super::permissions::{directory, listed, part};
use super::{Verdict, def, plural};
use crate::facts::Facts;
use crate::result::CheckOutcome;

/// Catalogue id of the read-only DC check (AD-02).
pub const READ_ONLY_DC: &str = "topology.read_only_dc";
/// Catalogue id of the functional level check (AD-04).
pub const FUNCTIONAL_LEVEL: &str = "topology.functional_level";
/// Catalogue id of the reserved-character OU check (AD-06).
pub const OU_RESERVED_CHARACTERS: &str = "topology.ou_reserved_characters";
/// Catalogue id of the fine-grained password policy check (USR-01).
pub const FINE_GRAINED_MIN_AGE: &str = "policy.fine_grained_min_age";

/// AD-02: the DC the agent uses is writable, and which DCs are read-only.
pub fn read_only_dc(facts: &Facts) -> CheckOutcome {
    let def = def(READ_ONLY_DC);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let dcs = part(facts, "the domain controllers", &dir.ad.domain_controllers)?;
        let rodcs: Vec<String> = dcs.iter().filter(|d| d.is_read_only()).map(|d| d.name.clone()).collect();
        let contacted = dir.dc_dns_host_name.as_deref().unwrap_or(&dir.dc.host);
        let contacted_ro = dcs.iter().any(|d| d.is_read_only() && d.name.eq_ignore_ascii_case(contacted));
        let writable = dcs.len() - rodcs.len();
        let evidence = json!({ "domain_controllers": dcs, "read_only": rodcs, "contacted": contacted });
        let remediation = render(def.remediation, &[("rodcs", &rodcs.join(", ")), ("domain", &dir.domain_dns_name)]);
        Ok(if contacted_ro || (writable == 0 && !dcs.is_empty()) {
            Verdict { status: Status::Fail, summary: format!("{contacted} is a read-only DC ({} writable of {}): Entra Connect does not follow write referrals", writable, plural(dcs.len(), "DC", "DCs")), evidence, remediation }
        } else if !rodcs.is_empty() {
            Verdict { status: Status::Warn, summary: format!("{} in {}: keep {} out of the AD connector's preferred DCs", plural(rodcs.len(), "read-only DC", "read-only DCs"), dir.domain_dns_name, listed(&rodcs)), evidence, remediation }
        } else if dcs.is_empty() {
            return Err(Verdict { status: Status::Error, summary: format!("no domain controller object found in {}: the bind account may lack read access", dir.default_naming_context), evidence, remediation: String::new() });
        } else {
            Verdict { status: Status::Pass, summary: format!("all {} of {} are writable", plural(dcs.len(), "DC", "DCs"), dir.domain_dns_name), evidence, remediation: String::new() }
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// The Windows Server version a functional level stands for.
fn level_name(level: u32) -> String {
    match level {
        0 => "Windows 2000".to_owned(),
        1 => "Windows Server 2003 interim".to_owned(),
        2 => "Windows Server 2003".to_owned(),
        3 => "Windows Server 2008".to_owned(),
        4 => "Windows Server 2008 R2".to_owned(),
        5 => "Windows Server 2012".to_owned(),
        6 => "Windows Server 2012 R2".to_owned(),
        7 => "Windows Server 2016".to_owned(),
        10 => "Windows Server 2025".to_owned(),
        n => format!("level {n}"),
    }
}

/// AD-04: forest and domain functional levels at least Windows Server 2003, and no DC on an
/// operating system older than Windows Server 2016.
pub fn functional_level(facts: &Facts) -> CheckOutcome {
    let def = def(FUNCTIONAL_LEVEL);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let root = &dir.ad.root_dse;
        let dcs = part(facts, "the domain controllers", &dir.ad.domain_controllers)?;
        let (Some(forest), Some(domain)) = (root.forest_functionality, root.domain_functionality) else {
            return Err(Verdict { status: Status::Error, summary: "could not read forestFunctionality and domainFunctionality from the rootDSE".to_owned(), evidence: json!({}), remediation: String::new() });
        };
        let old_os: Vec<String> = dcs
            .iter()
            .filter_map(|d| {
                let os = d.operating_system.as_deref()?;
                ["2000", "2003", "2008", "2012"].iter().any(|v| os.contains(v)).then(|| format!("{} ({os})", d.name))
            })
            .collect();
        let evidence = json!({
            "forest_functionality": forest, "forest_level": level_name(forest),
            "domain_functionality": domain, "domain_level": level_name(domain),
            "dc_functionality": root.dc_functionality,
            "domain_controllers": dcs.iter().map(|d| json!({"name": d.name, "operating_system": d.operating_system, "version": d.operating_system_version})).collect::<Vec<_>>(),
        });
        let remediation = |problem: &str| render(def.remediation, &[("problem", problem), ("domain", &dir.domain_dns_name)]);
        Ok(if forest < 2 || domain < 2 {
            let problem = format!("the forest functional level is {} and the domain's is {}, below Windows Server 2003", level_name(forest), level_name(domain));
            Verdict { status: Status::Fail, remediation: remediation(&problem), summary: problem, evidence }
        } else if !old_os.is_empty() {
            let problem = format!("{} out of support: {}", plural(old_os.len(), "DC runs an operating system", "DCs run operating systems"), listed(&old_os));
            Verdict { status: Status::Warn, remediation: remediation(&problem), summary: problem, evidence }
        } else {
            Verdict { status: Status::Pass, summary: format!("forest level {}, domain level {}, {} on supported systems", level_name(forest), level_name(domain), plural(dcs.len(), "DC", "DCs")), evidence, remediation: String::new() }
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// The RDNs of a DN as (type, unescaped value), splitting at unescaped commas.
fn rdn_values(dn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = dn.chars().peekable();
    let (mut kind, mut value, mut in_value) = (String::new(), String::new(), false);
    let mut push = |kind: &mut String, value: &mut String| {
        out.push((kind.trim().to_owned(), std::mem::take(value)));
        kind.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else { break };
                let hex: String = [next, chars.peek().copied().unwrap_or(' ')]
                    .iter()
                    .collect();
                let escaped =
                    if next.is_ascii_hexdigit() && hex.chars().all(|h| h.is_ascii_hexdigit()) {
                        chars.next();
                        u8::from_str_radix(&hex, 16).map(char::from).unwrap_or(next)
                    } else {
                        next
                    };
                if in_value {
                    value.push(escaped)
                } else {
                    kind.push(escaped)
                }
            }
            '=' if !in_value => in_value = true,
            ',' => {
                push(&mut kind, &mut value);
                in_value = false;
            }
            _ if in_value => value.push(c),
            _ => kind.push(c),
        }
    }
    if !kind.is_empty() || !value.is_empty() {
        push(&mut kind, &mut value);
    }
    out
}

/// Whether an RDN value holds a character writeback cannot handle.
fn reserved(value: &str) -> bool {
    value.starts_with([' ', '#'])
        || value.ends_with(' ')
        || value.contains([',', '+', '"', '\\', '<', '>', ';', '\n', '\r', '=', '/'])
}

/// AD-06: no OU in scope (and no OU in a sampled user's DN) has a reserved character.
pub fn ou_reserved_characters(facts: &Facts) -> CheckOutcome {
    let def = def(OU_RESERVED_CHARACTERS);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let ous = part(facts, "the OUs in scope", &dir.ad.ous)?;
        let sample = part(facts, "the users in scope", &dir.ad.users)?;
        let mut bad: Vec<String> = Vec::new();
        for dn in ous.iter().map(|o| o.dn.as_str()).chain(sample.users.iter().map(|u| u.dn.as_str())) {
            let has = rdn_values(dn).iter().any(|(k, v)| k.eq_ignore_ascii_case("OU") && reserved(v));
            // Report the OU itself: the DN from the first reserved OU component on.
            if has {
                let ou = ou_from(dn);
                if !bad.contains(&ou) {
                    bad.push(ou);
                }
            }
        }
        let evidence = json!({ "ous_checked": ous.len(), "users_checked": sample.users.len(), "reserved": bad });
        Ok(if bad.is_empty() {
            Verdict { status: Status::Pass, summary: format!("no OU name in scope has a reserved character ({} checked)", plural(ous.len(), "OU", "OUs")), evidence, remediation: String::new() }
        } else {
            Verdict {
                status: Status::Fail,
                summary: format!("{} in scope {} a reserved character, so writeback fails for users below with 33001 ADUnKnownError: {}", plural(bad.len(), "OU name", "OU names"), if bad.len() == 1 { "has" } else { "have" }, listed(&bad)),
                evidence,
                remediation: render(def.remediation, &[("ous", &listed(&bad))]),
            }
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// The DN of the first OU of `dn` that has a reserved character, as written in `dn`.
fn ou_from(dn: &str) -> String {
    // Walk the escaped DN's RDNs alongside their unescaped values.
    let mut start = 0;
    let mut escaped = false;
    let bytes: Vec<(usize, char)> = dn.char_indices().collect();
    for (i, c) in bytes {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                let rdn = &dn[start..i];
                if let Some((k, v)) = rdn_values(rdn).first()
                    && k.eq_ignore_ascii_case("OU")
                    && reserved(v)
                {
                    return dn[start..].trim().to_owned();
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    dn[start..].trim().to_owned()
}

/// USR-01 for PSOs: no fine-grained password policy that applies to anyone sets a minimum
/// password age.
pub fn fine_grained_min_age(facts: &Facts) -> CheckOutcome {
    let def = def(FINE_GRAINED_MIN_AGE);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let psos = part(facts, "the password settings objects", &dir.ad.psos)?;
        let users = dir
            .ad
            .users
            .as_ref()
            .map(|s| s.users.as_slice())
            .unwrap_or_default();
        let offending: Vec<_> = psos
            .iter()
            .filter(|p| p.min_age != 0 && !p.applies_to.is_empty())
            .collect();
        let affected: Vec<String> = users
            .iter()
            .filter(|u| {
                u.resultant_pso
                    .as_deref()
                    .is_some_and(|r| offending.iter().any(|p| p.dn.eq_ignore_ascii_case(r)))
            })
            .map(|u| u.dn.clone())
            .collect();
        let evidence =
            json!({ "psos": psos, "users_affected": affected.iter().take(50).collect::<Vec<_>>() });
        if offending.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!(
                    "no fine-grained password policy sets a minimum password age ({})",
                    plural(psos.len(), "PSO", "PSOs")
                ),
                evidence,
                remediation: String::new(),
            });
        }
        let names: Vec<String> = offending
            .iter()
            .map(|p| {
                rdn_values(&p.dn)
                    .first()
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| p.dn.clone())
            })
            .collect();
        let detail: Vec<String> = offending
            .iter()
            .zip(&names)
            .map(|(p, n)| {
                format!(
                    "{n} ({} days, applies to {})",
                    p.min_age.unsigned_abs() / 864_000_000_000,
                    listed(&p.applies_to)
                )
            })
            .collect();
        let commands = names
            .iter()
            .map(|n| {
                format!(
                    "Set-ADFineGrainedPasswordPolicy -Identity '{n}' -MinPasswordAge 0.00:00:00"
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Verdict {
            status: Status::Warn,
            summary: format!(
                "{} a minimum password age, so a second reset within it is refused{}: {}",
                if offending.len() == 1 {
                    "a fine-grained password policy sets".to_owned()
                } else {
                    format!("{} fine-grained password policies set", offending.len())
                },
                if affected.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} in scope affected)",
                        plural(affected.len(), "user", "users")
                    )
                },
                listed(&detail)
            ),
            evidence,
            remediation: render(def.remediation, &[("commands", &commands)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{AdFacts, OrganizationalUnit, PasswordSettings, SecurityDescriptor};
    use crate::checks::fixtures::{assert_rendered, healthy};
    use crate::facts::{ProbeFailure, ProbeStep};

    fn with_ad(change: impl FnOnce(&mut AdFacts)) -> Facts {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            change(&mut d.ad);
        }
        facts
    }

    const ALL: &[fn(&Facts) -> CheckOutcome] = &[
        read_only_dc,
        functional_level,
        ou_reserved_characters,
        fine_grained_min_age,
    ];

    #[test]
    fn a_healthy_domain_passes() {
        for check in ALL {
            let o = check(&healthy());
            assert_eq!(o.status, Status::Pass, "{}: {}", o.check.id, o.summary);
        }
    }

    #[test]
    fn read_only_dcs_warn_and_a_read_only_contacted_dc_fails() {
        let facts = with_ad(|ad| {
            if let Ok(dcs) = &mut ad.domain_controllers {
                dcs[1].primary_group_id = 521;
            }
        });
        let o = read_only_dc(&facts);
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert!(o.summary.contains("dc2.contoso.com"));
        let facts = with_ad(|ad| {
            if let Ok(dcs) = &mut ad.domain_controllers {
                dcs[0].user_account_control = 0x0400_1000;
            }
        });
        assert_eq!(read_only_dc(&facts).status, Status::Fail);
    }

    #[test]
    fn old_levels_fail_and_old_dcs_warn() {
        let facts = with_ad(|ad| ad.root_dse.forest_functionality = Some(0));
        assert_eq!(functional_level(&facts).status, Status::Fail);
        let facts = with_ad(|ad| {
            if let Ok(dcs) = &mut ad.domain_controllers {
                dcs[1].operating_system = Some("Windows Server 2012 R2 Standard".to_owned());
            }
        });
        let o = functional_level(&facts);
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.summary
                .contains("dc2.contoso.com (Windows Server 2012 R2 Standard)"),
            "{}",
            o.summary
        );
        let facts = with_ad(|ad| ad.root_dse.forest_functionality = None);
        assert_eq!(functional_level(&facts).status, Status::Error);
    }

    #[test]
    fn an_ou_with_an_escaped_comma_fails() {
        let facts = with_ad(|ad| {
            if let Ok(ous) = &mut ad.ous {
                ous.push(OrganizationalUnit {
                    dn: "OU=Sales\\, EMEA,DC=contoso,DC=com".to_owned(),
                    sd: Ok(SecurityDescriptor {
                        control: 0,
                        dacl: Vec::new(),
                    }),
                });
            }
        });
        let o = ou_reserved_characters(&facts);
        assert_eq!(o.status, Status::Fail);
        assert_rendered(&o.remediation, &["OU=Sales\\, EMEA,DC=contoso,DC=com"]);
        assert!(reserved("a/b") && reserved(" lead") && reserved("#x") && !reserved("Sales EMEA"));
        assert_eq!(
            rdn_values("OU=a\\2Cb,DC=x")[0],
            ("OU".to_owned(), "a,b".to_owned())
        );
        assert_eq!(
            ou_from("CN=Bob,OU=a\\+b,OU=Top,DC=x"),
            "OU=a\\+b,OU=Top,DC=x"
        );
    }

    #[test]
    fn a_pso_with_a_minimum_age_warns_naming_it_and_the_users() {
        let facts = with_ad(|ad| {
            ad.psos = Ok(vec![PasswordSettings {
                dn: "CN=Sales PSO,CN=Password Settings Container,CN=System,DC=contoso,DC=com"
                    .to_owned(),
                min_age: -864_000_000_000,
                precedence: 10,
                applies_to: vec!["CN=Sales,OU=Sales,DC=contoso,DC=com".to_owned()],
                rules: crate::ad::PasswordRules {
                    history_length: 24,
                    min_length: 7,
                    complexity: true,
                },
            }]);
            if let Ok(s) = &mut ad.users {
                s.users[0].resultant_pso = Some(
                    "CN=Sales PSO,CN=Password Settings Container,CN=System,DC=contoso,DC=com"
                        .to_owned(),
                );
            }
        });
        let o = fine_grained_min_age(&facts);
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.summary.contains("Sales PSO (1 days") && o.summary.contains("1 user in scope"),
            "{}",
            o.summary
        );
        assert_rendered(
            &o.remediation,
            &["Set-ADFineGrainedPasswordPolicy -Identity 'Sales PSO' -MinPasswordAge 0.00:00:00"],
        );
        let facts = with_ad(|ad| ad.psos = Err(ProbeFailure::new(ProbeStep::Search, "denied")));
        assert_eq!(fine_grained_min_age(&facts).status, Status::Error);
    }
}

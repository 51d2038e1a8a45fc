//! Checks that compare what every domain controller says, each read over its own connection:
//! the LDAP policy-hints control on each DC (AD-03), replication lag of the domain head
//! (AD-05) and the connector's writeback rights as each DC holds them (PERM-10).
//!
//! Writeback talks to whichever DC the sync engine picks (the preferred DCs or the locator's
//! choice), so a DC that lacks the control, lags behind or still holds an old ACL breaks
//! writeback while a test against another DC passes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use time::OffsetDateTime;
use wbhealth_catalogue::{Status, render};

use super::permissions::{directory, listed, part, rights_granted};
use super::{Verdict, def, plural};
use crate::ad::{AttributeMetadata, DcReading, DcView, attribute_name};
use crate::facts::{DirectoryFacts, Facts};
use crate::result::CheckOutcome;

/// Catalogue id of the policy-hints control check (AD-03).
pub const POLICY_HINTS_CONTROL: &str = "topology.policy_hints_control";
/// Catalogue id of the replication check (AD-05).
pub const REPLICATION: &str = "topology.replication";
/// Catalogue id of the check that every DC holds the same connector rights (PERM-10).
pub const RIGHTS_ON_EVERY_DC: &str = "permissions.rights_on_every_dc";

/// `LDAP_SERVER_POLICY_HINTS_OID`.
pub const POLICY_HINTS_OID: &str = "1.2.840.113556.1.4.2066";

/// The DCs that answered, and "name: reason" for those that did not.
fn readings(views: &[DcView]) -> (Vec<(&DcView, &DcReading)>, Vec<String>) {
    let mut read = Vec::new();
    let mut unread = Vec::new();
    for view in views {
        match &view.reading {
            Ok(reading) => read.push((view, reading)),
            Err(e) => unread.push(format!("{} ({})", view.name, e.message)),
        }
    }
    (read, unread)
}

/// The error when the DCs could not be listed at all.
fn no_views(facts: &Facts, dir: &DirectoryFacts) -> Result<(), Verdict> {
    part(facts, "the domain controllers", &dir.ad.domain_controllers)?;
    if dir.ad.dcs.is_empty() {
        return Err(Verdict {
            status: Status::Error,
            summary: format!(
                "no domain controller object found in {}: the bind account may lack read access",
                dir.default_naming_context
            ),
            evidence: json!({ "domain": dir.domain_dns_name }),
            remediation: String::new(),
        });
    }
    Ok(())
}

fn operating_system(dir: &DirectoryFacts, name: &str) -> String {
    dir.ad
        .domain_controllers
        .as_ref()
        .ok()
        .and_then(|dcs| dcs.iter().find(|d| d.name.eq_ignore_ascii_case(name)))
        .and_then(|d| d.operating_system.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// AD-03: every DC advertises `LDAP_SERVER_POLICY_HINTS_OID`.
pub fn policy_hints_control(facts: &Facts) -> CheckOutcome {
    let def = def(POLICY_HINTS_CONTROL);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        no_views(facts, dir)?;
        let (read, mut unread) = readings(&dir.ad.dcs);
        let mut lacking = Vec::new();
        let mut advertising = Vec::new();
        for (view, reading) in &read {
            if reading.supported_controls.is_empty() {
                unread.push(format!("{} (returned no supportedControl)", view.name));
            } else if reading.supported_controls.iter().any(|c| c == POLICY_HINTS_OID) {
                advertising.push(view.name.clone());
            } else {
                lacking.push(format!("{} ({})", view.name, operating_system(dir, &view.name)));
            }
        }
        let evidence = json!({
            "required": POLICY_HINTS_OID,
            "advertising": advertising,
            "lacking": lacking,
            "unreadable": unread,
        });
        if !lacking.is_empty() {
            return Ok(Verdict {
                status: Status::Fail,
                summary: format!(
                    "{} of {} {} not advertise the LDAP password policy hints control {POLICY_HINTS_OID}: {}; writeback through {} fails with \"The server doesn't contain the LDAP password policy control\"",
                    plural(lacking.len(), "DC", "DCs"),
                    dir.domain_dns_name,
                    if lacking.len() == 1 { "does" } else { "do" },
                    listed(&lacking),
                    if lacking.len() == 1 { "it" } else { "them" },
                ) + &if unread.is_empty() {
                    String::new()
                } else {
                    format!("; could not read {}", listed(&unread))
                },
                evidence,
                remediation: render(def.remediation, &[("dcs", &listed(&lacking))]),
            });
        }
        if !unread.is_empty() {
            return Err(Verdict {
                status: Status::Error,
                summary: format!(
                    "could not read the rootDSE of {}: {}{}",
                    plural(unread.len(), "DC", "DCs"),
                    listed(&unread),
                    if advertising.is_empty() {
                        String::new()
                    } else {
                        format!("; {} advertise the control", listed(&advertising))
                    }
                ),
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Pass,
            summary: format!(
                "all {} of {} advertise the LDAP password policy hints control",
                plural(advertising.len(), "DC", "DCs"),
                dir.domain_dns_name
            ),
            evidence,
            remediation: String::new(),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// An attribute of the domain head that one DC holds in an older version than another.
struct Lag<'a> {
    dc: &'a str,
    attribute: String,
    has: Option<u32>,
    newest: &'a AttributeMetadata,
    newest_on: &'a str,
}

fn attribute_label(attid: u32) -> String {
    attribute_name(attid).map_or_else(|| format!("attribute 0x{attid:x}"), str::to_owned)
}

/// AD-05: every DC holds the same versions of the domain head's attributes, or the newer
/// versions are younger than the replication grace.
pub fn replication(facts: &Facts) -> CheckOutcome {
    let def = def(REPLICATION);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        no_views(facts, dir)?;
        let (read, mut unread) = readings(&dir.ad.dcs);
        let mut metadata: Vec<(&str, &Vec<AttributeMetadata>)> = Vec::new();
        for (view, reading) in &read {
            match &reading.head_metadata {
                Ok(m) => metadata.push((view.name.as_str(), m)),
                Err(e) => unread.push(format!("{} ({})", view.name, e.message)),
            }
        }
        if metadata.len() + unread.len() < 2 {
            return Ok(Verdict {
                status: Status::NotApplicable,
                summary: format!("{} has one domain controller: there is nothing to replicate", dir.domain_dns_name),
                evidence: json!({ "dcs": dir.ad.dcs.iter().map(|d| &d.name).collect::<Vec<_>>() }),
                remediation: String::new(),
            });
        }
        // The newest version of each attribute on any DC.
        let mut newest: BTreeMap<u32, (&AttributeMetadata, &str)> = BTreeMap::new();
        for (dc, attributes) in &metadata {
            for a in *attributes {
                let entry = newest.entry(a.attid).or_insert((a, dc));
                if a.version > entry.0.version {
                    *entry = (a, dc);
                }
            }
        }
        let now = facts.observed_at;
        let grace = time::Duration::try_from(dir.ad.replication_grace).unwrap_or(time::Duration::MAX);
        let mut behind = Vec::new();
        let mut settling = Vec::new();
        for (dc, attributes) in &metadata {
            for (attid, (latest, on)) in &newest {
                let has = attributes.iter().find(|a| a.attid == *attid).map(|a| a.version);
                if has.is_some_and(|v| v >= latest.version) {
                    continue;
                }
                let lag = Lag { dc, attribute: attribute_label(*attid), has, newest: latest, newest_on: on };
                if now - latest.changed_at > grace { behind.push(lag) } else { settling.push(lag) }
            }
        }
        let describe = |l: &Lag<'_>| {
            format!(
                "{} holds {} version {} of {} changed at {} (on {})",
                l.dc,
                l.attribute,
                l.has.map_or_else(|| "none".to_owned(), |v| v.to_string()),
                l.newest.version,
                rfc3339(l.newest.changed_at),
                l.newest_on
            )
        };
        let evidence = json!({
            "domain_head": dir.default_naming_context,
            "grace_minutes": dir.ad.replication_grace.as_secs() / 60,
            "behind": behind.iter().map(describe).take(50).collect::<Vec<_>>(),
            "replicating": settling.iter().map(describe).take(50).collect::<Vec<_>>(),
            "unreadable": unread,
            "dcs_compared": metadata.iter().map(|(dc, _)| *dc).collect::<Vec<_>>(),
        });
        if !behind.is_empty() {
            let dcs: BTreeSet<&str> = behind.iter().map(|l| l.dc).collect();
            let dcs: Vec<String> = dcs.into_iter().map(str::to_owned).collect();
            let sources: BTreeSet<&str> = behind.iter().map(|l| l.newest_on).collect();
            let sources: Vec<String> = sources.into_iter().map(str::to_owned).collect();
            let oldest = behind.iter().map(|l| l.newest.changed_at).min().unwrap_or(now);
            return Ok(Verdict {
                status: Status::Warn,
                summary: format!(
                    "{} behind on the domain head {}: {}; the oldest missing change is from {} ({} minutes ago)",
                    plural(dcs.len(), "DC is", "DCs are"),
                    dir.default_naming_context,
                    behind.iter().take(5).map(describe).collect::<Vec<_>>().join("; "),
                    rfc3339(oldest),
                    (now - oldest).whole_minutes()
                ),
                evidence,
                remediation: render(
                    def.remediation,
                    &[("dcs", &listed(&dcs)), ("sources", &listed(&sources)), ("domain", &dir.domain_dns_name)],
                ),
            });
        }
        if !unread.is_empty() {
            return Err(Verdict {
                status: Status::Error,
                summary: format!("could not read the replication metadata of {}: {}", plural(unread.len(), "DC", "DCs"), listed(&unread)),
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Pass,
            summary: if settling.is_empty() {
                format!("all {} hold the same version of every attribute of the domain head", plural(metadata.len(), "DC", "DCs"))
            } else {
                format!(
                    "all {} agree except for changes younger than the {}-minute grace, still replicating: {}",
                    plural(metadata.len(), "DC", "DCs"),
                    dir.ad.replication_grace.as_secs() / 60,
                    settling.iter().take(3).map(describe).collect::<Vec<_>>().join("; ")
                )
            },
            evidence,
            remediation: String::new(),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// PERM-10: every DC grants the connector the same writeback rights on the domain head, so a
/// permission fix has reached all of them.
pub fn rights_on_every_dc(facts: &Facts) -> CheckOutcome {
    let def = def(RIGHTS_ON_EVERY_DC);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        no_views(facts, dir)?;
        let guids = part(facts, "the rights' GUIDs", &dir.ad.guids)?;
        let connector = part(facts, "the connector account", &dir.ad.connector)?;
        let who = super::permissions::trustees(connector);
        let (read, mut unread) = readings(&dir.ad.dcs);
        let mut granted: Vec<(&str, BTreeMap<&'static str, bool>)> = Vec::new();
        for (view, reading) in &read {
            match &reading.head_sd {
                Ok(sd) => granted.push((view.name.as_str(), rights_granted(sd, guids, &who))),
                Err(e) => unread.push(format!("{} ({})", view.name, e.message)),
            }
        }
        let per_dc: Value = granted
            .iter()
            .map(|(dc, rights)| {
                let held: Vec<&str> = rights.iter().filter(|(_, ok)| **ok).map(|(r, _)| *r).collect();
                ((*dc).to_owned(), json!(held))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let evidence = json!({ "connector": connector.sam_account_name, "domain_head": dir.default_naming_context, "rights_by_dc": per_dc, "unreadable": unread });
        if granted.len() + unread.len() < 2 {
            return Ok(Verdict {
                status: Status::NotApplicable,
                summary: format!("{} has one domain controller: every change is already where writeback looks", dir.domain_dns_name),
                evidence,
                remediation: String::new(),
            });
        }
        // A right some DC grants and another does not.
        let mut differences = Vec::new();
        for right in granted.first().map(|(_, r)| r.keys().copied().collect::<Vec<_>>()).unwrap_or_default() {
            let with: Vec<String> = granted.iter().filter(|(_, r)| r[right]).map(|(dc, _)| (*dc).to_owned()).collect();
            let without: Vec<String> = granted.iter().filter(|(_, r)| !r[right]).map(|(dc, _)| (*dc).to_owned()).collect();
            if !with.is_empty() && !without.is_empty() {
                differences.push(format!("{right} is granted on {} but not on {}", listed(&with), listed(&without)));
            }
        }
        let account = connector.sam_account_name.as_str();
        if !differences.is_empty() {
            return Ok(Verdict {
                status: Status::Warn,
                summary: format!(
                    "the DCs of {} disagree about {account}'s writeback rights on {}: {}; a recent permission change has not reached every DC",
                    dir.domain_dns_name,
                    dir.default_naming_context,
                    differences.join("; ")
                ),
                evidence,
                remediation: render(def.remediation, &[("account", account), ("differences", &differences.join("; ")), ("domain", &dir.domain_dns_name)]),
            });
        }
        if !unread.is_empty() {
            return Err(Verdict {
                status: Status::Error,
                summary: format!("could not read the domain head's permissions on {}: {}", plural(unread.len(), "DC", "DCs"), listed(&unread)),
                evidence,
                remediation: String::new(),
            });
        }
        Ok(Verdict {
            status: Status::Pass,
            summary: format!("all {} grant {account} the same writeback rights on {}", plural(granted.len(), "DC", "DCs"), dir.default_naming_context),
            evidence,
            remediation: String::new(),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ad::{AdFacts, DcReading};
    use crate::checks::ad_fixtures::dc_view;
    use crate::checks::fixtures::{assert_rendered, healthy};
    use crate::facts::{ProbeFailure, ProbeStep};

    fn with_ad(change: impl FnOnce(&mut AdFacts)) -> Facts {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            change(&mut d.ad);
        }
        facts
    }

    fn second_dc(ad: &mut AdFacts) -> &mut DcReading {
        ad.dcs[1].reading.as_mut().expect("the fixture reads dc2")
    }

    fn unreachable() -> Result<DcReading, ProbeFailure> {
        Err(ProbeFailure::new(
            ProbeStep::Connect,
            "TCP connect to dc2.contoso.com (10.0.0.6:636) timed out after 10s",
        ))
    }

    #[test]
    fn two_agreeing_dcs_pass_every_check() {
        for check in [policy_hints_control, replication, rights_on_every_dc] {
            let o = check(&healthy());
            assert_eq!(o.status, Status::Pass, "{}: {}", o.check.id, o.summary);
            assert!(o.summary.contains("2 DCs"), "{}", o.summary);
        }
    }

    #[test]
    fn a_dc_without_policy_hints_fails_naming_it() {
        let facts = with_ad(|ad| {
            second_dc(ad)
                .supported_controls
                .retain(|c| c != POLICY_HINTS_OID)
        });
        let o = policy_hints_control(&facts);
        assert_eq!(o.status, Status::Fail);
        assert!(
            o.summary.contains("dc2.contoso.com (Windows Server 2019")
                && !o.summary.contains("dc1.contoso.com"),
            "{}",
            o.summary
        );
        assert_rendered(&o.remediation, &["dc2.contoso.com"]);
        // A DC that cannot be read is not a pass, and does not hide a DC that fails.
        let facts = with_ad(|ad| ad.dcs[1].reading = unreachable());
        let o = policy_hints_control(&facts);
        assert_eq!(o.status, Status::Error);
        assert!(o.summary.contains("timed out"), "{}", o.summary);
        let facts = with_ad(|ad| second_dc(ad).supported_controls.clear());
        assert_eq!(policy_hints_control(&facts).status, Status::Error);
        let facts = with_ad(|ad| {
            second_dc(ad)
                .supported_controls
                .retain(|c| c != POLICY_HINTS_OID);
            ad.dcs.push(DcView {
                reading: unreachable(),
                ..dc_view("dc3.contoso.com", "10.0.0.7:636", false)
            });
        });
        assert_eq!(policy_hints_control(&facts).status, Status::Fail);
        let facts = with_ad(|ad| ad.dcs.clear());
        assert_eq!(policy_hints_control(&facts).status, Status::Error);
    }

    #[test]
    fn a_dc_behind_beyond_the_grace_warns() {
        let facts = with_ad(|ad| {
            let metadata = second_dc(ad).head_metadata.as_mut().expect("metadata");
            metadata[0].version = 2;
        });
        let o = replication(&facts);
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert!(
            o.summary
                .contains("dc2.contoso.com holds nTSecurityDescriptor version 2 of 3")
                && o.summary.contains("(on dc1.contoso.com)"),
            "{}",
            o.summary
        );
        assert_rendered(
            &o.remediation,
            &["dc2.contoso.com", "dc1.contoso.com", "repadmin"],
        );

        // The same lag for a change made a minute ago is replication at work.
        let facts = with_ad(|ad| {
            let now = datetime_of_fixture();
            for view in &mut ad.dcs {
                let m = view
                    .reading
                    .as_mut()
                    .expect("read")
                    .head_metadata
                    .as_mut()
                    .expect("metadata");
                m[0].changed_at = now - time::Duration::minutes(1);
            }
            second_dc(ad).head_metadata.as_mut().expect("metadata")[0].version = 2;
        });
        let o = replication(&facts);
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        assert!(o.summary.contains("still replicating"), "{}", o.summary);

        // An attribute one DC does not hold at all is a lag too.
        let facts = with_ad(|ad| {
            second_dc(ad)
                .head_metadata
                .as_mut()
                .expect("metadata")
                .remove(1);
        });
        let o = replication(&facts);
        assert_eq!(o.status, Status::Warn);
        assert!(
            o.summary.contains("minPwdAge version none of 1"),
            "{}",
            o.summary
        );

        let facts = with_ad(|ad| {
            second_dc(ad).head_metadata = Err(ProbeFailure::new(ProbeStep::Search, "no access"))
        });
        assert_eq!(replication(&facts).status, Status::Error);
        let facts = with_ad(|ad| {
            ad.dcs.truncate(1);
        });
        assert_eq!(replication(&facts).status, Status::NotApplicable);
    }

    fn datetime_of_fixture() -> OffsetDateTime {
        healthy().observed_at
    }

    #[test]
    fn a_permission_fix_missing_on_one_dc_warns() {
        let facts = with_ad(|ad| {
            let sd = second_dc(ad).head_sd.as_mut().expect("sd");
            sd.dacl.retain(|ace| {
                ace.object_type.as_deref() != Some("00299570-246d-11d0-a768-00aa006e0529")
            });
        });
        let o = rights_on_every_dc(&facts);
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert!(
            o.summary.contains(
                "Reset password is granted on dc1.contoso.com but not on dc2.contoso.com"
            ),
            "{}",
            o.summary
        );
        assert_rendered(&o.remediation, &["MSOL_abc123", "contoso.com"]);
        let facts = with_ad(|ad| ad.dcs[1].reading = unreachable());
        assert_eq!(rights_on_every_dc(&facts).status, Status::Error);
        let facts = with_ad(|ad| ad.dcs.truncate(1));
        assert_eq!(rights_on_every_dc(&facts).status, Status::NotApplicable);
        let facts = with_ad(|ad| {
            ad.connector = Err(ProbeFailure::new(ProbeStep::NotConfigured, "not named"));
        });
        assert_eq!(rights_on_every_dc(&facts).status, Status::Error);
    }

    #[test]
    fn replication_metadata_parses_samba_and_windows_layout() {
        // Header (version 1, reserved, count 2, reserved) and two 48-byte entries.
        let mut blob = Vec::new();
        for v in [1u32, 0, 2, 0] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        // 2023-11-14T22:13:20Z as NTTIME.
        let nttime: u64 = (1_700_000_000 + 11_644_473_600) * 10_000_000;
        for (attid, version) in [(0x0002_0119u32, 3u32), (0x0009_004e, 1)] {
            blob.extend_from_slice(&attid.to_le_bytes());
            blob.extend_from_slice(&version.to_le_bytes());
            blob.extend_from_slice(&nttime.to_le_bytes());
            blob.extend_from_slice(&[0xab; 16]);
            blob.extend_from_slice(&7u64.to_le_bytes());
            blob.extend_from_slice(&9u64.to_le_bytes());
        }
        let parsed = crate::ad::parse_replication_metadata(&blob).expect("parses");
        assert_eq!(
            parsed,
            crate::checks::ad_fixtures::head_metadata()[..1]
                .iter()
                .cloned()
                .chain([AttributeMetadata {
                    attid: 0x0009_004e,
                    version: 1,
                    changed_at: parsed[1].changed_at
                }])
                .collect::<Vec<_>>()
        );
        assert_eq!(parsed[0].changed_at.unix_timestamp(), 1_700_000_000);
        assert!(crate::ad::parse_replication_metadata(&blob[..100]).is_err());
        assert!(crate::ad::parse_replication_metadata(&[2, 0, 0, 0]).is_err());
    }
}

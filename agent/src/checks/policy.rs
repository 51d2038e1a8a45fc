//! Password policy checks: the domain's minimum password age (USR-01) and the per-user state
//! of the sampled users in scope (USR-03 to USR-06).
//!
//! A minimum age above zero makes a second reset or change within the window fail with
//! 33008 ADPasswordPolicyError; Microsoft recommends zero for writeback.

use std::fmt::Write as _;

use serde_json::json;
use wbhealth_catalogue::{Status, render};

use super::permissions::{directory, listed, part};
use super::{Verdict, def, directory_error, plural};
use crate::ad::{PasswordRules, ScopedUser};
use crate::facts::Facts;
use crate::result::CheckOutcome;

/// Catalogue id of the minimum password age check.
pub const MIN_PASSWORD_AGE: &str = "policy.min_password_age";

/// Catalogue id of the password rules check.
pub const PASSWORD_COMPLEXITY: &str = "policy.password_complexity";
/// Catalogue id of the disabled users check.
pub const DISABLED_USERS: &str = "policy.disabled_users";
/// Catalogue id of the locked-out users check.
pub const LOCKED_OUT_USERS: &str = "policy.locked_out_users";
/// Catalogue id of the must-change-password check.
pub const MUST_CHANGE_PASSWORD: &str = "policy.must_change_password";
/// Catalogue id of the password-never-expires check.
pub const PASSWORD_NEVER_EXPIRES: &str = "policy.password_never_expires";

/// `userAccountControl`: ACCOUNTDISABLE.
const ACCOUNTDISABLE: u32 = 0x2;
/// `userAccountControl`: DONT_EXPIRE_PASSWORD.
const DONT_EXPIRE_PASSWORD: u32 = 0x1_0000;
/// `msDS-User-Account-Control-Computed`: LOCKOUT.
const LOCKOUT: u32 = 0x10;
/// How many DNs the evidence and the remediation name.
const NAMED: usize = 20;

/// 100-nanosecond intervals in one second, the unit of AD's interval attributes.
const TICKS_PER_SECOND: u64 = 10_000_000;

/// USR-01: `minPwdAge` on the domain head is zero.
pub fn min_password_age(facts: &Facts) -> CheckOutcome {
    let def = def(MIN_PASSWORD_AGE);
    let verdict = match &facts.directory {
        Err(failure) => directory_error(facts, "the domain controller", failure),
        Ok(directory) => {
            let domain = directory.domain_dns_name.as_str();
            match directory.min_pwd_age {
                Err(ref failure) => {
                    let mut verdict = directory_error(facts, "minPwdAge", failure);
                    verdict.evidence = json!({
                        "domain": domain,
                        "default_naming_context": directory.default_naming_context,
                        "dc": directory.dc.host,
                        "failed_step": failure.step.as_str(),
                        "error": failure.message,
                    });
                    verdict
                }
                Ok(raw) => {
                    // AD stores a negative interval; the magnitude is the age.
                    let seconds = raw.unsigned_abs() / TICKS_PER_SECOND;
                    let age = human_duration(seconds);
                    let evidence = json!({
                        "domain": domain,
                        "default_naming_context": directory.default_naming_context,
                        "dc": directory.dc.host,
                        "min_pwd_age_raw": raw,
                        "min_pwd_age_seconds": seconds,
                        "min_pwd_age": age,
                    });
                    if raw == 0 {
                        Verdict {
                            status: Status::Pass,
                            summary: format!("{domain} has no minimum password age"),
                            evidence,
                            remediation: String::new(),
                        }
                    } else {
                        Verdict {
                            status: Status::Warn,
                            summary: format!(
                                "the minimum password age on {domain} is {age}: a second reset or change within {age} is refused"
                            ),
                            evidence,
                            remediation: render(
                                def.remediation,
                                &[("domain", domain), ("min_age", &age)],
                            ),
                        }
                    }
                }
            }
        }
    };
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// `at least 7 characters, complexity required, 24 remembered`.
fn describe_rules(rules: &PasswordRules) -> String {
    format!(
        "at least {}, complexity {}, {} remembered",
        plural(rules.min_length as usize, "character", "characters"),
        if rules.complexity {
            "required"
        } else {
            "not required"
        },
        plural(
            rules.history_length as usize,
            "previous password",
            "previous passwords"
        ),
    )
}

/// USR-02 (LDAP part): the history, length and complexity rules a password chosen in SSPR must
/// meet, from the domain head and every PSO. Information: it passes once they are read.
pub fn password_complexity(facts: &Facts) -> CheckOutcome {
    let def = def(PASSWORD_COMPLEXITY);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let domain = dir.domain_dns_name.as_str();
        let rules = part(facts, "the domain password rules", &dir.ad.domain_password_rules)?;
        let psos = part(facts, "the password settings objects", &dir.ad.psos)?;
        let mut described = format!("{domain}: {}", describe_rules(rules));
        for pso in psos {
            let _ = write!(described, "; PSO {}: {}", pso.dn, describe_rules(&pso.rules));
        }
        Ok(Verdict {
            status: Status::Pass,
            summary: format!("passwords set through SSPR must meet {described}"),
            evidence: json!({
                "domain": domain,
                "default_naming_context": dir.default_naming_context,
                "domain_rules": rules,
                "psos": psos.iter().map(|p| json!({ "dn": p.dn, "precedence": p.precedence, "applies_to": p.applies_to, "rules": p.rules })).collect::<Vec<_>>(),
            }),
            remediation: render(def.remediation, &[("domain", domain), ("rules", &described)]),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// Built-in accounts that are disabled (or never log on) in every domain: not findings.
fn built_in(user: &ScopedUser) -> bool {
    let sam = user.sam_account_name.to_ascii_lowercase();
    matches!(
        sam.as_str(),
        "krbtgt" | "guest" | "defaultaccount" | "wdagutilityaccount"
    ) || sam.starts_with("krbtgt_")
}

/// The users in scope that `select` picks, judged the same way by USR-03 to USR-06: `error`
/// when the users could not be read, `pass` when none is picked, otherwise `found` (the
/// status for a finding) with up to [`NAMED`] DNs and the count in the evidence, and the
/// remediation rendered with `{count}`, `{users}` and one `command` per DN as `{commands}`.
fn judge_users(
    facts: &Facts,
    id: &'static str,
    what: &str,
    select: impl Fn(&ScopedUser) -> bool,
    found: Status,
    command: impl Fn(&str) -> String,
) -> CheckOutcome {
    let def = def(id);
    let verdict = (|| -> Result<Verdict, Verdict> {
        let dir = directory(facts)?;
        let sample = part(facts, "the users in scope", &dir.ad.users)?;
        let picked: Vec<String> = sample
            .users
            .iter()
            .filter(|u| !built_in(u) && select(u))
            .map(|u| u.dn.clone())
            .collect();
        let named: Vec<String> = picked.iter().take(NAMED).cloned().collect();
        let evidence = json!({
            "count": picked.len(),
            "users": named,
            "sampled": sample.users.len(),
            "sample_limit": sample.limit,
            "truncated": sample.truncated,
            "scope": dir.ad.scope_dns,
        });
        let of = format!(
            "of {} sampled in scope{}",
            plural(sample.users.len(), "user", "users"),
            if sample.truncated { " (truncated)" } else { "" }
        );
        if picked.is_empty() {
            return Ok(Verdict {
                status: Status::Pass,
                summary: format!("no user {what} ({of})"),
                evidence,
                remediation: String::new(),
            });
        }
        let count = plural(picked.len(), "user", "users");
        let commands = named
            .iter()
            .map(|dn| command(dn))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(Verdict {
            status: found,
            summary: format!("{count} {of} {what}: {}", listed(&picked)),
            evidence,
            remediation: render(
                def.remediation,
                &[
                    ("count", &count),
                    ("users", &listed(&picked)),
                    ("commands", &commands),
                ],
            ),
        })
    })()
    .unwrap_or_else(|v| v);
    verdict.into_outcome(def, facts, facts.durations.directory)
}

/// USR-03: no user in scope is disabled.
pub fn disabled_users(facts: &Facts) -> CheckOutcome {
    judge_users(
        facts,
        DISABLED_USERS,
        "disabled",
        |u| u.user_account_control & ACCOUNTDISABLE != 0,
        Status::Warn,
        |dn| format!("Enable-ADAccount -Identity '{dn}'"),
    )
}

/// USR-04: no user in scope is locked out. The lockout bit is constructed by the DC; a DC that
/// did not compute it for any user cannot say, which is an `error`.
pub fn locked_out_users(facts: &Facts) -> CheckOutcome {
    let uncomputed =
        match &facts.directory {
            Ok(dir) => dir.ad.users.as_ref().ok().filter(|s| {
                !s.users.is_empty() && s.users.iter().all(|u| u.uac_computed.is_none())
            }),
            Err(_) => None,
        };
    if let Some(sample) = uncomputed {
        let def = def(LOCKED_OUT_USERS);
        return Verdict {
            status: Status::Error,
            summary: format!(
                "could not read msDS-User-Account-Control-Computed: the domain controller returned it for none of {}",
                plural(sample.users.len(), "user", "users")
            ),
            evidence: json!({ "sampled": sample.users.len() }),
            remediation: format!(
                "Let the account {} binds with read msDS-User-Account-Control-Computed on the users in scope, then run wbhealth-agent diagnose again.",
                facts.host_name
            ),
        }
        .into_outcome(def, facts, facts.durations.directory);
    }
    judge_users(
        facts,
        LOCKED_OUT_USERS,
        "locked out",
        |u| u.uac_computed.is_some_and(|c| c & LOCKOUT != 0),
        Status::Warn,
        |dn| format!("Unlock-ADAccount -Identity '{dn}'"),
    )
}

/// USR-05: no enabled user in scope must change password at next logon (`pwdLastSet` 0
/// without DONT_EXPIRE_PASSWORD, which overrides it).
pub fn must_change_password(facts: &Facts) -> CheckOutcome {
    judge_users(
        facts,
        MUST_CHANGE_PASSWORD,
        "must change password at next logon",
        |u| {
            u.pwd_last_set == 0
                && u.user_account_control & (ACCOUNTDISABLE | DONT_EXPIRE_PASSWORD) == 0
        },
        Status::Warn,
        |dn| format!("Set-ADUser -Identity '{dn}' -ChangePasswordAtLogon $false"),
    )
}

/// USR-06: the users whose password never expires, as information: the check passes and
/// names them, since writeback works and only the force-change flag is not set on-premises.
pub fn password_never_expires(facts: &Facts) -> CheckOutcome {
    let mut outcome = judge_users(
        facts,
        PASSWORD_NEVER_EXPIRES,
        "set to Password never expires",
        |u| u.user_account_control & DONT_EXPIRE_PASSWORD != 0,
        Status::Pass,
        |dn| dn.to_owned(),
    );
    if outcome.status == Status::Pass && outcome.evidence["count"].as_u64().unwrap_or(0) > 0 {
        outcome.summary = format!(
            "{}; expected: an admin reset with require change at next sign-in does not set the flag on-premises for them",
            outcome.summary
        );
    }
    outcome
}

/// `1 day`, `2 days 12 hours`, `3 hours`, `30 minutes`, `45 seconds`.
fn human_duration(seconds: u64) -> String {
    let days = seconds / 86_400;
    let hours = seconds % 86_400 / 3_600;
    let minutes = seconds % 3_600 / 60;
    let unit = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(unit(days, "day"));
    }
    if hours > 0 {
        parts.push(unit(hours, "hour"));
    }
    if parts.is_empty() && minutes > 0 {
        parts.push(unit(minutes, "minute"));
    }
    if parts.is_empty() {
        parts.push(unit(seconds, "second"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::LDAP_NOT_CONFIGURED;
    use crate::checks::fixtures::{SERVER, assert_rendered, healthy};
    use crate::facts::{ProbeFailure, ProbeStep};

    const ONE_DAY: i64 = -864_000_000_000;

    fn with_min_age(value: Result<i64, ProbeFailure>) -> Facts {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            d.min_pwd_age = value;
        }
        facts
    }

    #[test]
    fn zero_passes() {
        let outcome = min_password_age(&healthy());
        assert_eq!(outcome.status, Status::Pass, "{}", outcome.summary);
        assert!(outcome.summary.contains("contoso.com"));
        assert_eq!(outcome.evidence["min_pwd_age_raw"], 0);
        assert!(outcome.remediation.is_empty());
    }

    #[test]
    fn one_day_warns_with_the_age_and_the_domain() {
        let outcome = min_password_age(&with_min_age(Ok(ONE_DAY)));
        assert_eq!(outcome.status, Status::Warn);
        assert!(
            outcome.summary.contains("1 day") && outcome.summary.contains("contoso.com"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["min_pwd_age_seconds"], 86_400);
        assert_rendered(
            &outcome.remediation,
            &[
                "contoso.com (now 1 day)",
                "Set-ADDefaultDomainPasswordPolicy -Identity contoso.com -MinPasswordAge 0.00:00:00",
            ],
        );
    }

    #[test]
    fn hours_are_shown_when_the_age_is_not_whole_days() {
        let outcome = min_password_age(&with_min_age(Ok(ONE_DAY * 2 - 12 * 36_000_000_000)));
        assert!(
            outcome.summary.contains("2 days 12 hours"),
            "{}",
            outcome.summary
        );
        let outcome = min_password_age(&with_min_age(Ok(-3 * 36_000_000_000)));
        assert!(outcome.summary.contains("3 hours"), "{}", outcome.summary);
    }

    #[test]
    fn an_unreadable_value_is_an_error_not_a_pass() {
        let outcome = min_password_age(&with_min_age(Err(ProbeFailure::new(
            ProbeStep::Search,
            "dc1.contoso.com returned no minPwdAge for DC=contoso,DC=com: the bind account may lack read access",
        ))));
        assert_eq!(outcome.status, Status::Error);
        assert!(
            outcome.summary.contains("minPwdAge") && outcome.summary.contains("read access"),
            "{}",
            outcome.summary
        );
        assert_eq!(outcome.evidence["domain"], "contoso.com");
        assert_rendered(&outcome.remediation, &[SERVER]);
    }

    #[test]
    fn no_ldap_settings_is_an_error_saying_what_to_set() {
        let mut facts = healthy();
        facts.directory = Err(ProbeFailure::new(
            ProbeStep::NotConfigured,
            "no [ldap] settings in agent.toml",
        ));
        let outcome = min_password_age(&facts);
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(outcome.summary, LDAP_NOT_CONFIGURED);
    }

    fn with_user(change: impl FnOnce(&mut ScopedUser)) -> Facts {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory
            && let Ok(sample) = &mut d.ad.users
        {
            change(&mut sample.users[0]);
        }
        facts
    }

    const ALICE: &str = "CN=Alice,OU=Sales,DC=contoso,DC=com";
    const USER_CHECKS: &[fn(&Facts) -> CheckOutcome] = &[
        disabled_users,
        locked_out_users,
        must_change_password,
        password_never_expires,
    ];

    #[test]
    fn healthy_users_pass_every_user_state_check() {
        for check in USER_CHECKS {
            let o = check(&healthy());
            assert_eq!(o.status, Status::Pass, "{}: {}", o.check.id, o.summary);
            assert_eq!(o.evidence["count"], 0);
            assert_eq!(o.evidence["sampled"], 2);
        }
    }

    #[test]
    fn disabled_users_warn_naming_them_and_built_ins_are_ignored() {
        let o = disabled_users(&with_user(|u| u.user_account_control |= 0x2));
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert!(o.summary.contains(ALICE), "{}", o.summary);
        assert_eq!(o.evidence["count"], 1);
        assert_eq!(o.evidence["users"][0], ALICE);
        assert_rendered(
            &o.remediation,
            &[&format!("Enable-ADAccount -Identity '{ALICE}'"), "1 user"],
        );

        let o = disabled_users(&with_user(|u| {
            u.user_account_control |= 0x2;
            u.sam_account_name = "krbtgt".to_owned();
        }));
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
    }

    #[test]
    fn the_evidence_names_at_most_twenty_users_and_counts_all() {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory
            && let Ok(sample) = &mut d.ad.users
        {
            let template = sample.users[0].clone();
            sample.users = (0..25)
                .map(|i| ScopedUser {
                    dn: format!("CN=U{i},OU=Sales,DC=contoso,DC=com"),
                    sam_account_name: format!("u{i}"),
                    user_account_control: 0x202,
                    ..template.clone()
                })
                .collect();
        }
        let o = disabled_users(&facts);
        assert_eq!(o.status, Status::Warn);
        assert_eq!(o.evidence["count"], 25);
        assert_eq!(o.evidence["users"].as_array().map(Vec::len), Some(20));
        assert!(o.summary.contains("25 users"), "{}", o.summary);
    }

    #[test]
    fn locked_out_users_warn_and_an_uncomputed_flag_is_an_error() {
        let o = locked_out_users(&with_user(|u| u.uac_computed = Some(0x10)));
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert_rendered(
            &o.remediation,
            &[&format!("Unlock-ADAccount -Identity '{ALICE}'")],
        );

        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory
            && let Ok(sample) = &mut d.ad.users
        {
            for u in &mut sample.users {
                u.uac_computed = None;
            }
        }
        let o = locked_out_users(&facts);
        assert_eq!(o.status, Status::Error, "{}", o.summary);
        assert!(o.summary.contains("msDS-User-Account-Control-Computed"));
    }

    #[test]
    fn users_who_must_change_password_warn() {
        let o = must_change_password(&with_user(|u| u.pwd_last_set = 0));
        assert_eq!(o.status, Status::Warn, "{}", o.summary);
        assert_rendered(&o.remediation, &[ALICE, "ForcePasswordChangeOnLogOn"]);
        // DONT_EXPIRE_PASSWORD overrides pwdLastSet 0; a disabled user cannot log on.
        let o = must_change_password(&with_user(|u| {
            u.pwd_last_set = 0;
            u.user_account_control |= 0x1_0000;
        }));
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
    }

    #[test]
    fn password_never_expires_is_information_listing_the_users() {
        let o = password_never_expires(&with_user(|u| u.user_account_control |= 0x1_0000));
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        assert_eq!(o.evidence["users"][0], ALICE);
        assert!(
            o.summary.contains(ALICE) && o.summary.contains("expected"),
            "{}",
            o.summary
        );
    }

    #[test]
    fn unreadable_users_are_an_error_for_every_user_state_check() {
        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            d.ad.users = Err(ProbeFailure::new(
                ProbeStep::Search,
                "searching OU=Sales,DC=contoso,DC=com: insufficient access",
            ));
        }
        for check in USER_CHECKS {
            let o = check(&facts);
            assert_eq!(o.status, Status::Error, "{}: {}", o.check.id, o.summary);
            assert!(o.summary.contains("insufficient access"), "{}", o.summary);
        }
        facts.directory = Err(ProbeFailure::new(
            ProbeStep::NotConfigured,
            "no [ldap] settings",
        ));
        for check in USER_CHECKS {
            let o = check(&facts);
            assert_eq!(o.status, Status::Error, "{}", o.check.id);
            assert_eq!(o.summary, LDAP_NOT_CONFIGURED);
        }
    }

    #[test]
    fn password_rules_are_reported_and_unreadable_rules_are_an_error() {
        let o = password_complexity(&healthy());
        assert_eq!(o.status, Status::Pass, "{}", o.summary);
        assert!(
            o.summary.contains("contoso.com: at least 7 characters, complexity required, 24 previous passwords remembered"),
            "{}",
            o.summary
        );
        assert_eq!(o.evidence["domain_rules"]["min_length"], 7);

        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            d.ad.psos = Ok(vec![crate::ad::PasswordSettings {
                dn: "CN=Sales PSO,CN=Password Settings Container,CN=System,DC=contoso,DC=com"
                    .to_owned(),
                min_age: 0,
                precedence: 10,
                applies_to: Vec::new(),
                rules: PasswordRules {
                    history_length: 0,
                    min_length: 14,
                    complexity: false,
                },
            }]);
        }
        let o = password_complexity(&facts);
        assert!(
            o.summary.contains("PSO CN=Sales PSO")
                && o.summary
                    .contains("at least 14 characters, complexity not required"),
            "{}",
            o.summary
        );

        let mut facts = healthy();
        if let Ok(d) = &mut facts.directory {
            d.ad.domain_password_rules = Err(ProbeFailure::new(
                ProbeStep::Search,
                "dc1.contoso.com returned no minPwdLength for DC=contoso,DC=com: the bind account may lack read access",
            ));
        }
        let o = password_complexity(&facts);
        assert_eq!(o.status, Status::Error, "{}", o.summary);
        assert!(o.summary.contains("minPwdLength"), "{}", o.summary);
        assert_rendered(&o.remediation, &[SERVER]);
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(86_400), "1 day");
        assert_eq!(human_duration(3 * 86_400 + 3_600), "3 days 1 hour");
        assert_eq!(human_duration(1_800), "30 minutes");
        assert_eq!(human_duration(45), "45 seconds");
    }
}

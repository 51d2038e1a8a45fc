//! Password policy checks: the domain's minimum password age (USR-01).
//!
//! A minimum age above zero makes a second reset or change within the window fail with
//! 33008 ADPasswordPolicyError; Microsoft recommends zero for writeback.

use serde_json::json;
use wbhealth_catalogue::{Status, render};

use super::{Verdict, def, directory_error};
use crate::facts::Facts;
use crate::result::CheckOutcome;

/// Catalogue id of the minimum password age check.
pub const MIN_PASSWORD_AGE: &str = "policy.min_password_age";

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

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human_duration(86_400), "1 day");
        assert_eq!(human_duration(3 * 86_400 + 3_600), "3 days 1 hour");
        assert_eq!(human_duration(1_800), "30 minutes");
        assert_eq!(human_duration(45), "45 seconds");
    }
}

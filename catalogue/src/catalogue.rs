//! The catalogue itself: one entry per check, keyed by a stable id.
//!
//! Ids are `<category>.<subject>` and never change once published: results, incidents and
//! tickets are keyed by them. The `refs` point into the cause catalogue of
//! `writeback-checks.md` (NET-01, AD-01, …) so a reader can find the reasoning behind a check.

use std::sync::LazyLock;

use serde::Serialize;

use crate::{Category, RunsOn, Severity, checks};

/// Where a check gets its facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// LDAP reads against a domain controller.
    Ldap,
    /// Active network probes from the sync server.
    Network,
    /// LDAP to find a host, then a network probe against it.
    LdapAndNetwork,
    /// Microsoft Graph, called by the central server.
    Graph,
    /// The sync server itself: services, registry, files, the ADSync cmdlets and the
    /// Application event log, read live on Windows or from a host snapshot.
    Host,
    /// The latest reports of all agents of a tenant, compared by the central server.
    AgentReports,
}

/// The definition of one check.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckDef {
    /// The stable id, such as `network.passwordreset_https`.
    pub id: &'static str,
    /// The causes in the writeback failure catalogue that this check detects.
    pub refs: &'static [&'static str],
    /// A short title.
    pub title: &'static str,
    /// What the check verifies, in one or two sentences.
    pub description: &'static str,
    /// The area it belongs to.
    pub category: Category,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// How much of writeback a failure breaks.
    pub severity: Severity,
    /// Where its facts come from.
    pub data_source: DataSource,
    /// Microsoft's documentation for the cause.
    pub docs_url: &'static str,
    /// The fix, with `{placeholders}` filled in from the evidence of the case.
    pub remediation: &'static str,
    /// How the check is proven to work: its unit tests, and the real peer broken to make it
    /// fail end to end. Shown in the check reference.
    pub verified_by: &'static str,
}

/// Looks a check up by its id.
pub fn find(id: &str) -> Option<&'static CheckDef> {
    CATALOGUE.iter().find(|c| c.id == id)
}

/// Every check wbhealth runs, in report order: category by category, as each category's
/// module lists them.
pub static CATALOGUE: LazyLock<Vec<CheckDef>> = LazyLock::new(|| {
    [
        checks::network::CHECKS,
        checks::topology::CHECKS,
        checks::policy::CHECKS,
        checks::permissions::CHECKS,
        checks::server::CHECKS,
        checks::tenant::CHECKS,
        checks::fleet::CHECKS,
    ]
    .concat()
});

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_unique_and_shaped_category_dot_subject() {
        let mut seen = HashSet::new();
        for check in CATALOGUE.iter() {
            assert!(seen.insert(check.id), "duplicate id {}", check.id);
            let (category, subject) = check.id.split_once('.').expect("id has a dot");
            assert_eq!(
                category,
                check.category.as_str(),
                "{} sits in the wrong category",
                check.id
            );
            assert!(
                !subject.is_empty() && subject.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!(check.docs_url.starts_with("https://learn.microsoft.com/"));
            assert!(!check.refs.is_empty());
        }
    }

    #[test]
    fn find_returns_the_named_check_only() {
        assert_eq!(
            find("policy.min_password_age").map(|c| c.severity),
            Some(Severity::Warning)
        );
        assert!(find("policy.nope").is_none());
    }
}

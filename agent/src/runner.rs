//! One run of the checks: gather the facts, evaluate every enabled check, stamp the report.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::Settings;
use crate::result::CheckOutcome;
use crate::{checks, probe};

/// The results of one run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Unique per run; the server stores each id once.
    pub id: Uuid,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: OffsetDateTime,
    /// One outcome per enabled check, in catalogue order.
    pub outcomes: Vec<CheckOutcome>,
}

/// Which checks to run: every check, or only the listed ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection(Vec<String>);

impl Selection {
    /// Every check.
    pub fn all() -> Selection {
        Selection(Vec::new())
    }

    /// Only these check ids or whole categories (`network`); an empty list means every check.
    pub fn only(ids: Vec<String>) -> Selection {
        Selection(ids)
    }

    /// Whether `id` runs: it is named, or its category is.
    pub fn includes(&self, id: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|i| {
                i == id
                    || id
                        .strip_prefix(i.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }

    /// The first entry that names neither a check nor a category of the catalogue.
    pub fn unknown(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|i| {
                !wbhealth_catalogue::CATALOGUE
                    .iter()
                    .any(|c| c.id == i.as_str() || c.category.as_str() == i.as_str())
            })
            .map(String::as_str)
    }
}

/// Runs the checks once.
pub async fn run_once(settings: &Settings, host_name: &str, selection: &Selection) -> Run {
    let started_at = OffsetDateTime::now_utc();
    let network = wbhealth_catalogue::CATALOGUE
        .iter()
        .any(|c| c.category == wbhealth_catalogue::Category::Network && selection.includes(c.id));
    let facts = probe::gather(settings, host_name, network).await;
    let outcomes = checks::evaluate(&facts, &|id| selection.includes(id));
    Run {
        id: Uuid::now_v7(),
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        outcomes,
    }
}

#[cfg(test)]
mod tests {
    use super::Selection;

    #[test]
    fn a_selection_takes_ids_and_whole_categories() {
        let selection = Selection::only(vec!["network".into(), "policy.min_password_age".into()]);
        assert!(selection.includes("network.dns_resolution"));
        assert!(selection.includes("policy.min_password_age"));
        assert!(!selection.includes("policy.fine_grained_min_age"));
        assert!(!selection.includes("networking.x"));
        assert!(Selection::all().includes("anything.at_all"));
        assert_eq!(selection.unknown(), None);
        assert_eq!(
            Selection::only(vec!["netwrk".into()]).unknown(),
            Some("netwrk")
        );
    }
}

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

    /// Only these ids; an empty list means every check.
    pub fn only(ids: Vec<String>) -> Selection {
        Selection(ids)
    }

    /// Whether `id` runs.
    pub fn includes(&self, id: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|i| i == id)
    }
}

/// Runs the checks once.
pub async fn run_once(settings: &Settings, host_name: &str, selection: &Selection) -> Run {
    let started_at = OffsetDateTime::now_utc();
    let facts = probe::gather(settings, host_name).await;
    let outcomes = checks::evaluate(&facts, &|id| selection.includes(id));
    Run {
        id: Uuid::now_v7(),
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        outcomes,
    }
}

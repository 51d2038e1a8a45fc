//! What one check concluded on this machine: the agent's side of a result.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use wbhealth_catalogue::{CheckDef, Status};

/// The outcome of one check, with the evidence that led to it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The catalogue entry of the check.
    #[serde(rename = "check_id", serialize_with = "serialize_def_id")]
    pub check: &'static CheckDef,
    /// What it concluded.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// A JSON object with what was observed.
    pub evidence: Value,
    /// The fix for this case, rendered from the catalogue template; empty on `pass`.
    pub remediation: String,
    /// How long gathering its facts took.
    #[serde(rename = "duration_ms", serialize_with = "serialize_millis")]
    pub duration: Duration,
    /// When its facts were observed.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
}

fn serialize_def_id<S: serde::Serializer>(
    def: &&'static CheckDef,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(def.id)
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! Conversions from the agent's results to the wire contract.

use time::OffsetDateTime;
use wbhealth_catalogue::Status;
use wbhealth_proto::v1;

use crate::result::CheckOutcome;
use crate::runner::Run;

/// A protobuf timestamp.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    let nanos = t.unix_timestamp_nanos();
    prost_types::Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000))
            .expect("a remainder of 1e9 fits in i32"),
    }
}

fn status(s: Status) -> v1::Status {
    match s {
        Status::Pass => v1::Status::Pass,
        Status::NotApplicable => v1::Status::NotApplicable,
        Status::Warn => v1::Status::Warn,
        Status::Error => v1::Status::Error,
        Status::Fail => v1::Status::Fail,
    }
}

fn result(o: &CheckOutcome) -> v1::CheckResult {
    v1::CheckResult {
        check_id: o.check.id.to_owned(),
        status: status(o.status).into(),
        summary: o.summary.clone(),
        evidence_json: o.evidence.to_string(),
        remediation: o.remediation.clone(),
        duration_ms: u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
        observed_at: Some(timestamp(o.observed_at)),
    }
}

/// The report of a run.
pub fn report(run: &Run) -> v1::Report {
    v1::Report {
        report_id: run.id.to_string(),
        started_at: Some(timestamp(run.started_at)),
        finished_at: Some(timestamp(run.finished_at)),
        results: run.outcomes.iter().map(result).collect(),
    }
}

//! What both stores share: instants at the databases' microsecond precision, checked integer
//! conversions, the stored spellings of enums, the status ranking used by fleet roll-ups, and
//! paging.

use std::collections::HashSet;
use std::sync::LazyLock;

use time::{OffsetDateTime, UtcOffset};
use wbhealth_catalogue::Status;

use crate::domain::{
    AuditAction, EnrollmentToken, Operation, Page, Report, ResultRecord, Role, TenantId,
    TokenRejection,
};
use crate::storage::StoreError;

/// Both databases keep instants to the microsecond; values are cut to that precision before
/// they are written so that what a write returns equals what a later read returns.
pub(super) fn instant(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC).truncate_to_microsecond()
}

/// The current instant, as it will be stored.
pub(super) fn now() -> OffsetDateTime {
    instant(OffsetDateTime::now_utc())
}

/// A stored value that cannot be read back.
pub(super) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// A stored count that must fit a `u32`.
pub(super) fn to_u32(value: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| corrupt(what, format_args!("{value} is out of range")))
}

/// A stored count that must fit a `u64`.
pub(super) fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(what, format_args!("{value} is out of range")))
}

/// A `u64` for a signed 64-bit column. Only absurd values (centuries of milliseconds) are
/// clamped, which beats refusing a whole report over one.
pub(super) fn from_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored status.
pub(super) fn status(s: &str) -> Result<Status, StoreError> {
    s.parse::<Status>().map_err(|e| corrupt("status", e))
}

/// A stored role.
pub(super) fn role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).ok_or_else(|| corrupt("role", format_args!("unknown role {s:?}")))
}

/// A stored operation.
pub(super) fn operation(s: &str) -> Result<Operation, StoreError> {
    Operation::parse(s).ok_or_else(|| corrupt("operation", format_args!("unknown operation {s:?}")))
}

/// A stored audit action.
pub(super) fn action(s: &str) -> Result<AuditAction, StoreError> {
    AuditAction::parse(s)
        .ok_or_else(|| corrupt("audit action", format_args!("unknown action {s:?}")))
}

/// Tenant ids sorted and without repeats, as assignments are stored and returned.
pub(super) fn distinct(mut tenants: Vec<TenantId>) -> Vec<TenantId> {
    tenants.sort();
    tenants.dedup();
    tenants
}

/// Operations sorted and without repeats.
pub(super) fn distinct_operations(mut operations: Vec<Operation>) -> Vec<Operation> {
    operations.sort();
    operations.dedup();
    operations
}

/// A SQL expression ranking the status column `l.status` as [`Status::rank`] does, built from
/// the catalogue so the two cannot disagree. A value outside the catalogue ranks above every
/// status, so it surfaces as `Corrupt` instead of hiding.
pub(super) static STATUS_RANK_SQL: LazyLock<String> = LazyLock::new(|| {
    let arms: String = Status::ALL
        .iter()
        .map(|s| format!(" WHEN l.status = '{}' THEN {}", s.as_str(), s.rank()))
        .collect();
    // NULL (the outer join found no result) stays NULL, so MAX ignores it.
    format!("CASE WHEN l.status IS NULL THEN NULL{arms} ELSE {UNKNOWN_RANK} END")
});

const UNKNOWN_RANK: i64 = 1000;

/// The status that a rank from [`STATUS_RANK_SQL`] stands for; `None` stays `None` (an agent
/// without results).
pub(super) fn status_of_rank(rank: Option<i64>) -> Result<Option<Status>, StoreError> {
    let Some(rank) = rank else { return Ok(None) };
    Status::ALL
        .into_iter()
        .find(|s| i64::from(s.rank()) == rank)
        .map(Some)
        .ok_or_else(|| corrupt("latest result status", "not a known status"))
}

/// How many rows to fetch for a page: one more than asked, to learn whether more follow.
pub(super) fn fetch_limit(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Cuts the extra row fetched by [`fetch_limit`] off into `has_more`.
pub(super) fn into_page<T>(mut items: Vec<T>, limit: u32) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let has_more = items.len() > limit;
    items.truncate(limit);
    Page { items, has_more }
}

/// A report that names a check twice cannot be stored: the results are keyed by check. This is
/// refused before anything is written, identically on both databases.
pub(super) fn check_unique_checks(report: &Report) -> Result<(), StoreError> {
    let mut seen = HashSet::with_capacity(report.results.len());
    for r in &report.results {
        if !seen.insert(r.check_id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "report {} names check {} more than once",
                report.id, r.check_id
            )));
        }
    }
    Ok(())
}

/// Maps a database error, replacing the driver's wording of a unique violation with `what`.
pub(super) fn conflict_as(what: impl FnOnce() -> String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(what()),
        other => other,
    }
}

/// Why a stored token is refused at `now`. A revoked token says so even when it has also
/// expired or run out, and an expired one says so even when it has also run out: the most
/// deliberate reason wins. (An unknown token has no row to ask.)
pub(super) fn rejection(token: &EnrollmentToken, now: OffsetDateTime) -> Option<TokenRejection> {
    if token.revoked_at.is_some() {
        Some(TokenRejection::Revoked)
    } else if now > token.expires_at {
        Some(TokenRejection::Expired)
    } else if token.uses >= token.max_uses {
        Some(TokenRejection::Exhausted)
    } else {
        None
    }
}

/// Cloud results as stored: a JSON array of objects.
pub(super) fn results_json(results: &[ResultRecord]) -> serde_json::Value {
    serde_json::Value::Array(
        results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "check_id": r.check_id,
                    "status": r.status.as_str(),
                    "summary": r.summary,
                    "evidence": r.evidence,
                    "remediation": r.remediation,
                    "duration_ms": r.duration_ms,
                    "observed_at": r.observed_at.unix_timestamp_nanos() / 1_000,
                })
            })
            .collect(),
    )
}

/// Reads cloud results stored by [`results_json`].
pub(super) fn results_of_json(value: serde_json::Value) -> Result<Vec<ResultRecord>, StoreError> {
    let bad = |detail: &str| corrupt("cloud results", detail);
    let items = match value {
        serde_json::Value::Array(items) => items,
        _ => return Err(bad("not an array")),
    };
    items
        .into_iter()
        .map(|item| {
            let text = |key: &str| {
                item[key]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(key))
            };
            let micros = item["observed_at"]
                .as_i64()
                .ok_or_else(|| bad("observed_at"))?;
            Ok(ResultRecord {
                check_id: text("check_id")?,
                status: status(&text("status")?)?,
                summary: text("summary")?,
                evidence: item["evidence"].clone(),
                remediation: text("remediation")?,
                duration_ms: item["duration_ms"]
                    .as_u64()
                    .ok_or_else(|| bad("duration_ms"))?,
                observed_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                    .map_err(|e| corrupt("cloud result observed_at", e))?,
            })
        })
        .collect()
}

/// The worst status of some results, as stored beside them.
pub(super) fn worst_of(results: &[ResultRecord]) -> Option<&'static str> {
    results
        .iter()
        .map(|r| r.status)
        .reduce(Status::worst)
        .map(Status::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_maps_back_to_its_status() {
        for s in Status::ALL {
            assert_eq!(
                status_of_rank(Some(i64::from(s.rank()))).expect("known rank"),
                Some(s)
            );
        }
        assert_eq!(status_of_rank(None).expect("no results"), None);
        assert!(matches!(
            status_of_rank(Some(UNKNOWN_RANK)),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn instants_are_cut_to_microseconds_in_utc() {
        let t = time::macros::datetime!(1969-12-31 23:59:59.999_999_999 +02:00);
        let stored = instant(t);
        assert_eq!(stored.offset(), UtcOffset::UTC);
        assert_eq!(
            stored,
            time::macros::datetime!(1969-12-31 21:59:59.999_999 UTC)
        );
    }

    #[test]
    fn pages_report_whether_more_follow() {
        let page = into_page(vec![1, 2, 3], 2);
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.has_more);
        let page = into_page(vec![1, 2], 2);
        assert!(!page.has_more);
    }
}

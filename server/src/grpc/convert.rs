//! Conversions between the wire contract and the domain, with the validation they need.

use time::OffsetDateTime;
use wbhealth_catalogue::Status as CheckStatus;
use wbhealth_proto::v1;

use crate::domain::{Agent, HostFacts, Report, ReportId, ResultRecord};
use crate::error::Error;

const MAX_TEXT: usize = 8 * 1024;
const MAX_RESULTS: usize = 1000;

/// Host facts from an agent; the host name is required.
pub fn host_facts(host: Option<v1::HostFacts>) -> Result<HostFacts, tonic::Status> {
    let host = host.ok_or_else(|| Error::invalid("host facts are missing"))?;
    let hostname = host.hostname.trim();
    if hostname.is_empty() || hostname.len() > 253 {
        return Err(Error::invalid("the host name must be 1 to 253 characters").into());
    }
    let bounded = |s: String| s.chars().take(256).collect::<String>();
    Ok(HostFacts {
        hostname: hostname.to_owned(),
        os: bounded(host.os),
        agent_version: bounded(host.agent_version),
        domain_controller: bounded(host.domain_controller),
    })
}

/// A report from an agent, or the reason it can never be accepted.
pub fn report(report: v1::Report, agent: &Agent) -> Result<Report, String> {
    let id: ReportId = report
        .report_id
        .parse()
        .map_err(|_| format!("report id {:?} is not a UUID", report.report_id))?;
    if report.results.len() > MAX_RESULTS {
        return Err(format!("a report holds at most {MAX_RESULTS} results"));
    }
    let results = report
        .results
        .into_iter()
        .map(result)
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = results.iter().find(|r| !seen.insert(r.check_id.as_str())) {
        return Err(format!(
            "check {} appears twice in one report",
            twice.check_id
        ));
    }
    Ok(Report {
        id,
        agent_id: agent.id,
        tenant_id: agent.tenant_id,
        started_at: timestamp(report.started_at, "started_at")?,
        finished_at: timestamp(report.finished_at, "finished_at")?,
        results,
    })
}

fn result(r: v1::CheckResult) -> Result<ResultRecord, String> {
    if !is_check_id(&r.check_id) {
        return Err(format!(
            "check id {:?} is not of the form category.subject",
            r.check_id
        ));
    }
    let status = match v1::Status::try_from(r.status) {
        Ok(v1::Status::Pass) => CheckStatus::Pass,
        Ok(v1::Status::Warn) => CheckStatus::Warn,
        Ok(v1::Status::Fail) => CheckStatus::Fail,
        Ok(v1::Status::Error) => CheckStatus::Error,
        Ok(v1::Status::NotApplicable) => CheckStatus::NotApplicable,
        Ok(v1::Status::Unspecified) | Err(_) => {
            return Err(format!("check {} has no valid status", r.check_id));
        }
    };
    if r.summary.len() > MAX_TEXT
        || r.remediation.len() > 4 * MAX_TEXT
        || r.evidence_json.len() > 16 * MAX_TEXT
    {
        return Err(format!(
            "check {} has an oversized summary, remediation or evidence",
            r.check_id
        ));
    }
    // PostgreSQL cannot store NUL in text or JSON; no honest result contains one.
    if [&r.summary, &r.remediation, &r.evidence_json]
        .iter()
        .any(|t| t.contains('\0') || t.contains("\\u0000"))
    {
        return Err(format!("check {} contains a NUL character", r.check_id));
    }
    let evidence = if r.evidence_json.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        let value: serde_json::Value = serde_json::from_str(&r.evidence_json)
            .map_err(|e| format!("evidence of check {} is not JSON: {e}", r.check_id))?;
        if !value.is_object() {
            return Err(format!(
                "evidence of check {} must be a JSON object",
                r.check_id
            ));
        }
        value
    };
    Ok(ResultRecord {
        observed_at: timestamp(r.observed_at, "observed_at")?,
        check_id: r.check_id,
        status,
        summary: r.summary,
        evidence,
        remediation: r.remediation,
        duration_ms: r.duration_ms,
    })
}

fn is_check_id(id: &str) -> bool {
    id.len() <= 100
        && id.split_once('.').is_some_and(|(a, b)| {
            let ok = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            ok(a) && ok(b)
        })
}

fn timestamp(ts: Option<prost_types::Timestamp>, field: &str) -> Result<OffsetDateTime, String> {
    let ts = ts.ok_or_else(|| format!("{field} is missing"))?;
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| format!("{field} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_ids_must_be_category_dot_subject() {
        assert!(is_check_id("network.passwordreset_https"));
        assert!(!is_check_id("network"));
        assert!(!is_check_id("Network.x"));
        assert!(!is_check_id("a.b c"));
    }

    #[test]
    fn results_without_a_status_are_refused() {
        let r = v1::CheckResult {
            check_id: "network.x".into(),
            status: 0,
            ..Default::default()
        };
        assert!(result(r).is_err());
    }
}

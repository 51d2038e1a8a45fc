//! The `diagnose` report for a technician at the console: grouped by category, coloured on a
//! terminal, each problem with its evidence and its fix. Or JSON for scripts.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;
use wbhealth_catalogue::{Category, Status};

use crate::result::CheckOutcome;
use crate::runner::Run;

fn style(status: Status) -> Style {
    let color = match status {
        Status::Pass => AnsiColor::Green,
        Status::NotApplicable => AnsiColor::BrightBlack,
        Status::Warn => AnsiColor::Yellow,
        Status::Error => AnsiColor::Magenta,
        Status::Fail => AnsiColor::Red,
    };
    Style::new().fg_color(Some(color.into())).bold()
}

fn label(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::NotApplicable => "N/A ",
        Status::Warn => "WARN",
        Status::Error => "ERR ",
        Status::Fail => "FAIL",
    }
}

/// The report as text with ANSI styles; the caller's stream strips them when it is not a
/// terminal.
pub fn text(run: &Run, host_name: &str) -> String {
    let mut out = String::new();
    let bold = Style::new().bold();
    let dim = Style::new().dimmed();
    let _ = writeln!(
        out,
        "{bold}wbhealth diagnose{bold:#} on {host_name}, {}",
        run.finished_at.date()
    );
    let mut categories: Vec<Category> = run.outcomes.iter().map(|o| o.check.category).collect();
    categories.dedup();
    categories.sort();
    categories.dedup();
    for category in categories {
        let _ = writeln!(out, "\n{bold}{}{bold:#}", category.title());
        for o in run.outcomes.iter().filter(|o| o.check.category == category) {
            let s = style(o.status);
            let _ = writeln!(
                out,
                "  {s}{}{s:#}  {}  {dim}({}){dim:#}",
                label(o.status),
                o.summary,
                o.check.id
            );
            if o.status == Status::Pass || o.status == Status::NotApplicable {
                continue;
            }
            if let Some(evidence) = o.evidence.as_object().filter(|e| !e.is_empty()) {
                let _ = writeln!(out, "        {dim}evidence:{dim:#}");
                for (key, value) in evidence {
                    let value = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let _ = writeln!(out, "          {key}: {value}");
                }
            }
            if !o.remediation.is_empty() {
                let _ = writeln!(out, "        {dim}fix:{dim:#} {}", o.remediation);
            }
            let _ = writeln!(out, "        {dim}docs:{dim:#} {}", o.check.docs_url);
        }
    }
    let count = |status| run.outcomes.iter().filter(|o| o.status == status).count();
    let _ = writeln!(
        out,
        "\n{bold}{} checks:{bold:#} {} pass, {} warn, {} fail, {} could not be evaluated, {} not applicable",
        run.outcomes.len(),
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Error),
        count(Status::NotApplicable),
    );
    out
}

#[derive(Serialize)]
struct JsonReport<'a> {
    report_id: String,
    host: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    started_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    finished_at: time::OffsetDateTime,
    status: Option<Status>,
    results: &'a [CheckOutcome],
}

/// The report as one JSON document.
pub fn json(run: &Run, host_name: &str) -> String {
    let report = JsonReport {
        report_id: run.id.to_string(),
        host: host_name,
        started_at: run.started_at,
        finished_at: run.finished_at,
        status: run.outcomes.iter().map(|o| o.status).reduce(Status::worst),
        results: &run.outcomes,
    };
    serde_json::to_string_pretty(&report).expect("the report is plain data")
}

/// The process exit code for a run: 0 when nothing failed, 1 when a check failed, 2 when
/// none failed but some could not be evaluated.
pub fn exit_code(run: &Run) -> u8 {
    let worst = run.outcomes.iter().map(|o| o.status).reduce(Status::worst);
    match worst {
        Some(Status::Fail) => 1,
        Some(Status::Error) => 2,
        _ => 0,
    }
}

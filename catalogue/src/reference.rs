//! The check reference, `docs/checks.md`: every check of the [`CATALOGUE`] in one table per
//! category, generated from the code so that it cannot drift from what the binaries run.
//!
//! The test `check_reference_is_fresh` fails when the committed file is stale;
//! `WBH_UPDATE_DOCS=1 cargo test -p wbhealth-catalogue check_reference_is_fresh` rewrites it.

use std::fmt::Write as _;

use crate::{CATALOGUE, Category, CheckDef, DataSource, RunsOn, Severity};

/// The check reference as Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Check reference\n");
    let _ = writeln!(
        out,
        "Every check wbhealth runs, generated from the catalogue in `catalogue/src/checks/`; do not edit \
it by hand. Regenerate it with `WBH_UPDATE_DOCS=1 cargo test -p wbhealth-catalogue check_reference_is_fresh`.\n"
    );
    let _ = writeln!(
        out,
        "- **Id**: stable; results, incidents and tickets are keyed by it.\n\
- **Refs**: the causes in the writeback failure catalogue (`writeback-checks.md`: NET-01, AD-01, …) that the check detects.\n\
- **Severity** of a failure: `blocker` (writeback fails for every user), `partial` (some users, operations or domains), \
`warning` (degraded or at risk), `info` (worth knowing).\n\
- **Runs on**: `agent` (the customer's sync server), `cloud` (the central server, through Microsoft Graph) or `fleet` \
(the central server, comparing agents).\n\
- **Verified by**: the unit tests and the real peer broken end to end to prove the check fails when it should.\n"
    );
    let _ = writeln!(out, "{} checks.", CATALOGUE.len());
    let mut categories: Vec<Category> = CATALOGUE.iter().map(|c| c.category).collect();
    categories.sort();
    categories.dedup();
    for category in categories {
        let _ = writeln!(out, "\n## {}\n", category.title());
        let _ = writeln!(
            out,
            "| Id | Refs | Check | Severity | Runs on | Data source | Verified by |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for check in CATALOGUE.iter().filter(|c| c.category == category) {
            let _ = writeln!(out, "{}", row(check));
        }
    }
    out
}

fn row(check: &CheckDef) -> String {
    format!(
        "| `{}` | {} | [{}]({}): {} | {} | {} | {} | {} |",
        check.id,
        cell(&check.refs.join(", ")),
        cell(check.title),
        check.docs_url,
        cell(check.description),
        severity(check.severity),
        runs_on(check.runs_on),
        data_source(check.data_source),
        cell(check.verified_by),
    )
}

/// Text made safe for one table cell: no pipes, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn severity(severity: Severity) -> &'static str {
    severity.as_str()
}

fn runs_on(runs_on: RunsOn) -> String {
    format!("{runs_on:?}").to_lowercase()
}

/// The data source as people write it. Read through `Debug` so that a source added in one
/// category's work shows up here without touching this file.
fn data_source(source: DataSource) -> String {
    let name = format!("{source:?}");
    match name.as_str() {
        "Ldap" => "LDAP".to_owned(),
        "Network" => "network probe".to_owned(),
        "LdapAndNetwork" => "LDAP, then network probe".to_owned(),
        "Graph" => "Microsoft Graph".to_owned(),
        "Host" => "sync server (Windows, or a snapshot)".to_owned(),
        "AgentReports" => "all agents' reports, compared".to_owned(),
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// `docs/checks.md` is generated from the catalogue; this fails when it is stale.
    /// Regenerate with `WBH_UPDATE_DOCS=1 cargo test -p wbhealth-catalogue check_reference_is_fresh`.
    #[test]
    fn check_reference_is_fresh() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/checks.md");
        let generated = reference_markdown();
        if std::env::var_os("WBH_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).expect("write docs/checks.md");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/checks.md is stale; regenerate it with: WBH_UPDATE_DOCS=1 cargo test -p wbhealth-catalogue check_reference_is_fresh"
        );
    }

    #[test]
    fn every_check_has_a_row_with_its_id_severity_source_and_verification() {
        let text = reference_markdown();
        for check in CATALOGUE.iter() {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", check.id)))
                .unwrap_or_else(|| panic!("{} has no row", check.id));
            assert!(line.contains(check.severity.as_str()), "{line}");
            assert!(line.contains(check.docs_url), "{line}");
            assert!(
                !check.verified_by.is_empty(),
                "{} says how it is verified",
                check.id
            );
            // Seven columns: eight pipes that are not escaped.
            let pipes = line.replace("\\|", "").matches('|').count();
            assert_eq!(pipes, 8, "{line}");
        }
        assert!(text.contains("\n## Network\n"));
    }
}

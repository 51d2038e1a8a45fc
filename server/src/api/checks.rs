//! The check catalogue, as clients see it.

use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wbhealth_catalogue::{CATALOGUE, Category, CheckDef, DataSource, RunsOn, Severity};

use super::auth::Principal;
use super::problem::Problem;
use crate::AppState;
use crate::domain::Operation;
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_checks))
}

/// One check of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    /// The stable id.
    #[schema(example = "topology.pdc_emulator")]
    pub id: String,
    /// The causes in the writeback failure catalogue it detects.
    #[schema(example = json!(["AD-01"]))]
    pub refs: Vec<String>,
    /// A short title.
    pub title: String,
    /// What it verifies.
    pub description: String,
    /// Its area.
    pub category: Category,
    /// Where it runs.
    pub runs_on: RunsOn,
    /// How much of writeback a failure breaks.
    pub severity: Severity,
    /// Where its facts come from.
    pub data_source: DataSource,
    /// Microsoft's documentation.
    pub docs_url: String,
    /// The remediation template; `{placeholders}` are filled per case in results.
    pub remediation_template: String,
}

impl From<&CheckDef> for CheckView {
    fn from(c: &CheckDef) -> Self {
        Self {
            id: c.id.to_owned(),
            refs: c.refs.iter().map(|r| (*r).to_owned()).collect(),
            title: c.title.to_owned(),
            description: c.description.to_owned(),
            category: c.category,
            runs_on: c.runs_on,
            severity: c.severity,
            data_source: c.data_source,
            docs_url: c.docs_url.to_owned(),
            remediation_template: c.remediation.to_owned(),
        }
    }
}

/// Lists every check wbhealth runs.
#[utoipa::path(
    get,
    path = "/checks",
    tag = "checks",
    responses(
        (status = 200, description = "The catalogue, in report order", body = Vec<CheckView>),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_checks(
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<CheckView>>, Error> {
    principal.require(Operation::ReadChecks)?;
    Ok(Json(CATALOGUE.iter().map(Into::into).collect()))
}

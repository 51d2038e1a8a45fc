//! Liveness and readiness for load balancers and orchestrators.

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::AppState;
use crate::error::{Error, ErrorCode};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process can serve: the database answers.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, Error> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %format!("{e:#}"), "not ready: database does not answer");
        Error::new(ErrorCode::Unavailable, "the database does not answer")
    })?;
    Ok("ready\n")
}

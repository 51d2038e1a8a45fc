//! The REST front door: `/api/v1/...` with its OpenAPI document, Swagger UI at `/docs`, and
//! `/healthz` and `/readyz`.
//!
//! Each submodule owns its routes and their OpenAPI description. Every route under `/api/v1`
//! passes through [`auth::require_principal`]; only the OpenAPI document is public.

mod api_keys;
mod audit;
pub mod auth;
mod checks;
mod cloud;
mod enrollment;
mod health;
mod page;
pub mod problem;
mod sign_in;
mod status;
mod tenants;
mod users;

use axum::Router;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;

/// The path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wbhealth",
        description = "Password-writeback health for the fleets that MSPs run. Every route but `POST /api/v1/sign-in` needs `Authorization: Bearer <credential>`: an API key, a session token from `POST /api/v1/sign-in`, or an access token of the configured OIDC provider. What a caller may do depends on its role (administrator, technician, viewer, integration) and the tenants assigned to it. A tenant or object outside the caller's tenants answers 404, exactly as one that does not exist; an operation the role may not perform answers 403. Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "tenants", description = "Customer tenants and their agents"),
        (name = "enrollment", description = "Enrollment tokens that agents trade for credentials"),
        (name = "status", description = "Check results per tenant and across the fleet"),
        (name = "checks", description = "The check catalogue"),
        (name = "access", description = "API keys, users and their tenant assignments (administrators)"),
        (name = "audit", description = "Every change made through the API (administrators)"),
        (name = "cloud", description = "Cloud checks through Microsoft Graph: per-tenant app credentials, results, on-demand runs and user readiness, and the self-service password activity of the audit log"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (shown once when it is created), a session token from POST /api/v1/sign-in, or an access token of the configured OIDC provider"))
                    .build(),
            ),
        );
    }
}

fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(tenants::routes())
        .merge(enrollment::routes())
        .merge(status::routes())
        .merge(checks::routes())
        .merge(api_keys::routes())
        .merge(users::routes())
        .merge(audit::routes())
        .merge(cloud::routes())
        .merge(sign_in::routes())
}

/// The authenticated routes, the public ones (signing in) and the document of both.
fn parts() -> (Router<AppState>, Router<AppState>, OpenApiDoc) {
    let (api, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1_routes())
        .split_for_parts();
    let (public, public_doc) = OpenApiRouter::new()
        .nest("/api/v1", sign_in::public_routes())
        .split_for_parts();
    openapi.merge(public_doc);
    (api, public, openapi)
}

/// The OpenAPI document of the REST API.
pub fn openapi() -> OpenApiDoc {
    parts().2
}

/// The complete REST router.
pub fn router(state: AppState) -> Router {
    let (api, public, openapi) = parts();
    let api = api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_principal,
    ));
    Router::new()
        .merge(api)
        .merge(public)
        .merge(health::routes())
        .merge(SwaggerUi::new("/docs").url(OPENAPI_PATH, openapi))
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::wrong_method)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// `openapi/openapi.json` is generated from the code; this fails when it is stale.
    /// Regenerate with `WBH_UPDATE_OPENAPI=1 cargo test -p wbhealth-server openapi_document_is_fresh`.
    #[test]
    fn openapi_document_is_fresh() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
        let generated = super::openapi()
            .to_pretty_json()
            .expect("the document serializes")
            + "\n";
        if std::env::var_os("WBH_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "openapi/openapi.json is stale; regenerate it with: WBH_UPDATE_OPENAPI=1 cargo test -p wbhealth-server openapi_document_is_fresh"
        );
    }

    #[test]
    fn every_operation_requires_the_bearer_key_and_documents_its_refusals() {
        let doc = super::openapi();
        assert!(
            doc.security.as_ref().is_some_and(|s| !s.is_empty()),
            "global bearer security is declared"
        );
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("delete", &item.delete),
                ("put", &item.put),
                ("patch", &item.patch),
            ] {
                if let Some(op) = op {
                    // A public operation (signing in) declares an empty security requirement
                    // and cannot be refused for the caller's role.
                    let public = op.security.as_ref().is_some_and(|s| {
                        !s.is_empty() && s.iter().all(|r| r == &Default::default())
                    });
                    let refusals: &[&str] = if public {
                        &["401", "429"]
                    } else {
                        &["401", "403", "429"]
                    };
                    for &status in refusals {
                        assert!(
                            op.responses.responses.contains_key(status),
                            "{method} {path} does not document {status}"
                        );
                    }
                }
            }
        }
    }
}

//! The audit log: every change made through the API, who made it, when and from where.
//! Handlers append with [`record`]; administrators read it at `GET /audit-events`.

use axum::extract::State;
use axum::{Extension, Json as ResponseJson};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Principal;
use super::page::{PageQuery, encode};
use super::problem::{Problem, Query};
use crate::AppState;
use crate::domain::{AuditEvent, AuditFilter, NewAuditEvent, Operation, TenantId};
use crate::error::Error;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_events))
}

/// Appends a change to the audit log. The change itself is already made, so a failure here
/// is logged with the event (it holds no secret) and reported to the caller as unavailable.
pub async fn record(state: &AppState, event: NewAuditEvent) -> Result<(), Error> {
    let action = event.action.as_str();
    match state.store.record_audit_event(event.clone()).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::error!(
                action,
                principal_id = %event.principal_id,
                tenant_id = ?event.tenant_id.map(|t| t.0),
                target_id = ?event.target_id,
                "audit event not recorded"
            );
            Err(Error::from_store(e, "audit event"))
        }
    }
}

/// One change made through the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// Its id.
    pub id: Uuid,
    /// When the change was made.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The API key (or user) that made it.
    pub principal_id: Uuid,
    /// Its name at the time.
    pub principal_name: String,
    /// What was done, such as `enrollment_token.created`.
    #[schema(example = "enrollment_token.created")]
    pub action: String,
    /// The tenant changed, if the change was in one.
    pub tenant_id: Option<Uuid>,
    /// The object created or changed, if any.
    pub target_id: Option<Uuid>,
    /// The client's IP address, when known.
    pub client_ip: Option<String>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id.0,
            at: e.at,
            principal_id: e.principal_id,
            principal_name: e.principal_name,
            action: e.action.as_str().to_owned(),
            tenant_id: e.tenant_id.map(|t| t.0),
            target_id: e.target_id,
            client_ip: e.client_ip,
        }
    }
}

/// A page of audit events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    /// The events, oldest first.
    pub items: Vec<AuditEventView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only changes in this tenant.
    pub tenant_id: Option<Uuid>,
    /// Only changes by this API key or user.
    pub principal_id: Option<Uuid>,
    /// The `next_cursor` of the previous page; omit for the first page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
}

/// Lists the audit log, oldest first. Administrators only.
#[utoipa::path(
    get,
    path = "/audit-events",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit events", body = AuditEventPage),
        (status = 400, description = "Bad filter, cursor or limit", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller's role may not do this", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed authentications from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_audit_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<AuditQuery>,
) -> Result<ResponseJson<AuditEventPage>, Error> {
    principal.require(Operation::ReadAudit)?;
    let page = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    }
    .to_request()?;
    let filter = AuditFilter {
        tenant: query.tenant_id.map(TenantId),
        principal: query.principal_id,
    };
    let page = state
        .store
        .list_audit_events(&filter, page)
        .await
        .map_err(|e| Error::from_store(e, "audit event"))?;
    let next_cursor = if page.has_more {
        page.items.last().map(|e| encode(&e.id.0))
    } else {
        None
    };
    Ok(ResponseJson(AuditEventPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

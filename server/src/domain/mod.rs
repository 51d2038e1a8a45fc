//! The server's domain: tenants, agents, enrollment, check results and fleet status.
//!
//! This module imports nothing from axum, tonic or sqlx. The API and gRPC layers convert
//! their wire types into these, and the storage layer persists them.

mod ids;
mod model;
mod scope;
pub mod secrets;

pub use ids::{AgentId, ApiKeyId, EnrollmentTokenId, ReportId, TenantId};
pub use model::{
    Agent, AgentCredential, AgentRollup, ApiKey, EnrollmentToken, HostFacts, IngestOutcome,
    LatestResult, NewAgent, NewApiKey, NewEnrollmentToken, NewTenant, Page, PageRequest, Report,
    ReportSummary, ResultRecord, Role, Tenant, TokenRejection,
};
pub use scope::TenantScope;

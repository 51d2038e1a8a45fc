//! The server's domain: tenants, agents, enrollment, check results and fleet status.
//!
//! This module imports nothing from axum, tonic or sqlx. The API and gRPC layers convert
//! their wire types into these, and the storage layer persists them.

mod access;
mod cloud;
pub mod fleet;
mod ids;
mod model;
pub mod password;
mod scope;
pub mod secrets;
pub mod session_token;

pub use access::{AuditAction, Operation, authorize};
pub use cloud::{
    CloudRun, GraphCloud, GraphCredential, GraphCredentialKind, NewGraphCredential, SsprActivity,
    SsprActivityGroup,
};
pub use ids::{AgentId, ApiKeyId, AuditEventId, EnrollmentTokenId, ReportId, TenantId, UserId};
pub use model::{
    Agent, AgentCredential, AgentRollup, ApiKey, AuditEvent, AuditFilter, EnrollmentToken,
    HostFacts, IngestOutcome, LatestResult, NewAgent, NewApiKey, NewAuditEvent, NewEnrollmentToken,
    NewTenant, NewUser, Page, PageRequest, Report, ReportSummary, ResultRecord, Role, Tenant,
    TokenRejection, User,
};
pub use scope::TenantScope;
pub use secrets::MasterKey;

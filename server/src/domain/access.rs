//! Who may do what: the operations the API offers, and the one function that decides whether a
//! role may perform one. Routes name their [`Operation`]; nothing else compares roles.
//!
//! Which tenants a principal may touch is the other half, [`TenantScope`](crate::domain::TenantScope),
//! enforced by the store on every query.

use crate::domain::Role;

/// One thing a caller can ask of the API. Each route declares exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// List and show tenants.
    ReadTenants,
    /// Create a tenant.
    CreateTenant,
    /// List a tenant's agents and their reports.
    ReadAgents,
    /// Ask an agent to run its checks now.
    RunAgents,
    /// Revoke an agent, or rotate its credential.
    ManageAgents,
    /// Read a tenant's status.
    ReadStatus,
    /// Read the fleet summary.
    ReadFleet,
    /// Read the check catalogue.
    ReadChecks,
    /// List a tenant's enrollment tokens.
    ReadEnrollmentTokens,
    /// Create and revoke a tenant's enrollment tokens.
    ManageEnrollmentTokens,
    /// Create, list and revoke API keys.
    ManageApiKeys,
    /// Create, list and assign users.
    ManageUsers,
    /// Read the audit log.
    ReadAudit,
    /// Read a tenant's cloud-check results and self-service password activity.
    ReadCloudChecks,
    /// Run a tenant's cloud checks now, or check one of its users through Graph.
    RunCloudChecks,
    /// Read a tenant's Graph credential (metadata only; the secret is never returned).
    ReadGraphCredentials,
    /// Set and remove a tenant's Graph credential.
    ManageGraphCredentials,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 17] = [
        Operation::ReadTenants,
        Operation::CreateTenant,
        Operation::ReadAgents,
        Operation::RunAgents,
        Operation::ManageAgents,
        Operation::ReadStatus,
        Operation::ReadFleet,
        Operation::ReadChecks,
        Operation::ReadEnrollmentTokens,
        Operation::ManageEnrollmentTokens,
        Operation::ManageApiKeys,
        Operation::ManageUsers,
        Operation::ReadAudit,
        Operation::ReadCloudChecks,
        Operation::RunCloudChecks,
        Operation::ReadGraphCredentials,
        Operation::ManageGraphCredentials,
    ];

    /// The stable spelling stored, shown and accepted.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ReadTenants => "tenants.read",
            Operation::CreateTenant => "tenants.create",
            Operation::ReadAgents => "agents.read",
            Operation::RunAgents => "agents.run",
            Operation::ManageAgents => "agents.manage",
            Operation::ReadStatus => "status.read",
            Operation::ReadFleet => "fleet.read",
            Operation::ReadChecks => "checks.read",
            Operation::ReadEnrollmentTokens => "enrollment_tokens.read",
            Operation::ManageEnrollmentTokens => "enrollment_tokens.manage",
            Operation::ManageApiKeys => "api_keys.manage",
            Operation::ManageUsers => "users.manage",
            Operation::ReadAudit => "audit.read",
            Operation::ReadCloudChecks => "cloud_checks.read",
            Operation::RunCloudChecks => "cloud_checks.run",
            Operation::ReadGraphCredentials => "graph_credentials.read",
            Operation::ManageGraphCredentials => "graph_credentials.manage",
        }
    }

    /// Parses the stable spelling.
    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == s)
    }

    /// Whether the operation only reads.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Operation::ReadTenants
                | Operation::ReadAgents
                | Operation::ReadStatus
                | Operation::ReadFleet
                | Operation::ReadChecks
                | Operation::ReadEnrollmentTokens
                | Operation::ReadAudit
                | Operation::ReadCloudChecks
                | Operation::ReadGraphCredentials
        )
    }

    /// Whether only administrators may ever perform it: it reaches beyond assigned tenants.
    pub fn is_administrative(self) -> bool {
        matches!(
            self,
            Operation::CreateTenant
                | Operation::ManageApiKeys
                | Operation::ManageUsers
                | Operation::ReadAudit
        )
    }
}

/// A change recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A tenant was created.
    TenantCreated,
    /// An agent enrolled with an enrollment token (the agent is both principal and target).
    AgentEnrolled,
    /// An agent was asked to run its checks.
    AgentRunRequested,
    /// An agent was revoked.
    AgentRevoked,
    /// A new credential was sent to an agent.
    AgentCredentialRotationStarted,
    /// An agent confirmed its new credential; the old one is refused from then on (the agent
    /// is both principal and target).
    AgentCredentialRotated,
    /// An enrollment token was created.
    EnrollmentTokenCreated,
    /// An enrollment token was revoked.
    EnrollmentTokenRevoked,
    /// An API key was created.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A user was created.
    UserCreated,
    /// A user's tenant assignments were replaced.
    UserTenantsSet,
    /// A tenant's Graph credential was set or replaced.
    GraphCredentialSet,
    /// A tenant's Graph credential was removed.
    GraphCredentialDeleted,
    /// A tenant's cloud checks were run on demand.
    CloudChecksRunRequested,
    /// A user's role (and with it its tenant assignments) was changed.
    UserRoleSet,
    /// A user's password was set or cleared.
    UserPasswordSet,
    /// A user was deleted.
    UserDeleted,
    /// A user was disabled.
    UserDisabled,
    /// A disabled user was enabled again.
    UserEnabled,
    /// A user signed in and got a session token (the user is principal and target).
    UserSignedIn,
    /// A user signed out, revoking the session token (the user is principal and target).
    UserSignedOut,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 22] = [
        AuditAction::TenantCreated,
        AuditAction::AgentEnrolled,
        AuditAction::AgentRunRequested,
        AuditAction::AgentRevoked,
        AuditAction::AgentCredentialRotationStarted,
        AuditAction::AgentCredentialRotated,
        AuditAction::EnrollmentTokenCreated,
        AuditAction::EnrollmentTokenRevoked,
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyRevoked,
        AuditAction::UserCreated,
        AuditAction::UserTenantsSet,
        AuditAction::GraphCredentialSet,
        AuditAction::GraphCredentialDeleted,
        AuditAction::CloudChecksRunRequested,
        AuditAction::UserRoleSet,
        AuditAction::UserPasswordSet,
        AuditAction::UserDeleted,
        AuditAction::UserDisabled,
        AuditAction::UserEnabled,
        AuditAction::UserSignedIn,
        AuditAction::UserSignedOut,
    ];

    /// The stable spelling stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::TenantCreated => "tenant.created",
            AuditAction::AgentEnrolled => "agent.enrolled",
            AuditAction::AgentRunRequested => "agent.run_requested",
            AuditAction::AgentRevoked => "agent.revoked",
            AuditAction::AgentCredentialRotationStarted => "agent.credential_rotation_started",
            AuditAction::AgentCredentialRotated => "agent.credential_rotated",
            AuditAction::EnrollmentTokenCreated => "enrollment_token.created",
            AuditAction::EnrollmentTokenRevoked => "enrollment_token.revoked",
            AuditAction::ApiKeyCreated => "api_key.created",
            AuditAction::ApiKeyRevoked => "api_key.revoked",
            AuditAction::UserCreated => "user.created",
            AuditAction::UserTenantsSet => "user.tenants_set",
            AuditAction::GraphCredentialSet => "graph_credential.set",
            AuditAction::GraphCredentialDeleted => "graph_credential.deleted",
            AuditAction::CloudChecksRunRequested => "cloud_checks.run_requested",
            AuditAction::UserRoleSet => "user.role_set",
            AuditAction::UserPasswordSet => "user.password_set",
            AuditAction::UserDeleted => "user.deleted",
            AuditAction::UserDisabled => "user.disabled",
            AuditAction::UserEnabled => "user.enabled",
            AuditAction::UserSignedIn => "user.signed_in",
            AuditAction::UserSignedOut => "user.signed_out",
        }
    }

    /// Parses the stable spelling.
    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Whether a principal with `role` (and, for an integration, the operations its key names)
/// may perform `op`. The one place roles are compared.
pub fn authorize(role: Role, granted: Option<&[Operation]>, op: Operation) -> bool {
    match role {
        Role::Administrator => true,
        Role::Technician => !op.is_administrative(),
        Role::Viewer => {
            op.is_read()
                && !op.is_administrative()
                && op != Operation::ReadEnrollmentTokens
                && op != Operation::ReadGraphCredentials
        }
        Role::Integration => {
            !op.is_administrative() && granted.is_some_and(|ops| ops.contains(&op))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operation::parse("everything"), None);
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
    }

    #[test]
    fn roles_get_what_they_should() {
        for op in Operation::ALL {
            assert!(authorize(Role::Administrator, None, op));
            assert_eq!(
                authorize(Role::Technician, None, op),
                !op.is_administrative()
            );
        }
        assert!(authorize(Role::Viewer, None, Operation::ReadStatus));
        assert!(!authorize(Role::Viewer, None, Operation::RunAgents));
        assert!(!authorize(
            Role::Viewer,
            None,
            Operation::ManageEnrollmentTokens
        ));
        assert!(!authorize(
            Role::Viewer,
            None,
            Operation::ReadEnrollmentTokens
        ));
        assert!(!authorize(Role::Integration, None, Operation::ReadStatus));
        let granted = [Operation::ReadStatus, Operation::ManageApiKeys];
        assert!(authorize(
            Role::Integration,
            Some(&granted),
            Operation::ReadStatus
        ));
        assert!(!authorize(
            Role::Integration,
            Some(&granted),
            Operation::ReadTenants
        ));
        // an integration never gets an administrative operation, even when named
        assert!(!authorize(
            Role::Integration,
            Some(&granted),
            Operation::ManageApiKeys
        ));
    }
}

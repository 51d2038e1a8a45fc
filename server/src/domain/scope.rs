//! Which tenants a caller may see. Every tenant-owned read and write in the store takes one.

use crate::domain::TenantId;

/// The tenants a principal may see or change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant: administrators and the server's own background work.
    All,
    /// Only these tenants.
    Only(Vec<TenantId>),
}

impl TenantScope {
    /// Whether the scope includes `tenant`.
    pub fn permits(&self, tenant: TenantId) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Only(ids) => ids.contains(&tenant),
        }
    }
}

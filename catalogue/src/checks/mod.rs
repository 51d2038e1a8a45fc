//! The catalogue's entries, one module per category, so that checks of different areas are
//! added without touching each other's files. Documentation links shared by several
//! categories live here.

pub(crate) mod fleet;
pub(crate) mod network;
pub(crate) mod permissions;
pub(crate) mod policy;
pub(crate) mod server;
pub(crate) mod tenant;
pub(crate) mod topology;

/// A Microsoft Learn page cited by several checks.
pub(crate) const TROUBLESHOOT_WRITEBACK: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/troubleshoot-sspr-writeback";
/// A Microsoft Learn page cited by several checks.
pub(crate) const CONNECT_PREREQUISITES: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-install-prerequisites";
/// A Microsoft Learn page cited by several checks.
pub(crate) const ENABLE_WRITEBACK: &str = "https://learn.microsoft.com/en-us/entra/identity/authentication/tutorial-enable-sspr-writeback";

//! Newtype ids, so a tenant id can never be passed where an agent id belongs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A customer tenant managed by the MSP.
    TenantId
);
id_type!(
    /// An enrolled agent.
    AgentId
);
id_type!(
    /// An enrollment token.
    EnrollmentTokenId
);
id_type!(
    /// An API key.
    ApiKeyId
);
id_type!(
    /// A report: one run of the checks on one agent, chosen by the agent.
    ReportId
);
id_type!(
    /// A user.
    UserId
);
id_type!(
    /// An audit event.
    AuditEventId
);

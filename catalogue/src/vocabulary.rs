//! The small enums that describe checks and their results, with their wire spellings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a check concluded.
///
/// `Error` means the check could not look, and is never reported as `Pass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The condition holds.
    Pass,
    /// Not applicable to this environment (the reason is in the summary).
    NotApplicable,
    /// Degraded or at risk, but writeback can work.
    Warn,
    /// The check could not be evaluated; the summary says why.
    Error,
    /// The condition does not hold: writeback is or will be broken.
    Fail,
}

impl Status {
    /// All statuses, from best to worst.
    pub const ALL: [Status; 5] = [
        Status::Pass,
        Status::NotApplicable,
        Status::Warn,
        Status::Error,
        Status::Fail,
    ];

    /// The stable wire spelling (`pass`, `warn`, `fail`, `error`, `not_applicable`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::NotApplicable => "not_applicable",
            Status::Warn => "warn",
            Status::Error => "error",
            Status::Fail => "fail",
        }
    }

    /// How bad a status is when several are combined into one: higher is worse.
    ///
    /// `Error` ranks above `Warn` because a check that could not look hides what it guards.
    pub fn rank(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::NotApplicable => 1,
            Status::Warn => 2,
            Status::Error => 3,
            Status::Fail => 4,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// How much of writeback a failing check breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Writeback fails for every user, or cannot be enabled.
    Blocker,
    /// Only some users, operations or domains are affected.
    Partial,
    /// Degraded, at risk or unsupported; may break later.
    Warning,
    /// By-design behaviour or a health signal worth knowing.
    Info,
}

impl Severity {
    /// The stable wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocker => "blocker",
            Severity::Partial => "partial",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// The area of the system a check looks at; reports are grouped by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Licences, SSPR policy and other tenant settings in Entra ID.
    Tenant,
    /// The Entra Connect sync server itself.
    Server,
    /// DNS, TCP and TLS reachability of Microsoft's endpoints.
    Network,
    /// Rights of the AD DS connector account.
    Permissions,
    /// Domain controllers and their roles.
    Topology,
    /// Password policy and per-user state.
    Policy,
    /// The fleet as a whole: liveness and agents that disagree.
    Fleet,
}

impl Category {
    /// The stable wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Tenant => "tenant",
            Category::Server => "server",
            Category::Network => "network",
            Category::Permissions => "permissions",
            Category::Topology => "topology",
            Category::Policy => "policy",
            Category::Fleet => "fleet",
        }
    }

    /// A heading for people.
    pub fn title(self) -> &'static str {
        match self {
            Category::Tenant => "Tenant",
            Category::Server => "Sync server",
            Category::Network => "Network",
            Category::Permissions => "Permissions",
            Category::Topology => "Domain topology",
            Category::Policy => "Password policy",
            Category::Fleet => "Fleet",
        }
    }
}

/// Where a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunsOn {
    /// On the agent, on the customer's sync server.
    Agent,
    /// On the central server, through Microsoft Graph.
    Cloud,
    /// On the central server, by comparing what several agents report.
    Fleet,
}

/// A spelling that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What kind of value was expected.
    pub kind: &'static str,
    /// What was given.
    pub given: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.kind, self.given)
    }
}

impl std::error::Error for UnknownValue {}

macro_rules! from_str_via_as_str {
    ($ty:ty, $kind:literal, [$($variant:expr),+ $(,)?]) => {
        impl FromStr for $ty {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                [$($variant),+]
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue { kind: $kind, given: s.to_owned() })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

from_str_via_as_str!(
    Status,
    "status",
    [
        Status::Pass,
        Status::NotApplicable,
        Status::Warn,
        Status::Error,
        Status::Fail
    ]
);
from_str_via_as_str!(
    Severity,
    "severity",
    [
        Severity::Blocker,
        Severity::Partial,
        Severity::Warning,
        Severity::Info
    ]
);
from_str_via_as_str!(
    Category,
    "category",
    [
        Category::Tenant,
        Category::Server,
        Category::Network,
        Category::Permissions,
        Category::Topology,
        Category::Policy,
        Category::Fleet,
    ]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_prefers_fail_then_error_over_warn() {
        assert_eq!(Status::Pass.worst(Status::Warn), Status::Warn);
        assert_eq!(Status::Warn.worst(Status::Error), Status::Error);
        assert_eq!(Status::Fail.worst(Status::Error), Status::Fail);
        assert_eq!(
            Status::NotApplicable.worst(Status::Pass),
            Status::NotApplicable
        );
    }

    #[test]
    fn spellings_round_trip_through_serde_and_from_str() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).expect("serialize");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert!("passed".parse::<Status>().is_err());
    }
}

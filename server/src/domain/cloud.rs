//! Cloud checks: a tenant's Microsoft Graph credential (sealed), the results of its last cloud
//! run, and the self-service password activity seen in its audit log.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{ResultRecord, TenantId};

/// Which Microsoft cloud a tenant lives in; decides the login and Graph hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GraphCloud {
    /// The commercial cloud (login.microsoftonline.com, graph.microsoft.com).
    #[default]
    Global,
    /// US Government L4/L5 (login.microsoftonline.us, graph.microsoft.us).
    UsGov,
    /// China operated by 21Vianet (login.chinacloudapi.cn, microsoftgraph.chinacloudapi.cn).
    China,
}

impl GraphCloud {
    /// Every cloud.
    pub const ALL: [GraphCloud; 3] = [GraphCloud::Global, GraphCloud::UsGov, GraphCloud::China];

    /// The stable spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphCloud::Global => "global",
            GraphCloud::UsGov => "us_gov",
            GraphCloud::China => "china",
        }
    }

    /// Parses the stable spelling.
    pub fn parse(s: &str) -> Option<GraphCloud> {
        GraphCloud::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Microsoft's documented login (authority) host of this cloud.
    pub fn authority(self) -> &'static str {
        match self {
            GraphCloud::Global => "https://login.microsoftonline.com",
            GraphCloud::UsGov => "https://login.microsoftonline.us",
            GraphCloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Microsoft's documented Graph host of this cloud.
    pub fn graph(self) -> &'static str {
        match self {
            GraphCloud::Global => "https://graph.microsoft.com",
            GraphCloud::UsGov => "https://graph.microsoft.us",
            GraphCloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

/// How the app proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphCredentialKind {
    /// A client secret.
    Secret,
    /// A certificate: a client assertion signed with its private key.
    Certificate,
}

impl GraphCredentialKind {
    /// The stable spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphCredentialKind::Secret => "secret",
            GraphCredentialKind::Certificate => "certificate",
        }
    }

    /// Parses the stable spelling.
    pub fn parse(s: &str) -> Option<GraphCredentialKind> {
        [
            GraphCredentialKind::Secret,
            GraphCredentialKind::Certificate,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A tenant's Graph credential as stored: the secret part is sealed with the server key.
#[derive(Clone)]
pub struct GraphCredential {
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The customer's Entra directory (tenant) id or verified domain.
    pub directory_id: String,
    /// The app's client (application) id.
    pub client_id: String,
    /// Which cloud.
    pub cloud: GraphCloud,
    /// Secret or certificate.
    pub kind: GraphCredentialKind,
    /// For a certificate, its SHA-1 thumbprint in upper-case hex, as the portal shows it.
    pub thumbprint: Option<String>,
    /// For a certificate, when it expires.
    pub not_after: Option<OffsetDateTime>,
    /// The secret (or the certificate and key), sealed with the server key and the tenant id.
    pub sealed: Vec<u8>,
    /// When it was set.
    pub updated_at: OffsetDateTime,
    /// When a token was last obtained with it.
    pub last_token_ok_at: Option<OffsetDateTime>,
    /// When getting a token last failed.
    pub last_token_error_at: Option<OffsetDateTime>,
    /// Why it last failed (no secret in it).
    pub last_token_error: Option<String>,
}

impl std::fmt::Debug for GraphCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCredential")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field("sealed", &"…")
            .finish_non_exhaustive()
    }
}

/// What is needed to set a tenant's Graph credential.
#[derive(Clone)]
pub struct NewGraphCredential {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The customer's directory id.
    pub directory_id: String,
    /// The app's client id.
    pub client_id: String,
    /// Which cloud.
    pub cloud: GraphCloud,
    /// Secret or certificate.
    pub kind: GraphCredentialKind,
    /// For a certificate, its SHA-1 thumbprint.
    pub thumbprint: Option<String>,
    /// For a certificate, when it expires.
    pub not_after: Option<OffsetDateTime>,
    /// The sealed secret.
    pub sealed: Vec<u8>,
}

/// Self-service password activity of one tenant, from its directory audit log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SsprActivity {
    /// The start of the window read.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// How many audit events were read.
    pub total: u64,
    /// How many failed.
    pub failures: u64,
    /// Counts by activity, result and failure reason, most frequent first.
    pub groups: Vec<SsprActivityGroup>,
    /// Why the audit log could not be read, when it could not.
    pub error: Option<String>,
}

/// Audit events with the same activity, result and failure reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SsprActivityGroup {
    /// Such as `Reset password (self-service)`.
    pub activity: String,
    /// `success` or `failure` (Graph's `operationResult`).
    pub result: String,
    /// The failure reason as Graph gives it; empty on success.
    pub reason: String,
    /// How many events.
    pub count: u64,
    /// The check that explains this failure, when one does.
    pub check_id: Option<String>,
    /// The newest event of the group.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
}

/// The outcome of one cloud run for a tenant.
#[derive(Debug, Clone)]
pub struct CloudRun {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The results of its tenant-level cloud checks.
    pub results: Vec<ResultRecord>,
    /// The self-service password activity of the last 24 hours.
    pub sspr: SsprActivity,
    /// When the run started.
    pub started_at: OffsetDateTime,
    /// When it finished.
    pub finished_at: OffsetDateTime,
}

//! The host probe: facts about the sync server itself (services, registry, file versions,
//! configuration files, the ADSync cmdlets and the Application event log).
//!
//! It has two sources behind one [`HostSource`]: a captured [`Snapshot`] file, readable on any
//! machine, and on Windows the live machine, which the collector in `windows` turns into the
//! very same snapshot. Either way the checks see a [`HostFacts`]; when neither is available
//! (not Windows and no `--snapshot`) they see a [`HostFailure`] and report `error`, never `pass`.

pub mod snapshot;
#[cfg(windows)]
mod windows;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use snapshot::{Collected, SCHEMA_VERSION, Snapshot};

use crate::facts::Facts;

/// Where the host facts come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HostSource {
    /// This machine, read live (Windows only).
    #[default]
    Live,
    /// A snapshot file written by `wbhealth-agent collect`.
    Snapshot(PathBuf),
}

/// The host facts: a snapshot, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// `live` or `snapshot <path>`.
    pub source: String,
    /// What was read.
    pub snapshot: Snapshot,
}

impl HostFacts {
    /// The sync server's name as the snapshot records it, else `fallback`.
    pub fn computer_name<'a>(&'a self, fallback: &'a str) -> &'a str {
        match &self.snapshot.computer {
            Collected::Ok(c) if !c.name.is_empty() => &c.name,
            _ => fallback,
        }
    }
}

/// Why there are no host facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HostFailure {
    /// Not on Windows, and no snapshot was given.
    #[error(
        "host facts are not available on this platform: run wbhealth-agent on the sync server, or pass --snapshot FILE"
    )]
    Unavailable,
    /// The snapshot file could not be read.
    #[error("cannot read the host snapshot {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        message: String,
    },
    /// The snapshot file is not a snapshot this agent understands.
    #[error("{path} is not a valid host snapshot: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// Collecting on this machine failed as a whole.
    #[error("cannot collect the host facts: {message}")]
    Collect {
        /// Why.
        message: String,
    },
}

/// Reads the host facts from `source`.
pub async fn probe(source: &HostSource) -> Result<HostFacts, HostFailure> {
    match source {
        HostSource::Snapshot(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_snapshot(&path))
                .await
                .map_err(|e| HostFailure::Collect {
                    message: format!("the snapshot reader stopped: {e}"),
                })?
        }
        HostSource::Live => {
            let snapshot = collect().await?;
            Ok(HostFacts {
                source: "live".to_owned(),
                snapshot,
            })
        }
    }
}

/// Collects a snapshot of this machine (Windows only).
pub async fn collect() -> Result<Snapshot, HostFailure> {
    #[cfg(windows)]
    {
        Ok(windows::collect().await)
    }
    #[cfg(not(windows))]
    {
        Err(HostFailure::Unavailable)
    }
}

/// Reads and validates a snapshot file.
pub fn read_snapshot(path: &Path) -> Result<HostFacts, HostFailure> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| HostFailure::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    let snapshot = parse_snapshot(&text).map_err(|message| HostFailure::Invalid {
        path: shown.clone(),
        message,
    })?;
    Ok(HostFacts {
        source: format!("snapshot {shown}"),
        snapshot,
    })
}

/// Parses a snapshot document, refusing schema versions newer than this agent knows.
pub fn parse_snapshot(text: &str) -> Result<Snapshot, String> {
    // A UTF-8 byte-order mark, as `Out-File` in Windows PowerShell writes, is not JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let snapshot: Snapshot = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if snapshot.schema_version == 0 || snapshot.schema_version > SCHEMA_VERSION {
        return Err(format!(
            "schema_version {} is not supported (this agent reads 1 to {SCHEMA_VERSION})",
            snapshot.schema_version
        ));
    }
    Ok(snapshot)
}

/// An AD DS connector account as the ADSync connector is configured with it (§2.0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorAccount {
    /// The AD connector's name (the forest).
    pub connector: String,
    /// `forest-login-user`, such as `MSOL_1a2b3c4d5e6f`.
    pub user: String,
    /// `forest-login-domain`, such as `contoso.com`.
    pub domain: String,
    /// Its SID, when the sync server resolved it.
    pub sid: Option<String>,
}

impl ConnectorAccount {
    /// `DOMAIN\user`, as PowerShell and the Windows dialogs name it.
    pub fn qualified(&self) -> String {
        format!("{}\\{}", self.domain, self.user)
    }
}

/// The AD DS connector accounts found by the host probe, one per AD connector; empty when
/// the host facts or the connectors could not be read.
///
/// This is what the LDAP permission checks evaluate the security descriptors for.
pub fn connector_accounts(facts: &Facts) -> Vec<ConnectorAccount> {
    match &facts.host {
        Ok(host) => connector_accounts_of(&host.snapshot),
        Err(_) => Vec::new(),
    }
}

/// [`connector_accounts`] of one snapshot.
pub fn connector_accounts_of(snapshot: &Snapshot) -> Vec<ConnectorAccount> {
    let Collected::Ok(connectors) = &snapshot.adsync.connectors else {
        return Vec::new();
    };
    let sids = match &snapshot.account_sids {
        Collected::Ok(sids) => sids.0.as_slice(),
        Collected::Error(_) => &[],
    };
    connectors
        .0
        .iter()
        .filter(|c| c.is_ad())
        .filter_map(|c| {
            let user = c.connectivity_parameters.text("forest-login-user")?;
            let domain = c
                .connectivity_parameters
                .text("forest-login-domain")
                .unwrap_or_default();
            let sid = sids
                .iter()
                .find(|s| account_matches(&s.account, &user, &domain))
                .map(|s| s.sid.clone());
            Some(ConnectorAccount {
                connector: c.name.clone(),
                user,
                domain,
                sid,
            })
        })
        .collect()
}

/// Whether `account` (`DOMAIN\user`, `user@domain` or `user`) names `user` of `domain`.
fn account_matches(account: &str, user: &str, domain: &str) -> bool {
    let (name, dom) = if let Some((d, u)) = account.split_once('\\') {
        (u, Some(d))
    } else if let Some((u, d)) = account.split_once('@') {
        (u, Some(d))
    } else {
        (account, None)
    };
    name.eq_ignore_ascii_case(user)
        && dom.is_none_or(|d| {
            let first_label = domain.split('.').next().unwrap_or(domain);
            d.eq_ignore_ascii_case(domain) || d.eq_ignore_ascii_case(first_label)
        })
}

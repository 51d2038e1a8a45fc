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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::snapshot::{OneOrMany, Parameters, Service};

    const HEALTHY: &str = include_str!("../../tests/fixtures/snapshots/healthy.json");

    #[test]
    fn the_healthy_fixture_parses_with_powershell_shapes() {
        let snapshot = parse_snapshot(HEALTHY).expect("parses");
        assert_eq!(snapshot.schema_version, 1);
        // `"\/Date(ms)\/"`, as Windows PowerShell writes dates.
        let Collected::Ok(scheduler) = &snapshot.adsync.scheduler else {
            panic!("scheduler")
        };
        assert_eq!(
            scheduler.next_sync_cycle_start_utc,
            Some(time::macros::datetime!(2026-11-25 16:20 UTC))
        );
        assert!(scheduler.sync_cycle_enabled && !scheduler.staging_mode_enabled);
        // Enum numbers, as `ConvertTo-Json` writes `Get-Service` without help.
        let w32time = snapshot.service("w32time").expect("read").expect("present");
        assert_eq!(
            (w32time.status.as_str(), w32time.start_type.as_str()),
            ("Running", "Automatic")
        );
        assert!(snapshot.service("nope").expect("read").is_none());
        assert_eq!(
            snapshot.registry_value(snapshot::paths::NDP_V4_FULL, "Release"),
            Ok(Some(&serde_json::json!(528449)))
        );
        assert!(matches!(
            snapshot.file(snapshot::paths::PROVISIONING_AGENT_EXE),
            Ok(None)
        ));
        assert!(
            snapshot.file(r"C:\elsewhere.exe").is_err(),
            "not collected is not absent"
        );
    }

    #[test]
    fn the_connector_account_comes_from_the_ad_connector() {
        let snapshot = parse_snapshot(HEALTHY).expect("parses");
        assert_eq!(
            connector_accounts_of(&snapshot),
            vec![ConnectorAccount {
                connector: "contoso.com".to_owned(),
                user: "MSOL_1a2b3c4d5e6f".to_owned(),
                domain: "contoso.com".to_owned(),
                sid: Some("S-1-5-21-1004336348-1177238915-682003330-1105".to_owned()),
            }]
        );
        let mut facts = crate::checks::fixtures::healthy();
        assert_eq!(
            connector_accounts(&facts)[0].qualified(),
            r"contoso.com\MSOL_1a2b3c4d5e6f"
        );
        facts.host = Err(HostFailure::Unavailable);
        assert!(connector_accounts(&facts).is_empty());
    }

    #[test]
    fn single_objects_maps_and_nulls_are_accepted_where_lists_are_expected() {
        let one: OneOrMany<Service> = serde_json::from_str(
            r#"{"Name":"ADSync","DisplayName":"Microsoft Azure AD Sync","Status":1,"StartType":3}"#,
        )
        .expect("one object");
        assert_eq!(one.0[0].status, "Stopped");
        assert_eq!(one.0[0].start_type, "Manual");
        let none: OneOrMany<Service> = serde_json::from_str("null").expect("null");
        assert!(none.0.is_empty());
        let map: Parameters =
            serde_json::from_str(r#"{"forest-login-user":"MSOL_x"}"#).expect("object");
        assert_eq!(map.text("forest-login-user").as_deref(), Some("MSOL_x"));
        let list: Parameters = serde_json::from_str(
            r#"[{"Name":"forest-login-user","Value":"MSOL_y","InputType":"String"}]"#,
        )
        .expect("array");
        assert_eq!(list.text("forest-login-user").as_deref(), Some("MSOL_y"));
        assert_eq!(
            snapshot::parse_ps_date("/Date(1795622400000+0100)/"),
            Some(time::macros::datetime!(2026-11-25 16:00 UTC))
        );
    }

    #[test]
    fn bad_snapshots_say_what_is_wrong() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.json");
        match read_snapshot(&missing) {
            Err(HostFailure::Read { path, .. }) => assert!(path.ends_with("missing.json")),
            other => panic!("{other:?}"),
        }
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "not json").expect("write");
        let e = read_snapshot(&garbage).expect_err("invalid");
        assert!(
            matches!(e, HostFailure::Invalid { .. })
                && e.to_string().contains("not a valid host snapshot"),
            "{e}"
        );
        let future = HEALTHY.replacen("\"schema_version\": 1", "\"schema_version\": 9", 1);
        let e = parse_snapshot(&future).expect_err("newer schema");
        assert!(e.contains("schema_version 9"), "{e}");
        let with_bom = format!("\u{feff}{HEALTHY}");
        assert!(
            parse_snapshot(&with_bom).is_ok(),
            "Out-File's byte-order mark is accepted"
        );
        // A snapshot that round-trips through the agent's own writer reads back the same.
        let snapshot = parse_snapshot(HEALTHY).expect("parses");
        let written = serde_json::to_string(&snapshot).expect("serializes");
        let again = parse_snapshot(&written).expect("reads back");
        assert_eq!(
            serde_json::to_value(&again).ok(),
            serde_json::to_value(&snapshot).ok()
        );
    }

    #[tokio::test]
    async fn live_collection_elsewhere_than_windows_is_unavailable() {
        if cfg!(windows) {
            return;
        }
        assert_eq!(
            probe(&HostSource::Live).await.err(),
            Some(HostFailure::Unavailable)
        );
    }
}

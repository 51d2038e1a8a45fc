//! The host snapshot: everything the host probe reads on a sync server, as one JSON document.
//!
//! `wbhealth-agent collect` writes it on Windows and `wbhealth-agent diagnose --snapshot FILE`
//! reads it anywhere, so a technician can send it as a support bundle. The schema is
//! versioned ([`SCHEMA_VERSION`]) and documented in `docs/host-snapshot.md`.
//!
//! Each item is [`Collected`]: `{"ok": …}` with what was read, or `{"error": "…"}` saying why
//! it could not be read, so a check can tell "absent" (a registry key that does not exist:
//! `{"ok": null}`) from "unknown" (never `pass`). The cmdlet outputs keep the property names
//! that `ConvertTo-Json` emits (`StagingModeEnabled`, `SyncCycleEnabled`, …); Windows
//! PowerShell's `"\/Date(ms)\/"` dates, enum numbers and single objects where an array was
//! expected are all accepted.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// The snapshot schema this agent writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Well-known paths the collector reads and the checks look up.
pub mod paths {
    /// .NET Framework 4.x setup key (`Release`).
    pub const NDP_V4_FULL: &str = r"HKLM\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full";
    /// Windows version key (`ProductName`, `CurrentBuild`, `InstallationType`).
    pub const WINDOWS_NT_CURRENT_VERSION: &str =
        r"HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion";
    /// `ProductType` (`LanmanNt` on a domain controller).
    pub const PRODUCT_OPTIONS: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\ProductOptions";
    /// LSA settings (`RestrictRemoteSam`).
    pub const LSA: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\Lsa";
    /// .NET 4 settings for 64-bit processes.
    pub const DOTNET_64: &str = r"HKLM\SOFTWARE\Microsoft\.NETFramework\v4.0.30319";
    /// .NET 4 settings for 32-bit processes.
    pub const DOTNET_32: &str = r"HKLM\SOFTWARE\WOW6432Node\Microsoft\.NETFramework\v4.0.30319";
    /// SChannel TLS 1.2 server side.
    pub const TLS12_SERVER: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Server";
    /// SChannel TLS 1.2 client side.
    pub const TLS12_CLIENT: &str = r"HKLM\SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL\Protocols\TLS 1.2\Client";
    /// Every registry key the collector reads.
    pub const REGISTRY_KEYS: &[&str] = &[
        NDP_V4_FULL,
        WINDOWS_NT_CURRENT_VERSION,
        PRODUCT_OPTIONS,
        LSA,
        DOTNET_64,
        DOTNET_32,
        TLS12_SERVER,
        TLS12_CLIENT,
    ];

    /// The sync engine, whose file version is the installed Connect build.
    pub const MIISERVER_EXE: &str = r"C:\Program Files\Microsoft Azure AD Sync\Bin\miiserver.exe";
    /// The Cloud Sync provisioning agent.
    pub const PROVISIONING_AGENT_EXE: &str = r"C:\Program Files\Microsoft Azure AD Connect Provisioning Agent\AADConnectProvisioningAgent.exe";
    /// Every file whose version the collector reads.
    pub const VERSIONED_FILES: &[&str] = &[MIISERVER_EXE, PROVISIONING_AGENT_EXE];

    /// The 64-bit .NET 4 machine-wide configuration, where the proxy for .NET belongs.
    pub const MACHINE_CONFIG: &str =
        r"C:\Windows\Microsoft.NET\Framework64\v4.0.30319\Config\machine.config";
    /// The sync engine's own configuration, overwritten by every upgrade.
    pub const MIISERVER_CONFIG: &str =
        r"C:\Program Files\Microsoft Azure AD Sync\Bin\miiserver.exe.config";
    /// The Cloud Sync agent's configuration, where its proxy belongs.
    pub const PROVISIONING_AGENT_CONFIG: &str = r"C:\Program Files\Microsoft Azure AD Connect Provisioning Agent\AADConnectProvisioningAgent.exe.config";
    /// Every text file the collector reads.
    pub const CONFIG_FILES: &[&str] =
        &[MACHINE_CONFIG, MIISERVER_CONFIG, PROVISIONING_AGENT_CONFIG];
}

/// One item of the snapshot: what was read, or why it could not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Collected<T> {
    /// What was read.
    #[serde(rename = "ok")]
    Ok(T),
    /// Why it could not be read.
    #[serde(rename = "error")]
    Error(String),
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Collected::Error("not in the snapshot".to_owned())
    }
}

impl<T> Collected<T> {
    /// The value, or the reason it is missing.
    pub fn as_result(&self) -> Result<&T, &str> {
        match self {
            Collected::Ok(v) => Ok(v),
            Collected::Error(e) => Err(e),
        }
    }
}

impl<T> From<Result<T, String>> for Collected<T> {
    fn from(r: Result<T, String>) -> Self {
        match r {
            Ok(v) => Collected::Ok(v),
            Err(e) => Collected::Error(e),
        }
    }
}

/// A registry key's values by name; `None` when the key does not exist.
pub type RegistryKey = Option<BTreeMap<String, Value>>;

/// The whole snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The schema version, [`SCHEMA_VERSION`] for this agent.
    pub schema_version: u32,
    /// When it was collected: "now" for every age the checks compute.
    #[serde(with = "time::serde::rfc3339")]
    pub collected_at: OffsetDateTime,
    /// What collected it (`wbhealth-agent 0.1.0`).
    #[serde(default)]
    pub collector: String,
    /// `Win32_ComputerSystem`.
    #[serde(default)]
    pub computer: Collected<Computer>,
    /// The local clock against a reference clock.
    #[serde(default)]
    pub clock: Collected<Clock>,
    /// `Get-Service` output.
    #[serde(default)]
    pub services: Collected<OneOrMany<Service>>,
    /// `Get-Process` output for the processes of interest (`miiserver`).
    #[serde(default)]
    pub processes: Collected<OneOrMany<Process>>,
    /// Registry keys by full path (`HKLM\…`).
    #[serde(default)]
    pub registry: BTreeMap<String, Collected<RegistryKey>>,
    /// File versions by path; `null` when the file does not exist.
    #[serde(default)]
    pub files: BTreeMap<String, Collected<Option<FileVersion>>>,
    /// Configuration files' text by path; `null` when the file does not exist.
    #[serde(default)]
    pub config_files: BTreeMap<String, Collected<Option<TextFile>>>,
    /// The ADSync cmdlets' outputs.
    #[serde(default)]
    pub adsync: AdSync,
    /// SIDs of the connector accounts, resolved on the sync server.
    #[serde(default)]
    pub account_sids: Collected<OneOrMany<AccountSid>>,
    /// The Application event log.
    #[serde(default)]
    pub events: Collected<EventLog>,
    /// User rights assignments from `secedit /export /areas USER_RIGHTS`: right → the
    /// trustees as secedit writes them (`*S-1-5-32-544` or a name).
    #[serde(default)]
    pub user_rights: Collected<BTreeMap<String, OneOrMany<String>>>,
}

/// `Win32_ComputerSystem` fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Computer {
    /// The NetBIOS name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The domain it belongs to.
    #[serde(rename = "Domain", default)]
    pub domain: String,
    /// 0–5; 4 and 5 are domain controllers.
    #[serde(rename = "DomainRole")]
    pub domain_role: u8,
}

/// The local clock compared with a reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Clock {
    /// The local UTC time when the reference answered.
    #[serde(with = "ps_date")]
    pub local_utc: OffsetDateTime,
    /// The reference's time (the HTTP `Date` header), or why it could not be read.
    pub reference_utc: Collected<String>,
    /// Where the reference time came from.
    pub reference: String,
}

/// One service, as `Get-Service` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    /// The short name (`ADSync`).
    #[serde(rename = "Name")]
    pub name: String,
    /// The display name.
    #[serde(rename = "DisplayName", default)]
    pub display_name: String,
    /// `Running`, `Stopped`, … (enum numbers are translated).
    #[serde(rename = "Status", deserialize_with = "service_status")]
    pub status: String,
    /// `Automatic`, `Manual`, `Disabled`, … (enum numbers are translated).
    #[serde(rename = "StartType", deserialize_with = "service_start_type")]
    pub start_type: String,
}

/// One process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    /// The process name without `.exe`.
    #[serde(rename = "Name")]
    pub name: String,
    /// When it started.
    #[serde(rename = "StartTime", with = "ps_date_opt", default)]
    pub start_time: Option<OffsetDateTime>,
}

/// A file's `VersionInfo`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileVersion {
    /// `FileVersion`, such as `2.5.79.0`.
    #[serde(rename = "FileVersion", default)]
    pub file_version: Option<String>,
    /// `ProductVersion`.
    #[serde(rename = "ProductVersion", default)]
    pub product_version: Option<String>,
}

/// A configuration file's text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextFile {
    /// The text.
    #[serde(rename = "Text")]
    pub text: String,
    /// When it was last written.
    #[serde(rename = "LastWriteTimeUtc", with = "ps_date_opt", default)]
    pub last_write_utc: Option<OffsetDateTime>,
}

/// A connector account's SID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountSid {
    /// `DOMAIN\user` or `user@domain`, as translated.
    #[serde(rename = "Account")]
    pub account: String,
    /// The SID.
    #[serde(rename = "Sid")]
    pub sid: String,
}

/// The outputs of the ADSync cmdlets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AdSync {
    /// `Get-ADSyncScheduler`.
    #[serde(default)]
    pub scheduler: Collected<Scheduler>,
    /// `Get-ADSyncAADPasswordResetConfiguration -Connector <AAD connector>`, one per AAD connector.
    #[serde(default)]
    pub password_reset_configuration: Collected<OneOrMany<PasswordResetConfiguration>>,
    /// `Get-ADSyncConnector`.
    #[serde(default)]
    pub connectors: Collected<OneOrMany<Connector>>,
    /// `(Get-ADSyncAutoUpgrade).ToString()`: `Enabled`, `Disabled` or `Suspended`.
    #[serde(default)]
    pub auto_upgrade: Collected<String>,
    /// `Get-ADSyncGlobalSettings`.
    #[serde(default)]
    pub global_settings: Collected<GlobalSettings>,
    /// `Get-ADSyncRunProfileResult`, newest first.
    #[serde(default)]
    pub run_profile_results: Collected<OneOrMany<RunProfileResult>>,
}

/// `Get-ADSyncScheduler`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scheduler {
    /// Whether the scheduler starts sync cycles.
    #[serde(rename = "SyncCycleEnabled")]
    pub sync_cycle_enabled: bool,
    /// Whether this is a staging server.
    #[serde(rename = "StagingModeEnabled")]
    pub staging_mode_enabled: bool,
    /// Whether the scheduler is suspended (for example during an upgrade).
    #[serde(rename = "SchedulerSuspended", default)]
    pub scheduler_suspended: Option<bool>,
    /// Whether maintenance tasks run.
    #[serde(rename = "MaintenanceEnabled", default)]
    pub maintenance_enabled: Option<bool>,
    /// When the next cycle starts.
    #[serde(rename = "NextSyncCycleStartTimeInUTC", with = "ps_date_opt", default)]
    pub next_sync_cycle_start_utc: Option<OffsetDateTime>,
}

/// `Get-ADSyncAADPasswordResetConfiguration`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordResetConfiguration {
    /// The AAD connector it belongs to.
    #[serde(rename = "ConnectorName", default)]
    pub connector_name: String,
    /// Whether password writeback is enabled.
    #[serde(rename = "Enabled")]
    pub enabled: bool,
}

/// `Get-ADSyncConnector`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connector {
    /// The connector's name: the forest for AD, `<tenant> - AAD` for Entra.
    #[serde(rename = "Name")]
    pub name: String,
    /// `AD` or `Extensible2` (the Entra connector).
    #[serde(rename = "Type", default)]
    pub kind: String,
    /// `Windows Azure Active Directory (Microsoft)` for the Entra connector.
    #[serde(rename = "SubType", default)]
    pub sub_type: String,
    /// `ConnectivityParameters`, by name.
    #[serde(rename = "ConnectivityParameters", default)]
    pub connectivity_parameters: Parameters,
    /// When its configuration last changed.
    #[serde(rename = "LastModificationTime", with = "ps_date_opt", default)]
    pub last_modification_time: Option<OffsetDateTime>,
}

impl Connector {
    /// Whether it is an Active Directory connector.
    pub fn is_ad(&self) -> bool {
        self.kind.eq_ignore_ascii_case("AD")
    }

    /// Whether it is the Entra (AAD) connector.
    pub fn is_aad(&self) -> bool {
        self.sub_type == "Windows Azure Active Directory (Microsoft)"
    }
}

/// `Get-ADSyncGlobalSettings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GlobalSettings {
    /// `Parameters`, by name.
    #[serde(rename = "Parameters", default)]
    pub parameters: Parameters,
}

/// One run of a run profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunProfileResult {
    /// The connector it ran on.
    #[serde(rename = "ConnectorName")]
    pub connector_name: String,
    /// `Full Import`, `Delta Synchronization`, `Export`, …
    #[serde(rename = "RunProfileName")]
    pub run_profile_name: String,
    /// `success`, `completed-sync-errors`, `no-start-credentials`, …
    #[serde(rename = "Result")]
    pub result: String,
    /// When it started.
    #[serde(rename = "StartDate", with = "ps_date_opt", default)]
    pub start_date: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(rename = "EndDate", with = "ps_date_opt", default)]
    pub end_date: Option<OffsetDateTime>,
}

/// The Application log's events of the writeback providers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventLog {
    /// The start of the window the collector read (the latest 31019 is read beyond it).
    #[serde(with = "ps_date")]
    pub since: OffsetDateTime,
    /// The records, `Get-WinEvent` property names.
    pub records: OneOrMany<EventRecord>,
}

/// One event record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// `PasswordResetService`, `ADSync`, …
    #[serde(rename = "ProviderName")]
    pub provider: String,
    /// The event id.
    #[serde(rename = "Id")]
    pub id: u32,
    /// When it was logged.
    #[serde(rename = "TimeCreated", with = "ps_date")]
    pub time: OffsetDateTime,
    /// 1 critical, 2 error, 3 warning, 4 information.
    #[serde(rename = "Level", default)]
    pub level: u8,
    /// The rendered message, with the HRESULTs inside.
    #[serde(rename = "Message", default, deserialize_with = "null_as_empty")]
    pub message: String,
}

/// A list that `ConvertTo-Json` may have written as a single object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape<T> {
            Many(Vec<T>),
            One(T),
            Null(()),
        }
        match Shape::<T>::deserialize(d)? {
            Shape::Many(v) => Ok(OneOrMany(v)),
            Shape::One(v) => Ok(OneOrMany(vec![v])),
            Shape::Null(()) => Ok(OneOrMany(Vec::new())),
        }
    }
}

/// `ConnectivityParameters` / `Parameters`: an array of `{Name, Value}` as `ConvertTo-Json`
/// writes the keyed collection, or an object of name → value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Parameters(pub BTreeMap<String, Value>);

impl Parameters {
    /// The value of parameter `name` as text, when it has one.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Parameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let mut map = BTreeMap::new();
        match value {
            Value::Null => {}
            Value::Object(object) => {
                map.extend(object);
            }
            Value::Array(items) => {
                for item in items {
                    let name = item
                        .get("Name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| de::Error::custom("a parameter without a Name"))?
                        .to_owned();
                    map.insert(name, item.get("Value").cloned().unwrap_or(Value::Null));
                }
            }
            other => {
                return Err(de::Error::custom(format!(
                    "parameters must be an array or an object, not {other}"
                )));
            }
        }
        Ok(Parameters(map))
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// `System.ServiceProcess.ServiceControllerStatus` by number.
fn service_status<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(
        d,
        &[
            (1, "Stopped"),
            (2, "StartPending"),
            (3, "StopPending"),
            (4, "Running"),
            (5, "ContinuePending"),
            (6, "PausePending"),
            (7, "Paused"),
        ],
    )
}

/// `System.ServiceProcess.ServiceStartMode` by number.
fn service_start_type<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    enum_name(
        d,
        &[
            (0, "Boot"),
            (1, "System"),
            (2, "Automatic"),
            (3, "Manual"),
            (4, "Disabled"),
        ],
    )
}

/// A .NET enum written as its name or, by `ConvertTo-Json` in Windows PowerShell, its number.
fn enum_name<'de, D: Deserializer<'de>>(d: D, names: &[(u64, &str)]) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => {
            let n = n.as_u64().unwrap_or(u64::MAX);
            Ok(names
                .iter()
                .find(|(k, _)| *k == n)
                .map_or_else(|| format!("unknown ({n})"), |(_, name)| (*name).to_owned()))
        }
        other => Err(de::Error::custom(format!(
            "expected an enum name or number, not {other}"
        ))),
    }
}

/// Parses a date as PowerShell writes it: RFC 3339 (`"2026-11-25T16:00:00Z"`, what the
/// collector emits) or Windows PowerShell's `"\/Date(1764086400000)\/"`.
pub fn parse_ps_date(text: &str) -> Option<OffsetDateTime> {
    if let Some(inner) = text
        .strip_prefix("/Date(")
        .and_then(|rest| rest.strip_suffix(")/"))
    {
        // An offset such as `+0100` may follow; the milliseconds are UTC regardless.
        let digits = inner
            .char_indices()
            .find(|&(i, c)| i > 0 && (c == '+' || c == '-'))
            .map_or(inner, |(i, _)| &inner[..i]);
        let millis: i128 = digits.parse().ok()?;
        return OffsetDateTime::from_unix_timestamp_nanos(millis * 1_000_000).ok();
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// RFC 3339 out, [`parse_ps_date`] in.
mod ps_date {
    use serde::{Deserialize, Deserializer, Serializer, de};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_ps_date(&text)
            .ok_or_else(|| de::Error::custom(format!("not a date: {text:?}")))
    }
}

/// [`ps_date`] for optional dates.
mod ps_date_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::option::serialize(t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        // An optional date that cannot be read is left out rather than failing the whole
        // snapshot: nothing decides pass on it.
        Ok(Option::<String>::deserialize(d)?.and_then(|text| super::parse_ps_date(&text)))
    }
}

impl Snapshot {
    /// The values of registry key `path`: `Ok(None)` when the key does not exist, `Err` when
    /// it was not read.
    pub fn registry_key(&self, path: &str) -> Result<Option<&BTreeMap<String, Value>>, String> {
        match self.registry.get(path) {
            None => Err(format!("{path} is not in the snapshot")),
            Some(Collected::Error(e)) => Err(format!("{path}: {e}")),
            Some(Collected::Ok(key)) => Ok(key.as_ref()),
        }
    }

    /// One registry value: `Ok(None)` when it (or its key) does not exist.
    pub fn registry_value(&self, path: &str, name: &str) -> Result<Option<&Value>, String> {
        Ok(self.registry_key(path)?.and_then(|values| values.get(name)))
    }

    /// A file's version info: `Ok(None)` when the file does not exist.
    pub fn file(&self, path: &str) -> Result<Option<&FileVersion>, String> {
        match self.files.get(path) {
            None => Err(format!("{path} is not in the snapshot")),
            Some(Collected::Error(e)) => Err(format!("{path}: {e}")),
            Some(Collected::Ok(file)) => Ok(file.as_ref()),
        }
    }

    /// A configuration file: `Ok(None)` when the file does not exist.
    pub fn config_file(&self, path: &str) -> Result<Option<&TextFile>, String> {
        match self.config_files.get(path) {
            None => Err(format!("{path} is not in the snapshot")),
            Some(Collected::Error(e)) => Err(format!("{path}: {e}")),
            Some(Collected::Ok(file)) => Ok(file.as_ref()),
        }
    }

    /// The service named `name` (case-insensitive): `Ok(None)` when it is not installed.
    pub fn service(&self, name: &str) -> Result<Option<&Service>, String> {
        let services = self
            .services
            .as_result()
            .map_err(|e| format!("services: {e}"))?;
        Ok(services
            .0
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name)))
    }
}

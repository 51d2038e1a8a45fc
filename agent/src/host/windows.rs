//! The live host probe on Windows: builds the same [`Snapshot`] that a snapshot file holds.
//!
//! The registry is read with `winreg`, configuration files with `std::fs`, and the rest
//! (services, processes, file versions, the ADSync cmdlets, `Get-WinEvent`, the reference
//! clock) through `powershell.exe -NoProfile -NonInteractive` with `ConvertTo-Json` and a
//! time-out per call. Every item that fails is recorded as `{"error": …}`; collecting never
//! fails as a whole. Connector credentials are never read: only the non-secret
//! `forest-name`, `forest-login-user` and `forest-login-domain` parameters leave the cmdlet.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;
use winreg::RegKey;
use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, RegType};

use super::snapshot::{
    AdSync, Collected, EventLog, OneOrMany, RegistryKey, SCHEMA_VERSION, Snapshot, TextFile, paths,
};

/// How long one PowerShell call may take.
const PS_TIMEOUT: Duration = Duration::from_secs(60);
/// How far back the event log is read.
const EVENT_WINDOW_DAYS: i64 = 7;

/// Collects everything the host checks read.
pub async fn collect() -> Snapshot {
    let collected_at = OffsetDateTime::now_utc();
    let registry = paths::REGISTRY_KEYS
        .iter()
        .map(|path| ((*path).to_owned(), read_key(path).into()))
        .collect();
    let config_files = paths::CONFIG_FILES
        .iter()
        .map(|path| ((*path).to_owned(), read_text(path).into()))
        .collect();
    let files =
        match powershell::<BTreeMap<String, Collected<Option<super::snapshot::FileVersion>>>>(
            &file_versions_script(),
        )
        .await
        {
            Ok(files) => files,
            Err(e) => paths::VERSIONED_FILES
                .iter()
                .map(|p| ((*p).to_owned(), Collected::Error(e.clone())))
                .collect(),
        };
    Snapshot {
        schema_version: SCHEMA_VERSION,
        collected_at,
        collector: format!("wbhealth-agent {}", env!("CARGO_PKG_VERSION")),
        computer: powershell(
            "Get-CimInstance Win32_ComputerSystem | Select-Object Name,Domain,DomainRole",
        )
        .await
        .into(),
        clock: powershell(CLOCK).await.into(),
        services: powershell(
            "@(Get-Service | Select-Object Name,DisplayName,\
             @{n='Status';e={$_.Status.ToString()}},@{n='StartType';e={$_.StartType.ToString()}})",
        )
        .await
        .into(),
        processes: powershell(
            "@(Get-Process -Name miiserver,AADConnectProvisioningAgent -ErrorAction SilentlyContinue | \
             Select-Object Name,@{n='StartTime';e={$_.StartTime.ToUniversalTime().ToString('o')}})",
        )
        .await
        .into(),
        registry,
        files,
        config_files,
        adsync: adsync().await,
        account_sids: powershell(&adsync_script(ACCOUNT_SIDS)).await.into(),
        events: events().await.into(),
        user_rights: powershell(USER_RIGHTS).await.into(),
    }
}

/// Reads one `HKLM\…` key: `Ok(None)` when it does not exist.
fn read_key(path: &str) -> Result<RegistryKey, String> {
    let sub = path
        .strip_prefix(r"HKLM\")
        .ok_or_else(|| format!("{path} is not under HKLM"))?;
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    let key = match hklm.open_subkey_with_flags(sub, KEY_READ) {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("open: {e}")),
    };
    let mut values = BTreeMap::new();
    for item in key.enum_values() {
        let (name, raw) = item.map_err(|e| format!("enumerate values: {e}"))?;
        let value = match raw.vtype {
            RegType::REG_DWORD => key
                .get_value::<u32, _>(&name)
                .map(Value::from)
                .map_err(|e| format!("{name}: {e}"))?,
            RegType::REG_QWORD => key
                .get_value::<u64, _>(&name)
                .map(Value::from)
                .map_err(|e| format!("{name}: {e}"))?,
            RegType::REG_SZ | RegType::REG_EXPAND_SZ => key
                .get_value::<String, _>(&name)
                .map(Value::from)
                .map_err(|e| format!("{name}: {e}"))?,
            RegType::REG_MULTI_SZ => key
                .get_value::<Vec<String>, _>(&name)
                .map(Value::from)
                .map_err(|e| format!("{name}: {e}"))?,
            // Binary values are not needed by any check; record that they exist.
            _ => Value::String(format!("<{:?}>", raw.vtype)),
        };
        values.insert(name, value);
    }
    Ok(Some(values))
}

/// Reads a text file: `Ok(None)` when it does not exist.
fn read_text(path: &str) -> Result<Option<TextFile>, String> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .trim_start_matches('\u{feff}')
            .to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let last_write_utc = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .map(OffsetDateTime::from);
    Ok(Some(TextFile {
        text,
        last_write_utc,
    }))
}

fn file_versions_script() -> String {
    let list = paths::VERSIONED_FILES
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "$r = [ordered]@{{}}; foreach ($p in @({list})) {{ try {{ \
           if (Test-Path -LiteralPath $p) {{ $v = (Get-Item -LiteralPath $p).VersionInfo; \
             $r[$p] = @{{ ok = @{{ FileVersion = $v.FileVersion; ProductVersion = $v.ProductVersion }} }} }} \
           else {{ $r[$p] = @{{ ok = $null }} }} }} catch {{ $r[$p] = @{{ error = $_.Exception.Message }} }} }}; $r"
    )
}

/// The local clock against the `Date` header of Microsoft's sign-in service.
const CLOCK: &str = "[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12; \
    $ref = 'https://login.microsoftonline.com/'; \
    try { $resp = Invoke-WebRequest -Uri $ref -Method Head -UseBasicParsing -TimeoutSec 15; $d = $resp.Headers['Date'] } \
    catch { if ($_.Exception.Response) { $d = $_.Exception.Response.Headers['Date'] } else { $e = $_.Exception.Message } }; \
    $now = (Get-Date).ToUniversalTime().ToString('o'); \
    if ($d) { $r = @{ ok = ([DateTime]::Parse($d)).ToUniversalTime().ToString('o') } } else { $r = @{ error = \"$e\" } }; \
    [pscustomobject]@{ local_utc = $now; reference_utc = $r; reference = \"$ref (HTTP Date header)\" }";

const SCHEDULER: &str = "Get-ADSyncScheduler | Select-Object SyncCycleEnabled,StagingModeEnabled,SchedulerSuspended,MaintenanceEnabled,\
    @{n='NextSyncCycleStartTimeInUTC';e={ if ($_.NextSyncCycleStartTimeInUTC) { [DateTime]::SpecifyKind($_.NextSyncCycleStartTimeInUTC,'Utc').ToString('o') } }}";

const PASSWORD_RESET: &str = "@(Get-ADSyncConnector | Where-Object SubType -eq 'Windows Azure Active Directory (Microsoft)' | \
    ForEach-Object { [pscustomobject]@{ ConnectorName = $_.Name; Enabled = [bool](Get-ADSyncAADPasswordResetConfiguration -Connector $_.Name).Enabled } })";

const CONNECTORS: &str = "@(Get-ADSyncConnector | Select-Object Name,Type,SubType,\
    @{n='LastModificationTime';e={ if ($_.LastModificationTime) { $_.LastModificationTime.ToUniversalTime().ToString('o') } }},\
    @{n='ConnectivityParameters';e={@($_.ConnectivityParameters | \
      Where-Object Name -in 'forest-name','forest-login-user','forest-login-domain' | Select-Object Name,Value)}})";

const AUTO_UPGRADE: &str = "(Get-ADSyncAutoUpgrade).ToString()";

const GLOBAL_SETTINGS: &str = "Get-ADSyncGlobalSettings | Select-Object @{n='Parameters';e={@($_.Parameters | \
    Where-Object Name -in 'Microsoft.Synchronize.ServerConfigurationVersion','Microsoft.OptionalFeature.AutoUpgradeSuspensionReason' | \
    Select-Object Name,Value)}}";

const RUN_HISTORY: &str = "@(Get-ADSyncRunProfileResult -NumberRequested 500 | Select-Object ConnectorName,RunProfileName,Result,\
    @{n='StartDate';e={ if ($_.StartDate) { [DateTime]::SpecifyKind($_.StartDate,'Utc').ToString('o') } }},\
    @{n='EndDate';e={ if ($_.EndDate) { [DateTime]::SpecifyKind($_.EndDate,'Utc').ToString('o') } }})";

const ACCOUNT_SIDS: &str = "@(Get-ADSyncConnector | Where-Object Type -eq 'AD' | ForEach-Object { \
    $p = $_.ConnectivityParameters; $u = ($p | Where-Object Name -eq 'forest-login-user').Value; \
    $d = ($p | Where-Object Name -eq 'forest-login-domain').Value; \
    if ($u) { foreach ($n in @(\"$d\\$u\", \"$u@$d\")) { try { \
      $sid = ([Security.Principal.NTAccount]$n).Translate([Security.Principal.SecurityIdentifier]).Value; \
      [pscustomobject]@{ Account = $n; Sid = $sid }; break } catch { } } } })";

/// `secedit /export` of the user rights, as right → trustees.
const USER_RIGHTS: &str = "$f = [IO.Path]::GetTempFileName(); \
    try { secedit.exe /export /areas USER_RIGHTS /cfg $f /quiet | Out-Null; \
      if ($LASTEXITCODE -ne 0) { throw \"secedit /export failed with exit code $LASTEXITCODE\" }; \
      $r = [ordered]@{}; foreach ($l in Get-Content -LiteralPath $f) { \
        if ($l -match '^(Se\\w+)\\s*=\\s*(.*)$') { $r[$matches[1]] = @($matches[2] -split ',' | ForEach-Object { $_.Trim() }) } }; $r } \
    finally { Remove-Item -LiteralPath $f -ErrorAction SilentlyContinue }";

fn adsync_script(body: &str) -> String {
    format!("Import-Module ADSync -ErrorAction Stop; {body}")
}

async fn adsync() -> AdSync {
    AdSync {
        scheduler: powershell(&adsync_script(SCHEDULER)).await.into(),
        password_reset_configuration: powershell(&adsync_script(PASSWORD_RESET)).await.into(),
        connectors: powershell(&adsync_script(CONNECTORS)).await.into(),
        auto_upgrade: powershell(&adsync_script(AUTO_UPGRADE)).await.into(),
        global_settings: powershell(&adsync_script(GLOBAL_SETTINGS)).await.into(),
        run_profile_results: powershell(&adsync_script(RUN_HISTORY)).await.into(),
    }
}

/// Errors and warnings of the writeback providers in the window, plus the latest positive
/// signals (31015 started, 31019 heartbeat), which are informational and frequent.
async fn events() -> Result<EventLog, String> {
    let since = OffsetDateTime::now_utc() - time::Duration::days(EVENT_WINDOW_DAYS);
    let script = format!(
        "function Q($f, $n) {{ try {{ @(Get-WinEvent -FilterHashtable $f -MaxEvents $n -ErrorAction Stop) }} \
           catch {{ if ($_.FullyQualifiedErrorId -like 'NoMatchingEventsFound*') {{ @() }} else {{ throw }} }} }}; \
         $start = (Get-Date).AddDays(-{EVENT_WINDOW_DAYS}); \
         $all = @(); \
         $all += Q @{{ LogName = 'Application'; ProviderName = 'PasswordResetService','ADSync'; Level = 1,2,3; StartTime = $start }} 1000; \
         $all += Q @{{ LogName = 'Application'; ProviderName = 'PasswordResetService'; Id = 31019 }} 1; \
         $all += Q @{{ LogName = 'Application'; ProviderName = 'PasswordResetService'; Id = 31015 }} 1; \
         $all += Q @{{ LogName = 'Application'; ProviderName = 'PasswordResetService'; Id = 31013 }} 1; \
         @($all | Select-Object ProviderName,Id,Level,Message,@{{n='TimeCreated';e={{$_.TimeCreated.ToUniversalTime().ToString('o')}}}})"
    );
    let records: OneOrMany<super::snapshot::EventRecord> = powershell(&script).await?;
    Ok(EventLog { since, records })
}

/// Runs `script` in Windows PowerShell and parses its output, `ConvertTo-Json`ed.
async fn powershell<T: DeserializeOwned>(script: &str) -> Result<T, String> {
    let wrapped = format!(
        "$ErrorActionPreference = 'Stop'; [Console]::OutputEncoding = [Text.Encoding]::UTF8; \
         $__r = & {{ {script} }}; ConvertTo-Json -InputObject $__r -Depth 5 -Compress"
    );
    let mut command = tokio::process::Command::new("powershell.exe");
    command
        .args([
            "-NoProfile",
            "-NonInteractive",
            "-ExecutionPolicy",
            "Bypass",
            "-Command",
            &wrapped,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(PS_TIMEOUT, command.output()).await {
        Err(_) => {
            return Err(format!(
                "PowerShell did not finish within {} s",
                PS_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot run powershell.exe: {e}")),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no error text");
        return Err(format!("PowerShell failed ({}): {first}", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = stdout.trim().trim_start_matches('\u{feff}');
    let text = if text.is_empty() { "null" } else { text };
    serde_json::from_str(text).map_err(|e| format!("unexpected PowerShell output: {e}"))
}

//! The sync server itself (SRV-*, NET-05/06, OBJ-01/04, the event signatures of §3, and the
//! local parts of Cloud Sync agent hosts CS-01/02/05): read from the host probe, live on
//! Windows or from a host snapshot.

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{CONNECT_PREREQUISITES, ENABLE_WRITEBACK, TROUBLESHOOT_WRITEBACK};

const STAGING_SERVER: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-sync-staging-server";
const VERSION_HISTORY: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/reference-connect-version-history";
const AUTO_UPGRADE: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-install-automatic-upgrade";
const DOTNET_VERSIONS: &str = "https://learn.microsoft.com/en-us/dotnet/framework/install/how-to-determine-which-versions-are-installed";
const TLS_ENFORCEMENT: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/reference-connect-tls-enforcement";
const CONNECTIVITY: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/tshoot-connect-connectivity";
const SSPR_0029: &str = "https://learn.microsoft.com/en-us/troubleshoot/entra/entra-id/user-prov-sync/password-writeback-error-code-sspr-0029";
const WRITEBACK_PERMISSIONS: &str = "https://learn.microsoft.com/en-us/troubleshoot/entra/entra-id/user-prov-sync/password-writeback-access-rights-permissions";
const UNABLE_TO_CONFIGURE: &str = "https://learn.microsoft.com/en-us/troubleshoot/entra/entra-id/user-prov-sync/unable-configure-pwd-writeback-error";
const CHANGE_CONNECTOR_PASSWORD: &str = "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-sync-change-addsacct-pass";
const SIGN_AND_SEAL: &str = "https://learn.microsoft.com/en-us/troubleshoot/entra/entra-id/user-prov-sync/password-writeback-error-code-8023062c";
const HOW_WRITEBACK_WORKS: &str =
    "https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-writeback";
const CLOUD_SYNC_WRITEBACK: &str = "https://learn.microsoft.com/en-us/entra/identity/authentication/tutorial-enable-cloud-sync-sspr-writeback";
const CLOUD_SYNC_TROUBLESHOOT: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/cloud-sync/how-to-troubleshoot";
const CLOUD_SYNC_PREREQUISITES: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/cloud-sync/how-to-prerequisites";

/// How every host check is proven, besides its own fixture.
macro_rules! snapshot_proof {
    ($fixtures:literal) => {
        concat!(
            "Unit tests over hand-built host facts, and the snapshot parser plus every host check over each fixture in agent/tests/fixtures/snapshots/ \
(healthy.json passes; ",
            $fixtures,
            " fails). End to end: `wbhealth-agent diagnose --snapshot` over healthy.json and a broken snapshot."
        )
    };
}

/// A host check of the sync server.
#[allow(clippy::too_many_arguments)] // one per field of a catalogue entry
const fn host(
    id: &'static str,
    refs: &'static [&'static str],
    title: &'static str,
    description: &'static str,
    severity: Severity,
    docs_url: &'static str,
    remediation: &'static str,
    verified_by: &'static str,
) -> CheckDef {
    CheckDef {
        id,
        refs,
        title,
        description,
        category: Category::Server,
        runs_on: RunsOn::Agent,
        severity,
        data_source: DataSource::Host,
        docs_url,
        remediation,
        verified_by,
    }
}

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    host(
        "server.adsync_service",
        &["SRV-01"],
        "ADSync service running",
        "The ADSync service (Microsoft Azure AD Sync), which hosts the writeback endpoint, is running and starts automatically.",
        Severity::Blocker,
        TROUBLESHOOT_WRITEBACK,
        "On {server}, start the sync service and make it start automatically: Set-Service ADSync -StartupType Automatic; Restart-Service ADSync \
(now {state}, start type {start_type}). If it will not start, read the ADSync events in the Application log (database, service account).",
        snapshot_proof!("adsync-stopped.json"),
    ),
    host(
        "server.writeback_enabled",
        &["SRV-02"],
        "Password writeback enabled in Entra Connect",
        "Get-ADSyncAADPasswordResetConfiguration reports Enabled for the Entra connector of this installation.",
        Severity::Blocker,
        ENABLE_WRITEBACK,
        "On {server}, run the Entra Connect wizard → Configure → Customize synchronization options → Optional features → tick Password writeback → Configure. \
Or in PowerShell: Import-Module ADSync; Set-ADSyncAADPasswordResetConfiguration -Connector '{aad_connector}' -Enable $true",
        snapshot_proof!("writeback-disabled.json"),
    ),
    host(
        "server.staging_mode",
        &["SRV-03"],
        "Sync server not in staging mode",
        "Get-ADSyncScheduler reports StagingModeEnabled False: a staging server runs neither writeback nor password hash sync. Normal for a standby server, a blocker on the active one.",
        Severity::Blocker,
        STAGING_SERVER,
        "{server} is in staging mode, so it does not write passwords back. If it is meant to be the active server, put the current active server into staging mode first, \
then on {server} run the Entra Connect wizard → Configure staging mode → untick Enable staging mode. If it is a standby server, make sure another server is active.",
        snapshot_proof!("staging-mode.json"),
    ),
    host(
        "server.connect_version",
        &["SRV-07"],
        "Entra Connect version supported",
        "The installed Connect build (miiserver.exe and Microsoft.Synchronize.ServerConfigurationVersion) is not retired: not 1.x, not below 2.5.79.0 (all sync services stop on 2026-09-30), and not partly upgraded.",
        Severity::Blocker,
        VERSION_HISTORY,
        "Upgrade Entra Connect on {server} (now {version}) in place to the latest build, downloaded from the Entra admin center → Entra Connect → Get started. \
Back up custom sync rules first (Get-ADSyncRule). After upgrading, disable and re-enable password writeback if it still fails.",
        snapshot_proof!("connect-old.json"),
    ),
    host(
        "server.auto_upgrade",
        &["SRV-08"],
        "Entra Connect automatic upgrade enabled",
        "Get-ADSyncAutoUpgrade is Enabled, so the server does not drift into a retired version.",
        Severity::Warning,
        AUTO_UPGRADE,
        "On {server} automatic upgrade is {state}{reason}. Enable it where the installation is eligible: Set-ADSyncAutoUpgrade -AutoUpgradeState Enabled. \
Otherwise schedule manual upgrades to stay on a supported build.",
        snapshot_proof!("auto-upgrade-suspended.json"),
    ),
    host(
        "server.dotnet_version",
        &["SRV-09"],
        ".NET Framework 4.8 or later",
        "The .NET Framework 4 Release value is at least 528040 (4.8); below 461808 (4.7.2) current Connect builds do not run.",
        Severity::Warning,
        DOTNET_VERSIONS,
        "Install .NET Framework 4.8 or later on {server} (now {dotnet}), then reboot it.",
        snapshot_proof!("dotnet-old.json"),
    ),
    host(
        "server.os_support",
        &["SRV-10"],
        "Supported Windows Server for Entra Connect",
        "The sync server runs Windows Server 2016, 2019 or 2022 with the desktop experience; Windows Server 2025 needs KB5070773 or later, Server Core is unsupported.",
        Severity::Warning,
        CONNECT_PREREQUISITES,
        "{server} runs {os}. Move Entra Connect to a supported Windows Server (2016, 2019 or 2022, with the desktop experience), \
or on Windows Server 2025 install KB5070773 (2025-10-20) or a later cumulative update.",
        snapshot_proof!("os-unsupported.json"),
    ),
    host(
        "server.clock_skew",
        &["SRV-11"],
        "Sync server clock in time",
        "The sync server's clock is within 60 seconds of Microsoft's (the Date header of login.microsoftonline.com); over 5 minutes breaks the tokens writeback needs.",
        Severity::Blocker,
        UNABLE_TO_CONFIGURE,
        "The clock of {server} is {skew} {direction} Microsoft's. Fix time synchronisation: make the PDC emulator of the forest root the authoritative time source \
(w32tm /config /manualpeerlist:\"time.windows.com,0x8\" /syncfromflags:manual /reliable:yes /update on the PDC), let {server} follow the domain hierarchy, \
then run w32tm /resync on {server}.",
        snapshot_proof!("clock-skew.json"),
    ),
    host(
        "server.connect_on_dc",
        &["SRV-12"],
        "Entra Connect not installed on a domain controller",
        "The sync server is a member server, not a domain controller (Win32_ComputerSystem.DomainRole 4 or 5, ProductType LanmanNt), where the NetUserGetInfo read access writeback needs leads to SSPR_0029.",
        Severity::Warning,
        SSPR_0029,
        "Move Entra Connect from the domain controller {server} to a member server. As a workaround, on the AD connector {connector} set \
Only use preferred domain controllers (Synchronization Service Manager → Connectors → {connector} → Properties → Configure Directory Partitions) and list other DCs.",
        snapshot_proof!("on-dc.json"),
    ),
    host(
        "server.restrict_remote_sam",
        &["SRV-13"],
        "RestrictRemoteSam allows the connector account",
        "When the policy \"Network access: Restrict clients allowed to make remote calls to SAM\" is set (RestrictRemoteSam under HKLM\\SYSTEM\\CurrentControlSet\\Control\\Lsa), its SDDL allows the connector account; 6329 events with admaexport.cpp(2944) ERROR_ACCESS_DENIED show it does not.",
        Severity::Blocker,
        SSPR_0029,
        "Add the connector account {account} to the policy \"Network access: Restrict clients allowed to make remote calls to SAM\" (Computer Configuration → Windows Settings → \
Security Settings → Local Policies → Security Options) that applies to {server} and the domain controllers, then run gpupdate /force. Or remove the policy and delete the value, \
which survives un-defining the GPO: Remove-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Lsa' -Name RestrictRemoteSam",
        snapshot_proof!("restrict-remote-sam.json"),
    ),
    host(
        "server.impersonate_privilege",
        &["SRV-14"],
        "Impersonate a client after authentication keeps its defaults",
        "The user right SeImpersonatePrivilege on the sync server includes Administrators, LOCAL SERVICE, NETWORK SERVICE and SERVICE (secedit /export /areas USER_RIGHTS), as the writeback permissions article requires.",
        Severity::Warning,
        WRITEBACK_PERMISSIONS,
        "On {server}, restore the default holders of \"Impersonate a client after authentication\" (missing: {missing}) in the GPO or local policy that sets it: \
Computer Configuration → Windows Settings → Security Settings → Local Policies → User Rights Assignment. Then run gpupdate /force and Restart-Service ADSync.",
        snapshot_proof!("impersonate-missing.json"),
    ),
    host(
        "server.dotnet_proxy",
        &["NET-05"],
        ".NET proxy configured in machine.config",
        "The proxy that Entra Connect uses is the one in machine.config (<system.net><defaultProxy>); a proxy set only in miiserver.exe.config is lost at the next upgrade, and a machine.config changed after ADSync started is not in effect yet.",
        Severity::Blocker,
        CONNECTIVITY,
        "On {server}, put the proxy in C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\Config\\machine.config, not in miiserver.exe.config: \
<system.net><defaultProxy enabled=\"true\" useDefaultCredentials=\"true\"><proxy usesystemdefault=\"true\" proxyaddress=\"{proxy}\" bypassonlocal=\"true\" /></defaultProxy></system.net> \
(useDefaultCredentials for an authenticating proxy), then Restart-Service ADSync. {detail}",
        snapshot_proof!("proxy-in-miiserver-config.json"),
    ),
    host(
        "server.tls_registry",
        &["NET-06"],
        "TLS 1.2 enabled for .NET and SChannel",
        "The 8 registry values Microsoft lists are set: SystemDefaultTlsVersions=1 and SchUseStrongCrypto=1 for 64- and 32-bit .NET 4, and Enabled=1, DisabledByDefault=0 for the SChannel TLS 1.2 Server and Client.",
        Severity::Blocker,
        TLS_ENFORCEMENT,
        "On {server}, run Microsoft's script that enables TLS 1.2 (Entra Connect: TLS 1.2 enforcement), which sets: {missing}. Then reboot {server}.",
        snapshot_proof!("tls12-disabled.json"),
    ),
    host(
        "server.initial_sync",
        &["OBJ-01"],
        "Full import and full synchronization completed",
        "Get-ADSyncRunProfileResult shows, for every connector, a successful Full Import and Full Synchronization, or successful delta runs that only follow them: writeback needs the AD and Entra objects joined.",
        Severity::Blocker,
        HOW_WRITEBACK_WORKS,
        "On {server}, run Import-Module ADSync; Start-ADSyncSyncCycle -PolicyType Initial and wait for it to finish, then check the run history in Synchronization Service Manager. \
Connectors without a successful full run: {connectors}.",
        snapshot_proof!("no-full-sync.json"),
    ),
    host(
        "server.sync_scheduler",
        &["OBJ-04"],
        "Sync scheduler running and runs succeeding",
        "Get-ADSyncScheduler reports SyncCycleEnabled True and SchedulerSuspended False, and the latest run of every connector's run profiles succeeded.",
        Severity::Warning,
        ENABLE_WRITEBACK,
        "On {server}: {detail}. Re-enable the scheduler with Import-Module ADSync; Set-ADSyncScheduler -SyncCycleEnabled $true, and fix the run errors shown in Synchronization Service Manager → Operations.",
        snapshot_proof!("scheduler-disabled.json"),
    ),
    host(
        "server.writeback_listener",
        &["SRV-05", "NET-04"],
        "Writeback listener connected to the Service Bus relay",
        "The last 31019 ServiceBusHeartBeat is under 15 minutes old and no 6800, 31016, 31034 or 31044 event came after it: the writeback endpoint inside ADSync is listening on the relay.",
        Severity::Blocker,
        TROUBLESHOOT_WRITEBACK,
        "On {server}: {detail}. Run Restart-Service ADSync, then check the network checks (passwordreset and Service Bus over 443, no TLS inspection, proxy idle time-out of 6 minutes or more). \
If it persists, disable and re-enable password writeback in the Entra Connect wizard; if still failing, upgrade or reinstall Entra Connect.",
        snapshot_proof!("listener-down.json"),
    ),
    host(
        "server.writeback_configuration",
        &["SRV-06"],
        "Writeback onboarding state intact",
        "No PasswordResetService 32000, 32003, 32004, 32005, 32007, 32008 or 32010 event in the last day: the writeback keys and configuration file agree with the cloud.",
        Severity::Blocker,
        TROUBLESHOOT_WRITEBACK,
        "On {server}, events {events} say the writeback onboarding state is corrupt. Disable then re-enable password writeback in the Entra Connect wizard \
(Customize synchronization options → Optional features): this re-onboards and rewrites the configuration and keys. Open a support case with the tracking id from the event if it persists.",
        snapshot_proof!("config-corrupt.json"),
    ),
    host(
        "server.connector_credentials",
        &["SRV-15"],
        "AD DS connector account credentials valid",
        "No ADSync 6000 \"credentials were invalid\" event and no run ending in no-start-credentials: the AD DS connector account can sign in.",
        Severity::Blocker,
        CHANGE_CONNECTOR_PASSWORD,
        "The AD connector {connector} cannot sign in as {account}. Make sure the account is enabled, unlocked and its password not expired, then update the password in \
Synchronization Service Manager → Connectors → {connector} → Properties → Connect to Active Directory Forest, and run Restart-Service ADSync on {server}.",
        snapshot_proof!("bad-credentials.json"),
    ),
    host(
        "server.connector_password_length",
        &["SRV-16"],
        "Connector account password within 256 characters",
        "No writeback error with hr=800700CE \"The filename or extension is too long\", which a connector account password longer than 256 characters causes.",
        Severity::Partial,
        TROUBLESHOOT_WRITEBACK,
        "Reset the password of {account} to 256 characters or fewer, and enter it in Synchronization Service Manager → Connectors → {connector} → Properties → Connect to Active Directory Forest on {server}.",
        snapshot_proof!("password-errors.json"),
    ),
    host(
        "server.ldap_sign_and_seal",
        &["SRV-17"],
        "Sign and Encrypt LDAP traffic on the AD connector",
        "No writeback error 8023062C (\"…a 128 bit TLS or SSL connection is required\"), which appears when Sign and Encrypt LDAP Traffic is off on the AD connector.",
        Severity::Blocker,
        SIGN_AND_SEAL,
        "In Synchronization Service Manager on {server} → Connectors → {connector} → Properties, enable Sign and Encrypt LDAP Traffic in (1) Connect to Active Directory Forest → Options, \
(2) each directory partition's domain controller connection settings, and (3) alternate partition credentials if used. Then Restart-Service ADSync.",
        snapshot_proof!("sign-and-seal.json"),
    ),
    host(
        "server.forest_writeback_enablement",
        &["SRV-18"],
        "Writeback enabled for every connected forest",
        "No ADSync 6329 with 0x8023061f \"password synchronization is not enabled on this Management Agent\", which a forest added after writeback was enabled causes.",
        Severity::Partial,
        TROUBLESHOOT_WRITEBACK,
        "A forest was added to {server} after password writeback was enabled ({connectors}). Disable and re-enable password writeback in the Entra Connect wizard \
(Customize synchronization options → Optional features) so it covers every forest.",
        snapshot_proof!("forest-added.json"),
    ),
    host(
        "server.writeback_errors",
        &[
            "§3", "PERM-02", "PERM-08", "PERM-11", "PERM-12", "USR-01", "USR-02", "USR-03",
            "USR-04", "USR-07", "AD-03", "AD-06", "OBJ-02", "OBJ-03", "TEN-08", "NET-01", "NET-02",
        ],
        "No recent writeback errors in the event log",
        "The PasswordResetService and ADSync events of the last day (31003, 31008, 31011, 31014, 32001, 32002, 32009, 32011, 32013–32015, 33001–33009 and ADSync 6329 with its HRESULT) classified into causes, each with the check that explains it.",
        Severity::Partial,
        TROUBLESHOOT_WRITEBACK,
        "On {server}, recent writeback errors point to: {causes}. Fix the causes in that order (the checks named there have the exact steps), then watch for new events: \
Get-WinEvent -FilterHashtable @{{LogName='Application'; ProviderName='PasswordResetService','ADSync'; Level=1,2,3; StartTime=(Get-Date).AddDays(-1)}}",
        snapshot_proof!("password-errors.json"),
    ),
    host(
        "server.cloudsync_agent_version",
        &["CS-01"],
        "Cloud Sync provisioning agent 1.1.977.0 or later",
        "On a Cloud Sync agent host, AADConnectProvisioningAgent.exe is at least 1.1.977.0, the first build that writes passwords back.",
        Severity::Blocker,
        CLOUD_SYNC_WRITEBACK,
        "Update the Microsoft Entra provisioning agent on {server} (now {version}) to the latest build: let the Agent Updater service upgrade it, or download it from the Entra admin center → \
Entra Connect → Cloud Sync → Agents and reinstall.",
        snapshot_proof!("cloudsync-broken.json"),
    ),
    host(
        "server.cloudsync_agent_services",
        &["CS-02"],
        "Cloud Sync agent services running",
        "On a Cloud Sync agent host, the Microsoft Entra Provisioning Agent and Microsoft Entra Connect Agent Updater services are running.",
        Severity::Blocker,
        CLOUD_SYNC_TROUBLESHOOT,
        "On {server}, start the stopped services: {services}. For example: Start-Service AADConnectProvisioningAgent. If they fail to start, check the log-on rights of the service account \
(a GPO may remove them) and the trace logs in C:\\ProgramData\\Microsoft\\Azure AD Connect Provisioning Agent\\Trace.",
        snapshot_proof!("cloudsync-broken.json"),
    ),
    host(
        "server.cloudsync_agent_network_config",
        &["CS-05"],
        "Cloud Sync agent TLS 1.2 and proxy configuration",
        "On a Cloud Sync agent host, the SChannel TLS 1.2 Client and Server values and .NET SchUseStrongCrypto are set, and a proxy set for .NET in machine.config is also set in AADConnectProvisioningAgent.exe.config.",
        Severity::Blocker,
        CLOUD_SYNC_PREREQUISITES,
        "On {server}: {detail}. Enable TLS 1.2 (SChannel TLS 1.2 Client/Server Enabled=1, DisabledByDefault=0; .NET SchUseStrongCrypto=1) and put the proxy in \
C:\\Program Files\\Microsoft Azure AD Connect Provisioning Agent\\AADConnectProvisioningAgent.exe.config (<system.net><defaultProxy><proxy proxyaddress=\"…\" /></defaultProxy></system.net>), \
then restart the agent services and reboot if TLS values changed.",
        snapshot_proof!("cloudsync-broken.json"),
    ),
];

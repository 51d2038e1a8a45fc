//! Checks the central server makes by comparing what all agents of a tenant report (SRV-04
//! and the derived fleet checks): causes that no single agent can see.

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::TROUBLESHOOT_WRITEBACK;

/// Staging mode and the single active server.
const STAGING_SERVER: &str =
    "https://learn.microsoft.com/en-us/entra/identity/hybrid/connect/how-to-connect-staging-server";

pub(crate) const CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "fleet.single_active_server",
        refs: &["SRV-04"],
        title: "Exactly one active sync server has writeback",
        description: "Among the tenant's agents, at most one reports a sync server that is not in staging mode (server.staging_mode passes) with password writeback enabled (server.writeback_enabled passes). A second active server takes over the Service Bus listener and disrupts the first.",
        category: Category::Fleet,
        runs_on: RunsOn::Fleet,
        severity: Severity::Blocker,
        data_source: DataSource::AgentReports,
        docs_url: STAGING_SERVER,
        remediation: "{servers} are all active with writeback in {tenant}. Keep exactly one: on each of the others run Set-ADSyncScheduler -SyncCycleEnabled $false, then the Entra Connect wizard → Configure staging mode → enable staging; then restart ADSync on the server that stays active (Restart-Service ADSync).",
        verified_by: "Unit tests domain::fleet::tests::two_active_servers_fail. End to end: two enrolled agents whose snapshots both report an active server with writeback fail in the tenant status; one in staging passes.",
    },
    CheckDef {
        id: "fleet.pdc_agreement",
        refs: &["AD-01", "AD-05"],
        title: "Agents of one domain agree on the PDC emulator",
        description: "Agents of the tenant that read the same AD domain name the same PDC emulator (topology.pdc_emulator evidence). Disagreement means one of them reads a DC that has not learnt of a role transfer, or replication is broken: writeback then reaches for a DC that is no longer the PDC.",
        category: Category::Fleet,
        runs_on: RunsOn::Fleet,
        severity: Severity::Warning,
        data_source: DataSource::AgentReports,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "The agents of {tenant} disagree about the PDC emulator of {domains}. Find the real role holder with `netdom query fsmo` (or Get-ADDomain | Select PDCEmulator), check replication with `repadmin /replsummary`, and point every agent and the AD connector's preferred DCs at DCs that know it.",
        verified_by: "Unit tests domain::fleet::tests::agents_that_disagree_about_the_pdc_warn.",
    },
    CheckDef {
        id: "fleet.agent_silent",
        // Not a cause of writeback failure but a blind spot: DESIGN.md's agent liveness.
        refs: &["LIVENESS"],
        title: "Every agent reports on time",
        description: "Every enrolled, non-revoked agent of the tenant is connected or was heard from within three check intervals. An agent that stops talking leaves its sync server unwatched; its last results may be stale.",
        category: Category::Fleet,
        runs_on: RunsOn::Fleet,
        severity: Severity::Warning,
        data_source: DataSource::AgentReports,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "No word from {agents} in {tenant}. On each of those servers check the wbhealth agent service (Get-Service wbhealth-agent; Start-Service wbhealth-agent), its log, and that it can reach the server's gRPC address through the firewall and proxy.",
        verified_by: "Unit tests domain::fleet::tests::a_silent_agent_fails_naming_it. End to end: an agent enrolled and then stopped is reported silent once three intervals pass.",
    },
];

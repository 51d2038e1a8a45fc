//! Domain controllers and their roles (AD-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::{CONNECT_PREREQUISITES, ENABLE_WRITEBACK, TROUBLESHOOT_WRITEBACK};

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[
    CheckDef {
        id: "topology.pdc_emulator",
        refs: &["AD-01"],
        title: "PDC emulator found and reachable over LDAP",
        description: "The domain's PDC emulator is found through fSMORoleOwner and answers an authenticated LDAP bind from the sync server; writeback always contacts it.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::LdapAndNetwork,
        docs_url: ENABLE_WRITEBACK,
        remediation: "Allow {server} to reach the PDC emulator {pdc} ({pdc_address}) on TCP 389/636, 88, 135, 445 and 49152-65535, and make sure {pdc} resolves in DNS. \
If the AD connector uses preferred domain controllers, include {pdc}: Synchronization Service Manager → Connectors → the AD connector → Properties → \
Configure Directory Partitions → Only use preferred domain controllers. Then run Restart-Service ADSync. Observed: {problem}",
        verified_by: "Unit tests over facts (not configured, unresolvable, unreachable, bind refused). End to end: found through fSMORoleOwner on a Samba AD DC and bound over LDAPS.",
    },
    CheckDef {
        id: "topology.read_only_dc",
        refs: &["AD-02"],
        title: "Writable domain controllers",
        description: "The DC the agent reads is writable, and read-only DCs (primaryGroupID 521 or PARTIAL_SECRETS_ACCOUNT) are named so they stay out of the AD connector's preferred DCs.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: CONNECT_PREREQUISITES,
        remediation: "Entra Connect does not support read-only DCs: configure writable DCs of {domain} as the AD connector's preferred DCs (Synchronization Service Manager → Connectors → the AD connector → Properties → Configure Directory Partitions) and leave out {rodcs}.",
        verified_by: "Unit tests directory::tests::read_only_dcs_warn_and_a_read_only_contacted_dc_fails. End to end (Samba): a writable Samba DC passes (Samba cannot host an RODC in the lab).",
    },
    CheckDef {
        id: "topology.policy_hints_control",
        refs: &["AD-03"],
        title: "Every DC advertises the LDAP password policy hints control",
        description: "The rootDSE's supportedControl of every DC of the domain, each read over its own connection, lists LDAP_SERVER_POLICY_HINTS_OID (1.2.840.113556.1.4.2066), which writeback uses to apply password history on resets. A DC that cannot be reached is an error, not a pass.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Blocker,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "These DCs lack the LDAP password policy hints control: {dcs}. Run writeback against DCs on Windows Server 2016 or later: upgrade or retire them, or leave them out of the AD connector's preferred DCs.",
        verified_by: "Unit tests dcs::tests::a_dc_without_policy_hints_fails_naming_it. End to end (Samba): Samba 4.17 does not advertise the control, so it fails naming every DC, both DCs of a two-DC domain included.",
    },
    CheckDef {
        id: "topology.replication",
        refs: &["AD-05"],
        title: "Every DC holds the latest changes of the domain head",
        description: "The domain head's replPropertyMetaData, read on every DC, holds the same version of every attribute; a DC holding an older version of a change made longer ago than ldap.replication_grace_minutes (15 by default) is behind, so password and permission changes land on one DC while writeback uses another.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "{dcs} in {domain} lag behind {sources}. Check replication with `repadmin /replsummary` and `repadmin /showrepl {dcs}`, fix the errors it shows (`dcdiag /test:replications`), and test writeback against one DC consistently (the AD connector's preferred DCs) until replication is healthy.",
        verified_by: "Unit tests dcs::tests::a_dc_behind_beyond_the_grace_warns. End to end (Samba): a second DC joined with samba-tool passes; with its inbound replication disabled and the domain head changed on the first DC it warns naming the second.",
    },
    CheckDef {
        id: "topology.functional_level",
        refs: &["AD-04"],
        title: "Functional levels and DC operating systems supported",
        description: "The forest and domain functional levels are Windows Server 2003 or later, and no DC runs Windows Server 2012 R2 or older.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Warning,
        data_source: DataSource::Ldap,
        docs_url: CONNECT_PREREQUISITES,
        remediation: "In {domain}, {problem}. Raise the functional levels (Set-ADForestMode / Set-ADDomainMode) and retire out-of-support DCs.",
        verified_by: "Unit tests directory::tests::old_levels_fail_and_old_dcs_warn. End to end (Samba): a Samba DC at the 2008 R2 level passes.",
    },
    CheckDef {
        id: "topology.ou_reserved_characters",
        refs: &["AD-06"],
        title: "No OU name with reserved characters",
        description: "No OU in scope, and no OU in a sampled user's DN, has a reserved character (leading space or #, trailing space, , + \" \\ < > ; = / or a line break) in its name.",
        category: Category::Topology,
        runs_on: RunsOn::Agent,
        severity: Severity::Partial,
        data_source: DataSource::Ldap,
        docs_url: TROUBLESHOOT_WRITEBACK,
        remediation: "Rename these OUs so their names hold no reserved character (for example with Rename-ADObject -Identity '<OU DN>' -NewName '<new name>'): {ous}",
        verified_by: "Unit tests directory::tests::an_ou_with_an_escaped_comma_fails. End to end (Samba): creating OU=Sales\\, EMEA makes it fail naming the OU.",
    },
];

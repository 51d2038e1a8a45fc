//! Domain controllers and their roles (AD-*).

use crate::{Category, CheckDef, DataSource, RunsOn, Severity};

use super::ENABLE_WRITEBACK;

/// The checks of this category, in report order.
pub(crate) static CHECKS: &[CheckDef] = &[CheckDef {
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
}];

//! Active Directory data the directory probe reads for the permission, topology and policy
//! checks, and the parser of the binary security descriptors it reads them from.
//!
//! Security descriptors come from `nTSecurityDescriptor` in the self-relative format of
//! MS-DTYP §2.4.6; [`SecurityDescriptor::parse`] keeps the control flags and the DACL, with SIDs
//! in `S-1-…` form and GUIDs in their usual string form, so the checks (and the evidence) deal
//! in text. Everything here is plain data: the probe fills it in, the checks judge it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::facts::ProbeFailure;

/// `SE_DACL_PROTECTED`: the DACL does not inherit from the parent (inheritance blocked).
pub const SE_DACL_PROTECTED: u16 = 0x1000;
/// ACE flag: inherited by child containers.
pub const CONTAINER_INHERIT: u8 = 0x02;
/// ACE flag: applies to children only, not to the object that holds it.
pub const INHERIT_ONLY: u8 = 0x08;
/// ACE flag: the ACE was inherited from a parent.
pub const INHERITED: u8 = 0x10;
/// Access mask bit: an extended right (control access).
pub const DS_CONTROL_ACCESS: u32 = 0x100;
/// Access mask bit: write a property.
pub const DS_WRITE_PROP: u32 = 0x20;
/// Access mask bit: generic all, which includes every right.
pub const GENERIC_ALL: u32 = 0x1000_0000;
/// Access mask bit: generic read, which includes listing, reading properties and the DACL.
pub const GENERIC_READ: u32 = 0x8000_0000;
/// Access mask bit: list the contents of a container.
pub const DS_LIST_CHILDREN: u32 = 0x4;
/// Access mask bit: read properties.
pub const DS_READ_PROP: u32 = 0x10;
/// Access mask bit: read the security descriptor (read permissions).
pub const READ_CONTROL: u32 = 0x2_0000;
/// The well-known SID of Pre-Windows 2000 Compatible Access.
pub const PRE_WINDOWS_2000: &str = "S-1-5-32-554";
/// Access mask bit: generic write, which includes writing every property.
pub const GENERIC_WRITE: u32 = 0x4000_0000;

/// The well-known SID of Everyone.
pub const EVERYONE: &str = "S-1-1-0";
/// The well-known SID of SELF (the object's own principal).
pub const SELF: &str = "S-1-5-10";
/// The well-known SID of Authenticated Users.
pub const AUTHENTICATED_USERS: &str = "S-1-5-11";

/// Whether an ACE allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AceKind {
    /// `ACCESS_ALLOWED_ACE` (0x00) or `ACCESS_ALLOWED_OBJECT_ACE` (0x05).
    Allow,
    /// `ACCESS_DENIED_ACE` (0x01) or `ACCESS_DENIED_OBJECT_ACE` (0x06).
    Deny,
}

/// One allow or deny ACE of a DACL. Other ACE types (audit, callback) are skipped when parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ace {
    /// Allow or deny.
    pub kind: AceKind,
    /// The ACE flags (`CONTAINER_INHERIT`, `INHERIT_ONLY`, `INHERITED`, …).
    pub flags: u8,
    /// The access mask.
    pub mask: u32,
    /// The right or property it is limited to; `None` for every right and property.
    pub object_type: Option<String>,
    /// The object class it is inherited to; `None` for every class.
    pub inherited_object_type: Option<String>,
    /// The trustee.
    pub sid: String,
}

/// The parts of a security descriptor the checks use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityDescriptor {
    /// The control flags (`SE_DACL_PROTECTED`, …).
    pub control: u16,
    /// The allow and deny ACEs of the DACL, in order; empty when there is no DACL.
    pub dacl: Vec<Ace>,
}

/// Why bytes are not a security descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed security descriptor: {0}")]
pub struct SdParseError(String);

impl SecurityDescriptor {
    /// Parses a self-relative security descriptor (MS-DTYP §2.4.6).
    pub fn parse(bytes: &[u8]) -> Result<SecurityDescriptor, SdParseError> {
        let bad = |what: &str| SdParseError(what.to_owned());
        if bytes.len() < 20 || bytes[0] != 1 {
            return Err(bad("too short or not revision 1"));
        }
        let control = u16_at(bytes, 2).ok_or_else(|| bad("no control field"))?;
        let dacl_offset = u32_at(bytes, 16).ok_or_else(|| bad("no DACL offset"))? as usize;
        // SE_DACL_PRESENT
        if control & 0x0004 == 0 || dacl_offset == 0 {
            return Ok(SecurityDescriptor {
                control,
                dacl: Vec::new(),
            });
        }
        let acl = bytes
            .get(dacl_offset..)
            .ok_or_else(|| bad("DACL offset past the end"))?;
        let acl_size = usize::from(u16_at(acl, 2).ok_or_else(|| bad("truncated ACL header"))?);
        let count = u16_at(acl, 4).ok_or_else(|| bad("truncated ACL header"))?;
        let acl = acl
            .get(..acl_size)
            .ok_or_else(|| bad("ACL size past the end"))?;
        let mut dacl = Vec::with_capacity(usize::from(count));
        let mut at = 8;
        for _ in 0..count {
            let header = acl
                .get(at..at + 4)
                .ok_or_else(|| bad("truncated ACE header"))?;
            let ace_type = header[0];
            let flags = header[1];
            let size = usize::from(u16::from_le_bytes([header[2], header[3]]));
            if size < 4 {
                return Err(bad("ACE size below its header"));
            }
            let body = acl
                .get(at + 4..at + size)
                .ok_or_else(|| bad("ACE past the ACL"))?;
            at += size;
            let (kind, object) = match ace_type {
                0x00 => (AceKind::Allow, false),
                0x01 => (AceKind::Deny, false),
                0x05 => (AceKind::Allow, true),
                0x06 => (AceKind::Deny, true),
                _ => continue,
            };
            let mask = u32_at(body, 0).ok_or_else(|| bad("ACE without a mask"))?;
            let mut rest = 4;
            let (mut object_type, mut inherited_object_type) = (None, None);
            if object {
                let present = u32_at(body, 4).ok_or_else(|| bad("object ACE without flags"))?;
                rest = 8;
                if present & 1 != 0 {
                    object_type = Some(guid_at(body, rest).ok_or_else(|| bad("truncated GUID"))?);
                    rest += 16;
                }
                if present & 2 != 0 {
                    inherited_object_type =
                        Some(guid_at(body, rest).ok_or_else(|| bad("truncated GUID"))?);
                    rest += 16;
                }
            }
            let sid = sid_to_string(body.get(rest..).unwrap_or_default())
                .ok_or_else(|| bad("malformed trustee SID"))?;
            dacl.push(Ace {
                kind,
                flags,
                mask,
                object_type,
                inherited_object_type,
                sid,
            });
        }
        Ok(SecurityDescriptor { control, dacl })
    }

    /// Whether inheritance from the parent is blocked (`SE_DACL_PROTECTED`).
    pub fn inheritance_blocked(&self) -> bool {
        self.control & SE_DACL_PROTECTED != 0
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn guid_at(b: &[u8], at: usize) -> Option<String> {
    guid_to_string(b.get(at..at + 16)?)
}

/// A binary GUID (as in `schemaIDGUID` and object ACEs) in its string form, lower case.
pub fn guid_to_string(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.try_into().ok()?;
    Some(format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    ))
}

/// A binary SID (as in `objectSid`, `tokenGroups` and ACEs) in `S-1-…` form.
pub fn sid_to_string(b: &[u8]) -> Option<String> {
    let revision = *b.first()?;
    let count = usize::from(*b.get(1)?);
    let authority = b
        .get(2..8)?
        .iter()
        .fold(0u64, |a, x| a << 8 | u64::from(*x));
    let mut s = format!("S-{revision}-{authority}");
    for i in 0..count {
        let sub = u32_at(b, 8 + 4 * i)?;
        let _ = write!(s, "-{sub}");
    }
    Some(s)
}

/// The GUIDs of the rights and properties writeback needs, resolved from the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RightGuids {
    /// `rightsGuid` of `CN=User-Force-Change-Password` (Reset password).
    pub reset_password: String,
    /// `rightsGuid` of `CN=User-Change-Password` (Change password).
    pub change_password: String,
    /// `rightsGuid` of `CN=Unexpire-Password`.
    pub unexpire_password: String,
    /// `schemaIDGUID` of the `lockoutTime` attribute.
    pub lockout_time: String,
    /// `schemaIDGUID` of the `pwdLastSet` attribute.
    pub pwd_last_set: String,
    /// `schemaIDGUID` of the `user` class.
    pub user_class: String,
}

/// The AD DS connector account, as found in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorAccount {
    /// How it was named in the configuration (or by the host probe).
    pub configured_as: String,
    /// Its DN.
    pub dn: String,
    /// Its `sAMAccountName`.
    pub sam_account_name: String,
    /// Its SID.
    pub sid: String,
    /// The SIDs of its `tokenGroups` (every group it is in, transitively).
    pub token_groups: Vec<String>,
    /// `userAccountControl`.
    pub user_account_control: u32,
    /// `msDS-User-Account-Control-Computed`, when the DC computed it (`0x10` = locked out).
    pub uac_computed: Option<u32>,
    /// `accountExpires` (100-ns intervals since 1601; 0 or `i64::MAX` for never).
    pub account_expires: i64,
}

/// One domain controller's computer object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainController {
    /// Its `dNSHostName` (or its DN when it has none).
    pub name: String,
    /// `operatingSystem`, when set.
    pub operating_system: Option<String>,
    /// `operatingSystemVersion`, when set.
    pub operating_system_version: Option<String>,
    /// `primaryGroupID` (521 for a read-only DC).
    pub primary_group_id: u32,
    /// `userAccountControl` (`0x04000000` = partial secrets, a read-only DC).
    pub user_account_control: u32,
}

impl DomainController {
    /// Whether it is a read-only DC.
    pub fn is_read_only(&self) -> bool {
        self.primary_group_id == 521 || self.user_account_control & 0x0400_0000 != 0
    }
}

/// One attribute's replication metadata, from an object's `replPropertyMetaData`: which
/// version of the attribute a DC holds and when that version was made (on whichever DC).
/// Identical on every DC once a change has replicated; `local_usn` is left out because it
/// differs between DCs by design.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttributeMetadata {
    /// The attribute id (`attid`), such as `0x20119` for `nTSecurityDescriptor`.
    pub attid: u32,
    /// The attribute's version, raised by one on every originating write.
    pub version: u32,
    /// When the write that made this version happened.
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: time::OffsetDateTime,
}

/// Well-known attribute ids (prefix-mapped `attid`s are the same on every DC of a forest for
/// these base-schema attributes), for messages.
pub fn attribute_name(attid: u32) -> Option<&'static str> {
    Some(match attid {
        // 1.2.840.113556.1.2.281: prefix 1.2.840.113556.1.2 is 0x0002, 281 = 0x119.
        0x0002_0119 => "nTSecurityDescriptor",
        // Prefix 1.2.840.113556.1.4 is 0x0009.
        0x0009_004a => "maxPwdAge",
        0x0009_004e => "minPwdAge",
        0x0009_004f => "minPwdLength",
        0x0009_005d => "pwdProperties",
        0x0009_005f => "pwdHistoryLength",
        0x0009_0049 => "lockoutThreshold",
        0x0009_0171 => "fSMORoleOwner",
        0x0009_037b => "gPLink",
        _ => return None,
    })
}

/// Parses a `replPropertyMetaData` value (`replPropertyMetaDataBlob`, version 1, [MS-DRSR]
/// 5.161): a 16-byte header (version, reserved, count, reserved) and 48 bytes per attribute
/// (attid, version, originating time as NTTIME, originating invocation id, originating USN,
/// local USN).
pub fn parse_replication_metadata(b: &[u8]) -> Result<Vec<AttributeMetadata>, String> {
    const HEADER: usize = 16;
    const ENTRY: usize = 48;
    let version = u32_at(b, 0).ok_or("replPropertyMetaData is shorter than its header")?;
    if version != 1 {
        return Err(format!("replPropertyMetaData version {version} is not 1"));
    }
    let count = u32_at(b, 8).ok_or("replPropertyMetaData is shorter than its header")? as usize;
    if b.len() < HEADER + count.saturating_mul(ENTRY) {
        return Err(format!(
            "replPropertyMetaData announces {count} attributes in {} bytes",
            b.len()
        ));
    }
    (0..count)
        .map(|i| {
            let at = HEADER + i * ENTRY;
            let field = |offset: usize| u32_at(b, at + offset).ok_or("truncated entry");
            let nttime = u64::from(field(8)?) | u64::from(field(12)?) << 32;
            Ok(AttributeMetadata {
                attid: field(0)?,
                version: field(4)?,
                changed_at: nttime_to_datetime(nttime)
                    .ok_or_else(|| format!("originating time {nttime} is out of range"))?,
            })
        })
        .collect()
}

/// NTTIME (100-ns intervals since 1601-01-01 UTC) as a date and time.
fn nttime_to_datetime(nttime: u64) -> Option<time::OffsetDateTime> {
    const UNIX_EPOCH_AS_NTTIME: i128 = 116_444_736_000_000_000;
    let nanos = (i128::from(nttime) - UNIX_EPOCH_AS_NTTIME).checked_mul(100)?;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// What one domain controller says about the domain, read over its own connection: the
/// facts that must agree on every DC (AD-03, AD-05, PERM-10).
#[derive(Debug, Clone, Serialize)]
pub struct DcView {
    /// The DC's `dNSHostName`.
    pub name: String,
    /// Whether it is the DC the rest of the probe used.
    pub contacted: bool,
    /// Whether it is a read-only DC.
    pub read_only: bool,
    /// What it returned, or why it could not be read.
    pub reading: Result<DcReading, ProbeFailure>,
}

/// The reads of one DC.
#[derive(Debug, Clone, Serialize)]
pub struct DcReading {
    /// The address connected to.
    pub address: std::net::SocketAddr,
    /// Its rootDSE's `supportedControl` OIDs.
    pub supported_controls: Vec<String>,
    /// The DACL of the domain head as this DC holds it.
    pub head_sd: Result<SecurityDescriptor, ProbeFailure>,
    /// The domain head's replication metadata as this DC holds it.
    pub head_metadata: Result<Vec<AttributeMetadata>, ProbeFailure>,
}

/// The rootDSE of the DC the probe contacted, beyond what the basic probe reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RootDse {
    /// `supportedControl` OIDs.
    pub supported_controls: Vec<String>,
    /// `domainFunctionality`.
    pub domain_functionality: Option<u32>,
    /// `forestFunctionality`.
    pub forest_functionality: Option<u32>,
    /// `domainControllerFunctionality`.
    pub dc_functionality: Option<u32>,
}

/// An OU in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrganizationalUnit {
    /// Its DN, as the DC returned it (escaped).
    pub dn: String,
    /// Its security descriptor, or why it could not be read.
    pub sd: Result<SecurityDescriptor, String>,
}

/// A user in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopedUser {
    /// Its DN, as the DC returned it (escaped).
    pub dn: String,
    /// `sAMAccountName`.
    pub sam_account_name: String,
    /// `userAccountControl`.
    pub user_account_control: u32,
    /// `adminCount` (0 when absent).
    pub admin_count: u32,
    /// `pwdLastSet` (0 = must change at next logon).
    pub pwd_last_set: i64,
    /// `msDS-User-Account-Control-Computed`, when computed.
    pub uac_computed: Option<u32>,
    /// `msDS-ResultantPSO`: the DN of the PSO that applies, when one does.
    pub resultant_pso: Option<String>,
    /// Its security descriptor, or why it could not be read.
    pub sd: Result<SecurityDescriptor, String>,
    /// For protected users (`adminCount` set) only: its SID and the SIDs of its `tokenGroups`,
    /// or why they could not be read; `None` for other users.
    pub protection: Option<Result<UserGroups, String>>,
}

/// A user's SID and the SIDs of the groups it is in, transitively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserGroups {
    /// The user's SID.
    pub sid: String,
    /// The SIDs of its `tokenGroups`.
    pub token_groups: Vec<String>,
}

/// The users sampled in scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSample {
    /// The users read, at most `limit`.
    pub users: Vec<ScopedUser>,
    /// The configured bound.
    pub limit: usize,
    /// Whether the scope held more users than the bound.
    pub truncated: bool,
}

/// A fine-grained password settings object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasswordSettings {
    /// Its DN.
    pub dn: String,
    /// `msDS-MinimumPasswordAge` (negative 100-ns interval; 0 for none).
    pub min_age: i64,
    /// `msDS-PasswordSettingsPrecedence`.
    pub precedence: u32,
    /// `msDS-PSOAppliesTo`: the users and groups it applies to.
    pub applies_to: Vec<String>,
    /// `msDS-PasswordHistoryLength`, `msDS-MinimumPasswordLength` and
    /// `msDS-PasswordComplexityEnabled`.
    pub rules: PasswordRules,
}

/// The history, length and complexity rules of the domain or of a PSO (USR-02).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PasswordRules {
    /// How many previous passwords are remembered (`pwdHistoryLength`).
    pub history_length: u32,
    /// The minimum length (`minPwdLength`).
    pub min_length: u32,
    /// Whether complexity is required (`pwdProperties & 1`).
    pub complexity: bool,
}

/// Everything the permission, topology and policy checks read beyond the basic probe. Each
/// part is read on its own, so one that fails leaves the others usable.
#[derive(Debug, Clone, Serialize)]
pub struct AdFacts {
    /// The contacted DC's rootDSE.
    pub root_dse: RootDse,
    /// The domain controllers' computer objects.
    pub domain_controllers: Result<Vec<DomainController>, ProbeFailure>,
    /// The GUIDs of the rights writeback needs.
    pub guids: Result<RightGuids, ProbeFailure>,
    /// The connector account.
    pub connector: Result<ConnectorAccount, ProbeFailure>,
    /// The DACL of the domain head.
    pub domain_head_sd: Result<SecurityDescriptor, ProbeFailure>,
    /// The DNs searched for OUs and users.
    pub scope_dns: Vec<String>,
    /// The OUs in scope.
    pub ous: Result<Vec<OrganizationalUnit>, ProbeFailure>,
    /// The users sampled in scope.
    pub users: Result<UserSample, ProbeFailure>,
    /// The fine-grained password settings objects of the domain.
    pub psos: Result<Vec<PasswordSettings>, ProbeFailure>,
    /// The domain head's password rules.
    pub domain_password_rules: Result<PasswordRules, ProbeFailure>,
    /// The DACLs of `CN=Builtin,<domain>` and `CN=Server,CN=System,<domain>` (samServer), by
    /// DN, which `NetUserGetInfo` needs to read (PERM-12).
    pub sam_sds: Vec<(String, Result<SecurityDescriptor, ProbeFailure>)>,
    /// The `member` DNs of `CN=Pre-Windows 2000 Compatible Access,CN=Builtin,<domain>`.
    pub pre_windows_2000_members: Result<Vec<String>, ProbeFailure>,
    /// Each DC's own view of what must agree on every DC (at most 20 DCs); empty when the DCs
    /// could not be listed.
    pub dcs: Vec<DcView>,
    /// How long a change may take to reach every DC (`ldap.replication_grace_minutes`).
    pub replication_grace: std::time::Duration,
    /// The Cloud Sync provisioning agent's gMSA, `None` when the domain has no account of
    /// that name (Cloud Sync is not deployed in it).
    pub cloud_sync_account: Result<Option<ConnectorAccount>, ProbeFailure>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTOR: &str = "S-1-5-21-1-2-3-1105";

    #[test]
    fn parses_a_descriptor_samba_encoded() {
        // Samba's own NDR encoding (python3 samba.ndr.ndr_pack) of
        // O:DAG:DAD:PAI(OD;;CR;ab721a53-…;;WD)(OA;CI;CR;00299570-…;bf967aba-…;<connector>)
        // (A;;RPLCLORC;;;AU)(OA;CIIOID;WP;28630ebf-…;bf967aba-…;<connector>)
        let bytes = include_bytes!("../testdata/samba_user_sd.bin");
        let sd = SecurityDescriptor::parse(bytes).expect("parses");
        assert!(sd.inheritance_blocked(), "P in the SDDL");
        assert_eq!(sd.dacl.len(), 4);
        let deny = &sd.dacl[0];
        assert_eq!(deny.kind, AceKind::Deny);
        assert_eq!(deny.sid, EVERYONE);
        assert_eq!(
            deny.object_type.as_deref(),
            Some("ab721a53-1e2f-11d0-9819-00aa0040529b")
        );
        assert_eq!(deny.mask, DS_CONTROL_ACCESS);
        let reset = &sd.dacl[1];
        assert_eq!(reset.kind, AceKind::Allow);
        assert_eq!(reset.flags, CONTAINER_INHERIT);
        assert_eq!(reset.sid, CONNECTOR);
        assert_eq!(
            reset.object_type.as_deref(),
            Some("00299570-246d-11d0-a768-00aa006e0529")
        );
        assert_eq!(
            reset.inherited_object_type.as_deref(),
            Some("bf967aba-0de6-11d0-a285-00aa003049e2")
        );
        let read = &sd.dacl[2];
        assert_eq!(
            (read.sid.as_str(), read.object_type.as_deref()),
            (AUTHENTICATED_USERS, None)
        );
        let lockout = &sd.dacl[3];
        assert_eq!(lockout.flags, CONTAINER_INHERIT | INHERIT_ONLY | INHERITED);
        assert_eq!(lockout.mask, DS_WRITE_PROP);
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let bytes = include_bytes!("../testdata/samba_user_sd.bin");
        for len in [0, 10, 30, 90, bytes.len() - 1] {
            assert!(SecurityDescriptor::parse(&bytes[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn sids_and_guids_read_as_people_write_them() {
        let sid = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 42, 2, 0, 0];
        assert_eq!(sid_to_string(&sid).as_deref(), Some("S-1-5-32-554"));
        let guid = [
            0x70, 0x95, 0x29, 0x00, 0x6d, 0x24, 0xd0, 0x11, 0xa7, 0x68, 0x00, 0xaa, 0x00, 0x6e,
            0x05, 0x29,
        ];
        assert_eq!(
            guid_to_string(&guid).as_deref(),
            Some("00299570-246d-11d0-a768-00aa006e0529")
        );
    }
}

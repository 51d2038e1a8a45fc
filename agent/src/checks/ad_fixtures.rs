//! Hand-built AD facts of a healthy domain: a connector account granted exactly what
//! `Set-ADSyncPasswordWritebackPermissions` grants on the domain head, two users in
//! `OU=Sales` that inherit it, two writable Windows Server 2019 DCs and no PSO.

use crate::ad::*;

/// The connector account's SID.
pub const CONNECTOR_SID: &str = "S-1-5-21-1-2-3-1105";
/// The `user` class.
pub const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
const RESET: &str = "00299570-246d-11d0-a768-00aa006e0529";
const CHANGE: &str = "ab721a53-1e2f-11d0-9819-00aa0040529b";
const UNEXPIRE: &str = "ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501";
const LOCKOUT_TIME: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
const PWD_LAST_SET: &str = "bf967a0a-0de6-11d0-a285-00aa003049e2";

fn ace(
    kind: AceKind,
    flags: u8,
    mask: u32,
    object: Option<&str>,
    inherited_to: Option<&str>,
    sid: &str,
) -> Ace {
    Ace {
        kind,
        flags,
        mask,
        object_type: object.map(str::to_owned),
        inherited_object_type: inherited_to.map(str::to_owned),
        sid: sid.to_owned(),
    }
}

/// The domain head's DACL after `Set-ADSyncPasswordWritebackPermissions` (and Connect ≥
/// 2.1.15's Unexpire password).
pub fn head_sd() -> SecurityDescriptor {
    let ci = CONTAINER_INHERIT;
    SecurityDescriptor {
        control: 0x8004,
        dacl: vec![
            ace(
                AceKind::Allow,
                0,
                0x0002_0094,
                None,
                None,
                AUTHENTICATED_USERS,
            ),
            ace(
                AceKind::Allow,
                ci,
                DS_CONTROL_ACCESS,
                Some(RESET),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                ci,
                DS_WRITE_PROP,
                Some(LOCKOUT_TIME),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                ci,
                DS_WRITE_PROP,
                Some(PWD_LAST_SET),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                ci,
                DS_CONTROL_ACCESS,
                Some(UNEXPIRE),
                None,
                CONNECTOR_SID,
            ),
        ],
    }
}

/// A user's DACL: the default Change password for Everyone, and what it inherits.
pub fn user_sd() -> SecurityDescriptor {
    let inh = CONTAINER_INHERIT | INHERITED;
    SecurityDescriptor {
        control: 0x8004,
        dacl: vec![
            ace(
                AceKind::Allow,
                0,
                DS_CONTROL_ACCESS,
                Some(CHANGE),
                None,
                EVERYONE,
            ),
            ace(
                AceKind::Allow,
                inh,
                DS_CONTROL_ACCESS,
                Some(RESET),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                inh,
                DS_WRITE_PROP,
                Some(LOCKOUT_TIME),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                inh,
                DS_WRITE_PROP,
                Some(PWD_LAST_SET),
                Some(USER_CLASS),
                CONNECTOR_SID,
            ),
            ace(
                AceKind::Allow,
                inh,
                DS_CONTROL_ACCESS,
                Some(UNEXPIRE),
                None,
                CONNECTOR_SID,
            ),
        ],
    }
}

fn user(name: &str) -> ScopedUser {
    ScopedUser {
        dn: format!("CN={name},OU=Sales,DC=contoso,DC=com"),
        sam_account_name: name.to_lowercase(),
        user_account_control: 0x200,
        admin_count: 0,
        pwd_last_set: 133_000_000_000_000_000,
        uac_computed: Some(0),
        resultant_pso: None,
        sd: Ok(user_sd()),
        protection: None,
    }
}

/// The domain head's replication metadata: two attributes, as every DC holds them.
pub fn head_metadata() -> Vec<AttributeMetadata> {
    let at = |unix: i64| time::OffsetDateTime::from_unix_timestamp(unix).expect("a valid time");
    vec![
        AttributeMetadata {
            attid: 0x0002_0119,
            version: 3,
            changed_at: at(1_700_000_000),
        },
        AttributeMetadata {
            attid: 0x0009_004e,
            version: 1,
            changed_at: at(1_600_000_000),
        },
    ]
}

/// One DC's view of a healthy domain.
pub fn dc_view(name: &str, address: &str, contacted: bool) -> DcView {
    DcView {
        name: name.to_owned(),
        contacted,
        read_only: false,
        reading: Ok(DcReading {
            address: address.parse().expect("a socket address"),
            supported_controls: vec![
                "1.2.840.113556.1.4.801".to_owned(),
                "1.2.840.113556.1.4.2066".to_owned(),
            ],
            head_sd: Ok(head_sd()),
            head_metadata: Ok(head_metadata()),
        }),
    }
}

/// The AD facts of a healthy domain.
pub fn healthy() -> AdFacts {
    let dc = |name: &str| DomainController {
        name: name.to_owned(),
        operating_system: Some("Windows Server 2019 Datacenter".to_owned()),
        operating_system_version: Some("10.0 (17763)".to_owned()),
        primary_group_id: 516,
        user_account_control: 0x2000,
    };
    AdFacts {
        root_dse: RootDse {
            supported_controls: vec![
                "1.2.840.113556.1.4.801".to_owned(),
                "1.2.840.113556.1.4.2066".to_owned(),
            ],
            domain_functionality: Some(7),
            forest_functionality: Some(7),
            dc_functionality: Some(7),
        },
        domain_controllers: Ok(vec![dc("dc1.contoso.com"), dc("dc2.contoso.com")]),
        guids: Ok(RightGuids {
            reset_password: RESET.to_owned(),
            change_password: CHANGE.to_owned(),
            unexpire_password: UNEXPIRE.to_owned(),
            lockout_time: LOCKOUT_TIME.to_owned(),
            pwd_last_set: PWD_LAST_SET.to_owned(),
            user_class: USER_CLASS.to_owned(),
        }),
        connector: Ok(ConnectorAccount {
            configured_as: "CONTOSO\\MSOL_abc123".to_owned(),
            dn: "CN=MSOL_abc123,CN=Users,DC=contoso,DC=com".to_owned(),
            sam_account_name: "MSOL_abc123".to_owned(),
            sid: CONNECTOR_SID.to_owned(),
            token_groups: vec!["S-1-5-21-1-2-3-513".to_owned()],
            user_account_control: 0x1_0200,
            uac_computed: Some(0),
            account_expires: i64::MAX,
        }),
        domain_head_sd: Ok(head_sd()),
        scope_dns: vec!["DC=contoso,DC=com".to_owned()],
        ous: Ok(vec![OrganizationalUnit {
            dn: "OU=Sales,DC=contoso,DC=com".to_owned(),
            sd: Ok(SecurityDescriptor {
                control: 0x8004,
                dacl: Vec::new(),
            }),
        }]),
        users: Ok(UserSample {
            users: vec![user("Alice"), user("Bob")],
            limit: 500,
            truncated: false,
        }),
        psos: Ok(Vec::new()),
        domain_password_rules: Ok(PasswordRules {
            history_length: 24,
            min_length: 7,
            complexity: true,
        }),
        sam_sds: [
            "CN=Builtin,DC=contoso,DC=com",
            "CN=Server,CN=System,DC=contoso,DC=com",
        ]
        .map(|dn| {
            (
                dn.to_owned(),
                Ok(SecurityDescriptor {
                    control: 0x8004,
                    dacl: vec![ace(
                        AceKind::Allow,
                        0,
                        0x0002_0094,
                        None,
                        None,
                        AUTHENTICATED_USERS,
                    )],
                }),
            )
        })
        .into(),
        pre_windows_2000_members: Ok(vec![
            "CN=S-1-5-11,CN=ForeignSecurityPrincipals,DC=contoso,DC=com".to_owned(),
        ]),
        dcs: vec![
            dc_view("dc1.contoso.com", "10.0.0.5:636", true),
            dc_view("dc2.contoso.com", "10.0.0.6:636", false),
        ],
        replication_grace: std::time::Duration::from_secs(15 * 60),
        cloud_sync_account: Ok(None),
    }
}

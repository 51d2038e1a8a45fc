//! The LDAP checks (connector-account permissions, topology, fine-grained policies) against a
//! real Samba AD DC, walked from a healthy domain through the broken states they detect. Every
//! broken state is made on the running DC with samba-tool or Samba's Python bindings.

use std::collections::HashMap;

use serde_json::Value;

use crate::support::agent::AgentHome;
use crate::support::lab::Lab;

const PASSWORD: &str = "Passw0rd!Passw0rd";
const CONNECTOR: &str = "MSOL_e2e0001";
const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";
const RESET: &str = "00299570-246d-11d0-a768-00aa006e0529";
const CHANGE: &str = "ab721a53-1e2f-11d0-9819-00aa0040529b";
const UNEXPIRE: &str = "ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501";
const LOCKOUT_TIME: &str = "28630ebf-41d5-11d1-a9c1-0000f80367c1";
const PWD_LAST_SET: &str = "bf967a0a-0de6-11d0-a285-00aa003049e2";

/// The directory checks this test proves.
const DIRECTORY_CHECKS: &[&str] = &[
    "permissions.connector_account",
    "permissions.reset_password",
    "permissions.change_password",
    "permissions.write_lockout_time",
    "permissions.write_pwd_last_set",
    "permissions.unexpire_password",
    "permissions.inheritance_blocked",
    "permissions.protected_accounts",
    "permissions.orphaned_admin_count",
    "permissions.user_cannot_change_password",
    "permissions.pre_windows_compatible_access",
    "permissions.sam_read_access",
    "permissions.cloud_sync_gmsa",
    "topology.read_only_dc",
    "topology.policy_hints_control",
    "topology.replication",
    "permissions.rights_on_every_dc",
    "topology.functional_level",
    "topology.ou_reserved_characters",
    "policy.fine_grained_min_age",
    "policy.password_complexity",
    "policy.disabled_users",
    "policy.locked_out_users",
    "policy.must_change_password",
    "policy.password_never_expires",
];

/// Runs `diagnose --format json` and returns the results by check id.
fn diagnose(home: &AgentHome) -> anyhow::Result<HashMap<String, Value>> {
    let output = home.run(&["diagnose", "--format", "json"])?;
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        anyhow::anyhow!(
            "diagnose printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok(report["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| Some((r["check_id"].as_str()?.to_owned(), r)))
        .collect())
}

fn result<'a>(results: &'a HashMap<String, Value>, id: &str) -> &'a Value {
    results.get(id).unwrap_or(&Value::Null)
}

fn assert_status(results: &HashMap<String, Value>, id: &str, status: &str, mentions: &[&str]) {
    let r = result(results, id);
    assert_eq!(r["status"], status, "{id}: {r:#}");
    let text = format!(
        "{} {}",
        r["summary"].as_str().unwrap_or_default(),
        r["remediation"].as_str().unwrap_or_default()
    );
    for m in mentions {
        assert!(text.contains(m), "{id} should mention {m:?}: {r:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_checks_follow_a_samba_domain_through_broken_states() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let dc = &lab.dc;
    let base = dc.base_dn();
    let domain = dc.realm().to_lowercase();

    // The connector account, granted exactly what Set-ADSyncPasswordWritebackPermissions grants
    // on the domain head (plus Unexpire password, which Connect 2.1.15 and later add).
    dc.add_user(CONNECTOR, PASSWORD).await?;
    let sid = dc.account_sid(CONNECTOR).await?;
    assert!(sid.starts_with("S-1-5-21-"), "{sid}");
    dc.dsacl_add(
        &base,
        &format!(
            "(OA;CI;CR;{RESET};{USER_CLASS};{sid})(OA;CI;WP;{LOCKOUT_TIME};{USER_CLASS};{sid})\
             (OA;CI;WP;{PWD_LAST_SET};{USER_CLASS};{sid})(OA;CI;CR;{UNEXPIRE};;{sid})"
        ),
    )
    .await?;
    let sales = dc.create_ou("Sales").await?;
    let alice = dc.add_user_in("alice", PASSWORD, &sales).await?;
    dc.add_user("bob", PASSWORD).await?;
    let bob = format!("CN=bob,CN=Users,{base}");

    let config = lab.healthy_agent_config().replace(
        "timeout_seconds = 10\n",
        &format!(
            "timeout_seconds = 10\nconnector_account = {:?}\n",
            format!("{}\\{CONNECTOR}", dc.netbios())
        ),
    );
    let home = AgentHome::new(&config)?;

    // Healthy: no directory check fails or errs, except the one that a healthy Samba domain
    // really trips.
    let healthy = diagnose(&home)?;
    for id in DIRECTORY_CHECKS {
        match *id {
            // Samba 4.17 does not advertise LDAP_SERVER_POLICY_HINTS_OID: writeback against it
            // would fail, and the check says so, naming the DC.
            "topology.policy_hints_control" => assert_status(
                &healthy,
                id,
                "fail",
                &[&dc.fqdn(), "1.2.840.113556.1.4.2066"],
            ),
            // One DC: nothing to compare (the two-DC test below compares two).
            "topology.replication" | "permissions.rights_on_every_dc" => {
                assert_status(&healthy, id, "not_applicable", &["one domain controller"]);
            }
            // No Cloud Sync in this domain.
            "permissions.cloud_sync_gmsa" => {
                assert_status(&healthy, id, "not_applicable", &["provAgentgMSA$"]);
            }
            _ => assert_status(&healthy, id, "pass", &[]),
        }
    }
    assert_status(
        &healthy,
        "permissions.connector_account",
        "pass",
        &[CONNECTOR],
    );
    // Samba's default domain rules, read from the domain head.
    assert_status(
        &healthy,
        "policy.password_complexity",
        "pass",
        &[&format!(
            "{domain}: at least 7 characters, complexity required, 24 previous passwords remembered"
        )],
    );
    // The built-in Administrator is protected in every domain: evidence, not a warning.
    let administrator = Value::String(format!("CN=Administrator,CN=Users,{base}"));
    let built_in =
        &result(&healthy, "permissions.protected_accounts")["evidence"]["built_in_protected"];
    assert!(
        built_in
            .as_array()
            .is_some_and(|dns| dns.contains(&administrator)),
        "{built_in:#}"
    );

    // No Reset password on the domain head: every user lacks it.
    dc.dsacl_remove_containing(&base, RESET).await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.reset_password",
        "fail",
        &[
            CONNECTOR,
            &base,
            &format!(
                "Set-ADSyncPasswordWritebackPermissions -ADConnectorAccountName {CONNECTOR} -ADConnectorAccountDomain {domain}"
            ),
        ],
    );
    assert_status(&results, "permissions.write_lockout_time", "pass", &[]);
    dc.dsacl_add(&base, &format!("(OA;CI;CR;{RESET};{USER_CLASS};{sid})"))
        .await?;
    let results = diagnose(&home)?;
    assert_status(&results, "permissions.reset_password", "pass", &[]);

    // Inheritance blocked on OU=Sales, without the connector's ACEs: its users lose the rights.
    dc.block_inheritance(&sales, &sid).await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.inheritance_blocked",
        "fail",
        &[&sales, &format!("-ADobjectDN '{sales}'")],
    );
    assert_status(
        &results,
        "permissions.reset_password",
        "fail",
        &[&alice, "1 user of"],
    );

    // A PSO with a minimum age of one day, applied to bob.
    dc.add_pso("Writeback PSO", 1, "bob").await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "policy.fine_grained_min_age",
        "warn",
        &[
            "Writeback PSO",
            "Set-ADFineGrainedPasswordPolicy -Identity 'Writeback PSO' -MinPasswordAge 0.00:00:00",
        ],
    );
    assert_status(
        &results,
        "policy.password_complexity",
        "pass",
        &["PSO CN=Writeback PSO,CN=Password Settings Container"],
    );

    // A protected user: adminCount=1 and a protected ACL without the connector's rights.
    dc.add_user("carol", PASSWORD).await?;
    let carol = format!("CN=carol,CN=Users,{base}");
    dc.set_attribute(&carol, "adminCount", "1").await?;
    dc.block_inheritance(&carol, &sid).await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.protected_accounts",
        "warn",
        &[&carol, "-IncludeAdminSdHolders"],
    );
    assert_status(
        &results,
        "permissions.orphaned_admin_count",
        "fail",
        &[&format!("Set-ADUser -Identity '{carol}' -Clear adminCount")],
    );

    // An OU whose name holds a reserved character.
    let emea = dc.create_ou("Sales, EMEA").await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "topology.ou_reserved_characters",
        "fail",
        &[&emea],
    );

    // "User cannot change password" on bob: a deny Change password ACE for Everyone.
    dc.dsacl_add(&bob, &format!("(OD;;CR;{CHANGE};;WD)"))
        .await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.user_cannot_change_password",
        "warn",
        &[&format!(
            "Set-ADUser -Identity '{bob}' -CannotChangePassword $false"
        )],
    );
    assert_status(
        &results,
        "permissions.change_password",
        "fail",
        &[&bob, "denied to S-1-1-0"],
    );

    // Per-user state (USR-03 to USR-06), each on its own user in OU=Sales.
    let dave = dc.add_user_in("dave", PASSWORD, &sales).await?;
    dc.samba_tool(&["user", "disable", "dave"]).await?;
    let erin = dc.add_user_in("erin", PASSWORD, &sales).await?;
    dc.set_attribute(&erin, "pwdLastSet", "0").await?;
    let frank = dc.add_user_in("frank", PASSWORD, &sales).await?;
    dc.samba_tool(&["user", "setexpiry", "frank", "--noexpiry"])
        .await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "policy.disabled_users",
        "warn",
        &[&dave, &format!("Enable-ADAccount -Identity '{dave}'")],
    );
    assert_eq!(
        result(&results, "policy.disabled_users")["evidence"]["count"],
        1
    );
    assert_status(
        &results,
        "policy.must_change_password",
        "warn",
        &[&erin, "ForcePasswordChangeOnLogOn"],
    );
    assert_status(&results, "policy.password_never_expires", "pass", &[&frank]);
    assert_status(&results, "policy.locked_out_users", "pass", &[]);

    // A locked-out user: failed binds past a lockout threshold of two.
    let gina = dc.add_user_in("gina", PASSWORD, &sales).await?;
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "set",
        "--account-lockout-threshold=2",
    ])
    .await?;
    dc.samba_python(&format!(
        "bad = Credentials()\n\
         bad.guess(lp)\n\
         bad.set_username('gina')\n\
         bad.set_password('wrong-password-1')\n\
         bad.set_kerberos_state(DONT_USE_KERBEROS)\n\
         for _ in range(3):\n    \
         try:\n        \
         SamDB(url='ldap://{}', credentials=bad, lp=lp)\n    \
         except Exception:\n        \
         pass",
        dc.ip()
    ))
    .await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "policy.locked_out_users",
        "warn",
        &[&gina, &format!("Unlock-ADAccount -Identity '{gina}'")],
    );

    // CN=Builtin hardened: the read ACEs of Authenticated Users and of Pre-Windows 2000
    // Compatible Access (RU) removed, so nothing grants the connector read permissions there.
    let builtin = format!("CN=Builtin,{base}");
    dc.dsacl_remove_containing(&builtin, "RPLCLORC;;;AU")
        .await?;
    dc.dsacl_remove_containing(&builtin, "RPRC;;;RU").await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.sam_read_access",
        "fail",
        &[
            &format!("{builtin}: read permissions"),
            &format!("dsacls \"{builtin}\" /G \"NT AUTHORITY\\Authenticated Users:LCRPRC\""),
            CONNECTOR,
        ],
    );
    assert!(
        !result(&results, "permissions.sam_read_access")["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("CN=Server,CN=System"),
        "{:#}",
        result(&results, "permissions.sam_read_access")
    );

    // Cloud Sync's gMSA (Samba 4.17 cannot create a gMSA; a computer account carries its
    // name): without rights it fails naming them, with Set-AADCloudSyncPermissions' ACEs it
    // passes.
    dc.samba_tool(&["computer", "create", "provAgentgMSA"])
        .await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.cloud_sync_gmsa",
        "fail",
        &[
            "provAgentgMSA$",
            // Samba's default domain head grants Unexpire password to every authenticated user.
            "lacks Reset password, Write lockoutTime, Write pwdLastSet on",
            "Set-AADCloudSyncPermissions -PermissionType PasswordWriteBack",
        ],
    );
    let gmsa = dc.account_sid("provAgentgMSA$").await?;
    dc.dsacl_add(
        &base,
        &format!(
            "(OA;CI;CR;{RESET};{USER_CLASS};{gmsa})(OA;CI;WP;{LOCKOUT_TIME};{USER_CLASS};{gmsa})\
             (OA;CI;WP;{PWD_LAST_SET};{USER_CLASS};{gmsa})(OA;CI;CR;{UNEXPIRE};;{gmsa})"
        ),
    )
    .await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.cloud_sync_gmsa",
        "pass",
        &["provAgentgMSA$"],
    );

    // The connector account disabled.
    dc.samba_tool(&["user", "disable", CONNECTOR]).await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.connector_account",
        "fail",
        &[CONNECTOR, "disabled"],
    );
    Ok(())
}

/// AD-03, AD-05 and PERM-10 read every DC over its own connection: a second Samba DC joined to
/// the domain is compared with the first, in step and then with its inbound replication
/// stopped while the connector's rights change on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dc_of_a_two_dc_domain_is_compared() -> anyhow::Result<()> {
    let Some(lab) = Lab::start().await? else {
        return Ok(());
    };
    let dc1 = &lab.dc;
    let base = dc1.base_dn();
    dc1.add_user(CONNECTOR, PASSWORD).await?;
    let sid = dc1.account_sid(CONNECTOR).await?;
    dc1.dsacl_add(
        &base,
        &format!(
            "(OA;CI;CR;{RESET};{USER_CLASS};{sid})(OA;CI;WP;{LOCKOUT_TIME};{USER_CLASS};{sid})\
             (OA;CI;WP;{PWD_LAST_SET};{USER_CLASS};{sid})(OA;CI;CR;{UNEXPIRE};;{sid})"
        ),
    )
    .await?;
    let dc2 = dc1.join_second_dc().await?;
    let with_connector = |extra: &str| {
        lab.healthy_agent_config().replace(
            "timeout_seconds = 10\n",
            &format!(
                "timeout_seconds = 10\nconnector_account = {:?}\n{extra}",
                format!("{}\\{CONNECTOR}", dc1.netbios())
            ),
        )
    };
    let home = AgentHome::new(&with_connector(""))?;

    // In step: the same rights everywhere; changes younger than the default 15-minute grace
    // count as replicating.
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "topology.policy_hints_control",
        "fail",
        &["2 DCs", &dc1.fqdn(), &dc2.fqdn()],
    );
    assert_status(&results, "topology.replication", "pass", &["2 DCs"]);
    assert_status(
        &results,
        "permissions.rights_on_every_dc",
        "pass",
        &["all 2 DCs", CONNECTOR],
    );
    let evidence = &result(&results, "permissions.rights_on_every_dc")["evidence"]["rights_by_dc"];
    // Change password comes from each user's own default DACL, not from the domain head.
    assert_eq!(
        evidence[dc2.fqdn()],
        serde_json::json!([
            "Reset password",
            "Unexpire password",
            "Write lockoutTime",
            "Write pwdLastSet"
        ]),
        "{evidence:#}"
    );

    // dc2 stops pulling changes; Reset password is removed on dc1 only.
    dc2.samba_tool(&[
        "drs",
        "options",
        &dc2.ip().to_string(),
        "--dsa-option=+DISABLE_INBOUND_REPL",
    ])
    .await?;
    dc1.dsacl_remove_containing(&base, RESET).await?;
    let results = diagnose(&home)?;
    assert_status(
        &results,
        "permissions.rights_on_every_dc",
        "warn",
        &[&format!(
            "Reset password is granted on {} but not on {}",
            dc2.fqdn(),
            dc1.fqdn()
        )],
    );
    // With no grace, the change dc2 lacks makes it a DC that is behind.
    let strict = AgentHome::new(&with_connector("replication_grace_minutes = 0\n"))?;
    let results = diagnose(&strict)?;
    assert_status(
        &results,
        "topology.replication",
        "warn",
        &[
            &format!("{} holds nTSecurityDescriptor version", dc2.fqdn()),
            &format!("(on {})", dc1.fqdn()),
            "repadmin",
        ],
    );

    // A DC that cannot be reached is an error for every check that compares DCs, not a pass.
    drop(dc2);
    let results = diagnose(&home)?;
    for id in ["topology.replication", "permissions.rights_on_every_dc"] {
        assert_status(&results, id, "error", &["dc2."]);
    }
    assert_status(
        &results,
        "topology.policy_hints_control",
        "fail",
        &[&dc1.fqdn()],
    );
    Ok(())
}

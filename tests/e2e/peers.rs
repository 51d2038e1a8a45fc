//! Tests of the test peers themselves: a provisioned Samba AD DC answers LDAPS
//! with a certificate rustls accepts, its own DNS resolves it, and changes made
//! through `samba-tool` show up over LDAP; HTTPS endpoints are trusted only
//! through their CA; fresh PostgreSQL databases are separate.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};
use sqlx::Connection as _;

use crate::support::postgres::fresh_database;
use crate::support::samba::SambaDc;
use crate::support::tls::{HttpsEndpoint, TestCa, client_config_trusting, refusing_port};

/// LDAP result code for a bind with a wrong name or password.
const INVALID_CREDENTIALS: u32 = 49;

/// `minPwdAge` for one day, in negative 100 ns intervals.
const ONE_DAY: &str = "-864000000000";

/// Connects over LDAPS to `addr` while validating the certificate for the DC's
/// name against the harness CA only, then binds as `bind`.
async fn ldaps_bind(
    dc: &SambaDc,
    addr: Ipv4Addr,
    bind: &str,
    password: &str,
) -> anyhow::Result<Result<ldap3::Ldap, ldap3::LdapError>> {
    let stream = std::net::TcpStream::connect_timeout(
        &SocketAddr::from((addr, dc.ldaps_addr().port())),
        Duration::from_secs(5),
    )
    .context("connect to ldaps")?;
    let settings = LdapConnSettings::new()
        .set_config(client_config_trusting(dc.ca_file())?)
        .set_std_stream(StdStream::Tcp(stream));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dc.ldaps_url())
        .await
        .context("tls handshake with the dc")?;
    ldap3::drive!(conn);
    let bound = ldap
        .simple_bind(bind, password)
        .await
        .context("send the bind")?
        .success();
    Ok(bound.map(|_| ldap))
}

/// Reads one attribute of the domain head, the object at the base DN.
async fn domain_head_attr(
    ldap: &mut ldap3::Ldap,
    dc: &SambaDc,
    attr: &str,
) -> anyhow::Result<String> {
    let (entries, _) = ldap
        .search(&dc.base_dn(), Scope::Base, "(objectClass=*)", vec![attr])
        .await?
        .success()?;
    let entry = SearchEntry::construct(entries.into_iter().next().context("no domain head")?);
    entry
        .attrs
        .get(attr)
        .and_then(|values| values.first())
        .cloned()
        .with_context(|| format!("domain head has no {attr}"))
}

#[tokio::test]
async fn samba_dc_serves_ldaps_fsmo_and_password_policy_changes() -> anyhow::Result<()> {
    let Some(dc) = SambaDc::start_or_skip().await? else {
        return Ok(());
    };
    let resolved = dc.lookup_a(&dc.fqdn()).await?;
    assert_eq!(
        resolved,
        vec![dc.ip()],
        "the dc's dns resolves its own name"
    );

    let mut ldap = ldaps_bind(&dc, resolved[0], &dc.admin_bind(), dc.admin_password())
        .await?
        .context("admin bind over ldaps")?;
    let owner = domain_head_attr(&mut ldap, &dc, "fSMORoleOwner").await?;
    assert!(
        owner.starts_with("CN=NTDS Settings,CN=DC1,CN=Servers,"),
        "the pdc emulator is dc1: {owner}"
    );
    assert_eq!(
        domain_head_attr(&mut ldap, &dc, "minPwdAge").await?,
        ONE_DAY,
        "samba's default minimum password age is one day"
    );
    dc.set_min_password_age_days(3).await?;
    assert_eq!(
        domain_head_attr(&mut ldap, &dc, "minPwdAge").await?,
        "-2592000000000"
    );
    dc.set_min_password_age_days(1).await?;
    assert_eq!(
        domain_head_attr(&mut ldap, &dc, "minPwdAge").await?,
        ONE_DAY
    );
    ldap.unbind().await?;

    // Checked by process, not by port: once dropped, the DC's loopback address is free for
    // another test's DC to claim at once.
    let pid = dc.pid().expect("a started DC has a process");
    drop(dc);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "a dropped dc no longer runs"
    );
    Ok(())
}

#[tokio::test]
async fn samba_dc_authenticates_added_users_and_serves_added_dns_records() -> anyhow::Result<()> {
    let Some(dc) = SambaDc::start_or_skip().await? else {
        return Ok(());
    };
    let wrong = ldaps_bind(&dc, dc.ip(), &dc.admin_bind(), "not-the-password").await?;
    match wrong {
        Err(ldap3::LdapError::LdapResult { result }) => {
            assert_eq!(result.rc, INVALID_CREDENTIALS, "{result}");
        }
        Err(other) => panic!("a wrong password fails the bind, not the connection: {other:#}"),
        Ok(_) => panic!("a wrong password must not bind"),
    }

    dc.add_user("alice", "Alice-pw-1234!").await?;
    for alice in [
        format!("alice@{}", dc.realm()),
        format!("{}\\alice", dc.netbios()),
    ] {
        ldaps_bind(&dc, dc.ip(), &alice, "Alice-pw-1234!")
            .await?
            .with_context(|| format!("the added user binds as {alice}"))?
            .unbind()
            .await?;
    }

    let app = Ipv4Addr::new(127, 0, 0, 201);
    dc.add_dns_a("app1", app).await?;
    let name = format!("app1.{}", dc.realm().to_lowercase());
    assert_eq!(dc.lookup_a(&name).await?, vec![app]);
    Ok(())
}

#[tokio::test]
async fn two_samba_dcs_run_side_by_side() -> anyhow::Result<()> {
    if let Some(reason) = SambaDc::unavailable_reason() {
        crate::support::skip_or_fail(&reason);
        return Ok(());
    }
    let (first, second) = tokio::join!(SambaDc::start(), SambaDc::start());
    let (first, second) = (first?, second?);
    assert_ne!(first.ip(), second.ip());
    assert_ne!(first.realm(), second.realm());
    for dc in [&first, &second] {
        assert_eq!(dc.lookup_a(&dc.fqdn()).await?, vec![dc.ip()]);
        ldaps_bind(dc, dc.ip(), &dc.admin_bind(), dc.admin_password())
            .await?
            .with_context(|| format!("admin bind to {}", dc.fqdn()))?
            .unbind()
            .await?;
    }
    assert!(
        second.lookup_a(&first.fqdn()).await.is_err(),
        "a dc's dns knows only its own domain"
    );
    Ok(())
}

#[tokio::test]
async fn https_endpoint_is_trusted_only_through_its_ca() -> anyhow::Result<()> {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
    let missing_token = "MissingToken: The request contains no authorization header";
    let endpoint = HttpsEndpoint::start(&cert, &key, 401, missing_token)?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes())?)
        .timeout(Duration::from_secs(10))
        .build()?;

    let response = client
        .post(format!(
            "https://127.0.0.1:{}/wbhealth/$hc",
            endpoint.port()
        ))
        .body("ping")
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().await?, missing_token);
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("POST /wbhealth/$hc HTTP/1.1"),
        "{requests:?}"
    );

    let other_ca = TestCa::new();
    let (cert, key) = other_ca.issue(&["127.0.0.1"]);
    let untrusted = HttpsEndpoint::start(&cert, &key, 200, "ok")?;
    let error = client
        .get(format!("https://127.0.0.1:{}/", untrusted.port()))
        .send()
        .await
        .expect_err("a certificate from another CA is rejected");
    assert!(error.is_connect(), "{error:?}");
    assert!(untrusted.requests().is_empty());

    let error = client
        .get(format!("https://127.0.0.1:{}/", refusing_port()))
        .send()
        .await
        .expect_err("nothing listens on a refusing port");
    assert!(error.is_connect(), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_empty_and_separate() -> anyhow::Result<()> {
    let Some(first) = fresh_database().await else {
        return Ok(());
    };
    let Some(second) = fresh_database().await else {
        return Ok(());
    };
    assert_ne!(first, second);

    let mut conn = sqlx::PgConnection::connect(&first).await?;
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut conn)
        .await?;
    assert!(first.ends_with(&format!("/{name}")), "{first} names {name}");
    let count_tables =
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";
    let tables: i64 = sqlx::query_scalar(count_tables)
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(tables, 0);
    sqlx::query("CREATE TABLE marker (id integer)")
        .execute(&mut conn)
        .await?;

    let mut other = sqlx::PgConnection::connect(&second).await?;
    let tables: i64 = sqlx::query_scalar(count_tables)
        .fetch_one(&mut other)
        .await?;
    assert_eq!(tables, 0, "a table in one fresh database is not in another");
    Ok(())
}

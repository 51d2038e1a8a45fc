//! JWT bearer tokens: session tokens the server issues at sign-in, and access tokens of an
//! external OIDC provider (a fake Entra ID on loopback HTTPS, `support::oidc`).
//!
//! Every refused token must get the same 401 whatever check failed. Each refusal comes from
//! its own loopback address (127.0.0.x) so the failed-authentication limit of one address does
//! not end the test early.

use std::net::IpAddr;

use anyhow::Context as _;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use wbhealth_server::domain::MasterKey;

use crate::support::oidc::{FakeIdp, SigningKey};
use crate::support::server::{TestServer, sqlite_url};

/// `GET /api/v1{path}` with `token`, from `127.0.0.{from}`; returns status and body text.
async fn get_from(
    server: &TestServer,
    from: u8,
    token: &str,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, from]))
        .build()?;
    let response = client
        .get(format!("{}/api/v1{path}", server.base_url()))
        .bearer_auth(token)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// Asserts that every token in `refused` gets the one 401, each from its own address.
async fn assert_all_refused(server: &TestServer, refused: &[(&str, String)]) -> anyhow::Result<()> {
    let mut bodies = Vec::new();
    for (i, (what, token)) in refused.iter().enumerate() {
        let from = 10 + u8::try_from(i).context("few cases")?;
        let (status, body) = get_from(server, from, token, "/tenants").await?;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            !body.contains(token.as_str()),
            "{what}: the token is echoed"
        );
        bodies.push((what, body));
    }
    for (what, body) in &bodies {
        assert_eq!(
            body, &bodies[0].1,
            "{what}: every refusal looks the same, whatever check failed"
        );
    }
    Ok(())
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with this header and claims and no signature at all (`alg: none`).
fn unsigned(header: Value, claims: &Value) -> String {
    format!("{}.{}.", b64(&header), b64(claims))
}

/// The token with its payload replaced and its original signature kept.
fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims), parts[2])
}

/// Tenants A and B, and an OIDC-configured server whose role map gives administrators,
/// technicians of A and viewers of B.
struct OidcWorld {
    _dir: tempfile::TempDir,
    server: TestServer,
    idp: FakeIdp,
    a: String,
    b: String,
}

async fn oidc_world(keys: &[&SigningKey], refetch_seconds: u32) -> anyhow::Result<OidcWorld> {
    let dir = tempfile::tempdir()?;
    let idp = FakeIdp::start(keys)?;
    // Tenants are made first, so that the role map can name them; then the server restarts
    // with OIDC.
    let mut server = TestServer::start(&sqlite_url(&dir)).await?;
    let a = server.create_tenant("Alpha Corp").await?;
    let b = server.create_tenant("Bravo Ltd").await?;
    let role_map = FakeIdp::role_map(
        &dir,
        "roles",
        &[
            ("WBHealth.Admin", "administrator", &[][..]),
            ("WBHealth.Tech.A", "technician", &[a.as_str()][..]),
            ("WBHealth.View.B", "viewer", &[b.as_str()][..]),
        ],
    )?;
    server
        .restart_with(|config| {
            idp.configure(config, role_map);
            config.oidc_jwks_refetch_seconds = refetch_seconds;
        })
        .await?;
    Ok(OidcWorld {
        _dir: dir,
        server,
        idp,
        a,
        b,
    })
}

#[tokio::test]
async fn oidc_tokens_get_the_role_and_tenants_their_claims_map_to() -> anyhow::Result<()> {
    let key = SigningKey::ec("ec-1")?;
    let w = oidc_world(&[&key], 60).await?;
    let server = &w.server;
    let tech = key.sign(
        &w.idp
            .claims("tech-subject", &["WBHealth.Tech.A", "Unrelated"]),
    )?;
    let viewer = key.sign(&w.idp.claims("viewer-subject", &["WBHealth.View.B"]))?;
    let admin = key.sign(&w.idp.claims("admin-subject", &["WBHealth.Admin"]))?;

    // The technician sees and acts on A only.
    let (s, tenants) = server
        .call_as(Some(&tech), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "{tenants}");
    assert_eq!(
        tenants["items"].as_array().map(Vec::len),
        Some(1),
        "{tenants}"
    );
    assert_eq!(tenants["items"][0]["id"], json!(w.a));
    let (s, _) = server
        .call_as(
            Some(&tech),
            Method::GET,
            &format!("/tenants/{}/status", w.b),
            None,
        )
        .await?;
    assert_eq!(s, 404, "another tenant does not exist for it");
    let (s, token) = server
        .call_as(
            Some(&tech),
            Method::POST,
            &format!("/tenants/{}/enrollment-tokens", w.a),
            Some(json!({"description": "by an OIDC technician"})),
        )
        .await?;
    assert_eq!(s, 201, "{token}");
    let (s, _) = server
        .call_as(Some(&tech), Method::GET, "/users", None)
        .await?;
    assert_eq!(s, 403);

    // The viewer reads B and changes nothing.
    let (s, tenants) = server
        .call_as(Some(&viewer), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);
    assert_eq!(tenants["items"][0]["id"], json!(w.b), "{tenants}");
    let (s, _) = server
        .call_as(
            Some(&viewer),
            Method::POST,
            &format!("/tenants/{}/enrollment-tokens", w.b),
            Some(json!({})),
        )
        .await?;
    assert_eq!(s, 403);

    // The administrator sees everything, including the audit log that names the subject.
    let (s, tenants) = server
        .call_as(Some(&admin), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(
        (s, tenants["items"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    let (s, log) = server
        .call_as(
            Some(&admin),
            Method::GET,
            &format!("/audit-events?tenant_id={}", w.a),
            None,
        )
        .await?;
    assert_eq!(s, 200, "{log}");
    let event = log["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "enrollment_token.created" && e["target_id"] == token["id"])
        .with_context(|| format!("the technician's change is audited: {log:#}"))?;
    let name = event["principal_name"].as_str().unwrap_or_default();
    assert!(
        name.contains("tech-subject"),
        "the audit names the OIDC subject: {name}"
    );

    // No mapped value, no claim at all: no access, never a default role.
    let unmapped = key.sign(&w.idp.claims("nobody", &["Unrelated"]))?;
    let mut no_claim = w.idp.claims("nobody", &[]);
    no_claim.as_object_mut().context("claims")?.remove("roles");
    assert_all_refused(
        server,
        &[
            ("unmapped roles", unmapped),
            ("no roles claim", key.sign(&no_claim)?),
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn oidc_tokens_are_refused_for_each_flaw() -> anyhow::Result<()> {
    let ec = SigningKey::ec("ec-1")?;
    let rsa = SigningKey::rsa("rsa-1")?;
    let mut keys = vec![&ec];
    keys.extend(rsa.as_ref());
    let w = oidc_world(&keys, 60).await?;
    let server = &w.server;
    let good = w.idp.claims("tech-subject", &["WBHealth.Tech.A"]);
    let valid = ec.sign(&good)?;
    let (s, body) = server
        .call_as(Some(&valid), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "a valid token works: {body}");

    let claims_with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        claims
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stranger = SigningKey::ec("ec-1")?; // same kid, not the provider's key
    let unknown = SigningKey::ec("never-published")?;
    let mut refused = vec![
        (
            "alg none",
            unsigned(json!({"alg": "none", "typ": "JWT", "kid": "ec-1"}), &good),
        ),
        ("HS256 with the JWK's public coordinates as the secret", {
            let secret = ec.jwk["x"].as_str().unwrap_or_default().as_bytes().to_vec();
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("ec-1".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&secret))?
        }),
        ("expired", ec.sign(&claims_with("exp", json!(now - 3600)))?),
        (
            "not yet valid",
            ec.sign(&claims_with("nbf", json!(now + 3600)))?,
        ),
        (
            "wrong issuer",
            ec.sign(&claims_with(
                "iss",
                json!("https://login.microsoftonline.com/other/v2.0"),
            ))?,
        ),
        (
            "issuer of the provider with another tenant path",
            ec.sign(&claims_with("iss", json!(format!("{}x", w.idp.issuer))))?,
        ),
        (
            "wrong audience",
            ec.sign(&claims_with("aud", json!("api://someone-else")))?,
        ),
        ("unknown key id", unknown.sign(&good)?),
        (
            "signed by a key that is not the provider's",
            stranger.sign(&good)?,
        ),
        (
            "tampered payload (administrator role pasted in)",
            with_payload(&valid, &claims_with("roles", json!(["WBHealth.Admin"]))),
        ),
        ("no subject", {
            let mut claims = good.clone();
            claims.as_object_mut().context("claims")?.remove("sub");
            ec.sign(&claims)?
        }),
    ];
    match &rsa {
        Some(rsa) => {
            let (s, body) = server
                .call_as(Some(&rsa.sign(&good)?), Method::GET, "/tenants", None)
                .await?;
            assert_eq!(s, 200, "an RS256 token works: {body}");
            let public_pem = rsa.public_pem.clone().context("RSA public key")?;
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(rsa.kid.clone());
            refused.push((
                "HS/RS confusion: HS256 signed with the RSA public key",
                jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&public_pem))?,
            ));
            refused.push((
                "wrong algorithm: RS384 where the JWK declares RS256",
                rsa.sign_as(Algorithm::RS384, &good)?,
            ));
        }
        None => crate::support::skip_or_fail(
            "no openssl command to make RSA keys; the RS256 cases are not run",
        ),
    }
    assert_all_refused(server, &refused).await?;
    Ok(())
}

#[tokio::test]
async fn oidc_key_rotation_needs_no_restart() -> anyhow::Result<()> {
    let old = SigningKey::ec("2026-old")?;
    let new = SigningKey::ec("2026-new")?;
    let next = SigningKey::ec("2027")?;
    let w = oidc_world(&[&old], 1).await?;
    let server = &w.server;
    let claims = w.idp.claims("tech-subject", &["WBHealth.Tech.A"]);
    let (s, _) = server
        .call_as(Some(&old.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);
    assert_eq!(w.idp.jwks_fetches(), 1, "fetched once, then cached");
    let (s, _) = server
        .call_as(Some(&old.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(
        (s, w.idp.jwks_fetches()),
        (200, 1),
        "a known key needs no fetch"
    );

    // The provider publishes a new key and signs with it: the unknown kid refetches (once the
    // one-second floor between fetches has passed).
    w.idp.serve_keys(&[&old, &new]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, body) = server
        .call_as(Some(&new.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "the new key works without a restart: {body}");
    assert_eq!(w.idp.jwks_fetches(), 2);

    // The old key is withdrawn; the next fetch (here caused by yet another new key) drops it.
    w.idp.serve_keys(&[&new, &next]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _) = server
        .call_as(Some(&next.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);
    let (s, _) = server
        .call_as(Some(&new.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);
    let (s, body) = get_from(server, 20, &old.sign(&claims)?, "/tenants").await?;
    assert_eq!(s, 401, "a token of the withdrawn key is refused: {body}");
    Ok(())
}

#[tokio::test]
async fn unknown_key_ids_refetch_at_most_once_per_interval() -> anyhow::Result<()> {
    let old = SigningKey::ec("old")?;
    let new = SigningKey::ec("new")?;
    let w = oidc_world(&[&old], 3600).await?;
    let server = &w.server;
    let claims = w.idp.claims("tech-subject", &["WBHealth.Tech.A"]);
    let (s, _) = server
        .call_as(Some(&old.sign(&claims)?), Method::GET, "/tenants", None)
        .await?;
    assert_eq!((s, w.idp.jwks_fetches()), (200, 1));
    w.idp.serve_keys(&[&old, &new]);
    for from in 30..33 {
        let made_up = SigningKey::ec(&format!("made-up-{from}"))?;
        let (s, _) = get_from(server, from, &made_up.sign(&claims)?, "/tenants").await?;
        assert_eq!(s, 401);
    }
    assert_eq!(
        w.idp.jwks_fetches(),
        1,
        "made-up key ids within the interval do not make the server fetch"
    );
    Ok(())
}

/// A server whose master key the test knows, so it can forge session tokens.
async fn server_with_known_key(dir: &tempfile::TempDir) -> anyhow::Result<(TestServer, [u8; 32])> {
    let bytes = MasterKey::generate();
    let server = TestServer::start_with(&sqlite_url(dir), |config| {
        config.secret_key = Some(
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        );
    })
    .await?;
    Ok((server, bytes))
}

#[tokio::test]
async fn session_tokens_follow_the_user_record_and_sign_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, master) = server_with_known_key(&dir).await?;
    let a = server.create_tenant("Alpha Corp").await?;
    let b = server.create_tenant("Bravo Ltd").await?;
    let password = "alice's long password";
    let (user, token) = server
        .create_signed_in_user("alice@msp.example", "technician", &[&a], password)
        .await?;

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sign-in", server.base_url()))
        .json(&json!({"name": "alice@msp.example", "password": password}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "a token response is not cached"
    );

    // Wrong password, unknown name, a user without password: the same 401.
    let (s1, wrong) = server
        .sign_in("alice@msp.example", "not her password")
        .await?;
    let (s2, unknown) = server.sign_in("mallory@msp.example", password).await?;
    let (s, created) = server
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "bob@msp.example", "role": "viewer", "tenant_ids": [a]})),
        )
        .await?;
    assert_eq!(s, 201, "{created}");
    let (s3, no_password) = server.sign_in("bob@msp.example", "").await?;
    assert_eq!((s1, s2, s3), (401, 401, 401));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, no_password);

    // The token works with the user's role and tenants, read fresh on every request.
    let (s, tenants) = server
        .call_as(Some(&token), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "{tenants}");
    assert_eq!(tenants["items"][0]["id"], json!(a));
    assert_eq!(tenants["items"].as_array().map(Vec::len), Some(1));
    let (s, _) = server
        .call_as(Some(&token), Method::GET, "/users", None)
        .await?;
    assert_eq!(s, 403, "a technician manages no users");
    let tokens = format!("/tenants/{a}/enrollment-tokens");
    let (s, body) = server
        .call_as(Some(&token), Method::POST, &tokens, Some(json!({})))
        .await?;
    assert_eq!(s, 201, "a technician makes enrollment tokens: {body}");
    let (s, body) = server
        .call(
            Method::PUT,
            &format!("/users/{user}/role"),
            Some(json!({"role": "viewer", "tenant_ids": [a]})),
        )
        .await?;
    assert_eq!(s, 200, "{body}");
    let (s, _) = server
        .call_as(Some(&token), Method::POST, &tokens, Some(json!({})))
        .await?;
    assert_eq!(s, 403, "demoted to viewer: the same token no longer acts");
    let (s, _) = server
        .call_as(
            Some(&token),
            Method::GET,
            &format!("/tenants/{a}/status"),
            None,
        )
        .await?;
    assert_eq!(s, 200, "but still reads");
    let (s, _) = server
        .call(
            Method::PUT,
            &format!("/users/{user}/tenants"),
            Some(json!({"tenant_ids": [b]})),
        )
        .await?;
    assert_eq!(s, 200);
    let (_, tenants) = server
        .call_as(Some(&token), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(
        tenants["items"][0]["id"],
        json!(b),
        "reassignment applies to the token at once: {tenants}"
    );
    let (s, _) = server
        .call_as(
            Some(&token),
            Method::GET,
            &format!("/tenants/{a}/status"),
            None,
        )
        .await?;
    assert_eq!(s, 404);

    // Signing out revokes this token only; an API key cannot be "signed out".
    let (s, again) = server.sign_in("alice@msp.example", password).await?;
    assert_eq!(s, 200, "{again}");
    let second = again["token"].as_str().context("token")?.to_owned();
    let (s, body) = server.call(Method::POST, "/sign-out", None).await?;
    assert_eq!(s, 403, "{body}");
    let (s, _) = server
        .call_as(Some(&token), Method::POST, "/sign-out", None)
        .await?;
    assert_eq!(s, 204);
    let (s, _) = get_from(&server, 40, &token, "/tenants").await?;
    assert_eq!(s, 401, "a signed-out token is refused");
    let (s, _) = server
        .call_as(Some(&second), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "another session of the user still works");

    // A new password (after a compromise, say) ends every session signed in with the old one;
    // signing in with the new one works.
    let new_password = "alice's new long password";
    let (s, body) = server
        .call(
            Method::PUT,
            &format!("/users/{user}/password"),
            Some(json!({"password": new_password})),
        )
        .await?;
    assert_eq!(s, 204, "{body}");
    let (s, _) = server
        .call_as(Some(&second), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(
        s, 401,
        "a session from before the password change is refused"
    );
    let (s, old) = server.sign_in("alice@msp.example", password).await?;
    assert_eq!(s, 401, "{old}");
    let (s, fresh) = server.sign_in("alice@msp.example", new_password).await?;
    assert_eq!(s, 200, "{fresh}");
    let third = fresh["token"].as_str().context("token")?.to_owned();
    let (s, _) = server
        .call_as(Some(&third), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200, "a session after the change works");

    // Sign-in and sign-out are in the audit log, under the user.
    let log = server
        .get(&format!("/audit-events?principal_id={user}"))
        .await?;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "user.signed_in",
            "user.signed_in",
            "enrollment_token.created",
            "user.signed_in",
            "user.signed_out",
            "user.signed_in"
        ],
        "{log:#}"
    );

    // Disabling the user stops its sessions and its sign-in at once; enabling restores them.
    let disable = async |disabled: bool| {
        let (s, body) = server
            .call(
                Method::PUT,
                &format!("/users/{user}/disabled"),
                Some(json!({ "disabled": disabled })),
            )
            .await?;
        anyhow::ensure!(s == 200, "{s}: {body}");
        anyhow::Ok(body)
    };
    let disabled = disable(true).await?;
    assert!(disabled["disabled_at"].is_string(), "{disabled}");
    let (s, _) = get_from(&server, 42, &third, "/tenants").await?;
    assert_eq!(s, 401, "a disabled user's token is refused");
    let (s, _) = server.sign_in("alice@msp.example", new_password).await?;
    assert_eq!(s, 401, "a disabled user cannot sign in");
    let enabled = disable(false).await?;
    assert!(enabled["disabled_at"].is_null(), "{enabled}");
    let (s, _) = server
        .call_as(Some(&third), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);

    // Deleting the user ends every session at once.
    let (s, _) = server
        .call(Method::DELETE, &format!("/users/{user}"), None)
        .await?;
    assert_eq!(s, 204);
    let (s, _) = get_from(&server, 41, &third, "/tenants").await?;
    assert_eq!(s, 401, "a deleted user's token is refused");

    // Forged and damaged session tokens, all refused alike.
    let (_, live_token) = server
        .create_signed_in_user("carol@msp.example", "viewer", &[&a], password)
        .await?;
    let carol: Value = {
        let payload = live_token.split('.').nth(1).context("payload")?;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?
    };
    let secret = MasterKey::from_bytes(master).derive("session signing");
    let forge = |alg: Algorithm, claims: &Value| {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(&secret),
        )
    };
    let (s, _) = server
        .call_as(
            Some(&forge(Algorithm::HS256, &carol)?),
            Method::GET,
            "/tenants",
            None,
        )
        .await?;
    assert_eq!(s, 200, "the forging helper makes valid tokens");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |field: &str, value: Value| {
        let mut claims = carol.clone();
        claims[field] = value;
        claims
    };
    let without = |field: &str| {
        let mut claims = carol.clone();
        if let Some(map) = claims.as_object_mut() {
            map.remove(field);
        }
        claims
    };
    let other_key = EncodingKey::from_secret(
        &MasterKey::from_bytes(MasterKey::generate()).derive("session signing"),
    );
    assert_all_refused(
        &server,
        &[
            (
                "expired",
                forge(Algorithm::HS256, &with("exp", json!(now - 60)))?,
            ),
            (
                "not yet valid",
                forge(Algorithm::HS256, &with("nbf", json!(now + 600)))?,
            ),
            (
                "wrong audience",
                forge(Algorithm::HS256, &with("aud", json!("someone-else")))?,
            ),
            ("no expiry", forge(Algorithm::HS256, &without("exp"))?),
            ("no nbf", forge(Algorithm::HS256, &without("nbf"))?),
            ("HS384", forge(Algorithm::HS384, &carol)?),
            (
                "alg none",
                unsigned(json!({"alg": "none", "typ": "JWT"}), &carol),
            ),
            (
                "signed with another server's key",
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &carol, &other_key)?,
            ),
            (
                "a user that does not exist",
                forge(Algorithm::HS256, &with("sub", json!(uuid::Uuid::now_v7())))?,
            ),
            (
                "tampered payload",
                with_payload(&live_token, &with("sub", json!(user))),
            ),
        ],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn api_keys_a_user_creates_never_outrank_or_outlive_the_user() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let a = server.create_tenant("Alpha Corp").await?;
    let b = server.create_tenant("Bravo Ltd").await?;
    let (user, session) = server
        .create_signed_in_user(
            "root@msp.example",
            "administrator",
            &[],
            "root's long password",
        )
        .await?;
    let new_key = json!({"name": "script", "role": "technician", "tenant_ids": [a, b]});
    let (s, created) = server
        .call_as(
            Some(&session),
            Method::POST,
            "/api-keys",
            Some(new_key.clone()),
        )
        .await?;
    assert_eq!(s, 201, "{created}");
    let key = created["key"].as_str().context("key")?.to_owned();
    let (_, unbound) = server
        .create_key("unbound", "technician", &[&a, &b], &[])
        .await?;
    let tenants_of = async |key: &str| {
        let (s, page) = server
            .call_as(Some(key), Method::GET, "/tenants", None)
            .await?;
        anyhow::ensure!(s == 200, "{s}: {page}");
        let mut ids: Vec<String> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        anyhow::Ok(ids)
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(tenants_of(&key).await?, both);
    // A key made with a key the user owns belongs to the user as well.
    let (s, admin_key) = server
        .call_as(
            Some(&session),
            Method::POST,
            "/api-keys",
            Some(json!({"name": "admin script", "role": "administrator"})),
        )
        .await?;
    assert_eq!(s, 201, "{admin_key}");
    let admin_key = admin_key["key"].as_str().context("key")?.to_owned();
    let (s, grandchild) = server
        .call_as(
            Some(&admin_key),
            Method::POST,
            "/api-keys",
            Some(new_key.clone()),
        )
        .await?;
    assert_eq!(s, 201, "{grandchild}");
    let grandchild = grandchild["key"].as_str().context("key")?.to_owned();
    assert_eq!(tenants_of(&grandchild).await?, both);

    // The owner is demoted to a technician of A: the key sees A only.
    let demote = async |role: &str| {
        let (s, body) = server
            .call(
                Method::PUT,
                &format!("/users/{user}/role"),
                Some(json!({"role": role, "tenant_ids": [a]})),
            )
            .await?;
        anyhow::ensure!(s == 200, "{s}: {body}");
        anyhow::Ok(())
    };
    demote("technician").await?;
    assert_eq!(tenants_of(&key).await?, vec![a.clone()]);
    assert_eq!(
        tenants_of(&grandchild).await?,
        vec![a.clone()],
        "so is a key made with the user's key"
    );
    let (s, _) = server
        .call_as(
            Some(&key),
            Method::GET,
            &format!("/tenants/{b}/status"),
            None,
        )
        .await?;
    assert_eq!(s, 404);
    let tokens = format!("/tenants/{a}/enrollment-tokens");
    let (s, _) = server
        .call_as(Some(&key), Method::POST, &tokens, Some(json!({})))
        .await?;
    assert_eq!(
        s, 201,
        "a technician's key acts while its owner is a technician"
    );

    // ... then to a viewer: the technician key no longer acts, it only reads.
    demote("viewer").await?;
    let (s, _) = server
        .call_as(Some(&key), Method::POST, &tokens, Some(json!({})))
        .await?;
    assert_eq!(s, 403);
    let (s, _) = server
        .call_as(
            Some(&key),
            Method::GET,
            &format!("/tenants/{a}/status"),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    assert_eq!(
        tenants_of(&unbound).await?,
        both,
        "a key made with an API key belongs to nobody"
    );

    // The owner is disabled: the key stops with it.
    for (disabled, expected) in [(true, 401), (false, 200)] {
        let (s, body) = server
            .call(
                Method::PUT,
                &format!("/users/{user}/disabled"),
                Some(json!({ "disabled": disabled })),
            )
            .await?;
        assert_eq!(s, 200, "{body}");
        let (s, _) = server
            .call_as(Some(&key), Method::GET, "/tenants", None)
            .await?;
        assert_eq!(s, expected, "owner disabled: {disabled}");
    }

    // The owner is deleted: the key is dead.
    let (s, _) = server
        .call(Method::DELETE, &format!("/users/{user}"), None)
        .await?;
    assert_eq!(s, 204);
    let (s, _) = server
        .call_as(Some(&key), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 401, "a deleted user's keys are refused");
    Ok(())
}

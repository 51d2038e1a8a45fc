//! Multi-tenant access control, proven against the OpenAPI document: every documented
//! operation is called by a principal of each role with another tenant's ids, and must read
//! and change nothing outside the caller's tenants. A route added later is walked too, with no
//! one having to remember to add it here.
//!
//! Also: what each role may do in its own tenants, the audit log, API key management,
//! rate-limited failed authentication, and secrets that never appear in logs, errors or
//! responses.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::agent::server_binary;
use crate::support::oidc::{FakeIdp, SigningKey};
use crate::support::server::{TestServer, sqlite_url};

/// Every operation an integration key may be granted.
const TENANT_OPERATIONS: [&str; 8] = [
    "tenants.read",
    "agents.read",
    "agents.run",
    "status.read",
    "fleet.read",
    "checks.read",
    "enrollment_tokens.read",
    "enrollment_tokens.manage",
];

/// One tenant's objects, one of each kind a path can name.
struct Site {
    tenant: String,
    name: String,
    agent: String,
    token: String,
}

/// Two tenants, objects outside both, and a non-administrator key of each role limited to
/// tenant A.
struct World {
    server: TestServer,
    /// The OIDC provider whose technician of tenant A is one of the principals.
    _idp: FakeIdp,
    a: Site,
    b: Site,
    /// An API key and a user that belong with tenant B (global objects: administrators only).
    b_key: String,
    b_user: String,
    /// (role label, key id, secret)
    principals: Vec<(&'static str, String, String)>,
}

async fn site(server: &TestServer, name: &str) -> anyhow::Result<Site> {
    let tenant = server.create_tenant(name).await?;
    let agent = server
        .enroll_agent(&tenant, &format!("{name}-SYNC01"))
        .await?;
    let (token, _) = server.enrollment_token(&tenant, 3).await?;
    Ok(Site {
        tenant,
        name: name.to_owned(),
        agent,
        token,
    })
}

async fn world() -> anyhow::Result<(tempfile::TempDir, World)> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let a = site(&server, "Alpha Corp").await?;
    let b = site(&server, "Bravo Ltd").await?;
    let (b_key, _) = server
        .create_key("bravo viewer", "viewer", &[&b.tenant], &[])
        .await?;
    let (status, user) = server
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "bravo@customer.example", "role": "viewer", "tenant_ids": [b.tenant]})),
        )
        .await?;
    anyhow::ensure!(status == 201, "user: {status} {user}");
    let b_user = user["id"].as_str().context("user id")?.to_owned();
    let mut principals = Vec::new();
    for (label, role, operations) in [
        ("technician", "technician", &[][..]),
        ("viewer", "viewer", &[][..]),
        ("integration", "integration", &TENANT_OPERATIONS[..]),
        ("narrow integration", "integration", &["status.read"][..]),
    ] {
        let (id, secret) = server
            .create_key(label, role, &[&a.tenant], operations)
            .await?;
        principals.push((label, id, secret));
    }
    // A person signed in with a session token: the same walk must hold for users.
    let (id, token) = server
        .create_signed_in_user(
            "technician@msp.example",
            "technician",
            &[&a.tenant],
            "technician password",
        )
        .await?;
    principals.push(("session technician", id, token));
    // And a technician of tenant A at an external OIDC provider.
    let idp_key = SigningKey::ec("walk")?;
    let idp = FakeIdp::start(&[&idp_key])?;
    let role_map = FakeIdp::role_map(
        &dir,
        "groups",
        &[("walk-technicians-a", "technician", &[a.tenant.as_str()][..])],
    )?;
    let mut server = server;
    server
        .restart_with(|config| idp.configure(config, role_map))
        .await?;
    let mut claims = idp.claims("walk-subject", &[]);
    claims["groups"] = json!(["walk-technicians-a"]);
    principals.push(("oidc technician", String::new(), idp_key.sign(&claims)?));
    Ok((
        dir,
        World {
            server,
            _idp: idp,
            a,
            b,
            b_key,
            b_user,
            principals,
        },
    ))
}

/// One documented operation.
struct Operation {
    method: Method,
    /// The path below `/api/v1`, with `{placeholders}`.
    path: String,
    /// The names of its query parameters.
    query: Vec<String>,
    /// A valid request body built from its schema, if it takes one.
    body: Option<Value>,
    /// Whether it needs no credential (signing in): its security requirement is empty.
    public: bool,
}

/// Every operation of the served OpenAPI document; request bodies are filled from their
/// schemas with `uuid` for every id in them.
fn operations(doc: &Value, uuid: &str) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"]
                .as_object()
                .map(|schema| sample(doc, &Value::Object(schema.clone()), uuid));
            ops.push(Operation {
                public: op["security"] == json!([{}]),
                method,
                path: path
                    .strip_prefix("/api/v1")
                    .expect("every path is under /api/v1")
                    .to_owned(),
                query,
                body,
            });
        }
    }
    ops
}

/// A value that fits `schema`: its example where it has one, `uuid` for every UUID.
fn sample(doc: &Value, schema: &Value, uuid: &str) -> Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return sample(doc, &doc["components"]["schemas"][name], uuid);
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        if let Some(first) = schema[combinator].as_array().and_then(|s| s.first()) {
            return sample(doc, first, uuid);
        }
    }
    if schema["format"] == "uuid" {
        return json!(uuid);
    }
    if !schema["example"].is_null() {
        return schema["example"].clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .find(|k| *k != "null")
            .cloned()
            .unwrap_or(Value::Null),
        kind => kind.clone(),
    };
    match kind.as_str() {
        Some("object") => Value::Object(
            schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), sample(doc, property, uuid)))
                .collect(),
        ),
        Some("array") => json!([sample(doc, &schema["items"], uuid)]),
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        _ => json!("e2e"),
    }
}

/// The concrete path of `op` with `ids` for its placeholders, and `tenant` for a `tenant_id`
/// query parameter. A placeholder nobody taught this test fails it, loudly.
fn concrete(op: &Operation, ids: &BTreeMap<&str, String>) -> String {
    let mut path = op.path.clone();
    while let Some(start) = path.find('{') {
        let end = path[start..].find('}').expect("a closed placeholder") + start;
        let name = &path[start + 1..end];
        let id = ids.get(name).unwrap_or_else(|| {
            panic!(
                "{} {}: no id for {{{name}}}; teach tests/e2e/access_control.rs which object it names",
                op.method, op.path
            )
        });
        path.replace_range(start..=end, id);
    }
    if op.query.iter().any(|q| q == "tenant_id") {
        path.push_str(&format!("?tenant_id={}", ids["tenant_id"]));
    }
    path
}

/// The ids of `site` for each placeholder.
fn ids_of(world: &World, site: &Site) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("tenant_id", site.tenant.clone()),
        ("agent_id", site.agent.clone()),
        ("token_id", site.token.clone()),
        ("key_id", world.b_key.clone()),
        ("user_id", world.b_user.clone()),
    ])
}

/// Ids of nothing at all.
fn ids_of_nothing() -> BTreeMap<&'static str, String> {
    ["tenant_id", "agent_id", "token_id", "key_id", "user_id"]
        .into_iter()
        .map(|name| (name, uuid::Uuid::now_v7().to_string()))
        .collect()
}

/// What the administrator sees of everything, minus what reading itself changes (when keys
/// were last used, when agents were last seen).
async fn snapshot(world: &World) -> anyhow::Result<Value> {
    let server = &world.server;
    let mut keys = server.get("/api-keys?limit=200").await?;
    for key in keys["items"].as_array_mut().into_iter().flatten() {
        key["last_used_at"] = Value::Null;
    }
    let mut sites = Vec::new();
    for site in [&world.a, &world.b] {
        let mut agents = server
            .get(&format!("/tenants/{}/agents", site.tenant))
            .await?;
        for agent in agents.as_array_mut().into_iter().flatten() {
            agent["last_seen_at"] = Value::Null;
            agent["connected"] = Value::Null;
        }
        sites.push(json!({
            "agents": agents,
            "tokens": server.get(&format!("/tenants/{}/enrollment-tokens", site.tenant)).await?,
        }));
    }
    Ok(json!({
        "tenants": server.get("/tenants?limit=200").await?,
        "keys": keys,
        "users": server.get("/users?limit=200").await?,
        "audit": server.get("/audit-events?limit=200").await?,
        "sites": sites,
    }))
}

/// A response with every id of `ids` replaced by `<name>`, to compare "not yours" with "does
/// not exist".
fn normalized(body: &Value, ids: &BTreeMap<&str, String>) -> String {
    let mut text = body.to_string();
    for (name, id) in ids {
        text = text.replace(id.as_str(), &format!("<{name}>"));
    }
    text
}

#[tokio::test]
async fn no_role_reads_or_changes_another_tenant_through_any_documented_operation()
-> anyhow::Result<()> {
    let (_dir, world) = world().await?;
    let server = &world.server;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base_url()))
        .await?
        .json()
        .await?;
    let foreign = ids_of(&world, &world.b);
    let ops = operations(&doc, &world.b.tenant);
    assert!(ops.len() >= 19, "the document lists the API: {}", ops.len());
    let before = snapshot(&world).await?;

    // What would identify tenant B in a response that has no business mentioning it.
    let b_marks = [
        &world.b.tenant,
        &world.b.name,
        &world.b.agent,
        &world.b.token,
    ];
    let mut walked = 0;
    for (label, _, secret) in &world.principals {
        for op in &ops {
            if op.public {
                // Signing in with the sample body's made-up name and password: refused,
                // whoever asks.
                let (status, body) = server
                    .call_as(Some(secret), op.method.clone(), &op.path, op.body.clone())
                    .await?;
                assert_eq!(status, 401, "{label}: {} {}: {body}", op.method, op.path);
                walked += 1;
                continue;
            }
            if op.path == "/sign-out" && label.starts_with("session") {
                // Would end this principal's own session; tests/e2e/jwt.rs signs out.
                continue;
            }
            let path = concrete(op, &foreign);
            let (status, body) = server
                .call_as(Some(secret), op.method.clone(), &path, op.body.clone())
                .await?;
            walked += 1;
            let what = format!("{label}: {} {path} answered {status}: {body}", op.method);
            if op.path.contains('{') {
                // Naming B's objects: refused, and exactly as if they did not exist.
                assert!(status == 403 || status == 404, "{what}");
                if status == 404 {
                    let nothing = ids_of_nothing();
                    let (s, b) = server
                        .call_as(
                            Some(secret),
                            op.method.clone(),
                            &concrete(op, &nothing),
                            op.body.clone(),
                        )
                        .await?;
                    assert_eq!(
                        (s, normalized(&b, &nothing)),
                        (status, normalized(&body, &foreign)),
                        "{what}: not yours must look like does not exist"
                    );
                }
            } else {
                assert!(
                    status == 403 || op.method == Method::GET,
                    "a change outside a tenant is for administrators: {what}"
                );
                let text = body.to_string();
                for mark in b_marks {
                    assert!(
                        status != 200 || !text.contains(mark.as_str()),
                        "{what} shows tenant B ({mark})"
                    );
                }
            }
            // A's tenant with B's objects under it: still nothing of B.
            if op.path.starts_with("/tenants/{tenant_id}/") && op.path.matches('{').count() > 1 {
                let mut mixed = foreign.clone();
                mixed.insert("tenant_id", world.a.tenant.clone());
                let (status, body) = server
                    .call_as(
                        Some(secret),
                        op.method.clone(),
                        &concrete(op, &mixed),
                        op.body.clone(),
                    )
                    .await?;
                assert!(
                    status == 403 || status == 404,
                    "{label}: {} {} with tenant A and B's object answered {status}: {body}",
                    op.method,
                    op.path
                );
            }
        }
    }
    assert!(walked >= 6 * 19, "walked {walked} calls");
    assert_eq!(
        snapshot(&world).await?,
        before,
        "nothing changed, the audit log included"
    );
    Ok(())
}

#[tokio::test]
async fn a_viewer_changes_nothing_even_in_its_own_tenant() -> anyhow::Result<()> {
    let (_dir, world) = world().await?;
    let server = &world.server;
    let doc: Value = reqwest::get(format!("{}/api/v1/openapi.json", server.base_url()))
        .await?
        .json()
        .await?;
    let own = ids_of(&world, &world.a);
    let (_, _, viewer) = &world.principals[1];
    let before = snapshot(&world).await?;
    for op in operations(&doc, &world.a.tenant) {
        if op.method == Method::GET || op.public {
            continue;
        }
        let path = concrete(&op, &own);
        let (status, body) = server
            .call_as(Some(viewer), op.method.clone(), &path, op.body.clone())
            .await?;
        assert!(
            status == 403 || status == 404,
            "viewer: {} {path} answered {status}: {body}",
            op.method
        );
    }
    assert_eq!(snapshot(&world).await?, before);
    Ok(())
}

#[tokio::test]
async fn each_role_does_what_it_should_in_its_own_tenant() -> anyhow::Result<()> {
    let (_dir, world) = world().await?;
    let server = &world.server;
    let a = &world.a.tenant;
    let key = |label: &str| {
        world
            .principals
            .iter()
            .find(|(l, _, _)| *l == label)
            .map(|(_, id, secret)| (id.clone(), secret.clone()))
            .expect("a principal of that label")
    };
    let (tech_id, tech) = key("technician");
    let (_, viewer) = key("viewer");
    let (_, narrow) = key("narrow integration");

    // Lists and counts show only assigned tenants.
    for secret in [&tech, &viewer] {
        let (s, tenants) = server
            .call_as(Some(secret), Method::GET, "/tenants", None)
            .await?;
        assert_eq!(s, 200, "{tenants}");
        assert_eq!(tenants["items"].as_array().map(Vec::len), Some(1));
        assert_eq!(tenants["items"][0]["id"], json!(a));
        let (s, fleet) = server
            .call_as(Some(secret), Method::GET, "/fleet/summary", None)
            .await?;
        assert_eq!(s, 200, "{fleet}");
        assert_eq!(fleet["tenants"]["total"], 1, "{fleet}");
        assert_eq!(fleet["agents"]["total"], 1, "{fleet}");
        let (s, status) = server
            .call_as(
                Some(secret),
                Method::GET,
                &format!("/tenants/{a}/status"),
                None,
            )
            .await?;
        assert_eq!(s, 200, "{status}");
    }
    let (_, fleet) = server.call(Method::GET, "/fleet/summary", None).await?;
    assert_eq!(
        fleet["tenants"]["total"], 2,
        "the administrator sees both: {fleet}"
    );

    // A technician acts on its tenant; a viewer only reads.
    let new_token = json!({"description": "by the technician"});
    let (s, token) = server
        .call_as(
            Some(&tech),
            Method::POST,
            &format!("/tenants/{a}/enrollment-tokens"),
            Some(new_token.clone()),
        )
        .await?;
    assert_eq!(s, 201, "{token}");
    let (s, refused) = server
        .call_as(
            Some(&viewer),
            Method::POST,
            &format!("/tenants/{a}/enrollment-tokens"),
            Some(new_token),
        )
        .await?;
    assert_eq!(
        (s, refused["code"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    // Creating a tenant, keys and users is for administrators.
    let (s, _) = server
        .call_as(
            Some(&tech),
            Method::POST,
            "/tenants",
            Some(json!({"name": "Sneaky", "entra_tenant_id": uuid::Uuid::new_v4()})),
        )
        .await?;
    assert_eq!(s, 403);
    for path in ["/api-keys", "/users", "/audit-events"] {
        let (s, _) = server.call_as(Some(&tech), Method::GET, path, None).await?;
        assert_eq!(s, 403, "{path}");
    }

    // An integration does only what its key names.
    let (s, _) = server
        .call_as(
            Some(&narrow),
            Method::GET,
            &format!("/tenants/{a}/status"),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    let (s, _) = server
        .call_as(
            Some(&narrow),
            Method::GET,
            &format!("/tenants/{a}/agents"),
            None,
        )
        .await?;
    assert_eq!(s, 403);

    // The change is in the audit log: who, what, where, from where.
    let (s, log) = server
        .call(
            Method::GET,
            &format!("/audit-events?tenant_id={a}&principal_id={tech_id}"),
            None,
        )
        .await?;
    assert_eq!(s, 200, "{log}");
    let events = log["items"].as_array().context("items")?;
    assert_eq!(events.len(), 1, "{log:#}");
    assert_eq!(events[0]["action"], "enrollment_token.created");
    assert_eq!(events[0]["principal_name"], "technician");
    assert_eq!(events[0]["target_id"], token["id"]);
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
    // Agents enrolling over gRPC are changes too.
    let (_, log) = server
        .call(Method::GET, &format!("/audit-events?tenant_id={a}"), None)
        .await?;
    let enrolled = log["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "agent.enrolled")
        .with_context(|| format!("an agent.enrolled event: {log:#}"))?;
    assert_eq!(enrolled["target_id"], json!(world.a.agent));
    assert_eq!(enrolled["client_ip"], "127.0.0.1");
    // Paged with the opaque cursor.
    let (_, first) = server
        .call(Method::GET, "/audit-events?limit=1", None)
        .await?;
    let cursor = first["next_cursor"].as_str().context("more pages")?;
    let (s, second) = server
        .call(
            Method::GET,
            &format!("/audit-events?limit=1&cursor={cursor}"),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
    Ok(())
}

#[tokio::test]
async fn api_keys_are_shown_once_expire_record_use_and_revoke() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let tenant = server.create_tenant("Contoso").await?;
    let (s, created) = server
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"name": "ops", "role": "technician", "tenant_ids": [tenant], "expires_in_days": 30})),
        )
        .await?;
    assert_eq!(s, 201, "{created}");
    let secret = created["key"].as_str().context("key")?.to_owned();
    assert!(secret.starts_with("wbh_key_"));
    assert!(created["expires_at"].is_string());
    let id = created["id"].as_str().context("id")?.to_owned();

    let listed = server.get("/api-keys").await?;
    let find = |listed: &Value| {
        listed["items"]
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["id"] == json!(id)).cloned())
            .expect("the key is listed")
    };
    assert!(find(&listed)["last_used_at"].is_null());
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );
    let (s, _) = server
        .call_as(Some(&secret), Method::GET, "/tenants", None)
        .await?;
    assert_eq!(s, 200);
    assert!(find(&server.get("/api-keys").await?)["last_used_at"].is_string());

    // Assignments must fit the role; unknown tenants are refused.
    for bad in [
        json!({"name": "x", "role": "viewer"}),
        json!({"name": "x", "role": "administrator", "tenant_ids": [tenant]}),
        json!({"name": "x", "role": "integration", "tenant_ids": [tenant]}),
        json!({"name": "x", "role": "integration", "tenant_ids": [tenant], "operations": ["api_keys.manage"]}),
        json!({"name": "x", "role": "viewer", "tenant_ids": [tenant], "operations": ["status.read"]}),
    ] {
        let (s, body) = server
            .call(Method::POST, "/api-keys", Some(bad.clone()))
            .await?;
        assert_eq!(s, 400, "{bad} → {body}");
    }
    let (s, _) = server
        .call(
            Method::POST,
            "/api-keys",
            Some(json!({"name": "x", "role": "viewer", "tenant_ids": [uuid::Uuid::now_v7()]})),
        )
        .await?;
    assert_eq!(s, 404);

    let (s, revoked) = server
        .call(Method::DELETE, &format!("/api-keys/{id}"), None)
        .await?;
    assert_eq!(s, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (s, body) = server
        .call_as(Some(&secret), Method::GET, "/tenants", None)
        .await?;
    assert_eq!((s, body["code"].as_str()), (401, Some("unauthenticated")));

    // Users and their assignments.
    let (s, user) = server
        .call(
            Method::POST,
            "/users",
            Some(
                json!({"name": "alice@msp.example", "role": "technician", "tenant_ids": [tenant]}),
            ),
        )
        .await?;
    assert_eq!(s, 201, "{user}");
    let user_id = user["id"].as_str().context("id")?;
    let other = server.create_tenant("Fabrikam").await?;
    let (s, moved) = server
        .call(
            Method::PUT,
            &format!("/users/{user_id}/tenants"),
            Some(json!({"tenant_ids": [other]})),
        )
        .await?;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["tenant_ids"], json!([other]));
    assert_eq!(server.get(&format!("/users/{user_id}")).await?, moved);
    let (s, _) = server
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "alice@msp.example", "role": "viewer", "tenant_ids": [tenant]})),
        )
        .await?;
    assert_eq!(s, 409);
    Ok(())
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    // A request without a credential guesses nothing and is not counted.
    for _ in 0..12 {
        let (s, _) = server.call_as(None, Method::GET, "/tenants", None).await?;
        assert_eq!(s, 401);
    }
    for i in 0..10 {
        let (s, body) = server
            .call_as(
                Some(&format!("wbh_key_guess{i}")),
                Method::GET,
                "/tenants",
                None,
            )
            .await?;
        assert_eq!(s, 401, "{body}");
    }
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/tenants", server.base_url()))
        .bearer_auth("wbh_key_guess-again")
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .context("Retry-After")?
        .to_str()?
        .parse()?;
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await?;
    assert_eq!(body["code"], "rate_limited");
    // While the address is blocked, even a valid key waits.
    let (s, _) = server.call(Method::GET, "/tenants", None).await?;
    assert_eq!(s, 429);
    Ok(())
}

/// Runs the real `wbhealth-server` binary with debug logging, uses and misuses secrets, and
/// greps everything it printed.
#[tokio::test]
async fn secrets_never_appear_in_logs_errors_or_responses() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let idp_key = SigningKey::ec("secrets")?;
    let idp = FakeIdp::start(&[&idp_key])?;
    let role_map = FakeIdp::role_map(
        &dir,
        "roles",
        &[("Secrets.Admin", "administrator", &[][..])],
    )?;
    let mut child = Command::new(server_binary())
        .env("WBH_OIDC_ISSUER", &idp.issuer)
        .env("WBH_OIDC_AUDIENCE", crate::support::oidc::AUDIENCE)
        .env("WBH_OIDC_CA_FILE", idp.ca.pem_path())
        .env("WBH_OIDC_ROLE_MAP", role_map)
        .env("WBH_DATABASE_URL", sqlite_url(&dir))
        .env("WBH_SECRET_KEY_FILE", dir.path().join("wbhealth.key"))
        .env("WBH_HTTP_ADDR", "127.0.0.1:0")
        .env("WBH_GRPC_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start wbhealth-server")?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let err_tx = lines_tx.clone();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let err_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(format!("stderr: {line}"));
        }
    });

    // The banner names the REST address and the first administrator key.
    let mut printed = Vec::new();
    let (mut base, mut admin) = (None, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while base.is_none() || admin.is_none() {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .context("the server printed its address and key")?;
        if let Some(rest) = line.split("REST and Swagger UI on ").nth(1) {
            base = rest.split("/docs").next().map(str::to_owned);
        }
        if line.trim_start().starts_with("wbh_key_") {
            admin = Some(line.trim().to_owned());
        }
        printed.push(line);
    }
    let (base, admin) = (base.context("address")?, admin.context("key")?);
    let client = reqwest::Client::new();
    let mut responses = String::new();
    let mut call = async |key: &str, method: Method, path: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}/api/v1{path}"))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        responses.push_str(&text);
        anyhow::Ok((
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        ))
    };

    let (_, tenant) = call(
        &admin,
        Method::POST,
        "/tenants",
        Some(json!({"name": "Contoso", "entra_tenant_id": uuid::Uuid::new_v4()})),
    )
    .await?;
    let tenant = tenant["id"].as_str().context("tenant")?.to_owned();
    let (_, key) = call(
        &admin,
        Method::POST,
        "/api-keys",
        Some(json!({"name": "tech", "role": "technician", "tenant_ids": [tenant]})),
    )
    .await?;
    let tech = key["key"].as_str().context("key")?.to_owned();
    let key_id = key["id"].as_str().context("id")?.to_owned();
    let (s, token) = call(
        &tech,
        Method::POST,
        &format!("/tenants/{tenant}/enrollment-tokens"),
        Some(json!({})),
    )
    .await?;
    assert_eq!(s, 201);
    let enroll = token["token"].as_str().context("token")?.to_owned();
    let wrong = format!("wbh_key_{}", "0f".repeat(32));
    let (s, _) = call(&wrong, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 401);
    call(&admin, Method::DELETE, &format!("/api-keys/{key_id}"), None).await?;
    let (s, _) = call(&tech, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 401);
    let (s, _) = call(&tech, Method::GET, "/audit-events", None).await?;
    assert_eq!(s, 401);

    // A user's password and session token.
    let (s, user) = call(
        &admin,
        Method::POST,
        "/users",
        Some(json!({"name": "dora@msp.example", "role": "technician", "tenant_ids": [tenant]})),
    )
    .await?;
    assert_eq!(s, 201, "{user}");
    let user_id = user["id"].as_str().context("user id")?.to_owned();
    let password = "dora's secret passphrase 42".to_owned();
    let wrong_password = "dora's wrong passphrase 42".to_owned();
    let (s, _) = call(
        &admin,
        Method::PUT,
        &format!("/users/{user_id}/password"),
        Some(json!({ "password": password })),
    )
    .await?;
    assert_eq!(s, 204);
    let (s, _) = call(
        "",
        Method::POST,
        "/sign-in",
        Some(json!({"name": "dora@msp.example", "password": wrong_password})),
    )
    .await?;
    assert_eq!(s, 401);
    let (s, session) = call(
        "",
        Method::POST,
        "/sign-in",
        Some(json!({"name": "dora@msp.example", "password": password})),
    )
    .await?;
    assert_eq!(s, 200, "{session}");
    let session = session["token"].as_str().context("token")?.to_owned();
    let (s, _) = call(&session, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 200);
    let (s, _) = call(&session, Method::POST, "/sign-out", None).await?;
    assert_eq!(s, 204);
    let (s, _) = call(&session, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 401);

    // An OIDC provider's access tokens, accepted and refused.
    let oidc = idp_key.sign(&idp.claims("secrets-subject", &["Secrets.Admin"]))?;
    let mut wrong_audience = idp.claims("secrets-subject", &["Secrets.Admin"]);
    wrong_audience["aud"] = json!("api://not-wbhealth");
    let oidc_refused = idp_key.sign(&wrong_audience)?;
    let (s, _) = call(&oidc, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 200);
    let (s, _) = call(&oidc_refused, Method::GET, "/tenants", None).await?;
    assert_eq!(s, 401);

    child.kill().context("stop the server")?;
    child.wait()?;
    out_thread.join().ok();
    err_thread.join().ok();
    printed.extend(lines_rx.try_iter());
    let logs = printed.join("\n");
    assert!(
        logs.contains("api key created") && logs.contains("authentication failed"),
        "the logs were captured at debug level:\n{logs}"
    );
    assert!(
        logs.contains("user signed in") && logs.contains("authentication refused"),
        "sign-in and refusal reasons are logged at debug level:\n{logs}"
    );
    for (what, secret) in [
        ("a password", &password),
        ("a wrong password", &wrong_password),
        ("a session token", &session),
        ("an OIDC access token", &oidc),
        ("a refused OIDC access token", &oidc_refused),
    ] {
        assert!(!logs.contains(secret.as_str()), "{what} is in the logs");
    }
    assert!(!responses.contains(password.as_str()));
    assert!(!responses.contains(wrong_password.as_str()));
    assert_eq!(
        responses.matches(session.as_str()).count(),
        1,
        "the session token is only in the sign-in response"
    );
    for (what, secret) in [
        ("an issued API key", &tech),
        ("a wrong API key", &wrong),
        ("an enrollment token", &enroll),
    ] {
        assert!(!logs.contains(secret.as_str()), "{what} is in the logs");
        assert!(
            !responses.contains(secret.as_str()) || secret == &tech || secret == &enroll,
            "{what} is echoed in a response"
        );
    }
    // Issued secrets are in exactly the one response that creates them.
    assert_eq!(responses.matches(tech.as_str()).count(), 1);
    assert_eq!(responses.matches(enroll.as_str()).count(), 1);
    // The first administrator key is only in the first-start banner, never in a log line.
    for line in printed.iter().filter(|l| l.contains(admin.as_str())) {
        assert!(
            line.trim() == admin || line.contains("curl -H"),
            "the administrator key is in a log line: {line}"
        );
    }
    assert!(!responses.contains(admin.as_str()));
    Ok(())
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted_and_audited() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let server = TestServer::start_with(&sqlite_url(&dir), |config| {
        config.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    })
    .await?;
    let send = async |from: u8, forwarded: Option<&str>, key: &str, body: Option<Value>| {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, from]))
            .build()?;
        let mut request = match body {
            Some(body) => client
                .post(format!("{}/api/v1/tenants", server.base_url()))
                .json(&body),
            None => client.get(format!("{}/api/v1/tenants", server.base_url())),
        }
        .bearer_auth(key);
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        anyhow::Ok((status, response.json::<Value>().await?))
    };
    // A client behind the proxy fails ten times; the address it made up in front is ignored.
    let spoofed = Some("198.51.100.1, 203.0.113.7");
    for i in 0..10 {
        let (s, _) = send(1, spoofed, &format!("wbh_key_guess{i}"), None).await?;
        assert_eq!(s, 401);
    }
    let (s, _) = send(1, spoofed, "wbh_key_guess-again", None).await?;
    assert_eq!(s, 429, "the forwarded client is limited");
    let (s, _) = send(1, Some("203.0.113.7"), "wbh_key_guess-again", None).await?;
    assert_eq!(
        s, 429,
        "it was counted as 203.0.113.7, not by the address it made up"
    );
    let (s, _) = send(1, Some("203.0.113.8"), "wbh_key_guess-again", None).await?;
    assert_eq!(s, 401, "another client behind the same proxy is not");

    // The audit log names the forwarded client, but only a trusted proxy may forward.
    let admin = server.key().to_owned();
    for (from, forwarded, name, expected) in [
        (1, "203.0.113.9", "Through the proxy", "203.0.113.9"),
        (2, "203.0.113.10", "Claiming an address", "127.0.0.2"),
    ] {
        let (s, tenant) = send(
            from,
            Some(forwarded),
            &admin,
            Some(json!({"name": name, "entra_tenant_id": uuid::Uuid::new_v4()})),
        )
        .await?;
        assert_eq!(s, 201, "{tenant}");
        let log = server
            .get(&format!(
                "/audit-events?tenant_id={}",
                tenant["id"].as_str().context("id")?
            ))
            .await?;
        assert_eq!(log["items"][0]["client_ip"], expected, "{log:#}");
    }
    Ok(())
}

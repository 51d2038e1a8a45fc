//! A fake of Microsoft's login service and Microsoft Graph, served over TLS on loopback with a
//! [`TestCa`](super::tls::TestCa), for the server's cloud checks.
//!
//! It serves the v2.0 token endpoint (client secret or client assertion) and the Graph v1.0
//! routes the cloud checks call, with per-directory state a test can break: licences, roles,
//! registration, policies, sync time, audit events (self-service and administrator resets with
//! their `OnPremisesAgent`), Cloud Sync service principals and synchronization jobs (quarantine
//! included), a permission removed (403
//! `Authorization_RequestDenied`), consent withdrawn (AADSTS700016), throttling (429 with
//! `Retry-After`) and small pages (`@odata.nextLink`). Bodies follow the shapes of the examples
//! in Microsoft's Graph and identity platform references, field for field where the checks
//! read them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context as _;
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;

use super::tls::TestCa;

/// Global Administrator.
pub const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Hybrid Identity Administrator.
pub const HYBRID_ADMIN: &str = "8ac3fc64-6eca-42ea-9e69-59f4c7b60eb2";
/// The service plan id of AAD_PREMIUM.
const AAD_PREMIUM_ID: &str = "41781fb2-bc02-4b7c-bd55-b576c07bb09d";

/// How the fake app authenticates in a directory.
#[derive(Debug, Clone)]
pub enum AppCredential {
    /// This client secret.
    Secret(String),
    /// A client assertion whose header carries this `x5t#S256`.
    Certificate(String),
}

/// One customer directory as the fake serves it.
#[derive(Debug, Clone)]
pub struct Directory {
    /// The consented app's client id.
    pub client_id: String,
    /// What the app authenticates with.
    pub credential: AppCredential,
    /// False: the app's service principal is gone (AADSTS700016).
    pub consented: bool,
    /// Application permissions not granted: calls needing them answer 403.
    pub denied: HashSet<&'static str>,
    /// How many times each Graph request answers 429 (Retry-After: 1) before it succeeds.
    pub throttle_every: u32,
    /// Items per page of collections.
    pub page_size: usize,
    /// How long every answer for this directory (token endpoint included) is held back.
    pub delay: Option<std::time::Duration>,
    /// `organization`.
    pub organization: Value,
    /// `subscribedSkus`.
    pub skus: Vec<Value>,
    /// `users`, keyed by id; each has `userPrincipalName`.
    pub users: Vec<Value>,
    /// `licenseDetails` per user id.
    pub licences: HashMap<String, Vec<Value>>,
    /// `roleManagement/directory/roleAssignments`.
    pub role_assignments: Vec<Value>,
    /// `userRegistrationDetails`.
    pub registrations: Vec<Value>,
    /// Domains whose `authenticationType` is `Federated` (all others are `Managed`).
    pub federated_domains: HashSet<String>,
    /// `authorizationPolicy.allowedToUseSSPR`.
    pub allowed_to_use_sspr: bool,
    /// `auditLogs/directoryAudits`.
    pub audits: Vec<Value>,
    /// `servicePrincipals` (only the Cloud Sync ones are ever asked for, by
    /// `applicationTemplateId`).
    pub service_principals: Vec<Value>,
    /// `servicePrincipals/{id}/synchronization/jobs`, per service principal id.
    pub sync_jobs: HashMap<String, Vec<Value>>,
}

/// The application template Cloud Sync configurations are instantiated from.
pub const CLOUD_SYNC_TEMPLATE: &str = "1a4721b3-e57f-4451-ae87-ef078703ec94";

/// A Cloud Sync configuration's service principal, shaped like Graph's servicePrincipal.
pub fn cloud_sync_principal(id: &str, domain: &str) -> Value {
    json!({
        "id": id,
        "deletedDateTime": null,
        "accountEnabled": true,
        "appDisplayName": domain,
        "appId": format!("{}-app", id),
        "applicationTemplateId": CLOUD_SYNC_TEMPLATE,
        "appOwnerOrganizationId": "84841066-274d-4ec0-a5c1-276be684bdd3",
        "displayName": domain,
        "servicePrincipalType": "Application",
        "tags": ["WindowsAzureActiveDirectoryOnPremApp"]
    })
}

/// A synchronization job shaped like Graph's synchronizationJob; `quarantine` is
/// `(reason, error message)`.
pub fn sync_job(template: &str, code: &str, quarantine: Option<(&str, &str)>) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let stamp = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    json!({
        "id": format!("{template}.fd1c9b9e8077402c8bc03a7186c8f976.2e2e8c0a-5e53-4e3d-9e1a-8b3d3f4e5a6b"),
        "templateId": template,
        "schedule": {"expiration": null, "interval": "PT2M", "state": "Active"},
        "status": {
            "code": code,
            "countSuccessiveCompleteFailures": if quarantine.is_some() { 12 } else { 0 },
            "escrowsPruned": false,
            "lastExecution": {"activityIdentifier": null, "countEntitled": 0, "countEntitledForProvisioning": 0, "countEscrowed": 0, "countEscrowedRaw": 0, "countExported": 0, "countExports": 0, "countImported": 0, "countImportedDeltas": 0, "countImportedReferenceDeltas": 0, "error": null, "state": if quarantine.is_some() { "Failed" } else { "Succeeded" }, "timeBegan": stamp(now - time::Duration::minutes(4)), "timeEnded": stamp(now - time::Duration::minutes(3))},
            "lastSuccessfulExecution": null,
            "lastSuccessfulExecutionWithExports": null,
            "progress": [],
            "quarantine": quarantine.map(|(reason, message)| json!({
                "currentBegan": stamp(now - time::Duration::hours(1)),
                "nextAttempt": stamp(now + time::Duration::hours(1)),
                "reason": reason,
                "seriesBegan": stamp(now - time::Duration::hours(6)),
                "seriesCount": 5,
                "error": {"code": "AzureDirectoryB2BManagementPolicyCheckFailure", "message": message, "tenantActionable": true}
            })),
            "steadyStateFirstAchievedTime": "2026-10-01T08:00:00Z",
            "steadyStateLastAchievedTime": stamp(now - time::Duration::hours(7)),
            "synchronizedEntryCountByType": [],
            "troubleshootingUrl": null
        },
        "synchronizationJobSettings": []
    })
}

/// A `Reset password (by admin)` audit event of `target` by `by`, with `OnPremisesAgent` set
/// to `agent` (`None` when it stayed in the cloud).
pub fn admin_reset(target: (&str, &str), by: &str, agent: &str, at: time::OffsetDateTime) -> Value {
    json!({
        "id": format!("SSPR_{}", uuid::Uuid::new_v4().simple()),
        "category": "UserManagement",
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "result": "success",
        "resultReason": "",
        "activityDisplayName": "Reset password (by admin)",
        "activityDateTime": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "loggedByService": "Self-service Password Management",
        "operationType": "Update",
        "initiatedBy": {"app": null, "user": {"id": "u-helpdesk", "displayName": null, "userPrincipalName": by, "ipAddress": "203.0.113.9"}},
        "targetResources": [{"id": target.0, "displayName": null, "type": "User", "userPrincipalName": target.1, "modifiedProperties": []}],
        "additionalDetails": [{"key": "OnPremisesAgent", "value": agent}]
    })
}

fn sku(part: &str, status: &str, enabled: i64, plans: &[(&str, &str)]) -> Value {
    json!({
        "accountName": "Contoso",
        "accountId": "00000000-0000-0000-0000-000000000001",
        "appliesTo": "User",
        "capabilityStatus": status,
        "consumedUnits": 3,
        "id": format!("48a80680-7326-48cd-9935-b556b81d3a4e_{part}"),
        "prepaidUnits": {"enabled": enabled, "suspended": 0, "warning": 0, "lockedOut": 0},
        "servicePlans": plans.iter().map(|(id, name)| json!({
            "servicePlanId": id,
            "servicePlanName": name,
            "provisioningStatus": "Success",
            "appliesTo": "User"
        })).collect::<Vec<_>>(),
        "skuId": "078d2b04-f1bd-4111-bbd4-b4b1b354cef4",
        "skuPartNumber": part,
        "subscriptionIds": ["5a1a4a2c-3e5d-4c3f-9e7a-2a1b0c9d8e7f"]
    })
}

fn user(id: &str, upn: &str, synced: bool) -> Value {
    json!({
        "id": id,
        "userPrincipalName": upn,
        "displayName": upn.split('@').next().unwrap_or(upn),
        "onPremisesSyncEnabled": if synced { json!(true) } else { Value::Null },
        "onPremisesSecurityIdentifier": if synced { json!(format!("S-1-5-21-1004336348-1177238915-682003330-{}", id.len() + 1100)) } else { Value::Null },
    })
}

fn licence(plans: &[&str]) -> Vec<Value> {
    vec![json!({
        "id": "2Vk4iU0bN0-gJ2FZ0zDx5fYq0rT-b7VOk7r5Jqz9C1A",
        "skuId": "078d2b04-f1bd-4111-bbd4-b4b1b354cef4",
        "skuPartNumber": "AAD_PREMIUM",
        "servicePlans": plans.iter().map(|name| json!({
            "servicePlanId": AAD_PREMIUM_ID,
            "servicePlanName": name,
            "provisioningStatus": "Success",
            "appliesTo": "User"
        })).collect::<Vec<_>>()
    })]
}

fn registration(id: &str, upn: &str, enabled: bool, registered: bool, admin: bool) -> Value {
    json!({
        "id": id,
        "userPrincipalName": upn,
        "userDisplayName": upn,
        "userType": "member",
        "isAdmin": admin,
        "isSsprRegistered": registered,
        "isSsprEnabled": enabled,
        "isSsprCapable": enabled && registered,
        "isMfaRegistered": registered,
        "isMfaCapable": registered,
        "isPasswordlessCapable": false,
        "methodsRegistered": if registered { json!(["mobilePhone", "microsoftAuthenticatorPush"]) } else { json!([]) },
        "isSystemPreferredAuthenticationMethodEnabled": false,
        "systemPreferredAuthenticationMethods": [],
        "userPreferredMethodForSecondaryAuthentication": "push",
        "lastUpdatedDateTime": "2026-11-25T06:01:12.0107138Z"
    })
}

fn audit(activity: &str, result: &str, reason: &str, at: time::OffsetDateTime) -> Value {
    json!({
        "id": format!("SSPR_{}", uuid::Uuid::new_v4().simple()),
        "category": "UserManagement",
        "correlationId": uuid::Uuid::new_v4().to_string(),
        "result": result,
        "resultReason": reason,
        "activityDisplayName": activity,
        "activityDateTime": at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "loggedByService": "Self-service Password Management",
        "operationType": "Update",
        "initiatedBy": {"app": null, "user": {"id": "u-adele", "displayName": null, "userPrincipalName": "adele@contoso.com", "ipAddress": "203.0.113.7"}},
        "targetResources": [{"id": "u-adele", "displayName": null, "type": "User", "userPrincipalName": "adele@contoso.com", "modifiedProperties": []}],
        "additionalDetails": []
    })
}

impl Directory {
    /// A tenant where every check passes: P1, a licensed cloud-only Global Administrator,
    /// SSPR enabled, SSPR for admins on, synced 20 minutes ago, two successful resets.
    pub fn healthy(client_id: &str, credential: AppCredential) -> Directory {
        let now = time::OffsetDateTime::now_utc();
        Directory {
            client_id: client_id.to_owned(),
            credential,
            consented: true,
            denied: HashSet::new(),
            throttle_every: 0,
            page_size: 100,
            delay: None,
            organization: json!({
                "id": "84841066-274d-4ec0-a5c1-276be684bdd3",
                "displayName": "Contoso",
                "onPremisesSyncEnabled": true,
                "onPremisesLastSyncDateTime": (now - time::Duration::minutes(20)).format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "verifiedDomains": [{"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": true, "isInitial": true, "name": "contoso.onmicrosoft.com", "type": "Managed"}]
            }),
            skus: vec![
                sku(
                    "O365_BUSINESS_ESSENTIALS",
                    "Enabled",
                    25,
                    &[(
                        "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
                        "EXCHANGE_S_STANDARD",
                    )],
                ),
                sku(
                    "AAD_PREMIUM",
                    "Enabled",
                    10,
                    &[
                        (AAD_PREMIUM_ID, "AAD_PREMIUM"),
                        ("8a256a2b-b617-496d-b51b-e76466e88db0", "MFA_PREMIUM"),
                    ],
                ),
            ],
            users: vec![
                user("u-admin", "admin@contoso.onmicrosoft.com", false),
                user("u-adele", "adele@contoso.com", true),
                user("u-cloud", "cloudonly@contoso.onmicrosoft.com", false),
                user("u-nolic", "nolicence@contoso.com", true),
            ],
            licences: HashMap::from([
                ("u-admin".to_owned(), licence(&["AAD_PREMIUM"])),
                ("u-adele".to_owned(), licence(&["AAD_PREMIUM"])),
                ("u-cloud".to_owned(), licence(&["AAD_PREMIUM"])),
                ("u-nolic".to_owned(), Vec::new()),
            ]),
            role_assignments: vec![
                json!({"id": "lAPpYvVpN0KRkAEhdxReEJC2sEqbR_9Hr48lds9SGHI-1", "principalId": "u-admin", "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}),
                json!({"id": "lAPpYvVpN0KRkAEhdxReEJC2sEqbR_9Hr48lds9SGHI-2", "principalId": "u-adele", "roleDefinitionId": "fe930be7-5e62-47db-91af-98c3a49a38b1", "directoryScopeId": "/"}),
            ],
            registrations: vec![
                registration("u-admin", "admin@contoso.onmicrosoft.com", true, true, true),
                registration("u-adele", "adele@contoso.com", true, true, true),
                registration(
                    "u-cloud",
                    "cloudonly@contoso.onmicrosoft.com",
                    true,
                    true,
                    false,
                ),
                registration("u-nolic", "nolicence@contoso.com", true, false, false),
            ],
            federated_domains: HashSet::new(),
            allowed_to_use_sspr: true,
            audits: vec![
                audit(
                    "Reset password (self-service)",
                    "success",
                    "",
                    now - time::Duration::hours(2),
                ),
                audit(
                    "Reset password (self-service)",
                    "success",
                    "",
                    now - time::Duration::hours(1),
                ),
                // A synced user reset through Entra Connect, and a cloud-only one in the cloud:
                // neither is a reset that failed to reach Active Directory.
                admin_reset(
                    ("u-adele", "adele@contoso.com"),
                    "admin@contoso.onmicrosoft.com",
                    "Microsoft Entra Connect",
                    now - time::Duration::hours(4),
                ),
                admin_reset(
                    ("u-cloud", "cloudonly@contoso.onmicrosoft.com"),
                    "admin@contoso.onmicrosoft.com",
                    "None",
                    now - time::Duration::hours(5),
                ),
            ],
            service_principals: vec![cloud_sync_principal("sp-cloudsync-contoso", "contoso.com")],
            sync_jobs: HashMap::from([(
                "sp-cloudsync-contoso".to_owned(),
                vec![
                    sync_job("AD2AADProvisioning", "Active", None),
                    sync_job("AD2AADPasswordHash", "Active", None),
                ],
            )]),
        }
    }

    /// A tenant where every cloud check fails: Business Basic only, the only Global
    /// Administrator synced and unlicensed, a Hybrid Identity Administrator through a group,
    /// nobody enabled for SSPR, SSPR for admins off, last sync two days ago, and failed resets.
    pub fn broken(client_id: &str, credential: AppCredential) -> Directory {
        let now = time::OffsetDateTime::now_utc();
        let mut d = Directory::healthy(client_id, credential);
        d.skus = vec![sku(
            "O365_BUSINESS_ESSENTIALS",
            "Enabled",
            25,
            &[(
                "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
                "EXCHANGE_S_STANDARD",
            )],
        )];
        d.users = vec![
            user("u-synced-admin", "it.admin@contoso.com", true),
            user("u-adele", "adele@contoso.com", true),
            user("u-fed-admin", "hia@fed.contoso.com", false),
        ];
        d.licences = HashMap::from([
            ("u-synced-admin".to_owned(), Vec::new()),
            ("u-adele".to_owned(), Vec::new()),
            ("u-fed-admin".to_owned(), Vec::new()),
        ]);
        d.federated_domains = HashSet::from(["fed.contoso.com".to_owned()]);
        d.role_assignments = vec![
            json!({"id": "r1", "principalId": "u-synced-admin", "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}),
            json!({"id": "r3", "principalId": "u-fed-admin", "roleDefinitionId": HYBRID_ADMIN, "directoryScopeId": "/"}),
            json!({"id": "r2", "principalId": "g-helpdesk-admins", "roleDefinitionId": HYBRID_ADMIN, "directoryScopeId": "/"}),
        ];
        d.registrations = vec![
            registration("u-synced-admin", "it.admin@contoso.com", false, false, true),
            registration("u-adele", "adele@contoso.com", false, false, false),
        ];
        d.allowed_to_use_sspr = false;
        d.organization["onPremisesLastSyncDateTime"] = json!(
            (now - time::Duration::days(2))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        d.audits = vec![
            audit(
                "Reset password (self-service)",
                "failure",
                "User is not licensed. (UserNotLicensed)",
                now - time::Duration::hours(3),
            ),
            audit(
                "Reset password (self-service)",
                "failure",
                "User is not licensed. (UserNotLicensed)",
                now - time::Duration::hours(2),
            ),
            audit(
                "Reset password (self-service)",
                "failure",
                "The user is not enabled for self-service password reset. (TenantSSPRFlagDisabled)",
                now - time::Duration::hours(1),
            ),
            // Older than the 24-hour window: never counted.
            audit(
                "Reset password (self-service)",
                "failure",
                "User is not licensed. (UserNotLicensed)",
                now - time::Duration::hours(30),
            ),
            // Reset from the Microsoft 365 admin center: never reached Active Directory.
            admin_reset(
                ("u-adele", "adele@contoso.com"),
                "it.admin@contoso.com",
                "None",
                now - time::Duration::hours(2),
            ),
        ];
        d.sync_jobs = HashMap::from([(
            "sp-cloudsync-contoso".to_owned(),
            vec![sync_job(
                "AD2AADProvisioning",
                "Quarantine",
                Some((
                    "EncounteredQuarantineException",
                    "The provisioning agent could not reach a domain controller of contoso.com.",
                )),
            )],
        )]);
        d
    }
}

#[derive(Default)]
struct State {
    directories: HashMap<String, Directory>,
    /// token → directory id
    tokens: HashMap<String, String>,
    /// "directory request-target" → 429s answered so far
    counters: HashMap<String, u32>,
    /// (directory, request line) of every request
    log: Vec<(String, String)>,
    /// client secrets and assertions seen (to prove they travel only to the token endpoint)
    issued: u64,
}

/// The running fake.
pub struct FakeGraph {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeGraph {
    /// Starts on `127.0.0.1:0` with a certificate from `ca`.
    pub fn start(ca: &TestCa) -> anyhow::Result<FakeGraph> {
        let (cert_pem, key_pem) = ca.issue(&["127.0.0.1", "localhost"]);
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parse the fake's certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parse the fake's key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("use the fake's certificate")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = StdTcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let (shutdown, stop) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let shared = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fake-graph-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, acceptor, shared, addr, stop)))?;
        Ok(FakeGraph {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `https://127.0.0.1:PORT`: both the authority and the Graph base URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Adds or replaces a directory.
    pub fn put(&self, directory_id: &str, mut directory: Directory) {
        // Graph's organization object carries the directory's own id.
        if uuid::Uuid::parse_str(directory_id).is_ok() {
            directory.organization["id"] = json!(directory_id);
        }
        self.lock()
            .directories
            .insert(directory_id.to_owned(), directory);
    }

    /// Changes a directory in place.
    pub fn change(&self, directory_id: &str, f: impl FnOnce(&mut Directory)) {
        if let Some(d) = self.lock().directories.get_mut(directory_id) {
            f(d);
        }
    }

    /// The request lines served for a directory, oldest first.
    pub fn requests(&self, directory_id: &str) -> Vec<String> {
        self.lock()
            .log
            .iter()
            .filter(|(d, _)| d == directory_id)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// How many tokens were issued in all.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().issued
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: StdTcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    // One request per connection (Connection: close).
                    let Some((head, body)) = read_request(&mut tls).await else { return };
                    if let Some(delay) = delay_for(&state, &head) {
                        tokio::time::sleep(delay).await;
                    }
                    let (status, headers, body) = respond(&state, addr, &head, &body);
                    let reason = match status { 200 => "OK", 400 => "Bad Request", 401 => "Unauthorized", 403 => "Forbidden", 404 => "Not Found", 429 => "Too Many Requests", _ => "Error" };
                    let mut out = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    let _ = tls.write_all(out.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        }
    }
}

async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

type Response = (u16, Vec<(String, String)>, String);

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    (
        status,
        Vec::new(),
        json!({"error": {"code": code, "message": message, "innerError": {
            "date": "2026-11-25T12:00:00",
            "request-id": uuid::Uuid::new_v4().to_string(),
            "client-request-id": uuid::Uuid::new_v4().to_string()
        }}})
        .to_string(),
    )
}

fn token_error(status: u16, error: &str, code: u64, text: &str) -> Response {
    (
        status,
        Vec::new(),
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2026-11-25 12:00:00Z"),
            "error_codes": [code],
            "timestamp": "2026-11-25 12:00:00Z",
            "trace_id": "0000aaaa-11bb-cccc-dd22-eeeeee333333",
            "correlation_id": "aaaa0000-bb11-2222-33cc-444444dddddd",
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}")
        })
        .to_string(),
    )
}

/// The delay of the directory a request is for: the token endpoint's path names it, a Graph
/// request's bearer token maps to it.
fn delay_for(state: &Mutex<State>, head: &str) -> Option<std::time::Duration> {
    let state = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = head.lines().next()?.split(' ').nth(1)?;
    let directory = if target.contains("/oauth2/v2.0/token") {
        target.trim_start_matches('/').split('/').next()?.to_owned()
    } else {
        let token = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().trim_start_matches("Bearer ").to_owned())
        })?;
        state.tokens.get(&token)?.clone()
    };
    state.directories.get(&directory)?.delay
}

fn respond(state: &Mutex<State>, addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    let mut state = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let line = head.lines().next().unwrap_or("").to_owned();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = decode(path);
    let query: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();

    // The token endpoint: POST /{directory}/oauth2/v2.0/token
    if method == "POST" && path.ends_with("/oauth2/v2.0/token") {
        let directory_id = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        state.log.push((directory_id.clone(), line.clone()));
        let f = form(body);
        let Some(d) = state.directories.get(&directory_id).cloned() else {
            return token_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{directory_id}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            );
        };
        let client_id = f.get("client_id").cloned().unwrap_or_default();
        if !d.consented || client_id != d.client_id {
            return token_error(
                400,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{directory_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            );
        }
        if f.get("grant_type").map(String::as_str) != Some("client_credentials")
            || !f.get("scope").is_some_and(|s| s.ends_with("/.default"))
        {
            return token_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        let ok = match &d.credential {
            AppCredential::Secret(secret) => f.get("client_secret") == Some(secret),
            AppCredential::Certificate(x5t) => f
                .get("client_assertion")
                .is_some_and(|a| assertion_fits(a, x5t, &client_id)),
        };
        if !ok {
            return match &d.credential {
                AppCredential::Secret(_) => token_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                ),
                AppCredential::Certificate(_) => token_error(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation.",
                ),
            };
        }
        state.issued += 1;
        let token = format!("eyJ0eXAiOiJKV1QifQ.fake-{}-{}", directory_id, state.issued);
        state.tokens.insert(token.clone(), directory_id);
        return (200, Vec::new(), json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}).to_string());
    }

    let token = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().trim_start_matches("Bearer ").to_owned())
        })
        .unwrap_or_default();
    let Some(directory_id) = state.tokens.get(&token).cloned() else {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    };
    state.log.push((directory_id.clone(), line.clone()));
    let Some(d) = state.directories.get(&directory_id).cloned() else {
        return graph_error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
        );
    };
    if d.throttle_every > 0 {
        let counter = state
            .counters
            .entry(format!("{directory_id} {target}"))
            .or_insert(0);
        if *counter < d.throttle_every {
            *counter += 1;
            let mut r = graph_error(
                429,
                "TooManyRequests",
                "Too many requests; the request has been throttled.",
            );
            r.1.push(("Retry-After".into(), "1".into()));
            return r;
        }
    }
    drop(state);
    let Some(rest) = path.strip_prefix("/v1.0") else {
        return graph_error(400, "BadRequest", "Invalid version.");
    };
    let deny = |permission: &str| d.denied.contains(permission);
    let denied = graph_error(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    );
    let base = format!("https://{addr}/v1.0{rest}");
    let page = |items: Vec<Value>, context: &str| -> Response {
        let skip: usize = query
            .get("$skiptoken")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let top: usize = query
            .get("$top")
            .and_then(|s| s.parse().ok())
            .unwrap_or(d.page_size)
            .min(d.page_size);
        let end = (skip + top).min(items.len());
        let mut out = json!({
            "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}"),
            "value": items[skip.min(items.len())..end].to_vec(),
        });
        if end < items.len() && !query.contains_key("$top") {
            let kept: Vec<String> = query
                .iter()
                .filter(|(k, _)| *k != "$skiptoken")
                .map(|(k, v)| format!("{k}={}", v.replace(' ', "%20").replace('\'', "%27")))
                .collect();
            let mut next = format!("{base}?");
            for k in kept {
                next.push_str(&k);
                next.push('&');
            }
            next.push_str(&format!("$skiptoken={end}"));
            out["@odata.nextLink"] = json!(next);
        }
        (200, Vec::new(), out.to_string())
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["organization"] => {
            if deny("Organization.Read.All") {
                return denied;
            }
            page(vec![d.organization.clone()], "organization")
        }
        ["subscribedSkus"] => {
            if deny("Organization.Read.All") {
                return denied;
            }
            page(d.skus.clone(), "subscribedSkus")
        }
        ["roleManagement", "directory", "roleAssignments"] => {
            if deny("RoleManagement.Read.Directory") {
                return denied;
            }
            page(
                d.role_assignments.clone(),
                "roleManagement/directory/roleAssignments",
            )
        }
        ["users", id] => {
            if deny("User.Read.All") {
                return denied;
            }
            match d.users.iter().find(|u| {
                u["id"] == *id
                    || u["userPrincipalName"]
                        .as_str()
                        .is_some_and(|p| p.eq_ignore_ascii_case(id))
            }) {
                Some(u) => (200, Vec::new(), u.to_string()),
                None => graph_error(
                    404,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                    ),
                ),
            }
        }
        ["users", id, "licenseDetails"] => {
            if deny("User.Read.All") {
                return denied;
            }
            let Some(u) = d.users.iter().find(|u| {
                u["id"] == *id
                    || u["userPrincipalName"]
                        .as_str()
                        .is_some_and(|p| p.eq_ignore_ascii_case(id))
            }) else {
                return graph_error(
                    404,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                    ),
                );
            };
            let uid = u["id"].as_str().unwrap_or("");
            page(
                d.licences.get(uid).cloned().unwrap_or_default(),
                &format!("users('{uid}')/licenseDetails"),
            )
        }
        [
            "reports",
            "authenticationMethods",
            "userRegistrationDetails",
        ] => {
            if deny("AuditLog.Read.All") {
                return denied;
            }
            let filter = query.get("$filter").cloned().unwrap_or_default();
            let items: Vec<Value> = d
                .registrations
                .iter()
                .filter(|r| {
                    if filter.contains("isSsprEnabled eq true") {
                        r["isSsprEnabled"] == true
                    } else if let Some(upn) = filter.strip_prefix("userPrincipalName eq '") {
                        r["userPrincipalName"]
                            .as_str()
                            .is_some_and(|p| p.eq_ignore_ascii_case(upn.trim_end_matches('\'')))
                    } else {
                        true
                    }
                })
                .cloned()
                .collect();
            page(
                items,
                "reports/authenticationMethods/userRegistrationDetails",
            )
        }
        ["domains", name] => {
            if deny("Domain.Read.All") {
                return denied;
            }
            let federated = d.federated_domains.contains(&name.to_ascii_lowercase());
            (
                200,
                Vec::new(),
                json!({
                    "authenticationType": if federated { "Federated" } else { "Managed" },
                    "availabilityStatus": null,
                    "id": name,
                    "isAdminManaged": true,
                    "isDefault": false,
                    "isInitial": name.ends_with(".onmicrosoft.com"),
                    "isRoot": true,
                    "isVerified": true,
                    "passwordNotificationWindowInDays": 14,
                    "passwordValidityPeriodInDays": 2147483647,
                    "supportedServices": ["Email", "OfficeCommunicationsOnline"],
                    "state": null
                })
                .to_string(),
            )
        }
        ["policies", "authorizationPolicy"] => {
            if deny("Policy.Read.All") {
                return denied;
            }
            (200, Vec::new(), json!({
                "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#policies/authorizationPolicy/$entity",
                "id": "authorizationPolicy",
                "displayName": "Authorization Policy",
                "description": "Used to manage authorization related settings across the company.",
                "allowInvitesFrom": "everyone",
                "allowedToSignUpEmailBasedSubscriptions": true,
                "allowedToUseSSPR": d.allowed_to_use_sspr,
                "allowEmailVerifiedUsersToJoinOrganization": true,
                "blockMsolPowerShell": false,
                "guestUserRoleId": "10dae51f-b6af-4016-8d66-8c2a99b929b3",
                "defaultUserRolePermissions": {"allowedToCreateApps": true, "allowedToCreateSecurityGroups": true, "allowedToReadOtherUsers": true, "permissionGrantPoliciesAssigned": []}
            }).to_string())
        }
        ["auditLogs", "directoryAudits"] => {
            if deny("AuditLog.Read.All") {
                return denied;
            }
            let filter = query.get("$filter").cloned().unwrap_or_default();
            let since = filter.split("activityDateTime ge ").nth(1).and_then(|t| {
                time::OffsetDateTime::parse(
                    t.split(' ').next().unwrap_or(""),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            });
            let by_admin = filter.contains("activityDisplayName eq 'Reset password (by admin)'");
            if !(filter.contains("loggedByService eq 'Self-service Password Management'")
                || by_admin)
                || since.is_none()
            {
                return graph_error(
                    400,
                    "BadRequest",
                    &format!("Invalid filter clause: {filter}"),
                );
            }
            let items: Vec<Value> = d
                .audits
                .iter()
                .filter(|a| {
                    a["activityDateTime"]
                        .as_str()
                        .and_then(|t| {
                            time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .ok()
                        })
                        .zip(since)
                        .is_some_and(|(t, s)| t >= s)
                })
                .filter(|a| !by_admin || a["activityDisplayName"] == "Reset password (by admin)")
                .cloned()
                .collect();
            page(items, "auditLogs/directoryAudits")
        }
        ["servicePrincipals"] => {
            if deny("Application.Read.All") {
                return denied;
            }
            let filter = query.get("$filter").cloned().unwrap_or_default();
            let Some(template) = filter
                .strip_prefix("applicationTemplateId eq '")
                .map(|t| t.trim_end_matches('\''))
            else {
                return graph_error(
                    400,
                    "Request_UnsupportedQuery",
                    &format!("Unsupported or invalid query filter clause specified: {filter}"),
                );
            };
            let items: Vec<Value> = d
                .service_principals
                .iter()
                .filter(|sp| sp["applicationTemplateId"] == template)
                .cloned()
                .collect();
            page(
                items,
                "servicePrincipals(id,displayName,applicationTemplateId)",
            )
        }
        ["servicePrincipals", id, "synchronization", "jobs"] => {
            if deny("Synchronization.Read.All") {
                return denied;
            }
            if !d.service_principals.iter().any(|sp| sp["id"] == *id) {
                return graph_error(
                    404,
                    "Request_ResourceNotFound",
                    &format!(
                        "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                    ),
                );
            }
            page(
                d.sync_jobs.get(*id).cloned().unwrap_or_default(),
                &format!("servicePrincipals('{id}')/synchronization/jobs"),
            )
        }
        _ => graph_error(
            400,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.first().unwrap_or(&"")
            ),
        ),
    }
}

/// Whether a client assertion is a JWT with RS256, the expected `x5t#S256`, and the client
/// as issuer and subject. (The fake does not verify the signature; the header and claims
/// are what a wrong setup gets wrong.)
fn assertion_fits(assertion: &str, x5t: &str, client_id: &str) -> bool {
    let mut parts = assertion.split('.');
    let decode = |p: Option<&str>| -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let (Some(header), Some(claims), Some(signature)) =
        (decode(parts.next()), decode(parts.next()), parts.next())
    else {
        return false;
    };
    header["alg"] == "RS256"
        && header["x5t#S256"] == x5t
        && claims["iss"] == client_id
        && claims["sub"] == client_id
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/oauth2/v2.0/token"))
        && signature.len() > 300
}

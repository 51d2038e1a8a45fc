//! Cloud checks: the server reads each tenant's Microsoft Entra settings through Microsoft
//! Graph with the tenant's app credential, judges them with the pure functions of `checks`,
//! and keeps the last run per tenant.
//!
//! `token` gets app-only tokens (client secret or certificate, any cloud); `graph` calls Graph
//! with paging, throttling and errors that name the missing permission; the scheduler runs
//! every tenant with a credential on an interval, several at once, each with its own timeout,
//! claiming tenants through the store so replicas never run one tenant twice at once.

pub mod checks;
pub mod graph;
pub mod token;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use wbhealth_catalogue::Status;

use crate::config::Config;
use crate::domain::{
    CloudRun, GraphCredential, MasterKey, ResultRecord, SsprActivity, TenantId, TenantScope,
};
use crate::storage::{Store, StoreError};
use checks::{
    AdminResets, CloudSyncJobs, DirectoryUser, Fact, Organization, RoleHolder, Sku, TenantFacts,
    UserFacts,
};
use graph::{Call, GraphClient, GraphError};
use token::{ClientAuth, SealedSecret, TokenError, TokenRequest};

/// The purpose label under which Graph credentials are sealed.
pub const SEAL_PURPOSE: &str = "graph credential";
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// How often the scheduler looks for due tenants.
const SCHEDULER_TICK: Duration = Duration::from_secs(2);
/// The most role holders looked up one by one.
const MAX_ROLE_PRINCIPALS: usize = 200;
/// The most users of administrator resets looked up one by one (TEN-09).
const MAX_RESET_TARGETS: usize = 200;
/// The application template that Cloud Sync instantiates for each configuration (the
/// "Active Directory to Azure Active Directory Provisioning" app), as Microsoft's Cloud Sync
/// Graph guide names it.
const CLOUD_SYNC_TEMPLATE: &str = "1a4721b3-e57f-4451-ae87-ef078703ec94";

/// A cached token.
struct CachedToken {
    token: SecretString,
    expires: Instant,
    credential_updated_at: OffsetDateTime,
}

/// Cloud-check machinery shared by REST and the scheduler.
pub struct Cloud {
    http: reqwest::Client,
    authority_override: Option<String>,
    graph_override: Option<String>,
    request_timeout: Duration,
    run_timeout: Duration,
    interval: Duration,
    concurrency: usize,
    tokens: Mutex<HashMap<TenantId, CachedToken>>,
    running: Mutex<HashSet<TenantId>>,
}

/// Removes a tenant from the running set when its run ends, however it ends.
struct RunningGuard<'a> {
    running: &'a std::sync::Mutex<std::collections::HashSet<TenantId>>,
    tenant: TenantId,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            running.remove(&self.tenant);
        }
    }
}

/// Why an on-demand request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The store failed (or the tenant or credential does not exist).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run of this tenant is already going on in this process.
    #[error("a cloud run of this tenant is already in progress")]
    Busy,
}

impl Cloud {
    /// The HTTP client trusts the system's roots plus `--graph-ca-file`.
    pub fn new(config: &Config) -> anyhow::Result<Cloud> {
        use anyhow::Context;
        // No redirects: a 307/308 from the login endpoint would re-send the client secret to
        // wherever it points.
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(u64::from(
                config.graph_request_timeout_seconds,
            )))
            .user_agent(concat!("wbhealth-server/", env!("CARGO_PKG_VERSION")));
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            if let Ok(cert) = reqwest::Certificate::from_der(cert.as_ref()) {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(path) = &config.graph_ca_file {
            let pem = std::fs::read(path).with_context(|| {
                format!(
                    "--graph-ca-file / WBH_GRAPH_CA_FILE: cannot read {}",
                    path.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "--graph-ca-file / WBH_GRAPH_CA_FILE: {} holds no PEM certificate",
                    path.display()
                )
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .context("cannot build the Graph HTTP client")?;
        Ok(Cloud {
            http,
            authority_override: config.graph_authority_url.clone(),
            graph_override: config.graph_base_url.clone(),
            request_timeout: Duration::from_secs(u64::from(config.graph_request_timeout_seconds)),
            run_timeout: Duration::from_secs(u64::from(config.cloud_check_timeout_seconds)),
            interval: Duration::from_secs(u64::from(config.cloud_check_interval_seconds)),
            concurrency: usize::try_from(config.cloud_check_concurrency)
                .unwrap_or(1)
                .max(1),
            tokens: Mutex::default(),
            running: Mutex::default(),
        })
    }

    /// The interval between two scheduled runs of a tenant.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn authority(&self, cred: &GraphCredential) -> String {
        self.authority_override
            .clone()
            .unwrap_or_else(|| cred.cloud.authority().to_owned())
    }

    fn graph_base(&self, cred: &GraphCredential) -> String {
        self.graph_override
            .clone()
            .unwrap_or_else(|| cred.cloud.graph().to_owned())
    }

    /// Opens the sealed secret of a credential.
    fn client_auth(key: &MasterKey, cred: &GraphCredential) -> Result<ClientAuth, TokenError> {
        let unreadable = || TokenError {
            code: None,
            cause: "the stored credential cannot be opened with this server's secret key".into(),
            fix: "set the Graph credential again (the server's secret key changed)".into(),
        };
        let plain = key
            .open(SEAL_PURPOSE, cred.tenant_id.0.as_bytes(), &cred.sealed)
            .map_err(|_| unreadable())?;
        let sealed: SealedSecret = serde_json::from_slice(&plain).map_err(|_| unreadable())?;
        Ok(match sealed {
            SealedSecret::Secret { secret } => ClientAuth::Secret(SecretString::from(secret)),
            SealedSecret::Certificate {
                certificate_pem,
                private_key_pem,
            } => {
                let der = token::certificate_der(&certificate_pem).ok_or_else(unreadable)?;
                ClientAuth::Certificate {
                    key_pem: SecretString::from(private_key_pem),
                    x5t_s256: token::x5t_s256(&der),
                }
            }
        })
    }

    /// A token for the tenant: cached, or fresh from the login service (the outcome is
    /// recorded on the credential).
    async fn token(
        &self,
        store: &dyn Store,
        key: &MasterKey,
        cred: &GraphCredential,
    ) -> Result<SecretString, TokenError> {
        if let Ok(tokens) = self.tokens.lock()
            && let Some(cached) = tokens.get(&cred.tenant_id)
            && cached.credential_updated_at == cred.updated_at
            && cached.expires > Instant::now()
        {
            return Ok(cached.token.clone());
        }
        let outcome = async {
            let auth = Self::client_auth(key, cred)?;
            let scope = format!("{}/.default", cred.cloud.graph());
            let authority = self.authority(cred);
            token::acquire(
                &self.http,
                &TokenRequest {
                    authority: &authority,
                    directory_id: &cred.directory_id,
                    client_id: &cred.client_id,
                    scope: &scope,
                },
                &auth,
            )
            .await
        }
        .await;
        let now = OffsetDateTime::now_utc();
        match outcome {
            Ok(token) => {
                if let Err(e) = store.record_token_outcome(cred.tenant_id, now, None).await {
                    tracing::warn!(tenant_id = %cred.tenant_id, error = %format!("{e:#}"), "token outcome not recorded");
                }
                let lifetime = Duration::from_secs(token.expires_in).saturating_sub(TOKEN_MARGIN);
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(
                        cred.tenant_id,
                        CachedToken {
                            token: token.access_token.clone(),
                            expires: Instant::now() + lifetime,
                            credential_updated_at: cred.updated_at,
                        },
                    );
                }
                Ok(token.access_token)
            }
            Err(e) => {
                tracing::warn!(tenant_id = %cred.tenant_id, code = ?e.code, cause = %e.cause, "graph token refused");
                if let Err(se) = store
                    .record_token_outcome(cred.tenant_id, now, Some(&e.to_string()))
                    .await
                {
                    tracing::warn!(tenant_id = %cred.tenant_id, error = %format!("{se:#}"), "token outcome not recorded");
                }
                Err(e)
            }
        }
    }

    /// Forgets a tenant's cached token (its credential changed or was removed).
    pub fn forget(&self, tenant: TenantId) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&tenant);
        }
    }

    /// Runs a tenant's cloud checks now and stores the outcome. Failures of Graph or the
    /// login service become `error` results of this tenant; only store failures are errors.
    pub async fn run_tenant(
        &self,
        store: &dyn Store,
        key: &MasterKey,
        tenant: TenantId,
    ) -> Result<CloudRun, CloudError> {
        // A run already going on in this process (the scheduler's) is waited for, then this
        // one runs, so an on-demand run always reflects the tenant as it is now.
        let deadline = Instant::now() + self.run_timeout;
        loop {
            let claimed = self
                .running
                .lock()
                .map(|mut running| running.insert(tenant))
                .unwrap_or(true);
            if claimed {
                break;
            }
            if Instant::now() >= deadline {
                return Err(CloudError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Released on drop, so a run whose caller went away (an aborted REST request) does
        // not leave the tenant marked as running.
        let _running = RunningGuard {
            running: &self.running,
            tenant,
        };
        self.run_tenant_inner(store, key, tenant).await
    }

    async fn run_tenant_inner(
        &self,
        store: &dyn Store,
        key: &MasterKey,
        tenant: TenantId,
    ) -> Result<CloudRun, CloudError> {
        let cred = store.graph_credential(&TenantScope::All, tenant).await?;
        let record = store.tenant(&TenantScope::All, tenant).await?;
        let (name, entra_tenant_id) = (record.name, record.entra_tenant_id);
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let gathered = tokio::time::timeout(self.run_timeout, async {
            let token = self.token(store, key, &cred).await;
            match token {
                Err(e) => Err(e.to_string()),
                Ok(token) => {
                    let graph = GraphClient::new(
                        &self.http,
                        &self.graph_base(&cred),
                        token,
                        self.request_timeout,
                    );
                    match verify_directory(&graph, entra_tenant_id).await {
                        Err(reason) => Err(reason),
                        Ok(()) => Ok(gather(&graph, &name, started_at).await),
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the cloud run did not finish within {} seconds; fix: none needed if Graph was slow, the next run tries again",
                self.run_timeout.as_secs()
            ))
        });
        let (mut results, sspr) = match gathered {
            Ok((facts, sspr)) => (checks::evaluate(&facts), sspr),
            Err(reason) => {
                let facts = TenantFacts {
                    tenant: name.clone(),
                    now: started_at,
                    organization: Err(reason.clone()),
                    skus: Err(reason.clone()),
                    role_holders: Err(reason.clone()),
                    sspr_enabled_users: Err(reason.clone()),
                    allowed_to_use_sspr: Err(reason.clone()),
                    admin_resets: Err(reason.clone()),
                    cloud_sync_jobs: Err(reason.clone()),
                };
                let mut results = checks::evaluate(&facts);
                // Nothing was read: even the check that needs no read says why it stopped.
                for r in &mut results {
                    if r.status == Status::NotApplicable {
                        *r = checks_error(&r.check_id, &reason, started_at);
                    }
                }
                let sspr = SsprActivity {
                    error: Some(reason),
                    ..SsprActivity::default()
                };
                (results, sspr)
            }
        };
        let elapsed = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        for r in &mut results {
            r.duration_ms = elapsed;
        }
        let run = CloudRun {
            tenant_id: tenant,
            results,
            sspr,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
        };
        store.save_cloud_run(&run).await?;
        let worst = run.results.iter().map(|r| r.status).reduce(Status::worst);
        tracing::info!(tenant_id = %tenant, worst = ?worst, duration_ms = elapsed, "cloud checks ran");
        Ok(run)
    }

    /// The on-demand readiness of one user of a tenant.
    pub async fn check_user(
        &self,
        store: &dyn Store,
        key: &MasterKey,
        scope: &TenantScope,
        tenant: TenantId,
        upn: &str,
    ) -> Result<Vec<ResultRecord>, CloudError> {
        let cred = store.graph_credential(scope, tenant).await?;
        let entra_tenant_id = store.tenant(scope, tenant).await?.entra_tenant_id;
        let now = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let facts = tokio::time::timeout(self.run_timeout, async {
            match self.token(store, key, &cred).await {
                Err(e) => {
                    let reason = e.to_string();
                    UserFacts {
                        upn: upn.to_owned(),
                        user: Err(reason.clone()),
                        premium_plans: Err(reason.clone()),
                        registration: Err(reason),
                        now,
                    }
                }
                Ok(token) => {
                    let graph = GraphClient::new(
                        &self.http,
                        &self.graph_base(&cred),
                        token,
                        self.request_timeout,
                    );
                    match verify_directory(&graph, entra_tenant_id).await {
                        Ok(()) => gather_user(&graph, upn, now).await,
                        Err(reason) => UserFacts {
                            upn: upn.to_owned(),
                            user: Err(reason.clone()),
                            premium_plans: Err(reason.clone()),
                            registration: Err(reason),
                            now,
                        },
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            let reason = format!(
                "Graph did not answer within {} seconds",
                self.run_timeout.as_secs()
            );
            UserFacts {
                upn: upn.to_owned(),
                user: Err(reason.clone()),
                premium_plans: Err(reason.clone()),
                registration: Err(reason),
                now,
            }
        });
        let mut results = checks::evaluate_user(&facts);
        let elapsed = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        for r in &mut results {
            r.duration_ms = elapsed;
        }
        Ok(results)
    }

    /// Runs due tenants until `cancel`: at most `concurrency` at once, each claimed through
    /// the store so that replicas sharing a database never run one tenant at the same time.
    pub fn spawn_scheduler(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        key: Arc<MasterKey>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
            loop {
                let free = permits.available_permits();
                if free > 0 {
                    let now = OffsetDateTime::now_utc();
                    let next = now + self.interval;
                    match store
                        .claim_due_cloud_tenants(now, next, u32::try_from(free).unwrap_or(1))
                        .await
                    {
                        Ok(tenants) => {
                            for tenant in tenants {
                                let Ok(permit) = permits.clone().acquire_owned().await else {
                                    return;
                                };
                                let (cloud, store, key) =
                                    (self.clone(), store.clone(), key.clone());
                                tokio::spawn(async move {
                                    match cloud.run_tenant(store.as_ref(), &key, tenant).await {
                                        Ok(_) | Err(CloudError::Busy) => {}
                                        Err(CloudError::Store(StoreError::NotFound)) => {}
                                        Err(e) => {
                                            tracing::error!(tenant_id = %tenant, error = %format!("{e:#}"), "cloud run not stored")
                                        }
                                    }
                                    drop(permit);
                                });
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "cannot claim due cloud checks");
                        }
                    }
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(SCHEDULER_TICK) => {}
                }
            }
        })
    }
}

fn checks_error(check_id: &str, reason: &str, now: OffsetDateTime) -> ResultRecord {
    let (cause, fix) = reason.split_once("; fix: ").unwrap_or((reason, ""));
    ResultRecord {
        check_id: check_id.to_owned(),
        status: Status::Error,
        summary: format!("could not look: {cause}"),
        evidence: serde_json::json!({ "error": reason }),
        remediation: fix.to_owned(),
        duration_ms: 0,
        observed_at: now,
    }
}

fn reason(e: GraphError) -> String {
    e.to_string()
}

/// Reads every fact of the tenant-level checks, and the SSPR audit activity.
async fn gather(
    graph: &GraphClient<'_>,
    tenant: &str,
    now: OffsetDateTime,
) -> (TenantFacts, SsprActivity) {
    let since = now - time::Duration::hours(24);
    let (
        organization,
        skus,
        role_holders,
        sspr_enabled_users,
        allowed_to_use_sspr,
        sspr,
        admin_resets,
        cloud_sync_jobs,
    ) = tokio::join!(
        organization(graph),
        subscribed_skus(graph),
        role_holders(graph),
        sspr_enabled_users(graph),
        allowed_to_use_sspr(graph),
        sspr_activity(graph, since),
        admin_resets(graph, since),
        cloud_sync_jobs(graph),
    );
    (
        TenantFacts {
            tenant: tenant.to_owned(),
            now,
            organization,
            skus,
            role_holders,
            sspr_enabled_users,
            allowed_to_use_sspr,
            admin_resets,
            cloud_sync_jobs,
        },
        sspr,
    )
}

/// Makes sure the token reaches the tenant's own Entra directory before anything is read. With
/// one multi-tenant app consented in many customers' directories, a wrong or mistyped
/// `directory_id` would otherwise show one customer's users and audit events in another's
/// status.
async fn verify_directory(graph: &GraphClient<'_>, expected: uuid::Uuid) -> Result<(), String> {
    let orgs = graph
        .list(Call {
            path: "/organization?$select=id",
            what: "the organization",
            permission: "Organization.Read.All",
        })
        .await
        .map_err(reason)?;
    let id = orgs
        .items
        .first()
        .and_then(|org| org["id"].as_str())
        .ok_or("Graph returned no organization id")?;
    if id.eq_ignore_ascii_case(&expected.to_string()) {
        Ok(())
    } else {
        Err(format!(
            "the Graph credential signs in to directory {id}, not to this tenant's Entra tenant {expected}, so nothing was read; fix: set the credential's directory_id to {expected}, or correct the tenant's entra_tenant_id"
        ))
    }
}

/// RFC 3339 at whole seconds, as `$filter` on `activityDateTime` takes it.
fn filter_stamp(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// TEN-09: the administrator resets since `since` that stayed in the cloud, with the sync
/// state of each target user.
async fn admin_resets(graph: &GraphClient<'_>, since: OffsetDateTime) -> Fact<AdminResets> {
    let path = format!(
        "/auditLogs/directoryAudits?$filter=activityDisplayName%20eq%20'Reset%20password%20(by%20admin)'%20and%20activityDateTime%20ge%20{}",
        filter_stamp(since)
    );
    let events = graph
        .list(Call {
            path: &path,
            what: "the directory audit log",
            permission: "AuditLog.Read.All",
        })
        .await
        .map_err(reason)?;
    let mut cloud_only = checks::cloud_only_resets(&events.items);
    let mut synced: HashMap<String, Option<bool>> = HashMap::new();
    for reset in &mut cloud_only {
        if !synced.contains_key(&reset.user_id) {
            if synced.len() >= MAX_RESET_TARGETS {
                continue;
            }
            let user = directory_user(graph, &reset.user_id)
                .await
                .map_err(reason)?;
            if let Some(u) = &user
                && reset.user_principal_name.is_empty()
            {
                reset.user_principal_name = u.user_principal_name.clone();
            }
            synced.insert(
                reset.user_id.clone(),
                user.and_then(|u| u.on_premises_sync_enabled),
            );
        }
        reset.synced = synced.get(&reset.user_id).copied().flatten();
    }
    let mut truncated = events.truncation_note();
    let looked_up_all = cloud_only.iter().all(|r| synced.contains_key(&r.user_id));
    if !looked_up_all {
        let note = format!("only the first {MAX_RESET_TARGETS} reset users were looked up");
        truncated = Some(match truncated {
            Some(t) => format!("{t}; {note}"),
            None => note,
        });
    }
    Ok(AdminResets {
        events: events
            .items
            .iter()
            .filter(|e| e["activityDisplayName"] == checks::ADMIN_RESET_ACTIVITY)
            .count(),
        cloud_only,
        truncated,
    })
}

/// CS-06: the AD2AAD jobs of every Cloud Sync service principal.
async fn cloud_sync_jobs(graph: &GraphClient<'_>) -> Fact<CloudSyncJobs> {
    let path = format!(
        "/servicePrincipals?$filter=applicationTemplateId%20eq%20'{CLOUD_SYNC_TEMPLATE}'&$select=id,displayName,applicationTemplateId"
    );
    let principals = graph
        .list(Call {
            path: &path,
            what: "the Cloud Sync service principals",
            permission: "Application.Read.All",
        })
        .await
        .map_err(reason)?;
    let mut notes: Vec<String> = principals.truncation_note().into_iter().collect();
    let mut jobs = Vec::new();
    for sp in &principals.items {
        let Some(id) = sp["id"].as_str() else {
            continue;
        };
        let name = sp["displayName"].as_str().unwrap_or(id).to_owned();
        let path = format!("/servicePrincipals/{}/synchronization/jobs", segment(id));
        let listed = graph
            .list(Call {
                path: &path,
                what: "the Cloud Sync synchronization jobs",
                permission: "Synchronization.Read.All",
            })
            .await
            .map_err(reason)?;
        if let Some(note) = listed.truncation_note() {
            notes.push(format!("{name}: {note}"));
        }
        jobs.extend(
            listed
                .items
                .iter()
                .filter(|j| {
                    j["templateId"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("AD2AAD"))
                })
                .map(|j| {
                    let q = &j["status"]["quarantine"];
                    checks::SyncJob {
                        service_principal: name.clone(),
                        job_id: j["id"].as_str().unwrap_or("").to_owned(),
                        template_id: j["templateId"].as_str().unwrap_or("").to_owned(),
                        status_code: j["status"]["code"].as_str().unwrap_or("").to_owned(),
                        quarantine_reason: q["reason"].as_str().map(str::to_owned),
                        quarantine_error: q["error"]["message"]
                            .as_str()
                            .or_else(|| q["error"]["code"].as_str())
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned),
                        quarantined_since: q["seriesBegan"].as_str().map(str::to_owned),
                    }
                }),
        );
    }
    Ok(CloudSyncJobs {
        jobs,
        truncated: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

async fn organization(graph: &GraphClient<'_>) -> Fact<Organization> {
    let orgs = graph
        .list(Call {
            path: "/organization?$select=id,displayName,onPremisesSyncEnabled,onPremisesLastSyncDateTime",
            what: "the organization",
            permission: "Organization.Read.All",
        })
        .await
        .map_err(reason)?
        .items;
    let org = orgs
        .first()
        .ok_or("Graph returned no organization object")?;
    Ok(Organization {
        display_name: org["displayName"].as_str().unwrap_or("").to_owned(),
        on_premises_sync_enabled: org["onPremisesSyncEnabled"].as_bool(),
        on_premises_last_sync: org["onPremisesLastSyncDateTime"].as_str().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }),
    })
}

async fn subscribed_skus(graph: &GraphClient<'_>) -> Fact<Vec<Sku>> {
    let skus = graph
        .list(Call {
            path: "/subscribedSkus",
            what: "the subscribed SKUs",
            permission: "Organization.Read.All",
        })
        .await
        .map_err(reason)?;
    // A cut-short list could hide the SKU that carries P1 (a false fail).
    if let Some(note) = skus.truncation_note() {
        return Err(format!("the subscribed SKUs are incomplete: {note}"));
    }
    let skus = skus.items;
    Ok(skus
        .iter()
        .map(|s| Sku {
            sku_part_number: s["skuPartNumber"].as_str().unwrap_or("").to_owned(),
            capability_status: s["capabilityStatus"].as_str().unwrap_or("").to_owned(),
            enabled_units: s["prepaidUnits"]["enabled"].as_i64().unwrap_or(0),
            service_plans: s["servicePlans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["servicePlanName"].as_str().map(str::to_owned))
                .collect(),
        })
        .collect())
}

/// Path-segment encoding for an object id or UPN.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn directory_user(
    graph: &GraphClient<'_>,
    id: &str,
) -> Result<Option<DirectoryUser>, GraphError> {
    let path = format!(
        "/users/{}?$select=id,userPrincipalName,onPremisesSyncEnabled,onPremisesSecurityIdentifier",
        segment(id)
    );
    match graph
        .get(Call {
            path: &path,
            what: "users",
            permission: "User.Read.All",
        })
        .await
    {
        Ok(u) => Ok(Some(DirectoryUser {
            user_principal_name: u["userPrincipalName"].as_str().unwrap_or(id).to_owned(),
            on_premises_sync_enabled: u["onPremisesSyncEnabled"].as_bool(),
            on_premises_security_identifier: u["onPremisesSecurityIdentifier"]
                .as_str()
                .map(str::to_owned),
        })),
        Err(GraphError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn premium_plans(graph: &GraphClient<'_>, id: &str) -> Fact<Vec<String>> {
    let path = format!("/users/{}/licenseDetails", segment(id));
    let details = graph
        .list(Call {
            path: &path,
            what: "users' licence details",
            permission: "User.Read.All",
        })
        .await
        .map_err(reason)?;
    if let Some(note) = details.truncation_note() {
        return Err(format!("the licence details are incomplete: {note}"));
    }
    let details = details.items;
    let mut plans: Vec<String> = details
        .iter()
        .flat_map(|d| d["servicePlans"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["provisioningStatus"] == "Success")
        .filter_map(|p| p["servicePlanName"].as_str().map(str::to_owned))
        .filter(|name| checks::PREMIUM_PLANS.contains(&name.as_str()))
        .collect();
    plans.sort();
    plans.dedup();
    Ok(plans)
}

async fn role_holders(graph: &GraphClient<'_>) -> Fact<Vec<RoleHolder>> {
    let assignments = graph
        .list(Call {
            path: "/roleManagement/directory/roleAssignments",
            what: "the directory role assignments",
            permission: "RoleManagement.Read.Directory",
        })
        .await
        .map_err(reason)?;
    // A missing page could hide a synced administrator (a false pass of TEN-07).
    if let Some(note) = assignments.truncation_note() {
        return Err(format!(
            "the directory role assignments are incomplete: {note}; fix: none in wbhealth yet, check the role holders in the Entra admin center"
        ));
    }
    let assignments = assignments.items;
    let mut users: HashMap<String, Option<DirectoryUser>> = HashMap::new();
    let mut domains: HashMap<String, Fact<bool>> = HashMap::new();
    let mut holders = Vec::new();
    for a in assignments {
        let principal_id = a["principalId"].as_str().unwrap_or("").to_owned();
        let role_definition_id = a["roleDefinitionId"].as_str().unwrap_or("").to_owned();
        if principal_id.is_empty() {
            continue;
        }
        if !users.contains_key(&principal_id) {
            if users.len() >= MAX_ROLE_PRINCIPALS {
                continue;
            }
            let user = directory_user(graph, &principal_id).await.map_err(reason)?;
            users.insert(principal_id.clone(), user);
        }
        let user = users.get(&principal_id).cloned().flatten();
        let mut holder = RoleHolder {
            role_definition_id,
            principal_id: principal_id.clone(),
            user,
            premium_plans: None,
            federated: None,
        };
        if holder.configures_writeback()
            && let Some(user) = &holder.user
        {
            let domain = user
                .user_principal_name
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            holder.premium_plans = Some(premium_plans(graph, &principal_id).await);
            if !domains.contains_key(&domain) {
                let federated = domain_is_federated(graph, &domain).await;
                domains.insert(domain.clone(), federated);
            }
            holder.federated = domains.get(&domain).cloned();
        }
        holders.push(holder);
    }
    Ok(holders)
}

async fn domain_is_federated(graph: &GraphClient<'_>, domain: &str) -> Fact<bool> {
    let path = format!("/domains/{}", segment(domain));
    let d = graph
        .get(Call {
            path: &path,
            what: "the tenant's domains",
            permission: "Domain.Read.All",
        })
        .await
        .map_err(reason)?;
    Ok(d["authenticationType"].as_str() == Some("Federated"))
}

async fn sspr_enabled_users(graph: &GraphClient<'_>) -> Fact<usize> {
    graph
        .first_page(Call {
            path: "/reports/authenticationMethods/userRegistrationDetails?$filter=isSsprEnabled%20eq%20true&$top=1",
            what: "the users' registration details",
            permission: "AuditLog.Read.All",
        })
        .await
        .map(|v| v.len())
        .map_err(reason)
}

async fn allowed_to_use_sspr(graph: &GraphClient<'_>) -> Fact<bool> {
    let policy = graph
        .get(Call {
            path: "/policies/authorizationPolicy",
            what: "the authorization policy",
            permission: "Policy.Read.All",
        })
        .await
        .map_err(reason)?;
    // v1.0 returns the object itself; some tenants answer with a one-item collection.
    let policy = match policy.get("value").and_then(Value::as_array) {
        Some(items) => items.first().cloned().unwrap_or(Value::Null),
        None => policy,
    };
    policy["allowedToUseSSPR"]
        .as_bool()
        .ok_or_else(|| "the authorization policy has no allowedToUseSSPR".to_owned())
}

async fn sspr_activity(graph: &GraphClient<'_>, since: OffsetDateTime) -> SsprActivity {
    let since = since.replace_nanosecond(0).unwrap_or(since);
    let stamp = filter_stamp(since);
    let path = format!(
        "/auditLogs/directoryAudits?$filter=loggedByService%20eq%20'Self-service%20Password%20Management'%20and%20activityDateTime%20ge%20{stamp}"
    );
    match graph
        .list(Call {
            path: &path,
            what: "the directory audit log",
            permission: "AuditLog.Read.All",
        })
        .await
    {
        Ok(events) => {
            let mut activity = checks::sspr_activity(&events.items, since);
            // The counts stay, but they are not the whole day's activity.
            activity.error = events
                .truncation_note()
                .map(|note| format!("the counts are incomplete: {note}"));
            activity
        }
        Err(e) => SsprActivity {
            since: Some(since),
            error: Some(e.to_string()),
            ..SsprActivity::default()
        },
    }
}

async fn gather_user(graph: &GraphClient<'_>, upn: &str, now: OffsetDateTime) -> UserFacts {
    let user = match directory_user(graph, upn).await {
        Ok(u) => u,
        Err(e) => {
            let r = e.to_string();
            return UserFacts {
                upn: upn.to_owned(),
                user: Err(r.clone()),
                premium_plans: Err(r.clone()),
                registration: Err(r),
                now,
            };
        }
    };
    if user.is_none() {
        return UserFacts {
            upn: upn.to_owned(),
            user: Ok(None),
            premium_plans: Ok(Vec::new()),
            registration: Ok(None),
            now,
        };
    }
    let registration_path = format!(
        "/reports/authenticationMethods/userRegistrationDetails?$filter=userPrincipalName%20eq%20'{}'",
        segment(&upn.replace('\'', "''"))
    );
    let (premium, registration) = tokio::join!(
        premium_plans(graph, upn),
        graph.first_page(Call {
            path: &registration_path,
            what: "the user's registration details",
            permission: "AuditLog.Read.All",
        })
    );
    let registration = registration.map_err(reason).map(|items| {
        items.first().map(|r| {
            (
                r["isSsprEnabled"].as_bool().unwrap_or(false),
                r["isSsprRegistered"].as_bool().unwrap_or(false),
                r["isSsprCapable"].as_bool().unwrap_or(false),
            )
        })
    });
    UserFacts {
        upn: upn.to_owned(),
        user: Ok(user),
        premium_plans: premium,
        registration,
        now,
    }
}

/// What `token.expose_secret` is used for; keeps the import honest in non-test builds.
#[allow(dead_code)]
fn _uses(token: &SecretString) -> usize {
    token.expose_secret().len()
}

//! Authentication of REST callers: `Authorization: Bearer <credential>` on every `/api/v1`
//! route except the OpenAPI document, turned into a [`Principal`] that handlers authorize with
//! [`Principal::require`] and whose [`TenantScope`] they hand to the store.
//!
//! Three credentials are accepted: API keys (`wbh_key_…`), session tokens the server issues at
//! `POST /api/v1/sign-in` (HS256 JWTs naming a user, whose role and tenants are read from the
//! store on every request), and access tokens of the configured OIDC provider (verified
//! through its JWKS, role and tenants mapped from a claim). Every failure is the same 401; the
//! reason is logged at debug level, never the credential.
//!
//! Failed authentication is rate-limited per client IP ([`FailedAuth`]): after
//! [`MAX_FAILURES`] failures within a minute, every request that presents a credential from
//! that address is answered 429 with `Retry-After` until the minute is over.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::AppState;
use crate::domain::session_token::{self, SessionClaims};
use crate::domain::{
    ApiKey, AuditAction, NewAuditEvent, Operation, Role, TenantId, TenantScope, User, authorize,
    secrets,
};
use crate::error::{Error, ErrorCode};
use crate::oidc::OidcIdentity;
use crate::storage::StoreError;

/// Failed authentications allowed per client IP per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window over which failures are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Beyond this many tracked addresses, expired entries are dropped.
const MAX_TRACKED: usize = 10_000;

/// What kind of credential a principal authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key.
    ApiKey,
    /// A user, through a session token.
    User,
    /// A subject of the external OIDC provider, through its access token.
    OidcSubject,
}

/// Who is calling, what they may do and which tenants they may see.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key's or user's id, as recorded in the audit log.
    pub id: Uuid,
    /// What it authenticated with.
    pub kind: PrincipalKind,
    /// Its name, for logs and the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For an integration, the operations its key names.
    pub operations: Vec<Operation>,
    /// The tenants it may see; the store enforces it.
    pub scope: TenantScope,
    /// Where the request came from, when known.
    pub client_ip: Option<IpAddr>,
    /// For a user signed in with a session token, that token's claims (for signing out).
    pub session: Option<SessionClaims>,
    /// For an API key a user created, that user's role now: the key never does more.
    pub ceiling: Option<Role>,
    /// The local user this principal acts for: the signed-in user, or the user who owns the
    /// API key. Keys it creates belong to that user too.
    pub owner: Option<crate::domain::UserId>,
}

/// The scope of a role with these assignments.
fn scope_of(role: Role, tenants: Vec<TenantId>) -> TenantScope {
    match role {
        Role::Administrator => TenantScope::All,
        Role::Technician | Role::Viewer | Role::Integration => TenantScope::Only(tenants),
    }
}

impl Principal {
    /// The principal of a valid API key.
    pub fn from_api_key(key: ApiKey, client_ip: Option<IpAddr>) -> Self {
        Self {
            id: key.id.0,
            kind: PrincipalKind::ApiKey,
            name: key.name,
            role: key.role,
            operations: key.operations,
            scope: scope_of(key.role, key.tenants),
            client_ip,
            session: None,
            ceiling: None,
            owner: None,
        }
    }

    /// The principal of an authenticated user, with its role and tenants as stored.
    pub fn from_user(user: User, client_ip: Option<IpAddr>) -> Self {
        let user_id = user.id;
        Self {
            id: user.id.0,
            kind: PrincipalKind::User,
            name: user.name,
            role: user.role,
            operations: Vec::new(),
            scope: scope_of(user.role, user.tenants),
            client_ip,
            session: None,
            ceiling: None,
            owner: Some(user_id),
        }
    }

    /// The principal of a verified OIDC token, with the role and tenants its claims map to.
    pub fn from_oidc(identity: OidcIdentity, client_ip: Option<IpAddr>) -> Self {
        Self {
            id: identity.id,
            kind: PrincipalKind::OidcSubject,
            name: identity.name,
            role: identity.role,
            operations: Vec::new(),
            scope: scope_of(identity.role, identity.tenants),
            client_ip,
            session: None,
            ceiling: None,
            owner: None,
        }
    }

    /// Limits an API key to what its owner, as the store has the user now, may do and see.
    pub fn cap_to_owner(&mut self, owner: User) {
        self.ceiling = Some(owner.role);
        self.owner = Some(owner.id);
        let owner_scope = scope_of(owner.role, owner.tenants);
        self.scope = match (
            std::mem::replace(&mut self.scope, TenantScope::All),
            owner_scope,
        ) {
            (TenantScope::All, scope) | (scope, TenantScope::All) => scope,
            (TenantScope::Only(mine), TenantScope::Only(theirs)) => {
                TenantScope::Only(mine.into_iter().filter(|t| theirs.contains(t)).collect())
            }
        };
    }

    /// `Forbidden` unless the principal may perform `op` (on the tenants in its scope).
    pub fn require(&self, op: Operation) -> Result<(), Error> {
        if authorize(self.role, Some(&self.operations), op)
            && self.ceiling.is_none_or(|owner| authorize(owner, None, op))
        {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "a {} credential may not perform {}",
                    self.role.as_str(),
                    op.as_str()
                ),
            ))
        }
    }

    /// An audit event for a change this principal made.
    pub fn audit_event(
        &self,
        action: AuditAction,
        tenant_id: Option<TenantId>,
        target_id: Option<Uuid>,
    ) -> NewAuditEvent {
        NewAuditEvent {
            principal_id: self.id,
            principal_name: self.name.clone(),
            action,
            tenant_id,
            target_id,
            client_ip: self.client_ip.map(|ip| ip.to_string()),
        }
    }
}

/// Failed authentications per client IP, in fixed one-minute windows. Kept in memory per
/// process: behind several replicas a client gets up to [`MAX_FAILURES`] per replica.
#[derive(Debug, Default)]
pub struct FailedAuth {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuth {
    /// `Err(seconds to wait)` when `ip` has used up its failures in the current window.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(&ip) {
            Some(&(start, failures))
                if failures >= MAX_FAILURES && now.duration_since(start) < FAILURE_WINDOW =>
            {
                let left = FAILURE_WINDOW.saturating_sub(now.duration_since(start));
                Err(left.as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `ip`.
    pub fn record(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_TRACKED {
            windows.retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Middleware: authenticates the caller and stores its [`Principal`] in the request, or
/// answers 401 (429 after too many failures) with a problem document.
pub async fn require_principal(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, Error> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client_ip = client_ip(&state, peer, request.headers());
    let principal = authenticate(&state, request.headers(), client_ip).await?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// The client's address: the TCP peer, or, when the peer is a configured trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy itself (read right to
/// left, so a client cannot put a made-up address in front of the proxy's).
pub(crate) fn client_ip(
    state: &AppState,
    peer: Option<IpAddr>,
    headers: &http::HeaderMap,
) -> Option<IpAddr> {
    let peer = peer?;
    let trusted = |ip: IpAddr| state.config.trusted_proxies.iter().any(|r| r.contains(ip));
    if !trusted(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// The one answer to every failed authentication, whatever check failed.
const REFUSED: &str = "the credential is not valid; send Authorization: Bearer <API key or token>";

/// 429 when `client_ip` has used up its failed authentications for now.
pub(crate) fn refuse_if_throttled(
    state: &AppState,
    client_ip: Option<IpAddr>,
) -> Result<(), Error> {
    let Some(ip) = client_ip else {
        return Ok(());
    };
    state
        .failed_auth
        .check(ip, Instant::now())
        .map_err(|seconds| {
            let mut e = Error::new(
                ErrorCode::RateLimited,
                format!(
                    "too many failed authentications from this address; try again in {seconds} s"
                ),
            );
            e.retry_after = Some(seconds);
            e
        })
}

/// Counts a failed authentication of `client_ip`, logs why (never the credential) and returns
/// the 401 every failure gets.
pub(crate) fn failed(
    state: &AppState,
    client_ip: Option<IpAddr>,
    reason: &dyn std::fmt::Display,
) -> Error {
    if let Some(ip) = client_ip {
        state.failed_auth.record(ip, Instant::now());
    }
    tracing::debug!(client_ip = ?client_ip, reason = %reason, "authentication refused");
    tracing::warn!(client_ip = ?client_ip, "authentication failed");
    Error::new(ErrorCode::Unauthenticated, REFUSED)
}

/// Turns the request's credential into a principal. The one place credentials are read: an
/// API key (`wbh_key_…`), a session token this server issued, or an access token of the
/// configured OIDC provider (told apart by the token's issuer, each then verified with its own
/// key and algorithms only).
async fn authenticate(
    state: &AppState,
    headers: &http::HeaderMap,
    client_ip: Option<IpAddr>,
) -> Result<Principal, Error> {
    let header = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        Error::new(
            ErrorCode::Unauthenticated,
            "send Authorization: Bearer <API key or token>",
        )
    })?;
    refuse_if_throttled(state, client_ip)?;
    let Some(credential) = header
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
    else {
        return Err(failed(state, client_ip, &"malformed Authorization header"));
    };
    if !credential.starts_with("wbh_key_")
        && let Some(issuer) = session_token::unverified_issuer(credential)
    {
        if issuer == session_token::ISSUER {
            return session_principal(state, credential, client_ip).await;
        }
        if let Some(oidc) = state.oidc.as_ref().filter(|o| o.issuer() == issuer) {
            return match oidc.verify(credential).await {
                Ok(identity) => {
                    tracing::debug!(subject = %identity.subject, role = identity.role.as_str(), "oidc token accepted");
                    Ok(Principal::from_oidc(identity, client_ip))
                }
                Err(reason) => Err(failed(state, client_ip, &reason)),
            };
        }
        return Err(failed(
            state,
            client_ip,
            &"a JWT from an issuer this server does not accept",
        ));
    }
    let now = OffsetDateTime::now_utc();
    let key = match state
        .store
        .api_key_by_hash(&secrets::hash(credential))
        .await
    {
        Ok(key) => key,
        Err(StoreError::NotFound) => return Err(failed(state, client_ip, &"unknown API key")),
        Err(e) => return Err(Error::from_store(e, "API key")),
    };
    if key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now) {
        return Err(failed(state, client_ip, &"revoked or expired API key"));
    }
    state.activity.api_key_used(key.id, now);
    let owner = state
        .store
        .api_key_owner(key.id)
        .await
        .map_err(|e| Error::from_store(e, "API key"))?;
    let mut principal = Principal::from_api_key(key, client_ip);
    if let Some(owner) = owner {
        match state.store.user(owner).await {
            Ok(user) if user.disabled_at.is_none() => principal.cap_to_owner(user),
            Ok(_) => return Err(failed(state, client_ip, &"API key of a disabled user")),
            Err(StoreError::NotFound) => {
                return Err(failed(state, client_ip, &"API key of a deleted user"));
            }
            Err(e) => return Err(Error::from_store(e, "user")),
        }
    }
    Ok(principal)
}

/// The principal of a session token: the user as the store has it now.
async fn session_principal(
    state: &AppState,
    token: &str,
    client_ip: Option<IpAddr>,
) -> Result<Principal, Error> {
    let claims = state
        .session_tokens
        .verify(token)
        .map_err(|reason| failed(state, client_ip, &reason))?;
    match state.store.session_token_revoked(claims.jti).await {
        Ok(false) => {}
        Ok(true) => return Err(failed(state, client_ip, &"signed-out session token")),
        Err(e) => return Err(Error::from_store(e, "session token")),
    }
    let user = match state.store.user(claims.user).await {
        Ok(user)
            if user
                .sessions_valid_after
                .is_some_and(|after| claims.issued_at < after) =>
        {
            return Err(failed(
                state,
                client_ip,
                &"session token issued before the user's password last changed",
            ));
        }
        Ok(user) if user.disabled_at.is_none() => user,
        Ok(_) => {
            return Err(failed(
                state,
                client_ip,
                &"session token of a disabled user",
            ));
        }
        Err(StoreError::NotFound) => {
            return Err(failed(state, client_ip, &"session token of a deleted user"));
        }
        Err(e) => return Err(Error::from_store(e, "user")),
    };
    let mut principal = Principal::from_user(user, client_ip);
    principal.session = Some(claims);
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_limit_wait_for_the_window() {
        let limiter = FailedAuth::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(limiter.check(ip, start), Ok(()));
            limiter.record(ip, start);
        }
        assert_eq!(limiter.check(ip, start), Err(60));
        assert_eq!(limiter.check(other, start), Ok(()));
        let later = start + FAILURE_WINDOW;
        assert_eq!(limiter.check(ip, later), Ok(()));
        limiter.record(ip, later);
        assert_eq!(limiter.check(ip, later), Ok(()));
    }
}

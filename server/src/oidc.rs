//! External OIDC providers (Entra ID is the usual one): access tokens they sign are accepted
//! as bearer tokens, verified against the provider's JWKS and mapped to a wbhealth role and
//! tenants through a configured [`RoleMap`].
//!
//! The JWKS is fetched (after discovery through `/.well-known/openid-configuration` when no
//! JWKS URL is configured) on first use and cached; a token whose `kid` is not in the cache
//! triggers one refetch, at most once per configured interval, so the provider can rotate its
//! keys without a restart and a flood of made-up key ids cannot make the server hammer it.
//!
//! Only asymmetric algorithms are accepted, and only those the key allows: the JWK's `alg`
//! when it declares one, otherwise the algorithms of its key type (RSA: RS256/384/512; EC:
//! ES256 on P-256, ES384 on P-384; OKP: EdDSA). Symmetric keys in the JWKS are ignored, and
//! `none` or HS* never verify.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::OidcSettings;
use crate::domain::{Role, TenantId};

/// Keys older than this are fetched again on the next token, whatever their `kid`.
const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated with the provider, in seconds.
const LEEWAY_SECONDS: u64 = 60;

/// One line of the role map: tokens whose claim holds `value` get `role` on `tenants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    value: String,
    role: String,
    #[serde(default)]
    tenants: Vec<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleMapFile {
    claim: String,
    #[serde(default, rename = "grant")]
    grants: Vec<Grant>,
}

/// Which claim to read and what its values grant. The TOML format is documented in
/// `deploy/oidc-role-map.example.toml`.
///
/// When several values of a token match, the most capable role wins (administrator, then
/// technician, then viewer) with the tenants of every matching grant of that role. A token
/// with no matching value gets nothing: it is refused, never given a default role.
#[derive(Debug, Clone)]
pub struct RoleMap {
    claim: String,
    grants: Vec<(String, Role, Vec<TenantId>)>,
}

impl RoleMap {
    /// Parses and checks the TOML text; the error says what is wrong.
    pub fn parse(text: &str) -> Result<RoleMap, String> {
        let file: RoleMapFile = toml::from_str(text).map_err(|e| {
            format!(
                "not a valid role map: {}",
                e.message().lines().next().unwrap_or("")
            )
        })?;
        if file.claim.trim().is_empty() {
            return Err("claim is empty; use \"roles\" or \"groups\"".into());
        }
        if file.grants.is_empty() {
            return Err(
                "no [[grant]] entries; a role map that grants nothing refuses everyone".into(),
            );
        }
        let mut grants = Vec::with_capacity(file.grants.len());
        for grant in file.grants {
            let role = match Role::parse(&grant.role) {
                Some(role @ (Role::Administrator | Role::Technician | Role::Viewer)) => role,
                _ => {
                    return Err(format!(
                        "grant {:?}: role {:?} is not administrator, technician or viewer",
                        grant.value, grant.role
                    ));
                }
            };
            match (role, grant.tenants.is_empty()) {
                (Role::Administrator, false) => {
                    return Err(format!(
                        "grant {:?}: an administrator sees every tenant; remove its tenants",
                        grant.value
                    ));
                }
                (Role::Technician | Role::Viewer, true) => {
                    return Err(format!(
                        "grant {:?}: a {} needs tenants = [\"<wbhealth tenant id>\", …]",
                        grant.value, grant.role
                    ));
                }
                _ => {}
            }
            grants.push((
                grant.value,
                role,
                grant.tenants.into_iter().map(TenantId).collect(),
            ));
        }
        Ok(RoleMap {
            claim: file.claim,
            grants,
        })
    }

    /// The claim whose values are mapped.
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// The role and tenants the token's claims grant, or `None` when nothing matches.
    pub fn resolve(&self, claims: &Value) -> Option<(Role, Vec<TenantId>)> {
        let values: BTreeSet<&str> = match claims.get(&self.claim)? {
            Value::String(one) => BTreeSet::from([one.as_str()]),
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let matching: Vec<&(String, Role, Vec<TenantId>)> = self
            .grants
            .iter()
            .filter(|(value, _, _)| values.contains(value.as_str()))
            .collect();
        let role = [Role::Administrator, Role::Technician, Role::Viewer]
            .into_iter()
            .find(|role| matching.iter().any(|(_, r, _)| r == role))?;
        let tenants: BTreeSet<TenantId> = matching
            .iter()
            .filter(|(_, r, _)| *r == role)
            .flat_map(|(_, _, tenants)| tenants.iter().copied())
            .collect();
        Some((role, tenants.into_iter().collect()))
    }
}

/// Who a verified OIDC token is, and what the role map grants it.
#[derive(Debug, Clone)]
pub struct OidcIdentity {
    /// A stable id for the audit log, derived from issuer and subject.
    pub id: Uuid,
    /// The token's `sub`.
    pub subject: String,
    /// A name for people and the audit log: the username (if the token has one) and subject.
    pub name: String,
    /// The mapped role.
    pub role: Role,
    /// The mapped tenants (empty for an administrator).
    pub tenants: Vec<TenantId>,
}

/// Why a token was refused. Logged at debug level without the token; the caller only ever
/// sees 401.
#[derive(Debug, thiserror::Error)]
pub enum OidcRefusal {
    /// The header does not parse, or names `none` or an algorithm this server does not know.
    #[error("malformed token or unsupported algorithm: {0}")]
    Header(jsonwebtoken::errors::Error),
    /// A symmetric algorithm: never accepted from a provider.
    #[error("symmetric algorithm {0:?} is never accepted from an OIDC provider")]
    Symmetric(Algorithm),
    /// No `kid` in the header.
    #[error("the token names no key id")]
    NoKeyId,
    /// The key id is not in the JWKS, even after a refetch (or a refetch was too recent).
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The key does not allow the token's algorithm.
    #[error("algorithm {alg:?} is not allowed for key {kid:?}")]
    AlgorithmNotAllowed {
        /// The token's algorithm.
        alg: Algorithm,
        /// The key id.
        kid: String,
    },
    /// The signature or a claim (`iss`, `aud`, `exp`, `nbf`, required claims) failed.
    #[error("verification failed: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    /// The token is valid but its claim maps to no role.
    #[error("claim {0:?} holds no mapped value")]
    Unmapped(String),
}

/// A key from the JWKS with the algorithms it may verify.
struct CachedKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, CachedKey>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// Verifies access tokens of one OIDC provider.
pub struct OidcVerifier {
    settings: OidcSettings,
    client: reqwest::Client,
    cache: RwLock<KeyCache>,
    fetching: Mutex<()>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcVerifier {
    /// A verifier for the configured provider. Fetches nothing yet.
    pub fn new(settings: OidcSettings) -> anyhow::Result<OidcVerifier> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3));
        for cert in rustls_native_certs::load_native_certs().certs {
            if let Ok(cert) = reqwest::Certificate::from_der(cert.as_ref()) {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &settings.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                anyhow::anyhow!(
                    "--oidc-ca-file / WBH_OIDC_CA_FILE: not a PEM certificate bundle: {e}"
                )
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(OidcVerifier {
            settings,
            client: builder.build()?,
            cache: RwLock::default(),
            fetching: Mutex::new(()),
        })
    }

    /// The issuer whose tokens this verifier takes.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Verifies `token` and maps it to a role and tenants.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, OidcRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(OidcRefusal::Header)?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(OidcRefusal::Symmetric(header.alg));
        }
        let kid = header.kid.ok_or(OidcRefusal::NoKeyId)?;
        let claims = self.verify_with_key(token, &kid, header.alg).await?;
        let (role, tenants) = self
            .settings
            .role_map
            .resolve(&claims)
            .ok_or_else(|| OidcRefusal::Unmapped(self.settings.role_map.claim().to_owned()))?;
        let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
        let username = ["preferred_username", "upn", "email", "name"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str));
        let name = match username {
            Some(username) => format!("{username} (oidc {subject})"),
            None => format!("oidc {subject}"),
        };
        let digest = Sha256::digest(format!("{}\0{subject}", self.settings.issuer).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Ok(OidcIdentity {
            id: uuid::Builder::from_custom_bytes(bytes).into_uuid(),
            subject,
            name,
            role,
            tenants,
        })
    }

    async fn verify_with_key(
        &self,
        token: &str,
        kid: &str,
        alg: Algorithm,
    ) -> Result<Value, OidcRefusal> {
        if !self.has_fresh_key(kid).await {
            self.refetch(kid).await;
        }
        let cache = self.cache.read().await;
        let cached = cache
            .keys
            .get(kid)
            .ok_or_else(|| OidcRefusal::UnknownKey(kid.to_owned()))?;
        if !cached.algorithms.contains(&alg) {
            return Err(OidcRefusal::AlgorithmNotAllowed {
                alg,
                kid: kid.to_owned(),
            });
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        jsonwebtoken::decode::<Value>(token, &cached.key, &validation)
            .map(|data| data.claims)
            .map_err(OidcRefusal::Invalid)
    }

    async fn has_fresh_key(&self, kid: &str) -> bool {
        let cache = self.cache.read().await;
        cache.keys.contains_key(kid)
            && cache
                .fetched_at
                .is_some_and(|at| at.elapsed() < MAX_KEY_AGE)
    }

    /// Fetches the JWKS again, unless another request just fetched this key or a fetch was
    /// attempted within the refetch interval (stale keys then stay in use).
    async fn refetch(&self, kid: &str) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let cache = self.cache.read().await;
            let stale = cache
                .fetched_at
                .is_none_or(|at| at.elapsed() >= MAX_KEY_AGE);
            let recent = cache
                .last_attempt
                .is_some_and(|at| at.elapsed() < self.settings.refetch_interval);
            if (cache.keys.contains_key(kid) && !stale) || recent {
                return;
            }
        }
        let fetched = self.fetch_keys().await;
        let mut cache = self.cache.write().await;
        cache.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), issuer = %self.settings.issuer, "fetched the OIDC provider's keys");
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(issuer = %self.settings.issuer, "cannot fetch the OIDC provider's keys: {e:#}");
            }
        }
    }

    async fn fetch_keys(&self) -> anyhow::Result<HashMap<String, CachedKey>> {
        let jwks_url = match &self.settings.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self
                    .client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                anyhow::ensure!(
                    discovery.issuer == self.settings.issuer,
                    "the discovery document at {url} names issuer {:?}, not the configured one",
                    discovery.issuer
                );
                discovery.jwks_uri
            }
        };
        let set: JwkSet = self
            .client
            .get(&jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            let algorithms = allowed_algorithms(jwk);
            if algorithms.is_empty() {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), CachedKey { key, algorithms });
                }
                Err(e) => tracing::debug!(kid = %kid, "skipping an unusable JWK: {e}"),
            }
        }
        Ok(keys)
    }
}

/// The asymmetric algorithms a JWK may verify: its declared `alg`, else those of its type.
fn allowed_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Vec::new();
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        _ => Vec::new(),
    };
    match jwk.common.key_algorithm {
        None => by_type,
        Some(declared) => {
            let declared = serde_json::to_value(declared)
                .ok()
                .and_then(|v| v.as_str().and_then(|s| Algorithm::from_str(s).ok()));
            match declared {
                // PSS is declared explicitly or not at all.
                Some(alg @ (Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512))
                    if matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) =>
                {
                    vec![alg]
                }
                Some(alg) if by_type.contains(&alg) => vec![alg],
                _ => Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAP: &str = r#"
claim = "roles"

[[grant]]
value = "WBHealth.Admin"
role = "administrator"

[[grant]]
value = "WBHealth.Tech.A"
role = "technician"
tenants = ["0193a8f2-6c1e-7d4b-9a51-3f0e8c2b1d77"]

[[grant]]
value = "WBHealth.View.B"
role = "viewer"
tenants = ["0193a8f2-6c1e-7d4b-9a51-3f0e8c2b1d78"]
"#;

    #[test]
    fn the_most_capable_matching_grant_wins_and_nothing_is_a_default() {
        let map = RoleMap::parse(MAP).expect("parses");
        let a = TenantId(Uuid::parse_str("0193a8f2-6c1e-7d4b-9a51-3f0e8c2b1d77").expect("uuid"));
        let b = TenantId(Uuid::parse_str("0193a8f2-6c1e-7d4b-9a51-3f0e8c2b1d78").expect("uuid"));
        assert_eq!(
            map.resolve(&json!({"roles": ["WBHealth.View.B", "WBHealth.Tech.A"]})),
            Some((Role::Technician, vec![a]))
        );
        assert_eq!(
            map.resolve(&json!({"roles": "WBHealth.View.B"})),
            Some((Role::Viewer, vec![b]))
        );
        assert_eq!(
            map.resolve(&json!({"roles": ["WBHealth.Admin", "WBHealth.View.B"]})),
            Some((Role::Administrator, vec![]))
        );
        assert_eq!(map.resolve(&json!({"roles": ["Other"]})), None);
        assert_eq!(map.resolve(&json!({"groups": ["WBHealth.Admin"]})), None);
        assert_eq!(map.resolve(&json!({})), None);
    }

    #[test]
    fn the_documented_example_parses() {
        let map = RoleMap::parse(include_str!("../../deploy/oidc-role-map.example.toml"))
            .expect("deploy/oidc-role-map.example.toml parses");
        assert_eq!(map.claim(), "roles");
        assert_eq!(
            map.resolve(&json!({"roles": ["WBHealth.Administrator"]})),
            Some((Role::Administrator, vec![]))
        );
    }

    #[test]
    fn a_bad_role_map_says_what_is_wrong() {
        for (text, says) in [
            ("claim = \"roles\"", "no [[grant]]"),
            (
                "claim = \"roles\"\n[[grant]]\nvalue = \"x\"\nrole = \"integration\"",
                "not administrator",
            ),
            (
                "claim = \"roles\"\n[[grant]]\nvalue = \"x\"\nrole = \"viewer\"",
                "needs tenants",
            ),
            ("claim = [", "not a valid role map"),
        ] {
            let e = RoleMap::parse(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn keys_allow_only_asymmetric_algorithms_they_declare() {
        let rsa: Jwk =
            serde_json::from_value(json!({"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}))
                .expect("jwk");
        assert_eq!(
            allowed_algorithms(&rsa),
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
        );
        let rs256: Jwk = serde_json::from_value(
            json!({"kty": "RSA", "kid": "r", "alg": "RS256", "n": "AQAB", "e": "AQAB"}),
        )
        .expect("jwk");
        assert_eq!(allowed_algorithms(&rs256), vec![Algorithm::RS256]);
        let lying: Jwk = serde_json::from_value(
            json!({"kty": "RSA", "kid": "r", "alg": "HS256", "n": "AQAB", "e": "AQAB"}),
        )
        .expect("jwk");
        assert!(allowed_algorithms(&lying).is_empty());
        let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0"}))
            .expect("jwk");
        assert!(allowed_algorithms(&oct).is_empty());
        let enc: Jwk = serde_json::from_value(
            json!({"kty": "RSA", "use": "enc", "kid": "r", "n": "AQAB", "e": "AQAB"}),
        )
        .expect("jwk");
        assert!(allowed_algorithms(&enc).is_empty());
    }
}

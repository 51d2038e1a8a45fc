//! Session tokens: short-lived JWTs the server issues to a user who signed in, and verifies on
//! every request. Only this server (and its replicas, which share the master key) issues and
//! verifies them, so they are HS256 with a key derived from the master key for this purpose.
//!
//! A token names the user (`sub`) and itself (`jti`); it carries no role or tenants. The
//! caller's role and scope are read from the store on each request, so a user whose
//! assignments change or who is deleted loses access at once, and signing out revokes the
//! `jti` until the token would have expired anyway.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{MasterKey, UserId};

/// The `iss` of every session token.
pub const ISSUER: &str = "wbhealth";
/// The `aud` of every session token.
pub const AUDIENCE: &str = "wbhealth-api";
/// The HKDF purpose label of the signing key.
pub const KEY_PURPOSE: &str = "session signing";
/// Clock skew tolerated between replicas, in seconds.
const LEEWAY_SECONDS: u64 = 5;

/// The claims of a session token, as signed.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: Uuid,
    jti: Uuid,
    iat: i64,
    /// `iat` in microseconds: a password change in the same second as a sign-in must tell
    /// whether the token came before or after it.
    #[serde(default)]
    iat_us: i64,
    nbf: i64,
    exp: i64,
}

/// What a valid session token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClaims {
    /// The user it was issued to.
    pub user: UserId,
    /// The token's own id, which signing out revokes.
    pub jti: Uuid,
    /// When it was issued (to the microsecond).
    pub issued_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// A token just issued, to be handed to the user once.
pub struct IssuedSessionToken {
    /// The compact JWT.
    pub token: String,
    /// Its id.
    pub jti: Uuid,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// Why a token was refused. Logged at debug level; the caller only ever sees 401.
#[derive(Debug, thiserror::Error)]
#[error("session token refused: {0}")]
pub struct Refused(#[from] jsonwebtoken::errors::Error);

/// Issues and verifies session tokens.
pub struct SessionTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    lifetime: time::Duration,
}

impl SessionTokens {
    /// Session tokens signed with the master key's session key, valid for `lifetime`.
    pub fn new(master_key: &MasterKey, lifetime: time::Duration) -> SessionTokens {
        let secret = master_key.derive(KEY_PURPOSE);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        SessionTokens {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            lifetime,
        }
    }

    /// A new token for `user`, valid from `now` for the configured lifetime.
    pub fn issue(&self, user: UserId, now: OffsetDateTime) -> IssuedSessionToken {
        let jti = Uuid::new_v4();
        let expires_at = now + self.lifetime;
        let claims = Claims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.0,
            jti,
            iat: now.unix_timestamp(),
            iat_us: i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail");
        IssuedSessionToken {
            token,
            jti,
            expires_at: OffsetDateTime::from_unix_timestamp(claims.exp).unwrap_or(expires_at),
        }
    }

    /// The claims of a token this server signed, if its algorithm is HS256, its signature
    /// holds, its issuer and audience are ours and it is within `nbf`..`exp`.
    pub fn verify(&self, token: &str) -> Result<SessionClaims, Refused> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        let claims = data.claims;
        Ok(SessionClaims {
            user: UserId(claims.sub),
            jti: claims.jti,
            issued_at: if claims.iat_us != 0 {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(claims.iat_us) * 1000)
            } else {
                OffsetDateTime::from_unix_timestamp(claims.iat)
            }
            .map_err(|_| Refused(jsonwebtoken::errors::ErrorKind::InvalidToken.into()))?,
            expires_at: OffsetDateTime::from_unix_timestamp(claims.exp)
                .map_err(|_| Refused(jsonwebtoken::errors::ErrorKind::ExpiredSignature.into()))?,
        })
    }
}

/// The `iss` claim of a compact JWT, read **without** verifying anything: only to choose
/// which verifier (session tokens or the OIDC provider) gets the token. `None` when the
/// credential is not a JWT with a string `iss`.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> SessionTokens {
        SessionTokens::new(
            &MasterKey::from_bytes(MasterKey::generate()),
            time::Duration::minutes(10),
        )
    }

    #[test]
    fn a_token_verifies_with_its_own_key_only() {
        let tokens = tokens();
        let user = UserId::new();
        let now = OffsetDateTime::now_utc();
        let issued = tokens.issue(user, now);
        assert_eq!(unverified_issuer(&issued.token).as_deref(), Some(ISSUER));
        let claims = tokens.verify(&issued.token).expect("valid");
        assert_eq!((claims.user, claims.jti), (user, issued.jti));
        assert!(
            self::tokens().verify(&issued.token).is_err(),
            "another master key"
        );
        let expired = tokens.issue(user, now - time::Duration::hours(1));
        assert!(tokens.verify(&expired.token).is_err());
        let early = tokens.issue(user, now + time::Duration::minutes(5));
        assert!(tokens.verify(&early.token).is_err(), "not valid before nbf");
        let mut tampered = issued.token.clone();
        tampered.pop();
        tampered.push(if issued.token.ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(tokens.verify(&tampered).is_err());
    }

    #[test]
    fn issuer_is_only_read_from_jwts() {
        assert_eq!(unverified_issuer("wbh_key_abc"), None);
        assert_eq!(unverified_issuer("a.b.c.d"), None);
        assert_eq!(unverified_issuer(""), None);
    }
}

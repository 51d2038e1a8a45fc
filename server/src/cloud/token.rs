//! Access tokens for Microsoft Graph through the OAuth 2.0 client-credentials flow on the
//! Microsoft identity platform's v2.0 token endpoint, with a client secret or a certificate
//! (a client assertion signed RS256 with an `x5t#S256` header), and the AADSTS error codes
//! mapped to a cause and a fix a technician can act on.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use base64::Engine;

/// How the app authenticates, in memory only.
pub enum ClientAuth {
    /// A client secret.
    Secret(SecretString),
    /// A certificate: its private key signs a client assertion.
    Certificate {
        /// The PEM private key.
        key_pem: SecretString,
        /// base64url SHA-256 of the certificate's DER (`x5t#S256`).
        x5t_s256: String,
    },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Secret(_) => f.write_str("ClientAuth::Secret(…)"),
            ClientAuth::Certificate { x5t_s256, .. } => {
                write!(f, "ClientAuth::Certificate(x5t#S256={x5t_s256})")
            }
        }
    }
}

/// The sealed form of a credential's secret part.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SealedSecret {
    /// A client secret.
    Secret {
        /// The secret value.
        secret: String,
    },
    /// A certificate and its private key.
    Certificate {
        /// PEM certificate.
        certificate_pem: String,
        /// PEM private key (PKCS#8 or PKCS#1 RSA).
        private_key_pem: String,
    },
}

/// The DER bytes of the first certificate of a PEM text.
pub fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The certificate's SHA-1 thumbprint in upper-case hex, as Entra shows it.
pub fn thumbprint_sha1(der: &[u8]) -> String {
    hex::encode_upper(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// The `x5t#S256` value: base64url of the SHA-256 of the certificate's DER.
pub fn x5t_s256(der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// Why no token could be obtained: the cause and the fix, safe to show and store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}; fix: {fix}")]
pub struct TokenError {
    /// The AADSTS code, when the login service gave one.
    pub code: Option<u64>,
    /// What went wrong.
    pub cause: String,
    /// What to do about it.
    pub fix: String,
}

/// What the token endpoint answers on success.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// What the token endpoint answers on failure.
#[derive(Deserialize, Default)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// A token and its lifetime in seconds.
pub struct Token {
    /// The bearer token.
    pub access_token: SecretString,
    /// Seconds it is valid for.
    pub expires_in: u64,
}

/// Where to ask and for what.
pub struct TokenRequest<'a> {
    /// `https://login.microsoftonline.com` or an override.
    pub authority: &'a str,
    /// The customer's directory id.
    pub directory_id: &'a str,
    /// The app's client id.
    pub client_id: &'a str,
    /// `https://graph.microsoft.com/.default` or the cloud's equivalent.
    pub scope: &'a str,
}

/// Asks the v2.0 token endpoint for an app-only token.
pub async fn acquire(
    http: &reqwest::Client,
    request: &TokenRequest<'_>,
    auth: &ClientAuth,
) -> Result<Token, TokenError> {
    let endpoint = format!(
        "{}/{}/oauth2/v2.0/token",
        request.authority.trim_end_matches('/'),
        request.directory_id
    );
    let mut form: Vec<(&str, String)> = vec![
        ("client_id", request.client_id.to_owned()),
        ("scope", request.scope.to_owned()),
        ("grant_type", "client_credentials".to_owned()),
    ];
    match auth {
        ClientAuth::Secret(secret) => {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        ClientAuth::Certificate { key_pem, x5t_s256 } => {
            let assertion = client_assertion(&endpoint, request.client_id, key_pem, x5t_s256)?;
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ));
            form.push(("client_assertion", assertion));
        }
    }
    let response = http
        .post(&endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| TokenError {
            code: None,
            cause: format!(
                "cannot reach the login service {}: {}",
                request.authority,
                transport_reason(&e)
            ),
            fix: "check that the server reaches the login endpoint of the tenant's cloud (DNS, firewall, proxy) and try again".into(),
        })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        let token: TokenResponse = serde_json::from_str(&body).map_err(|_| TokenError {
            code: None,
            cause: "the login service answered without an access token".into(),
            fix: "check the authority URL of the tenant's cloud".into(),
        })?;
        return Ok(Token {
            access_token: SecretString::from(token.access_token),
            expires_in: token.expires_in.unwrap_or(3599),
        });
    }
    let error: TokenErrorResponse = serde_json::from_str(&body).unwrap_or_default();
    Err(explain(
        status.as_u16(),
        &error,
        request.directory_id,
        request.client_id,
        request.authority,
    ))
}

/// The reason of a transport failure, without the URL (which reqwest repeats).
pub fn transport_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        reason
    }
}

fn client_assertion(
    audience: &str,
    client_id: &str,
    key_pem: &SecretString,
    x5t_s256: &str,
) -> Result<String, TokenError> {
    let bad_key = |detail: String| TokenError {
        code: None,
        cause: format!("the stored certificate's private key cannot sign: {detail}"),
        fix: "set the credential again with the certificate's RSA private key (PEM)".into(),
    };
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.expose_secret().as_bytes())
        .map_err(|e| bad_key(e.to_string()))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t_s256 = Some(x5t_s256.to_owned());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    });
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| bad_key(e.to_string()))
}

/// The AADSTS code of an error response: `error_codes`, or the prefix of the description.
fn aadsts_code(error: &TokenErrorResponse) -> Option<u64> {
    error.error_codes.first().copied().or_else(|| {
        error
            .error_description
            .strip_prefix("AADSTS")
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.trim().parse().ok())
    })
}

/// A token error as a cause and a fix.
fn explain(
    status: u16,
    error: &TokenErrorResponse,
    directory_id: &str,
    client_id: &str,
    authority: &str,
) -> TokenError {
    let code = aadsts_code(error);
    let consent = format!(
        "an administrator of the customer's tenant grants admin consent to the app: open {}/{directory_id}/adminconsent?client_id={client_id}, sign in as a Global Administrator and accept",
        authority.trim_end_matches('/')
    );
    let (cause, fix) = match code {
        Some(700016) => (
            format!("the app {client_id} is not found in tenant {directory_id} (AADSTS700016): it was never consented there, its consent was withdrawn, or the client id is wrong"),
            consent,
        ),
        Some(65001) | Some(65004) | Some(650056) => (
            format!("tenant {directory_id} has not consented to the app {client_id} (AADSTS{}): admin consent is missing or was revoked", code.unwrap_or_default()),
            consent,
        ),
        Some(7000215) => (
            "the client secret is not valid for this app (AADSTS7000215)".to_owned(),
            "set the secret's value (not its secret id) again; create a new client secret in the app registration if it is lost".to_owned(),
        ),
        Some(7000222) => (
            "the client secret has expired (AADSTS7000222)".to_owned(),
            "create a new client secret in the app registration (Certificates & secrets) and set it here".to_owned(),
        ),
        Some(90002) | Some(90072) => (
            format!("tenant {directory_id} does not exist in this cloud (AADSTS{})", code.unwrap_or_default()),
            "check the directory (tenant) id and the cloud of this credential".to_owned(),
        ),
        Some(700027) | Some(700024) | Some(7000274) => (
            format!("the client assertion was refused (AADSTS{}): the certificate is not uploaded to the app, has expired, or the key does not match it", code.unwrap_or_default()),
            "upload this certificate (.cer) to the app registration under Certificates & secrets, or set the credential again with the matching certificate and key".to_owned(),
        ),
        Some(7000112) | Some(7000114) => (
            format!("the app {client_id} is disabled in tenant {directory_id} (AADSTS{})", code.unwrap_or_default()),
            "enable the app's service principal in the customer's tenant (Enterprise applications → Properties → Enabled for users to sign-in)".to_owned(),
        ),
        _ => {
            let first = error
                .error_description
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned();
            (
                if first.is_empty() {
                    format!("the login service refused the request (HTTP {status}, {})", if error.error.is_empty() { "no error code" } else { &error.error })
                } else {
                    format!("the login service refused the request: {first}")
                },
                "check the app registration, its credential and its consent in the customer's tenant".to_owned(),
            )
        }
    };
    TokenError { code, cause, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(description: &str, codes: &[u64]) -> TokenErrorResponse {
        TokenErrorResponse {
            error: "invalid_client".into(),
            error_description: description.into(),
            error_codes: codes.to_vec(),
        }
    }

    #[test]
    fn aadsts_codes_become_causes_and_fixes() {
        let e = explain(
            400,
            &error(
                "AADSTS700016: Application with identifier 'x' was not found",
                &[700016],
            ),
            "dir",
            "app",
            "https://login.example/",
        );
        assert_eq!(e.code, Some(700016));
        assert!(
            e.fix
                .contains("https://login.example/dir/adminconsent?client_id=app"),
            "{e}"
        );
        let e = explain(
            401,
            &error("AADSTS7000215: Invalid client secret provided.", &[]),
            "dir",
            "app",
            "https://l",
        );
        assert_eq!(e.code, Some(7000215));
        assert!(e.cause.contains("not valid"));
        let e = explain(
            400,
            &error("AADSTS90002: Tenant 'x' not found.", &[90002]),
            "dir",
            "app",
            "https://l",
        );
        assert!(e.cause.contains("does not exist"));
        let e = explain(
            401,
            &error(
                "AADSTS700027: Client assertion failed signature validation.",
                &[700027],
            ),
            "d",
            "a",
            "https://l",
        );
        assert!(e.fix.contains("upload this certificate"));
        let e = explain(
            400,
            &error("AADSTS1234: Something new.\r\nTrace ID: x", &[1234]),
            "d",
            "a",
            "https://l",
        );
        assert_eq!(
            e.cause,
            "the login service refused the request: AADSTS1234: Something new."
        );
    }

    #[test]
    fn certificates_from_pem_give_both_thumbprints() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        let der = certificate_der(pem).expect("base64 body");
        assert_eq!(der, vec![0, 1, 2]);
        assert_eq!(thumbprint_sha1(&der).len(), 40);
        assert_eq!(x5t_s256(&der).len(), 43);
        assert!(certificate_der("no pem").is_none());
    }
}

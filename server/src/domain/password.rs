//! Users' passwords: argon2id (the memory-hard hash the field recommends for passwords, in
//! RustCrypto's `argon2` with its default, OWASP-recommended parameters) stored as a PHC
//! string. Unlike API keys, passwords are chosen by people and guessable, so a fast hash would
//! not do.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

/// The shortest password accepted.
pub const MIN_LEN: usize = 12;
/// The longest password accepted, in bytes (hashing is the cost, not the length).
pub const MAX_LEN: usize = 1024;

/// Verified against when the user does not exist or has no password, so that the answer takes
/// as long as a wrong password and says nothing about which names exist.
static STAND_IN: LazyLock<String> =
    LazyLock::new(|| hash("a password that no user has").unwrap_or_default());

/// A password that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password must be {MIN_LEN} to {MAX_LEN} bytes long")]
    Length,
    /// The hash could not be computed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if !(MIN_LEN..=MAX_LEN).contains(&password.len()) {
        return Err(PasswordError::Length);
    }
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `stored`. With no stored hash it still does the work of one
/// verification and answers `false`. The comparison is constant-time inside `argon2`.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    let (phc, real) = match stored {
        Some(phc) => (phc, true),
        None => (STAND_IN.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let stored = hash("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&stored)));
        assert!(!verify("correct horse battery!", Some(&stored)));
        assert!(!verify("a password that no user has", None));
        assert!(matches!(hash("short"), Err(PasswordError::Length)));
    }
}

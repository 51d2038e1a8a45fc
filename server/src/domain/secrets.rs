//! Generating and hashing the secrets the server hands out: API keys, enrollment tokens and
//! agent credentials. Only hashes are stored; comparisons are constant-time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new random secret with a recognisable prefix, such as `wbh_key_…`.
///
/// 32 random bytes make a brute-force search hopeless, so a plain SHA-256 is a sound hash
/// for storage; a slow password hash would only slow down every request.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn verify(secret: &str, stored: &[u8]) -> bool {
    hash(secret).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_verify_only_themselves() {
        let a = generate("wbh_key_");
        let b = generate("wbh_key_");
        assert_ne!(a, b);
        assert!(a.starts_with("wbh_key_") && a.len() == "wbh_key_".len() + 64);
        assert!(verify(&a, &hash(&a)));
        assert!(!verify(&b, &hash(&a)));
    }
}

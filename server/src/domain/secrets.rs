//! Generating and hashing the secrets the server hands out: API keys, enrollment tokens and
//! agent credentials. Only hashes are stored; comparisons are constant-time.
//!
//! Secrets the server must use later (a tenant's Graph client secret) cannot be hashed: they
//! are sealed with the [`MasterKey`] from the server configuration.

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

/// The server's own 256-bit key, from `--secret-key-file` / `WBH_SECRET_KEY`.
///
/// Each use gets its own key derived with HKDF-SHA256 under a purpose label, so sealing Graph
/// secrets and signing sessions never share key material. Every replica must hold the same key.
pub struct MasterKey {
    prk: ring::hkdf::Prk,
}

/// A sealed value could not be opened: wrong key, wrong context or tampered bytes.
#[derive(Debug, thiserror::Error)]
#[error("the sealed value does not open with this server's secret key and context")]
pub struct Unsealable;

impl MasterKey {
    /// Length of the key in bytes.
    pub const LEN: usize = 32;

    /// The key from its raw bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> MasterKey {
        MasterKey {
            prk: ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"wbhealth master key v1")
                .extract(&bytes),
        }
    }

    /// A fresh random key, as raw bytes to be written to the key file.
    pub fn generate() -> [u8; Self::LEN] {
        let mut bytes = [0u8; Self::LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        bytes
    }

    /// 32 bytes for one purpose, such as `"session signing"`.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        let info = [purpose.as_bytes()];
        self.prk
            .expand(&info, ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    fn aead(&self, purpose: &str) -> ring::aead::LessSafeKey {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &self.derive(purpose))
            .expect("AES-256 takes a 32-byte key");
        ring::aead::LessSafeKey::new(key)
    }

    /// Encrypts `plaintext` with AES-256-GCM under the key for `purpose`, bound to `context`
    /// (for example the tenant id, so a sealed value cannot be moved to another tenant).
    /// The result is the random 96-bit nonce followed by the ciphertext and tag.
    pub fn seal(&self, purpose: &str, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = plaintext.to_vec();
        self.aead(purpose)
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(context),
                &mut out,
            )
            .expect("AES-GCM seals any message shorter than 64 GiB");
        let mut sealed = nonce.to_vec();
        sealed.append(&mut out);
        sealed
    }

    /// Decrypts what [`seal`](MasterKey::seal) made with the same purpose and context.
    pub fn open(
        &self,
        purpose: &str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < ring::aead::NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .aead(purpose)
            .open_in_place(nonce, ring::aead::Aad::from(context), &mut buffer)
            .map_err(|_| Unsealable)?;
        Ok(plaintext.to_vec())
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_purpose_and_context() {
        let key = MasterKey::from_bytes([7; 32]);
        let sealed = key.seal("graph secret", b"tenant-a", b"s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(
            key.open("graph secret", b"tenant-a", &sealed)
                .expect("opens with the same key"),
            b"s3cret"
        );
        assert!(key.open("graph secret", b"tenant-b", &sealed).is_err());
        assert!(key.open("session signing", b"tenant-a", &sealed).is_err());
        assert!(
            MasterKey::from_bytes([8; 32])
                .open("graph secret", b"tenant-a", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("not empty") ^= 1;
        assert!(key.open("graph secret", b"tenant-a", &tampered).is_err());
        assert!(key.open("graph secret", b"tenant-a", &sealed[..5]).is_err());
        assert_ne!(
            key.seal("graph secret", b"tenant-a", b"s3cret"),
            sealed,
            "nonces are random"
        );
        assert_ne!(key.derive("a"), key.derive("b"));
    }

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

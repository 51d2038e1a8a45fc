//! The agent CA of mutual TLS: it signs each agent's client certificate at enrollment, and the
//! gRPC listener accepts client certificates it signed.
//!
//! Its key is generated on first start and kept in a file sealed with the server's secret key
//! (`--agent-ca-key-file`); its certificate is made again from that key on every start with
//! the same name, so certificates issued earlier keep verifying. Each client certificate names
//! its agent id as the subject's common name, and only this module reads it back.

use std::path::Path;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SignatureAlgorithm,
};

use crate::domain::{AgentId, MasterKey};

const SEAL_PURPOSE: &str = "wbhealth agent CA key";
const CA_NAME: &str = "wbhealth agent CA";
/// The length of an uncompressed P-256 point, the only public key agents send.
const P256_POINT_LEN: usize = 65;

/// The CA that issues agents' client certificates.
pub struct AgentCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for AgentCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentCa(…)")
    }
}

/// An agent's public key as it arrives in `EnrollRequest.client_public_key`.
struct AgentPublicKey<'a>(&'a [u8]);

impl PublicKeyData for AgentPublicKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl AgentCa {
    /// Opens the sealed CA key in `path`, creating it (readable by the owner only) when the
    /// file does not exist.
    pub fn load_or_create(path: &Path, master_key: &MasterKey) -> anyhow::Result<AgentCa> {
        let setting = "--agent-ca-key-file / WBH_AGENT_CA_KEY_FILE";
        let key = match std::fs::read(path) {
            Ok(sealed) => {
                let pem = master_key
                    .open(SEAL_PURPOSE, CA_NAME.as_bytes(), &sealed)
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "{setting}: {} cannot be opened with this server's secret key; restore the secret key it was made with, or remove the file to issue every agent a new certificate",
                            path.display()
                        )
                    })?;
                let pem = String::from_utf8(pem).context("the sealed agent CA key is not PEM")?;
                KeyPair::from_pem(&pem).context("the sealed agent CA key is not a key")?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().context("generate the agent CA key")?;
                let sealed = master_key.seal(
                    SEAL_PURPOSE,
                    CA_NAME.as_bytes(),
                    key.serialize_pem().as_bytes(),
                );
                write_new_private(path, &sealed)
                    .with_context(|| format!("{setting}: cannot create {}", path.display()))?;
                tracing::warn!(path = %path.display(), "created a new agent CA for mutual TLS; give every replica the same file");
                key
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("{setting}: cannot read {}", path.display())));
            }
        };
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CA_NAME);
        params.distinguished_name = name;
        let cert = params.self_signed(&key).context("sign the agent CA")?;
        Ok(AgentCa { cert, key })
    }

    /// The CA certificate, PEM: the gRPC listener's root for client certificates.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues the client certificate of `agent` for its P-256 public key (an uncompressed
    /// point). `None` when the key is not one.
    pub fn issue(&self, agent: AgentId, public_key: &[u8]) -> Option<String> {
        if public_key.len() != P256_POINT_LEN || public_key[0] != 0x04 {
            return None;
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).ok()?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, agent.to_string());
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&AgentPublicKey(public_key), &self.cert, &self.key)
            .ok()
            .map(|cert| cert.pem())
    }
}

/// Whether a client certificate this CA signed (the TLS layer has verified that) names
/// `agent` as its subject.
pub fn certificate_names(cert_der: &[u8], agent: AgentId) -> bool {
    let id = agent.to_string();
    subject(cert_der).is_some_and(|subject| {
        subject
            .windows(id.len())
            .any(|window| window == id.as_bytes())
    })
}

/// The subject `Name` of an X.509 certificate, DER.
fn subject(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature, issuer, validity, subject
    let (tag, _, mut fields) = tlv(tbs)?;
    if tag == 0xa0 {
        fields = tlv(fields)?.2;
    }
    for _ in 0..3 {
        fields = tlv(fields)?.2;
    }
    match tlv(fields)? {
        (0x30, subject, _) => Some(subject),
        _ => None,
    }
}

/// One DER tag-length-value: the tag, the value and what follows.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || rest.len() < octets {
            return None;
        }
        let len = rest[..octets]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        rest = &rest[octets..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_agent_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent-ca.key");
        let master = MasterKey::from_bytes(MasterKey::generate());
        let ca = AgentCa::load_or_create(&path, &master).expect("created");
        let agent_key = KeyPair::generate().expect("key");
        let agent = AgentId::new();
        let pem = ca.issue(agent, agent_key.public_key_raw()).expect("issued");
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .expect("one certificate")
            .expect("PEM");
        assert!(certificate_names(&der, agent));
        assert!(!certificate_names(&der, AgentId::new()));
        assert!(ca.issue(agent, b"not a key").is_none());

        let again = AgentCa::load_or_create(&path, &master).expect("reopened");
        // Same key, same name: what the first start issued chains to the second's CA.
        let ca_der = rustls_pemfile::certs(&mut again.cert_pem().as_bytes())
            .next()
            .expect("one certificate")
            .expect("PEM");
        let mut store = rustls::RootCertStore::empty();
        store.add(ca_der).expect("a CA certificate");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(store),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .expect("a certificate from before the restart verifies");
        let other = MasterKey::from_bytes(MasterKey::generate());
        assert!(AgentCa::load_or_create(&path, &other).is_err());
    }
}

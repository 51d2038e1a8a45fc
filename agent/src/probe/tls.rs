//! TLS client set-up shared by the network and directory probes.
//!
//! Certificates are validated exactly as a client on the sync server would: the chain must
//! lead to a root in the machine's trust store (plus a configured PEM file) and name the host.
//! The verifier also keeps the certificate the server presented, so that a rejected chain can
//! be reported with its issuer: a private issuer on a Microsoft endpoint is the mark of TLS
//! inspection (NET-07).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::facts::PresentedCertificate;

/// Why the trust store could not be built. Nothing was sent on the network when this happens.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file could not be read.
    #[error("cannot read CA file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The CA file holds no certificate rustls accepts.
    #[error("CA file {} holds no usable PEM certificate", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// Neither the system store nor the CA file gave a root certificate.
    #[error(
        "no trusted root certificates: the system store is empty or unreadable and no CA file is set"
    )]
    NoRoots,
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// The roots a probe trusts: the machine's store plus an optional PEM file.
#[derive(Debug, Clone)]
pub struct TrustStore {
    provider: Arc<CryptoProvider>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl TrustStore {
    /// Loads the system's trusted roots and, when given, the certificates in `extra_ca_file`.
    ///
    /// Unreadable entries of the system store are skipped; an unreadable or empty CA file is
    /// an error, because probing without the CA the operator named would blame the network
    /// for a local mistake.
    pub fn load(extra_ca_file: Option<&Path>) -> Result<TrustStore, TrustError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(
                errors = native.errors.len(),
                "some system root certificates could not be loaded"
            );
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca_file {
            let pem = std::fs::read(path).map_err(|source| TrustError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TrustError::NoCertificates {
                    path: path.to_path_buf(),
                });
            }
        }
        if roots.is_empty() {
            return Err(TrustError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TrustError::Setup(e.to_string()))?;
        Ok(TrustStore { provider, verifier })
    }

    /// A client configuration for one connection, and the recorder that will hold the
    /// certificate the server presents on it.
    pub fn client_config(&self) -> Result<(Arc<ClientConfig>, Arc<RecordingVerifier>), TrustError> {
        let recorder = Arc::new(RecordingVerifier {
            inner: self.verifier.clone(),
            presented: Mutex::new(None),
        });
        let config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TrustError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        Ok((Arc::new(config), recorder))
    }
}

/// Validates with webpki as usual, and remembers the end-entity certificate it was shown.
#[derive(Debug)]
pub struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    presented: Mutex<Option<CertificateDer<'static>>>,
}

impl RecordingVerifier {
    /// The subject and issuer of the certificate the server presented, once it has.
    pub fn presented(&self) -> Option<PresentedCertificate> {
        let der = self.presented.lock().ok()?.clone()?;
        let (subject, issuer) = super::x509::subject_and_issuer(&der)?;
        Some(PresentedCertificate { subject, issuer })
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(end_entity.clone().into_owned());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What kind of TLS failure an I/O error from a handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailureKind {
    /// The chain does not lead to a trusted root.
    Untrusted,
    /// The certificate was rejected for another reason (expired, wrong name, …).
    Invalid,
    /// Anything else: reset, alert, protocol mismatch.
    Handshake,
}

/// Classifies a handshake error by the rustls error inside it.
pub fn classify(error: &io::Error) -> TlsFailureKind {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(e) => classify_rustls(e),
        None => TlsFailureKind::Handshake,
    }
}

/// Classifies a rustls error.
pub fn classify_rustls(error: &rustls::Error) -> TlsFailureKind {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            TlsFailureKind::Untrusted
        }
        rustls::Error::InvalidCertificate(_) => TlsFailureKind::Invalid,
        _ => TlsFailureKind::Handshake,
    }
}

/// The protocol version as people write it (`TLS 1.3`).
pub fn protocol_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_issuer_is_untrusted_and_other_certificate_errors_are_invalid() {
        let untrusted = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert_eq!(classify(&untrusted), TlsFailureKind::Untrusted);
        let expired = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        assert_eq!(classify(&expired), TlsFailureKind::Invalid);
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(classify(&reset), TlsFailureKind::Handshake);
    }

    #[test]
    fn an_empty_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let err = TrustStore::load(Some(&path)).expect_err("no certificates");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
}

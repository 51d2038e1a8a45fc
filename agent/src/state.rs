//! The agent's identity, kept in its state folder after enrollment.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

const FILE: &str = "agent.json";

/// What enrollment gave the agent.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The gRPC URL of the server.
    pub server_url: String,
    /// The agent's id.
    pub agent_id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The credential it presents on every session.
    pub credential: SecretString,
    /// The credential before the last rotation, until the server has accepted the new one: a
    /// rotation the server dropped (its confirmation lost) leaves the old one current, and the
    /// agent falls back to it instead of being locked out.
    pub previous_credential: Option<SecretString>,
    /// With mutual TLS: the client certificate the server issued (PEM) and its private key,
    /// generated on this machine.
    pub client_tls: Option<ClientTls>,
}

/// A client certificate and its key, for mutual TLS.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub key_pem: SecretString,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    server_url: String,
    agent_id: String,
    tenant_id: String,
    credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous_credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_key_pem: Option<String>,
}

/// Problems with the state folder.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The agent has not been enrolled.
    #[error(
        "this agent is not enrolled ({0} does not exist); run: wbhealth-agent enroll --server URL --token TOKEN"
    )]
    NotEnrolled(PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this agent wrote.
    #[error("{0} is damaged; enroll the agent again")]
    Corrupt(PathBuf),
}

impl Identity {
    /// Reads the identity from the state folder.
    pub fn load(state_dir: &Path) -> Result<Identity, StateError> {
        let path = state_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotEnrolled(path));
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let stored: Stored =
            serde_json::from_str(&text).map_err(|_| StateError::Corrupt(path.clone()))?;
        Ok(Identity {
            server_url: stored.server_url,
            agent_id: stored.agent_id,
            tenant_id: stored.tenant_id,
            credential: SecretString::from(stored.credential),
            previous_credential: stored.previous_credential.map(SecretString::from),
            client_tls: match (stored.client_cert_pem, stored.client_key_pem) {
                (Some(cert_pem), Some(key_pem)) => Some(ClientTls {
                    cert_pem,
                    key_pem: SecretString::from(key_pem),
                }),
                _ => None,
            },
        })
    }

    /// Writes the identity, readable only by the agent's own account on Unix.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let path = state_dir.join(FILE);
        let tmp = state_dir.join(format!("{FILE}.tmp"));
        let stored = Stored {
            server_url: self.server_url.clone(),
            agent_id: self.agent_id.clone(),
            tenant_id: self.tenant_id.clone(),
            credential: self.credential.expose_secret().to_owned(),
            previous_credential: self
                .previous_credential
                .as_ref()
                .map(|c| c.expose_secret().to_owned()),
            client_cert_pem: self.client_tls.as_ref().map(|t| t.cert_pem.clone()),
            client_key_pem: self
                .client_tls
                .as_ref()
                .map(|t| t.key_pem.expose_secret().to_owned()),
        };
        let text = serde_json::to_string_pretty(&stored).expect("a struct of strings serializes");
        write_private(&tmp, text.as_bytes()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename itself must survive a power cut: a rotated credential that reverted
        // would be refused once the server retired the old one.
        #[cfg(unix)]
        std::fs::File::open(state_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io(state_dir))?;
        Ok(())
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // The state folder under %ProgramData% inherits an ACL that limits writes to
    // administrators and SYSTEM, the accounts the agent service runs as.
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_missing_state_says_enroll() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Identity::load(dir.path()),
            Err(StateError::NotEnrolled(_))
        ));
        let id = Identity {
            server_url: "http://127.0.0.1:50051".into(),
            agent_id: "a".into(),
            tenant_id: "t".into(),
            credential: SecretString::from("secret".to_owned()),
            previous_credential: Some(SecretString::from("older".to_owned())),
            client_tls: None,
        };
        id.save(dir.path()).expect("save");
        let back = Identity::load(dir.path()).expect("load");
        assert_eq!(back.credential.expose_secret(), "secret");
        assert_eq!(back.agent_id, "a");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(
                mode & 0o077,
                0,
                "credential file must not be readable by others"
            );
        }
    }
}

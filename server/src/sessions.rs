//! The agents connected to this server right now, so REST can push a run-now to one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wbhealth_proto::v1::ServerMessage;

use crate::domain::AgentId;

/// What the REST side can send into an agent's open stream.
pub type Outbox = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

/// A registry of open agent streams.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<AgentId, Entry>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

struct Entry {
    serial: u64,
    outbox: Outbox,
    revoked: CancellationToken,
    /// Older streams of the same agent that a newer one replaced but that may still be open;
    /// a revocation ends them too.
    older: Vec<CancellationToken>,
}

/// Proof of registration; dropping it unregisters the stream unless a newer one replaced it.
pub struct Registration {
    sessions: Sessions,
    agent: AgentId,
    serial: u64,
    revoked: CancellationToken,
}

impl Registration {
    /// Completes when the agent is revoked while its stream is open; the stream must end.
    pub async fn revoked(&self) {
        self.revoked.cancelled().await;
    }
}

impl Sessions {
    /// Registers an agent's stream. A newer stream for the same agent replaces the older one.
    pub fn register(&self, agent: AgentId, outbox: Outbox) -> Registration {
        let serial = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let revoked = CancellationToken::new();
        let mut map = self.lock();
        let mut older = Vec::new();
        if let Some(old) = map.remove(&agent) {
            // A stream that ended cancelled its own token on the way out.
            older.extend(
                old.older
                    .into_iter()
                    .chain([old.revoked])
                    .filter(|t| !t.is_cancelled()),
            );
        }
        map.insert(
            agent,
            Entry {
                serial,
                outbox,
                revoked: revoked.clone(),
                older,
            },
        );
        drop(map);
        Registration {
            sessions: self.clone(),
            agent,
            serial,
            revoked,
        }
    }

    /// The outbox of an agent's open stream, if it has one.
    pub fn outbox(&self, agent: AgentId) -> Option<Outbox> {
        self.lock().get(&agent).map(|e| e.outbox.clone())
    }

    /// Whether an agent has an open stream.
    pub fn is_connected(&self, agent: AgentId) -> bool {
        self.lock()
            .get(&agent)
            .is_some_and(|e| !e.outbox.is_closed())
    }

    /// Ends the open stream of a revoked agent at once. Whether it had one.
    pub fn revoke(&self, agent: AgentId) -> bool {
        match self.lock().remove(&agent) {
            Some(entry) => {
                entry.revoked.cancel();
                entry.older.iter().for_each(CancellationToken::cancel);
                true
            }
            None => false,
        }
    }

    /// Ends every open stream, for shutdown.
    pub fn close_all(&self) {
        for (_, entry) in self.lock().drain() {
            let _ = entry.outbox.try_send(Err(tonic::Status::unavailable(
                "the server is shutting down",
            )));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Entry>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.revoked.cancel();
        let mut map = self.sessions.lock();
        if map
            .get(&self.agent)
            .is_some_and(|e| e.serial == self.serial)
        {
            map.remove(&self.agent);
        }
    }
}

//! The agents connected to this server right now, so REST can push a run-now to one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use wbhealth_proto::v1::ServerMessage;

use crate::domain::AgentId;

/// What the REST side can send into an agent's open stream.
pub type Outbox = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

/// A registry of open agent streams.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<AgentId, (u64, Outbox)>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

/// Proof of registration; dropping it unregisters the stream unless a newer one replaced it.
pub struct Registration {
    sessions: Sessions,
    agent: AgentId,
    serial: u64,
}

impl Sessions {
    /// Registers an agent's stream. A newer stream for the same agent replaces the older one.
    pub fn register(&self, agent: AgentId, outbox: Outbox) -> Registration {
        let serial = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().insert(agent, (serial, outbox));
        Registration {
            sessions: self.clone(),
            agent,
            serial,
        }
    }

    /// The outbox of an agent's open stream, if it has one.
    pub fn outbox(&self, agent: AgentId) -> Option<Outbox> {
        self.lock().get(&agent).map(|(_, tx)| tx.clone())
    }

    /// Whether an agent has an open stream.
    pub fn is_connected(&self, agent: AgentId) -> bool {
        self.lock()
            .get(&agent)
            .is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// Ends every open stream, for shutdown.
    pub fn close_all(&self) {
        for (_, (_, tx)) in self.lock().drain() {
            let _ = tx.try_send(Err(tonic::Status::unavailable(
                "the server is shutting down",
            )));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, (u64, Outbox)>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.sessions.lock();
        if map
            .get(&self.agent)
            .is_some_and(|(serial, _)| *serial == self.serial)
        {
            map.remove(&self.agent);
        }
    }
}

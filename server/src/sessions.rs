//! The agents connected to this server right now, so REST can push a run-now or a new
//! credential to one, and end its streams when it is revoked or its credential retired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wbhealth_proto::v1::ServerMessage;

use crate::domain::AgentId;

/// What the REST side can send into an agent's open stream.
pub type Outbox = mpsc::Sender<Result<ServerMessage, tonic::Status>>;

/// Why the server ended an open stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The agent was revoked.
    Revoked,
    /// The agent's credential was rotated through another connection; this one logged in with
    /// the credential that was retired.
    CredentialRetired,
}

/// A registry of open agent streams.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<AgentId, Vec<Connection>>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

/// One open stream; an agent normally has one, and more than one means its credential is used
/// in more than one place.
struct Connection {
    serial: u64,
    outbox: Outbox,
    end: Ending,
}

impl Connection {
    fn is_live(&self) -> bool {
        !self.outbox.is_closed() && !self.end.token.is_cancelled()
    }
}

/// A stream's end signal and the reason given by whoever ended it first.
#[derive(Clone, Default)]
struct Ending {
    token: CancellationToken,
    reason: Arc<OnceLock<EndReason>>,
}

impl Ending {
    fn end(&self, reason: EndReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
}

/// Why an agent's only connection could not be found.
#[derive(Debug, PartialEq, Eq)]
pub enum NotSole {
    /// The agent has no open stream here.
    NotConnected,
    /// The agent has this many open streams here.
    Several(usize),
}

/// Proof of registration; dropping it unregisters the stream.
pub struct Registration {
    sessions: Sessions,
    agent: AgentId,
    serial: u64,
    end: Ending,
}

impl Registration {
    /// Completes when the server ends this stream (revocation, retired credential); the stream
    /// must end, telling the agent why.
    pub async fn ended(&self) -> EndReason {
        self.end.token.cancelled().await;
        self.end.reason.get().copied().unwrap_or(EndReason::Revoked)
    }

    /// Ends every other open stream of this agent: they logged in with a credential that was
    /// just retired.
    pub fn end_others(&self) -> usize {
        self.sessions
            .end_except(self.agent, Some(self.serial), EndReason::CredentialRetired)
    }
}

impl Sessions {
    /// Registers an agent's stream. The newest stream of an agent receives run-now requests.
    pub fn register(&self, agent: AgentId, outbox: Outbox) -> Registration {
        let serial = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let end = Ending::default();
        let mut map = self.lock();
        let connections = map.entry(agent).or_default();
        // A stream that ended unregisters itself; one whose agent vanished may linger closed.
        connections.retain(Connection::is_live);
        connections.push(Connection {
            serial,
            outbox,
            end: end.clone(),
        });
        drop(map);
        Registration {
            sessions: self.clone(),
            agent,
            serial,
            end,
        }
    }

    /// The outbox of an agent's newest open stream, if it has one.
    pub fn outbox(&self, agent: AgentId) -> Option<Outbox> {
        self.lock()
            .get(&agent)
            .and_then(|c| c.iter().rev().find(|c| c.is_live()))
            .map(|c| c.outbox.clone())
    }

    /// The outbox of an agent's only open stream: a credential may only be sent where there
    /// is no doubt who receives it.
    pub fn sole_outbox(&self, agent: AgentId) -> Result<Outbox, NotSole> {
        let map = self.lock();
        let live: Vec<&Connection> = map
            .get(&agent)
            .map(|c| c.iter().filter(|c| c.is_live()).collect())
            .unwrap_or_default();
        match live.as_slice() {
            [] => Err(NotSole::NotConnected),
            [only] => Ok(only.outbox.clone()),
            several => Err(NotSole::Several(several.len())),
        }
    }

    /// Whether an agent has an open stream.
    pub fn is_connected(&self, agent: AgentId) -> bool {
        self.lock()
            .get(&agent)
            .is_some_and(|c| c.iter().any(Connection::is_live))
    }

    /// Ends the open streams of a revoked agent at once. Whether it had one.
    pub fn revoke(&self, agent: AgentId) -> bool {
        self.end_except(agent, None, EndReason::Revoked) > 0
    }

    /// Ends every open stream of an agent, for a credential retired before a new stream was
    /// registered. How many there were.
    pub fn end_all(&self, agent: AgentId, reason: EndReason) -> usize {
        self.end_except(agent, None, reason)
    }

    fn end_except(&self, agent: AgentId, keep: Option<u64>, reason: EndReason) -> usize {
        let mut map = self.lock();
        let Some(connections) = map.get_mut(&agent) else {
            return 0;
        };
        let mut ended = 0;
        connections.retain(|c| {
            if Some(c.serial) == keep {
                return true;
            }
            if c.is_live() {
                ended += 1;
            }
            c.end.end(reason);
            false
        });
        if connections.is_empty() {
            map.remove(&agent);
        }
        ended
    }

    /// Ends every open stream, for shutdown.
    pub fn close_all(&self) {
        for (_, connections) in self.lock().drain() {
            for c in connections {
                let _ = c.outbox.try_send(Err(tonic::Status::unavailable(
                    "the server is shutting down",
                )));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AgentId, Vec<Connection>>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.end.token.cancel();
        let mut map = self.sessions.lock();
        if let Some(connections) = map.get_mut(&self.agent) {
            connections.retain(|c| c.serial != self.serial);
            if connections.is_empty() {
                map.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (Outbox, mpsc::Receiver<Result<ServerMessage, tonic::Status>>) {
        mpsc::channel(1)
    }

    #[tokio::test]
    async fn a_second_connection_is_no_sole_outbox_and_end_others_keeps_only_the_caller() {
        let sessions = Sessions::default();
        let agent = AgentId::new();
        assert_eq!(
            sessions.sole_outbox(agent).err(),
            Some(NotSole::NotConnected)
        );
        let (a_tx, _a_rx) = outbox();
        let a = sessions.register(agent, a_tx);
        assert!(sessions.sole_outbox(agent).is_ok());
        let (b_tx, _b_rx) = outbox();
        let b = sessions.register(agent, b_tx);
        assert_eq!(sessions.sole_outbox(agent).err(), Some(NotSole::Several(2)));

        assert_eq!(b.end_others(), 1);
        assert_eq!(a.ended().await, EndReason::CredentialRetired);
        assert!(sessions.sole_outbox(agent).is_ok());
        assert!(sessions.is_connected(agent));

        assert!(sessions.revoke(agent));
        assert_eq!(b.ended().await, EndReason::Revoked);
        assert!(!sessions.is_connected(agent));
    }

    #[tokio::test]
    async fn a_dropped_registration_leaves_the_other_connected() {
        let sessions = Sessions::default();
        let agent = AgentId::new();
        let (a_tx, _a_rx) = outbox();
        let a = sessions.register(agent, a_tx);
        let (b_tx, _b_rx) = outbox();
        let b = sessions.register(agent, b_tx);
        drop(b);
        assert!(sessions.sole_outbox(agent).is_ok());
        drop(a);
        assert!(!sessions.is_connected(agent));
    }
}

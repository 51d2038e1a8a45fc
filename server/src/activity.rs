//! When agents were last heard from and API keys last used, kept in memory and written to the
//! store coalesced, off the hot path.
//!
//! Writing `agents.last_seen_at` on every heartbeat and report, and `api_keys.last_used_at` on
//! every REST request, made each of them a write transaction: 10,000 agents heartbeating is
//! hundreds of writes a second doing nothing, and on SQLite every read request queued behind
//! ingest for its one write connection. Instead this process remembers the newest time per
//! agent and key, and a flusher writes all of them in one transaction every
//! [`flush_interval`], and once more at shutdown.
//!
//! What a reader sees: this process overlays its pending times on the agents and API keys it
//! reads from the store ([`Activity::overlay_agent`], [`Activity::overlay_api_key`]), so its
//! own answers are exact; another replica's lag by at most one flush interval, which is far
//! below the silent-agent threshold (several check intervals, `domain::fleet`). A `kill -9` loses at most one interval of
//! these times, never a report.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::domain::{Agent, AgentId, ApiKey, ApiKeyId};
use crate::storage::Store;

/// How often pending times are written to the store, at most.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How often to flush for agents that check in every `agent_interval`: [`FLUSH_INTERVAL`],
/// or a tenth of the interval when that is shorter, so that another replica never takes an
/// agent for silent (several intervals without a word) because of a flush not yet made.
pub fn flush_interval(agent_interval: Duration) -> Duration {
    FLUSH_INTERVAL
        .min(agent_interval / 10)
        .max(Duration::from_millis(100))
}

/// Pending last-seen and last-used times, newest per id.
#[derive(Debug, Default)]
pub struct Activity {
    pending: Mutex<Pending>,
}

/// What the next flush writes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pending {
    /// Agents and when they were last heard from.
    pub agents: HashMap<AgentId, OffsetDateTime>,
    /// API keys and when they were last used.
    pub api_keys: HashMap<ApiKeyId, OffsetDateTime>,
}

impl Pending {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.api_keys.is_empty()
    }
}

/// Keeps the later of two times.
fn keep_newest<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, OffsetDateTime>,
    key: K,
    at: OffsetDateTime,
) {
    map.entry(key)
        .and_modify(|t| *t = (*t).max(at))
        .or_insert(at);
}

impl Activity {
    /// Notes that an agent was heard from at `at`.
    pub fn agent_seen(&self, id: AgentId, at: OffsetDateTime) {
        keep_newest(&mut self.lock().agents, id, at);
    }

    /// Notes that an API key was used at `at`.
    pub fn api_key_used(&self, id: ApiKeyId, at: OffsetDateTime) {
        keep_newest(&mut self.lock().api_keys, id, at);
    }

    /// `agent` with its last-seen time brought up to what this process knows and has not
    /// written yet.
    pub fn overlay_agent(&self, mut agent: Agent) -> Agent {
        if let Some(&at) = self.lock().agents.get(&agent.id) {
            agent.last_seen_at = Some(agent.last_seen_at.map_or(at, |t| t.max(at)));
        }
        agent
    }

    /// `key` with its last-used time brought up to what this process knows and has not
    /// written yet.
    pub fn overlay_api_key(&self, mut key: ApiKey) -> ApiKey {
        if let Some(&at) = self.lock().api_keys.get(&key.id) {
            key.last_used_at = Some(key.last_used_at.map_or(at, |t| t.max(at)));
        }
        key
    }

    /// Takes everything pending, leaving nothing.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back what a failed flush took, keeping whatever newer arrived meanwhile.
    pub fn restore(&self, pending: Pending) {
        let mut current = self.lock();
        for (id, at) in pending.agents {
            keep_newest(&mut current.agents, id, at);
        }
        for (id, at) in pending.api_keys {
            keep_newest(&mut current.api_keys, id, at);
        }
    }

    /// Writes everything pending in one store call; on failure keeps it for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let pending = self.take();
        if pending.is_empty() {
            return;
        }
        let agents: Vec<_> = pending.agents.iter().map(|(k, v)| (*k, *v)).collect();
        let keys: Vec<_> = pending.api_keys.iter().map(|(k, v)| (*k, *v)).collect();
        match store.record_activity(&agents, &keys).await {
            Ok(()) => {
                tracing::debug!(
                    agents = agents.len(),
                    api_keys = keys.len(),
                    "activity written"
                )
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), agents = agents.len(), api_keys = keys.len(), "activity not written; retrying at the next flush");
                self.restore(pending);
            }
        }
    }

    /// Flushes `every` so often until `cancel`, then once more.
    pub fn spawn_flusher(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(every);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => self.flush(store.as_ref()).await,
                    () = cancel.cancelled() => break,
                }
            }
            self.flush(store.as_ref()).await;
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock leaves plain data behind, still usable.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).expect("a valid instant")
    }

    #[test]
    fn flushes_come_well_within_an_agent_interval() {
        assert_eq!(flush_interval(Duration::from_secs(300)), FLUSH_INTERVAL);
        assert_eq!(
            flush_interval(Duration::from_secs(2)),
            Duration::from_millis(200)
        );
        assert_eq!(flush_interval(Duration::ZERO), Duration::from_millis(100));
    }

    #[test]
    fn only_the_newest_time_per_id_is_kept() {
        let activity = Activity::default();
        let (a, k) = (AgentId::new(), ApiKeyId::new());
        activity.agent_seen(a, at(10));
        activity.agent_seen(a, at(5));
        activity.api_key_used(k, at(3));
        activity.api_key_used(k, at(7));
        let pending = activity.take();
        assert_eq!(pending.agents[&a], at(10));
        assert_eq!(pending.api_keys[&k], at(7));
        assert!(activity.take().is_empty(), "taking leaves nothing behind");
    }

    #[test]
    fn a_failed_flush_keeps_its_times_without_hiding_newer_ones() {
        let activity = Activity::default();
        let (a, b) = (AgentId::new(), AgentId::new());
        activity.agent_seen(a, at(10));
        activity.agent_seen(b, at(10));
        let taken = activity.take();
        activity.agent_seen(a, at(20));
        activity.restore(taken);
        let pending = activity.take();
        assert_eq!(pending.agents[&a], at(20));
        assert_eq!(pending.agents[&b], at(10));
    }
}

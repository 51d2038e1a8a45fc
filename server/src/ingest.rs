//! Group commit of agent reports: the reports of every agent stream that arrive while a
//! commit is under way are stored together in the next transaction, and each stream gets its
//! acknowledgement only after the commit that holds its report.
//!
//! A durable commit costs the same for one report as for fifty (on SQLite with
//! `synchronous = FULL` it is an fsync), so one transaction per report caps ingest at the
//! disk's fsync rate. Batching needs no timer: under light load each report commits alone at
//! once; under heavy load the queue fills during each commit and the next batch is larger.
//!
//! A batch whose transaction fails is tried again one report at a time, so one report the
//! database refuses never fails the others with it. A report is committed (or refused) even
//! when the stream that sent it is gone, so its fate never depends on a cancelled request;
//! the agent resends it and gets `Duplicate`, which is acknowledged too.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::domain::{IngestOutcome, Report};
use crate::storage::{Store, StoreError};

/// The most reports one transaction holds.
pub const MAX_BATCH: usize = 64;
/// Reports waiting for a writer before senders wait for room.
const QUEUE: usize = 4 * MAX_BATCH;

/// One report waiting to be stored, and where its outcome goes.
struct Job {
    report: Report,
    done: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// The ingest queue, shared by every agent stream of this process.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
}

impl Ingest {
    /// Starts `writers` tasks that store batches through `store` (one for SQLite, whose writes
    /// take turns anyway; several for PostgreSQL). They end when every `Ingest` is dropped.
    pub fn start(store: Arc<dyn Store>, writers: usize) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(store.clone(), jobs.clone()));
        }
        Self { queue }
    }

    /// Stores `report` in the next batch and says what became of it.
    pub async fn submit(&self, report: Report) -> Result<IngestOutcome, StoreError> {
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Job { report, done })
            .await
            .map_err(|_| shutting_down())?;
        outcome.await.map_err(|_| shutting_down())?
    }
}

fn shutting_down() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

/// Takes whatever is queued (up to [`MAX_BATCH`]) and stores it in one transaction, again and
/// again.
async fn writer(store: Arc<dyn Store>, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let batch = {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        store_batch(store.as_ref(), batch).await;
    }
}

async fn store_batch(store: &dyn Store, batch: Vec<Job>) {
    let reports: Vec<Report> = batch.iter().map(|j| j.report.clone()).collect();
    match store.ingest_reports(&reports).await {
        Ok(outcomes) if outcomes.len() == batch.len() => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                // The stream may be gone; its agent resends and gets `Duplicate`.
                let _ = job.done.send(outcome);
            }
        }
        failed if batch.len() > 1 => {
            let error = failed.err().map(|e| format!("{e:#}")).unwrap_or_default();
            tracing::warn!(reports = batch.len(), %error, "a batch of reports failed; storing them one at a time");
            for job in batch {
                let outcome = one(store
                    .ingest_reports(std::slice::from_ref(&job.report))
                    .await);
                let _ = job.done.send(outcome);
            }
        }
        result => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.done.send(one(result));
            }
        }
    }
}

/// The outcome of a batch of one report.
fn one(
    result: Result<Vec<Result<IngestOutcome, StoreError>>, StoreError>,
) -> Result<IngestOutcome, StoreError> {
    let mut outcomes = result?;
    match (outcomes.pop(), outcomes.is_empty()) {
        (Some(outcome), true) => outcome,
        _ => Err(StoreError::Corrupt(
            "the store did not answer exactly one outcome for one report".to_owned(),
        )),
    }
}

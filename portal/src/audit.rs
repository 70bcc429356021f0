//! The audit log writer. A draft is returned only after its read is in the log, so every
//! read waits for a commit; one writer task gathers the rows of all requests waiting at
//! that moment into one transaction (a group commit), so concurrent reads share a commit
//! instead of queueing for the database's write lock one by one.

use oshirase_store::{AuditEntry, Store};
use tokio::sync::{mpsc, oneshot};

/// Rows written per transaction at most.
const MAX_BATCH: usize = 512;

/// Why an audit row was not written: the data it guards must not leave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuditError {
    #[error("the audit log write failed: {0}")]
    Write(String),
    #[error("the audit writer has stopped")]
    Stopped,
}

type Job = (AuditEntry, oneshot::Sender<Result<(), AuditError>>);

#[derive(Clone)]
pub(crate) struct Auditor {
    tx: mpsc::UnboundedSender<Job>,
}

impl Auditor {
    /// Starts the writer task; it ends when the last `Auditor` clone is dropped, after
    /// writing what was queued.
    pub(crate) fn start(store: Store) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::new();
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let entries: Vec<AuditEntry> = batch.iter().map(|(e, _)| e.clone()).collect();
                let outcome = store
                    .append_audit(&entries)
                    .await
                    .map_err(|e| AuditError::Write(e.to_string()));
                if let Err(e) = &outcome {
                    tracing::error!(rows = entries.len(), error = %e, "audit log write failed");
                }
                for (_, done) in batch.drain(..) {
                    let _ = done.send(outcome.clone());
                }
            }
        });
        Self { tx }
    }

    /// Writes one row; returns when it is committed.
    pub(crate) async fn record(&self, entry: AuditEntry) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((entry, done))
            .map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }
}

//! The worker: the scheduler of every rights pipeline. It runs requests submitted now, those a
//! restart left unfinished, and the timed work (phase 2 at the end of the purge window, a due
//! key rotation, a retry after a failure), one round at a time, off the async threads.
//!
//! The decisions are synchronous methods on [`Rights`] ([`Rights::worker_round`],
//! [`Rights::worker_sleep`]); the async loop only waits for a nudge or for the next timed work,
//! and hands each round to `spawn_blocking`. The worker ends when every [`Nudge`] is gone and [`Worker::shutdown`] is
//! called: it finishes its current round first.
use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::{error, info};

use super::{Rights, request::RequestId};

/// Tells the worker that a request has work (or nothing, when no worker runs).
#[derive(Clone, Default)]
pub struct Nudge(Option<UnboundedSender<RequestId>>);

impl Nudge {
    pub fn nudge(&self, id: RequestId) {
        if let Some(tx) = &self.0 {
            // Closed only once the worker has stopped: nothing is left to tell.
            let _ = tx.send(id);
        }
    }
}

/// The running worker.
pub struct Worker {
    nudge: Nudge,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Starts the worker on the current runtime; it first resumes any unfinished request.
    pub fn spawn(rights: Arc<Rights>) -> Worker {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(rights, tx.clone(), rx));
        Worker { nudge: Nudge(Some(tx)), task }
    }

    /// A handle that nudges this worker.
    pub fn nudge(&self) -> Nudge {
        self.nudge.clone()
    }

    /// Waits until the worker has finished its current round and stopped. Every other
    /// [`Nudge`] must be dropped first (the services that hold them are gone).
    pub async fn shutdown(self) -> Result<(), tokio::task::JoinError> {
        drop(self.nudge);
        self.task.await
    }
}

/// Runs `work` off the async threads; a panic in it is logged and reported as `None`.
async fn blocking<T: Send + 'static>(
    rights: &Arc<Rights>,
    work: impl FnOnce(&Rights) -> T + Send + 'static,
) -> Option<T> {
    let rights = rights.clone();
    match tokio::task::spawn_blocking(move || work(&rights)).await {
        Ok(out) => Some(out),
        Err(e) => {
            error!(error = %e, "request worker round failed");
            None
        }
    }
}

async fn run(rights: Arc<Rights>, resume: UnboundedSender<RequestId>, mut rx: UnboundedReceiver<RequestId>) {
    match blocking(&rights, Rights::pending_work).await {
        Some(Ok(ids)) => {
            if !ids.is_empty() {
                info!(requests = ids.len(), "resuming unfinished requests");
            }
            for id in ids {
                let _ = resume.send(id);
            }
        }
        Some(Err(e)) => error!(error = %e, "cannot list unfinished requests"),
        None => {}
    }
    drop(resume);
    let mut failed = false;
    loop {
        let wait = blocking(&rights, move |r| r.worker_sleep(failed)).await.flatten();
        let (ids, woken_by_time) = tokio::select! {
            id = rx.recv() => {
                let Some(id) = id else { break };
                // Everything queued now, then one purge for all of it (a sweep queues many).
                let mut ids = vec![id];
                while let Ok(more) = rx.try_recv() {
                    ids.push(more);
                }
                (ids, false)
            }
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => (Vec::new(), true),
        };
        failed = blocking(&rights, move |r| r.worker_round(&ids, woken_by_time)).await.unwrap_or(true);
    }
}

impl Rights {
    /// How long the worker may sleep before timed work is due (the purge window, a due
    /// rotation, a retry): at most an hour (so a clock change is noticed), at least 10 s after
    /// a failure (no spin). `None`: nothing timed, sleep until nudged.
    pub fn worker_sleep(&self, failed: bool) -> Option<Duration> {
        let next = self.next_purge_at().ok().flatten()?;
        let floor = if failed { 10.0 } else { 0.0 };
        let secs = next.duration_since(self.now()).as_secs_f64().clamp(floor, 3600.0);
        Some(Duration::from_secs_f64(secs))
    }

    /// One round of the worker: the requests `ids`, every unfinished request when woken by
    /// the clock (those whose last step failed), then the purges and a due rotation. Returns
    /// whether the purge or the rotation failed (each failure is logged; all is retried).
    pub fn worker_round(&self, ids: &[RequestId], woken_by_time: bool) -> bool {
        for &id in ids {
            if let Err(e) = self.process(id) {
                error!(request_id = %id, error = %e, "request processing failed; it is retried");
            }
        }
        if woken_by_time {
            for id in self.pending_work().unwrap_or_default() {
                let _ = self.process(id);
            }
        }
        let purge = self.purge_due(false);
        let rotation = self.rotate_if_due();
        let failed = purge.is_err() || rotation.is_err();
        if let Err(e) = purge {
            error!(error = %e, "erasure purge or key rotation failed; it is retried");
        }
        if let Err(e) = rotation {
            error!(error = %e, "erasure purge or key rotation failed; it is retried");
        }
        failed
    }
}

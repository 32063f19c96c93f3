//! The worker: the scheduler of every rights pipeline. Two loops, off the async threads:
//! - the request loop runs requests submitted now and those a restart left unfinished, one
//!   round at a time, and after each round wakes the other loop;
//! - the timed loop runs the purges (phase 1 as soon as a delete is checked, phase 2 at the end
//!   of the purge window), a due key rotation and the expiries, and retries what failed. A
//!   purge can take half a minute (on etcd: compaction, defragmentation, write-ahead-log
//!   retirement on every member); requests submitted meanwhile are answered all the same.
//!
//! The decisions are synchronous methods on [`Rights`] ([`Rights::worker_round`],
//! [`Rights::timed_round`], [`Rights::worker_sleep`]); the async loops only wait for a nudge or
//! for the next timed work, and hand each round to `spawn_blocking`. The worker ends when every
//! [`Nudge`] is gone and [`Worker::shutdown`] is called: each loop finishes its current round
//! first.
//!
//! Its queue is bounded (`Settings::queue_capacity`): a public submission is refused before
//! anything is stored while that many requests wait ([`Nudge::has_room`]), so a flood costs
//! the flooder a refusal, not the service its memory. A nudge that finds the channel full (a
//! large sweep) is not lost: the worker then rescans every unfinished request from the store.
//! Requests a restart left unfinished are read from the store, not queued.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{
    Notify,
    mpsc::{Receiver, Sender, error::TrySendError},
};
use tracing::{debug, error, info};

use super::{Error, Rights, request::RequestId};

/// What a client refused because the queue is full is told to wait.
pub const QUEUE_FULL_RETRY_SECS: u64 = 60;

/// What the nudges and the worker share (the channel's sender is only in the nudges, so the
/// worker stops once they are all gone).
struct Shared {
    capacity: usize,
    /// Requests queued or in the worker's current round.
    pending: AtomicUsize,
    /// A nudge found the channel full: the worker rescans the store.
    missed: AtomicBool,
    rescan: Notify,
}

/// Tells the worker that a request has work (or nothing, when no worker runs).
#[derive(Clone, Default)]
pub struct Nudge(Option<(Sender<RequestId>, Arc<Shared>)>);

impl Nudge {
    pub fn nudge(&self, id: RequestId) {
        let Some((tx, shared)) = &self.0 else { return };
        // Counted before it can be received, so the worker never counts below zero.
        shared.pending.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(id) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
                shared.missed.store(true, Ordering::SeqCst);
                shared.rescan.notify_one();
            }
            // Closed only once the worker has stopped: nothing is left to tell.
            Err(TrySendError::Closed(_)) => {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Whether the worker's queue can take one more request; checked before a public
    /// submission stores anything.
    pub fn has_room(&self) -> Result<(), Error> {
        match &self.0 {
            Some((_, shared)) if shared.pending.load(Ordering::SeqCst) >= shared.capacity => {
                // Per refused call: debug, or a flood would flood the log too.
                debug!(capacity = shared.capacity, "worker queue full: a public submission is refused");
                Err(Error::QueueFull { retry_after_secs: QUEUE_FULL_RETRY_SECS })
            }
            _ => Ok(()),
        }
    }
}

/// The running worker.
pub struct Worker {
    nudge: Nudge,
    /// The request loop and the timed loop.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// With processing off, the queue's receiver, held so that the queue fills and refuses.
    _held: Option<Receiver<RequestId>>,
}

impl Worker {
    /// Starts the worker on the current runtime; it first resumes any unfinished request.
    /// With `process` false nothing is processed (tests stop a request mid-way), but the queue
    /// is there and fills up as it would.
    pub fn spawn(rights: Arc<Rights>, process: bool) -> Worker {
        let capacity = rights.settings().queue_capacity.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let shared = Arc::new(Shared {
            capacity,
            pending: AtomicUsize::new(0),
            missed: AtomicBool::new(false),
            rescan: Notify::new(),
        });
        let (tasks, held) = if process {
            // One kick waiting is enough: the timed round reads everything that is due.
            let (kick, kicked) = tokio::sync::mpsc::channel(1);
            let requests = tokio::spawn(run(rights.clone(), shared.clone(), rx, kick));
            (vec![requests, tokio::spawn(timed(rights, kicked))], None)
        } else {
            (Vec::new(), Some(rx))
        };
        Worker { nudge: Nudge(Some((tx, shared))), tasks, _held: held }
    }

    /// A handle that nudges this worker.
    pub fn nudge(&self) -> Nudge {
        self.nudge.clone()
    }

    /// Waits until the worker has finished its current round and stopped. Every other
    /// [`Nudge`] must be dropped first (the services that hold them are gone).
    pub async fn shutdown(self) -> Result<(), tokio::task::JoinError> {
        drop(self.nudge);
        // The request loop ends first (its queue closes); it drops the timed loop's kicks.
        for task in self.tasks {
            task.await?;
        }
        Ok(())
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

async fn run(rights: Arc<Rights>, shared: Arc<Shared>, mut rx: Receiver<RequestId>, kick: Sender<()>) {
    // What a restart left unfinished is read from the store, and is the first round.
    let mut resumed = match blocking(&rights, Rights::pending_work).await {
        Some(Ok(ids)) => {
            if !ids.is_empty() {
                info!(requests = ids.len(), "resuming unfinished requests");
            }
            ids
        }
        Some(Err(e)) => {
            error!(error = %e, "cannot list unfinished requests");
            Vec::new()
        }
        None => Vec::new(),
    };
    loop {
        // (ids, how many of them came from the queue, whether to rescan the store)
        let (ids, queued, rescan) = if resumed.is_empty() {
            // Woken by the clock at most every 10 s (the floor after a failure): exact times
            // are the timed loop's, this one only retries steps that failed.
            let wait = blocking(&rights, move |r| r.worker_sleep(true)).await.flatten();
            tokio::select! {
                id = rx.recv() => {
                    let Some(id) = id else { break };
                    // Everything queued now, then one purge for all of it (a sweep queues many).
                    let mut ids = vec![id];
                    while let Ok(more) = rx.try_recv() {
                        ids.push(more);
                    }
                    let n = ids.len();
                    (ids, n, false)
                }
                () = shared.rescan.notified() => (Vec::new(), 0, true),
                () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => (Vec::new(), 0, true),
            }
        } else {
            (std::mem::take(&mut resumed), 0, false)
        };
        let rescan = rescan || shared.missed.swap(false, Ordering::SeqCst);
        blocking(&rights, move |r| r.worker_round(&ids, rescan)).await;
        shared.pending.fetch_sub(queued, Ordering::SeqCst);
        // Full: a kick is already waiting. Closed: the timed loop has stopped.
        let _ = kick.try_send(());
    }
}

/// The timed loop: a round at start, after every kick, and when timed work is due. After a
/// round that failed, kicks wait for the retry's time (at least 10 s): a purge that keeps
/// failing is retried at that pace, not after every request round.
async fn timed(rights: Arc<Rights>, mut kicked: Receiver<()>) {
    loop {
        let failed = blocking(&rights, Rights::timed_round).await.unwrap_or(true);
        let wait = blocking(&rights, move |r| r.worker_sleep(failed)).await.flatten();
        let sleep = tokio::time::sleep(wait.unwrap_or_default());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                kick = kicked.recv() => match kick {
                    None => return,
                    Some(()) if failed && wait.is_some() => continue,
                    Some(()) => break,
                },
                () = &mut sleep, if wait.is_some() => break,
            }
        }
    }
}

impl Rights {
    /// How long the worker may sleep before timed work is due (the purge window, a due
    /// rotation, an expiry, a retry): at most an hour (so a clock change is noticed), at least 10 s after
    /// a failure (no spin). `None`: nothing timed, sleep until nudged.
    pub fn worker_sleep(&self, failed: bool) -> Option<Duration> {
        let purge = self.next_purge_at().ok().flatten();
        let expiry = self.next_expiry_at().ok().flatten();
        let next = [purge, expiry].into_iter().flatten().min()?;
        let floor = if failed { 10.0 } else { 0.0 };
        let secs = next.duration_since(self.now()).as_secs_f64().clamp(floor, 3600.0);
        Some(Duration::from_secs_f64(secs))
    }

    /// One round of the request loop: the requests `ids`, then every unfinished request when
    /// woken by the clock (those whose last step failed) or after a nudge found the queue full.
    /// Each failure is logged and retried.
    pub fn worker_round(&self, ids: &[RequestId], woken_by_time: bool) {
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
    }

    /// One round of the timed loop: the purges due, a due rotation, the expiries. Returns
    /// whether one of them failed (each failure is logged; all is retried).
    pub fn timed_round(&self) -> bool {
        let purge = self.purge_due(false);
        let rotation = self.rotate_if_due();
        // Unverified requests denied, attestation probes, kept faces and old rows deleted.
        let expiry = self.expire_due();
        let failed = purge.is_err() || rotation.is_err() || expiry.is_err();
        if let Err(e) = purge {
            error!(error = %e, "erasure purge or key rotation failed; it is retried");
        }
        if let Err(e) = rotation {
            error!(error = %e, "erasure purge or key rotation failed; it is retried");
        }
        if let Err(e) = expiry {
            error!(error = %e, "an expiry (identity, probes, faces, retention) failed; it is retried");
        }
        failed
    }
}

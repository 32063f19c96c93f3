//! Combining concurrent calls into one pass, as RocksDB's write groups do: a caller queues its
//! input; if no leader is running, it becomes one, takes what is queued (up to a batch bound),
//! runs the work for the whole batch, hands every caller its own output and leads again while
//! more queued meanwhile. Every other caller waits on its own slot. Nothing waits for a batch
//! to fill: a lone caller runs at once, and batches form only from calls that arrived while a
//! batch was being served, so the wait a batch adds is bounded by one batch's work.
//!
//! Work that can run side by side (scans, not writes) may have more leaders, one per core: a
//! further leader starts only once a batch's worth of calls (`spread`) is waiting, so that the
//! second core serves a batch rather than a call that arrived alone, which would cost it a pass
//! of its own.
//!
//! Used for group commit (enrolments, recipients-log and audit-trail rows: one write for many
//! calls) and for micro-batched exact search (one pass of the batched kernel for many probes).
use std::{
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::Arc,
};

use parking_lot::{Condvar, Mutex};

/// Where one call's output is left for it.
struct Slot<O> {
    value: Mutex<Outcome<O>>,
    ready: Condvar,
}

enum Outcome<O> {
    Waiting,
    Done(O),
    /// The leader's work panicked: the call panics too, so that no caller waits forever.
    Abandoned,
}

impl<O> Slot<O> {
    fn new() -> Arc<Self> {
        Arc::new(Slot { value: Mutex::new(Outcome::Waiting), ready: Condvar::new() })
    }

    fn fill(&self, outcome: Outcome<O>) {
        *self.value.lock() = outcome;
        self.ready.notify_one();
    }

    fn wait(&self) -> O {
        let mut value = self.value.lock();
        loop {
            match std::mem::replace(&mut *value, Outcome::Waiting) {
                Outcome::Done(out) => return out,
                Outcome::Abandoned => panic!("the batch this call was in panicked"),
                Outcome::Waiting => self.ready.wait(&mut value),
            }
        }
    }
}

struct State<I, O> {
    queue: Vec<(I, Arc<Slot<O>>)>,
    leading: usize,
}

/// A queue of calls served in batches by at most `leaders` callers at a time.
pub struct Combiner<I, O> {
    state: Mutex<State<I, O>>,
    max_batch: usize,
    leaders: usize,
    spread: usize,
}

impl<I, O> Combiner<I, O> {
    /// At most `max_batch` calls per batch, one batch at a time (for writes, which are ordered).
    pub fn new(max_batch: usize) -> Self {
        Self::with_leaders(max_batch, 1, 1)
    }

    /// At most `max_batch` calls per batch and `leaders` batches at once; a leader beyond the
    /// first starts only when at least `spread` calls wait (all three at least 1).
    pub fn with_leaders(max_batch: usize, leaders: usize, spread: usize) -> Self {
        Combiner {
            state: Mutex::new(State { queue: Vec::new(), leading: 0 }),
            max_batch: max_batch.max(1),
            leaders: leaders.max(1),
            spread: spread.max(1),
        }
    }

    /// Runs `input` in the next batch; `work` gets the batch's inputs in arrival order and must
    /// return one output per input, in the same order. Returns this call's output.
    pub fn run(&self, input: I, work: impl Fn(Vec<I>) -> Vec<O>) -> O {
        let slot = Slot::new();
        let mut state = self.state.lock();
        state.queue.push((input, slot.clone()));
        let lead = state.leading == 0 || (state.leading < self.leaders && state.queue.len() >= self.spread);
        if !lead {
            drop(state);
            return slot.wait();
        }
        state.leading += 1;
        // This caller leads until the queue is empty, so no queued call is left without one.
        loop {
            if state.queue.is_empty() {
                state.leading -= 1;
                break;
            }
            let take = state.queue.len().min(self.max_batch);
            let (inputs, slots): (Vec<I>, Vec<Arc<Slot<O>>>) = state.queue.drain(..take).unzip();
            drop(state);
            match catch_unwind(AssertUnwindSafe(|| work(inputs))) {
                Ok(outputs) => {
                    assert_eq!(outputs.len(), slots.len(), "one output per input");
                    for (slot, out) in slots.iter().zip(outputs) {
                        slot.fill(Outcome::Done(out));
                    }
                }
                Err(panic) => {
                    for slot in &slots {
                        slot.fill(Outcome::Abandoned);
                    }
                    self.state.lock().leading -= 1;
                    resume_unwind(panic);
                }
            }
            state = self.state.lock();
        }
        drop(state);
        slot.wait()
    }
}

/// One write for every item of a batch or, if that is refused, one write per item, so that one
/// item's error is never another's: the outputs of a [`Combiner`] whose work is a write. `write`
/// gives one output per item it wrote.
pub fn write_all_or_each<T, O, E>(items: &[T], write: impl Fn(&[T]) -> Result<Vec<O>, E>) -> Vec<Result<O, E>> {
    if let Ok(outputs) = write(items) {
        debug_assert_eq!(outputs.len(), items.len(), "one output per item");
        return outputs.into_iter().map(Ok).collect();
    }
    items
        .iter()
        .map(|item| {
            write(std::slice::from_ref(item)).map(|outputs| outputs.into_iter().next().expect("one output per item"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_caller_gets_its_own_output_and_batches_form_under_concurrency() {
        let combiner = Combiner::<u64, u64>::with_leaders(8, 2, 3);
        let batches = AtomicUsize::new(0);
        let largest = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (combiner, batches, largest) = (&combiner, &batches, &largest);
                s.spawn(move || {
                    for i in 0..200u64 {
                        let input = t * 1000 + i;
                        let out = combiner.run(input, |inputs| {
                            batches.fetch_add(1, Ordering::Relaxed);
                            largest.fetch_max(inputs.len(), Ordering::Relaxed);
                            assert!(inputs.len() <= 8);
                            inputs.iter().map(|x| x * 2).collect()
                        });
                        assert_eq!(out, input * 2);
                    }
                });
            }
        });
        assert!(batches.load(Ordering::Relaxed) <= 1600);
        assert!(largest.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_panicking_batch_panics_its_callers_and_leaves_the_combiner_usable() {
        let combiner = Combiner::<u32, u32>::new(4);
        let caught = catch_unwind(AssertUnwindSafe(|| combiner.run(1, |_| panic!("boom"))));
        assert!(caught.is_err());
        assert_eq!(combiner.run(2, |v| v), 2);
    }
}

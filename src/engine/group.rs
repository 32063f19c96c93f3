//! Group commit, as RocksDB's write groups do it: concurrent enrolments queue here; the first
//! caller to find no leader becomes one, takes everything queued, and enrols it in one
//! [`Engine::enroll`] (one synced write batch, one run of log appends, one checkpoint when the
//! log signs per batch), then hands each caller its own outcome and leads again while more
//! queued meanwhile. A caller is answered only after the write that holds its records is
//! durable, exactly as when it enrols alone. If the group's write is refused (an idempotency
//! conflict in one call, say), each call is enrolled again on its own, so one call's error is
//! never another's.
use parking_lot::{Condvar, Mutex};

use super::{Engine, Enrolled, Error};
use crate::record::NewRecord;

/// The most calls one group takes (a bound on one write batch's size, not on throughput).
const MAX_CALLS: usize = 256;

struct Call {
    records: Vec<NewRecord>,
    quarantine: Vec<Option<&'static str>>,
    id: u64,
}

#[derive(Default)]
struct State {
    queue: Vec<Call>,
    leading: bool,
    next_id: u64,
    done: Vec<(u64, Result<Vec<Enrolled>, Error>)>,
}

/// The queue of enrolments waiting for a group (see the module documentation).
#[derive(Default)]
pub(super) struct Group {
    state: Mutex<State>,
    answered: Condvar,
}

impl Group {
    /// Enrols `records` in the next group; returns this call's outcome once it is durable.
    pub(super) fn enroll(
        &self,
        engine: &Engine,
        records: Vec<NewRecord>,
        quarantine: Vec<Option<&'static str>>,
    ) -> Result<Vec<Enrolled>, Error> {
        let mut state = self.state.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.queue.push(Call { records, quarantine, id });
        loop {
            if let Some(at) = state.done.iter().position(|(done, _)| *done == id) {
                return state.done.swap_remove(at).1;
            }
            if !state.leading {
                break;
            }
            self.answered.wait(&mut state);
        }
        // No leader: this call leads until the queue is empty.
        state.leading = true;
        while !state.queue.is_empty() {
            let take = state.queue.len().min(MAX_CALLS);
            let calls: Vec<Call> = state.queue.drain(..take).collect();
            drop(state);
            let outcomes = enroll_group(engine, calls);
            state = self.state.lock();
            state.done.extend(outcomes);
            self.answered.notify_all();
        }
        state.leading = false;
        self.answered.notify_all();
        let at = state.done.iter().position(|(done, _)| *done == id).expect("the leader's own call was in its group");
        state.done.swap_remove(at).1
    }
}

/// One write for every call of the group, or, if that is refused, one per call.
fn enroll_group(engine: &Engine, calls: Vec<Call>) -> Vec<(u64, Result<Vec<Enrolled>, Error>)> {
    let mut spans = Vec::with_capacity(calls.len());
    let mut records: Vec<NewRecord> = Vec::new();
    let mut quarantine: Vec<Option<&'static str>> = Vec::new();
    for call in calls {
        spans.push((call.id, records.len(), records.len() + call.records.len()));
        records.extend(call.records);
        quarantine.extend(call.quarantine);
    }
    let held = quarantine;
    if spans.len() > 1
        && let Ok(all) = engine.enroll(&records, &held)
    {
        tracing::debug!(calls = spans.len(), records = records.len(), "group committed");
        return spans.iter().map(|&(id, start, end)| (id, Ok(all[start..end].to_vec()))).collect();
    }
    spans.iter().map(|&(id, start, end)| (id, engine.enroll(&records[start..end], &held[start..end]))).collect()
}

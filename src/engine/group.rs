//! Group commit (the queue is [`Combiner`]'s), as RocksDB's write groups do it: concurrent
//! enrolments queue here; the first caller to find no leader becomes one, takes everything
//! queued, and enrols it in one
//! [`Engine::enroll`] (one synced write batch, one run of log appends, one checkpoint when the
//! log signs per batch), then hands each caller its own outcome and leads again while more
//! queued meanwhile. A caller is answered only after the write that holds its records is
//! durable, exactly as when it enrols alone. If the group's write is refused (an idempotency
//! conflict in one call, say), each call is enrolled again on its own, so one call's error is
//! never another's.
use super::{Engine, Enrolled, Error, combine::Combiner};
use crate::record::NewRecord;

/// The most calls one group takes (a bound on one write batch's size, not on throughput).
const MAX_CALLS: usize = 256;

struct Call {
    records: Vec<NewRecord>,
    quarantine: Vec<Option<&'static str>>,
}

/// The queue of enrolments waiting for a group (see the module documentation): one leader at a
/// time, since writes are ordered anyway.
pub(super) struct Group(Combiner<Call, Result<Vec<Enrolled>, Error>>);

impl Default for Group {
    fn default() -> Self {
        Group(Combiner::new(MAX_CALLS))
    }
}

impl Group {
    /// Enrols `records` in the next group; returns this call's outcome once it is durable.
    pub(super) fn enroll(
        &self,
        engine: &Engine,
        records: Vec<NewRecord>,
        quarantine: Vec<Option<&'static str>>,
    ) -> Result<Vec<Enrolled>, Error> {
        self.0.run(Call { records, quarantine }, |calls| enroll_group(engine, calls))
    }
}

/// One write for every call of the group, or, if that is refused, one per call.
fn enroll_group(engine: &Engine, calls: Vec<Call>) -> Vec<Result<Vec<Enrolled>, Error>> {
    let mut spans = Vec::with_capacity(calls.len());
    let mut records: Vec<NewRecord> = Vec::new();
    let mut quarantine: Vec<Option<&'static str>> = Vec::new();
    for call in calls {
        spans.push((records.len(), records.len() + call.records.len()));
        records.extend(call.records);
        quarantine.extend(call.quarantine);
    }
    let held = quarantine;
    if spans.len() > 1
        && let Ok(all) = engine.enroll(&records, &held)
    {
        tracing::debug!(calls = spans.len(), records = records.len(), "group committed");
        return spans.iter().map(|&(start, end)| Ok(all[start..end].to_vec())).collect();
    }
    spans.iter().map(|&(start, end)| engine.enroll(&records[start..end], &held[start..end])).collect()
}

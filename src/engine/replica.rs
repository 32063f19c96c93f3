//! A read replica's round: the store's copies and the indexes brought in step with the shard's
//! keys in etcd (see `store/replica.rs`).
use tracing::instrument;

use super::{Embedding, Engine, Error, Index, Provenance, RecordId};
use crate::store::{self, ReplicaAck, SealedCopy};

/// Ciphertexts asked of the primary per call.
pub const FETCH_BATCH: usize = 512;

/// How a replica asks its primary for ciphertexts: `ids` in, their sealed copies out, or why
/// the primary could not be asked.
pub type Fetch<'a> = dyn FnMut(&[RecordId]) -> Result<Vec<SealedCopy>, String> + 'a;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Copies removed (their keys are gone).
    pub removed: usize,
    /// Copies fetched and indexed.
    pub added: usize,
    /// Whether a new acknowledgement was published.
    pub acknowledged: bool,
}

/// What the replica said last, kept by the caller between rounds.
#[derive(Debug, Clone, Default)]
pub struct ReplicaState {
    /// The acknowledgement last published.
    pub last: Option<ReplicaAck>,
    /// The checks of the last removal that passed them (kept here at once, so that an
    /// acknowledgement that failed to publish is published with them next round).
    pub checks: Vec<String>,
}

impl Engine {
    /// Ciphertexts for a replica (the primary's side): `ids`' sealed rows, as stored.
    pub fn sealed_rows(&self, ids: &[RecordId]) -> Result<Vec<SealedCopy>, Error> {
        Ok(self.replica_store()?.sealed_rows(ids)?)
    }

    fn replica_store(&self) -> Result<&dyn store::ReplicaStore, Error> {
        self.store.replicas().ok_or_else(|| {
            Error::Store(store::Error::Consensus {
                what: "serve a replica".into(),
                reason: "this node keeps its keys in its own data dir: replicas need a cluster (--cluster)".into(),
            })
        })
    }

    /// One round of replica `replica` (serving at `endpoint`): every copy whose key is gone
    /// from etcd is taken out of the indexes, then removed and purged with its checks; the
    /// ciphertexts of keys it lacks are fetched through `fetch` (at most [`FETCH_BATCH`] ids a
    /// call), opened and indexed; then, when anything changed or etcd recorded a deletion
    /// since, its acknowledgement is published. A fetch that fails stops the fetching (the
    /// next round resumes); a removal whose check fails is published as pending.
    #[instrument(skip_all, fields(replica))]
    pub fn replicate(
        &self,
        replica: u32,
        endpoint: &str,
        state: &mut ReplicaState,
        fetch: &mut Fetch<'_>,
    ) -> Result<Round, Error> {
        let copies = self.replica_store()?;
        let listing = copies.replica_listing()?;
        let held = copies.local_ids()?;
        let gone: Vec<RecordId> = held.iter().filter(|id| !listing.keys.contains_key(id)).copied().collect();
        let mut missing: Vec<RecordId> = listing.keys.keys().filter(|id| !held.contains(id)).copied().collect();
        missing.sort();
        let mut round = Round::default();
        let mut pending = None;
        if !gone.is_empty() {
            // Out of the indexes first: from here no search of this replica can find them.
            for id in &gone {
                self.unindex(*id);
                self.quarantined.write().remove(id);
            }
            copies.drop_copies(&gone)?;
            round.removed = gone.len();
        }
        // This round's removal, or one an earlier round (or a crash) left unchecked.
        match copies.purge_copies() {
            Ok(None) => {}
            Ok(Some(passed)) => state.checks = passed,
            Err(store::Error::Unverified(why)) => pending = Some(why),
            Err(e) => return Err(e.into()),
        }
        let mut fetched_all = true;
        for chunk in missing.chunks(FETCH_BATCH) {
            let rows = match fetch(chunk) {
                Ok(rows) => rows,
                Err(why) => {
                    tracing::warn!(reason = %why, missing = missing.len() - round.added, "the primary did not send ciphertexts; retried next round");
                    fetched_all = false;
                    break;
                }
            };
            let records = {
                let _writer = self.writer.lock();
                let records = copies.adopt_copies(&rows, &listing.keys)?;
                let held: Vec<RecordId> = rows
                    .iter()
                    .filter(|r| r.quarantine.is_some() && listing.keys.contains_key(&r.id))
                    .map(|r| r.id)
                    .collect();
                self.quarantined.write().extend(held);
                let items: Vec<(RecordId, &Provenance, &Embedding)> =
                    records.iter().map(|r| (r.id, &r.provenance, &r.embedding)).collect();
                self.index_new(&items, |i| records[i].enrolled_at);
                records.len()
            };
            round.added += records;
        }
        let records = self.index.read().len();
        let in_step = pending.is_none();
        let last = &state.last;
        let listing_now = match (last, in_step) {
            (_, true) => listing.revision,
            (Some(prev), false) => prev.listing,
            (None, false) => 0,
        };
        let changed = round.removed > 0
            || round.added > 0
            || last.as_ref().is_none_or(|a| a.listing < listing.erased_at && in_step)
            || last.as_ref().is_some_and(|a| a.pending != pending || a.records != records);
        if changed {
            let ack = ReplicaAck {
                replica,
                endpoint: endpoint.to_string(),
                listing: listing_now,
                records,
                missing: if fetched_all { 0 } else { missing.len() - round.added },
                checks: state.checks.clone(),
                pending,
                at: jiff::Timestamp::now(),
            };
            copies.put_replica_ack(&ack)?;
            state.last = Some(ack);
            round.acknowledged = true;
        }
        Ok(round)
    }
}

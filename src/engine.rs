//! The synchronous core: the store and the search index, kept in step.
//!
//! The store is the truth; the index is rebuilt from it at start-up and updated after every
//! durable write. Enrolments are serialised (one writer), so an idempotency key can never
//! create two records; searches run concurrently under a read lock. Nothing here knows gRPC
//! or tokio: the async layer calls it through `spawn_blocking`.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Mutex, RwLock},
};

use jiff::Timestamp;
use tracing::{info, instrument};

use crate::{
    embedding::Embedding,
    index::{ExactIndex, Hit, Index},
    record::{NewRecord, Provenance, Record, RecordId},
    store::{self, Idempotency, Store},
};

/// The most hits one search returns.
pub const MAX_K: usize = 1000;

/// Errors of the core, each with what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("k is {0}; ask for 1 to {MAX_K} hits")]
    InvalidK(usize),
    #[error("min_score is {0}; use a number from -1 to 1")]
    InvalidMinScore(f32),
    #[error("no record with id {0}")]
    NotFound(RecordId),
    #[error("idempotency key of item {item} was already used for a different enrolment; use a new key")]
    IdempotencyConflict { item: usize },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The outcome of one enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    pub id: RecordId,
    /// False when an idempotency key answered with an earlier record.
    pub created: bool,
}

/// A search hit with what the API shows of the record.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub id: RecordId,
    pub score: f32,
    pub provenance: Provenance,
    pub enrolled_at: Timestamp,
}

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct SearchResult {
    pub hits: Vec<SearchHit>,
    /// How many records were compared with the probe.
    pub candidates: usize,
    pub index: &'static str,
}

/// What the engine holds.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub record_count: u64,
    pub dimension: usize,
    pub bytes_on_disk: u64,
    pub sst_file_count: u64,
    pub index: &'static str,
}

pub struct Engine {
    store: Store,
    index: RwLock<Box<dyn Index>>,
    /// Records the ingest policy quarantined: kept out of operator searches, found by rights
    /// requests.
    quarantined: RwLock<HashSet<RecordId>>,
    writer: Mutex<()>,
}

impl Engine {
    /// Opens the store and rebuilds the index from it.
    #[instrument(skip_all)]
    pub fn open(
        data_dir: &Path,
        key_dir: &Path,
        dimension: Option<usize>,
        log_origin: Option<&str>,
    ) -> Result<Self, Error> {
        let store = Store::open(data_dir, key_dir, dimension, log_origin)?;
        let mut index = ExactIndex::new(store.dimension());
        let count = store.for_each(|record| index.insert(record.id, &record.embedding))?;
        let quarantined: HashSet<RecordId> = store.quarantined()?.into_iter().map(|(id, _)| id).collect();
        info!(
            records = count,
            quarantined = quarantined.len(),
            dimension = store.dimension(),
            "store opened, index rebuilt"
        );
        Ok(Engine {
            store,
            index: RwLock::new(Box::new(index)),
            quarantined: RwLock::new(quarantined),
            writer: Mutex::new(()),
        })
    }

    pub fn dimension(&self) -> usize {
        self.store.dimension()
    }

    /// Stores `records` in one durable write and indexes them. An idempotency key seen before
    /// (in the store or earlier in `records`) answers with its record instead of a new one.
    /// `quarantine[i]`, when given, names the policy rule that quarantines record `i`.
    /// On any error nothing is stored.
    #[instrument(skip_all, fields(items = records.len()))]
    pub fn enroll(&self, records: &[NewRecord], quarantine: &[Option<&str>]) -> Result<Vec<Enrolled>, Error> {
        let _writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut outcomes = Vec::with_capacity(records.len());
        let mut fresh: Vec<(RecordId, &NewRecord)> = Vec::with_capacity(records.len());
        // The position in `records` of each fresh record.
        let mut fresh_items = Vec::with_capacity(records.len());
        // Keys first used in this batch, with the position of the record they created.
        let mut batch_keys = HashMap::new();
        for (item, record) in records.iter().enumerate() {
            if let Some(key) = &record.idempotency_key {
                if let Some(&first) = batch_keys.get(key) {
                    let (id, earlier): (RecordId, &NewRecord) = fresh[first];
                    if earlier.embedding != record.embedding || earlier.provenance != record.provenance {
                        return Err(Error::IdempotencyConflict { item });
                    }
                    outcomes.push(Enrolled { id, created: false });
                    continue;
                }
                match self.store.idempotency(key, record)? {
                    Idempotency::Replay(id) => {
                        outcomes.push(Enrolled { id, created: false });
                        continue;
                    }
                    Idempotency::Conflict => return Err(Error::IdempotencyConflict { item }),
                    Idempotency::Fresh => {
                        batch_keys.insert(key, fresh.len());
                    }
                }
            }
            let id = RecordId::random();
            fresh.push((id, record));
            fresh_items.push(item);
            outcomes.push(Enrolled { id, created: true });
        }
        if !fresh.is_empty() {
            let held: Vec<(RecordId, &str)> = fresh
                .iter()
                .zip(&fresh_items)
                .filter_map(|((id, _), &item)| Some((*id, quarantine.get(item).copied().flatten()?)))
                .collect();
            self.store.insert(&fresh, Timestamp::now(), &held)?;
            if !held.is_empty() {
                let mut q = self.quarantined.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                q.extend(held.iter().map(|(id, _)| *id));
            }
            let mut index = self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (id, record) in &fresh {
                index.insert(*id, &record.embedding);
            }
        }
        tracing::debug!(created = fresh.len(), replayed = outcomes.len() - fresh.len(), "enrolled");
        Ok(outcomes)
    }

    /// One record, decrypted.
    #[instrument(skip_all, fields(record_id = %id))]
    pub fn get(&self, id: RecordId) -> Result<Record, Error> {
        self.store.get(id)?.ok_or(Error::NotFound(id))
    }

    /// The `k` records most similar to `probe` with score at least `min_score`, best first;
    /// quarantined records only if `include_quarantined`.
    #[instrument(skip_all, fields(k))]
    pub fn search(
        &self,
        probe: &Embedding,
        k: usize,
        min_score: Option<f32>,
        include_quarantined: bool,
    ) -> Result<SearchResult, Error> {
        if k == 0 || k > MAX_K {
            return Err(Error::InvalidK(k));
        }
        if let Some(s) = min_score.filter(|s| !(-1.0..=1.0).contains(s)) {
            return Err(Error::InvalidMinScore(s));
        }
        let (hits, candidates, index_name) = {
            let quarantined = self.quarantined.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if include_quarantined || quarantined.is_empty() {
                (index.search(probe, k, min_score), index.len(), index.name())
            } else {
                // Ask for enough that k remain once quarantined records are dropped.
                let mut hits = index.search(probe, k + quarantined.len().min(index.len()), min_score);
                hits.retain(|h| !quarantined.contains(&h.id));
                hits.truncate(k);
                (hits, index.len() - quarantined.len(), index.name())
            }
        };
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            // A record erased between the scan and this read is simply no longer a hit.
            if let Some(record) = self.store.get(hit.id)? {
                out.push(SearchHit {
                    id: hit.id,
                    score: hit.score,
                    provenance: record.provenance.clone(),
                    enrolled_at: record.enrolled_at,
                });
            }
        }
        tracing::debug!(hits = out.len(), candidates, "searched");
        Ok(SearchResult { hits: out, candidates, index: index_name })
    }

    /// Every record scoring at least `min_score` against any of `probes`, with its best score,
    /// best first, by the exact scan over every record held (quarantined ones included): rights
    /// requests must find all of a person's records, so no approximate index and no `k` cap.
    /// Returns the hits and how many records were compared.
    #[instrument(skip_all, fields(probes = probes.len()))]
    pub fn match_all(&self, probes: &[Embedding], min_score: f32) -> (Vec<Hit>, usize) {
        let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut best: HashMap<RecordId, f32> = HashMap::new();
        for probe in probes {
            for hit in index.search(probe, index.len().max(1), Some(min_score)) {
                let score = best.entry(hit.id).or_insert(hit.score);
                *score = score.max(hit.score);
            }
        }
        let mut hits: Vec<Hit> = best.into_iter().map(|(id, score)| Hit { id, score }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        (hits, index.len())
    }

    /// Whether the ingest policy quarantined `id`.
    pub fn is_quarantined(&self, id: RecordId) -> bool {
        self.quarantined.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(&id)
    }

    /// The store: the public transparency log, and the rows of the rights workflows.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The transparency log, read-only: it is public.
    pub fn log(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        let (record_count, index) = {
            let index = self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            (index.len() as u64, index.name())
        };
        let store = self.store.stats()?;
        Ok(Stats {
            record_count,
            dimension: self.store.dimension(),
            bytes_on_disk: store.bytes_on_disk,
            sst_file_count: store.sst_file_count,
            index,
        })
    }
}

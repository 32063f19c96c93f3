//! The synchronous core: the store and the search index, kept in step.
//!
//! The store is the truth; the index is rebuilt from it at start-up and updated after every
//! durable write. Enrolments are serialised (one writer), so an idempotency key can never
//! create two records; searches run concurrently under a read lock. Nothing here knows gRPC
//! or tokio: the async layer calls it through `spawn_blocking`.
//!
//! Two indexes: the exact scan is always kept (it is the ground truth, and access and erasure
//! requests must find every record of a person, which only it guarantees); the HNSW graph is
//! kept too when [`IndexConfig`] selects it, answers ordinary searches (above a size, in
//! `auto`), and is persisted through the store so a restart loads it instead of rebuilding.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use jiff::Timestamp;
use parking_lot::{Mutex, RwLock};
use tracing::{info, instrument, warn};

pub mod combine;
mod graph;
mod group;
mod query;
pub mod replica;
#[cfg(test)]
mod tests;

pub use query::{IndexUse, Matches, OpenOptions, Query};

use combine::Combiner;

use crate::{
    embedding::Embedding,
    index::{
        ExactIndex, Hit, HnswIndex, HnswParams, Index,
        hnsw::{GraphChanges, HnswError},
    },
    record::{NewRecord, Provenance, Record, RecordId},
    store::{self, Idempotency, LogStore, RecordStore, RequestStore, Storage, Store},
};

/// The most hits one search returns.
pub const MAX_K: usize = 1000;

/// Records linked into the graph per hold of its write lock (well under a second of work),
/// after which waiting searches run.
const GRAPH_SLICE: usize = 512;

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
    #[error(transparent)]
    Index(#[from] HnswError),
}

/// Which index answers ordinary searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexChoice {
    /// Always the exact scan; no graph is kept.
    Exact,
    /// Always the HNSW graph.
    Hnsw,
    /// HNSW from [`IndexConfig::auto_min_records`] records on, the exact scan below.
    Auto,
}

/// How the engine indexes templates.
#[derive(Debug, Clone, Copy)]
pub struct IndexConfig {
    pub choice: IndexChoice,
    /// In `Auto`, the record count from which HNSW answers.
    pub auto_min_records: usize,
    pub hnsw: HnswParams,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig { choice: IndexChoice::Auto, auto_min_records: 20_000, hnsw: HnswParams::default() }
    }
}

/// What happened to the HNSW graph at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphStatus {
    /// The graph was loaded from the store rather than built.
    pub loaded: bool,
    /// Records linked at open (all of them when built; those the stored graph lacked when loaded).
    pub linked: usize,
    /// Stored graph nodes whose record is gone, unlinked at open.
    pub dropped: usize,
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
    store: Arc<dyn Storage>,
    index: RwLock<ExactIndex>,
    hnsw: Option<RwLock<HnswIndex>>,
    index_config: IndexConfig,
    graph_status: GraphStatus,
    /// Records the ingest policy quarantined: kept out of operator searches, found by rights
    /// requests.
    quarantined: RwLock<HashSet<RecordId>>,
    /// What a search hit shows of each indexed record, kept beside the index so that a hit
    /// costs no read and no decryption of its record (whose template the hit does not show).
    shown: RwLock<HashMap<RecordId, Shown>>,
    writer: Mutex<()>,
    /// Concurrent enrolments waiting for one write ([`Engine::enroll_grouped`]).
    group: group::Group,
    /// Concurrent exact searches waiting for one pass of the batched kernel.
    scans: Combiner<Scan, (Vec<Hit>, usize)>,
}

/// The most probes one pass of the batched exact kernel scores for concurrent searches: enough
/// to turn the scan from memory-bound to compute-bound, few enough that a batch stays short.
const MAX_SCAN_BATCH: usize = 64;

/// What [`Engine::search`] shows of a record besides its id and score.
struct Shown {
    provenance: Provenance,
    enrolled_at: Timestamp,
}

/// One exact search waiting in [`Engine::scans`].
struct Scan {
    probe: Embedding,
    wanted: usize,
    min_score: Option<f32>,
}

impl Engine {
    /// Opens the RocksDB store `options` names, rebuilds the exact index from it and, if the
    /// index configuration keeps one, loads the HNSW graph (reconciled with the records) or
    /// builds it on all cores.
    #[instrument(skip_all)]
    pub fn open(options: &OpenOptions) -> Result<Self, Error> {
        let store = Store::open_on(
            &options.data_dir,
            &options.key_dir,
            options.dimension,
            options.log_origin.as_deref(),
            options.restore_from_backup,
            options.cluster.clone(),
        )?;
        Self::with_storage(Arc::new(store), options.index)
    }

    /// The engine over any storage: the RocksDB store, or the in-memory one in unit tests.
    pub fn with_storage(store: Arc<dyn Storage>, config: IndexConfig) -> Result<Self, Error> {
        config.hnsw.check()?;
        // Reserved once rather than grown by doubling: each growth copies (and zeroes) the
        // whole matrix. The store's estimate: if low, the matrix grows past it as before.
        let estimate = store.estimated_records();
        let mut index = ExactIndex::with_capacity(store.dimension(), estimate);
        let mut shown = HashMap::with_capacity(estimate);
        let count = store.for_each(&mut |record| {
            index.insert(record.id, &record.embedding);
            shown.insert(record.id, Shown { provenance: record.provenance, enrolled_at: record.enrolled_at });
        })?;
        let quarantined: HashSet<RecordId> = store.quarantined()?.into_iter().map(|(id, _)| id).collect();
        info!(
            records = count,
            quarantined = quarantined.len(),
            dimension = store.dimension(),
            "store opened, index rebuilt"
        );
        let (hnsw, graph_status) = match config.choice {
            IndexChoice::Exact => {
                // A graph no longer kept up to date is not kept at all.
                store.clear_graph()?;
                (None, GraphStatus::default())
            }
            IndexChoice::Hnsw | IndexChoice::Auto => {
                let (hnsw, status) = graph::open_graph(&*store, &index, config.hnsw)?;
                (Some(RwLock::new(hnsw)), status)
            }
        };
        Ok(Engine {
            store,
            index: RwLock::new(index),
            hnsw,
            index_config: config,
            graph_status,
            quarantined: RwLock::new(quarantined),
            shown: RwLock::new(shown),
            writer: Mutex::new(()),
            group: Default::default(),
            scans: Combiner::with_leaders(
                MAX_SCAN_BATCH,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                crate::kernel::BLOCK_PROBES,
            ),
        })
    }

    /// What happened to the HNSW graph at open (all zero when no graph is kept).
    pub fn graph_status(&self) -> GraphStatus {
        self.graph_status
    }

    pub fn index_config(&self) -> IndexConfig {
        self.index_config
    }

    pub fn dimension(&self) -> usize {
        self.store.dimension()
    }

    /// [`Engine::enroll`] in a group commit: concurrent calls share one synced write (see
    /// `group.rs`); each returns once its own records are durable.
    pub fn enroll_grouped(
        &self,
        records: Vec<NewRecord>,
        quarantine: Vec<Option<&'static str>>,
    ) -> Result<Vec<Enrolled>, Error> {
        self.group.enroll(self, records, quarantine)
    }

    /// Stores `records` in one durable write and indexes them. An idempotency key seen before
    /// (in the store or earlier in `records`) answers with its record instead of a new one.
    /// `quarantine[i]`, when given, names the policy rule that quarantines record `i`.
    /// On any error nothing is stored.
    #[instrument(skip_all, fields(items = records.len()))]
    pub fn enroll(&self, records: &[NewRecord], quarantine: &[Option<&str>]) -> Result<Vec<Enrolled>, Error> {
        let _writer = self.writer.lock();
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
            let enrolled_at = Timestamp::now();
            self.store.insert(&fresh, enrolled_at, &held)?;
            if !held.is_empty() {
                let mut q = self.quarantined.write();
                q.extend(held.iter().map(|(id, _)| *id));
            }
            let items: Vec<(RecordId, &Provenance, &Embedding)> =
                fresh.iter().map(|(id, r)| (*id, &r.provenance, &r.embedding)).collect();
            self.index_new(&items, |_| enrolled_at);
        }
        tracing::debug!(created = fresh.len(), replayed = outcomes.len() - fresh.len(), "enrolled");
        Ok(outcomes)
    }

    /// Puts new records in every index (their hits' provenance and enrolment time first, so
    /// that every record a search can find has what its hit shows). With the writer lock held.
    fn index_new(&self, items: &[(RecordId, &Provenance, &Embedding)], enrolled_at: impl Fn(usize) -> Timestamp) {
        {
            let mut shown = self.shown.write();
            for (i, (id, provenance, _)) in items.iter().enumerate() {
                shown.insert(*id, Shown { provenance: (*provenance).clone(), enrolled_at: enrolled_at(i) });
            }
        }
        {
            let mut index = self.index.write();
            for (id, _, embedding) in items {
                index.insert(*id, embedding);
            }
        }
        if let Some(hnsw) = &self.hnsw {
            let items: Vec<(RecordId, &[f32])> = items.iter().map(|(id, _, e)| (*id, e.as_slice())).collect();
            // In slices, so that searches get the lock between them during a large stream.
            for slice in items.chunks(GRAPH_SLICE) {
                hnsw.write().insert_batch(slice);
            }
            let changes = hnsw.write().take_changes();
            self.persist_graph(hnsw, changes);
        }
    }

    /// One record, decrypted.
    #[instrument(skip_all, fields(record_id = %id))]
    pub fn get(&self, id: RecordId) -> Result<Record, Error> {
        self.store.get(id)?.ok_or(Error::NotFound(id))
    }

    /// The `k` records most similar to the probe with score at least `min_score`, best first,
    /// from the index the query names.
    #[instrument(skip_all, fields(k = query.k, index = ?query.index))]
    pub fn search(&self, query: &Query<'_>) -> Result<SearchResult, Error> {
        let Query { probe, k, min_score, index: index_use, include_quarantined } = *query;
        if k == 0 || k > MAX_K {
            return Err(Error::InvalidK(k));
        }
        if let Some(s) = min_score.filter(|s| !(-1.0..=1.0).contains(s)) {
            return Err(Error::InvalidMinScore(s));
        }
        let hidden = if include_quarantined { 0 } else { self.quarantined.read().len() };
        // Ask for enough that k remain once quarantined records are dropped.
        let wanted = k + hidden;
        let graph = self
            .hnsw
            .as_ref()
            .filter(|_| index_use == IndexUse::Configured)
            .map(|h| h.read())
            .filter(|g| self.graph_answers(g.len()));
        let (hits, candidates, index_name) = if let Some(g) = graph {
            // Graph searches run side by side under the read lock, each on its caller's thread.
            let (hits, candidates) = g.search_counted(probe, wanted, min_score);
            (hits, candidates, g.name())
        } else {
            // No lock is held while waiting for the batch: its leader takes the index's.
            let scan = Scan { probe: probe.clone(), wanted, min_score };
            let (hits, candidates) = self.scans.run(scan, |scans| self.scan_batch(scans));
            (hits, candidates, "exact")
        };
        let (hits, candidates) = if hidden == 0 {
            (hits, candidates)
        } else {
            let quarantined = self.quarantined.read();
            let mut hits = hits;
            hits.retain(|h| !quarantined.contains(&h.id));
            hits.truncate(k);
            (hits, candidates.saturating_sub(hidden))
        };
        let shown = self.shown.read();
        // A record unindexed between the scan and here is simply no longer a hit.
        let out: Vec<SearchHit> = hits
            .into_iter()
            .filter_map(|hit| {
                let s = shown.get(&hit.id)?;
                Some(SearchHit {
                    id: hit.id,
                    score: hit.score,
                    provenance: s.provenance.clone(),
                    enrolled_at: s.enrolled_at,
                })
            })
            .collect();
        drop(shown);
        tracing::debug!(hits = out.len(), candidates, "searched");
        Ok(SearchResult { hits: out, candidates, index: index_name })
    }

    /// Exact searches that queued together, in one pass of the batched kernel when there are
    /// several. Each answer equals the search alone bit for bit: the batched kernel's scores
    /// are the single-probe kernel's, and hits are ranked by one total order, so the top
    /// `wanted` of a larger `k`, filtered at the caller's own `min_score`, are the caller's own.
    fn scan_batch(&self, scans: Vec<Scan>) -> Vec<(Vec<Hit>, usize)> {
        let index = self.index.read();
        let compared = index.len();
        if let [scan] = scans.as_slice() {
            return vec![index.search_counted(&scan.probe, scan.wanted, scan.min_score)];
        }
        let k = scans.iter().map(|s| s.wanted).max().unwrap_or(0);
        let floor = scans.iter().map(|s| s.min_score).try_fold(f32::INFINITY, |low, m| m.map(|m| low.min(m)));
        let probes: Vec<Embedding> = scans.iter().map(|s| s.probe.clone()).collect();
        let all = index.search_batch(&probes, Some(k), floor);
        drop(index);
        tracing::debug!(probes = scans.len(), "searches scored in one pass");
        scans
            .iter()
            .zip(all)
            .map(|(scan, mut hits)| {
                if let Some(m) = scan.min_score {
                    hits.retain(|h| h.score >= m);
                }
                hits.truncate(scan.wanted);
                (hits, compared)
            })
            .collect()
    }

    /// Every record scoring at least `min_score` against each of `probes`, by the exact scan
    /// over every record held (quarantined ones included), in one pass over the templates, with
    /// no `k` cap: rights requests must find all of a person's records, which no approximate
    /// index guarantees. A probe's scores have the same bits as in [`Engine::search`].
    #[instrument(skip_all, fields(probes = probes.len()))]
    pub fn match_exact(&self, probes: &[Embedding], min_score: f32) -> Result<Matches, Error> {
        if !(-1.0..=1.0).contains(&min_score) {
            return Err(Error::InvalidMinScore(min_score));
        }
        let index = self.index.read();
        Ok(Matches { per_probe: index.search_batch(probes, None, Some(min_score)), compared: index.len() })
    }

    /// Whether the ingest policy quarantined `id`.
    pub fn is_quarantined(&self, id: RecordId) -> bool {
        self.quarantined.read().contains(&id)
    }

    /// Records and their keys: reads, recipients, erasure and key rotation.
    pub fn records(&self) -> &dyn RecordStore {
        &*self.store
    }

    /// The rights workflows' own rows (requests, the audit trail).
    pub fn requests(&self) -> &dyn RequestStore {
        &*self.store
    }

    /// Removes a record from every index (the exact matrix row and the graph node, their bytes
    /// overwritten) and persists the graph's change. For erasure, after the store has deleted
    /// the record. Returns whether the exact index held it. Takes the writer lock (as `enroll`
    /// does): do not call it while holding that lock.
    #[instrument(skip_all, fields(record_id = %id))]
    pub fn unindex(&self, id: RecordId) -> bool {
        // With the writers: graph changes must reach the store in the order they were made.
        let _writer = self.writer.lock();
        let present = self.index.write().remove(id);
        self.shown.write().remove(&id);
        if let Some(hnsw) = &self.hnsw {
            let mut graph = hnsw.write();
            graph.remove(id);
            let changes = graph.take_changes();
            drop(graph);
            self.persist_graph(hnsw, changes);
        }
        present
    }

    /// The graph rows (slots) of `ids` that are in the HNSW graph.
    pub fn graph_slots(&self, ids: &[RecordId]) -> Vec<u32> {
        let Some(hnsw) = &self.hnsw else { return Vec::new() };
        let graph = hnsw.read();
        ids.iter().filter_map(|id| graph.slot(*id)).collect()
    }

    /// Whether the graph (rather than the exact scan) answers ordinary searches at this size.
    fn graph_answers(&self, records: usize) -> bool {
        match self.index_config.choice {
            IndexChoice::Exact => false,
            IndexChoice::Hnsw => true,
            IndexChoice::Auto => records >= self.index_config.auto_min_records,
        }
    }

    /// Writes graph changes; on failure they stay pending for the next write (and the graph is
    /// reconciled at open anyway), so a failed write never fails the enrolment it follows.
    fn persist_graph(&self, hnsw: &RwLock<HnswIndex>, changes: GraphChanges) {
        if let Err(e) = self.store.write_graph(&changes.upserts, &changes.removed, &changes.meta) {
            warn!(error = %e, nodes = changes.upserts.len(), "graph write failed; it will be retried");
            hnsw.write().restore_changes(&changes);
        }
    }

    /// The transparency log.
    pub fn log(&self) -> &dyn LogStore {
        &*self.store
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        let (record_count, mut index) = {
            let index = self.index.read();
            (index.len() as u64, index.name())
        };
        if let Some(graph) = &self.hnsw
            && self.graph_answers(record_count as usize)
        {
            index = graph.read().name();
        }
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

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
    path::PathBuf,
    sync::Arc,
    time::Instant,
};

use jiff::Timestamp;
use parking_lot::{Mutex, RwLock};
use tracing::{info, instrument, warn};
use zeroize::{Zeroize, Zeroizing};

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

/// Where the engine's data lives and how it is indexed.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub data_dir: PathBuf,
    /// Kept apart from the data dir: it holds the keys that crypto-shredding destroys.
    pub key_dir: PathBuf,
    /// Checked against the dimension recorded at creation; `None` accepts it (512 when new).
    pub dimension: Option<usize>,
    /// The log's origin line; `None` accepts the recorded one (a default when new).
    pub log_origin: Option<String>,
    pub index: IndexConfig,
}

impl OpenOptions {
    /// The data dir and key dir with every other option at its default.
    pub fn new(data_dir: impl Into<PathBuf>, key_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            data_dir: data_dir.into(),
            key_dir: key_dir.into(),
            dimension: None,
            log_origin: None,
            index: IndexConfig::default(),
        }
    }
}

/// Which index answers a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUse {
    /// The one the configuration selects ([`IndexConfig`]).
    Configured,
    /// The exact scan, the ground truth.
    Exact,
}

/// A search: the probe, how many hits, from which score, by which index, and whether records
/// the ingest policy quarantined are shown.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub probe: &'a Embedding,
    pub k: usize,
    pub min_score: Option<f32>,
    pub index: IndexUse,
    pub include_quarantined: bool,
}

impl<'a> Query<'a> {
    /// The `k` best hits from the configured index, quarantined records included.
    pub fn new(probe: &'a Embedding, k: usize) -> Self {
        Query { probe, k, min_score: None, index: IndexUse::Configured, include_quarantined: true }
    }
}

/// Every record at or above a threshold for each probe, by the exact scan.
#[derive(Debug, Clone)]
pub struct Matches {
    /// One list per probe, best first.
    pub per_probe: Vec<Vec<Hit>>,
    /// How many records were compared with each probe.
    pub compared: usize,
}

impl Matches {
    /// Each matched record once, with its best score over the probes, best first (ties by id).
    pub fn best(&self) -> Vec<Hit> {
        let mut best: HashMap<RecordId, f32> = HashMap::new();
        for hit in self.per_probe.iter().flatten() {
            let score = best.entry(hit.id).or_insert(hit.score);
            *score = score.max(hit.score);
        }
        let mut hits: Vec<Hit> = best.into_iter().map(|(id, score)| Hit { id, score }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits
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
    writer: Mutex<()>,
}

impl Engine {
    /// Opens the RocksDB store `options` names, rebuilds the exact index from it and, if the
    /// index configuration keeps one, loads the HNSW graph (reconciled with the records) or
    /// builds it on all cores.
    #[instrument(skip_all)]
    pub fn open(options: &OpenOptions) -> Result<Self, Error> {
        let store =
            Store::open(&options.data_dir, &options.key_dir, options.dimension, options.log_origin.as_deref())?;
        Self::with_storage(Arc::new(store), options.index)
    }

    /// The engine over any storage: the RocksDB store, or the in-memory one in unit tests.
    pub fn with_storage(store: Arc<dyn Storage>, config: IndexConfig) -> Result<Self, Error> {
        config.hnsw.check()?;
        let mut index = ExactIndex::new(store.dimension());
        let count = store.for_each(&mut |record| index.insert(record.id, &record.embedding))?;
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
                let (hnsw, status) = open_graph(&*store, &index, config.hnsw)?;
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
            writer: Mutex::new(()),
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
            self.store.insert(&fresh, Timestamp::now(), &held)?;
            if !held.is_empty() {
                let mut q = self.quarantined.write();
                q.extend(held.iter().map(|(id, _)| *id));
            }
            {
                let mut index = self.index.write();
                for (id, record) in &fresh {
                    index.insert(*id, &record.embedding);
                }
            }
            if let Some(hnsw) = &self.hnsw {
                let items: Vec<(RecordId, &[f32])> =
                    fresh.iter().map(|(id, r)| (*id, r.embedding.as_slice())).collect();
                // In slices, so that searches get the lock between them during a large stream.
                for slice in items.chunks(GRAPH_SLICE) {
                    hnsw.write().insert_batch(slice);
                }
                let changes = hnsw.write().take_changes();
                self.persist_graph(hnsw, changes);
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
        let quarantined = self.quarantined.read();
        let hidden = if include_quarantined { 0 } else { quarantined.len() };
        // Ask for enough that k remain once quarantined records are dropped.
        let wanted = k + hidden;
        let graph = self
            .hnsw
            .as_ref()
            .filter(|_| index_use == IndexUse::Configured)
            .map(|h| h.read());
        let (hits, candidates, index_name) = match graph.filter(|g| self.graph_answers(g.len())) {
            Some(graph) => {
                let (hits, compared) = graph.search_counted(probe, wanted, min_score);
                (hits, compared, graph.name())
            }
            None => {
                let index = self.index.read();
                (index.search(probe, wanted, min_score), index.len(), index.name())
            }
        };
        let (hits, candidates) = if hidden == 0 {
            (hits, candidates)
        } else {
            let mut hits = hits;
            hits.retain(|h| !quarantined.contains(&h.id));
            hits.truncate(k);
            (hits, candidates.saturating_sub(hidden))
        };
        drop(quarantined);
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

    /// All of the storage (records, request rows, log), for a workflow that writes to several.
    pub fn store(&self) -> &dyn Storage {
        &*self.store
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

/// Records waiting to be linked into the graph, with copies of their vectors: allocated once at
/// full size (a growing `Vec` would free copies without zeroing them), zeroed after each link
/// and on drop.
struct LinkBatch {
    dimension: usize,
    ids: Vec<RecordId>,
    vectors: Zeroizing<Vec<f32>>,
}

impl LinkBatch {
    const RECORDS: usize = 1 << 16;

    /// A batch for linking `records` records in all.
    fn new(dimension: usize, records: usize) -> Self {
        let capacity = records.min(Self::RECORDS);
        LinkBatch {
            dimension,
            ids: Vec::with_capacity(capacity),
            vectors: Zeroizing::new(Vec::with_capacity(capacity * dimension)),
        }
    }

    /// Adds a record; returns whether the batch is full.
    fn push(&mut self, id: RecordId, values: &[f32]) -> bool {
        self.ids.push(id);
        self.vectors.extend_from_slice(values);
        self.ids.len() >= Self::RECORDS
    }

    /// Links the batch on all cores and empties it.
    fn link(&mut self, graph: &mut HnswIndex) {
        let items: Vec<(RecordId, &[f32])> =
            self.ids.iter().copied().zip(self.vectors.chunks_exact(self.dimension)).collect();
        graph.insert_batch(&items);
        self.ids.clear();
        self.vectors.zeroize();
    }
}

/// Loads the stored graph and reconciles it with the records in `exact` (links what it lacks,
/// unlinks what the store no longer has), or builds it on all cores when there is none or it
/// cannot be used; then persists what changed.
fn open_graph(store: &dyn Storage, exact: &ExactIndex, params: HnswParams) -> Result<(HnswIndex, GraphStatus), Error> {
    let started = Instant::now();
    let dimension = store.dimension();
    let loaded = match store.load_graph()? {
        None => None,
        Some(stored) => {
            match HnswIndex::from_stored(
                dimension,
                params,
                &stored.meta,
                stored.nodes.iter().map(|(s, r)| (*s, &r[..])),
            ) {
                Ok(graph) => Some(graph),
                Err(e) => {
                    warn!(error = %e, "stored graph not used");
                    store.clear_graph()?;
                    None
                }
            }
        }
    };
    let mut status = GraphStatus { loaded: loaded.is_some(), ..Default::default() };
    let mut graph = match loaded {
        Some(g) => g,
        None => HnswIndex::new(dimension, params)?,
    };
    let mut missing: HashSet<RecordId> = HashSet::new();
    exact.for_each_vector(|id, values| {
        if !graph.set_vector(id, values) {
            missing.insert(id);
        }
    });
    let gone: Vec<RecordId> = graph.ids().filter(|id| !exact.contains(*id)).collect();
    for id in &gone {
        graph.remove(*id);
    }
    // Linked in slices, so that a full build never holds a second copy of every vector.
    if !missing.is_empty() {
        let mut batch = LinkBatch::new(dimension, missing.len());
        exact.for_each_vector(|id, values| {
            if missing.contains(&id) && batch.push(id, values) {
                batch.link(&mut graph);
            }
        });
        batch.link(&mut graph);
    }
    status.linked = missing.len();
    status.dropped = gone.len();
    let changes = graph.take_changes();
    if !status.loaded || !changes.is_empty() {
        store.write_graph(&changes.upserts, &changes.removed, &changes.meta)?;
    }
    info!(
        loaded = status.loaded,
        linked = status.linked,
        dropped = status.dropped,
        nodes = graph.len(),
        ms = started.elapsed().as_millis() as u64,
        "search graph ready"
    );
    Ok((graph, status))
}

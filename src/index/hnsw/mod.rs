//! HNSW (hierarchical navigable small world) over unit vectors, with inner product as the
//! similarity, and **real deletion**.
//!
//! Written here rather than taken from a crate because an erasure service must remove a vector
//! for real: the usual libraries (hnswlib, faiss, the Rust HNSW crates) mark a node deleted and
//! keep its bytes and its edges. Here `remove` unlinks the node from every layer, reconnects
//! each node that pointed to it from the union of its own and the deleted node's neighbours
//! (FreshDiskANN-style consolidation, pruned with the HNSW heuristic), hands the entry point
//! to another node if needed, overwrites the vector's slot with zeros and reuses the slot.
//! To find every node that points to a deleted one without scanning the graph, each node keeps
//! its in-edges.
//!
//! Concurrency: neighbour lists are arrays of atomics, so searches read them without locks;
//! writers of one list take that node's mutex (as hnswlib does). Vectors are written before a
//! node is linked and do not change while it is, so `link` runs on many threads at once during
//! a batch build (`insert_batch`, rayon). Growth, removal and the batch set-up take `&mut self`.
//!
//! This module holds the index type, its parameters and its public face; the rest is split by
//! role, one concept a file:
//! - `slots`: everything per slot (node, lists, in-edges, writer mutex, vector, codes), grown
//!   in one place;
//! - `codes`: the int8 codes searches walk the graph with;
//! - `graph`: neighbour lists kept in step with in-edges, the neighbour heuristic, the entry
//!   point;
//! - `search`: the best-first walk (on codes for queries, on f32 for building) and rescoring;
//! - `build`: level draws, linking one node, the parallel batch build;
//! - `removal`: unlinking, repair, adoption of orphans, entry point re-election, zeroing;
//! - `codec`: the encoded graph rows the engine persists (ids, levels, neighbour slots; never
//!   vectors) and loading them back.
mod build;
mod codec;
mod codes;
mod graph;
mod removal;
mod search;
mod slots;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, sync::atomic::AtomicU64};

use parking_lot::Mutex;

pub use codec::GraphChanges;

use super::{Hit, Index};
use crate::{embedding::Embedding, kernel, record::RecordId};
use build::LevelDraw;
use search::Scratch;
use slots::Slots;

/// No node (an empty graph's entry point, an unused place in a list).
const NONE: u32 = u32::MAX;
/// Levels above this are never drawn (a level-16 node is 16^16 times rarer than level 0).
const MAX_LEVEL: usize = 16;

/// The graph's shape and search effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Neighbours per node on the upper layers (twice this on layer 0).
    pub m: usize,
    /// Candidates considered when linking a new node.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least `k`). The default, 512, is what match recall
    /// 0.99 takes on 100,000 synthetic face templates: beyond a person's own records every
    /// score is impostor noise, so the walk has little gradient to follow.
    pub ef_search: usize,
    /// Seed of the level draws, so a sequential build is reproducible.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 16, ef_construction: 200, ef_search: 512, seed: 0x0b11 }
    }
}

/// Errors of this index: parameters out of range, or a stored graph that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HnswError {
    #[error("HNSW m is {0}; use 2 to 100")]
    InvalidM(usize),
    #[error("HNSW ef_construction is {0}; use m to 10000")]
    InvalidEfConstruction(usize),
    #[error("HNSW ef_search is {0}; use 1 to 10000")]
    InvalidEfSearch(usize),
    #[error("the stored graph was built with {0}; it will be rebuilt")]
    Mismatch(String),
    #[error("the stored graph is corrupt ({0}); it will be rebuilt")]
    Corrupt(String),
}

impl HnswParams {
    pub fn check(&self) -> Result<(), HnswError> {
        if !(2..=100).contains(&self.m) {
            return Err(HnswError::InvalidM(self.m));
        }
        if !(self.m..=10_000).contains(&self.ef_construction) {
            return Err(HnswError::InvalidEfConstruction(self.ef_construction));
        }
        if !(1..=10_000).contains(&self.ef_search) {
            return Err(HnswError::InvalidEfSearch(self.ef_search));
        }
        Ok(())
    }
}

/// Inner-product HNSW with real deletion. See the module documentation.
pub struct HnswIndex {
    params: HnswParams,
    dimension: usize,
    dot: kernel::DotFn,
    dot_i8: kernel::DotI8Fn,
    /// Every slot's node, lists, vector and codes.
    slots: Slots,
    /// Slots changed since the last `take_changes`, each once (guarded by its node's flag).
    dirty: Mutex<Vec<u32>>,
    /// `level << 32 | slot`; slot `NONE` when empty.
    entry: AtomicU64,
    /// Held while inserting a node that raises the top level.
    entry_lock: Mutex<()>,
    positions: HashMap<RecordId, u32>,
    free: Vec<u32>,
    levels: LevelDraw,
    scratch: Mutex<Vec<Scratch>>,
}

impl HnswIndex {
    pub fn new(dimension: usize, params: HnswParams) -> Result<Self, HnswError> {
        params.check()?;
        Ok(HnswIndex {
            params,
            dimension,
            dot: kernel::select(),
            dot_i8: kernel::select_i8(),
            slots: Slots::new(dimension, params.m),
            dirty: Mutex::new(Vec::new()),
            entry: AtomicU64::new(graph::pack(NONE, 0)),
            entry_lock: Mutex::new(()),
            positions: HashMap::new(),
            free: Vec::new(),
            levels: LevelDraw::new(&params),
            scratch: Mutex::new(Vec::new()),
        })
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Changes the search effort (the graph does not depend on it).
    pub fn set_ef_search(&mut self, ef: usize) -> Result<(), HnswError> {
        HnswParams { ef_search: ef, ..self.params }.check()?;
        self.params.ef_search = ef;
        Ok(())
    }

    /// Whether `id` is indexed.
    pub fn contains(&self, id: RecordId) -> bool {
        self.positions.contains_key(&id)
    }

    /// The slot (graph row) of `id`, if indexed.
    pub fn slot(&self, id: RecordId) -> Option<u32> {
        self.positions.get(&id).copied()
    }

    /// Every indexed id.
    pub fn ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.positions.keys().copied()
    }

    /// Bytes held per indexed vector (vectors, edges, in-edges, bookkeeping), for reports.
    pub fn memory_bytes(&self) -> usize {
        self.slots.memory_bytes() + self.positions.capacity() * 24
    }

    /// The vectors' memory, spare rows included (tests scan it for erased templates).
    #[doc(hidden)]
    pub fn vector_memory(&self) -> &[u8] {
        self.slots.vector_memory()
    }

    /// The int8 codes' memory, spare rows included (tests scan it for erased templates).
    #[doc(hidden)]
    pub fn code_memory(&self) -> Vec<u8> {
        self.slots.code_memory().iter().map(|&c| c as u8).collect()
    }
}

impl Index for HnswIndex {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn len(&self) -> usize {
        self.positions.len()
    }

    fn insert(&mut self, id: RecordId, embedding: &Embedding) {
        assert_eq!(embedding.dimension(), self.dimension, "embedding dimension is the index's");
        self.insert_one(id, embedding.as_slice());
    }

    fn remove(&mut self, id: RecordId) -> bool {
        self.remove_node(id)
    }

    fn search(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> Vec<Hit> {
        self.search_counted(probe, k, min_score).0
    }

    fn search_counted(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> (Vec<Hit>, usize) {
        self.query(probe, k, min_score)
    }
}

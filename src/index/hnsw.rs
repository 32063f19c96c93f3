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
//! its in-edges (`inbound`).
//!
//! Concurrency: neighbour lists are arrays of atomics, so searches read them without locks;
//! writers of one list take that node's mutex (as hnswlib does). Vectors are written before a
//! node is linked and do not change while it is, so `link` runs on many threads at once during
//! a batch build (`insert_batch`, rayon). Growth, removal and the batch set-up take `&mut self`.
//!
//! Persistence: the graph (ids, levels, neighbour lists, entry point; never vectors) changes
//! node by node; `take_changes` hands the encoded rows of the nodes changed since the last call
//! to the engine, which stores them; `from_stored` loads them back and the engine refills the
//! vectors from the encrypted store.
use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, HashMap},
    sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64,
        Ordering::{Acquire, Relaxed, Release},
    },
};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use zeroize::Zeroize;

use super::{Hit, Index, kernel, matrix::Matrix};
use crate::{embedding::Embedding, record::RecordId};

/// No node (an empty graph's entry point).
const NONE: u32 = u32::MAX;
/// Levels above this are never drawn (a level-16 node is 16^16 times rarer than level 0).
const MAX_LEVEL: usize = 16;
/// Cache lines of a row prefetched ahead of scoring it; the hardware prefetcher follows on.
const PREFETCH_LINES: usize = 4;
/// Candidates rescored in f32 after an int8 walk: at least this many, or 4k.
const RESCORE_MIN: usize = 64;

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

    fn m0(&self) -> usize {
        2 * self.m
    }
}

/// A candidate: a slot and its similarity to the current query. Ordered by score, then by the
/// lower slot, so every heap and sort is deterministic.
#[derive(Clone, Copy, Debug)]
struct Scored {
    score: f32,
    slot: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.slot.cmp(&self.slot))
    }
}

#[derive(Clone, Copy)]
struct Node {
    /// `None`: a free slot (its vector is zero and it has no edges).
    id: Option<RecordId>,
    level: u8,
}

/// Per-search working memory: a visited set by generation stamps, and the two heaps.
struct Scratch {
    visited: Vec<u16>,
    generation: u16,
    candidates: BinaryHeap<Scored>,
    results: BinaryHeap<Reverse<Scored>>,
    batch: Vec<u32>,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            visited: Vec::new(),
            generation: 0,
            candidates: BinaryHeap::new(),
            results: BinaryHeap::new(),
            batch: Vec::new(),
        }
    }

    fn reset(&mut self, slots: usize) {
        if self.visited.len() < slots {
            self.visited.resize(slots, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.visited.fill(0);
            self.generation = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }
}

/// Encoded graph rows changed since the last [`HnswIndex::take_changes`]: what the store
/// writes. Rows hold ids, levels and neighbour slots, never vectors.
#[derive(Debug, Default, Clone)]
pub struct GraphChanges {
    /// Slot → encoded node (id, level, neighbours per layer).
    pub upserts: Vec<(u32, Vec<u8>)>,
    /// Slots that became free.
    pub removed: Vec<u32>,
    /// Encoded parameters and entry point; always written.
    pub meta: Vec<u8>,
}

impl GraphChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// Inner-product HNSW with real deletion. See the module documentation.
/// How a walk of the graph scores a slot against its query.
trait Scorer {
    fn score(&self, slot: u32) -> f32;
    fn prefetch(&self, slot: u32);
}

/// f32 scores: building the graph, repairing it.
struct Exact<'a> {
    index: &'a HnswIndex,
    q: &'a [f32],
}

impl Scorer for Exact<'_> {
    #[inline]
    fn score(&self, slot: u32) -> f32 {
        self.index.score(self.q, slot)
    }

    #[inline]
    fn prefetch(&self, slot: u32) {
        kernel::prefetch(self.index.row(slot).as_ptr(), PREFETCH_LINES);
    }
}

/// int8 scores (a quarter of the bytes per vector read): searching.
struct Quantized<'a> {
    index: &'a HnswIndex,
    q: &'a [i8],
    scale: f32,
}

impl Scorer for Quantized<'_> {
    #[inline]
    fn score(&self, slot: u32) -> f32 {
        let (codes, scale) = self.index.codes.row(slot as usize);
        (self.index.dot_i8)(self.q, codes) as f32 * self.scale * scale
    }

    #[inline]
    fn prefetch(&self, slot: u32) {
        kernel::prefetch(self.index.codes.row(slot as usize).0.as_ptr().cast(), PREFETCH_LINES);
    }
}

/// The vectors scalar-quantised to int8 ([`kernel::quantize`]), `dimension` codes and a scale
/// per slot. Grown by hand and zeroed like the f32 matrix, so no freed buffer keeps a
/// template's codes, and a removed slot's row is zeroed.
struct Codes {
    dimension: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    fn new(dimension: usize) -> Self {
        Codes { dimension, codes: Vec::new(), scales: Vec::new() }
    }

    fn ensure_rows(&mut self, rows: usize) {
        if rows <= self.scales.len() {
            return;
        }
        let rows = rows.max(2 * self.scales.len());
        let mut codes = vec![0i8; rows * self.dimension];
        codes[..self.codes.len()].copy_from_slice(&self.codes);
        self.codes.zeroize();
        self.codes = codes;
        let mut scales = vec![0f32; rows];
        scales[..self.scales.len()].copy_from_slice(&self.scales);
        self.scales.zeroize();
        self.scales = scales;
    }

    #[inline]
    fn row(&self, i: usize) -> (&[i8], f32) {
        (&self.codes[i * self.dimension..(i + 1) * self.dimension], self.scales[i])
    }

    fn set_row(&mut self, i: usize, values: &[f32]) {
        let d = self.dimension;
        self.scales[i] = kernel::quantize(values, &mut self.codes[i * d..(i + 1) * d]);
    }

    fn zero_row(&mut self, i: usize) {
        let d = self.dimension;
        self.codes[i * d..(i + 1) * d].fill(0);
        self.scales[i] = 0.0;
    }
}

impl Drop for Codes {
    fn drop(&mut self) {
        self.codes.zeroize();
        self.scales.zeroize();
    }
}

pub struct HnswIndex {
    params: HnswParams,
    dimension: usize,
    dot: kernel::DotFn,
    dot_i8: kernel::DotI8Fn,
    vectors: Matrix,
    /// The same vectors quantised to int8: what searches walk the graph with.
    codes: Codes,
    nodes: Vec<Node>,
    /// Layer 0: per slot, `[count, neighbour × m0]`.
    links0: Vec<AtomicU32>,
    /// Layers 1..=level: per slot, `level × [count, neighbour × m]`.
    upper: Vec<Box<[AtomicU32]>>,
    /// Serialises writers of one node's lists.
    locks: Vec<Mutex<()>>,
    /// Per slot, the slots whose lists contain it (one entry per layer they link on).
    inbound: Vec<Mutex<Vec<u32>>>,
    dirty: Vec<AtomicBool>,
    dirty_list: Mutex<Vec<u32>>,
    /// `level << 32 | slot`; slot `NONE` when empty.
    entry: AtomicU64,
    /// Held while inserting a node that raises the top level.
    entry_lock: Mutex<()>,
    positions: HashMap<RecordId, u32>,
    free: Vec<u32>,
    rng: ChaCha8Rng,
    level_factor: f64,
    scratch: Mutex<Vec<Scratch>>,
}

fn pack(slot: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(slot)
}

impl HnswIndex {
    pub fn new(dimension: usize, params: HnswParams) -> Result<Self, HnswError> {
        params.check()?;
        Ok(HnswIndex {
            params,
            dimension,
            dot: kernel::select(),
            dot_i8: kernel::select_i8(),
            vectors: Matrix::new(dimension),
            codes: Codes::new(dimension),
            nodes: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            inbound: Vec::new(),
            dirty: Vec::new(),
            dirty_list: Mutex::new(Vec::new()),
            entry: AtomicU64::new(pack(NONE, 0)),
            entry_lock: Mutex::new(()),
            positions: HashMap::new(),
            free: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            level_factor: 1.0 / (params.m as f64).ln(),
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
        let inbound: usize = self.inbound.iter().map(|v| v.lock().capacity() * 4 + 24).sum();
        let upper: usize = self.upper.iter().map(|b| b.len() * 4 + 16).sum();
        self.vectors.bytes().len()
            + self.codes.codes.len()
            + self.codes.scales.len() * 4
            + self.links0.len() * 4
            + upper
            + inbound
            + self.nodes.len() * (std::mem::size_of::<Node>() + 2)
            + self.positions.capacity() * 24
    }

    fn entry(&self) -> (u32, usize) {
        let e = self.entry.load(Acquire);
        (e as u32, (e >> 32) as usize)
    }

    fn set_entry(&self, slot: u32, level: usize) {
        self.entry.store(pack(slot, level), Release);
    }

    #[inline]
    fn row(&self, slot: u32) -> &[f32] {
        self.vectors.row(slot as usize)
    }

    #[inline]
    fn score(&self, q: &[f32], slot: u32) -> f32 {
        (self.dot)(q, self.row(slot))
    }

    /// Writes a slot's vector and its int8 codes.
    fn write_vector(&mut self, slot: u32, values: &[f32]) {
        self.vectors.set_row(slot as usize, values);
        self.codes.set_row(slot as usize, values);
    }

    fn cap(&self, layer: usize) -> usize {
        if layer == 0 { self.params.m0() } else { self.params.m }
    }

    #[inline]
    fn list(&self, slot: u32, layer: usize) -> &[AtomicU32] {
        if layer == 0 {
            let w = 1 + self.params.m0();
            &self.links0[slot as usize * w..(slot as usize + 1) * w]
        } else {
            let w = 1 + self.params.m;
            &self.upper[slot as usize][(layer - 1) * w..layer * w]
        }
    }

    fn read_links(&self, slot: u32, layer: usize) -> Vec<u32> {
        let l = self.list(slot, layer);
        let count = (l[0].load(Acquire) as usize).min(l.len() - 1);
        l[1..=count].iter().map(|a| a.load(Relaxed)).filter(|&n| n != NONE).collect()
    }

    fn mark_dirty(&self, slot: u32) {
        if !self.dirty[slot as usize].swap(true, Relaxed) {
            self.dirty_list.lock().push(slot);
        }
    }

    /// Replaces `slot`'s neighbours on `layer`, keeping in-edges in step. The caller holds
    /// `slot`'s lock (or `&mut self`).
    fn set_links(&self, slot: u32, layer: usize, new: &[u32]) {
        let old = self.read_links(slot, layer);
        for &t in old.iter().filter(|t| !new.contains(t)) {
            let mut inbound = self.inbound[t as usize].lock();
            if let Some(i) = inbound.iter().position(|&s| s == slot) {
                inbound.swap_remove(i);
            }
        }
        for &t in new.iter().filter(|t| !old.contains(t)) {
            self.inbound[t as usize].lock().push(slot);
        }
        let l = self.list(slot, layer);
        for (i, &t) in new.iter().enumerate() {
            l[1 + i].store(t, Relaxed);
        }
        // A reader that loaded the old, longer count reads the tail: `NONE` there, which readers
        // skip, never slot 0 (a real node, maybe of a lower level than this layer).
        for a in &l[1 + new.len()..] {
            a.store(NONE, Relaxed);
        }
        l[0].store(new.len() as u32, Release);
        self.mark_dirty(slot);
    }

    /// Whether some node other than `except` links to `slot` on `layer`.
    fn reachable_on(&self, slot: u32, layer: usize, except: u32) -> bool {
        let sources = self.inbound[slot as usize].lock().clone();
        sources.into_iter().any(|s| {
            s != except && self.nodes[s as usize].level as usize >= layer && self.read_links(s, layer).contains(&slot)
        })
    }

    /// Links `orphan` from the best live node among its own neighbours and the removed node's
    /// (`siblings`) on `layer`: into a free place, or in place of that host's weakest link when the weakest
    /// stays reachable another way.
    fn adopt(&self, orphan: u32, layer: usize, removed: u32, siblings: &[u32]) {
        let row = self.row(orphan);
        let mut hosts: Vec<Scored> = self
            .read_links(orphan, layer)
            .into_iter()
            .chain(siblings.iter().copied())
            .filter(|&h| h != removed && h != orphan && self.nodes[h as usize].id.is_some())
            .map(|h| Scored { score: (self.dot)(row, self.row(h)), slot: h })
            .collect();
        hosts.sort_unstable_by(|a, b| b.cmp(a));
        hosts.dedup_by_key(|h| h.slot);
        for host in &hosts {
            let mut links = self.read_links(host.slot, layer);
            if links.len() < self.cap(layer) {
                links.push(orphan);
                self.set_links(host.slot, layer, &links);
                return;
            }
            let host_row = self.row(host.slot);
            let weakest = links
                .iter()
                .enumerate()
                .map(|(i, &l)| (i, l, (self.dot)(host_row, self.row(l))))
                .min_by(|a, b| a.2.total_cmp(&b.2));
            if let Some((i, w, _)) = weakest
                && self.reachable_on(w, layer, host.slot)
            {
                links[i] = orphan;
                self.set_links(host.slot, layer, &links);
                return;
            }
        }
        // Every host is full of links that would be orphaned in turn: take the best host's
        // weakest link anyway (it keeps its own out-links, so a later search from it still
        // works when it is the entry point's neighbour).
        if let Some(host) = hosts.first() {
            let mut links = self.read_links(host.slot, layer);
            if let Some(last) = links.last_mut() {
                *last = orphan;
                self.set_links(host.slot, layer, &links);
            }
        }
    }

    /// The HNSW neighbour heuristic: walk the candidates best first and keep one only if it is
    /// closer to the base than to every neighbour already kept; at most `m`.
    fn select(&self, candidates: &[Scored], m: usize) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::with_capacity(m);
        for c in candidates {
            if out.len() >= m {
                break;
            }
            let row = self.row(c.slot);
            if out.iter().all(|&s| (self.dot)(row, self.row(s)) <= c.score) {
                out.push(c.slot);
            }
        }
        out
    }

    fn greedy(&self, q: &impl Scorer, mut cur: Scored, layer: usize) -> (Scored, usize) {
        let mut compared = 0;
        loop {
            let mut changed = false;
            for n in self.read_links(cur.slot, layer) {
                let s = q.score(n);
                compared += 1;
                if s > cur.score {
                    cur = Scored { score: s, slot: n };
                    changed = true;
                }
            }
            if !changed {
                return (cur, compared);
            }
        }
    }

    /// Best-first search of one layer from `entry_points`; returns up to `ef` candidates, best
    /// first, and how many vectors were scored.
    fn search_layer(
        &self,
        q: &impl Scorer,
        entry_points: &[Scored],
        ef: usize,
        layer: usize,
        scratch: &mut Scratch,
    ) -> (Vec<Scored>, usize) {
        scratch.reset(self.nodes.len());
        let Scratch { visited, generation, candidates, results, batch } = scratch;
        let generation = *generation;
        let slots = self.nodes.len() as u32;
        for &e in entry_points {
            visited[e.slot as usize] = generation;
            candidates.push(e);
            results.push(Reverse(e));
        }
        while results.len() > ef {
            results.pop();
        }
        let mut worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
        let mut compared = 0;
        while let Some(c) = candidates.pop() {
            if results.len() >= ef && c.score < worst {
                break;
            }
            let l = self.list(c.slot, layer);
            let count = (l[0].load(Acquire) as usize).min(l.len() - 1);
            batch.clear();
            for a in &l[1..=count] {
                let n = a.load(Relaxed);
                if n < slots && visited[n as usize] != generation {
                    visited[n as usize] = generation;
                    batch.push(n);
                    q.prefetch(n);
                }
            }
            for &n in batch.iter() {
                let s = q.score(n);
                compared += 1;
                if results.len() < ef || s > worst {
                    let hit = Scored { score: s, slot: n };
                    candidates.push(hit);
                    results.push(Reverse(hit));
                    if results.len() > ef {
                        results.pop();
                    }
                    worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0.score);
                }
            }
        }
        let mut out: Vec<Scored> = results.drain().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        (out, compared)
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch.lock().pop().unwrap_or_else(Scratch::new)
    }

    fn give_scratch(&self, scratch: Scratch) {
        self.scratch.lock().push(scratch);
    }

    /// Links an allocated slot (vector written, level drawn) into the graph. Safe to run on
    /// several slots at once.
    fn link(&self, slot: u32, scratch: &mut Scratch) {
        let level = self.nodes[slot as usize].level as usize;
        let q = self.row(slot);
        let (mut ep, mut top) = self.entry();
        let mut raises = None;
        if ep == NONE || level > top {
            let guard = self.entry_lock.lock();
            (ep, top) = self.entry();
            if ep == NONE {
                self.set_entry(slot, level);
                return;
            }
            if level > top {
                raises = Some(guard);
            }
        }
        let mut cur = Scored { score: self.score(q, ep), slot: ep };
        let exact = Exact { index: self, q };
        for layer in (level + 1..=top).rev() {
            cur = self.greedy(&exact, cur, layer).0;
        }
        let mut entry_points = vec![cur];
        for layer in (0..=level.min(top)).rev() {
            let (mut found, _) = self.search_layer(&exact, &entry_points, self.params.ef_construction, layer, scratch);
            found.retain(|c| c.slot != slot);
            let selected = self.select(&found, self.params.m);
            {
                let _lock = self.locks[slot as usize].lock();
                self.set_links(slot, layer, &selected);
            }
            for &n in &selected {
                self.add_link(n, slot, layer);
            }
            if !found.is_empty() {
                entry_points = found;
            }
        }
        if raises.is_some() {
            self.set_entry(slot, level);
        }
    }

    /// Adds `new` to `base`'s list on `layer`, pruning with the heuristic when it is full.
    fn add_link(&self, base: u32, new: u32, layer: usize) {
        let _lock = self.locks[base as usize].lock();
        let mut current = self.read_links(base, layer);
        if current.contains(&new) {
            return;
        }
        let cap = self.cap(layer);
        if current.len() < cap {
            current.push(new);
            self.set_links(base, layer, &current);
        } else {
            let row = self.row(base);
            let mut candidates: Vec<Scored> = current
                .iter()
                .chain([&new])
                .map(|&s| Scored { score: (self.dot)(row, self.row(s)), slot: s })
                .collect();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            let kept = self.select(&candidates, cap);
            self.set_links(base, layer, &kept);
        }
    }

    fn draw_level(&mut self) -> usize {
        let u: f64 = self.rng.random();
        ((-(1.0 - u).ln() * self.level_factor) as usize).min(MAX_LEVEL)
    }

    /// Takes a slot (a free one first), writes the vector and draws a level. Not linked yet.
    fn allocate(&mut self, id: RecordId, values: &[f32]) -> u32 {
        let level = self.draw_level();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.nodes.len()).expect("fewer than 2^32 - 1 nodes");
                assert!(s != NONE, "fewer than 2^32 - 1 nodes");
                self.vectors.ensure_rows(self.nodes.len() + 1);
                self.codes.ensure_rows(self.nodes.len() + 1);
                self.nodes.push(Node { id: None, level: 0 });
                self.links0.extend((0..=self.params.m0()).map(|_| AtomicU32::new(0)));
                self.upper.push(Box::new([]));
                self.locks.push(Mutex::new(()));
                self.inbound.push(Mutex::new(Vec::new()));
                self.dirty.push(AtomicBool::new(false));
                s
            }
        };
        self.write_vector(slot, values);
        self.nodes[slot as usize] = Node { id: Some(id), level: level as u8 };
        self.upper[slot as usize] = (0..level * (1 + self.params.m)).map(|_| AtomicU32::new(0)).collect();
        self.positions.insert(id, slot);
        self.mark_dirty(slot);
        slot
    }

    /// Inserts many records, linking them on all cores. Ids already present are replaced.
    /// The vectors are unit vectors of the index's dimension (an [`Embedding`]'s values, or
    /// rows of another index).
    pub fn insert_batch(&mut self, items: &[(RecordId, &[f32])]) {
        for (id, values) in items {
            assert_eq!(values.len(), self.dimension, "vector dimension is the index's");
            if self.positions.contains_key(id) {
                self.remove(*id);
            }
        }
        // Room for the whole batch at once: growing row by row would double past it.
        self.vectors.ensure_rows(self.nodes.len() + items.len().saturating_sub(self.free.len()));
        self.codes.ensure_rows(self.nodes.len() + items.len().saturating_sub(self.free.len()));
        let mut slots = Vec::with_capacity(items.len());
        for (id, values) in items {
            // A duplicate id within `items`: the last one wins.
            if let Some(&slot) = self.positions.get(id) {
                self.write_vector(slot, values);
                continue;
            }
            slots.push(self.allocate(*id, values));
        }
        let this = &*self;
        let mut rest = &slots[..];
        // Link one node first, then the rest in parallel (they all need an entry point).
        if let Some((&first, tail)) = slots.split_first()
            && this.entry().0 == NONE
        {
            let mut scratch = this.take_scratch();
            this.link(first, &mut scratch);
            this.give_scratch(scratch);
            rest = tail;
        }
        if rest.len() < 64 {
            let mut scratch = this.take_scratch();
            for &slot in rest {
                this.link(slot, &mut scratch);
            }
            this.give_scratch(scratch);
        } else {
            rest.par_iter().with_min_len(32).for_each_init(Scratch::new, |scratch, &slot| this.link(slot, scratch));
        }
    }

    /// Searches, returning the hits and how many vectors were scored.
    pub fn search_counted(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> (Vec<Hit>, usize) {
        let (ep, top) = self.entry();
        if ep == NONE || k == 0 {
            return (Vec::new(), 0);
        }
        let mut query = vec![0f32; self.vectors.width()];
        query[..self.dimension].copy_from_slice(probe.as_slice());
        let mut codes = vec![0i8; self.dimension];
        let scale = kernel::quantize(probe.as_slice(), &mut codes);
        let walk = Quantized { index: self, q: &codes, scale };
        let mut scratch = self.take_scratch();
        let mut cur = Scored { score: walk.score(ep), slot: ep };
        let mut compared = 1;
        for layer in (1..=top).rev() {
            let (next, n) = self.greedy(&walk, cur, layer);
            cur = next;
            compared += n;
        }
        let (found, n) = self.search_layer(&walk, &[cur], self.params.ef_search.max(k), 0, &mut scratch);
        compared += n;
        self.give_scratch(scratch);
        codes.zeroize();
        // The walk ranked by int8 scores; the best candidates are rescored in f32, so a hit's
        // score is exact and the quantisation error (about 1e-3) cannot reorder the top.
        let min = min_score.unwrap_or(f32::NEG_INFINITY);
        let rescored = found.len().min((4 * k).max(RESCORE_MIN));
        compared += rescored;
        let mut hits: Vec<Hit> = found[..rescored]
            .iter()
            .map(|c| Scored { score: self.score(&query, c.slot), slot: c.slot })
            .filter(|c| c.score >= min)
            .filter_map(|c| self.nodes[c.slot as usize].id.map(|id| Hit { id, score: c.score }))
            .collect();
        query.zeroize();
        hits.sort_by(|a, b| a.rank(b));
        hits.truncate(k);
        (hits, compared)
    }

    /// The encoded rows changed since the last call, and the current metadata.
    pub fn take_changes(&mut self) -> GraphChanges {
        let slots = std::mem::take(self.dirty_list.get_mut());
        let mut changes = GraphChanges { meta: self.encode_meta(), ..Default::default() };
        for slot in slots {
            self.dirty[slot as usize].store(false, Relaxed);
            match self.nodes[slot as usize].id {
                Some(_) => changes.upserts.push((slot, self.encode_node(slot))),
                None => changes.removed.push(slot),
            }
        }
        changes
    }

    /// Marks `changes` as not yet written (their write failed): the next `take_changes`
    /// includes them again, with the slots' current contents.
    pub fn restore_changes(&mut self, changes: &GraphChanges) {
        for &slot in changes.upserts.iter().map(|(s, _)| s).chain(&changes.removed) {
            if (slot as usize) < self.nodes.len() {
                self.mark_dirty(slot);
            }
        }
    }

    fn encode_meta(&self) -> Vec<u8> {
        let (slot, level) = self.entry();
        let mut out = vec![1u8];
        for v in [self.params.m as u32, self.params.ef_construction as u32, self.dimension as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        out.extend_from_slice(&slot.to_le_bytes());
        out.push(level as u8);
        out
    }

    fn encode_node(&self, slot: u32) -> Vec<u8> {
        let node = self.nodes[slot as usize];
        let id = node.id.expect("only live nodes are encoded");
        let mut out = Vec::with_capacity(17 + (node.level as usize + 2) * 2 + self.params.m0() * 4);
        out.extend_from_slice(id.as_bytes());
        out.push(node.level);
        for layer in 0..=node.level as usize {
            let links = self.read_links(slot, layer);
            out.extend_from_slice(&(links.len() as u16).to_le_bytes());
            for l in links {
                out.extend_from_slice(&l.to_le_bytes());
            }
        }
        out
    }

    /// Rebuilds the graph from stored rows (vectors all zero: fill them with `set_vector`,
    /// then remove the ids the store no longer has).
    pub fn from_stored<'a>(
        dimension: usize,
        params: HnswParams,
        meta: &[u8],
        rows: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Self, HnswError> {
        let corrupt = |what: &str| HnswError::Corrupt(what.to_string());
        let mut index = HnswIndex::new(dimension, params)?;
        let u32_at = |b: &[u8], at: usize| -> Result<u32, HnswError> {
            b.get(at..at + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes"))).ok_or(corrupt("short row"))
        };
        if meta.len() != 22 || meta[0] != 1 {
            return Err(corrupt("metadata"));
        }
        let (m, ef_c, dim) = (u32_at(meta, 1)? as usize, u32_at(meta, 5)? as usize, u32_at(meta, 9)? as usize);
        if m != params.m || ef_c != params.ef_construction || dim != dimension {
            return Err(HnswError::Mismatch(format!("m {m}, ef_construction {ef_c}, dimension {dim}")));
        }
        let slots = u32_at(meta, 13)? as usize;
        let (entry_slot, entry_level) = (u32_at(meta, 17)?, meta[21] as usize);
        if slots >= NONE as usize {
            return Err(corrupt("slot count"));
        }
        index.vectors.ensure_rows(slots);
        index.codes.ensure_rows(slots);
        index.nodes = vec![Node { id: None, level: 0 }; slots];
        index.links0 = (0..slots * (1 + params.m0())).map(|_| AtomicU32::new(0)).collect();
        index.upper = (0..slots).map(|_| Box::default()).collect();
        index.locks = (0..slots).map(|_| Mutex::new(())).collect();
        index.inbound = (0..slots).map(|_| Mutex::new(Vec::new())).collect();
        index.dirty = (0..slots).map(|_| AtomicBool::new(false)).collect();
        let mut lists: Vec<(u32, usize, Vec<u32>)> = Vec::new();
        for (slot, row) in rows {
            let s = slot as usize;
            if s >= slots || index.nodes[s].id.is_some() {
                return Err(corrupt("slot out of range or repeated"));
            }
            let (id, rest) = row.split_first_chunk::<16>().ok_or(corrupt("short row"))?;
            let (&level, mut rest) = rest.split_first().ok_or(corrupt("short row"))?;
            if level as usize > MAX_LEVEL {
                return Err(corrupt("level"));
            }
            for layer in 0..=level as usize {
                let (count, tail) = rest.split_first_chunk::<2>().ok_or(corrupt("short row"))?;
                let count = u16::from_le_bytes(*count) as usize;
                if count > index.cap(layer) || tail.len() < count * 4 {
                    return Err(corrupt("neighbour count"));
                }
                let links: Vec<u32> = tail[..count * 4]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                lists.push((slot, layer, links));
                rest = &tail[count * 4..];
            }
            if !rest.is_empty() {
                return Err(corrupt("trailing bytes"));
            }
            let id = RecordId::from_bytes(*id);
            if index.positions.insert(id, slot).is_some() {
                return Err(corrupt("repeated id"));
            }
            index.nodes[s] = Node { id: Some(id), level };
            index.upper[s] = (0..level as usize * (1 + params.m)).map(|_| AtomicU32::new(0)).collect();
        }
        for (slot, layer, links) in lists {
            for &t in &links {
                let target = index.nodes.get(t as usize).ok_or(corrupt("neighbour out of range"))?;
                if target.id.is_none() || (target.level as usize) < layer || t == slot {
                    return Err(corrupt("edge to a missing node"));
                }
                index.inbound[t as usize].get_mut().push(slot);
            }
            let l = index.list(slot, layer);
            for (i, &t) in links.iter().enumerate() {
                l[1 + i].store(t, Relaxed);
            }
            l[0].store(links.len() as u32, Relaxed);
        }
        if index.positions.is_empty() {
            if entry_slot != NONE {
                return Err(corrupt("entry point of an empty graph"));
            }
        } else {
            let node = index.nodes.get(entry_slot as usize).ok_or(corrupt("entry point"))?;
            if node.id.is_none() || node.level as usize != entry_level {
                return Err(corrupt("entry point"));
            }
            index.set_entry(entry_slot, entry_level);
        }
        index.free = (0..slots as u32).rev().filter(|&s| index.nodes[s as usize].id.is_none()).collect();
        // Later level draws must not repeat the ones that built this graph.
        index.rng = ChaCha8Rng::seed_from_u64(params.seed ^ (slots as u64).rotate_left(32));
        index.dirty_list.get_mut().clear();
        Ok(index)
    }

    /// Puts `id`'s vector back after `from_stored`. False if the graph does not hold `id`.
    pub fn set_vector(&mut self, id: RecordId, values: &[f32]) -> bool {
        assert_eq!(values.len(), self.dimension, "vector dimension is the index's");
        match self.positions.get(&id) {
            Some(&slot) => {
                self.write_vector(slot, values);
                true
            }
            None => false,
        }
    }

    /// Re-elects the entry point: the lowest slot among the highest-level live nodes.
    fn elect_entry(&self) {
        let best = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.id.is_some())
            .max_by(|(i, a), (j, b)| a.level.cmp(&b.level).then_with(|| j.cmp(i)));
        match best {
            Some((slot, node)) => self.set_entry(slot as u32, node.level as usize),
            None => self.set_entry(NONE, 0),
        }
    }

    /// The vectors' memory, spare rows included (tests scan it for erased templates).
    #[doc(hidden)]
    pub fn vector_memory(&self) -> &[u8] {
        self.vectors.bytes()
    }

    /// The int8 codes' memory, spare rows included (tests scan it for erased templates).
    #[doc(hidden)]
    pub fn code_memory(&self) -> Vec<u8> {
        self.codes.codes.iter().map(|&c| c as u8).collect()
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
        if self.positions.contains_key(&id) {
            self.remove(id);
        }
        let slot = self.allocate(id, embedding.as_slice());
        let mut scratch = self.take_scratch();
        self.link(slot, &mut scratch);
        self.give_scratch(scratch);
    }

    fn remove(&mut self, id: RecordId) -> bool {
        let Some(slot) = self.positions.remove(&id) else {
            return false;
        };
        let level = self.nodes[slot as usize].level as usize;
        let own: Vec<Vec<u32>> = (0..=level).map(|layer| self.read_links(slot, layer)).collect();
        for layer in 0..=level {
            self.set_links(slot, layer, &[]);
        }
        let mut sources = std::mem::take(self.inbound[slot as usize].get_mut());
        sources.sort_unstable();
        sources.dedup();
        // Every node that pointed here: drop the edge and reconnect from the union of its own
        // neighbours and the removed node's, pruned with the heuristic.
        for src in sources {
            let src_level = self.nodes[src as usize].level as usize;
            for (layer, replacement) in own.iter().enumerate().take(src_level.min(level) + 1) {
                let current = self.read_links(src, layer);
                if !current.contains(&slot) {
                    continue;
                }
                let row = self.row(src);
                let mut candidates: Vec<Scored> = current
                    .iter()
                    .chain(replacement)
                    .filter(|&&c| c != slot && c != src)
                    .map(|&c| Scored { score: (self.dot)(row, self.row(c)), slot: c })
                    .collect();
                candidates.sort_unstable_by(|a, b| b.cmp(a));
                candidates.dedup_by_key(|c| c.slot);
                let cap = self.cap(layer);
                let mut kept = self.select(&candidates, cap);
                // The heuristic alone can cut the removed node's neighbourhood off from the
                // rest (its out-neighbours reachable only through it): fill the free places
                // with the closest candidates it dropped.
                for c in &candidates {
                    if kept.len() >= cap {
                        break;
                    }
                    if !kept.contains(&c.slot) {
                        kept.push(c.slot);
                    }
                }
                self.set_links(src, layer, &kept);
            }
        }
        self.inbound[slot as usize].get_mut().clear();
        // The heuristic may have dropped the last edge into one of the removed node's
        // neighbours: give each such orphan an edge from its best-scoring live neighbour, so
        // no node becomes unreachable.
        for (layer, neighbours) in own.iter().enumerate() {
            for &orphan in neighbours {
                if orphan != slot && self.nodes[orphan as usize].id.is_some() && !self.reachable_on(orphan, layer, slot)
                {
                    self.adopt(orphan, layer, slot, neighbours);
                }
            }
        }
        self.vectors.zero_row(slot as usize);
        self.codes.zero_row(slot as usize);
        self.nodes[slot as usize] = Node { id: None, level: 0 };
        self.upper[slot as usize] = Box::new([]);
        self.free.push(slot);
        self.mark_dirty(slot);
        if self.entry().0 == slot {
            self.elect_entry();
        }
        true
    }

    fn search(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> Vec<Hit> {
        self.search_counted(probe, k, min_score).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ExactIndex;

    fn random_unit(rng: &mut ChaCha8Rng, d: usize) -> Embedding {
        let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
        Embedding::new(v, d).expect("non-zero vector")
    }

    fn small(m: usize) -> HnswParams {
        HnswParams { m, ef_construction: 64, ef_search: 64, seed: 7 }
    }

    /// Every edge points to a live node on a layer it has, and in-edges mirror out-edges.
    fn check_graph(index: &HnswIndex) {
        let mut expected_inbound = vec![Vec::new(); index.nodes.len()];
        for (slot, node) in index.nodes.iter().enumerate() {
            if node.id.is_none() {
                assert!(index.read_links(slot as u32, 0).is_empty(), "free slot {slot} has edges");
                continue;
            }
            for layer in 0..=node.level as usize {
                for t in index.read_links(slot as u32, layer) {
                    let target = index.nodes[t as usize];
                    assert!(target.id.is_some() && target.level as usize >= layer, "edge {slot}->{t} on {layer}");
                    expected_inbound[t as usize].push(slot as u32);
                }
            }
        }
        for (slot, mut expected) in expected_inbound.into_iter().enumerate() {
            let mut got = index.inbound[slot].lock().clone();
            got.sort_unstable();
            expected.sort_unstable();
            assert_eq!(got, expected, "in-edges of {slot}");
        }
        let (ep, level) = index.entry();
        if index.positions.is_empty() {
            assert_eq!(ep, NONE);
        } else {
            assert_eq!(index.nodes[ep as usize].level as usize, level);
            let top = index.nodes.iter().filter(|n| n.id.is_some()).map(|n| n.level).max().unwrap();
            assert_eq!(level, top as usize);
        }
    }

    #[test]
    fn finds_what_exact_finds_on_random_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut hnsw = HnswIndex::new(32, small(8)).unwrap();
        let mut exact = ExactIndex::new(32);
        let items: Vec<(RecordId, Embedding)> =
            (0..2000).map(|_| (RecordId::random(), random_unit(&mut rng, 32))).collect();
        let refs: Vec<(RecordId, &[f32])> = items.iter().map(|(id, e)| (*id, e.as_slice())).collect();
        hnsw.insert_batch(&refs);
        for (id, e) in &items {
            exact.insert(*id, e);
        }
        check_graph(&hnsw);
        let mut found = 0;
        for _ in 0..100 {
            let q = random_unit(&mut rng, 32);
            let truth = exact.search(&q, 1, None)[0].id;
            found += usize::from(hnsw.search(&q, 10, None).iter().any(|h| h.id == truth));
        }
        assert!(found >= 95, "nearest neighbour found for {found} of 100 queries");
    }

    #[test]
    fn removal_unlinks_repairs_and_zeroes() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut index = HnswIndex::new(16, small(4)).unwrap();
        let items: Vec<(RecordId, Embedding)> =
            (0..400).map(|_| (RecordId::random(), random_unit(&mut rng, 16))).collect();
        for (id, e) in &items {
            index.insert(*id, e);
        }
        check_graph(&index);
        let (entry_slot, _) = index.entry();
        let entry_id = index.nodes[entry_slot as usize].id.unwrap();
        assert!(index.remove(entry_id), "the entry point can be removed");
        for (id, _) in items.iter().step_by(2) {
            index.remove(*id);
        }
        check_graph(&index);
        assert_eq!(index.len(), 400 - 200 - usize::from(items.iter().step_by(2).all(|(id, _)| *id != entry_id)));
        for (id, e) in items.iter().step_by(2) {
            let hits = index.search(e, 50, None);
            assert!(hits.iter().all(|h| h.id != *id && h.id != entry_id), "a removed id was returned");
        }
        // Free slots are reused, and the survivors are still found.
        let slots_before = index.nodes.len();
        for (id, e) in items.iter().step_by(2).take(50) {
            index.insert(*id, e);
        }
        assert_eq!(index.nodes.len(), slots_before, "free slots were reused");
        check_graph(&index);
        let mut found = 0;
        for (id, e) in items.iter().skip(1).step_by(2).take(100) {
            found += usize::from(index.search(e, 1, None).first().map(|h| h.id) == Some(*id));
        }
        assert!(found >= 98, "{found} of 100 survivors find themselves");
        // Remove everything: an empty graph with no entry point and no vector bytes.
        for (id, _) in &items {
            index.remove(*id);
        }
        check_graph(&index);
        assert!(index.is_empty());
        assert!(index.vector_memory().iter().all(|&b| b == 0));
        assert!(index.code_memory().iter().all(|&b| b == 0));
        assert!(index.search(&items[0].1, 5, None).is_empty());
    }

    #[test]
    fn stored_graph_round_trips() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut index = HnswIndex::new(16, small(6)).unwrap();
        let items: Vec<(RecordId, Embedding)> =
            (0..300).map(|_| (RecordId::random(), random_unit(&mut rng, 16))).collect();
        for (id, e) in &items {
            index.insert(*id, e);
        }
        let mut stored: HashMap<u32, Vec<u8>> = HashMap::new();
        let apply = |stored: &mut HashMap<u32, Vec<u8>>, c: GraphChanges| {
            for (s, row) in c.upserts {
                stored.insert(s, row);
            }
            for s in c.removed {
                stored.remove(&s);
            }
            c.meta
        };
        apply(&mut stored, index.take_changes());
        for (id, _) in items.iter().take(40) {
            index.remove(*id);
        }
        let meta = apply(&mut stored, index.take_changes());
        let mut loaded =
            HnswIndex::from_stored(16, small(6), &meta, stored.iter().map(|(s, r)| (*s, r.as_slice()))).unwrap();
        for (id, e) in &items {
            loaded.set_vector(*id, e.as_slice());
        }
        check_graph(&loaded);
        assert_eq!(loaded.len(), 260);
        for (_, e) in items.iter().skip(30).take(30) {
            assert_eq!(loaded.search(e, 10, None), index.search(e, 10, None));
        }
        assert!(matches!(
            HnswIndex::from_stored(16, small(5), &meta, stored.iter().map(|(s, r)| (*s, r.as_slice()))),
            Err(HnswError::Mismatch(_))
        ));
        let mut bad = stored.clone();
        let (&slot, _) = bad.iter().next().unwrap();
        bad.get_mut(&slot).unwrap().truncate(20);
        assert!(matches!(
            HnswIndex::from_stored(16, small(6), &meta, bad.iter().map(|(s, r)| (*s, r.as_slice()))),
            Err(HnswError::Corrupt(_))
        ));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(HnswIndex::new(4, HnswParams { m: 1, ..Default::default() }).is_err());
        assert!(HnswIndex::new(4, HnswParams { ef_construction: 3, ..Default::default() }).is_err());
        assert!(HnswIndex::new(4, HnswParams { ef_search: 0, ..Default::default() }).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(u8, u64),
            Remove(u8),
            Search(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u8..60, any::<u64>()).prop_map(|(i, s)| Op::Insert(i, s)),
                2 => (0u8..60).prop_map(Op::Remove),
                1 => any::<u64>().prop_map(Op::Search),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]
            /// Random inserts, re-inserts and removals: no removed id is ever returned, every
            /// hit is live with its true score, results are ordered and within k, and the graph
            /// stays consistent.
            #[test]
            fn removed_ids_are_never_returned(ops in proptest::collection::vec(op(), 1..150)) {
                let mut index = HnswIndex::new(8, HnswParams { m: 3, ef_construction: 8, ef_search: 8, seed: 1 }).unwrap();
                let mut live: HashMap<RecordId, Embedding> = HashMap::new();
                let id = |i: u8| RecordId::from_bytes([i; 16]);
                for op in ops {
                    match op {
                        Op::Insert(i, seed) => {
                            let e = random_unit(&mut ChaCha8Rng::seed_from_u64(seed), 8);
                            index.insert(id(i), &e);
                            live.insert(id(i), e);
                        }
                        Op::Remove(i) => {
                            prop_assert_eq!(index.remove(id(i)), live.remove(&id(i)).is_some());
                        }
                        Op::Search(seed) => {
                            let q = random_unit(&mut ChaCha8Rng::seed_from_u64(seed), 8);
                            let hits = index.search(&q, 5, None);
                            prop_assert!(hits.len() <= 5);
                            prop_assert!(hits.len() == 5.min(live.len()) || live.len() > 5);
                            for w in hits.windows(2) {
                                prop_assert!(w[0].rank(&w[1]) == Ordering::Less);
                            }
                            for h in &hits {
                                let e = live.get(&h.id);
                                prop_assert!(e.is_some(), "a removed id was returned");
                                prop_assert!((e.unwrap().similarity(&q) - h.score).abs() < 1e-5);
                            }
                        }
                    }
                    prop_assert_eq!(index.len(), live.len());
                }
                check_graph(&index);
                // Every live vector is where it should be; every free slot is zero.
                for (slot, node) in index.nodes.iter().enumerate() {
                    match node.id {
                        Some(id) => prop_assert_eq!(&index.row(slot as u32)[..8], live[&id].as_slice()),
                        None => prop_assert!(index.row(slot as u32).iter().all(|&x| x == 0.0)),
                    }
                }
            }
        }
    }
}

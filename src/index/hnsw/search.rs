//! Walking the graph: greedy descent through the upper layers, best-first search of one layer,
//! and the query path, which walks on int8 codes and rescores the best candidates in f32.
//!
//! The walk is generic over a [`Scorer`], so building (f32 rows, exact) and searching (codes, a
//! quarter of the bytes read per neighbour) share one loop. Working memory is pooled
//! ([`Scratch`]), so a search allocates no visited set.
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::atomic::Ordering::{Acquire, Relaxed},
};

use zeroize::Zeroize;

use super::{HnswIndex, NONE, graph::Scored};
use crate::{embedding::Embedding, index::Hit, kernel};

/// Cache lines of a row prefetched ahead of scoring it; the hardware prefetcher follows on.
const PREFETCH_LINES: usize = 4;
/// Candidates rescored in f32 after an int8 walk: at least this many, or 4k.
const RESCORE_MIN: usize = 64;

/// How a walk of the graph scores a slot against its query.
pub(super) trait Scorer {
    fn score(&self, slot: u32) -> f32;
    fn prefetch(&self, slot: u32);
}

/// f32 scores: building the graph, repairing it.
pub(super) struct Exact<'a> {
    pub(super) index: &'a HnswIndex,
    pub(super) q: &'a [f32],
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
        let (codes, scale) = self.index.slots.codes_row(slot);
        (self.index.dot_i8)(self.q, codes) as f32 * self.scale * scale
    }

    #[inline]
    fn prefetch(&self, slot: u32) {
        kernel::prefetch(self.index.slots.codes_row(slot).0.as_ptr().cast(), PREFETCH_LINES);
    }
}

/// Per-search working memory: a visited set by generation stamps, and the two heaps.
pub(super) struct Scratch {
    visited: Vec<u16>,
    generation: u16,
    candidates: BinaryHeap<Scored>,
    results: BinaryHeap<Reverse<Scored>>,
    batch: Vec<u32>,
}

impl Scratch {
    pub(super) fn new() -> Self {
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

impl HnswIndex {
    pub(super) fn take_scratch(&self) -> Scratch {
        self.scratch.lock().pop().unwrap_or_else(Scratch::new)
    }

    pub(super) fn give_scratch(&self, scratch: Scratch) {
        self.scratch.lock().push(scratch);
    }

    /// Moves to the best neighbour on `layer` until none is better; returns where it stopped
    /// and how many vectors were scored.
    pub(super) fn greedy(&self, q: &impl Scorer, mut cur: Scored, layer: usize) -> (Scored, usize) {
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
    pub(super) fn search_layer(
        &self,
        q: &impl Scorer,
        entry_points: &[Scored],
        ef: usize,
        layer: usize,
        scratch: &mut Scratch,
    ) -> (Vec<Scored>, usize) {
        scratch.reset(self.slots.len());
        let Scratch { visited, generation, candidates, results, batch } = scratch;
        let generation = *generation;
        let slots = self.slots.len() as u32;
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
            let l = self.slots.list(c.slot, layer);
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

    /// Searches, returning the hits and how many vectors were scored.
    pub(super) fn query(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> (Vec<Hit>, usize) {
        let (ep, top) = self.entry();
        if ep == NONE || k == 0 {
            return (Vec::new(), 0);
        }
        let mut query = vec![0f32; self.slots.width()];
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
            .filter_map(|c| self.slots.node(c.slot).id.map(|id| Hit { id, score: c.score }))
            .collect();
        query.zeroize();
        hits.sort_by(|a, b| a.rank(b));
        hits.truncate(k);
        (hits, compared)
    }
}

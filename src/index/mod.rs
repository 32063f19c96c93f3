//! Nearest-neighbour search over unit-length templates, in memory.
//!
//! The index holds the plaintext vectors the search needs and nothing else (ids, no provenance).
//! It is synchronous and does no I/O: the engine rebuilds it from the store at start-up and
//! keeps it in step with every write. Removing a record removes its vector from memory and
//! overwrites the bytes it occupied; no index here keeps a tombstoned copy.
//!
//! Two implementations of one contract, [`Index`]: [`ExactIndex`] (the scan, the ground truth)
//! and [`HnswIndex`] (the graph). One test suite (`contract`) runs against both. The SIMD
//! kernels they score with are [`crate::kernel`], a leaf below this module.
#[cfg(test)]
mod contract;
pub mod exact;
pub mod hnsw;
mod matrix;

use std::{cmp::Ordering, collections::BinaryHeap};

use crate::{embedding::Embedding, record::RecordId};

pub use exact::ExactIndex;
pub use hnsw::{HnswIndex, HnswParams};

/// One search result: a record and its cosine similarity to the probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: RecordId,
    pub score: f32,
}

impl Hit {
    /// Results order: higher score first, then lower id, so equal scores sort the same way on
    /// every run. Scores are never NaN (both sides are finite unit vectors).
    fn rank(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then_with(|| self.id.cmp(&other.id))
    }
}

/// What every index answers, whichever answers a search: `search` returns at most `k` hits,
/// each a record present now with its true similarity and `score >= min_score`, best first
/// (see [`Hit`] for the order); a removed record is never returned. Object safe, so a caller
/// may hold either index as `&dyn Index`; `contract` checks both against this.
pub trait Index: Send + Sync {
    /// A short name for reports ("exact").
    fn name(&self) -> &'static str;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Adds a record; replaces the vector if the id is already present.
    fn insert(&mut self, id: RecordId, embedding: &Embedding);
    /// Removes a record and overwrites its vector's memory. Returns whether it was present.
    fn remove(&mut self, id: RecordId) -> bool;
    fn search(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> Vec<Hit>;
    /// As [`Index::search`], with how many records were compared (a scan compares them all).
    fn search_counted(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> (Vec<Hit>, usize) {
        (self.search(probe, k, min_score), self.len())
    }
}

/// Keeps the `k` best hits seen so far, in O(log k) per offer.
pub struct TopK {
    k: usize,
    min_score: f32,
    // A max-heap under `Worst`, so the root is the worst hit kept.
    heap: BinaryHeap<Worst>,
}

struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank(&other.0)
    }
}

impl TopK {
    pub fn new(k: usize, min_score: Option<f32>) -> Self {
        TopK { k, min_score: min_score.unwrap_or(f32::NEG_INFINITY), heap: BinaryHeap::with_capacity(k + 1) }
    }

    /// The score a new hit must beat to enter (cheap pre-check for the scan loop).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k { self.min_score } else { self.heap.peek().map_or(f32::INFINITY, |w| w.0.score) }
    }

    #[inline]
    pub fn offer(&mut self, id: RecordId, score: f32) {
        if self.k == 0 || score < self.threshold() {
            return;
        }
        let hit = Worst(Hit { id, score });
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit < *worst
        {
            *worst = hit;
        }
    }

    /// Offers every hit `other` kept: the top of two disjoint sets of rows from their tops.
    pub fn absorb(&mut self, other: TopK) {
        for w in other.heap {
            self.offer(w.0.id, w.0.score);
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap.into_sorted_vec().into_iter().map(|w| w.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> RecordId {
        RecordId::from_bytes([n; 16])
    }

    #[test]
    fn top_k_keeps_the_best_in_order_with_ties_by_id() {
        let mut top = TopK::new(3, None);
        for (n, s) in [(5, 0.1), (4, 0.9), (3, 0.5), (2, 0.5), (1, 0.2), (6, 0.5)] {
            top.offer(id(n), s);
        }
        let got: Vec<_> = top.into_sorted().iter().map(|h| (h.id, h.score)).collect();
        assert_eq!(got, vec![(id(4), 0.9), (id(2), 0.5), (id(3), 0.5)]);
    }

    #[test]
    fn top_k_applies_min_score() {
        let mut top = TopK::new(10, Some(0.5));
        for (n, s) in [(1, 0.49), (2, 0.5), (3, 0.7)] {
            top.offer(id(n), s);
        }
        let got: Vec<_> = top.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(got, vec![id(3), id(2)]);
    }
}

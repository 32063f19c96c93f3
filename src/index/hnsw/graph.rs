//! The graph's edges: neighbour lists kept in step with their in-edges, the HNSW neighbour
//! heuristic that prunes them, and the entry point.
//!
//! A list is `[count, neighbour × cap]` atomics. Writers store the neighbours, then `NONE` in
//! the unused tail, then the count (release); readers load the count (acquire) and skip `NONE`,
//! so a reader that loaded a stale, longer count reads `NONE`, never slot 0 (a real node, maybe
//! of a lower level than the layer). The writer of a node's lists holds its mutex, or `&mut`.
use std::{
    cmp::Ordering,
    sync::atomic::Ordering::{Acquire, Relaxed, Release},
};

use super::{HnswIndex, NONE};

/// A candidate: a slot and its similarity to the current query. Ordered by score, then by the
/// lower slot, so every heap and sort is deterministic.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scored {
    pub(super) score: f32,
    pub(super) slot: u32,
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

/// The entry point as one atomic word: `level << 32 | slot`.
pub(super) fn pack(slot: u32, level: usize) -> u64 {
    ((level as u64) << 32) | u64::from(slot)
}

impl HnswIndex {
    /// The entry point's slot (`NONE` when empty) and level.
    pub(super) fn entry(&self) -> (u32, usize) {
        let e = self.entry.load(Acquire);
        (e as u32, (e >> 32) as usize)
    }

    pub(super) fn set_entry(&self, slot: u32, level: usize) {
        self.entry.store(pack(slot, level), Release);
    }

    #[inline]
    pub(super) fn row(&self, slot: u32) -> &[f32] {
        self.slots.row(slot)
    }

    /// The f32 similarity of `q` (a padded row) to `slot`'s vector.
    #[inline]
    pub(super) fn score(&self, q: &[f32], slot: u32) -> f32 {
        (self.dot)(q, self.row(slot))
    }

    /// `slot`'s neighbours on `layer`.
    pub(super) fn read_links(&self, slot: u32, layer: usize) -> Vec<u32> {
        let l = self.slots.list(slot, layer);
        let count = (l[0].load(Acquire) as usize).min(l.len() - 1);
        l[1..=count].iter().map(|a| a.load(Relaxed)).filter(|&n| n != NONE).collect()
    }

    /// Replaces `slot`'s neighbours on `layer`, keeping in-edges in step. The caller holds
    /// `slot`'s lock (or `&mut self`).
    pub(super) fn set_links(&self, slot: u32, layer: usize, new: &[u32]) {
        let old = self.read_links(slot, layer);
        for &t in old.iter().filter(|t| !new.contains(t)) {
            let mut inbound = self.slots.node(t).inbound.lock();
            if let Some(i) = inbound.iter().position(|&s| s == slot) {
                inbound.swap_remove(i);
            }
        }
        for &t in new.iter().filter(|t| !old.contains(t)) {
            self.slots.node(t).inbound.lock().push(slot);
        }
        let l = self.slots.list(slot, layer);
        for (i, &t) in new.iter().enumerate() {
            l[1 + i].store(t, Relaxed);
        }
        for a in &l[1 + new.len()..] {
            a.store(NONE, Relaxed);
        }
        l[0].store(new.len() as u32, Release);
        self.mark_dirty(slot);
    }

    /// The HNSW neighbour heuristic: walk the candidates best first and keep one only if it is
    /// closer to the base than to every neighbour already kept; at most `m`.
    pub(super) fn select(&self, candidates: &[Scored], m: usize) -> Vec<u32> {
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
}

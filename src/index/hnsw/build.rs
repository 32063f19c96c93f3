//! Building the graph: drawing a node's level, linking one node (search for its neighbours on
//! each of its layers, select them with the heuristic, add the reverse edges), and the batch
//! build that links many nodes on all cores (rayon).
//!
//! `link` takes `&self`: a node's vector is written and its level drawn (`allocate`, with
//! `&mut self`) before it is linked, and each list is written under its node's mutex, so any
//! number of nodes link at once. Only a node that raises the top level takes the entry lock.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{
    HnswIndex, HnswParams, MAX_LEVEL, NONE,
    graph::Scored,
    search::{Exact, Scratch},
};
use crate::record::RecordId;

/// The level draws: geometric, `P(level ≥ l) = m^-l`, from a seeded generator so a sequential
/// build is reproducible.
pub(super) struct LevelDraw {
    rng: ChaCha8Rng,
    factor: f64,
}

impl LevelDraw {
    pub(super) fn new(params: &HnswParams) -> Self {
        Self::seeded(params, params.seed)
    }

    /// Draws for a graph loaded with `slots` slots: they must not repeat the ones that built it.
    pub(super) fn after_load(params: &HnswParams, slots: usize) -> Self {
        Self::seeded(params, params.seed ^ (slots as u64).rotate_left(32))
    }

    fn seeded(params: &HnswParams, seed: u64) -> Self {
        LevelDraw { rng: ChaCha8Rng::seed_from_u64(seed), factor: 1.0 / (params.m as f64).ln() }
    }

    fn draw(&mut self) -> usize {
        let u: f64 = self.rng.random();
        ((-(1.0 - u).ln() * self.factor) as usize).min(MAX_LEVEL)
    }
}

impl HnswIndex {
    /// Inserts one record (replacing it if present) and links it.
    pub(super) fn insert_one(&mut self, id: RecordId, values: &[f32]) {
        if self.positions.contains_key(&id) {
            self.remove_node(id);
        }
        let slot = self.allocate(id, values);
        let mut scratch = self.take_scratch();
        self.link(slot, &mut scratch);
        self.give_scratch(scratch);
    }

    /// Takes a slot (a free one first), writes the vector and draws a level. Not linked yet.
    fn allocate(&mut self, id: RecordId, values: &[f32]) -> u32 {
        let level = self.levels.draw();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.slots.len();
                self.slots.grow(s + 1);
                s as u32
            }
        };
        self.slots.write_vector(slot, values);
        self.slots.assign(slot, id, level as u8);
        self.positions.insert(id, slot);
        self.mark_dirty(slot);
        slot
    }

    /// Links an allocated slot (vector written, level drawn) into the graph. Safe to run on
    /// several slots at once.
    fn link(&self, slot: u32, scratch: &mut Scratch) {
        let level = self.slots.node(slot).level as usize;
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
                let _lock = self.slots.node(slot).lock.lock();
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
        let _lock = self.slots.node(base).lock.lock();
        let mut current = self.read_links(base, layer);
        if current.contains(&new) {
            return;
        }
        let cap = self.slots.cap(layer);
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

    /// Inserts many records, linking them on all cores. Ids already present are replaced.
    /// The vectors are unit vectors of the index's dimension (an [`Embedding`]'s values, or
    /// rows of another index).
    ///
    /// [`Embedding`]: crate::embedding::Embedding
    pub fn insert_batch(&mut self, items: &[(RecordId, &[f32])]) {
        for (id, values) in items {
            assert_eq!(values.len(), self.dimension, "vector dimension is the index's");
            if self.positions.contains_key(id) {
                self.remove_node(*id);
            }
        }
        self.slots.reserve(self.slots.len() + items.len().saturating_sub(self.free.len()));
        let mut slots = Vec::with_capacity(items.len());
        for (id, values) in items {
            // A duplicate id within `items`: the last one wins.
            if let Some(&slot) = self.positions.get(id) {
                self.slots.write_vector(slot, values);
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
}

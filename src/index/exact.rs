//! Exact search: one pass over every vector, in a contiguous matrix of 64-byte-aligned panels.
//!
//! The matrix is stored in panels of [`PANEL`] rows, element-major (see [`kernel`]): the layout
//! a matrix-multiplication kernel packs its operand into, kept permanently. One probe streams
//! the panels at memory speed; a batch of probes is scored in blocks whose running sums stay in
//! registers. Removal moves the last row into the hole and zeroes the vacated row, so an erased
//! template leaves no copy in this matrix.
use std::{collections::HashMap, ops::Range};

use rayon::prelude::*;

use zeroize::{Zeroize, Zeroizing};

use super::{Hit, Index, TopK};
use crate::{
    embedding::Embedding,
    kernel::{self, BLOCK_PANELS, BLOCK_PROBES, BLOCK_ROWS, PANEL},
    record::RecordId,
};

/// One element of a panel's sixteen rows, on one cache line: the unit the matrix is allocated in.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([f32; PANEL]);

/// Panels per call of the single-probe kernel: 128 scores between top-k checks. The Zen 4 kernel
/// takes them eight at a time, the others four (see [`kernel::select_panels`]).
const SCAN_PANELS: usize = 8;

/// Exact inner-product search over all enrolled vectors.
pub struct ExactIndex {
    dimension: usize,
    /// `dimension` blocks per panel; the last panel's unused rows are zeros.
    panels: Vec<Block>,
    ids: Vec<RecordId>,
    positions: HashMap<RecordId, usize>,
}

impl ExactIndex {
    pub fn new(dimension: usize) -> Self {
        ExactIndex { dimension, panels: Vec::new(), ids: Vec::new(), positions: HashMap::new() }
    }

    pub fn with_capacity(dimension: usize, records: usize) -> Self {
        let mut index = Self::new(dimension);
        index.panels.reserve(records.div_ceil(PANEL) * dimension);
        index.ids.reserve(records);
        index.positions.reserve(records);
        index
    }

    /// Element `k` of the row at `position` lives at `panels[..][k].0[lane]`.
    fn place(&self, position: usize) -> (usize, usize) {
        (position / PANEL * self.dimension, position % PANEL)
    }

    fn write_row(&mut self, position: usize, values: &[f32]) {
        let (start, lane) = self.place(position);
        for (block, &v) in self.panels[start..start + self.dimension].iter_mut().zip(values) {
            block.0[lane] = v;
        }
    }

    /// Moves row `from` over row `to` element by element, leaving zeros behind (`from == to`:
    /// zeroes it). No copy of the vector passes through a buffer.
    fn move_row(&mut self, from: usize, to: usize) {
        let ((from_start, from_lane), (to_start, to_lane)) = (self.place(from), self.place(to));
        for k in 0..self.dimension {
            let value = std::mem::take(&mut self.panels[from_start + k].0[from_lane]);
            if from != to {
                self.panels[to_start + k].0[to_lane] = value;
            }
        }
    }

    /// Makes room for one more panel. Growing by hand, not by `Vec`'s reallocation, so that the
    /// old buffer is zeroed before it is freed: it holds every template.
    fn grow_for_one_panel(&mut self) {
        let needed = self.panels.len() + self.dimension;
        if needed <= self.panels.capacity() {
            return;
        }
        let mut grown = Vec::with_capacity(needed.max(self.panels.capacity() * 2));
        grown.extend_from_slice(&self.panels);
        as_floats_mut(&mut self.panels).zeroize();
        self.panels = grown;
    }
}

impl ExactIndex {
    /// Whether `id` is indexed.
    pub fn contains(&self, id: RecordId) -> bool {
        self.positions.contains_key(&id)
    }

    /// Calls `f` with every record and its vector, in matrix order: feeds other indexes at
    /// start-up. The vectors pass through one buffer, zeroed at the end.
    pub fn for_each_vector(&self, mut f: impl FnMut(RecordId, &[f32])) {
        let d = self.dimension;
        let mut rows = Zeroizing::new(vec![0f32; PANEL * d]);
        for (p, (ids, panel)) in self.ids.chunks(PANEL).zip(self.panels.chunks(d.max(1))).enumerate() {
            // A panel at a time: each row is a column of it.
            for (k, block) in panel.iter().enumerate() {
                for (lane, &v) in block.0.iter().enumerate() {
                    rows[lane * d + k] = v;
                }
            }
            for (lane, &id) in ids.iter().enumerate() {
                debug_assert_eq!(self.positions.get(&id), Some(&(p * PANEL + lane)));
                f(id, &rows[lane * d..(lane + 1) * d]);
            }
        }
    }

    /// Exact search for several probes in one pass over the matrix: blocks of
    /// [`BLOCK_PROBES`] probes × [`BLOCK_PANELS`] panels, each panel group loaded from memory
    /// once and scored against every probe while it is in cache. `k`: at most this many hits per
    /// probe (`None`: every hit at or above `min_score`). Rights requests use this: they carry
    /// several probes and must find every match. Scores are bit for bit [`Index::search`]'s.
    ///
    /// Several probes over a large matrix are scored on every core of the current rayon pool,
    /// each core over its own range of rows; the answers are the same bit for bit.
    pub fn search_batch(&self, probes: &[Embedding], k: Option<usize>, min_score: Option<f32>) -> Vec<Vec<Hit>> {
        let groups = self.ids.len().div_ceil(BLOCK_ROWS);
        let parts = if probes.len() > 1 { rayon::current_num_threads().min(groups / MIN_GROUPS_PER_PART) } else { 1 };
        self.search_batch_in(probes, k, min_score, parts.max(1))
    }

    /// [`ExactIndex::search_batch`] with the rows split into `parts` ranges scored side by side,
    /// each range's hits kept apart and then merged: the top of the union is the top of the
    /// parts' tops, since hits are ranked by one total order.
    fn search_batch_in(
        &self,
        probes: &[Embedding],
        k: Option<usize>,
        min_score: Option<f32>,
        parts: usize,
    ) -> Vec<Vec<Hit>> {
        let d = self.dimension;
        let k = k.unwrap_or(self.ids.len());
        let packed: Vec<Zeroizing<Vec<f32>>> = probes
            .chunks(BLOCK_PROBES)
            .map(|group| {
                let mut packed = Zeroizing::new(vec![0f32; d * BLOCK_PROBES]);
                let refs: Vec<&[f32]> = group.iter().map(Embedding::as_slice).collect();
                kernel::pack_probes(&refs, d, &mut packed);
                packed
            })
            .collect();
        let groups = self.ids.len().div_ceil(BLOCK_ROWS);
        let scan = |range: Range<usize>| self.scan_groups(&packed, range, probes.len(), k, min_score);
        let tops = if parts <= 1 {
            scan(0..groups)
        } else {
            let per = groups.div_ceil(parts);
            let ranges: Vec<Range<usize>> =
                (0..parts).map(|i| (i * per).min(groups)..((i + 1) * per).min(groups)).collect();
            let mut all: Vec<Vec<TopK>> = ranges.into_par_iter().map(scan).collect();
            let mut first = all.remove(0);
            for other in all {
                for (top, o) in first.iter_mut().zip(other) {
                    top.absorb(o);
                }
            }
            first
        };
        tops.into_iter().map(TopK::into_sorted).collect()
    }

    /// Scores the row groups (of [`BLOCK_ROWS`] rows each) in `groups` against every probe.
    fn scan_groups(
        &self,
        packed: &[Zeroizing<Vec<f32>>],
        groups: Range<usize>,
        probes: usize,
        k: usize,
        min_score: Option<f32>,
    ) -> Vec<TopK> {
        let block = kernel::select_block();
        let mut tops: Vec<TopK> = (0..probes).map(|_| TopK::new(k, min_score)).collect();
        let mut scores = [[0f32; BLOCK_ROWS]; BLOCK_PROBES];
        let group_len = BLOCK_PANELS * self.dimension.max(1);
        let rows = self.panels.chunks(group_len).zip(self.ids.chunks(BLOCK_ROWS));
        for (panels, ids) in rows.skip(groups.start).take(groups.len()) {
            for (packed, tops) in packed.iter().zip(tops.chunks_mut(BLOCK_PROBES)) {
                block(packed, as_floats(panels), &mut scores);
                for (top, scores) in tops.iter_mut().zip(&scores) {
                    offer_run(top, ids, scores);
                }
            }
        }
        tops
    }
}

/// Row groups per core below which a batched scan is not split: about 3,000 rows, a pass of a
/// few hundred microseconds, where waking the other cores would cost more than it saves.
const MIN_GROUPS_PER_PART: usize = 64;

impl Drop for ExactIndex {
    /// The matrix holds every template: overwrite it before the allocator gets it back.
    fn drop(&mut self) {
        as_floats_mut(&mut self.panels).zeroize();
    }
}

/// Offers scored rows to `top` (`scores[i]` is `ids[i]`'s), after one test of whether any can
/// enter: a count rather than a short-circuit, so that it vectorises, and most runs of a scan
/// hold nothing that enters.
#[inline]
fn offer_run(top: &mut TopK, ids: &[RecordId], scores: &[f32]) {
    let scores = &scores[..ids.len()];
    let threshold = top.threshold();
    if scores.iter().map(|&score| u32::from(score >= threshold)).sum::<u32>() == 0 {
        return;
    }
    for (&id, &score) in ids.iter().zip(scores) {
        top.offer(id, score);
    }
}

fn as_floats(blocks: &[Block]) -> &[f32] {
    // SAFETY: Block is repr(C) around [f32; 16] with no padding (64 bytes, align 64).
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<f32>(), blocks.len() * PANEL) }
}

fn as_floats_mut(blocks: &mut [Block]) -> &mut [f32] {
    // SAFETY: as in `as_floats`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<f32>(), blocks.len() * PANEL) }
}

impl Index for ExactIndex {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn insert(&mut self, id: RecordId, embedding: &Embedding) {
        assert_eq!(embedding.dimension(), self.dimension, "embedding dimension is the index's");
        let position = match self.positions.get(&id) {
            Some(&p) => p,
            None => {
                let p = self.ids.len();
                self.ids.push(id);
                self.positions.insert(id, p);
                if p.is_multiple_of(PANEL) {
                    self.grow_for_one_panel();
                    self.panels.extend(std::iter::repeat_n(Block::default(), self.dimension));
                }
                p
            }
        };
        self.write_row(position, embedding.as_slice());
    }

    fn remove(&mut self, id: RecordId) -> bool {
        let Some(position) = self.positions.remove(&id) else {
            return false;
        };
        // The last row moves into the hole, and its old place is left zeroed (or the removed
        // row is zeroed where it is): truncation alone would leave the bytes in the
        // allocation's spare capacity.
        let last = self.ids.len() - 1;
        self.move_row(last, position);
        if position != last {
            let moved = self.ids[last];
            self.ids[position] = moved;
            self.positions.insert(moved, position);
        }
        if last.is_multiple_of(PANEL) {
            self.panels.truncate(last / PANEL * self.dimension);
        }
        self.ids.truncate(last);
        true
    }

    fn search(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> Vec<Hit> {
        let scan = kernel::select_panels();
        let d = self.dimension;
        let mut top = TopK::new(k, min_score);
        let mut scores = [0f32; SCAN_PANELS * PANEL];
        let group_len = SCAN_PANELS * d.max(1);
        for (panels, ids) in self.panels.chunks(group_len).zip(self.ids.chunks(SCAN_PANELS * PANEL)) {
            scan(probe.as_slice(), as_floats(panels), &mut scores);
            offer_run(&mut top, ids, &scores);
        }
        top.into_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(values: &[f32]) -> Embedding {
        Embedding::new(values.to_vec(), values.len()).unwrap()
    }

    fn id(n: u8) -> RecordId {
        RecordId::from_bytes([n; 16])
    }

    #[test]
    fn finds_the_nearest_and_survives_removal() {
        let mut index = ExactIndex::new(3);
        index.insert(id(1), &unit(&[1.0, 0.0, 0.0]));
        index.insert(id(2), &unit(&[0.0, 1.0, 0.0]));
        index.insert(id(3), &unit(&[0.7, 0.7, 0.0]));
        let hits = index.search(&unit(&[1.0, 0.1, 0.0]), 2, None);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![id(1), id(3)]);

        assert!(index.remove(id(1)));
        assert!(!index.remove(id(1)));
        assert_eq!(index.len(), 2);
        let hits = index.search(&unit(&[1.0, 0.1, 0.0]), 5, None);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![id(3), id(2)]);
        // The moved row still answers for its own id.
        let hits = index.search(&unit(&[0.0, 1.0, 0.0]), 1, None);
        assert_eq!(hits[0].id, id(2));
        assert!((hits[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn removal_overwrites_the_vacated_row() {
        for rows in [2u8, 15, 16, 17, 40] {
            let mut index = ExactIndex::new(16);
            for n in 0..rows {
                index.insert(id(n), &unit(&[0.25; 16]));
            }
            let mut marked = [0.0; 16];
            marked[5] = 1.0;
            index.insert(id(200), &unit(&marked));
            let written = index.panels.len() * PANEL;
            index.remove(id(200));
            index.remove(id(1));
            // SAFETY (test): the first `written` floats of the allocation were initialised (the
            // index wrote every panel it ever had); truncation keeps the allocation.
            let all = unsafe { std::slice::from_raw_parts(index.panels.as_ptr().cast::<f32>(), written) };
            assert!(all.iter().all(|&v| v == 0.0 || v == 0.25), "{rows} rows: the removed vector is gone");
            assert_eq!(all.iter().filter(|&&v| v == 0.25).count(), (usize::from(rows) - 1) * 16, "{rows} rows");
            assert_eq!(index.panels.len(), (usize::from(rows) - 1).div_ceil(PANEL) * 16);
        }
    }

    #[test]
    fn growth_keeps_every_row() {
        let mut index = ExactIndex::new(16);
        let vector = |n: u8| {
            let mut v = vec![0.0; 16];
            v[usize::from(n) % 16] = 1.0;
            v[(usize::from(n) / 16) % 16] += 0.5;
            unit(&v)
        };
        for n in 0..200u8 {
            index.insert(id(n), &vector(n));
        }
        let mut seen = 0;
        index.for_each_vector(|got, values| {
            let n = got.as_bytes()[0];
            assert_eq!(values, vector(n).as_slice(), "row {n} survived growth");
            seen += 1;
        });
        assert_eq!(seen, 200);
    }

    #[test]
    fn reinserting_an_id_replaces_its_vector() {
        let mut index = ExactIndex::new(2);
        index.insert(id(1), &unit(&[1.0, 0.0]));
        index.insert(id(1), &unit(&[0.0, 1.0]));
        assert_eq!(index.len(), 1);
        assert!((index.search(&unit(&[0.0, 1.0]), 1, None)[0].score - 1.0).abs() < 1e-6);
    }

    #[test]
    fn batched_search_equals_one_probe_at_a_time_however_the_rows_are_split() {
        let mut index = ExactIndex::new(20);
        let vector = |n: usize| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
            Embedding::new((0..20).map(|_| rng.random::<f32>() - 0.5).collect(), 20).unwrap()
        };
        for n in 0..103 {
            index.insert(RecordId::from_bytes([n as u8; 16]), &vector(n));
        }
        for n in [5, 50, 102] {
            index.remove(RecordId::from_bytes([n as u8; 16]));
        }
        for probes in [1, 3, 4, 9, 17] {
            let batch: Vec<Embedding> = (200..200 + probes).map(vector).collect();
            // One pass, and the rows split over 2, 3 and more parts than there are row groups
            // (the parts past the end are empty): the same hits, the same bits.
            for (k, parts) in [Some(1), Some(10), None].into_iter().flat_map(|k| [1, 2, 3, 7].map(|p| (k, p))) {
                let got = index.search_batch_in(&batch, k, Some(0.1), parts);
                assert_eq!(got.len(), probes);
                for (probe, hits) in batch.iter().zip(got) {
                    let want = index.search(probe, k.unwrap_or(1000), Some(0.1));
                    assert_eq!(
                        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
                        want.iter().map(|h| h.id).collect::<Vec<_>>()
                    );
                    for (a, b) in hits.iter().zip(&want) {
                        assert_eq!(a.score.to_bits(), b.score.to_bits());
                    }
                }
            }
        }
        assert!(index.search_batch(&[], None, None).is_empty());
    }
}

//! Exact search: one pass over every vector, in a contiguous matrix of 64-byte-aligned rows.
//!
//! Rows are padded with zeros to a multiple of 16 floats, so the kernel never handles a tail
//! and every row starts on a cache line. Removal moves the last row into the hole and zeroes
//! the vacated row, so an erased template leaves no copy in this matrix.
use std::collections::HashMap;

use zeroize::Zeroize;

use super::{Hit, Index, TopK, kernel};
use crate::{embedding::Embedding, record::RecordId};

const LANES: usize = 16;

/// Sixteen floats on a cache line: the unit the matrix is allocated in.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([f32; LANES]);

/// Rows per tile of the batched scan: 8 rows (16 KB at 512-d) and a quad of probes (8 KB)
/// fit in L1 together.
const TILE_ROWS: usize = 8;

/// Exact inner-product search over all enrolled vectors.
pub struct ExactIndex {
    dimension: usize,
    blocks_per_row: usize,
    rows: Vec<Block>,
    ids: Vec<RecordId>,
    positions: HashMap<RecordId, usize>,
}

impl ExactIndex {
    pub fn new(dimension: usize) -> Self {
        ExactIndex {
            dimension,
            blocks_per_row: dimension.div_ceil(LANES),
            rows: Vec::new(),
            ids: Vec::new(),
            positions: HashMap::new(),
        }
    }

    pub fn with_capacity(dimension: usize, records: usize) -> Self {
        let mut index = Self::new(dimension);
        index.rows.reserve(records * index.blocks_per_row);
        index.ids.reserve(records);
        index.positions.reserve(records);
        index
    }

    fn row(&self, position: usize) -> &[f32] {
        let blocks = &self.rows[position * self.blocks_per_row..(position + 1) * self.blocks_per_row];
        as_floats(blocks)
    }

    fn row_mut(&mut self, position: usize) -> &mut [f32] {
        let width = self.blocks_per_row;
        as_floats_mut(&mut self.rows[position * width..(position + 1) * width])
    }

    /// Makes room for one more row. Growing by hand, not by `Vec`'s reallocation, so that the
    /// old buffer is zeroed before it is freed: it holds every template.
    fn grow_for_one_row(&mut self) {
        let needed = self.rows.len() + self.blocks_per_row;
        if needed <= self.rows.capacity() {
            return;
        }
        let mut grown = Vec::with_capacity(needed.max(self.rows.capacity() * 2));
        grown.extend_from_slice(&self.rows);
        as_floats_mut(&mut self.rows).zeroize();
        self.rows = grown;
    }

    /// The probe padded like a row (zeros beyond the dimension do not change a dot product).
    fn padded(&self, probe: &Embedding) -> Vec<Block> {
        let mut blocks = vec![Block::default(); self.blocks_per_row];
        as_floats_mut(&mut blocks)[..self.dimension].copy_from_slice(probe.as_slice());
        blocks
    }
}

impl ExactIndex {
    /// Whether `id` is indexed.
    pub fn contains(&self, id: RecordId) -> bool {
        self.positions.contains_key(&id)
    }

    /// Every record and its vector (unpadded), in matrix order: feeds other indexes at start-up.
    pub fn iter(&self) -> impl Iterator<Item = (RecordId, &[f32])> {
        self.ids.iter().enumerate().map(|(p, &id)| (id, &self.row(p)[..self.dimension]))
    }

    /// Exact search for several probes in one pass over the matrix: each row is loaded from
    /// memory once and scored against every probe while it is in cache (four probes per kernel
    /// call). `k`: at most this many hits per probe (`None`: every hit at or above `min_score`).
    /// Rights requests use this: they carry several probes and must find every match.
    pub fn search_batch(&self, probes: &[Embedding], k: Option<usize>, min_score: Option<f32>) -> Vec<Vec<Hit>> {
        let dot4 = kernel::select4();
        let k = k.unwrap_or(self.ids.len());
        let mut padded: Vec<Vec<Block>> = probes.iter().map(|p| self.padded(p)).collect();
        // A multiple of four probes; the zero probes' scores are ignored.
        let zero = vec![Block::default(); self.blocks_per_row];
        let quads: Vec<[&[f32]; 4]> =
            padded.chunks(4).map(|c| std::array::from_fn(|i| as_floats(c.get(i).unwrap_or(&zero)))).collect();
        let mut tops: Vec<TopK> = probes.iter().map(|_| TopK::new(k, min_score)).collect();
        // Rows in tiles: every quad of probes passes over a tile while it is in L1, so a probe
        // is read from L2 once per tile rather than once per row (256 probes are 512 KB). Each
        // probe still sees the rows in order, with the same kernel: the same scores and hits.
        for (t, ids) in self.ids.chunks(TILE_ROWS).enumerate() {
            for (q, quad) in quads.iter().enumerate() {
                for (j, &id) in ids.iter().enumerate() {
                    let scores = dot4(self.row(t * TILE_ROWS + j), *quad);
                    for (i, score) in scores.into_iter().enumerate() {
                        if let Some(top) = tops.get_mut(4 * q + i)
                            && score >= top.threshold()
                        {
                            top.offer(id, score);
                        }
                    }
                }
            }
        }
        for p in &mut padded {
            as_floats_mut(p).zeroize();
        }
        tops.into_iter().map(TopK::into_sorted).collect()
    }
}

impl Drop for ExactIndex {
    /// The matrix holds every template: overwrite it before the allocator gets it back.
    fn drop(&mut self) {
        as_floats_mut(&mut self.rows).zeroize();
    }
}

fn as_floats(blocks: &[Block]) -> &[f32] {
    // SAFETY: Block is repr(C) around [f32; 16] with no padding (64 bytes, align 64).
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<f32>(), blocks.len() * LANES) }
}

fn as_floats_mut(blocks: &mut [Block]) -> &mut [f32] {
    // SAFETY: as in `as_floats`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<f32>(), blocks.len() * LANES) }
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
                self.grow_for_one_row();
                self.rows.extend(std::iter::repeat_n(Block::default(), self.blocks_per_row));
                p
            }
        };
        let dimension = self.dimension;
        self.row_mut(position)[..dimension].copy_from_slice(embedding.as_slice());
    }

    fn remove(&mut self, id: RecordId) -> bool {
        let Some(position) = self.positions.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        let width = self.blocks_per_row;
        if position != last {
            self.rows.copy_within(last * width..(last + 1) * width, position * width);
            let moved = self.ids[last];
            self.ids[position] = moved;
            self.positions.insert(moved, position);
        }
        // Overwrite the vacated row before giving it up: truncation alone would leave the
        // bytes in the allocation's spare capacity.
        self.row_mut(last).zeroize();
        self.rows.truncate(last * width);
        self.ids.truncate(last);
        true
    }

    fn search(&self, probe: &Embedding, k: usize, min_score: Option<f32>) -> Vec<Hit> {
        let (dot, dot4) = (kernel::select(), kernel::select4());
        let mut probe = self.padded(probe);
        let query = as_floats(&probe);
        let mut top = TopK::new(k, min_score);
        let quads = self.ids.len() / 4 * 4;
        for p in (0..quads).step_by(4) {
            let scores = dot4(query, [self.row(p), self.row(p + 1), self.row(p + 2), self.row(p + 3)]);
            for (i, score) in scores.into_iter().enumerate() {
                top.offer(self.ids[p + i], score);
            }
        }
        for p in quads..self.ids.len() {
            top.offer(self.ids[p], dot(query, self.row(p)));
        }
        as_floats_mut(&mut probe).zeroize();
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
        let mut index = ExactIndex::new(16);
        index.insert(id(1), &unit(&[0.25; 16]));
        index.insert(id(2), &unit(&[0.5; 16]));
        index.remove(id(2));
        // SAFETY (test): read the spare capacity the removed row occupied.
        let spare = unsafe { std::slice::from_raw_parts(index.rows.as_ptr().add(1).cast::<f32>(), 16) };
        assert!(spare.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn growth_keeps_every_row() {
        let mut index = ExactIndex::new(16);
        for n in 0..200u8 {
            let mut v = vec![0.0; 16];
            v[usize::from(n) % 16] = 1.0;
            v[(usize::from(n) / 16) % 16] += 0.5;
            index.insert(id(n), &unit(&v));
        }
        for n in 0..200u8 {
            let row = index.row(index.positions[&id(n)]);
            assert!(row.iter().any(|&x| x > 0.0), "row {n} survived growth");
        }
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
    fn batched_search_equals_one_probe_at_a_time() {
        let mut index = ExactIndex::new(20);
        let vector = |n: usize| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(n as u64);
            Embedding::new((0..20).map(|_| rng.random::<f32>() - 0.5).collect(), 20).unwrap()
        };
        for n in 0..103 {
            index.insert(RecordId::from_bytes([n as u8; 16]), &vector(n));
        }
        for probes in [1, 3, 4, 9] {
            let batch: Vec<Embedding> = (200..200 + probes).map(vector).collect();
            for k in [Some(1), Some(10), None] {
                let got = index.search_batch(&batch, k, Some(0.1));
                assert_eq!(got.len(), probes);
                for (probe, hits) in batch.iter().zip(got) {
                    let want = index.search(probe, k.unwrap_or(1000), Some(0.1));
                    assert_eq!(
                        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
                        want.iter().map(|h| h.id).collect::<Vec<_>>()
                    );
                    for (a, b) in hits.iter().zip(&want) {
                        assert!((a.score - b.score).abs() < 1e-5);
                    }
                }
            }
        }
        assert!(index.search_batch(&[], None, None).is_empty());
    }
}

//! A matrix of templates that never leaves a copy behind: rows padded to whole 64-byte cache
//! lines, every byte of the allocation initialised, grown by hand so that the old buffer is
//! zeroed before it is freed (`Vec`'s own reallocation would hand the old bytes back to the
//! allocator intact), and rows overwritten with zeros when their template is removed.
use zeroize::Zeroize;

/// Floats per cache line: the unit rows are padded to.
pub(crate) const LANES: usize = 16;

/// Sixteen floats on a cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Block([f32; LANES]);

pub(crate) struct Matrix {
    blocks_per_row: usize,
    /// Always fully initialised: `capacity rows × blocks_per_row` blocks, unused rows zero.
    data: Vec<Block>,
}

impl Matrix {
    pub(crate) fn new(dimension: usize) -> Self {
        Matrix { blocks_per_row: dimension.div_ceil(LANES).max(1), data: Vec::new() }
    }

    /// Floats per (padded) row.
    pub(crate) fn width(&self) -> usize {
        self.blocks_per_row * LANES
    }

    pub(crate) fn capacity(&self) -> usize {
        self.data.len() / self.blocks_per_row
    }

    /// Makes room for `rows` rows; new rows are zero.
    pub(crate) fn ensure_rows(&mut self, rows: usize) {
        if rows <= self.capacity() {
            return;
        }
        let new_rows = rows.max(self.capacity() * 2).max(16);
        let mut grown = vec![Block::default(); new_rows * self.blocks_per_row];
        grown[..self.data.len()].copy_from_slice(&self.data);
        as_floats_mut(&mut self.data).zeroize();
        self.data = grown;
    }

    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[f32] {
        as_floats(&self.data[i * self.blocks_per_row..(i + 1) * self.blocks_per_row])
    }

    /// Writes `values` into row `i` (zeros beyond `values.len()`).
    pub(crate) fn set_row(&mut self, i: usize, values: &[f32]) {
        let w = self.blocks_per_row;
        let row = as_floats_mut(&mut self.data[i * w..(i + 1) * w]);
        row.zeroize();
        row[..values.len()].copy_from_slice(values);
    }

    pub(crate) fn zero_row(&mut self, i: usize) {
        let w = self.blocks_per_row;
        as_floats_mut(&mut self.data[i * w..(i + 1) * w]).zeroize();
    }

    /// Every byte this matrix owns, spare rows included (tests scan it for erased templates).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: Block is repr(C) plain floats with no padding; every block is initialised.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<u8>(), self.data.len() * 64) }
    }
}

impl Drop for Matrix {
    fn drop(&mut self) {
        as_floats_mut(&mut self.data).zeroize();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_keeps_rows_and_pads_with_zeros() {
        let mut m = Matrix::new(20);
        assert_eq!(m.width(), 32);
        for i in 0..100 {
            m.ensure_rows(i + 1);
            m.set_row(i, &[i as f32 + 1.0; 20]);
        }
        for i in 0..100 {
            assert!(m.row(i)[..20].iter().all(|&x| x == i as f32 + 1.0));
            assert!(m.row(i)[20..].iter().all(|&x| x == 0.0));
        }
        m.zero_row(3);
        assert!(m.row(3).iter().all(|&x| x == 0.0));
    }
}

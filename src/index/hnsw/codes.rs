//! The vectors scalar-quantised to int8 ([`kernel::quantize`]): what a search walks the graph
//! with, a quarter of the bytes of the f32 rows.
//!
//! `dimension` codes and a scale per slot, in two contiguous arrays (the walk reads one row per
//! scored neighbour). Grown by hand and zeroed like the f32 matrix, so no freed buffer keeps a
//! template's codes, and a removed slot's row is zeroed: codes can be decoded back into an
//! approximation of the template, so they are as sensitive as it is.
use zeroize::Zeroize;

use crate::kernel;

pub(super) struct Codes {
    dimension: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    pub(super) fn new(dimension: usize) -> Self {
        Codes { dimension, codes: Vec::new(), scales: Vec::new() }
    }

    /// Makes room for `rows` rows; new rows are zero.
    pub(super) fn ensure_rows(&mut self, rows: usize) {
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
    pub(super) fn row(&self, i: usize) -> (&[i8], f32) {
        (&self.codes[i * self.dimension..(i + 1) * self.dimension], self.scales[i])
    }

    pub(super) fn set_row(&mut self, i: usize, values: &[f32]) {
        let d = self.dimension;
        self.scales[i] = kernel::quantize(values, &mut self.codes[i * d..(i + 1) * d]);
    }

    pub(super) fn zero_row(&mut self, i: usize) {
        let d = self.dimension;
        self.codes[i * d..(i + 1) * d].fill(0);
        self.scales[i] = 0.0;
    }

    /// Every code this holds, spare rows included (tests scan it for erased templates).
    pub(super) fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// Bytes held, spare rows included.
    pub(super) fn memory_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4
    }
}

impl Drop for Codes {
    fn drop(&mut self) {
        self.codes.zeroize();
        self.scales.zeroize();
    }
}

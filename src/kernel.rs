//! The inner-product kernels every search runs, chosen once at run time for this CPU (AVX-512,
//! AVX2+FMA, or portable code).
//!
//! Two families:
//! - [`dot`]: one vector against one vector (HNSW, rescoring). Sums in 16 independent lanes, so
//!   it is not limited by a single addition chain.
//! - the panel kernels ([`select_panels`], [`select_block`]): the exact index stores rows in
//!   panels of [`PANEL`] rows, element-major, so one vector load holds one element of 16 rows
//!   and a probe's element is broadcast against it. No horizontal sums, and a block of probes ×
//!   panels keeps its running sums in registers, as a matrix multiplication kernel does. Every
//!   panel kernel sums a row in element order with one fused multiply-add per element, so a
//!   score is bit for bit the same from every panel kernel, alone or batched, on any CPU.
//!
//! A leaf: nothing here imports another module of the crate, so [`crate::embedding`] (below the
//! indexes) and [`crate::index`] both use these kernels without a cycle.

/// A dot-product kernel: both slices must have the same length.
pub type DotFn = fn(&[f32], &[f32]) -> f32;

/// The fastest kernel this CPU runs. Scans call it once and keep the pointer.
pub fn select() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return dot_avx2_fma;
        }
    }
    dot_portable
}

/// Dot product of two equally long slices, with the fastest kernel this CPU runs.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    select()(a, b)
}

#[cfg(target_arch = "x86_64")]
fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of slices of different lengths");
    // SAFETY: `select` hands this kernel out only after detecting AVX2 and FMA.
    unsafe { x86::dot_avx2_fma(a, b) }
}

/// Rows per panel of the exact index. A panel of dimension `d` is `d * PANEL` floats:
/// `panel[k * PANEL + lane]` is element `k` of the panel's row `lane`.
pub const PANEL: usize = 16;

/// Probes per block of the batched kernel, and the most panels it takes at once.
pub const BLOCK_PROBES: usize = 8;
pub const BLOCK_PANELS: usize = 3;
/// Rows per block: the width of a block's score rows.
pub const BLOCK_ROWS: usize = BLOCK_PANELS * PANEL;

/// Scores one probe against whole panels: `out[p * PANEL + lane]` is the probe's dot product with
/// row `lane` of panel `p`. `panels.len()` must be a multiple of `probe.len() * PANEL`, and `out`
/// must hold `PANEL` scores per panel.
pub type PanelsFn = fn(probe: &[f32], panels: &[f32], out: &mut [f32]);

/// Scores a block of [`BLOCK_PROBES`] probes against 1 to [`BLOCK_PANELS`] panels:
/// `out[p][r]` is probe `p`'s dot product with row `r` of the panels. The probes come packed
/// element-major (`packed[k * BLOCK_PROBES + p]` is element `k` of probe `p`, see [`pack_probes`]).
pub type BlockFn = fn(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]);

/// Whether this is an AMD CPU of family 0x19 or later (Zen 4, Zen 5): the single-probe scan
/// there takes its own shape (see `panels_avx512_zen`). Read once from CPUID.
pub fn is_amd_zen4_or_later() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ZEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ZEN.get_or_init(|| {
            use std::arch::x86_64::__cpuid;
            // CPUID exists on every x86_64 CPU; leaf 0 (vendor) and leaf 1 (family) always answer.
            let (vendor, signature) = (__cpuid(0), __cpuid(1));
            let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
            let base = (signature.eax >> 8) & 0xf;
            let family = if base == 0xf { base + ((signature.eax >> 20) & 0xff) } else { base };
            amd && family >= 0x19
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The fastest single-probe panel kernel this CPU runs: on AMD Zen 4 and later
/// the Zen kernel (eight panels, L2 prefetch), on other AVX-512 CPUs (the Intel Xeon the first kernel was tuned on)
/// [`panels_avx512`], unchanged.
pub fn select_panels() -> PanelsFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return if is_amd_zen4_or_later() { panels_avx512_zen } else { panels_avx512 };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return panels_avx2_fma;
        }
    }
    panels_portable
}

/// The fastest block kernel this CPU runs.
pub fn select_block() -> BlockFn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return block_avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return block_avx2_fma;
        }
    }
    block_portable
}

/// Packs up to [`BLOCK_PROBES`] probes of dimension `d` element-major for [`BlockFn`]; missing
/// probes are zeros (their scores are 0 and meaningless).
pub fn pack_probes(probes: &[&[f32]], d: usize, packed: &mut [f32]) {
    assert!(probes.len() <= BLOCK_PROBES, "at most {BLOCK_PROBES} probes per block");
    assert_eq!(packed.len(), d * BLOCK_PROBES, "packed probes hold {BLOCK_PROBES} probes");
    packed.fill(0.0);
    for (p, probe) in probes.iter().enumerate() {
        assert_eq!(probe.len(), d, "probe dimension");
        for (k, &x) in probe.iter().enumerate() {
            packed[k * BLOCK_PROBES + p] = x;
        }
    }
}

/// The number of panels in `panels`, checking the shapes the kernels rely on.
fn panel_count(d: usize, panels: &[f32], out: usize) -> usize {
    let stride = d * PANEL;
    assert!(panels.len().is_multiple_of(stride.max(1)), "panels hold whole panels of the probe's dimension");
    let count = panels.len().checked_div(stride).unwrap_or(0);
    assert!(out >= count * PANEL, "room for every score");
    count
}

/// The dimension and panel count of a block call, checking the shapes the kernels rely on.
fn block_shape(packed: &[f32], panels: &[f32]) -> (usize, usize) {
    let d = packed.len() / BLOCK_PROBES;
    assert_eq!(packed.len(), d * BLOCK_PROBES, "packed probes hold {BLOCK_PROBES} probes");
    (d, panel_count(d, panels, BLOCK_ROWS))
}

/// The reference panel kernel (and the fallback): element order, one fused multiply-add each.
/// `mul_add` is a single instruction wherever the CPU has FMA (a slow library call where it has
/// none, but still exact).
#[inline(always)]
fn panels_generic(probe: &[f32], panels: &[f32], out: &mut [f32]) {
    let d = probe.len();
    let count = panel_count(d, panels, out.len());
    if count == 0 {
        return;
    }
    for (panel, out) in panels.chunks_exact(d * PANEL).zip(out.chunks_exact_mut(PANEL)).take(count) {
        let mut acc = [0f32; PANEL];
        for (&q, x) in probe.iter().zip(panel.chunks_exact(PANEL)) {
            for (a, &x) in acc.iter_mut().zip(x) {
                *a = q.mul_add(x, *a);
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// The reference block kernel: every (probe, row) pair summed exactly as [`panels_generic`].
#[inline(always)]
fn block_generic(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]) {
    let (d, count) = block_shape(packed, panels);
    if count == 0 {
        return;
    }
    for (j, panel) in panels.chunks_exact(d * PANEL).take(count).enumerate() {
        for (p, out) in out.iter_mut().enumerate() {
            let mut acc = [0f32; PANEL];
            for (k, x) in panel.chunks_exact(PANEL).enumerate() {
                let q = packed[k * BLOCK_PROBES + p];
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a = q.mul_add(x, *a);
                }
            }
            out[j * PANEL..(j + 1) * PANEL].copy_from_slice(&acc);
        }
    }
}

pub fn panels_portable(probe: &[f32], panels: &[f32], out: &mut [f32]) {
    panels_generic(probe, panels, out);
}

pub fn block_portable(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]) {
    block_generic(packed, panels, out);
}

#[cfg(target_arch = "x86_64")]
fn panels_avx2_fma(probe: &[f32], panels: &[f32], out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma")]
    fn vectorised(probe: &[f32], panels: &[f32], out: &mut [f32]) {
        panels_generic(probe, panels, out);
    }
    // SAFETY: `select_panels` hands this kernel out only after detecting AVX2 and FMA.
    unsafe { vectorised(probe, panels, out) }
}

#[cfg(target_arch = "x86_64")]
fn block_avx2_fma(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]) {
    #[target_feature(enable = "avx2,fma")]
    fn vectorised(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]) {
        block_generic(packed, panels, out);
    }
    // SAFETY: `select_block` hands this kernel out only after detecting AVX2 and FMA.
    unsafe { vectorised(packed, panels, out) }
}

#[cfg(target_arch = "x86_64")]
fn panels_avx512(probe: &[f32], panels: &[f32], out: &mut [f32]) {
    let count = panel_count(probe.len(), panels, out.len());
    // SAFETY: `select_panels` hands this kernel out only after detecting AVX-512F; `panels`
    // holds `count` whole panels of the probe's dimension and `out` room for their scores.
    unsafe { x86::panels_avx512(probe, panels.as_ptr(), count, out.as_mut_ptr()) }
}

/// The single-probe scan for AMD Zen 4: eight panels in flight (eight sums, eight streams) and
/// a software prefetch into L2 32 lines (2 KB) ahead in each stream. Measured on an EPYC Zen 4
/// (2 vCPU, 100,000 rows of 512 floats, criterion, one run each): the Intel shape (4 panels,
/// no prefetch) 21.5-24 GB/s; 4 panels with this prefetch 25.6; 8 panels without 20.9; 8 with
/// it 29.9 GB/s. Prefetching into L1 instead, or 64 or more lines ahead, was slower (20-24), and
/// so were 256-bit FMAs (19.6). Same summation order as every panel kernel.
#[cfg(target_arch = "x86_64")]
fn panels_avx512_zen(probe: &[f32], panels: &[f32], out: &mut [f32]) {
    let count = panel_count(probe.len(), panels, out.len());
    // SAFETY: only handed out (and tested) after detecting AVX-512F; `panels` holds `count`
    // whole panels of the probe's dimension and `out` room for their scores.
    unsafe { x86::panels_avx512_zen(probe, panels.as_ptr(), count, out.as_mut_ptr()) }
}

#[cfg(target_arch = "x86_64")]
fn block_avx512(packed: &[f32], panels: &[f32], out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES]) {
    let (d, count) = block_shape(packed, panels);
    // SAFETY: `select_block` hands this kernel out only after detecting AVX-512F; `packed` holds
    // `d` elements of each probe and `panels` `count` (at most BLOCK_PANELS) whole panels.
    unsafe {
        match count {
            0 => {}
            1 => x86::block_avx512::<1>(packed.as_ptr(), panels.as_ptr(), d, out),
            2 => x86::block_avx512::<2>(packed.as_ptr(), panels.as_ptr(), d, out),
            _ => x86::block_avx512::<3>(packed.as_ptr(), panels.as_ptr(), d, out),
        }
    }
}

/// Asks the CPU to start loading the first `lines` cache lines at `ptr` (a hint: graph search
/// knows which rows it reads next long before the hardware prefetcher can guess).
#[inline(always)]
pub fn prefetch(ptr: *const f32, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for i in 0..lines {
        // SAFETY: a prefetch never faults and does not read the memory architecturally; SSE is
        // part of x86_64. `wrapping_add` keeps the address computation free of UB.
        unsafe {
            std::arch::x86_64::_mm_prefetch(ptr.wrapping_add(i * 16).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, lines);
}

/// The fallback, also the reference the SIMD kernel is tested against.
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot product of slices of different lengths");
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ac, ar) = a.split_at(a.len() / LANES * LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// An int8 dot product (scalar-quantised vectors, see [`quantize`]): both slices must have the
/// same length and hold codes in -127..=127.
pub type DotI8Fn = fn(&[i8], &[i8]) -> i32;

/// The fastest int8 kernel this CPU runs.
pub fn select_i8() -> DotI8Fn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return dot_i8_avx2;
        }
    }
    dot_i8_portable
}

pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| i32::from(x) * i32::from(y)).sum()
}

#[cfg(target_arch = "x86_64")]
fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot product of slices of different lengths");
    // SAFETY: `select_i8` hands this kernel out only after detecting AVX2.
    unsafe { x86::dot_i8_avx2(a, b) }
}

/// Scalar quantisation of one vector: `out[i] = round(values[i] / scale)` in -127..=127 with
/// `scale = max |values[i]| / 127`, returned (0 for the zero vector). A quarter of the bytes of
/// the f32 vector; the dot product of two quantised vectors times both scales approximates the
/// f32 one to about 1e-3 for 512-d unit vectors.
pub fn quantize(values: &[f32], out: &mut [i8]) -> f32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (o, v) in out.iter_mut().zip(values) {
        *o = (v / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BLOCK_PROBES, BLOCK_ROWS, PANEL};

    /// # Safety
    /// The CPU must support AVX2; `a` and `b` must have the same length, codes in -127..=127.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len();
        let chunks = n / 32;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for c in 0..chunks {
            // SAFETY: c * 32 + 32 <= n for every chunk, and both slices have n elements.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(c * 32).cast::<__m256i>()),
                    _mm256_loadu_si256(pb.add(c * 32).cast::<__m256i>()),
                )
            };
            // |a| as unsigned times b with a's sign: pairs of products summed in 16 bits
            // (at most 2 * 127 * 127, no saturation), then widened to 32 bits.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
        }
        let s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let mut sum = _mm_cvtsi128_si32(s);
        for i in chunks * 32..n {
            sum += i32::from(a[i]) * i32::from(b[i]);
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `a` and `b` must have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let chunks = n / 32;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // Four independent accumulators hide the FMA latency.
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in 0..chunks {
            let i = c * 32;
            for (lane, acc) in acc.iter_mut().enumerate() {
                let j = i + 8 * lane;
                // SAFETY: j + 8 <= n for every chunk, and both slices have n elements.
                unsafe { *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), *acc) };
            }
        }
        let mut sum = hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
        for i in chunks * 32..n {
            sum += a[i] * b[i];
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX-512F; `panels` must hold `count` panels of `probe.len()`
    /// elements each, and `out` room for `count * PANEL` scores.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn panels_avx512(probe: &[f32], panels: *const f32, count: usize, out: *mut f32) {
        // Four panels at a time: four independent sums per lane hide the FMA latency, and four
        // streams are few enough for the prefetchers.
        const GROUP: usize = 4;
        let d = probe.len();
        let stride = d * PANEL;
        let mut p = 0;
        while p < count {
            let n = (count - p).min(GROUP);
            let base = unsafe { panels.add(p * stride) };
            let mut acc = [_mm512_setzero_ps(); GROUP];
            if n == GROUP {
                for (k, &q) in probe.iter().enumerate() {
                    let q = _mm512_set1_ps(q);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: panel p + j < count has `stride` floats; k < d.
                        *acc = _mm512_fmadd_ps(q, unsafe { _mm512_loadu_ps(base.add(j * stride + k * PANEL)) }, *acc);
                    }
                }
            } else {
                for (k, &q) in probe.iter().enumerate() {
                    let q = _mm512_set1_ps(q);
                    for (j, acc) in acc.iter_mut().enumerate().take(n) {
                        // SAFETY: as above, j < n.
                        *acc = _mm512_fmadd_ps(q, unsafe { _mm512_loadu_ps(base.add(j * stride + k * PANEL)) }, *acc);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate().take(n) {
                // SAFETY: out has room for `count * PANEL` scores.
                unsafe { _mm512_storeu_ps(out.add((p + j) * PANEL), *acc) };
            }
            p += n;
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F; `panels` must hold `count` panels of `probe.len()`
    /// elements each, and `out` room for `count * PANEL` scores.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn panels_avx512_zen(probe: &[f32], panels: *const f32, count: usize, out: *mut f32) {
        let stride = probe.len() * PANEL;
        let mut p = 0;
        while p < count {
            let n = count - p;
            // SAFETY: panel p < count starts inside `panels`; the tails score fewer panels.
            let base = unsafe { panels.add(p * stride) };
            let out = unsafe { out.add(p * PANEL) };
            // SAFETY (all three): `base` holds at least as many panels as each call scores.
            p += match n {
                8.. => unsafe { zen_group::<8>(probe, base, out) },
                4.. => unsafe { zen_group::<4>(probe, base, out) },
                _ => unsafe { zen_group::<1>(probe, base, out) },
            };
        }
    }

    /// `G` panels at `base`, each prefetched 32 lines ahead into L2; returns `G`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `base` must hold `G` panels of `probe.len()` elements and
    /// `out` room for `G * PANEL` scores.
    #[target_feature(enable = "avx512f")]
    unsafe fn zen_group<const G: usize>(probe: &[f32], base: *const f32, out: *mut f32) -> usize {
        const AHEAD: usize = 32 * PANEL;
        let stride = probe.len() * PANEL;
        let mut acc = [_mm512_setzero_ps(); G];
        for (k, &q) in probe.iter().enumerate() {
            let q = _mm512_set1_ps(q);
            for (j, acc) in acc.iter_mut().enumerate() {
                let at = base.wrapping_add(j * stride + k * PANEL);
                // A prefetch never faults, even past the end; `wrapping_add` keeps it free of UB.
                _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(AHEAD).cast());
                // SAFETY: panel j < G has `stride` floats; k < d.
                *acc = _mm512_fmadd_ps(q, unsafe { _mm512_loadu_ps(at) }, *acc);
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            // SAFETY: out has room for `G * PANEL` scores.
            unsafe { _mm512_storeu_ps(out.add(j * PANEL), *acc) };
        }
        G
    }

    /// # Safety
    /// The CPU must support AVX-512F; `packed` must hold `d * BLOCK_PROBES` floats and `panels`
    /// `R` panels of `d` elements.
    ///
    /// `BLOCK_PROBES * R` (24) running sums stay in registers; each step loads `R` panel vectors
    /// and broadcasts one element of each probe: 11 loads for 24 fused multiply-adds.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512<const R: usize>(
        packed: *const f32,
        panels: *const f32,
        d: usize,
        out: &mut [[f32; BLOCK_ROWS]; BLOCK_PROBES],
    ) {
        let stride = d * PANEL;
        let mut acc = [[_mm512_setzero_ps(); R]; BLOCK_PROBES];
        let mut x = [_mm512_setzero_ps(); R];
        for k in 0..d {
            for (j, x) in x.iter_mut().enumerate() {
                // SAFETY: panel j < R has `stride` floats; k < d.
                *x = unsafe { _mm512_loadu_ps(panels.add(j * stride + k * PANEL)) };
            }
            for (p, acc) in acc.iter_mut().enumerate() {
                // SAFETY: k * BLOCK_PROBES + p < d * BLOCK_PROBES.
                let q = _mm512_set1_ps(unsafe { *packed.add(k * BLOCK_PROBES + p) });
                for (acc, x) in acc.iter_mut().zip(&x) {
                    *acc = _mm512_fmadd_ps(q, *x, *acc);
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(&acc) {
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: j * PANEL + PANEL <= R * PANEL <= BLOCK_ROWS.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(j * PANEL), *acc) };
            }
        }
    }

    /// The horizontal sum of eight lanes, in the single kernel's order.
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(acc: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_and_portable_kernels_agree() {
        for n in [0, 1, 7, 16, 17, 100, 512, 513] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            assert!((f64::from(dot(&a, &b)) - exact).abs() < 1e-3, "n = {n}");
            assert!((f64::from(dot_portable(&a, &b)) - exact).abs() < 1e-3, "n = {n}");
            let mut panel = vec![0f32; n * PANEL];
            for (k, &x) in b.iter().enumerate() {
                panel[k * PANEL..(k + 1) * PANEL].fill(x);
            }
            let mut out = [0f32; PANEL];
            select_panels()(&a, &panel, &mut out);
            for got in out {
                assert!((f64::from(got) - exact).abs() < 1e-3, "n = {n}");
            }
        }
    }

    #[test]
    fn int8_kernels_agree_and_approximate_the_f32_product() {
        let mut x = 7u32;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for n in [0, 1, 31, 32, 33, 100, 512, 513] {
            let unit = |v: Vec<f32>| {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
                v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
            };
            let a = unit((0..n).map(|_| next()).collect());
            let b = unit((0..n).map(|_| next()).collect());
            let (mut qa, mut qb) = (vec![0i8; n], vec![0i8; n]);
            let (sa, sb) = (quantize(&a, &mut qa), quantize(&b, &mut qb));
            let exact = dot_i8_portable(&qa, &qb);
            assert_eq!(select_i8()(&qa, &qb), exact, "n = {n}");
            let approx = exact as f32 * sa * sb;
            assert!((approx - dot_portable(&a, &b)).abs() < 0.01, "n = {n}: {approx}");
        }
        let extremes = vec![127i8; 64];
        assert_eq!(select_i8()(&extremes, &extremes), 64 * 127 * 127);
        let negative = vec![-127i8; 64];
        assert_eq!(select_i8()(&extremes, &negative), -64 * 127 * 127);
    }

    /// Random panels, element-major, and probes; a row's score from the reference loop.
    fn panels_and_probes(n: usize, panels: usize, probes: usize, seed: u32) -> (Vec<f32>, Vec<Vec<f32>>) {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let data = (0..n * PANEL * panels).map(|_| next()).collect();
        let probes = (0..probes).map(|_| (0..n).map(|_| next()).collect()).collect();
        (data, probes)
    }

    /// A row's score in the one order every panel kernel sums in.
    fn reference(probe: &[f32], panel: &[f32], lane: usize) -> f32 {
        probe.iter().enumerate().fold(0f32, |acc, (k, &q)| q.mul_add(panel[k * PANEL + lane], acc))
    }

    /// Every panel kernel this CPU can run, not only the one `select_*` picks.
    fn kernels() -> Vec<(&'static str, PanelsFn, BlockFn)> {
        let mut all: Vec<(&'static str, PanelsFn, BlockFn)> = vec![("portable", panels_portable, block_portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(("avx2", panels_avx2_fma, block_avx2_fma));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(("avx512", panels_avx512, block_avx512));
                all.push(("avx512 zen", panels_avx512_zen, block_avx512));
            }
        }
        all
    }

    #[test]
    fn every_panel_kernel_gives_the_same_bits_alone_or_batched() {
        for n in [1, 15, 16, 17, 100, 512, 513] {
            for panels in [1, 2, 3, 4, 5, 8, 9, 13, 17] {
                let (data, probes) = panels_and_probes(n, panels, 11, (n * 31 + panels) as u32);
                for (name, scan, block) in kernels() {
                    for probe in &probes {
                        let mut out = vec![0f32; panels * PANEL];
                        scan(probe, &data, &mut out);
                        for (r, got) in out.iter().enumerate() {
                            let want = reference(probe, &data[(r / PANEL) * n * PANEL..], r % PANEL);
                            assert_eq!(got.to_bits(), want.to_bits(), "{name}: n {n}, row {r}");
                        }
                    }
                    // Blocks of up to BLOCK_PANELS panels, the last probe block partly empty.
                    let mut packed = vec![0f32; n * BLOCK_PROBES];
                    for (b, group) in probes.chunks(BLOCK_PROBES).enumerate() {
                        let refs: Vec<&[f32]> = group.iter().map(|p| &p[..]).collect();
                        pack_probes(&refs, n, &mut packed);
                        for (c, chunk) in data.chunks(BLOCK_PANELS * n * PANEL).enumerate() {
                            let mut out = [[0f32; BLOCK_ROWS]; BLOCK_PROBES];
                            block(&packed, chunk, &mut out);
                            for (p, probe) in group.iter().enumerate() {
                                for r in 0..chunk.len() / n {
                                    let want = reference(probe, &chunk[(r / PANEL) * n * PANEL..], r % PANEL);
                                    let at = format!("{name}: n {n}, block {b}, chunk {c}, probe {p}, row {r}");
                                    assert_eq!(out[p][r].to_bits(), want.to_bits(), "{at}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

//! The inner-product kernel every search runs: AVX2+FMA where the CPU has it (checked once at
//! run time; AVX-512 for the four-row kernel), a portable version elsewhere. Both sum in 16 independent lanes, so the portable
//! one still vectorises and neither is limited by a single addition chain.

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

/// Scores one query against four rows at once: `out[i] = dot(q, rows[i])`. Reading four rows
/// side by side keeps four memory streams in flight, which a single dot product cannot.
pub type Dot4Fn = fn(&[f32], [&[f32]; 4]) -> [f32; 4];

/// The fastest four-row kernel this CPU runs (AVX-512 where present: the batched exact scan
/// is bound by arithmetic, not memory, and twice the width halves its instructions).
pub fn select4() -> Dot4Fn {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return dot4_avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return dot4_avx2_fma;
        }
    }
    dot4_portable
}

fn dot4_portable(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    rows.map(|r| dot_portable(q, r))
}

#[cfg(target_arch = "x86_64")]
fn dot4_avx2_fma(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    for r in rows {
        assert_eq!(q.len(), r.len(), "dot product of slices of different lengths");
    }
    // SAFETY: `select4` hands this kernel out only after detecting AVX2 and FMA.
    unsafe { x86::dot4_avx2_fma(q, rows) }
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

#[cfg(target_arch = "x86_64")]
fn dot4_avx512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
    for r in rows {
        assert_eq!(q.len(), r.len(), "dot product of slices of different lengths");
    }
    // SAFETY: `select4` hands this kernel out only after detecting AVX-512F.
    unsafe { x86::dot4_avx512(q, rows) }
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
    /// The CPU must support AVX-512F; every row must have `q.len()` elements.
    ///
    /// Bit for bit the same sums as [`dot_avx2_fma`] for each row: each 32-element chunk goes
    /// into two 16-lane accumulators holding exactly the single kernel's four 8-lane ones, and
    /// the reduction adds them in the same order. A row's score must not depend on whether it
    /// was scored alone or in a group of four (which changes as rows move after a removal).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4_avx512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        let chunks = n / 32;
        let pq = q.as_ptr();
        let pr = rows.map(|r| r.as_ptr());
        // acc[r][0] = the single kernel's accumulators 0 and 1, acc[r][1] = 2 and 3.
        let mut acc = [[_mm512_setzero_ps(); 2]; 4];
        for c in 0..chunks {
            let i = c * 32;
            // SAFETY: i + 32 <= n, and q and every row have n elements.
            unsafe {
                let x0 = _mm512_loadu_ps(pq.add(i));
                let x1 = _mm512_loadu_ps(pq.add(i + 16));
                for r in 0..4 {
                    acc[r][0] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(pr[r].add(i)), acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(pr[r].add(i + 16)), acc[r][1]);
                }
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            // (acc0 + acc1) + (acc2 + acc3), eight lanes, as the single kernel adds them.
            let a01 = _mm256_add_ps(_mm512_castps512_ps256(acc[r][0]), upper_half(acc[r][0]));
            let a23 = _mm256_add_ps(_mm512_castps512_ps256(acc[r][1]), upper_half(acc[r][1]));
            out[r] = hsum8(_mm256_add_ps(a01, a23));
            for i in chunks * 32..n {
                out[r] += q[i] * rows[r][i];
            }
        }
        out
    }

    /// Lanes 8 to 15 (AVX-512F only: the f32x8 extract would need AVX-512DQ).
    #[target_feature(enable = "avx512f")]
    fn upper_half(v: __m512) -> __m256 {
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
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

    /// # Safety
    /// The CPU must support AVX2 and FMA; every row must have `q.len()` elements.
    ///
    /// Each row goes through [`dot_avx2_fma`] itself: a four-row version with the single
    /// kernel's four accumulators per row would need more registers than AVX2 has, and the sums
    /// must be bit for bit the single kernel's.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_avx2_fma(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        // SAFETY: same CPU features; every row has q.len() elements.
        rows.map(|r| unsafe { dot_avx2_fma(q, r) })
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
            for got in select4()(&a, [&b, &b, &b, &b]) {
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

    #[test]
    fn a_row_scores_the_same_alone_or_in_a_group_of_four() {
        let mut x = 1u32;
        let mut next = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for n in [1, 31, 32, 33, 100, 512, 513] {
            let q: Vec<f32> = (0..n).map(|_| next()).collect();
            let rows: Vec<Vec<f32>> = (0..4).map(|_| (0..n).map(|_| next()).collect()).collect();
            let four = select4()(&q, [&rows[0], &rows[1], &rows[2], &rows[3]]);
            for (r, got) in rows.iter().zip(four) {
                assert_eq!(got.to_bits(), select()(&q, r).to_bits(), "n = {n}");
            }
        }
    }
}

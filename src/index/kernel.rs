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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

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
        let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        let mut sum = _mm_cvtss_f32(s);
        for i in chunks * 32..n {
            sum += a[i] * b[i];
        }
        sum
    }

    /// # Safety
    /// The CPU must support AVX-512F; every row must have `q.len()` elements.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot4_avx512(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        let chunks = n / 16;
        let pq = q.as_ptr();
        let pr = rows.map(|r| r.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        for c in 0..chunks {
            let i = c * 16;
            // SAFETY: i + 16 <= n, and q and every row have n elements.
            unsafe {
                let x = _mm512_loadu_ps(pq.add(i));
                for r in 0..4 {
                    acc[r] = _mm512_fmadd_ps(x, _mm512_loadu_ps(pr[r].add(i)), acc[r]);
                }
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            out[r] = _mm512_reduce_add_ps(acc[r]);
            for i in chunks * 16..n {
                out[r] += q[i] * rows[r][i];
            }
        }
        out
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; every row must have `q.len()` elements.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4_avx2_fma(q: &[f32], rows: [&[f32]; 4]) -> [f32; 4] {
        let n = q.len();
        let chunks = n / 8;
        let pq = q.as_ptr();
        let pr = rows.map(|r| r.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in 0..chunks {
            let i = c * 8;
            // SAFETY: i + 8 <= n, and q and every row have n elements.
            unsafe {
                let x = _mm256_loadu_ps(pq.add(i));
                for r in 0..4 {
                    acc[r] = _mm256_fmadd_ps(x, _mm256_loadu_ps(pr[r].add(i)), acc[r]);
                }
            }
        }
        let mut out = [0f32; 4];
        for r in 0..4 {
            let hi = _mm256_extractf128_ps(acc[r], 1);
            let s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), hi);
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
            out[r] = _mm_cvtss_f32(s);
            for i in chunks * 8..n {
                out[r] += q[i] * rows[r][i];
            }
        }
        out
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
}

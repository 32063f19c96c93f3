//! The inner-product kernel every search runs: AVX2+FMA where the CPU has it (checked once at
//! run time), a portable version elsewhere. Both sum in 16 independent lanes, so the portable
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
        let chunks = n / 16;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        for c in 0..chunks {
            let i = c * 16;
            // SAFETY: i + 16 <= n for every chunk, and both slices have n elements.
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            }
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        let mut sum = _mm_cvtss_f32(s);
        for i in chunks * 16..n {
            sum += a[i] * b[i];
        }
        sum
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
        }
    }
}

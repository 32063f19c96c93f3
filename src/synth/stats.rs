//! Genuine and impostor score statistics: what a threshold costs in wrong and missed matches.
//!
//! Genuine pairs are pairs of samples of one identity; impostor pairs are random pairs of
//! samples of two identities, drawn with a fixed seed and bounded in number. From them: the
//! threshold at each false-match rate (FMR), the false non-match rate (FNMR) there, the equal
//! error rate, and the DET curve.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::kernel;

/// The false-match rates reported (1 in 100 to 1 in a million strangers accepted).
pub const FMRS: [f64; 5] = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// Scores of sampled pairs, each sorted ascending.
#[derive(Debug, Clone)]
pub struct Scores {
    pub genuine: Vec<f32>,
    pub impostor: Vec<f32>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Moments {
    pub pairs: usize,
    pub mean: f64,
    pub std: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OperatingPoint {
    /// Target false-match rate.
    pub fmr: f64,
    /// Scores at or above this match. `None` when too few impostor pairs were sampled to
    /// measure this rate.
    pub threshold: Option<f32>,
    /// Share of genuine pairs scoring below the threshold.
    pub fnmr: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub genuine: Moments,
    pub impostor: Moments,
    /// The rate at which FMR and FNMR are equal, and the threshold there.
    pub eer: f64,
    pub eer_threshold: f32,
    pub operating_points: Vec<OperatingPoint>,
}

impl Scores {
    /// The scores of a generated population's samples.
    pub fn of_population(
        population: &super::Population,
        seed: u64,
        max_genuine: usize,
        impostor_pairs: usize,
    ) -> Result<Scores, StatsError> {
        Self::sample(&population.samples, &population.labels, population.dimension(), seed, max_genuine, impostor_pairs)
    }

    /// Samples up to `max_genuine` genuine pairs (all of them when there are fewer) and exactly
    /// `impostor_pairs` impostor pairs, with `seed`. Uses every core; the result does not depend
    /// on how many there are.
    /// `samples` is row-major, `dimension` wide, one row per entry of `labels`.
    pub fn sample(
        samples: &[f32],
        labels: &[u32],
        dimension: usize,
        seed: u64,
        max_genuine: usize,
        impostor_pairs: usize,
    ) -> Result<Scores, StatsError> {
        let d = dimension;
        if d == 0 || samples.len() != labels.len() * d {
            return Err(StatsError::Shape { values: samples.len(), labels: labels.len(), dimension });
        }
        let row = |i: usize| &samples[i * d..(i + 1) * d];
        let dot = kernel::select();
        let by_identity = group_by_identity(labels);
        if by_identity.len() < 2 {
            return Err(StatsError::OneIdentity);
        }

        // Genuine: every pair of each identity's samples, identities in a seeded order.
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..by_identity.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut genuine = Vec::new();
        'identities: for &id in &order {
            let rows = &by_identity[id];
            for (a, &i) in rows.iter().enumerate() {
                for &j in &rows[a + 1..] {
                    if genuine.len() == max_genuine {
                        break 'identities;
                    }
                    genuine.push(dot(row(i), row(j)));
                }
            }
        }

        // Impostor: fixed-size chunks, each with its own stream, spread over the cores.
        const CHUNK: usize = 1 << 20;
        let chunks = impostor_pairs.div_ceil(CHUNK);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.max(1));
        let mut impostor = vec![0f32; impostor_pairs];
        std::thread::scope(|scope| {
            let mut slices: Vec<(usize, &mut [f32])> = impostor.chunks_mut(CHUNK).enumerate().collect();
            let per_worker = slices.len().div_ceil(workers.max(1)).max(1);
            while !slices.is_empty() {
                let batch: Vec<_> = slices.drain(..per_worker.min(slices.len())).collect();
                scope.spawn(move || {
                    for (chunk, out) in batch {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(1 + chunk as u64);
                        for slot in out.iter_mut() {
                            let (i, j) = loop {
                                let i = rng.random_range(0..labels.len());
                                let j = rng.random_range(0..labels.len());
                                if labels[i] != labels[j] {
                                    break (i, j);
                                }
                            };
                            *slot = dot(row(i), row(j));
                        }
                    }
                });
            }
        });
        genuine.sort_unstable_by(f32::total_cmp);
        impostor.sort_unstable_by(f32::total_cmp);
        Ok(Scores { genuine, impostor })
    }

    /// Share of impostor pairs scoring at or above `t`.
    pub fn fmr(&self, t: f32) -> f64 {
        share_at_or_above(&self.impostor, t)
    }

    /// Share of genuine pairs scoring below `t`.
    pub fn fnmr(&self, t: f32) -> f64 {
        1.0 - share_at_or_above(&self.genuine, t)
    }

    /// The lowest threshold whose FMR is at most `fmr`, if enough pairs were sampled to tell
    /// (at least ten impostor pairs expected above it).
    pub fn threshold_at(&self, fmr: f64) -> Option<f32> {
        let n = self.impostor.len();
        if n == 0 || (fmr * n as f64) < 10.0 {
            return None;
        }
        // At most floor(fmr·n) impostors may score at or above the threshold.
        let allowed = (fmr * n as f64).floor() as usize;
        Some(self.impostor[n - 1 - allowed].next_up())
    }

    pub fn summary(&self) -> Summary {
        let operating_points = FMRS
            .iter()
            .map(|&fmr| {
                let threshold = self.threshold_at(fmr);
                OperatingPoint { fmr, threshold, fnmr: threshold.map(|t| self.fnmr(t)) }
            })
            .collect();
        let (eer, eer_threshold) = self.eer();
        Summary {
            genuine: moments(&self.genuine),
            impostor: moments(&self.impostor),
            eer,
            eer_threshold,
            operating_points,
        }
    }

    /// Bisects for the threshold where FMR (falling) meets FNMR (rising).
    fn eer(&self) -> (f64, f32) {
        let (mut lo, mut hi) = (-1.0f32, 1.0f32);
        for _ in 0..40 {
            let mid = (lo + hi) / 2.0;
            if self.fmr(mid) > self.fnmr(mid) { lo = mid } else { hi = mid }
        }
        ((self.fmr(hi) + self.fnmr(hi)) / 2.0, hi)
    }

    /// (FMR, FNMR) pairs over thresholds from the impostor tail to the genuine mass, for a DET
    /// plot: one point per distinct impostor-tail rank on a log scale.
    pub fn det_curve(&self) -> Vec<(f64, f64)> {
        let n = self.impostor.len();
        let mut points = Vec::new();
        let mut fmr = 0.5;
        while fmr * n as f64 >= 1.0 {
            let allowed = (fmr * n as f64).floor() as usize;
            let t = self.impostor[n - 1 - allowed].next_up();
            points.push((self.fmr(t), self.fnmr(t)));
            fmr /= 1.25;
        }
        points
    }
}

fn share_at_or_above(sorted: &[f32], t: f32) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let below = sorted.partition_point(|&s| s < t);
    (sorted.len() - below) as f64 / sorted.len() as f64
}

fn moments(xs: &[f32]) -> Moments {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
    Moments { pairs: xs.len(), mean, std: var.sqrt() }
}

/// Row indices of each identity, identities in ascending label order.
fn group_by_identity(labels: &[u32]) -> Vec<Vec<usize>> {
    let mut groups: std::collections::BTreeMap<u32, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    groups.into_values().collect()
}

/// Why scores cannot be sampled from some input.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("{values} values do not make {labels} rows of dimension {dimension}")]
    Shape { values: usize, labels: usize, dimension: usize },
    #[error("impostor pairs need samples of at least two identities")]
    OneIdentity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_rates_follow_their_definitions() {
        let scores = Scores {
            genuine: vec![0.1, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.95, 0.97, 0.99],
            impostor: (0..1000).map(|i| i as f32 / 1000.0 - 0.5).collect(),
        };
        let t = scores.threshold_at(1e-2).unwrap();
        assert!(scores.fmr(t) <= 1e-2);
        assert!(scores.fmr(t.next_down().next_down()) > 1e-2 - 1e-9);
        assert!((scores.fnmr(0.55) - 0.2).abs() < 1e-9);
        assert_eq!(scores.threshold_at(1e-3), None, "one expected pair is too few to tell");
        let s = scores.summary();
        assert!(s.eer > 0.0 && s.eer < 0.5);
    }
}

//! Standard normal deviates that are the same bits on every machine.
//!
//! The platform's `exp`, `ln`, `sin` and `cos` may differ in the last bit between C libraries;
//! these come from the pure-Rust `libm` crate instead, so a seed gives byte-identical output on
//! any machine. Box–Muller, two deviates per pair of uniforms.
use rand::Rng;

pub struct Normal {
    spare: Option<f64>,
}

impl Normal {
    pub fn new() -> Self {
        Normal { spare: None }
    }

    pub fn sample(&mut self, rng: &mut impl Rng) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // u1 in (0, 1], so its logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * libm::sin(theta));
        r * libm::cos(theta)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn moments_are_standard() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut normal = Normal::new();
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| normal.sample(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }
}

//! Seeded synthetic templates and provenance: Oubli never touches a real face.
//!
//! An identity is a random unit centroid; each sample of it is the centroid plus Gaussian noise,
//! scaled back to unit length. The same seed gives the same bytes on every machine (ChaCha8).
//! Provenance uses synthetic domains under `.example` only.
use jiff::{SignedDuration, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::record::{Jurisdiction, LegalBasis, Provenance, SourceKind};

/// A seeded source of synthetic templates.
pub struct Synth {
    rng: ChaCha8Rng,
    dimension: usize,
}

const JURISDICTIONS: [&str; 8] = ["FR", "FR", "DE", "US", "GB", "IT", "ES", "BE"];

impl Synth {
    pub fn new(seed: u64, dimension: usize) -> Self {
        Synth { rng: ChaCha8Rng::seed_from_u64(seed), dimension }
    }

    /// A uniformly random direction (unit length).
    pub fn unit_vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..self.dimension).map(|_| self.rng.sample::<f32, _>(StandardNormal)).collect();
        normalise(v)
    }

    /// A sample of the identity at `centroid`: the centroid plus noise of total length about
    /// `noise` (0.8 gives genuine cosines near 0.75), at unit length.
    pub fn sample(&mut self, centroid: &[f32], noise: f32) -> Vec<f32> {
        let scale = noise / (self.dimension as f32).sqrt();
        let v = centroid.iter().map(|c| c + scale * self.rng.sample::<f32, _>(StandardNormal)).collect();
        normalise(v)
    }

    /// Provenance for sample `n`: mostly scraped from the public web with no legal basis
    /// declared, in a mix of jurisdictions, some unknown.
    pub fn provenance(&mut self, n: u64, now: Timestamp) -> Provenance {
        let site = self.rng.random_range(1..=40u32);
        let days = self.rng.random_range(0..3 * 365i64);
        let collected_at = now - SignedDuration::from_hours(24 * days + 1);
        let jurisdiction = if self.rng.random_bool(0.2) {
            Jurisdiction::Unknown
        } else {
            let code = JURISDICTIONS[self.rng.random_range(0..JURISDICTIONS.len())];
            code.parse().expect("the synthetic jurisdictions are ISO codes")
        };
        let (source_kind, legal_basis) = match self.rng.random_range(0..10u32) {
            0..=5 => (SourceKind::PublicWebScrape, LegalBasis::NoneDeclared),
            6..=7 => (SourceKind::SocialMediaScrape, LegalBasis::NoneDeclared),
            8 => (SourceKind::ThirdPartyTransfer, LegalBasis::LegitimateInterests),
            _ => (SourceKind::ConsentedEnrolment, LegalBasis::Consent),
        };
        let source_uri = format!("https://site{site}.example/photos/{n:08}.jpg");
        Provenance::new(source_uri, collected_at, source_kind, legal_basis, jurisdiction, now)
            .expect("synthetic provenance is valid: short URI, collected in the past")
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt() as f32;
    for x in &mut v {
        *x /= norm;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::kernel::dot;

    #[test]
    fn same_seed_same_bytes_and_samples_resemble_their_identity() {
        let (mut a, mut b) = (Synth::new(7, 512), Synth::new(7, 512));
        let (ca, cb) = (a.unit_vector(), b.unit_vector());
        assert_eq!(ca, cb);
        let s1 = a.sample(&ca, 0.8);
        let s2 = a.sample(&ca, 0.8);
        let stranger = a.unit_vector();
        assert!(dot(&s1, &s2) > 0.4, "genuine {}", dot(&s1, &s2));
        assert!(dot(&s1, &stranger).abs() < 0.2, "impostor {}", dot(&s1, &stranger));
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let p = a.provenance(3, now);
        assert!(p.source_uri().contains(".example/"));
        assert!(p.collected_at() < now);
    }
}

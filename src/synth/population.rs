//! The seeded population model.
//!
//! - Identities live in a smaller effective subspace, as real face embeddings do: a centroid is
//!   `normalise(s ⊙ z)` with `z` standard normal and a decaying spectrum `s_i = exp(-i/τ)`. That
//!   widens the impostor score spread from the 0.044 of random 512-d vectors to about 0.075.
//! - Look-alikes (twins, siblings): a fraction of identities come in families of 2 to 4 whose
//!   centroids share a parent, `normalise(√w·parent + √(1-w)·own)`, which makes the impostor
//!   tail heavier than a Gaussian's.
//! - A sample (a photo) is `normalise(centroid + σ·e)` with isotropic noise `e` of expected
//!   length 1; its quality varies: `σ = σ₀·exp(η·g)`, and a share of samples are bad (blurred,
//!   side-on) with σ multiplied again. That spreads genuine scores and gives them the left tail
//!   that makes real matchers miss some genuine pairs at strict thresholds.
//!
//! One ChaCha8 stream draws the vectors and another the provenance, in a fixed order, through
//! `libm`: the same configuration and seed give the same bytes on every machine.
use jiff::{SignedDuration, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::normal::Normal;
use crate::record::{Jurisdiction, LegalBasis, Provenance, SourceKind};

/// The shape of the score distributions. Defaults are calibrated to published ArcFace-class
/// figures (genuine ≈ 0.70 ± 0.10, impostor ≈ 0 ± 0.075 cosine for 512-d templates).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreModel {
    /// Decay length of the centroid spectrum, in dimensions (smaller: fewer effective
    /// dimensions, wider impostor spread).
    pub tau: f64,
    /// Typical noise length of a sample (larger: lower genuine scores).
    pub sigma0: f64,
    /// Log-normal spread of sample quality.
    pub eta: f64,
    /// Share of bad samples.
    pub bad_share: f64,
    /// Noise multiplier of a bad sample.
    pub bad_factor: f64,
    /// Share of identities that have a look-alike relative in the population.
    pub lookalike_share: f64,
    /// How much of a look-alike's centroid comes from the family's parent (0 to 1).
    pub lookalike_weight: f64,
}

impl Default for ScoreModel {
    fn default() -> Self {
        // Found by a sweep over the model (3 seeds, 10,000 identities × 5 samples, 1e8 impostor
        // pairs): every published range holds with margin; see the synth tests.
        ScoreModel {
            tau: 90.0,
            sigma0: 0.64,
            eta: 0.22,
            bad_share: 0.02,
            bad_factor: 4.8,
            lookalike_share: 0.30,
            lookalike_weight: 0.70,
        }
    }
}

/// Where the synthetic photos were "found", and on what basis they are held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvenanceMix {
    /// Share of people who live in France.
    pub fr_share: f64,
    /// Share of samples whose jurisdiction the collector did not know.
    pub unknown_share: f64,
    /// Other countries people live in, drawn uniformly.
    pub other_countries: Vec<String>,
    /// How photos were obtained and on what basis, with relative weights.
    pub sources: Vec<SourceWeight>,
    /// Photos were collected over this many days before the reference time.
    pub window_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceWeight {
    pub source_kind: String,
    pub legal_basis: String,
    pub weight: f64,
}

impl Default for ProvenanceMix {
    /// Mostly scraped from the public web with no legal basis declared, as CNIL found.
    fn default() -> Self {
        let w = |kind: SourceKind, basis: LegalBasis, weight| SourceWeight {
            source_kind: kind.name().into(),
            legal_basis: basis.name().into(),
            weight,
        };
        ProvenanceMix {
            fr_share: 0.25,
            unknown_share: 0.2,
            other_countries: ["DE", "US", "GB", "IT", "ES", "BE", "NL", "CA"].map(String::from).to_vec(),
            sources: vec![
                w(SourceKind::PublicWebScrape, LegalBasis::NoneDeclared, 0.70),
                w(SourceKind::SocialMediaScrape, LegalBasis::NoneDeclared, 0.15),
                w(SourceKind::ThirdPartyTransfer, LegalBasis::LegitimateInterests, 0.07),
                w(SourceKind::UserUpload, LegalBasis::LegitimateInterests, 0.04),
                w(SourceKind::ConsentedEnrolment, LegalBasis::Consent, 0.04),
            ],
            window_days: 3 * 365,
        }
    }
}

/// Everything that determines a population.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationConfig {
    pub seed: u64,
    pub dimension: usize,
    pub identities: usize,
    pub samples_per_identity: usize,
    /// Held-out samples per identity ("selfies" for access and erasure requests).
    pub probes_per_identity: usize,
    pub model: ScoreModel,
    pub provenance: ProvenanceMix,
    /// Collection times lie before this instant (fixed, so output does not depend on the clock).
    pub reference_time: Timestamp,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        PopulationConfig {
            seed: 1,
            dimension: crate::embedding::DEFAULT_DIMENSION,
            identities: 1000,
            samples_per_identity: 5,
            probes_per_identity: 1,
            model: ScoreModel::default(),
            provenance: ProvenanceMix::default(),
            reference_time: Timestamp::from_second(1_767_225_600).expect("2026-01-01T00:00:00Z is valid"),
        }
    }
}

/// Why a configuration cannot make a population.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

impl PopulationConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let m = &self.model;
        if self.dimension == 0 || self.dimension > crate::embedding::MAX_DIMENSION {
            return bad(format!("dimension {} is not 1 to {}", self.dimension, crate::embedding::MAX_DIMENSION));
        }
        if self.identities == 0 || self.samples_per_identity == 0 {
            return bad("a population needs at least one identity with at least one sample".into());
        }
        if self.identities > u32::MAX as usize {
            return bad(format!("at most {} identities", u32::MAX));
        }
        for (name, v) in [
            ("lookalike_share", m.lookalike_share),
            ("lookalike_weight", m.lookalike_weight),
            ("bad_share", m.bad_share),
            ("fr_share", self.provenance.fr_share),
            ("unknown_share", self.provenance.unknown_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} is {v}; use a share from 0 to 1"));
            }
        }
        if !(m.tau > 0.0 && m.sigma0 >= 0.0 && m.eta >= 0.0 && m.bad_factor >= 1.0) {
            return bad("tau must be > 0, sigma0 and eta >= 0, bad_factor >= 1".into());
        }
        if self.provenance.sources.iter().map(|s| s.weight).sum::<f64>() <= 0.0 {
            return bad("provenance.sources needs a positive weight".into());
        }
        for s in &self.provenance.sources {
            if SourceKind::from_name(&s.source_kind).is_none() || LegalBasis::from_name(&s.legal_basis).is_none() {
                return bad(format!("unknown source kind or legal basis {:?} / {:?}", s.source_kind, s.legal_basis));
            }
        }
        for c in &self.provenance.other_countries {
            c.parse::<Jurisdiction>().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

/// A generated population: enrolled samples and held-out probes, each row a unit vector.
#[derive(Debug, Clone)]
pub struct Population {
    pub config: PopulationConfig,
    /// `samples × dimension`, row-major.
    pub samples: Vec<f32>,
    /// Ground-truth identity of each sample. Never sent to the service.
    pub labels: Vec<u32>,
    pub provenance: Vec<Provenance>,
    /// `probes × dimension`, row-major.
    pub probes: Vec<f32>,
    pub probe_labels: Vec<u32>,
    /// The family (look-alike group) of each identity; singletons have their own.
    pub families: Vec<u32>,
}

const VECTOR_STREAM: u64 = 0;
const PROVENANCE_STREAM: u64 = 1;

/// Draws vectors for one configuration.
struct Sampler {
    rng: ChaCha8Rng,
    normal: Normal,
    spectrum: Vec<f64>,
    model: ScoreModel,
}

impl Sampler {
    fn new(config: &PopulationConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(VECTOR_STREAM);
        let spectrum = (0..config.dimension).map(|i| libm::exp(-(i as f64) / config.model.tau)).collect();
        Sampler { rng, normal: Normal::new(), spectrum, model: config.model }
    }

    fn raw_centroid(&mut self) -> Vec<f64> {
        let mut v: Vec<f64> = self.spectrum.clone();
        for x in &mut v {
            *x *= self.normal.sample(&mut self.rng);
        }
        normalise(&mut v);
        v
    }

    fn family_centroid(&mut self, parent: &[f64]) -> Vec<f64> {
        let w = self.model.lookalike_weight;
        let (a, b) = (libm::sqrt(w), libm::sqrt(1.0 - w));
        let own = self.raw_centroid();
        let mut v: Vec<f64> = parent.iter().zip(&own).map(|(p, o)| a * p + b * o).collect();
        normalise(&mut v);
        v
    }

    fn sample(&mut self, centroid: &[f64]) -> Vec<f32> {
        let m = self.model;
        let mut sigma = m.sigma0 * libm::exp(m.eta * self.normal.sample(&mut self.rng));
        if self.rng.random::<f64>() < m.bad_share {
            sigma *= m.bad_factor;
        }
        let scale = sigma / libm::sqrt(centroid.len() as f64);
        let mut v: Vec<f64> = centroid.to_vec();
        for x in &mut v {
            *x += scale * self.normal.sample(&mut self.rng);
        }
        normalise(&mut v);
        v.into_iter().map(|x| x as f32).collect()
    }
}

fn normalise(v: &mut [f64]) {
    let norm = libm::sqrt(v.iter().map(|x| x * x).sum::<f64>());
    for x in v {
        *x /= norm;
    }
}

impl Population {
    /// Generates the population `config` describes.
    pub fn generate(config: &PopulationConfig) -> Result<Population, ConfigError> {
        config.check()?;
        let n = config.identities;
        let (k, p, d) = (config.samples_per_identity, config.probes_per_identity, config.dimension);
        let mut sampler = Sampler::new(config);

        // Families: consecutive identities, sizes 2 to 4, until the look-alike share is met.
        let lookalikes = (config.model.lookalike_share * n as f64).round() as usize;
        let mut families = Vec::with_capacity(n);
        let mut centroids = Vec::with_capacity(n);
        let mut family = 0u32;
        while centroids.len() < n {
            let in_families = centroids.len() < lookalikes && n - centroids.len() >= 2;
            if in_families {
                let size = sampler.rng.random_range(2..=4usize).min(n - centroids.len());
                let parent = sampler.raw_centroid();
                for _ in 0..size {
                    centroids.push(sampler.family_centroid(&parent));
                    families.push(family);
                }
            } else {
                centroids.push(sampler.raw_centroid());
                families.push(family);
            }
            family += 1;
        }
        // Relatives sit anywhere in the population, not only at its start.
        for i in (1..n).rev() {
            let j = sampler.rng.random_range(0..=i);
            centroids.swap(i, j);
            families.swap(i, j);
        }

        let mut samples = Vec::with_capacity(n * k * d);
        let mut labels = Vec::with_capacity(n * k);
        let mut probes = Vec::with_capacity(n * p * d);
        let mut probe_labels = Vec::with_capacity(n * p);
        for (identity, centroid) in centroids.iter().enumerate() {
            for _ in 0..k {
                samples.extend(sampler.sample(centroid));
                labels.push(identity as u32);
            }
            for _ in 0..p {
                probes.extend(sampler.sample(centroid));
                probe_labels.push(identity as u32);
            }
        }
        let provenance = draw_provenance(config, &labels);
        Ok(Population { config: config.clone(), samples, labels, provenance, probes, probe_labels, families })
    }

    pub fn dimension(&self) -> usize {
        self.config.dimension
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample(&self, i: usize) -> &[f32] {
        &self.samples[i * self.dimension()..(i + 1) * self.dimension()]
    }

    pub fn probe(&self, i: usize) -> &[f32] {
        &self.probes[i * self.dimension()..(i + 1) * self.dimension()]
    }

    pub fn probe_count(&self) -> usize {
        self.probe_labels.len()
    }
}

/// Provenance for every sample: a person lives in one country; each photo of them may or may
/// not say so (unknown jurisdiction); sources and bases follow the configured mix.
fn draw_provenance(config: &PopulationConfig, labels: &[u32]) -> Vec<Provenance> {
    let mix = &config.provenance;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(PROVENANCE_STREAM);
    let homes: Vec<Jurisdiction> = (0..config.identities)
        .map(|_| {
            let code = if rng.random::<f64>() < mix.fr_share || mix.other_countries.is_empty() {
                "FR"
            } else {
                &mix.other_countries[rng.random_range(0..mix.other_countries.len())]
            };
            code.parse().expect("countries are checked with the configuration")
        })
        .collect();
    let total: f64 = mix.sources.iter().map(|s| s.weight).sum();
    labels
        .iter()
        .enumerate()
        .map(|(n, &identity)| {
            let mut pick = rng.random::<f64>() * total;
            let source = mix
                .sources
                .iter()
                .find(|s| {
                    pick -= s.weight;
                    pick < 0.0
                })
                .unwrap_or(&mix.sources[mix.sources.len() - 1]);
            let kind = SourceKind::from_name(&source.source_kind).expect("checked with the configuration");
            let basis = LegalBasis::from_name(&source.legal_basis).expect("checked with the configuration");
            let jurisdiction =
                if rng.random::<f64>() < mix.unknown_share { Jurisdiction::Unknown } else { homes[identity as usize] };
            let age = SignedDuration::from_secs(rng.random_range(3600..=i64::from(mix.window_days.max(1)) * 86_400));
            let site = rng.random_range(1..=60u32);
            let uri = match kind {
                SourceKind::SocialMediaScrape => {
                    format!("https://social{site}.example/p/{:016x}.jpg", rng.random::<u64>())
                }
                SourceKind::ThirdPartyTransfer => format!("https://partner{site}.example/batch/{n}.jpg"),
                SourceKind::UserUpload => format!("https://uploads.example/{:016x}.jpg", rng.random::<u64>()),
                SourceKind::ConsentedEnrolment => format!("https://enrol.example/consented/{n}.jpg"),
                SourceKind::PublicWebScrape => {
                    format!("https://site{site}.example/photos/{:016x}.jpg", rng.random::<u64>())
                }
            };
            Provenance::new(uri, config.reference_time - age, kind, basis, jurisdiction, config.reference_time)
                .expect("synthetic provenance is valid: short URI, collected before the reference time")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> PopulationConfig {
        PopulationConfig { seed, identities: 50, samples_per_identity: 3, ..Default::default() }
    }

    #[test]
    fn same_seed_same_population() {
        let a = Population::generate(&small(3)).unwrap();
        let b = Population::generate(&small(3)).unwrap();
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.provenance, b.provenance);
        assert_ne!(a.samples, Population::generate(&small(4)).unwrap().samples);
        assert_eq!(a.len(), 150);
        assert_eq!(a.probe_count(), 50);
        for i in 0..a.len() {
            let norm: f32 = a.sample(i).iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let mut c = small(1);
        c.model.lookalike_share = 1.5;
        assert!(Population::generate(&c).unwrap_err().to_string().contains("lookalike_share is 1.5"));
        let mut c = small(1);
        c.provenance.other_countries.push("XX".into());
        assert!(Population::generate(&c).is_err());
    }
}

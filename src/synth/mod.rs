//! Seeded synthetic face templates, provenance and score statistics: Oubli never touches a real
//! face, so its synthetic data must behave like a modern face matcher's output.
//!
//! [`Population`] is the one generator: tests, benches, the demo and `oubli synth` all use it.
//! Ground-truth identity labels stay with the population (and its files); the service never
//! learns who anyone is.
pub mod files;
mod normal;
pub mod plot;
mod population;
pub mod stats;

pub use population::{ConfigError, Population, PopulationConfig, ProvenanceMix, ScoreModel, SourceWeight};

//! What the engine is asked: where its data lives ([`OpenOptions`]), a search ([`Query`]) and
//! the exact matching of rights requests ([`Matches`]).
use std::{collections::HashMap, path::PathBuf};

use super::IndexConfig;
use crate::{embedding::Embedding, index::Hit, record::RecordId};

/// Where the engine's data lives and how it is indexed.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub data_dir: PathBuf,
    /// Kept apart from the data dir: it holds the keys that crypto-shredding destroys.
    pub key_dir: PathBuf,
    /// Checked against the dimension recorded at creation; `None` accepts it (512 when new).
    pub dimension: Option<usize>,
    /// The log's origin line; `None` accepts the recorded one (a default when new).
    pub log_origin: Option<String>,
    pub index: IndexConfig,
    /// Open a data dir whose log is behind the key dir's mirror (a restored backup): copy the
    /// missing log entries back and re-apply every journaled erasure, instead of refusing it.
    pub restore_from_backup: bool,
    /// The etcd cluster that holds the wrapped data keys (`None`: the data dir holds them).
    pub cluster: Option<crate::store::consensus::ClusterConfig>,
}

impl OpenOptions {
    /// The data dir and key dir with every other option at its default.
    pub fn new(data_dir: impl Into<PathBuf>, key_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            data_dir: data_dir.into(),
            key_dir: key_dir.into(),
            dimension: None,
            log_origin: None,
            index: IndexConfig::default(),
            restore_from_backup: false,
            cluster: None,
        }
    }
}

/// Which index answers a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUse {
    /// The one the configuration selects ([`IndexConfig`]).
    Configured,
    /// The exact scan, the ground truth.
    Exact,
}

/// A search: the probe, how many hits, from which score, by which index, and whether records
/// the ingest policy quarantined are shown.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub probe: &'a Embedding,
    pub k: usize,
    pub min_score: Option<f32>,
    pub index: IndexUse,
    pub include_quarantined: bool,
}

impl<'a> Query<'a> {
    /// The `k` best hits from the configured index, quarantined records included.
    pub fn new(probe: &'a Embedding, k: usize) -> Self {
        Query { probe, k, min_score: None, index: IndexUse::Configured, include_quarantined: true }
    }
}

/// Every record at or above a threshold for each probe, by the exact scan.
#[derive(Debug, Clone)]
pub struct Matches {
    /// One list per probe, best first.
    pub per_probe: Vec<Vec<Hit>>,
    /// How many records were compared with each probe.
    pub compared: usize,
}

impl Matches {
    /// Each matched record once, with its best score over the probes, best first (ties by id).
    pub fn best(&self) -> Vec<Hit> {
        let mut best: HashMap<RecordId, f32> = HashMap::new();
        for hit in self.per_probe.iter().flatten() {
            let score = best.entry(hit.id).or_insert(hit.score);
            *score = score.max(hit.score);
        }
        let mut hits: Vec<Hit> = best.into_iter().map(|(id, score)| Hit { id, score }).collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits
    }
}

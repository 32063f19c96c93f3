//! A population on disk, for numpy, the CLI and other tools:
//!
//! - `population.json`: the configuration (seed included) that regenerates it;
//! - `embeddings.npy`: `samples × dimension` float32, one unit vector per row;
//! - `provenance.jsonl`: one [`ProvenanceLine`] per sample, in row order;
//! - `labels.npy`: uint32 identity of each sample (ground truth: never sent to the service);
//! - `probes.npy`, `probe_labels.npy`: held-out samples ("selfies") and their identities.
use std::{
    fs,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::Population;
use crate::record::{Jurisdiction, LegalBasis, Provenance, RecordError, SourceKind};

pub const CONFIG_FILE: &str = "population.json";
pub const EMBEDDINGS_FILE: &str = "embeddings.npy";
pub const PROVENANCE_FILE: &str = "provenance.jsonl";
pub const LABELS_FILE: &str = "labels.npy";
pub const PROBES_FILE: &str = "probes.npy";
pub const PROBE_LABELS_FILE: &str = "probe_labels.npy";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

/// Provenance as one JSON line: the wire spelling of each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvenanceLine {
    pub source_uri: String,
    /// RFC 3339, e.g. "2024-05-01T12:00:00Z".
    pub collected_at: String,
    /// public_web_scrape, social_media_scrape, user_upload, consented_enrolment,
    /// third_party_transfer.
    pub source_kind: String,
    /// consent, contract, legal_obligation, vital_interests, public_task,
    /// legitimate_interests, none_declared.
    pub legal_basis: String,
    /// ISO 3166-1 alpha-2 code, or "unknown".
    pub jurisdiction: String,
}

impl From<&Provenance> for ProvenanceLine {
    fn from(p: &Provenance) -> Self {
        ProvenanceLine {
            source_uri: p.source_uri().to_string(),
            collected_at: p.collected_at().to_string(),
            source_kind: p.source_kind().name().to_string(),
            legal_basis: p.legal_basis().name().to_string(),
            jurisdiction: p.jurisdiction().to_string(),
        }
    }
}

impl ProvenanceLine {
    /// Validates the line as provenance, against the clock `now`.
    pub fn to_provenance(&self, now: Timestamp) -> Result<Provenance, RecordError> {
        let collected_at: Timestamp = self
            .collected_at
            .parse()
            .map_err(|e: jiff::Error| RecordError::InvalidCollectedAt(format!("{:?}: {e}", self.collected_at)))?;
        let kind = SourceKind::from_name(&self.source_kind).ok_or_else(|| RecordError::UnknownName {
            field: "source_kind",
            value: self.source_kind.clone(),
            expected: SourceKind::names(),
        })?;
        let basis = LegalBasis::from_name(&self.legal_basis).ok_or_else(|| RecordError::UnknownName {
            field: "legal_basis",
            value: self.legal_basis.clone(),
            expected: LegalBasis::names(),
        })?;
        let jurisdiction: Jurisdiction = self.jurisdiction.parse()?;
        Provenance::new(self.source_uri.clone(), collected_at, kind, basis, jurisdiction, now)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io { path: path.to_path_buf(), source }
}

fn format_error(path: &Path, message: impl ToString) -> FilesError {
    FilesError::Format { path: path.to_path_buf(), message: message.to_string() }
}

/// Writes `population` into `dir` (created if needed).
pub fn write(population: &Population, dir: &Path) -> Result<(), FilesError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let d = population.dimension();
    let config = dir.join(CONFIG_FILE);
    let json = serde_json::to_string_pretty(&population.config).map_err(|e| format_error(&config, e))?;
    fs::write(&config, json + "\n").map_err(io(&config))?;
    write_matrix(&dir.join(EMBEDDINGS_FILE), &population.samples, d)?;
    write_matrix(&dir.join(PROBES_FILE), &population.probes, d)?;
    write_labels(&dir.join(LABELS_FILE), &population.labels)?;
    write_labels(&dir.join(PROBE_LABELS_FILE), &population.probe_labels)?;
    let path = dir.join(PROVENANCE_FILE);
    let mut out = BufWriter::new(fs::File::create(&path).map_err(io(&path))?);
    for p in &population.provenance {
        let line = serde_json::to_string(&ProvenanceLine::from(p)).map_err(|e| format_error(&path, e))?;
        writeln!(out, "{line}").map_err(io(&path))?;
    }
    out.flush().map_err(io(&path))
}

fn write_matrix(path: &Path, values: &[f32], d: usize) -> Result<(), FilesError> {
    let view = ArrayView2::from_shape((values.len() / d, d), values).map_err(|e| format_error(path, e))?;
    ndarray_npy::write_npy(path, &view).map_err(|e| format_error(path, e))
}

fn write_labels(path: &Path, labels: &[u32]) -> Result<(), FilesError> {
    ndarray_npy::write_npy(path, &Array1::from(labels.to_vec())).map_err(|e| format_error(path, e))
}

/// Reads a float32 matrix written by [`write`] (or by numpy).
pub fn read_matrix(path: &Path) -> Result<Array2<f32>, FilesError> {
    ndarray_npy::read_npy(path).map_err(|e| format_error(path, format!("not a 2-d float32 .npy file: {e}")))
}

pub fn read_labels(path: &Path) -> Result<Vec<u32>, FilesError> {
    let labels: Array1<u32> =
        ndarray_npy::read_npy(path).map_err(|e| format_error(path, format!("not a 1-d uint32 .npy file: {e}")))?;
    Ok(labels.to_vec())
}

/// Reads one JSON value per non-empty line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, FilesError> {
    let reader = BufReader::new(fs::File::open(path).map_err(io(path))?);
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| format_error(path, format!("line {}: {e}", n + 1)))?);
    }
    Ok(out)
}

//! What an erasure's delete removed and where it was on disk, as the request keeps it until
//! both purges are done. The rights layer owns this shape (it is part of every stored erasure
//! request); the store hands over its own `store::Erased` and takes its own types back for the
//! purges, so the store may change its types without breaking stored requests.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::store;

/// What one erasure's delete removed (the fields and their order are those stored since the
/// first version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    pub records: usize,
    /// The recipients sent a notice.
    #[serde(default)]
    pub recipients: BTreeSet<String>,
    pub rows: usize,
    pub targets: Vec<Range>,
    pub evidence: Evidence,
}

/// A key range `[start, end]` of one column family that held an erased row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub cf: String,
    #[serde(with = "hex::serde")]
    pub start: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub end: Vec<u8>,
    /// Whether the range must read back empty (a graph slot may be reused at once).
    pub absent: bool,
}

/// The files that held the deleted values before the delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Table files that held the wrapped data keys.
    pub key_files: BTreeSet<String>,
    /// Table files of the other column families that held the rows.
    pub row_files: BTreeSet<String>,
    /// Write-ahead logs that existed when the rows were deleted.
    pub wals: BTreeSet<String>,
    /// The last sequence number before the delete, and the highest file number (absent from
    /// requests stored before they were recorded: 0, which no newer file can be at or below).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delete_seq: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub file_ceiling: u64,
    /// What the byte scans look for (fingerprints, never the values).
    #[serde(default, skip_serializing_if = "store::scan::Prints::is_empty")]
    pub key_prints: store::scan::Prints,
    #[serde(default, skip_serializing_if = "store::scan::Prints::is_empty")]
    pub row_prints: store::scan::Prints,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<&store::Evidence> for Evidence {
    fn from(e: &store::Evidence) -> Self {
        Evidence {
            key_files: e.key_files.clone(),
            row_files: e.row_files.clone(),
            wals: e.wals.clone(),
            delete_seq: e.delete_seq,
            file_ceiling: e.file_ceiling,
            key_prints: e.key_prints.clone(),
            row_prints: e.row_prints.clone(),
        }
    }
}

impl From<&store::Erased> for Erased {
    fn from(e: &store::Erased) -> Self {
        Erased {
            records: e.records,
            recipients: e.recipients.clone(),
            rows: e.rows,
            targets: e
                .targets
                .iter()
                .map(|t| Range { cf: t.cf.clone(), start: t.start.clone(), end: t.end.clone(), absent: t.absent })
                .collect(),
            evidence: Evidence::from(&e.evidence),
        }
    }
}

impl Erased {
    /// Adds what a later delete of the same erasure (after a re-plan) removed.
    pub fn merge(&mut self, later: Erased) {
        let mut evidence = self.store_evidence();
        evidence.extend(&later.store_evidence());
        self.evidence = Evidence::from(&evidence);
        self.records += later.records;
        self.recipients.extend(later.recipients);
        self.rows += later.rows;
        self.targets.extend(later.targets);
    }

    /// The store's targets for phase 2.
    pub fn store_targets(&self) -> impl Iterator<Item = store::Target> + '_ {
        self.targets.iter().map(|r| store::Target {
            cf: r.cf.clone(),
            start: r.start.clone(),
            end: r.end.clone(),
            absent: r.absent,
        })
    }

    /// The store's evidence, for the purge checks.
    pub fn store_evidence(&self) -> store::Evidence {
        store::Evidence {
            key_files: self.evidence.key_files.clone(),
            row_files: self.evidence.row_files.clone(),
            wals: self.evidence.wals.clone(),
            delete_seq: self.evidence.delete_seq,
            file_ceiling: self.evidence.file_ceiling,
            key_prints: self.evidence.key_prints.clone(),
            row_prints: self.evidence.row_prints.clone(),
        }
    }
}

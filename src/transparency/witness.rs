//! A witness's judgement: given the last checkpoint it verified and the one the log serves now,
//! is the new one a signed extension of the old? A smaller tree is a rollback; the same size
//! with another root, or a consistency proof that fails, is a fork. The witness keeps nothing it
//! could not verify.
use super::{
    merkle::{self, Hash, TreeSize},
    note::{Checkpoint, VerifierKey},
    receipt::open_checkpoint,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No earlier checkpoint: this one is trusted on first use.
    First { size: u64 },
    /// The same tree as before.
    Unchanged { size: u64 },
    /// The log grew, and the consistency proof shows it only grew.
    Grew { from: u64, to: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("the checkpoint does not verify: {0}")]
    Unverified(String),
    #[error("ROLLBACK: the log now serves a tree of {served} leaves; {saved} were verified before")]
    Rollback { saved: u64, served: u64 },
    #[error("FORK: two different trees of {size} leaves were both signed")]
    Fork { size: u64 },
    #[error("FORK: the tree of {to} leaves does not extend the tree of {from} verified before: {reason}")]
    Inconsistent { from: u64, to: u64, reason: String },
}

fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, WitnessError> {
    open_checkpoint(note, key).map_err(WitnessError::Unverified)
}

/// The sizes a consistency proof is needed between, if any.
pub fn proof_needed(saved: Option<&str>, latest: &str, key: &VerifierKey) -> Result<Option<(u64, u64)>, WitnessError> {
    let latest = open(latest, key)?;
    let Some(saved) = saved else { return Ok(None) };
    let saved = open(saved, key)?;
    Ok((saved.size > 0 && saved.size < latest.size).then_some((saved.size, latest.size)))
}

/// Judges `latest` against `saved`, with the consistency proof between them when the log grew.
pub fn check(saved: Option<&str>, latest: &str, key: &VerifierKey, proof: &[Hash]) -> Result<Verdict, WitnessError> {
    let new = open(latest, key)?;
    let Some(saved) = saved else { return Ok(Verdict::First { size: new.size }) };
    let old = open(saved, key)?;
    if new.size < old.size {
        return Err(WitnessError::Rollback { saved: old.size, served: new.size });
    }
    if new.size == old.size {
        return if new.root == old.root {
            Ok(Verdict::Unchanged { size: new.size })
        } else {
            Err(WitnessError::Fork { size: new.size })
        };
    }
    if old.size > 0 {
        merkle::verify_consistency(TreeSize(old.size), TreeSize(new.size), &old.root, &new.root, proof)
            .map_err(|e| WitnessError::Inconsistent { from: old.size, to: new.size, reason: e.to_string() })?;
    }
    Ok(Verdict::Grew { from: old.size, to: new.size })
}

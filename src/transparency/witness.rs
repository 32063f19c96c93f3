//! A witness's judgement: given the last checkpoint it verified and the one the log serves now,
//! is the new one a signed extension of the old? A smaller tree is a rollback; the same size
//! with another root, or a consistency proof that fails, is a fork. The witness keeps nothing it
//! could not verify.
//!
//! Two forms of it: [`check`], the offline monitor's verdict (`oubli witness check` pulls the
//! checkpoint and the proof), and [`add_checkpoint`], the c2sp.org/tlog-witness decision a
//! witness server makes when a log pushes a checkpoint: cosign it (and the state to keep), or
//! refuse it with the status the spec assigns. Both pure; the server is `crate::http::witness`.
use sha2::{Digest, Sha256};

use super::{
    cosign::{self, AddCheckpoint, CosignerKey},
    merkle::{self, Hash, TreeSize},
    note::{self, Checkpoint, NoteError, VerifierKey},
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

/// Why a witness refuses an `add-checkpoint` request; [`Refusal::status`] is the HTTP status
/// c2sp.org/tlog-witness gives each case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the body, the note or the checkpoint text is malformed.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// 400: a checkpoint smaller than the tree it claims to extend.
    #[error("the old size {old} is above the checkpoint's size {size}: a log only grows")]
    OldAboveNew { old: u64, size: u64 },
    /// 403: no signature by the log's known key verifies (or one by it fails).
    #[error("the checkpoint is not signed by the known key of its log: {0}")]
    Forbidden(String),
    /// 404: the witness knows no key for this origin.
    #[error("this witness does not witness the log {0:?}")]
    UnknownOrigin(String),
    /// 409: the log's idea of what the witness last cosigned is not the witness's.
    #[error("the witness last cosigned a tree of {stored} leaves, not {old}")]
    Conflict { stored: u64, old: u64 },
    /// 422: a tree of size 0 whose root is not the empty tree's.
    #[error("a checkpoint of 0 leaves must have the empty tree's root")]
    EmptyRoot,
    /// 422: a proof sent from the empty tree, which needs none.
    #[error("no consistency proof is needed from the empty tree, but {0} hash(es) were sent")]
    ProofFromEmpty(usize),
    /// 422: another root for the size the witness cosigned.
    #[error("FORK: a different tree of {size} leaves was cosigned before")]
    Fork { size: u64 },
    /// 422: the consistency proof does not show the new tree extends the cosigned one.
    #[error("FORK: the tree of {to} leaves does not extend the tree of {from} cosigned before: {reason}")]
    Inconsistent { from: u64, to: u64, reason: String },
    /// 500: the witness's clock gave no usable time to sign with.
    #[error("the witness's clock is unusable: {0}")]
    Clock(String),
}

impl Refusal {
    /// The HTTP status code tlog-witness assigns.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::BadRequest(_) | Refusal::OldAboveNew { .. } => 400,
            Refusal::Forbidden(_) => 403,
            Refusal::UnknownOrigin(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::EmptyRoot | Refusal::ProofFromEmpty(_) | Refusal::Fork { .. } | Refusal::Inconsistent { .. } => {
                422
            }
            Refusal::Clock(_) => 500,
        }
    }
}

/// A checkpoint the witness cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    pub checkpoint: Checkpoint,
    /// The response body: the witness's cosignature line, ending in a newline.
    pub cosignature: String,
    /// What to keep for the origin, replacing what was there: the checkpoint with the log's
    /// signatures that verified and this cosignature (what the monitoring endpoint serves).
    pub state: String,
}

/// The origin of a request's checkpoint: the first line of its text (the note is checked by
/// [`add_checkpoint`]), so a server can find the origin's state before deciding.
pub fn origin_of(request: &AddCheckpoint) -> Result<&str, Refusal> {
    let (text, _) = cosign::split_note(&request.checkpoint).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    text.split('\n').next().filter(|o| !o.is_empty()).ok_or(Refusal::BadRequest("the checkpoint has no origin".into()))
}

/// The lower-case hex SHA-256 of an origin: how tlog-witness names a log in URLs, and the name
/// of its state file.
pub fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

/// The checkpoint a stored state note holds (written by this witness after checking it).
pub fn stored_checkpoint(state: &str) -> Result<Checkpoint, NoteError> {
    let (text, _) =
        cosign::split_note(state).map_err(|_| NoteError::Malformed("the stored state is not a signed note"))?;
    Checkpoint::parse(text)
}

/// The tlog-witness decision. `stored` is the checkpoint this witness last cosigned for the
/// request's origin (`None`: never), `logs` the log keys it trusts (a key's name is its log's
/// origin), `time` the POSIX second it signs at. Checks, in the spec's order: known origin
/// (404), the log's signature (403), old size not above the new one (400), old size equal to
/// the stored one (409, with it), then the tree (422): an empty tree's root, no proof from the
/// empty tree, the same root at the same size, a consistency proof that verifies. On success
/// the caller stores [`Cosigned::state`] before answering with [`Cosigned::cosignature`], both
/// under the origin's lock.
pub fn add_checkpoint(
    stored: Option<&Checkpoint>,
    logs: &[VerifierKey],
    request: &AddCheckpoint,
    cosigner: &CosignerKey,
    time: u64,
) -> Result<Cosigned, Refusal> {
    let origin = origin_of(request)?;
    let keys: Vec<VerifierKey> = logs.iter().filter(|k| k.name() == origin).cloned().collect();
    if keys.is_empty() {
        return Err(Refusal::UnknownOrigin(origin.to_string()));
    }
    let opened = note::open(&request.checkpoint, &keys).map_err(|e| match e {
        NoteError::InvalidSignature(_) | NoteError::NoVerifiableSignature => Refusal::Forbidden(e.to_string()),
        other => Refusal::BadRequest(other.to_string()),
    })?;
    let new = Checkpoint::parse(&opened.text).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let old = request.old_size;
    if old > new.size {
        return Err(Refusal::OldAboveNew { old, size: new.size });
    }
    let stored_size = stored.map_or(0, |s| s.size);
    if old != stored_size {
        return Err(Refusal::Conflict { stored: stored_size, old });
    }
    if new.size == 0 && new.root != merkle::empty_root() {
        return Err(Refusal::EmptyRoot);
    }
    match stored {
        _ if old == 0 => {
            if !request.proof.is_empty() {
                return Err(Refusal::ProofFromEmpty(request.proof.len()));
            }
        }
        Some(s) if s.root != new.root && s.size == new.size => return Err(Refusal::Fork { size: new.size }),
        Some(s) => merkle::verify_consistency(TreeSize(s.size), TreeSize(new.size), &s.root, &new.root, &request.proof)
            .map_err(|e| Refusal::Inconsistent { from: s.size, to: new.size, reason: e.to_string() })?,
        None => unreachable!("a stored size of 0 when nothing is stored, so old == 0 above"),
    }
    let cosignature = cosigner.cosign(&opened.text, time).map_err(|e| Refusal::Clock(e.to_string()))?;
    let (_, lines) = cosign::split_note(&request.checkpoint).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let mut state = format!("{}\n", opened.text);
    for line in lines {
        let by_log = line
            .strip_prefix("\u{2014} ")
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(name, b64)| Some((name, base64_key_id(b64)?)))
            .is_some_and(|(name, id)| opened.verified.contains(&format!("{name}+{id}")));
        if by_log {
            state.push_str(line);
            state.push('\n');
        }
    }
    state.push_str(&cosignature);
    Ok(Cosigned { checkpoint: new, cosignature, state })
}

/// The hex key id a signature line's base64 starts with.
fn base64_key_id(b64: &str) -> Option<String> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let raw = STANDARD.decode(b64).ok()?;
    raw.get(..4).map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparency::{cosign::count_cosigners, note::SignerKey, tree::Tree};

    const ORIGIN: &str = "test.example/log";

    struct Log {
        signer: SignerKey,
        tree: Tree,
    }

    impl Log {
        fn new(seed: u8) -> Log {
            Log { signer: SignerKey::from_seed(ORIGIN, &[seed; 32]).unwrap(), tree: Tree::new() }
        }
        fn grow(&mut self, n: usize, tag: u8) {
            for i in 0..n {
                self.tree.append(&[tag, i as u8]);
            }
        }
        fn checkpoint(&self, size: u64) -> (Checkpoint, String) {
            let root = self.tree.root(TreeSize(size)).unwrap();
            let c = Checkpoint { origin: ORIGIN.into(), size, root };
            let note = self.signer.sign(&c.text()).unwrap();
            (c, note)
        }
        fn request(&self, old: u64, size: u64) -> AddCheckpoint {
            let proof = if old == 0 || old >= size {
                vec![]
            } else {
                self.tree.consistency_proof(TreeSize(old), TreeSize(size)).unwrap()
            };
            AddCheckpoint { old_size: old, proof, checkpoint: self.checkpoint(size).1 }
        }
    }

    fn cosigner() -> CosignerKey {
        CosignerKey::from_seed("witness.example/w1", &[3; 32]).unwrap()
    }

    fn decide(stored: Option<&Checkpoint>, log: &Log, request: &AddCheckpoint) -> Result<Cosigned, Refusal> {
        add_checkpoint(stored, &[log.signer.verifier()], request, &cosigner(), 1_700_000_000)
    }

    #[test]
    fn growth_is_cosigned_and_the_new_state_replaces_the_old() {
        let mut log = Log::new(1);
        log.grow(5, 0);
        let first = decide(None, &log, &log.request(0, 5)).unwrap();
        assert_eq!(first.checkpoint, log.checkpoint(5).0);
        assert_eq!(stored_checkpoint(&first.state).unwrap(), first.checkpoint);
        // The state is the log's note plus the cosignature, which verifies over it.
        assert_eq!(first.state, format!("{}{}", log.checkpoint(5).1, first.cosignature));
        let counted = count_cosigners(&first.state, &[cosigner().verifier()]).unwrap();
        assert_eq!((counted.count(), counted.other), (1, 1));
        assert!(note::open(&first.state, &[log.signer.verifier()]).is_ok());

        log.grow(4, 1);
        let grew = decide(Some(&first.checkpoint), &log, &log.request(5, 9)).unwrap();
        assert_eq!(grew.checkpoint.size, 9);
        // The same checkpoint again is cosigned again.
        let same = decide(Some(&grew.checkpoint), &log, &log.request(9, 9)).unwrap();
        assert_eq!(same.checkpoint, grew.checkpoint);
        // The empty tree first, then growth from it with no proof.
        let empty = decide(None, &log, &log.request(0, 0)).unwrap();
        assert_eq!(empty.checkpoint.root, merkle::empty_root());
        assert!(decide(Some(&empty.checkpoint), &log, &log.request(0, 9)).is_ok());
    }

    #[test]
    fn each_refusal_has_the_status_of_the_spec() {
        let mut log = Log::new(1);
        log.grow(8, 0);
        let stored = log.checkpoint(5).0;
        let status = |r: Result<Cosigned, Refusal>| r.map(|_| 200).unwrap_or_else(|e| e.status());

        // 404: an origin the witness does not know.
        let stranger = SignerKey::from_seed("other.example/log", &[1; 32]).unwrap();
        let mut request = log.request(5, 8);
        request.checkpoint =
            stranger.sign(&Checkpoint { origin: "other.example/log".into(), ..log.checkpoint(8).0 }.text()).unwrap();
        assert_eq!(decide(Some(&stored), &log, &request), Err(Refusal::UnknownOrigin("other.example/log".into())));
        // 403: signed by another key under the log's name, or a bad signature by the known key.
        let impostor = Log { signer: SignerKey::from_seed(ORIGIN, &[2; 32]).unwrap(), tree: Tree::new() };
        let mut request = log.request(5, 8);
        request.checkpoint = impostor.signer.sign(&log.checkpoint(8).0.text()).unwrap();
        assert_eq!(status(decide(Some(&stored), &log, &request)), 403);
        let mut request = log.request(5, 8);
        request.checkpoint = request.checkpoint.replace("\n8\n", "\n7\n");
        assert_eq!(status(decide(Some(&stored), &log, &request)), 403);
        // 400: old above new (a rollback pushed with the witness's size).
        assert_eq!(
            decide(Some(&log.checkpoint(8).0), &log, &log.request(8, 5)),
            Err(Refusal::OldAboveNew { old: 8, size: 5 })
        );
        // 409: the witness holds another size; it says which.
        assert_eq!(decide(Some(&stored), &log, &log.request(3, 8)), Err(Refusal::Conflict { stored: 5, old: 3 }));
        assert_eq!(decide(None, &log, &log.request(5, 8)), Err(Refusal::Conflict { stored: 0, old: 5 }));
        // A rollback pushed with its own size as the old size: 409 too.
        assert_eq!(decide(Some(&log.checkpoint(8).0), &log, &log.request(5, 5)).map_err(|e| e.status()), Err(409));
        // 422: a proof that fails, a proof from the empty tree, a fork at the same size.
        let mut request = log.request(5, 8);
        request.proof[0][0] ^= 1;
        assert!(matches!(decide(Some(&stored), &log, &request), Err(Refusal::Inconsistent { from: 5, to: 8, .. })));
        let mut request = log.request(0, 8);
        request.proof = vec![[0; 32]];
        assert_eq!(decide(None, &log, &request), Err(Refusal::ProofFromEmpty(1)));
        let mut fork = Log::new(1);
        fork.grow(5, 9);
        assert_eq!(decide(Some(&stored), &log, &fork.request(5, 5)), Err(Refusal::Fork { size: 5 }));
        // A forked history that grew: its proof cannot link it to the cosigned tree.
        fork.grow(3, 9);
        assert_eq!(status(decide(Some(&stored), &log, &fork.request(5, 8))), 422);
        // A non-empty root for the empty tree.
        let bad = Checkpoint { origin: ORIGIN.into(), size: 0, root: [1; 32] };
        let request = AddCheckpoint { old_size: 0, proof: vec![], checkpoint: log.signer.sign(&bad.text()).unwrap() };
        assert_eq!(decide(None, &log, &request), Err(Refusal::EmptyRoot));
        // 400: a checkpoint text that is not a checkpoint.
        let request = AddCheckpoint {
            old_size: 0,
            proof: vec![],
            checkpoint: log.signer.sign(&format!("{ORIGIN}\nnot a size\n")).unwrap(),
        };
        assert_eq!(status(decide(None, &log, &request)), 400);
        // 500 only if the clock says 0.
        assert_eq!(
            add_checkpoint(None, &[log.signer.verifier()], &log.request(0, 8), &cosigner(), 0).map_err(|e| e.status()),
            Err(500)
        );
    }

    #[test]
    fn the_state_keeps_only_the_log_signature_and_its_own() {
        let mut log = Log::new(1);
        log.grow(3, 0);
        let other = CosignerKey::from_seed("witness.example/w2", &[4; 32]).unwrap();
        let mut request = log.request(0, 3);
        let text = log.checkpoint(3).0.text();
        request.checkpoint = cosign::add_signatures(&request.checkpoint, &other.cosign(&text, 5).unwrap()).unwrap();
        let done = decide(None, &log, &request).unwrap();
        assert_eq!(done.state, format!("{}{}", log.checkpoint(3).1, done.cosignature));
        assert_eq!(origin_hash(ORIGIN).len(), 64);
    }
}

//! Events as log leaves, in a versioned canonical encoding (the same bytes on every machine;
//! docs/log-format.md is the specification). No leaf holds a template, a source, a name or an
//! unsalted id: records appear only as salted commitments, and the salt is given only to the
//! person concerned.
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{receipt::Statements, statements::for_event};
use crate::record::RecordId;

/// Version 1: no statements digest. Version 2: the receipt's statements committed at the end.
const VERSION_1: u8 = 1;
const VERSION_2: u8 = 2;
const STATEMENTS_DOMAIN: &[u8] = b"oubli/receipt-statements/v1\n";
const COMMITMENT_DOMAIN: &[u8] = b"oubli/record-commitment/v1\n";

/// `SHA-256("oubli/record-commitment/v1\n" ‖ salt ‖ record id)`: unlinkable to the record
/// without the salt.
pub fn commitment(salt: &[u8; 16], id: RecordId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_DOMAIN);
    h.update(salt);
    h.update(id.as_bytes());
    h.finalize().into()
}

/// `SHA-256("oubli/request-commitment/v1\n" ‖ salt ‖ request id)`: a rights request in the
/// log, unlinkable without the salt given to the person in their report.
pub fn request_commitment(salt: &[u8; 16], id: &[u8; 16]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(REQUEST_DOMAIN);
    h.update(salt);
    h.update(id);
    h.finalize().into()
}

const REQUEST_DOMAIN: &[u8] = b"oubli/request-commitment/v1\n";

/// `SHA-256("oubli/erasure-plan/v1\n" ‖ salt ‖ request id ‖ record ids in order)`: the frozen
/// set of records an erasure removes, checkable by the person who holds the salt and the ids.
pub fn plan_digest(salt: &[u8; 16], request: &[u8; 16], records: &[RecordId]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"oubli/erasure-plan/v1\n");
    h.update(salt);
    h.update(request);
    for id in records {
        h.update(id.as_bytes());
    }
    h.finalize().into()
}

/// `SHA-256("oubli/key-rotation/v1\n" ‖ epoch)`: a key rotation names no person.
pub fn rotation_commitment(epoch: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"oubli/key-rotation/v1\n");
    h.update(epoch.to_be_bytes());
    h.finalize().into()
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A record was stored.
    Enrolled { commitment: [u8; 32] },
    /// An access request was answered: how many records were disclosed, and how many
    /// review-band matches were withheld (Art. 15(4)).
    AccessAnswered { commitment: [u8; 32], disclosed: u32, withheld: u32 },
    /// An erasure request's record set was frozen: how many records, and the digest of the
    /// plan ([`plan_digest`]).
    ErasurePlanned { commitment: [u8; 32], records: u32, plan: [u8; 32] },
    /// Erasure phase 1: the records' rows deleted, their vectors removed from the indexes, and
    /// their data keys purged from disk (checked), while KEK `epoch` was current.
    ErasureKeysPurged { commitment: [u8; 32], records: u32, epoch: u32 },
    /// Erasure phase 2: the records' ciphertext purged from the table files (checked).
    ErasureTemplatesPurged { commitment: [u8; 32], records: u32 },
    /// The key-encryption key moved to `epoch`: `rewrapped` data keys re-wrapped, the older
    /// KEKs destroyed.
    KeysRotated { commitment: [u8; 32], epoch: u32, rewrapped: u64 },
    /// No record scored at or above `threshold` against a person's probes when the log held
    /// `tree_size` entries; `compared` records were compared.
    NoMatchAttested { commitment: [u8; 32], tree_size: u64, compared: u64, threshold: f32 },
    /// A restored backup still held `records` records of the erasure with this commitment (the
    /// original request's): they were deleted again, with its suppression entries, before the
    /// restored store served anything.
    ErasureReapplied { commitment: [u8; 32], records: u32 },
}

impl Event {
    fn kind(&self) -> u8 {
        match self {
            Event::Enrolled { .. } => 1,
            Event::AccessAnswered { .. } => 2,
            Event::ErasurePlanned { .. } => 3,
            Event::ErasureKeysPurged { .. } => 4,
            Event::ErasureTemplatesPurged { .. } => 5,
            Event::KeysRotated { .. } => 6,
            Event::NoMatchAttested { .. } => 7,
            Event::ErasureReapplied { .. } => 8,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::Enrolled { .. } => "enrolment",
            Event::AccessAnswered { .. } => "access-answered",
            Event::ErasurePlanned { .. } => "erasure-planned",
            Event::ErasureKeysPurged { .. } => "erasure-phase-1",
            Event::ErasureTemplatesPurged { .. } => "erasure-phase-2",
            Event::KeysRotated { .. } => "keys-rotated",
            Event::NoMatchAttested { .. } => "no-match-attested",
            Event::ErasureReapplied { .. } => "erasure-reapplied",
        }
    }

    pub fn commitment(&self) -> &[u8; 32] {
        match self {
            Event::Enrolled { commitment }
            | Event::AccessAnswered { commitment, .. }
            | Event::ErasurePlanned { commitment, .. }
            | Event::ErasureKeysPurged { commitment, .. }
            | Event::ErasureTemplatesPurged { commitment, .. }
            | Event::KeysRotated { commitment, .. }
            | Event::NoMatchAttested { commitment, .. }
            | Event::ErasureReapplied { commitment, .. } => commitment,
        }
    }
}

/// `SHA-256("oubli/receipt-statements/v1\n" ‖ canonical statements)`: what a version-2 entry
/// commits its receipt's statements to ([`Statements::canonical`]).
pub fn statements_digest(canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(STATEMENTS_DOMAIN);
    h.update(canonical);
    h.finalize().into()
}

/// An event and when it was logged (whole seconds, UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub time: Timestamp,
    pub event: Event,
    /// The digest of the statements its receipt makes ([`statements_digest`]); `None` only in
    /// a version-1 entry, written before statements were committed.
    pub statements: Option<[u8; 32]>,
}

/// An entry to append, with its receipt's statements frozen: the entry commits to their digest,
/// and the store keeps their canonical bytes beside the leaf, in the same write.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub entry: Entry,
    /// The canonical statements to store with the leaf; `None` for an enrolment, whose
    /// statements are the constant text of [`for_event`] and are rebuilt from the entry.
    pub statements: Option<String>,
}

impl Logged {
    /// `event` at `time`, its receipt stating `statements`.
    pub fn new(time: Timestamp, event: Event, statements: &Statements) -> Logged {
        let canonical = statements.canonical();
        let digest = statements_digest(canonical.as_bytes());
        let stored = (!matches!(event, Event::Enrolled { .. })).then_some(canonical);
        Logged { entry: Entry { time, event, statements: Some(digest) }, statements: stored }
    }

    /// `event` at `time`, its receipt stating what the entry alone shows ([`for_event`]).
    pub fn plain(time: Timestamp, event: Event) -> Logged {
        let statements = for_event(&event);
        Logged::new(time, event, &statements)
    }

    /// A record's enrolment: constant statements, their digest computed once.
    pub fn enrolment(time: Timestamp, commitment: [u8; 32]) -> Logged {
        static DIGEST: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(|| {
            statements_digest(for_event(&Event::Enrolled { commitment: [0; 32] }).canonical().as_bytes())
        });
        Logged {
            entry: Entry { time, event: Event::Enrolled { commitment }, statements: Some(*DIGEST) },
            statements: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("log entry is empty")]
    Empty,
    #[error("log entry version {0} is unknown")]
    Version(u8),
    #[error("log entry kind {0} is unknown")]
    Kind(u8),
    #[error("log entry is truncated or has trailing bytes")]
    Length,
    #[error("log entry time is out of range")]
    Time,
}

/// Reads fixed-size big-endian fields off the front of a payload.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], EventError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(EventError::Length)?;
        self.0 = rest;
        Ok(*head)
    }
    fn u32(&mut self) -> Result<u32, EventError> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64, EventError> {
        self.take().map(u64::from_be_bytes)
    }
}

impl Entry {
    /// `version ‖ kind ‖ i64 BE seconds ‖ commitment ‖ the kind's fields (big-endian)`, then
    /// (version 2) the statements digest.
    pub fn encode(&self) -> Vec<u8> {
        let version = if self.statements.is_some() { VERSION_2 } else { VERSION_1 };
        let mut out = vec![version, self.event.kind()];
        out.extend_from_slice(&self.time.as_second().to_be_bytes());
        out.extend_from_slice(self.event.commitment());
        match &self.event {
            Event::Enrolled { .. } => {}
            Event::AccessAnswered { disclosed, withheld, .. } => {
                out.extend_from_slice(&disclosed.to_be_bytes());
                out.extend_from_slice(&withheld.to_be_bytes());
            }
            Event::ErasurePlanned { records, plan, .. } => {
                out.extend_from_slice(&records.to_be_bytes());
                out.extend_from_slice(plan);
            }
            Event::ErasureKeysPurged { records, epoch, .. } => {
                out.extend_from_slice(&records.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            Event::ErasureTemplatesPurged { records, .. } | Event::ErasureReapplied { records, .. } => {
                out.extend_from_slice(&records.to_be_bytes())
            }
            Event::KeysRotated { epoch, rewrapped, .. } => {
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&rewrapped.to_be_bytes());
            }
            Event::NoMatchAttested { tree_size, compared, threshold, .. } => {
                out.extend_from_slice(&tree_size.to_be_bytes());
                out.extend_from_slice(&compared.to_be_bytes());
                out.extend_from_slice(&threshold.to_bits().to_be_bytes());
            }
        }
        if let Some(digest) = &self.statements {
            out.extend_from_slice(digest);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, EventError> {
        let (&version, rest) = bytes.split_first().ok_or(EventError::Empty)?;
        if version != VERSION_1 && version != VERSION_2 {
            return Err(EventError::Version(version));
        }
        let (&kind, rest) = rest.split_first().ok_or(EventError::Length)?;
        let mut f = Fields(rest);
        let time = Timestamp::from_second(i64::from_be_bytes(f.take()?)).map_err(|_| EventError::Time)?;
        if !(1..=8).contains(&kind) {
            return Err(EventError::Kind(kind));
        }
        let commitment = f.take::<32>()?;
        let event = match kind {
            1 => Event::Enrolled { commitment },
            2 => Event::AccessAnswered { commitment, disclosed: f.u32()?, withheld: f.u32()? },
            3 => Event::ErasurePlanned { commitment, records: f.u32()?, plan: f.take()? },
            4 => Event::ErasureKeysPurged { commitment, records: f.u32()?, epoch: f.u32()? },
            5 => Event::ErasureTemplatesPurged { commitment, records: f.u32()? },
            6 => Event::KeysRotated { commitment, epoch: f.u32()?, rewrapped: f.u64()? },
            8 => Event::ErasureReapplied { commitment, records: f.u32()? },
            _ => Event::NoMatchAttested {
                commitment,
                tree_size: f.u64()?,
                compared: f.u64()?,
                threshold: f32::from_bits(f.u32()?),
            },
        };
        let statements = if version == VERSION_2 { Some(f.take::<32>()?) } else { None };
        if !f.0.is_empty() {
            return Err(EventError::Length);
        }
        Ok(Entry { time, event, statements })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_damage() {
        let id = RecordId::random();
        let c = commitment(&[7; 16], id);
        assert_ne!(c, commitment(&[8; 16], id), "the salt changes the commitment");
        let entry = Entry {
            time: Timestamp::from_second(1_800_000_000).unwrap(),
            event: Event::Enrolled { commitment: c },
            statements: None,
        };
        let bytes = entry.encode();
        assert_eq!(bytes.len(), 1 + 1 + 8 + 32);
        assert_eq!(Entry::decode(&bytes), Ok(entry.clone()));
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
        assert!(Entry::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert!(!bytes.windows(16).any(|w| w == id.as_bytes()), "no raw id in a leaf");
        let answered = Entry {
            time: entry.time,
            event: Event::AccessAnswered { commitment: c, disclosed: 3, withheld: 1 },
            statements: None,
        };
        let bytes = answered.encode();
        assert_eq!(bytes.len(), 1 + 1 + 8 + 32 + 8);
        assert_eq!(Entry::decode(&bytes), Ok(answered));
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        for event in [
            Event::ErasurePlanned { commitment: c, records: 2, plan: [9; 32] },
            Event::ErasureKeysPurged { commitment: c, records: 2, epoch: 3 },
            Event::ErasureTemplatesPurged { commitment: c, records: 2 },
            Event::KeysRotated { commitment: rotation_commitment(4), epoch: 4, rewrapped: 10 },
            Event::NoMatchAttested { commitment: c, tree_size: 12, compared: 100, threshold: 0.602 },
            Event::ErasureReapplied { commitment: c, records: 3 },
        ] {
            for statements in [None, Some([5; 32])] {
                let entry = Entry { time: entry.time, event: event.clone(), statements };
                let bytes = entry.encode();
                assert_eq!(bytes[0], if statements.is_some() { 2 } else { 1 });
                assert_eq!(Entry::decode(&bytes), Ok(entry));
                assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
                assert!(Entry::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
            }
        }
    }

    #[test]
    fn version_2_commits_the_statements_and_version_1_still_reads() {
        let time = Timestamp::from_second(1_800_000_000).unwrap();
        let event = Event::ErasureTemplatesPurged { commitment: [3; 32], records: 2 };
        let logged = Logged::plain(time, event.clone());
        let canonical = logged.statements.clone().expect("stored beside the leaf");
        assert!(canonical.starts_with(r#"{"done":["#) && canonical.contains(r#""not_claimed":["#), "{canonical}");
        assert_eq!(logged.entry.statements, Some(statements_digest(canonical.as_bytes())));
        let bytes = logged.entry.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(bytes.len(), 1 + 1 + 8 + 32 + 4 + 32);
        assert_eq!(&bytes[bytes.len() - 32..], &statements_digest(canonical.as_bytes()));
        // A version-1 entry (as written before) reads back without a digest.
        let mut v1 = bytes[..bytes.len() - 32].to_vec();
        v1[0] = 1;
        assert_eq!(Entry::decode(&v1), Ok(Entry { time, event, statements: None }));
        assert_eq!(Entry::decode(&[&[3u8][..], &v1[1..]].concat()), Err(EventError::Version(3)));
        // An enrolment's constant statements are committed, not stored per leaf.
        let enrolled = Logged::enrolment(time, [4; 32]);
        assert_eq!(enrolled.statements, None);
        let constant = for_event(&enrolled.entry.event).canonical();
        assert_eq!(enrolled.entry.statements, Some(statements_digest(constant.as_bytes())));
    }
}

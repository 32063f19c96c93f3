//! Events as log leaves, in a versioned canonical encoding (the same bytes on every machine;
//! docs/log-format.md is the specification). No leaf holds a template, a source, a name or an
//! unsalted id: records appear only as salted commitments, and the salt is given only to the
//! person concerned.
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::record::RecordId;

const VERSION: u8 = 1;
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

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A record was stored.
    Enrolled { commitment: [u8; 32] },
    /// An access request was answered: how many records were disclosed, and how many
    /// review-band matches were withheld (Art. 15(4)).
    AccessAnswered { commitment: [u8; 32], disclosed: u32, withheld: u32 },
}

impl Event {
    fn kind(&self) -> u8 {
        match self {
            Event::Enrolled { .. } => 1,
            Event::AccessAnswered { .. } => 2,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Event::Enrolled { .. } => "enrolment",
            Event::AccessAnswered { .. } => "access-answered",
        }
    }

    pub fn commitment(&self) -> &[u8; 32] {
        match self {
            Event::Enrolled { commitment } | Event::AccessAnswered { commitment, .. } => commitment,
        }
    }
}

/// An event and when it was logged (whole seconds, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub time: Timestamp,
    pub event: Event,
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

impl Entry {
    /// `version ‖ kind ‖ i64 BE seconds ‖ payload`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.event.kind()];
        out.extend_from_slice(&self.time.as_second().to_be_bytes());
        match &self.event {
            Event::Enrolled { commitment } => out.extend_from_slice(commitment),
            Event::AccessAnswered { commitment, disclosed, withheld } => {
                out.extend_from_slice(commitment);
                out.extend_from_slice(&disclosed.to_be_bytes());
                out.extend_from_slice(&withheld.to_be_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, EventError> {
        let (&version, rest) = bytes.split_first().ok_or(EventError::Empty)?;
        if version != VERSION {
            return Err(EventError::Version(version));
        }
        let (&kind, rest) = rest.split_first().ok_or(EventError::Length)?;
        let (secs, payload) = rest.split_first_chunk::<8>().ok_or(EventError::Length)?;
        let time = Timestamp::from_second(i64::from_be_bytes(*secs)).map_err(|_| EventError::Time)?;
        let event = match kind {
            1 => Event::Enrolled { commitment: payload.try_into().map_err(|_| EventError::Length)? },
            2 => {
                let payload: &[u8; 40] = payload.try_into().map_err(|_| EventError::Length)?;
                let (commitment, counts) = payload.split_first_chunk::<32>().expect("40 bytes hold 32");
                let (disclosed, withheld) = counts.split_at(4);
                Event::AccessAnswered {
                    commitment: *commitment,
                    disclosed: u32::from_be_bytes(disclosed.try_into().expect("4 bytes")),
                    withheld: u32::from_be_bytes(withheld.try_into().expect("4 bytes")),
                }
            }
            k => return Err(EventError::Kind(k)),
        };
        Ok(Entry { time, event })
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
        let entry =
            Entry { time: Timestamp::from_second(1_800_000_000).unwrap(), event: Event::Enrolled { commitment: c } };
        let bytes = entry.encode();
        assert_eq!(bytes.len(), 1 + 1 + 8 + 32);
        assert_eq!(Entry::decode(&bytes), Ok(entry.clone()));
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..cut]).is_err());
        }
        assert!(Entry::decode(&[bytes.as_slice(), &[0]].concat()).is_err());
        assert!(!bytes.windows(16).any(|w| w == id.as_bytes()), "no raw id in a leaf");
        let answered =
            Entry { time: entry.time, event: Event::AccessAnswered { commitment: c, disclosed: 3, withheld: 1 } };
        let bytes = answered.encode();
        assert_eq!(bytes.len(), 1 + 1 + 8 + 32 + 8);
        assert_eq!(Entry::decode(&bytes), Ok(answered));
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}

//! The plaintext encoding of a record, sealed by `crypto` before it is written.
//!
//! Version 1, big-endian integers:
//! ```text
//! u8 version = 1
//! i64 enrolled_at seconds, i32 nanoseconds
//! [u8; 16] commitment salt (the record's commitment in the transparency log)
//! content:
//!   i64 collected_at seconds, i32 nanoseconds
//!   u8 source_kind, u8 legal_basis         (codes in record.rs)
//!   [u8; 2] jurisdiction                   ("\0\0" = unknown)
//!   u16 source_uri length, UTF-8 bytes
//!   u32 dimension, dimension × f32 (little-endian)
//! ```
//! `content` alone is what an idempotency check compares (through a keyed hash).
use jiff::Timestamp;
use zeroize::Zeroizing;

use super::Error;
use crate::{
    embedding::Embedding,
    record::{Jurisdiction, LegalBasis, Provenance, Record, RecordId, SourceKind},
};

const VERSION: u8 = 1;

/// Appends the content part of a record (provenance and template) to `out`.
pub fn encode_content(provenance: &Provenance, embedding: &Embedding, out: &mut Vec<u8>) {
    put_time(out, provenance.collected_at());
    out.push(provenance.source_kind().code());
    out.push(provenance.legal_basis().code());
    out.extend_from_slice(match &provenance.jurisdiction() {
        Jurisdiction::Country(code) => code,
        Jurisdiction::Unknown => &[0, 0],
    });
    let uri = provenance.source_uri().as_bytes();
    let uri_len = u16::try_from(uri.len()).expect("source URIs are validated to 2048 bytes at most");
    out.extend_from_slice(&uri_len.to_be_bytes());
    out.extend_from_slice(uri);
    let dimension = u32::try_from(embedding.dimension()).expect("dimensions are validated to 4096 at most");
    out.extend_from_slice(&dimension.to_be_bytes());
    for v in embedding.as_slice() {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// The whole plaintext of a record.
pub fn encode(
    provenance: &Provenance,
    embedding: &Embedding,
    enrolled_at: Timestamp,
    salt: &[u8; 16],
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(80 + provenance.source_uri().len() + 4 * embedding.dimension()));
    out.push(VERSION);
    put_time(&mut out, enrolled_at);
    out.extend_from_slice(salt);
    encode_content(provenance, embedding, &mut out);
    out
}

fn put_time(out: &mut Vec<u8>, t: Timestamp) {
    out.extend_from_slice(&t.as_second().to_be_bytes());
    out.extend_from_slice(&t.subsec_nanosecond().to_be_bytes());
}

/// Decodes a record of the store's `dimension`.
pub fn decode(id: RecordId, bytes: &[u8], dimension: usize) -> Result<Record, Error> {
    let corrupt = |what: &str| Error::Corrupt(format!("record {id}: {what}"));
    let mut r = Reader { bytes };
    let version = r.u8().ok_or_else(|| corrupt("empty"))?;
    if version != VERSION {
        return Err(corrupt(&format!("unknown record version {version}")));
    }
    let enrolled_at = r.time().ok_or_else(|| corrupt("bad enrolment time"))?;
    let salt: [u8; 16] = r.take(16).ok_or_else(|| corrupt("truncated"))?.try_into().expect("took 16 bytes");
    let collected_at = r.time().ok_or_else(|| corrupt("bad collection time"))?;
    let source_kind = r.u8().and_then(SourceKind::from_code).ok_or_else(|| corrupt("bad source kind"))?;
    let legal_basis = r.u8().and_then(LegalBasis::from_code).ok_or_else(|| corrupt("bad legal basis"))?;
    let jurisdiction = match r.take(2).ok_or_else(|| corrupt("truncated"))? {
        [0, 0] => Jurisdiction::Unknown,
        code => {
            std::str::from_utf8(code).ok().and_then(|c| c.parse().ok()).ok_or_else(|| corrupt("bad jurisdiction"))?
        }
    };
    let uri_len = r.take(2).ok_or_else(|| corrupt("truncated"))?;
    let uri_len = usize::from(u16::from_be_bytes([uri_len[0], uri_len[1]]));
    let uri = r.take(uri_len).ok_or_else(|| corrupt("truncated source"))?;
    let source_uri = String::from_utf8(uri.to_vec()).map_err(|_| corrupt("source is not UTF-8"))?;
    let stored_dim = r.take(4).ok_or_else(|| corrupt("truncated"))?;
    let stored_dim = u32::from_be_bytes(stored_dim.try_into().expect("took 4 bytes")) as usize;
    if stored_dim != dimension {
        return Err(corrupt(&format!("template has dimension {stored_dim}, the store {dimension}")));
    }
    let raw = r.take(4 * dimension).ok_or_else(|| corrupt("truncated template"))?;
    if !r.bytes.is_empty() {
        return Err(corrupt("trailing bytes"));
    }
    let values = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4-byte chunks"))).collect();
    let embedding = Embedding::from_stored(values, dimension).map_err(|e| corrupt(&e.to_string()))?;
    let provenance = Provenance::from_stored(source_uri, collected_at, source_kind, legal_basis, jurisdiction);
    Ok(Record { id, provenance, enrolled_at, embedding, commitment_salt: salt })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn time(&mut self) -> Option<Timestamp> {
        let secs = i64::from_be_bytes(self.take(8)?.try_into().ok()?);
        let nanos = i32::from_be_bytes(self.take(4)?.try_into().ok()?);
        Timestamp::new(secs, nanos).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let provenance = Provenance::new(
            "https://photos.example/a.jpg".into(),
            Timestamp::new(1_700_000_000, 123).unwrap(),
            SourceKind::SocialMediaScrape,
            LegalBasis::NoneDeclared,
            "FR".parse().unwrap(),
            now,
        )
        .unwrap();
        let embedding = Embedding::new((1..=8).map(|i| i as f32).collect(), 8).unwrap();
        let id = RecordId::random();
        let bytes = encode(&provenance, &embedding, now, &[9; 16]);
        let record = decode(id, &bytes, 8).unwrap();
        assert_eq!(record.provenance, provenance);
        assert_eq!(record.embedding, embedding);
        assert_eq!(record.enrolled_at, now);
        assert_eq!(record.commitment_salt, [9; 16]);
        assert!(decode(id, &bytes, 16).is_err());
        for cut in 0..bytes.len() {
            assert!(decode(id, &bytes[..cut], 8).is_err(), "accepted a record cut at {cut}");
        }
    }
}

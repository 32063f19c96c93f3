//! What each fuzz target checks, beyond "does not panic". The same file is compiled into the
//! integration tests (tests/it/fuzz.rs), which replay every committed corpus file through it, so
//! a case the fuzzer once found stays a regression test in `make test`.
//!
//! Inputs are arbitrary bytes; the first byte picks a variant. [`seeds`] builds the committed
//! seed corpus: valid inputs of every variant, for the fuzzer to start from.
use jiff::Timestamp;
use oubli::{
    grpc::{convert, pb},
    record::{IdempotencyKey, Jurisdiction, RecordId},
    rights::request::RequestId,
    transparency::{
        event::Entry,
        merkle::{self, Hash, LeafIndex, TreeSize},
        note::{self, Checkpoint, SignerKey, VerifierKey},
        receipt::{self, Body, Receipt},
    },
};
use prost::Message;

/// A small dimension, so that the fuzzer reaches valid embeddings as well as invalid ones.
const DIMENSION: usize = 4;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a valid time")
}

/// The signer every structured receipt and note is signed with: a fixed seed, so the corpus
/// stays meaningful from one run to the next.
fn signer() -> SignerKey {
    SignerKey::from_seed("fuzz.oubli.example/log", &[7; 32]).expect("a valid key name")
}

/// Request validation: a decoded protobuf message is either refused with InvalidArgument, or
/// becomes domain values that hold their invariants and round-trip to the wire.
pub fn request(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 6 {
        0 => {
            let Ok(req) = pb::EnrollRequest::decode(bytes) else { return };
            match convert::new_record(req, DIMENSION, now()) {
                Ok(record) => {
                    unit(record.embedding.as_slice());
                    let wire = convert::provenance_to_pb(&record.provenance);
                    let again = convert::provenance_from_pb(Some(wire), now()).expect("stored provenance validates");
                    assert!(again == record.provenance, "provenance round-trips");
                }
                Err(status) => refused(&status),
            }
        }
        1 => {
            let Ok(req) = pb::SearchRequest::decode(bytes) else { return };
            match convert::embedding(req.probe, "probe", DIMENSION) {
                Ok(e) => unit(e.as_slice()),
                Err(status) => refused(&status),
            }
        }
        2 => {
            let Ok(req) = pb::SubmitAccessRequestRequest::decode(bytes) else { return };
            let count = req.probes.len();
            match convert::probes(req.probes, DIMENSION) {
                Ok(probes) => {
                    assert_eq!(probes.len(), count);
                    probes.iter().for_each(|p| unit(p.as_slice()));
                }
                Err(status) => refused(&status),
            }
            if let Ok(j) = req.jurisdiction_claim.parse::<Jurisdiction>() {
                assert_eq!(j.as_str().parse::<Jurisdiction>().ok(), Some(j));
            }
        }
        3 => {
            let Ok(mut req) = pb::SubmitErasureRequestRequest::decode(bytes) else { return };
            if let Err(status) = convert::erasure_target(&mut req, DIMENSION) {
                refused(&status);
            }
        }
        4 => {
            let Ok(req) = pb::ReviewRequestRequest::decode(bytes) else { return };
            match convert::request_id(&req.request_id) {
                Ok(id) => assert_eq!(id.to_string().parse::<RequestId>(), Ok(id)),
                Err(status) => refused(&status),
            }
            match convert::record_ids(&req.approved_record_ids) {
                Ok(ids) => ids.iter().for_each(|id| assert_eq!(id.to_string().parse::<RecordId>().ok(), Some(*id))),
                Err(status) => refused(&status),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(bytes);
            if let Err(status) = convert::sweep_rule(&text) {
                refused(&status);
            }
            if let Ok(key) = IdempotencyKey::parse(text.to_string()) {
                assert_eq!(key.is_some(), !text.is_empty());
            }
        }
    }
}

fn unit(values: &[f32]) {
    assert_eq!(values.len(), DIMENSION);
    assert!(values.iter().all(|v| v.is_finite()));
    let norm: f32 = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "unit norm, got {norm}");
}

fn refused(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "bad input is InvalidArgument: {}", status.message());
    assert!(!status.message().is_empty(), "a refusal says why");
}

/// Signed notes (C2SP signed-note, tlog-checkpoint) and keys: whatever opens was signed by the
/// key; what the key signs opens back to its text; a changed byte in the text does not open.
pub fn note(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(bytes);
    let signer = signer();
    let key = signer.verifier();
    let keys = std::slice::from_ref(&key);
    match kind % 4 {
        0 => {
            if let Ok(opened) = note::open(&text, keys) {
                assert!(text.starts_with(&opened.text));
                assert_eq!(opened.verified, vec![key.label()]);
            }
        }
        1 => {
            let Ok(signed) = signer.sign(&text) else { return };
            let opened = note::open(&signed, keys).expect("a note the key signed opens");
            assert_eq!(opened.text, text);
            let at = usize::from(kind >> 2) % text.len();
            let b = text.as_bytes()[at];
            let changed = b ^ 1;
            if b != b'\n' && changed.is_ascii_graphic() {
                let mut tampered = signed.into_bytes();
                tampered[at] = changed;
                let tampered = String::from_utf8(tampered).expect("ASCII swapped for ASCII");
                assert!(note::open(&tampered, keys).is_err(), "a changed text must not open");
            }
        }
        2 => {
            if let Ok(cp) = Checkpoint::parse(&text) {
                assert_eq!(cp.text(), text, "the parse is strict: one spelling per checkpoint");
                assert_eq!(Checkpoint::parse(&cp.text()).ok(), Some(cp));
            }
        }
        _ => {
            if let Ok(k) = VerifierKey::parse(&text) {
                assert!(VerifierKey::parse(&k.to_string()).ok() == Some(k));
            }
            if let Ok(k) = SignerKey::parse(&text) {
                assert!(VerifierKey::parse(&k.verifier().to_string()).is_ok());
            }
        }
    }
}

/// Receipts and log entries. Even first byte: the bytes as a received receipt (only what the
/// key signed can pass). Odd: the bytes as a receipt body, signed here as the log would sign it,
/// so the fuzzer reaches the entry, checkpoint and proof checks; a receipt that passes names
/// exactly one leaf.
pub fn receipt(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let signer = signer();
    let key = signer.verifier();
    if let Ok(entry) = Entry::decode(bytes) {
        assert_eq!(entry.encode(), bytes, "an entry has one encoding");
    }
    let text = String::from_utf8_lossy(bytes);
    if kind % 2 == 0 {
        let checks = receipt::verify(&text, &key, None);
        assert!(!checks.is_empty());
        return;
    }
    let Ok(mut body) = serde_json::from_str::<Body>(&text) else { return };
    // Signed as the log signs now (the version-2 context).
    body.format = receipt::FORMAT.into();
    let Ok(note) = signer.sign(&body.checkpoint) else { return };
    body.checkpoint = note.clone();
    let checks = receipt::verify(&Receipt::sign(&body, &signer).to_json(), &key, None);
    assert!(checks.iter().any(|c| c.name == "receipt signature" && c.ok), "{checks:?}");
    if !checks.iter().all(|c| c.ok) {
        return;
    }
    let same = receipt::verify(
        &Receipt::sign(&body, &signer).to_json(),
        &key,
        Some(receipt::Newer { note: &note, proof: &[] }),
    );
    assert!(same.iter().all(|c| c.ok), "a checkpoint is consistent with itself: {same:?}");
    body.leaf_index = body.leaf_index.wrapping_add(1);
    let moved = receipt::verify(&Receipt::sign(&body, &signer).to_json(), &key, None);
    assert!(!moved.iter().all(|c| c.ok), "one proof proves one position");
}

/// RFC 6962 proofs. Mode 0: arbitrary claims (never a panic, never an overflow). Otherwise an
/// honest tree built from the input: its proofs verify, and a flipped bit, another index or
/// another root does not.
pub fn proof(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let mut r = Reader(rest);
        let (index, size1, size2) = (r.u64(), r.u64(), r.u64());
        let leaf = r.hash();
        let root = r.hash();
        let root_len = usize::from(r.byte()) % 40;
        let odd_root = r.take(root_len).to_vec();
        let path: Vec<Hash> = r.0.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
        let _ = merkle::verify_inclusion(&leaf, LeafIndex(index), TreeSize(size1), &path, &root);
        let _ = merkle::verify_consistency(TreeSize(size1), TreeSize(size2), &odd_root, &root, &path);
        let _ = merkle::verify_consistency(TreeSize(size1), TreeSize(size2), &root, &leaf, &path);
        return;
    }
    let mut r = Reader(rest);
    let n = 1 + u64::from(r.u16()) % 300;
    let leaves: Vec<Hash> = (0..n).map(|i| merkle::leaf_hash(&[rest, &i.to_le_bytes()].concat())).collect();
    let (i, m) = (u64::from(r.u16()) % n, 1 + u64::from(r.u16()) % n);
    let (k, byte, bit) = (usize::from(r.byte()), usize::from(r.byte()) % 32, r.byte() % 8);
    let root = merkle::root(&leaves[..], TreeSize(n));

    let path = merkle::inclusion_proof(&leaves[..], LeafIndex(i), TreeSize(n)).expect("index inside the tree");
    let leaf = leaves[i as usize];
    merkle::verify_inclusion(&leaf, LeafIndex(i), TreeSize(n), &path, &root).expect("an honest inclusion proof");
    if !path.is_empty() {
        let mut bad = path.clone();
        bad[k % path.len()][byte] ^= 1 << bit;
        assert!(merkle::verify_inclusion(&leaf, LeafIndex(i), TreeSize(n), &bad, &root).is_err());
        assert!(merkle::verify_inclusion(&leaf, LeafIndex((i + 1) % n), TreeSize(n), &path, &root).is_err());
    }
    assert!(merkle::verify_inclusion(&leaf, LeafIndex(i), TreeSize(n), &path, &flip(root, byte, bit)).is_err());

    let old = merkle::root(&leaves[..], TreeSize(m));
    let path = merkle::consistency_proof(&leaves[..], TreeSize(m), TreeSize(n)).expect("m <= n");
    merkle::verify_consistency(TreeSize(m), TreeSize(n), &old, &root, &path).expect("an honest consistency proof");
    assert!(merkle::verify_consistency(TreeSize(m), TreeSize(n), &flip(old, byte, bit), &root, &path).is_err());
    assert!(merkle::verify_consistency(TreeSize(m), TreeSize(n), &old, &flip(root, byte, bit), &path).is_err());
    if !path.is_empty() {
        let mut bad = path.clone();
        bad[k % path.len()][byte] ^= 1 << bit;
        assert!(merkle::verify_consistency(TreeSize(m), TreeSize(n), &old, &root, &bad).is_err());
    }
}

fn flip(mut h: Hash, byte: usize, bit: u8) -> Hash {
    h[byte] ^= 1 << bit;
    h
}

/// Reads fixed-size values off the front of the input, zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.byte()) << 8 | u16::from(self.byte())
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    fn hash(&mut self) -> Hash {
        let mut h = [0; 32];
        let head = self.take(32);
        h[..head.len()].copy_from_slice(head);
        h
    }
}

/// The seed corpus, by target: valid and near-valid inputs of every variant.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let with = |kind: u8, bytes: Vec<u8>| [vec![kind], bytes].concat();
    let embedding = |values: &[f32]| Some(pb::Embedding { values: values.to_vec() });
    let provenance = pb::Provenance {
        source_uri: "https://photos.example.org/p/123.jpg".into(),
        collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }),
        source_kind: pb::SourceKind::PublicWebScrape.into(),
        legal_basis: pb::LegalBasis::NoneDeclared.into(),
        jurisdiction: "FR".into(),
    };
    let enroll = pb::EnrollRequest {
        embedding: embedding(&[0.5, -0.5, 0.5, 0.5]),
        provenance: Some(provenance),
        idempotency_key: "batch-7/item-3".into(),
    };
    let search =
        pb::SearchRequest { probe: embedding(&[1.0, 2.0, 3.0, 4.0]), k: 10, min_score: Some(0.4), exact: true };
    let access = pb::SubmitAccessRequestRequest {
        probes: vec![pb::Embedding { values: vec![0.1, 0.2, 0.3, 0.4] }, pb::Embedding { values: vec![f32::NAN; 4] }],
        contact: "person@example.org".into(),
        jurisdiction_claim: "fr".into(),
        include_templates: true,
        capture: None,
    };
    let by_records = pb::SubmitErasureRequestRequest {
        access_request_id: "00112233445566778899aabbccddeeff".into(),
        access_request_secret: "ffeeddccbbaa99887766554433221100".into(),
        record_ids: vec!["0123456789abcdef0123456789abcdef".into()],
        ..Default::default()
    };
    let by_probe = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: vec![0.0, 0.0, 1.0, 0.0] }],
        never_enrol_again: true,
        ..Default::default()
    };
    let review = pb::ReviewRequestRequest {
        request_id: "00112233445566778899aabbccddeeff".into(),
        approved_record_ids: vec!["0123456789abcdef0123456789abcdef".into(), "xyz".into()],
        note: "same person".into(),
    };
    let signer = signer();
    let checkpoint = Checkpoint { origin: "fuzz.oubli.example/log".into(), size: 5, root: [9; 32] }.text();
    let signed = signer.sign(&checkpoint).expect("a valid checkpoint text");
    let tree = |mode: u8, n: u16, i: u16, m: u16| {
        [vec![mode], n.to_be_bytes().to_vec(), i.to_be_bytes().to_vec(), m.to_be_bytes().to_vec(), vec![1, 2, 3]]
            .concat()
    };
    vec![
        ("request", "enroll", with(0, enroll.encode_to_vec())),
        ("request", "search", with(1, search.encode_to_vec())),
        ("request", "access", with(2, access.encode_to_vec())),
        ("request", "erase-records", with(3, by_records.encode_to_vec())),
        ("request", "erase-probe", with(3, by_probe.encode_to_vec())),
        ("request", "review", with(4, review.encode_to_vec())),
        ("request", "sweep", with(5, b"jurisdiction=FR".to_vec())),
        ("note", "signed-checkpoint", with(0, signed.clone().into_bytes())),
        ("note", "sign", with(1, checkpoint.clone().into_bytes())),
        ("note", "checkpoint", with(2, checkpoint.into_bytes())),
        ("note", "verifier-key", with(3, signer.verifier().to_string().into_bytes())),
        ("proof", "claims", with(0, [5u64.to_le_bytes(), 9u64.to_le_bytes(), 12u64.to_le_bytes()].concat())),
        ("proof", "tree-7", tree(1, 7, 3, 4)),
        ("proof", "tree-256", tree(1, 255, 254, 128)),
    ]
}

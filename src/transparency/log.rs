//! The log's writer: the tree over every entry, the signer and the latest signed checkpoint.
//!
//! The writer owns the log's lifecycle (recover at open, append, sign, prove, issue receipts);
//! where the rows live is the caller's business. An append puts its rows (leaves, perfect-subtree
//! nodes, the new checkpoint) into a [`LogSink`], the caller's write batch, so an entry is
//! durable exactly when the change it records is: [`LogWriter::stage`] returns a [`Staged`]
//! append that the caller commits once its batch is durable, or rolls back if the write failed.
//! This is the split Tessera and Trillian make between a log and its storage drivers.
use super::{
    event::{Entry, Logged},
    merkle::{Hash, LeafIndex, ProofError, TreeSize},
    note::{Checkpoint, SignerKey},
    receipt::{self, Receipt},
    tree::Tree,
};

/// Where an append's rows go: the caller's write batch.
pub trait LogSink {
    /// The entry at leaf `index` (its canonical bytes).
    fn put_leaf(&mut self, index: u64, bytes: &[u8]);
    /// The canonical statements of the receipt for leaf `index`, which the entry commits to.
    fn put_statements(&mut self, index: u64, canonical: &str);
    /// The hash of the perfect subtree at (`level`, `index`); level 0 holds leaf hashes.
    fn put_node(&mut self, level: u32, index: u64, hash: &Hash);
    /// The checkpoint that covers every leaf put so far.
    fn put_checkpoint(&mut self, note: &str);
}

/// Why a stored log cannot be opened: its rows disagree with each other or with the last
/// signed checkpoint, or the storage under it failed.
#[derive(Debug)]
pub enum Recovery<E> {
    Mismatch(String),
    Storage(E),
}

impl<E> From<ProofError> for Recovery<E> {
    fn from(e: ProofError) -> Self {
        Recovery::Mismatch(e.to_string())
    }
}

/// An append staged into a sink: the tree has grown and a checkpoint is signed, but neither
/// counts until [`LogWriter::commit`] (or is undone by [`LogWriter::roll_back`]).
#[must_use = "a staged append must be committed once durable, or rolled back"]
pub struct Staged {
    before: TreeSize,
    checkpoint: String,
}

impl Staged {
    /// The leaf index of the first staged entry.
    pub fn first(&self) -> u64 {
        self.before.0
    }
}

/// The transparency log in memory: every entry's hash (64 bytes a leaf, for O(log n) proofs),
/// the signing key and the latest checkpoint.
pub struct LogWriter {
    origin: String,
    signer: SignerKey,
    tree: Tree,
    checkpoint: String,
}

impl LogWriter {
    /// Rebuilds the tree from the stored `leaves` (in index order) and checks it: every stored
    /// subtree node (`node(level, index)`) must be what the leaves give, and the last signed
    /// `checkpoint` must cover exactly these leaves with this root. A log with no entries and no
    /// checkpoint gets its first one, returned as the second value for the caller to persist.
    pub fn recover<E>(
        origin: String,
        signer: SignerKey,
        leaves: impl IntoIterator<Item = Result<(u64, Vec<u8>), E>>,
        mut node: impl FnMut(u32, u64) -> Result<Option<Vec<u8>>, E>,
        checkpoint: Option<String>,
    ) -> Result<(LogWriter, Option<String>), Recovery<E>> {
        let mut tree = Tree::new();
        for (expected, item) in leaves.into_iter().enumerate() {
            let (index, bytes) = item.map_err(Recovery::Storage)?;
            if index != expected as u64 {
                return Err(Recovery::Mismatch(format!("entry {expected} is missing")));
            }
            // The stored nodes are derived state: they must be exactly what the entries give.
            for (level, i, hash) in tree.append(&bytes).1 {
                if node(level, i).map_err(Recovery::Storage)?.as_deref() != Some(hash.as_slice()) {
                    return Err(Recovery::Mismatch(format!("stored tree node ({level}, {i}) differs from its leaves")));
                }
            }
        }
        let mut log = LogWriter { origin, signer, tree, checkpoint: String::new() };
        match checkpoint {
            None if log.tree.size().0 == 0 => {
                log.checkpoint = log.sign();
                let first = log.checkpoint.clone();
                Ok((log, Some(first)))
            }
            None => Err(Recovery::Mismatch("entries without a checkpoint".into())),
            Some(note) => {
                let signed = receipt::open_checkpoint(&note, &log.signer.verifier()).map_err(Recovery::Mismatch)?;
                let size = log.tree.size();
                if signed.size != size.0 || signed.root != log.tree.root(size)? {
                    return Err(Recovery::Mismatch(format!(
                        "the checkpoint covers {} entries, the log holds {} with a different root",
                        signed.size, size.0
                    )));
                }
                log.checkpoint = note;
                Ok((log, None))
            }
        }
    }

    fn sign(&self) -> String {
        self.sign_at(self.tree.size())
    }

    /// The checkpoint of the tree's first `size` leaves. Ed25519 signatures are deterministic,
    /// so the same size always gives the same note.
    fn sign_at(&self, size: TreeSize) -> String {
        let root = self.tree.root(size).expect("the tree's own size is in range");
        let text = Checkpoint { origin: self.origin.clone(), size: size.0, root }.text();
        self.signer.sign(&text).expect("checkpoint text is a valid note text")
    }

    /// Appends `entries` to the tree and puts their rows and the checkpoint covering them into
    /// `sink`. Nothing is visible (proofs, checkpoint) until the staged append is committed.
    pub fn stage(&mut self, entries: &[Logged], sink: &mut dyn LogSink) -> Staged {
        let encoded: Vec<Vec<u8>> = entries.iter().map(|logged| logged.entry.encode()).collect();
        let raw: Vec<(&[u8], Option<&str>)> = encoded
            .iter()
            .zip(entries)
            .map(|(bytes, logged)| (bytes.as_slice(), logged.statements.as_deref()))
            .collect();
        self.stage_raw(&raw, sink)
    }

    /// [`LogWriter::stage`] for leaves already encoded, each with its canonical statements if
    /// it has stored ones: a restored store copying back the leaves its backup lacks.
    pub fn stage_raw(&mut self, leaves: &[(&[u8], Option<&str>)], sink: &mut dyn LogSink) -> Staged {
        let before = self.tree.size();
        for (bytes, statements) in leaves {
            let (index, nodes) = self.tree.append(bytes);
            sink.put_leaf(index.0, bytes);
            if let Some(canonical) = statements {
                sink.put_statements(index.0, canonical);
            }
            for (level, i, hash) in nodes {
                sink.put_node(level, i, &hash);
            }
        }
        let checkpoint = self.sign();
        sink.put_checkpoint(&checkpoint);
        Staged { before, checkpoint }
    }

    /// The root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.tree.root(TreeSize(size))
    }

    /// The staged rows are durable: their checkpoint becomes the latest.
    pub fn commit(&mut self, staged: Staged) {
        self.checkpoint = staged.checkpoint;
    }

    /// The staged rows were not written: the tree forgets them.
    pub fn roll_back(&mut self, staged: Staged) {
        self.tree.truncate(staged.before);
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How many entries the log holds.
    pub fn size(&self) -> u64 {
        self.tree.size().0
    }

    /// The latest signed checkpoint (a C2SP signed note).
    pub fn checkpoint(&self) -> &str {
        &self.checkpoint
    }

    /// The log's verifier key, `<origin>+<key id>+<key>`.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().to_string()
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (`None`: the latest).
    pub fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), ProofError> {
        let size = size.map_or(self.tree.size(), TreeSize);
        Ok((size.0, self.tree.inclusion_proof(LeafIndex(index), size)?))
    }

    /// The consistency proof between two tree sizes (`to`: `None` is the latest).
    pub fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), ProofError> {
        let to = to.map_or(self.tree.size(), TreeSize);
        Ok((to.0, self.tree.consistency_proof(TreeSize(from), to)?))
    }

    /// A signed receipt for the entry at `index` (its stored `bytes`, decoded as `entry`) with
    /// `statements`, proven against the checkpoint of the first tree that holds it (`index + 1`
    /// leaves): the same bytes every time it is asked for. That the log only grew since is a
    /// consistency proof to any later checkpoint.
    pub fn receipt(
        &self,
        index: u64,
        bytes: &[u8],
        entry: &Entry,
        statements: receipt::Statements,
    ) -> Result<Receipt, ProofError> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let size = TreeSize(index + 1);
        if size > self.tree.size() {
            return Err(ProofError::IndexOutOfRange { index, size: self.tree.size().0 });
        }
        let proof = self.tree.inclusion_proof(LeafIndex(index), size)?;
        let body = receipt::Body {
            format: receipt::FORMAT.into(),
            log_origin: self.origin.clone(),
            event: entry.event.name().into(),
            logged_at: entry.time.to_string(),
            commitment: hex::encode(entry.event.commitment()),
            done: statements.done,
            verified: statements.verified,
            pending: statements.pending,
            not_claimed: statements.not_claimed,
            entry: STANDARD.encode(bytes),
            leaf_index: index,
            checkpoint: self.sign_at(size),
            inclusion_proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
        };
        Ok(Receipt::sign(&body, &self.signer))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::transparency::event::commitment;

    /// A sink over maps: what a store's batch would hold.
    #[derive(Default)]
    struct Rows {
        leaves: BTreeMap<u64, Vec<u8>>,
        nodes: BTreeMap<(u32, u64), Vec<u8>>,
        checkpoint: Option<String>,
    }

    impl LogSink for Rows {
        fn put_leaf(&mut self, index: u64, bytes: &[u8]) {
            self.leaves.insert(index, bytes.to_vec());
        }
        fn put_node(&mut self, level: u32, index: u64, hash: &Hash) {
            self.nodes.insert((level, index), hash.to_vec());
        }
        fn put_statements(&mut self, _: u64, _: &str) {}
        fn put_checkpoint(&mut self, note: &str) {
            self.checkpoint = Some(note.into());
        }
    }

    fn signer() -> SignerKey {
        SignerKey::from_seed("test.example/log", &[7; 32]).unwrap()
    }

    fn entry(n: u8) -> Logged {
        Logged::enrolment(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            commitment(&[n; 16], crate::record::RecordId::from_bytes([n; 16])),
        )
    }

    fn reopen(rows: &Rows) -> Result<(LogWriter, Option<String>), Recovery<()>> {
        LogWriter::recover(
            "test.example/log".into(),
            signer(),
            rows.leaves.iter().map(|(i, b)| Ok((*i, b.clone()))),
            |level, i| Ok(rows.nodes.get(&(level, i)).cloned()),
            rows.checkpoint.clone(),
        )
    }

    #[test]
    fn appends_are_visible_only_when_committed_and_recover_checks_every_row() {
        let mut rows = Rows::default();
        let (mut log, first) = reopen(&rows).unwrap();
        rows.checkpoint = first;
        let empty = log.checkpoint().to_string();

        // A failed write: the tree forgets the entries, the checkpoint stays.
        let staged = log.stage(&[entry(1)], &mut Rows::default());
        log.roll_back(staged);
        assert_eq!((log.size(), log.checkpoint()), (0, empty.as_str()));

        let staged = log.stage(&[entry(1), entry(2), entry(3)], &mut rows);
        assert_eq!(staged.first(), 0);
        assert_eq!(log.checkpoint(), empty, "nothing is published before the batch is durable");
        log.commit(staged);
        assert_eq!(log.size(), 3);
        assert_eq!(rows.checkpoint.as_deref(), Some(log.checkpoint()));

        let (again, new) = reopen(&rows).unwrap();
        assert!(new.is_none());
        assert_eq!((again.size(), again.checkpoint()), (3, log.checkpoint()));
        let e = entry(2).entry;
        let statements = crate::transparency::statements::for_event(&e.event);
        let receipt = again.receipt(1, &e.encode(), &e, statements.clone()).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer().verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(receipt, log.receipt(1, &e.encode(), &e, statements.clone()).unwrap(), "the same bytes every time");
        let body: receipt::Body = serde_json::from_str(&receipt.body).unwrap();
        assert!(body.checkpoint.contains("\n2\n"), "proven in the first tree that holds it: {}", body.checkpoint);
        let mut other = statements;
        other.done.push("something the leaf does not commit to".into());
        let forged = again.receipt(1, &e.encode(), &e, other).unwrap();
        let checks = receipt::verify(&forged.to_json(), &signer().verifier(), None);
        assert!(checks.iter().any(|c| c.name == "statement digest in the leaf" && !c.ok), "{checks:?}");

        let mut altered = Rows { leaves: rows.leaves.clone(), nodes: rows.nodes.clone(), checkpoint: None };
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("without a checkpoint")));
        altered.checkpoint = rows.checkpoint.clone();
        altered.leaves.insert(1, entry(9).entry.encode());
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("differs from its leaves")));
        altered.leaves.remove(&1);
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("entry 1 is missing")));
        altered.leaves = rows.leaves.clone();
        altered.checkpoint = Some(empty);
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("covers 0 entries")));
    }
}

#[cfg(test)]
mod versions {
    use base64::{Engine, engine::general_purpose::STANDARD};

    use super::*;
    use crate::transparency::{
        event::{Event, Logged},
        receipt::{Body, FORMAT_V1, Statements},
        statements::for_event,
    };

    struct Sink;
    impl LogSink for Sink {
        fn put_leaf(&mut self, _: u64, _: &[u8]) {}
        fn put_node(&mut self, _: u32, _: u64, _: &Hash) {}
        fn put_statements(&mut self, _: u64, _: &str) {}
        fn put_checkpoint(&mut self, _: &str) {}
    }

    /// A version-1 leaf (no statements digest) and a version-1 receipt (signed without the
    /// context), as written before statements were committed, still read and verify; a body
    /// signed under one context does not verify under the other.
    #[test]
    fn version_1_leaves_and_receipts_still_verify_and_signatures_are_domain_separated() {
        let signer = SignerKey::from_seed("test.example/log", &[7; 32]).unwrap();
        let (mut log, _) = LogWriter::recover::<()>(
            "test.example/log".into(),
            SignerKey::from_seed("test.example/log", &[7; 32]).unwrap(),
            Vec::new(),
            |_, _| Ok(None),
            None,
        )
        .unwrap();
        let time = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let event = Event::ErasureTemplatesPurged { commitment: [1; 32], records: 2 };
        let mut v1 = Logged::plain(time, event.clone());
        v1.entry.statements = None;
        v1.statements = None;
        let staged = log.stage(&[v1.clone(), Logged::plain(time, event.clone())], &mut Sink);
        log.commit(staged);
        let bytes = v1.entry.encode();
        assert_eq!(bytes[0], 1);
        let statements = for_event(&event);
        let receipt = log.receipt(0, &bytes, &v1.entry, statements.clone()).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        let digest = checks.iter().find(|c| c.name == "statement digest in the leaf").unwrap();
        assert!(digest.detail.contains("version-1 leaf"), "{digest:?}");

        // An old receipt: format v1, its body signed alone.
        let mut body: Body = serde_json::from_str(&receipt.body).unwrap();
        body.format = FORMAT_V1.into();
        body.not_claimed = Vec::new();
        let text = serde_json::to_string(&body).unwrap();
        let old = Receipt {
            signature: STANDARD.encode(signer.sign_bytes(text.as_bytes())),
            key: signer.verifier().to_string(),
            body: text.clone(),
        };
        let checks = receipt::verify(&old.to_json(), &signer.verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");

        // A version-2 body signed without its context does not verify, nor the reverse.
        let v2 = Receipt { body: receipt.body.clone(), ..old.clone() };
        let checks = receipt::verify(&v2.to_json(), &signer.verifier(), None);
        assert!(checks.iter().any(|c| c.name == "receipt signature" && !c.ok), "{checks:#?}");
        let v1_with_context = Receipt { body: text, ..receipt.clone() };
        let checks = receipt::verify(&v1_with_context.to_json(), &signer.verifier(), None);
        assert!(checks.iter().any(|c| c.name == "receipt signature" && !c.ok), "{checks:#?}");
        // The version-2 leaf beside it: statements committed, and checked.
        let v2 = Logged::plain(time, event);
        let receipt = log.receipt(1, &v2.entry.encode(), &v2.entry, statements.clone()).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        let altered = Statements { verified: vec!["more than was checked".into()], ..statements };
        let receipt = log.receipt(1, &v2.entry.encode(), &v2.entry, altered).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        assert!(checks.iter().any(|c| c.name == "statement digest in the leaf" && !c.ok), "{checks:#?}");
    }

    /// A leaf whose committed statements state another count than the leaf holds: the digest
    /// holds (the operator signed it so), the counts check does not.
    #[test]
    fn a_count_the_statements_do_not_state_fails_its_check() {
        let signer = SignerKey::from_seed("test.example/log", &[7; 32]).unwrap();
        let again = SignerKey::from_seed("test.example/log", &[7; 32]).unwrap();
        let (mut log, _) =
            LogWriter::recover::<()>("test.example/log".into(), again, Vec::new(), |_, _| Ok(None), None).unwrap();
        let time = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let said = for_event(&Event::ErasureKeysPurged { commitment: [1; 32], records: 2, epoch: 1 });
        let event = Event::ErasureKeysPurged { commitment: [1; 32], records: 3, epoch: 1 };
        let entry = Logged::new(time, event, &said);
        let staged = log.stage(std::slice::from_ref(&entry), &mut Sink);
        log.commit(staged);
        let receipt = log.receipt(0, &entry.entry.encode(), &entry.entry, said).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        let by_name = |name: &str| checks.iter().find(|c| c.name == name).unwrap();
        assert!(by_name("statement digest in the leaf").ok, "{checks:#?}");
        let counts = by_name("counts in the leaf against the statements");
        assert!(!counts.ok && counts.detail.contains("3 record(s) deleted"), "{counts:?}");
    }
}

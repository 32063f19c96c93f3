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
    /// The checkpoint of the tree of `size` leaves, signed in the same batch as the leaves it
    /// covers (a log that signs per batch) or later (a log that signs at a cadence).
    fn put_checkpoint(&mut self, size: u64, note: &str);
}

/// A sink that keeps nothing: for a log held only in memory (tests, a simulated log).
pub struct Discard;

impl LogSink for Discard {
    fn put_leaf(&mut self, _: u64, _: &[u8]) {}
    fn put_statements(&mut self, _: u64, _: &str) {}
    fn put_node(&mut self, _: u32, _: u64, _: &Hash) {}
    fn put_checkpoint(&mut self, _: u64, _: &str) {}
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

/// An append staged into a sink: the tree has grown (and, signing per batch, a checkpoint is
/// signed), but nothing counts until [`LogWriter::commit`] (or is undone by
/// [`LogWriter::roll_back`]).
#[must_use = "a staged append must be committed once durable, or rolled back"]
pub struct Staged {
    before: TreeSize,
    after: TreeSize,
    checkpoint: Option<String>,
}

impl Staged {
    /// The leaf index of the first staged entry.
    pub fn first(&self) -> u64 {
        self.before.0
    }

    /// The checkpoint signed in the batch (signing per batch), to mirror with the leaves.
    pub fn checkpoint(&self) -> Option<&str> {
        self.checkpoint.as_deref()
    }
}

/// When checkpoints are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// One checkpoint in every write batch, covering it: a receipt is ready at once (tests,
    /// and a log no witness follows).
    PerBatch,
    /// Leaves are sequenced in their batch; checkpoints are signed later by the integrator
    /// ([`LogWriter::to_sign`], [`LogWriter::publish`]), at a cadence witnesses can follow.
    Cadence,
}

/// The transparency log in memory: every entry's hash (64 bytes a leaf, for O(log n) proofs),
/// the signing key and the latest published checkpoint.
pub struct LogWriter {
    origin: String,
    signer: SignerKey,
    tree: Tree,
    checkpoint: String,
    /// The size of the latest published checkpoint: proofs and tiles go no further.
    published: TreeSize,
    signing: Signing,
}

impl LogWriter {
    /// Rebuilds the tree from the stored `leaves` (in index order) and checks it: every stored
    /// subtree node (`node(level, index)`) must be what the leaves give, and the last signed
    /// `checkpoint` must cover a prefix of these leaves with its root (all of them, signing per
    /// batch; leaves sequenced since may follow it, signing at a cadence). A log with no
    /// entries and no checkpoint gets its first one, returned as the second value for the
    /// caller to persist. The log signs per batch until told otherwise ([`LogWriter::set_signing`]).
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
        let mut log = LogWriter {
            origin,
            signer,
            tree,
            checkpoint: String::new(),
            published: TreeSize(0),
            signing: Signing::PerBatch,
        };
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
                if signed.size > size.0 || signed.root != log.tree.root(TreeSize(signed.size))? {
                    return Err(Recovery::Mismatch(format!(
                        "the checkpoint covers {} entries, the log holds {} with a different root",
                        signed.size, size.0
                    )));
                }
                log.checkpoint = note;
                log.published = TreeSize(signed.size);
                Ok((log, None))
            }
        }
    }

    fn sign(&self) -> String {
        self.sign_at(self.tree.size())
    }

    fn sign_at_checked(&self, size: TreeSize) -> Result<String, ProofError> {
        if size > self.tree.size() {
            return Err(ProofError::IndexOutOfRange { index: size.0.saturating_sub(1), size: self.tree.size().0 });
        }
        Ok(self.sign_at(size))
    }

    /// The checkpoint of the tree's first `size` leaves. Ed25519 signatures are deterministic,
    /// so the same size always gives the same note.
    fn sign_at(&self, size: TreeSize) -> String {
        let root = self.tree.root(size).expect("the tree's own size is in range");
        let text = Checkpoint { origin: self.origin.clone(), size: size.0, root }.text();
        self.signer.sign(&text).expect("checkpoint text is a valid note text")
    }

    /// When checkpoints are signed from now on.
    pub fn set_signing(&mut self, signing: Signing) {
        self.signing = signing;
    }

    pub fn signing(&self) -> Signing {
        self.signing
    }

    /// Appends `entries` to the tree and puts their rows (and, signing per batch, the
    /// checkpoint covering them) into `sink`. Nothing is visible (proofs, checkpoint) until the
    /// staged append is committed.
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
        let after = self.tree.size();
        let checkpoint = match self.signing {
            Signing::PerBatch => {
                let note = self.sign();
                sink.put_checkpoint(after.0, &note);
                Some(note)
            }
            Signing::Cadence => None,
        };
        Staged { before, after, checkpoint }
    }

    /// The checkpoint of every leaf sequenced so far, for the integrator to get cosigned and
    /// [`publish`](LogWriter::publish): its size and note.
    pub fn to_sign(&self) -> (u64, String) {
        (self.tree.size().0, self.sign())
    }

    /// Publishes `note` (the log's checkpoint of `size` leaves, with any cosignatures added
    /// to it): it becomes the one served, and proofs and tiles reach it. Refused unless it is
    /// this log's signature over its own tree at that size, no smaller than the published one.
    pub fn publish(&mut self, size: u64, note: String) -> Result<(), String> {
        self.check_publishable(size, &note)?;
        self.checkpoint = note;
        self.published = TreeSize(size);
        Ok(())
    }

    /// What [`LogWriter::publish`] checks, without publishing.
    pub fn check_publishable(&self, size: u64, note: &str) -> Result<(), String> {
        let signed = receipt::open_checkpoint(note, &self.signer.verifier())?;
        if signed.size != size || size < self.published.0 {
            return Err(format!("a checkpoint of {size} leaves cannot follow one of {}", self.published.0));
        }
        if self.tree.root(TreeSize(size)).map_err(|e| e.to_string())? != signed.root {
            return Err(format!("the checkpoint's root is not this tree's at {size} leaves"));
        }
        Ok(())
    }

    /// The size of the latest published checkpoint.
    pub fn published_size(&self) -> u64 {
        self.published.0
    }

    /// The hash tile `path` of the published tree, if it holds it.
    pub fn tile(&self, path: &super::tiles::TilePath) -> Option<Vec<u8>> {
        match *path {
            super::tiles::TilePath::Hashes { level, index, width } if super::tiles::exists(path, self.published.0) => {
                Some(super::tiles::hash_tile(&self.tree, level, index, width))
            }
            _ => None,
        }
    }

    /// The root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.tree.root(TreeSize(size))
    }

    /// The staged rows are durable: their checkpoint (signing per batch) becomes the latest.
    pub fn commit(&mut self, staged: Staged) {
        if let Some(note) = staged.checkpoint {
            self.checkpoint = note;
            self.published = staged.after;
        }
    }

    /// The staged rows were not written: the tree forgets them.
    pub fn roll_back(&mut self, staged: Staged) {
        self.tree.truncate(staged.before);
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// How many entries the log holds (sequenced, published or not).
    pub fn size(&self) -> u64 {
        self.tree.size().0
    }

    /// The latest published checkpoint (a C2SP signed note, with its cosignatures).
    pub fn checkpoint(&self) -> &str {
        &self.checkpoint
    }

    /// The log's verifier key, `<origin>+<key id>+<key>`.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier().to_string()
    }

    /// A size to prove at: `None` is the published one; none beyond it (no checkpoint signs it).
    fn provable(&self, size: Option<u64>) -> Result<TreeSize, ProofError> {
        let size = size.map_or(self.published, TreeSize);
        if size > self.published {
            return Err(ProofError::SizesReversed { size1: size.0, size2: self.published.0 });
        }
        Ok(size)
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (`None`: the published
    /// one).
    pub fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), ProofError> {
        let size = self.provable(size)?;
        Ok((size.0, self.tree.inclusion_proof(LeafIndex(index), size)?))
    }

    /// The consistency proof between two tree sizes (`to`: `None` is the published one).
    pub fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), ProofError> {
        let to = self.provable(to)?;
        Ok((to.0, self.tree.consistency_proof(TreeSize(from), to)?))
    }

    /// The consistency proof between two sizes of the sequenced tree, published or not: what
    /// the integrator sends a witness before publishing.
    pub fn consistency_proof_unpublished(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        self.tree.consistency_proof(TreeSize(from), TreeSize(to))
    }

    /// A signed receipt for the entry at `index` (its stored `bytes`, decoded as `entry`) with
    /// `statements`, proven against `against`: the first published checkpoint that covers it
    /// (with the cosignatures it was published with), or, for a leaf logged before checkpoints
    /// were kept, the checkpoint of the first tree that holds it (`index + 1` leaves, signed
    /// now: Ed25519 is deterministic). The same bytes every time it is asked for. That the log
    /// only grew since is a consistency proof to any later checkpoint.
    pub fn receipt(
        &self,
        index: u64,
        bytes: &[u8],
        entry: &Entry,
        statements: receipt::Statements,
        against: Option<&str>,
    ) -> Result<Receipt, ProofError> {
        use base64::{Engine, engine::general_purpose::STANDARD};
        let (size, checkpoint) = match against {
            None => (TreeSize(index + 1), self.sign_at_checked(TreeSize(index + 1))?),
            Some(note) => {
                let signed = receipt::open_checkpoint(note, &self.signer.verifier())
                    .map_err(|_| ProofError::IndexOutOfRange { index, size: 0 })?;
                (TreeSize(signed.size), note.to_string())
            }
        };
        if index >= size.0 || size > self.tree.size() {
            return Err(ProofError::IndexOutOfRange { index, size: size.0.min(self.tree.size().0) });
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
            checkpoint,
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
        fn put_checkpoint(&mut self, _: u64, note: &str) {
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
        let receipt = again.receipt(1, &e.encode(), &e, statements.clone(), None).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer().verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(
            receipt,
            log.receipt(1, &e.encode(), &e, statements.clone(), None).unwrap(),
            "the same bytes every time"
        );
        let body: receipt::Body = serde_json::from_str(&receipt.body).unwrap();
        assert!(body.checkpoint.contains("\n2\n"), "proven in the first tree that holds it: {}", body.checkpoint);
        let mut other = statements;
        other.done.push("something the leaf does not commit to".into());
        let forged = again.receipt(1, &e.encode(), &e, other, None).unwrap();
        let checks = receipt::verify(&forged.to_json(), &signer().verifier(), None);
        assert!(checks.iter().any(|c| c.name == "statement digest in the leaf" && !c.ok), "{checks:?}");

        let mut altered = Rows { leaves: rows.leaves.clone(), nodes: rows.nodes.clone(), checkpoint: None };
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("without a checkpoint")));
        altered.checkpoint = rows.checkpoint.clone();
        altered.leaves.insert(1, entry(9).entry.encode());
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("differs from its leaves")));
        altered.leaves.remove(&1);
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("entry 1 is missing")));
        // An older checkpoint covers a prefix (a log signing at a cadence sequences leaves before
        // it signs them): it opens, publishing only what that checkpoint signs.
        altered.leaves = rows.leaves.clone();
        altered.checkpoint = Some(empty);
        let (older, _) = reopen(&altered).unwrap();
        assert_eq!((older.size(), older.published_size()), (3, 0));
        assert!(older.inclusion_proof(0, None).is_err(), "no proof beyond the published checkpoint");
        // A checkpoint of more leaves than are stored: leaves were lost.
        altered.checkpoint = rows.checkpoint.clone();
        altered.leaves.remove(&2);
        assert!(matches!(reopen(&altered), Err(Recovery::Mismatch(m)) if m.contains("covers 3 entries")));
    }
}

#[cfg(test)]
mod cadence {
    use super::*;
    use crate::transparency::{event::commitment, statements::for_event};

    struct Sink(Vec<u64>);
    impl LogSink for Sink {
        fn put_leaf(&mut self, _: u64, _: &[u8]) {}
        fn put_node(&mut self, _: u32, _: u64, _: &Hash) {}
        fn put_statements(&mut self, _: u64, _: &str) {}
        fn put_checkpoint(&mut self, size: u64, _: &str) {
            self.0.push(size);
        }
    }

    fn entry(n: u8) -> Logged {
        Logged::enrolment(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            commitment(&[n; 16], crate::record::RecordId::from_bytes([n; 16])),
        )
    }

    /// Signing at a cadence: a batch sequences its leaves but publishes nothing; proofs stop at
    /// the published size until the integrator publishes a checkpoint; a receipt is proven
    /// against the published checkpoint that covers it, and a stale or foreign one is refused.
    #[test]
    fn leaves_wait_for_the_integrator_and_receipts_use_the_published_checkpoint() {
        let key = || SignerKey::from_seed("test.example/log", &[7; 32]).unwrap();
        let (mut log, _) =
            LogWriter::recover::<()>("test.example/log".into(), key(), Vec::new(), |_, _| Ok(None), None).unwrap();
        log.set_signing(Signing::Cadence);
        let mut sink = Sink(Vec::new());
        let staged = log.stage(&[entry(1), entry(2)], &mut sink);
        assert!(staged.checkpoint().is_none());
        log.commit(staged);
        let staged = log.stage(&[entry(3)], &mut sink);
        log.commit(staged);
        assert!(sink.0.is_empty(), "no checkpoint in a batch");
        assert_eq!((log.size(), log.published_size()), (3, 0));
        assert!(log.inclusion_proof(0, None).is_err(), "nothing published covers leaf 0");
        assert!(log.inclusion_proof(0, Some(3)).is_err());

        let (size, note) = log.to_sign();
        assert_eq!(size, 3);
        let other = SignerKey::from_seed("test.example/log", &[8; 32]).unwrap();
        let (_, foreign) = {
            let (mut l, _) =
                LogWriter::recover::<()>("test.example/log".into(), other, Vec::new(), |_, _| Ok(None), None).unwrap();
            let staged = l.stage(&[entry(1), entry(2), entry(3)], &mut Sink(Vec::new()));
            l.commit(staged);
            l.to_sign()
        };
        assert!(log.publish(3, foreign).is_err(), "another key's checkpoint");
        assert!(log.publish(2, note.clone()).is_err(), "a size the note does not state");
        log.publish(3, note.clone()).unwrap();
        assert_eq!((log.published_size(), log.checkpoint()), (3, note.as_str()));
        let (_, two) = {
            let (mut l, _) =
                LogWriter::recover::<()>("test.example/log".into(), key(), Vec::new(), |_, _| Ok(None), None).unwrap();
            let staged = l.stage(&[entry(1), entry(2)], &mut Sink(Vec::new()));
            l.commit(staged);
            l.to_sign()
        };
        assert!(log.publish(2, two).is_err(), "a published checkpoint never shrinks");

        let e = entry(1).entry;
        let receipt = log.receipt(0, &e.encode(), &e, for_event(&e.event), Some(&note)).unwrap();
        let body: receipt::Body = serde_json::from_str(&receipt.body).unwrap();
        assert_eq!(body.checkpoint, note);
        let checks = receipt::verify(&receipt.to_json(), &key().verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
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

    use super::Discard as Sink;

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
        let receipt = log.receipt(0, &bytes, &v1.entry, statements.clone(), None).unwrap();
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
        let receipt = log.receipt(1, &v2.entry.encode(), &v2.entry, statements.clone(), None).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        let altered = Statements { verified: vec!["more than was checked".into()], ..statements };
        let receipt = log.receipt(1, &v2.entry.encode(), &v2.entry, altered, None).unwrap();
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
        let receipt = log.receipt(0, &entry.entry.encode(), &entry.entry, said, None).unwrap();
        let checks = receipt::verify(&receipt.to_json(), &signer.verifier(), None);
        let by_name = |name: &str| checks.iter().find(|c| c.name == name).unwrap();
        assert!(by_name("statement digest in the leaf").ok, "{checks:#?}");
        let counts = by_name("counts in the leaf against the statements");
        assert!(!counts.ok && counts.detail.contains("3 record(s) deleted"), "{counts:?}");
    }
}

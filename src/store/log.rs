//! The transparency log's rows in RocksDB: `log` (entries by index), `log_nodes` (every perfect
//! subtree's hash), `log_statements` (each receipt's canonical statements, frozen when its
//! entry was logged) and the latest checkpoint in `meta`. The log itself (tree, signing, proofs,
//! receipts) is [`LogWriter`]'s; this file only reads its rows at open and puts an append's rows
//! into the same write batch as the change it records, so the log can never miss or invent one.
//! Once that write is durable the new leaves and checkpoint are appended to the mirror in the
//! key dir and synced (`outside.rs`), and only then is the checkpoint served.
use rocksdb::{DB, IteratorMode, WriteBatch};

use super::{
    CF_LOG, CF_LOG_NODES, CF_LOG_STATEMENTS, CF_META, Error, KeyRing, META_CHECKPOINT, META_LOG_ORIGIN, Store,
    outside::MirrorLeaf, synced,
};
use crate::transparency::{
    event::{Entry, Logged},
    log::{LogSink, LogWriter, Recovery},
    merkle::Hash,
    receipt::{self, Receipt},
};

impl Store {
    /// Writes `batch` and the changes `fill` makes (given the first new leaf index) together with log
    /// entries for `events` and the checkpoint that covers them, in one synced write: the log
    /// can never miss or invent a change. Then mirrors the new leaves and checkpoint in the key
    /// dir (synced) before the checkpoint is served. Returns the first new leaf index.
    pub(super) fn write_logged_with(
        &self,
        mut batch: WriteBatch,
        events: &[Logged],
        fill: impl FnOnce(u64, &mut WriteBatch),
    ) -> Result<u64, Error> {
        let mut log = self.log.lock();
        let mut mirror = self.mirror.lock();
        mirror.usable()?;
        fill(log.size(), &mut batch);
        let mut sink = BatchSink { store: self, batch: &mut batch, mirrored: Vec::with_capacity(events.len()) };
        let staged = log.stage(events, &mut sink);
        let mirrored = sink.mirrored;
        crate::failpoint::hit("log.signed");
        let first = staged.first();
        match self.db.write_opt(batch, &synced()) {
            Ok(()) => {
                log.commit(staged);
                crate::failpoint::hit("log.before-mirror");
                // A failure leaves the mirror behind the data dir: caught up at the next open.
                mirror.append(first, &mirrored, log.checkpoint())?;
                Ok(first)
            }
            Err(e) => {
                log.roll_back(staged);
                Err(e.into())
            }
        }
    }

    /// The latest signed checkpoint (a C2SP signed note) that the key dir's mirror holds: none
    /// is served before the leaves it covers are outside the data dir too.
    pub fn checkpoint(&self) -> String {
        self.mirror.lock().published().to_string()
    }

    /// The stored leaves `from..to` and their statements, as mirrored.
    pub(super) fn mirror_leaves(&self, from: u64, to: u64) -> Result<Vec<MirrorLeaf>, Error> {
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for (index, bytes) in self.entries(from, to)? {
            if index != from + out.len() as u64 {
                return Err(Error::Corrupt(format!("log entry {} is missing", from + out.len() as u64)));
            }
            let statements = match self.db.get_cf(self.cf(CF_LOG_STATEMENTS), index.to_be_bytes())? {
                None => None,
                Some(text) => {
                    Some(String::from_utf8(text).map_err(|_| Error::Corrupt(format!("statements of entry {index}")))?)
                }
            };
            out.push(MirrorLeaf { bytes, statements });
        }
        Ok(out)
    }

    /// Appends the mirror's `leaves` (the ones a restored data dir lacks), their statements,
    /// tree nodes and a new checkpoint to the data dir's log in one synced write.
    pub(super) fn restore_leaves(&self, log: &mut LogWriter, leaves: &[MirrorLeaf]) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        let raw: Vec<(&[u8], Option<&str>)> =
            leaves.iter().map(|l| (l.bytes.as_slice(), l.statements.as_deref())).collect();
        let mut sink = BatchSink { store: self, batch: &mut batch, mirrored: Vec::new() };
        let staged = log.stage_raw(&raw, &mut sink);
        batch.put_cf(self.cf(CF_META), super::META_RESTORE_PENDING, b"");
        match self.db.write_opt(batch, &synced()) {
            Ok(()) => {
                log.commit(staged);
                Ok(())
            }
            Err(e) => {
                log.roll_back(staged);
                Err(e.into())
            }
        }
    }

    /// The log's verifier key, `<origin>+<key id>+<key>`.
    pub fn verifier_key(&self) -> String {
        self.log.lock().verifier_key()
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (`None`: the latest).
    pub fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Ok(self.log.lock().inclusion_proof(index, size)?)
    }

    /// The consistency proof between two tree sizes (`to`: `None` is the latest).
    pub fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Ok(self.log.lock().consistency_proof(from, to)?)
    }

    /// Log entries `start..end` (clamped to the log).
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        let from = start.to_be_bytes();
        let mode = IteratorMode::From(&from, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_LOG), mode) {
            let (key, value) = item?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| Error::Corrupt("log key".into()))?);
            if index >= end {
                break;
            }
            out.push((index, value.to_vec()));
        }
        Ok(out)
    }

    /// The log entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Entry, Error> {
        let size = self.log.lock().size();
        self.entry_bytes(index, size).map(|(entry, _)| entry)
    }

    fn entry_bytes(&self, index: u64, size: u64) -> Result<(Entry, Vec<u8>), Error> {
        let bytes = self.db.get_cf(self.cf(CF_LOG), index.to_be_bytes())?.ok_or(Error::NoEntry { index, size })?;
        Ok((decode_entry(index, &bytes)?, bytes))
    }

    /// The signed receipt for log entry `index`, stating what was stored with it when it was
    /// logged; `fallback` only for a leaf with no stored statements (see [`receipt_of`]).
    pub fn receipt_with(&self, index: u64, fallback: Option<receipt::Statements>) -> Result<Receipt, Error> {
        let log = self.log.lock();
        let bytes = self.db.get_cf(self.cf(CF_LOG), index.to_be_bytes())?;
        let bytes = bytes.ok_or(Error::NoEntry { index, size: log.size() })?;
        let stored = self.db.get_cf(self.cf(CF_LOG_STATEMENTS), index.to_be_bytes())?;
        receipt_of(&log, index, &bytes, stored.as_deref(), fallback)
    }
}

/// Rebuilds the log's tree from its entries and checks it against the last signed checkpoint
/// ([`LogWriter::recover`]); a new log gets its first (empty) checkpoint.
pub(super) fn open_log(db: &DB, keys: &KeyRing, requested_origin: Option<&str>) -> Result<LogWriter, Error> {
    let meta = db.cf_handle(CF_META).expect("column families are created at open");
    let origin = db.get_cf(meta, META_LOG_ORIGIN)?.ok_or_else(|| Error::Corrupt("no log origin".into()))?;
    let origin = String::from_utf8(origin).map_err(|_| Error::Corrupt("log origin is not UTF-8".into()))?;
    if let Some(requested) = requested_origin.filter(|r| *r != origin) {
        return Err(Error::Corrupt(format!(
            "this data dir's log is named {origin:?}, not {requested:?}; a log cannot be renamed"
        )));
    }
    let signer = keys.log_signer(&origin)?;
    let cf = db.cf_handle(CF_LOG).expect("column families are created at open");
    let nodes = db.cf_handle(CF_LOG_NODES).expect("column families are created at open");
    let checkpoint = match db.get_cf(meta, META_CHECKPOINT)? {
        None => None,
        Some(note) => Some(String::from_utf8(note).map_err(|_| Error::LogMismatch("checkpoint is not UTF-8".into()))?),
    };
    let leaves = db.iterator_cf(cf, IteratorMode::Start).map(|item| -> Result<(u64, Vec<u8>), Error> {
        let (key, value) = item?;
        let index = key.as_ref().try_into().map(u64::from_be_bytes).map_err(|_| Error::Corrupt("log key".into()))?;
        Ok((index, value.into_vec()))
    });
    let node = |level, i| -> Result<Option<Vec<u8>>, Error> { Ok(db.get_cf(nodes, node_key(level, i))?) };
    let (log, first) = LogWriter::recover(origin, signer, leaves, node, checkpoint)?;
    if let Some(first) = first {
        db.put_cf_opt(meta, META_CHECKPOINT, first.as_bytes(), &synced())?;
    }
    Ok(log)
}

/// The stored entry at `index`, decoded.
pub(super) fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, Error> {
    Entry::decode(bytes).map_err(|e| Error::Corrupt(format!("log entry {index}: {e}")))
}

/// The signed receipt for the stored entry `bytes` at `index`, built from stored data only:
/// the `stored` canonical statements, frozen when the entry was logged. A leaf without them
/// is an enrolment (constant statements, rebuilt from the entry) or a version-1 leaf (logged
/// before statements were stored: the workflow's `fallback`, or what the entry shows). The
/// statements are served as stored, even if they no longer match the entry's digest: the
/// holder's check (`oubli verify`) is what catches an altered row.
pub(super) fn receipt_of(
    log: &LogWriter,
    index: u64,
    bytes: &[u8],
    stored: Option<&[u8]>,
    fallback: Option<receipt::Statements>,
) -> Result<Receipt, Error> {
    let entry = decode_entry(index, bytes)?;
    let statements = match stored {
        Some(stored) => serde_json::from_slice(stored)
            .map_err(|e| Error::Corrupt(format!("the statements of log entry {index}: {e}")))?,
        None if entry.statements.is_some() => crate::transparency::statements::for_event(&entry.event),
        None => fallback.unwrap_or_else(|| crate::transparency::statements::for_event(&entry.event)),
    };
    Ok(log.receipt(index, bytes, &entry, statements)?)
}

impl From<Recovery<Error>> for Error {
    /// A stored log that does not check out, or the storage under it failing.
    fn from(e: Recovery<Error>) -> Self {
        match e {
            Recovery::Mismatch(why) => Error::LogMismatch(why),
            Recovery::Storage(e) => e,
        }
    }
}

/// An append's rows, into the store's write batch, and its leaves for the mirror.
struct BatchSink<'a> {
    store: &'a Store,
    batch: &'a mut WriteBatch,
    mirrored: Vec<MirrorLeaf>,
}

impl LogSink for BatchSink<'_> {
    fn put_leaf(&mut self, index: u64, bytes: &[u8]) {
        self.batch.put_cf(self.store.cf(CF_LOG), index.to_be_bytes(), bytes);
        self.mirrored.push(MirrorLeaf { bytes: bytes.to_vec(), statements: None });
    }
    fn put_node(&mut self, level: u32, index: u64, hash: &Hash) {
        self.batch.put_cf(self.store.cf(CF_LOG_NODES), node_key(level, index), hash);
    }
    fn put_statements(&mut self, index: u64, canonical: &str) {
        self.batch.put_cf(self.store.cf(CF_LOG_STATEMENTS), index.to_be_bytes(), canonical.as_bytes());
        if let Some(leaf) = self.mirrored.last_mut() {
            leaf.statements = Some(canonical.to_string());
        }
    }
    fn put_checkpoint(&mut self, note: &str) {
        self.batch.put_cf(self.store.cf(CF_META), META_CHECKPOINT, note.as_bytes());
    }
}

/// The key of a perfect-subtree node: level, then index, so each level reads in order.
fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = u8::try_from(level).expect("a tree of at most 2^64 leaves has at most 64 levels");
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

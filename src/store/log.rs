//! The transparency log's rows in RocksDB: `log` (entries by index), `log_nodes` (every perfect
//! subtree's hash), `log_statements` (each receipt's canonical statements, frozen when its
//! entry was logged) and the latest checkpoint in `meta`. The log itself (tree, signing, proofs,
//! receipts) is [`LogWriter`]'s; this file only reads its rows at open and puts an append's rows
//! into the same write batch as the change it records, so the log can never miss or invent one.
//! Once that write is durable the new leaves and checkpoint are appended to the mirror in the
//! key dir and synced (`outside.rs`), and only then is the checkpoint served.
use rocksdb::{DB, IteratorMode, WriteBatch};

use std::time::{Duration, Instant};

use super::{
    CF_LOG, CF_LOG_CHECKPOINTS, CF_LOG_NODES, CF_LOG_STATEMENTS, CF_META, Error, KeyRing, META_CHECKPOINT,
    META_CHECKPOINTS_FROM, META_LOG_ORIGIN, Store, outside::MirrorLeaf, synced,
};
use crate::transparency::{
    event::{Entry, Logged},
    log::{LogSink, LogWriter, Recovery, Signing},
    merkle::Hash,
    receipt::{self, Receipt},
    tiles::{self, TilePath},
};

impl Store {
    /// Writes `batch` and the changes `fill` makes (given the first new leaf index) together with log
    /// entries for `events` (and, signing per batch, the checkpoint that covers them) in one
    /// synced write: the log can never miss or invent a change. Then mirrors the new leaves (and
    /// checkpoint) in the key dir (synced) before the checkpoint is served. Returns the first
    /// new leaf index.
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
                let note = staged.checkpoint().map(str::to_string);
                log.commit(staged);
                crate::failpoint::hit("log.before-mirror");
                // A failure leaves the mirror behind the data dir: caught up at the next open.
                mirror.append(first, &mirrored, note.as_deref())?;
                if note.is_some() {
                    self.published.notify_all();
                }
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

    /// When checkpoints are signed from now on.
    pub fn set_signing(&self, signing: Signing) {
        self.log.lock().set_signing(signing);
    }

    /// The checkpoint of every leaf sequenced so far, for the integrator (see
    /// [`LogWriter::to_sign`]), and the published size it follows.
    pub fn to_sign(&self) -> (u64, String, u64) {
        let log = self.log.lock();
        let (size, note) = log.to_sign();
        (size, note, log.published_size())
    }

    /// The consistency proof between two sequenced sizes, published or not.
    pub fn consistency_proof_unpublished(&self, from: u64, to: u64) -> Result<Vec<Hash>, Error> {
        Ok(self.log.lock().consistency_proof_unpublished(from, to)?)
    }

    /// Publishes `note`, the log's checkpoint of `size` leaves with any cosignatures: kept by
    /// size (a size's first publication is the one its receipts use), made the latest in one
    /// synced write, mirrored in the key dir, then served. A checkpoint of the size already
    /// published (fresh cosignatures) replaces the served one only.
    pub fn publish(&self, size: u64, note: &str) -> Result<(), Error> {
        let mut log = self.log.lock();
        let mut mirror = self.mirror.lock();
        mirror.usable()?;
        log.check_publishable(size, note).map_err(Error::LogMismatch)?;
        let mut batch = WriteBatch::default();
        if self.db.get_cf(self.cf(CF_LOG_CHECKPOINTS), size.to_be_bytes())?.is_none() {
            batch.put_cf(self.cf(CF_LOG_CHECKPOINTS), size.to_be_bytes(), note.as_bytes());
        }
        batch.put_cf(self.cf(CF_META), META_CHECKPOINT, note.as_bytes());
        self.db.write_opt(batch, &synced())?;
        // Its leaves were mirrored with their batches (a mirror that missed one is unusable).
        let mirrored = mirror.size();
        mirror.append(mirrored, &[], Some(note))?;
        log.publish(size, note.to_string()).map_err(Error::LogMismatch)?;
        self.published.notify_all();
        Ok(())
    }

    /// Waits, at most `timeout`, until a published checkpoint covers `size` leaves; whether one
    /// does.
    pub fn wait_published(&self, size: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut log = self.log.lock();
        while log.published_size() < size {
            if self.published.wait_until(&mut log, deadline).timed_out() {
                return log.published_size() >= size;
            }
        }
        true
    }

    /// The tile or entry bundle `path` of the published tree, if it holds it.
    pub fn tile(&self, path: &TilePath) -> Result<Option<Vec<u8>>, Error> {
        let log = self.log.lock();
        let published = log.published_size();
        match *path {
            TilePath::Hashes { .. } => Ok(log.tile(path)),
            TilePath::Entries { index, width } => {
                drop(log);
                if !tiles::exists(path, published) {
                    return Ok(None);
                }
                let start = index * tiles::WIDTH;
                let entries = self.entries(start, start + width)?;
                if entries.len() as u64 != width {
                    return Err(Error::Corrupt(format!("log entries {start}.. are missing")));
                }
                Ok(Some(tiles::entry_bundle(entries.iter().map(|(_, bytes)| bytes.as_slice()))))
            }
        }
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
    /// [`Error::Pending`] until a published checkpoint covers it.
    pub fn receipt_with(&self, index: u64, fallback: Option<receipt::Statements>) -> Result<Receipt, Error> {
        let log = self.log.lock();
        let bytes = self.db.get_cf(self.cf(CF_LOG), index.to_be_bytes())?;
        let bytes = bytes.ok_or(Error::NoEntry { index, size: log.size() })?;
        let stored = self.db.get_cf(self.cf(CF_LOG_STATEMENTS), index.to_be_bytes())?;
        let against = self.covering_checkpoint(&log, index)?;
        receipt_of(&log, index, &bytes, stored.as_deref(), fallback, against.as_deref())
    }

    /// The first published checkpoint that covers leaf `index`; `None` for a leaf logged
    /// before checkpoints were kept.
    fn covering_checkpoint(&self, log: &LogWriter, index: u64) -> Result<Option<String>, Error> {
        if index < self.checkpoints_from {
            return Ok(None);
        }
        let from = (index + 1).to_be_bytes();
        let mode = IteratorMode::From(&from, rocksdb::Direction::Forward);
        match self.db.iterator_cf(self.cf(CF_LOG_CHECKPOINTS), mode).next() {
            Some(item) => {
                let (_, note) = item?;
                Ok(Some(String::from_utf8(note.to_vec()).map_err(|_| Error::Corrupt("a kept checkpoint".into()))?))
            }
            None => Err(Error::Pending { index, published: log.published_size() }),
        }
    }
}

/// The log size from which published checkpoints are kept ([`META_CHECKPOINTS_FROM`]): set to
/// the log's size the first time a data dir is opened by a version that keeps them.
pub(super) fn checkpoints_from(db: &DB, size: u64) -> Result<u64, Error> {
    let meta = db.cf_handle(CF_META).expect("column families are created at open");
    if let Some(v) = db.get_cf(meta, META_CHECKPOINTS_FROM)? {
        let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| Error::Corrupt("checkpoints-from".into()))?;
        return Ok(u64::from_be_bytes(bytes));
    }
    db.put_cf_opt(meta, META_CHECKPOINTS_FROM, size.to_be_bytes(), &synced())?;
    Ok(size)
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
    against: Option<&str>,
) -> Result<Receipt, Error> {
    let entry = decode_entry(index, bytes)?;
    let statements = match stored {
        Some(stored) => serde_json::from_slice(stored)
            .map_err(|e| Error::Corrupt(format!("the statements of log entry {index}: {e}")))?,
        None if entry.statements.is_some() => crate::transparency::statements::for_event(&entry.event),
        None => fallback.unwrap_or_else(|| crate::transparency::statements::for_event(&entry.event)),
    };
    Ok(log.receipt(index, bytes, &entry, statements, against)?)
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
    fn put_checkpoint(&mut self, size: u64, note: &str) {
        self.batch.put_cf(self.store.cf(CF_META), META_CHECKPOINT, note.as_bytes());
        self.batch.put_cf(self.store.cf(CF_LOG_CHECKPOINTS), size.to_be_bytes(), note.as_bytes());
    }
}

/// The key of a perfect-subtree node: level, then index, so each level reads in order.
fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = u8::try_from(level).expect("a tree of at most 2^64 leaves has at most 64 levels");
    key[1..].copy_from_slice(&index.to_be_bytes());
    key
}

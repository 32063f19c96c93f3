//! An in-memory store for unit tests of the engine and the rights workflows: the same traits as
//! the RocksDB store, the same transparency log (a [`LogWriter`] over maps), no disk and no
//! encryption, so a workflow's every transition runs in microseconds.
//!
//! Each write is all-or-nothing, as a synced RocksDB batch is. [`MemoryStore::crash_after`]
//! stands for a process killed between writes: the store refuses every write after the next
//! `n`, and [`MemoryStore::restart`] brings it back with exactly what was written before, so a
//! test can reopen the workflows over it and check that they resume (the RocksDB crash tests do
//! the same with SIGKILL, in seconds rather than microseconds).
//!
//! What it cannot show: anything about files (purges here only check that the rows are gone
//! from the maps). Never used by the server.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::atomic::{AtomicU64, Ordering},
};

use jiff::Timestamp;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{
    AuditAppend, Deletion, Disclosed, Disclosure, Erased, Error, Evidence, Held, Idempotency, Notice, Rotation,
    StoreStats, StoredGraph, StoredRequest, Target, codec,
    traits::{LogStore, RecordStore, RequestStore},
};
use crate::{
    record::{IdempotencyKey, NewRecord, Record, RecordId},
    transparency::{
        event::{Entry, Event, Logged},
        log::{LogSink, LogWriter, Signing},
        merkle::Hash,
        note::SignerKey,
        receipt::{Receipt, Statements},
        tiles::TilePath,
    },
};

/// The rows, as a RocksDB store's column families would hold them.
#[derive(Default)]
struct Rows {
    /// When the current key epoch began (`None`: never recorded).
    epoch_since: Option<Timestamp>,
    records: BTreeMap<RecordId, Record>,
    data_keys: BTreeSet<RecordId>,
    idempotency: HashMap<[u8; 32], (RecordId, [u8; 32])>,
    idempotency_of: HashMap<RecordId, [u8; 32]>,
    enrolment_leaves: HashMap<RecordId, u64>,
    quarantine: BTreeMap<RecordId, String>,
    recipients: BTreeMap<RecordId, Vec<Disclosure>>,
    graph_meta: Option<Vec<u8>>,
    graph_nodes: BTreeMap<u32, Vec<u8>>,
    suppressed: BTreeSet<[u8; 32]>,
    faces: BTreeMap<[u8; 16], Vec<u8>>,
    outbox: BTreeMap<(String, u64), Vec<u8>>,
    requests: BTreeMap<[u8; 16], Vec<u8>>,
    audit: BTreeMap<u64, (Timestamp, Vec<u8>)>,
    log: BTreeMap<u64, Vec<u8>>,
    log_nodes: BTreeMap<(u32, u64), Hash>,
    log_statements: BTreeMap<u64, String>,
    checkpoint: Option<String>,
    /// Every published checkpoint, by size.
    checkpoints: BTreeMap<u64, String>,
    next_seq: u64,
    epoch: u32,
}

/// A store in memory (see the module documentation).
pub struct MemoryStore {
    dimension: usize,
    rows: Mutex<Rows>,
    log: Mutex<LogWriter>,
    origin: String,
    /// The log key's seed, so the log can be reopened with the same key.
    seed: Zeroizing<[u8; 32]>,
    /// Writes still accepted before the simulated crash (`u64::MAX`: no crash planned).
    writes_left: AtomicU64,
    /// Writes accepted since the store was made.
    writes: AtomicU64,
    /// Purges whose check is made to fail (a test's injected failure).
    failing_purges: AtomicU64,
}

impl MemoryStore {
    /// An empty store of `dimension`-dimensional templates whose log, named `origin`, is signed
    /// with a new random key.
    /// Test hook: the next `n` purges fail their check, as a purge that left a copy would.
    pub fn fail_purges(&self, n: u64) {
        self.failing_purges.store(n, Ordering::SeqCst);
    }

    fn injected_failure(&self) -> Result<(), Error> {
        let left = self.failing_purges.load(Ordering::SeqCst);
        if left > 0 {
            self.failing_purges.store(left - 1, Ordering::SeqCst);
            return Err(Error::Unverified("the byte scan found 1 window(s) of an erased value (injected)".into()));
        }
        Ok(())
    }

    pub fn new(dimension: usize, origin: &str) -> Result<MemoryStore, Error> {
        let seed = Zeroizing::new(*super::crypto::random_secret());
        let signer = Self::signer(origin, &seed)?;
        let (log, first) = LogWriter::recover::<()>(origin.into(), signer, [], |_, _| Ok(None), None)
            .unwrap_or_else(|_| unreachable!("an empty log always opens"));
        let rows = Rows { checkpoint: first, epoch: 1, ..Rows::default() };
        Ok(MemoryStore {
            dimension,
            rows: Mutex::new(rows),
            log: Mutex::new(log),
            origin: origin.into(),
            seed,
            writes_left: AtomicU64::new(u64::MAX),
            failing_purges: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    fn signer(origin: &str, seed: &[u8; 32]) -> Result<SignerKey, Error> {
        SignerKey::from_seed(origin, seed).map_err(|e| Error::Corrupt(format!("log origin {origin:?}: {e}")))
    }

    /// Accepts `writes` more writes, then refuses every write as a killed process would.
    pub fn crash_after(&self, writes: u64) {
        self.writes_left.store(writes, Ordering::SeqCst);
    }

    /// How many writes the store has accepted: a test counts a workflow's writes with it, then
    /// crashes the workflow after each of them in turn.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The process restarts: writes are accepted again and the log is rebuilt from its rows
    /// (and checked against its checkpoint), as the RocksDB store does at open.
    pub fn restart(&self) -> Result<(), Error> {
        self.writes_left.store(u64::MAX, Ordering::SeqCst);
        let mut writer = self.log.lock();
        let rows = self.lock();
        let leaves = rows.log.iter().map(|(i, b)| Ok::<_, Error>((*i, b.clone())));
        let node = |level, i| Ok(rows.log_nodes.get(&(level, i)).map(|h| h.to_vec()));
        let (log, _) = LogWriter::recover(
            self.origin.clone(),
            Self::signer(&self.origin, &self.seed)?,
            leaves,
            node,
            rows.checkpoint.clone(),
        )?;
        *writer = log;
        Ok(())
    }

    /// Taken by every write before it changes anything: fails once the planned crash happened.
    fn write(&self) -> Result<(), Error> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Error::Io {
                path: "<memory>".into(),
                source: std::io::Error::other("the process was stopped here (simulated crash)"),
            });
        }
        if left != u64::MAX {
            self.writes_left.store(left - 1, Ordering::SeqCst);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Rows> {
        self.rows.lock()
    }

    fn digest(domain: &[u8], data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(domain);
        h.update(data);
        h.finalize().into()
    }

    fn content_digest(record: &NewRecord) -> [u8; 32] {
        let mut content = Zeroizing::new(Vec::new());
        codec::encode_content(&record.provenance, &record.embedding, &mut content);
        Self::digest(b"oubli/memory/content", &content)
    }

    /// Writes `rows`'s changes (made by `fill`, given the first new leaf) with `entries` appended
    /// to the log, all at once; returns the first leaf index.
    fn logged(&self, entries: &[Logged], fill: impl FnOnce(&mut Rows, u64)) -> Result<u64, Error> {
        self.write()?;
        let mut log = self.log.lock();
        let mut rows = self.lock();
        let first = log.size();
        fill(&mut rows, first);
        let staged = log.stage(entries, &mut *rows);
        log.commit(staged);
        Ok(first)
    }
}

impl LogSink for Rows {
    fn put_leaf(&mut self, index: u64, bytes: &[u8]) {
        self.log.insert(index, bytes.to_vec());
    }
    fn put_node(&mut self, level: u32, index: u64, hash: &Hash) {
        self.log_nodes.insert((level, index), *hash);
    }
    fn put_statements(&mut self, index: u64, canonical: &str) {
        self.log_statements.insert(index, canonical.into());
    }
    fn put_checkpoint(&mut self, size: u64, note: &str) {
        self.checkpoints.insert(size, note.into());
        self.checkpoint = Some(note.into());
    }
}

impl RecordStore for MemoryStore {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn idempotency(&self, key: &IdempotencyKey, record: &NewRecord) -> Result<Idempotency, Error> {
        let row = Self::digest(b"oubli/memory/idempotency", key.as_bytes());
        Ok(match self.lock().idempotency.get(&row) {
            None => Idempotency::Fresh,
            Some((id, digest)) if *digest == Self::content_digest(record) => Idempotency::Replay(*id),
            Some(_) => Idempotency::Conflict,
        })
    }

    fn insert(
        &self,
        records: &[(RecordId, &NewRecord)],
        enrolled_at: Timestamp,
        quarantined: &[(RecordId, &str)],
    ) -> Result<(), Error> {
        let (salts, entries): (Vec<[u8; 16]>, Vec<Logged>) =
            records.iter().map(|(id, _)| super::enrolment(*id, enrolled_at)).unzip();
        self.logged(&entries, |rows, first| {
            for (i, ((id, record), salt)) in records.iter().zip(&salts).enumerate() {
                rows.records.insert(
                    *id,
                    Record {
                        id: *id,
                        provenance: record.provenance.clone(),
                        enrolled_at,
                        embedding: record.embedding.clone(),
                        commitment_salt: *salt,
                    },
                );
                rows.data_keys.insert(*id);
                rows.enrolment_leaves.insert(*id, first + i as u64);
                if let Some(key) = &record.idempotency_key {
                    let row = Self::digest(b"oubli/memory/idempotency", key.as_bytes());
                    rows.idempotency.insert(row, (*id, Self::content_digest(record)));
                    rows.idempotency_of.insert(*id, row);
                }
            }
            for (id, rule) in quarantined {
                rows.quarantine.insert(*id, rule.to_string());
            }
        })?;
        Ok(())
    }

    fn get(&self, id: RecordId) -> Result<Option<Record>, Error> {
        let rows = self.lock();
        Ok(rows.records.get(&id).filter(|_| rows.data_keys.contains(&id)).cloned())
    }

    fn for_each(&self, f: &mut dyn FnMut(Record)) -> Result<usize, Error> {
        let records: Vec<Record> = self.lock().records.values().cloned().collect();
        let count = records.len();
        records.into_iter().for_each(f);
        Ok(count)
    }

    fn quarantined(&self) -> Result<Vec<(RecordId, String)>, Error> {
        Ok(self.lock().quarantine.iter().map(|(id, rule)| (*id, rule.clone())).collect())
    }

    fn enrolment_leaf(&self, id: RecordId) -> Result<Option<u64>, Error> {
        Ok(self.lock().enrolment_leaves.get(&id).copied())
    }

    fn estimated_records(&self) -> usize {
        self.lock().records.len()
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        Ok(StoreStats { bytes_on_disk: 0, sst_file_count: 0 })
    }

    fn record_disclosures(&self, calls: &[Disclosed]) -> Result<Vec<Vec<RecordId>>, Error> {
        self.write()?;
        let mut rows = self.lock();
        let mut written = Vec::with_capacity(calls.len());
        for call in calls {
            let ids: Vec<RecordId> = call.records.iter().filter(|id| rows.data_keys.contains(id)).copied().collect();
            for id in &ids {
                rows.recipients.entry(*id).or_default().push(Disclosure { client: call.client.clone(), at: call.at });
            }
            written.push(ids);
        }
        Ok(written)
    }

    fn disclosures(&self, id: RecordId) -> Result<Vec<Disclosure>, Error> {
        Ok(self.lock().recipients.get(&id).cloned().unwrap_or_default())
    }

    fn write_graph(&self, upserts: &[(u32, Vec<u8>)], removed: &[u32], meta: &[u8]) -> Result<(), Error> {
        self.write()?;
        let mut rows = self.lock();
        for slot in removed {
            rows.graph_nodes.remove(slot);
        }
        rows.graph_nodes.extend(upserts.iter().cloned());
        rows.graph_meta = Some(meta.to_vec());
        Ok(())
    }

    fn load_graph(&self) -> Result<Option<StoredGraph>, Error> {
        let rows = self.lock();
        Ok(rows
            .graph_meta
            .clone()
            .map(|meta| StoredGraph { meta, nodes: rows.graph_nodes.iter().map(|(s, r)| (*s, r.clone())).collect() }))
    }

    fn clear_graph(&self) -> Result<(), Error> {
        self.write()?;
        let mut rows = self.lock();
        rows.graph_meta = None;
        rows.graph_nodes.clear();
        Ok(())
    }

    fn suppression_key(&self, source_uri: &str) -> [u8; 32] {
        Self::digest(b"oubli/memory/suppressed-source", source_uri.trim().as_bytes())
    }

    fn is_suppressed(&self, source_uri: &str) -> Result<bool, Error> {
        Ok(self.lock().suppressed.contains(&self.suppression_key(source_uri)))
    }

    fn suppressed_faces(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
        Ok(self.lock().faces.values().map(|f| Zeroizing::new(f.clone())).collect())
    }

    fn purge_request_versions(&self, _request_ids: &[[u8; 16]]) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    fn forget_faces(&self, request_id: &[u8; 16], request: &[u8]) -> Result<(), Error> {
        self.write()?;
        let mut rows = self.lock();
        rows.faces.remove(request_id);
        rows.requests.insert(*request_id, request.to_vec());
        Ok(())
    }

    fn erasure_inputs(&self, ids: &[RecordId]) -> Result<Vec<Held>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(record) = RecordStore::get(self, id)? {
                out.push(Held { id, source_key: self.suppression_key(record.provenance.source_uri()) });
            }
        }
        Ok(out)
    }

    fn erase(
        &self,
        deletion: &Deletion<'_>,
        request_id: &[u8; 16],
        request: &mut dyn FnMut(&Erased) -> Zeroizing<Vec<u8>>,
    ) -> Result<Erased, Error> {
        let Deletion { ids, graph_slots: _, notice, suppress, faces, also, .. } = *deletion;
        self.write()?;
        let mut rows = self.lock();
        let mut erased = Erased::default();
        for &id in ids {
            if rows.records.remove(&id).is_some() {
                erased.records += 1;
            }
            rows.data_keys.remove(&id);
            rows.enrolment_leaves.remove(&id);
            rows.quarantine.remove(&id);
            erased.rows += 5;
            if let Some(row) = rows.idempotency_of.remove(&id) {
                rows.idempotency.remove(&row);
                erased.rows += 1;
            }
            let clients: BTreeSet<String> =
                rows.recipients.remove(&id).unwrap_or_default().into_iter().map(|d| d.client).collect();
            erased.rows += clients.len();
            for client in clients {
                let seq = rows.next_seq;
                rows.next_seq += 1;
                rows.outbox.insert((client.clone(), seq), notice(id));
                erased.recipients.insert(client);
            }
        }
        rows.suppressed.extend(suppress.iter().copied());
        if let Some(faces) = faces {
            rows.faces.insert(*request_id, faces.to_vec());
        }
        for (other, plaintext) in also {
            rows.requests.insert(*other, plaintext.to_vec());
        }
        rows.requests.insert(*request_id, request(&erased).to_vec());
        Ok(erased)
    }

    fn purge_keys(&self, ids: &[RecordId], _evidence: &Evidence) -> Result<Vec<String>, Error> {
        self.injected_failure()?;
        let rows = self.lock();
        if let Some(id) = ids.iter().find(|id| rows.data_keys.contains(id)) {
            return Err(Error::Unverified(format!("the data key of record {id} still reads back")));
        }
        Ok(vec![format!("each of the {} data key(s) reads back as absent", ids.len())])
    }

    fn purge_rows(&self, targets: &[Target], _evidence: &Evidence) -> Result<Vec<String>, Error> {
        self.injected_failure()?;
        Ok(vec![format!(
            "each of the {} erased key range(s) reads back as empty",
            targets.iter().filter(|t| t.absent).count()
        )])
    }

    fn notices(&self, client: &str) -> Result<Vec<Notice>, Error> {
        let rows = self.lock();
        Ok(rows
            .outbox
            .iter()
            .filter(|((c, _), _)| c == client)
            .map(|((_, seq), body)| Notice { id: format!("{seq:024x}"), body: Zeroizing::new(body.clone()) })
            .collect())
    }

    fn ack_notice(&self, client: &str, id: &str) -> Result<bool, Error> {
        let Ok(seq) = u64::from_str_radix(id, 16) else { return Ok(false) };
        self.write()?;
        Ok(self.lock().outbox.remove(&(client.to_string(), seq)).is_some())
    }

    fn rotate_keys(&self) -> Result<Rotation, Error> {
        let (epoch, rewrapped) = {
            let rows = self.lock();
            (rows.epoch + 1, rows.data_keys.len() as u64)
        };
        let entry = Logged::plain(
            Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| Timestamp::now()),
            Event::KeysRotated { commitment: [0; 32], epoch, rewrapped },
        );
        let leaf = self.logged(std::slice::from_ref(&entry), |rows, _| {
            rows.epoch = epoch;
            rows.epoch_since = Some(Timestamp::now());
        })?;
        Ok(Rotation { epoch, rewrapped, leaf })
    }

    fn resume_rotation(&self) -> Result<Option<Rotation>, Error> {
        Ok(None)
    }

    fn oldest_key_epoch(&self) -> u32 {
        self.lock().epoch
    }

    fn key_epoch(&self) -> u32 {
        self.lock().epoch
    }

    fn key_epoch_since(&self) -> Result<Option<Timestamp>, Error> {
        Ok(self.lock().epoch_since)
    }

    fn scan_data_dir(&self, _prints: &super::scan::Prints) -> Result<super::scan::Scan, Error> {
        Ok(super::scan::Scan { files: 0, bytes: 0, found: Vec::new() })
    }
}

impl RequestStore for MemoryStore {
    fn put_request(&self, id: &[u8; 16], plaintext: &[u8]) -> Result<(), Error> {
        self.put_requests(&[(*id, plaintext)])
    }

    fn put_requests(&self, rows: &[([u8; 16], &[u8])]) -> Result<(), Error> {
        self.write()?;
        let mut held = self.lock();
        for (id, plaintext) in rows {
            held.requests.insert(*id, plaintext.to_vec());
        }
        Ok(())
    }

    fn put_request_logged(
        &self,
        id: &[u8; 16],
        entry: &Logged,
        plaintext: &mut dyn FnMut(u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        self.logged(std::slice::from_ref(entry), |rows, first| {
            rows.requests.insert(*id, plaintext(first).to_vec());
        })
    }

    fn put_requests_logged(
        &self,
        ids: &[[u8; 16]],
        entries: &[Logged],
        plaintext: &mut dyn FnMut(usize, u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        self.logged(entries, |rows, first| {
            for (i, id) in ids.iter().enumerate() {
                rows.requests.insert(*id, plaintext(i, first + i as u64).to_vec());
            }
        })
    }

    fn request(&self, id: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        Ok(self.lock().requests.get(id).map(|r| Zeroizing::new(r.clone())))
    }

    fn requests(&self) -> Result<Vec<StoredRequest>, Error> {
        Ok(self.lock().requests.iter().map(|(id, r)| (*id, Zeroizing::new(r.clone()))).collect())
    }

    fn append_audit(&self, events: &[AuditAppend<'_>]) -> Result<u64, Error> {
        self.write()?;
        let mut rows = self.lock();
        let first = rows.audit.last_key_value().map_or(0, |(s, _)| *s) + 1;
        for (seq, event) in (first..).zip(events) {
            rows.audit.insert(seq, (event.at, (event.encode)(seq)));
        }
        Ok(first)
    }

    fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        let rows = self.lock();
        Ok(rows.audit.range(after.saturating_add(1)..).take(limit).map(|(_, (_, b))| b.clone()).collect())
    }

    fn audit_head(&self) -> u64 {
        self.lock().audit.last_key_value().map_or(0, |(s, _)| *s)
    }

    fn prune_audit(&self, cutoff: Timestamp) -> Result<usize, Error> {
        self.write()?;
        let mut rows = self.lock();
        let old: Vec<u64> = rows.audit.iter().take_while(|(_, (at, _))| *at < cutoff).map(|(s, _)| *s).collect();
        for seq in &old {
            rows.audit.remove(seq);
        }
        Ok(old.len())
    }
}

impl LogStore for MemoryStore {
    fn append(&self, entry: &Logged) -> Result<u64, Error> {
        self.logged(std::slice::from_ref(entry), |_, _| {})
    }

    fn tree_size(&self) -> u64 {
        self.log.lock().size()
    }

    fn checkpoint(&self) -> String {
        self.log.lock().checkpoint().to_string()
    }

    fn verifier_key(&self) -> String {
        self.log.lock().verifier_key()
    }

    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Ok(self.log.lock().inclusion_proof(index, size)?)
    }

    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Ok(self.log.lock().consistency_proof(from, to)?)
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        Ok(self.lock().log.range(start..end.max(start)).map(|(i, b)| (*i, b.clone())).collect())
    }

    fn entry(&self, index: u64) -> Result<Entry, Error> {
        let size = self.tree_size();
        let bytes = self.lock().log.get(&index).cloned().ok_or(Error::NoEntry { index, size })?;
        super::log::decode_entry(index, &bytes)
    }

    fn receipt_with(&self, index: u64, statements: Option<Statements>) -> Result<Receipt, Error> {
        let log = self.log.lock();
        let rows = self.lock();
        let bytes = rows.log.get(&index).cloned().ok_or(Error::NoEntry { index, size: log.size() })?;
        let stored = rows.log_statements.get(&index).cloned();
        let against = match rows.checkpoints.range(index + 1..).next() {
            Some((_, note)) => note.clone(),
            None => return Err(Error::Pending { index, published: log.published_size() }),
        };
        drop(rows);
        super::log::receipt_of(&log, index, &bytes, stored.as_deref().map(str::as_bytes), statements, Some(&against))
    }

    fn set_signing(&self, signing: Signing) {
        self.log.lock().set_signing(signing);
    }

    fn to_sign(&self) -> (u64, String, u64) {
        let log = self.log.lock();
        let (size, note) = log.to_sign();
        (size, note, log.published_size())
    }

    fn consistency_proof_unpublished(&self, from: u64, to: u64) -> Result<Vec<Hash>, Error> {
        Ok(self.log.lock().consistency_proof_unpublished(from, to)?)
    }

    fn publish(&self, size: u64, note: &str) -> Result<(), Error> {
        let mut log = self.log.lock();
        log.check_publishable(size, note).map_err(Error::LogMismatch)?;
        let mut rows = self.lock();
        rows.checkpoints.entry(size).or_insert_with(|| note.to_string());
        rows.checkpoint = Some(note.to_string());
        drop(rows);
        log.publish(size, note.to_string()).map_err(Error::LogMismatch)
    }

    fn wait_published(&self, size: u64, _: std::time::Duration) -> bool {
        self.log.lock().published_size() >= size
    }

    fn published_size(&self) -> u64 {
        self.log.lock().published_size()
    }

    fn tile(&self, path: &TilePath) -> Result<Option<Vec<u8>>, Error> {
        let log = self.log.lock();
        match *path {
            TilePath::Hashes { .. } => Ok(log.tile(path)),
            TilePath::Entries { index, width } => {
                if !crate::transparency::tiles::exists(path, log.published_size()) {
                    return Ok(None);
                }
                let start = index * crate::transparency::tiles::WIDTH;
                let rows = self.lock();
                let entries = rows.log.range(start..start + width).map(|(_, b)| b.as_slice());
                Ok(Some(crate::transparency::tiles::entry_bundle(entries)))
            }
        }
    }
}

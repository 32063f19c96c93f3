//! Rows beside the records: requests (sealed blobs whose meaning belongs to the caller), the
//! recipients log (sealed under each record's own data key, so shredding the record shreds who
//! received it), quarantine flags, the audit trail (opaque bytes, in order), and the enrolment
//! leaf of each record. The store knows their keys and seals, not the workflows behind them.
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CF_AUDIT, CF_ENROLMENT_LEAVES, CF_QUARANTINE, CF_RECIPIENTS, CF_REQUESTS, Error, Store, crypto};
use crate::{record::RecordId, transparency::event::Logged};

pub(super) const REQUEST_DOMAIN: &str = "request";

/// A request's id and its decrypted state.
pub type StoredRequest = ([u8; 16], Zeroizing<Vec<u8>>);
const RECIPIENT_DOMAIN: &str = "recipient";

/// One disclosure of a record: who received it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disclosure {
    pub client: String,
    pub at: Timestamp,
}

/// One call's disclosures, for [`Store::record_disclosures`]: `client` received `records` at `at`.
#[derive(Debug, Clone)]
pub struct Disclosed {
    pub records: Vec<RecordId>,
    pub client: String,
    pub at: Timestamp,
}

/// One audit event to append, for [`Store::append_audit`]: `encode(seq)` gives its bytes for
/// the sequence number it gets; `at` orders pruning.
pub struct AuditAppend<'a> {
    pub at: Timestamp,
    pub encode: &'a dyn Fn(u64) -> Vec<u8>,
}

impl Store {
    /// Stores (or replaces) a request's encrypted state, durably.
    pub fn put_request(&self, id: &[u8; 16], plaintext: &[u8]) -> Result<(), Error> {
        self.put_requests(&[(*id, plaintext)])
    }

    /// Stores (or replaces) several requests' encrypted states in one synced write.
    pub fn put_requests(&self, rows: &[([u8; 16], &[u8])]) -> Result<(), Error> {
        let _keys = self.key_lock.read();
        let mut batch = WriteBatch::default();
        for (id, plaintext) in rows {
            batch.put_cf(self.cf(CF_REQUESTS), id, crypto::seal_blob(&self.keys, REQUEST_DOMAIN, id, plaintext));
        }
        self.db.write_opt(batch, &super::synced())?;
        Ok(())
    }

    /// Stores a request's new state and appends `entry` to the log in one synced write; returns
    /// the entry's leaf index. `plaintext` is built from that index.
    pub fn put_request_logged(
        &self,
        id: &[u8; 16],
        entry: &Logged,
        plaintext: impl FnOnce(u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        let _keys = self.key_lock.read();
        self.write_logged_with(WriteBatch::default(), std::slice::from_ref(entry), |first, batch| {
            let blob = crypto::seal_blob(&self.keys, REQUEST_DOMAIN, id, &plaintext(first));
            batch.put_cf(self.cf(CF_REQUESTS), id, blob);
        })
    }

    /// Stores several requests' new states and appends one log entry for each, in one synced
    /// write. `plaintext(i, leaf)` builds request `i`'s state given its entry's leaf index.
    pub fn put_requests_logged(
        &self,
        ids: &[[u8; 16]],
        entries: &[Logged],
        mut plaintext: impl FnMut(usize, u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        let _keys = self.key_lock.read();
        self.write_logged_with(WriteBatch::default(), entries, |first, batch| {
            for (i, id) in ids.iter().enumerate() {
                let blob = crypto::seal_blob(&self.keys, REQUEST_DOMAIN, id, &plaintext(i, first + i as u64));
                batch.put_cf(self.cf(CF_REQUESTS), id, blob);
            }
        })
    }

    /// Appends one entry to the log on its own (a statement, not a change of state); returns
    /// its leaf index.
    pub fn append(&self, entry: &Logged) -> Result<u64, Error> {
        self.write_logged_with(WriteBatch::default(), std::slice::from_ref(entry), |_, _| {})
    }

    /// How many entries the log holds.
    pub fn tree_size(&self) -> u64 {
        self.log.lock().size()
    }

    pub fn request(&self, id: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        match self.db.get_pinned_cf(self.cf(CF_REQUESTS), id)? {
            None => Ok(None),
            Some(blob) => crypto::open_blob(&self.keys, REQUEST_DOMAIN, id, &blob).map(Some),
        }
    }

    /// Every request, decrypted, in id order.
    pub fn requests(&self) -> Result<Vec<StoredRequest>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REQUESTS), IteratorMode::Start) {
            let (key, blob) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("request key".into()))?;
            out.push((id, crypto::open_blob(&self.keys, REQUEST_DOMAIN, &id, &blob)?));
        }
        Ok(out)
    }

    /// Records each call's disclosures (`client` received `records` at `at`) in one synced
    /// write: one row per record, keyed by record and sealed under the record's data key.
    /// Records erased meanwhile are skipped.
    pub fn record_disclosures(&self, calls: &[Disclosed]) -> Result<Vec<Vec<RecordId>>, Error> {
        let _not_erasing = self.erase_lock.read();
        let mut batch = WriteBatch::default();
        let mut written = Vec::with_capacity(calls.len());
        // Every call's keys in one read (one round trip per 127 records with keys in etcd).
        let all: Vec<RecordId> = calls.iter().flat_map(|c| c.records.iter().copied()).collect();
        let mut wrapped = self.wrapped_keys_for_hits(&all)?.into_iter();
        for call in calls {
            let row = Disclosure { client: call.client.clone(), at: call.at };
            let value = serde_json::to_vec(&row).expect("a disclosure serialises");
            let mut ids = Vec::with_capacity(call.records.len());
            for id in &call.records {
                let Some(key) = wrapped.next().flatten() else { continue };
                // Deleted rows with a key still in etcd (an erasure whose key delete is left to
                // its phase 1) are erased too.
                if self.home.etcd().is_some()
                    && self.db.get_pinned_cf(self.cf(super::CF_RECORDS), id.as_bytes())?.is_none()
                {
                    continue;
                }
                let dek = self.keys.unwrap(*id, &key)?;
                let seq = self.disclosure_seq.fetch_add(1, Ordering::Relaxed);
                let mut key = id.as_bytes().to_vec();
                key.extend_from_slice(&call.at.as_microsecond().to_be_bytes());
                key.extend_from_slice(&seq.to_be_bytes());
                batch.put_cf(self.cf(CF_RECIPIENTS), &key, crypto::seal_derived(&dek, RECIPIENT_DOMAIN, &key, &value));
                ids.push(*id);
            }
            written.push(ids);
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &super::synced())?;
        }
        Ok(written)
    }

    /// Who received `id`, oldest first.
    pub fn disclosures(&self, id: RecordId) -> Result<Vec<Disclosure>, Error> {
        let Some(dek) = self.data_key(id)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        let prefix = id.as_bytes();
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_RECIPIENTS), mode) {
            let (key, sealed) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            let plain = crypto::open_derived(&dek, RECIPIENT_DOMAIN, &key, &sealed)?;
            out.push(serde_json::from_slice(&plain).map_err(|e| Error::Corrupt(format!("recipient row: {e}")))?);
        }
        Ok(out)
    }

    /// Ids of records held in quarantine, with the rule that put them there.
    pub fn quarantined(&self) -> Result<Vec<(RecordId, String)>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_QUARANTINE), IteratorMode::Start) {
            let (key, rule) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("quarantine key".into()))?;
            out.push((RecordId::from_bytes(id), String::from_utf8_lossy(&rule).into_owned()));
        }
        Ok(out)
    }

    /// The log leaf that recorded `id`'s enrolment.
    pub fn enrolment_leaf(&self, id: RecordId) -> Result<Option<u64>, Error> {
        let Some(v) = self.db.get_pinned_cf(self.cf(CF_ENROLMENT_LEAVES), id.as_bytes())? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::Corrupt("enrolment leaf".into()))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Appends events to the audit trail in one write, with consecutive sequence numbers; returns
    /// the first. Not synced (it would cost a disk flush per RPC): written to the write-ahead
    /// log, so a process crash loses nothing, and a power loss at most the last moments.
    pub fn append_audit(&self, events: &[AuditAppend<'_>]) -> Result<u64, Error> {
        let _order = self.audit_lock.lock();
        let first = self.audit_seq.load(Ordering::Relaxed) + 1;
        let mut batch = WriteBatch::default();
        for (seq, event) in (first..).zip(events) {
            let mut value = event.at.as_microsecond().to_be_bytes().to_vec();
            value.extend_from_slice(&(event.encode)(seq));
            batch.put_cf(self.cf(CF_AUDIT), seq.to_be_bytes(), value);
        }
        self.db.write_opt(batch, &WriteOptions::default())?;
        self.audit_seq.store(first + events.len() as u64 - 1, Ordering::Relaxed);
        Ok(first)
    }

    /// The bytes of the audit events with `seq > after`, oldest first, at most `limit`.
    pub fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        let from = (after.saturating_add(1)).to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::From(&from, rocksdb::Direction::Forward)) {
            if out.len() >= limit {
                break;
            }
            let (_, value) = item?;
            out.push(value.get(8..).ok_or_else(|| Error::Corrupt("audit row".into()))?.to_vec());
        }
        Ok(out)
    }

    /// The last audit sequence number (0: empty).
    pub fn audit_head(&self) -> u64 {
        self.audit_seq.load(Ordering::Relaxed)
    }

    /// Deletes audit events older than `cutoff`; returns how many.
    pub fn prune_audit(&self, cutoff: Timestamp) -> Result<usize, Error> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self.db.iterator_cf(self.cf(CF_AUDIT), IteratorMode::Start) {
            let (key, value) = item?;
            let at = value.first_chunk::<8>().map(|b| i64::from_be_bytes(*b)).unwrap_or(i64::MAX);
            if at >= cutoff.as_microsecond() {
                break;
            }
            batch.delete_cf(self.cf(CF_AUDIT), key);
            n += 1;
        }
        if n > 0 {
            self.db.write_opt(batch, &super::synced())?;
        }
        Ok(n)
    }
}

/// The last key of the audit column family, as a sequence number.
pub(super) fn last_audit_seq(db: &rocksdb::DB) -> Result<u64, Error> {
    let cf = db.cf_handle(CF_AUDIT).expect("column families are created at open");
    match db.iterator_cf(cf, IteratorMode::End).next() {
        None => Ok(0),
        Some(item) => {
            let (key, _) = item?;
            let bytes: [u8; 8] = key.as_ref().try_into().map_err(|_| Error::Corrupt("audit key".into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

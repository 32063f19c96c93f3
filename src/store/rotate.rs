//! Key-encryption-key rotation: a new epoch, every live data key
//! re-wrapped under it, the older KEKs destroyed, and the rotation logged.
//!
//! Backups and checkpoints taken before hold data keys wrapped under an older epoch: once that
//! epoch's KEK is destroyed they are unreadable, including the keys of records erased since.
//!
//! Writes that wrap a key or touch a sealed blob hold `key_lock` shared; a rotation holds it
//! exclusively from start to end, but for one stretch with keys in etcd: the purge of the old
//! wrappings from every member (tens of seconds) runs with writes going on, since every write
//! from the new epoch's start wraps under the new key; the lock is taken again to finish.
//!
//! Crash safety: the new KEK file is written and synced before any key is wrapped under it;
//! rows are re-wrapped in synced batches; the key-check value and a `rotation` marker (the new
//! epoch and the count) are written next; only then are the old KEK files destroyed, and the
//! log entry is written with the marker's removal. At open, more than one KEK or a marker means
//! a rotation was interrupted, and it is finished (re-wrapping is idempotent).
use jiff::Timestamp;
use rocksdb::{IteratorMode, WriteBatch};

use super::{
    CF_DATA_KEYS, CF_GRAPH, CF_META, CF_OUTBOX, CF_REQUESTS, CF_SUPPRESSED_FACES, Error, META_KEY_CHECK, Store,
    blob_domain, consensus::Deleted, crypto, synced,
};
use crate::{
    record::RecordId,
    transparency::event::{self, Event, Logged},
};

const META_ROTATION: &[u8] = b"rotation";
/// With keys in etcd: the purge a rotation's re-wrap still owes every member (JSON, a
/// [`PendingPurge`]), from the re-wrap until the purge is complete.
const META_ETCD_ROTATION_PURGE: &[u8] = b"etcd-rotation-purge";

/// What the purge of a rotation's overwritten wrappings must reach past, and look for.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct PendingPurge {
    revision: i64,
    index_bound: u64,
    deleted: usize,
    old: super::scan::Prints,
}
/// When the current key epoch began (Unix seconds, big-endian).
const META_EPOCH_SINCE: &[u8] = b"key-epoch-since";
/// Rows re-wrapped per synced batch.
const BATCH: usize = 10_000;

/// The outcome of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub epoch: u32,
    pub rewrapped: u64,
    /// The log leaf that records it.
    pub leaf: u64,
}

impl Store {
    /// Rotates to a new KEK epoch: see the module documentation. Every write that wraps a key or
    /// touches a sealed blob waits until the rotation is over, so the re-wrap pass never writes
    /// back a row that changed (or was erased) meanwhile.
    pub fn rotate_keys(&self) -> Result<Rotation, Error> {
        let _rotation = self.rotation_lock.lock();
        {
            let _no_writes = self.key_lock.write();
            self.keys.add_epoch()?;
            if self.home.etcd().is_some() {
                self.rewrap_etcd_keys()?;
            }
        }
        self.purge_etcd_rotation()?;
        let _no_writes = self.key_lock.write();
        self.finish_rotation()?.ok_or_else(|| Error::Corrupt("a rotation that was just started has no epoch".into()))
    }

    /// Finishes a rotation cut short (by a crash or a failed write), if any.
    pub fn resume_rotation(&self) -> Result<Option<Rotation>, Error> {
        let _rotation = self.rotation_lock.lock();
        self.purge_etcd_rotation()?;
        let _no_writes = self.key_lock.write();
        self.finish_rotation()
    }

    /// The oldest key epoch whose key-encryption key still exists: backups wrapped under an
    /// older one are unreadable.
    pub fn oldest_key_epoch(&self) -> u32 {
        self.keys.epochs().first().copied().unwrap_or(0)
    }

    /// Finishes an interrupted rotation, if any (called at open, and with the writes held off).
    pub(super) fn finish_rotation(&self) -> Result<Option<Rotation>, Error> {
        let marker = self.db.get_cf(self.cf(CF_META), META_ROTATION)?;
        if self.keys.epochs().len() < 2 && marker.is_none() {
            return Ok(None);
        }
        let epoch = self.keys.current_epoch();
        let mut rewrapped = match marker.as_deref().and_then(|m| m.split_first_chunk::<4>()) {
            Some((e, count)) if u32::from_be_bytes(*e) == epoch => {
                count.try_into().map(u64::from_be_bytes).map_err(|_| Error::Corrupt("rotation marker".into()))?
            }
            _ => 0,
        };
        if self.keys.epochs().len() > 1 {
            rewrapped += self.rewrap_all()?;
            rewrapped += self.rewrap_etcd()?;
            crate::failpoint::hit("rotate.rewrapped");
            let mut batch = WriteBatch::default();
            batch.put_cf(self.cf(CF_META), META_KEY_CHECK, self.keys.check_value());
            let mut value = epoch.to_be_bytes().to_vec();
            value.extend_from_slice(&rewrapped.to_be_bytes());
            batch.put_cf(self.cf(CF_META), META_ROTATION, value);
            self.db.write_opt(batch, &synced())?;
            let destroyed = self.keys.destroy_old_epochs()?;
            tracing::info!(epoch, ?destroyed, rewrapped, "older key-encryption keys destroyed");
        }
        let now = Timestamp::now();
        let entry = Logged::plain(
            now.round(jiff::Unit::Second).unwrap_or(now),
            Event::KeysRotated { commitment: event::rotation_commitment(epoch), epoch, rewrapped },
        );
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_META), META_ROTATION);
        batch.put_cf(self.cf(CF_META), META_EPOCH_SINCE, now.as_second().to_be_bytes());
        let leaf = self.write_logged_with(batch, std::slice::from_ref(&entry), |_, _| {})?;
        tracing::info!(epoch, rewrapped, leaf, "key rotation logged");
        Ok(Some(Rotation { epoch, rewrapped, leaf }))
    }

    /// Re-wraps every data key and every sealed blob not yet under the current KEK, in synced
    /// batches. Returns how many were re-wrapped.
    fn rewrap_all(&self) -> Result<u64, Error> {
        let mut count = 0;
        let mut batch = WriteBatch::default();
        let mut pending = 0;
        let flush = |batch: &mut WriteBatch, pending: &mut usize| -> Result<(), Error> {
            if *pending > 0 {
                self.db.write_opt(std::mem::take(batch), &synced())?;
                *pending = 0;
            }
            Ok(())
        };
        for item in self.db.iterator_cf(self.cf(CF_DATA_KEYS), IteratorMode::Start) {
            let (key, wrapped) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("data key row".into()))?;
            if let Some(new) = self.keys.rewrap(RecordId::from_bytes(id), &wrapped)? {
                batch.put_cf(self.cf(CF_DATA_KEYS), key, new);
                count += 1;
                pending += 1;
                if pending >= BATCH {
                    flush(&mut batch, &mut pending)?;
                }
            }
        }
        for cf in [CF_REQUESTS, CF_OUTBOX, CF_SUPPRESSED_FACES, CF_GRAPH] {
            let domain = blob_domain(cf);
            for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
                let (key, blob) = item?;
                if let Some(new) = crypto::rewrap_blob(&self.keys, domain, &key, &blob)? {
                    batch.put_cf(self.cf(cf), key, new);
                    count += 1;
                    pending += 1;
                    if pending >= BATCH {
                        flush(&mut batch, &mut pending)?;
                    }
                }
            }
        }
        flush(&mut batch, &mut pending)?;
        Ok(count)
    }

    /// With keys in etcd: re-wraps them there, then purges the overwritten values from every
    /// member and checks each, all before the old key-encryption key may be destroyed (a member
    /// pending keeps the rotation unfinished: it is resumed at the next rotation check or open).
    /// What the purge must reach is kept in `meta` until it is complete, so a resumed rotation,
    /// which finds nothing left to re-wrap, still purges and checks the values overwritten
    /// before it was cut short.
    fn rewrap_etcd(&self) -> Result<u64, Error> {
        let rewrapped = self.rewrap_etcd_keys()?;
        self.purge_etcd_rotation()?;
        Ok(rewrapped)
    }

    /// With keys in etcd: re-wraps them there and records, synced, what the purge of their old
    /// values must reach (added to what an earlier, unfinished one still owes).
    fn rewrap_etcd_keys(&self) -> Result<u64, Error> {
        let Some((etcd, _)) = self.home.etcd() else { return Ok(0) };
        self.opened_keys.lock().take();
        let done = etcd.rewrap_all(&self.keys)?;
        if done.rewrapped > 0 {
            let mut p = self.pending_rotation_purge()?.unwrap_or_default();
            p.old.extend(&done.old);
            p.revision = p.revision.max(done.after.revision);
            p.index_bound = p.index_bound.max(done.after.index_bound);
            p.deleted += done.after.deleted;
            let row = serde_json::to_vec(&p).expect("a pending purge serialises");
            self.db.put_cf_opt(self.cf(CF_META), META_ETCD_ROTATION_PURGE, row, &synced())?;
        }
        Ok(done.rewrapped as u64)
    }

    fn pending_rotation_purge(&self) -> Result<Option<PendingPurge>, Error> {
        match self.db.get_cf(self.cf(CF_META), META_ETCD_ROTATION_PURGE)? {
            Some(row) => Ok(Some(
                serde_json::from_slice(&row).map_err(|e| Error::Corrupt(format!("pending rotation purge: {e}")))?,
            )),
            None => Ok(None),
        }
    }

    /// With keys in etcd: the purge the re-wrap still owes, if any, run and checked on every
    /// member; its record removed once complete. Needs no lock against writes: it touches only
    /// old wrappings, which no write makes any more.
    fn purge_etcd_rotation(&self) -> Result<(), Error> {
        let Some((etcd, _)) = self.home.etcd() else { return Ok(()) };
        let meta = self.cf(CF_META);
        if let Some(p) = self.pending_rotation_purge()? {
            let after = Deleted { revision: p.revision, deleted: p.deleted, index_bound: p.index_bound };
            let purge = etcd.purge(&after, &p.old)?;
            etcd.publish_acks("key-rotation", "key rotation (old wrappings purged)", &purge);
            if !purge.is_complete() {
                let pending: Vec<String> = purge.pending().iter().map(|(m, why)| format!("{m}: {why}")).collect();
                return Err(Error::Unverified(format!(
                    "the re-wrapped keys' old values are not yet purged from every etcd member ({}); the old \
                     key-encryption key is kept until they are",
                    pending.join("; ")
                )));
            }
            self.db.delete_cf_opt(meta, META_ETCD_ROTATION_PURGE, &synced())?;
        }
        Ok(())
    }

    /// The current KEK epoch.
    pub fn key_epoch(&self) -> u32 {
        self.keys.current_epoch()
    }

    /// When the current KEK epoch began: its rotation, or (for a store made before this was
    /// recorded) the first open since.
    pub fn key_epoch_since(&self) -> Result<Option<Timestamp>, Error> {
        let Some(row) = self.db.get_cf(self.cf(CF_META), META_EPOCH_SINCE)? else { return Ok(None) };
        let secs =
            row.as_slice().try_into().map(i64::from_be_bytes).map_err(|_| Error::Corrupt("epoch time".into()))?;
        Ok(Timestamp::from_second(secs).ok())
    }

    /// Records now as the current epoch's start if nothing is recorded (at open).
    pub(super) fn record_epoch_since(&self) -> Result<(), Error> {
        if self.key_epoch_since()?.is_none() {
            let now = Timestamp::now().as_second().to_be_bytes();
            self.db.put_cf_opt(self.cf(CF_META), META_EPOCH_SINCE, now, &synced())?;
        }
        Ok(())
    }
}

//! Where a store's wrapped data keys live, and so what decides that a record exists: the
//! `data_keys` column family of the data dir itself (one node, the default), or etcd
//! ([`consensus`](super::consensus), a cluster's shard).
//!
//! With the keys in RocksDB, a record's ciphertext and its key go in one write batch: both or
//! neither. With the keys in etcd they are two writes on two systems, ordered so that a crash
//! between them never shows a record that was not acknowledged:
//! - an enrolment writes the ciphertext (with its rows and log leaf) first, synced, then commits
//!   the keys in one etcd transaction per [`MAX_KEYS_PER_TXN`] records: the commit point. A crash
//!   or a refused commit between the two leaves an *orphan*, a ciphertext with no key: never
//!   decryptable, never indexed, its rows removed on the spot when the commit is refused and at
//!   the next open otherwise ([`Store::sweep_orphans`]). Its log leaf stays: it records that a
//!   ciphertext was stored, and the log is append-only;
//! - an erasure checks that etcd answers, deletes the rows in RocksDB (one synced write, as on
//!   one node), then deletes the keys in etcd; phase 1 deletes them again (idempotent: a crash
//!   between the two writes is finished there) before purging every member and checking each
//!   one beside it.
//!
//! Reads of keys go through etcd's leader. Without a majority, only the keys that seal search
//! hits' recipients rows are read from one member's own copy, so searches are still answered
//! while enrolments and erasures are refused; everything that decides what exists (reads,
//! idempotency, erasure) waits for the leader or is refused.
//!
//! The data dir records its key home at creation and refuses to open under the other: a
//! cluster's data dir opened alone would find every record an orphan.
use std::collections::HashMap;

use rocksdb::WriteBatch;

use super::{
    CF_DATA_KEYS, CF_ENROLMENT_LEAVES, CF_IDEMPOTENCY, CF_IDEMPOTENCY_OF, CF_QUARANTINE, CF_RECORDS, Error, Store,
    consensus::{ClusterConfig, ConsensusKeys, Deleted, MAX_KEYS_PER_TXN, Outcome},
    scan::Prints,
    synced,
};
use crate::record::RecordId;

/// The data dir's key home, as recorded at creation (absent: the data dir predates clusters).
pub(super) const META_KEY_HOME: &[u8] = b"key-home";
/// With keys in etcd: the etcd cluster's id (u64 big-endian), recorded at creation. A data dir
/// opened against another cluster, or one rebuilt empty, would find every record an orphan and
/// sweep it: it is refused instead.
pub(super) const META_ETCD_CLUSTER: &[u8] = b"etcd-cluster-id";
const LOCAL: &str = "rocksdb";

/// Where the keys live.
pub(super) enum KeyHome {
    /// In the data dir's `data_keys` column family.
    Local,
    /// In etcd, under a shard's namespace, written under the configuration epoch read at open.
    Etcd { keys: Box<ConsensusKeys>, epoch: u64, cluster_id: u64 },
}

impl KeyHome {
    /// Connects to the cluster `config` names (or stays local), with the store's fingerprint
    /// secret for the purges' byte scans. A new data dir creates its namespace's epoch and
    /// records the cluster's id in `meta` (in the creation batch, through `record`). An
    /// existing one must find the cluster it recorded, and its epoch, or is refused.
    pub(super) fn open(
        config: Option<ClusterConfig>,
        scan_secret: [u8; 32],
        recorded_cluster: Option<Option<&[u8]>>,
    ) -> Result<KeyHome, Error> {
        let Some(config) = config else { return Ok(KeyHome::Local) };
        let namespace = config.namespace.clone();
        let (keys, state) = match recorded_cluster {
            // A new replica's data dir: the primary created the namespace; a replica creates
            // nothing in etcd.
            None if config.replica > 0 => {
                let keys = ConsensusKeys::reopen_with_secret(config, scan_secret)?;
                let state = keys.namespace_state()?;
                if state.epoch.is_none() {
                    return Err(Error::Consensus {
                        what: "start a replica".into(),
                        reason: format!(
                            "the shard's namespace {namespace} has no configuration epoch in etcd: start its primary \
                             (replica 0) first"
                        ),
                    });
                }
                (keys, state)
            }
            None => {
                let keys = ConsensusKeys::open_with_secret(config, scan_secret)?;
                let state = keys.namespace_state()?;
                (keys, state)
            }
            Some(recorded) => {
                let keys = ConsensusKeys::reopen_with_secret(config, scan_secret)?;
                let state = keys.namespace_state()?;
                let theirs = recorded.and_then(|r| r.try_into().ok()).map(u64::from_be_bytes);
                if theirs != Some(state.cluster_id) || state.epoch.is_none() {
                    return Err(Error::WrongCluster {
                        namespace,
                        recorded: theirs.unwrap_or_default(),
                        found: state.cluster_id,
                    });
                }
                (keys, state)
            }
        };
        // Created by `open_with_secret` when new; required above when not.
        let epoch =
            state.epoch.ok_or_else(|| Error::Corrupt("the namespace's configuration epoch is missing".into()))?;
        Ok(KeyHome::Etcd { keys: Box::new(keys), epoch, cluster_id: state.cluster_id })
    }

    /// The `meta` rows a new data dir records about its key home.
    pub(super) fn creation_rows(&self) -> Result<Vec<MetaRow>, Error> {
        let mut rows = vec![(META_KEY_HOME, self.name().into_bytes())];
        if let KeyHome::Etcd { cluster_id, .. } = self {
            rows.push((META_ETCD_CLUSTER, cluster_id.to_be_bytes().to_vec()));
        }
        Ok(rows)
    }

    /// How the data dir names this home in its `meta` row.
    pub(super) fn name(&self) -> String {
        name_of(self.etcd().map(|(keys, _)| keys.config()))
    }

    pub(super) fn etcd(&self) -> Option<(&ConsensusKeys, u64)> {
        match self {
            KeyHome::Local => None,
            KeyHome::Etcd { keys, epoch, .. } => Some((keys, *epoch)),
        }
    }
}

/// Refuses `what` on a read replica: only a shard's primary writes its keys.
fn read_only(etcd: &ConsensusKeys, what: &str) -> Result<(), Error> {
    match etcd.config().replica {
        0 => Ok(()),
        r => Err(Error::Consensus {
            what: what.into(),
            reason: format!("this node is replica {r} of its shard, a read copy: only replica 0 writes keys"),
        }),
    }
}

/// How a data dir names the key home of `cluster` (`None`: its own `data_keys`).
fn name_of(cluster: Option<&ClusterConfig>) -> String {
    match cluster {
        None => LOCAL.into(),
        Some(config) => format!("etcd:{}", config.namespace),
    }
}

/// Refuses a data dir created under another key home than `cluster`'s (checked before
/// connecting).
pub(super) fn check_recorded(cluster: Option<&ClusterConfig>, recorded: Option<&[u8]>) -> Result<(), Error> {
    let recorded = recorded.map_or(LOCAL.into(), |r| String::from_utf8_lossy(r).into_owned());
    let requested = name_of(cluster);
    if recorded == requested {
        return Ok(());
    }
    let how = match recorded.strip_prefix("etcd:") {
        Some(namespace) => format!("start it with --cluster and the shard whose namespace is {namespace}"),
        None => "start it without --cluster, or give this shard a new data dir".into(),
    };
    Err(Error::KeyHomeMismatch { recorded, requested, how })
}

/// A `meta` row: its key and value.
pub(super) type MetaRow = (&'static [u8], Vec<u8>);

/// What the sweep at open found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Ciphertexts whose key was never committed, removed.
    pub orphans: usize,
    /// Keys in etcd with no ciphertext in this data dir (an erasure cut short between its two
    /// writes, finished by its phase 1; or a replica that lost its data).
    pub keyless: usize,
}

impl Store {
    /// A record's wrapped data key, from wherever keys live.
    pub(super) fn wrapped_key(&self, id: RecordId) -> Result<Option<Vec<u8>>, Error> {
        match self.home.etcd() {
            None => Ok(self.db.get_cf(self.cf(CF_DATA_KEYS), id.as_bytes())?),
            Some((etcd, _)) => Ok(etcd.get(id)?.map(|k| k.wrapped)),
        }
    }

    /// The wrapped data keys of search hits, to seal their recipients rows: without an etcd
    /// majority, from one member's own copy ([`ConsensusKeys::get_many_or_any_member`]), so
    /// searches are still answered.
    pub(super) fn wrapped_keys_for_hits(&self, ids: &[RecordId]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        match self.home.etcd() {
            None => self.wrapped_keys(ids),
            Some((etcd, _)) => etcd.get_many_or_any_member(ids),
        }
    }

    /// The wrapped data keys of `ids`, in order (one round trip per 127 ids to etcd).
    pub(super) fn wrapped_keys(&self, ids: &[RecordId]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        match self.home.etcd() {
            None => {
                let cf = self.cf(CF_DATA_KEYS);
                let got = self.db.batched_multi_get_cf(cf, ids.iter().map(|id| id.as_bytes()), false);
                got.into_iter().map(|r| Ok(r?.map(|v| v.to_vec()))).collect()
            }
            Some((etcd, _)) => etcd.get_many(ids),
        }
    }

    /// Every wrapped key held in etcd, by record (`None` with the keys in the data dir, where
    /// each record's key is read beside it).
    pub(super) fn etcd_keys(&self) -> Result<Option<HashMap<RecordId, Vec<u8>>>, Error> {
        match self.home.etcd() {
            None => Ok(None),
            Some((etcd, _)) => Ok(Some(etcd.all()?.into_iter().collect())),
        }
    }

    /// Commits new records' wrapped keys in etcd: the enrolment's commit point. On a refusal
    /// the records' rows are removed again (they were never readable), and the keys an earlier
    /// transaction of the same call committed are deleted, both on a best-effort basis: what a
    /// crash leaves is swept at the next open.
    pub(super) fn commit_keys(&self, keys: &[(RecordId, Vec<u8>)]) -> Result<(), Error> {
        let Some((etcd, epoch)) = self.home.etcd() else { return Ok(()) };
        read_only(etcd, "commit new records' keys")?;
        self.opened_keys.lock().take();
        let mut done = 0;
        for chunk in keys.chunks(MAX_KEYS_PER_TXN) {
            let pairs: Vec<(RecordId, &[u8])> = chunk.iter().map(|(id, w)| (*id, w.as_slice())).collect();
            if let Err(e) = etcd.commit(epoch, &pairs) {
                let ids: Vec<RecordId> = keys.iter().map(|(id, _)| *id).collect();
                if done > 0 {
                    for committed in ids[..done].chunks(MAX_KEYS_PER_TXN) {
                        if let Err(e) = etcd.delete(epoch, committed) {
                            tracing::warn!(error = %e, "a refused enrolment's committed keys could not be deleted");
                        }
                    }
                }
                if let Err(e) = self.drop_orphans(&ids) {
                    tracing::warn!(error = %e, "a refused enrolment's rows could not be removed; swept at next open");
                }
                return Err(e);
            }
            done += chunk.len();
        }
        Ok(())
    }

    /// Refuses an erasure up front when etcd does not answer, before anything is deleted.
    pub(super) fn check_etcd_answers(&self) -> Result<(), Error> {
        match self.home.etcd() {
            None => Ok(()),
            Some((etcd, epoch)) => match etcd.epoch()? {
                current if current == epoch => Ok(()),
                current => Err(Error::Fenced { ours: epoch, current }),
            },
        }
    }

    /// Before an erasure request is accepted: with keys in etcd, that its majority answers now
    /// under our epoch. Nothing is written.
    pub(super) fn check_commit_point(&self) -> Result<(), Error> {
        let Some((etcd, epoch)) = self.home.etcd() else { return Ok(()) };
        match etcd.epoch_for(
            "accept an erasure request, whose delete needs a majority of the members to commit (nothing was stored; \
             retry later)",
        )? {
            current if current == epoch => Ok(()),
            current => Err(Error::Fenced { ours: epoch, current }),
        }
    }

    /// Deletes `ids`' keys in etcd (nothing with local keys, which the delete's batch removes),
    /// returning what their purge must reach past.
    pub(super) fn delete_etcd_keys(&self, ids: &[RecordId]) -> Result<Option<Deleted>, Error> {
        let Some((etcd, epoch)) = self.home.etcd() else { return Ok(None) };
        read_only(etcd, "delete records' keys")?;
        self.opened_keys.lock().take();
        let mut last: Option<Deleted> = None;
        let mut deleted = 0;
        for chunk in ids.chunks(MAX_KEYS_PER_TXN) {
            let d = etcd.delete(epoch, chunk)?;
            deleted += d.deleted;
            last = Some(Deleted { deleted, ..d });
        }
        // No ids: still a bound past every earlier write (an empty delete).
        match last {
            Some(d) => Ok(Some(d)),
            None => etcd.delete(epoch, &[]).map(Some),
        }
    }

    /// Phase 1 on etcd: `ids`' keys deleted (again: idempotent), every member compacted,
    /// defragmented and its write-ahead log moved past the delete, then checked beside it. The
    /// checks passed, member by member; [`Error::Unverified`] naming each member still pending.
    pub(super) fn purge_etcd_keys(&self, ids: &[RecordId], prints: &Prints) -> Result<Vec<String>, Error> {
        let Some((etcd, _)) = self.home.etcd() else { return Ok(Vec::new()) };
        let Some(deleted) = self.delete_etcd_keys(ids)? else { return Ok(Vec::new()) };
        let purge = etcd.purge(&deleted, prints)?;
        // One name per shard: its phase-1 purges run one batch at a time, and a batch retried
        // may have grown, so a name per batch would leave the earlier one pending for ever.
        etcd.publish_acks("erasure-phase-1", &format!("erasure phase 1 ({} key(s))", ids.len()), &purge);
        let pending = purge.pending();
        if !pending.is_empty() {
            let names: Vec<String> =
                pending.iter().map(|(member, why)| format!("etcd member {member}: {why}")).collect();
            return Err(Error::Unverified(format!(
                "{} of {} etcd member(s) pending: {}",
                pending.len(),
                purge.members.len(),
                names.join("; ")
            )));
        }
        let mut verified = Vec::new();
        for m in &purge.members {
            if let Outcome::Checked(checks) = &m.outcome {
                verified.extend(checks.iter().map(|c| format!("etcd member {}: {c}", m.endpoint)));
            }
        }
        Ok(verified)
    }

    /// At open, with keys in etcd: removes every ciphertext whose key was never committed (an
    /// enrolment cut short between its two writes) and counts the keys with no ciphertext here.
    pub(super) fn sweep_orphans(&self) -> Result<Sweep, Error> {
        let Some(keys) = self.etcd_keys()? else { return Ok(Sweep::default()) };
        let mut orphans = Vec::new();
        let mut held = 0;
        for item in self.db.iterator_cf(self.cf(CF_RECORDS), rocksdb::IteratorMode::Start) {
            let (key, _) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("record key is not an id".into()))?;
            let id = RecordId::from_bytes(id);
            match keys.contains_key(&id) {
                true => held += 1,
                false => orphans.push(id),
            }
        }
        self.drop_orphans(&orphans)?;
        let sweep = Sweep { orphans: orphans.len(), keyless: keys.len() - held };
        if sweep.orphans > 0 {
            tracing::warn!(orphans = sweep.orphans, "ciphertexts whose key was never committed removed");
        }
        if sweep.keyless > 0 {
            tracing::warn!(keys = sweep.keyless, "keys in etcd with no ciphertext in this data dir");
        }
        *self.opened_keys.lock() = Some(keys);
        Ok(sweep)
    }

    /// Deletes the rows of records whose key is not committed (one synced write), and compacts
    /// their ranges of the records column family so the ciphertexts leave the table files too.
    fn drop_orphans(&self, ids: &[RecordId]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for id in ids {
            let key = id.as_bytes();
            // The idempotency row, only while it still names this record (a retry of the same
            // call may have taken it over).
            if let Some(row) = self.db.get_cf(self.cf(CF_IDEMPOTENCY_OF), key)? {
                let names_it = self.db.get_cf(self.cf(CF_IDEMPOTENCY), &row)?.is_some_and(|v| v.starts_with(key));
                if names_it {
                    batch.delete_cf(self.cf(CF_IDEMPOTENCY), &row);
                }
            }
            for cf in [CF_RECORDS, CF_ENROLMENT_LEAVES, CF_QUARANTINE, CF_IDEMPOTENCY_OF] {
                batch.delete_cf(self.cf(cf), key);
            }
        }
        self.db.write_opt(batch, &synced())?;
        let opts = super::erase::forced();
        for id in ids {
            self.db.compact_range_cf_opt(self.cf(CF_RECORDS), Some(id.as_bytes()), Some(id.as_bytes()), &opts);
        }
        Ok(())
    }
}

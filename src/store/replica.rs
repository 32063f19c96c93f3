//! A shard's read replicas (`oubli-server --replica R`, R ≥ 1): copies of the shard's
//! ciphertexts in a data dir of their own, with the keys read from the shard's namespace in
//! etcd, never written there.
//!
//! A replica converges on etcd: every round (`Engine::replicate`) it reads every key at one
//! revision (the *listing*) and
//! - removes every copy whose key is gone (an erased record, or one whose enrolment was never
//!   committed): the rows deleted in one synced write, their ranges compacted, and the same
//!   checks as an erasure's phase 2 (table files written after the delete, nothing held, a byte
//!   scan of its whole data dir for the removed ciphertexts);
//! - fetches from the shard's primary (replica 0) the ciphertexts of keys it lacks, as sealed:
//!   a row is opened with its key before it is stored, so a forged or corrupt one is refused.
//!
//! It then publishes an acknowledgement under the namespace's `replicas/` (its endpoint, the
//! listing's revision, the checks of its last removal: no record id, template or key). Every
//! key deletion also writes the namespace's `erased-at` mark in the same transaction, so an
//! erasure's phase 2 on the primary ([`Store::replica_checks`]) requires each replica's
//! listing to be past the mark and names every replica that is not yet, or whose checks failed.
use std::collections::{BTreeSet, HashMap};

use etcd_client::{Client, GetOptions};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{
    CF_META, CF_QUARANTINE, CF_RECORDS, Error, Evidence, Store, Target,
    consensus::{ConsensusKeys, prefix_end},
    synced,
};
use crate::record::{Record, RecordId};

/// Where a namespace's replicas publish their acknowledgements.
const REPLICAS: &str = "/replicas/";
/// The namespace's erasure mark: rewritten by every key deletion, in its transaction.
const ERASED_AT: &str = "/erased-at";
/// In a replica's `meta`: the removal whose purge has not passed its checks yet.
const META_REMOVAL: &[u8] = b"replica-removal";

/// Copies deleted whose purge has not passed its checks yet: what it must check.
#[derive(Serialize, Deserialize)]
struct Removal {
    targets: Vec<Target>,
    evidence: Evidence,
}

/// A record as a replica copies it: the ciphertext as sealed (never opened on the way), and
/// the quarantine rule the ingest policy gave it, if any.
#[derive(Clone)]
pub struct SealedCopy {
    pub id: RecordId,
    pub sealed: Vec<u8>,
    pub quarantine: Option<String>,
}

/// What a replica last said of itself, under the namespace's `replicas/R`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAck {
    pub replica: u32,
    /// Where it serves.
    pub endpoint: String,
    /// The etcd revision of the listing it is in step with: no record whose key was absent
    /// then is left in its data dir.
    pub listing: i64,
    /// Records it holds and serves.
    pub records: usize,
    /// Keys at the listing whose ciphertext it could not fetch yet.
    pub missing: usize,
    /// The checks of its last removal, each one that could have failed.
    pub checks: Vec<String>,
    /// Why it is not in step with a newer listing (a check of its removal failed); `None`: in
    /// step.
    pub pending: Option<String>,
    pub at: jiff::Timestamp,
}

/// Every key of a namespace at one revision.
pub struct Listing {
    pub revision: i64,
    /// The revision of the namespace's last key deletion (0: none yet).
    pub erased_at: i64,
    pub keys: HashMap<RecordId, Vec<u8>>,
}

impl ConsensusKeys {
    pub(super) fn erased_at_key(&self) -> String {
        format!("{}{ERASED_AT}", self.config().namespace)
    }

    fn replicas_prefix(&self) -> String {
        format!("{}{REPLICAS}", self.config().namespace)
    }

    /// The revision of the namespace's last key deletion (0: none yet).
    fn erased_at(&self) -> Result<i64, Error> {
        let key = self.erased_at_key();
        let got = self.write("read the namespace's erasure mark", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(got.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }

    /// Every key of the namespace, at one revision (pages after the first read at the first's
    /// revision), after the erasure mark, read through the leader.
    pub fn listing(&self) -> Result<Listing, Error> {
        const PAGE: i64 = 10_000;
        let erased_at = self.erased_at()?;
        let prefix = self.keys_prefix();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut keys = HashMap::new();
        let mut revision = None;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(r) = revision {
                opts = opts.with_revision(r);
            }
            let page = self.write("list the shard's keys", |mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            })?;
            revision.get_or_insert(page.header().map_or(0, |h| h.revision()));
            for kv in page.kvs() {
                keys.insert(self.id_of(kv.key(), &prefix)?, kv.value().to_vec());
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(Listing { revision: revision.unwrap_or(0), erased_at, keys }),
            }
        }
    }

    /// Publishes `ack` under the namespace's `replicas/R`.
    pub fn put_replica_ack(&self, ack: &ReplicaAck) -> Result<(), Error> {
        let key = format!("{}{}", self.replicas_prefix(), ack.replica);
        let value = serde_json::to_vec(ack).expect("an acknowledgement serialises");
        self.write("publish the replica's acknowledgement", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .map(drop)
    }

    /// The erasure mark and every replica's acknowledgement, by replica number. One that does
    /// not parse is refused (a replica whose state cannot be read is not in step).
    pub fn replica_acks(&self) -> Result<(i64, Vec<ReplicaAck>), Error> {
        self.replica_acks_via(self.client(), &self.config().namespace)
    }

    /// [`Self::replica_acks`] of the namespace `namespace`, read through `client`.
    pub(super) fn replica_acks_via(&self, client: &Client, namespace: &str) -> Result<(i64, Vec<ReplicaAck>), Error> {
        let mark = format!("{namespace}{ERASED_AT}");
        let got = self.write_via(client, "read the namespace's erasure mark", |mut c| {
            let mark = mark.clone();
            async move { c.get(mark, None).await }
        })?;
        let erased_at = got.kvs().first().map_or(0, |kv| kv.mod_revision());
        let prefix = format!("{namespace}{REPLICAS}");
        let got = self.write_via(client, "read the replicas' acknowledgements", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        let mut acks = got
            .kvs()
            .iter()
            .map(|kv| {
                serde_json::from_slice::<ReplicaAck>(kv.value()).map_err(|e| {
                    Error::Corrupt(format!(
                        "the acknowledgement {} in etcd does not parse: {e}",
                        String::from_utf8_lossy(kv.key())
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        acks.sort_by_key(|a| a.replica);
        Ok((erased_at, acks))
    }
}

impl Store {
    fn consensus(&self, what: &str) -> Result<&ConsensusKeys, Error> {
        self.home.etcd().map(|(keys, _)| keys).ok_or_else(|| Error::Consensus {
            what: what.into(),
            reason: "this store keeps its keys in its own data dir: replicas need a cluster (--cluster)".into(),
        })
    }

    /// The ciphertexts of `ids` as stored, with their quarantine rules: what the primary
    /// sends a replica. Ids not held are left out.
    pub fn sealed_rows(&self, ids: &[RecordId]) -> Result<Vec<SealedCopy>, Error> {
        let sealed = self.db.batched_multi_get_cf(self.cf(CF_RECORDS), ids.iter().map(|id| id.as_bytes()), false);
        let rules = self.db.batched_multi_get_cf(self.cf(CF_QUARANTINE), ids.iter().map(|id| id.as_bytes()), false);
        let mut out = Vec::new();
        for ((id, sealed), rule) in ids.iter().zip(sealed).zip(rules) {
            if let Some(sealed) = sealed? {
                let quarantine = rule?.map(|r| String::from_utf8_lossy(&r).into_owned());
                out.push(SealedCopy { id: *id, sealed: sealed.to_vec(), quarantine });
            }
        }
        Ok(out)
    }

    /// Every key of the shard at one revision.
    pub fn replica_listing(&self) -> Result<Listing, Error> {
        self.consensus("list the shard's keys")?.listing()
    }

    /// The ids of every ciphertext in the data dir.
    pub fn local_ids(&self) -> Result<BTreeSet<RecordId>, Error> {
        let mut out = BTreeSet::new();
        for item in self.db.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (key, _) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("record key is not an id".into()))?;
            out.insert(RecordId::from_bytes(id));
        }
        Ok(out)
    }

    /// Removes the copies of `ids` (their keys are gone from etcd): the rows deleted in one
    /// synced write, which also records what their purge must check (merged with a removal
    /// still waiting for its checks), so that a crash before the purge loses none of it.
    pub fn drop_copies(&self, ids: &[RecordId]) -> Result<(), Error> {
        let values: Vec<Vec<u8>> = self
            .db
            .batched_multi_get_cf(self.cf(CF_RECORDS), ids.iter().map(|id| id.as_bytes()), false)
            .into_iter()
            .filter_map(|v| v.transpose())
            .map(|v| v.map(|v| v.to_vec()))
            .collect::<Result<_, _>>()?;
        let targets: Vec<Target> = ids
            .iter()
            .flat_map(|id| {
                [CF_RECORDS, CF_QUARANTINE].map(|cf| Target {
                    cf: cf.into(),
                    start: id.as_bytes().to_vec(),
                    end: id.as_bytes().to_vec(),
                    absent: true,
                })
            })
            .collect();
        let mut evidence: Evidence = self.evidence(&[], &targets)?;
        evidence.row_prints = self.prints_of(values.iter().map(Vec::as_slice));
        evidence.delete_seq = self.db.latest_sequence_number();
        evidence.file_ceiling = self.file_ceiling()?;
        let mut removal = Removal { targets, evidence };
        if let Some(waiting) = self.waiting_removal()? {
            removal.targets.extend(waiting.targets);
            removal.evidence.extend(&waiting.evidence);
        }
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete_cf(self.cf(CF_RECORDS), id.as_bytes());
            batch.delete_cf(self.cf(CF_QUARANTINE), id.as_bytes());
        }
        let row = serde_json::to_vec(&removal).map_err(|e| Error::Corrupt(format!("a removal: {e}")))?;
        batch.put_cf(self.cf(CF_META), META_REMOVAL, row);
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// The removal waiting for its purge, if any.
    fn waiting_removal(&self) -> Result<Option<Removal>, Error> {
        match self.db.get_cf(self.cf(CF_META), META_REMOVAL)? {
            None => Ok(None),
            Some(row) => serde_json::from_slice(&row)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("the replica's waiting removal does not parse: {e}"))),
        }
    }

    /// Purges and checks the removal waiting (as an erasure's two phases do: no write-ahead
    /// log from before the delete left, table files written after it, nothing held, a byte
    /// scan of the whole data dir for the removed ciphertexts), and forgets it once every check
    /// passed. `None`: nothing waits.
    /// [`Error::Unverified`] names the first check that failed; the removal stays waiting.
    pub fn purge_copies(&self) -> Result<Option<Vec<String>>, Error> {
        let Some(removal) = self.waiting_removal()? else { return Ok(None) };
        // Every column family, so that no write-ahead log from before the delete (which held
        // the copies as they were written) is still needed.
        self.flush_all()?;
        let mut checks = vec![self.no_old_wals(&removal.evidence)?];
        checks.extend(self.purge_rows(&removal.targets, &removal.evidence)?);
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_META), META_REMOVAL);
        self.db.write_opt(batch, &synced())?;
        Ok(Some(checks))
    }

    /// Stores copies sent by the primary, each opened with its key from `keys` first (a row
    /// that does not open under it is refused: nothing is stored); rows whose key is not in
    /// `keys` (erased since the listing) are skipped. One synced write; the records opened.
    pub fn adopt_copies(&self, rows: &[SealedCopy], keys: &HashMap<RecordId, Vec<u8>>) -> Result<Vec<Record>, Error> {
        let mut records = Vec::with_capacity(rows.len());
        let mut batch = WriteBatch::default();
        for row in rows {
            let Some(wrapped) = keys.get(&row.id) else { continue };
            records.push(self.decrypt(row.id, &row.sealed, Some(wrapped))?);
            batch.put_cf(self.cf(CF_RECORDS), row.id.as_bytes(), &row.sealed);
            if let Some(rule) = &row.quarantine {
                batch.put_cf(self.cf(CF_QUARANTINE), row.id.as_bytes(), rule.as_bytes());
            }
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &synced())?;
        }
        Ok(records)
    }

    /// Publishes a replica's acknowledgement in etcd.
    pub fn put_replica_ack(&self, ack: &ReplicaAck) -> Result<(), Error> {
        self.consensus("publish the replica's acknowledgement")?.put_replica_ack(ack)
    }

    /// For an erasure's phase 2 on the primary: each replica of the shard in step with etcd
    /// past the last key deletion, with its checks (nothing with local keys, or no replica).
    /// [`Error::Unverified`] names every replica that is not.
    pub fn replica_checks(&self) -> Result<Vec<String>, Error> {
        let Some((etcd, _)) = self.home.etcd() else { return Ok(Vec::new()) };
        let (erased_at, acks) = etcd.replica_acks()?;
        let mut verified = Vec::new();
        let mut pending = Vec::new();
        for ack in &acks {
            let name = format!("replica {} ({})", ack.replica, ack.endpoint);
            match &ack.pending {
                Some(why) => pending.push(format!("{name}: {why}")),
                None if ack.listing < erased_at => pending.push(format!(
                    "{name}: last in step with etcd at revision {}, before the keys' delete at revision {erased_at} \
                     (it is stopped, or has not run since; it catches up when it runs)",
                    ack.listing
                )),
                None => {
                    verified.push(format!(
                        "{name}: in step with etcd at revision {} (the keys' delete was at {erased_at}): it holds no \
                         record whose key is gone ({} record(s) held)",
                        ack.listing, ack.records
                    ));
                    verified.extend(ack.checks.iter().map(|c| format!("{name}, its last removal: {c}")));
                }
            }
        }
        if !pending.is_empty() {
            return Err(Error::Unverified(format!(
                "{} of {} replica(s) pending: {}",
                pending.len(),
                acks.len(),
                pending.join("; ")
            )));
        }
        Ok(verified)
    }
}

//! Opening a data dir against what its key dir remembers (`outside.rs`): a mirror left behind by
//! a crash is caught up; a data dir whose log is behind the mirror (a restored backup) is
//! refused, or, when the operator asks for it, restored: its log continued from the mirror, never
//! rewound, and every journaled erasure re-applied before anything is served.
use std::{cmp::Ordering, collections::HashMap};

use jiff::Timestamp;
use rocksdb::{IteratorMode, WriteBatch};
use tracing::{info, instrument, warn};

use super::{
    CF_META, CF_RECORDS, CF_SUPPRESSED, COLUMN_FAMILIES, Deletion, Erased, Error, META_RESTORE_PENDING, Store,
    outside::{JOURNAL_ID_DOMAIN, JournalEntry, Scan},
};
use crate::{
    record::RecordId,
    transparency::{
        event::{Event, Logged},
        merkle::TreeSize,
        receipt,
    },
};

/// A manual compaction to the bottom level, as the purges run it.
fn forced() -> rocksdb::CompactOptions {
    let mut opts = rocksdb::CompactOptions::default();
    opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
    opts.set_exclusive_manual_compaction(true);
    opts
}

/// How often a purge of a re-applied erasure is tried before the open fails.
const PURGE_ATTEMPTS: usize = 3;

impl Store {
    /// The journal entry of `deletion`: its commitment, the keyed hashes of its record ids and
    /// suppressed sources, and who was `notified` of which record. Appended and synced before
    /// the delete is written.
    pub(super) fn journal_erasure(
        &self,
        deletion: &Deletion<'_>,
        notified: &[(RecordId, String)],
    ) -> Result<(), Error> {
        let recipients = notified
            .iter()
            .filter_map(|(id, client)| {
                let at = deletion.ids.iter().position(|i| i == id)?;
                Some((u32::try_from(at).ok()?, client.clone()))
            })
            .collect();
        let entry = JournalEntry {
            commitment: deletion.commitment,
            records: deletion.ids.iter().map(|id| self.keys.mac(JOURNAL_ID_DOMAIN, id.as_bytes())).collect(),
            suppressed: deletion.suppress.to_vec(),
            recipients,
        };
        self.journal.lock().record(entry)?;
        Ok(())
    }

    /// Checks the data dir's log (recovered from the data dir) against the key dir's mirror and
    /// anchor. Equal: nothing to do. The data dir ahead (a crash between its write and the
    /// mirror's): the mirror is caught up. Behind (an older copy): refused, or with
    /// `restore_from_backup` the missing leaves and their statements are copied back from the
    /// mirror. Returns whether it was restored (its erasures are then re-applied).
    #[instrument(skip_all, fields(restore_from_backup))]
    pub(super) fn settle_log(&self, scan: Scan, restore_from_backup: bool) -> Result<bool, Error> {
        let mut log = self.log.lock();
        let mut mirror = self.mirror.lock();
        let (db_size, mirror_size) = (log.size(), mirror.size());
        if scan.dropped > 0 {
            warn!(bytes = scan.dropped, "the log mirror's torn tail (an append cut short by a crash) was truncated");
        }
        let mut anchor_size = None;
        if let Some(note) = &scan.anchor {
            let verifier = self.keys.log_signer(log.origin())?.verifier();
            let signed = receipt::open_checkpoint(note, &verifier)
                .map_err(|e| Error::LogMismatch(format!("the key dir's anchor does not verify: {e}")))?;
            if signed.size > mirror_size || scan.tree.root(TreeSize(signed.size))? != signed.root {
                return Err(Error::LogMismatch("the key dir's log mirror does not match its own anchor".into()));
            }
            anchor_size = Some(signed.size);
        }
        let common = db_size.min(mirror_size);
        if common > 0 && scan.tree.root(TreeSize(common))? != log.root(common)? {
            return Err(Error::LogMismatch(format!(
                "the data dir's log and the key dir's mirror differ within their first {common} entries: the data \
                 dir is not a copy of the one this key dir serves, or one of the logs was altered"
            )));
        }
        match db_size.cmp(&mirror_size) {
            Ordering::Equal => {
                if anchor_size != Some(log.published_size()) {
                    mirror.append(db_size, &[], Some(log.checkpoint()))?;
                }
                Ok(false)
            }
            Ordering::Greater => {
                let leaves = self.mirror_leaves(mirror_size, db_size)?;
                mirror.append(mirror_size, &leaves, Some(log.checkpoint()))?;
                info!(leaves = leaves.len(), "the log mirror was caught up from the data dir");
                Ok(false)
            }
            Ordering::Less if !restore_from_backup => Err(Error::BehindMirror {
                log: db_size,
                mirror: mirror_size,
                anchor: anchor_size.unwrap_or(mirror_size),
                erasures: self.journal.lock().entries().len(),
            }),
            Ordering::Less => {
                self.restore_leaves(&mut log, &scan.tail)?;
                mirror.append(mirror_size, &[], Some(log.checkpoint()))?;
                warn!(
                    copied = scan.tail.len(),
                    size = mirror_size,
                    "restoring from a backup: the log's missing entries were copied back from the key dir's mirror"
                );
                Ok(true)
            }
        }
    }

    /// After [`Store::settle_log`]: re-applies the journaled erasures to a data dir just
    /// `restored`, or to one whose restore an earlier open did not finish (whose re-applied rows
    /// may have been deleted but not purged: the whole store is then compacted to the bottom
    /// first). Clears the restore's mark once every re-application is purged and checked.
    pub(super) fn finish_restore(&self, restored: bool) -> Result<(), Error> {
        let unfinished = !restored && self.db.get_cf(self.cf(CF_META), META_RESTORE_PENDING)?.is_some();
        if !restored && !unfinished {
            return Ok(());
        }
        if unfinished {
            warn!("an earlier restore from a backup did not finish: finishing it");
            self.flush_all()?;
            for name in COLUMN_FAMILIES {
                self.db.compact_range_cf_opt(self.cf(name), None::<&[u8]>, None::<&[u8]>, &forced());
            }
        }
        let reapplied = self.reapply_erasures()?;
        self.db.delete_cf_opt(self.cf(CF_META), META_RESTORE_PENDING, &super::synced())?;
        warn!(reapplied, "restored from a backup: every journaled erasure re-applied, the log continued");
        Ok(())
    }

    /// Re-applies every journaled erasure to a restored data dir: the records whose keyed id
    /// hash is journaled are deleted again with every row [`Store::erase`] deletes, the
    /// journaled suppression keys it lacks are added back, each re-application is logged
    /// (`erasure-reapplied`, the original request's commitment and the records deleted again),
    /// and its rows are purged and checked like an erasure's (`purge_keys`, then `purge_rows`).
    /// A journaled erasure the data dir already reflects is left alone. Returns the number of
    /// erasures re-applied.
    #[instrument(skip_all, fields(journaled))]
    pub(super) fn reapply_erasures(&self) -> Result<usize, Error> {
        // A resumed erasure may be journaled twice (it found a new recipient): one erasure each.
        let entries: Vec<JournalEntry> = self.journal.lock().merged();
        tracing::Span::current().record("journaled", entries.len());
        let mut owner: HashMap<[u8; 32], usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            for hash in &entry.records {
                owner.insert(*hash, i);
            }
        }
        let mut found = vec![Vec::new(); entries.len()];
        for item in self.db.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start) {
            let (key, _) = item?;
            let id: [u8; 16] = key.as_ref().try_into().map_err(|_| Error::Corrupt("record key is not an id".into()))?;
            if let Some(&i) = owner.get(&self.keys.mac(JOURNAL_ID_DOMAIN, &id)) {
                found[i].push(RecordId::from_bytes(id));
            }
        }
        // Every delete first, each logged; then one purge of them all, as the workflow batches
        // its purges.
        let (mut reapplied, mut all_ids, mut all) = (0, Vec::new(), Erased::default());
        for (entry, ids) in entries.iter().zip(found) {
            let mut missing = Vec::new();
            for key in &entry.suppressed {
                if self.db.get_pinned_cf(self.cf(CF_SUPPRESSED), key)?.is_none() {
                    missing.push(*key);
                }
            }
            if ids.is_empty() && missing.is_empty() {
                continue;
            }
            // Who the journal says was notified of these records, by their ids here.
            let by_hash: HashMap<[u8; 32], RecordId> =
                ids.iter().map(|id| (self.keys.mac(JOURNAL_ID_DOMAIN, id.as_bytes()), *id)).collect();
            let journaled: Vec<(RecordId, String)> = entry
                .recipients
                .iter()
                .filter_map(|(at, client)| Some((*by_hash.get(entry.records.get(*at as usize)?)?, client.clone())))
                .collect();
            let erased = self.reapply(entry.commitment, &ids, &missing, &journaled)?;
            info!(records = erased.records, suppressed = missing.len(), "a journaled erasure was re-applied");
            all.evidence.extend(&erased.evidence);
            all.targets.extend(erased.targets);
            all_ids.extend(ids);
            reapplied += 1;
        }
        if reapplied > 0 {
            self.purge_reapplied(&all_ids, &all)?;
        }
        Ok(reapplied)
    }

    /// One re-application: the delete and its log entry in one synced write.
    fn reapply(
        &self,
        commitment: [u8; 32],
        ids: &[RecordId],
        suppress: &[[u8; 32]],
        journaled: &[(RecordId, String)],
    ) -> Result<Erased, Error> {
        let _keys = self.key_lock.read();
        let _no_disclosures = self.erase_lock.write();
        let now = Timestamp::now();
        let notice = |id: RecordId| {
            let body = serde_json::json!({
                "record_id": id.to_string(),
                "erased_at": now.to_string(),
                "reason": "erased at the request of the person concerned (GDPR Art. 17), erased again after the \
                           service restored a backup that still held it",
                "action": "erase every copy of this record and of results derived from it that you hold (Art. 19)",
            });
            serde_json::to_vec(&body).expect("a notice serialises")
        };
        let deletion =
            Deletion { ids, graph_slots: &[], notice: &notice, suppress, faces: None, also: &[], commitment };
        let mut batch = WriteBatch::default();
        let erased = self.delete_rows(&deletion, &[0; 16], now, journaled, &mut batch)?;
        let time = now.round(jiff::Unit::Second).unwrap_or(now);
        let event = Event::ErasureReapplied { commitment, records: u32::try_from(erased.records).unwrap_or(u32::MAX) };
        self.write_logged_with(batch, &[Logged::plain(time, event)], |_, _| {})?;
        Ok(erased)
    }

    /// Both purges of a re-application, each retried a few times (a check can fail on a
    /// background compaction's timing); a purge that still fails refuses the open.
    fn purge_reapplied(&self, ids: &[RecordId], erased: &Erased) -> Result<(), Error> {
        for phase in 0..2 {
            for attempt in 1..=PURGE_ATTEMPTS {
                let result = match phase {
                    0 => self.purge_keys(ids, &erased.evidence),
                    _ => self.purge_rows(&erased.targets, &erased.evidence),
                };
                match result {
                    Ok(_) => break,
                    Err(Error::Unverified(_)) if attempt < PURGE_ATTEMPTS => {
                        warn!(phase = phase + 1, attempt, "a re-applied erasure's purge check failed; retried");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use zeroize::Zeroizing;

    use super::*;
    use crate::{
        embedding::Embedding,
        record::{IdempotencyKey, NewRecord, Provenance},
        transparency::{
            event::Entry,
            note::VerifierKey,
            witness::{self, Verdict},
        },
    };

    fn record(i: usize) -> NewRecord {
        let mut v = vec![0.0f32; 8];
        v[i % 8] = 1.0;
        v[(i + 1) % 8] = i as f32 / 100.0;
        NewRecord {
            embedding: Embedding::new(v, 8).unwrap(),
            provenance: Provenance::scraped(format!("https://photos.example/{i}.jpg"), Timestamp::now()).unwrap(),
            idempotency_key: Some(IdempotencyKey::parse(format!("k{i}")).unwrap().unwrap()),
        }
    }

    fn enrol(store: &Store, from: usize, n: usize) -> Vec<RecordId> {
        let records: Vec<NewRecord> = (from..from + n).map(record).collect();
        let ids: Vec<RecordId> = records.iter().map(|_| RecordId::random()).collect();
        let pairs: Vec<(RecordId, &NewRecord)> = ids.iter().copied().zip(&records).collect();
        store.insert(&pairs, Timestamp::now(), &[]).unwrap();
        ids
    }

    /// One person's erasure as the rights workflow runs it: the delete, then both purges.
    fn erase(store: &Store, ids: &[RecordId], commitment: [u8; 32]) {
        let suppress: Vec<[u8; 32]> = store.erasure_inputs(ids).unwrap().iter().map(|h| h.source_key).collect();
        let deletion = Deletion {
            ids,
            graph_slots: &[],
            notice: &|_| b"{}".to_vec(),
            suppress: &suppress,
            faces: None,
            also: &[],
            commitment,
        };
        let erased = store.erase(&deletion, &[commitment[0]; 16], |_| Zeroizing::new(b"state".to_vec())).unwrap();
        store.purge_keys(ids, &erased.evidence).unwrap();
        store.purge_rows(&erased.targets, &erased.evidence).unwrap();
    }

    fn verifier(store: &Store) -> VerifierKey {
        VerifierKey::parse(&store.verifier_key()).unwrap()
    }

    #[test]
    fn a_key_dir_serves_one_data_dir_and_a_copy_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let store = Store::open(&data, &keys, Some(8), None).unwrap();
        enrol(&store, 0, 2);
        store.backup_to(&dir.path().join("copy")).unwrap();
        drop(store);
        let err = Store::open(&dir.path().join("other"), &keys, Some(8), None).err().unwrap();
        assert!(matches!(err, Error::KeyDirBound { .. }), "{err}");
        assert!(err.to_string().contains("serves another data dir"), "{err}");
        // A copy of the same data dir, its log as long as the mirror: the same data dir.
        Store::open(&dir.path().join("copy"), &keys, None, None).unwrap();
        Store::open(&data, &keys, None, None).unwrap();
    }

    #[test]
    fn a_mirror_behind_the_data_dir_is_caught_up_and_a_torn_tail_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let mirror = keys.join(super::super::outside::MIRROR_FILE);
        let store = Store::open(&data, &keys, Some(8), None).unwrap();
        enrol(&store, 0, 3);
        let early = std::fs::read(&mirror).unwrap();
        enrol(&store, 3, 4);
        let checkpoint = store.checkpoint();
        drop(store);
        // A crash after the data dir's write, before the mirror's, and a torn append after it.
        let mut torn = early.clone();
        torn.extend_from_slice(&[0, 0, 0, 9, 1, 2, 3]);
        std::fs::write(&mirror, &torn).unwrap();
        let store = Store::open(&data, &keys, None, None).unwrap();
        assert_eq!(store.checkpoint(), checkpoint);
        assert_eq!(store.mirror.lock().size(), 7);
        drop(store);
        let (again, scan) = super::super::outside::Mirror::open(&mirror, 0).unwrap();
        assert_eq!((again.size(), scan.anchor.as_deref(), scan.dropped), (7, Some(checkpoint.as_str()), 0));
        assert!(std::fs::read(&mirror).unwrap().starts_with(&early), "the mirror only grows");
    }

    #[test]
    fn a_restored_backup_is_refused_then_restored_with_every_erasure_reapplied() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys, backup) = (dir.path().join("data"), dir.path().join("keys"), dir.path().join("backup"));
        let store = Store::open(&data, &keys, Some(8), None).unwrap();
        let ids = enrol(&store, 0, 10);
        store.backup_to(&backup).unwrap();
        let backup_size = store.log.lock().size();
        let wrapped = store.raw_rows(ids[0]).unwrap().wrapped_key.unwrap();
        let people = [&ids[0..2], &ids[2..3], &ids[3..6]];
        for (n, person) in people.iter().enumerate() {
            erase(&store, person, [n as u8 + 1; 32]);
        }
        let later = enrol(&store, 10, 2);
        let published = store.checkpoint();
        let key = verifier(&store);
        let published_size = store.log.lock().size();
        drop(store);

        let err = Store::open(&backup, &keys, None, None).err().unwrap();
        assert!(
            matches!(err, Error::BehindMirror { log, mirror, erasures: 3, .. } if log == backup_size && mirror == published_size),
            "{err}"
        );
        assert!(err.to_string().contains("--restore-from-backup"), "{err}");
        assert!(Store::open(&backup, &keys, None, None).is_err(), "a refused open changes nothing");
        assert!(files_hold(&backup, &wrapped), "the backup holds an erased record's wrapped key");

        let store = Store::open_with(&backup, &keys, None, None, true).unwrap();
        for id in ids[..6].iter().chain(&later) {
            assert!(store.get(*id).unwrap().is_none());
        }
        for id in &ids[6..] {
            assert!(store.get(*id).unwrap().is_some(), "the others are kept");
        }
        for i in 0..6 {
            assert!(store.is_suppressed(&format!("https://photos.example/{i}.jpg")).unwrap());
        }
        assert!(!store.is_suppressed("https://photos.example/7.jpg").unwrap());
        // The log continued: the published checkpoint's leaves, then one entry per erasure.
        let size = store.log.lock().size();
        assert_eq!(size, published_size + 3);
        let reapplied: Vec<Event> = (published_size..size).map(|i| store.entry(i).unwrap().event).collect();
        let expected: Vec<Event> = [2u32, 1, 3]
            .iter()
            .enumerate()
            .map(|(n, &records)| Event::ErasureReapplied { commitment: [n as u8 + 1; 32], records })
            .collect();
        assert_eq!(reapplied, expected);
        let latest = store.checkpoint();
        let (_, proof) = store.consistency_proof(published_size, None).unwrap();
        let verdict = witness::check(Some(&published), &latest, &key, &proof).unwrap();
        assert!(matches!(verdict, Verdict::Grew { from, to } if from == published_size && to == size), "{verdict:?}");
        // The erased rows are purged from the restored copy's files too.
        assert!(store.raw_rows(ids[0]).unwrap().wrapped_key.is_none());
        assert!(!files_hold(&backup, &wrapped), "purged from the restored copy's files");
        let receipt = store.receipt_with(size - 1, None).unwrap();
        assert!(receipt.body.contains("erasure-reapplied"), "{}", receipt.body);
        let entry: Entry = store.entry(size - 1).unwrap();
        assert!(entry.statements.is_some());
        drop(store);

        // Opened again, nothing is re-applied twice; the data dir it was copied from is now the
        // older copy.
        let store = Store::open(&backup, &keys, None, None).unwrap();
        assert_eq!(store.log.lock().size(), size);
        drop(store);
        let err = Store::open(&data, &keys, None, None).err().unwrap();
        assert!(matches!(err, Error::BehindMirror { log, .. } if log == published_size), "{err}");
    }

    #[test]
    fn a_reapplied_erasure_notifies_recipients_the_backup_never_saw() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys, backup) = (dir.path().join("data"), dir.path().join("keys"), dir.path().join("backup"));
        let store = Store::open(&data, &keys, Some(8), None).unwrap();
        let ids = enrol(&store, 0, 4);
        let disclose = |store: &Store, client: &str, records: &[RecordId]| {
            let call =
                crate::store::Disclosed { records: records.to_vec(), client: client.into(), at: Timestamp::now() };
            store.record_disclosures(&[call]).unwrap();
        };
        disclose(&store, "police-a", &ids[..2]);
        store.backup_to(&backup).unwrap();
        // Disclosed after the backup: the restored copy has no recipients row of it.
        disclose(&store, "police-b", &ids[1..2]);
        erase(&store, &ids[..2], [1; 32]);
        assert_eq!(store.notices("police-b").unwrap().len(), 1);
        // The log moves on (the workflow logs every erasure): the backup is behind it.
        enrol(&store, 10, 1);
        drop(store);

        let store = Store::open_with(&backup, &keys, None, None, true).unwrap();
        let again = store.notices("police-b").unwrap();
        assert_eq!(again.len(), 1, "the journal names police-b, which the backup never recorded");
        let body: serde_json::Value = serde_json::from_slice(&again[0].body).unwrap();
        assert_eq!(body["record_id"], ids[1].to_string());
        assert!(body["reason"].as_str().unwrap().contains("restored a backup"), "{body}");
        // police-a's rows were in the backup: notified again once per record, not twice.
        assert_eq!(store.notices("police-a").unwrap().len(), 2);
    }

    /// Whether a file in `dir` holds `needle`.
    fn files_hold(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
            .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    }
}

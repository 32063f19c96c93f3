//! Erasure in the store: deleting every row of a record in one
//! write, then purging the deleted values from disk and *checking* that they are gone.
//!
//! A `Delete` only writes a tombstone; the value stays in older table files and write-ahead
//! logs until a compaction drops it. So erasure is two purges, each followed by checks that do
//! not trust the compaction's silence:
//! - the data keys ([`Store::purge_keys`]): every memtable flushed (so the write-ahead logs
//!   that held the keys become obsolete and are deleted: they are never archived or recycled),
//!   then the small `data_keys` column family compacted to the bottom. Checked: each key reads
//!   back as absent; the table files that held it and the logs that existed at the delete are
//!   no longer live and no longer on disk; no snapshot is held; their deletion is not on hold.
//!   From then on every remaining copy of the ciphertext is unreadable.
//! - the rows themselves ([`Store::purge_rows`]): the key ranges of the erased rows compacted
//!   to the bottom, range by range (the cost follows the table files touched, not the store's
//!   size), then the same checks for those ranges.
//!
//! Also here: the outbox of Art. 19 notifications to recipients, and the suppression list of
//! erased sources (keyed hashes of their URIs).
use std::{collections::BTreeSet, path::Path, sync::atomic::Ordering};

use jiff::Timestamp;
use rocksdb::{BottommostLevelCompaction, CompactOptions, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    CF_DATA_KEYS, CF_ENROLMENT_LEAVES, CF_GRAPH, CF_IDEMPOTENCY, CF_IDEMPOTENCY_OF, CF_OUTBOX, CF_QUARANTINE,
    CF_RECIPIENTS, CF_RECORDS, CF_REQUESTS, CF_SUPPRESSED, CF_SUPPRESSED_FACES, COLUMN_FAMILIES, Error, Store, crypto,
    graph,
};
use super::{
    livefiles::{self, LiveTable},
    scan::Prints,
};
use crate::record::RecordId;

pub(super) const NOTIFICATION_DOMAIN: &str = "notification";
pub(super) const FACE_DOMAIN: &str = "suppressed-face";

/// What the store knew, at a delete, about where the deleted values were on disk, and what
/// the purges' byte scans look for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Table files of `data_keys` that held the wrapped keys.
    pub key_files: BTreeSet<String>,
    /// Table files of the other column families that held the rows.
    pub row_files: BTreeSet<String>,
    /// Write-ahead logs that existed when the rows were deleted.
    pub wals: BTreeSet<String>,
    /// The database's last sequence number before the delete: every value it deleted was
    /// written at or below it.
    pub delete_seq: u64,
    /// The highest file number in the data dir before the delete: every file made after has a
    /// larger one.
    pub file_ceiling: u64,
    /// Fingerprints of the wrapped data keys (phase 1's byte scan).
    pub key_prints: Prints,
    /// Fingerprints of the sealed records, and of the request rows the delete replaced
    /// (phase 2's byte scan).
    pub row_prints: Prints,
}

impl Evidence {
    pub fn extend(&mut self, other: &Evidence) {
        self.key_files.extend(other.key_files.iter().cloned());
        self.row_files.extend(other.row_files.iter().cloned());
        self.wals.extend(other.wals.iter().cloned());
        self.delete_seq = self.delete_seq.max(other.delete_seq);
        self.file_ceiling = self.file_ceiling.max(other.file_ceiling);
        self.key_prints.extend(&other.key_prints);
        self.row_prints.extend(&other.row_prints);
    }
}

/// A key range `[start, end]` of one column family that held an erased row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub cf: String,
    #[serde(with = "hex::serde")]
    pub start: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub end: Vec<u8>,
    /// Whether the range must read back empty (a graph slot may be reused at once).
    pub absent: bool,
}

/// What one erasure removed, for the request that follows it (which keeps its own copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub records: usize,
    /// The recipients sent a notice.
    pub recipients: BTreeSet<String>,
    /// Each notice: the record, and its recipient.
    pub notified: Vec<(RecordId, String)>,
    pub rows: usize,
    pub targets: Vec<Target>,
    pub evidence: Evidence,
}

/// What the store holds about a record that its erasure needs first: the keyed hash of its
/// source (for the suppression list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: RecordId,
    pub source_key: [u8; 32],
}

/// What one erasure write removes and adds (see [`Store::erase`]).
#[derive(Clone, Copy)]
pub struct Deletion<'a> {
    pub ids: &'a [RecordId],
    /// The records' graph rows.
    pub graph_slots: &'a [u32],
    /// The notice each recipient of a record gets (Art. 19).
    pub notice: &'a dyn Fn(RecordId) -> Vec<u8>,
    /// Keyed hashes of the erased sources.
    pub suppress: &'a [[u8; 32]],
    /// The person's probes, only with their consent.
    pub faces: Option<&'a [u8]>,
    /// Other requests rewritten in the same write (access reports that named these records).
    pub also: &'a [super::StoredRequest],
    /// The request's commitment in the log, journaled in the key dir before the delete.
    pub commitment: [u8; 32],
}

/// A record's rows as stored (test hook): what the evidence tests look for on disk.
#[derive(Debug, Clone)]
pub struct RawRows {
    pub sealed: Option<Vec<u8>>,
    pub wrapped_key: Option<Vec<u8>>,
}

/// A notification to a recipient (Art. 19), as the operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub id: String,
    pub body: Zeroizing<Vec<u8>>,
}

impl Store {
    /// The keyed hash under which an erased source is suppressed: the URI itself is never
    /// stored.
    pub fn suppression_key(&self, source_uri: &str) -> [u8; 32] {
        self.keys.mac(b"oubli/suppressed-source/v1", source_uri.trim().as_bytes())
    }

    /// Whether `source_uri` was erased on request (a re-enrolment of it is refused).
    pub fn is_suppressed(&self, source_uri: &str) -> Result<bool, Error> {
        Ok(self.db.get_pinned_cf(self.cf(CF_SUPPRESSED), self.suppression_key(source_uri))?.is_some())
    }

    /// Every face kept (with consent) to refuse re-enrolment: the sealed bytes [`Store::erase`]
    /// was given, decrypted.
    pub fn suppressed_faces(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SUPPRESSED_FACES), IteratorMode::Start) {
            let (key, blob) = item?;
            out.push(crypto::open_blob(&self.keys, FACE_DOMAIN, &key, &blob)?);
        }
        Ok(out)
    }

    /// Deletes the faces kept for request `request_id` (their period is over) and stores the
    /// request's next state (`request`, plaintext) in the same synced write.
    pub fn forget_faces(&self, request_id: &[u8; 16], request: &[u8]) -> Result<(), Error> {
        let _keys = self.key_lock.read();
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_SUPPRESSED_FACES), request_id);
        let blob = crypto::seal_blob(&self.keys, super::rows::REQUEST_DOMAIN, request_id, request);
        batch.put_cf(self.cf(super::CF_REQUESTS), request_id, blob);
        self.db.write_opt(batch, &super::synced())?;
        Ok(())
    }

    /// Purges the replaced versions of the rows of `request_ids` (in `requests` and
    /// `suppressed_faces`) from the table files, as an expiry that rewrote them (probes
    /// dropped, faces forgotten, a request minimised) needs: the memtables flushed, those keys'
    /// ranges compacted to the bottom, then every live table file over them checked to have
    /// been written since (file and sequence numbers, deletion markers).
    pub fn purge_request_versions(&self, request_ids: &[[u8; 16]]) -> Result<Vec<String>, Error> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        // Every replaced version was written at or below these, before the flush below.
        let evidence = Evidence {
            delete_seq: self.db.latest_sequence_number(),
            file_ceiling: self.file_ceiling()?,
            ..Evidence::default()
        };
        let cfs = [self.cf(CF_REQUESTS), self.cf(CF_SUPPRESSED_FACES)];
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        let ranges: Vec<(&str, &[u8], &[u8])> = request_ids
            .iter()
            .flat_map(|id| [(CF_REQUESTS, id.as_slice(), id.as_slice()), (CF_SUPPRESSED_FACES, id, id)])
            .collect();
        for (cf, start, end) in &ranges {
            self.db.compact_range_cf_opt(self.cf(cf), Some(start), Some(end), &forced());
        }
        self.compact_old_tables(&ranges, &evidence)?;
        let mut verified = vec![self.no_old_tables(&ranges, &evidence, "the request column families")?];
        verified.extend(self.no_holds(&evidence)?);
        Ok(verified)
    }

    /// For each of `ids` still held: its source's keyed hash.
    pub fn erasure_inputs(&self, ids: &[RecordId]) -> Result<Vec<Held>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(record) = self.get(id)? else { continue };
            out.push(Held { id, source_key: self.suppression_key(record.provenance.source_uri()) });
        }
        Ok(out)
    }

    /// Deletes every row of `ids` (sealed record, wrapped data key, recipients rows,
    /// idempotency rows, enrolment leaf, quarantine flag) and, in the same synced write, adds a
    /// notice to the outbox of each of their recipients, rewrites the `also` requests, `suppress` to the suppression list, `faces` (the
    /// person's probes, kept only with their consent: little-endian f32s) sealed under the
    /// request id, and the request's next state (`request(&erased)`). `graph_slots` are the records' graph rows,
    /// removed by the index afterwards and purged with the rest. Returns what was removed and
    /// where it was on disk.
    pub fn erase(
        &self,
        deletion: &Deletion<'_>,
        request_id: &[u8; 16],
        request: impl FnOnce(&Erased) -> Zeroizing<Vec<u8>>,
    ) -> Result<Erased, Error> {
        let _keys = self.key_lock.read();
        // No disclosure is recorded between reading the recipients and deleting their rows.
        let _no_disclosures = self.erase_lock.write();
        let mut batch = WriteBatch::default();
        let erased = self.delete_rows(deletion, request_id, Timestamp::now(), &[], &mut batch)?;
        for (other, plaintext) in deletion.also {
            let blob = crypto::seal_blob(&self.keys, super::rows::REQUEST_DOMAIN, other, plaintext);
            batch.put_cf(self.cf(CF_REQUESTS), other, blob);
        }
        let plaintext = request(&erased);
        batch.put_cf(
            self.cf(CF_REQUESTS),
            request_id,
            crypto::seal_blob(&self.keys, super::rows::REQUEST_DOMAIN, request_id, &plaintext),
        );
        // Refused before anything changes when the keys' cluster does not answer.
        self.check_etcd_answers()?;
        // Outside the data dir first, so a restored backup can re-apply this erasure.
        self.journal_erasure(deletion, &erased.notified)?;
        self.db.write_opt(batch, &super::synced())?;
        // The keys in etcd, if they live there: a failure now is finished by phase 1.
        if let Err(e) = self.delete_etcd_keys(deletion.ids) {
            tracing::warn!(error = %e, "the erased records' keys are still in etcd; phase 1 deletes them");
        }
        Ok(erased)
    }

    /// Puts into `batch` what [`Store::erase`] deletes and adds, but the requests: every row of
    /// the records, the notices, the suppression entries and the faces. Also what a re-applied
    /// erasure deletes. The caller holds the key and erase locks.
    /// `journaled` adds recipients known from the erasure journal (a re-application), for
    /// records whose recipients rows the data dir lacks or cannot read.
    pub(super) fn delete_rows(
        &self,
        deletion: &Deletion<'_>,
        request_id: &[u8; 16],
        now: Timestamp,
        journaled: &[(RecordId, String)],
        batch: &mut WriteBatch,
    ) -> Result<Erased, Error> {
        let Deletion { ids, graph_slots, notice, suppress, faces, also, .. } = *deletion;
        let mut erased = Erased::default();
        // What the byte scans after the purges look for: every erased value as stored now.
        let (mut key_values, mut row_values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        let single = |cf: &str, key: &[u8], absent: bool| Target {
            cf: cf.into(),
            start: key.to_vec(),
            end: key.to_vec(),
            absent,
        };
        key_values.extend(self.wrapped_keys(ids)?.into_iter().flatten());
        for &id in ids {
            if let Some(sealed) = self.db.get_cf(self.cf(CF_RECORDS), id.as_bytes())? {
                erased.records += 1;
                row_values.push(sealed);
            }
            let key = id.as_bytes();
            for cf in [CF_RECORDS, CF_DATA_KEYS, CF_ENROLMENT_LEAVES, CF_QUARANTINE, CF_IDEMPOTENCY_OF] {
                batch.delete_cf(self.cf(cf), key);
                erased.rows += 1;
            }
            if let Some(row) = self.db.get_cf(self.cf(CF_IDEMPOTENCY_OF), key)? {
                batch.delete_cf(self.cf(CF_IDEMPOTENCY), &row);
                erased.rows += 1;
                erased.targets.push(single(CF_IDEMPOTENCY, &row, true));
            }
            let mut end = key.to_vec();
            end.extend_from_slice(&[0xff; 16]);
            let mut clients: BTreeSet<String> = self.disclosures(id)?.into_iter().map(|d| d.client).collect();
            clients.extend(journaled.iter().filter(|(of, _)| *of == id).map(|(_, client)| client.clone()));
            for client in clients {
                let row = self.outbox_key(&client, now);
                let body = crypto::seal_blob(&self.keys, NOTIFICATION_DOMAIN, &row, &notice(id));
                batch.put_cf(self.cf(CF_OUTBOX), &row, body);
                erased.notified.push((id, client.clone()));
                erased.recipients.insert(client);
            }
            let mode = IteratorMode::From(key, rocksdb::Direction::Forward);
            for item in self.db.iterator_cf(self.cf(CF_RECIPIENTS), mode) {
                let (row, _) = item?;
                if !row.starts_with(key) {
                    break;
                }
                batch.delete_cf(self.cf(CF_RECIPIENTS), row);
                erased.rows += 1;
            }
            erased.targets.push(Target { cf: CF_RECIPIENTS.into(), start: key.to_vec(), end, absent: true });
            for cf in [CF_RECORDS, CF_ENROLMENT_LEAVES, CF_QUARANTINE, CF_IDEMPOTENCY_OF] {
                erased.targets.push(single(cf, key, true));
            }
        }
        for slot in graph_slots {
            erased.targets.push(single(CF_GRAPH, &graph::node_key(*slot), false));
        }
        let at = now.as_second().to_be_bytes();
        for source in suppress {
            batch.put_cf(self.cf(CF_SUPPRESSED), source, at);
        }
        if let Some(faces) = faces {
            batch.put_cf(
                self.cf(CF_SUPPRESSED_FACES),
                request_id,
                crypto::seal_blob(&self.keys, FACE_DOMAIN, request_id, faces),
            );
        }
        // The request rows rewritten here (earlier access reports naming these records, and
        // this request, which holds the person's probes): their old versions are purged in
        // phase 2 too.
        for other in also.iter().map(|(id, _)| id).chain(std::iter::once(request_id)) {
            if let Some(old) = self.db.get_cf(self.cf(CF_REQUESTS), other)? {
                row_values.push(old);
            }
            erased.targets.push(single(CF_REQUESTS, other, false));
        }
        erased.evidence = self.evidence(ids, &erased.targets)?;
        erased.evidence.key_prints = self.prints_of(key_values.iter().map(Vec::as_slice));
        erased.evidence.row_prints = self.prints_of(row_values.iter().map(Vec::as_slice));
        erased.evidence.delete_seq = self.db.latest_sequence_number();
        erased.evidence.file_ceiling = self.file_ceiling()?;
        Ok(erased)
    }

    /// The highest file number in the data dir (table files, write-ahead logs, manifests).
    pub(super) fn file_ceiling(&self) -> Result<u64, Error> {
        let io = |source| Error::Io { path: self.data_dir.clone(), source };
        let mut top = 0;
        for entry in std::fs::read_dir(&self.data_dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
            top = top.max(livefiles::file_number(&name).unwrap_or(0));
        }
        Ok(top)
    }

    /// The table files holding `ids`' data keys or the `targets` ranges, and the current
    /// write-ahead logs.
    pub fn evidence(&self, ids: &[RecordId], targets: &[Target]) -> Result<Evidence, Error> {
        let mut evidence = Evidence { wals: self.wal_files()?, ..Default::default() };
        for file in self.db.live_files()? {
            let (Some(lo), Some(hi)) = (&file.start_key, &file.end_key) else { continue };
            let covers = |start: &[u8], end: &[u8]| lo.as_slice() <= end && hi.as_slice() >= start;
            if file.column_family_name == CF_DATA_KEYS {
                if ids.iter().any(|id| covers(id.as_bytes(), id.as_bytes())) {
                    evidence.key_files.insert(file.name);
                }
            } else if targets.iter().any(|t| t.cf == file.column_family_name && covers(&t.start, &t.end)) {
                evidence.row_files.insert(file.name);
            }
        }
        Ok(evidence)
    }

    fn wal_files(&self) -> Result<BTreeSet<String>, Error> {
        let io = |source| Error::Io { path: self.data_dir.clone(), source };
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(&self.data_dir).map_err(io)? {
            let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") {
                out.insert(name);
            }
        }
        Ok(out)
    }

    /// Purges the data keys of `ids` (deleted earlier) from disk and checks it: see the module
    /// documentation. `evidence` is what [`Store::erase`] saw. With keys in etcd, the keys are
    /// then deleted there again and every member purged and checked (`keyhome.rs`). Returns the
    /// checks passed, each one that could have failed, or [`Error::Unverified`] naming the first
    /// that failed, or the etcd members still pending (the purge can simply be retried).
    pub fn purge_keys(&self, ids: &[RecordId], evidence: &Evidence) -> Result<Vec<String>, Error> {
        self.flush_all()?;
        self.db.compact_range_cf_opt(self.cf(CF_DATA_KEYS), None::<&[u8]>, None::<&[u8]>, &forced());
        self.compact_survivors(&evidence.key_files)?;
        let ranges: Vec<(&str, &[u8], &[u8])> =
            ids.iter().map(|id| (CF_DATA_KEYS, id.as_bytes().as_slice(), id.as_bytes().as_slice())).collect();
        self.compact_old_tables(&ranges, evidence)?;

        let mut verified = vec![
            self.no_old_tables(&ranges, evidence, "the data-key column family")?,
            self.files_gone(&evidence.key_files, "table file(s) of the data-key column family that held the keys")?,
            self.no_old_wals(evidence)?,
        ];
        verified.extend(self.no_holds(evidence)?);
        verified.push(self.scan_check(&evidence.key_prints, "wrapped data key(s)")?);
        verified.extend(self.purge_etcd_keys(ids, &evidence.key_prints)?);
        Ok(verified)
    }

    /// Purges the rows in `targets` (deleted or replaced earlier) from the table files and
    /// checks it. `evidence` is what the deletes saw.
    pub fn purge_rows(&self, targets: &[Target], evidence: &Evidence) -> Result<Vec<String>, Error> {
        let names: BTreeSet<&str> = targets.iter().map(|t| t.cf.as_str()).collect();
        let cfs: Vec<_> = names.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        let opts = forced();
        for t in targets {
            let cf = self.db.cf_handle(&t.cf).ok_or_else(|| Error::Corrupt(format!("no column family {}", t.cf)))?;
            self.db.compact_range_cf_opt(cf, Some(&t.start), Some(&t.end), &opts);
        }
        self.compact_survivors(&evidence.row_files)?;
        let ranges: Vec<(&str, &[u8], &[u8])> =
            targets.iter().map(|t| (t.cf.as_str(), t.start.as_slice(), t.end.as_slice())).collect();
        self.compact_old_tables(&ranges, evidence)?;
        let mut verified = vec![
            self.no_old_tables(&ranges, evidence, &format!("the {} column families", names.len()))?,
            self.files_gone(&evidence.row_files, "table file(s) that held the rows")?,
        ];
        verified.extend(self.no_holds(evidence)?);
        verified.push(self.scan_check(&evidence.row_prints, "sealed record(s) and replaced request row(s)")?);
        Ok(verified)
    }

    /// The live table files that hold part of `ranges` and may hold values older than the
    /// delete: made before it (file number at or below the ceiling), or holding an entry
    /// written before it (smallest sequence number at or below the delete's). A sequence
    /// number of 0 is not one of those: a compaction into the bottom level sets the sequence
    /// numbers of the entries it keeps to 0 when no snapshot needs them (measured: after the
    /// purge, every bottom-level file reads `0..0`), so it says nothing about when an entry was
    /// written; such a file is judged by its number (the purge's own compaction made it), by
    /// its deletion markers (one left over the range means the compaction could not drop what
    /// it deletes: measured with a snapshot held from before the delete, the old value kept at
    /// sequence number 0 beside the marker) and, like every file, by the byte scan.
    fn old_tables(&self, ranges: &[(&str, &[u8], &[u8])], evidence: &Evidence) -> Result<Vec<LiveTable>, Error> {
        Ok(self.tables_over(ranges)?.into_iter().filter(|t| is_old(t, evidence)).collect())
    }

    /// The live table files whose key range meets one of `ranges`.
    fn tables_over(&self, ranges: &[(&str, &[u8], &[u8])]) -> Result<Vec<LiveTable>, Error> {
        Ok(livefiles::live_tables(&self.db)?
            .into_iter()
            .filter(|t| ranges.iter().any(|(cf, start, end)| t.cf == *cf && t.overlaps(start, end)))
            .collect())
    }

    /// Compacts again, over its own range, any table file [`Store::old_tables`] finds (a
    /// manual compaction that met a background one can leave one), a few times at most.
    fn compact_old_tables(&self, ranges: &[(&str, &[u8], &[u8])], evidence: &Evidence) -> Result<(), Error> {
        for _ in 0..3 {
            let old = self.old_tables(ranges, evidence)?;
            if old.is_empty() {
                break;
            }
            for t in old {
                if let Some(cf) = self.db.cf_handle(&t.cf) {
                    self.db.compact_range_cf_opt(cf, Some(&t.smallest_key), Some(&t.largest_key), &forced());
                }
            }
        }
        Ok(())
    }

    /// Checks that every live table file holding part of `ranges` was written after the delete
    /// and holds nothing written before it ([`Store::old_tables`]).
    fn no_old_tables(&self, ranges: &[(&str, &[u8], &[u8])], evidence: &Evidence, what: &str) -> Result<String, Error> {
        let over = self.tables_over(ranges)?;
        if let Some(t) = over.iter().find(|t| is_old(t, evidence)) {
            return Err(Error::Unverified(format!(
                "table file {} ({}, level {}) holds erased keys' range and may hold a value written before the \
                 delete: file number {} (ceiling {}), sequence numbers {} to {} (delete at {}), {} deletion marker(s)",
                t.name,
                t.cf,
                t.level,
                t.number,
                evidence.file_ceiling,
                t.smallest_seqno,
                t.largest_seqno,
                evidence.delete_seq,
                t.deletions
            )));
        }
        let checked = over.len();
        Ok(format!(
            "every live table file of {what} whose key range holds an erased key ({checked}) was written after the \
             delete and holds no entry written before it (file numbers above {}, sequence numbers 0 or above {}, no \
             deletion marker)",
            evidence.file_ceiling, evidence.delete_seq
        ))
    }

    /// Checks that no write-ahead log that existed at the delete (numbered up to the newest of
    /// them, which held the delete) is still in the data dir.
    pub(super) fn no_old_wals(&self, evidence: &Evidence) -> Result<String, Error> {
        let newest = evidence.wals.iter().filter_map(|w| livefiles::file_number(w)).max().unwrap_or(0);
        let left: Vec<String> =
            self.wal_files()?.into_iter().filter(|w| livefiles::file_number(w).is_some_and(|n| n <= newest)).collect();
        if !left.is_empty() {
            return Err(Error::Unverified(format!(
                "write-ahead log(s) {left:?} from before the delete are still in the data dir"
            )));
        }
        Ok(format!(
            "no write-ahead log numbered {newest} or lower (the log that held the delete, and every older one) is \
             left in the data dir; logs are never archived or recycled"
        ))
    }

    /// A manual compaction's outcome is not reported (the C API returns nothing), and one that ran into a
    /// background compaction can leave a file in place: any of `files` still live is compacted
    /// again over its own key range, a few times at most, before the checks judge.
    fn compact_survivors(&self, files: &BTreeSet<String>) -> Result<(), Error> {
        for _ in 0..3 {
            let survivors: Vec<_> = self.db.live_files()?.into_iter().filter(|f| files.contains(&f.name)).collect();
            if survivors.is_empty() {
                break;
            }
            for f in survivors {
                if let Some(cf) = self.db.cf_handle(&f.column_family_name) {
                    self.db.compact_range_cf_opt(cf, f.start_key.as_deref(), f.end_key.as_deref(), &forced());
                }
            }
        }
        Ok(())
    }

    /// Checks that none of `files` is live or still on disk.
    fn files_gone(&self, files: &BTreeSet<String>, what: &str) -> Result<String, Error> {
        let live = self.db.live_files()?;
        for name in files {
            if let Some(f) = live.iter().find(|f| &f.name == name) {
                return Err(Error::Unverified(format!(
                    "{name} ({}, level {}, {} entries, {} deletions) is still a live table file",
                    f.column_family_name, f.level, f.num_entries, f.num_deletions
                )));
            }
            if self.data_dir.join(name.trim_start_matches('/')).exists() {
                return Err(Error::Unverified(format!("{name} is obsolete but still on disk")));
            }
        }
        Ok(format!("the {} {what} at the delete are no longer live and were deleted from disk", files.len()))
    }

    /// Checks that nothing keeps deleted values alive: no snapshot is held, and no deletion of
    /// obsolete table files is on hold for `files` (a running compaction holds back only the
    /// files numbered from its first output on, newer than any of these).
    fn no_holds(&self, evidence: &Evidence) -> Result<Vec<String>, Error> {
        let snapshots = self.db.property_int_value("rocksdb.num-snapshots")?.unwrap_or(u64::MAX);
        if snapshots != 0 {
            return Err(Error::Unverified(format!("{snapshots} snapshot(s) are held")));
        }
        let keep = self.db.property_int_value("rocksdb.min-obsolete-sst-number-to-keep")?.unwrap_or(0);
        if keep <= evidence.file_ceiling {
            return Err(Error::Unverified(format!(
                "deletion of obsolete table files from number {keep} on is on hold"
            )));
        }
        Ok(vec!["no snapshot is held and no deletion of table files from before the delete is on hold".into()])
    }

    fn outbox_key(&self, client: &str, at: Timestamp) -> Vec<u8> {
        let mut key = self.keys.mac(b"oubli/outbox-client/v1", client.as_bytes()).to_vec();
        key.extend_from_slice(&at.as_microsecond().to_be_bytes());
        key.extend_from_slice(&self.disclosure_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        key
    }

    /// The notifications waiting for `client`, oldest first.
    pub fn notices(&self, client: &str) -> Result<Vec<Notice>, Error> {
        let prefix = self.keys.mac(b"oubli/outbox-client/v1", client.as_bytes());
        let mut out = Vec::new();
        let mode = IteratorMode::From(&prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(CF_OUTBOX), mode) {
            let (key, blob) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let body = crypto::open_blob(&self.keys, NOTIFICATION_DOMAIN, &key, &blob)?;
            out.push(Notice { id: hex::encode(&key[32..]), body });
        }
        Ok(out)
    }

    /// Deletes `client`'s notification `id` (acknowledged); whether it was there.
    pub fn ack_notice(&self, client: &str, id: &str) -> Result<bool, Error> {
        let _keys = self.key_lock.read();
        let Some(suffix) = hex::decode(id).ok().filter(|s| s.len() == 12) else { return Ok(false) };
        let mut key = self.keys.mac(b"oubli/outbox-client/v1", client.as_bytes()).to_vec();
        key.extend_from_slice(&suffix);
        if self.db.get_pinned_cf(self.cf(CF_OUTBOX), &key)?.is_none() {
            return Ok(false);
        }
        self.db.delete_cf_opt(self.cf(CF_OUTBOX), &key, &super::synced())?;
        Ok(true)
    }

    /// Flushes every memtable to table files.
    pub fn flush_all(&self) -> Result<(), Error> {
        let all: Vec<_> = COLUMN_FAMILIES.iter().map(|name| self.cf(name)).collect();
        self.db.flush_cfs_opt(&all, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    /// Test hook: the raw stored bytes of a record's sealed row and wrapped data key.
    #[doc(hidden)]
    pub fn raw_rows(&self, id: RecordId) -> Result<RawRows, Error> {
        Ok(RawRows { sealed: self.db.get_cf(self.cf(CF_RECORDS), id.as_bytes())?, wrapped_key: self.wrapped_key(id)? })
    }

    /// A RocksDB checkpoint (hard links to the table files) in `dir`: what a backup taken now
    /// would hold.
    pub fn backup_to(&self, dir: &Path) -> Result<(), Error> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }
}

/// Whether `t` may hold a value written before the delete `evidence` describes (see
/// [`Store::old_tables`]).
fn is_old(t: &LiveTable, evidence: &Evidence) -> bool {
    t.number <= evidence.file_ceiling
        || (t.smallest_seqno != 0 && t.smallest_seqno <= evidence.delete_seq)
        || t.deletions > 0
}

pub(super) fn forced() -> CompactOptions {
    let mut opts = CompactOptions::default();
    opts.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    opts.set_exclusive_manual_compaction(true);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        embedding::Embedding,
        record::{IdempotencyKey, NewRecord, Provenance},
    };

    fn record(i: usize) -> NewRecord {
        let now = Timestamp::now();
        let mut v = vec![0.0f32; 8];
        v[i % 8] = 1.0;
        v[(i + 1) % 8] = i as f32 / 100.0;
        NewRecord {
            embedding: Embedding::new(v, 8).unwrap(),
            provenance: Provenance::scraped(format!("https://photos.example/{i}.jpg"), now).unwrap(),
            idempotency_key: Some(IdempotencyKey::parse(format!("k{i}")).unwrap().unwrap()),
        }
    }

    fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle) {
                out.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[test]
    fn erased_rows_leave_the_disk_and_the_purges_check_it() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let store = Store::open(&data, &keys, Some(8), None).unwrap();
        let records: Vec<NewRecord> = (0..40).map(record).collect();
        let ids: Vec<RecordId> = (0..40).map(|_| RecordId::random()).collect();
        let pairs: Vec<(RecordId, &NewRecord)> = ids.iter().copied().zip(&records).collect();
        store.insert(&pairs[..20], Timestamp::now(), &[]).unwrap();
        store.flush_all().unwrap();
        store.insert(&pairs[20..], Timestamp::now(), &[(ids[3], "unknown-jurisdiction")]).unwrap();
        let disclosed =
            crate::store::Disclosed { records: ids[..5].to_vec(), client: "operator-a".into(), at: Timestamp::now() };
        assert_eq!(store.record_disclosures(&[disclosed]).unwrap(), vec![ids[..5].to_vec()]);
        // An earlier access report naming record 2, the erasure request holding the probes,
        // and a control request; flushed, so their versions are in table files.
        let (report, request, control) = ([1u8; 16], [7u8; 16], [2u8; 16]);
        store.put_request(&report, b"report: record 2, its source and salt").unwrap();
        store.put_request(&request, b"erasure request with its probe templates").unwrap();
        store.put_request(&control, b"another person's request").unwrap();
        store.flush_all().unwrap();
        let stored = |id: &[u8; 16]| store.db.get_cf(store.cf(CF_REQUESTS), id).unwrap().unwrap();
        let (old_report, old_probes, control_row) = (stored(&report), stored(&request), stored(&control));

        let gone = &ids[2..5];
        let raw = store.raw_rows(gone[0]).unwrap();
        let (sealed, wrapped) = (raw.sealed.unwrap(), raw.wrapped_key.unwrap());
        let kept = store.raw_rows(ids[0]).unwrap();
        let (control_sealed, control_key) = (kept.sealed.unwrap(), kept.wrapped_key.unwrap());
        let held = store.erasure_inputs(gone).unwrap();
        assert_eq!(held.len(), 3);
        let suppress: Vec<[u8; 32]> = held.iter().map(|h| h.source_key).collect();
        let request = [7u8; 16];
        let erased = store
            .erase(
                &Deletion {
                    ids: gone,
                    graph_slots: &[],
                    notice: &|_| b"{}".to_vec(),
                    also: &[(report, Zeroizing::new(b"report: record 2 erased".to_vec()))],
                    suppress: &suppress,
                    faces: Some(b"face"),
                    commitment: [9; 32],
                },
                &request,
                |_| Zeroizing::new(b"state".to_vec()),
            )
            .unwrap();
        assert_eq!(erased.records, 3);
        assert!(!erased.evidence.key_files.is_empty(), "the first 20 records were flushed to a table file");
        for id in gone {
            assert!(store.get(*id).unwrap().is_none());
            assert!(store.disclosures(*id).unwrap().is_empty());
            assert!(store.enrolment_leaf(*id).unwrap().is_none());
        }
        assert!(store.quarantined().unwrap().is_empty());
        assert!(store.is_suppressed("https://photos.example/2.jpg").unwrap());
        assert!(!store.is_suppressed("https://photos.example/1.jpg").unwrap());
        assert_eq!(store.notices("operator-a").unwrap().len(), 3, "one notice per record received");
        assert_eq!(erased.recipients.len(), 1);
        assert!(store.notices("operator-b").unwrap().is_empty());
        assert_eq!(store.request(&request).unwrap().unwrap().as_slice(), b"state");
        assert_eq!(store.suppressed_faces().unwrap().iter().map(|f| f.to_vec()).collect::<Vec<_>>(), vec![b"face"]);
        assert!(store.get(ids[0]).unwrap().is_some(), "other records stay");
        // A search that found erased records before the erasure writes rows only for the others,
        // and answers only those.
        let late =
            crate::store::Disclosed { records: ids[1..4].to_vec(), client: "operator-c".into(), at: Timestamp::now() };
        assert_eq!(store.record_disclosures(&[late]).unwrap(), vec![vec![ids[1]]]);
        assert!(!files_containing(&data, &wrapped).is_empty(), "before the purge the key is on disk");

        let verified = store.purge_keys(gone, &erased.evidence).unwrap();
        assert!(verified.len() >= 4, "{verified:?}");
        assert_eq!(files_containing(&data, &wrapped), Vec::<String>::new());
        assert!(!files_containing(&data, &sealed).is_empty(), "phase 1 leaves the ciphertext, unreadable");

        let verified = store.purge_rows(&erased.targets, &erased.evidence).unwrap();
        assert!(verified.iter().any(|v| v.starts_with("a byte scan of every file")), "{verified:?}");
        assert_eq!(files_containing(&data, &sealed), Vec::<String>::new());
        // The replaced versions of the report and of the request with its probes are gone too;
        // the control record's and request's bytes are still found by the same scan.
        assert_eq!(files_containing(&data, &old_report), Vec::<String>::new(), "old report version");
        assert_eq!(files_containing(&data, &old_probes), Vec::<String>::new(), "old probe copy");
        assert!(!files_containing(&data, &control_row).is_empty(), "the control request is on disk");
        assert!(!files_containing(&data, &control_sealed).is_empty(), "the control record is on disk");
        assert!(!files_containing(&data, &control_key).is_empty(), "the control key is on disk");
        let control = store.prints_of([control_sealed.as_slice()]);
        assert!(!store.scan_data_dir(&control).unwrap().found.is_empty(), "the fingerprint scan finds it");
        for id in &ids[5..] {
            assert!(store.get(*id).unwrap().is_some());
        }
        // A second purge of the same rows has nothing left to find and still passes.
        store.purge_rows(&erased.targets, &erased.evidence).unwrap();
    }

    /// A store of 40 records, the first 20 flushed, and records 2..5 erased.
    fn erased_store() -> (tempfile::TempDir, Store, Vec<RecordId>, Erased, RawRows) {
        let (dir, store, ids, raw) = store_of_40();
        let erased = erase_2_to_5(&store, &ids);
        (dir, store, ids, erased, raw)
    }

    fn erase_2_to_5(store: &Store, ids: &[RecordId]) -> Erased {
        let deletion = Deletion {
            ids: &ids[2..5],
            graph_slots: &[],
            notice: &|_| b"{}".to_vec(),
            also: &[],
            suppress: &[],
            faces: None,
            commitment: [5; 32],
        };
        store.erase(&deletion, &[7; 16], |_| Zeroizing::new(b"state".to_vec())).unwrap()
    }

    /// A store of 40 records, the first 20 flushed; record 2's rows as stored.
    fn store_of_40() -> (tempfile::TempDir, Store, Vec<RecordId>, RawRows) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data"), &dir.path().join("keys"), Some(8), None).unwrap();
        let records: Vec<NewRecord> = (0..40).map(record).collect();
        let ids: Vec<RecordId> = (0..40).map(|_| RecordId::random()).collect();
        let pairs: Vec<(RecordId, &NewRecord)> = ids.iter().copied().zip(&records).collect();
        store.insert(&pairs[..20], Timestamp::now(), &[]).unwrap();
        store.flush_all().unwrap();
        store.insert(&pairs[20..], Timestamp::now(), &[]).unwrap();
        let raw = store.raw_rows(ids[2]).unwrap();
        (dir, store, ids, raw)
    }

    fn unverified(result: Result<Vec<String>, Error>) -> String {
        match result {
            Err(Error::Unverified(why)) => why,
            other => panic!("expected a failed check, got {other:?}"),
        }
    }

    /// Each check of the purges fails when what it checks is not so, and the purge passes once
    /// the cause is gone.
    #[test]
    fn each_purge_check_can_fail() {
        // A snapshot taken before the delete keeps the old values alive through compaction.
        let (_dir, store, ids, _) = store_of_40();
        let snapshot = store.db.snapshot();
        let erased = erase_2_to_5(&store, &ids);
        let gone = &ids[2..5];
        let why = unverified(store.purge_keys(gone, &erased.evidence));
        assert!(why.contains("may hold a value written before the delete"), "{why}");
        drop(snapshot);
        store.purge_keys(gone, &erased.evidence).unwrap();

        // A snapshot taken after the delete: nothing old survives, but a snapshot is held.
        let (_dir, store, ids, erased, _) = erased_store();
        let snapshot = store.db.snapshot();
        let why = unverified(store.purge_keys(&ids[2..5], &erased.evidence));
        assert!(why.contains("snapshot(s) are held"), "{why}");
        drop(snapshot);

        // A write-ahead log from before the delete left in the data dir.
        let (dir, store, ids, erased, _) = erased_store();
        let stray = dir.path().join("data").join("000001.log");
        std::fs::write(&stray, b"").unwrap();
        let why = unverified(store.purge_keys(&ids[2..5], &erased.evidence));
        assert!(why.contains("write-ahead log(s)") && why.contains("000001.log"), "{why}");
        std::fs::remove_file(&stray).unwrap();

        // A copy of a wrapped key anywhere in the data dir (here a stray file): the byte scan.
        let (dir, store, ids, erased, raw) = erased_store();
        let copy = dir.path().join("data").join("copy.bin");
        let mut bytes = vec![0u8; 100];
        bytes.extend_from_slice(&raw.wrapped_key.clone().unwrap()[10..50]);
        std::fs::write(&copy, &bytes).unwrap();
        let why = unverified(store.purge_keys(&ids[2..5], &erased.evidence));
        assert!(why.contains("byte scan found") && why.contains("copy.bin"), "{why}");
        std::fs::remove_file(&copy).unwrap();
        store.purge_keys(&ids[2..5], &erased.evidence).unwrap();
        // And phase 2's, for a sealed record.
        std::fs::write(&copy, &raw.sealed.clone().unwrap()[100..140]).unwrap();
        let why = unverified(store.purge_rows(&erased.targets, &erased.evidence));
        assert!(why.contains("byte scan found") && why.contains("sealed record"), "{why}");
        std::fs::remove_file(&copy).unwrap();
        let verified = store.purge_rows(&erased.targets, &erased.evidence).unwrap();
        assert_eq!(verified.len(), 4, "{verified:?}");
        let _ = raw;
    }

    /// An expiry rewrites a request (its probes dropped): the replaced version leaves the table
    /// files, checked, while the new one stays.
    #[test]
    fn a_rewritten_request_leaves_no_old_version_on_disk() {
        let (dir, store, _, _) = store_of_40();
        let id = [3u8; 16];
        store.put_request(&id, b"request with its probe templates").unwrap();
        store.flush_all().unwrap();
        let old = store.db.get_cf(store.cf(CF_REQUESTS), id).unwrap().unwrap();
        store.put_request(&id, b"request, probes dropped").unwrap();
        let new = store.db.get_cf(store.cf(CF_REQUESTS), id).unwrap().unwrap();
        let data = dir.path().join("data");
        assert!(!files_containing(&data, &old).is_empty(), "before: the old version is in a table file");
        let verified = store.purge_request_versions(&[id]).unwrap();
        assert!(verified[0].starts_with("every live table file of the request column families"), "{verified:?}");
        assert_eq!(files_containing(&data, &old), Vec::<String>::new());
        assert!(!files_containing(&data, &new).is_empty(), "the current version stays");
        assert_eq!(store.request(&id).unwrap().unwrap().as_slice(), b"request, probes dropped");
    }

    /// RocksDB's info log is kept at warnings: it never prints the keys a compaction or a
    /// flush touched (record ids).
    #[test]
    fn the_info_log_does_not_name_erased_records() {
        let (dir, store, ids, erased, _) = erased_store();
        store.purge_keys(&ids[2..5], &erased.evidence).unwrap();
        store.purge_rows(&erased.targets, &erased.evidence).unwrap();
        for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.starts_with("LOG") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap().to_uppercase();
            for id in &ids[2..5] {
                assert!(!text.contains(&hex::encode_upper(id.as_bytes())), "{name} names an erased record");
                assert!(!text.contains("MANUAL COMPACTION"), "{name} logs compactions at info level");
            }
        }
    }

    #[test]
    fn a_rotation_rewraps_every_key_and_destroys_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let backup = dir.path().join("backup");
        let records: Vec<NewRecord> = (0..10).map(record).collect();
        let ids: Vec<RecordId> = (0..10).map(|_| RecordId::random()).collect();
        let pairs: Vec<(RecordId, &NewRecord)> = ids.iter().copied().zip(&records).collect();
        {
            let store = Store::open(&data, &keys, Some(8), None).unwrap();
            store.insert(&pairs, Timestamp::now(), &[]).unwrap();
            store.put_request(&[1; 16], b"request").unwrap();
            store.backup_to(&backup).unwrap();
            let rotation = store.rotate_keys().unwrap();
            assert_eq!((rotation.epoch, rotation.rewrapped), (2, 11));
            assert!(!keys.join("kek-00000001.key").exists());
            assert_eq!(store.get(ids[0]).unwrap().unwrap().embedding, records[0].embedding);
            assert_eq!(store.request(&[1; 16]).unwrap().unwrap().as_slice(), b"request");
        }
        let store = Store::open(&data, &keys, None, None).unwrap();
        assert_eq!(store.key_epoch(), 2);
        assert!(store.get(ids[9]).unwrap().is_some());
        drop(store);
        // The backup's keys were wrapped under epoch 1, destroyed: it no longer opens.
        assert!(matches!(Store::open(&backup, &keys, None, None), Err(Error::WrongKeys { .. })));
    }
}

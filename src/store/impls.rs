//! The RocksDB [`Store`] behind the storage traits: each method is the store's own (inherent)
//! method of the same name, documented where it is written. The engine and the workflows see
//! only the traits, so the in-memory store can stand in for this one in unit tests.
use jiff::Timestamp;
use zeroize::Zeroizing;

use super::{
    AuditAppend, Deletion, Disclosed, Disclosure, Erased, Error, Evidence, Held, Idempotency, Notice, Rotation, Store,
    StoreStats, StoredGraph, StoredRequest, Target,
    traits::{LogStore, RecordStore, ReplicaStore, RequestStore},
};
use crate::{
    record::{IdempotencyKey, NewRecord, Record, RecordId},
    transparency::{
        event::{Entry, Logged},
        log::Signing,
        merkle::Hash,
        receipt::{Receipt, Statements},
        tiles::TilePath,
    },
};

impl RecordStore for Store {
    fn dimension(&self) -> usize {
        Store::dimension(self)
    }

    fn idempotency(&self, key: &IdempotencyKey, record: &NewRecord) -> Result<Idempotency, Error> {
        Store::idempotency(self, key, record)
    }

    fn insert(
        &self,
        records: &[(RecordId, &NewRecord)],
        enrolled_at: Timestamp,
        quarantined: &[(RecordId, &str)],
    ) -> Result<(), Error> {
        Store::insert(self, records, enrolled_at, quarantined)
    }

    fn get(&self, id: RecordId) -> Result<Option<Record>, Error> {
        Store::get(self, id)
    }

    fn estimated_records(&self) -> usize {
        Store::estimated_records(self)
    }

    fn for_each(&self, f: &mut dyn FnMut(Record)) -> Result<usize, Error> {
        Store::for_each(self, f)
    }

    fn quarantined(&self) -> Result<Vec<(RecordId, String)>, Error> {
        Store::quarantined(self)
    }

    fn enrolment_leaf(&self, id: RecordId) -> Result<Option<u64>, Error> {
        Store::enrolment_leaf(self, id)
    }

    fn stats(&self) -> Result<StoreStats, Error> {
        Store::stats(self)
    }

    fn record_disclosures(&self, calls: &[Disclosed]) -> Result<Vec<Vec<RecordId>>, Error> {
        Store::record_disclosures(self, calls)
    }

    fn disclosures(&self, id: RecordId) -> Result<Vec<Disclosure>, Error> {
        Store::disclosures(self, id)
    }

    fn write_graph(&self, upserts: &[(u32, Vec<u8>)], removed: &[u32], meta: &[u8]) -> Result<(), Error> {
        Store::write_graph(self, upserts, removed, meta)
    }

    fn load_graph(&self) -> Result<Option<StoredGraph>, Error> {
        Store::load_graph(self)
    }

    fn clear_graph(&self) -> Result<(), Error> {
        Store::clear_graph(self)
    }

    fn suppression_key(&self, source_uri: &str) -> [u8; 32] {
        Store::suppression_key(self, source_uri)
    }

    fn is_suppressed(&self, source_uri: &str) -> Result<bool, Error> {
        Store::is_suppressed(self, source_uri)
    }

    fn suppressed_faces(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, Error> {
        Store::suppressed_faces(self)
    }

    fn forget_faces(&self, request_id: &[u8; 16], request: &[u8]) -> Result<(), Error> {
        Store::forget_faces(self, request_id, request)
    }

    fn purge_request_versions(&self, request_ids: &[[u8; 16]]) -> Result<Vec<String>, Error> {
        Store::purge_request_versions(self, request_ids)
    }

    fn check_commit_point(&self) -> Result<(), Error> {
        Store::check_commit_point(self)
    }

    fn replicas(&self) -> Option<&dyn ReplicaStore> {
        self.home.etcd().map(|_| self as &dyn ReplicaStore)
    }

    fn replica_checks(&self) -> Result<Vec<String>, Error> {
        Store::replica_checks(self)
    }

    fn erasure_inputs(&self, ids: &[RecordId]) -> Result<Vec<Held>, Error> {
        Store::erasure_inputs(self, ids)
    }

    fn erase(
        &self,
        deletion: &Deletion<'_>,
        request_id: &[u8; 16],
        request: &mut dyn FnMut(&Erased) -> Zeroizing<Vec<u8>>,
    ) -> Result<Erased, Error> {
        Store::erase(self, deletion, request_id, request)
    }

    fn purge_keys(&self, ids: &[RecordId], evidence: &Evidence) -> Result<Vec<String>, Error> {
        Store::purge_keys(self, ids, evidence)
    }

    fn purge_rows(&self, targets: &[Target], evidence: &Evidence) -> Result<Vec<String>, Error> {
        Store::purge_rows(self, targets, evidence)
    }

    fn notices(&self, client: &str) -> Result<Vec<Notice>, Error> {
        Store::notices(self, client)
    }

    fn ack_notice(&self, client: &str, id: &str) -> Result<bool, Error> {
        Store::ack_notice(self, client, id)
    }

    fn rotate_keys(&self) -> Result<Rotation, Error> {
        Store::rotate_keys(self)
    }

    fn resume_rotation(&self) -> Result<Option<Rotation>, Error> {
        Store::resume_rotation(self)
    }

    fn oldest_key_epoch(&self) -> u32 {
        Store::oldest_key_epoch(self)
    }

    fn key_epoch(&self) -> u32 {
        Store::key_epoch(self)
    }

    fn key_epoch_since(&self) -> Result<Option<Timestamp>, Error> {
        Store::key_epoch_since(self)
    }

    fn scan_data_dir(&self, prints: &super::scan::Prints) -> Result<super::scan::Scan, Error> {
        Store::scan_data_dir(self, prints)
    }
}

impl RequestStore for Store {
    fn put_request(&self, id: &[u8; 16], plaintext: &[u8]) -> Result<(), Error> {
        Store::put_request(self, id, plaintext)
    }

    fn put_requests(&self, rows: &[([u8; 16], &[u8])]) -> Result<(), Error> {
        Store::put_requests(self, rows)
    }

    fn put_request_logged(
        &self,
        id: &[u8; 16],
        entry: &Logged,
        plaintext: &mut dyn FnMut(u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        Store::put_request_logged(self, id, entry, plaintext)
    }

    fn put_requests_logged(
        &self,
        ids: &[[u8; 16]],
        entries: &[Logged],
        plaintext: &mut dyn FnMut(usize, u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error> {
        Store::put_requests_logged(self, ids, entries, plaintext)
    }

    fn request(&self, id: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        Store::request(self, id)
    }

    fn requests(&self) -> Result<Vec<StoredRequest>, Error> {
        Store::requests(self)
    }

    fn append_audit(&self, events: &[AuditAppend<'_>]) -> Result<u64, Error> {
        Store::append_audit(self, events)
    }

    fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        Store::audit_events(self, after, limit)
    }

    fn audit_head(&self) -> u64 {
        Store::audit_head(self)
    }

    fn prune_audit(&self, cutoff: Timestamp) -> Result<usize, Error> {
        Store::prune_audit(self, cutoff)
    }
}

impl LogStore for Store {
    fn append(&self, entry: &Logged) -> Result<u64, Error> {
        Store::append(self, entry)
    }

    fn tree_size(&self) -> u64 {
        Store::tree_size(self)
    }

    fn checkpoint(&self) -> String {
        Store::checkpoint(self)
    }

    fn verifier_key(&self) -> String {
        Store::verifier_key(self)
    }

    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Store::inclusion_proof(self, index, size)
    }

    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), Error> {
        Store::consistency_proof(self, from, to)
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        Store::entries(self, start, end)
    }

    fn entry(&self, index: u64) -> Result<Entry, Error> {
        Store::entry(self, index)
    }

    fn receipt_with(&self, index: u64, statements: Option<Statements>) -> Result<Receipt, Error> {
        Store::receipt_with(self, index, statements)
    }

    fn set_signing(&self, signing: Signing) {
        Store::set_signing(self, signing)
    }

    fn to_sign(&self) -> (u64, String, u64) {
        Store::to_sign(self)
    }

    fn consistency_proof_unpublished(&self, from: u64, to: u64) -> Result<Vec<Hash>, Error> {
        Store::consistency_proof_unpublished(self, from, to)
    }

    fn publish(&self, size: u64, note: &str) -> Result<(), Error> {
        Store::publish(self, size, note)
    }

    fn wait_published(&self, size: u64, timeout: std::time::Duration) -> bool {
        Store::wait_published(self, size, timeout)
    }

    fn published_size(&self) -> u64 {
        self.log.lock().published_size()
    }

    fn tile(&self, path: &TilePath) -> Result<Option<Vec<u8>>, Error> {
        Store::tile(self, path)
    }
}

impl ReplicaStore for Store {
    fn sealed_rows(&self, ids: &[RecordId]) -> Result<Vec<super::SealedCopy>, Error> {
        Store::sealed_rows(self, ids)
    }

    fn replica_listing(&self) -> Result<super::Listing, Error> {
        Store::replica_listing(self)
    }

    fn local_ids(&self) -> Result<std::collections::BTreeSet<RecordId>, Error> {
        Store::local_ids(self)
    }

    fn drop_copies(&self, ids: &[RecordId]) -> Result<(), Error> {
        Store::drop_copies(self, ids)
    }

    fn purge_copies(&self) -> Result<Option<Vec<String>>, Error> {
        Store::purge_copies(self)
    }

    fn adopt_copies(
        &self,
        rows: &[super::SealedCopy],
        keys: &std::collections::HashMap<RecordId, Vec<u8>>,
    ) -> Result<Vec<Record>, Error> {
        Store::adopt_copies(self, rows, keys)
    }

    fn put_replica_ack(&self, ack: &super::ReplicaAck) -> Result<(), Error> {
        Store::put_replica_ack(self, ack)
    }
}

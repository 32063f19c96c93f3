//! The storage the engine and the workflows see: three narrow traits, implemented by the
//! RocksDB [`Store`](super::Store) and by the in-memory [`MemoryStore`](super::MemoryStore)
//! that unit tests run the workflows on (as Trillian's storage interfaces and Tessera's drivers
//! let a log run on more than one backend).
//!
//! - [`RecordStore`]: records and their keys: enrolment, reads, the recipients log, the graph's
//!   rows, erasure (delete, purge and its checks, the outbox, suppression) and key rotation.
//! - [`RequestStore`]: the rights workflows' own rows: requests (sealed) and the audit trail.
//! - [`LogStore`]: the transparency log: append, proofs, entries and receipts.
//!
//! Every method that writes is durable when it returns, exactly as the RocksDB store promises;
//! callbacks are `&mut dyn FnMut` so the traits can be used as objects.
use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use zeroize::Zeroizing;

use super::{
    AuditAppend, Deletion, Disclosed, Disclosure, Erased, Error, Evidence, Held, Idempotency, Listing, Notice,
    ReplicaAck, Rotation, SealedCopy, StoreStats, StoredGraph, StoredRequest, Target,
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

/// A shard's copies across its replicas (`replica.rs`): each method is the RocksDB store's
/// own of the same name.
pub trait ReplicaStore: Send + Sync {
    /// The ciphertexts of `ids` as stored (the primary's side), ids not held left out.
    fn sealed_rows(&self, ids: &[RecordId]) -> Result<Vec<SealedCopy>, Error>;
    /// Every key of the shard at one revision.
    fn replica_listing(&self) -> Result<Listing, Error>;
    /// The ids of every ciphertext held.
    fn local_ids(&self) -> Result<BTreeSet<RecordId>, Error>;
    /// Deletes copies whose keys are gone, recording what their purge must check.
    fn drop_copies(&self, ids: &[RecordId]) -> Result<(), Error>;
    /// Purges and checks the copies deleted (`None`: nothing waits); a failed check leaves
    /// them waiting.
    fn purge_copies(&self) -> Result<Option<Vec<String>>, Error>;
    /// Stores copies from the primary, each opened with its key first; the records opened.
    fn adopt_copies(&self, rows: &[SealedCopy], keys: &HashMap<RecordId, Vec<u8>>) -> Result<Vec<Record>, Error>;
    /// Publishes the replica's acknowledgement.
    fn put_replica_ack(&self, ack: &ReplicaAck) -> Result<(), Error>;
}

/// Records and their keys.
pub trait RecordStore: Send + Sync {
    /// The templates' dimension, fixed when the store was created.
    fn dimension(&self) -> usize;

    /// Whether `record`'s idempotency key was used before, and for what.
    fn idempotency(&self, key: &IdempotencyKey, record: &NewRecord) -> Result<Idempotency, Error>;

    /// Stores new records in one durable write with their enrolment leaves and, for
    /// `quarantined`, the rule that holds each.
    fn insert(
        &self,
        records: &[(RecordId, &NewRecord)],
        enrolled_at: Timestamp,
        quarantined: &[(RecordId, &str)],
    ) -> Result<(), Error>;

    /// One record, decrypted; `None` if it is not held.
    fn get(&self, id: RecordId) -> Result<Option<Record>, Error>;

    /// About how many records are held (RocksDB's estimate; the memory store's exact count), to
    /// reserve memory before [`RecordStore::for_each`].
    fn estimated_records(&self) -> usize;

    /// Calls `f` with every record, in id order; returns how many.
    fn for_each(&self, f: &mut dyn FnMut(Record)) -> Result<usize, Error>;

    /// Records held in quarantine, with the rule that put them there.
    fn quarantined(&self) -> Result<Vec<(RecordId, String)>, Error>;

    /// The log leaf that recorded `id`'s enrolment.
    fn enrolment_leaf(&self, id: RecordId) -> Result<Option<u64>, Error>;

    /// What the store occupies.
    fn stats(&self) -> Result<StoreStats, Error>;

    /// Records each call's disclosures in one durable write; returns, for each call, the records
    /// whose rows were written (records erased meanwhile are skipped).
    fn record_disclosures(&self, calls: &[Disclosed]) -> Result<Vec<Vec<RecordId>>, Error>;

    /// Who received `id`, oldest first.
    fn disclosures(&self, id: RecordId) -> Result<Vec<Disclosure>, Error>;

    /// Writes changed graph rows, removes freed ones and replaces the metadata row.
    fn write_graph(&self, upserts: &[(u32, Vec<u8>)], removed: &[u32], meta: &[u8]) -> Result<(), Error>;

    /// The stored graph, if one was ever written.
    fn load_graph(&self) -> Result<Option<StoredGraph>, Error>;

    /// Deletes the stored graph.
    fn clear_graph(&self) -> Result<(), Error>;

    /// The keyed hash under which an erased source is suppressed.
    fn suppression_key(&self, source_uri: &str) -> [u8; 32];

    /// Whether `source_uri` was erased on request.
    fn is_suppressed(&self, source_uri: &str) -> Result<bool, Error>;

    /// Every face kept (with consent) to refuse re-enrolment.
    fn suppressed_faces(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, Error>;

    /// Deletes the faces kept for `request_id` and stores its next state, in one durable write.
    fn forget_faces(&self, request_id: &[u8; 16], request: &[u8]) -> Result<(), Error>;

    /// Purges from the table files the replaced versions of these requests' rows (and of their
    /// kept faces) and checks it; the checks passed.
    fn purge_request_versions(&self, request_ids: &[[u8; 16]]) -> Result<Vec<String>, Error>;

    /// Whether an erasure's commit point is likely writable now, checked before its request is
    /// accepted: with keys in etcd, that a majority answers a read under this store's epoch
    /// (through the leader, retried until the write deadline). A read, not a write: a cluster
    /// that answers but refuses writes (etcd's NOSPACE alarm) is found at the delete itself,
    /// which is then retried. Local keys always pass.
    fn check_commit_point(&self) -> Result<(), Error> {
        Ok(())
    }

    /// With keys in etcd: what a shard's replicas need (the primary's ciphertexts, a
    /// replica's round); `None` otherwise.
    fn replicas(&self) -> Option<&dyn ReplicaStore> {
        None
    }

    /// For an erasure's phase 2: every replica of the shard in step past the last key
    /// deletion, with its checks; [`Error::Unverified`] names those that are not. No
    /// replica (or local keys): nothing to check.
    fn replica_checks(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    /// For each of `ids` still held: its source's keyed hash.
    fn erasure_inputs(&self, ids: &[RecordId]) -> Result<Vec<Held>, Error>;

    /// Deletes every row of the deletion's records and, in the same durable write, adds the
    /// notices, the suppression entries, the consented faces, the rewritten requests and the
    /// request's next state (`request(&erased)`). Returns what was removed.
    fn erase(
        &self,
        deletion: &Deletion<'_>,
        request_id: &[u8; 16],
        request: &mut dyn FnMut(&Erased) -> Zeroizing<Vec<u8>>,
    ) -> Result<Erased, Error>;

    /// Purges the deleted data keys of `ids` and checks it; the checks passed, or
    /// [`Error::Unverified`] naming the first that failed.
    fn purge_keys(&self, ids: &[RecordId], evidence: &Evidence) -> Result<Vec<String>, Error>;

    /// Purges the deleted rows in `targets` and checks it.
    fn purge_rows(&self, targets: &[Target], evidence: &Evidence) -> Result<Vec<String>, Error>;

    /// The notifications waiting for `client`, oldest first.
    fn notices(&self, client: &str) -> Result<Vec<Notice>, Error>;

    /// Deletes `client`'s notification `id`; whether it was there.
    fn ack_notice(&self, client: &str, id: &str) -> Result<bool, Error>;

    /// Rotates to a new key-encryption-key epoch.
    fn rotate_keys(&self) -> Result<Rotation, Error>;

    /// Finishes a rotation cut short, if any.
    fn resume_rotation(&self) -> Result<Option<Rotation>, Error>;

    /// The oldest key epoch whose key-encryption key still exists.
    fn oldest_key_epoch(&self) -> u32;

    /// The current key epoch.
    fn key_epoch(&self) -> u32;

    /// When the current key epoch began (its rotation, or the first open that recorded it).
    fn key_epoch_since(&self) -> Result<Option<Timestamp>, Error>;

    /// The purges' byte scan of every file of the data dir, for `prints` (timed by the bench).
    fn scan_data_dir(&self, prints: &super::scan::Prints) -> Result<super::scan::Scan, Error>;
}

/// The rights workflows' own rows.
pub trait RequestStore: Send + Sync {
    /// Stores (or replaces) a request's sealed state, durably.
    fn put_request(&self, id: &[u8; 16], plaintext: &[u8]) -> Result<(), Error>;

    /// Stores (or replaces) several requests' sealed states in one durable write.
    fn put_requests(&self, rows: &[([u8; 16], &[u8])]) -> Result<(), Error>;

    /// Stores a request's new state (built from its entry's leaf index) and appends `entry` to
    /// the log in one durable write; returns the leaf index.
    fn put_request_logged(
        &self,
        id: &[u8; 16],
        entry: &Logged,
        plaintext: &mut dyn FnMut(u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error>;

    /// Stores several requests' new states and one log entry for each in one durable write;
    /// `plaintext(i, leaf)` builds request `i`'s state. Returns the first leaf index.
    fn put_requests_logged(
        &self,
        ids: &[[u8; 16]],
        entries: &[Logged],
        plaintext: &mut dyn FnMut(usize, u64) -> Zeroizing<Vec<u8>>,
    ) -> Result<u64, Error>;

    /// One request's state, decrypted.
    fn request(&self, id: &[u8; 16]) -> Result<Option<Zeroizing<Vec<u8>>>, Error>;

    /// Every request, decrypted, in id order.
    fn requests(&self) -> Result<Vec<StoredRequest>, Error>;

    /// Appends audit events in one write, with consecutive sequence numbers; returns the first.
    fn append_audit(&self, events: &[AuditAppend<'_>]) -> Result<u64, Error>;

    /// The bytes of the audit events with `seq > after`, oldest first, at most `limit`.
    fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error>;

    /// The last audit sequence number (0: empty).
    fn audit_head(&self) -> u64;

    /// Deletes audit events older than `cutoff`; returns how many.
    fn prune_audit(&self, cutoff: Timestamp) -> Result<usize, Error>;
}

/// The transparency log.
pub trait LogStore: Send + Sync {
    /// Appends one entry on its own (a statement, not a change of state); returns its index.
    fn append(&self, entry: &Logged) -> Result<u64, Error>;

    /// How many entries the log holds.
    fn tree_size(&self) -> u64;

    /// The latest signed checkpoint.
    fn checkpoint(&self) -> String;

    /// The log's verifier key.
    fn verifier_key(&self) -> String;

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (`None`: the latest).
    fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>), Error>;

    /// The consistency proof between two tree sizes (`to`: `None` is the latest).
    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>), Error>;

    /// Log entries `start..end` (clamped to the log).
    fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, Error>;

    /// The entry at `index`.
    fn entry(&self, index: u64) -> Result<Entry, Error>;

    /// The signed receipt for entry `index`: the statements stored with it when it was logged
    /// (committed in the entry), the same bytes every time. Only a leaf with none stored (a
    /// version-1 leaf, or an enrolment, whose statements are constant) states `fallback`, or
    /// what the entry alone shows.
    fn receipt_with(&self, index: u64, statements: Option<Statements>) -> Result<Receipt, Error>;

    /// A signed receipt for entry `index` stating what the entry alone shows.
    fn receipt(&self, index: u64) -> Result<Receipt, Error> {
        self.receipt_with(index, None)
    }

    /// When checkpoints are signed from now on.
    fn set_signing(&self, signing: Signing);

    /// The checkpoint of every leaf sequenced so far: its size, its note (the log's signature
    /// only), and the published size it would follow.
    fn to_sign(&self) -> (u64, String, u64);

    /// The consistency proof between two sequenced sizes, published or not (for a witness).
    fn consistency_proof_unpublished(&self, from: u64, to: u64) -> Result<Vec<Hash>, Error>;

    /// Publishes the log's checkpoint of `size` leaves (`note`, with any cosignatures).
    fn publish(&self, size: u64, note: &str) -> Result<(), Error>;

    /// Waits at most `timeout` until a published checkpoint covers `size` leaves; whether one does.
    fn wait_published(&self, size: u64, timeout: std::time::Duration) -> bool;

    /// The size of the latest published checkpoint.
    fn published_size(&self) -> u64;

    /// The tile or entry bundle `path` of the published tree, if it holds it.
    fn tile(&self, path: &TilePath) -> Result<Option<Vec<u8>>, Error>;
}

/// Everything the engine needs of its storage.
pub trait Storage: RecordStore + RequestStore + LogStore {}

impl<T: RecordStore + RequestStore + LogStore> Storage for T {}

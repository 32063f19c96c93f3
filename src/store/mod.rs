//! Durable, encrypted storage of records in RocksDB. The only module that knows RocksDB.
//!
//! Column families:
//! - `records`: record id → the record's plaintext ([`codec`]) sealed under its own data key;
//!   provenance is sealed with the template, so no source URI is ever written in clear.
//! - `data_keys`: record id → the data key wrapped by the key-encryption key of an epoch. Kept
//!   apart and small so that erasing a key can be purged from disk quickly.
//! - `idempotency`: keyed hash of a client's idempotency key → record id and keyed hash of the
//!   enrolled content.
//! - `meta`: format version, dimension, a check value for the key directory, the log's origin
//!   and its latest signed checkpoint.
//! - `log`: the transparency log's entries, by index (u64 big-endian). The tree over them is
//!   rebuilt in memory at open and must match the last signed checkpoint, or the store refuses
//!   to open. An entry is written in the same batch as the change it records, with the
//!   checkpoint that covers it.
//! - `log_nodes`: `level ‖ index` (u8, u64 big-endian) → the hash of every perfect subtree, leaf
//!   hashes included, written with the leaf that completes it. At open they must equal the tree
//!   recomputed from the entries.
//! - `idempotency_of`: record id → its idempotency row's key, so an erasure finds that row.
//! - `requests`, `recipients`, `quarantine`, `audit`, `enrolment_leaves`: the rights
//!   workflows' rows (`rows.rs`).
//! - `outbox`: notifications of erasures to the recipients of the erased records (Art. 19),
//!   sealed, keyed by a keyed hash of the recipient; `suppressed`: keyed hashes of erased
//!   sources; `suppressed_faces`: probe templates a person consented to leave so that their
//!   face is never enrolled again, sealed, keyed by request id (`erase.rs`).
//! - `graph`: the HNSW graph's structure (ids, levels and neighbour slots, never vectors),
//!   so a restart loads it instead of rebuilding it (`graph.rs`).
//!
//! Outside the data dir, in the key dir (`outside.rs`): the id of the one data dir the key dir
//! serves, a mirror of the log with its latest checkpoint (the anchor), and the erasure journal;
//! a copy of the data dir whose log is behind them is refused, or restored (`restore.rs`).
//!
//! Keys are random record ids or keyed hashes, never names or URIs: RocksDB's MANIFEST records
//! each table's smallest and largest key in clear. Every logical change is one `WriteBatch`
//! written with a synced WAL, so an acknowledged write survives a crash and a crash leaves all
//! of a change or none of it.
mod codec;
pub mod consensus;
pub mod crypto;
mod erase;
mod graph;
mod impls;
mod keyhome;
mod livefiles;
mod log;
mod memory;
mod outside;
pub mod private;
mod replica;
mod restore;
mod rotate;
mod rows;
pub mod scan;
mod traits;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::{
    embedding::{DEFAULT_DIMENSION, MAX_DIMENSION},
    record::{IdempotencyKey, NewRecord, Record, RecordId},
    transparency::{
        event::{self, Logged},
        log::LogWriter,
    },
};
use crypto::KeyRing;
pub use erase::{Deletion, Erased, Evidence, Held, Notice, RawRows, Target};
pub use graph::StoredGraph;
use keyhome::KeyHome;
pub use keyhome::Sweep;
pub use memory::MemoryStore;
pub use replica::{Listing, ReplicaAck, SealedCopy};
pub use rotate::Rotation;
pub use rows::{AuditAppend, Disclosed, Disclosure, StoredRequest};
pub use traits::{LogStore, RecordStore, ReplicaStore, RequestStore, Storage};

/// The log's origin (and signing key name) when a data dir is created without one.
pub const DEFAULT_LOG_ORIGIN: &str = "oubli.example/log";

const CF_RECORDS: &str = "records";
const CF_DATA_KEYS: &str = "data_keys";
const CF_IDEMPOTENCY: &str = "idempotency";
const CF_META: &str = "meta";
const CF_LOG: &str = "log";
const CF_LOG_NODES: &str = "log_nodes";
/// The canonical statements of each leaf's receipt (not an enrolment's), by leaf index.
const CF_LOG_STATEMENTS: &str = "log_statements";
const CF_REQUESTS: &str = "requests";
const CF_RECIPIENTS: &str = "recipients";
const CF_QUARANTINE: &str = "quarantine";
const CF_AUDIT: &str = "audit";
const CF_ENROLMENT_LEAVES: &str = "enrolment_leaves";
const CF_GRAPH: &str = "graph";
const CF_IDEMPOTENCY_OF: &str = "idempotency_of";
const CF_OUTBOX: &str = "outbox";
const CF_SUPPRESSED: &str = "suppressed";
const CF_SUPPRESSED_FACES: &str = "suppressed_faces";
/// Every published checkpoint by tree size (`u64` big-endian), with the cosignatures it was
/// published with: a receipt is proven against the first one that covers its leaf.
const CF_LOG_CHECKPOINTS: &str = "log_checkpoints";
const COLUMN_FAMILIES: [&str; 18] = [
    CF_RECORDS,
    CF_DATA_KEYS,
    CF_IDEMPOTENCY,
    CF_META,
    CF_LOG,
    CF_LOG_NODES,
    CF_LOG_STATEMENTS,
    CF_LOG_CHECKPOINTS,
    CF_REQUESTS,
    CF_RECIPIENTS,
    CF_QUARANTINE,
    CF_AUDIT,
    CF_ENROLMENT_LEAVES,
    CF_GRAPH,
    CF_IDEMPOTENCY_OF,
    CF_OUTBOX,
    CF_SUPPRESSED,
    CF_SUPPRESSED_FACES,
];

/// The domain a column family's sealed blobs are bound to.
fn blob_domain(cf: &str) -> &'static str {
    match cf {
        CF_REQUESTS => rows::REQUEST_DOMAIN,
        CF_SUPPRESSED_FACES => erase::FACE_DOMAIN,
        CF_GRAPH => graph::GRAPH_DOMAIN,
        _ => erase::NOTIFICATION_DOMAIN,
    }
}

const META_FORMAT: &[u8] = b"format";
const META_DIMENSION: &[u8] = b"dimension";
const META_KEY_CHECK: &[u8] = b"key-check";
const META_LOG_ORIGIN: &[u8] = b"log-origin";
const META_CHECKPOINT: &[u8] = b"checkpoint";
/// The log size when `log_checkpoints` began (`u64` big-endian): a leaf below it was logged
/// before published checkpoints were kept, and its receipt keeps its first tree's checkpoint.
const META_CHECKPOINTS_FROM: &[u8] = b"checkpoints-from";
/// The data dir's id, which its key dir is bound to (`outside.rs`).
const META_DATA_DIR_ID: &[u8] = b"data-dir-id";
/// Present from the write that copies a restored data dir's missing log entries back until
/// every journaled erasure is re-applied and purged: an open cut short finishes it.
const META_RESTORE_PENDING: &[u8] = b"restore-pending";
const FORMAT_VERSION: u32 = 1;

/// Storage errors, with what the operator can do about them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "data dir was created for {stored}-dimensional templates, not {requested}: use the same \
         dimension or another data dir"
    )]
    DimensionMismatch { stored: usize, requested: usize },
    #[error("dimension {0} is not supported: use 1 to {MAX_DIMENSION}")]
    InvalidDimension(usize),
    #[error("data dir has format version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedFormat { found: u32 },
    #[error(
        "key dir {} holds no keys, but the data dir was written with keys: start with the \
         --key-dir the data dir was created with",
        key_dir.display()
    )]
    MissingKeys { key_dir: PathBuf },
    #[error(
        "key dir {} does not hold the keys this data dir was written with: start with the \
         --key-dir the data dir was created with",
        key_dir.display()
    )]
    WrongKeys { key_dir: PathBuf },
    #[error(
        "key dir {} and data dir {} are nested: keep the keys apart from the data they protect, \
         or crypto-shredding protects nothing",
        key_dir.display(),
        data_dir.display()
    )]
    NestedDirs { key_dir: PathBuf, data_dir: PathBuf },
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Private(#[from] private::PrivateError),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error(
        "the transparency log does not match its last signed checkpoint ({0}): its entries were \
         altered or a different copy of the data dir was restored"
    )]
    LogMismatch(String),
    #[error("{0}")]
    Proof(#[from] crate::transparency::merkle::ProofError),
    #[error("no log entry {index}: the log holds {size}")]
    NoEntry { index: u64, size: u64 },
    #[error(
        "log entry {index} is sequenced but no published checkpoint covers it yet (the latest covers \
         {published}); checkpoints are signed at a cadence: retry in a second"
    )]
    Pending { index: u64, published: u64 },
    #[error("purge check failed: {0}; the purge is retried")]
    Unverified(String),
    #[error(
        "key dir {} serves another data dir: a key dir belongs to one data dir (its log mirror and \
         erasure journal are that data dir's). Give this data dir a key dir of its own, or start with \
         the data dir this key dir was made for (a restored backup of it counts as the same data dir)",
        key_dir.display()
    )]
    KeyDirBound { key_dir: PathBuf },
    #[error(
        "refusing to serve an older copy of this data dir: its log holds {log} entries, but the key dir's \
         mirror of the log holds {mirror} and this log has already signed and published a checkpoint \
         of {anchor}. It looks like a restored backup: served as it is, it would bring back what was \
         erased since ({erasures} erasure(s) in the key dir's journal) and rewind the public log, which \
         every witness would report as a rollback. Start once with --restore-from-backup to copy the \
         missing log entries back from the mirror, re-apply every journaled erasure and continue the \
         log, or start with the newer data dir"
    )]
    BehindMirror { log: u64, mirror: u64, anchor: u64, erasures: usize },
    #[error("the key store (etcd) could not {what}: {reason}")]
    Consensus { what: String, reason: String },
    #[error(
        "this node planned the write under configuration epoch {ours}, but the cluster is at epoch {current}: \
         the shard map changed; reload it and plan again"
    )]
    Fenced { ours: u64, current: u64 },
    #[error("record {0} already has another key in the key store: a record id is committed once")]
    KeyConflict(RecordId),
    #[error("{n} keys in one write: one etcd transaction carries at most {max}; split the batch")]
    TooManyKeys { n: usize, max: usize },
    #[error(
        "this data dir keeps its data keys in {recorded}, not {requested}: {how} (a data dir's records \
         exist only where their keys are)"
    )]
    KeyHomeMismatch { recorded: String, requested: String, how: String },
    #[error(
        "this data dir keeps its keys in the etcd cluster {recorded:x}, under {namespace}, but the cluster \
         reached is {found:x}{}: refusing to open, since every record here would look unkeyed and be swept. \
         Start with --cluster pointing at the cluster this data dir was created with",
        if recorded == found { " and it holds no configuration epoch for the namespace (was it wiped?)" } else { "" }
    )]
    WrongCluster { namespace: String, recorded: u64, found: u64 },
}

/// What an idempotency key says about an enrolment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// The key was never used.
    Fresh,
    /// The key created this record, from the same content.
    Replay(RecordId),
    /// The key created a record from different content.
    Conflict,
}

/// Sizes for `Stats`.
#[derive(Debug, Clone, Copy)]
pub struct StoreStats {
    pub bytes_on_disk: u64,
    pub sst_file_count: u64,
}

/// The record store of one data dir and its key dir.
pub struct Store {
    db: DB,
    keys: KeyRing,
    dimension: usize,
    data_dir: PathBuf,
    log: parking_lot::Mutex<LogWriter>,
    disclosure_seq: std::sync::atomic::AtomicU32,
    audit_seq: std::sync::atomic::AtomicU64,
    audit_lock: parking_lot::Mutex<()>,
    /// Held (shared) by every write that wraps a key, and exclusively to change the KEK epoch.
    key_lock: parking_lot::RwLock<()>,
    rotation_lock: parking_lot::Mutex<()>,
    /// Held (shared) to record a disclosure, and exclusively by an erasure's delete.
    erase_lock: parking_lot::RwLock<()>,
    /// The log's mirror in the key dir; locked after `log`.
    mirror: parking_lot::Mutex<outside::Mirror>,
    /// Signalled (with `log` held) whenever a checkpoint is published.
    published: parking_lot::Condvar,
    /// See [`META_CHECKPOINTS_FROM`].
    checkpoints_from: u64,
    /// The erasure journal in the key dir.
    journal: parking_lot::Mutex<outside::Journal>,
    /// Where the wrapped data keys live (`keyhome.rs`).
    home: KeyHome,
    /// With keys in etcd: every key, as the sweep at open read them, for the first
    /// [`Store::for_each`] to use instead of reading them all again; dropped by any write of
    /// keys before that.
    opened_keys: parking_lot::Mutex<Option<std::collections::HashMap<RecordId, Vec<u8>>>>,
}

impl Store {
    /// Opens (or creates) the store in `data_dir` with keys in `key_dir`. `dimension` is checked
    /// against the one recorded at creation; `None` accepts it (or 512 for a new store). A data
    /// dir whose log is behind the key dir's mirror (a restored backup) is refused
    /// ([`Error::BehindMirror`]); see [`Store::open_with`].
    pub fn open(
        data_dir: &Path,
        key_dir: &Path,
        dimension: Option<usize>,
        log_origin: Option<&str>,
    ) -> Result<Self, Error> {
        Store::open_with(data_dir, key_dir, dimension, log_origin, false)
    }

    /// [`Store::open`], and with `restore_from_backup` a data dir whose log is behind the key
    /// dir's mirror is restored instead of refused: the missing log entries (and their
    /// statements) are copied back from the mirror, every journaled erasure is re-applied
    /// (deleted, logged as `erasure-reapplied`, purged) and the log continues from the mirror.
    pub fn open_with(
        data_dir: &Path,
        key_dir: &Path,
        dimension: Option<usize>,
        log_origin: Option<&str>,
        restore_from_backup: bool,
    ) -> Result<Self, Error> {
        Store::open_on(data_dir, key_dir, dimension, log_origin, restore_from_backup, None)
    }

    /// [`Store::open_with`], with the wrapped data keys in the etcd cluster `cluster` names
    /// instead of the data dir (`None`: in the data dir). The data dir records where its keys
    /// live when it is created, and refuses to open under the other ([`Error::KeyHomeMismatch`]).
    /// With keys in etcd, ciphertexts whose key was never committed are removed before the
    /// store is returned ([`Sweep`]).
    pub fn open_on(
        data_dir: &Path,
        key_dir: &Path,
        dimension: Option<usize>,
        log_origin: Option<&str>,
        restore_from_backup: bool,
        cluster: Option<consensus::ClusterConfig>,
    ) -> Result<Self, Error> {
        if let Some(d) = dimension.filter(|&d| d == 0 || d > MAX_DIMENSION) {
            return Err(Error::InvalidDimension(d));
        }
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io { path: data_dir.to_path_buf(), source })?;
        refuse_nested(data_dir, key_dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Old write-ahead logs hold plaintext-free but erasable rows (wrapped keys): delete them
        // as soon as they are obsolete: with a WAL TTL or size limit RocksDB would archive them,
        // and recycling would reuse their files with the old bytes still in them.
        opts.set_wal_ttl_seconds(0);
        opts.set_wal_size_limit_mb(0);
        opts.set_recycle_log_file_num(0);
        opts.set_keep_log_file_num(4);
        // RocksDB's info log (`LOG` in the data dir) names the keys of manual compactions and
        // of some flushes at its default (info) level: keys here are record ids. At warnings it
        // prints none of them in normal operation.
        opts.set_log_level(rocksdb::LogLevel::Warn);
        let cfs = COLUMN_FAMILIES.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, data_dir, cfs)?;

        let meta = db.cf_handle(CF_META).expect("column families are created at open");
        let stored_format = db.get_cf(meta, META_FORMAT)?;
        let (keys, dimension, home) = match stored_format {
            None => {
                let keys = KeyRing::load(key_dir, true)?;
                if outside::bound_id(key_dir)?.is_some() {
                    return Err(Error::KeyDirBound { key_dir: key_dir.to_path_buf() });
                }
                let home = KeyHome::open(cluster, scan::secret(&keys), None)?;
                let dimension = dimension.unwrap_or(DEFAULT_DIMENSION);
                let mut batch = WriteBatch::default();
                batch.put_cf(meta, META_FORMAT, FORMAT_VERSION.to_be_bytes());
                batch.put_cf(meta, META_DIMENSION, (dimension as u32).to_be_bytes());
                batch.put_cf(meta, META_KEY_CHECK, keys.check_value());
                batch.put_cf(meta, META_LOG_ORIGIN, log_origin.unwrap_or(DEFAULT_LOG_ORIGIN));
                batch.put_cf(meta, META_DATA_DIR_ID, new_data_dir_id());
                for (row, value) in home.creation_rows()? {
                    batch.put_cf(meta, row, value);
                }
                db.write_opt(batch, &synced())?;
                (keys, dimension, home)
            }
            Some(format) => {
                let found = read_u32(&format, "format")?;
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat { found });
                }
                let stored = db.get_cf(meta, META_DIMENSION)?.ok_or_else(|| Error::Corrupt("no dimension".into()))?;
                let stored = read_u32(&stored, "dimension")? as usize;
                if let Some(requested) = dimension.filter(|&d| d != stored) {
                    return Err(Error::DimensionMismatch { stored, requested });
                }
                let keys = KeyRing::load(key_dir, false)?;
                let check = db.get_cf(meta, META_KEY_CHECK)?.ok_or_else(|| Error::Corrupt("no key check".into()))?;
                if !keys.matches_check_value(&check) {
                    return Err(Error::WrongKeys { key_dir: key_dir.to_path_buf() });
                }
                keyhome::check_recorded(cluster.as_ref(), db.get_cf(meta, keyhome::META_KEY_HOME)?.as_deref())?;
                let recorded = db.get_cf(meta, keyhome::META_ETCD_CLUSTER)?;
                let home = KeyHome::open(cluster, scan::secret(&keys), Some(recorded.as_deref()))?;
                (keys, stored, home)
            }
        };
        bind_key_dir(&db, key_dir)?;
        let log = log::open_log(&db, &keys, log_origin)?;
        let checkpoints_from = log::checkpoints_from(&db, log.size())?;
        let (mirror, scan) = outside::Mirror::open(&key_dir.join(outside::MIRROR_FILE), log.size())?;
        let (journal, torn) = outside::Journal::open(&key_dir.join(outside::JOURNAL_FILE))?;
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                "the erasure journal's torn tail (an entry cut short by a crash) was truncated"
            );
        }
        let audit_seq = rows::last_audit_seq(&db)?;
        let store = Store {
            db,
            keys,
            dimension,
            data_dir: data_dir.to_path_buf(),
            log: parking_lot::Mutex::new(log),
            disclosure_seq: Default::default(),
            audit_seq: audit_seq.into(),
            audit_lock: Default::default(),
            key_lock: Default::default(),
            rotation_lock: Default::default(),
            erase_lock: Default::default(),
            mirror: parking_lot::Mutex::new(mirror),
            published: Default::default(),
            checkpoints_from,
            journal: parking_lot::Mutex::new(journal),
            home,
            opened_keys: Default::default(),
        };
        // Before anything is logged: a copy behind the mirror is refused before it is changed.
        let restored = store.settle_log(scan, restore_from_backup)?;
        store.backfill_idempotency_of()?;
        store.record_epoch_since()?;
        store.finish_restore(restored)?;
        if let Some(rotation) = store.finish_rotation()? {
            tracing::warn!(epoch = rotation.epoch, "an interrupted key rotation was finished");
        }
        match store.home.etcd() {
            // A replica removes what has no key itself, with the checks of a removal, each
            // round (`replica.rs`); until then it serves only what has a key.
            Some((etcd, _)) if etcd.config().replica > 0 => {
                let keys = store.etcd_keys()?;
                *store.opened_keys.lock() = keys;
            }
            _ => {
                store.sweep_orphans()?;
            }
        }
        Ok(store)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    fn idempotency_row(&self, key: &IdempotencyKey) -> [u8; 32] {
        self.keys.mac(b"oubli/idempotency-key/v1", key.as_bytes())
    }

    fn content_digest(&self, record: &NewRecord) -> [u8; 32] {
        // Sized up front: a growing buffer would free unzeroed copies of the template.
        let size = 32 + record.provenance.source_uri().len() + 4 * record.embedding.dimension();
        let mut content = zeroize::Zeroizing::new(Vec::with_capacity(size));
        codec::encode_content(&record.provenance, &record.embedding, &mut content);
        self.keys.mac(b"oubli/idempotency-content/v1", &content)
    }

    /// Whether `record`'s idempotency key was used before, and for what.
    pub fn idempotency(&self, key: &IdempotencyKey, record: &NewRecord) -> Result<Idempotency, Error> {
        let Some(value) = self.db.get_cf(self.cf(CF_IDEMPOTENCY), self.idempotency_row(key))? else {
            return Ok(Idempotency::Fresh);
        };
        let (id, digest) =
            value.split_first_chunk::<16>().ok_or_else(|| Error::Corrupt("short idempotency row".into()))?;
        if crypto::constant_time_eq(digest, &self.content_digest(record)) {
            let id = RecordId::from_bytes(*id);
            // With keys in etcd, a record whose key was never committed (an enrolment refused
            // or cut short) does not exist: enrol it again.
            if self.home.etcd().is_some() && self.wrapped_key(id)?.is_none() {
                return Ok(Idempotency::Fresh);
            }
            Ok(Idempotency::Replay(id))
        } else {
            Ok(Idempotency::Conflict)
        }
    }

    /// Stores new records in one synced write: sealed record, wrapped data key, idempotency
    /// row, enrolment leaf and (for `quarantined`, with the rule) quarantine flag of each.
    /// With keys in etcd, the keys are committed there after that write (`keyhome.rs`).
    /// Returns once every write is durable.
    pub fn insert(
        &self,
        records: &[(RecordId, &NewRecord)],
        enrolled_at: Timestamp,
        quarantined: &[(RecordId, &str)],
    ) -> Result<(), Error> {
        let _keys = self.key_lock.read();
        let mut batch = WriteBatch::default();
        let mut events = Vec::with_capacity(records.len());
        let mut etcd_keys = Vec::new();
        for (id, record) in records {
            let dek = crypto::random_secret();
            let (salt, entry) = enrolment(*id, enrolled_at);
            events.push(entry);
            let plaintext = codec::encode(&record.provenance, &record.embedding, enrolled_at, &salt);
            batch.put_cf(self.cf(CF_RECORDS), id.as_bytes(), crypto::seal_record(&dek, *id, &plaintext));
            let wrapped = self.keys.wrap(*id, &dek);
            match self.home {
                KeyHome::Local => batch.put_cf(self.cf(CF_DATA_KEYS), id.as_bytes(), wrapped),
                KeyHome::Etcd { .. } => etcd_keys.push((*id, wrapped)),
            }
            if let Some(key) = &record.idempotency_key {
                let mut value = id.as_bytes().to_vec();
                value.extend_from_slice(&self.content_digest(record));
                let row = self.idempotency_row(key);
                batch.put_cf(self.cf(CF_IDEMPOTENCY), row, value);
                batch.put_cf(self.cf(CF_IDEMPOTENCY_OF), id.as_bytes(), row);
            }
        }
        for (id, rule) in quarantined {
            batch.put_cf(self.cf(CF_QUARANTINE), id.as_bytes(), rule.as_bytes());
        }
        crate::failpoint::hit("enrol.before-write");
        self.write_logged_with(batch, &events, |first, batch| {
            for (i, (id, _)) in records.iter().enumerate() {
                batch.put_cf(self.cf(CF_ENROLMENT_LEAVES), id.as_bytes(), (first + i as u64).to_be_bytes());
            }
        })?;
        // With keys in etcd, a crash here leaves orphans: ciphertexts whose key is not committed.
        crate::failpoint::hit("enrol.after-write");
        self.commit_keys(&etcd_keys)
    }

    /// Fills `idempotency_of` from `idempotency` for a data dir written before it existed.
    fn backfill_idempotency_of(&self) -> Result<(), Error> {
        let reverse = self.cf(CF_IDEMPOTENCY_OF);
        if self.db.iterator_cf(reverse, IteratorMode::Start).next().is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(CF_IDEMPOTENCY), IteratorMode::Start) {
            let (row, value) = item?;
            let id = value.get(..16).ok_or_else(|| Error::Corrupt("short idempotency row".into()))?;
            batch.put_cf(reverse, id, row);
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &synced())?;
        }
        Ok(())
    }

    /// The unwrapped data key of a record, if it is held.
    fn data_key(&self, id: RecordId) -> Result<Option<crypto::Secret>, Error> {
        match self.wrapped_key(id)? {
            None => Ok(None),
            Some(wrapped) => self.keys.unwrap(id, &wrapped).map(Some),
        }
    }

    /// Reads and decrypts one record (`None` if it is not held; with keys in etcd, also when
    /// its key is not committed there).
    pub fn get(&self, id: RecordId) -> Result<Option<Record>, Error> {
        let Some(sealed) = self.db.get_pinned_cf(self.cf(CF_RECORDS), id.as_bytes())? else {
            return Ok(None);
        };
        match self.home {
            KeyHome::Local => self.decrypt(id, &sealed, None).map(Some),
            KeyHome::Etcd { .. } => match self.wrapped_key(id)? {
                Some(wrapped) => self.decrypt(id, &sealed, Some(&wrapped)).map(Some),
                None => Ok(None),
            },
        }
    }

    /// Opens a sealed record with its wrapped key, read from the data dir when not given.
    fn decrypt(&self, id: RecordId, sealed: &[u8], wrapped: Option<&[u8]>) -> Result<Record, Error> {
        let local;
        let wrapped = match wrapped {
            Some(w) => w,
            None => {
                local = self
                    .db
                    .get_pinned_cf(self.cf(CF_DATA_KEYS), id.as_bytes())?
                    .ok_or_else(|| Error::Corrupt(format!("record {id} has no data key")))?;
                &local[..]
            }
        };
        let dek = self.keys.unwrap(id, wrapped)?;
        let plaintext = crypto::open_record(&dek, id, sealed)?;
        codec::decode(id, &plaintext, self.dimension)
    }

    /// About how many records are held: RocksDB's estimate of the records column family's keys
    /// (0 if it has none), which overwrites and deletes not yet compacted can inflate.
    pub fn estimated_records(&self) -> usize {
        let estimate = self.db.property_int_value_cf(self.cf(CF_RECORDS), "rocksdb.estimate-num-keys");
        estimate.ok().flatten().map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Calls `f` with every record, in id order (for rebuilding indexes at start-up). Three
    /// stages overlap, with at most two runs of records waiting between each: one thread reads
    /// the sealed rows in runs, another decrypts each run on every core (unwrapping the data
    /// keys and opening the records is most of the work), and the caller's thread hands the
    /// records to `f` meanwhile. The first error stops every stage and is returned.
    pub fn for_each(&self, mut f: impl FnMut(Record)) -> Result<usize, Error> {
        /// Records per run: a few megabytes of ciphertext, enough to keep every core busy.
        const RUN: usize = 8192;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        // With keys in etcd: all of them, read once (a record with none is not served).
        let opened = self.opened_keys.lock().take();
        let etcd_keys = match opened {
            Some(keys) => Some(keys),
            None => self.etcd_keys()?,
        };
        let etcd_keys = etcd_keys.as_ref();
        std::thread::scope(|s| {
            let (sealed_tx, sealed_rx) = std::sync::mpsc::sync_channel::<Result<Vec<SealedRow>, Error>>(2);
            let (open_tx, open_rx) = std::sync::mpsc::sync_channel::<Result<Vec<Record>, Error>>(2);
            s.spawn(move || {
                let mut rows = self.db.iterator_cf(self.cf(CF_RECORDS), IteratorMode::Start);
                loop {
                    let run: Result<Vec<SealedRow>, Error> = rows
                        .by_ref()
                        .take(RUN)
                        .map(|item| {
                            let (key, sealed) = item?;
                            let id: [u8; 16] = key
                                .as_ref()
                                .try_into()
                                .map_err(|_| Error::Corrupt("record key is not an id".into()))?;
                            Ok((RecordId::from_bytes(id), sealed))
                        })
                        .collect();
                    let last = run.as_ref().map_or(true, Vec::is_empty);
                    // A send fails only when a later stage has stopped: stop too.
                    if sealed_tx.send(run).is_err() || last {
                        return;
                    }
                }
            });
            // Ends when the reader has stopped (its channel closes) or the caller has.
            s.spawn(move || {
                for run in sealed_rx {
                    if open_tx.send(run.and_then(|run| self.decrypt_run(&run, workers, etcd_keys))).is_err() {
                        return;
                    }
                }
            });
            let mut count = 0;
            for records in open_rx {
                let records = records?;
                count += records.len();
                records.into_iter().for_each(&mut f);
            }
            Ok(count)
        })
    }

    /// Decrypts `run` on `workers` threads (the caller's among them), in order. With `etcd_keys`,
    /// a record with no key there is skipped.
    fn decrypt_run(
        &self,
        run: &[SealedRow],
        workers: usize,
        etcd_keys: Option<&std::collections::HashMap<RecordId, Vec<u8>>>,
    ) -> Result<Vec<Record>, Error> {
        let open = |part: &[SealedRow]| -> Result<Vec<Record>, Error> {
            match etcd_keys {
                None => part.iter().map(|(id, sealed)| self.decrypt(*id, sealed, None)).collect(),
                Some(keys) => part
                    .iter()
                    .filter_map(|(id, sealed)| keys.get(id).map(|w| self.decrypt(*id, sealed, Some(w))))
                    .collect(),
            }
        };
        let parts: Vec<&[SealedRow]> = run.chunks(run.len().div_ceil(workers).max(1)).collect();
        let Some((&last, rest)) = parts.split_last() else { return Ok(Vec::new()) };
        std::thread::scope(|s| {
            let others: Vec<_> = rest.iter().map(|&part| s.spawn(move || open(part))).collect();
            let mine = open(last);
            let mut out = Vec::with_capacity(run.len());
            for other in others {
                out.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
            }
            out.extend(mine?);
            Ok(out)
        })
    }

    /// What the data dir occupies.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let sst_file_count = self.db.live_files()?.len() as u64;
        let bytes_on_disk =
            dir_size(&self.data_dir).map_err(|source| Error::Io { path: self.data_dir.clone(), source })?;
        Ok(StoreStats { bytes_on_disk, sst_file_count })
    }
}

impl Drop for Store {
    /// Flushes memtables so that a restart need not replay the write-ahead log.
    fn drop(&mut self) {
        let cfs: Vec<_> = COLUMN_FAMILIES.iter().map(|name| self.cf(name)).collect();
        if let Err(e) = self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default()) {
            tracing::warn!(error = %e, "flush at close failed; the write-ahead log will be replayed");
        }
    }
}

/// A record's id and its sealed row, as read at start-up.
type SealedRow = (RecordId, Box<[u8]>);

/// A fresh commitment salt for record `id` and the log entry of its enrolment, which names the
/// record only through that salted commitment, at the second.
fn enrolment(id: RecordId, enrolled_at: Timestamp) -> ([u8; 16], Logged) {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random number generator works");
    let time = enrolled_at.round(jiff::Unit::Second).unwrap_or(enrolled_at);
    (salt, Logged::enrolment(time, event::commitment(&salt, id)))
}

/// A new data dir's random id.
fn new_data_dir_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the operating system's random number generator works");
    id
}

/// Checks that the key dir serves this data dir, binding a key dir that serves none yet: one
/// written before bindings existed, or whose binding a crash kept from being written after the
/// data dir's creation (the key check has already shown these are the data dir's keys).
fn bind_key_dir(db: &DB, key_dir: &Path) -> Result<(), Error> {
    let meta = db.cf_handle(CF_META).expect("column families are created at open");
    let bound = outside::bound_id(key_dir)?;
    let id = match db.get_cf(meta, META_DATA_DIR_ID)? {
        Some(id) => <[u8; 16]>::try_from(id.as_slice()).map_err(|_| Error::Corrupt("data dir id".into()))?,
        // A data dir from before bindings: its key dir may not serve another one.
        None if bound.is_some() => return Err(Error::KeyDirBound { key_dir: key_dir.to_path_buf() }),
        None => {
            let id = new_data_dir_id();
            db.put_cf_opt(meta, META_DATA_DIR_ID, id, &synced())?;
            id
        }
    };
    match bound {
        Some(bound) if bound == id => Ok(()),
        Some(_) => Err(Error::KeyDirBound { key_dir: key_dir.to_path_buf() }),
        None => outside::bind(key_dir, &id),
    }
}

/// Refuses a key dir inside the data dir (or the reverse): a copy of one would carry the other.
fn refuse_nested(data_dir: &Path, key_dir: &Path) -> Result<(), Error> {
    let canonical = |p: &Path| -> Result<PathBuf, Error> {
        let io = |source| Error::Io { path: p.to_path_buf(), source };
        match p.canonicalize() {
            Ok(c) => Ok(c),
            // A key dir not created yet: its parent decides where it will be.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = p.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                Ok(parent.canonicalize().map_err(io)?.join(p.file_name().unwrap_or_default()))
            }
            Err(e) => Err(io(e)),
        }
    };
    let (data, keys) = (canonical(data_dir)?, canonical(key_dir)?);
    if data.starts_with(&keys) || keys.starts_with(&data) {
        return Err(Error::NestedDirs { key_dir: key_dir.to_path_buf(), data_dir: data_dir.to_path_buf() });
    }
    Ok(())
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

fn read_u32(bytes: &[u8], what: &str) -> Result<u32, Error> {
    bytes.try_into().map(u32::from_be_bytes).map_err(|_| Error::Corrupt(format!("meta {what} is not a u32")))
}

/// Bytes of every file under `dir`. RocksDB deletes obsolete files at any time: one that
/// vanishes during the walk simply counts for nothing.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        total += match meta.is_dir() {
            true => match dir_size(&entry.path()) {
                Ok(n) => n,
                Err(e) if gone(&e) => 0,
                Err(e) => return Err(e),
            },
            false => meta.len(),
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{embedding::Embedding, record::Provenance};

    fn record(seed: f32, key: Option<&str>) -> NewRecord {
        let now = Timestamp::now();
        NewRecord {
            embedding: Embedding::new(vec![seed, 1.0, 2.0, 3.0], 4).unwrap(),
            provenance: Provenance::scraped("https://photos.example/1.jpg".into(), now).unwrap(),
            idempotency_key: key.map(|k| IdempotencyKey::parse(k.into()).unwrap().unwrap()),
        }
    }

    #[test]
    fn records_survive_reopen_and_dimension_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let (data, keys) = (dir.path().join("data"), dir.path().join("keys"));
        let id = RecordId::random();
        let rec = record(0.5, Some("k1"));
        {
            let store = Store::open(&data, &keys, Some(4), None).unwrap();
            store.insert(&[(id, &rec)], Timestamp::now(), &[]).unwrap();
            assert_eq!(
                store.idempotency(rec.idempotency_key.as_ref().unwrap(), &rec).unwrap(),
                Idempotency::Replay(id)
            );
            let other = record(0.7, Some("k1"));
            assert_eq!(
                store.idempotency(other.idempotency_key.as_ref().unwrap(), &other).unwrap(),
                Idempotency::Conflict
            );
        }
        let store = Store::open(&data, &keys, None, None).unwrap();
        assert_eq!(store.dimension(), 4);
        let got = store.get(id).unwrap().unwrap();
        assert_eq!(got.embedding, rec.embedding);
        assert_eq!(got.provenance, rec.provenance);
        assert!(store.get(RecordId::random()).unwrap().is_none());
        drop(store);

        let err = Store::open(&data, &keys, Some(512), None).err().unwrap();
        assert_eq!(
            err.to_string(),
            "data dir was created for 4-dimensional templates, not 512: use the same dimension or another data dir"
        );
        assert!(matches!(Store::open(&data, &dir.path().join("empty"), None, None), Err(Error::MissingKeys { .. })));
        KeyRing::load(&dir.path().join("fresh"), true).unwrap();
        assert!(matches!(Store::open(&data, &dir.path().join("fresh"), None, None), Err(Error::WrongKeys { .. })));
        assert!(matches!(Store::open(&data, &data.join("keys"), None, None), Err(Error::NestedDirs { .. })));
        assert!(matches!(Store::open(&keys.join("data"), &keys, None, None), Err(Error::NestedDirs { .. })));
    }
}

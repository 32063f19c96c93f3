//! The consensus key store: the wrapped data keys in etcd, replicated by Raft to every member.
//!
//! Crypto-shredding makes the data key the only piece of a record that needs consensus: a
//! ciphertext without its key is noise, so a record exists exactly when its wrapped key is in
//! etcd. Committing the key (one transaction) is the commit point of an enrolment; deleting it
//! (one transaction) is the commit point of an erasure. Every write carries the configuration
//! epoch it was planned under and is refused once the cluster has moved on (fencing).
//!
//! A deleted key is not yet gone from the members' disks (../shared/DOMAIN.md): it stays
//! readable at old revisions until a compaction, in the bbolt file until a defragmentation, and
//! in the write-ahead log until a snapshot lets etcd retire the segment that holds it. The purge
//! ([`ConsensusKeys::purge`]) does all three and then checks each member beside it: the compact
//! revision the member reports, a read at an old revision refused, the oldest WAL segment past
//! the delete's Raft index, and a byte scan of its data dir for the erased keys. A member that
//! does not answer, or fails a check, is named as pending; nothing is claimed for it.
//!
//! etcd's client is async; this facade is synchronous over a runtime of its own, so the core
//! calls it like the RocksDB store. It must not be called from an async task: use
//! `spawn_blocking`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};

use super::{
    Error,
    crypto::KeyRing,
    scan::{self, Hasher, Prints, Scan},
};
use crate::record::RecordId;

/// One etcd member: its client URL and, when this node runs beside it, its data dir (the
/// checks of a purge read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub endpoint: String,
    pub data_dir: Option<PathBuf>,
}

/// How to reach the cluster and how long to wait for it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub members: Vec<Member>,
    /// Prefix of every key this store writes.
    pub namespace: String,
    /// One request's timeout.
    pub request_timeout: Duration,
    /// How long a write is retried (leader elections, a member down) before it is refused.
    pub write_deadline: Duration,
    /// How long one member's defragmentation may take.
    pub defrag_timeout: Duration,
    /// How long the purge may spend retiring write-ahead-log segments, and how many bytes of
    /// filler it may write to make etcd cut and snapshot past the delete.
    pub wal_deadline: Duration,
    pub max_filler_bytes: u64,
    /// Which replica of its shard this node is: 0 writes the keys (the primary); a replica
    /// above 0 only reads them (`replica.rs`).
    pub replica: u32,
}

impl ClusterConfig {
    /// `etcd://host:port,host:port,...` (or `http://` URLs, comma-separated).
    pub fn parse(spec: &str) -> Result<ClusterConfig, Error> {
        let list = spec.strip_prefix("etcd://").unwrap_or(spec);
        let mut members = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let endpoint = if part.contains("://") { part.to_string() } else { format!("http://{part}") };
            let hostport = endpoint.split_once("://").map(|(_, r)| r).unwrap_or_default();
            if hostport.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err(Error::Consensus {
                    what: "parse the cluster address".into(),
                    reason: format!("{part:?} is not host:port; write etcd://127.0.0.1:2379,127.0.0.1:2381,..."),
                });
            }
            members.push(Member { endpoint, data_dir: None });
        }
        if members.is_empty() {
            return Err(Error::Consensus {
                what: "parse the cluster address".into(),
                reason: "no members given; write etcd://127.0.0.1:2379,127.0.0.1:2381,...".into(),
            });
        }
        Ok(ClusterConfig {
            members,
            namespace: "oubli".into(),
            request_timeout: Duration::from_secs(2),
            write_deadline: Duration::from_secs(10),
            defrag_timeout: Duration::from_secs(30),
            wal_deadline: Duration::from_secs(120),
            max_filler_bytes: 320 << 20,
            replica: 0,
        })
    }

    /// The local cluster `scripts/etcd-local.sh start DIR` runs: its client URLs in
    /// `DIR/endpoints`, member N's data dir in `DIR/mN`.
    pub fn local(dir: &Path) -> Result<ClusterConfig, Error> {
        let path = dir.join("endpoints");
        let endpoints = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
        let config = ClusterConfig::parse(endpoints.trim())?;
        let dirs: Vec<PathBuf> = (1..=config.members.len()).map(|n| dir.join(format!("m{n}"))).collect();
        Ok(config.with_data_dirs(&dirs))
    }

    /// The same members, each with the data dir of the same position in `dirs`.
    pub fn with_data_dirs(mut self, dirs: &[PathBuf]) -> ClusterConfig {
        for (m, d) in self.members.iter_mut().zip(dirs) {
            m.data_dir = Some(d.clone());
        }
        self
    }
}

/// The outcome of committing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// This call wrote them, at this revision.
    Now { revision: i64 },
    /// An earlier attempt whose answer was lost had written exactly these values.
    Already,
}

/// A committed deletion: what its purge must reach past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The revision right after the delete: compaction to it drops every older revision.
    pub revision: i64,
    /// How many of the keys were there.
    pub deleted: usize,
    /// A Raft index at or past the delete's entry (the highest any member reported after it),
    /// so every entry that ever held the keys is at or below it.
    pub index_bound: u64,
}

/// A key rotation's re-wrap: the overwritten values are for a purge like an erasure's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrapped {
    pub rewrapped: usize,
    /// The fingerprints of the values overwritten.
    pub old: Prints,
    /// What their purge must reach past (`deleted` counts the overwritten keys).
    pub after: Deleted,
}

/// One member after a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPurge {
    pub endpoint: String,
    /// etcd's member id, when it answered.
    pub id: Option<u64>,
    pub outcome: Outcome,
}

/// What a purge established about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed; each string says what was checked.
    Checked(Vec<String>),
    /// Not established, and why (the member did not answer, or a check failed).
    Pending(String),
}

/// The result of a purge, member by member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub revision: i64,
    pub members: Vec<MemberPurge>,
    /// Filler written to make etcd retire its write-ahead-log segments, and how long that took.
    pub filler_bytes: u64,
    pub wal_retirement: Duration,
    pub defrag: Duration,
}

impl Purge {
    /// Every member checked.
    pub fn is_complete(&self) -> bool {
        self.members.iter().all(|m| matches!(m.outcome, Outcome::Checked(_)))
    }

    /// The members still pending, with why.
    pub fn pending(&self) -> Vec<(&str, &str)> {
        self.members
            .iter()
            .filter_map(|m| match &m.outcome {
                Outcome::Pending(why) => Some((m.endpoint.as_str(), why.as_str())),
                Outcome::Checked(_) => None,
            })
            .collect()
    }
}

/// A purge not yet checked on every member, as its node publishes it for `oubli cluster
/// status` (under `{namespace}/acks/`). No record id, template or key: a name derived from the
/// batch, the members, and why each pending one is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingAcks {
    /// What waits: "erasure phase 1 (3 key(s))", "key rotation".
    pub what: String,
    pub members: usize,
    /// (endpoint, why) of each member not yet checked.
    pub pending: Vec<(String, String)>,
    /// When the purge was last tried.
    pub tried_at: jiff::Timestamp,
}

/// What one member reports of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub endpoint: String,
    pub answer: Result<MemberState, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub version: String,
    pub is_leader: bool,
    pub raft_index: u64,
    /// The last Raft entry it has applied to its key space.
    pub raft_applied_index: u64,
    pub raft_term: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub db_size: i64,
}

/// What one read of a namespace's epoch key tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceState {
    /// The etcd cluster's own id.
    pub cluster_id: u64,
    /// The namespace's configuration epoch, if it was created.
    pub epoch: Option<u64>,
}

/// Where `oubli-server --cluster --shard S` keeps its keys: `/oubli/shard-S`.
pub const SHARDS_PREFIX: &str = "/oubli/shard-";

/// Under a namespace, its purges' pending acknowledgements ([`PendingAcks`]).
const ACKS: &str = "/acks/";

/// One shard's keys in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardKeys {
    pub namespace: String,
    pub records: usize,
    /// Its configuration epoch (`None`: unreadable).
    pub epoch: Option<u64>,
    /// Its purges still waiting for members, by name.
    pub pending: Vec<(String, PendingAcks)>,
    /// The revision of its last key deletion (0: none yet).
    pub erased_at: i64,
    /// Its read replicas' acknowledgements, by replica number.
    pub replicas: Vec<super::ReplicaAck>,
}

/// A key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub wrapped: Vec<u8>,
    /// How many times the key was written since it was created: 1 for a key committed once.
    pub version: i64,
}

/// The wrapped data keys in etcd.
pub struct ConsensusKeys {
    /// Always `Some` but in `drop`, which shuts it down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    config: ClusterConfig,
    hasher: Hasher,
}

impl Drop for ConsensusKeys {
    /// Shuts the runtime down without waiting: a store is often dropped on an async task (the
    /// server's shutdown), where dropping a runtime the blocking way panics.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The filler values written to move etcd's write-ahead log on, and the small ones that only
/// count entries towards a snapshot.
const FILLER_VALUE: usize = 1_000_000;
/// The most keys one commit or delete may carry: etcd refuses a transaction with more than
/// `--max-txn-ops` (128 by default) operations in a branch, and each carries one more.
pub const MAX_KEYS_PER_TXN: usize = 127;
const TICK_VALUE: usize = 64;

impl ConsensusKeys {
    /// Connects to the cluster and makes sure its configuration epoch exists (1 when new).
    /// `keys` gives the secret of the byte scans' fingerprints, so a purge resumed by another
    /// process looks for the same prints; no key leaves the key ring.
    #[tracing::instrument(skip_all, fields(members = config.members.len()))]
    pub fn open(config: ClusterConfig, keys: &KeyRing) -> Result<ConsensusKeys, Error> {
        ConsensusKeys::open_with_secret(config, keys.mac(b"oubli/etcd-scan-fingerprint/v1", b""))
    }

    /// [`Self::open`] with the byte scans' fingerprints keyed by `scan_secret`: the RocksDB store
    /// passes its own, so one set of fingerprints serves the scans of its data dir and of every
    /// member's.
    pub(super) fn open_with_secret(config: ClusterConfig, scan_secret: [u8; 32]) -> Result<ConsensusKeys, Error> {
        let store = ConsensusKeys::connect_with(config, scan_secret)?;
        store.create_epoch()?;
        Ok(store)
    }

    /// Connects to a cluster that must already hold this namespace's epoch (a data dir written
    /// with keys there), creating nothing, with the byte scans' fingerprints keyed by
    /// `scan_secret`.
    pub(super) fn reopen_with_secret(config: ClusterConfig, scan_secret: [u8; 32]) -> Result<ConsensusKeys, Error> {
        ConsensusKeys::connect_with(config, scan_secret)
    }

    /// The etcd cluster's own id (from a response header), to tell one cluster from another.
    pub fn cluster_id(&self) -> Result<u64, Error> {
        Ok(self.namespace_state()?.cluster_id)
    }

    /// Whether this namespace's configuration epoch exists.
    pub fn has_epoch(&self) -> Result<bool, Error> {
        Ok(self.namespace_state()?.epoch.is_some())
    }

    /// The cluster's id and this namespace's configuration epoch (`None`: not created), in one
    /// linearizable read.
    pub fn namespace_state(&self) -> Result<NamespaceState, Error> {
        let key = self.epoch_key();
        let got = self.write("read the configuration epoch", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        let epoch = match got.kvs().first() {
            None => None,
            Some(kv) => Some(parse_epoch(Some(kv.value()))?),
        };
        Ok(NamespaceState { cluster_id: got.header().map(|h| h.cluster_id()).unwrap_or_default(), epoch })
    }

    fn create_epoch(&self) -> Result<(), Error> {
        let epoch = self.epoch_key();
        self.write("create the configuration epoch", |mut c| {
            let epoch = epoch.clone();
            async move {
                c.txn(
                    Txn::new()
                        .when([Compare::create_revision(epoch.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(epoch, "1", None)]),
                )
                .await
            }
        })?;
        Ok(())
    }

    /// Connects without writing anything (to read status). Its fingerprints use a secret of
    /// this process's own.
    pub fn connect(config: ClusterConfig) -> Result<ConsensusKeys, Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Consensus { what: "draw a scan secret".into(), reason: e.to_string() })?;
        ConsensusKeys::connect_with(config, secret)
    }

    /// Connects, the byte scans' fingerprints keyed by `scan_secret`.
    fn connect_with(config: ClusterConfig, scan_secret: [u8; 32]) -> Result<ConsensusKeys, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("oubli-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Consensus { what: "start the etcd client".into(), reason: e.to_string() })?;
        let endpoints: Vec<String> = config.members.iter().map(|m| m.endpoint.clone()).collect();
        let client = runtime
            .block_on(Client::connect(&endpoints, Some(options(config.request_timeout, true))))
            .map_err(|e| unavailable("connect to etcd", &e))?;
        Ok(ConsensusKeys { runtime: Some(runtime), client, config, hasher: Hasher::new(scan_secret) })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until the store is dropped")
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn epoch_key(&self) -> String {
        format!("{}/epoch", self.config.namespace)
    }

    /// The prefix of every record's key.
    pub(super) fn keys_prefix(&self) -> String {
        format!("{}/keys/", self.config.namespace)
    }

    fn key_of(&self, id: RecordId) -> String {
        format!("{}{id}", self.keys_prefix())
    }

    fn filler_prefix(&self) -> String {
        format!("{}/purge-filler/", self.config.namespace)
    }

    /// The configuration epoch every write is checked against.
    pub fn epoch(&self) -> Result<u64, Error> {
        let key = self.epoch_key();
        let got = self.write("read the configuration epoch", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        parse_epoch(got.kvs().first().map(|kv| kv.value()))
    }

    /// [`Self::epoch`], refused as `what` when no majority answers within the write deadline
    /// (the bound an enrolment is refused after).
    pub fn epoch_for(&self, what: &str) -> Result<u64, Error> {
        let key = self.epoch_key();
        let got = self.write(what, |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        parse_epoch(got.kvs().first().map(|kv| kv.value()))
    }

    /// Moves the epoch from `from` to `from + 1` (a new shard map); writes planned under `from`
    /// are refused from then on.
    #[tracing::instrument(skip_all, fields(from))]
    pub fn advance_epoch(&self, from: u64) -> Result<u64, Error> {
        let key = self.epoch_key();
        let resp = self.write("advance the configuration epoch", |mut c| {
            let key = key.clone();
            async move {
                c.txn(
                    Txn::new()
                        .when([Compare::value(key.clone(), CompareOp::Equal, from.to_string())])
                        .and_then([TxnOp::put(key.clone(), (from + 1).to_string(), None)])
                        .or_else([TxnOp::get(key, None)]),
                )
                .await
            }
        })?;
        if resp.succeeded() {
            return Ok(from + 1);
        }
        Err(Error::Fenced { ours: from, current: current_epoch(&resp.op_responses())? })
    }

    /// Commits the wrapped keys of new records, all or none, under configuration `epoch`. Each
    /// key must be new: a record id is committed once. A retry after a lost answer finds its own
    /// values and reports [`Committed::Already`], so a key is never written twice.
    #[tracing::instrument(skip_all, fields(epoch, keys = keys.len()))]
    pub fn commit(&self, epoch: u64, keys: &[(RecordId, &[u8])]) -> Result<Committed, Error> {
        if keys.is_empty() {
            return Ok(Committed::Already);
        }
        too_many(keys.len())?;
        let epoch_key = self.epoch_key();
        let names: Vec<String> = keys.iter().map(|(id, _)| self.key_of(*id)).collect();
        let resp = self.write("commit the records' keys", |mut c| {
            let mut when = vec![Compare::value(epoch_key.clone(), CompareOp::Equal, epoch.to_string())];
            when.extend(names.iter().map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0)));
            let then: Vec<TxnOp> = names.iter().zip(keys).map(|(k, (_, v))| TxnOp::put(k.clone(), *v, None)).collect();
            let mut otherwise = vec![TxnOp::get(epoch_key.clone(), None)];
            otherwise.extend(names.iter().map(|k| TxnOp::get(k.clone(), None)));
            async move { c.txn(Txn::new().when(when).and_then(then).or_else(otherwise)).await }
        })?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        if resp.succeeded() {
            return Ok(Committed::Now { revision });
        }
        let answers = resp.op_responses();
        let current = current_epoch(&answers)?;
        if current != epoch {
            return Err(Error::Fenced { ours: epoch, current });
        }
        let mut same = 0;
        for ((id, ours), answer) in keys.iter().zip(&answers[1..]) {
            if let TxnOpResponse::Get(got) = answer {
                match got.kvs().first() {
                    Some(kv) if kv.value() == *ours && kv.version() == 1 => same += 1,
                    Some(_) => return Err(Error::KeyConflict(*id)),
                    None => {}
                }
            }
        }
        if same == keys.len() {
            Ok(Committed::Already)
        } else {
            // Some of the keys exist with these values and some do not: an earlier call
            // committed another set that overlaps this one.
            Err(Error::KeyConflict(keys[0].0))
        }
    }

    /// A record's wrapped key, or `None` when it has none (never committed, or erased). The read
    /// goes through the leader, so it sees every committed write; it needs a majority, and
    /// [`Self::get_from`] asks one member alone.
    pub fn get(&self, id: RecordId) -> Result<Option<StoredKey>, Error> {
        let key = self.key_of(id);
        let got = self.write("read a record's key", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(stored(&got))
    }

    /// A record's key as member `member` alone has applied it (no majority needed).
    pub fn get_from(&self, member: usize, id: RecordId) -> Result<Option<StoredKey>, Error> {
        self.read_member(member, id, None, "read a record's key from one member")
    }

    /// A record's key as of an older `revision`, from member `i` alone: what a reader of the
    /// history still gets after a delete, until a compaction.
    pub fn get_at(&self, i: usize, id: RecordId, revision: i64) -> Result<Option<StoredKey>, Error> {
        self.read_member(i, id, Some(revision), "read a record's key at an older revision")
    }

    /// A serializable read of `id` from member `i` alone, at `revision` or its latest.
    fn read_member(
        &self,
        i: usize,
        id: RecordId,
        revision: Option<i64>,
        what: &str,
    ) -> Result<Option<StoredKey>, Error> {
        let key = self.key_of(id);
        let mut c = self.member_client(i, self.config.request_timeout)?;
        let opts = GetOptions::new().with_serializable();
        let opts = match revision {
            Some(r) => opts.with_revision(r),
            None => opts,
        };
        let got = self.rt().block_on(async move { c.get(key, Some(opts)).await }).map_err(|e| unavailable(what, &e))?;
        Ok(stored(&got))
    }

    /// [`Self::get_many`], or, when no leader answers within the request timeout (a majority
    /// down), the keys as the first member that answers holds them, alone. That copy may lag
    /// behind a delete, or miss a commit: only for what tolerates it (sealing a search hit's
    /// recipients row, for a record the caller holds indexed; its node is the only writer of its
    /// keys, and unindexes a record before deleting its key).
    pub fn get_many_or_any_member(&self, ids: &[RecordId]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        match self.get_many_within(ids, self.config.request_timeout) {
            Err(Error::Consensus { what, reason }) => {
                for i in 0..self.config.members.len() {
                    let alone: Result<Vec<_>, Error> =
                        ids.iter().map(|id| Ok(self.get_from(i, *id)?.map(|k| k.wrapped))).collect();
                    if let Ok(keys) = alone {
                        tracing::debug!(member = i, "keys read from one member: no leader answered");
                        return Ok(keys);
                    }
                }
                Err(Error::Consensus { what, reason })
            }
            other => other,
        }
    }

    /// The wrapped keys of `ids`, in order (`None`: no key), read through the leader in one
    /// transaction per [`MAX_KEYS_PER_TXN`] ids: every committed write is seen.
    pub fn get_many(&self, ids: &[RecordId]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.get_many_within(ids, self.config.write_deadline)
    }

    fn get_many_within(&self, ids: &[RecordId], within: Duration) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_KEYS_PER_TXN) {
            let names: Vec<String> = chunk.iter().map(|id| self.key_of(*id)).collect();
            let resp = self.retry_via(&self.client, "read the records' keys", within, |mut c| {
                let gets: Vec<TxnOp> = names.iter().map(|k| TxnOp::get(k.clone(), None)).collect();
                async move { c.txn(Txn::new().and_then(gets)).await }
            })?;
            for answer in resp.op_responses() {
                out.push(match answer {
                    TxnOpResponse::Get(got) => got.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                });
            }
        }
        if out.len() != ids.len() {
            return Err(Error::Corrupt("etcd answered a different number of reads than were asked".into()));
        }
        Ok(out)
    }

    /// Every record's wrapped key, in id-name order, read through the leader in pages.
    pub fn all(&self) -> Result<Vec<(RecordId, Vec<u8>)>, Error> {
        const PAGE: i64 = 10_000;
        let prefix = self.keys_prefix();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let page = self.write("read every record's key", |mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            })?;
            let kvs = page.kvs();
            for kv in kvs {
                out.push((self.id_of(kv.key(), &prefix)?, kv.value().to_vec()));
            }
            match kvs.last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Every shard whose keys live in this cluster (`oubli-server --cluster --shard S` writes
    /// under `/oubli/shard-S`), with how many records it holds and its configuration epoch, in
    /// name order. Reads key names only, in pages.
    pub fn shards(&self) -> Result<Vec<ShardKeys>, Error> {
        const PAGE: i64 = 10_000;
        // Through the members that answer: a read routed to a paused member waits out its
        // timeout, and this is what `oubli cluster status` shows while one is paused.
        let live: Vec<usize> = (0..self.config.members.len()).filter(|&i| self.member_state(i).is_ok()).collect();
        let through = self.client_of_some(&live);
        let client = through.as_ref().unwrap_or(&self.client);
        let prefix = SHARDS_PREFIX.to_string();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE).with_keys_only();
            let page = self.write_via(client, "list the shards' keys", |mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            })?;
            for kv in page.kvs() {
                let name = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                let Some((shard, rest)) = name.split_once('/') else { continue };
                let held = counts.entry(shard.to_string()).or_default();
                *held += usize::from(rest.starts_with("keys/"));
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        counts
            .into_iter()
            .map(|(shard, records)| {
                let key = format!("{SHARDS_PREFIX}{shard}/epoch");
                let got = self.write_via(client, "read a shard's epoch", |mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })?;
                let epoch = parse_epoch(got.kvs().first().map(|kv| kv.value())).ok();
                let namespace = format!("{SHARDS_PREFIX}{shard}");
                let pending = self.acks_of(client, &namespace)?;
                let (erased_at, replicas) = self.replica_acks_via(client, &namespace)?;
                Ok(ShardKeys { namespace, records, epoch, pending, erased_at, replicas })
            })
            .collect()
    }

    /// The pending acknowledgements published under `namespace`, by name.
    fn acks_of(&self, client: &Client, namespace: &str) -> Result<Vec<(String, PendingAcks)>, Error> {
        let prefix = format!("{namespace}{ACKS}");
        let got = self.write_via(client, "read a shard's pending acknowledgements", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        // An entry that does not parse (written by another version, say) is skipped with a
        // warning rather than hiding every other one.
        Ok(got
            .kvs()
            .iter()
            .filter_map(|kv| {
                let name = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                match serde_json::from_slice(kv.value()) {
                    Ok(acks) => Some((name, acks)),
                    Err(e) => {
                        tracing::warn!(%name, error = %e, "a pending-acknowledgements entry in etcd does not parse; skipped");
                        None
                    }
                }
            })
            .collect())
    }

    /// Publishes what `purge` still waits for as `name` under this namespace's `acks/`, for
    /// `oubli cluster status`, or removes it once every member is checked. Written through
    /// the members that answered the purge (a call routed to a paused member would wait out its
    /// timeout), bounded by one request's timeout; a failure is only logged: the request's own
    /// state, not this, says what is done.
    pub fn publish_acks(&self, name: &str, what: &str, purge: &Purge) {
        let key = format!("{}{ACKS}{name}", self.config.namespace);
        let within = self.config.request_timeout;
        let pending = purge.pending();
        let live: Vec<usize> = (0..self.config.members.len())
            .filter(|&i| !pending.iter().any(|(m, _)| *m == self.config.members[i].endpoint))
            .collect();
        let through = self.client_of_some(&live);
        let client = through.as_ref().unwrap_or(&self.client);
        let result = if purge.is_complete() {
            self.retry_via(client, "clear a purge's pending acknowledgements", within, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .map(drop)
        } else {
            let acks = PendingAcks {
                what: what.to_string(),
                members: purge.members.len(),
                pending: pending.iter().map(|(m, why)| (m.to_string(), why.to_string())).collect(),
                tried_at: jiff::Timestamp::now(),
            };
            let value = serde_json::to_vec(&acks).expect("pending acknowledgements serialise");
            self.retry_via(client, "publish a purge's pending acknowledgements", within, |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .map(drop)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "a purge's pending acknowledgements were not published");
        }
    }

    /// The record id a key's name carries.
    pub(super) fn id_of(&self, name: &[u8], prefix: &str) -> Result<RecordId, Error> {
        name.get(prefix.len()..)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Corrupt("a key in the key store is not named by a record id".into()))
    }

    /// How many records have a key.
    pub fn count(&self) -> Result<usize, Error> {
        let prefix = self.keys_prefix();
        let got = self.write("count the records' keys", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await }
        })?;
        Ok(got.count() as usize)
    }

    /// Deletes the records' keys in one transaction under configuration `epoch`: the commit
    /// point of their erasure. What stays on the members' disks is for [`Self::purge`].
    #[tracing::instrument(skip_all, fields(epoch, keys = ids.len()))]
    pub fn delete(&self, epoch: u64, ids: &[RecordId]) -> Result<Deleted, Error> {
        too_many(ids.len())?;
        let epoch_key = self.epoch_key();
        let names: Vec<String> = ids.iter().map(|id| self.key_of(*id)).collect();
        let erased_at = self.erased_at_key();
        let resp = self.write("delete the records' keys", |mut c| {
            let when = vec![Compare::value(epoch_key.clone(), CompareOp::Equal, epoch.to_string())];
            let mut then: Vec<TxnOp> = names.iter().map(|k| TxnOp::delete(k.clone(), None)).collect();
            // In the same transaction: its revision is the mark every replica must reconcile past
            // before this erasure's phase 2 is logged (`replica.rs`).
            then.push(TxnOp::put(erased_at.clone(), Vec::new(), None));
            let otherwise = vec![TxnOp::get(epoch_key.clone(), None)];
            async move { c.txn(Txn::new().when(when).and_then(then).or_else(otherwise)).await }
        })?;
        let answers = resp.op_responses();
        if !resp.succeeded() {
            return Err(Error::Fenced { ours: epoch, current: current_epoch(&answers)? });
        }
        let deleted = answers
            .iter()
            .map(|a| match a {
                TxnOpResponse::Delete(d) => d.deleted() as usize,
                _ => 0,
            })
            .sum();
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        let index_bound = self.index_bound()?;
        Ok(Deleted { revision, deleted, index_bound })
    }

    /// Re-wraps every key not under `keys`' current epoch (a key rotation), in pages of up to
    /// [`MAX_KEYS_PER_TXN`], each page one transaction that writes only the keys unchanged since
    /// they were read (a key erased or re-wrapped meanwhile is left to that). Returns what the
    /// old values' purge needs: their fingerprints and a bound past the overwrites; once that
    /// purge is complete on every member, the old key-encryption key can be destroyed.
    #[tracing::instrument(skip_all)]
    pub fn rewrap_all(&self, keys: &KeyRing) -> Result<Rewrapped, Error> {
        let prefix = self.keys_prefix();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut old = Prints::default();
        let (mut rewrapped, mut revision, mut retries) = (0usize, 0i64, 0u32);
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(MAX_KEYS_PER_TXN as i64);
            let page = self.write("read a page of keys to re-wrap", |mut c| {
                let (from, opts) = (from.clone(), opts.clone());
                async move { c.get(from, Some(opts)).await }
            })?;
            let kvs = page.kvs();
            let Some(last) = kvs.last() else { break };
            let mut when = Vec::new();
            let mut then = Vec::new();
            let mut olds = Vec::new();
            for kv in kvs {
                let id = self.id_of(kv.key(), &prefix)?;
                if let Some(new) = keys.rewrap(id, kv.value())? {
                    when.push(Compare::mod_revision(kv.key(), CompareOp::Equal, kv.mod_revision()));
                    then.push(TxnOp::put(kv.key(), new, None));
                    olds.push(kv.value().to_vec());
                }
            }
            from = last.key().to_vec();
            from.push(0);
            if then.is_empty() {
                continue;
            }
            let resp = self.write("re-wrap a page of keys", |mut c| {
                let txn = Txn::new().when(when.clone()).and_then(then.clone());
                async move { c.txn(txn).await }
            })?;
            if !resp.succeeded() {
                // A key of the page changed since it was read: read the page again, a bounded
                // number of times over the whole pass.
                retries += 1;
                if retries > 1000 {
                    return Err(Error::Consensus {
                        what: "re-wrap the keys".into(),
                        reason: "the keys kept changing under the re-wrap; run it again when writes are fewer".into(),
                    });
                }
                from = kvs[0].key().to_vec();
                continue;
            }
            revision = resp.header().map(|h| h.revision()).unwrap_or(revision);
            rewrapped += olds.len();
            old.extend(&self.hasher.prints_of(olds.iter().map(Vec::as_slice)));
        }
        let index_bound = if rewrapped > 0 { self.index_bound()? } else { 0 };
        Ok(Rewrapped { rewrapped, old, after: Deleted { revision, deleted: rewrapped, index_bound } })
    }

    /// Every member's own report, one at a time, each bounded by the request timeout.
    pub fn status(&self) -> Vec<MemberStatus> {
        (0..self.config.members.len())
            .map(|i| MemberStatus {
                endpoint: self.config.members[i].endpoint.clone(),
                answer: self.member_state(i).map_err(|e| e.to_string()),
            })
            .collect()
    }

    fn member_state(&self, i: usize) -> Result<MemberState, Error> {
        let mut c = self.member_client(i, self.config.request_timeout)?;
        self.rt()
            .block_on(async move {
                let s = c.status().await?;
                let h = c.hash_kv(0).await?;
                let header = s.header().map(|h| (h.member_id(), h.revision())).unwrap_or_default();
                Ok::<_, etcd_client::Error>(MemberState {
                    id: header.0,
                    version: s.version().to_string(),
                    is_leader: s.leader() == header.0,
                    raft_index: s.raft_index(),
                    raft_applied_index: s.raft_applied_index(),
                    raft_term: s.raft_term(),
                    revision: header.1,
                    compact_revision: h.compact_version(),
                    db_size: s.db_size(),
                })
            })
            .map_err(|e| unavailable("read a member's status", &e))
    }

    /// A Raft index at or past every entry committed so far. Every member that acknowledged an
    /// entry holds it, and a majority did: the highest index a majority reports is at or past it.
    fn index_bound(&self) -> Result<u64, Error> {
        let indexes: Vec<u64> = (0..self.config.members.len()).filter_map(|i| self.raft_index(i).ok()).collect();
        if indexes.len() * 2 <= self.config.members.len() {
            return Err(Error::Consensus {
                what: "read the Raft index after the write".into(),
                reason: format!(
                    "only {} of {} members answered; the write is committed, and its purge needs a majority to \
                     answer first",
                    indexes.len(),
                    self.config.members.len()
                ),
            });
        }
        Ok(indexes.into_iter().max().unwrap_or_default())
    }

    /// Member `i`'s last Raft index (its status alone: cheaper than [`Self::status`], which also
    /// hashes the member's whole keyspace for its compact revision).
    fn raft_index(&self, i: usize) -> Result<u64, Error> {
        let mut c = self.member_client(i, self.config.request_timeout)?;
        self.rt()
            .block_on(async move { c.status().await })
            .map(|s| s.raft_index())
            .map_err(|e| unavailable("read a member's Raft index", &e))
    }

    /// A client of member `i` alone.
    fn member_client(&self, i: usize, timeout: Duration) -> Result<Client, Error> {
        let endpoint = [self.config.members[i].endpoint.clone()];
        self.rt()
            .block_on(Client::connect(endpoint, Some(options(timeout, false))))
            .map_err(|e| unavailable("connect to one etcd member", &e))
    }

    /// Removes an erasure's keys from every member's disk and checks each member beside it:
    /// compaction to the delete's revision, then each member defragmented in turn, then the
    /// write-ahead-log segments that held the keys retired (etcd retires a segment only after
    /// a snapshot past it, so filler is written until each member has cut and snapshotted past
    /// the delete, bounded in bytes and time), then the filler removed the same way. `erased`
    /// are the fingerprints of the erased wrapped keys ([`Self::prints_of`]). Safe to repeat:
    /// a second purge after a member comes back completes it.
    #[tracing::instrument(skip_all, fields(revision = deleted.revision, values = erased.values))]
    pub fn purge(&self, deleted: &Deleted, erased: &Prints) -> Result<Purge, Error> {
        let mut pending: BTreeMap<usize, String> = BTreeMap::new();
        let mut ids: BTreeMap<usize, u64> = BTreeMap::new();
        for i in 0..self.config.members.len() {
            match self.member_state(i) {
                Ok(s) => {
                    ids.insert(i, s.id);
                }
                Err(e) => {
                    pending.insert(i, format!("did not answer: {e}"));
                }
            }
        }
        let live: Vec<usize> = (0..self.config.members.len()).filter(|i| !pending.contains_key(i)).collect();
        if live.is_empty() {
            return Err(Error::Consensus { what: "purge".into(), reason: "no member answered".into() });
        }
        let client = self.client_of(&live)?;
        self.compact_via(&client, deleted.revision)?;
        let started = Instant::now();
        self.defragment_each(&mut pending, deleted.revision);
        let mut defrag = started.elapsed();
        let started = Instant::now();
        let filler_bytes = self.retire_wal(&client, deleted.index_bound, &pending)?;
        let wal_retirement = started.elapsed();
        if filler_bytes > 0 {
            let revision = self.delete_filler(&client)?;
            self.compact_via(&client, revision)?;
            let started = Instant::now();
            self.defragment_each(&mut pending, revision);
            defrag += started.elapsed();
        }
        let members = (0..self.config.members.len())
            .map(|i| {
                let endpoint = self.config.members[i].endpoint.clone();
                let outcome = match pending.remove(&i) {
                    Some(why) => Outcome::Pending(why),
                    None => match self.check_member(i, deleted, erased) {
                        Ok(checks) => Outcome::Checked(checks),
                        Err(why) => Outcome::Pending(why),
                    },
                };
                MemberPurge { endpoint, id: ids.get(&i).copied(), outcome }
            })
            .collect();
        let purge = Purge { revision: deleted.revision, members, filler_bytes, wal_retirement, defrag };
        tracing::info!(
            checked = purge.members.len() - purge.pending().len(),
            pending = purge.pending().len(),
            filler_bytes,
            "etcd purge"
        );
        Ok(purge)
    }

    /// The fingerprints the purge's byte scans look for, of values about to be erased.
    pub fn prints_of<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Prints {
        self.hasher.prints_of(values)
    }

    /// A byte scan of member `i`'s data dir for `prints` (`None` without a data dir).
    pub fn scan_member(&self, i: usize, prints: &Prints) -> Result<Option<Scan>, Error> {
        match &self.config.members[i].data_dir {
            Some(dir) => scan::scan_dir(dir, self.hasher, prints).map(Some),
            None => Ok(None),
        }
    }

    /// Compacts the cluster's history up to `revision` (physically: the call returns once the
    /// member that answered has removed the older revisions from its file; the others apply it
    /// from the Raft log, and a purge's checks read each one's compact revision). Repeating it is
    /// not an error.
    pub fn compact(&self, revision: i64) -> Result<(), Error> {
        self.compact_via(&self.client, revision)
    }

    fn compact_via(&self, client: &Client, revision: i64) -> Result<(), Error> {
        let result = self.write_via(client, "compact past the delete", |mut c| async move {
            c.compact(revision, Some(CompactionOptions::new().with_physical())).await.map(|_| ())
        });
        match result {
            // A repeated purge: compacted to it or past it already.
            Err(Error::Consensus { reason, .. }) if reason.contains("compacted") => Ok(()),
            other => other,
        }
    }

    /// Defragments member `i` alone (bounded by the defrag timeout).
    pub fn defragment(&self, i: usize) -> Result<(), Error> {
        let mut c = self.member_client(i, self.config.defrag_timeout)?;
        self.rt().block_on(async move { c.defragment().await }).map(|_| ()).map_err(|e| unavailable("defragment", &e))
    }

    /// Defragments the members not yet pending, one at a time (a member defragmenting does not
    /// serve), each bounded by the defrag timeout; one that fails becomes pending.
    /// Each first waits, bounded, until the member has applied the compaction to `revision`:
    /// a physical compaction returns when the member that answered is done, and a member
    /// defragmented before it compacts keeps the old values.
    fn defragment_each(&self, pending: &mut BTreeMap<usize, String>, revision: i64) {
        for i in 0..self.config.members.len() {
            if pending.contains_key(&i) {
                continue;
            }
            let mut compacted = false;
            for _ in 0..100 {
                match self.member_state(i) {
                    Ok(s) if s.compact_revision >= revision => {
                        compacted = true;
                        break;
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                    Err(_) => break,
                }
            }
            if !compacted {
                pending.insert(i, format!("did not report the compaction to revision {revision} within 10 s"));
                continue;
            }
            if let Err(e) = self.defragment(i) {
                pending.insert(i, format!("defragmentation did not complete: {e}"));
            }
        }
    }

    /// Writes filler until the oldest write-ahead-log segment of every member that answers and
    /// runs beside this node starts past `bound`; returns the filler's bytes. Members pending
    /// already, or without a data dir, are not waited for (their check says so).
    fn retire_wal(&self, client: &Client, bound: u64, pending: &BTreeMap<usize, String>) -> Result<u64, Error> {
        let dirs: Vec<&Path> = (0..self.config.members.len())
            .filter(|i| !pending.contains_key(i))
            .filter_map(|i| self.config.members[i].data_dir.as_deref())
            .collect();
        let deadline = Instant::now() + self.config.wal_deadline;
        let prefix = self.filler_prefix();
        let (mut bytes, mut n) = (0u64, 0u64);
        let big = vec![b'f'; FILLER_VALUE];
        let small = vec![b't'; TICK_VALUE];
        loop {
            let segments: Vec<Option<WalSegments>> = dirs.iter().map(|d| wal_segments(d).ok()).collect();
            if segments.iter().all(|s| s.as_ref().is_some_and(|s| s.oldest > bound)) {
                return Ok(bytes);
            }
            if Instant::now() >= deadline || bytes >= self.config.max_filler_bytes {
                return Ok(bytes);
            }
            // Until every member has cut a segment past the delete, its current segment must be
            // filled (etcd cuts at 64 MB). After that only entries count: a member releases the
            // old segments at a snapshot it takes itself (one received from the leader does
            // not), every `--snapshot-count` entries, and removes them on a 30-second timer.
            let cut = segments.iter().all(|s| s.as_ref().is_some_and(|s| s.newest > bound));
            let (value, count) = if cut { (&small, 10) } else { (&big, 8) };
            for _ in 0..count {
                let key = format!("{prefix}{n:08}");
                n += 1;
                self.write_via(client, "write filler to retire the write-ahead log", |mut c| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { c.put(key, value, Some(PutOptions::new())).await.map(|_| ()) }
                })?;
                bytes += value.len() as u64;
            }
            if cut {
                // Polled, bounded by the deadline: etcd says nothing when it removes a segment.
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }

    fn delete_filler(&self, client: &Client) -> Result<i64, Error> {
        let prefix = self.filler_prefix();
        let resp = self.write_via(client, "delete the filler", |mut c| {
            let prefix = prefix.clone();
            async move { c.delete(prefix, Some(DeleteOptions::new().with_prefix())).await }
        })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or_default())
    }

    /// The checks beside member `i`; `Err` says which failed or could not be made.
    fn check_member(&self, i: usize, deleted: &Deleted, erased: &Prints) -> Result<Vec<String>, String> {
        let state = self.member_state(i).map_err(|e| format!("did not answer for its checks: {e}"))?;
        let mut checks = Vec::new();
        if state.compact_revision < deleted.revision {
            return Err(format!(
                "its compact revision is {}, before the delete's {}",
                state.compact_revision, deleted.revision
            ));
        }
        checks.push(format!(
            "member {:x} reports compact revision {} (the delete's revision is {})",
            state.id, state.compact_revision, deleted.revision
        ));
        let old = deleted.revision - 1;
        let key = self.keys_prefix();
        let mut c = self.member_client(i, self.config.request_timeout).map_err(|e| e.to_string())?;
        let read = self.rt().block_on(async move {
            c.get(key, Some(GetOptions::new().with_prefix().with_revision(old).with_serializable().with_keys_only()))
                .await
        });
        match read {
            Err(e) if e.to_string().contains("compacted") => {
                checks.push(format!("a read of the keys at revision {old}, before the delete, is refused as compacted"))
            }
            Err(e) => return Err(format!("a read at revision {old} failed otherwise: {e}")),
            Ok(_) => return Err(format!("a read at revision {old}, before the delete, still answers")),
        }
        let Some(dir) = self.config.members[i].data_dir.as_deref() else {
            return Err("no check beside this member: its data dir is not on this node, so its write-ahead log \
                        and files were not read"
                .into());
        };
        let wal = wal_segments(dir).map_err(|e| format!("its write-ahead log could not be listed: {e}"))?;
        if wal.oldest <= deleted.index_bound {
            return Err(format!(
                "its oldest write-ahead-log segment starts at Raft index {}, not past the delete's (at most {}): \
                 etcd has not retired it yet",
                wal.oldest, deleted.index_bound
            ));
        }
        checks.push(format!(
            "its oldest write-ahead-log segment starts at Raft index {}, past the delete's (at most {})",
            wal.oldest, deleted.index_bound
        ));
        let scan = scan::scan_dir(dir, self.hasher, erased).map_err(|e| e.to_string())?;
        checks.push(scan.verdict(dir, "its data dir", erased.values, "erased key(s)")?);
        Ok(checks)
    }

    /// Runs `call` against the cluster, retrying what a leader election or a member going down
    /// causes until the write deadline; then refuses with the last error.
    /// The client of every member (what [`Self::write`] goes through).
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn write<T, F, Fut>(&self, what: &str, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.write_via(&self.client, what, call)
    }

    /// [`Self::write`] through `client`.
    pub(super) fn write_via<T, F, Fut>(&self, client: &Client, what: &str, call: F) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.retry_via(client, what, self.config.write_deadline, call)
    }

    /// [`Self::write_via`], retried for at most `within`.
    pub(super) fn retry_via<T, F, Fut>(
        &self,
        client: &Client,
        what: &str,
        within: Duration,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = started + within;
        let mut wait = Duration::from_millis(20);
        for attempt in 1u32.. {
            match self.rt().block_on(call(client.clone())) {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && Instant::now() + wait < deadline => {
                    tracing::debug!(attempt, "etcd call failed; retrying");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Err(e) if retryable(&e) => {
                    return Err(Error::Consensus {
                        what: what.to_string(),
                        reason: format!(
                            "{} (no answer in {:.1?}, {attempt} attempt(s)). A write needs a majority of the members \
                             up and reachable; `oubli cluster status` shows which answer",
                            describe(&e),
                            started.elapsed()
                        ),
                    });
                }
                Err(e) => return Err(unavailable(what, &e)),
            }
        }
        unreachable!("the loop returns")
    }

    /// A client of the members `live` when only some answer (`None`: all do, or none, and the
    /// client of every member serves as well).
    pub(super) fn client_of_some(&self, live: &[usize]) -> Option<Client> {
        match live.len() {
            n if n == self.config.members.len() || n == 0 => None,
            _ => self.client_of(live).ok(),
        }
    }

    /// A client of the members `live` only (the purge's, once a member is known not to answer:
    /// every call routed to a paused member would wait out its timeout).
    fn client_of(&self, live: &[usize]) -> Result<Client, Error> {
        let endpoints: Vec<String> = live.iter().map(|&i| self.config.members[i].endpoint.clone()).collect();
        self.rt()
            .block_on(Client::connect(&endpoints, Some(options(self.config.request_timeout, true))))
            .map_err(|e| unavailable("connect to the members that answer", &e))
    }
}

/// Segment first indexes of a member's write-ahead log (names are `seq-index.wal`, hex).
struct WalSegments {
    oldest: u64,
    newest: u64,
}

fn wal_segments(data_dir: &Path) -> std::io::Result<WalSegments> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(data_dir.join("member").join("wal"))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(index) =
            name.strip_suffix(".wal").and_then(|n| n.split_once('-')).and_then(|(_, i)| u64::from_str_radix(i, 16).ok())
        {
            firsts.push(index);
        }
    }
    match (firsts.iter().min(), firsts.iter().max()) {
        (Some(&oldest), Some(&newest)) => Ok(WalSegments { oldest, newest }),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no write-ahead-log segment")),
    }
}

/// A client's options. `require_leader`: without a leader a call fails at once instead of
/// waiting out its timeout (for writes); without it a member answers from what it has applied
/// (for local reads and status, which must work without a majority).
fn options(timeout: Duration, require_leader: bool) -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1).min(timeout))
        .with_timeout(timeout)
        .with_require_leader(require_leader)
}

/// The first key after every key that starts with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key a read found, if any.
fn stored(got: &etcd_client::GetResponse) -> Option<StoredKey> {
    got.kvs().first().map(|kv| StoredKey { wrapped: kv.value().to_vec(), version: kv.version() })
}

fn too_many(n: usize) -> Result<(), Error> {
    if n > MAX_KEYS_PER_TXN {
        return Err(Error::TooManyKeys { n, max: MAX_KEYS_PER_TXN });
    }
    Ok(())
}

fn parse_epoch(value: Option<&[u8]>) -> Result<u64, Error> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt("the cluster's configuration epoch is missing or not a number".into()))
}

fn current_epoch(answers: &[TxnOpResponse]) -> Result<u64, Error> {
    match answers.first() {
        Some(TxnOpResponse::Get(got)) => parse_epoch(got.kvs().first().map(|kv| kv.value())),
        _ => parse_epoch(None),
    }
}

/// Errors a retry can cure: no leader yet, a member or the connection gone, a timeout.
fn retryable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let code = s.code() as i32;
            // CANCELLED (1: the client's own timeout), UNKNOWN (2), DEADLINE_EXCEEDED (4),
            // UNAVAILABLE (14: etcd's "no leader" and "leader changed"). Every write here is safe
            // to repeat: a commit finds its own keys, a delete or compaction done is done.
            matches!(code, 1 | 2 | 4 | 14)
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

fn unavailable(what: &str, e: &etcd_client::Error) -> Error {
    Error::Consensus { what: what.to_string(), reason: describe(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses_parse_or_say_how_to_write_them() {
        let c = ClusterConfig::parse("etcd://127.0.0.1:2379, 127.0.0.1:2381").unwrap();
        let eps: Vec<_> = c.members.iter().map(|m| m.endpoint.as_str()).collect();
        assert_eq!(eps, ["http://127.0.0.1:2379", "http://127.0.0.1:2381"]);
        for bad in ["etcd://", "etcd://localhost", "etcd://127.0.0.1:x"] {
            let e = ClusterConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains("etcd://127.0.0.1:2379"), "{bad}: {e}");
        }
    }

    #[test]
    fn wal_segment_names_give_their_first_raft_index() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let wal = dir.join("member").join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        for name in ["0000000000000002-00000000000000a1.wal", "0000000000000001-0000000000000054.wal", "0.tmp"] {
            std::fs::write(wal.join(name), b"").unwrap();
        }
        let s = wal_segments(dir).unwrap();
        assert_eq!((s.oldest, s.newest), (0x54, 0xa1));
    }
}

//! `oubli cluster`: the etcd key store's members, and a narrated walk of an erasure's wrapped
//! keys through etcd's history, bbolt file and write-ahead log on a local cluster.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use oubli::{
    record::RecordId,
    store::{
        consensus::{ClusterConfig, ConsensusKeys, Outcome},
        crypto::{KeyRing, copy_key_encryption_keys, random_secret},
        scan::{Prints, WINDOW},
    },
};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Each etcd member's own report: leader, Raft term and index, revision, compact revision,
    /// database size. A member that does not answer is listed with why.
    Status {
        /// The members: etcd://host:port,host:port,...
        #[arg(long, env = "OUBLI_CLUSTER")]
        etcd: String,
    },
    /// Narrated, on a local cluster started by `scripts/etcd-local.sh start DIR`: records' keys
    /// committed, a person's erased, and their bytes looked for on every member's disk after
    /// the delete, the compaction, the defragmentation and the write-ahead log's retirement,
    /// with one member paused during the purge. `make etcd-demo` runs it.
    Demo {
        /// The local cluster's directory (its endpoints file, member data dirs and PID files).
        #[arg(long, default_value = "target/etcd-demo")]
        dir: PathBuf,
        /// How many records to enrol.
        #[arg(long, default_value_t = 200)]
        records: usize,
    },
    /// Measures, on a local cluster, what the key store costs at `--records` keys: commits,
    /// one erasure's delete, compaction, defragmentation, and the purge with its checks. One
    /// JSON object on standard output. `make bench-etcd` runs it at several sizes.
    Bench {
        #[arg(long, default_value = "target/etcd-bench")]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        records: usize,
    },
    /// Gives a new read replica's key dir the key-encryption keys of its shard's primary (only
    /// those: the replica makes its own log and binding keys). Run it before the replica's
    /// first start, on the same machine; `--to` must hold no key yet.
    ReplicaKeys {
        /// The primary's key dir.
        #[arg(long)]
        from: PathBuf,
        /// The replica's (new) key dir.
        #[arg(long)]
        to: PathBuf,
    },
    /// Narrated, on a local cluster started by `scripts/etcd-local.sh start DIR/etcd`: two
    /// shards on it behind a gateway, served in this process; a person's access and erasure
    /// requests at each shard, a member paused during phase 1, every member's disk scanned for
    /// the erased keys. `make cluster-demo` runs it.
    Walk(super::cluster_walk::Args),
}

pub fn run(command: Command, json: bool) -> Result<()> {
    match command {
        Command::Status { etcd } => status(&etcd, json),
        Command::Demo { dir, records } => demo(&dir, records),
        Command::Bench { dir, records } => bench(&dir, records),
        Command::ReplicaKeys { from, to } => {
            let copied = copy_key_encryption_keys(&from, &to)?;
            outln!("{copied} key-encryption key(s) copied from {} to {}", from.display(), to.display());
            Ok(())
        }
        Command::Walk(_) => bail!("`oubli cluster walk` runs on the async runtime: main starts it"),
    }
}

fn bench(dir: &Path, records: usize) -> Result<()> {
    let local = Local { dir: dir.to_path_buf() };
    let keys = KeyRing::load(&dir.join("keys"), true)?;
    let store = ConsensusKeys::open(local.config()?, &keys)?;
    let epoch = store.epoch()?;
    let all = new_keys(&keys, records.max(20));
    let started = Instant::now();
    commit_in_batches(&store, epoch, &all, 100)?;
    let commit_s = started.elapsed().as_secs_f64();
    // One at a time: what a single enrolment waits for.
    let singles = new_keys(&keys, 200);
    let started = Instant::now();
    commit_in_batches(&store, epoch, &singles, 1)?;
    let single_s = started.elapsed().as_secs_f64() / singles.len() as f64;
    let db_before = largest_db(&store);
    let erased = &all[..10];
    let prints = store.prints_of(erased.iter().map(|(_, w)| w.as_slice()));
    let ids: Vec<RecordId> = erased.iter().map(|(id, _)| *id).collect();
    let started = Instant::now();
    let deleted = store.delete(epoch, &ids)?;
    let delete_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let purge = store.purge(&deleted, &prints)?;
    let purge_s = started.elapsed().as_secs_f64();
    if !purge.is_complete() {
        bail!("the purge is pending: {:?}", purge.pending());
    }
    let db_after = largest_db(&store);
    outln!(
        "{}",
        serde_json::json!({
            "records": all.len(),
            "commit_keys_per_s": all.len() as f64 / commit_s,
            "single_commit_ms": single_s * 1e3,
            "db_bytes_before": db_before,
            "delete_ms": delete_s * 1e3,
            "purge_s": purge_s,
            "defrag_s": purge.defrag.as_secs_f64(),
            "wal_retirement_s": purge.wal_retirement.as_secs_f64(),
            "filler_bytes": purge.filler_bytes,
            "db_bytes_after": db_after,
            "members_checked": purge.members.len(),
        })
    );
    Ok(())
}

fn status(etcd: &str, json: bool) -> Result<()> {
    let store = ConsensusKeys::connect(ClusterConfig::parse(etcd)?)?;
    let members = store.status();
    // Lag: how far a member's applied entries are behind the furthest Raft index reported.
    let head = members.iter().filter_map(|m| m.answer.as_ref().ok()).map(|s| s.raft_index).max().unwrap_or(0);
    // Without a majority nothing can be read through the leader: the members' rows say why.
    let (shards, unread) = match store.shards() {
        Ok(shards) => (shards, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let shard_rows: Vec<_> = shards
        .iter()
        .map(|s| {
            let pending: Vec<_> = s
                .pending
                .iter()
                .map(|(name, a)| {
                    serde_json::json!({
                        "name": name, "what": a.what, "members": a.members, "tried_at": a.tried_at.to_string(),
                        "pending": a.pending.iter().map(|(m, why)| serde_json::json!({ "endpoint": m, "why": why })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let replicas: Vec<_> = s
                .replicas
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "replica": r.replica, "endpoint": r.endpoint, "listing_revision": r.listing,
                        "past_last_erasure": r.listing >= s.erased_at, "records": r.records, "missing": r.missing,
                        "pending": r.pending, "at": r.at.to_string(),
                    })
                })
                .collect();
            serde_json::json!({
                "namespace": s.namespace, "records": s.records, "epoch": s.epoch, "erased_at": s.erased_at,
                "read_replicas": replicas, "pending_acks": pending,
            })
        })
        .collect();
    if json {
        let rows: Vec<_> = members
            .iter()
            .map(|m| match &m.answer {
                Ok(s) => serde_json::json!({
                    "endpoint": m.endpoint, "id": format!("{:x}", s.id), "version": s.version,
                    "leader": s.is_leader, "raft_term": s.raft_term, "raft_index": s.raft_index,
                    "raft_applied_index": s.raft_applied_index, "lag": head.saturating_sub(s.raft_applied_index),
                    "revision": s.revision, "compact_revision": s.compact_revision, "db_size": s.db_size,
                }),
                Err(e) => serde_json::json!({ "endpoint": m.endpoint, "error": e }),
            })
            .collect();
        outln!("{}", serde_json::json!({ "members": rows, "shards": shard_rows, "shards_error": unread }));
    } else {
        outln!(
            "{:<24} {:<17} {:<7} {:>6} {:>10} {:>5} {:>9} {:>9} {:>12}",
            "endpoint",
            "member",
            "role",
            "term",
            "raft index",
            "lag",
            "revision",
            "compacted",
            "db bytes"
        );
        for m in &members {
            match &m.answer {
                Ok(s) => outln!(
                    "{:<24} {:<17x} {:<7} {:>6} {:>10} {:>5} {:>9} {:>9} {:>12}",
                    m.endpoint.trim_start_matches("http://"),
                    s.id,
                    if s.is_leader { "leader" } else { "member" },
                    s.raft_term,
                    s.raft_index,
                    head.saturating_sub(s.raft_applied_index),
                    s.revision,
                    // etcd reports -1 before the first compaction.
                    if s.compact_revision > 0 { s.compact_revision.to_string() } else { "-".into() },
                    s.db_size
                ),
                Err(e) => outln!("{:<24} does not answer: {e}", m.endpoint.trim_start_matches("http://")),
            }
        }
        outln!("(lag: Raft entries not yet applied, behind the furthest index any member reports)");
        outln!();
        outln!("{:<24} {:>9} {:>6} {:>9} {:>8}", "shard", "records", "epoch", "replicas", "pending");
        for s in &shards {
            let epoch = s.epoch.map_or("-".into(), |e| e.to_string());
            // The primary and its read replicas.
            let replicas = 1 + s.replicas.len();
            outln!("{:<24} {:>9} {:>6} {:>9} {:>8}", s.namespace, s.records, epoch, replicas, s.pending.len());
        }
        for s in &shards {
            for r in &s.replicas {
                let state = match (&r.pending, r.listing >= s.erased_at) {
                    (Some(why), _) => format!("pending: {why}"),
                    (None, false) => format!("behind the last erasure (revision {})", s.erased_at),
                    (None, true) => "in step".into(),
                };
                outln!(
                    "{} replica {} ({}): {} record(s), {} to fetch, at revision {}, {state}, said {}",
                    s.namespace,
                    r.replica,
                    r.endpoint,
                    r.records,
                    r.missing,
                    r.listing,
                    r.at.round(jiff::Unit::Second).unwrap_or(r.at)
                );
            }
        }
        match &unread {
            Some(e) => outln!("(the shards could not be read: {e})"),
            None if shards.is_empty() => outln!("(no shard has written keys here)"),
            None => {}
        }
        for s in &shards {
            for (name, a) in &s.pending {
                outln!(
                    "{} {name}: {}: {} of {} member(s) not yet acknowledged, tried {}",
                    s.namespace,
                    a.what,
                    a.pending.len(),
                    a.members,
                    a.tried_at.round(jiff::Unit::Second).unwrap_or(a.tried_at)
                );
                for (member, why) in &a.pending {
                    outln!("    {}: {why}", member.trim_start_matches("http://"));
                }
            }
        }
    }
    let up = members.iter().filter(|m| m.answer.is_ok()).count();
    if up * 2 <= members.len() {
        bail!("{up} of {} members answer: without a majority, etcd commits nothing", members.len());
    }
    Ok(())
}

/// The local cluster's layout (scripts/etcd-local.sh): `endpoints`, `mN/` data dirs, `mN.pid`.
pub(super) struct Local {
    pub(super) dir: PathBuf,
}

impl Local {
    pub(super) fn config(&self) -> Result<ClusterConfig> {
        ClusterConfig::local(&self.dir).with_context(|| {
            format!("no local cluster in {}: start one with scripts/etcd-local.sh start {0}", self.dir.display())
        })
    }

    /// Sends `signal` to member `n` (1-based) by its PID file.
    pub(super) fn signal(&self, n: usize, signal: libc::c_int) -> Result<()> {
        let path = self.dir.join(format!("m{n}.pid"));
        let pid: libc::pid_t = fs::read_to_string(&path)
            .with_context(|| format!("member {n}'s PID file {}", path.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no PID", path.display()))?;
        // SAFETY: kill(2) with a PID this cluster's script recorded and a standard signal.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("cannot signal member {n} (PID {pid}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Where on each member's disk a scan finds any of `prints`, one line per member.
pub(super) fn show_residue(store: &ConsensusKeys, prints: &Prints, what: &str) -> Result<usize> {
    let mut total = 0;
    for (i, m) in store.config().members.iter().enumerate() {
        let scan = store.scan_member(i, prints)?.context("a local member has a data dir")?;
        let dir = m.data_dir.as_deref().unwrap_or(Path::new(""));
        let places: Vec<String> = scan
            .found
            .iter()
            .map(|(path, hits)| format!("{} ({hits})", path.strip_prefix(dir).unwrap_or(path).display()))
            .collect();
        total += scan.found.len();
        if places.is_empty() {
            outln!(
                "   m{}: no run of {} bytes of {what} in {} file(s), {} bytes",
                i + 1,
                2 * WINDOW - 1,
                scan.files,
                scan.bytes
            );
        } else {
            outln!("   m{}: {what} found in {}", i + 1, places.join(", "));
        }
    }
    Ok(total)
}

/// `n` new records' ids with their data keys wrapped by `keys`, as enrolments make them.
fn new_keys(keys: &KeyRing, n: usize) -> Vec<(RecordId, Vec<u8>)> {
    (0..n)
        .map(|_| {
            let id = RecordId::random();
            (id, keys.wrap(id, &random_secret()))
        })
        .collect()
}

/// Commits `all` in transactions of `batch` keys each, one after another.
fn commit_in_batches(store: &ConsensusKeys, epoch: u64, all: &[(RecordId, Vec<u8>)], batch: usize) -> Result<()> {
    for chunk in all.chunks(batch) {
        let refs: Vec<(RecordId, &[u8])> = chunk.iter().map(|(id, w)| (*id, w.as_slice())).collect();
        store.commit(epoch, &refs)?;
    }
    Ok(())
}

/// The largest bbolt file any member reports.
fn largest_db(store: &ConsensusKeys) -> Option<i64> {
    store.status().iter().filter_map(|m| m.answer.as_ref().ok().map(|a| a.db_size)).max()
}

fn step(n: u32, title: &str) {
    outln!("\n== {n}. {title}");
}

fn demo(dir: &Path, records: usize) -> Result<()> {
    let local = Local { dir: dir.to_path_buf() };
    let config = local.config()?;
    let key_dir = dir.join("keys");
    let keys = KeyRing::load(&key_dir, true)?;
    let store = ConsensusKeys::open(config, &keys)?;
    let epoch = store.epoch()?;
    outln!(
        "Oubli on etcd: the wrapped data keys of records, replicated by Raft to 3 members on loopback ({}).",
        dir.display()
    );
    outln!("A record exists exactly when its key is in etcd; the ciphertexts live elsewhere and are noise without it.");

    step(1, "Enrolment: each batch of keys committed in one etcd transaction");
    let all = new_keys(&keys, records);
    let started = Instant::now();
    commit_in_batches(&store, epoch, &all, 50)?;
    outln!("   {} keys committed in {:.2?}; etcd holds {} records' keys", records, started.elapsed(), store.count()?);
    let person = &all[..3.min(all.len())];
    let control = all.get(3).context("enrol at least 4 records")?;
    let erased = store.prints_of(person.iter().map(|(_, w)| w.as_slice()));
    let kept = store.prints_of([control.1.as_slice()]);
    outln!("   The person whose erasure follows has {} records. Where their wrapped keys are on disk", person.len());
    outln!("   (each member writes its Raft log first and its bbolt file in batches, every 100 ms by default):");
    show_residue(&store, &erased, "their keys")?;

    step(2, "Erasure, phase 1: the keys deleted in one transaction (the commit point)");
    let ids: Vec<RecordId> = person.iter().map(|(id, _)| *id).collect();
    let deleted = store.delete(epoch, &ids)?;
    let gone = ids.iter().map(|id| store.get(*id)).collect::<Result<Vec<_>, _>>()?;
    outln!(
        "   {} keys deleted at revision {} (Raft index at most {}); a read now finds {} of them",
        deleted.deleted,
        deleted.revision,
        deleted.index_bound,
        gone.iter().filter(|g| g.is_some()).count()
    );
    let old = store.get_at(0, ids[0], deleted.revision - 1)?;
    outln!(
        "   But etcd keeps history: a read at revision {} still returns the first key ({} bytes). On disk:",
        deleted.revision - 1,
        old.map(|k| k.wrapped.len()).unwrap_or(0)
    );
    show_residue(&store, &erased, "their keys")?;

    step(3, "Compaction past the delete: the history is cut");
    store.compact(deleted.revision)?;
    match store.get_at(0, ids[0], deleted.revision - 1) {
        Err(e) => outln!("   the read at revision {} is now refused: {e}", deleted.revision - 1),
        Ok(k) => outln!("   the read at revision {} still answers ({} key)", deleted.revision - 1, k.map_or(0, |_| 1)),
    }
    outln!("   The bbolt file keeps freed pages until it is rewritten:");
    show_residue(&store, &erased, "their keys")?;

    step(4, "Defragmentation, one member at a time: each bbolt file rewritten");
    for i in 0..store.config().members.len() {
        let t = Instant::now();
        store.defragment(i)?;
        outln!("   m{} defragmented in {:.2?}", i + 1, t.elapsed());
    }
    outln!("   The write-ahead log still holds the entries that wrote the keys:");
    show_residue(&store, &erased, "their keys")?;

    step(5, "The purge, with member m3 paused (SIGSTOP): the receipt may claim only what was checked");
    local.signal(3, libc::SIGSTOP)?;
    let first = store.purge(&deleted, &erased);
    local.signal(3, libc::SIGCONT)?;
    let first = first?;
    report(&first);
    outln!(
        "   (write-ahead-log retirement: {} MB of filler so each member cut and snapshotted past the delete, {:.1?})",
        first.filler_bytes / 1_000_000,
        first.wal_retirement
    );

    step(6, "m3 resumed (SIGCONT): it catches up and the purge, repeated, completes");
    let second = store.purge(&deleted, &erased)?;
    report(&second);
    outln!("   On disk now:");
    let left = show_residue(&store, &erased, "their keys")?;
    outln!("   And the control record, not erased, is still there:");
    show_residue(&store, &kept, "the control key")?;
    let control_readable = store.get(control.0)?.is_some();
    outln!("   the control record's key reads back: {control_readable}");
    if left > 0 || !second.is_complete() || !control_readable {
        bail!("the purge is not complete: see above");
    }
    outln!(
        "\nDone. What this shows and what it does not: ARCHITECTURE.md (the consensus key store) and docs/scaling.md."
    );
    Ok(())
}

fn report(purge: &oubli::store::consensus::Purge) {
    for (i, m) in purge.members.iter().enumerate() {
        match &m.outcome {
            Outcome::Checked(checks) => {
                outln!("   m{}: checked", i + 1);
                for c in checks {
                    outln!("       - {c}");
                }
            }
            Outcome::Pending(why) => outln!("   m{}: PENDING: {why}", i + 1),
        }
    }
}

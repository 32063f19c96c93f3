//! The consensus key store against a real 3-member etcd on loopback (scripts/etcd-local.sh):
//! a leader killed mid-burst, a majority lost, and an erasure's purge checked on every member,
//! byte for byte, with one member paused and then back.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use oubli::{
    record::RecordId,
    store::{
        self,
        consensus::{ClusterConfig, Committed, ConsensusKeys, Outcome, StoredKey},
        crypto::{KeyRing, random_secret},
    },
};
use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/etcd-local.sh");

/// A local etcd cluster in a temp dir; dropping it stops exactly the members it started.
struct Etcd {
    tmp: TempDir,
}

impl Etcd {
    fn start(env: &[(&str, &str)]) -> Etcd {
        let tmp = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd { tmp };
        etcd.script(&["start"], env);
        etcd
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("etcd")
    }

    fn script(&self, args: &[&str], env: &[(&str, &str)]) {
        let dir = self.dir();
        let out = Command::new(SCRIPT)
            .args(args)
            .arg(&dir)
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/etcd-local.sh (make deps installs etcd)");
        assert!(out.status.success(), "etcd-local.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn member(&self, action: &str, n: usize) {
        self.script(&[action, &n.to_string()], &[]);
    }

    fn config(&self) -> ClusterConfig {
        let mut c = ClusterConfig::local(&self.dir()).expect("the local cluster's endpoints");
        c.request_timeout = Duration::from_secs(2);
        c.write_deadline = Duration::from_secs(6);
        c.defrag_timeout = Duration::from_secs(3);
        c
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").arg(self.dir()).status();
    }
}

fn keyring(dir: &Path) -> KeyRing {
    KeyRing::load(&dir.join("keys"), true).expect("key dir")
}

/// A new record's id and its data key wrapped by the key ring, as an enrolment makes them.
fn new_key(keys: &KeyRing) -> (RecordId, Vec<u8>) {
    let id = RecordId::random();
    (id, keys.wrap(id, &random_secret()))
}

/// The 1-based member number of the current leader, from the members' own reports.
fn leader(store: &ConsensusKeys) -> usize {
    let status = store.status();
    1 + status.iter().position(|s| s.answer.as_ref().is_ok_and(|a| a.is_leader)).expect("a leader")
}

/// Waits, bounded (5 s in 50 ms steps), for what a follower applies a moment after the leader.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("not within 5 s: {what}");
}

/// A cluster whose purge can retire the write-ahead-log segment that held the keys (a small
/// snapshot count and one kept segment; etcd's defaults are 100000 and 5), with a store open on it.
struct Purgeable {
    etcd: Etcd,
    _key_dir: TempDir,
    keys: KeyRing,
    store: ConsensusKeys,
    epoch: u64,
}

impl Purgeable {
    fn start() -> Purgeable {
        let etcd = Etcd::start(&[("OUBLI_ETCD_SNAPSHOT_COUNT", "100"), ("OUBLI_ETCD_MAX_WALS", "1")]);
        let key_dir = tempfile::tempdir().unwrap();
        let keys = keyring(key_dir.path());
        let mut config = etcd.config();
        config.wal_deadline = Duration::from_secs(150);
        let store = ConsensusKeys::open(config, &keys).expect("open");
        let epoch = store.epoch().unwrap();
        Purgeable { etcd, _key_dir: key_dir, keys, store, epoch }
    }
}

#[test]
fn the_etcd_leader_killed_during_an_enrolment_burst_loses_and_duplicates_no_committed_key() {
    let etcd = Etcd::start(&[]);
    let key_dir = tempfile::tempdir().unwrap();
    let keys = keyring(key_dir.path());
    let mut config = etcd.config();
    // Time for an election on a machine busy with the other tests: a commit that outlives its
    // deadline counts as failed here, and what is tested is loss and duplication, not latency.
    config.write_deadline = Duration::from_secs(30);
    let store = Arc::new(ConsensusKeys::open(config, &keys).expect("open"));
    let epoch = store.epoch().unwrap();
    let killed = leader(&store);
    let acked = Mutex::new(Vec::new());
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (store, keys, acked, failed, etcd) = (&store, &keys, &acked, &failed, &etcd);
            s.spawn(move || {
                for i in 0..40 {
                    if t == 0 && i == 10 {
                        // The other three keep committing while the leader dies.
                        etcd.member("kill-member", killed);
                    }
                    let (id, wrapped) = new_key(keys);
                    match store.commit(epoch, &[(id, &wrapped)]) {
                        Ok(Committed::Now { .. } | Committed::Already) => acked.lock().unwrap().push((id, wrapped)),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
    });
    let (acked, failed) = (acked.into_inner().unwrap(), failed.into_inner().unwrap());
    assert!(failed.is_empty(), "two of three members stayed up, yet commits failed: {failed:?}");
    assert_ne!(leader(&store), killed, "a new leader was elected");
    for (id, wrapped) in &acked {
        let got = store.get(*id).unwrap();
        assert_eq!(got, Some(StoredKey { wrapped: wrapped.clone(), version: 1 }), "record {id}");
    }
    // Nothing committed that was not acknowledged, nothing twice.
    assert_eq!(store.count().unwrap(), acked.len());
    assert_eq!(acked.len(), 160);
}

#[test]
fn with_two_of_three_members_down_writes_are_refused_with_unavailable_and_reads_still_answer() {
    let etcd = Etcd::start(&[]);
    let key_dir = tempfile::tempdir().unwrap();
    let keys = keyring(key_dir.path());
    let store = ConsensusKeys::open(etcd.config(), &keys).expect("open");
    let epoch = store.epoch().unwrap();
    let (kept, wrapped) = new_key(&keys);
    store.commit(epoch, &[(kept, &wrapped)]).unwrap();
    // Every member has applied it before two go down.
    eventually("every member applied the commit", || (0..3).all(|i| store.get_from(i, kept).unwrap().is_some()));
    let endpoints = std::fs::read_to_string(etcd.dir().join("endpoints")).unwrap();
    let (ok, out) = crate::harness::oubli(&["cluster", "status", "--etcd", endpoints.trim()]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(" leader ")).count(), 1, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("127.0.0.1:") && l.contains(" member ")).count(), 2, "{out}");
    etcd.member("kill-member", 2);
    etcd.member("kill-member", 3);
    let (ok, out) = crate::harness::oubli(&["cluster", "status", "--etcd", endpoints.trim()]);
    assert!(!ok, "a status without a majority fails");
    assert_eq!(out.matches("does not answer").count(), 2, "{out}");
    assert!(out.contains("1 of 3 members answer"), "{out}");

    let started = Instant::now();
    let (id, other) = new_key(&keys);
    let refused = store.commit(epoch, &[(id, &other)]).expect_err("no majority, no commit");
    assert!(matches!(refused, store::Error::Consensus { .. }), "{refused}");
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("majority"), "{}", status.message());
    let refused = store.delete(epoch, &[kept]).expect_err("no majority, no erasure");
    assert_eq!(tonic::Status::from(refused).code(), tonic::Code::Unavailable);
    // Bounded by the write deadline (6 s each here), not hung.
    assert!(started.elapsed() < Duration::from_secs(60));

    // The survivor still answers reads of what it holds, and the refused commit left nothing.
    assert_eq!(store.get_from(0, kept).unwrap().map(|k| k.wrapped), Some(wrapped));
    assert_eq!(store.get_from(0, id).unwrap(), None);
}

#[test]
fn an_erasure_is_purged_from_every_etcd_member_and_a_paused_member_stays_pending_until_it_returns() {
    let Purgeable { etcd, _key_dir, keys, store, epoch } = Purgeable::start();
    let records: Vec<(RecordId, Vec<u8>)> = (0..12).map(|_| new_key(&keys)).collect();
    let batch: Vec<(RecordId, &[u8])> = records.iter().map(|(id, w)| (*id, w.as_slice())).collect();
    store.commit(epoch, &batch).unwrap();
    let (erased, kept) = records.split_at(4);
    let erased_prints = store.prints_of(erased.iter().map(|(_, w)| w.as_slice()));
    let control = store.prints_of([kept[0].1.as_slice()]);
    // The scan sees the keys where they are: on every member, before the erasure.
    eventually("the keys are on every member's disk", || {
        (0..3).all(|i| !store.scan_member(i, &erased_prints).unwrap().unwrap().found.is_empty())
    });

    let ids: Vec<RecordId> = erased.iter().map(|(id, _)| *id).collect();
    let deleted = store.delete(epoch, &ids).unwrap();
    assert_eq!(deleted.deleted, 4);
    assert!(ids.iter().all(|id| store.get(*id).unwrap().is_none()));

    // One follower paused for the whole first purge.
    let paused = (1..=3).find(|&n| n != leader(&store)).unwrap();
    etcd.member("pause-member", paused);
    let first = store.purge(&deleted, &erased_prints).unwrap();
    etcd.member("resume-member", paused);
    eprintln!(
        "first purge: filler {} bytes, WAL retirement {:?}, defragmentation {:?}",
        first.filler_bytes, first.wal_retirement, first.defrag
    );
    assert!(!first.is_complete());
    let pending = first.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, store.config().members[paused - 1].endpoint, "the paused member is named");
    for (i, m) in first.members.iter().enumerate() {
        if i + 1 == paused {
            continue;
        }
        let Outcome::Checked(checks) = &m.outcome else { panic!("member {i}: {:?}", m.outcome) };
        assert_eq!(checks.len(), 4, "{checks:?}");
        assert!(store.scan_member(i, &erased_prints).unwrap().unwrap().found.is_empty());
        assert!(!store.scan_member(i, &control).unwrap().unwrap().found.is_empty(), "control on member {i}");
    }

    // Back, it catches up; the purge repeated completes it.
    let second = store.purge(&deleted, &erased_prints).unwrap();
    eprintln!(
        "second purge: filler {} bytes, WAL retirement {:?}, defragmentation {:?}",
        second.filler_bytes, second.wal_retirement, second.defrag
    );
    assert!(second.is_complete(), "{:?}", second.pending());
    for i in 0..3 {
        assert!(store.scan_member(i, &erased_prints).unwrap().unwrap().found.is_empty(), "member {i}");
        assert!(!store.scan_member(i, &control).unwrap().unwrap().found.is_empty(), "control on member {i}");
    }
    assert!(kept.iter().all(|(id, w)| store.get(*id).unwrap().is_some_and(|k| &k.wrapped == w)));
}

#[test]
fn a_key_rotation_with_a_member_down_is_purged_from_it_once_it_resynchronises() {
    let Purgeable { etcd, _key_dir, keys, store, epoch } = Purgeable::start();
    // More than one page of the re-wrap.
    let records: Vec<(RecordId, Vec<u8>)> = (0..150).map(|_| new_key(&keys)).collect();
    for batch in records.chunks(100) {
        let batch: Vec<(RecordId, &[u8])> = batch.iter().map(|(id, w)| (*id, w.as_slice())).collect();
        store.commit(epoch, &batch).unwrap();
    }
    let first = records[0].0;
    eventually("every member applied the commits", || (0..3).all(|i| store.get_from(i, first).unwrap().is_some()));
    // A follower goes down with the old wrappings on its disk, and misses the rotation.
    let down = (1..=3).find(|&n| n != leader(&store)).unwrap();
    etcd.member("kill-member", down);
    keys.add_epoch().unwrap();
    let rotation = store.rewrap_all(&keys).unwrap();
    assert_eq!(rotation.rewrapped, 150);
    assert_eq!(store.rewrap_all(&keys).unwrap().rewrapped, 0, "a second pass finds nothing to re-wrap");
    let purge = store.purge(&rotation.after, &rotation.old).unwrap();
    let pending = purge.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].0, store.config().members[down - 1].endpoint, "the member down is named");
    assert!(
        !store.scan_member(down - 1, &rotation.old).unwrap().unwrap().found.is_empty(),
        "the member down still holds the old wrappings: nothing may claim otherwise"
    );

    // Back on its old data dir, past the compaction: it catches up, and the purge repeated
    // completes on it too.
    etcd.member("start-member", down);
    let purge = store.purge(&rotation.after, &rotation.old).unwrap();
    assert!(purge.is_complete(), "the member back on its old data dir: {:?}", purge.pending());
    let new: Vec<Vec<u8>> = records.iter().map(|(id, _)| store.get(*id).unwrap().expect("kept").wrapped).collect();
    let new_prints = store.prints_of(new.iter().map(Vec::as_slice));
    for i in 0..3 {
        assert!(store.scan_member(i, &rotation.old).unwrap().unwrap().found.is_empty(), "old wrapping on member {i}");
        assert!(!store.scan_member(i, &new_prints).unwrap().unwrap().found.is_empty(), "new wrapping on member {i}");
    }
    // The member that was down serves the new wrappings only.
    for ((id, _), wrapped) in records.iter().zip(&new) {
        assert_eq!(store.get_from(down - 1, *id).unwrap().map(|k| k.wrapped).as_ref(), Some(wrapped));
    }
    // The old key-encryption key can go: every key opens under the new one alone.
    keys.destroy_old_epochs().unwrap();
    for ((id, old), new) in records.iter().zip(&new) {
        assert_ne!(old, new);
        keys.unwrap(*id, new).expect("opens under the current epoch");
    }
}

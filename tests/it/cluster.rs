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
        // Filler writes of 1 MB with a member down, on a machine busy with the other tests:
        // what is tested is the purge's outcome, not its latency.
        config.write_deadline = Duration::from_secs(30);
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

/// The server's cluster settings for shard 0 of `etcd`, with every member's data dir so phase 1
/// can check each beside it.
fn shard_config(etcd: &Etcd) -> ClusterConfig {
    let mut config = etcd.config();
    config.namespace = "/oubli/shard-0".into();
    config.wal_deadline = Duration::from_secs(150);
    config.write_deadline = Duration::from_secs(30);
    config
}

/// `oubli --json cluster status` on `etcd`, parsed (run off the async runtime).
async fn cluster_status(etcd: &Etcd) -> serde_json::Value {
    let spec = std::fs::read_to_string(etcd.dir().join("endpoints")).unwrap();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        crate::harness::oubli(&["--json", "cluster", "status", "--etcd", spec.trim()])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    let json = out.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in {out}"));
    serde_json::from_str(json).unwrap()
}

/// A reader of shard 0's keys, made off the async runtime (its client blocks).
async fn shard_reader(config: &ClusterConfig) -> Arc<ConsensusKeys> {
    let config = config.clone();
    Arc::new(tokio::task::spawn_blocking(move || ConsensusKeys::connect(config)).await.unwrap().expect("connect"))
}

/// Runs a blocking read of the key store off the async runtime.
async fn blocking<T: Send + 'static>(
    reader: &Arc<ConsensusKeys>,
    f: impl FnOnce(&ConsensusKeys) -> T + Send + 'static,
) -> T {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || f(&reader)).await.unwrap()
}

/// Files under `dir` holding `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    crate::harness::files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|f| f.display().to_string())
        .collect()
}

/// The request's status once `done` holds, polled (1 s long-polls, at most `rounds`).
async fn status_until(
    rights: &mut crate::erasure::Rights,
    id: &str,
    secret: &str,
    rounds: usize,
    what: &str,
    done: impl Fn(&oubli::grpc::pb::RequestStatus) -> bool,
) -> oubli::grpc::pb::RequestStatus {
    use oubli::grpc::pb;
    let mut last = None;
    for _ in 0..rounds {
        let status = rights
            .get_request(pb::GetRequestRequest {
                request_id: id.into(),
                request_secret: secret.into(),
                wait_seconds: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if done(&status) {
            return status;
        }
        last = Some(status);
    }
    let (step, alert) = last.as_ref().map(|s| (s.erasure_step.clone(), s.alert.clone())).unwrap_or_default();
    panic!("not within {rounds} polls: {what}; last status {last:?}, step {step:?}, alert {alert:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_etcd_commits_every_key_there_and_its_erasure_is_checked_on_every_member_even_one_paused() {
    use oubli::grpc::pb::{
        self, rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
    };

    use crate::{
        erasure::{body, receipts, submit_erasure},
        harness::{Dirs, Server},
        rights::{enrol, tokens, with_tokens},
    };
    let etcd = Etcd::start(&[("OUBLI_ETCD_SNAPSHOT_COUNT", "100"), ("OUBLI_ETCD_MAX_WALS", "1")]);
    let cluster = shard_config(&etcd);
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let for_server = cluster.clone();
    let configure = with_tokens(path, move |c| c.cluster = Some(for_server.clone()));
    let server = Server::start_with(dirs, configure.clone()).await;
    let world = enrol(&server, &t.operator).await;
    let reader = shard_reader(&cluster).await;
    assert_eq!(blocking(&reader, |r| r.count()).await.unwrap(), world.ids.len(), "one key in etcd per record");

    // The person's records, and a control record of someone else.
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let erased: Vec<RecordId> =
        world.scored(person, 0.602, 2.0).into_iter().map(|(id, _)| id.parse().unwrap()).collect();
    let control: RecordId =
        world.ids.iter().map(|id| id.parse().unwrap()).find(|id| !erased.contains(id)).expect("another record");
    let mut wanted = erased.clone();
    wanted.push(control);
    let wrapped: Vec<Vec<u8>> =
        blocking(&reader, move |r| r.get_many(&wanted)).await.unwrap().into_iter().map(Option::unwrap).collect();
    let (erased_keys, control_key) = wrapped.split_at(erased.len());
    let data = server.dirs.data.clone();
    for key in wrapped.iter() {
        assert_eq!(holding(&data, key), Vec::<String>::new(), "a wrapped key was written to the data dir");
    }

    // One member paused through the first purge: phase 1 stays pending and names it.
    let paused = blocking(&reader, |r| (1..=3).find(|&n| n != leader(r)).unwrap()).await;
    let paused_endpoint = cluster.members[paused - 1].endpoint.clone();
    etcd.member("pause-member", paused);
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    let status = status_until(&mut rights, &id, &secret, 300, "phase 1 names the paused member", |s| {
        s.alert.contains(&paused_endpoint)
    })
    .await;
    assert_eq!(status.erasure_step, "deleted", "{status:?}");
    let gone: Vec<RecordId> = erased.clone();
    let left = blocking(&reader, move |r| r.get_many(&gone)).await.unwrap();
    assert!(left.iter().all(Option::is_none), "the keys are deleted in etcd before the purge completes");

    // Meanwhile other requests are answered: the purge holds no request lock, and runs on the
    // worker's timed loop, not the loop that answers requests.
    let other = (person + 1..world.population.probe_labels.len())
        .map(|p| world.clear_cut(p))
        .find(|&p| world.population.probe_labels[p] != world.population.probe_labels[person])
        .expect("another clear-cut person");
    let (access, access_secret) = crate::rights::submit(&mut rights, world.population.probe(other)).await;
    let answered = crate::rights::wait(&mut rights, &access, &access_secret).await;
    assert_eq!(answered.state, "completed", "{answered:?}");
    let still = status_until(&mut rights, &id, &secret, 1, "the erasure's status", |_| true).await;
    assert_eq!(still.erasure_step, "deleted", "phase 1 cannot complete while a member is paused");
    // `oubli cluster status` shows the shard's phase 1 waiting for the paused member only.
    let shown = cluster_status(&etcd).await;
    let pending = &shown["shards"][0]["pending_acks"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(pending[0]["members"], 3, "{shown}");
    let waiting: Vec<&str> =
        pending[0]["pending"].as_array().unwrap().iter().filter_map(|p| p["endpoint"].as_str()).collect();
    assert_eq!(waiting, [paused_endpoint.as_str()], "{shown}");
    assert!(shown["members"].as_array().unwrap().iter().any(|m| m["lag"].is_u64()), "{shown}");

    // Back, the retried phase 1 completes on every member.
    etcd.member("resume-member", paused);
    let status =
        status_until(&mut rights, &id, &secret, 400, "phase 1 completes", |s| s.erasure_step == "keys_purged").await;
    assert!(status.alert.is_empty(), "{status:?}");
    let shown = cluster_status(&etcd).await;
    assert_eq!(shown["shards"][0]["pending_acks"].as_array().map(Vec::len), Some(0), "acknowledged: {shown}");
    let phase1 = body(&receipts(&mut rights, &id, &secret).await.phase1_receipt_json);
    for member in &cluster.members {
        let checked: Vec<&String> =
            phase1.verified.iter().filter(|v| v.starts_with(&format!("etcd member {}:", member.endpoint))).collect();
        assert_eq!(checked.len(), 4, "four checks of {}: {:?}", member.endpoint, phase1.verified);
    }
    for (n, member) in cluster.members.iter().enumerate() {
        let dir = member.data_dir.as_ref().unwrap();
        for key in erased_keys {
            assert_eq!(holding(dir, key), Vec::<String>::new(), "member {} still holds an erased key", n + 1);
        }
        assert!(!holding(dir, &control_key[0]).is_empty(), "member {} holds the control key", n + 1);
    }
    let mut police = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let search = pb::SearchRequest {
        probe: Some(pb::Embedding { values: probe.clone() }),
        k: 10,
        min_score: Some(0.602),
        exact: true,
    };
    assert!(police.search(search.clone()).await.unwrap().into_inner().hits.is_empty());

    // A restart loads what etcd holds; the data dir refuses to open without its cluster.
    let server = server.restart().await;
    let mut police = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let got = police.get(pb::GetRequest { record_id: control.to_string(), include_embedding: false }).await;
    assert!(got.is_ok(), "the control record is served after a restart: {got:?}");
    assert!(police.search(search).await.unwrap().into_inner().hits.is_empty());
    let left = world.ids.len() - erased.len();
    assert_eq!(blocking(&reader, |r| r.count()).await.unwrap(), left);
    let dirs = server.stop().await;
    let refused = store::Store::open(&dirs.data, &dirs.keys, None, None).err().expect("refused");
    assert!(matches!(refused, store::Error::KeyHomeMismatch { .. }), "{refused}");

    // Another (empty) cluster under the same namespace is refused, not taken for one where every
    // record lost its key: nothing is swept.
    let other = Etcd::start(&[]);
    let mut elsewhere = other.config();
    elsewhere.namespace = cluster.namespace.clone();
    let (data, keys) = (dirs.data.clone(), dirs.keys.clone());
    let opened =
        tokio::task::spawn_blocking(move || store::Store::open_on(&data, &keys, None, None, false, Some(elsewhere)))
            .await
            .unwrap();
    let refused = opened.err().expect("another cluster is refused");
    assert!(matches!(refused, store::Error::WrongCluster { .. }), "{refused}");
    drop(other);
    let server = Server::start_with(dirs, configure).await;
    let mut auditor = TemplatesServiceClient::new(server.channel_as(Some(&t.auditor)).await);
    assert_eq!(crate::harness::record_count(&mut auditor).await as usize, left, "nothing was swept");
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_from_a_crash_before_the_key_commit_is_never_served_and_without_a_majority_writes_are_refused() {
    use oubli::grpc::pb::{self, templates_service_client::TemplatesServiceClient};

    use crate::harness::{Dirs, Process, record_count, request};
    let etcd = Etcd::start(&[]);
    let cluster = shard_config(&etcd);
    let spec = std::fs::read_to_string(etcd.dir().join("endpoints")).unwrap();
    let member_dirs: Vec<String> = (1..=3).map(|n| etcd.dir().join(format!("m{n}")).display().to_string()).collect();
    let member_dirs = member_dirs.join(",");
    let env = [("OUBLI_CLUSTER", spec.trim()), ("OUBLI_ETCD_DATA_DIRS", member_dirs.as_str())];
    let dirs = Dirs::new();
    let values: Vec<f32> = (0..512).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
    let mut enrol = request(values.clone(), "https://photos.example/orphan.jpg");
    enrol.idempotency_key = "orphan-1".into();

    // Killed right after the ciphertext's synced write, before the key's commit.
    let server = Process::spawn_with(&dirs, Some("enrol.after-write"), &env);
    let mut client = TemplatesServiceClient::new(server.channel(&dirs).await);
    assert!(client.enroll(enrol.clone()).await.is_err(), "the enrolment is never acknowledged");
    drop(server);
    let reader = shard_reader(&cluster).await;
    assert_eq!(blocking(&reader, |r| r.count()).await.unwrap(), 0, "no key was committed");
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dirs.data).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &dirs.data, &names, false).unwrap();
        let records = db.cf_handle("records").unwrap();
        assert_eq!(
            db.iterator_cf(records, rocksdb::IteratorMode::Start).count(),
            1,
            "the orphan's ciphertext is on disk"
        );
    }

    // Restarted: the orphan is swept before anything is served, and never found.
    let server = Process::spawn_with(&dirs, None, &env);
    let mut client = TemplatesServiceClient::new(server.channel(&dirs).await);
    assert_eq!(record_count(&mut client).await, 0);
    let search =
        pb::SearchRequest { probe: Some(pb::Embedding { values: values.clone() }), k: 5, min_score: None, exact: true };
    assert!(client.search(search.clone()).await.unwrap().into_inner().hits.is_empty());
    drop(server);
    {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dirs.data).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), &dirs.data, &names, false).unwrap();
        let records = db.cf_handle("records").unwrap();
        assert_eq!(db.iterator_cf(records, rocksdb::IteratorMode::Start).count(), 0, "the orphan's rows are deleted");
    }

    // The same call again (same idempotency key) enrols it for real: one key, one record.
    let server = Process::spawn_with(&dirs, None, &env);
    let mut client = TemplatesServiceClient::new(server.channel(&dirs).await);
    let id = client.enroll(enrol).await.unwrap().into_inner().record_id;
    assert_eq!(record_count(&mut client).await, 1);
    let hits = client.search(search.clone()).await.unwrap().into_inner().hits;
    assert_eq!(hits.iter().map(|h| h.record_id.clone()).collect::<Vec<_>>(), vec![id.clone()]);
    assert_eq!(blocking(&reader, |r| r.count()).await.unwrap(), 1);

    // Two of three members down: an enrolment is refused with UNAVAILABLE and a message (after
    // the write deadline) and stores nothing; searches are still answered.
    etcd.member("kill-member", 2);
    etcd.member("kill-member", 3);
    let other = request(values.iter().map(|v| -v).collect(), "https://photos.example/refused.jpg");
    let refused = client.enroll(other).await.expect_err("no majority, no commit");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("etcd") && refused.message().contains("majority"), "{}", refused.message());
    let hits = client.search(search.clone()).await.expect("searches are answered").into_inner().hits;
    assert_eq!(hits.iter().map(|h| h.record_id.clone()).collect::<Vec<_>>(), vec![id.clone()]);
    assert_eq!(record_count(&mut client).await, 1, "the refused enrolment stored nothing");

    // And an erasure request is refused at submission (after the write deadline, as an
    // enrolment), rather than accepted to wait for a delete it cannot commit; nothing is stored.
    let mut rights = pb::rights_service_client::RightsServiceClient::new(server.channel(&dirs).await);
    let erasure = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: values.clone() }],
        contact: "jeanne@example.org".into(),
        jurisdiction_claim: "FR".into(),
        ..Default::default()
    };
    let refused = rights.submit_erasure_request(erasure).await.expect_err("no majority, no erasure accepted");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let message = refused.message();
    assert!(
        message.contains("etcd") && message.contains("majority") && message.contains("nothing was stored"),
        "{message}"
    );
    let listed = rights.list_requests(pb::ListRequestsRequest::default()).await.unwrap().into_inner().requests;
    assert!(listed.is_empty(), "the refused erasure stored no request: {listed:?}");
    let hits = client.search(search).await.expect("searches are still answered").into_inner().hits;
    assert_eq!(hits.len(), 1);
}

/// Two shards on one etcd behind a gateway, and one node holding the same records: every
/// search answers the same records with the same scores, bit for bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_through_a_gateway_over_two_shards_on_etcd_answer_what_one_node_answers() {
    use oubli::grpc::{
        Bearer,
        gateway::{self, EmbeddedGateway},
        pb::{self, rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient},
    };

    use crate::{
        harness::{Dirs, Server, stream_of},
        rights::{population, tokens, with_tokens},
    };
    let etcd = Etcd::start(&[]);
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let node = Server::start_with(dirs, with_tokens(path.clone(), |_| {})).await;
    let mut shards = Vec::new();
    for s in 0..2 {
        let mut config = shard_config(&etcd);
        config.namespace = format!("/oubli/shard-{s}");
        let configure = with_tokens(path.clone(), move |c| {
            c.cluster = Some(config.clone());
            c.placement = Some(gateway::Placement::new(s, 2).unwrap());
        });
        shards.push(Server::start_with(Dirs::new(), configure).await);
    }
    let gateway = EmbeddedGateway::start(shards.iter().map(|s| format!("http://{}", s.addr)).collect())
        .await
        .expect("the gateway starts");
    let at = gateway.addr;
    let to_gateway = move |token: Option<String>| async move {
        let channel = tonic::transport::Channel::from_shared(format!("http://{at}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gateway");
        tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(token.as_deref()).unwrap())
    };
    let mut through = TemplatesServiceClient::new(to_gateway(Some(t.operator.clone())).await);
    let mut alone = TemplatesServiceClient::new(node.channel_as(Some(&t.operator)).await);

    let population = population();
    let (requests, _) = crate::harness::requests(&population);
    alone.enroll_stream(stream_of(requests.clone())).await.unwrap();
    // A few one at a time, the rest in one stream the gateway splits by placement.
    let (one_by_one, streamed) = requests.split_at(20);
    for request in one_by_one.iter().cloned() {
        through.enroll(request).await.expect("enrolled through the gateway");
    }
    let ids = through.enroll_stream(stream_of(streamed.to_vec())).await.expect("streamed").into_inner();
    assert_eq!((ids.record_ids.len(), ids.created), (streamed.len(), streamed.len() as u64));
    // The ids come back in the call's order: each is the record of its own item.
    for (i, id) in ids.record_ids.iter().enumerate().step_by(37) {
        let got = through.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await.unwrap();
        let uri = got.into_inner().record.unwrap().provenance.unwrap().source_uri;
        assert_eq!(uri, streamed[i].provenance.as_ref().unwrap().source_uri, "item {i}");
    }
    let mut held = Vec::new();
    for shard in &shards {
        let mut admin = TemplatesServiceClient::new(shard.channel_as(Some(&t.admin)).await);
        held.push(admin.stats(pb::StatsRequest {}).await.unwrap().into_inner().record_count);
    }
    assert!(held.iter().all(|&n| n > 0), "both shards hold records: {held:?}");
    let mut admin = TemplatesServiceClient::new(to_gateway(Some(t.admin.clone())).await);
    let total = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner().record_count;
    assert_eq!(total, requests.len() as u64, "the gateway adds the shards' counts: {held:?}");
    let reader = shard_reader(&shard_config(&etcd)).await;
    assert_eq!(blocking(&reader, |r| r.count()).await.unwrap() as u64, held[0], "shard 0's keys are in etcd");

    let answer = |hits: &[pb::SearchHit]| -> Vec<(String, u32)> {
        hits.iter().map(|h| (h.provenance.as_ref().unwrap().source_uri.clone(), h.score.to_bits())).collect()
    };
    for p in 0..population.probe_count() {
        let search = pb::SearchRequest {
            probe: Some(pb::Embedding { values: population.probe(p).to_vec() }),
            k: 10,
            min_score: None,
            exact: true,
        };
        let one = alone.search(search.clone()).await.unwrap().into_inner();
        let both = through.search(search).await.unwrap().into_inner();
        assert_eq!(answer(&both.hits), answer(&one.hits), "probe {p}");
        assert_eq!(both.candidates, one.candidates, "every record compared once");
    }
    // A record is read back through the gateway from the shard that holds it.
    let search = pb::SearchRequest {
        probe: Some(pb::Embedding { values: population.probe(0).to_vec() }),
        k: 1,
        min_score: None,
        exact: true,
    };
    let top = through.search(search.clone()).await.unwrap().into_inner().hits.remove(0);
    let got = through
        .get(pb::GetRequest { record_id: top.record_id.clone(), include_embedding: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.record.unwrap().provenance.unwrap().source_uri, top.provenance.unwrap().source_uri);

    // The shards judge every caller: an anonymous search through the gateway is refused.
    let mut anonymous = TemplatesServiceClient::new(to_gateway(None).await);
    let refused = anonymous.search(search).await.expect_err("no token, no answer about a face");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // Nor is a stream held at the gateway for a caller without a token.
    let refused = anonymous.enroll_stream(stream_of(requests[..2].to_vec())).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    // Rights requests are not served by a gateway, and it says where they go.
    let mut rights = RightsServiceClient::new(to_gateway(None).await);
    let refused = rights.list_requests(pb::ListRequestsRequest::default()).await.expect_err("not served here");
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert!(refused.message().contains("gateway") && refused.message().contains("shard"), "{}", refused.message());
    let (extra, _) = crate::harness::seeded(8, 99);
    let extra_source_on = |shard: usize| {
        let found = extra.iter().find(|r| gateway::placement(&r.provenance.as_ref().unwrap().source_uri, 2) == shard);
        found.expect("one of 8 sources is placed on each shard").clone()
    };
    // A node refuses a source placed on another shard, and so does a gateway given its shards
    // out of order: a source's suppression entry never ends up split across shards.
    let misplaced = extra_source_on(1);
    let mut direct = TemplatesServiceClient::new(shards[0].channel_as(Some(&t.operator)).await);
    let refused = direct.enroll(misplaced.clone()).await.expect_err("shard 0 does not hold this source");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("belongs on shard 1 of 2"), "{}", refused.message());
    let reversed = EmbeddedGateway::start(shards.iter().rev().map(|s| format!("http://{}", s.addr)).collect())
        .await
        .expect("a second gateway starts");
    let at_reversed = reversed.addr;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{at_reversed}")).unwrap().connect().await.unwrap();
    let mut wrong_order = TemplatesServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer::new(Some(&t.operator)).unwrap(),
    ));
    let refused = wrong_order.enroll(misplaced).await.expect_err("the shards are out of order");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("in shard order"), "{}", refused.message());
    drop(wrong_order);
    reversed.stop().await.unwrap();
    // A gateway over one of the two shards would pass half the records off as all: refused.
    let half = EmbeddedGateway::start(vec![format!("http://{}", shards[0].addr)]).await.expect("a third gateway");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", half.addr)).unwrap().connect().await.unwrap();
    let mut partial = TemplatesServiceClient::new(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer::new(Some(&t.operator)).unwrap(),
    ));
    let probe = pb::Embedding { values: population.probe(0).to_vec() };
    let search = pb::SearchRequest { probe: Some(probe), k: 1, min_score: None, exact: true };
    let refused = partial.search(search).await.expect_err("one gateway shard of two");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("does not say it is shard 0 of 1"), "{}", refused.message());
    drop(partial);
    half.stop().await.unwrap();
    // A part refused by its shard: the call's own item is named, and so are the parts stored.

    let mut bad = extra.clone();
    // An item of shard 1's part whose place in the part differs from its place in the call, so
    // the message shows which one is given.
    let on_one: Vec<usize> = (0..bad.len())
        .filter(|&i| gateway::placement(&bad[i].provenance.as_ref().unwrap().source_uri, 2) == 1)
        .collect();
    let (wrong, in_part) = on_one
        .iter()
        .enumerate()
        .map(|(in_part, &i)| (i, in_part))
        .find(|(i, in_part)| i != in_part)
        .expect("one of 8 sources on shard 1 comes after one on shard 0");
    bad[wrong].embedding = Some(pb::Embedding { values: vec![0.5; 3] });
    let refused = through.enroll_stream(stream_of(bad)).await.expect_err("a template of the wrong size");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let message = refused.message();
    assert!(message.contains(&format!("item {wrong}:")), "the call's own item, not {in_part}: {message}");
    assert!(message.contains(&shards[1].addr.to_string()) && message.contains("refused its part"), "{message}");
    let on_zero =
        extra.iter().filter(|r| gateway::placement(&r.provenance.as_ref().unwrap().source_uri, 2) == 0).count();
    if on_zero > 0 {
        assert!(message.contains(&format!("{} ({on_zero} items)", shards[0].addr)), "{message}");
    }
    gateway.stop().await.unwrap();
}

/// A backup of a shard restored after an erasure: its records stay unreadable (their keys are
/// gone from etcd), the erasure is re-applied (logged, the source suppressed again), and its
/// Art. 19 notices go out again to the recipients the erasure journal names, though the copy's
/// recipients rows are sealed under the deleted keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_shard_backup_reapplies_its_erasure_and_notifies_the_journaled_recipients() {
    use oubli::grpc::pb::{
        self, admin_service_client::AdminServiceClient, notifications_service_client::NotificationsServiceClient,
        rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
    };

    use crate::{
        erasure::submit_erasure,
        harness::{Dirs, Server, copy_dir},
        rights::{enrol, tokens, wait, with_tokens},
    };
    let etcd = Etcd::start(&[("OUBLI_ETCD_SNAPSHOT_COUNT", "100"), ("OUBLI_ETCD_MAX_WALS", "1")]);
    let cluster = shard_config(&etcd);
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let for_server = cluster.clone();
    let configure = with_tokens(path.clone(), move |c| c.cluster = Some(for_server.clone()));
    let server = Server::start_with(dirs, configure.clone()).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let erased: Vec<String> = world.scored(person, 0.602, 2.0).into_iter().map(|(id, _)| id).collect();
    // The operator searches by the person's face: the hits' recipients rows name it.
    let mut police = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let search =
        pb::SearchRequest { probe: Some(pb::Embedding { values: probe.clone() }), k: 10, min_score: None, exact: true };
    let hits = police.search(search).await.unwrap().into_inner().hits;
    assert!(erased.iter().all(|id| hits.iter().any(|h| &h.record_id == id)), "every erased record was disclosed");
    drop(police);

    // A backup of the shard's data dir, then the erasure, both phases.
    let dirs = server.stop().await;
    let backup = dirs.keys.parent().expect("a parent").join("backup");
    copy_dir(&dirs.data, &backup);
    let server = Server::start_with(dirs, configure.clone()).await;
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    let mut done = None;
    for _ in 0..120 {
        let status = wait(&mut rights, &id, &secret).await;
        if status.state == "completed" {
            done = Some(status);
            break;
        }
        if status.erasure_step == "keys_purged" {
            admin.run_purge(pb::RunPurgeRequest {}).await.expect("purge");
        }
    }
    assert!(done.is_some(), "the erasure completes");
    let mut notices = NotificationsServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let first = notices.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    assert_eq!(first.len(), erased.len(), "one notice per erased record");
    drop((rights, admin, notices));

    // The backup restored in its place, on purpose.
    let dirs = server.stop().await;
    std::fs::remove_dir_all(&dirs.data).expect("remove");
    copy_dir(&backup, &dirs.data);
    let restore = with_tokens(path, {
        let cluster = cluster.clone();
        move |c| {
            c.cluster = Some(cluster.clone());
            c.restore_from_backup = true;
        }
    });
    let server = Server::start_with(dirs, restore).await;
    let mut police = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for id in &erased {
        let got = police.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        assert_eq!(got.expect_err("still erased").code(), tonic::Code::NotFound);
    }
    let (requests, _) = crate::harness::requests(&world.population);
    let index = world.ids.iter().position(|i| *i == erased[0]).expect("an erased record");
    let again = police.enroll(requests[index].clone()).await.expect_err("its source is suppressed again");
    assert!(again.message().contains("erased at the request of the person"), "{again:?}");
    let mut notices = NotificationsServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let again = notices.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    let mut named: Vec<String> = again
        .iter()
        .map(|n| {
            let body: serde_json::Value = serde_json::from_str(&n.body_json).unwrap();
            assert!(body["reason"].as_str().unwrap().contains("restored a backup"), "{body}");
            body["record_id"].as_str().unwrap().to_string()
        })
        .collect();
    named.sort();
    let mut want = erased.clone();
    want.sort();
    assert_eq!(named, want, "each erased record's recipient is notified again, from the journal");
}

/// The request's status once `done` holds, polled every half second for at most `within` (a
/// failed purge is retried at the worker's pace, at least 10 s apart, and a request waiting
/// for it answers a long-poll at once).
async fn status_within(
    rights: &mut crate::erasure::Rights,
    id: &str,
    secret: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&oubli::grpc::pb::RequestStatus) -> bool,
) -> oubli::grpc::pb::RequestStatus {
    let deadline = Instant::now() + within;
    loop {
        let status = status_until(rights, id, secret, 1, what, |_| true).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {what}; step {:?}, alert {:?}",
            status.erasure_step,
            status.alert
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A read replica's process for shard 0 of `etcd`, following `primary`, with its own data dir
/// and a key dir holding the primary's key-encryption keys (`oubli cluster replica-keys`).
fn spawn_replica(
    etcd: &Etcd,
    dirs: &crate::harness::Dirs,
    primary: &str,
    tokens: &Path,
    token_file: &Path,
) -> crate::harness::Process {
    let spec = std::fs::read_to_string(etcd.dir().join("endpoints")).unwrap();
    let primary = format!("http://{primary}");
    let env = [
        ("OUBLI_CLUSTER", spec.trim()),
        ("OUBLI_REPLICA", "1"),
        ("OUBLI_PRIMARY", primary.as_str()),
        ("OUBLI_REPLICA_TOKEN_FILE", token_file.to_str().unwrap()),
        ("OUBLI_TOKENS", tokens.to_str().unwrap()),
    ];
    crate::harness::Process::spawn_with(dirs, None, &env)
}

/// The record count `client`'s node reports once it is `want`, or the last one seen after 30 s
/// (a replica catches up in rounds).
async fn count_reaches(
    client: &mut oubli::grpc::pb::templates_service_client::TemplatesServiceClient<oubli::grpc::AuthChannel>,
    want: usize,
) -> usize {
    let mut counted = 0;
    for _ in 0..120 {
        counted = crate::harness::record_count(client).await as usize;
        if counted == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    counted
}

/// Sends `signal` (STOP, CONT) to a test's own child process.
fn signal(process: &crate::harness::Process, signal: &str) {
    let pid = process.child.id().to_string();
    let ok = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// The sealed rows of `ids` in a (running) store's data dir, read through a read-only open.
fn sealed_in(data: &Path, ids: &[RecordId]) -> Vec<Vec<u8>> {
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), data).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&rocksdb::Options::default(), data, &names, false).unwrap();
    let records = db.cf_handle("records").unwrap();
    ids.iter().map(|id| db.get_cf(records, id.as_bytes()).unwrap().expect("the replica holds the record")).collect()
}

/// Issue 22's tests 3 and 5: a read replica copies its shard's ciphertexts, answers searches as
/// its primary does (recording them in the primary's recipients log), holds an erasure's
/// phase 2 pending by name while it is paused, completes it once back, and, restarted after
/// being down through a whole erasure (its purge compacted etcd), resynchronises in full and
/// serves nothing erased. The byte scans of its data dir find no erased ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_follows_its_shard_holds_phase_2_pending_while_paused_and_resyncs_after_being_down() {
    use oubli::grpc::pb::{
        self, notifications_service_client::NotificationsServiceClient, rights_service_client::RightsServiceClient,
        templates_service_client::TemplatesServiceClient,
    };

    use crate::{
        erasure::{body, receipts, submit_erasure},
        harness::{Dirs, Server, record_count, request},
        rights::{enrol, tokens, with_tokens},
    };
    let etcd = Etcd::start(&[("OUBLI_ETCD_SNAPSHOT_COUNT", "100"), ("OUBLI_ETCD_MAX_WALS", "1")]);
    let cluster = shard_config(&etcd);
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let replica_token =
        oubli::rights::auth::Tokens::add(&path, "replica-1", &[oubli::rights::auth::Role::Replica]).unwrap();
    let token_file = path.with_file_name("replica.token");
    std::fs::write(&token_file, &replica_token).unwrap();
    let for_server = cluster.clone();
    let configure = with_tokens(path.clone(), move |c| {
        c.cluster = Some(for_server.clone());
        c.rights.purge_window = Duration::ZERO;
    });
    let server = Server::start_with(dirs, configure).await;
    let world = enrol(&server, &t.operator).await;

    let replica_dirs = Dirs::new();
    oubli::store::crypto::copy_key_encryption_keys(&server.dirs.keys, &replica_dirs.keys).unwrap();
    let replica = spawn_replica(&etcd, &replica_dirs, &server.addr.to_string(), &path, &token_file);
    let channel = |addr: String, token: String| async move {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        TemplatesServiceClient::new(tonic::service::interceptor::InterceptedService::new(
            channel,
            oubli::grpc::Bearer::new(Some(&token)).unwrap(),
        ))
    };
    let mut copy = channel(replica.addr.clone(), t.operator.clone()).await;
    let mut copy_stats = channel(replica.addr.clone(), t.auditor.clone()).await;
    let mut police = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    assert_eq!(
        count_reaches(&mut copy_stats, world.ids.len()).await,
        world.ids.len(),
        "the replica copied every record"
    );

    // The same answers as the primary, bit for bit; a write is refused and sent to the primary.
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let search = |probe: &[f32]| pb::SearchRequest {
        probe: Some(pb::Embedding { values: probe.to_vec() }),
        k: 10,
        min_score: Some(0.602),
        exact: true,
    };
    let hits = |r: pb::SearchResponse| r.hits.into_iter().map(|h| (h.record_id, h.score.to_bits())).collect::<Vec<_>>();
    let from_copy = hits(copy.search(search(&probe)).await.unwrap().into_inner());
    assert!(!from_copy.is_empty());
    assert_eq!(from_copy, hits(police.search(search(&probe)).await.unwrap().into_inner()));
    let refused = copy.enroll(request(probe.clone(), "https://photos.example/x.jpg")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&server.addr.to_string()), "{}", refused.message());

    // Paused through an erasure: phase 1 completes on etcd, phase 2 waits for the replica by
    // name; back, it removes the copies, checks them and phase 2 completes.
    let erased: Vec<RecordId> = from_copy.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let control: RecordId =
        world.ids.iter().map(|id| id.parse().unwrap()).find(|id| !erased.contains(id)).expect("another record");
    let mut wanted = erased.clone();
    wanted.push(control);
    let sealed = sealed_in(&replica_dirs.data, &wanted);
    let (erased_sealed, control_sealed) = sealed.split_at(erased.len());
    signal(&replica, "STOP");
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    let name = format!("replica 1 ({})", replica.addr);
    let status =
        status_within(&mut rights, &id, &secret, Duration::from_secs(180), "phase 2 names the paused replica", |s| {
            s.erasure_step == "keys_purged" && s.alert.contains(&name)
        })
        .await;
    assert_eq!(status.state, "erasing", "{status:?}");
    signal(&replica, "CONT");
    let status = status_within(&mut rights, &id, &secret, Duration::from_secs(60), "phase 2 completes", |s| {
        s.erasure_step == "templates_purged"
    })
    .await;
    assert!(status.alert.is_empty(), "{status:?}");
    let phase2 = body(&receipts(&mut rights, &id, &secret).await.phase2_receipt_json);
    let checked: Vec<&String> = phase2.verified.iter().filter(|v| v.starts_with(&name)).collect();
    assert!(checked.iter().any(|v| v.contains("holds no record whose key is gone")), "{:?}", phase2.verified);
    assert!(checked.iter().any(|v| v.contains("byte scan") || v.contains("found none")), "{:?}", phase2.verified);
    for value in erased_sealed {
        assert_eq!(holding(&replica_dirs.data, value), Vec::<String>::new(), "the replica kept an erased ciphertext");
    }
    assert!(!holding(&replica_dirs.data, &control_sealed[0]).is_empty(), "the replica holds the control record");
    assert!(copy.search(search(&probe)).await.unwrap().into_inner().hits.is_empty());

    // Down through a whole erasure (phase 1 compacts etcd past the delete) and new enrolments:
    // restarted, it resynchronises in full and serves nothing erased.
    let other = (person + 1..world.population.probe_labels.len())
        .map(|p| world.clear_cut(p))
        .find(|&p| world.population.probe_labels[p] != world.population.probe_labels[person])
        .expect("another clear-cut person");
    let other_probe = world.population.probe(other).to_vec();
    // Searched for through the replica only, by a second operator: the primary's recipients
    // log must name it, so the erasure's Art. 19 notices reach it.
    let mut copy_b = channel(replica.addr.clone(), t.operator_b.clone()).await;
    let other_hits = hits(copy_b.search(search(&other_probe)).await.unwrap().into_inner());
    assert!(!other_hits.is_empty());
    let other_ids: Vec<RecordId> = other_hits.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let other_sealed = sealed_in(&replica_dirs.data, &other_ids);
    drop(replica);
    let (id, secret) = submit_erasure(&mut rights, &other_probe).await;
    let status = status_within(
        &mut rights,
        &id,
        &secret,
        Duration::from_secs(180),
        "phase 2 waits for the stopped replica",
        |s| s.erasure_step == "keys_purged" && s.alert.contains("replica 1 ("),
    )
    .await;
    assert_eq!(status.state, "erasing", "{status:?}");
    let (_, more) = crate::harness::seeded(5, 22);
    for (i, values) in more.into_iter().enumerate() {
        police.enroll(request(values, &format!("https://photos.example/later-{i}.jpg"))).await.unwrap();
    }
    let mut primary_stats = TemplatesServiceClient::new(server.channel_as(Some(&t.auditor)).await);
    let held = record_count(&mut primary_stats).await as usize;
    let replica = spawn_replica(&etcd, &replica_dirs, &server.addr.to_string(), &path, &token_file);
    let mut copy = channel(replica.addr.clone(), t.operator.clone()).await;
    let mut copy_stats = channel(replica.addr.clone(), t.auditor.clone()).await;
    assert!(copy.search(search(&other_probe)).await.unwrap().into_inner().hits.is_empty(), "nothing erased is served");
    let status = status_within(&mut rights, &id, &secret, Duration::from_secs(60), "phase 2 completes", |s| {
        s.erasure_step == "templates_purged"
    })
    .await;
    assert!(status.alert.is_empty(), "{status:?}");
    let mut notices = NotificationsServiceClient::new(server.channel_as(Some(&t.operator_b)).await);
    let told: std::collections::BTreeSet<RecordId> = notices
        .list_notifications(pb::ListNotificationsRequest {})
        .await
        .unwrap()
        .into_inner()
        .notifications
        .iter()
        .map(|n| {
            let body: serde_json::Value = serde_json::from_str(&n.body_json).unwrap();
            body["record_id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(told, other_ids.iter().copied().collect(), "the replica's disclosures are in the primary's log");
    assert_eq!(count_reaches(&mut copy_stats, held).await, held, "resynchronised in full");
    for value in &other_sealed {
        assert_eq!(holding(&replica_dirs.data, value), Vec::<String>::new(), "the replica kept an erased ciphertext");
    }
    let probe = police.get(pb::GetRequest { record_id: control.to_string(), include_embedding: true }).await;
    let control_values = probe.unwrap().into_inner().record.unwrap().embedding.unwrap().values;
    assert_eq!(
        hits(copy.search(search(&control_values)).await.unwrap().into_inner()),
        hits(police.search(search(&control_values)).await.unwrap().into_inner())
    );
}

//! The tlog-witness protocol end to end: two witness servers in-process on 127.0.0.1:0, each
//! with its own key and state dir, and a log (a `LogWriter` with a test key) pushing its
//! checkpoints to both through `http::client::add_checkpoint`. A receipt whose checkpoint
//! carries both cosignatures passes a quorum of two, in the library, in the real `oubli verify`
//! and in the Python checker; a forked log and a rollback are refused by the witnesses (the
//! spec's status, the state on disk unchanged) and their receipts by `oubli verify --quorum 2`.
use std::{path::PathBuf, time::Duration};

use oubli::{
    http::{
        client::{AddOutcome, ClientError, add_checkpoint},
        witness::{WitnessConfig, create_key_file, serve},
    },
    record::RecordId,
    transparency::{
        cosign::{CosignerKey, WitnessKey, add_signatures, count_cosigners},
        event::{Logged, commitment},
        log::LogWriter,
        merkle::Hash,
        note::{Checkpoint, SignerKey, VerifierKey},
        receipt::{self, Body, Quorum, Receipt},
        statements::for_event,
        witness::origin_hash,
    },
};

use crate::harness::oubli;

const ORIGIN: &str = "test.example/log";
const TIMEOUT: Duration = Duration::from_secs(20);

use oubli::transparency::log::Discard as Sink;

fn signer(seed: u8) -> SignerKey {
    SignerKey::from_seed(ORIGIN, &[seed; 32]).expect("log key")
}

/// A log whose leaves are enrolments tagged `tag` (another tag: another history).
struct Log {
    writer: LogWriter,
    seed: u8,
    tag: u8,
    entries: Vec<Logged>,
}

impl Log {
    fn new(seed: u8, tag: u8) -> Log {
        let (writer, _) = LogWriter::recover::<()>(ORIGIN.into(), signer(seed), Vec::new(), |_, _| Ok(None), None)
            .expect("an empty log");
        Log { writer, seed, tag, entries: Vec::new() }
    }

    fn grow_to(&mut self, size: u64) {
        let time = jiff::Timestamp::from_second(1_700_000_000).expect("time");
        let new: Vec<Logged> = (self.writer.size()..size)
            .map(|i| Logged::enrolment(time, commitment(&[self.tag; 16], RecordId::from_bytes([i as u8; 16]))))
            .collect();
        let staged = self.writer.stage(&new, &mut Sink);
        self.writer.commit(staged);
        self.entries.extend(new);
    }

    fn key(&self) -> VerifierKey {
        signer(self.seed).verifier()
    }

    /// The log's signed checkpoint of its first `size` leaves (the same note the writer signs).
    fn note_at(&self, size: u64) -> String {
        let root = self.writer.root(size).expect("size in range");
        signer(self.seed).sign(&Checkpoint { origin: ORIGIN.into(), size, root }.text()).expect("sign")
    }

    fn proof(&self, from: u64, to: u64) -> Vec<Hash> {
        if from == 0 || from >= to {
            Vec::new()
        } else {
            self.writer.consistency_proof(from, Some(to)).expect("proof").1
        }
    }

    /// The receipt of the last leaf of the tree of `size` leaves, its checkpoint replaced by
    /// `checkpoint` (the same text, with cosignatures) and signed again: what a log that keeps
    /// its witnesses' cosignatures hands out.
    fn receipt(&self, size: u64, checkpoint: Option<&str>) -> String {
        let index = size - 1;
        let logged = &self.entries[index as usize];
        let statements = for_event(&logged.entry.event);
        let plain =
            self.writer.receipt(index, &logged.entry.encode(), &logged.entry, statements, None).expect("receipt");
        let Some(checkpoint) = checkpoint else { return plain.to_json() };
        let mut body: Body = serde_json::from_str(&plain.body).expect("body");
        body.checkpoint = checkpoint.to_string();
        Receipt::sign(&body, &signer(self.seed)).to_json()
    }
}

/// A witness server on 127.0.0.1:0 with its own key and state dir.
struct Witness {
    url: String,
    key: WitnessKey,
    state: PathBuf,
    dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Witness {
    async fn start(n: u8, logs: Vec<VerifierKey>) -> Witness {
        let dir = tempfile::tempdir().expect("tmp");
        let key = CosignerKey::from_seed(&format!("witness.example/w{n}"), &[100 + n; 32]).expect("witness key");
        let key_file = dir.path().join("witness.key");
        create_key_file(&key_file, &key).expect("key file");
        let verifier = key.verifier();
        let config = WitnessConfig::load(&key_file, dir.path().join("state"), logs).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("witness serves");
        });
        let state = dir.path().join("state").join(origin_hash(ORIGIN));
        Witness { url, key: verifier, state, dir, stop, task }
    }

    async fn push(&self, old: u64, proof: &[Hash], note: &str) -> Result<AddOutcome, ClientError> {
        add_checkpoint(&self.url, old, proof, note, TIMEOUT).await
    }

    /// Pushes and expects a cosignature.
    async fn cosign(&self, log: &Log, old: u64, size: u64) -> String {
        match self.push(old, &log.proof(old, size), &log.note_at(size)).await {
            Ok(AddOutcome::Cosigned(lines)) => lines,
            other => panic!("{}: expected a cosignature of {size} leaves from {old}, got {other:?}", self.url),
        }
    }

    fn state(&self) -> String {
        std::fs::read_to_string(&self.state).expect("state file")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("witness stops");
        drop(self.dir);
    }
}

fn status(result: Result<AddOutcome, ClientError>) -> u16 {
    match result {
        Ok(AddOutcome::Cosigned(_)) => 200,
        Ok(AddOutcome::Conflict { .. }) => 409,
        Err(ClientError::Status { status, .. }) => status,
        Err(e) => panic!("not an HTTP answer: {e}"),
    }
}

/// Runs `oubli verify` on `receipt` with both witnesses at a quorum of 2.
fn verify_cli(
    dir: &std::path::Path,
    name: &str,
    receipt: &str,
    log: &VerifierKey,
    witnesses: &[&Witness],
) -> (bool, String) {
    let path = dir.join(name);
    std::fs::write(&path, receipt).expect("write receipt");
    let (log, w) = (log.to_string(), witnesses.iter().map(|w| w.key.to_string()).collect::<Vec<_>>());
    let mut args = vec!["verify", path.to_str().expect("utf-8"), "--verifier-key", &log, "--quorum", "2"];
    for key in &w {
        args.extend(["--witness", key.as_str()]);
    }
    oubli(&args)
}

fn python(receipt: &std::path::Path, log: &VerifierKey, witnesses: &[&Witness]) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/check_receipt.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).arg(receipt).arg(log.to_string()).args(["--quorum", "2"]);
    for w in witnesses {
        command.arg("--witness").arg(w.key.to_string());
    }
    let out = command.output().expect("python3 runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_witnesses_cosign_growth_and_a_receipt_needs_a_quorum_of_both() {
    let mut log = Log::new(7, 1);
    let (w1, w2) = (Witness::start(1, vec![log.key()]).await, Witness::start(2, vec![log.key()]).await);
    // The empty tree, then 0 -> 5 -> 8 leaves, each step to both witnesses.
    for w in [&w1, &w2] {
        w.cosign(&log, 0, 0).await;
    }
    log.grow_to(5);
    for w in [&w1, &w2] {
        w.cosign(&log, 0, 5).await;
    }
    log.grow_to(8);
    let mut note = log.note_at(8);
    assert_eq!(note, log.writer.checkpoint(), "the log's own latest checkpoint");
    for w in [&w1, &w2] {
        let lines = w.cosign(&log, 5, 8).await;
        assert_eq!(w.state(), format!("{}{lines}", log.note_at(8)), "the state is the checkpoint, cosigned");
        note = add_signatures(&note, &lines).expect("add the cosignature");
    }
    let witnesses = [w1.key.clone(), w2.key.clone()];
    assert_eq!(count_cosigners(&note, &witnesses).expect("a note").count(), 2);

    // A log that believes the witness holds another size learns the one it holds.
    assert_eq!(
        w1.push(5, &log.proof(5, 8), &log.note_at(8)).await.expect("answer"),
        AddOutcome::Conflict { witness_size: 8 }
    );

    // The receipt of leaf 7 is proven in the tree of 8: the cosigned checkpoint.
    let cosigned = log.receipt(8, Some(&note));
    let checks =
        receipt::verify_witnessed(&cosigned, &log.key(), Some(Quorum { witnesses: &witnesses, needed: 2 }), None);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let dir = tempfile::tempdir().expect("tmp");
    let (ok, out) = verify_cli(dir.path(), "cosigned.json", &cosigned, &log.key(), &[&w1, &w2]);
    assert!(ok && out.contains("ok   witness cosignatures") && out.contains("2 of the 2"), "{out}");
    let (ok, out) = python(&dir.path().join("cosigned.json"), &log.key(), &[&w1, &w2]);
    assert!(ok && out.contains("ok  witness cosignatures (2 of 2"), "{out}");

    // One cosignature is not a quorum of two, and the refusal names the check.
    let one = add_signatures(&log.note_at(8), &w1.cosign(&log, 8, 8).await).expect("add");
    let (ok, out) = verify_cli(dir.path(), "one.json", &log.receipt(8, Some(&one)), &log.key(), &[&w1, &w2]);
    assert!(!ok && out.contains("FAIL witness cosignatures") && out.contains("1 of the 2"), "{out}");
    let (ok, out) = python(&dir.path().join("one.json"), &log.key(), &[&w1, &w2]);
    assert!(!ok && out.contains("witness cosignatures"), "{out}");
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_log_and_a_rollback_are_refused_by_the_witnesses_and_by_verify() {
    let mut log = Log::new(7, 1);
    let (w1, w2) = (Witness::start(1, vec![log.key()]).await, Witness::start(2, vec![log.key()]).await);
    log.grow_to(5);
    let mut honest = log.note_at(5);
    for w in [&w1, &w2] {
        honest = add_signatures(&honest, &w.cosign(&log, 0, 5).await).expect("add");
    }
    let saved = (w1.state(), w2.state());
    let dir = tempfile::tempdir().expect("tmp");

    // A fork: the same key signs another tree of 5 leaves.
    let mut fork = Log::new(7, 2);
    fork.grow_to(5);
    assert_ne!(fork.note_at(5), log.note_at(5));
    for w in [&w1, &w2] {
        match w.push(5, &[], &fork.note_at(5)).await {
            Err(ClientError::Status { status: 422, body }) => assert!(body.contains("FORK"), "{body}"),
            other => panic!("a fork was not refused with 422: {other:?}"),
        }
    }
    // ...that grows on: no proof links it to the cosigned tree.
    fork.grow_to(8);
    for w in [&w1, &w2] {
        assert_eq!(status(w.push(5, &fork.proof(5, 8), &fork.note_at(8)).await), 422);
    }
    // A rollback: the log's own checkpoint of 3 leaves, after 5 were cosigned (400 with the
    // witness's size as the old size, 409 with any other).
    for w in [&w1, &w2] {
        assert_eq!(status(w.push(5, &[], &log.note_at(3)).await), 400);
        assert_eq!(w.push(3, &[], &log.note_at(3)).await.expect("answer"), AddOutcome::Conflict { witness_size: 5 });
        assert_eq!(w.push(0, &[], &log.note_at(3)).await.expect("answer"), AddOutcome::Conflict { witness_size: 5 });
    }
    // Another key under the log's name (403), and a log no witness knows (404).
    let impostor = Log::new(8, 1);
    assert_eq!(status(w1.push(5, &[], &impostor.note_at(0)).await), 403);
    let stranger = SignerKey::from_seed("other.example/log", &[7; 32]).expect("key");
    let other = stranger
        .sign(
            &Checkpoint { origin: "other.example/log".into(), size: 0, root: log.writer.root(0).expect("root") }.text(),
        )
        .expect("sign");
    assert_eq!(status(w1.push(0, &[], &other).await), 404);
    assert_eq!(status(w1.push(0, &[], "not a note").await), 400);
    assert_eq!((w1.state(), w2.state()), saved, "no refusal changed a witness's state");

    // The forked tree's receipt cannot get cosignatures: none at all, or the honest tree's
    // copied onto it, fail the quorum.
    let key = log.key();
    let copied =
        add_signatures(&fork.note_at(5), honest.split_once("\n\n").expect("sigs").1.split_once('\n').expect("lines").1)
            .expect("add the honest cosignatures");
    for (name, note) in [("fork.json", None), ("fork-copied.json", Some(copied.as_str()))] {
        let (ok, out) = verify_cli(dir.path(), name, &fork.receipt(5, note), &key, &[&w1, &w2]);
        assert!(!ok && out.contains("FAIL witness cosignatures"), "{name}: {out}");
        assert!(out.contains("ok   checkpoint signature"), "{name}: the log did sign it: {out}");
    }
    // The rolled-back tree's receipt: no witness cosigns a tree smaller than one it cosigned.
    let (ok, out) = verify_cli(dir.path(), "rollback.json", &log.receipt(3, None), &key, &[&w1, &w2]);
    assert!(!ok && out.contains("FAIL witness cosignatures") && out.contains("none of the 2"), "{out}");
    // While the honest tree of 5, cosigned by both, passes.
    let (ok, out) = verify_cli(dir.path(), "honest.json", &log.receipt(5, Some(&honest)), &key, &[&w1, &w2]);
    assert!(ok, "{out}");
    w1.stop().await;
    w2.stop().await;
}

/// Two pushes for one origin at once, both from the size the witness holds: the origin's lock
/// serialises them, so one is cosigned and the other told the winner's size, and the state is
/// the winner's. Four rounds, each bounded by the client's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_for_one_origin_leave_one_consistent_state() {
    let mut log = Log::new(7, 1);
    let w = Witness::start(1, vec![log.key()]).await;
    log.grow_to(3);
    w.cosign(&log, 0, 3).await;
    let mut held = 3;
    log.grow_to(3 + 2 * 4);
    for _ in 0..4 {
        let (a, b) = (held + 1, held + 2);
        let (proof_a, note_a, proof_b, note_b) =
            (log.proof(held, a), log.note_at(a), log.proof(held, b), log.note_at(b));
        let (ra, rb) = tokio::join!(w.push(held, &proof_a, &note_a), w.push(held, &proof_b, &note_b));
        let (winner, conflict) = match (ra.expect("answer"), rb.expect("answer")) {
            (AddOutcome::Cosigned(_), AddOutcome::Conflict { witness_size }) => (a, witness_size),
            (AddOutcome::Conflict { witness_size }, AddOutcome::Cosigned(_)) => (b, witness_size),
            other => panic!("expected one cosignature and one conflict, got {other:?}"),
        };
        assert_eq!(conflict, winner, "the loser is told the winner's size");
        assert!(w.state().starts_with(&log.note_at(winner)), "the state is the winner's checkpoint");
        held = winner;
    }
    w.stop().await;
}

/// The real CLI: `oubli witness key` writes an owner-only key file (never over one) and prints
/// the witness's verifier key; `oubli witness serve` cosigns with it on 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_makes_a_witness_key_and_serves_with_it() {
    use std::{
        io::{BufRead, BufReader},
        os::unix::fs::PermissionsExt,
    };
    let dir = tempfile::tempdir().expect("tmp");
    let key_file = dir.path().join("w.key");
    let key_path = key_file.to_str().expect("utf-8");
    let (ok, out) = oubli(&["witness", "key", "--name", "witness.example/cli", "--out", key_path]);
    assert!(ok, "{out}");
    let printed = WitnessKey::parse(out.trim()).expect("a witness verifier key");
    assert_eq!(std::fs::metadata(&key_file).expect("key file").permissions().mode() & 0o777, 0o600);
    let (ok, out) = oubli(&["witness", "key", "--name", "witness.example/cli", "--out", key_path]);
    assert!(!ok, "a key file was overwritten: {out}");

    let mut log = Log::new(7, 1);
    log.grow_to(5);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oubli"))
        .args(["witness", "serve", "--listen", "127.0.0.1:0", "--key-file", key_path, "--state-dir"])
        .arg(dir.path().join("state"))
        .args(["--log", &log.key().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn oubli witness serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    assert!(line.contains(&printed.to_string()) && url.starts_with("http://127.0.0.1:"), "{line}");
    let answer = add_checkpoint(&url, 0, &[], &log.note_at(5), TIMEOUT).await;
    child.kill().expect("stop the witness");
    child.wait().expect("reap");
    let Ok(AddOutcome::Cosigned(lines)) = answer else { panic!("{answer:?}") };
    let note = add_signatures(&log.note_at(5), &lines).expect("add");
    assert_eq!(count_cosigners(&note, &[printed]).expect("note").count(), 1);
}

/// A cosignature/v1 verifier for the `signed_note` crate, written from c2sp.org/tlog-cosignature
/// over ed25519-dalek (not Oubli's code): `signed_note` 0.2.0 parses notes and their signature
/// lines but has no cosignature verifier of its own.
struct SpecCosignature {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl SpecCosignature {
    /// From a witness verifier key `<name>+<hex id>+<base64(0x04 ‖ key)>`.
    fn parse(vkey: &str) -> SpecCosignature {
        use base64::Engine as _;
        let mut parts = vkey.splitn(3, '+');
        let (name, id, key) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let raw = base64::engine::general_purpose::STANDARD.decode(key).unwrap();
        assert_eq!(raw[0], 0x04, "a cosignature/v1 key");
        SpecCosignature {
            name: name.to_string(),
            id: u32::from_str_radix(id, 16).unwrap(),
            key: ed25519_dalek::VerifyingKey::from_bytes(raw[1..].try_into().unwrap()).unwrap(),
        }
    }
}

impl signed_note::Verifier for SpecCosignature {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ed25519_dalek::Verifier as _;
        let Some((time, sig)) = sig.split_first_chunk::<8>() else { return false };
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
        let message = [format!("cosignature/v1\ntime {}\n", u64::from_be_bytes(*time)).as_bytes(), msg].concat();
        self.key.verify(&message, &sig).is_ok()
    }
}

/// A real server signing at a cadence, pushing each checkpoint to two witnesses: its receipts
/// and its `/checkpoint` carry both cosignatures, which `oubli verify --quorum 2`, the Python
/// checker and the third-party `signed_note` crate accept; with one witness stopped, the next
/// receipt carries one cosignature and fails a quorum of two, naming the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_a_cadence_gets_each_checkpoint_cosigned_by_its_witnesses() {
    use oubli::grpc::pb::{self, transparency_service_client::TransparencyServiceClient};

    use crate::harness::{Dirs, Server, seeded, stream_of, until_published};
    let server = Server::start(Dirs::new()).await;
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key = VerifierKey::parse(&key).unwrap();
    let (w1, w2) = (Witness::start(1, vec![key.clone()]).await, Witness::start(2, vec![key.clone()]).await);
    let targets: Vec<_> = [&w1, &w2]
        .iter()
        .map(|w| oubli::http::integrate::WitnessTarget { url: w.url.clone(), key: w.key.to_string() })
        .collect();
    let server = server
        .restart_with(std::sync::Arc::new(move |c: &mut oubli::Config| {
            c.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
            c.cadence = Some(oubli::http::integrate::Cadence {
                interval: Duration::from_millis(100),
                witnesses: targets.clone(),
                witness_timeout: TIMEOUT,
                ..Default::default()
            });
        }))
        .await;
    let (requests, _) = seeded(4, 31);
    server.client().await.enroll_stream(stream_of(requests[..3].to_vec())).await.expect("enrol");
    let log = TransparencyServiceClient::new(server.channel().await);
    let fetch = |leaf: u64| {
        let log = log.clone();
        until_published(move || {
            let mut log = log.clone();
            async move { log.get_receipt(pb::GetReceiptRequest { leaf_index: leaf }).await }
        })
    };
    let receipt = fetch(2).await.expect("a receipt once published").into_inner().receipt;
    let witnesses = [w1.key.clone(), w2.key.clone()];
    let checks = receipt::verify_witnessed(&receipt, &key, Some(Quorum { witnesses: &witnesses, needed: 2 }), None);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = verify_cli(dir.path(), "cosigned.json", &receipt, &key, &[&w1, &w2]);
    assert!(ok, "{out}");
    let (ok, out) = python(&dir.path().join("cosigned.json"), &key, &[&w1, &w2]);
    assert!(ok, "{out}");

    // The served checkpoint carries the cosignatures too, and the third-party crate checks them.
    let tiles = server.tiles_addr().unwrap();
    let note = {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(tiles).unwrap();
        write!(conn, "GET /checkpoint HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).unwrap();
        raw.split_once("\r\n\r\n").unwrap().1.to_string()
    };
    assert_eq!(count_cosigners(&note, &witnesses).unwrap().count(), 2, "{note}");
    let grpc = log.clone().get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;
    assert_eq!(grpc, note);
    let known = signed_note::VerifierList::new(vec![
        Box::new(signed_note::StandardVerifier::new(&key.to_string()).unwrap()),
        Box::new(SpecCosignature::parse(&w1.key.to_string())),
        Box::new(SpecCosignature::parse(&w2.key.to_string())),
    ]);
    let (verified, unverified) = signed_note::Note::from_bytes(note.as_bytes()).unwrap().verify(&known).unwrap();
    assert_eq!((verified.len(), unverified.len()), (3, 0), "the log's signature and both cosignatures");

    // One witness down: the next checkpoint is published with one cosignature, and says so.
    w2.stop().await;
    server.client().await.enroll(requests[3].clone()).await.expect("enrol");
    let receipt = fetch(3).await.expect("published without the stopped witness").into_inner().receipt;
    let checks = receipt::verify_witnessed(&receipt, &key, Some(Quorum { witnesses: &witnesses, needed: 2 }), None);
    let quorum = checks.iter().find(|c| c.name == "witness cosignatures").unwrap();
    assert!(!quorum.ok && quorum.detail.contains("1 of the 2"), "{quorum:?}");
    let checks = receipt::verify_witnessed(&receipt, &key, Some(Quorum { witnesses: &witnesses, needed: 1 }), None);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    drop(log);
    server.stop().await;
    w1.stop().await;
}

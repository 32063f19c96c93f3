//! The transparency log over real gRPC: every enrolment is a leaf, checkpoints are signed,
//! proofs verify, receipts verify offline with the server stopped, and a store whose log was
//! altered refuses to open.
use oubli::{
    grpc::pb::{self, transparency_service_client::TransparencyServiceClient},
    transparency::{
        event::{Entry, Event},
        merkle::{self, Hash, LeafIndex, TreeSize},
        note::VerifierKey,
        receipt::{self, Newer},
    },
};

use crate::harness::{Server, seeded, stream_of};

fn hashes(raw: Vec<Vec<u8>>) -> Vec<Hash> {
    raw.into_iter().map(|h| h.try_into().expect("32-byte hash")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolments_are_logged_proven_and_receipted() {
    let server = Server::start(crate::harness::Dirs::new()).await;
    let mut templates = server.client().await;
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.expect("key").into_inner().verifier_key;
    let key = VerifierKey::parse(&key).expect("a valid verifier key");
    let empty = log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("checkpoint").into_inner().checkpoint;
    assert_eq!(receipt::open_checkpoint(&empty, &key).expect("signed").size, 0, "a new log starts empty, signed");

    let (requests, _) = seeded(11, 5);
    let ids = templates.enroll_stream(stream_of(requests[..10].to_vec())).await.expect("enrol");
    let ids = ids.into_inner().record_ids;
    let at_ten = log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("checkpoint").into_inner().checkpoint;
    let ten = receipt::open_checkpoint(&at_ten, &key).expect("signed");
    assert_eq!(ten.size, 10, "one leaf per enrolled record, one checkpoint per batch");
    templates.enroll(requests[10].clone()).await.expect("enrol");
    let latest = log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("checkpoint").into_inner().checkpoint;
    let eleven = receipt::open_checkpoint(&latest, &key).expect("signed");
    assert_eq!(eleven.size, 11);

    let entries = log.get_entries(pb::GetEntriesRequest { start: 0, end: 11 }).await.expect("entries").into_inner();
    assert_eq!(entries.entries.len(), 11);
    for e in &entries.entries {
        let entry = Entry::decode(&e.data).expect("canonical entry");
        assert!(matches!(entry.event, Event::Enrolled { .. }));
        for id in &ids {
            let raw = hex::decode(id).expect("hex id");
            assert!(!e.data.windows(16).any(|w| w == raw.as_slice()), "a leaf holds a raw record id");
        }
        let proof = log
            .get_inclusion_proof(pb::GetInclusionProofRequest { leaf_index: e.index, tree_size: 0 })
            .await
            .expect("proof")
            .into_inner();
        let leaf = merkle::leaf_hash(&e.data);
        merkle::verify_inclusion(&leaf, LeafIndex(e.index), TreeSize(11), &hashes(proof.hashes), &eleven.root)
            .expect("every leaf is in the latest tree");
    }
    let consistency = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 10, to_size: 0 })
        .await
        .expect("consistency")
        .into_inner();
    merkle::verify_consistency(TreeSize(10), TreeSize(11), &ten.root, &eleven.root, &hashes(consistency.hashes))
        .expect("the log only grew");

    let bad = log.get_entries(pb::GetEntriesRequest { start: 0, end: 5000 }).await.expect_err("page too large");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let bad = log.get_receipt(pb::GetReceiptRequest { leaf_index: 99 }).await.expect_err("no such leaf");
    assert_eq!(bad.code(), tonic::Code::NotFound);
    let bad = log.get_inclusion_proof(pb::GetInclusionProofRequest { leaf_index: 20, tree_size: 0 }).await;
    assert_eq!(bad.expect_err("out of range").code(), tonic::Code::InvalidArgument);

    // A receipt, checked with the server stopped: the same bytes every time, proven in the
    // first published checkpoint that covers its leaf (the batch's: 10 leaves), which the
    // latest extends.
    let receipt = log.get_receipt(pb::GetReceiptRequest { leaf_index: 3 }).await.expect("receipt").into_inner().receipt;
    let again = log.get_receipt(pb::GetReceiptRequest { leaf_index: 3 }).await.expect("receipt").into_inner().receipt;
    assert_eq!(receipt, again, "a receipt fetched twice is byte-identical");
    let extends = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 10, to_size: 11 })
        .await
        .expect("consistency")
        .into_inner();
    drop((templates, log));
    let dirs = server.stop().await;
    let checks = receipt::verify(&receipt, &key, None);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert_eq!(
        checks.len(),
        7,
        "signature, checkpoint, origin, leaf, statement digest, counts, inclusion: {checks:#?}"
    );
    let proof = hashes(extends.hashes);
    let checks = receipt::verify(&receipt, &key, Some(Newer { note: &latest, proof: &proof }));
    assert!(checks.iter().all(|c| c.ok), "the latest checkpoint extends the receipt's: {checks:#?}");
    assert!(checks.iter().any(|c| c.name == "statement digest in the leaf" && c.ok), "{checks:#?}");

    // Any change to the receipt breaks its signature.
    let tampered = receipt.replacen("enrolment", "erasure", 1);
    let checks = receipt::verify(&tampered, &key, None);
    assert!(!checks.iter().all(|c| c.ok), "a tampered receipt verified");

    // Altering one stored leaf directly in RocksDB is caught when the store opens again.
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dirs.data).expect("list column families");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dirs.data, cfs).expect("raw open");
        let cf = db.cf_handle("log").expect("log column family");
        let mut leaf = db.get_cf(cf, 4u64.to_be_bytes()).expect("read").expect("leaf 4");
        leaf[20] ^= 1;
        db.put_cf(cf, 4u64.to_be_bytes(), leaf).expect("write");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("tampered log");
    assert!(err.to_string().contains("does not match its last signed checkpoint"), "{err}");
}

/// The CLI end to end: `oubli verify` checks a receipt with the server stopped, and
/// `oubli witness` accepts growth. A restored older copy of the data dir is refused (the key
/// dir's mirror of the log is ahead); an operator who also deletes that mirror gets a server, and
/// the witness reports its log as a rollback, then a diverging one as a fork, with a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_verifies_receipts_and_the_witness_catches_rollback_and_fork() {
    use crate::harness::{copy_dir, oubli};
    let server = Server::start(crate::harness::Dirs::new()).await;
    let (requests, _) = seeded(11, 8);
    server.client().await.enroll_stream(stream_of(requests[..5].to_vec())).await.expect("enrol");
    let addr = server.addr.to_string();
    let work = tempfile::tempdir().expect("tmp");
    let (key_file, state, receipt_file) =
        (work.path().join("key"), work.path().join("witness.note"), work.path().join("receipt.json"));
    let (ok, key) = oubli(&["--server", &addr, "log", "verifier-key"]);
    assert!(ok, "{key}");
    std::fs::write(&key_file, key.trim()).expect("write key");
    let (ok, receipt) = oubli(&["--server", &addr, "log", "receipt", "--leaf", "2"]);
    assert!(ok, "{receipt}");
    std::fs::write(&receipt_file, receipt).expect("write receipt");
    let key_arg = key_file.to_str().expect("utf-8 path");
    let witness = |addr: &str| {
        oubli(&[
            "--server",
            addr,
            "witness",
            "check",
            "--state",
            state.to_str().expect("path"),
            "--verifier-key",
            key_arg,
        ])
    };
    let (ok, out) = witness(&addr);
    assert!(ok && out.contains("first checkpoint: 5 leaves"), "{out}");

    let dirs = server.stop().await;
    let (ok, out) = oubli(&["verify", receipt_file.to_str().expect("path"), "--verifier-key", key_arg]);
    assert!(ok && out.contains("every check passed"), "offline verify: {out}");
    let backup = work.path().join("backup");
    copy_dir(&dirs.data, &backup);

    let server = Server::start(dirs).await;
    let addr = server.addr.to_string();
    server.client().await.enroll_stream(stream_of(requests[5..8].to_vec())).await.expect("enrol");
    let (ok, out) = witness(&addr);
    assert!(ok && out.contains("grew from 5 to 8"), "{out}");
    let dirs = server.stop().await;

    // The operator restores the older copy: refused while the key dir's mirror is ahead of it.
    std::fs::remove_dir_all(&dirs.data).expect("remove");
    copy_dir(&backup, &dirs.data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("an older copy");
    assert!(err.to_string().contains("holds 5 entries, but the key dir's mirror of the log holds 8"), "{err}");
    // Deleting the mirror too hides nothing from a witness: the log now serves 5 leaves.
    std::fs::remove_file(dirs.keys.join("log.mirror")).expect("remove the mirror");
    let server = Server::start(dirs).await;
    let addr = server.addr.to_string();
    let (ok, out) = witness(&addr);
    assert!(!ok && out.contains("ROLLBACK"), "{out}");
    // And rewrites history from there: 8 leaves again, but not the same 8.
    server.client().await.enroll_stream(stream_of(requests[8..11].to_vec())).await.expect("enrol");
    let (ok, out) = witness(&addr);
    assert!(!ok && out.contains("FORK"), "{out}");
    server.stop().await;
}

/// An independent check outside Rust: Python (standard library + `cryptography`) recomputes
/// the receipt signature, the leaf hash, the statement digest in the leaf, the checkpoint
/// signature and the inclusion proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_checks_a_receipt_from_the_docs_alone() {
    let server = Server::start(crate::harness::Dirs::new()).await;
    let (requests, _) = seeded(7, 9);
    server.client().await.enroll_stream(stream_of(requests)).await.expect("enrol");
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.expect("key").into_inner().verifier_key;
    let receipt = log.get_receipt(pb::GetReceiptRequest { leaf_index: 5 }).await.expect("receipt").into_inner().receipt;
    server.stop().await;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("receipt.json");
    std::fs::write(&path, &receipt).expect("write");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/check_receipt.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&path)
        .arg(&key)
        .output()
        .expect("python3 runs (make deps installs the `cryptography` package)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python check failed (does `python3 -c 'import cryptography'` work?):\n{text}");
    assert_eq!(text.matches("ok  ").count(), 6, "{text}");
    assert!(text.contains("ok  statement digest in the leaf\n"), "{text}");
}

/// examples/python/check_receipt.py's consistency check against the independent RFC 6962
/// vectors in ../shared/testdata/merkle/consistency (transparency-dev/merkle): every case that
/// should verify does, every other one fails.
#[test]
fn python_consistency_check_matches_the_shared_vectors() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let vectors = repo.join("../shared/testdata/merkle/consistency");
    assert!(vectors.is_dir(), "{} holds the vectors", vectors.display());
    let program = r#"
import base64, glob, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("check_receipt", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
right = wrong = 0
for path in sorted(glob.glob(sys.argv[2] + "/**/*.json", recursive=True)):
    case = json.load(open(path))
    root1, root2 = base64.b64decode(case["root1"] or ""), base64.b64decode(case["root2"] or "")
    try:
        old, new = module.roots_from_consistency_proof(
            case["size1"], case["size2"], root1, [base64.b64decode(h) for h in case["proof"] or []])
        ok = old == root1 and new == root2
    except AssertionError:
        ok = False
    if ok == (not case["wantErr"]):
        right += 1
    else:
        wrong += 1
        print("disagrees:", path)
print(right, wrong)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", program])
        .arg(repo.join("examples/python/check_receipt.py"))
        .arg(&vectors)
        .env("PYTHONPATH", repo.join("target/python/deps"))
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "98 0", "{text}");
}

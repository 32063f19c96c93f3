//! The transparency log over real gRPC: every enrolment is a leaf, checkpoints are signed,
//! proofs verify, receipts verify offline with the server stopped, and a store whose log was
//! altered refuses to open.
use oubli::{
    audit::{
        event::{Entry, Event},
        merkle::{self, Hash, LeafIndex, TreeSize},
        note::VerifierKey,
        receipt::{self, Newer},
    },
    grpc::pb::{self, transparency_client::TransparencyClient},
};

use crate::harness::{Server, seeded};

fn hashes(raw: Vec<Vec<u8>>) -> Vec<Hash> {
    raw.into_iter().map(|h| h.try_into().expect("32-byte hash")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolments_are_logged_proven_and_receipted() {
    let server = Server::start(crate::harness::Dirs::new()).await;
    let mut templates = server.client().await;
    let mut log = TransparencyClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.expect("key").into_inner().verifier_key;
    let key = VerifierKey::parse(&key).expect("a valid verifier key");
    let empty = log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("checkpoint").into_inner().checkpoint;
    assert_eq!(receipt::open_checkpoint(&empty, &key).expect("signed").size, 0, "a new log starts empty, signed");

    let (requests, _) = seeded(11, 5);
    let ids = templates.enroll_stream(tokio_stream::iter(requests[..10].to_vec())).await.expect("enrol");
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

    // A receipt, checked with the server stopped.
    let receipt = log.get_receipt(pb::GetReceiptRequest { leaf_index: 3 }).await.expect("receipt").into_inner().receipt;
    drop((templates, log));
    let dirs = server.stop().await;
    let checks = receipt::verify(&receipt, &key, None);
    assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
    assert_eq!(checks.len(), 5, "signature, checkpoint, origin, leaf, inclusion: {checks:#?}");
    let proof: Vec<Hash> = Vec::new();
    let checks = receipt::verify(&receipt, &key, Some(Newer { note: &latest, proof: &proof }));
    assert!(checks.iter().all(|c| c.ok), "same-size newer checkpoint: {checks:#?}");

    // Any change to the receipt breaks its signature.
    let tampered = receipt.replacen("enrolment", "erasure", 1);
    let checks = receipt::verify(&tampered, &key, None);
    assert!(!checks.iter().all(|c| c.ok), "a tampered receipt verified");

    // Altering one stored leaf directly in RocksDB is caught when the store opens again.
    {
        let cfs = ["records", "data_keys", "idempotency", "meta", "log"];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dirs.data, cfs).expect("raw open");
        let cf = db.cf_handle("log").expect("log column family");
        let mut leaf = db.get_cf(cf, 4u64.to_be_bytes()).expect("read").expect("leaf 4");
        leaf[20] ^= 1;
        db.put_cf(cf, 4u64.to_be_bytes(), leaf).expect("write");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config =
        oubli::Config { data_dir: dirs.data.clone(), key_dir: dirs.keys.clone(), dimension: None, log_origin: None };
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("tampered log");
    assert!(err.to_string().contains("does not match its last signed checkpoint"), "{err}");
}

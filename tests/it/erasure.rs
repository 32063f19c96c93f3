//! Erasure over real gRPC: by probe (everything gone, everyone notified, both receipts
//! verify, the bytes leave the disk), backups after a key rotation, a policy sweep, and the
//! server killed at each step of the pipeline.
use std::collections::BTreeSet;

use oubli::{
    engine::IndexChoice,
    grpc::pb::{
        self, admin_service_client::AdminServiceClient, notifications_service_client::NotificationsServiceClient,
        rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
        transparency_service_client::TransparencyServiceClient,
    },
    store::Store,
    transparency::{event::Event, note::VerifierKey, receipt},
};
use tonic::Code;

#[cfg(feature = "failpoints")]
use crate::harness::{Process, log_key, stream_of};
use crate::{
    harness::{Dirs, Server, assert_log_extends, events, files_under, oubli},
    rights::{enrol, tokens, wait, with_tokens},
};

const STRICT: f32 = 0.602;

pub type Rights = RightsServiceClient<oubli::grpc::AuthChannel>;

/// An erasure by `probe`, signed by the trusted test capture application.
pub async fn submit_erasure(rights: &mut Rights, probe: &[f32]) -> (String, String) {
    let request = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: probe.to_vec() }],
        contact: "jeanne@example.org".into(),
        jurisdiction_claim: "FR".into(),
        ..Default::default()
    };
    let request = crate::harness::signed_erasure(rights, request).await;
    let r = rights.submit_erasure_request(request).await.unwrap().into_inner();
    (r.request_id, r.request_secret)
}

pub async fn receipts(rights: &mut Rights, id: &str, secret: &str) -> pb::GetErasureReceiptsResponse {
    rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest { request_id: id.into(), request_secret: secret.into() })
        .await
        .unwrap()
        .into_inner()
}

pub fn body(receipt_json: &str) -> receipt::Body {
    let r: receipt::Receipt = serde_json::from_str(receipt_json).expect("a receipt");
    serde_json::from_str(&r.body).expect("a receipt body")
}

/// Files under `dir` holding `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|f| f.display().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_by_probe_removes_the_person_everywhere_and_both_receipts_verify() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let configure = with_tokens(path, |c| c.index.choice = IndexChoice::Hnsw);
    let server = Server::start_with(dirs, configure.clone()).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let other = (person + 1..world.population.probe_labels.len())
        .map(|p| world.clear_cut(p))
        .find(|&p| world.population.probe_labels[p] != world.population.probe_labels[person])
        .expect("another person");
    let probe = world.population.probe(person).to_vec();
    let erased: BTreeSet<String> = world.scored(person, STRICT, 2.0).into_iter().map(|(id, _)| id).collect();
    let samples: Vec<usize> = (0..world.ids.len()).filter(|i| erased.contains(&world.ids[*i])).collect();

    // Two agencies search for the face; police-b sees only the top hit.
    let mut police_a = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let mut police_b = TemplatesServiceClient::new(server.channel_as(Some(&t.operator_b)).await);
    let search = |values: &[f32], k, exact| pb::SearchRequest {
        probe: Some(pb::Embedding { values: values.to_vec() }),
        k,
        min_score: Some(STRICT),
        exact,
    };
    let hits = police_a.search(search(&probe, 10, false)).await.unwrap().into_inner().hits;
    assert_eq!(hits.iter().map(|h| h.record_id.clone()).collect::<BTreeSet<_>>(), erased);
    let top = police_b.search(search(&probe, 1, false)).await.unwrap().into_inner().hits[0].record_id.clone();
    let other_probe = world.population.probe(other).to_vec();
    let others_before = police_a.search(search(&other_probe, 10, true)).await.unwrap().into_inner().hits;

    // Test hook: the erased records' ciphertext and wrapped keys as stored.
    let dirs = server.stop().await;
    let mut stored = Vec::new();
    {
        let store = Store::open(&dirs.data, &dirs.keys, None, None).unwrap();
        for id in &erased {
            let raw = store.raw_rows(id.parse().unwrap()).unwrap();
            stored.push((raw.sealed.unwrap(), raw.wrapped_key.unwrap()));
        }
    }
    let server = Server::start_with(dirs, configure.clone()).await;
    let mut police_a = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let before = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;

    // The person first asks what is held (the report lists the records), then for erasure
    // with a selfie. Phase 1 runs at once.
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (earlier, earlier_secret) = crate::rights::submit(&mut rights, &probe).await;
    wait(&mut rights, &earlier, &earlier_secret).await;
    let (report, answered) = crate::rights::report(&mut rights, &earlier, &earlier_secret).await;
    assert_eq!(report.records.len(), erased.len());
    // A receipt is the same bytes every time it is fetched, by any call.
    assert_eq!(crate::rights::report(&mut rights, &earlier, &earlier_secret).await.1, answered);
    assert_eq!(get_receipt(&mut log, body(&answered).leaf_index).await, answered);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    let status = wait(&mut rights, &id, &secret).await;
    assert_eq!((status.state.as_str(), status.erasure_step.as_str()), ("erasing", "keys_purged"));
    assert_eq!(status.kind, "erasure");
    let data = server.dirs.data.clone();
    for (_, wrapped) in &stored {
        assert_eq!(holding(&data, wrapped), Vec::<String>::new(), "phase 1 left a wrapped key on disk");
    }
    let r = receipts(&mut rights, &id, &secret).await;
    assert!(r.phase2_receipt_json.is_empty(), "phase 2 waits for the purge window");
    let phase1 = body(&r.phase1_receipt_json);
    assert_eq!(phase1.event, "erasure-phase-1");
    assert!(phase1.pending.iter().any(|p| p.what.starts_with("phase 2")), "{:?}", phase1.pending);
    assert!(phase1.pending.iter().any(|p| p.what.contains("backups")), "{:?}", phase1.pending);
    assert!(phase1.verified.iter().any(|v| v.contains("found 0 at or above")), "{:?}", phase1.verified);
    let text = serde_json::to_string(&phase1).unwrap();
    assert!(!text.contains("forensic") || text.contains("not"), "never claims forensic erasure");
    assert!(phase1.not_claimed.iter().any(|n| n.contains("forensic")), "{:?}", phase1.not_claimed);
    let phase1_first = r.phase1_receipt_json.clone();

    // An administrator runs the purge without waiting for the window: phase 2.
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    assert!(admin.run_purge(pb::RunPurgeRequest {}).await.unwrap().into_inner().purged);
    let status = wait(&mut rights, &id, &secret).await;
    assert_eq!((status.state.as_str(), status.erasure_step.as_str()), ("completed", "templates_purged"));
    for (sealed, _) in &stored {
        assert_eq!(holding(&data, sealed), Vec::<String>::new(), "phase 2 left a ciphertext on disk");
    }
    let r = receipts(&mut rights, &id, &secret).await;
    let erasure: serde_json::Value = serde_json::from_str(&r.erasure_json).unwrap();
    let planned: BTreeSet<String> =
        erasure["records"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(planned, erased, "the plan is exactly the person's records");
    assert_eq!(body(&r.phase2_receipt_json).event, "erasure-phase-2");
    // Frozen when logged: phase 1's receipt says after phase 2 exactly what it said before.
    assert_eq!(r.phase1_receipt_json, phase1_first, "phase 1's receipt changed after phase 2");
    let again = receipts(&mut rights, &id, &secret).await;
    assert_eq!((&again.phase1_receipt_json, &again.phase2_receipt_json), (&phase1_first, &r.phase2_receipt_json));
    let phase2_leaf = body(&r.phase2_receipt_json).leaf_index;
    assert_eq!(get_receipt(&mut log, phase2_leaf).await, r.phase2_receipt_json);

    // Gone everywhere.
    for id in &erased {
        let err = police_a.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    for (p, exact) in [(&probe, false), (&probe, true)] {
        assert!(police_a.search(search(p, 10, exact)).await.unwrap().into_inner().hits.is_empty());
    }
    let same = police_a.search(search(&other_probe, 10, true)).await.unwrap().into_inner().hits;
    assert_eq!(
        same.iter().map(|h| (&h.record_id, h.score)).collect::<Vec<_>>(),
        others_before.iter().map(|h| (&h.record_id, h.score)).collect::<Vec<_>>(),
        "another person's results are unchanged"
    );
    let (report, _) = crate::rights::report(&mut rights, &earlier, &earlier_secret).await;
    assert!(report.records.is_empty(), "the earlier report no longer holds the erased records");
    assert_eq!(report.erased_since, erased.len());
    let (access, access_secret) = crate::rights::submit(&mut rights, &probe).await;
    assert_eq!(wait(&mut rights, &access, &access_secret).await.state, "completed");
    let (report, _) = crate::rights::report(&mut rights, &access, &access_secret).await;
    assert!(report.records.is_empty(), "the access report is empty after the erasure");

    // The recipients were told (Art. 19): police-a of every record, police-b of its one.
    let mut notices_a = NotificationsServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let list = notices_a.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    let told: BTreeSet<String> = list
        .iter()
        .map(|n| serde_json::from_str::<serde_json::Value>(&n.body_json).unwrap()["record_id"].as_str().unwrap().into())
        .collect();
    assert_eq!(told, erased);
    let mut notices_b = NotificationsServiceClient::new(server.channel_as(Some(&t.operator_b)).await);
    let list_b =
        notices_b.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    assert_eq!(list_b.len(), 1);
    assert!(list_b[0].body_json.contains(&top));
    notices_b.ack_notification(pb::AckNotificationRequest { id: list_b[0].id.clone() }).await.unwrap();
    let err = notices_a.ack_notification(pb::AckNotificationRequest { id: list_b[0].id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "one operator cannot acknowledge another's notice");

    // Both receipts, and a no-match attestation, verify offline with the CLI.
    let dir = tempfile::tempdir().unwrap();
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key_path = dir.path().join("log.vkey");
    std::fs::write(&key_path, &key).unwrap();
    let attested = rights
        .attest_no_match(pb::AttestNoMatchRequest { request_id: id.clone(), request_secret: secret.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(get_receipt(&mut log, attested.leaf_index).await, attested.receipt_json, "attested as logged");
    for (name, json, event) in [
        ("p1.json", &r.phase1_receipt_json, "erasure-phase-1"),
        ("p2.json", &r.phase2_receipt_json, "erasure-phase-2"),
        ("attest.json", &attested.receipt_json, "no-match-attested"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        let (ok, out) = oubli(&["verify", path.to_str().unwrap(), "--verifier-key", key_path.to_str().unwrap()]);
        assert!(ok && out.contains(event) && out.contains("ok   statement digest in the leaf"), "{out}");
        assert!(out.contains("ok   counts in the leaf against the statements"), "{out}");
        let (ok, out) = check_receipt_py(&path, &key);
        assert!(ok && out.contains("ok  statement digest in the leaf"), "{out}");
        assert!(out.contains("ok  counts in the leaf against the statements"), "{out}");
    }
    // Consistency with a newer checkpoint, in Python from the formats alone: phase 1's tree
    // against the latest, with the proof the log serves; a proof for other sizes fails.
    let latest = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;
    let latest_path = dir.path().join("latest.checkpoint");
    std::fs::write(&latest_path, &latest).unwrap();
    let phase1_size = body(&r.phase1_receipt_json).leaf_index + 1;
    let latest_size: u64 = latest.lines().nth(1).unwrap().parse().unwrap();
    let proof_json = |from: u64, hashes: Vec<Vec<u8>>| {
        use base64::Engine;
        let hashes: Vec<String> = hashes.iter().map(|h| base64::engine::general_purpose::STANDARD.encode(h)).collect();
        serde_json::json!({ "from_size": from, "to_size": latest_size, "hashes": hashes }).to_string()
    };
    let proof = |from: u64| {
        let mut log = log.clone();
        async move {
            log.get_consistency_proof(pb::GetConsistencyProofRequest { from_size: from, to_size: latest_size })
                .await
                .unwrap()
                .into_inner()
                .hashes
        }
    };
    let good = dir.path().join("consistency.json");
    std::fs::write(&good, proof_json(phase1_size, proof(phase1_size).await)).unwrap();
    let p1 = dir.path().join("p1.json");
    let flags = |proof: &std::path::Path| {
        vec![
            std::ffi::OsString::from("--checkpoint"),
            latest_path.clone().into_os_string(),
            "--consistency".into(),
            proof.as_os_str().to_owned(),
        ]
    };
    let (ok, out) = check_receipt_py_args(&p1, &key, &flags(&good));
    assert!(ok && out.contains("ok  consistency with the newer checkpoint"), "{out}");
    let wrong = dir.path().join("wrong-consistency.json");
    std::fs::write(&wrong, proof_json(phase1_size, proof(phase1_size - 1).await)).unwrap();
    let (ok, out) = check_receipt_py_args(&p1, &key, &flags(&wrong));
    assert!(!ok && out.contains("consistency with the newer checkpoint"), "{out}");
    // The holder opens the leaves with their erasure status: the commitment with the plan
    // salt, and the plan's digest from the record ids it names; another record list fails.
    let status_path = dir.path().join("erasure.json");
    std::fs::write(&status_path, &r.erasure_json).unwrap();
    let status: serde_json::Value = serde_json::from_str(&r.erasure_json).unwrap();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, get_receipt(&mut log, status["plan_leaf"].as_u64().unwrap()).await).unwrap();
    let open = |receipt: &std::path::Path, status: &std::path::Path| {
        oubli(&[
            "verify",
            receipt.to_str().unwrap(),
            "--verifier-key",
            key_path.to_str().unwrap(),
            "--erasure-status",
            status.to_str().unwrap(),
        ])
    };
    let (ok, out) = open(&plan_path, &status_path);
    assert!(ok && out.contains("ok   commitment opened with your salt"), "{out}");
    assert!(out.contains("ok   plan digest recomputed from your records"), "{out}");
    let (ok, out) = open(&dir.path().join("p1.json"), &status_path);
    assert!(ok && out.contains("ok   commitment opened with your salt"), "{out}");
    let mut fewer = status.clone();
    fewer["records"].as_array_mut().unwrap().pop();
    let fewer_path = dir.path().join("fewer.json");
    std::fs::write(&fewer_path, fewer.to_string()).unwrap();
    let (ok, out) = open(&plan_path, &fewer_path);
    assert!(!ok && out.contains("FAIL plan digest recomputed from your records"), "{out}");
    let (ok, out) = check_receipt_py_with(&plan_path, &key, &[&status_path]);
    assert!(ok && out.contains("ok  plan digest recomputed from your records"), "{out}");
    let (ok, out) = check_receipt_py_with(&plan_path, &key, &[&fewer_path]);
    assert!(!ok && out.contains("plan digest recomputed from your records"), "{out}");
    let mut other = status.clone();
    other["plan_salt"] = "00".repeat(16).into();
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let (ok, out) = open(&dir.path().join("p1.json"), &other_path);
    assert!(!ok && out.contains("FAIL commitment opened with your salt"), "{out}");
    let (ok, out) = check_receipt_py_with(&dir.path().join("p1.json"), &key, &[&other_path]);
    assert!(!ok && out.contains("commitment opened with your salt"), "{out}");

    let err = rights
        .attest_no_match(pb::AttestNoMatchRequest { request_id: id.clone(), request_secret: secret.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "one attestation per erasure: {}", err.message());

    // Re-enrolling a source that was erased is refused.
    let mut again = crate::harness::requests(&world.population).0[samples[0]].clone();
    again.embedding = Some(pb::Embedding { values: world.population.sample(samples[0]).to_vec() });
    let err = police_a.enroll(again).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("erased"), "{}", err.message());

    // The log grew by exactly one plan and two phases for this request, consistently.
    assert_log_extends(server.channel().await, &before).await;
    let kinds = events(server.channel().await).await;
    let count = |f: fn(&Event) -> bool| kinds.iter().filter(|e| f(e)).count();
    assert_eq!(count(|e| matches!(e, Event::ErasurePlanned { .. })), 1);
    assert_eq!(count(|e| matches!(e, Event::ErasureKeysPurged { .. })), 1);
    assert_eq!(count(|e| matches!(e, Event::ErasureTemplatesPurged { .. })), 1);

    // Phase 2's stored statements altered in RocksDB, server stopped: the receipt served
    // says what the row now says, and both checks name the statement digest as failing.
    drop((police_a, log, rights, admin, notices_a, notices_b));
    let dirs = server.stop().await;
    {
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &dirs.data).expect("list column families");
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &dirs.data, cfs).expect("raw open");
        let cf = db.cf_handle("log_statements").expect("log_statements column family");
        let row = db.get_cf(cf, phase2_leaf.to_be_bytes()).unwrap().expect("phase 2's statements are stored");
        let row = String::from_utf8(row).unwrap();
        let altered = row.replacen("erased record(s)", "erased record(s), and every backup,", 1);
        assert_ne!(altered, row);
        db.put_cf(cf, phase2_leaf.to_be_bytes(), altered).unwrap();
    }
    let server = Server::start_with(dirs, configure).await;
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let tampered = get_receipt(&mut log, phase2_leaf).await;
    assert!(tampered.contains("and every backup"), "{tampered}");
    let path = dir.path().join("tampered.json");
    std::fs::write(&path, &tampered).unwrap();
    let (ok, out) = oubli(&["verify", path.to_str().unwrap(), "--verifier-key", key_path.to_str().unwrap()]);
    assert!(!ok && out.contains("FAIL statement digest in the leaf"), "{out}");
    let (ok, out) = check_receipt_py(&path, &key);
    assert!(!ok && out.contains("statement digest in the leaf"), "{out}");
}

/// `GetReceipt` of leaf `index`.
async fn get_receipt(log: &mut TransparencyServiceClient<oubli::grpc::AuthChannel>, index: u64) -> String {
    log.get_receipt(pb::GetReceiptRequest { leaf_index: index }).await.unwrap().into_inner().receipt
}

/// examples/python/check_receipt.py on `receipt` (with the packages `make python-deps` put
/// under target/python): whether it passed, and what it printed.
fn check_receipt_py(receipt: &std::path::Path, key: &str) -> (bool, String) {
    check_receipt_py_with(receipt, key, &[])
}

/// The same, with more arguments (an erasure status).
fn check_receipt_py_with(receipt: &std::path::Path, key: &str, more: &[&std::path::Path]) -> (bool, String) {
    let more: Vec<std::ffi::OsString> = more.iter().map(|p| p.as_os_str().to_owned()).collect();
    check_receipt_py_args(receipt, key, &more)
}

fn check_receipt_py_args(receipt: &std::path::Path, key: &str, more: &[std::ffi::OsString]) -> (bool, String) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(repo.join("examples/python/check_receipt.py"))
        .arg(receipt)
        .arg(key.trim())
        .args(more)
        .env("PYTHONPATH", repo.join("target/python/deps"))
        .output()
        .expect("python3 runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_before_an_erasure_is_unreadable_after_a_key_rotation() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let configure = with_tokens(path, |_| {});
    let server = Server::start_with(dirs, configure.clone()).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let erased: Vec<String> = world.scored(person, STRICT, 2.0).into_iter().map(|(id, _)| id).collect();

    // A backup (a RocksDB checkpoint: hard links to the table files) taken before the erasure.
    let dirs = server.stop().await;
    let backup = dirs.keys.parent().unwrap().join("backup");
    let sealed = {
        let store = Store::open(&dirs.data, &dirs.keys, None, None).unwrap();
        store.backup_to(&backup).unwrap();
        store.raw_rows(erased[0].parse().unwrap()).unwrap().sealed.unwrap()
    };
    let keys = dirs.keys.clone();
    let server = Server::start_with(dirs, configure).await;

    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    assert_eq!(wait(&mut rights, &id, &secret).await.erasure_step, "keys_purged");
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    admin.run_purge(pb::RunPurgeRequest {}).await.unwrap();
    assert_eq!(wait(&mut rights, &id, &secret).await.state, "completed");
    assert!(holding(&server.dirs.data, &sealed).is_empty(), "the live data dir no longer holds it");
    assert!(!holding(&backup, &sealed).is_empty(), "the backup still holds the ciphertext");
    let phase1_json = receipts(&mut rights, &id, &secret).await.phase1_receipt_json;
    let phase1 = body(&phase1_json);
    let backups = phase1.pending.iter().find(|p| p.what.contains("backups")).expect("a pending backup item");
    assert!(backups.what.contains("key epoch 1") && backups.due.starts_with("20"), "{backups:?}");

    // The rotation the receipt promised, from the CLI.
    let addr = server.addr.to_string();
    let (ok, out) = oubli(&["--server", &addr, "--token", &t.admin, "keys", "rotate"]);
    assert!(ok && out.contains("key epoch 2"), "{out}");
    assert!(!keys.join("kek-00000001.key").exists(), "the old key-encryption key file is gone");
    // The backup still holds the bytes, but its data keys were wrapped under epoch 1: gone.
    assert!(!holding(&backup, &sealed).is_empty());
    match Store::open(&backup, &keys, None, None) {
        Err(oubli::store::Error::WrongKeys { .. }) => {}
        other => panic!("the backup must no longer open: {:?}", other.err()),
    }
    // The receipt stays what was committed when phase 1 was logged; the rotation that kept its
    // promise has a receipt of its own.
    let after = receipts(&mut rights, &id, &secret).await.phase1_receipt_json;
    assert_eq!(after, phase1_json, "a receipt is frozen when its phase is logged");
    // Everything else is still readable under the new epoch, after a restart too.
    let server = server.restart().await;
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let kept = world.ids.iter().find(|i| !erased.contains(i)).unwrap();
    templates.get(pb::GetRequest { record_id: kept.clone(), include_embedding: true }).await.unwrap();
    let kinds = events(server.channel().await).await;
    assert_eq!(kinds.iter().filter(|e| matches!(e, Event::KeysRotated { epoch: 2, .. })).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sweep_erases_exactly_the_french_records_each_with_its_receipts() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let french: BTreeSet<String> = (0..world.ids.len())
        .filter(|&i| world.population.provenance[i].jurisdiction().as_str() == "FR")
        .map(|i| world.ids[i].clone())
        .collect();
    assert!(!french.is_empty() && french.len() < world.ids.len());

    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    let bad = admin.sweep_policy(pb::SweepPolicyRequest { rule: "colour=blue".into(), dry_run: true }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);
    let dry = admin
        .sweep_policy(pb::SweepPolicyRequest { rule: "jurisdiction=FR".into(), dry_run: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dry.matched as usize, dry.request_ids.len()), (french.len(), 0));
    let sweep = admin
        .sweep_policy(pb::SweepPolicyRequest { rule: "jurisdiction=FR".into(), dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sweep.request_ids.len(), french.len(), "one erasure request per record");

    let mut desk = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    for id in &sweep.request_ids {
        let s = wait(&mut desk, id, "").await;
        assert_eq!(s.erasure_step, "keys_purged", "{s:?}");
    }
    assert!(admin.run_purge(pb::RunPurgeRequest {}).await.unwrap().into_inner().purged);

    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key = VerifierKey::parse(&key).unwrap();
    let mut erased = BTreeSet::new();
    for id in &sweep.request_ids {
        let r = receipts(&mut desk, id, "").await;
        assert_eq!(r.status.unwrap().state, "completed");
        let status: serde_json::Value = serde_json::from_str(&r.erasure_json).unwrap();
        assert_eq!(status["origin"]["rule"], "jurisdiction=FR");
        erased.extend(status["records"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()));
        for json in [&r.phase1_receipt_json, &r.phase2_receipt_json] {
            assert!(receipt::verify(json, &key, None).iter().all(|c| c.ok), "each record's receipts verify");
        }
    }
    assert_eq!(erased, french, "exactly the French records");
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for id in &world.ids {
        let got = templates.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        assert_eq!(got.is_ok(), !french.contains(id), "record {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_named_in_an_access_report_can_be_erased_with_its_secret_only() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (access, access_secret) = crate::rights::submit(&mut rights, &probe).await;
    wait(&mut rights, &access, &access_secret).await;
    let (report, _) = crate::rights::report(&mut rights, &access, &access_secret).await;
    let mine: Vec<String> = report.records.iter().map(|r| r.record_id.clone()).collect();
    let stranger = world.ids.iter().find(|i| !mine.contains(i)).unwrap().clone();

    let by_records = |secret: &str, records: Vec<String>| pb::SubmitErasureRequestRequest {
        access_request_id: access.clone(),
        access_request_secret: secret.into(),
        record_ids: records,
        contact: "jeanne@example.org".into(),
        ..Default::default()
    };
    let wrong = rights.submit_erasure_request(by_records("00", vec![mine[0].clone()])).await.unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let stray = rights.submit_erasure_request(by_records(&access_secret, vec![stranger.clone()])).await.unwrap_err();
    assert_eq!(stray.code(), Code::InvalidArgument, "{}", stray.message());
    let neither = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest { contact: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(neither.code(), Code::InvalidArgument);

    let r =
        rights.submit_erasure_request(by_records(&access_secret, vec![mine[0].clone()])).await.unwrap().into_inner();
    assert_eq!(wait(&mut rights, &r.request_id, &r.request_secret).await.erasure_step, "keys_purged");
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let get = |id: &str| pb::GetRequest { record_id: id.into(), include_embedding: false };
    assert_eq!(templates.get(get(&mine[0])).await.unwrap_err().code(), Code::NotFound);
    for other in mine.iter().skip(1).chain([&stranger]) {
        templates.get(get(other)).await.unwrap();
    }
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_each_step_of_an_erasure_finishes_it_after_restart() {
    let population = oubli::synth::Population::generate(&oubli::synth::PopulationConfig {
        seed: 11,
        identities: 60,
        samples_per_identity: 3,
        probes_per_identity: 1,
        ..Default::default()
    })
    .unwrap();
    let (requests, _) = crate::harness::requests(&population);
    for failpoint in oubli::failpoint::ALL.iter().filter(|f| f.starts_with("erase.")) {
        let dirs = Dirs::new();
        let server = Process::spawn(&dirs, Some(failpoint));
        let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
        let ids = templates.enroll_stream(stream_of(requests.clone())).await.unwrap().into_inner().record_ids;
        let world = crate::rights::World { population: population.clone(), ids };
        let person = world.clear_cut(0);
        let probe = world.population.probe(person).to_vec();
        let erased: Vec<String> = world.scored(person, STRICT, 2.0).into_iter().map(|(id, _)| id).collect();
        let search = pb::SearchRequest {
            probe: Some(pb::Embedding { values: probe.clone() }),
            k: 10,
            min_score: Some(STRICT),
            exact: false,
        };
        assert_eq!(templates.search(search.clone()).await.unwrap().into_inner().hits.len(), erased.len());
        let mut log = TransparencyServiceClient::new(server.channel(&dirs).await);
        let before = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;

        let mut rights = RightsServiceClient::new(server.channel(&dirs).await);
        let (id, secret) = submit_erasure(&mut rights, &probe).await;
        server.wait_for(&format!("failpoint {failpoint} reached"));
        let mut server = server;
        let status = server.child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{failpoint}: SIGKILL");

        let server = Process::spawn(&dirs, None);
        let mut rights = RightsServiceClient::new(server.channel(&dirs).await);
        let mut admin = AdminServiceClient::new(server.channel(&dirs).await);
        let mut state = wait(&mut rights, &id, &secret).await;
        while state.state != "completed" {
            admin.run_purge(pb::RunPurgeRequest {}).await.unwrap();
            state = wait(&mut rights, &id, &secret).await;
        }
        let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
        for record in &erased {
            let got = templates.get(pb::GetRequest { record_id: record.clone(), include_embedding: false }).await;
            assert_eq!(got.unwrap_err().code(), Code::NotFound, "{failpoint}");
        }
        assert!(templates.search(search).await.unwrap().into_inner().hits.is_empty(), "{failpoint}");
        assert_log_extends(server.channel(&dirs).await, &before).await;
        let kinds = events(server.channel(&dirs).await).await;
        let count = |f: fn(&Event) -> bool| kinds.iter().filter(|e| f(e)).count();
        assert_eq!(
            (
                count(|e| matches!(e, Event::ErasurePlanned { .. })),
                count(|e| matches!(e, Event::ErasureKeysPurged { .. })),
                count(|e| matches!(e, Event::ErasureTemplatesPurged { .. })),
            ),
            (1, 1, 1),
            "{failpoint}: one plan and one receipt per phase"
        );
        let r = receipts(&mut rights, &id, &secret).await;
        let key = log_key(server.channel(&dirs).await).await;
        for json in [&r.phase1_receipt_json, &r.phase2_receipt_json] {
            assert!(receipt::verify(json, &key, None).iter().all(|c| c.ok), "{failpoint}");
        }
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_waits_for_the_desk_on_look_alikes_and_erases_only_what_it_approves() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let review = 0.310_f32;
    let (person, stranger) = (0..world.population.probe_labels.len())
        .find_map(|p| {
            let label = world.population.probe_labels[p];
            world.scored(p, review, STRICT).into_iter().find(|(_, l)| *l != label).map(|(id, _)| (p, id))
        })
        .expect("a look-alike in some review band");
    let probe = world.population.probe(person).to_vec();
    let own: Vec<String> = world.scored(person, STRICT, 2.0).into_iter().map(|(id, _)| id).collect();

    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    let status = wait(&mut rights, &id, &secret).await;
    assert_eq!(status.state, "needs_review", "nothing is erased while a stranger may be in the set");
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let get = |id: &str| pb::GetRequest { record_id: id.into(), include_embedding: false };
    templates.get(get(&own[0])).await.unwrap();

    // The desk confirms none of the band: the person's certain records go, the stranger stays.
    let mut desk = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    let reviewed = desk
        .review_request(pb::ReviewRequestRequest {
            request_id: id.clone(),
            approved_record_ids: Vec::new(),
            note: "the band is a relative's".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(reviewed.state, "erasing");
    assert_eq!(wait(&mut rights, &id, &secret).await.erasure_step, "keys_purged");
    for record in &own {
        assert_eq!(templates.get(get(record)).await.unwrap_err().code(), Code::NotFound);
    }
    templates.get(get(&stranger)).await.unwrap();
    let denied = desk
        .deny_request(pb::DenyRequestRequest { request_id: id.clone(), reason: "too late".into() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::FailedPrecondition, "an erasure under way cannot be denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_who_consents_is_never_enrolled_again_even_from_a_new_photo() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let other = world.clear_cut(person + 1);
    let probe = world.population.probe(person).to_vec();
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let submit =
        |never_enrol_again, probes: Vec<pb::Embedding>, records: Vec<String>| pb::SubmitErasureRequestRequest {
            probes,
            record_ids: records,
            access_request_id: if never_enrol_again { String::new() } else { "00".repeat(16) },
            contact: "jeanne@example.org".into(),
            never_enrol_again,
            ..Default::default()
        };
    let refused = rights.submit_erasure_request(submit(false, Vec::new(), vec![world.ids[0].clone()])).await;
    assert_eq!(refused.unwrap_err().code(), Code::NotFound, "no such access request");
    let signed = crate::harness::signed_erasure(
        &mut rights,
        submit(true, vec![pb::Embedding { values: probe.clone() }], Vec::new()),
    )
    .await;
    let r = rights.submit_erasure_request(signed).await.unwrap().into_inner();
    assert_eq!(wait(&mut rights, &r.request_id, &r.request_secret).await.erasure_step, "keys_purged");
    let receipts = receipts(&mut rights, &r.request_id, &r.request_secret).await;
    let status: serde_json::Value = serde_json::from_str(&receipts.erasure_json).unwrap();
    assert_eq!(status["retained_with_consent"].as_array().unwrap().len(), 1);
    assert!(
        body(&receipts.phase1_receipt_json).done.iter().any(|d| d.starts_with("retained with your explicit consent"))
    );

    // A new photo of the same face, from a source never seen: refused, after a restart too.
    let server = server.restart().await;
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let fresh = |values: Vec<f32>, uri: &str| crate::harness::request(values, uri);
    let err = templates.enroll(fresh(probe.clone(), "https://new.example/selfie.jpg")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("erased-face"), "{}", err.message());
    let someone_else = world.population.probe(other).to_vec();
    templates.enroll(fresh(someone_else, "https://new.example/other.jpg")).await.unwrap();
}

#[test]
fn a_short_mixed_load_loses_nothing_and_resurrects_nothing() {
    let (ok, out) = oubli(&["load", "--embedded", "--clients", "4", "--duration", "2", "--seed", "7"]);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 lost, 0 resurrected") && out.contains("consistent"), "{out}");
}

/// `oubli load` against a server with default settings (the lawful policy, the per-address
/// and global limits, checkpoints at a cadence): the limits' refusals are counted as throttled,
/// not errors; a second run enrols no source the first run's erasures suppressed; both pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_against_default_settings_is_throttled_not_failed() {
    let server = Server::start_with(
        Dirs::new(),
        std::sync::Arc::new(|c: &mut oubli::Config| {
            c.rights.policy = oubli::rights::PolicySource::Profile("lawful".into());
            c.cadence = Some(oubli::http::integrate::Cadence::default());
        }),
    )
    .await;
    let keys = server.dirs.keys.clone();
    let app = keys.join("load-app.key");
    let capture_keys = keys.join(oubli::grpc::CAPTURE_KEYS_FILE);
    let (ok, out) = oubli(&[
        "capture-keys",
        "add",
        "--file",
        capture_keys.to_str().unwrap(),
        "--name",
        "load-app",
        "--generate",
        app.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let token = std::fs::read_to_string(keys.join(oubli::grpc::LOCAL_TOKEN_FILE)).unwrap();
    let addr = server.addr.to_string();
    let run = |seed: &'static str| {
        let (addr, token, app) = (addr.clone(), token.trim().to_string(), app.clone());
        tokio::task::spawn_blocking(move || {
            oubli(&[
                "--server",
                &addr,
                "--token",
                &token,
                "load",
                "--clients",
                "4",
                "--duration",
                "3",
                "--seed",
                seed,
                "--mix",
                "enroll:40,search:40,access:10,erase:10",
                "--capture-key",
                app.to_str().unwrap(),
            ])
        })
    };
    for seed in ["7", "7"] {
        let (ok, out) = run(seed).await.unwrap();
        assert!(ok, "{out}");
        assert!(out.contains(" 0 lost, 0 resurrected") && out.contains("consistent"), "{out}");
        assert!(out.contains("throttled"), "{out}");
    }
    server.stop().await;
}

/// `GET path` on the metrics port, as a scraper would; returns the status line and the body.
async fn scrape(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_time_erasure_steps_and_show_the_backlog() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let configure = with_tokens(path, |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()));
    let server = Server::start_with(dirs, configure).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let erased = world.scored(person, STRICT, 2.0).len();
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit_erasure(&mut rights, &probe).await;
    wait(&mut rights, &id, &secret).await;
    let addr = server.metrics_addr().expect("metrics are served");
    let (status, body) = scrape(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for expected in [
        "oubli_rpc_calls_total{method=\"/oubli.v1.TemplatesService/EnrollStream\",code=\"Ok\"} 1",
        "oubli_rpc_duration_seconds_count{method=\"/oubli.v1.RightsService/SubmitErasureRequest\"} 1",
        "oubli_erasure_step_duration_seconds_count{step=\"phase1_purge\"} 1",
        "oubli_erasure_step_duration_seconds_count{step=\"delete\"} 1",
        "oubli_erasures_in_progress 1",
        "oubli_requests_overdue 0",
        "oubli_key_epoch 1",
    ] {
        assert!(body.contains(expected), "{expected} missing from:\n{body}");
    }
    assert!(body.contains(&format!("oubli_records {}\n", world.ids.len() - erased)), "{body}");
    assert!(!body.contains("jeanne@"), "no client value in the metrics");
    assert!(scrape(addr, "/other").await.0.contains("404"));
}

//! Erasure over real gRPC: by probe (everything gone, everyone notified, both receipts
//! verify, the bytes leave the disk), backups after a key rotation, a policy sweep, and the
//! server killed at each step of the pipeline.
use std::collections::BTreeSet;

use oubli::{
    audit::{
        event::{Entry, Event},
        merkle::{self, Hash, TreeSize},
        note::VerifierKey,
        receipt,
    },
    engine::IndexChoice,
    grpc::pb::{
        self, admin_client::AdminClient, notifications_client::NotificationsClient, rights_client::RightsClient,
        templates_client::TemplatesClient, transparency_client::TransparencyClient,
    },
    store::Store,
};
use tonic::Code;

use crate::{
    harness::{Dirs, Server, files_under, oubli},
    rights::{enrol, tokens, wait, with_tokens},
};

const STRICT: f32 = 0.602;

type Rights = RightsClient<oubli::grpc::AuthChannel>;

async fn submit_erasure(rights: &mut Rights, probe: &[f32]) -> (String, String) {
    let r = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest {
            probes: vec![pb::Embedding { values: probe.to_vec() }],
            contact: "jeanne@example.org".into(),
            jurisdiction_claim: "FR".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (r.request_id, r.request_secret)
}

async fn receipts(rights: &mut Rights, id: &str, secret: &str) -> pb::GetErasureReceiptsResponse {
    rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest { request_id: id.into(), request_secret: secret.into() })
        .await
        .unwrap()
        .into_inner()
}

fn body(receipt_json: &str) -> receipt::Body {
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

/// The log now extends the checkpoint `before` (consistency proof checked).
async fn assert_log_extends(server_channel: oubli::grpc::AuthChannel, before: &str) -> u64 {
    let mut log = TransparencyClient::new(server_channel);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key = VerifierKey::parse(&key).unwrap();
    let now = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;
    let (old, new) = (receipt::open_checkpoint(before, &key).unwrap(), receipt::open_checkpoint(&now, &key).unwrap());
    let proof = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: old.size, to_size: new.size })
        .await
        .unwrap()
        .into_inner();
    let proof: Vec<Hash> = proof.hashes.into_iter().map(|h| h.try_into().unwrap()).collect();
    merkle::verify_consistency(TreeSize(old.size), TreeSize(new.size), &old.root, &new.root, &proof)
        .expect("the log only grew");
    new.size
}

/// Every log entry's event.
async fn events(server_channel: oubli::grpc::AuthChannel) -> Vec<Event> {
    let mut log = TransparencyClient::new(server_channel);
    let mut out = Vec::new();
    loop {
        let start = out.len() as u64;
        let page =
            log.get_entries(pb::GetEntriesRequest { start, end: start + 1000 }).await.unwrap().into_inner().entries;
        if page.is_empty() {
            return out;
        }
        out.extend(page.iter().map(|e| Entry::decode(&e.data).unwrap().event));
    }
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
    let mut police_a = TemplatesClient::new(server.channel_as(Some(&t.operator)).await);
    let mut police_b = TemplatesClient::new(server.channel_as(Some(&t.operator_b)).await);
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
            let (sealed, wrapped) = store.raw_rows(id.parse().unwrap()).unwrap();
            stored.push((sealed.unwrap(), wrapped.unwrap()));
        }
    }
    let server = Server::start_with(dirs, configure).await;
    let mut police_a = TemplatesClient::new(server.channel_as(Some(&t.operator)).await);
    let mut log = TransparencyClient::new(server.channel().await);
    let before = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;

    // The person asks for erasure with a selfie. Phase 1 runs at once.
    let mut rights = RightsClient::new(server.channel_as(None).await);
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

    // An administrator runs the purge without waiting for the window: phase 2.
    let mut admin = AdminClient::new(server.channel_as(Some(&t.admin)).await);
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
    let (access, access_secret) = crate::rights::submit(&mut rights, &probe).await;
    assert_eq!(wait(&mut rights, &access, &access_secret).await.state, "completed");
    let (report, _) = crate::rights::report(&mut rights, &access, &access_secret).await;
    assert!(report.records.is_empty(), "the access report is empty after the erasure");

    // The recipients were told (Art. 19): police-a of every record, police-b of its one.
    let mut notices_a = NotificationsClient::new(server.channel_as(Some(&t.operator)).await);
    let list = notices_a.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    let told: BTreeSet<String> = list
        .iter()
        .map(|n| serde_json::from_str::<serde_json::Value>(&n.body_json).unwrap()["record_id"].as_str().unwrap().into())
        .collect();
    assert_eq!(told, erased);
    let mut notices_b = NotificationsClient::new(server.channel_as(Some(&t.operator_b)).await);
    let list_b = notices_b.list_notifications(pb::ListNotificationsRequest {}).await.unwrap().into_inner().notifications;
    assert_eq!(list_b.len(), 1);
    assert!(list_b[0].body_json.contains(&top));
    notices_b.ack_notification(pb::AckNotificationRequest { id: list_b[0].id.clone() }).await.unwrap();
    let err = notices_a.ack_notification(pb::AckNotificationRequest { id: list_b[0].id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "one operator cannot acknowledge another's notice");

    // Both receipts, and a no-match attestation, verify offline with the CLI.
    let dir = tempfile::tempdir().unwrap();
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key_path = dir.path().join("log.vkey");
    std::fs::write(&key_path, key).unwrap();
    let attested = rights
        .attest_no_match(pb::AttestNoMatchRequest {
            request_id: id.clone(),
            request_secret: secret.clone(),
            probes: vec![pb::Embedding { values: probe.clone() }],
        })
        .await
        .unwrap()
        .into_inner();
    for (name, json, event) in [
        ("p1.json", &r.phase1_receipt_json, "erasure-phase-1"),
        ("p2.json", &r.phase2_receipt_json, "erasure-phase-2"),
        ("attest.json", &attested.receipt_json, "no-match-attested"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        let (ok, out) = oubli(&["verify", path.to_str().unwrap(), "--verifier-key", key_path.to_str().unwrap()]);
        assert!(ok && out.contains(event), "{out}");
    }
    let err = rights
        .attest_no_match(pb::AttestNoMatchRequest {
            request_id: id.clone(),
            request_secret: secret.clone(),
            probes: vec![pb::Embedding { values: other_probe.clone() }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "another face still matches: no attestation");

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
}

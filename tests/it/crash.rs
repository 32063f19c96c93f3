//! The real `oubli-server` binary killed with SIGKILL (at named failpoints, and at random
//! moments of a bulk enrolment and of erasures under way), then restarted: nothing acknowledged is lost, no batch is half
//! there, no erased record comes back, and the log extends every checkpoint handed out before.
#![cfg(feature = "failpoints")]
use std::collections::BTreeSet;

use oubli::grpc::pb::{
    self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
    templates_service_client::TemplatesServiceClient, transparency_service_client::TransparencyServiceClient,
};
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::harness::{Dirs, Process, assert_log_extends, events, seeded, stream_of};

const BATCH: usize = 40;

/// What a client was told before the crash.
#[derive(Default)]
struct Told {
    acknowledged: Vec<String>,
    checkpoints: Vec<String>,
    erased: Vec<String>,
    /// Records of batches stored but never acknowledged (the server died before answering).
    unacknowledged: usize,
}

/// Enrols `BATCH`-sized batches of `requests` until the server dies (or all are sent),
/// recording every acknowledged id and the checkpoint after each batch.
async fn enrol_until_killed(server: &Process, dirs: &Dirs, requests: &[pb::EnrollRequest], told: &mut Told) {
    let mut templates = TemplatesServiceClient::new(server.channel(dirs).await);
    let mut log = TransparencyServiceClient::new(server.channel(dirs).await);
    for batch in requests.chunks(BATCH) {
        match templates.enroll_stream(stream_of(batch.to_vec())).await {
            Ok(r) => told.acknowledged.extend(r.into_inner().record_ids),
            Err(_) => return,
        }
        match log.get_checkpoint(pb::GetCheckpointRequest {}).await {
            Ok(c) => told.checkpoints.push(c.into_inner().checkpoint),
            Err(_) => return,
        }
    }
}

/// Erases the first enrolled record's face (by its own template) and waits for both phases.
async fn erase_one(server: &Process, dirs: &Dirs, values: &[f32], told: &mut Told) {
    let mut rights = RightsServiceClient::new(server.channel(dirs).await);
    let request = crate::harness::signed_erasure(
        &mut rights,
        pb::SubmitErasureRequestRequest {
            probes: vec![pb::Embedding { values: values.to_vec() }],
            contact: "jeanne@example.org".into(),
            ..Default::default()
        },
    )
    .await;
    let r = rights.submit_erasure_request(request).await.unwrap().into_inner();
    let mut state = String::new();
    while state != "completed" {
        state = rights
            .get_request(pb::GetRequestRequest {
                request_id: r.request_id.clone(),
                request_secret: r.request_secret.clone(),
                wait_seconds: 30,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .state;
        if state != "completed" {
            AdminServiceClient::new(server.channel(dirs).await).run_purge(pb::RunPurgeRequest {}).await.unwrap();
        }
    }
    let request = pb::GetErasureReceiptsRequest { request_id: r.request_id, request_secret: r.request_secret };
    let receipts = crate::harness::until_published(|| {
        let (mut rights, request) = (rights.clone(), request.clone());
        async move { rights.get_erasure_receipts(request).await }
    })
    .await
    .unwrap()
    .into_inner();
    let status: serde_json::Value = serde_json::from_str(&receipts.erasure_json).unwrap();
    told.erased.extend(status["records"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()));
}

/// After a restart: every acknowledged record is there, the batch in flight is all there or
/// not at all, nothing erased came back, and the log extends every checkpoint handed out.
async fn check(server: &Process, dirs: &Dirs, told: &mut Told, what: &str) {
    let mut templates = TemplatesServiceClient::new(server.channel(dirs).await);
    let erased: BTreeSet<&String> = told.erased.iter().collect();
    for id in &told.acknowledged {
        let got = templates.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        if erased.contains(id) {
            assert_eq!(got.unwrap_err().code(), Code::NotFound, "{what}: erased record {id} came back");
        } else {
            got.unwrap_or_else(|e| panic!("{what}: acknowledged record {id} lost: {e}"));
        }
    }
    let count = templates.stats(pb::StatsRequest {}).await.unwrap().into_inner().record_count as usize;
    let live = told.acknowledged.len() - told.erased.len() + told.unacknowledged;
    assert!(count == live || count == live + BATCH, "{what}: {count} records, {live} acknowledged: a half batch");
    told.unacknowledged += count - live;
    for checkpoint in &told.checkpoints {
        assert_log_extends(server.channel(dirs).await, checkpoint).await;
    }
    let enrolled = events(server.channel(dirs).await)
        .await
        .iter()
        .filter(|e| matches!(e, oubli::transparency::event::Event::Enrolled { .. }))
        .count();
    assert_eq!(enrolled, count + told.erased.len(), "{what}: one enrolment leaf per record ever stored");
}

fn kill(server: Process) {
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_killed_at_each_failpoint_loses_nothing_acknowledged() {
    let (requests, vectors) = seeded(BATCH * 6, 21);
    for failpoint in oubli::failpoint::ALL.iter().filter(|f| !f.starts_with("erase.") && !f.starts_with("rotate.")) {
        let dirs = Dirs::new();
        let mut told = Told::default();
        // The first two writes go through: the third dies at the failpoint.
        let server = Process::spawn(&dirs, Some(&format!("{failpoint}@3")));
        enrol_until_killed(&server, &dirs, &requests, &mut told).await;
        server.wait_for(&format!("failpoint {failpoint} reached"));
        kill(server);
        assert_eq!(told.acknowledged.len(), 2 * BATCH, "{failpoint}: two batches acknowledged before");

        let server = Process::spawn(&dirs, None);
        check(&server, &dirs, &mut told, failpoint).await;
        // The server goes on: an erasure, more enrolments, all consistent after another kill.
        erase_one(&server, &dirs, &vectors[0], &mut told).await;
        enrol_until_killed(&server, &dirs, &requests[3 * BATCH..4 * BATCH], &mut told).await;
        kill(server);
        let server = Process::spawn(&dirs, None);
        check(&server, &dirs, &mut told, failpoint).await;
        kill(server);
    }
}

/// Eight clients enrolling one record per call, so the server gathers their calls into group
/// commits, killed after some are acknowledged: after the restart every acknowledged enrolment
/// is there (a call is answered only once the group's write is durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unary_enrolments_killed_mid_group_lose_nothing_acknowledged() {
    let (requests, _) = seeded(BATCH * 8, 27);
    let dirs = Dirs::new();
    let server = Process::spawn(&dirs, None);
    let acknowledged = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for share in requests.chunks(BATCH) {
        let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
        let (share, acknowledged) = (share.to_vec(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            for request in share {
                match templates.enroll(request).await {
                    Ok(r) => acknowledged.lock().push(r.into_inner().record_id),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a third are acknowledged (bounded: 30 s at most).
    for _ in 0..3000 {
        if acknowledged.lock().len() >= requests.len() / 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    kill(server);
    for client in clients {
        let _ = client.await;
    }
    let told = acknowledged.lock().clone();
    assert!(told.len() >= requests.len() / 3, "enrolments were acknowledged before the kill");
    let server = Process::spawn(&dirs, None);
    let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
    for id in &told {
        let got = templates.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        got.unwrap_or_else(|e| panic!("acknowledged record {id} lost: {e}"));
    }
    // Stored but never answered: at most the one call each client had in flight.
    let count = templates.stats(pb::StatsRequest {}).await.unwrap().into_inner().record_count as usize;
    assert!((told.len()..=told.len() + clients_n()).contains(&count), "{count} records, {} acknowledged", told.len());
    let enrolled = events(server.channel(&dirs).await)
        .await
        .iter()
        .filter(|e| matches!(e, oubli::transparency::event::Event::Enrolled { .. }))
        .count();
    assert_eq!(enrolled, count, "one enrolment leaf per record stored");
    kill(server);
}

/// The clients of the concurrent-unary crash test.
fn clients_n() -> usize {
    8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enrolment_killed_at_random_moments_loses_nothing_and_resurrects_nothing() {
    let rounds: usize = std::env::var("OUBLI_CRASH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(2);
    let (requests, vectors) = seeded(BATCH * 12, 22);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
    let dirs = Dirs::new();
    let mut told = Told::default();
    // At a cadence, as a server runs by default: a kill may leave leaves sequenced, unpublished.
    let server = Process::spawn_cadence(&dirs);
    enrol_until_killed(&server, &dirs, &requests[..BATCH], &mut told).await;
    erase_one(&server, &dirs, &vectors[0], &mut told).await;
    let mut server = server;
    let mut next = BATCH;
    for round in 0..rounds {
        // Some batches acknowledged, then a kill while the next one is in flight.
        let batches = rng.random_range(1..=3);
        let end = (next + batches * BATCH).min(requests.len());
        enrol_until_killed(&server, &dirs, &requests[next..end], &mut told).await;
        next = end;
        let in_flight = requests[next.min(requests.len() - BATCH)..][..BATCH].to_vec();
        let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
        let sent = tokio::spawn(async move { templates.enroll_stream(stream_of(in_flight)).await });
        // Let the stream start for a random number of scheduler turns, then pull the plug.
        for _ in 0..rng.random_range(0..200) {
            tokio::task::yield_now().await;
        }
        kill(server);
        if let Ok(Ok(r)) = sent.await {
            told.acknowledged.extend(r.into_inner().record_ids);
        }
        server = Process::spawn_cadence(&dirs);
        check(&server, &dirs, &mut told, &format!("round {round}")).await;
        next = (next + BATCH).min(requests.len() - BATCH);
    }
    kill(server);
}

/// Erasures killed at random moments of their pipeline (not only at the named failpoints):
/// each round submits erasures of a few records, lets the worker run for a random number of
/// scheduler turns, and pulls the plug. After the restart every request completes, exactly its
/// records are gone, nothing else is lost, each request is planned, purged and logged exactly
/// once per phase, and the log extends every checkpoint handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_killed_at_random_moments_finish_once_and_resurrect_nothing() {
    let rounds: usize = std::env::var("OUBLI_CRASH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(2);
    let (requests, vectors) = seeded(BATCH * 3, 25);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(25);
    let dirs = Dirs::new();
    let mut told = Told::default();
    let mut server = Process::spawn(&dirs, None);
    enrol_until_killed(&server, &dirs, &requests, &mut told).await;
    let mut left: Vec<usize> = (0..requests.len()).collect();
    let mut submitted = Vec::new();
    for round in 0..rounds {
        let mut rights = RightsServiceClient::new(server.channel(&dirs).await);
        let first = submitted.len();
        for _ in 0..rng.random_range(1..=3) {
            let i = left.swap_remove(rng.random_range(0..left.len()));
            let request = crate::harness::signed_erasure(
                &mut rights,
                pb::SubmitErasureRequestRequest {
                    probes: vec![pb::Embedding { values: vectors[i].clone() }],
                    contact: "jeanne@example.org".into(),
                    ..Default::default()
                },
            )
            .await;
            let r = rights.submit_erasure_request(request).await.expect("submitted").into_inner();
            submitted.push((r.request_id, r.request_secret));
        }
        for _ in 0..rng.random_range(0..400) {
            tokio::task::yield_now().await;
        }
        kill(server);
        server = Process::spawn(&dirs, None);
        let mut rights = RightsServiceClient::new(server.channel(&dirs).await);
        let at_restart: Vec<String> = {
            let mut states = Vec::new();
            for (id, secret) in &submitted[first..] {
                let now =
                    pb::GetRequestRequest { request_id: id.clone(), request_secret: secret.clone(), wait_seconds: 0 };
                let status = rights.get_request(now).await.expect("status").into_inner().status.unwrap();
                states.push(format!("{}/{}", status.state, status.erasure_step));
            }
            states
        };
        eprintln!("round {round}: killed with the erasures at {at_restart:?}");
        for (id, secret) in &submitted {
            loop {
                let wait =
                    pb::GetRequestRequest { request_id: id.clone(), request_secret: secret.clone(), wait_seconds: 30 };
                match rights.get_request(wait).await.expect("status").into_inner().status.unwrap().state.as_str() {
                    "completed" => break,
                    // A look-alike in the review band: the desk erases nothing more than the match.
                    "needs_review" => {
                        let review = pb::ReviewRequestRequest { request_id: id.clone(), ..Default::default() };
                        rights.review_request(review).await.expect("reviewed");
                        continue;
                    }
                    _ => {}
                }
                AdminServiceClient::new(server.channel(&dirs).await)
                    .run_purge(pb::RunPurgeRequest {})
                    .await
                    .expect("purge");
            }
        }
        told.erased.clear();
        for (id, secret) in &submitted {
            let receipts = rights
                .get_erasure_receipts(pb::GetErasureReceiptsRequest {
                    request_id: id.clone(),
                    request_secret: secret.clone(),
                })
                .await
                .expect("receipts")
                .into_inner();
            assert!(!receipts.phase1_receipt_json.is_empty() && !receipts.phase2_receipt_json.is_empty());
            let status: serde_json::Value = serde_json::from_str(&receipts.erasure_json).expect("json");
            let records = status["records"].as_array().expect("records");
            assert_eq!(records.len(), 1, "round {round}: a probe matches its own record only");
            told.erased.extend(records.iter().map(|v| v.as_str().expect("id").to_string()));
        }
        check(&server, &dirs, &mut told, &format!("erasure round {round}")).await;
        let events = events(server.channel(&dirs).await).await;
        let count = |f: fn(&oubli::transparency::event::Event) -> bool| events.iter().filter(|e| f(e)).count();
        use oubli::transparency::event::Event::*;
        assert_eq!(count(|e| matches!(e, ErasurePlanned { .. })), submitted.len(), "round {round}: one plan each");
        assert_eq!(
            count(|e| matches!(e, ErasureKeysPurged { .. })),
            submitted.len(),
            "round {round}: one phase 1 each"
        );
        assert_eq!(
            count(|e| matches!(e, ErasureTemplatesPurged { .. })),
            submitted.len(),
            "round {round}: one phase 2 each"
        );
    }
    kill(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_killed_half_way_is_finished_at_restart() {
    let (requests, _) = seeded(BATCH * 2, 23);
    let dirs = Dirs::new();
    let mut told = Told::default();
    let server = Process::spawn(&dirs, Some("rotate.rewrapped"));
    enrol_until_killed(&server, &dirs, &requests, &mut told).await;
    let mut admin = AdminServiceClient::new(server.channel(&dirs).await);
    assert!(admin.rotate_keys(pb::RotateKeysRequest {}).await.is_err(), "killed during the rotation");
    server.wait_for("failpoint rotate.rewrapped reached");
    kill(server);
    assert!(dirs.keys.join("kek-00000001.key").exists() && dirs.keys.join("kek-00000002.key").exists());

    let server = Process::spawn(&dirs, None);
    assert!(!dirs.keys.join("kek-00000001.key").exists(), "the old key is destroyed at restart");
    check(&server, &dirs, &mut told, "rotation").await;
    let rotations = events(server.channel(&dirs).await)
        .await
        .iter()
        .filter(|e| matches!(e, oubli::transparency::event::Event::KeysRotated { epoch: 2, .. }))
        .count();
    assert_eq!(rotations, 1, "the rotation is logged once");
    kill(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_fails_alone_and_the_server_goes_on() {
    let (requests, vectors) = seeded(BATCH, 24);
    for point in ["search", "get"] {
        let dirs = Dirs::new();
        let mut server = Process::spawn_with(&dirs, None, &[("OUBLI_PANIC", point)]);
        let mut templates = TemplatesServiceClient::new(server.channel(&dirs).await);
        let ids = templates.enroll_stream(stream_of(requests.clone())).await.unwrap().into_inner().record_ids;
        let failed = match point {
            "search" => templates
                .search(pb::SearchRequest {
                    probe: Some(pb::Embedding { values: vectors[0].clone() }),
                    k: 3,
                    min_score: None,
                    exact: true,
                })
                .await
                .map(|_| ()),
            _ => {
                templates.get(pb::GetRequest { record_id: ids[0].clone(), include_embedding: false }).await.map(|_| ())
            }
        };
        assert!(failed.is_err(), "{point}: the panicking call fails");
        // Other calls, on a fresh connection and on the same one, are still answered.
        let mut again = TemplatesServiceClient::new(server.channel(&dirs).await);
        assert_eq!(again.stats(pb::StatsRequest {}).await.unwrap().into_inner().record_count, BATCH as u64);
        templates.enroll(requests[0].clone()).await.unwrap();
        assert!(server.child.try_wait().unwrap().is_none(), "{point}: the server is still running");
        drop(server);
    }
}

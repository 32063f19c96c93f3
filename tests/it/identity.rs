//! Identity before disclosure, as a hostile outsider meets it over real gRPC and RocksDB: a
//! victim's photo and no capture signature learn nothing (the same states, fields and codes
//! whether the victim is held or not), forged or replayed captures are refused by name, a
//! stranger erases and blocklists nothing, and the person's own capture, or the privacy desk's
//! check, opens the full answer.
use std::sync::Arc;

use jiff::Timestamp;
use oubli::{
    grpc::pb::{self, rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient},
    rights::{
        identity::{Terms, sign_capture},
        request::{Kind, ManualClock},
    },
    synth::{Population, PopulationConfig},
};
use tonic::Code;

use crate::{
    harness::{CAPTURE_APP, Dirs, Server, capture_key, events, signed_access},
    rights::{World, enrol, report, tokens, wait, with_tokens},
};

type Rights = RightsServiceClient<oubli::grpc::AuthChannel>;

/// A status without what differs between any two requests: its id and its times.
fn shape(status: Option<pb::RequestStatus>) -> String {
    let mut s = status.unwrap_or_default();
    s.request_id.clear();
    s.received_at = None;
    s.due_at = None;
    for change in &mut s.history {
        change.at = None;
    }
    format!("{s:?}")
}

/// A call's outcome as the caller sees it, ids masked.
fn outcome<T>(result: Result<tonic::Response<T>, tonic::Status>, ids: &[&str], show: impl Fn(T) -> String) -> String {
    let text = match result {
        Ok(r) => format!("Ok {}", show(r.into_inner())),
        Err(s) => format!("{:?} {}", s.code(), s.message()),
    };
    ids.iter().fold(text, |t, id| t.replace(id, "<id>"))
}

fn probe(values: &[f32]) -> Vec<pb::Embedding> {
    vec![pb::Embedding { values: values.to_vec() }]
}

/// Everything an outsider holding `photo` (and no capture) can try, and what each answer shows.
async fn what_an_outsider_learns(rights: &mut Rights, photo: &[f32]) -> (Vec<String>, [(String, String); 2]) {
    let mut seen = Vec::new();
    let access = rights
        .submit_access_request(pb::SubmitAccessRequestRequest {
            probes: probe(photo),
            contact: "stalker@example.org".into(),
            include_templates: true,
            ..Default::default()
        })
        .await
        .expect("accepted")
        .into_inner();
    let (aid, asecret) = (access.request_id.clone(), access.request_secret.clone());
    seen.push(shape(access.status));
    seen.push(shape(Some(wait(rights, &aid, &asecret).await)));
    let r = rights
        .get_access_report(pb::GetAccessReportRequest { request_id: aid.clone(), request_secret: asecret.clone() })
        .await;
    seen.push(outcome(r, &[&aid], |r| format!("{} {:?} {:?}", shape(r.status), r.report_json, r.receipt_json)));
    let blocklist = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest {
            probes: probe(photo),
            contact: "stalker@example.org".into(),
            never_enrol_again: true,
            ..Default::default()
        })
        .await;
    seen.push(outcome(blocklist, &[], |r| r.request_id));
    let erasure = rights
        .submit_erasure_request(pb::SubmitErasureRequestRequest {
            probes: probe(photo),
            contact: "stalker@example.org".into(),
            ..Default::default()
        })
        .await
        .expect("accepted")
        .into_inner();
    let (eid, esecret) = (erasure.request_id.clone(), erasure.request_secret.clone());
    seen.push(shape(erasure.status));
    seen.push(shape(Some(wait(rights, &eid, &esecret).await)));
    let r = rights
        .get_erasure_receipts(pb::GetErasureReceiptsRequest {
            request_id: eid.clone(),
            request_secret: esecret.clone(),
        })
        .await;
    seen.push(outcome(r, &[&eid], |r| {
        let mut json: serde_json::Value = serde_json::from_str(&r.erasure_json).expect("JSON");
        json["request_id"] = "<id>".into();
        json["plan_salt"] = "<salt>".into();
        format!("{} {json} {:?} {:?}", shape(r.status), r.phase1_receipt_json, r.phase2_receipt_json)
    }));
    for (id, secret) in [(&eid, &esecret), (&aid, &asecret)] {
        let r = rights
            .attest_no_match(pb::AttestNoMatchRequest { request_id: id.clone(), request_secret: secret.clone() })
            .await;
        seen.push(outcome(r, &[&eid, &aid], |r| r.leaf_index.to_string()));
    }
    (seen, [(aid, asecret), (eid, esecret)])
}

/// A face of nobody the server holds.
fn unknown_face() -> Vec<f32> {
    let config = PopulationConfig {
        seed: 99,
        identities: 1,
        samples_per_identity: 1,
        probes_per_identity: 1,
        ..Default::default()
    };
    Population::generate(&config).unwrap().probe(0).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_without_a_capture_learns_nothing_and_harms_nobody() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |c| c.rights.submissions_per_minute = 1000)).await;
    let world: World = enrol(&server, &t.operator).await;
    let clear = world.clear_cut(0);
    let lookalike = (0..world.population.probe_labels.len())
        .find(|&p| !world.scored(p, 0.310, 0.602).is_empty() && !world.scored(p, 0.602, 2.0).is_empty())
        .expect("a person with a look-alike");
    let victims = [
        ("held, clear-cut", world.population.probe(clear).to_vec()),
        ("held, with a look-alike", world.population.probe(lookalike).to_vec()),
        ("not held", unknown_face()),
    ];
    let mut outsider: Rights = RightsServiceClient::new(server.channel_as(None).await);
    let mut seen = Vec::new();
    let mut pending = Vec::new();
    for (who, photo) in &victims {
        let (s, ids) = what_an_outsider_learns(&mut outsider, photo).await;
        seen.push((who, s));
        pending.push(ids);
    }
    for (who, s) in &seen[1..] {
        assert_eq!(s.len(), seen[0].1.len());
        for (i, (a, b)) in seen[0].1.iter().zip(s).enumerate() {
            assert_eq!(a, b, "answer {i} differs between a victim {} and a victim {who}", seen[0].0);
        }
    }
    let first = &seen[0].1;
    assert!(first[1].contains("state: \"verifying_identity\"") && first[1].contains("matched: 0"), "{}", first[1]);
    assert!(first[3].starts_with("InvalidArgument") && first[3].contains("capture"), "{}", first[3]);
    assert!(first[8].starts_with("FailedPrecondition") || first[8].starts_with("InvalidArgument"), "{}", first[8]);

    // Nothing was answered, planned or blocklisted; every record is still held.
    let log: Vec<&str> = events(server.channel().await).await.iter().map(|e| e.name()).collect();
    assert!(!log.contains(&"access-answered") && !log.contains(&"erasure-planned"), "{log:?}");
    let mut operator = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for id in &world.ids {
        operator.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await.expect("still held");
    }
    let mut desk: Rights = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    let listed = desk.list_requests(pb::ListRequestsRequest::default()).await.unwrap().into_inner().requests;
    assert_eq!(
        listed.len(),
        2 * victims.len(),
        "one access and one erasure each; the blocklist request stored nothing"
    );

    // The desk checks the held victim's identity out of band: now the same request answers.
    let [(aid, asecret), _] = &pending[0];
    let verify = pb::VerifyIdentityRequest {
        request_id: aid.clone(),
        method: "id-document".into(),
        note: "passport seen at the desk, matches the probe".into(),
    };
    assert_eq!(outsider.verify_identity(verify.clone()).await.unwrap_err().code(), Code::Unauthenticated);
    let bad = pb::VerifyIdentityRequest { method: "a photo".into(), ..verify.clone() };
    assert_eq!(desk.verify_identity(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let status = desk.verify_identity(verify).await.unwrap().into_inner().status.unwrap();
    assert_eq!(status.state, "completed");
    assert!(status.identity.contains("id-document"), "{}", status.identity);
    let (answer, _) = report(&mut outsider, aid, asecret).await;
    let own = world.scored(clear, 0.602, 2.0);
    assert_eq!(answer.records.len(), own.len());
    assert!(answer.records.iter().all(|r| r.template.is_some()), "the templates asked for, after identity");
    assert!(answer.identity.contains("privacy desk"), "{}", answer.identity);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_stale_captures_are_refused_and_a_fresh_one_opens_the_answer() {
    let clock = Arc::new(ManualClock::new(Timestamp::now()));
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let c = clock.clone();
    let server = Server::start_with(dirs, with_tokens(path, move |cfg| cfg.clock = c.clone())).await;
    let world = enrol(&server, &t.operator).await;
    let p = world.clear_cut(0);
    let selfie = probe(world.population.probe(p));
    let mut rights: Rights = RightsServiceClient::new(server.channel_as(None).await);
    let request = |capture| pb::SubmitAccessRequestRequest {
        probes: selfie.clone(),
        contact: "me@example.org".into(),
        jurisdiction_claim: "FR".into(),
        include_templates: false,
        capture,
    };
    let terms = Terms {
        kind: Kind::Access,
        contact: "me@example.org",
        jurisdiction_claim: "FR",
        include_templates: false,
        never_enrol_again: false,
    };
    let challenge = |r: pb::BeginCaptureResponse| -> [u8; 32] { r.challenge.as_slice().try_into().unwrap() };
    let sign = |key: &ed25519_dalek::SigningKey, name: &str, challenge: [u8; 32], terms: &Terms<'_>, t: &[f32]| {
        let c = sign_capture(key, name, challenge, terms, &[t]);
        pb::Capture {
            challenge: c.challenge.to_vec(),
            key: c.key,
            signatures: c.signatures.iter().map(|s| s.to_vec()).collect(),
        }
    };
    let begin = |rights: &mut Rights| {
        let mut rights = rights.clone();
        async move { challenge(rights.begin_capture(pb::BeginCaptureRequest {}).await.unwrap().into_inner()) }
    };
    let refused = |r: Result<tonic::Response<pb::SubmitAccessRequestResponse>, tonic::Status>| {
        let s = r.expect_err("refused");
        (s.code(), s.message().to_string())
    };

    // A fresh, valid capture: the person's own answer.
    let good = signed_access(&mut rights, request(None)).await;
    let replay = good.clone();
    let sub = rights.submit_access_request(good).await.unwrap().into_inner();
    let status = wait(&mut rights, &sub.request_id, &sub.request_secret).await;
    assert_eq!(status.state, "completed");
    assert_eq!(status.matched as usize, world.scored(p, 0.602, 2.0).len());
    assert!(status.identity.contains(CAPTURE_APP), "{}", status.identity);

    // The same signatures again: the challenge is used up.
    let (code, message) = refused(rights.submit_access_request(replay).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("already used"), "{message}");
    // A challenge never issued.
    let (code, message) = refused(
        rights
            .submit_access_request(request(Some(sign(&capture_key(), CAPTURE_APP, [3; 32], &terms, &selfie[0].values))))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("not issued"), "{message}");
    // An expired challenge.
    let stale = begin(&mut rights).await;
    clock.set(Timestamp::now() + jiff::SignedDuration::from_secs(301));
    let (_, message) = refused(
        rights
            .submit_access_request(request(Some(sign(&capture_key(), CAPTURE_APP, stale, &terms, &selfie[0].values))))
            .await,
    );
    assert!(message.contains("expired"), "{message}");
    // A key the server does not trust, and a trusted name signed by another key.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let c = begin(&mut rights).await;
    let (code, message) = refused(
        rights.submit_access_request(request(Some(sign(&stranger, "my-own-app", c, &terms, &selfie[0].values)))).await,
    );
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("not trusted"), "{message}");
    let c = begin(&mut rights).await;
    let (_, message) = refused(
        rights.submit_access_request(request(Some(sign(&stranger, CAPTURE_APP, c, &terms, &selfie[0].values)))).await,
    );
    assert!(message.contains("does not verify"), "{message}");
    // A real signature over another template (the app signed someone else's capture).
    let other = world.population.probe(world.clear_cut(p + 1)).to_vec();
    let c = begin(&mut rights).await;
    let (_, message) = refused(
        rights.submit_access_request(request(Some(sign(&capture_key(), CAPTURE_APP, c, &terms, &other)))).await,
    );
    assert!(message.contains("does not verify"), "{message}");
    // A capture made for another contact (the answer redirected).
    let c = begin(&mut rights).await;
    let elsewhere = Terms { contact: "stalker@example.org", ..terms };
    let (_, message) = refused(
        rights
            .submit_access_request(request(Some(sign(&capture_key(), CAPTURE_APP, c, &elsewhere, &selfie[0].values))))
            .await,
    );
    assert!(message.contains("does not verify"), "{message}");
    // A malformed one.
    let bad = pb::Capture { challenge: vec![1; 5], key: CAPTURE_APP.into(), signatures: vec![vec![0; 64]] };
    let (code, _) = refused(rights.submit_access_request(request(Some(bad))).await);
    assert_eq!(code, Code::InvalidArgument);

    // Nothing the refused captures sent was stored.
    let mut desk: Rights = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    assert_eq!(desk.list_requests(pb::ListRequestsRequest::default()).await.unwrap().into_inner().requests.len(), 1);
    server.stop().await;
}

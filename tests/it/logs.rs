//! What reaches the logs: at TRACE level, for every crate, while templates with a distinctive
//! source and idempotency key are enrolled, searched, read back and refused, and a person asks
//! for access, erasure (both purges) and an attestation, the captured output holds ids and
//! counts but no source URI, idempotency key, contact, request secret, token or template value.
use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use oubli::grpc::pb;

use crate::harness::{Dirs, Server, seeded, stream_of};

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_template_source_or_key() {
    let captured = Capture(Arc::new(Mutex::new(Vec::new())));
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The only test that installs a subscriber: it hears every test running beside it too.
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");

    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let canary_uri = "https://leak-canary-7c1f.example/alice/holiday.jpg";
    let canary_key = "idem-canary-93b2e";
    let (mut requests, vectors) = seeded(3, 77);
    for r in &mut requests {
        r.provenance.as_mut().expect("provenance").source_uri = canary_uri.into();
    }
    requests[0].idempotency_key = canary_key.into();
    let id = client.enroll(requests[0].clone()).await.expect("enrol").into_inner().record_id;
    client.enroll_stream(stream_of(requests[1..].to_vec())).await.expect("stream");
    let probe = pb::Embedding { values: vectors[0].clone() };
    client.search(pb::SearchRequest { probe: Some(probe), k: 3, min_score: None, exact: false }).await.expect("search");
    client.get(pb::GetRequest { record_id: id.clone(), include_embedding: true }).await.expect("get");
    let mut bad = requests[2].clone();
    bad.provenance.as_mut().expect("provenance").jurisdiction = "XX".into();
    client.enroll(bad).await.expect_err("refused");

    // The rights workflows too: an access request, an erasure with its purges, an attestation.
    let canary_contact = "contact-canary-51d0@example.org";
    let mut rights = pb::rights_service_client::RightsServiceClient::new(server.channel().await);
    let request = pb::SubmitAccessRequestRequest {
        probes: vec![pb::Embedding { values: vectors[1].clone() }],
        contact: canary_contact.into(),
        jurisdiction_claim: "FR".into(),
        include_templates: true,
        capture: None,
    };
    let request = crate::harness::signed_access(&mut rights, request).await;
    let access = rights.submit_access_request(request).await.expect("access").into_inner();
    let request = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: vectors[1].clone() }],
        contact: canary_contact.into(),
        never_enrol_again: true,
        ..Default::default()
    };
    let request = crate::harness::signed_erasure(&mut rights, request).await;
    let erasure = rights.submit_erasure_request(request).await.expect("erasure").into_inner();
    let wait = |id: &str, secret: &str| pb::GetRequestRequest {
        request_id: id.into(),
        request_secret: secret.into(),
        wait_seconds: 30,
    };
    rights.get_request(wait(&access.request_id, &access.request_secret)).await.expect("answered");
    let status = rights
        .get_request(wait(&erasure.request_id, &erasure.request_secret))
        .await
        .expect("phase 1")
        .into_inner()
        .status
        .unwrap();
    if status.state == "needs_review" {
        // A look-alike relative in the review band: the desk keeps it out of the erasure.
        let review = pb::ReviewRequestRequest {
            request_id: erasure.request_id.clone(),
            approved_record_ids: Vec::new(),
            note: String::new(),
        };
        rights.review_request(review).await.expect("reviewed");
        rights.get_request(wait(&erasure.request_id, &erasure.request_secret)).await.expect("phase 1");
    }
    pb::admin_service_client::AdminServiceClient::new(server.channel().await)
        .run_purge(pb::RunPurgeRequest {})
        .await
        .expect("phase 2");
    rights
        .attest_no_match(pb::AttestNoMatchRequest {
            request_id: erasure.request_id.clone(),
            request_secret: erasure.request_secret.clone(),
        })
        .await
        .expect("attested");
    let token = std::fs::read_to_string(server.dirs.keys.join(oubli::grpc::LOCAL_TOKEN_FILE)).expect("token");
    server.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(logs.contains("enrolled") && logs.contains(&id), "the capture works: the enrolment and its id are logged");
    assert!(!logs.contains("leak-canary"), "a source URI reached the logs");
    assert!(!logs.contains(canary_key), "an idempotency key reached the logs");
    assert!(logs.contains("erasure phase 2"), "the capture covers the erasure");
    assert!(!logs.contains("contact-canary"), "a contact reached the logs");
    for secret in [&access.request_secret, &erasure.request_secret, &token.trim().to_string()] {
        assert!(!logs.contains(secret.as_str()), "a request secret or a token reached the logs");
    }
    for v in vectors[0][..8].iter().chain(&vectors[1][..8]) {
        for text in [format!("{v}"), format!("{v:?}")] {
            assert!(!logs.contains(&text), "template value {text} reached the logs");
        }
    }
}

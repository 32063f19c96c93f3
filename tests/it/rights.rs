//! Rights over real gRPC: the role matrix, access requests (exact identity, look-alikes
//! withheld, repeated requests, restart mid-way, deadlines), the ingest policy, the audit trail.
use std::sync::Arc;

use jiff::Timestamp;
use oubli::{
    grpc::pb::{
        self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
        templates_service_client::TemplatesServiceClient,
    },
    rights::{
        auth::{Role, Tokens},
        request::ManualClock,
    },
    synth::{Population, PopulationConfig},
};
use tonic::Code;

use crate::harness::{Configure, Dirs, Server, files_under, oubli, stream_of};

/// One token per role, in a tokens file in the temp dir.
pub struct Tokens4 {
    pub operator: String,
    pub operator_b: String,
    pub desk: String,
    pub auditor: String,
    pub admin: String,
}

pub fn tokens(dirs: &Dirs) -> (std::path::PathBuf, Tokens4) {
    let path = dirs.keys.parent().expect("temp dir").join("tokens.toml");
    let t = Tokens4 {
        operator: Tokens::add(&path, "police-a", &[Role::Operator]).unwrap(),
        operator_b: Tokens::add(&path, "police-b", &[Role::Operator]).unwrap(),
        desk: Tokens::add(&path, "desk", &[Role::PrivacyDesk]).unwrap(),
        auditor: Tokens::add(&path, "auditor", &[Role::Auditor]).unwrap(),
        admin: Tokens::add(&path, "admin", &[Role::Admin]).unwrap(),
    };
    (path, t)
}

pub fn with_tokens(path: std::path::PathBuf, more: impl Fn(&mut oubli::Config) + Send + Sync + 'static) -> Configure {
    Arc::new(move |c: &mut oubli::Config| {
        c.tokens_file = Some(path.clone());
        more(c);
    })
}

/// Calls `path` with an empty message (valid protobuf for every request type) and returns the
/// status code: the gate's decision when it refuses, the handler's otherwise.
async fn call(server: &Server, path: &'static str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(server.raw_channel().await);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(());
    if let Some(t) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn every_method_answers_each_role_as_the_role_table_says() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let table_len = check_role_table(&server, &t).await;
    // Every one of those calls is in the audit trail with its caller and outcome.
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.auditor)).await);
    // (Each listing is itself audited: read up to the calls above, no further.)
    let calls = (table_len * 6) as u64;
    let mut events = Vec::new();
    while (events.len() as u64) < calls {
        let after = events.last().map_or(0, |e: &pb::AuditEvent| e.seq);
        let page =
            admin.list_audit_events(pb::ListAuditEventsRequest { after, limit: 100 }).await.unwrap().into_inner();
        events.extend(page.events.into_iter().filter(|e| e.seq <= calls));
    }
    assert_eq!(events.len() as u64, calls, "one event per call above");
    let refused = events
        .iter()
        .filter(|e| {
            e.caller == "police-a" && e.method == "/oubli.v1.RightsService/ListRequests" && e.code == "PermissionDenied"
        })
        .count();
    assert_eq!(refused, 1);
    assert!(events.iter().any(|e| e.caller == "anonymous" && e.code == "Unauthenticated"));
    assert!(events.iter().all(|e| !e.call_id.is_empty() && e.at.is_some()));
    server.stop().await;
}

/// The role table holds while the server is busy: operators enrolling and searching, people
/// submitting access requests, while two sweeps of the whole matrix run (which also rotate keys
/// and run purges as admin). Nothing the load did fails, and every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_role_table_holds_under_load() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server =
        Arc::new(Server::start_with(dirs, with_tokens(path, |c| c.rights.submissions_per_minute = 1_000_000)).await);
    let (requests, values) = crate::harness::seeded(240, 11);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for (task, (slice, probes)) in requests.chunks(60).zip(values.chunks(60)).enumerate() {
        let (server, token, stop) = (server.clone(), t.operator.clone(), stop.clone());
        let (slice, probes) = (slice.to_vec(), probes.to_vec());
        load.spawn(async move {
            let mut client = TemplatesServiceClient::new(server.channel_as(Some(&token)).await);
            let mut ids = Vec::new();
            for (request, probe) in slice.into_iter().zip(probes).cycle() {
                let stopped = stop.load(std::sync::atomic::Ordering::Relaxed);
                if (stopped && ids.len() >= 60) || ids.len() == 1000 {
                    break;
                }
                let mut request = request;
                request.idempotency_key = format!("load-{task}-{}", ids.len());
                ids.push(client.enroll(request).await.expect("enrol under load").into_inner().record_id);
                let search =
                    pb::SearchRequest { probe: Some(pb::Embedding { values: probe }), k: 5, ..Default::default() };
                let hits = client.search(search).await.expect("search under load").into_inner().hits;
                assert!(!hits.is_empty(), "the enrolled face is found");
            }
            ids
        });
    }
    {
        let (server, stop, probe) = (server.clone(), stop.clone(), values[0].clone());
        load.spawn(async move {
            let mut rights = RightsServiceClient::new(server.channel_as(None).await);
            for _ in 0..200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                submit(&mut rights, &probe).await;
            }
            Vec::new()
        });
    }
    let sweeps = tokio::join!(check_role_table(&server, &t), check_role_table(&server, &t));
    assert_eq!(sweeps.0, sweeps.1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    while let Some(ids) = load.join_next().await {
        acknowledged.extend(ids.expect("no load task failed"));
    }
    assert!(acknowledged.len() >= 240);
    let mut client = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for id in acknowledged {
        client
            .get(pb::GetRequest { record_id: id, ..Default::default() })
            .await
            .expect("every acknowledged record reads back");
    }
}

/// Calls every method with no token, a forged token and each role's token, and checks each
/// answer against the role table, written out here independently of the server's. Returns the
/// number of methods (each called 6 times).
async fn check_role_table(server: &Server, t: &Tokens4) -> usize {
    use Role::*;
    // The expected table, written out independently of the server's.
    let public: &[Role] = &[];
    let table: &[(&'static str, Option<&[Role]>)] = &[
        ("/oubli.v1.TemplatesService/Enroll", Some(&[Operator])),
        ("/oubli.v1.TemplatesService/EnrollStream", Some(&[Operator])),
        ("/oubli.v1.TemplatesService/Get", Some(&[Operator])),
        ("/oubli.v1.TemplatesService/Search", Some(&[Operator])),
        ("/oubli.v1.TemplatesService/Stats", Some(&[Auditor, Admin])),
        ("/oubli.v1.TransparencyService/GetCheckpoint", None),
        ("/oubli.v1.TransparencyService/GetVerifierKey", None),
        ("/oubli.v1.TransparencyService/GetInclusionProof", None),
        ("/oubli.v1.TransparencyService/GetConsistencyProof", None),
        ("/oubli.v1.TransparencyService/GetEntries", None),
        ("/oubli.v1.TransparencyService/GetReceipt", None),
        ("/oubli.v1.RightsService/SubmitAccessRequest", None),
        ("/oubli.v1.RightsService/GetRequest", None),
        ("/oubli.v1.RightsService/GetAccessReport", None),
        ("/oubli.v1.RightsService/ListRequests", Some(&[PrivacyDesk, Auditor])),
        ("/oubli.v1.RightsService/ReviewRequest", Some(&[PrivacyDesk])),
        ("/oubli.v1.RightsService/DenyRequest", Some(&[PrivacyDesk])),
        ("/oubli.v1.RightsService/ExtendRequest", Some(&[PrivacyDesk])),
        ("/oubli.v1.RightsService/SubmitErasureRequest", None),
        ("/oubli.v1.RightsService/GetErasureReceipts", None),
        ("/oubli.v1.RightsService/AttestNoMatch", None),
        ("/oubli.v1.NotificationsService/ListNotifications", Some(&[Operator])),
        ("/oubli.v1.NotificationsService/AckNotification", Some(&[Operator])),
        ("/oubli.v1.AdminService/ListAuditEvents", Some(&[Auditor])),
        ("/oubli.v1.AdminService/GetPolicy", Some(&[Admin, Auditor])),
        ("/oubli.v1.AdminService/ReloadPolicy", Some(&[Admin])),
        ("/oubli.v1.AdminService/SweepPolicy", Some(&[Admin])),
        ("/oubli.v1.AdminService/RotateKeys", Some(&[Admin])),
        ("/oubli.v1.AdminService/RunPurge", Some(&[Admin])),
    ];
    let callers: [(Option<Role>, &str); 4] = [
        (Some(Operator), &t.operator),
        (Some(PrivacyDesk), &t.desk),
        (Some(Auditor), &t.auditor),
        (Some(Admin), &t.admin),
    ];
    for (path, roles) in table {
        // No token: refused as unauthenticated unless public. A made-up token: always refused.
        let anonymous = call(server, path, None).await;
        match roles {
            Some(_) => assert_eq!(anonymous, Code::Unauthenticated, "{path} without a token"),
            None => {
                assert!(!matches!(anonymous, Code::Unauthenticated | Code::PermissionDenied), "{path}: {anonymous:?}")
            }
        }
        assert_eq!(call(server, path, Some("oubli_forged")).await, Code::Unauthenticated, "{path} forged token");
        for (role, token) in &callers {
            let role = role.expect("a role");
            let code = call(server, path, Some(token)).await;
            let allowed = roles.unwrap_or(public).contains(&role) || roles.is_none();
            if allowed {
                assert!(!matches!(code, Code::Unauthenticated | Code::PermissionDenied), "{path} as {role}: {code:?}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{path} as {role}");
            }
        }
    }
    table.len()
}

/// A seeded population with look-alike families, enrolled by police-a.
pub struct World {
    pub population: Population,
    pub ids: Vec<String>,
}

pub fn population() -> Population {
    let config = PopulationConfig {
        seed: 7,
        identities: 150,
        samples_per_identity: 3,
        probes_per_identity: 1,
        ..Default::default()
    };
    Population::generate(&config).unwrap()
}

pub async fn enrol(server: &Server, token: &str) -> World {
    let population = population();
    let (requests, _) = crate::harness::requests(&population);
    let mut client = TemplatesServiceClient::new(server.channel_as(Some(token)).await);
    let ids = client.enroll_stream(stream_of(requests)).await.unwrap().into_inner().record_ids;
    World { population, ids }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl World {
    /// The first probe from `from` on of a person whose strict matches are all theirs and who
    /// has no review-band match.
    pub fn clear_cut(&self, from: usize) -> usize {
        let (strict, review) = (0.602_f32, 0.310_f32);
        (from..self.population.probe_labels.len())
            .find(|&p| {
                let label = self.population.probe_labels[p];
                let strict_hits = self.scored(p, strict, 2.0);
                !strict_hits.is_empty()
                    && strict_hits.iter().all(|(_, l)| *l == label)
                    && self.scored(p, review, strict).is_empty()
            })
            .expect("a clear-cut person in the population")
    }

    /// Record ids scoring at least `min` (and below `max`) against probe `p`, with their labels.
    pub fn scored(&self, p: usize, min: f32, max: f32) -> Vec<(String, u32)> {
        let probe = self.population.probe(p);
        (0..self.population.len())
            .filter(|&i| {
                let s = dot(probe, self.population.sample(i));
                s >= min && s < max
            })
            .map(|i| (self.ids[i].clone(), self.population.labels[i]))
            .collect()
    }
}

/// An access request by `probe` alone, with no capture (it waits for the desk's identity check).
pub async fn submit_unsigned(
    rights: &mut RightsServiceClient<oubli::grpc::AuthChannel>,
    probe: &[f32],
) -> (String, String) {
    let request = pb::SubmitAccessRequestRequest {
        probes: vec![pb::Embedding { values: probe.to_vec() }],
        contact: "jeanne@example.org".into(),
        jurisdiction_claim: "FR".into(),
        ..Default::default()
    };
    let r = rights.submit_access_request(request).await.unwrap().into_inner();
    (r.request_id, r.request_secret)
}

/// An access request by `probe`, signed by the trusted test capture application.
pub async fn submit(rights: &mut RightsServiceClient<oubli::grpc::AuthChannel>, probe: &[f32]) -> (String, String) {
    let request = pb::SubmitAccessRequestRequest {
        probes: vec![pb::Embedding { values: probe.to_vec() }],
        contact: "jeanne@example.org".into(),
        jurisdiction_claim: "FR".into(),
        include_templates: false,
        capture: None,
    };
    let request = crate::harness::signed_access(rights, request).await;
    let r = rights.submit_access_request(request).await.unwrap().into_inner();
    (r.request_id, r.request_secret)
}

pub async fn wait(
    rights: &mut RightsServiceClient<oubli::grpc::AuthChannel>,
    id: &str,
    secret: &str,
) -> pb::RequestStatus {
    rights
        .get_request(pb::GetRequestRequest { request_id: id.into(), request_secret: secret.into(), wait_seconds: 30 })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

pub async fn report(
    rights: &mut RightsServiceClient<oubli::grpc::AuthChannel>,
    id: &str,
    secret: &str,
) -> (oubli::rights::report::AccessReport, String) {
    let r = rights
        .get_access_report(pb::GetAccessReportRequest { request_id: id.into(), request_secret: secret.into() })
        .await
        .unwrap()
        .into_inner();
    (serde_json::from_str(&r.report_json).expect("a report"), r.receipt_json)
}

#[tokio::test]
async fn an_access_request_answers_exactly_the_person_s_records_with_sources_and_recipients() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let strict = 0.602_f32;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let expected: std::collections::BTreeSet<String> =
        world.scored(person, strict, 2.0).into_iter().map(|(id, _)| id).collect();

    // Two agencies search for the face; police-b only sees the top hit.
    let mut police_a = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let mut police_b = TemplatesServiceClient::new(server.channel_as(Some(&t.operator_b)).await);
    let search = |k| pb::SearchRequest {
        probe: Some(pb::Embedding { values: probe.clone() }),
        k,
        min_score: Some(strict),
        exact: false,
    };
    police_a.search(search(10)).await.unwrap();
    let top = police_b.search(search(1)).await.unwrap().into_inner().hits[0].record_id.clone();

    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let mut answers = Vec::new();
    for _ in 0..3 {
        // The same person asks three times the same day: three full answers.
        let (id, secret) = submit(&mut rights, &probe).await;
        let status = wait(&mut rights, &id, &secret).await;
        assert_eq!(status.state, "completed");
        assert_eq!(status.withheld, 0);
        let (report, receipt) = report(&mut rights, &id, &secret).await;
        let got: std::collections::BTreeSet<String> = report.records.iter().map(|r| r.record_id.clone()).collect();
        assert_eq!(got, expected, "exactly the person's records above the strict threshold");
        for r in &report.records {
            assert!(r.source_uri.starts_with("https://"), "the source is given");
            assert!(!r.collected_at.is_empty() && !r.legal_basis.is_empty() && !r.jurisdiction.is_empty());
            let who: Vec<&str> = r.recipients.iter().map(|d| d.client.as_str()).collect();
            assert!(who.contains(&"police-a"), "police-a searched every one: {who:?}");
            assert_eq!(who.contains(&"police-b"), r.record_id == top, "police-b received only the top hit");
            assert!(r.enrolment_log.leaf_index.is_some());
        }
        assert!(report.supervisory_authority.contains("CNIL"));
        assert!(report.recipients.contains(&"police-a".to_string()));
        answers.push((id, secret, receipt));
    }

    // The receipt of an answer verifies offline with the CLI.
    let dir = tempfile::tempdir().unwrap();
    let receipt_path = dir.path().join("receipt.json");
    std::fs::write(&receipt_path, &answers[0].2).unwrap();
    let mut log = pb::transparency_service_client::TransparencyServiceClient::new(server.channel_as(None).await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key_path = dir.path().join("log.vkey");
    std::fs::write(&key_path, key).unwrap();
    let (ok, out) = oubli(&["verify", receipt_path.to_str().unwrap(), "--verifier-key", key_path.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("access-answered"), "{out}");

    // Only the secret (or the desk) opens a request.
    let wrong = rights
        .get_access_report(pb::GetAccessReportRequest {
            request_id: answers[0].0.clone(),
            request_secret: answers[1].1.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let mut desk = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    let seen = desk
        .get_request(pb::GetRequestRequest { request_id: answers[0].0.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(seen.contact, "jeanne@example.org", "the desk sees the contact");

    // No contact detail, source URI or template value is in the audit trail, nor in clear
    // anywhere in the data dir (requests and recipients are encrypted).
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.auditor)).await);
    let trail = format!(
        "{:?}",
        admin
            .list_audit_events(pb::ListAuditEventsRequest { after: 0, limit: 1000 })
            .await
            .unwrap()
            .into_inner()
            .events
    );
    let source = world.population.provenance[0].source_uri().to_string();
    assert!(!trail.contains("jeanne@") && !trail.contains(&source));
    assert!(trail.contains("police-b") && trail.contains("/oubli.v1.RightsService/SubmitAccessRequest"));
    let dirs = server.stop().await;
    let data = dirs.data.clone();
    let needle_bytes: Vec<u8> = probe[..4].iter().flat_map(|v| v.to_le_bytes()).collect();
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).unwrap();
        // (Client names are in the audit trail by design: it records who called.)
        for needle in [b"jeanne@example.org".as_slice(), source.as_bytes(), &needle_bytes] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds a secret in clear", file.display());
        }
    }
}

#[tokio::test]
async fn a_look_alike_s_records_are_withheld_until_the_desk_approves_them() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let (strict, review) = (0.602_f32, 0.310_f32);
    // A person with a stranger (a look-alike relative) in the review band.
    let (person, stranger_record) = (0..world.population.probe_labels.len())
        .find_map(|p| {
            let label = world.population.probe_labels[p];
            world.scored(p, review, strict).into_iter().find(|(_, l)| *l != label).map(|(id, _)| (p, id))
        })
        .expect("a look-alike in some review band");
    let probe = world.population.probe(person).to_vec();
    let own_band: Vec<String> = world
        .scored(person, review, strict)
        .into_iter()
        .filter(|(_, l)| *l == world.population.probe_labels[person])
        .map(|(id, _)| id)
        .collect();

    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit(&mut rights, &probe).await;
    let status = wait(&mut rights, &id, &secret).await;
    assert_eq!(status.state, "needs_review");
    assert!(status.withheld >= 1 && status.review_band.is_empty(), "the person sees a count, not the records");
    let (partial, receipt) = report(&mut rights, &id, &secret).await;
    assert!(receipt.is_empty(), "no receipt before the answer is complete");
    assert!(partial.records.iter().all(|r| r.record_id != stranger_record), "never disclosed before review");

    // The desk sees the band, confirms the person's own records only.
    let mut desk = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    let band = desk
        .get_request(pb::GetRequestRequest { request_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .review_band;
    assert!(band.iter().any(|c| c.record_id == stranger_record));
    let done = desk
        .review_request(pb::ReviewRequestRequest {
            request_id: id.clone(),
            approved_record_ids: own_band.clone(),
            note: "compared the photos".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(done.state, "completed");
    let (fin, receipt) = report(&mut rights, &id, &secret).await;
    assert!(!receipt.is_empty());
    assert!(fin.records.iter().all(|r| r.record_id != stranger_record), "the look-alike stays withheld");
    for own in &own_band {
        assert!(fin.records.iter().any(|r| &r.record_id == own), "approved records are disclosed");
    }
    assert_eq!(fin.withheld_for_review, band.len() - own_band.len());
    // A record outside the band cannot be approved; a completed request cannot be reviewed again.
    let again = desk
        .review_request(pb::ReviewRequestRequest { request_id: id, approved_record_ids: vec![], note: String::new() })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn a_request_survives_a_restart_mid_way_and_completes() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let held = with_tokens(path.clone(), |c| c.process_requests = false);
    let server = Server::start_with(dirs, held).await;
    let world = enrol(&server, &t.operator).await;
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit(&mut rights, world.population.probe(0)).await;
    let status = rights
        .get_request(pb::GetRequestRequest { request_id: id.clone(), request_secret: secret.clone(), wait_seconds: 0 })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, "received", "the worker is off: the server stops with the request unanswered");

    let server = server.restart_with(with_tokens(path, |_| {})).await;
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let status = wait(&mut rights, &id, &secret).await;
    assert!(matches!(status.state.as_str(), "completed" | "needs_review"), "{}", status.state);
    assert!(status.matched >= 1, "the person's records were found after the restart");
    let states: Vec<&str> = status.history.iter().map(|h| h.state.as_str()).collect();
    assert_eq!(&states[..3], ["received", "verifying", "in_progress"]);
    server.stop().await;
}

#[tokio::test]
async fn deadlines_and_the_overdue_list_follow_the_calendar() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let clock = Arc::new(ManualClock::new("2026-01-31T12:00:00Z".parse().unwrap()));
    let c = clock.clone();
    let server = Server::start_with(
        dirs,
        with_tokens(path, move |config| {
            config.clock = c.clone();
            config.process_requests = false;
            config.rights.submissions_per_minute = 2;
        }),
    )
    .await;
    let mut public = RightsServiceClient::new(server.channel_as(None).await);
    let probe = population().probe(0).to_vec();
    let (first, _) = submit_unsigned(&mut public, &probe).await;
    let (second, _) = submit_unsigned(&mut public, &probe).await;
    // A third submission within the minute is refused; a minute later it is accepted.
    let limited = public
        .submit_access_request(pb::SubmitAccessRequestRequest {
            probes: vec![pb::Embedding { values: probe.clone() }],
            contact: "x@example.org".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    clock.set("2026-01-31T12:01:00Z".parse().unwrap());
    submit_unsigned(&mut public, &probe).await;

    let mut desk = RightsServiceClient::new(server.channel_as(Some(&t.desk)).await);
    let due = |s: &pb::RequestStatus| Timestamp::new(s.due_at.unwrap().seconds, 0).unwrap().to_string();
    let status = desk
        .get_request(pb::GetRequestRequest { request_id: first.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(due(&status), "2026-02-28T12:00:00Z", "31 January + one month");

    // The desk extends the second request by a month, with a reason, before the deadline.
    clock.set("2026-02-15T09:00:00Z".parse().unwrap());
    let extended = desk
        .extend_request(pb::ExtendRequestRequest {
            request_id: second.clone(),
            months: 1,
            reason: "many records to check".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(due(&extended), "2026-03-31T12:00:00Z");
    clock.set("2026-02-28T12:00:00Z".parse().unwrap());
    assert!(overdue(&mut desk).await.is_empty(), "due at that very second: not yet overdue");
    clock.set("2026-02-28T12:00:01Z".parse().unwrap());
    assert_eq!(overdue(&mut desk).await, vec![first.clone()]);
    // Past the one-month deadline, no extension is possible any more.
    let late = desk
        .extend_request(pb::ExtendRequestRequest { request_id: first.clone(), months: 2, reason: "late".into() })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    clock.set("2026-04-01T00:00:00Z".parse().unwrap());
    let late_ones = overdue(&mut desk).await;
    assert!(late_ones.contains(&first) && late_ones.contains(&second), "past the extended deadline too");
    // A denied request is final, so never overdue.
    desk.deny_request(pb::DenyRequestRequest {
        request_id: first.clone(),
        reason: "identity could not be verified".into(),
    })
    .await
    .unwrap();
    assert!(!overdue(&mut desk).await.contains(&first));
    server.stop().await;
}

async fn overdue(desk: &mut RightsServiceClient<oubli::grpc::AuthChannel>) -> Vec<String> {
    desk.list_requests(pb::ListRequestsRequest { overdue_only: true, state: String::new() })
        .await
        .unwrap()
        .into_inner()
        .requests
        .into_iter()
        .map(|r| r.request_id)
        .collect()
}

#[tokio::test]
async fn the_lawful_policy_refuses_scraped_faces_by_rule_and_quarantines_unknown_jurisdictions() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(
        dirs,
        with_tokens(path, |c| c.rights.policy = oubli::rights::PolicySource::Profile("lawful".into())),
    )
    .await;
    let mut op = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    let values = population().sample(0).to_vec();
    let scraped = crate::harness::request(values.clone(), "https://social.example/p/1.jpg");
    let refused = op.enroll(scraped).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("rule legal-basis"), "{}", refused.message());

    let consented = |jurisdiction: &str| {
        let mut r = crate::harness::request(values.clone(), "https://clinic.example/enrol/1");
        let p = r.provenance.as_mut().unwrap();
        p.source_kind = pb::SourceKind::ConsentedEnrolment.into();
        p.legal_basis = pb::LegalBasis::Consent.into();
        p.jurisdiction = jurisdiction.into();
        r
    };
    op.enroll(consented("FR")).await.unwrap();
    op.enroll(consented("unknown")).await.unwrap();
    // The quarantined record is kept out of operator searches.
    let hits = op
        .search(pb::SearchRequest {
            probe: Some(pb::Embedding { values: values.clone() }),
            k: 10,
            min_score: None,
            exact: false,
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1, "only the record with a known jurisdiction");
    // The admin sees the refusal counted.
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    let policy = admin.get_policy(pb::GetPolicyRequest {}).await.unwrap().into_inner().policy.unwrap();
    assert_eq!(policy.name, "lawful");
    assert_eq!(policy.refusals.get("legal-basis"), Some(&1));
    // ...and a rights request still finds both records (completeness).
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit(&mut rights, &values).await;
    let status = wait(&mut rights, &id, &secret).await;
    assert_eq!(status.matched, 2);
    let (report, _) = report(&mut rights, &id, &secret).await;
    assert_eq!(report.records.iter().filter(|r| r.quarantined).count(), 1);
    server.stop().await;
}

// Multi-threaded: the CLI runs as a blocking child process while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_follows_and_reports_an_access_request() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path, |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let tmp = tempfile::tempdir().unwrap();
    let probe = tmp.path().join("selfie.json");
    std::fs::write(&probe, serde_json::to_string(&world.population.probe(0)).unwrap()).unwrap();
    let addr = server.addr.to_string();
    // The CLI plays the capture application the test server trusts.
    let key = tmp.path().join("capture.key");
    let seed = hex::encode(crate::harness::capture_key().to_bytes());
    std::fs::write(&key, format!("name = \"{}\"\nsecret_key = \"{seed}\"\n", crate::harness::CAPTURE_APP)).unwrap();
    let capture = tmp.path().join("capture.json");
    let (ok, out) = oubli(&[
        "--server",
        &addr,
        "capture",
        "--key",
        key.to_str().unwrap(),
        "--probe",
        probe.to_str().unwrap(),
        "--contact",
        "jeanne@example.org",
        "--jurisdiction",
        "FR",
        "--out",
        capture.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&capture).unwrap().permissions().mode() & 0o777, 0o600);
    let (ok, out) =
        oubli(&["--server", &addr, "--json", "access", "submit", "--capture", capture.to_str().unwrap(), "--wait"]);
    assert!(ok, "{out}");
    let submitted: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let (id, secret) = (submitted["request_id"].as_str().unwrap(), submitted["request_secret"].as_str().unwrap());
    assert!(matches!(submitted["state"].as_str(), Some("completed" | "needs_review")), "{out}");

    let (ok, out) = oubli(&["--server", &addr, "access", "status", id, "--secret", secret]);
    assert!(ok && out.contains("matched:"), "{out}");
    let report_dir = tmp.path().join("report");
    let (ok, out) =
        oubli(&["--server", &addr, "access", "report", id, "--secret", secret, "--out", report_dir.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("# Access report") && out.contains("CNIL"), "{out}");
    assert!(report_dir.join("report.json").exists() && report_dir.join("report.md").exists());
    let (ok, out) = oubli(&["--server", &addr, "access", "report", id, "--secret", "00"]);
    assert!(!ok && out.contains("PermissionDenied"), "{out}");

    // The desk's list, with and without a token; the audit trail; the policy, offline.
    let (ok, out) = oubli(&["--server", &addr, "--token", &t.desk, "requests", "list"]);
    assert!(ok && out.contains(id), "{out}");
    let (ok, out) = oubli(&["--server", &addr, "--token", &t.desk, "requests", "list", "--overdue"]);
    assert!(ok && out.contains("0 request(s)"), "{out}");
    let (ok, out) = oubli(&["--server", &addr, "--token-file", "/nonexistent", "requests", "list"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = oubli(&["--server", &addr, "--token", &t.auditor, "audit", "tail", "-n", "50"]);
    assert!(ok && out.contains("/oubli.v1.RightsService/SubmitAccessRequest") && out.contains("anonymous"), "{out}");
    let (ok, out) = oubli(&["--server", &addr, "--token", &t.admin, "policy", "show"]);
    assert!(ok && out.contains("name = \"permissive\""), "{out}");
    let lines = tmp.path().join("provenance.jsonl");
    let jsonl: String = (0..4)
        .map(|i| {
            serde_json::to_string(&oubli::synth::files::ProvenanceLine::from(&world.population.provenance[i])).unwrap()
                + "\n"
        })
        .collect();
    std::fs::write(&lines, jsonl).unwrap();
    let (ok, out) = oubli(&["policy", "check", "lawful", "--provenance", lines.to_str().unwrap()]);
    assert!(ok && out.contains("refused by rule legal-basis"), "{out}");
    server.stop().await;
}

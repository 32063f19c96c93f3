//! The access and erasure state machines on the in-memory store: every transition, and a crash
//! after every write of a pipeline followed by a restart, in milliseconds. The same flows run
//! over gRPC and RocksDB (with SIGKILL at named failpoints) in tests/it.
use std::{sync::Arc, time::Duration};

use jiff::Timestamp;

use super::{
    PolicySource, Rights, Settings, Submitted,
    auth::{Caller, Role},
    erasure::ErasureTarget,
    identity::Method,
    request::{ManualClock, RequestId, State},
};
use crate::{
    embedding::Embedding,
    engine::{Engine, IndexChoice, IndexConfig},
    record::{NewRecord, Provenance, RecordId},
    store::{MemoryStore, RecordStore},
    transparency::{event::Entry, note::VerifierKey, receipt},
};

const DIM: usize = 8;

/// A unit vector mostly along axis `axis`, tilted by `tilt` towards axis `axis + 1`.
fn face(axis: usize, tilt: f32) -> Embedding {
    let mut v = vec![0.0; DIM];
    v[axis] = 1.0;
    v[(axis + 1) % DIM] = tilt;
    Embedding::new(v, DIM).unwrap()
}

fn record(face: Embedding, n: usize) -> NewRecord {
    let now = Timestamp::now();
    NewRecord {
        embedding: face,
        provenance: Provenance::scraped(format!("https://photos.example/{n}.jpg"), now).unwrap(),
        idempotency_key: None,
    }
}

/// The person (three photos along axis 0), a look-alike in the review band (score ~0.45
/// against the person's probe), and strangers along other axes.
struct People {
    person: Vec<RecordId>,
    lookalike: RecordId,
    strangers: Vec<RecordId>,
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(DIM, "test.example/log").unwrap())
}

fn open(store: &Arc<MemoryStore>) -> Rights {
    open_with(store, clock(), None)
}

/// The tests' clock, stopped at one instant until a test moves it.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_second(1_800_000_000).unwrap()))
}

/// The workflows over `store` (exact index, permissive policy, no purge window) on `clock`,
/// trusting the capture keys in `capture_keys` if given.
fn open_with(store: &Arc<MemoryStore>, clock: Arc<ManualClock>, capture_keys: Option<std::path::PathBuf>) -> Rights {
    let config = IndexConfig { choice: IndexChoice::Exact, ..IndexConfig::default() };
    let engine = Engine::with_storage(store.clone(), config).unwrap();
    let settings = Settings {
        policy: PolicySource::Profile("permissive".into()),
        purge_window: Duration::ZERO,
        capture_keys,
        ..Settings::default()
    };
    Rights::new(Arc::new(engine), settings, clock).unwrap()
}

fn enrol(rights: &Rights) -> People {
    let records = vec![
        record(face(0, 0.05), 0),
        record(face(0, 0.10), 1),
        record(face(0, 0.15), 2),
        record(face(0, 2.0), 3),
        record(face(3, 0.0), 4),
        record(face(5, 0.1), 5),
    ];
    let ids: Vec<RecordId> = rights.engine().enroll(&records, &[]).unwrap().iter().map(|e| e.id).collect();
    People { person: ids[..3].to_vec(), lookalike: ids[3], strangers: ids[4..].to_vec() }
}

fn desk() -> Caller {
    Caller { client: "desk".into(), roles: vec![Role::PrivacyDesk] }
}

/// The privacy desk establishes the identity of a new request's sender (at once, so the
/// request then runs as it would with a signed capture).
fn identified(rights: &Rights, sub: Submitted) -> Submitted {
    rights.verify_identity(&desk(), sub.id, Method::IdDocument, "passport seen at the desk".into()).unwrap();
    sub
}

/// An access request by `probes`, its sender's identity established by the desk.
fn ask(rights: &Rights, probes: Vec<Embedding>) -> Submitted {
    identified(rights, rights.submit_access(probes, "me@example.org".into(), None, false, None).unwrap())
}

/// Runs the worker's steps (process, then the purges) until the request waits for someone.
fn drive(rights: &Rights, id: RequestId) -> Result<State, super::Error> {
    let mut state = rights.request(id, None, true)?.state;
    for _ in 0..8 {
        rights.process(id)?;
        rights.purge_due(true)?;
        state = rights.request(id, None, true)?.state;
        if state.is_final() || state == State::NeedsReview {
            break;
        }
    }
    Ok(state)
}

/// The names of the log's entries, in order.
fn events(rights: &Rights) -> Vec<&'static str> {
    let log = rights.engine().log();
    log.entries(0, log.tree_size())
        .unwrap()
        .iter()
        .map(|(_, bytes)| Entry::decode(bytes).unwrap().event.name())
        .collect()
}

fn count(events: &[&str], name: &str) -> usize {
    events.iter().filter(|e| **e == name).count()
}

fn assert_verifies(rights: &Rights, r: &receipt::Receipt) {
    let key = VerifierKey::parse(&rights.engine().log().verifier_key()).unwrap();
    let checks = receipt::verify(&r.to_json(), &key, None);
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
}

fn states(rights: &Rights, id: RequestId) -> Vec<State> {
    rights.request(id, None, true).unwrap().history.iter().map(|(s, _)| *s).collect()
}

#[test]
fn access_request_without_review_band_is_answered_logged_and_its_probes_dropped() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    // A probe far from the look-alike: only the person's records match.
    let probe = face(0, -0.3);
    let sub = ask(&rights, vec![probe]);
    assert_eq!(sub.view.state, State::Received);
    assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed);
    assert_eq!(states(&rights, sub.id), [State::Received, State::Verifying, State::InProgress, State::Completed]);

    let (view, report, receipt) = rights.report_of(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    assert_eq!((view.matched, view.withheld), (3, 0));
    let report = report.unwrap();
    for id in &people.person {
        assert!(report.contains(&id.to_string()), "the report names each of the person's records");
    }
    assert!(!report.contains(&people.lookalike.to_string()) && !report.contains(&people.strangers[0].to_string()));
    assert_verifies(&rights, &receipt.unwrap());
    assert_eq!(count(&events(&rights), "access-answered"), 1);
    // Processing a completed request again changes nothing.
    assert_eq!(rights.process(sub.id).unwrap(), State::Completed);
    assert_eq!(count(&events(&rights), "access-answered"), 1);
    // The wrong secret opens nothing.
    assert!(matches!(rights.report_of(sub.id, Some("00"), false), Err(super::Error::WrongSecret(_))));
}

#[test]
fn access_request_with_a_lookalike_waits_for_the_desk_which_decides_what_is_disclosed() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let sub = ask(&rights, vec![face(0, 0.1)]);
    assert_eq!(drive(&rights, sub.id).unwrap(), State::NeedsReview);
    let view = rights.request(sub.id, None, true).unwrap();
    assert_eq!(view.review_band.iter().map(|m| m.record_id).collect::<Vec<_>>(), [people.lookalike]);
    assert_eq!(count(&events(&rights), "access-answered"), 0, "nothing is answered before the desk decides");

    // Approving a record outside the band is refused; approving nothing withholds the look-alike.
    let stray = rights.review(&desk(), sub.id, vec![people.strangers[0]], String::new());
    assert!(matches!(stray, Err(super::Error::InvalidRequest(_))));
    let done = rights.review(&desk(), sub.id, Vec::new(), "not the person".into()).unwrap();
    assert_eq!(done.state, State::Completed);
    assert_eq!((done.matched, done.withheld), (3, 1));
    let (_, report, _) = rights.report_of(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    assert!(!report.unwrap().contains(&people.lookalike.to_string()));
    assert_eq!(count(&events(&rights), "access-answered"), 1);
    assert!(matches!(rights.review(&desk(), sub.id, Vec::new(), String::new()), Err(super::Error::WrongState { .. })));
}

#[test]
fn denial_and_extension_are_transitions_with_their_limits() {
    let store = store();
    let rights = open(&store);
    enrol(&rights);
    let sub = ask(&rights, vec![face(0, 0.1)]);
    assert!(rights.extend(sub.id, 3, "busy".into()).is_err(), "three months is more than Art. 12(3) allows");
    let extended = rights.extend(sub.id, 2, "many requests this month".into()).unwrap();
    assert_eq!(extended.extension.unwrap().months, 2);
    assert!(rights.extend(sub.id, 1, "again".into()).is_err(), "two months in all");
    assert!(rights.deny(sub.id, String::new()).is_err(), "a denial needs a reason");
    let denied = rights.deny(sub.id, "manifestly unfounded".into()).unwrap();
    assert_eq!(denied.state, State::Denied);
    assert_eq!(drive(&rights, sub.id).unwrap(), State::Denied, "a final request is left alone");
    assert!(rights.deny(sub.id, "again".into()).is_err());
}

/// Submits an erasure of the person's face; returns the request and its secret.
fn erase_person(rights: &Rights) -> (RequestId, String) {
    let target = ErasureTarget::Probes(vec![face(0, 0.1)]);
    let sub = identified(rights, rights.submit_erasure(target, "me@example.org".into(), None, false, None).unwrap());
    (sub.id, sub.secret.to_hex())
}

/// What must hold once the person's erasure is complete, whatever happened on the way.
fn assert_erased(rights: &Rights, people: &People, id: RequestId, secret: &str) {
    assert_eq!(rights.request(id, None, true).unwrap().state, State::Completed);
    for r in &people.person {
        assert!(rights.engine().get(*r).is_err(), "an erased record is gone");
        assert!(rights.engine().records().get(*r).unwrap().is_none());
    }
    for r in people.strangers.iter().chain([&people.lookalike]) {
        assert!(rights.engine().get(*r).is_ok(), "the desk withheld the look-alike; strangers are untouched");
    }
    let events = events(rights);
    for phase in ["erasure-planned", "erasure-phase-1", "erasure-phase-2"] {
        assert_eq!(count(&events, phase), 1, "{phase} is logged exactly once: {events:?}");
    }
    let (status, phase1, phase2) = rights.erasure_receipts(id, Some(secret), false).unwrap();
    assert_eq!(status.records.len(), 3);
    assert_verifies(rights, &phase1.unwrap());
    assert_verifies(rights, &phase2.unwrap());
}

#[test]
fn erasure_by_probe_goes_through_review_plan_delete_and_both_purges() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let (id, secret) = erase_person(&rights);
    assert_eq!(drive(&rights, id).unwrap(), State::NeedsReview, "the look-alike goes to the desk first");
    assert_eq!(count(&events(&rights), "erasure-planned"), 0, "nothing is planned before the desk decides");
    rights.review(&desk(), id, Vec::new(), "not the person".into()).unwrap();
    assert_eq!(drive(&rights, id).unwrap(), State::Completed);
    assert_eq!(
        states(&rights, id),
        [State::Received, State::Verifying, State::InProgress, State::NeedsReview, State::Erasing, State::Completed]
    );
    assert_erased(&rights, &people, id, &secret);
    // The same face is now erased: nothing left to match.
    let again = ask(&rights, vec![face(0, -0.3)]);
    assert_eq!(drive(&rights, again.id).unwrap(), State::Completed);
    assert_eq!(rights.request(again.id, None, true).unwrap().matched, 0);
}

/// A record of the person enrolled after the plan is found by the post-delete check: the
/// erasure is planned again with it (a second plan leaf), and only then purged and receipted.
#[test]
fn a_match_enrolled_after_the_plan_fails_the_post_delete_check_and_is_planned_again() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let (id, secret) = erase_person(&rights);
    assert_eq!(drive(&rights, id).unwrap(), State::NeedsReview);
    rights.review(&desk(), id, Vec::new(), "not the person".into()).unwrap();
    let late = rights.engine().enroll(&[record(face(0, 0.12), 9)], &[]).unwrap()[0].id;
    assert_eq!(drive(&rights, id).unwrap(), State::Completed);
    assert!(rights.engine().get(late).is_err(), "the late record is erased too");
    let events = events(&rights);
    assert_eq!(count(&events, "erasure-planned"), 2, "{events:?}");
    assert_eq!(count(&events, "erasure-phase-1"), 1, "{events:?}");
    let (status, phase1, _) = rights.erasure_receipts(id, Some(&secret), false).unwrap();
    assert_eq!(status.records.len(), 4);
    assert_eq!(status.earlier_plan_leaves.len(), 1);
    let phase1 = phase1.unwrap();
    assert_verifies(&rights, &phase1);
    let body: receipt::Body = serde_json::from_str(&phase1.body).unwrap();
    assert!(body.done[0].starts_with("4 record(s) deleted"), "{:?}", body.done);
    assert!(
        body.verified.iter().any(|v| v.contains("found 0 at or above the strict threshold")),
        "{:?}",
        body.verified
    );
    assert!(body.done.iter().any(|d| d.starts_with("1 record(s) scored in the review band")), "{:?}", body.done);
    let _ = people;
}

/// A purge whose check fails logs nothing and completes nothing: the request shows an alert
/// (with the attempts) until a retry passes.
#[test]
fn a_failed_purge_check_stops_the_phase_with_a_visible_alert_until_a_retry_passes() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let (id, secret) = erase_person(&rights);
    assert_eq!(drive(&rights, id).unwrap(), State::NeedsReview);
    rights.review(&desk(), id, Vec::new(), "not the person".into()).unwrap();
    rights.process(id).unwrap();
    store.fail_purges(2);
    for attempt in 1..=2 {
        assert!(rights.purge_due(true).is_err(), "the check failed");
        let (status, phase1, _) = rights.erasure_receipts(id, Some(&secret), false).unwrap();
        let alert = status.alert.expect("an alert while the check fails");
        assert!(alert.contains("phase 1") && alert.contains(&format!("failed {attempt} time(s)")), "{alert}");
        assert!(phase1.is_none(), "no receipt says it passed");
        assert_eq!(count(&events(&rights), "erasure-phase-1"), 0);
        let view = rights.request(id, None, true).unwrap();
        assert!(view.alert.is_some_and(|a| a.contains("injected")), "the desk sees it too");
    }
    assert_eq!(drive(&rights, id).unwrap(), State::Completed);
    assert!(rights.erasure_receipts(id, Some(&secret), false).unwrap().0.alert.is_none());
    assert_erased(&rights, &people, id, &secret);
}

/// The process dies after each write of the pipeline in turn; at restart the workflows are
/// reopened over what was written, and the erasure finishes exactly once.
#[test]
fn an_erasure_killed_after_any_write_finishes_once_after_restart() {
    // One run without a crash counts the pipeline's writes.
    let total = {
        let store = store();
        let rights = open(&store);
        enrol(&rights);
        let (id, _) = erase_person(&rights);
        drive(&rights, id).unwrap();
        let before = store.writes();
        rights.review(&desk(), id, Vec::new(), "not the person".into()).unwrap();
        drive(&rights, id).unwrap();
        store.writes() - before
    };
    assert!(total >= 4, "plan, delete, phase 1, phase 2 are separate writes: {total}");
    for crash_at in 0..total {
        let store = store();
        let rights = open(&store);
        let people = enrol(&rights);
        let (id, secret) = erase_person(&rights);
        drive(&rights, id).unwrap();
        store.crash_after(crash_at);
        let outcome = rights.review(&desk(), id, Vec::new(), "not the person".into()).map(|_| ());
        let outcome = outcome.and_then(|()| drive(&rights, id).map(|_| ()));
        assert!(outcome.is_err(), "the crash after write {crash_at} of {total} stops the pipeline");
        drop(rights);

        store.restart().unwrap();
        let rights = open(&store);
        if rights.request(id, None, true).unwrap().state == State::NeedsReview {
            // Killed before the desk's decision was stored: the desk decides again.
            rights.review(&desk(), id, Vec::new(), "not the person".into()).unwrap();
        }
        assert_eq!(drive(&rights, id).unwrap(), State::Completed, "crash after write {crash_at}");
        assert_erased(&rights, &people, id, &secret);
    }
}

#[test]
fn an_access_request_killed_after_any_write_is_answered_once_after_restart() {
    let total = {
        let store = store();
        let rights = open(&store);
        enrol(&rights);
        let sub = ask(&rights, vec![face(0, -0.3)]);
        let before = store.writes();
        drive(&rights, sub.id).unwrap();
        store.writes() - before
    };
    for crash_at in 0..total {
        let store = store();
        let rights = open(&store);
        enrol(&rights);
        let sub = ask(&rights, vec![face(0, -0.3)]);
        store.crash_after(crash_at);
        assert!(drive(&rights, sub.id).is_err());
        drop(rights);
        store.restart().unwrap();
        let rights = open(&store);
        assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed, "crash after write {crash_at}");
        assert_eq!(count(&events(&rights), "access-answered"), 1);
        let (view, report, receipt) = rights.report_of(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
        assert_eq!(view.matched, 3);
        assert!(report.is_some());
        assert_verifies(&rights, &receipt.unwrap());
    }
}

/// A capture-keys file in `dir` trusting the capture key `app` (seed 7), and that key.
fn trust_app(dir: &std::path::Path) -> (std::path::PathBuf, ed25519_dalek::SigningKey) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let mut keys = super::identity::CaptureKeys::default();
    keys.add("app", key.verifying_key()).unwrap();
    let path = dir.join("capture-keys.toml");
    crate::store::private::replace(&path, keys.to_toml().as_bytes()).unwrap();
    (path, key)
}

/// Opens the workflows trusting the capture key `app` (seed 7), its file in `dir`.
fn open_trusting(store: &Arc<MemoryStore>, dir: &std::path::Path) -> (Rights, ed25519_dalek::SigningKey) {
    let (path, key) = trust_app(dir);
    (open_with(store, clock(), Some(path)), key)
}

/// An erasure by `probe` with `never_enrol_again`, signed by capture key `app`.
fn signed_erasure(rights: &Rights, key: &ed25519_dalek::SigningKey, probe: Embedding) -> Submitted {
    use super::identity::{Signed, Terms, sign_capture};
    let terms = Terms {
        kind: super::request::Kind::Erasure,
        contact: "me@example.org",
        jurisdiction_claim: "",
        include_templates: false,
        never_enrol_again: true,
    };
    let (challenge, _) = rights.begin_capture().unwrap();
    let signed = Signed {
        capture: sign_capture(key, "app", challenge, &terms, &[probe.as_slice()]),
        sent: vec![probe.as_slice().to_vec()],
    };
    let target = ErasureTarget::Probes(vec![probe]);
    rights.submit_erasure(target, "me@example.org".into(), None, true, Some(signed)).unwrap()
}

/// What the holder of request `id` can see, every field, without the times.
fn seen_by_holder(rights: &Rights, id: RequestId, secret: &str) -> String {
    let v = rights.request(id, Some(secret), false).unwrap();
    let (_, report, receipt) = rights.report_of(id, Some(secret), false).unwrap();
    let states: Vec<_> = v.history.iter().map(|(s, _)| s.name()).collect();
    format!(
        "{} {} matched={} withheld={} band={} receipt={:?} step={:?} identity={:?} contact={:?} states={states:?} \
         report={} receipt={} busy={}",
        v.kind.name(),
        v.state.name(),
        v.matched,
        v.withheld,
        v.review_band.len(),
        v.receipt_leaf,
        v.erasure_step,
        v.identity,
        v.contact,
        report.is_some(),
        receipt.is_some(),
        v.worker_busy
    )
}

#[test]
fn a_selfie_alone_learns_nothing_whether_or_not_the_face_is_held() {
    // One world holds the person's records, the other does not; a stranger sends the person's
    // photo to both, for access and for erasure.
    let seen: Vec<Vec<String>> = [true, false]
        .into_iter()
        .map(|enrolled| {
            let store = store();
            let rights = open(&store);
            if enrolled {
                enrol(&rights);
            }
            let access = rights.submit_access(vec![face(0, -0.3)], "x@example.org".into(), None, true, None).unwrap();
            let target = ErasureTarget::Probes(vec![face(0, -0.3)]);
            let erasure = rights.submit_erasure(target, "x@example.org".into(), None, false, None).unwrap();
            let mut seen = Vec::new();
            for sub in [&access, &erasure] {
                let secret = sub.secret.to_hex();
                seen.push(seen_by_holder(&rights, sub.id, &secret));
                drive(&rights, sub.id).unwrap();
                seen.push(seen_by_holder(&rights, sub.id, &secret));
                let (status, p1, p2) = rights.erasure_receipts(sub.id, Some(&secret), false).map_or_else(
                    |e| (e.to_string(), None, None),
                    |(s, p1, p2)| {
                        let mut s = serde_json::to_value(s).unwrap();
                        s["request_id"] = "-".into();
                        s["plan_salt"] = "-".into();
                        (s.to_string(), p1, p2)
                    },
                );
                seen.push(format!("{status} {} {}", p1.is_some(), p2.is_some()));
            }
            let secret = erasure.secret.to_hex();
            let attest = rights.attest_no_match(erasure.id, &secret).err().map(|e| e.to_string());
            seen.push(format!("{attest:?}").replace(&erasure.id.to_string(), "-"));
            // Nothing was erased and nothing answered in the log.
            let log = events(&rights);
            assert_eq!((count(&log, "erasure-planned"), count(&log, "access-answered")), (0, 0));
            seen.iter().map(|s| s.replace(&access.id.to_string(), "-").replace(&erasure.id.to_string(), "-")).collect()
        })
        .collect();
    assert_eq!(seen[0], seen[1], "the holder's view is the same whether or not the face is held");
    assert!(seen[0][1].contains("verifying_identity matched=0"), "{}", seen[0][1]);
    assert!(seen[0][1].contains(r#"states=["received", "verifying_identity"]"#), "{}", seen[0][1]);
}

#[test]
fn the_desk_establishes_identity_and_the_request_is_answered_then() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let sub = rights.submit_access(vec![face(0, -0.3)], "me@example.org".into(), None, true, None).unwrap();
    assert_eq!(drive(&rights, sub.id).unwrap(), State::VerifyingIdentity);
    let note = "passport checked against the probe photo".to_string();
    assert!(rights.verify_identity(&desk(), sub.id, Method::IdDocument, String::new()).is_err(), "a note is required");
    let view = rights.verify_identity(&desk(), sub.id, Method::IdDocument, note).unwrap();
    assert_eq!((view.state, view.matched), (State::Completed, 3));
    assert!(view.identity.unwrap().contains("id-document"));
    let (_, report, _) = rights.report_of(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    let report: super::report::AccessReport = serde_json::from_str(&report.unwrap()).unwrap();
    assert!(report.identity.contains("privacy desk") && report.identity.contains("templates"));
    assert!(report.records.iter().all(|r| r.template.is_some()), "templates only after identity, as asked");
    assert!(people.person.iter().all(|id| report.records.iter().any(|r| r.record_id == id.to_string())));
    assert!(matches!(
        rights.verify_identity(&desk(), sub.id, Method::IdDocument, "again".into()),
        Err(super::Error::WrongState { .. })
    ));
}

#[test]
fn a_stranger_erases_nothing_and_blocklists_nothing() {
    let store = store();
    let rights = open(&store);
    let people = enrol(&rights);
    let target = || ErasureTarget::Probes(vec![face(0, 0.1)]);
    let refused = rights.submit_erasure(target(), "x@example.org".into(), None, true, None);
    let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("signed capture"), "{refused}");
    assert!(rights.requests.load_all().unwrap().is_empty(), "nothing stored");
    let sub = rights.submit_erasure(target(), "x@example.org".into(), None, false, None).unwrap();
    assert_eq!(drive(&rights, sub.id).unwrap(), State::VerifyingIdentity);
    for id in people.person.iter().chain([&people.lookalike]) {
        assert!(rights.engine().get(*id).is_ok(), "nothing is erased before identity");
    }
    assert!(store.suppressed_faces().unwrap().is_empty());
}

#[test]
fn a_signed_capture_opens_the_persons_own_answer_and_each_forgery_is_refused() {
    use super::identity::{CaptureError, Signed, Terms, sign_capture};
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let (rights, key) = open_trusting(&store, dir.path());
    let people = enrol(&rights);
    let probe = face(0, -0.3);
    let sent = vec![probe.as_slice().to_vec()];
    let terms = Terms {
        kind: super::request::Kind::Access,
        contact: "me@example.org",
        jurisdiction_claim: "",
        include_templates: false,
        never_enrol_again: false,
    };
    let capture = |key: &ed25519_dalek::SigningKey, name: &str, terms: &Terms<'_>, template: &[f32]| {
        let (challenge, _) = rights.begin_capture().unwrap();
        Signed { capture: sign_capture(key, name, challenge, terms, &[template]), sent: vec![template.to_vec()] }
    };
    let submit =
        |signed: Signed| rights.submit_access(vec![probe.clone()], "me@example.org".into(), None, false, Some(signed));
    let refusal = |r: Result<Submitted, super::Error>| match r {
        Err(super::Error::Capture(e)) => e,
        other => panic!("refused by the capture check: {:?}", other.map(|s| s.id)),
    };
    let good = capture(&key, "app", &terms, &sent[0]);
    let replay = good.clone();
    let sub = submit(good).unwrap();
    assert_eq!(refusal(submit(replay)), CaptureError::UsedChallenge);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    assert_eq!(
        refusal(submit(capture(&stranger, "other-app", &terms, &sent[0]))),
        CaptureError::UnknownKey("other-app".into())
    );
    assert_eq!(refusal(submit(capture(&stranger, "app", &terms, &sent[0]))), CaptureError::BadSignature(0));
    let other_face = face(3, 0.0);
    let mut swapped = capture(&key, "app", &terms, other_face.as_slice());
    swapped.sent = sent.clone();
    assert_eq!(refusal(submit(swapped)), CaptureError::BadSignature(0));
    let elsewhere = Terms { contact: "stalker@example.org", ..terms };
    assert_eq!(refusal(submit(capture(&key, "app", &elsewhere, &sent[0]))), CaptureError::BadSignature(0));
    assert_eq!(rights.requests.load_all().unwrap().len(), 1, "only the good capture stored a request");

    assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed);
    let view = rights.request(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    assert_eq!(view.matched, people.person.len());
    assert!(view.identity.unwrap().contains("capture"));
}

#[test]
fn a_no_match_attestation_is_bound_to_one_completed_erasure_and_opens_with_its_salt() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let (rights, key) = open_trusting(&store, dir.path());
    let people = enrol(&rights);
    let sub = signed_erasure(&rights, &key, face(0, -0.3));
    let secret = sub.secret.to_hex();
    assert!(
        matches!(rights.attest_no_match(sub.id, &secret), Err(super::Error::WrongState { .. })),
        "not yet completed"
    );
    assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed);
    for id in &people.person {
        assert!(rights.engine().get(*id).is_err());
    }
    assert_eq!(rights.intake.faces_held(rights.now()), 1, "the probe that matched is kept, with consent");
    let a = rights.attest_no_match(sub.id, &secret).unwrap();
    assert_eq!((a.remaining, a.review_band), (0, 0));
    assert_verifies(&rights, &a.receipt);
    let salt: [u8; 16] = hex::decode(&a.salt).unwrap().try_into().unwrap();
    let entry = rights.engine().log().entries(a.leaf, a.leaf + 1).unwrap();
    let crate::transparency::event::Event::NoMatchAttested { commitment, .. } =
        Entry::decode(&entry[0].1).unwrap().event
    else {
        panic!("a no-match entry")
    };
    assert_eq!(commitment, crate::transparency::event::request_commitment(&salt, sub.id.as_bytes()));
    assert!(matches!(rights.attest_no_match(sub.id, &secret), Err(super::Error::WrongState { .. })), "asked once");
    assert!(rights.requests.load(sub.id).unwrap().probes.is_empty(), "the probes are gone after the last one");
}

#[test]
fn an_unverified_request_is_denied_when_its_identity_days_are_over() {
    let store = store();
    let clock = clock();
    let rights = open_with(&store, clock.clone(), None);
    enrol(&rights);
    let sub = rights.submit_access(vec![face(0, -0.3)], "x@example.org".into(), None, false, None).unwrap();
    assert_eq!(drive(&rights, sub.id).unwrap(), State::VerifyingIdentity);
    let due = rights.next_expiry_at().unwrap().expect("an expiry");
    assert_eq!(rights.expire_due().unwrap(), 0, "not yet");
    clock.set(due);
    assert_eq!(rights.expire_due().unwrap(), 1);
    let view = rights.request(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    assert_eq!(view.state, State::Denied);
    assert!(view.denial.unwrap().contains("identity was not established"));
    assert!(rights.requests.load(sub.id).unwrap().probes.is_empty());

    // A year after it is final, only the accountability record is kept.
    let kept = rights.next_expiry_at().unwrap().expect("the retention period");
    assert!(kept > due);
    clock.set(kept);
    assert_eq!(rights.expire_due().unwrap(), 1);
    let stored = rights.requests.load(sub.id).unwrap();
    assert!(stored.minimised && stored.contact.is_empty() && stored.matched.is_empty());
    assert_eq!((stored.state, stored.history.len()), (State::Denied, 5));
    assert_eq!(rights.next_expiry_at().unwrap(), None);
}

#[test]
fn an_answered_request_keeps_its_report_for_the_retention_period_only() {
    let store = store();
    let rights = open(&store);
    enrol(&rights);
    let sub = ask(&rights, vec![face(0, -0.3)]);
    assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed);
    let (_, report, _) = rights.report_of(sub.id, Some(&sub.secret.to_hex()), false).unwrap();
    let report: super::report::AccessReport = serde_json::from_str(&report.unwrap()).unwrap();
    assert!(report.retention.contains("365 days"), "{}", report.retention);
    let at = rights.next_expiry_at().unwrap().expect("the retention period");
    assert_eq!(at, rights.now().checked_add(jiff::SignedDuration::from_hours(24 * 365)).unwrap());
}

#[test]
fn kept_faces_and_attestation_probes_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let (path, key) = trust_app(dir.path());
    let clock = clock();
    let rights = open_with(&store, clock.clone(), Some(path));
    enrol(&rights);
    let sub = signed_erasure(&rights, &key, face(0, -0.3));
    assert_eq!(drive(&rights, sub.id).unwrap(), State::Completed);
    assert_eq!(store.suppressed_faces().unwrap().len(), 1);
    let start = rights.now();
    let later = |days: i64| start.checked_add(jiff::SignedDuration::from_hours(24 * days)).unwrap();
    clock.set(later(7));
    assert_eq!(rights.expire_due().unwrap(), 1);
    assert!(rights.requests.load(sub.id).unwrap().probes.is_empty(), "the attestation probes after 7 days");
    assert!(rights.attest_no_match(sub.id, &sub.secret.to_hex()).is_err());
    clock.set(later(365));
    let new_face = record(face(0, -0.29), 99);
    let operator = Caller { client: "op".into(), roles: vec![Role::Operator] };
    assert!(rights.enroll(&operator, vec![new_face]).is_ok(), "the kept face expired: enrolled");
    assert_eq!(rights.expire_due().unwrap(), 2, "the faces deleted, and the request minimised");
    assert!(store.suppressed_faces().unwrap().is_empty(), "the kept face's row is deleted");
    assert!(rights.requests.load(sub.id).unwrap().minimised);
}

#[test]
fn a_capture_keys_file_others_may_write_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = store();
    let path = dir.path().join("capture-keys.toml");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let engine = Engine::with_storage(store.clone(), IndexConfig::default()).unwrap();
    let settings = Settings { capture_keys: Some(path.clone()), ..Settings::default() };
    let clock = Arc::new(ManualClock::new(Timestamp::from_second(1_800_000_000).unwrap()));
    let refused = Rights::new(Arc::new(engine), settings, clock).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("chmod 600"), "{refused}");
}

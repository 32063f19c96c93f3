//! The access and erasure state machines on the in-memory store: every transition, and a crash
//! after every write of a pipeline followed by a restart, in milliseconds. The same flows run
//! over gRPC and RocksDB (with SIGKILL at named failpoints) in tests/it.
use std::{sync::Arc, time::Duration};

use jiff::Timestamp;

use super::{
    PolicySource, Rights, Settings,
    auth::{Caller, Role},
    erasure::ErasureTarget,
    request::{ManualClock, RequestId, State},
};
use crate::{
    embedding::Embedding,
    engine::{Engine, IndexChoice, IndexConfig},
    record::{NewRecord, Provenance, RecordId},
    store::MemoryStore,
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
    let config = IndexConfig { choice: IndexChoice::Exact, ..IndexConfig::default() };
    let engine = Engine::with_storage(store.clone(), config).unwrap();
    let settings = Settings {
        policy: PolicySource::Profile("permissive".into()),
        purge_window: Duration::ZERO,
        ..Settings::default()
    };
    let clock = Arc::new(ManualClock::new(Timestamp::from_second(1_800_000_000).unwrap()));
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
    let sub = rights.submit_access(vec![probe], "me@example.org".into(), None, false).unwrap();
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
    let sub = rights.submit_access(vec![face(0, 0.1)], "me@example.org".into(), None, false).unwrap();
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
    let sub = rights.submit_access(vec![face(0, 0.1)], "me@example.org".into(), None, false).unwrap();
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
    let sub =
        rights.submit_erasure(ErasureTarget::Probes(vec![face(0, 0.1)]), "me@example.org".into(), None, false).unwrap();
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
    let again = rights.submit_access(vec![face(0, -0.3)], "me@example.org".into(), None, false).unwrap();
    assert_eq!(drive(&rights, again.id).unwrap(), State::Completed);
    assert_eq!(rights.request(again.id, None, true).unwrap().matched, 0);
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
        let before = store.writes();
        let sub = rights.submit_access(vec![face(0, -0.3)], "me@example.org".into(), None, false).unwrap();
        drive(&rights, sub.id).unwrap();
        store.writes() - before
    };
    for crash_at in 1..total {
        let store = store();
        let rights = open(&store);
        enrol(&rights);
        let sub = rights.submit_access(vec![face(0, -0.3)], "me@example.org".into(), None, false).unwrap();
        store.crash_after(crash_at - 1);
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

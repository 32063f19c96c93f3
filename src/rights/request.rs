//! Rights requests as persisted: ids, secrets, states, deadlines and the clock.
//!
//! A [`Request`] is one workflow's: an [`AccessRequest`] or an [`ErasureRequest`] (which alone
//! has a pipeline), each around the [`Common`] part, so a request without the state its
//! workflow needs cannot be built. Stored as the flat JSON of earlier versions.
//!
//! A request moves received → verifying → in progress → completed, needs review, or denied.
//! Each state is persisted before the work of the next step starts, so a restart resumes any
//! request not in a final state. Deadlines follow Art. 12(3): one calendar month from receipt,
//! extendable by at most two more months with a recorded reason.
use std::{
    fmt,
    ops::{Deref, DerefMut},
};

use jiff::{Span, Timestamp, tz::TimeZone};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::record::RecordId;

crate::record::hex_id!(
    /// A request's public id (128 random bits, hex).
    RequestId,
    String,
    |s: &str| format!("{:?} is not a request id (32 hex digits)", s.chars().take(40).collect::<String>())
);

/// The secret that lets a person (who has no account) read their request: 128 random bits,
/// shown once at submission. Only its digest is stored.
pub struct RequestSecret([u8; 16]);

impl RequestSecret {
    pub fn random() -> Self {
        RequestSecret(crate::record::random_128())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn digest(&self) -> [u8; 32] {
        secret_digest(&self.0)
    }
}

fn secret_digest(secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"oubli/request-secret/v1\n");
    h.update(secret);
    h.finalize().into()
}

/// Whether `presented` (hex) is the secret whose digest is `digest`, in constant time.
pub fn secret_matches(presented: &str, digest: &[u8; 32]) -> bool {
    match hex::decode(presented) {
        Ok(bytes) if bytes.len() == 16 => bool::from(secret_digest(&bytes).ct_eq(digest)),
        _ => false,
    }
}

/// What the person asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Art. 15: a copy of everything held, with sources and recipients.
    Access,
    /// Art. 17: erase everything held.
    Erasure,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Erasure => "erasure",
        }
    }
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Received,
    Verifying,
    InProgress,
    /// Matched, waiting for the person's identity to be established (a capture or the privacy
    /// desk); nothing about the match is shown to the holder until then.
    VerifyingIdentity,
    /// Answered for the certain matches; review-band matches wait for the privacy desk.
    NeedsReview,
    /// An erasure's pipeline is running (see [`Step`]).
    Erasing,
    Completed,
    Denied,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Received,
        State::Verifying,
        State::InProgress,
        State::VerifyingIdentity,
        State::NeedsReview,
        State::Erasing,
        State::Completed,
        State::Denied,
    ];

    /// Final: nothing more will happen (so it cannot be overdue).
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Denied)
    }

    /// Still the worker's: resumed after a restart.
    pub fn is_pending_work(self) -> bool {
        matches!(self, State::Received | State::Verifying | State::InProgress | State::Erasing)
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Verifying => "verifying",
            State::InProgress => "in_progress",
            State::VerifyingIdentity => "verifying_identity",
            State::NeedsReview => "needs_review",
            State::Erasing => "erasing",
            State::Completed => "completed",
            State::Denied => "denied",
        }
    }

    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A matched record and its best score over the request's probes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub record_id: RecordId,
    pub score: f32,
}

/// An extension of the deadline (Art. 12(3)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    pub months: u8,
    pub reason: String,
    pub at: Timestamp,
}

/// The privacy desk's decision on the review band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub by: String,
    pub at: Timestamp,
    /// Review-band records confirmed as the person's; the others stay withheld.
    pub approved: Vec<RecordId>,
    pub note: String,
}

/// What every request holds, whatever its workflow.
#[derive(Clone, Serialize, Deserialize)]
pub struct Common {
    pub id: RequestId,
    pub state: State,
    #[serde(with = "hex_digest")]
    pub secret_digest: [u8; 32],
    pub received_at: Timestamp,
    pub due_at: Timestamp,
    pub extension: Option<Extension>,
    /// How to reach the person. Never logged.
    pub contact: String,
    pub jurisdiction_claim: Option<String>,
    /// The person's probe templates; dropped once matching is done (data minimisation).
    pub probes: Vec<Vec<f32>>,
    pub probe_count: usize,
    pub matched: Vec<Match>,
    /// Review-band matches: withheld unless the privacy desk approves them.
    pub review_band: Vec<Match>,
    pub review: Option<Review>,
    pub denial: Option<String>,
    /// State changes, oldest first.
    pub history: Vec<(State, Timestamp)>,
    /// The log leaf of the answer's receipt (an erasure's: its phase-2 receipt).
    pub receipt_leaf: Option<u64>,
    /// How many records the exact scan compared.
    pub compared: u64,
    /// Salt of the request's commitments in the public log (hex), given in the report.
    pub log_salt: String,
    /// How the requester's identity was established; `None`: not yet, and nothing about the
    /// match is shown to the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<super::identity::Identity>,
    /// Past its retention period: contact, probes, matches and report deleted; what is left is
    /// the accountability record (id, kind, dates, states, identity method, log leaves).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minimised: bool,
}

/// An access request (Art. 15): the common part, and the answer once given.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessRequest {
    #[serde(flatten)]
    pub common: Common,
    pub include_templates: bool,
    /// The report given to the person (JSON), once answered.
    pub report: Option<String>,
}

/// An erasure request (Art. 17): the common part and its pipeline.
#[derive(Clone, Serialize, Deserialize)]
pub struct ErasureRequest {
    #[serde(flatten)]
    pub common: Common,
    /// Rows written before the pipeline existed may lack it (or hold null): they start from
    /// the default one, as the planning step always did.
    /// Boxed: the common part is what most code moves around.
    #[serde(rename = "erasure", default, deserialize_with = "pipeline_or_default")]
    pub pipeline: Box<Erasure>,
}

fn pipeline_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<Erasure>, D::Error> {
    Ok(Option::<Box<Erasure>>::deserialize(d)?.unwrap_or_default())
}

/// A rights request, as stored (encrypted: it holds probes and contact details). The JSON is
/// the flat shape of earlier versions, `kind` naming the workflow, so every stored row reads.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    Access(AccessRequest),
    Erasure(ErasureRequest),
}

/// Borrowed form of [`Request`] for writing one workflow's request without a copy.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredRef<'a> {
    Access(&'a AccessRequest),
    Erasure(&'a ErasureRequest),
}

/// A request that can be written to its row.
pub trait Stored {
    fn id(&self) -> RequestId;
    /// The row's plaintext (zeroed on drop: it holds probes and contact details).
    fn encode(&self) -> Zeroizing<Vec<u8>>;
}

fn encode(r: StoredRef<'_>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::to_vec(&r).expect("a request serialises"))
}

impl Stored for AccessRequest {
    fn id(&self) -> RequestId {
        self.common.id
    }
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        encode(StoredRef::Access(self))
    }
}

impl Stored for ErasureRequest {
    fn id(&self) -> RequestId {
        self.common.id
    }
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        encode(StoredRef::Erasure(self))
    }
}

impl Stored for Request {
    fn id(&self) -> RequestId {
        self.common().id
    }
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Request::Access(a) => a.encode(),
            Request::Erasure(e) => e.encode(),
        }
    }
}

impl Request {
    pub fn kind(&self) -> Kind {
        match self {
            Request::Access(_) => Kind::Access,
            Request::Erasure(_) => Kind::Erasure,
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            Request::Access(a) => &a.common,
            Request::Erasure(e) => &e.common,
        }
    }

    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            Request::Access(a) => &mut a.common,
            Request::Erasure(e) => &mut e.common,
        }
    }

    /// The stored report, for an answered access request.
    pub fn report(&self) -> Option<&str> {
        match self {
            Request::Access(a) => a.report.as_deref(),
            Request::Erasure(_) => None,
        }
    }
}

// The workflows read and move the common part all the time; the variant matters only where
// the workflow does.
impl Deref for Request {
    type Target = Common;
    fn deref(&self) -> &Common {
        self.common()
    }
}

impl DerefMut for Request {
    fn deref_mut(&mut self) -> &mut Common {
        self.common_mut()
    }
}

impl Deref for AccessRequest {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl DerefMut for AccessRequest {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

impl Deref for ErasureRequest {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl DerefMut for ErasureRequest {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

/// Why an erasure erases what it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Origin {
    /// The person's probe faces, matched by the exact scan.
    #[default]
    Probes,
    /// Records named in the person's access report, authorised by that request's secret.
    Records { access_request: RequestId },
    /// An administrator's policy sweep over data already held.
    Sweep { rule: String },
}

/// The erasure pipeline's steps, each persisted before the next starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The record set is frozen and logged.
    #[default]
    Planned,
    /// The rows are deleted, recipients' notices and suppression entries written (one write);
    /// the vectors are then removed from the indexes.
    Deleted,
    /// The data keys are purged and checked; phase-1 receipt logged.
    KeysPurged,
    /// The rows are purged from the table files and checked; phase-2 receipt logged.
    TemplatesPurged,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Deleted => "deleted",
            Step::KeysPurged => "keys_purged",
            Step::TemplatesPurged => "templates_purged",
        }
    }
}

/// A check of an erasure that failed: the step it stops, why, how often, since when. The
/// step is retried; the holder and the privacy desk see the alert until it passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub step: String,
    pub detail: String,
    pub attempts: u32,
    pub since: Timestamp,
}

impl Alert {
    pub fn describe(&self) -> String {
        format!(
            "{} failed {} time(s) since {}, retried: {}",
            self.step,
            self.attempts,
            self.since.round(jiff::Unit::Second).unwrap_or(self.since),
            self.detail
        )
    }
}

/// A logged phase of an erasure: when, its leaf, and the checks made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub at: Timestamp,
    pub leaf: u64,
    pub verified: Vec<String>,
}

/// An erasure request's pipeline state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    pub origin: Origin,
    pub step: Step,
    /// The frozen record set, in id order.
    pub plan: Vec<RecordId>,
    /// Their graph rows at planning, purged with the rest.
    pub graph_slots: Vec<u32>,
    pub plan_leaf: u64,
    pub deleted_at: Option<Timestamp>,
    /// What the delete removed and where it was on disk.
    pub erased: Option<super::erasure::evidence::Erased>,
    /// Recipients sent an Art. 19 notice.
    pub notified: Vec<String>,
    /// Source addresses added to the suppression list.
    pub suppressed: usize,
    /// After the delete, the exact scan with the person's probes: (records compared, records
    /// still at or above the strict threshold).
    pub post_check: Option<(u64, u64)>,
    /// The KEK epoch current at phase 1: backups stay readable until it is destroyed.
    pub key_epoch: u32,
    pub phase1: Option<Phase>,
    pub phase2: Option<Phase>,
    /// The person consented to keep their probes (sealed) so their face is never enrolled again.
    #[serde(default)]
    pub keep_face: bool,
    /// Probe templates kept under that consent.
    #[serde(default)]
    pub faces_kept: usize,
    /// No-match attestations given so far (the probes are kept, sealed, until the last one
    /// allowed or their expiry).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attestations: u32,
    /// The post-delete check's review band: records scoring between the review and strict
    /// thresholds after the delete (not erased: they may be another person's).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub post_band: u64,
    /// Plans made again because the post-delete check still found matches, and the leaves of
    /// the plans they replaced.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replans: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_plan_leaves: Vec<u64>,
    /// A failed check holding the pipeline back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("kind", &self.kind())
            .field("state", &self.state)
            .field("probes", &self.probes.len())
            .field("matched", &self.matched.len())
            .field("review_band", &self.review_band.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Common {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for p in &mut self.probes {
            p.zeroize();
        }
    }
}

impl Common {
    /// A request received `now`, due in one month, with a placeholder secret digest.
    pub fn new(contact: String, jurisdiction_claim: Option<String>, probes: Vec<Vec<f32>>, now: Timestamp) -> Common {
        Common {
            id: RequestId::random(),
            state: State::Received,
            secret_digest: RequestSecret::random().digest(),
            received_at: now,
            due_at: add_months(now, 1),
            extension: None,
            contact,
            jurisdiction_claim,
            probe_count: probes.len(),
            probes,
            matched: Vec::new(),
            review_band: Vec::new(),
            review: None,
            denial: None,
            history: vec![(State::Received, now)],
            receipt_leaf: None,
            compared: 0,
            log_salt: hex::encode(crate::record::random_128()),
            identity: None,
            minimised: false,
        }
    }

    /// Moves to `state` at `now`, keeping the history.
    pub fn advance(&mut self, state: State, now: Timestamp) {
        self.state = state;
        self.history.push((state, now));
    }

    /// Not final and past its (possibly extended) due date.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        !self.state.is_final() && now > self.due_at
    }

    /// The salt of the request's log commitments.
    pub fn salt(&self) -> [u8; 16] {
        hex::decode(&self.log_salt).ok().and_then(|b| b.try_into().ok()).unwrap_or([0; 16])
    }
}

mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// `from` plus `months` calendar months, in UTC (31 January + 1 month = 28 or 29 February).
pub fn add_months(from: Timestamp, months: u8) -> Timestamp {
    from.to_zoned(TimeZone::UTC)
        .checked_add(Span::new().months(i64::from(months)))
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// The time, injectable so tests can cross a month boundary without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(at: Timestamp) -> Self {
        ManualClock(Mutex::new(at))
    }
    pub fn set(&self, at: Timestamp) {
        *self.0.lock() = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_calendar_months() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(add_months(t("2026-01-31T10:00:00Z"), 1), t("2026-02-28T10:00:00Z"));
        assert_eq!(add_months(t("2028-01-31T10:00:00Z"), 1), t("2028-02-29T10:00:00Z"));
        assert_eq!(add_months(t("2026-11-30T23:59:59Z"), 1), t("2026-12-30T23:59:59Z"));
        assert_eq!(add_months(t("2026-12-15T00:00:00Z"), 3), t("2027-03-15T00:00:00Z"));
    }

    #[test]
    fn secrets_match_only_themselves() {
        let s = RequestSecret::random();
        let d = s.digest();
        assert!(secret_matches(&s.to_hex(), &d));
        assert!(!secret_matches(&RequestSecret::random().to_hex(), &d));
        assert!(!secret_matches("", &d));
        assert!(!secret_matches("zz", &d));
        let id = RequestId::random();
        assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        assert!("abc".parse::<RequestId>().is_err());
    }

    /// An access request and an erasure request as earlier versions wrote them: one flat
    /// struct, `kind` beside the fields, `erasure` null for access and the store's evidence
    /// type inside an erasure.
    const OLD_ACCESS: &str = r#"{"id":"000102030405060708090a0b0c0d0e0f","kind":"access","state":"completed",
        "secret_digest":"1111111111111111111111111111111111111111111111111111111111111111",
        "received_at":"2026-11-01T10:00:00Z","due_at":"2026-12-01T10:00:00Z","extension":null,
        "contact":"me@example.org","jurisdiction_claim":"FR","include_templates":true,"probes":[],
        "probe_count":1,"matched":[{"record_id":"aa000000000000000000000000000000","score":0.75}],
        "review_band":[],"review":null,"denial":null,
        "history":[["received","2026-11-01T10:00:00Z"],["completed","2026-11-01T10:00:01Z"]],
        "report":"{}","receipt_leaf":7,"compared":42,"log_salt":"22222222222222222222222222222222",
        "erasure":null}"#;

    const OLD_ERASURE: &str = r#"{"id":"0f0e0d0c0b0a09080706050403020100","kind":"erasure","state":"erasing",
        "secret_digest":"3333333333333333333333333333333333333333333333333333333333333333",
        "received_at":"2026-11-01T10:00:00Z","due_at":"2026-12-01T10:00:00Z","extension":null,
        "contact":"me@example.org","jurisdiction_claim":null,"include_templates":false,
        "probes":[[0.5,0.5]],"probe_count":1,
        "matched":[{"record_id":"bb000000000000000000000000000000","score":0.9}],"review_band":[],
        "review":null,"denial":null,"history":[["received","2026-11-01T10:00:00Z"]],"report":null,
        "receipt_leaf":null,"compared":3,"log_salt":"44444444444444444444444444444444",
        "erasure":{"origin":{"by":"records","access_request":"000102030405060708090a0b0c0d0e0f"},
          "step":"deleted","plan":["bb000000000000000000000000000000"],"graph_slots":[3],"plan_leaf":5,
          "deleted_at":"2026-11-01T10:00:02Z",
          "erased":{"records":1,"recipients":["police-a"],"rows":6,
            "targets":[{"cf":"records","start":"bb","end":"bbff","absent":true}],
            "evidence":{"key_files":["000012.sst"],"row_files":["000013.sst"],"wals":["000010.log"]}},
          "notified":["police-a"],"suppressed":1,"post_check":[2,0],"key_epoch":1,
          "phase1":{"at":"2026-11-01T10:00:03Z","leaf":6,"verified":["checked"]},"phase2":null,
          "keep_face":false,"faces_kept":0}}"#;

    #[test]
    fn requests_stored_in_the_old_flat_shape_still_read() {
        let access: Request = serde_json::from_str(OLD_ACCESS).unwrap();
        let Request::Access(a) = &access else { panic!("an access request: {access:?}") };
        assert_eq!(a.id.to_string(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!((a.state, a.include_templates, a.report.as_deref()), (State::Completed, true, Some("{}")));
        assert_eq!((a.receipt_leaf, a.compared, a.matched.len(), a.history.len()), (Some(7), 42, 1, 2));
        assert_eq!(a.salt(), [0x22; 16]);

        let erasure: Request = serde_json::from_str(OLD_ERASURE).unwrap();
        let Request::Erasure(e) = &erasure else { panic!("an erasure request: {erasure:?}") };
        let p = &e.pipeline;
        assert_eq!((e.state, e.probes.clone()), (State::Erasing, vec![vec![0.5, 0.5]]));
        assert_eq!(p.origin, Origin::Records { access_request: a.id });
        assert_eq!(
            (p.step, p.plan_leaf, p.graph_slots.clone(), p.post_check),
            (Step::Deleted, 5, vec![3], Some((2, 0)))
        );
        assert_eq!((p.keep_face, p.faces_kept, p.phase1.as_ref().map(|x| x.leaf)), (false, 0, Some(6)));
        let erased = p.erased.as_ref().expect("the evidence is read");
        assert_eq!((erased.records, erased.rows, erased.targets.len()), (1, 6, 1));
        assert_eq!(erased.targets[0].start, vec![0xbb]);
        assert!(erased.evidence.wals.contains("000010.log"));

        // Written again, each reads back the same, in the same flat shape.
        for (request, old) in [(access, OLD_ACCESS), (erasure, OLD_ERASURE)] {
            let json: serde_json::Value = serde_json::from_slice(&request.encode()).unwrap();
            let old: serde_json::Value = serde_json::from_str(old).unwrap();
            for (key, value) in json.as_object().unwrap() {
                assert_eq!(Some(value), old.get(key), "{key}");
            }
            let again: Request = serde_json::from_value(json).unwrap();
            assert_eq!(again.encode().to_vec(), request.encode().to_vec());
        }
    }

    #[test]
    fn an_erasure_stored_without_a_pipeline_starts_from_the_default_one() {
        let (head, _) = OLD_ERASURE.split_once(r#""erasure":"#).unwrap();
        let json = head.trim_end().trim_end_matches(',').to_string() + "}";
        let Request::Erasure(e) = serde_json::from_str::<Request>(&json).unwrap() else { panic!("an erasure") };
        assert_eq!(*e.pipeline, Erasure::default());
    }
}

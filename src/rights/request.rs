//! Rights requests as persisted: ids, secrets, states, deadlines and the clock.
//!
//! A request moves received → verifying → in progress → completed, needs review, or denied.
//! Each state is persisted before the work of the next step starts, so a restart resumes any
//! request not in a final state. Deadlines follow Art. 12(3): one calendar month from receipt,
//! extendable by at most two more months with a recorded reason.
use std::{fmt, str::FromStr, sync::Mutex};

use jiff::{Span, Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::record::RecordId;

/// A request's public id (128 random bits, hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct RequestId([u8; 16]);

impl RequestId {
    pub fn random() -> Self {
        RequestId(random16())
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        RequestId(bytes)
    }
}

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random number generator works");
    b
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}
impl FromStr for RequestId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        hex::decode(s)
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(RequestId)
            .ok_or_else(|| format!("{:?} is not a request id (32 hex digits)", s.chars().take(40).collect::<String>()))
    }
}
impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.to_string()
    }
}
impl TryFrom<String> for RequestId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The secret that lets a person (who has no account) read their request: 128 random bits,
/// shown once at submission. Only its digest is stored.
pub struct RequestSecret([u8; 16]);

impl RequestSecret {
    pub fn random() -> Self {
        RequestSecret(random16())
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
    /// Answered for the certain matches; review-band matches wait for the privacy desk.
    NeedsReview,
    /// An erasure's pipeline is running (see [`Step`]).
    Erasing,
    Completed,
    Denied,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Received,
        State::Verifying,
        State::InProgress,
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

/// A rights request, as stored (encrypted: it holds probes and contact details).
#[derive(Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub kind: Kind,
    pub state: State,
    #[serde(with = "hex_digest")]
    pub secret_digest: [u8; 32],
    pub received_at: Timestamp,
    pub due_at: Timestamp,
    pub extension: Option<Extension>,
    /// How to reach the person. Never logged.
    pub contact: String,
    pub jurisdiction_claim: Option<String>,
    pub include_templates: bool,
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
    /// The report given to the person (JSON), once answered.
    pub report: Option<String>,
    /// The log leaf of the answer's receipt.
    pub receipt_leaf: Option<u64>,
    /// How many records the exact scan compared.
    pub compared: u64,
    /// Salt of the answer's commitment in the public log (hex), given in the report.
    pub log_salt: String,
    /// An erasure's pipeline.
    #[serde(default)]
    pub erasure: Option<Erasure>,
}

/// Why an erasure erases what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Origin {
    /// The person's probe faces, matched by the exact scan.
    Probes,
    /// Records named in the person's access report, authorised by that request's secret.
    Records { access_request: RequestId },
    /// An administrator's policy sweep over data already held.
    Sweep { rule: String },
}

/// The erasure pipeline's steps, each persisted before the next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The record set is frozen and logged.
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

/// A logged phase of an erasure: when, its leaf, and the checks made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub at: Timestamp,
    pub leaf: u64,
    pub verified: Vec<String>,
}

/// An erasure request's pipeline state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub erased: Option<crate::store::Erased>,
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
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("probes", &self.probes.len())
            .field("matched", &self.matched.len())
            .field("review_band", &self.review_band.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for p in &mut self.probes {
            p.zeroize();
        }
    }
}

impl Request {
    /// Moves to `state` at `now`, keeping the history.
    pub fn advance(&mut self, state: State, now: Timestamp) {
        self.state = state;
        self.history.push((state, now));
    }

    /// Not final and past its (possibly extended) due date.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        !self.state.is_final() && now > self.due_at
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
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
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
}

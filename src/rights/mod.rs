//! The rights workflows over the engine: the ingest policy and the recipients log for operators,
//! and the requests of people (GDPR Art. 12, 15, 17, 19) from submission to logged, signed
//! answers and receipts.
//!
//! Synchronous and free of gRPC: the async layer calls it through `spawn_blocking`, and the
//! [`worker`] schedules the pipelines. [`Rights`] is a façade over one concept per file:
//! - [`intake`]: the policy, suppression lists, refusal counters, field checks;
//! - [`limits`]: the public rate limits (per address, global, transparency reads);
//! - [`repository`]: the requests' rows, their lock and change notifications;
//! - [`access`]: the state machine every request starts with, review, denial, extension, and
//!   the access answer ([`report`] holds its legal text);
//! - [`erasure`]: plan, delete, the two purge phases and their receipts;
//! - [`sweep`], [`rotation`], [`attest`], [`notify`], [`trail`]: policy sweeps, key rotation,
//!   no-match attestations, recipients' notices, the audit trail.
//!
//! Every state is persisted before the next step starts, so a restart resumes where it stopped.
pub mod access;
pub mod attest;
pub mod auth;
pub mod erasure;
pub mod expiry;
pub mod identity;
pub mod intake;
pub mod limits;
pub mod notify;
pub mod policy;
pub mod replica;
pub mod report;
pub mod repository;
pub mod request;
pub mod rotation;
pub mod sweep;
pub mod trail;
pub mod worker;

#[cfg(test)]
mod machine_tests;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use jiff::Timestamp;
use tracing::instrument;

use crate::{
    embedding::Embedding,
    engine::{
        self, Engine, Enrolled, IndexUse, Query, SearchResult,
        combine::{self, Combiner},
    },
    metrics::{Gauge, Metrics},
    record::{NewRecord, Record, RecordId},
    store,
};
use auth::Caller;
use intake::Intake;
use limits::Limits;
use policy::{Policy, PolicyError};
use repository::Repository;
use request::{Clock, Extension, Kind, Match, Request, RequestId, RequestSecret, State};

/// Match thresholds (cosine). Defaults: the FMR 1e-6 and 1e-4 points of the synthetic
/// population (`oubli synth stats`, docs/stats.json).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// At or above: the person's record, disclosed.
    pub strict: f32,
    /// At or above (and below strict): withheld until the privacy desk decides.
    pub review: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { strict: 0.602, review: 0.310 }
    }
}

/// Where the ingest policy comes from; a file can be reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    Profile(String),
    File(PathBuf),
}

impl PolicySource {
    fn load(&self) -> Result<Policy, PolicyError> {
        match self {
            PolicySource::Profile(name) => Policy::profile(name),
            PolicySource::File(path) => Policy::load(path),
        }
    }
}

/// How long a call that logs and answers with its receipt at once (a no-match attestation, a
/// key rotation) waits for a log signing at a cadence to publish the checkpoint that covers it;
/// after that it answers that the receipt is pending (`GetReceipt` with the leaf index then).
pub const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the rights workflows behave.
#[derive(Debug, Clone)]
pub struct Settings {
    pub thresholds: Thresholds,
    pub policy: PolicySource,
    /// Audit events older than this many days are deleted.
    pub audit_retention_days: u32,
    /// Named in every report.
    pub controller: String,
    /// Where a person outside France can complain.
    pub supervisory_authority: String,
    /// Public submissions accepted per minute from one address (an IPv4 address or an IPv6
    /// /64; a burst of as many).
    pub submissions_per_minute: u32,
    /// Public submissions accepted per minute from all addresses together (a burst of as
    /// many): what churning through addresses cannot get around.
    pub public_submissions_per_minute: u32,
    /// Anonymous reads of the transparency log accepted per minute from one address (a burst
    /// of as many).
    pub transparency_reads_per_minute: u32,
    /// Requests that may wait for the worker; a public submission beyond it is refused
    /// (RESOURCE_EXHAUSTED) before anything is stored.
    pub queue_capacity: usize,
    /// Probe templates one request may carry.
    pub max_probes: usize,
    /// How long erasures wait after phase 1 so that one phase-2 purge serves them all.
    pub purge_window: std::time::Duration,
    /// Days after an erasure by which the key-encryption key is rotated (so backups made
    /// before it become unreadable).
    pub rotation_days: u32,
    /// Days a key-encryption key is used at most, erasure or not (then rotated).
    pub key_max_age_days: u32,
    /// The capture applications trusted to establish identity (`identity::CaptureKeys`),
    /// re-read at each capture; `None` or a missing file: none, and every request by selfie
    /// waits for the privacy desk.
    pub capture_keys: Option<PathBuf>,
    /// How long a capture challenge is good for.
    pub capture_ttl: std::time::Duration,
    /// Challenges outstanding at once.
    pub max_challenges: usize,
    /// Days a request by selfie may wait for its identity before it is denied (and its
    /// probes deleted).
    pub identity_days: u32,
    /// No-match attestations one completed erasure may ask for.
    pub attestations_per_erasure: u32,
    /// Days after an erasure's delete during which it may ask for them (its probes are kept,
    /// sealed, until then).
    pub attestation_days: u32,
    /// Days a face kept under `never_enrol_again` is refused for.
    pub face_retention_days: u32,
    /// Faces kept under `never_enrol_again` at most, over all requests.
    pub max_faces: usize,
    /// Days a final request keeps its contact, probes, matches and report; then only the
    /// accountability record is kept.
    pub request_retention_days: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            thresholds: Thresholds::default(),
            policy: PolicySource::Profile("lawful".into()),
            audit_retention_days: 365,
            controller: "Oubli demonstration controller (synthetic data only)".into(),
            supervisory_authority: "the data-protection authority of the EU country where you live or work".into(),
            submissions_per_minute: 10,
            public_submissions_per_minute: 600,
            transparency_reads_per_minute: 600,
            queue_capacity: 1000,
            max_probes: 10,
            purge_window: std::time::Duration::from_secs(3600),
            rotation_days: 30,
            key_max_age_days: 90,
            capture_keys: None,
            capture_ttl: std::time::Duration::from_secs(300),
            max_challenges: 10_000,
            identity_days: 30,
            attestations_per_erasure: 1,
            attestation_days: 7,
            face_retention_days: 365,
            max_faces: 10_000,
            request_retention_days: 365,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("item {item}: enrolment refused by policy {policy:?}, rule {rule}: {reason}")]
    PolicyRefused { item: usize, policy: String, rule: &'static str, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("no request {0}")]
    NoRequest(RequestId),
    #[error("the request secret does not open request {0}: use the secret given at submission")]
    WrongSecret(RequestId),
    #[error("request {id} is {state}: {what}")]
    WrongState { id: RequestId, state: &'static str, what: String },
    #[error("too many requests from this address, or from all addresses together; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("too many requests are waiting to be processed; nothing was stored: try again in {retry_after_secs} s")]
    QueueFull { retry_after_secs: u64 },
    #[error("request {0} is unreadable: {1}")]
    CorruptRequest(RequestId, String),
    #[error("{count} record(s) still score at or above {threshold} against these probes: no attestation")]
    StillMatches { count: usize, threshold: f32 },
    #[error("no notification {0} for this client")]
    NoNotification(String),
    #[error(transparent)]
    Capture(#[from] identity::CaptureError),
    /// A read replica could not reach its shard's primary for what only the primary does.
    #[error("{0}")]
    PrimaryUnavailable(String),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Engine(e.into())
    }
}

/// A request as the person or the privacy desk sees it (no probes).
#[derive(Debug, Clone)]
pub struct RequestView {
    pub id: RequestId,
    pub kind: Kind,
    pub state: State,
    pub received_at: Timestamp,
    pub due_at: Timestamp,
    pub overdue: bool,
    pub extension: Option<Extension>,
    pub matched: usize,
    pub withheld: usize,
    /// The review-band matches, for the privacy desk only.
    pub review_band: Vec<Match>,
    pub denial: Option<String>,
    pub receipt_leaf: Option<u64>,
    /// For the privacy desk only.
    pub contact: Option<String>,
    pub history: Vec<(State, Timestamp)>,
    /// An erasure's pipeline step.
    pub erasure_step: Option<request::Step>,
    /// How the requester's identity was established, once it is.
    pub identity: Option<String>,
    /// A failed check holding an erasure back (retried).
    pub alert: Option<String>,
    /// Whether the worker has work on it now (rather than the privacy desk, the purge window
    /// or nobody): what a caller waiting for progress waits for.
    pub worker_busy: bool,
}

/// What the holder of a request by selfie sees of its state before their identity is
/// established: received, verifying_identity or denied, the same whether or not anything
/// matched.
fn shown_before_identity(state: State) -> State {
    match state {
        State::Received | State::Denied => state,
        _ => State::VerifyingIdentity,
    }
}

/// A new request: its id and the secret that opens it (shown once).
pub struct Submitted {
    pub id: RequestId,
    pub secret: RequestSecret,
    pub view: RequestView,
}

pub struct Rights {
    engine: Arc<Engine>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    intake: Intake,
    limits: Limits,
    requests: Repository,
    metrics: Metrics,
    challenges: identity::Challenges,
    /// Recipients-log rows of concurrent searches and reads, written in one synced write.
    disclosures: Combiner<store::Disclosed, Result<Vec<RecordId>, Error>>,
    /// Audit events of concurrent calls, appended in one write ([`Rights::audit`]).
    audits: Combiner<trail::AuditEvent, Result<u64, Error>>,
    /// Held through [`Rights::purge_due`]: one purge at a time (the worker's and an
    /// administrator's), without holding the request lock through the store's purge.
    purging: parking_lot::Mutex<()>,
    /// On a read replica: the shard's primary, which keeps the shard's recipients log.
    primary: Option<Arc<dyn replica::DisclosureLog>>,
}

/// The most calls whose recipients-log rows or audit events go in one write.
const MAX_GROUPED_WRITES: usize = 256;

impl Rights {
    pub fn new(engine: Arc<Engine>, settings: Settings, clock: Arc<dyn Clock>) -> Result<Rights, Error> {
        let intake = Intake::new(&settings)?;
        // A capture-keys file that cannot be trusted is refused now, not at the first capture.
        if let Some(path) = &settings.capture_keys {
            identity::CaptureKeys::load(path)?;
        }
        intake.load_faces(engine.records(), engine.dimension(), clock.now())?;
        let rights = Rights {
            requests: Repository::new(engine.clone()),
            engine,
            intake,
            limits: Limits::new(&settings),
            clock,
            metrics: Metrics::default(),
            challenges: identity::Challenges::new(settings.capture_ttl, settings.max_challenges),
            settings,
            disclosures: Combiner::new(MAX_GROUPED_WRITES),
            audits: Combiner::new(MAX_GROUPED_WRITES),
            purging: parking_lot::Mutex::new(()),
            primary: None,
        };
        rights.prune_audit()?;
        rights.forget_erased_in_reports()?;
        Ok(rights)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The gauges read at scrape time: requests waiting, overdue, records, log size.
    pub fn gauges(&self) -> Result<Vec<Gauge>, Error> {
        let now = self.now();
        let all = self.requests.load_all()?;
        let pending = all.iter().filter(|r| !r.state.is_final()).count() as f64;
        let overdue = all.iter().filter(|r| r.is_overdue(now)).count() as f64;
        let erasing = all.iter().filter(|r| r.state == State::Erasing).count() as f64;
        let stats = self.engine.stats()?;
        Ok(vec![
            ("oubli_requests_open", "Rights requests not yet final.", pending),
            ("oubli_requests_overdue", "Rights requests past their due date and not final.", overdue),
            ("oubli_erasures_in_progress", "Erasure requests whose pipeline is running.", erasing),
            ("oubli_records", "Records held.", stats.record_count as f64),
            ("oubli_log_entries", "Leaves in the transparency log.", self.engine.log().tree_size() as f64),
            ("oubli_key_epoch", "The current key-encryption-key epoch.", f64::from(self.engine.records().key_epoch())),
        ])
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- operators: policy, enrolment, search ----

    pub fn policy(&self) -> Arc<Policy> {
        self.intake.policy()
    }

    /// Re-reads the policy from its source; on error the current one stays.
    pub fn reload_policy(&self) -> Result<Arc<Policy>, Error> {
        self.intake.reload_policy()
    }

    /// Refusals per rule since start.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.intake.refusals()
    }

    /// Takes a token for a public submission from `peer`'s bucket and the global one, or says
    /// when to come back.
    pub fn admit(&self, peer: Option<std::net::IpAddr>) -> Result<(), Error> {
        self.limits.admit_submission(peer, self.now())
    }

    /// Takes a token for an anonymous read of the transparency log from `peer`'s bucket.
    pub fn admit_read(&self, peer: Option<std::net::IpAddr>) -> Result<(), Error> {
        self.limits.admit_read(peer, self.now())
    }

    /// Enrols `records` if the policy allows every one (else nothing is stored), in a group
    /// commit with whatever other enrolments are in flight: one synced write for all of them,
    /// each answered once its own records are durable.
    #[instrument(skip_all, fields(items = records.len(), client = %caller.client))]
    pub fn enroll(&self, caller: &Caller, records: Vec<NewRecord>) -> Result<Vec<Enrolled>, Error> {
        let quarantine = self.intake.admit_records(self.engine.records(), &records, self.now())?;
        Ok(self.engine.enroll_grouped(records, quarantine)?)
    }

    /// An operator's search (`exact` forces the exact scan): quarantined records are left
    /// out, and every hit returned is written to the recipients log under the caller's name.
    #[instrument(skip_all, fields(client = %caller.client, k))]
    pub fn search(
        &self,
        caller: &Caller,
        probe: &Embedding,
        k: usize,
        min_score: Option<f32>,
        exact: bool,
    ) -> Result<SearchResult, Error> {
        let index = if exact { IndexUse::Exact } else { IndexUse::Configured };
        let mut result = self.engine.search(&Query { probe, k, min_score, index, include_quarantined: false })?;
        let disclosed = self.disclose(caller, result.hits.iter().map(|h| h.id).collect())?;
        // A hit erased before its row was written is not answered: every hit that leaves the
        // server is in its recipients log.
        if disclosed.len() < result.hits.len() {
            result.hits.retain(|h| disclosed.contains(&h.id));
        }
        Ok(result)
    }

    /// One record, for an operator: recorded as disclosed to the caller.
    pub fn get(&self, caller: &Caller, id: RecordId) -> Result<Record, Error> {
        let record = self.engine.get(id)?;
        if self.disclose(caller, vec![id])?.is_empty() {
            // Erased between the read and the recipients-log write.
            return Err(engine::Error::NotFound(id).into());
        }
        Ok(record)
    }

    /// Writes the recipients-log rows of one answer, grouped with those of the other answers in
    /// flight into one synced write; returns once the write holding this answer's rows is
    /// durable, so no answer leaves the server before its disclosure is on disk, with the
    /// records whose rows were written (those not erased meanwhile). If a group's write fails,
    /// each call's rows are written again on their own, so that one call's error is never
    /// another's.
    fn disclose(&self, caller: &Caller, records: Vec<RecordId>) -> Result<Vec<RecordId>, Error> {
        let call = store::Disclosed { records, client: caller.client.clone(), at: self.now() };
        self.disclosures.run(call, |calls| {
            combine::write_all_or_each(&calls, |some| match &self.primary {
                None => Ok(self.engine.records().record_disclosures(some)?),
                Some(primary) => primary.record(some),
            })
        })
    }

    /// A receiver that changes after every request change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.requests.subscribe()
    }

    // ---- shared by the request workflows ----

    fn wrong_state(&self, request: &Request, what: &str) -> Error {
        Error::WrongState { id: request.id, state: request.state.name(), what: what.into() }
    }

    /// Request `id`, for its holder (`secret`, compared in constant time) or the privacy desk
    /// (`desk`); anyone else gets [`Error::WrongSecret`].
    fn load_authorised(&self, id: RequestId, secret: Option<&str>, desk: bool) -> Result<Request, Error> {
        let request = self.requests.load(id)?;
        if desk || secret.is_some_and(|s| request::secret_matches(s, &request.secret_digest)) {
            Ok(request)
        } else {
            Err(Error::WrongSecret(request.id))
        }
    }

    /// A new request's secret: shown once, only its digest kept.
    fn new_secret(common: &mut request::Common) -> RequestSecret {
        let secret = RequestSecret::random();
        common.secret_digest = secret.digest();
        secret
    }

    /// Whether the holder of `r` may see what it matched: once identity is established (the
    /// privacy desk always may).
    fn discloses(r: &Request, desk: bool) -> bool {
        desk || r.identity.is_some()
    }

    fn view(&self, r: &Request, desk: bool) -> RequestView {
        let worker_busy = match r.state {
            State::Erasing => match r {
                Request::Erasure(e) => e.pipeline.step < request::Step::KeysPurged,
                Request::Access(_) => true,
            },
            s => s.is_pending_work(),
        };
        if !Self::discloses(r, desk) {
            // The same fields, whatever matched: only the state's public name, the deadline
            // and the times of those public states.
            let mut history: Vec<(State, Timestamp)> = Vec::new();
            for &(state, at) in &r.history {
                let shown = shown_before_identity(state);
                if history.last().is_none_or(|(last, _)| *last != shown) {
                    history.push((shown, at));
                }
            }
            return RequestView {
                id: r.id,
                kind: r.kind(),
                state: shown_before_identity(r.state),
                received_at: r.received_at,
                due_at: r.due_at,
                overdue: r.is_overdue(self.now()),
                extension: r.extension.clone(),
                matched: 0,
                withheld: 0,
                review_band: Vec::new(),
                denial: r.denial.clone(),
                receipt_leaf: None,
                contact: None,
                history,
                erasure_step: None,
                identity: None,
                alert: None,
                worker_busy,
            };
        }
        let approved = r.review.as_ref().map_or(0, |v| v.approved.len());
        RequestView {
            id: r.id,
            kind: r.kind(),
            state: r.state,
            received_at: r.received_at,
            due_at: r.due_at,
            overdue: r.is_overdue(self.now()),
            extension: r.extension.clone(),
            matched: r.matched.len() + approved,
            withheld: r.review_band.len() - approved,
            review_band: if desk { r.review_band.clone() } else { Vec::new() },
            denial: r.denial.clone(),
            receipt_leaf: r.receipt_leaf,
            contact: desk.then(|| r.contact.clone()),
            history: r.history.clone(),
            erasure_step: match r {
                Request::Erasure(e) if matches!(r.state, State::Erasing | State::Completed) => Some(e.pipeline.step),
                _ => None,
            },
            identity: r.identity.as_ref().map(identity::Identity::describe),
            alert: match r {
                Request::Erasure(e) => e.pipeline.alert.as_ref().map(request::Alert::describe),
                Request::Access(_) => None,
            },
            worker_busy,
        }
    }
}

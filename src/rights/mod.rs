//! The rights workflows: who may do what, the ingest policy, the recipients log, the audit
//! trail, and access requests (GDPR Art. 12, 15) from submission to a logged, signed answer.
//!
//! Synchronous and free of gRPC: the async layer calls it through `spawn_blocking`. It sits on
//! the engine (store and index) and the audit types; it owns the request state machine, whose
//! every state is persisted before the next step starts, so a restart resumes where it stopped.
pub mod auth;
pub mod erasure;
pub mod policy;
pub mod report;
pub mod request;
pub mod trail;

#[cfg(test)]
mod machine_tests;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use jiff::{SignedDuration, Timestamp};
use tracing::{info, instrument, warn};
use zeroize::Zeroizing;

use crate::{
    transparency::{
        event::{self, Entry, Event},
        receipt::Receipt,
    },
    embedding::Embedding,
    engine::{self, Engine, Enrolled, IndexUse, Query, SearchResult},
    record::{Jurisdiction, NewRecord, Record, RecordId},
    store,
};
use auth::Caller;
use policy::{Decision, Policy, PolicyError};
use report::{AccessReport, LogOpening, Matching, ReportRecord};
use trail::AuditEvent;
use request::{Clock, Extension, Kind, Match, Origin, Request, RequestId, RequestSecret, Review, State};

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
    /// Public submissions accepted per minute from one address (a burst of as many).
    pub submissions_per_minute: u32,
    /// Probe templates one request may carry.
    pub max_probes: usize,
    /// How long erasures wait after phase 1 so that one phase-2 purge serves them all.
    pub purge_window: std::time::Duration,
    /// Days after an erasure by which the key-encryption key is rotated (so backups made
    /// before it become unreadable).
    pub rotation_days: u32,
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
            max_probes: 10,
            purge_window: std::time::Duration::from_secs(3600),
            rotation_days: 30,
        }
    }
}

const MAX_CONTACT_BYTES: usize = 256;
const MAX_REASON_BYTES: usize = 1000;
const CNIL: &str = "CNIL (Commission nationale de l'informatique et des libertés), 3 place de Fontenoy, \
                    75007 Paris, https://www.cnil.fr/fr/plaintes";

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
    #[error("too many requests from this address; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("request {0} is unreadable: {1}")]
    CorruptRequest(RequestId, String),
    #[error("{count} record(s) still score at or above {threshold} against these probes: no attestation")]
    StillMatches { count: usize, threshold: f32 },
    #[error("no notification {0} for this client")]
    NoNotification(String),
}

fn check_contact(contact: &str) -> Result<(), Error> {
    if contact.trim().is_empty() || contact.len() > MAX_CONTACT_BYTES {
        return Err(Error::InvalidRequest(format!(
            "contact is required (how to reach you, at most {MAX_CONTACT_BYTES} bytes)"
        )));
    }
    Ok(())
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
}

impl RequestView {
    /// Whether the worker has work on it now (rather than the privacy desk, the purge window
    /// or nobody): what a caller waiting for progress waits for.
    pub fn worker_busy(&self) -> bool {
        match self.state {
            State::Erasing => self.erasure_step.is_none_or(|s| s < request::Step::KeysPurged),
            s => s.is_pending_work(),
        }
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
    policy: RwLock<Arc<Policy>>,
    clock: Arc<dyn Clock>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Serialises request state changes (worker, desk, submissions).
    requests: Mutex<()>,
    /// Bumped after every request change, for callers waiting on one.
    changes: tokio::sync::watch::Sender<u64>,
    limiter: Mutex<HashMap<String, (f64, Timestamp)>>,
    /// Faces whose owners asked, with consent, never to be enrolled again.
    suppressed_faces: RwLock<Vec<Embedding>>,
    metrics: crate::metrics::Metrics,
}

impl Rights {
    pub fn new(engine: Arc<Engine>, settings: Settings, clock: Arc<dyn Clock>) -> Result<Rights, Error> {
        let policy = settings.policy.load()?;
        info!(policy = policy.name(), "ingest policy loaded");
        let rights = Rights {
            engine,
            policy: RwLock::new(Arc::new(policy)),
            clock,
            refusals: Mutex::default(),
            requests: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
            limiter: Mutex::default(),
            suppressed_faces: RwLock::default(),
            metrics: crate::metrics::Metrics::default(),
            settings,
        };
        for bytes in rights.engine.records().suppressed_faces()? {
            let values: Vec<f32> =
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            rights.keep_faces(&values.chunks(rights.engine.dimension()).map(<[f32]>::to_vec).collect::<Vec<_>>());
        }
        rights.prune_audit()?;
        Ok(rights)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The gauges read at scrape time: requests waiting, overdue, records, log size.
    pub fn gauges(&self) -> Result<Vec<crate::metrics::Gauge>, Error> {
        let now = self.now();
        let all = self.load_all()?;
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

    // ---- ingest policy ----

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the policy from its source; on error the current one stays.
    pub fn reload_policy(&self) -> Result<Arc<Policy>, Error> {
        let policy = Arc::new(self.settings.policy.load()?);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy.clone();
        info!(policy = policy.name(), "ingest policy reloaded");
        Ok(policy)
    }

    /// Refusals per rule since start.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Enrols `records` if the policy allows every one (else nothing is stored).
    #[instrument(skip_all, fields(items = records.len(), client = %caller.client))]
    pub fn enroll(&self, caller: &Caller, records: &[NewRecord]) -> Result<Vec<Enrolled>, Error> {
        let policy = self.policy();
        let mut quarantine = Vec::with_capacity(records.len());
        let store = self.engine.store();
        for (item, record) in records.iter().enumerate() {
            if store.is_suppressed(record.provenance.source_uri())? {
                let rule = "erased-source";
                *self.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry(rule).or_default() += 1;
                warn!(rule, item, "enrolment refused: the source was erased on request");
                return Err(Error::PolicyRefused {
                    item,
                    policy: policy.name().into(),
                    rule,
                    reason: "this source was erased at the request of the person concerned; it may not be enrolled \
                             again"
                        .into(),
                });
            }
            if self.is_suppressed_face(&record.embedding) {
                let rule = "erased-face";
                *self.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry(rule).or_default() += 1;
                warn!(rule, item, "enrolment refused: the person asked never to be enrolled again");
                return Err(Error::PolicyRefused {
                    item,
                    policy: policy.name().into(),
                    rule,
                    reason: "this face matches a person who asked, when erased, never to be enrolled again".into(),
                });
            }
            match policy.decide(&record.provenance) {
                Decision::Allow => quarantine.push(None),
                Decision::Quarantine { rule } => quarantine.push(Some(rule)),
                Decision::Deny { rule, reason } => {
                    *self.refusals.lock().unwrap_or_else(|p| p.into_inner()).entry(rule).or_default() += 1;
                    warn!(policy = policy.name(), rule, item, "enrolment refused by the ingest policy");
                    return Err(Error::PolicyRefused { item, policy: policy.name().into(), rule, reason });
                }
            }
        }
        let held = quarantine.iter().flatten().count();
        if held > 0 {
            info!(quarantined = held, "records quarantined by the ingest policy");
        }
        Ok(self.engine.enroll(records, &quarantine)?)
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
        let query = Query { probe, k, min_score, index, include_quarantined: false };
        let result = self.engine.search(&query)?;
        let ids: Vec<RecordId> = result.hits.iter().map(|h| h.id).collect();
        self.engine.records().record_disclosures(&ids, &caller.client, self.now())?;
        Ok(result)
    }

    /// One record, for an operator: recorded as disclosed to the caller.
    pub fn get(&self, caller: &Caller, id: RecordId) -> Result<Record, Error> {
        let record = self.engine.get(id)?;
        self.engine.records().record_disclosures(&[id], &caller.client, self.now())?;
        Ok(record)
    }

    /// Adds faces to the never-enrol-again list (in memory; the store keeps them sealed).
    fn keep_faces(&self, probes: &[Vec<f32>]) {
        let d = self.engine.dimension();
        let mut faces = self.suppressed_faces.write().unwrap_or_else(|p| p.into_inner());
        faces.extend(probes.iter().filter_map(|p| Embedding::new(p.clone(), d).ok()));
    }

    fn is_suppressed_face(&self, template: &Embedding) -> bool {
        let faces = self.suppressed_faces.read().unwrap_or_else(|p| p.into_inner());
        let strict = self.settings.thresholds.strict;
        faces.iter().any(|f| crate::kernel::dot(f.as_slice(), template.as_slice()) >= strict)
    }

    // ---- audit trail ----

    pub fn audit(&self, event: &AuditEvent) -> Result<u64, Error> {
        let seq = self.engine.requests().append_audit(event.at, &mut |seq| event.encode(seq))?;
        if seq % 10_000 == 0 {
            self.prune_audit()?;
        }
        Ok(seq)
    }

    pub fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
        let rows = self.engine.requests().audit_events(after, limit)?;
        rows.iter().map(|row| AuditEvent::decode(row).map_err(|e| Error::from(store::Error::Corrupt(e)))).collect()
    }

    fn prune_audit(&self) -> Result<(), Error> {
        let keep = SignedDuration::from_hours(24 * i64::from(self.settings.audit_retention_days));
        let cutoff = self.now().checked_sub(keep).unwrap_or(Timestamp::MIN);
        let pruned = self.engine.requests().prune_audit(cutoff)?;
        if pruned > 0 {
            info!(pruned, "audit events past retention deleted");
        }
        Ok(())
    }

    // ---- access requests ----

    /// Takes a token from `peer`'s bucket, or says when to come back.
    pub fn admit(&self, peer: &str) -> Result<(), Error> {
        let rate = f64::from(self.settings.submissions_per_minute.max(1)) / 60.0;
        let burst = f64::from(self.settings.submissions_per_minute.max(1));
        let now = self.now();
        let mut buckets = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            buckets.clear();
        }
        let (tokens, at) = buckets.entry(peer.to_string()).or_insert((burst, now));
        let elapsed = now.duration_since(*at).as_secs_f64().max(0.0);
        *tokens = (*tokens + elapsed * rate).min(burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(Error::RateLimited { retry_after_secs: ((1.0 - *tokens) / rate).ceil() as u64 });
        }
        *tokens -= 1.0;
        Ok(())
    }

    /// Stores a new access request (state received) and returns its id and secret. The work
    /// is done by [`Rights::process`].
    #[instrument(skip_all, fields(probes = probes.len()))]
    pub fn submit_access(
        &self,
        probes: Vec<Embedding>,
        contact: String,
        jurisdiction_claim: Option<String>,
        include_templates: bool,
    ) -> Result<Submitted, Error> {
        self.check_probe_count(probes.len())?;
        check_contact(&contact)?;
        let jurisdiction_claim = self.parse_claim(jurisdiction_claim)?;
        let mut request = self.new_request(Kind::Access, contact, jurisdiction_claim, include_templates, &probes);
        let secret = RequestSecret::random();
        request.secret_digest = secret.digest();
        let _guard = self.lock();
        self.save(&request)?;
        info!(request_id = %request.id, "access request received");
        Ok(Submitted { id: request.id, view: self.view(&request, true), secret })
    }

    fn check_probe_count(&self, n: usize) -> Result<(), Error> {
        if n == 0 || n > self.settings.max_probes {
            return Err(Error::InvalidRequest(format!(
                "a request carries 1 to {} probe templates, not {n}",
                self.settings.max_probes
            )));
        }
        Ok(())
    }

    fn parse_claim(&self, claim: Option<String>) -> Result<Option<String>, Error> {
        match claim.filter(|j| !j.is_empty()) {
            None => Ok(None),
            Some(j) => Ok(Some(
                j.parse::<Jurisdiction>()
                    .map_err(|e| Error::InvalidRequest(format!("jurisdiction_claim: {e}")))?
                    .to_string(),
            )),
        }
    }

    /// A request in state received, due in one month, with a placeholder secret digest.
    fn new_request(
        &self,
        kind: Kind,
        contact: String,
        jurisdiction_claim: Option<String>,
        include_templates: bool,
        probes: &[Embedding],
    ) -> Request {
        let now = self.now();
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the operating system's random number generator works");
        Request {
            id: RequestId::random(),
            kind,
            state: State::Received,
            secret_digest: RequestSecret::random().digest(),
            received_at: now,
            due_at: request::add_months(now, 1),
            extension: None,
            contact,
            jurisdiction_claim,
            include_templates,
            probes: probes.iter().map(|p| p.as_slice().to_vec()).collect(),
            probe_count: probes.len(),
            matched: Vec::new(),
            review_band: Vec::new(),
            review: None,
            denial: None,
            history: vec![(State::Received, now)],
            report: None,
            receipt_leaf: None,
            compared: 0,
            log_salt: hex::encode(salt),
            erasure: None,
        }
    }

    /// Ids of requests the worker still has to do (after a restart, for example).
    pub fn pending_work(&self) -> Result<Vec<RequestId>, Error> {
        Ok(self.load_all()?.into_iter().filter(|r| r.state.is_pending_work()).map(|r| r.id).collect())
    }

    /// Runs a request's remaining steps. Idempotent: a step already persisted is not redone,
    /// and a final request is left alone.
    #[instrument(skip_all, fields(request_id = %id))]
    pub fn process(&self, id: RequestId) -> Result<State, Error> {
        let _guard = self.lock();
        let mut request = self.load(id)?;
        if request.state == State::Received {
            request.advance(State::Verifying, self.now());
            self.save(&request)?;
        }
        if request.state == State::Verifying {
            // The probes were validated at submission; a request whose probes no longer fit
            // the store (a different dimension) is denied with the reason.
            let dimension = self.engine.dimension();
            if let Some(bad) = request.probes.iter().position(|p| p.len() != dimension) {
                request.denial = Some(format!("probe {bad} does not have {dimension} values"));
                request.advance(State::Denied, self.now());
                self.save(&request)?;
                self.changed();
                return Ok(request.state);
            }
            request.advance(State::InProgress, self.now());
            self.save(&request)?;
        }
        if request.state == State::InProgress && request.erasure.as_ref().is_some_and(|e| e.origin != Origin::Probes) {
            // Records named by the person or a sweep: nothing to match.
            self.plan_erasure(&mut request)?;
            self.changed();
        }
        if request.state == State::InProgress {
            let probes = request
                .probes
                .iter()
                .map(|p| Embedding::new(p.clone(), p.len()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::CorruptRequest(id, e.to_string()))?;
            let t = self.settings.thresholds;
            let matches = self.engine.match_exact(&probes, t.review)?;
            let (hits, compared) = (matches.best(), matches.compared);
            request.compared = compared as u64;
            request.matched = hits
                .iter()
                .filter(|h| h.score >= t.strict)
                .map(|h| Match { record_id: h.id, score: h.score })
                .collect();
            request.review_band =
                hits.iter().filter(|h| h.score < t.strict).map(|h| Match { record_id: h.id, score: h.score }).collect();
            let erasure = request.kind == Kind::Erasure;
            // The probes are the person's biometric data: kept no longer than the matching
            // (an erasure keeps them until it has checked that nothing matches any more).
            if !erasure {
                request.probes.clear();
            }
            if erasure && request.review_band.is_empty() {
                self.plan_erasure(&mut request)?;
            } else if erasure {
                request.advance(State::NeedsReview, self.now());
                self.save(&request)?;
            } else if request.review_band.is_empty() {
                self.complete(&mut request)?;
            } else {
                let report = self.report(&request)?;
                request.report = Some(serde_json::to_string(&report).expect("a report serialises"));
                request.advance(State::NeedsReview, self.now());
                self.save(&request)?;
            }
            info!(
                matched = request.matched.len(),
                review = request.review_band.len(),
                compared,
                "access request matched"
            );
            self.changed();
        }
        if request.state == State::Erasing {
            self.erase_planned(&mut request)?;
            self.changed();
        }
        Ok(request.state)
    }

    /// The privacy desk's decision on the review band: `approved` records are confirmed as the
    /// person's and disclosed; the rest stay withheld. Completes the request.
    #[instrument(skip_all, fields(request_id = %id, approved = approved.len()))]
    pub fn review(
        &self,
        caller: &Caller,
        id: RequestId,
        approved: Vec<RecordId>,
        note: String,
    ) -> Result<RequestView, Error> {
        let _guard = self.lock();
        let mut request = self.load(id)?;
        if request.state != State::NeedsReview {
            return Err(self.wrong_state(&request, "only a request that needs review can be reviewed"));
        }
        let band: BTreeSet<RecordId> = request.review_band.iter().map(|m| m.record_id).collect();
        if let Some(stray) = approved.iter().find(|id| !band.contains(id)) {
            return Err(Error::InvalidRequest(format!("record {stray} is not in this request's review band")));
        }
        if note.len() > MAX_REASON_BYTES {
            return Err(Error::InvalidRequest(format!("the note is longer than {MAX_REASON_BYTES} bytes")));
        }
        request.review = Some(Review { by: caller.client.clone(), at: self.now(), approved, note });
        if request.kind == Kind::Erasure {
            // The worker runs the rest of the pipeline.
            self.plan_erasure(&mut request)?;
        } else {
            self.complete(&mut request)?;
        }
        self.changed();
        Ok(self.view(&request, true))
    }

    /// Denies a request that is not final, with a reason the person will read.
    pub fn deny(&self, id: RequestId, reason: String) -> Result<RequestView, Error> {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(Error::InvalidRequest(format!("give a reason, at most {MAX_REASON_BYTES} bytes")));
        }
        let _guard = self.lock();
        let mut request = self.load(id)?;
        if request.state.is_final() {
            return Err(self.wrong_state(&request, "a final request cannot be denied"));
        }
        if request.state == State::Erasing {
            return Err(self.wrong_state(&request, "an erasure under way cannot be denied"));
        }
        request.denial = Some(reason);
        request.probes.clear();
        request.advance(State::Denied, self.now());
        self.save(&request)?;
        self.changed();
        Ok(self.view(&request, true))
    }

    /// Extends the deadline by `months` (the total at most two more months, Art. 12(3)), with
    /// the reason the person is told. Only before the original deadline.
    pub fn extend(&self, id: RequestId, months: u8, reason: String) -> Result<RequestView, Error> {
        if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(Error::InvalidRequest(format!("give a reason, at most {MAX_REASON_BYTES} bytes")));
        }
        let _guard = self.lock();
        let mut request = self.load(id)?;
        let already = request.extension.as_ref().map_or(0, |e| e.months);
        if !(1..=2).contains(&months) || already + months > 2 {
            return Err(Error::InvalidRequest(format!(
                "a deadline extends by two months at most in all; this one is already extended by {already}"
            )));
        }
        if request.state.is_final() {
            return Err(self.wrong_state(&request, "a final request has no deadline to extend"));
        }
        let now = self.now();
        let original_due = request::add_months(request.received_at, 1);
        if now > original_due {
            return Err(self.wrong_state(&request, "the one-month deadline has passed; it can no longer be extended"));
        }
        request.extension = Some(Extension { months: already + months, reason, at: now });
        request.due_at = request::add_months(request.received_at, 1 + already + months);
        self.save(&request)?;
        self.changed();
        Ok(self.view(&request, true))
    }

    /// A request, for its holder (`secret`) or the privacy desk (`desk`).
    pub fn request(&self, id: RequestId, secret: Option<&str>, desk: bool) -> Result<RequestView, Error> {
        let request = self.load(id)?;
        self.authorise(&request, secret, desk)?;
        Ok(self.view(&request, desk))
    }

    /// The report (JSON) and, once completed, the signed receipt of the answer.
    pub fn report_of(
        &self,
        id: RequestId,
        secret: Option<&str>,
        desk: bool,
    ) -> Result<(RequestView, Option<String>, Option<Receipt>), Error> {
        let request = self.load(id)?;
        self.authorise(&request, secret, desk)?;
        let receipt = match request.receipt_leaf {
            Some(leaf) => Some(self.engine.log().receipt(leaf)?),
            None => None,
        };
        Ok((self.view(&request, desk), request.report.clone(), receipt))
    }

    /// Requests for the privacy desk or the auditor, oldest first, without contact details.
    pub fn list(&self, state: Option<State>, overdue_only: bool) -> Result<Vec<RequestView>, Error> {
        let now = self.now();
        let mut out: Vec<RequestView> = self
            .load_all()?
            .iter()
            .filter(|r| state.is_none_or(|s| r.state == s) && (!overdue_only || r.is_overdue(now)))
            .map(|r| self.view(r, false))
            .collect();
        out.sort_by_key(|v| (v.received_at, v.id));
        Ok(out)
    }

    /// A receiver that changes after every request change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    // ---- internals ----

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn wrong_state(&self, request: &Request, what: &str) -> Error {
        Error::WrongState { id: request.id, state: request.state.name(), what: what.into() }
    }

    fn authorise(&self, request: &Request, secret: Option<&str>, desk: bool) -> Result<(), Error> {
        if desk || secret.is_some_and(|s| request::secret_matches(s, &request.secret_digest)) {
            Ok(())
        } else {
            Err(Error::WrongSecret(request.id))
        }
    }

    fn view(&self, r: &Request, desk: bool) -> RequestView {
        let approved = r.review.as_ref().map_or(0, |v| v.approved.len());
        RequestView {
            id: r.id,
            kind: r.kind,
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
            erasure_step: r
                .erasure
                .as_ref()
                .filter(|_| matches!(r.state, State::Erasing | State::Completed))
                .map(|e| e.step),
        }
    }

    fn save(&self, request: &Request) -> Result<(), Error> {
        let json = Zeroizing::new(serde_json::to_vec(request).expect("a request serialises"));
        Ok(self.engine.requests().put_request(request.id.as_bytes(), &json)?)
    }

    fn load(&self, id: RequestId) -> Result<Request, Error> {
        let json = self.engine.requests().request(id.as_bytes())?.ok_or(Error::NoRequest(id))?;
        serde_json::from_slice(&json).map_err(|e| Error::CorruptRequest(id, e.to_string()))
    }

    fn load_all(&self) -> Result<Vec<Request>, Error> {
        self.engine
            .requests()
            .requests()?
            .into_iter()
            .map(|(id, json)| {
                serde_json::from_slice(&json)
                    .map_err(|e| Error::CorruptRequest(RequestId::from_bytes(id), e.to_string()))
            })
            .collect()
    }

    /// Writes the final report, the completed state and the log entry of the answer in one
    /// synced write.
    fn complete(&self, request: &mut Request) -> Result<(), Error> {
        let now = self.now();
        let report = self.report(request)?;
        let withheld = report.withheld_for_review as u32;
        let entry = Entry {
            time: now.round(jiff::Unit::Second).unwrap_or(now),
            event: Event::AccessAnswered {
                commitment: event::request_commitment(&self.salt(request), request.id.as_bytes()),
                disclosed: report.records.len() as u32,
                withheld,
            },
        };
        request.report = Some(serde_json::to_string(&report).expect("a report serialises"));
        request.advance(State::Completed, now);
        let store = self.engine.store();
        let id = *request.id.as_bytes();
        store.put_request_logged(&id, &entry, &mut |leaf| {
            request.receipt_leaf = Some(leaf);
            Zeroizing::new(serde_json::to_vec(&*request).expect("a request serialises"))
        })?;
        info!(request_id = %request.id, disclosed = report.records.len(), withheld, "access request answered");
        Ok(())
    }

    fn salt(&self, request: &Request) -> [u8; 16] {
        hex::decode(&request.log_salt).ok().and_then(|b| b.try_into().ok()).unwrap_or([0; 16])
    }

    /// The report for what `request` has matched so far.
    fn report(&self, request: &Request) -> Result<AccessReport, Error> {
        let approved: BTreeSet<RecordId> =
            request.review.as_ref().map(|r| r.approved.iter().copied().collect()).unwrap_or_default();
        let disclosed: Vec<Match> = request
            .matched
            .iter()
            .chain(request.review_band.iter().filter(|m| approved.contains(&m.record_id)))
            .copied()
            .collect();
        let store = self.engine.store();
        let mut records = Vec::with_capacity(disclosed.len());
        let mut recipients = BTreeSet::new();
        let mut in_france = request.jurisdiction_claim.as_deref() == Some("FR");
        for m in &disclosed {
            // Erased since the match: no longer held, so not reported.
            let record = match self.engine.get(m.record_id) {
                Ok(r) => r,
                Err(engine::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let disclosures = store.disclosures(m.record_id)?;
            recipients.extend(disclosures.iter().map(|d| d.client.clone()));
            let p = &record.provenance;
            in_france |= p.jurisdiction().as_str() == "FR";
            records.push(ReportRecord {
                record_id: m.record_id.to_string(),
                score: m.score,
                source_uri: p.source_uri().to_string(),
                collected_at: p.collected_at().to_string(),
                source_kind: p.source_kind().name().into(),
                legal_basis: p.legal_basis().name().into(),
                jurisdiction: p.jurisdiction().to_string(),
                enrolled_at: record.enrolled_at.to_string(),
                quarantined: self.engine.is_quarantined(m.record_id),
                recipients: disclosures,
                enrolment_log: LogOpening {
                    leaf_index: store.enrolment_leaf(m.record_id)?,
                    salt: hex::encode(record.commitment_salt),
                    commitment: hex::encode(event::commitment(&record.commitment_salt, m.record_id)),
                },
                template: request.include_templates.then(|| record.embedding.as_slice().to_vec()),
            });
        }
        let withheld = request.review_band.len() - approved.len().min(request.review_band.len());
        let t = self.settings.thresholds;
        let salt = self.salt(request);
        Ok(AccessReport {
            format: report::FORMAT.into(),
            request_id: request.id.to_string(),
            received_at: request.received_at.to_string(),
            answered_at: self.now().to_string(),
            due_at: request.due_at.to_string(),
            confirmation: if records.is_empty() {
                "We hold no record that matches your face at or above the strict threshold.".into()
            } else {
                format!("We hold {} record(s) of your face, listed below in full.", records.len())
            },
            records,
            erased_since: 0,
            withheld_for_review: withheld,
            review_note: if withheld == 0 {
                "No possible match is withheld.".into()
            } else {
                format!(
                    "{withheld} record(s) scored in the review band: they may be yours or a look-alike's. They are not \
                     shown until the privacy desk confirms them, because showing a stranger's data would breach \
                     their rights (GDPR Art. 15(4))."
                )
            },
            matching: Matching {
                method: "exact scan of every record held (no approximate index)".into(),
                probes: request.probe_count,
                records_compared: request.compared,
                strict_threshold: t.strict,
                review_threshold: t.review,
            },
            controller: self.settings.controller.clone(),
            purposes: vec![
                "identification of persons by face search on behalf of the operators listed as recipients".into(),
            ],
            categories: vec![
                "biometric data (Art. 9): a face template computed from a photo".into(),
                "the photo's source address, collection time, declared legal basis and presumed jurisdiction".into(),
                "who searched for and received each record, and when".into(),
            ],
            recipients: recipients.into_iter().collect(),
            retention: "until erased on request or by policy; no automatic expiry is configured in this demonstration"
                .into(),
            your_rights: vec![
                "rectification (Art. 16)".into(),
                "erasure (Art. 17): submit an erasure request with your request secret or your photo".into(),
                "restriction of processing (Art. 18)".into(),
                "objection (Art. 21)".into(),
                "to be told the recipients of your data (Art. 19)".into(),
                "to ask again at any time, free of charge: there is no yearly limit".into(),
            ],
            supervisory_authority: if in_france { CNIL.into() } else { self.settings.supervisory_authority.clone() },
            source: "collected from the sources listed with each record, not from you".into(),
            automated_decisions:
                "no decision producing legal effects is taken automatically by this system; operators \
                                  receive ranked search results"
                    .into(),
            scope:
                "This report covers every record held about you, whatever its age, found by comparing your photo with \
                    every record in the store."
                    .into(),
            answer_log: LogOpening {
                leaf_index: None,
                salt: hex::encode(salt),
                commitment: hex::encode(event::request_commitment(&salt, request.id.as_bytes())),
            },
        })
    }
}

//! Erasure requests (GDPR Art. 17, 19): the pipeline from a frozen record set to two logged,
//! signed receipts, plus policy sweeps, key rotation and no-match attestations.
//!
//! Steps (each persisted before the next; each idempotent, so a restart resumes):
//! 1. plan: the record set frozen, its digest logged (`erasure-planned`);
//! 2. delete: one synced write removes every row of the records, writes the recipients'
//!    notices (Art. 19) and the suppression entries, and moves the request on; the vectors are
//!    then removed from the indexes (memory overwritten), and the person's probes re-checked;
//! 3. phase 1 ([`Rights::purge_due`], batched over every request waiting): the data keys purged
//!    from disk and checked; `erasure-phase-1` logged;
//! 4. phase 2, once the purge window has passed since the oldest waiting phase 1: the rows
//!    purged from the table files range by range and checked; `erasure-phase-2` logged.
//!
//! Receipts state what was done, what was checked and what is pending (backups until the next
//! key rotation, recipients' own copies), never more.
use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, instrument, warn};
use zeroize::Zeroizing;

use super::{Error, Rights, Submitted, check_contact, report::AccessReport, request};
use crate::{
    transparency::{
        event::{self, Entry, Event},
        receipt::{Pending, Receipt, Statements},
    },
    embedding::Embedding,
    record::{Jurisdiction, LegalBasis, RecordId, SourceKind},
    store::{self, Evidence},
};
use request::{Erasure, Kind, Match, Origin, Phase, Request, RequestId, RequestSecret, State, Step};

/// What the person (or the privacy desk) sees of an erasure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErasureStatus {
    pub format: &'static str,
    pub request_id: String,
    pub state: &'static str,
    pub step: Option<&'static str>,
    pub origin: Option<Origin>,
    pub records: Vec<String>,
    pub plan_leaf: Option<u64>,
    pub plan_salt: String,
    pub notified_recipients: usize,
    pub suppressed_sources: usize,
    /// Kept with the person's explicit consent (not erased).
    pub retained_with_consent: Vec<String>,
    pub phase1_leaf: Option<u64>,
    pub phase2_leaf: Option<u64>,
    pub not_claimed: Vec<&'static str>,
}

/// A policy sweep's rule: one provenance field and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepRule {
    Jurisdiction(Jurisdiction),
    SourceKind(SourceKind),
    LegalBasis(LegalBasis),
}

impl std::str::FromStr for SweepRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (field, value) = s
            .split_once(['=', ' '])
            .map(|(f, v)| (f.trim(), v.trim()))
            .ok_or_else(|| format!("rule {s:?}: write FIELD=VALUE, e.g. jurisdiction=FR"))?;
        match field {
            "jurisdiction" => value.parse().map(SweepRule::Jurisdiction).map_err(|e| format!("jurisdiction: {e}")),
            "source_kind" => SourceKind::from_name(value)
                .map(SweepRule::SourceKind)
                .ok_or_else(|| format!("source_kind {value:?}: use one of {}", SourceKind::names())),
            "legal_basis" => LegalBasis::from_name(value)
                .map(SweepRule::LegalBasis)
                .ok_or_else(|| format!("legal_basis {value:?}: use one of {}", LegalBasis::names())),
            other => Err(format!("rule field {other:?}: use jurisdiction, source_kind or legal_basis")),
        }
    }
}

impl std::fmt::Display for SweepRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SweepRule::Jurisdiction(j) => write!(f, "jurisdiction={j}"),
            SweepRule::SourceKind(k) => write!(f, "source_kind={}", k.name()),
            SweepRule::LegalBasis(b) => write!(f, "legal_basis={}", b.name()),
        }
    }
}

/// What the person asks to erase.
pub enum ErasureTarget {
    /// Whatever matches these probe faces.
    Probes(Vec<Embedding>),
    /// These records from an access report, with that request's id and secret.
    Records { access_request: RequestId, secret: String, records: Vec<RecordId> },
}

impl Rights {
    /// Stores a new erasure request (state received); the worker does the rest.
    #[instrument(skip_all)]
    pub fn submit_erasure(
        &self,
        target: ErasureTarget,
        contact: String,
        jurisdiction_claim: Option<String>,
        never_enrol_again: bool,
    ) -> Result<Submitted, Error> {
        check_contact(&contact)?;
        if never_enrol_again && !matches!(target, ErasureTarget::Probes(_)) {
            return Err(Error::InvalidRequest(
                "never_enrol_again keeps your probe templates to recognise your face: send probes".into(),
            ));
        }
        let (probes, origin, plan) = match target {
            ErasureTarget::Probes(probes) => {
                self.check_probe_count(probes.len())?;
                (probes, Origin::Probes, Vec::new())
            }
            ErasureTarget::Records { access_request, secret, records } => {
                let access = self.load(access_request)?;
                self.authorise(&access, Some(&secret), false)?;
                if access.kind != Kind::Access || access.state != State::Completed {
                    return Err(self.wrong_state(&access, "records can be named only from a completed access request"));
                }
                let disclosed: BTreeSet<RecordId> = access
                    .matched
                    .iter()
                    .map(|m| m.record_id)
                    .chain(access.review.iter().flat_map(|r| r.approved.iter().copied()))
                    .collect();
                if records.is_empty() {
                    return Err(Error::InvalidRequest("name at least one record_id from your access report".into()));
                }
                if let Some(stray) = records.iter().find(|id| !disclosed.contains(id)) {
                    return Err(Error::InvalidRequest(format!(
                        "record {stray} is not in access request {access_request}'s report"
                    )));
                }
                (Vec::new(), Origin::Records { access_request }, records)
            }
        };
        let jurisdiction_claim = self.parse_claim(jurisdiction_claim)?;
        let mut request = self.new_request(Kind::Erasure, contact, jurisdiction_claim, false, &probes);
        let secret = RequestSecret::random();
        request.secret_digest = secret.digest();
        request.matched = plan.iter().map(|&record_id| Match { record_id, score: 1.0 }).collect();
        let mut erasure = new_erasure(origin);
        erasure.keep_face = never_enrol_again;
        request.erasure = Some(erasure);
        let _guard = self.lock();
        self.save(&request)?;
        info!(request_id = %request.id, "erasure request received");
        Ok(Submitted { id: request.id, view: self.view(&request, true), secret })
    }

    /// An administrator's policy sweep: every record held whose provenance matches `rule`
    /// gets an erasure request of its own (so its own receipts), queued for the worker.
    #[instrument(skip_all, fields(rule = %rule))]
    pub fn sweep(&self, rule: &SweepRule, dry_run: bool) -> Result<(usize, Vec<RequestId>), Error> {
        let mut hits = Vec::new();
        self.engine.records().for_each(&mut |record| {
            let p = &record.provenance;
            let hit = match rule {
                SweepRule::Jurisdiction(j) => p.jurisdiction() == *j,
                SweepRule::SourceKind(k) => p.source_kind() == *k,
                SweepRule::LegalBasis(b) => p.legal_basis() == *b,
            };
            if hit {
                hits.push(record.id);
            }
        })?;
        if dry_run {
            return Ok((hits.len(), Vec::new()));
        }
        let _guard = self.lock();
        let mut ids = Vec::with_capacity(hits.len());
        for record_id in &hits {
            let mut request = self.new_request(Kind::Erasure, format!("policy sweep {rule}"), None, false, &[]);
            request.matched = vec![Match { record_id: *record_id, score: 1.0 }];
            request.erasure = Some(new_erasure(Origin::Sweep { rule: rule.to_string() }));
            self.save(&request)?;
            ids.push(request.id);
        }
        info!(records = hits.len(), "policy sweep queued");
        self.changed();
        Ok((hits.len(), ids))
    }

    /// After matching (or review): freezes the record set and logs its digest, moving the
    /// request to `erasing`.
    pub(super) fn plan_erasure(&self, request: &mut Request) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let approved: BTreeSet<RecordId> =
            request.review.as_ref().map(|r| r.approved.iter().copied().collect()).unwrap_or_default();
        let plan: Vec<RecordId> =
            request.matched.iter().map(|m| m.record_id).chain(approved).collect::<BTreeSet<_>>().into_iter().collect();
        let graph_slots = self.engine.graph_slots(&plan);
        let salt = self.salt(request);
        let now = self.now();
        let entry = Entry {
            time: now.round(jiff::Unit::Second).unwrap_or(now),
            event: Event::ErasurePlanned {
                commitment: event::request_commitment(&salt, request.id.as_bytes()),
                records: plan.len() as u32,
                plan: event::plan_digest(&salt, request.id.as_bytes(), &plan),
            },
        };
        let erasure = request.erasure.get_or_insert_with(|| new_erasure(Origin::Probes));
        erasure.plan = plan;
        erasure.graph_slots = graph_slots;
        erasure.step = Step::Planned;
        erasure.key_epoch = self.engine.records().key_epoch();
        request.advance(State::Erasing, now);
        let id = *request.id.as_bytes();
        self.engine.requests().put_request_logged(&id, &entry, &mut |leaf| {
            if let Some(e) = request.erasure.as_mut() {
                e.plan_leaf = leaf;
            }
            Zeroizing::new(serde_json::to_vec(&*request).expect("a request serialises"))
        })?;
        info!(request_id = %request.id, records = request.erasure.as_ref().map_or(0, |e| e.plan.len()), "erasure planned");
        self.metrics.record_step("plan", started.elapsed());
        crate::failpoint::hit("erase.planned");
        Ok(())
    }

    /// Step 2: the delete, the indexes, the notices and the suppression entries.
    pub(super) fn erase_planned(&self, request: &mut Request) -> Result<(), Error> {
        let Some(erasure) = request.erasure.clone() else { return Ok(()) };
        if erasure.step == Step::Planned {
            let started = std::time::Instant::now();
            let store = self.engine.store();
            let held = store.erasure_inputs(&erasure.plan)?;
            let now = self.now();
            let notice = |id: RecordId| {
                let body = serde_json::json!({
                    "record_id": id.to_string(),
                    "erased_at": now.to_string(),
                    "reason": "erased at the request of the person concerned (GDPR Art. 17)",
                    "action": "erase every copy of this record and of results derived from it that you hold (Art. 19)",
                });
                serde_json::to_vec(&body).expect("a notice serialises")
            };
            // Earlier access reports hold these records' sources (and maybe templates): they are
            // part of what is erased, in the same write.
            let also = self.without(&erasure.plan.iter().copied().collect(), request.id)?;
            let suppress: Vec<[u8; 32]> = held.iter().map(|h| h.source_key).collect();
            // Only with the person's explicit consent: their probes, kept to refuse their face.
            let faces = erasure.keep_face.then(|| {
                Zeroizing::new(request.probes.iter().flatten().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
            });
            let faces_kept = if faces.is_some() { request.probes.len() } else { 0 };
            let id = *request.id.as_bytes();
            let e = request.erasure.as_mut().expect("an erasure request has a pipeline");
            e.suppressed = suppress.len();
            e.deleted_at = Some(now);
            e.step = Step::Deleted;
            e.faces_kept = faces_kept;
            let deletion = store::Deletion {
                ids: &erasure.plan,
                graph_slots: &erasure.graph_slots,
                notice: &notice,
                suppress: &suppress,
                faces: faces.as_deref().map(|f| f.as_slice()),
                also: &also,
            };
            let erased = store.erase(&deletion, &id, &mut |erased| {
                if let Some(e) = request.erasure.as_mut() {
                    e.notified = erased.recipients.iter().cloned().collect();
                    e.erased = Some(erased.clone());
                }
                Zeroizing::new(serde_json::to_vec(&*request).expect("a request serialises"))
            })?;
            if faces_kept > 0 {
                self.keep_faces(&request.probes);
            }
            info!(
                request_id = %request.id,
                records = erased.records,
                recipients = erased.recipients.len(),
                reports = also.len(),
                "erasure: rows deleted"
            );
            self.metrics.record_step("delete", started.elapsed());
            crate::failpoint::hit("erase.deleted");
        }
        // Idempotent: after a restart the indexes were rebuilt without these records anyway.
        let e = request.erasure.as_ref().expect("an erasure request has a pipeline");
        if e.step == Step::Deleted && e.post_check.is_none() {
            let started = std::time::Instant::now();
            for id in &e.plan {
                self.engine.unindex(*id);
            }
            crate::failpoint::hit("erase.unindexed");
            let probes = request
                .probes
                .iter()
                .map(|p| Embedding::new(p.clone(), p.len()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| Error::CorruptRequest(request.id, err.to_string()))?;
            let matches = self.engine.match_exact(&probes, self.settings.thresholds.strict)?;
            let (hits, compared) = (matches.best(), matches.compared);
            let remaining = if probes.is_empty() { 0 } else { hits.len() as u64 };
            let e = request.erasure.as_mut().expect("an erasure request has a pipeline");
            e.post_check = Some((compared as u64, remaining));
            // The probes are biometric data: kept no longer than this check.
            request.probes.clear();
            self.save(request)?;
            self.metrics.record_step("unindex_and_check", started.elapsed());
        }
        Ok(())
    }

    /// Every other access request that names one of `erased`, with those records removed
    /// from its matches and its stored report, ready to be written with the delete.
    fn without(&self, erased: &BTreeSet<RecordId>, except: RequestId) -> Result<Vec<store::StoredRequest>, Error> {
        let mut out = Vec::new();
        for mut r in self.load_all()? {
            let names = |m: &Match| erased.contains(&m.record_id);
            if r.id == except
                || r.kind != Kind::Access
                || !(r.matched.iter().any(names) || r.review_band.iter().any(names))
            {
                continue;
            }
            r.matched.retain(|m| !names(m));
            r.review_band.retain(|m| !names(m));
            if let Some(review) = r.review.as_mut() {
                review.approved.retain(|id| !erased.contains(id));
            }
            if let Some(text) = &r.report {
                let mut report: AccessReport =
                    serde_json::from_str(text).map_err(|e| Error::CorruptRequest(r.id, e.to_string()))?;
                let before = report.records.len();
                report.records.retain(|rec| rec.record_id.parse().is_ok_and(|id| !erased.contains(&id)));
                report.erased_since += before - report.records.len();
                r.report = Some(serde_json::to_string(&report).expect("a report serialises"));
            }
            out.push((*r.id.as_bytes(), Zeroizing::new(serde_json::to_vec(&r).expect("a request serialises"))));
        }
        Ok(out)
    }

    /// Phases 1 and 2 for every erasure waiting for them (batched: one purge serves many
    /// requests), and a key rotation when one is due. Returns whether anything was done.
    #[instrument(skip_all)]
    pub fn purge_due(&self, now_regardless_of_window: bool) -> Result<bool, Error> {
        let _guard = self.lock();
        let mut did = false;
        let waiting: Vec<Request> = self
            .load_all()?
            .into_iter()
            .filter(|r| r.state == State::Erasing && r.erasure.as_ref().is_some_and(|e| e.post_check.is_some()))
            .collect();
        let store = self.engine.store();

        let mut phase1: Vec<Request> =
            waiting.iter().filter(|r| r.erasure.as_ref().is_some_and(|e| e.step == Step::Deleted)).cloned().collect();
        if !phase1.is_empty() {
            let mut ids = Vec::new();
            let mut evidence = Evidence::default();
            for e in phase1.iter().filter_map(|r| r.erasure.as_ref()) {
                ids.extend(e.plan.iter().copied());
                if let Some(erased) = &e.erased {
                    evidence.extend(&erased.evidence);
                }
            }
            let started = std::time::Instant::now();
            let verified = store.purge_keys(&ids, &evidence)?;
            self.metrics.record_step("phase1_purge", started.elapsed());
            crate::failpoint::hit("erase.keys-purged");
            let now = self.now();
            let epoch = store.key_epoch();
            let entries: Vec<Entry> = phase1
                .iter()
                .map(|r| Entry {
                    time: now.round(jiff::Unit::Second).unwrap_or(now),
                    event: Event::ErasureKeysPurged {
                        commitment: event::request_commitment(&self.salt(r), r.id.as_bytes()),
                        records: r.erasure.as_ref().map_or(0, |e| e.plan.len()) as u32,
                        epoch,
                    },
                })
                .collect();
            self.log_steps(&mut phase1, &entries, |r, leaf| {
                let e = r.erasure.as_mut().expect("an erasure request has a pipeline");
                e.step = Step::KeysPurged;
                e.key_epoch = epoch;
                e.phase1 = Some(Phase { at: now, leaf, verified: verified.clone() });
            })?;
            info!(requests = phase1.len(), records = ids.len(), "erasure phase 1: data keys purged and checked");
            crate::failpoint::hit("erase.phase1-logged");
            did = true;
        }

        let now = self.now();
        let mut phase2: Vec<Request> = self
            .load_all()?
            .into_iter()
            .filter(|r| r.state == State::Erasing && r.erasure.as_ref().is_some_and(|e| e.step == Step::KeysPurged))
            .collect();
        let oldest = phase2.iter().filter_map(|r| r.erasure.as_ref()?.phase1.as_ref().map(|p| p.at)).min();
        let due = |at: Timestamp| at.checked_add(self.purge_window()).is_ok_and(|due| due <= now);
        if oldest.is_some_and(|at| now_regardless_of_window || due(at)) {
            let mut targets = Vec::new();
            let mut evidence = Evidence::default();
            for erased in phase2.iter().filter_map(|r| r.erasure.as_ref()?.erased.as_ref()) {
                targets.extend(erased.targets.iter().cloned());
                evidence.extend(&erased.evidence);
            }
            let started = std::time::Instant::now();
            let verified = store.purge_rows(&targets, &evidence)?;
            self.metrics.record_step("phase2_purge", started.elapsed());
            crate::failpoint::hit("erase.rows-purged");
            let entries: Vec<Entry> = phase2
                .iter()
                .map(|r| Entry {
                    time: now.round(jiff::Unit::Second).unwrap_or(now),
                    event: Event::ErasureTemplatesPurged {
                        commitment: event::request_commitment(&self.salt(r), r.id.as_bytes()),
                        records: r.erasure.as_ref().map_or(0, |e| e.plan.len()) as u32,
                    },
                })
                .collect();
            self.log_steps(&mut phase2, &entries, |r, leaf| {
                let e = r.erasure.as_mut().expect("an erasure request has a pipeline");
                e.step = Step::TemplatesPurged;
                e.phase2 = Some(Phase { at: now, leaf, verified: verified.clone() });
                r.receipt_leaf = Some(leaf);
                r.advance(State::Completed, now);
            })?;
            info!(requests = phase2.len(), ranges = targets.len(), "erasure phase 2: rows purged and checked");
            did = true;
        }
        if did {
            self.changed();
        }
        Ok(did)
    }

    /// When the worker next has timed work: phase 2 at the end of the purge window, a key
    /// rotation when due, or soon for a step that failed (a purge check, a write) and is retried.
    pub fn next_purge_at(&self) -> Result<Option<Timestamp>, Error> {
        let erasing: Vec<Request> = self.load_all()?.into_iter().filter(|r| r.state == State::Erasing).collect();
        // Work that failed (a purge check, a write): retried soon.
        let retry = erasing
            .iter()
            .filter_map(|r| r.erasure.as_ref())
            .any(|e| e.step == Step::Deleted)
            .then(|| self.now().checked_add(SignedDuration::from_secs(10)).ok())
            .flatten();
        let window = erasing
            .iter()
            .filter_map(|r| r.erasure.as_ref()?.phase1.as_ref().map(|p| p.at))
            .min()
            .and_then(|at| at.checked_add(self.purge_window()).ok());
        Ok(retry.into_iter().chain(window).chain(self.next_rotation_at()?).min())
    }

    fn purge_window(&self) -> SignedDuration {
        SignedDuration::try_from(self.settings.purge_window).unwrap_or(SignedDuration::MAX)
    }

    /// Writes each request's next state with its log entry, all in one synced write.
    fn log_steps(
        &self,
        requests: &mut [Request],
        entries: &[Entry],
        mut apply: impl FnMut(&mut Request, u64),
    ) -> Result<(), Error> {
        let ids: Vec<[u8; 16]> = requests.iter().map(|r| *r.id.as_bytes()).collect();
        self.engine.requests().put_requests_logged(&ids, entries, &mut |i, leaf| {
            apply(&mut requests[i], leaf);
            Zeroizing::new(serde_json::to_vec(&requests[i]).expect("a request serialises"))
        })?;
        Ok(())
    }

    /// The signed receipts of an erasure's phases, with what they state.
    pub fn erasure_receipts(
        &self,
        id: RequestId,
        secret: Option<&str>,
        desk: bool,
    ) -> Result<(ErasureStatus, Option<Receipt>, Option<Receipt>), Error> {
        let request = self.load(id)?;
        self.authorise(&request, secret, desk)?;
        let Some(e) = request.erasure.as_ref() else {
            return Err(Error::InvalidRequest(format!("request {id} is an access request, not an erasure")));
        };
        let store = self.engine.store();
        let phase1 = match &e.phase1 {
            Some(p) => Some(store.receipt_with(p.leaf, Some(self.phase1_statements(e, p)))?),
            None => None,
        };
        let phase2 = match &e.phase2 {
            Some(p) => Some(store.receipt_with(p.leaf, Some(self.phase2_statements(e, p)))?),
            None => None,
        };
        let status = ErasureStatus {
            format: "oubli-erasure-status/v1",
            request_id: id.to_string(),
            state: request.state.name(),
            step: (request.state == State::Erasing || request.state == State::Completed).then(|| e.step.name()),
            origin: Some(e.origin.clone()),
            records: e.plan.iter().map(|r| r.to_string()).collect(),
            plan_leaf: (request.state == State::Erasing || request.state == State::Completed).then_some(e.plan_leaf),
            plan_salt: request.log_salt.clone(),
            notified_recipients: e.notified.len(),
            suppressed_sources: e.suppressed,
            retained_with_consent: (e.faces_kept > 0)
                .then(|| format!("{} probe template(s), to refuse enrolling this face again", e.faces_kept))
                .into_iter()
                .collect(),
            phase1_leaf: e.phase1.as_ref().map(|p| p.leaf),
            phase2_leaf: e.phase2.as_ref().map(|p| p.leaf),
            not_claimed: NOT_CLAIMED.to_vec(),
        };
        Ok((status, phase1, phase2))
    }

    fn backup_pending(&self, e: &Erasure) -> Pending {
        let store = self.engine.store();
        let seconds = |t: Timestamp| t.round(jiff::Unit::Second).unwrap_or(t).to_string();
        let deleted = e.deleted_at.map_or_else(|| "the delete".to_string(), seconds);
        if store.oldest_key_epoch() > e.key_epoch {
            Pending {
                what: format!(
                    "none: backups made before {deleted} hold data keys wrapped under key epoch {}, which has been \
                     destroyed by a key rotation since",
                    e.key_epoch
                ),
                due: "done".into(),
            }
        } else {
            let due = e
                .deleted_at
                .and_then(|t| {
                    t.checked_add(SignedDuration::from_hours(24 * i64::from(self.settings.rotation_days))).ok()
                })
                .map_or_else(|| "unknown".to_string(), seconds);
            Pending {
                what: format!(
                    "backups made before {deleted} still hold the ciphertext and data keys wrapped under key epoch {}: \
                     they become unreadable when that epoch's key-encryption key is destroyed at the next key rotation",
                    e.key_epoch
                ),
                due,
            }
        }
    }

    fn phase1_statements(&self, e: &Erasure, p: &Phase) -> Statements {
        let n = e.erased.as_ref().map_or(e.plan.len(), |x| x.records);
        let mut done = vec![
            format!(
                "{n} record(s) deleted in one synced write: sealed template and provenance, wrapped data key, \
                 recipients-log rows, idempotency rows, enrolment-leaf and quarantine rows, and their entries in \
                 earlier access reports"
            ),
            "the vectors removed from the exact index and the HNSW graph (node unlinked, neighbours reconnected), \
             their memory overwritten with zeros"
                .into(),
            format!("{} recipient(s) of these records sent a notice to erase their copies (Art. 19)", e.notified.len()),
            format!(
                "{} source address(es) added to the suppression list as keyed hashes: re-enrolling them is refused",
                e.suppressed
            ),
            "the data keys destroyed and purged from this service's disk: the copies of the ciphertext left in its \
             table files until phase 2 are unreadable without them (backups: see pending)"
                .into(),
        ];
        if let Origin::Sweep { rule } = &e.origin {
            done.push(format!("erased by a policy sweep: {rule}"));
        }
        if e.faces_kept > 0 {
            done.push(format!(
                "retained with your explicit consent, not erased: {} probe template(s), sealed, used only to refuse \
                 enrolling your face again",
                e.faces_kept
            ));
        }
        let mut verified = p.verified.clone();
        if let Some((compared, remaining)) = e.post_check.filter(|_| e.origin == Origin::Probes) {
            verified.push(format!(
                "after the delete, the exact scan of the {compared} record(s) left found {remaining} at or above the \
                 strict threshold for the person's probes"
            ));
        }
        let mut pending = Vec::new();
        if e.phase2.is_none() {
            pending.push(Pending {
                what: "phase 2: the encrypted templates purged from the table files and checked".into(),
                due: p
                    .at
                    .checked_add(self.purge_window())
                    .map_or_else(|_| "unknown".into(), |t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()),
            });
        }
        pending.push(self.backup_pending(e));
        pending.push(recipients_pending(e));
        Statements { done, verified, pending }
    }

    fn phase2_statements(&self, e: &Erasure, p: &Phase) -> Statements {
        Statements {
            done: vec![format!(
                "the key ranges of the {} erased record(s) compacted to the bottom level, dropping their encrypted \
                 templates and derived rows from the table files",
                e.erased.as_ref().map_or(e.plan.len(), |x| x.records)
            )],
            verified: p.verified.clone(),
            pending: vec![self.backup_pending(e), recipients_pending(e)],
        }
    }

    /// A signed, logged statement that no record held scores at or above the strict threshold
    /// against `probes`, for the holder of request `id`. Refused, with the count, if some do.
    #[instrument(skip_all, fields(request_id = %id, probes = probes.len()))]
    pub fn attest_no_match(&self, id: RequestId, secret: &str, probes: &[Embedding]) -> Result<Receipt, Error> {
        self.check_probe_count(probes.len())?;
        let request = self.load(id)?;
        self.authorise(&request, Some(secret), false)?;
        let threshold = self.settings.thresholds.strict;
        let matches = self.engine.match_exact(probes, threshold)?;
        let (hits, compared) = (matches.best(), matches.compared);
        if !hits.is_empty() {
            return Err(Error::StillMatches { count: hits.len(), threshold });
        }
        let store = self.engine.store();
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the operating system's random number generator works");
        let now = self.now();
        let tree_size = store.tree_size();
        let entry = Entry {
            time: now.round(jiff::Unit::Second).unwrap_or(now),
            event: Event::NoMatchAttested {
                commitment: event::request_commitment(&salt, id.as_bytes()),
                tree_size,
                compared: compared as u64,
                threshold,
            },
        };
        let leaf = store.append(&entry)?;
        info!(leaf, compared, "no-match attested");
        Ok(store.receipt(leaf)?)
    }

    /// Rotates the key-encryption key (see `store::rotate`).
    pub fn rotate_keys(&self) -> Result<store::Rotation, Error> {
        let rotation = self.engine.records().rotate_keys()?;
        info!(epoch = rotation.epoch, rewrapped = rotation.rewrapped, "key-encryption key rotated");
        Ok(rotation)
    }

    /// Finishes a rotation cut short, or rotates the keys if an erasure's backups have waited
    /// `rotation_days` for it.
    pub fn rotate_if_due(&self) -> Result<Option<store::Rotation>, Error> {
        let store = self.engine.store();
        if store.key_epoch() != store.oldest_key_epoch() {
            return Ok(store.resume_rotation()?);
        }
        match self.next_rotation_at()? {
            Some(at) if at <= self.now() => self.rotate_keys().map(Some),
            _ => Ok(None),
        }
    }

    /// When a rotation is due: `rotation_days` after the oldest erasure whose backups are still
    /// readable (its key epoch not destroyed yet).
    fn next_rotation_at(&self) -> Result<Option<Timestamp>, Error> {
        let oldest = self.engine.records().oldest_key_epoch();
        let wait = SignedDuration::from_hours(24 * i64::from(self.settings.rotation_days));
        Ok(self
            .load_all()?
            .iter()
            .filter_map(|r| r.erasure.as_ref())
            .filter(|e| e.phase1.is_some() && e.key_epoch >= oldest)
            .filter_map(|e| e.deleted_at?.checked_add(wait).ok())
            .min())
    }

    /// Notifications waiting for `client` (JSON bodies).
    pub fn notifications(&self, client: &str) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .engine
            .records()
            .notices(client)?
            .into_iter()
            .map(|n| (n.id, String::from_utf8_lossy(&n.body).into_owned()))
            .collect())
    }

    pub fn ack_notification(&self, client: &str, id: &str) -> Result<(), Error> {
        if self.engine.records().ack_notice(client, id)? {
            Ok(())
        } else {
            Err(Error::NoNotification(id.chars().take(40).collect()))
        }
    }
}

fn new_erasure(origin: Origin) -> Erasure {
    Erasure {
        origin,
        step: Step::Planned,
        plan: Vec::new(),
        graph_slots: Vec::new(),
        plan_leaf: 0,
        deleted_at: None,
        erased: None,
        notified: Vec::new(),
        suppressed: 0,
        post_check: None,
        key_epoch: 0,
        phase1: None,
        phase2: None,
        keep_face: false,
        faces_kept: 0,
    }
}

fn recipients_pending(e: &Erasure) -> Pending {
    Pending {
        what: format!(
            "copies already held by the {} notified recipient(s): they must erase them; this service cannot check \
             their systems",
            e.notified.len()
        ),
        due: "outside this service's control".into(),
    }
}

/// What no receipt claims, whatever it says.
const NOT_CLAIMED: [&str; 3] = [
    "physical or forensic erasure of disk or flash blocks (storage devices remap them)",
    "erasure of memory pages the allocator or the operating system kept after the process overwrote its copies",
    "erasure of copies made outside this service (recipients, backups not yet past a key rotation)",
];

//! Erasure requests (GDPR Art. 17, 19): the pipeline from a frozen record set to two logged,
//! signed receipts.
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
//! This file holds submission, planning, the delete and the receipts; [`phases`] the two
//! purges; [`evidence`] what the delete leaves for them. Receipts state what was done, what was
//! checked and what is pending, never more; their wording is `transparency::statements`.
pub mod evidence;
pub mod phases;

use std::collections::BTreeSet;

use jiff::SignedDuration;
use tracing::{info, instrument};
use zeroize::Zeroizing;

pub use super::sweep::SweepRule;
use super::{
    Error, Rights, Submitted,
    access::probes_of,
    identity::{Identity, Signed, Terms},
    intake::check_contact,
    report::AccessReport,
    request::{Alert, Common, Erasure, ErasureRequest, Kind, Match, Origin, Request, RequestId, State, Step, Stored},
};
use crate::{
    embedding::Embedding,
    record::RecordId,
    store,
    transparency::{
        event::{self, Event, Logged},
        receipt::Receipt,
        statements::{self, ErasureFacts},
    },
};

/// How many times an erasure is planned again when its post-delete check still finds matches,
/// before it is held with an alert.
const MAX_REPLANS: u32 = 2;

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
    /// Plans replaced by a later one (the post-delete check still found matches).
    pub earlier_plan_leaves: Vec<u64>,
    /// A failed check holding the erasure back (retried).
    pub alert: Option<String>,
    pub not_claimed: Vec<&'static str>,
}

/// What the person asks to erase.
pub enum ErasureTarget {
    /// Whatever matches these probe faces.
    Probes(Vec<Embedding>),
    /// These records from an access report, with that request's id and secret.
    Records { access_request: RequestId, secret: String, records: Vec<RecordId> },
}

/// The sealed never-enrol-again entry: [`super::intake::FACES_MAGIC`], its expiry (seconds
/// since the epoch, 8 bytes little-endian), then the kept templates' values (`f32`
/// little-endian).
fn faces_blob(expires: jiff::Timestamp, faces: &[Vec<f32>]) -> Zeroizing<Vec<u8>> {
    let mut blob = Zeroizing::new(Vec::with_capacity(12 + faces.iter().map(|f| 4 * f.len()).sum::<usize>()));
    blob.extend_from_slice(super::intake::FACES_MAGIC);
    blob.extend_from_slice(&expires.as_second().to_le_bytes());
    blob.extend(faces.iter().flatten().flat_map(|v| v.to_le_bytes()));
    blob
}

/// A new erasure request (state received) in the pipeline's first step.
pub(super) fn new_erasure(common: Common, origin: Origin) -> ErasureRequest {
    ErasureRequest { common, pipeline: Box::new(Erasure { origin, ..Erasure::default() }) }
}

impl Rights {
    /// Stores a new erasure request (state received); the worker does the rest. By probes,
    /// nothing is erased before the person's identity is established (by `capture`, or later
    /// by the privacy desk); `never_enrol_again` needs it established now, by a capture.
    #[instrument(skip_all, fields(captured = capture.is_some()))]
    pub fn submit_erasure(
        &self,
        target: ErasureTarget,
        contact: String,
        jurisdiction_claim: Option<String>,
        never_enrol_again: bool,
        capture: Option<Signed>,
    ) -> Result<Submitted, Error> {
        check_contact(&contact)?;
        if never_enrol_again && !matches!(target, ErasureTarget::Probes(_)) {
            return Err(Error::InvalidRequest(
                "never_enrol_again keeps your probe templates to recognise your face: send probes".into(),
            ));
        }
        if never_enrol_again && capture.is_none() {
            return Err(Error::InvalidRequest(
                "never_enrol_again keeps a face on a blocklist, so it needs your identity established now: send the \
                 probes as a signed capture (BeginCapture, then a trusted capture application)"
                    .into(),
            ));
        }
        // Refused now, storing nothing, rather than accepted to wait for a delete that cannot
        // be committed (with keys in etcd, while no majority answers).
        self.engine.records().check_commit_point()?;
        let claim = jurisdiction_claim.unwrap_or_default();
        let (probes, origin, plan, identity) = match target {
            ErasureTarget::Probes(probes) => {
                self.intake.check_probe_count(probes.len())?;
                let terms = Terms {
                    kind: Kind::Erasure,
                    contact: &contact,
                    jurisdiction_claim: &claim,
                    include_templates: false,
                    never_enrol_again,
                };
                let identity = self.establish(capture.as_ref(), &terms, &probes)?;
                (probes, Origin::Probes, Vec::new(), identity)
            }
            ErasureTarget::Records { access_request, secret, records } => {
                if capture.is_some() {
                    return Err(Error::InvalidRequest("a capture signs probes; an erasure by records has none".into()));
                }
                let access = self.load_authorised(access_request, Some(&secret), false)?;
                if access.kind() != Kind::Access || access.state != State::Completed {
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
                let identity = Some(Identity::AccessRequest { id: access_request });
                (Vec::new(), Origin::Records { access_request }, records, identity)
            }
        };
        let jurisdiction_claim = self.intake.parse_claim(Some(claim))?;
        let probes = probes.iter().map(|p| p.as_slice().to_vec()).collect();
        let mut common = Common::new(contact, jurisdiction_claim, probes, self.now());
        common.identity = identity;
        let secret = Self::new_secret(&mut common);
        common.matched = plan.iter().map(|&record_id| Match { record_id, score: 1.0 }).collect();
        let mut request = new_erasure(common, origin);
        request.pipeline.keep_face = never_enrol_again;
        self.requests.save_new(&request)?;
        info!(request_id = %request.id, "erasure request received");
        let request = Request::Erasure(request);
        // The holder's view, not the desk's: the sender is not yet anyone in particular.
        Ok(Submitted { id: request.id, view: self.view(&request, false), secret })
    }

    /// After matching (or review): freezes the record set and logs its digest, moving the
    /// request to `erasing`.
    pub(super) fn plan_erasure(&self, request: &mut ErasureRequest) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let approved: BTreeSet<RecordId> =
            request.review.as_ref().map(|r| r.approved.iter().copied().collect()).unwrap_or_default();
        let plan: Vec<RecordId> =
            request.matched.iter().map(|m| m.record_id).chain(approved).collect::<BTreeSet<_>>().into_iter().collect();
        let graph_slots = self.engine.graph_slots(&plan);
        let salt = request.salt();
        let now = self.now();
        let entry = Logged::plain(
            now.round(jiff::Unit::Second).unwrap_or(now),
            Event::ErasurePlanned {
                commitment: event::request_commitment(&salt, request.id.as_bytes()),
                records: plan.len() as u32,
                plan: event::plan_digest(&salt, request.id.as_bytes(), &plan),
            },
        );
        let pipeline = &mut request.pipeline;
        pipeline.plan = plan;
        pipeline.graph_slots = graph_slots;
        pipeline.step = Step::Planned;
        pipeline.key_epoch = self.engine.records().key_epoch();
        if request.state != State::Erasing {
            request.advance(State::Erasing, now);
        }
        self.requests.save_logged(request, &entry, |r, leaf| r.pipeline.plan_leaf = leaf)?;
        info!(request_id = %request.id, records = request.pipeline.plan.len(), "erasure planned");
        self.metrics.record_step("plan", started.elapsed());
        crate::failpoint::hit("erase.planned");
        Ok(())
    }

    /// Step 2: the delete, the indexes, the notices and the suppression entries.
    pub(super) fn erase_planned(&self, request: &mut ErasureRequest) -> Result<(), Error> {
        if request.pipeline.step == Step::Planned {
            let started = std::time::Instant::now();
            let store = self.engine.records();
            let plan = request.pipeline.plan.clone();
            let graph_slots = request.pipeline.graph_slots.clone();
            let held = store.erasure_inputs(&plan)?;
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
            let also = self.without(&plan.iter().copied().collect(), request.id)?;
            let suppress: Vec<[u8; 32]> = held.iter().map(|h| h.source_key).collect();
            // Only with the person's explicit consent and established identity: the probes that
            // matched an erased record, kept to refuse their face, within the list's cap.
            let kept = if request.pipeline.keep_face && request.identity.is_some() {
                self.faces_to_keep(request)?
            } else {
                Vec::new()
            };
            let expires_of_faces = now
                .checked_add(SignedDuration::from_hours(24 * i64::from(self.settings.face_retention_days)))
                .unwrap_or(jiff::Timestamp::MAX);
            let faces = (!kept.is_empty()).then(|| faces_blob(expires_of_faces, &kept));
            let faces_kept = kept.len();
            let id = *request.id.as_bytes();
            let commitment = event::request_commitment(&request.salt(), &id);
            let pipeline = &mut request.pipeline;
            pipeline.suppressed += suppress.len();
            pipeline.deleted_at = Some(now);
            pipeline.step = Step::Deleted;
            pipeline.faces_kept += faces_kept;
            let deletion = store::Deletion {
                ids: &plan,
                graph_slots: &graph_slots,
                notice: &notice,
                suppress: &suppress,
                faces: faces.as_deref().map(|f| f.as_slice()),
                also: &also,
                commitment,
            };
            let erased = store.erase(&deletion, &id, &mut |erased| {
                let this: super::erasure::evidence::Erased = erased.into();
                // After a re-plan, what the earlier delete removed stays part of the erasure.
                match request.pipeline.erased.as_mut() {
                    Some(before) => before.merge(this),
                    None => request.pipeline.erased = Some(this),
                }
                let notified = request.pipeline.erased.as_ref().map(|e| e.recipients.iter().cloned().collect());
                request.pipeline.notified = notified.unwrap_or_default();
                request.encode()
            })?;
            if faces_kept > 0 {
                self.intake.keep_faces(&kept, self.engine.dimension(), expires_of_faces);
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
        // Run again while it fails (a re-plan, or the alert's retry).
        let failing = request.pipeline.post_check.is_some_and(|(_, remaining)| remaining > 0);
        if request.pipeline.step == Step::Deleted && (request.pipeline.post_check.is_none() || failing) {
            let started = std::time::Instant::now();
            for id in &request.pipeline.plan {
                self.engine.unindex(*id);
            }
            crate::failpoint::hit("erase.unindexed");
            let probes = probes_of(request)?;
            let t = self.settings.thresholds;
            let matches = self.engine.match_exact(&probes, t.review)?;
            let (hits, compared) = (matches.best(), matches.compared);
            let (strict, band): (Vec<_>, Vec<_>) = hits.into_iter().partition(|h| h.score >= t.strict);
            request.pipeline.post_check = Some((compared as u64, strict.len() as u64));
            request.pipeline.post_band = band.len() as u64;
            self.metrics.record_step("unindex_and_check", started.elapsed());
            if !strict.is_empty() {
                // A check that failed: something enrolled since the plan still matches the
                // person at the strict threshold. Planned again with it (a few times), else
                // held with an alert until it passes; never a receipt that says it passed.
                let now = self.now();
                let count = strict.len();
                if request.pipeline.replans < MAX_REPLANS {
                    request.pipeline.replans += 1;
                    request.pipeline.earlier_plan_leaves.push(request.pipeline.plan_leaf);
                    request.pipeline.post_check = None;
                    request.matched.extend(strict.iter().map(|h| Match { record_id: h.id, score: h.score }));
                    info!(request_id = %request.id, records = count, "erasure: post-delete check failed; planned again");
                    self.plan_erasure(request)?;
                    return self.erase_planned(request);
                }
                let attempts = request.pipeline.alert.as_ref().map_or(0, |a| a.attempts) + 1;
                let since = request.pipeline.alert.as_ref().map_or(now, |a| a.since);
                request.pipeline.alert = Some(Alert {
                    step: "the post-delete check".into(),
                    detail: format!(
                        "after {} delete(s), {count} record(s) still score at or above the strict threshold against \
                         the person's probes; the privacy desk is alerted",
                        request.pipeline.replans + 1
                    ),
                    attempts,
                    since,
                });
                self.requests.save(&*request)?;
                tracing::warn!(request_id = %request.id, records = count, "erasure held: post-delete check fails");
                return Ok(());
            }
            request.pipeline.alert = None;
            // The probes are biometric data: kept no longer than this check, or (sealed) for the
            // no-match attestation the person may ask for, until its expiry.
            if request.identity.is_none() || self.settings.attestations_per_erasure == 0 {
                request.probes.clear();
            }
            self.requests.save(&*request)?;
        }
        Ok(())
    }

    /// The probes of `request` that score at or above the strict threshold against a record
    /// it is about to erase, as many as the never-enrol-again list still has room for.
    fn faces_to_keep(&self, request: &ErasureRequest) -> Result<Vec<Vec<f32>>, Error> {
        let strict = self.settings.thresholds.strict;
        let mut erased = Vec::with_capacity(request.pipeline.plan.len());
        for id in &request.pipeline.plan {
            match self.engine.get(*id) {
                Ok(record) => erased.push(record.embedding),
                Err(crate::engine::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let room = self.settings.max_faces.saturating_sub(self.intake.faces_held(self.now()));
        Ok(probes_of(request)?
            .iter()
            .filter(|p| erased.iter().any(|r| crate::kernel::dot(p.as_slice(), r.as_slice()) >= strict))
            .take(room)
            .map(|p| p.as_slice().to_vec())
            .collect())
    }

    /// Removes from every access report the records the store no longer holds: an erasure does
    /// it in its own write, so this finds something only where that write was undone, as in a
    /// data dir restored from a backup (whose journaled erasures the store re-applied at open).
    /// Run at start-up.
    pub(in crate::rights) fn forget_erased_in_reports(&self) -> Result<(), Error> {
        let mut named: BTreeSet<RecordId> = BTreeSet::new();
        for r in self.requests.load_all()? {
            if let Request::Access(a) = r {
                named.extend(a.matched.iter().chain(&a.review_band).map(|m| m.record_id));
            }
        }
        let store = self.engine.records();
        let mut gone = BTreeSet::new();
        for id in named {
            if store.get(id)?.is_none() {
                gone.insert(id);
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let rewritten = self.without(&gone, RequestId::from_bytes([0; 16]))?;
        for (id, plaintext) in &rewritten {
            self.engine.requests().put_request(id, plaintext)?;
        }
        tracing::warn!(
            records = gone.len(),
            reports = rewritten.len(),
            "access reports named records the store no longer holds (a restored backup?): removed"
        );
        Ok(())
    }

    /// Every other access request that names one of `erased`, with those records removed
    /// from its matches and its stored report, ready to be written with the delete.
    fn without(&self, erased: &BTreeSet<RecordId>, except: RequestId) -> Result<Vec<store::StoredRequest>, Error> {
        let mut out = Vec::new();
        for r in self.requests.load_all()? {
            let Request::Access(mut r) = r else { continue };
            let names = |m: &Match| erased.contains(&m.record_id);
            if r.id == except || !(r.matched.iter().any(names) || r.review_band.iter().any(names)) {
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
            out.push((*r.id.as_bytes(), r.encode()));
        }
        Ok(out)
    }

    /// The signed receipts of an erasure's phases, with what they state.
    pub fn erasure_receipts(
        &self,
        id: RequestId,
        secret: Option<&str>,
        desk: bool,
    ) -> Result<(ErasureStatus, Option<Receipt>, Option<Receipt>), Error> {
        let request = self.load_authorised(id, secret, desk)?;
        let Request::Erasure(request) = request else {
            return Err(Error::InvalidRequest(format!("request {id} is an access request, not an erasure")));
        };
        if !desk && request.identity.is_none() {
            // Nothing is erased, or said, before identity: the same status whatever matched.
            let status = ErasureStatus {
                format: "oubli-erasure-status/v1",
                request_id: id.to_string(),
                state: super::shown_before_identity(request.state).name(),
                step: None,
                origin: Some(request.pipeline.origin.clone()),
                records: Vec::new(),
                plan_leaf: None,
                plan_salt: request.log_salt.clone(),
                notified_recipients: 0,
                suppressed_sources: 0,
                retained_with_consent: Vec::new(),
                phase1_leaf: None,
                phase2_leaf: None,
                earlier_plan_leaves: Vec::new(),
                alert: None,
                not_claimed: statements::NOT_CLAIMED.to_vec(),
            };
            return Ok((status, None, None));
        }
        let e = &request.pipeline;
        let store = self.engine.log();
        // The statements frozen when each phase was logged; the ones built here from the
        // current state only for a phase logged before statements were (a version-1 leaf).
        let facts = self.facts(e);
        let phase1 = match &e.phase1 {
            Some(p) => {
                let phase2 = match &e.phase2 {
                    Some(_) => statements::Phase2::Done,
                    None => statements::Phase2::Due(p.at.checked_add(self.purge_window()).ok()),
                };
                Some(store.receipt_with(p.leaf, Some(statements::erasure_phase1(&facts, &p.verified, phase2)))?)
            }
            None => None,
        };
        let phase2 = match &e.phase2 {
            Some(p) => Some(store.receipt_with(p.leaf, Some(statements::erasure_phase2(&facts, &p.verified)))?),
            None => None,
        };
        let running = request.state == State::Erasing || request.state == State::Completed;
        let status = ErasureStatus {
            format: "oubli-erasure-status/v1",
            request_id: id.to_string(),
            state: request.state.name(),
            step: running.then(|| e.step.name()),
            origin: Some(e.origin.clone()),
            records: e.plan.iter().map(|r| r.to_string()).collect(),
            plan_leaf: running.then_some(e.plan_leaf),
            plan_salt: request.log_salt.clone(),
            notified_recipients: e.notified.len(),
            suppressed_sources: e.suppressed,
            retained_with_consent: (e.faces_kept > 0)
                .then(|| format!("{} probe template(s), to refuse enrolling this face again", e.faces_kept))
                .into_iter()
                .collect(),
            phase1_leaf: e.phase1.as_ref().map(|p| p.leaf),
            phase2_leaf: e.phase2.as_ref().map(|p| p.leaf),
            earlier_plan_leaves: e.earlier_plan_leaves.clone(),
            alert: e.alert.as_ref().map(Alert::describe),
            not_claimed: statements::NOT_CLAIMED.to_vec(),
        };
        Ok((status, phase1, phase2))
    }

    /// What an erasure's receipts state, from its pipeline and the key epochs.
    pub(super) fn facts<'a>(&self, e: &'a Erasure) -> ErasureFacts<'a> {
        ErasureFacts {
            records: e.erased.as_ref().map_or(e.plan.len(), |x| x.records),
            notified: e.notified.len(),
            suppressed: e.suppressed,
            sweep_rule: match &e.origin {
                Origin::Sweep { rule } => Some(rule.as_str()),
                Origin::Probes | Origin::Records { .. } => None,
            },
            faces_kept: e.faces_kept,
            post_check: e.post_check.filter(|_| e.origin == Origin::Probes),
            post_band: e.post_band,
            key_epoch: e.key_epoch,
            epoch_destroyed: self.engine.records().oldest_key_epoch() > e.key_epoch,
            deleted_at: e.deleted_at,
            rotation_due: e.deleted_at.and_then(|t| {
                t.checked_add(SignedDuration::from_hours(24 * i64::from(self.settings.rotation_days))).ok()
            }),
        }
    }
}

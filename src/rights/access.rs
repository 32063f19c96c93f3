//! Access requests (GDPR Art. 12, 15) and the state machine every request starts with:
//! received → verifying → in progress (the exact scan) → completed, needs review (the privacy
//! desk decides on look-alikes) or denied; an erasure leaves it for its pipeline once matched.
//! Also the privacy desk's review, denial and deadline extension, what the person or the desk
//! may read of a request, and the signed answer with its report.
use std::collections::BTreeSet;

use tracing::{info, instrument};

use super::{
    Error, RequestView, Rights, Submitted,
    auth::Caller,
    identity::{self, CaptureKeys, Identity, Method, Signed, Terms},
    intake::{MAX_REASON_BYTES, check_contact, check_reason},
    report::{self, AccessReport, LogOpening, ReportRecord},
    request::{self, AccessRequest, Common, Extension, Kind, Match, Origin, Request, RequestId, Review, State},
};
use crate::{
    embedding::Embedding,
    engine,
    record::RecordId,
    transparency::{
        event::{self, Event, Logged},
        receipt::Receipt,
    },
};

/// The probes a request keeps, as templates again (they were validated at submission).
pub(super) fn probes_of(request: &Common) -> Result<Vec<Embedding>, Error> {
    request
        .probes
        .iter()
        .map(|p| Embedding::new(p.clone(), p.len()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::CorruptRequest(request.id, e.to_string()))
}

impl Rights {
    /// Stores a new access request (state received) and returns its id and secret. The work
    /// is done by [`Rights::process`]. With a valid `capture` the person's identity is
    /// established now; without one the request waits, once matched, for the privacy desk.
    #[instrument(skip_all, fields(probes = probes.len(), captured = capture.is_some()))]
    pub fn submit_access(
        &self,
        probes: Vec<Embedding>,
        contact: String,
        jurisdiction_claim: Option<String>,
        include_templates: bool,
        capture: Option<Signed>,
    ) -> Result<Submitted, Error> {
        self.intake.check_probe_count(probes.len())?;
        check_contact(&contact)?;
        let claim = jurisdiction_claim.unwrap_or_default();
        let terms = Terms {
            kind: Kind::Access,
            contact: &contact,
            jurisdiction_claim: &claim,
            include_templates,
            never_enrol_again: false,
        };
        let identity = self.establish(capture.as_ref(), &terms, &probes)?;
        let jurisdiction_claim = self.intake.parse_claim(Some(claim))?;
        let probes = probes.iter().map(|p| p.as_slice().to_vec()).collect();
        let mut common = Common::new(contact, jurisdiction_claim, probes, self.now());
        common.identity = identity;
        let secret = Self::new_secret(&mut common);
        let request = AccessRequest { common, include_templates, report: None };
        self.requests.save_new(&request)?;
        info!(request_id = %request.id, "access request received");
        let request = Request::Access(request);
        // The holder's view, not the desk's: the sender is not yet anyone in particular.
        Ok(Submitted { id: request.id, view: self.view(&request, false), secret })
    }

    /// Ids of requests the worker still has to do (after a restart, for example).
    pub fn pending_work(&self) -> Result<Vec<RequestId>, Error> {
        Ok(self.requests.load_all()?.into_iter().filter(|r| r.state.is_pending_work()).map(|r| r.id).collect())
    }

    /// Runs a request's remaining steps. Idempotent: a step already persisted is not redone,
    /// and a final request is left alone.
    #[instrument(skip_all, fields(request_id = %id))]
    pub fn process(&self, id: RequestId) -> Result<State, Error> {
        let _guard = self.requests.lock();
        let mut request = self.requests.load(id)?;
        if request.state == State::Received {
            request.advance(State::Verifying, self.now());
            self.requests.save(&request)?;
        }
        if request.state == State::Verifying {
            // The probes were validated at submission; a request whose probes no longer fit
            // the store (a different dimension) is denied with the reason.
            let dimension = self.engine.dimension();
            if let Some(bad) = request.probes.iter().position(|p| p.len() != dimension) {
                request.denial = Some(format!("probe {bad} does not have {dimension} values"));
                request.advance(State::Denied, self.now());
                self.requests.save(&request)?;
                self.requests.changed();
                return Ok(request.state);
            }
            request.advance(State::InProgress, self.now());
            self.requests.save(&request)?;
        }
        if request.state == State::InProgress
            && let Request::Erasure(erasure) = &mut request
            && erasure.pipeline.origin != Origin::Probes
        {
            // Records named by the person or a sweep: nothing to match.
            self.plan_erasure(erasure)?;
            self.requests.changed();
        }
        if request.state == State::InProgress {
            let probes = probes_of(&request)?;
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
            if let Request::Access(access) = &mut request {
                // The probes are the person's biometric data: kept no longer than the matching
                // (an erasure keeps them until it has checked that nothing matches any more).
                access.probes.clear();
            }
            if request.identity.is_some() {
                self.answer_matched(&mut request)?;
            } else {
                // Matched or not, the same state: nothing is answered before identity.
                request.advance(State::VerifyingIdentity, self.now());
                self.requests.save(&request)?;
            }
            info!(
                matched = request.matched.len(),
                review = request.review_band.len(),
                compared,
                "access request matched"
            );
            self.requests.changed();
        }
        if request.state == State::Erasing
            && let Request::Erasure(erasure) = &mut request
        {
            self.erase_planned(erasure)?;
            self.requests.changed();
        }
        Ok(request.state)
    }

    /// What follows the match once identity is established: the answer (or the review band
    /// for the privacy desk), or the erasure's plan.
    fn answer_matched(&self, request: &mut Request) -> Result<(), Error> {
        match request {
            Request::Access(access) if access.review_band.is_empty() => self.complete(access)?,
            Request::Access(access) => {
                let report = self.report(access)?;
                access.report = Some(serde_json::to_string(&report).expect("a report serialises"));
                access.advance(State::NeedsReview, self.now());
                self.requests.save(&*access)?;
            }
            Request::Erasure(erasure) if erasure.review_band.is_empty() => self.plan_erasure(erasure)?,
            Request::Erasure(erasure) => {
                erasure.advance(State::NeedsReview, self.now());
                self.requests.save(&*erasure)?;
            }
        }
        Ok(())
    }

    /// The privacy desk records that it established the requester's identity out of band
    /// (`method`, with a `note` of what it saw); a request waiting for it moves on at once.
    #[instrument(skip_all, fields(request_id = %id))]
    pub fn verify_identity(
        &self,
        caller: &Caller,
        id: RequestId,
        method: Method,
        note: String,
    ) -> Result<RequestView, Error> {
        check_reason(&note)?;
        let _guard = self.requests.lock();
        let mut request = self.requests.load(id)?;
        if request.state.is_final() || request.identity.is_some() {
            return Err(self.wrong_state(&request, "its identity is already settled"));
        }
        request.identity = Some(Identity::Desk { by: caller.client.clone(), method, note, at: self.now() });
        if request.state == State::VerifyingIdentity {
            self.answer_matched(&mut request)?;
        } else {
            self.requests.save(&request)?;
        }
        info!(request_id = %id, method = method.name(), "identity established by the privacy desk");
        self.requests.changed();
        Ok(self.view(&request, true))
    }

    /// A one-time challenge for a capture application, and when it expires.
    pub fn begin_capture(&self) -> Result<([u8; 32], jiff::Timestamp), Error> {
        Ok(self.challenges.begin(self.now())?)
    }

    /// The identity a request's `capture` establishes for `terms` and `probes`: `None` without
    /// a capture; an error, before anything is stored, if it does not hold.
    pub(super) fn establish(
        &self,
        capture: Option<&Signed>,
        terms: &Terms<'_>,
        probes: &[Embedding],
    ) -> Result<Option<Identity>, Error> {
        let Some(signed) = capture else { return Ok(None) };
        let same = signed.sent.len() == probes.len()
            && signed.sent.iter().zip(probes).all(|(sent, probe)| {
                Embedding::new(sent.clone(), probe.dimension()).is_ok_and(|e| e.as_slice() == probe.as_slice())
            });
        if !same {
            return Err(Error::InvalidRequest("the capture's templates are not the request's probes".into()));
        }
        let keys = match &self.settings.capture_keys {
            Some(path) => CaptureKeys::load(path)?,
            None => CaptureKeys::default(),
        };
        let sent: Vec<&[f32]> = signed.sent.iter().map(Vec::as_slice).collect();
        let identity = identity::verify(&keys, &self.challenges, &signed.capture, terms, &sent, self.now())?;
        Ok(Some(identity))
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
        let _guard = self.requests.lock();
        let mut request = self.requests.load(id)?;
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
        match &mut request {
            // The worker runs the rest of the pipeline.
            Request::Erasure(erasure) => self.plan_erasure(erasure)?,
            Request::Access(access) => self.complete(access)?,
        }
        self.requests.changed();
        Ok(self.view(&request, true))
    }

    /// Denies a request that is not final, with a reason the person will read.
    pub fn deny(&self, id: RequestId, reason: String) -> Result<RequestView, Error> {
        check_reason(&reason)?;
        let _guard = self.requests.lock();
        let mut request = self.requests.load(id)?;
        if request.state.is_final() {
            return Err(self.wrong_state(&request, "a final request cannot be denied"));
        }
        if request.state == State::Erasing {
            return Err(self.wrong_state(&request, "an erasure under way cannot be denied"));
        }
        request.denial = Some(reason);
        request.probes.clear();
        request.advance(State::Denied, self.now());
        self.requests.save(&request)?;
        self.requests.changed();
        Ok(self.view(&request, true))
    }

    /// Extends the deadline by `months` (the total at most two more months, Art. 12(3)), with
    /// the reason the person is told. Only before the original deadline.
    pub fn extend(&self, id: RequestId, months: u8, reason: String) -> Result<RequestView, Error> {
        check_reason(&reason)?;
        let _guard = self.requests.lock();
        let mut request = self.requests.load(id)?;
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
        self.requests.save(&request)?;
        self.requests.changed();
        Ok(self.view(&request, true))
    }

    /// A request, for its holder (`secret`) or the privacy desk (`desk`).
    pub fn request(&self, id: RequestId, secret: Option<&str>, desk: bool) -> Result<RequestView, Error> {
        let request = self.load_authorised(id, secret, desk)?;
        Ok(self.view(&request, desk))
    }

    /// The report (JSON) and, once completed, the signed receipt of the answer; for a holder
    /// whose identity is not established, neither.
    pub fn report_of(
        &self,
        id: RequestId,
        secret: Option<&str>,
        desk: bool,
    ) -> Result<(RequestView, Option<String>, Option<Receipt>), Error> {
        let request = self.load_authorised(id, secret, desk)?;
        if !Self::discloses(&request, desk) {
            return Ok((self.view(&request, desk), None, None));
        }
        let receipt = match request.receipt_leaf {
            Some(leaf) => Some(self.engine.log().receipt(leaf)?),
            None => None,
        };
        Ok((self.view(&request, desk), request.report().map(str::to_owned), receipt))
    }

    /// Requests for the privacy desk or the auditor, oldest first, without contact details.
    pub fn list(&self, state: Option<State>, overdue_only: bool) -> Result<Vec<RequestView>, Error> {
        let now = self.now();
        let mut out: Vec<RequestView> = self
            .requests
            .load_all()?
            .iter()
            .filter(|r| state.is_none_or(|s| r.state == s) && (!overdue_only || r.is_overdue(now)))
            .map(|r| self.view(r, false))
            .collect();
        out.sort_by_key(|v| (v.received_at, v.id));
        Ok(out)
    }

    /// Writes the final report, the completed state and the log entry of the answer in one
    /// synced write.
    fn complete(&self, request: &mut AccessRequest) -> Result<(), Error> {
        let now = self.now();
        let report = self.report(request)?;
        let withheld = report.withheld_for_review as u32;
        let entry = Logged::plain(
            now.round(jiff::Unit::Second).unwrap_or(now),
            Event::AccessAnswered {
                commitment: event::request_commitment(&request.salt(), request.id.as_bytes()),
                disclosed: report.records.len() as u32,
                withheld,
            },
        );
        request.report = Some(serde_json::to_string(&report).expect("a report serialises"));
        request.advance(State::Completed, now);
        self.requests.save_logged(request, &entry, |r, leaf| r.receipt_leaf = Some(leaf))?;
        info!(request_id = %request.id, disclosed = report.records.len(), withheld, "access request answered");
        Ok(())
    }

    /// The report for what `request` has matched so far.
    fn report(&self, request: &AccessRequest) -> Result<AccessReport, Error> {
        let approved: BTreeSet<RecordId> =
            request.review.as_ref().map(|r| r.approved.iter().copied().collect()).unwrap_or_default();
        let disclosed: Vec<Match> = request
            .matched
            .iter()
            .chain(request.review_band.iter().filter(|m| approved.contains(&m.record_id)))
            .copied()
            .collect();
        let store = self.engine.records();
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
                template: (request.include_templates && request.identity.is_some())
                    .then(|| record.embedding.as_slice().to_vec()),
            });
        }
        let withheld = request.review_band.len() - approved.len().min(request.review_band.len());
        let salt = request.salt();
        Ok(report::Answer {
            request_id: request.id,
            received_at: request.received_at,
            answered_at: self.now(),
            due_at: request.due_at,
            records,
            withheld,
            probes: request.probe_count,
            compared: request.compared,
            thresholds: self.settings.thresholds,
            controller: &self.settings.controller,
            recipients: recipients.into_iter().collect(),
            supervisory_authority: if in_france { report::CNIL } else { self.settings.supervisory_authority.as_str() },
            answer_log: LogOpening {
                leaf_index: None,
                salt: hex::encode(salt),
                commitment: hex::encode(event::request_commitment(&salt, request.id.as_bytes())),
            },
            identity: request.identity.as_ref().map_or_else(|| "not established".into(), Identity::describe),
            include_templates: request.include_templates,
            request_retention_days: self.settings.request_retention_days,
        }
        .into_report())
    }
}

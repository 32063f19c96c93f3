//! What expires: a request by selfie whose sender's identity was never established is denied
//! after `identity_days` (its probes deleted); a completed erasure's probes, kept sealed for its
//! no-match attestation, are deleted after `attestation_days`; and a final request keeps its
//! contact, probes, matches and report for `request_retention_days`, then only the
//! accountability record (id, kind, dates, states, identity method, log leaves).
use jiff::{SignedDuration, Timestamp};
use tracing::info;

use super::{
    Error, Rights,
    request::{Origin, Request, State, Stored},
};

fn days(n: u32) -> SignedDuration {
    SignedDuration::from_hours(24 * i64::from(n))
}

/// What is due for a request, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Denied: identity not established in time.
    Deny,
    /// The erasure's attestation probes deleted.
    DropProbes,
    /// Only the accountability record kept.
    Minimise,
    /// The faces kept under `never_enrol_again` deleted.
    ForgetFaces,
}

impl Rights {
    /// What `request` has due next, and when.
    fn due(&self, request: &Request) -> Option<(Timestamp, Due)> {
        let after = |t: Timestamp, n: u32| t.checked_add(days(n)).ok();
        let probes = match request {
            Request::Erasure(e) if !request.probes.is_empty() && request.state == State::Completed => e
                .pipeline
                .deleted_at
                .and_then(|t| after(t, self.settings.attestation_days))
                .map(|t| (t, Due::DropProbes)),
            _ => None,
        };
        let retention = (request.state.is_final() && !request.minimised).then(|| {
            let finished = request.history.last().map_or(request.received_at, |(_, at)| *at);
            after(finished, self.settings.request_retention_days).map(|t| (t, Due::Minimise))
        });
        let faces = match request {
            Request::Erasure(e) if e.pipeline.faces_kept > 0 => e
                .pipeline
                .deleted_at
                .and_then(|t| after(t, self.settings.face_retention_days))
                .map(|t| (t, Due::ForgetFaces)),
            _ => None,
        };
        let sweep = matches!(request, Request::Erasure(e) if matches!(e.pipeline.origin, Origin::Sweep { .. }));
        // A sweep's erasure has no sender to identify.
        let identity =
            (!sweep && request.identity.is_none() && !request.state.is_final() && request.state != State::Erasing)
                .then(|| after(request.received_at, self.settings.identity_days).map(|t| (t, Due::Deny)));
        [probes, faces, retention.flatten(), identity.flatten()].into_iter().flatten().min_by_key(|(t, _)| *t)
    }

    /// The soonest expiry of any request.
    pub fn next_expiry_at(&self) -> Result<Option<Timestamp>, Error> {
        Ok(self.requests.load_all()?.iter().filter_map(|r| self.due(r)).map(|(t, _)| t).min())
    }

    /// Applies every expiry due now; returns how many requests changed.
    pub fn expire_due(&self) -> Result<usize, Error> {
        let _guard = self.requests.lock();
        let now = self.now();
        let mut changed = 0;
        let mut rewritten = Vec::new();
        for mut request in self.requests.load_all()? {
            let before = changed;
            while let Some((_, due)) = self.due(&request).filter(|(at, _)| *at <= now) {
                match due {
                    Due::Deny => {
                        request.denial = Some(format!(
                            "your identity was not established within {} days (a signed capture, or the privacy \
                             desk's check); the probes you sent were deleted. You may ask again.",
                            self.settings.identity_days
                        ));
                        request.probes.clear();
                        request.advance(State::Denied, now);
                        info!(request_id = %request.id, "request denied: identity not established in time");
                    }
                    Due::DropProbes => {
                        request.probes.clear();
                        info!(request_id = %request.id, "erasure probes deleted: the attestation period is over");
                    }
                    Due::ForgetFaces => {
                        if let Request::Erasure(e) = &mut request {
                            e.pipeline.faces_kept = 0;
                            self.engine.records().forget_faces(e.id.as_bytes(), &e.encode())?;
                        }
                        info!(request_id = %request.id, "kept faces deleted: their period is over");
                    }
                    Due::Minimise => {
                        minimise(&mut request);
                        info!(request_id = %request.id, "request minimised: its retention period is over");
                    }
                }
                changed += 1;
            }
            if changed > before {
                self.requests.save(&request)?;
                rewritten.push(*request.id.as_bytes());
            }
        }
        if changed > 0 {
            self.requests.changed();
            // The versions just replaced held what expired (probes, faces, contact, report):
            // purged from the table files too, not left for a compaction to drop some day.
            let checked = self.engine.records().purge_request_versions(&rewritten)?;
            info!(requests = rewritten.len(), checks = checked.len(), "replaced request versions purged");
        }
        Ok(changed)
    }
}

/// Keeps only the accountability record of a final request.
fn minimise(request: &mut Request) {
    request.contact.clear();
    request.probes.clear();
    request.matched.clear();
    request.review_band.clear();
    if let Some(review) = request.review.as_mut() {
        review.approved.clear();
        review.note.clear();
    }
    if let Request::Access(a) = request {
        a.report = None;
    }
    request.minimised = true;
}

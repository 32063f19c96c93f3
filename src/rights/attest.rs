//! No-match attestations: once an erasure by probes is completed, its holder may ask the
//! service to state, signed and logged, that nothing it holds matches their face at the strict
//! threshold. Bound to that erasure: it uses the erasure's own probes (kept sealed for this
//! only, until the last attestation allowed or their expiry), so it can never be asked about
//! someone else's face, and it may be asked a small configured number of times.
use tracing::{info, instrument};

use super::{
    Error, Rights,
    request::{Origin, Request, RequestId, State},
};
use crate::transparency::{
    event::{self, Event, Logged},
    receipt::Receipt,
};

/// A no-match attestation and what opens it.
pub struct Attestation {
    pub receipt: Receipt,
    pub leaf: u64,
    /// The salt of the entry's commitment to the request id (hex): the holder's to open it.
    pub salt: String,
    pub compared: u64,
    /// Records in the review band (possibly the person, possibly look-alikes): reported, not
    /// disclosed.
    pub review_band: usize,
    /// Attestations this erasure may still ask for.
    pub remaining: u32,
}

impl Rights {
    /// A signed, logged statement that no record held scores at or above the strict threshold
    /// against the probes of completed erasure `id`, for its holder. Refused, with the count,
    /// if some do (the holder's identity was established before the erasure).
    #[instrument(skip_all, fields(request_id = %id))]
    pub fn attest_no_match(&self, id: RequestId, secret: &str) -> Result<Attestation, Error> {
        let _guard = self.requests.lock();
        let request = self.load_authorised(id, Some(secret), false)?;
        let Request::Erasure(mut erasure) = request else {
            return Err(Error::InvalidRequest(format!(
                "request {id} is an access request: a no-match attestation follows an erasure by probes"
            )));
        };
        if erasure.pipeline.origin != Origin::Probes || erasure.identity.is_none() {
            return Err(Error::InvalidRequest(format!(
                "request {id} is not an erasure by probes with an established identity: it has nothing to attest"
            )));
        }
        if erasure.state != State::Completed {
            let what = "a no-match attestation is given once the erasure is completed (both phases logged)";
            return Err(self.wrong_state(&Request::Erasure(erasure), what));
        }
        let allowed = self.settings.attestations_per_erasure;
        if erasure.pipeline.attestations >= allowed || erasure.probes.is_empty() {
            return Err(self.wrong_state(
                &Request::Erasure(erasure),
                &format!(
                    "its {allowed} attestation(s) were given, or their {} day(s) have passed, and its probes are \
                     deleted",
                    self.settings.attestation_days
                ),
            ));
        }
        let probes = super::access::probes_of(&erasure)?;
        let t = self.settings.thresholds;
        let matches = self.engine.match_exact(&probes, t.review)?;
        let (hits, compared) = (matches.best(), matches.compared);
        let strict = hits.iter().filter(|h| h.score >= t.strict).count();
        if strict > 0 {
            return Err(Error::StillMatches { count: strict, threshold: t.strict });
        }
        let review_band = hits.len();
        let salt = crate::record::random_128();
        let now = self.now();
        let log = self.engine.log();
        let tree_size = log.tree_size();
        let event = Event::NoMatchAttested {
            commitment: event::request_commitment(&salt, id.as_bytes()),
            tree_size,
            compared: compared as u64,
            threshold: t.strict,
        };
        erasure.pipeline.attestations += 1;
        let remaining = allowed - erasure.pipeline.attestations;
        if remaining == 0 {
            // The probes served their last purpose.
            erasure.probes.clear();
        }
        let mut statements = crate::transparency::statements::for_event(&event);
        // A count, not a check that could fail: it is a statement of what the scan found.
        statements.done.push(format!(
            "the same scan found {review_band} record(s) in the review band (from {} to below {}): possibly you, \
             possibly a look-alike; none is disclosed here",
            t.review, t.strict
        ));
        statements.done.push(if remaining == 0 {
            "the erasure's probes, kept sealed for this attestation, were deleted from the request".to_string()
        } else {
            format!("{remaining} more attestation(s) may be asked for this erasure")
        });
        // Frozen and committed in the entry: the receipt of this leaf always says this.
        let entry = Logged::new(now.round(jiff::Unit::Second).unwrap_or(now), event, &statements);
        let leaf = self.requests.save_logged(&mut erasure, &entry, |_, _| {})?;
        info!(leaf, compared, review_band, "no-match attested");
        // A log signing at a cadence publishes the checkpoint covering it within a second or so.
        log.wait_published(leaf + 1, crate::rights::RECEIPT_WAIT);
        Ok(Attestation {
            receipt: log.receipt(leaf)?,
            leaf,
            salt: hex::encode(salt),
            compared: compared as u64,
            review_band,
            remaining,
        })
    }
}

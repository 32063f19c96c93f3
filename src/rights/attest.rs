//! No-match attestations: after an erasure (or at any time), the holder of a request may ask
//! the service to state, signed and logged, that nothing it holds matches their face. Refused,
//! with the count, when something still does.
use tracing::{info, instrument};

use super::{Error, Rights, request::RequestId};
use crate::{
    embedding::Embedding,
    transparency::{
        event::{self, Entry, Event},
        receipt::Receipt,
    },
};

impl Rights {
    /// A signed, logged statement that no record held scores at or above the strict threshold
    /// against `probes`, for the holder of request `id`. Refused, with the count, if some do.
    #[instrument(skip_all, fields(request_id = %id, probes = probes.len()))]
    pub fn attest_no_match(&self, id: RequestId, secret: &str, probes: &[Embedding]) -> Result<Receipt, Error> {
        self.intake.check_probe_count(probes.len())?;
        // The holder of any request may ask: the request is read only to check its secret.
        self.load_authorised(id, Some(secret), false)?;
        let threshold = self.settings.thresholds.strict;
        let matches = self.engine.match_exact(probes, threshold)?;
        let (hits, compared) = (matches.best(), matches.compared);
        if !hits.is_empty() {
            return Err(Error::StillMatches { count: hits.len(), threshold });
        }
        let store = self.engine.log();
        let salt = crate::record::random_128();
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
}

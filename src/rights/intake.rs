//! Intake: what is let in. The ingest policy (and its reload), the never-enrol-again lists
//! (erased sources, faces kept with consent), the refusal counters, and the checks every
//! submission's fields pass. It owns that state and nothing else: it neither stores records nor
//! touches requests (the rate limits are in [`super::limits`]).
use std::{collections::BTreeMap, sync::Arc};

use jiff::Timestamp;
use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};

use super::{
    Error, Settings,
    policy::{Decision, Policy},
};
use crate::{
    embedding::Embedding,
    record::{Jurisdiction, NewRecord},
    store::RecordStore,
};

const MAX_CONTACT_BYTES: usize = 256;
/// Marks a never-enrol-again entry that carries its expiry.
pub const FACES_MAGIC: &[u8; 4] = b"OFX1";
/// The longest reason or note the privacy desk may give.
pub const MAX_REASON_BYTES: usize = 1000;

pub struct Intake {
    settings: Settings,
    policy: RwLock<Arc<Policy>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Faces whose owners asked, with consent, never to be enrolled again, and until when.
    suppressed_faces: RwLock<Vec<(Timestamp, Embedding)>>,
}

impl Intake {
    pub fn new(settings: &Settings) -> Result<Intake, Error> {
        let policy = settings.policy.load()?;
        info!(policy = policy.name(), "ingest policy loaded");
        Ok(Intake {
            settings: settings.clone(),
            policy: RwLock::new(Arc::new(policy)),
            refusals: Mutex::default(),
            suppressed_faces: RwLock::default(),
        })
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    /// Re-reads the policy from its source; on error the current one stays.
    pub fn reload_policy(&self) -> Result<Arc<Policy>, Error> {
        let policy = Arc::new(self.settings.policy.load()?);
        *self.policy.write() = policy.clone();
        info!(policy = policy.name(), "ingest policy reloaded");
        Ok(policy)
    }

    /// Refusals per rule since start.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals.lock().clone()
    }

    fn refused(&self, rule: &'static str) {
        *self.refusals.lock().entry(rule).or_default() += 1;
    }

    /// Whether the policy lets every one of `records` in: for each, `None` or the rule that
    /// quarantines it. The first refusal ends the check (nothing is stored then).
    pub fn admit_records(
        &self,
        store: &dyn RecordStore,
        records: &[NewRecord],
        now: Timestamp,
    ) -> Result<Vec<Option<&'static str>>, Error> {
        let policy = self.policy();
        let mut quarantine = Vec::with_capacity(records.len());
        for (item, record) in records.iter().enumerate() {
            if store.is_suppressed(record.provenance.source_uri())? {
                let rule = "erased-source";
                self.refused(rule);
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
            if self.is_suppressed_face(&record.embedding, now) {
                let rule = "erased-face";
                self.refused(rule);
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
                    self.refused(rule);
                    warn!(policy = policy.name(), rule, item, "enrolment refused by the ingest policy");
                    return Err(Error::PolicyRefused { item, policy: policy.name().into(), rule, reason });
                }
            }
        }
        let held = quarantine.iter().flatten().count();
        if held > 0 {
            info!(quarantined = held, "records quarantined by the ingest policy");
        }
        Ok(quarantine)
    }

    /// Adds faces to the never-enrol-again list until `expires` (in memory; the store keeps
    /// them sealed).
    pub fn keep_faces(&self, probes: &[Vec<f32>], dimension: usize, expires: Timestamp) {
        let mut faces = self.suppressed_faces.write();
        faces.extend(probes.iter().filter_map(|p| Embedding::new(p.clone(), dimension).ok()).map(|e| (expires, e)));
    }

    /// Loads the faces the store keeps sealed (at start). An entry written before faces
    /// expired (no [`FACES_MAGIC`]) expires one default period from now.
    pub fn load_faces(&self, store: &dyn RecordStore, dimension: usize, now: Timestamp) -> Result<(), Error> {
        let row = 4 * dimension;
        let default_expiry = now
            .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(self.settings.face_retention_days)))
            .unwrap_or(Timestamp::MAX);
        for bytes in store.suppressed_faces()? {
            let (expires, values) = match bytes.strip_prefix(FACES_MAGIC) {
                Some(rest) if rest.len() >= 8 && (rest.len() - 8) % row == 0 => {
                    let secs = i64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
                    (Timestamp::from_second(secs).unwrap_or(Timestamp::MAX), &rest[8..])
                }
                _ => (default_expiry, &bytes[..]),
            };
            let values: Vec<f32> =
                values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            self.keep_faces(&values.chunks(dimension).map(<[f32]>::to_vec).collect::<Vec<_>>(), dimension, expires);
        }
        Ok(())
    }

    /// Faces on the never-enrol-again list and not expired at `now`.
    pub fn faces_held(&self, now: Timestamp) -> usize {
        self.suppressed_faces.read().iter().filter(|(expires, _)| *expires > now).count()
    }

    fn is_suppressed_face(&self, template: &Embedding, now: Timestamp) -> bool {
        let faces = self.suppressed_faces.read();
        let strict = self.settings.thresholds.strict;
        faces
            .iter()
            .any(|(expires, f)| *expires > now && crate::kernel::dot(f.as_slice(), template.as_slice()) >= strict)
    }

    pub fn check_probe_count(&self, n: usize) -> Result<(), Error> {
        if n == 0 || n > self.settings.max_probes {
            return Err(Error::InvalidRequest(format!(
                "a request carries 1 to {} probe templates, not {n}",
                self.settings.max_probes
            )));
        }
        Ok(())
    }

    /// The jurisdiction a person claims, normalised (empty: none).
    pub fn parse_claim(&self, claim: Option<String>) -> Result<Option<String>, Error> {
        match claim.filter(|j| !j.is_empty()) {
            None => Ok(None),
            Some(j) => Ok(Some(
                j.parse::<Jurisdiction>()
                    .map_err(|e| Error::InvalidRequest(format!("jurisdiction_claim: {e}")))?
                    .to_string(),
            )),
        }
    }
}

pub fn check_contact(contact: &str) -> Result<(), Error> {
    if contact.trim().is_empty() || contact.len() > MAX_CONTACT_BYTES {
        return Err(Error::InvalidRequest(format!(
            "contact is required (how to reach you, at most {MAX_CONTACT_BYTES} bytes)"
        )));
    }
    Ok(())
}

/// A reason the person will read: required, and not too long.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(Error::InvalidRequest(format!("give a reason, at most {MAX_REASON_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_fields_are_checked() {
        let intake = Intake::new(&Settings::default()).unwrap();
        assert!(intake.check_probe_count(0).is_err() && intake.check_probe_count(11).is_err());
        assert!(intake.check_probe_count(10).is_ok());
        assert_eq!(intake.parse_claim(Some("fr".into())).unwrap().as_deref(), Some("FR"));
        assert_eq!(intake.parse_claim(Some(String::new())).unwrap(), None);
        assert!(intake.parse_claim(Some("France".into())).is_err());
        assert!(check_contact(" ").is_err() && check_contact("me@example.org").is_ok());
        assert!(check_reason("").is_err() && check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
    }
}

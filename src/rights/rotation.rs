//! Key rotation: a new key-encryption key, every data key re-wrapped, the old epochs destroyed,
//! so that backups made before an erasure become unreadable. Due `rotation_days` after the
//! oldest erasure whose backups are still readable; an interrupted rotation is finished first.
use jiff::{SignedDuration, Timestamp};
use tracing::info;

use super::{Error, Rights, request::Request};
use crate::store;

impl Rights {
    /// Rotates the key-encryption key (see `store::rotate`).
    pub fn rotate_keys(&self) -> Result<store::Rotation, Error> {
        let rotation = self.engine.records().rotate_keys()?;
        info!(epoch = rotation.epoch, rewrapped = rotation.rewrapped, "key-encryption key rotated");
        Ok(rotation)
    }

    /// Finishes a rotation cut short, or rotates the keys if an erasure's backups have waited
    /// `rotation_days` for it.
    pub fn rotate_if_due(&self) -> Result<Option<store::Rotation>, Error> {
        let store = self.engine.records();
        if store.key_epoch() != store.oldest_key_epoch() {
            return Ok(store.resume_rotation()?);
        }
        match self.next_rotation_at()? {
            Some(at) if at <= self.now() => self.rotate_keys().map(Some),
            _ => Ok(None),
        }
    }

    /// When a rotation is due: `rotation_days` after the oldest erasure whose backups are still
    /// readable (its key epoch not destroyed yet), and at the latest `key_max_age_days` after
    /// the current epoch began, erasure or not: whatever was sealed under a key-encryption key
    /// (old versions of rows, backups) becomes unreadable within that period.
    pub(super) fn next_rotation_at(&self) -> Result<Option<Timestamp>, Error> {
        let oldest = self.engine.records().oldest_key_epoch();
        let wait = SignedDuration::from_hours(24 * i64::from(self.settings.rotation_days));
        let max_age = SignedDuration::from_hours(24 * i64::from(self.settings.key_max_age_days));
        let aged = self.engine.records().key_epoch_since()?.and_then(|t| t.checked_add(max_age).ok());
        let after_erasure = self
            .requests
            .load_all()?
            .iter()
            .filter_map(|r| match r {
                Request::Erasure(e) => Some(&e.pipeline),
                Request::Access(_) => None,
            })
            .filter(|e| e.phase1.is_some() && e.key_epoch >= oldest)
            .filter_map(|e| e.deleted_at?.checked_add(wait).ok())
            .min();
        Ok(after_erasure.into_iter().chain(aged).min())
    }
}

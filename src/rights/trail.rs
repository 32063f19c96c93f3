//! The audit trail: who called what, when, and how it ended, for the controller's
//! accountability (GDPR Art. 5(2)). The public transparency log proves *what* was done; this
//! private trail shows *who* asked. It holds no template, source, contact detail or message
//! text: only the caller's client name and roles, the method, and the status code.
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{Error, Rights};
use crate::store;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the trail, from 1 (assigned when appended).
    #[serde(default)]
    pub seq: u64,
    pub at: Timestamp,
    /// The call's id (also returned to the caller as `x-request-id`).
    pub call_id: String,
    /// The client name of the token, or "anonymous".
    pub caller: String,
    /// The caller's roles, comma-separated.
    pub roles: String,
    /// The full gRPC method, "/oubli.v1.TemplatesService/Search".
    pub method: String,
    /// The gRPC status code name ("Ok", "PermissionDenied", ...).
    pub code: String,
    /// The rights request the call concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights_request: Option<String>,
}

impl AuditEvent {
    /// The stored form of this event with sequence number `seq`.
    pub fn encode(&self, seq: u64) -> Vec<u8> {
        let mut event = self.clone();
        event.seq = seq;
        serde_json::to_vec(&event).expect("an audit event serialises")
    }

    /// An event from its stored form.
    pub fn decode(bytes: &[u8]) -> Result<AuditEvent, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("audit row: {e}"))
    }
}

impl Rights {
    /// Appends `event` to the trail, in one write with the events of the other calls ending
    /// meanwhile (the same promise as alone: in the write-ahead log, unsynced, before this
    /// returns); returns its sequence number. A follower waits for one unsynced write at most.
    pub fn audit(&self, event: AuditEvent) -> Result<u64, Error> {
        self.audits.run(event, |events| {
            let store = self.engine.requests();
            let encoders: Vec<_> = events.iter().map(|e| move |seq| e.encode(seq)).collect();
            let rows: Vec<store::AuditAppend<'_>> =
                events.iter().zip(&encoders).map(|(e, encode)| store::AuditAppend { at: e.at, encode }).collect();
            let seqs: Vec<Result<u64, Error>> = match store.append_audit(&rows) {
                Ok(first) => (first..).take(rows.len()).map(Ok).collect(),
                Err(_) => rows.iter().map(|row| Ok(store.append_audit(std::slice::from_ref(row))?)).collect(),
            };
            // Every 10,000th event prunes the events past retention.
            if seqs.iter().any(|s| matches!(s, Ok(seq) if seq % 10_000 == 0))
                && let Err(e) = self.prune_audit()
            {
                tracing::warn!(error = %e, "audit pruning failed");
            }
            seqs
        })
    }

    pub fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, Error> {
        let rows = self.engine.requests().audit_events(after, limit)?;
        rows.iter().map(|row| AuditEvent::decode(row).map_err(|e| Error::from(store::Error::Corrupt(e)))).collect()
    }

    /// Deletes the events past the retention period.
    pub(super) fn prune_audit(&self) -> Result<(), Error> {
        let keep = SignedDuration::from_hours(24 * i64::from(self.settings.audit_retention_days));
        let cutoff = self.now().checked_sub(keep).unwrap_or(Timestamp::MIN);
        let pruned = self.engine.requests().prune_audit(cutoff)?;
        if pruned > 0 {
            info!(pruned, "audit events past retention deleted");
        }
        Ok(())
    }
}

//! All the wording of receipts: what each one says was done, was checked and is pending, as
//! pure functions from an event or an erasure's counts to [`Statements`]. Kept in one place so
//! that what the service claims can be read (and reviewed) as a whole, and never claims more
//! than the workflow did: the storage layer and the workflows only supply numbers.
use jiff::Timestamp;

use super::{
    event::Event,
    receipt::{Pending, Statements},
};

/// What no erasure receipt claims, whatever it says: part of its signed, committed statements.
pub const NOT_CLAIMED: [&str; 3] = [
    "physical or forensic erasure of disk or flash blocks (storage devices remap them)",
    "erasure of memory pages the allocator or the operating system kept after the process overwrote its copies",
    "erasure of copies made outside this service (recipients, backups not yet past a key rotation)",
];

fn not_claimed() -> Vec<String> {
    NOT_CLAIMED.iter().map(|s| s.to_string()).collect()
}

/// What a log entry shows by itself: the statements of an entry no workflow adds to.
pub fn for_event(event: &Event) -> Statements {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (done, verified) = match event {
        Event::Enrolled { .. } => (
            s(&[
                "template and provenance sealed under the record's own data key before their first write",
                "record, wrapped key and this log entry written in one synced write",
            ]),
            Vec::new(),
        ),
        Event::AccessAnswered { disclosed, withheld, .. } => (
            vec![
                format!(
                    "access report issued: {disclosed} record(s) at or above the strict match threshold, each with \
                     its source, collection time, legal basis, jurisdiction and recipients"
                ),
                format!("{withheld} review-band match(es) withheld: they may be another person's (Art. 15(4))"),
            ],
            s(&["every record held was compared with every probe by the exact scan (no approximate index)"]),
        ),
        Event::ErasurePlanned { records, .. } => (
            vec![format!("the set of {records} record(s) to erase was frozen; the entry holds its digest")],
            Vec::new(),
        ),
        Event::ErasureKeysPurged { records, epoch, .. } => (
            vec![
                format!("{} rows removed from the store and the search indexes", phase1_deleted(*records as usize)),
                format!("{} destroyed and purged from disk", phase1_keys(*epoch)),
            ],
            Vec::new(),
        ),
        Event::ErasureTemplatesPurged { records, .. } => (
            vec![format!("{}: encrypted templates purged from the table files", phase2_ranges(*records as usize))],
            Vec::new(),
        ),
        Event::KeysRotated { epoch, rewrapped, .. } => (
            vec![
                format!("a new key-encryption key (epoch {epoch}) made; {rewrapped} data key(s) re-wrapped under it"),
                "every older key-encryption key file overwritten, removed, and its directory synced".into(),
            ],
            Vec::new(),
        ),
        Event::NoMatchAttested { tree_size, compared, threshold, .. } => (
            Vec::new(),
            vec![format!(
                "when the log held {tree_size} entries, none of the {compared} record(s) held scored at or above \
                 {threshold} against the probe(s), by the exact scan"
            )],
        ),
        Event::ErasureReapplied { records, .. } => (
            vec![
                format!(
                    "a restored backup still held {records} record(s) of this erasure: deleted again, with every row \
                     the erasure deletes and its suppression entries, before the restored store served anything; \
                     their data keys and rows are purged and checked next, and the store does not open unless \
                     those checks pass"
                ),
                "the restored store continued this log from the copy kept outside the data dir: no entry was \
                 removed"
                    .into(),
            ],
            Vec::new(),
        ),
    };
    let not_claimed = match event {
        Event::ErasureKeysPurged { .. } | Event::ErasureTemplatesPurged { .. } | Event::ErasureReapplied { .. } => {
            not_claimed()
        }
        _ => Vec::new(),
    };
    Statements { done, verified, pending: Vec::new(), not_claimed }
}

/// What an erasure did, as its receipts state it.
#[derive(Debug, Clone)]
pub struct ErasureFacts<'a> {
    /// Records deleted.
    pub records: usize,
    /// Recipients sent an Art. 19 notice.
    pub notified: usize,
    /// Source addresses added to the suppression list.
    pub suppressed: usize,
    /// The rule of the policy sweep that asked for it, if one did.
    pub sweep_rule: Option<&'a str>,
    /// Probe templates kept with the person's consent.
    pub faces_kept: usize,
    /// After the delete (an erasure by probes only): records compared, records still at or
    /// above the strict threshold.
    pub post_check: Option<(u64, u64)>,
    /// After the delete: records in the review band (not erased).
    pub post_band: u64,
    /// The key epoch current at phase 1, and whether a rotation has destroyed it since.
    pub key_epoch: u32,
    pub epoch_destroyed: bool,
    pub deleted_at: Option<Timestamp>,
    /// When the next key rotation is due (backups unreadable from then on).
    pub rotation_due: Option<Timestamp>,
}

/// Phase 2 as phase 1's receipt sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase2 {
    Done,
    /// Due at the end of the purge window (`None`: beyond what the clock can say).
    Due(Option<Timestamp>),
}

fn seconds(t: Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap_or(t).to_string()
}

/// Phase 1: the rows deleted, the indexes cleaned, the recipients told, the sources suppressed
/// and the data keys purged; `verified` the purge's checks.
pub fn erasure_phase1(facts: &ErasureFacts<'_>, verified: &[String], phase2: Phase2) -> Statements {
    let n = facts.records;
    let mut done = vec![
        format!(
            "{} sealed template and provenance, wrapped data key, recipients-log rows, idempotency rows, \
             enrolment-leaf and quarantine rows, and their entries in earlier access reports",
            phase1_deleted(n)
        ),
        "the vectors removed from the exact index and the HNSW graph (node unlinked, neighbours reconnected), \
         their memory overwritten with zeros"
            .into(),
        format!("{} recipient(s) of these records sent a notice to erase their copies (Art. 19)", facts.notified),
        format!(
            "{} source address(es) added to the suppression list as keyed hashes: re-enrolling them is refused",
            facts.suppressed
        ),
        format!(
            "{} destroyed and purged from this service's disk: the copies of the ciphertext left in its table \
             files until phase 2 are unreadable without them (backups: see pending)",
            phase1_keys(facts.key_epoch)
        ),
    ];
    if let Some(rule) = facts.sweep_rule {
        done.push(format!("erased by a policy sweep: {rule}"));
    }
    if facts.faces_kept > 0 {
        done.push(format!(
            "retained with your explicit consent, not erased: {} probe template(s), sealed, used only to refuse \
             enrolling your face again",
            facts.faces_kept
        ));
    }
    let mut verified = verified.to_vec();
    if let Some((compared, remaining)) = facts.post_check {
        // Phase 1 runs only once this check found none (else the erasure is planned again,
        // or held): the count is still the one found, never assumed.
        verified.push(format!(
            "after the delete, the exact scan of the {compared} record(s) left found {remaining} at or above the \
             strict threshold for the person's probes"
        ));
        done.push(format!(
            "{} record(s) scored in the review band after the delete: not erased, as they may be another person's \
             (the privacy desk can review them)",
            facts.post_band
        ));
    }
    let mut pending = Vec::new();
    if let Phase2::Due(due) = phase2 {
        pending.push(Pending {
            what: "phase 2: the encrypted templates purged from the table files and checked".into(),
            due: due.map_or_else(|| "unknown".into(), seconds),
        });
    }
    pending.push(backups_pending(facts));
    pending.push(recipients_pending(facts));
    Statements { done, verified, pending, not_claimed: not_claimed() }
}

/// Phase 2: the rows purged from the table files; `verified` the purge's checks.
pub fn erasure_phase2(facts: &ErasureFacts<'_>, verified: &[String]) -> Statements {
    Statements {
        done: vec![format!(
            "{} compacted to the bottom level, dropping their encrypted templates and derived rows from the \
             table files",
            phase2_ranges(facts.records)
        )],
        verified: verified.to_vec(),
        pending: vec![backups_pending(facts), recipients_pending(facts)],
        not_claimed: not_claimed(),
    }
}

fn phase1_deleted(records: usize) -> String {
    format!("{records} record(s) deleted in one synced write:")
}

fn phase1_keys(epoch: u32) -> String {
    format!("the data keys, wrapped under key epoch {epoch},")
}

fn phase2_ranges(records: usize) -> String {
    format!("the key ranges of the {records} erased record(s)")
}

/// Where a leaf's counts are stated: each `(section, text)` must begin one line of that section
/// of the receipt's statements (`section` is `done`, `verified` or `pending`, whose lines are
/// the `what`s). docs/log-format.md lists them for other verifiers.
pub fn counts_stated(event: &Event) -> Vec<(&'static str, String)> {
    match event {
        Event::Enrolled { .. } => Vec::new(),
        Event::AccessAnswered { disclosed, withheld, .. } => vec![
            ("done", format!("access report issued: {disclosed} record(s) ")),
            ("done", format!("{withheld} review-band match(es) withheld")),
        ],
        Event::ErasurePlanned { records, .. } => {
            vec![("done", format!("the set of {records} record(s) to erase was frozen"))]
        }
        Event::ErasureKeysPurged { records, epoch, .. } => {
            vec![("done", phase1_deleted(*records as usize)), ("done", phase1_keys(*epoch))]
        }
        Event::ErasureTemplatesPurged { records, .. } => vec![("done", phase2_ranges(*records as usize))],
        Event::KeysRotated { epoch, rewrapped, .. } => {
            vec![("done", format!("a new key-encryption key (epoch {epoch}) made; {rewrapped} data key(s) re-wrapped"))]
        }
        Event::ErasureReapplied { records, .. } => {
            vec![("done", format!("a restored backup still held {records} record(s) of this erasure"))]
        }
        Event::NoMatchAttested { tree_size, compared, .. } => vec![(
            "verified",
            format!("when the log held {tree_size} entries, none of the {compared} record(s) held scored at or above "),
        )],
    }
}

fn backups_pending(facts: &ErasureFacts<'_>) -> Pending {
    let deleted = facts.deleted_at.map_or_else(|| "the delete".to_string(), seconds);
    if facts.epoch_destroyed {
        Pending {
            what: format!(
                "none: backups made before {deleted} hold data keys wrapped under key epoch {}, which has been \
                 destroyed by a key rotation since (a copy of the key dir from before that rotation would still \
                 open them: none is kept by this service)",
                facts.key_epoch
            ),
            due: "done".into(),
        }
    } else {
        Pending {
            what: format!(
                "backups made before {deleted} still hold the ciphertext and data keys wrapped under key epoch {}: \
                 they become unreadable when that epoch's key-encryption key is destroyed at the next key rotation \
                 (a copy of the key dir kept from before it would keep them readable)",
                facts.key_epoch
            ),
            due: facts.rotation_due.map_or_else(|| "unknown".to_string(), seconds),
        }
    }
}

fn recipients_pending(facts: &ErasureFacts<'_>) -> Pending {
    Pending {
        what: format!(
            "copies already held by the {} notified recipient(s): they must erase them; this service cannot check \
             their systems",
            facts.notified
        ),
        due: "outside this service's control".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ErasureFacts<'static> {
        ErasureFacts {
            records: 3,
            notified: 2,
            suppressed: 3,
            sweep_rule: Some("jurisdiction=FR"),
            faces_kept: 0,
            post_check: None,
            post_band: 0,
            key_epoch: 4,
            epoch_destroyed: false,
            deleted_at: Some("2026-12-01T10:00:00.25Z".parse().unwrap()),
            rotation_due: None,
        }
    }

    #[test]
    fn erasure_receipts_say_what_was_done_and_what_is_pending() {
        let s = erasure_phase1(&facts(), &["checked".into()], Phase2::Due(None));
        assert_eq!(s.done.len(), 6);
        assert_eq!(s.done[5], "erased by a policy sweep: jurisdiction=FR");
        assert_eq!(s.verified, ["checked"]);
        let whats: Vec<&str> = s.pending.iter().map(|p| p.due.as_str()).collect();
        assert_eq!(whats, ["unknown", "unknown", "outside this service's control"]);
        assert!(s.pending[1].what.starts_with("backups made before 2026-12-01T10:00:00Z still hold"));

        let destroyed = ErasureFacts { epoch_destroyed: true, ..facts() };
        let s = erasure_phase2(&destroyed, &[]);
        assert_eq!(
            s.done,
            ["the key ranges of the 3 erased record(s) compacted to the bottom level, dropping their encrypted \
              templates and derived rows from the table files"]
        );
        assert_eq!(s.pending[0].due, "done");
        assert_eq!(
            s.pending[1].what,
            "copies already held by the 2 notified recipient(s): they must erase them; this service cannot check \
             their systems"
        );
    }
}

//! The access report (GDPR Art. 15): everything held about the person, in JSON, and the same
//! as a readable Markdown page. No time window, no cap: every record found is in it.
//!
//! The legal text every report carries is here, as constants, so that what the controller tells
//! people can be read and reviewed in one place; the access workflow supplies the facts.
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Thresholds, request::RequestId};
use crate::store::Disclosure;

pub const FORMAT: &str = "oubli-access-report/v1";

/// The supervisory authority named to a person whose data were collected in France, or who
/// says they live there.
pub const CNIL: &str = "CNIL (Commission nationale de l'informatique et des libertés), 3 place de Fontenoy, \
                        75007 Paris, https://www.cnil.fr/fr/plaintes";
pub const METHOD: &str = "exact scan of every record held (no approximate index)";
pub const PURPOSES: [&str; 1] =
    ["identification of persons by face search on behalf of the operators listed as recipients"];
pub const CATEGORIES: [&str; 3] = [
    "biometric data (Art. 9): a face template computed from a photo",
    "the photo's source address, collection time, declared legal basis and presumed jurisdiction",
    "who searched for and received each record, and when",
];
pub const RETENTION: &str =
    "until erased on request or by policy; no automatic expiry is configured in this demonstration";
pub const YOUR_RIGHTS: [&str; 6] = [
    "rectification (Art. 16)",
    "erasure (Art. 17): submit an erasure request with your request secret or your photo",
    "restriction of processing (Art. 18)",
    "objection (Art. 21)",
    "to be told the recipients of your data (Art. 19)",
    "to ask again at any time, free of charge: there is no yearly limit",
];
pub const SOURCE: &str = "collected from the sources listed with each record, not from you";
pub const AUTOMATED_DECISIONS: &str = "no decision producing legal effects is taken automatically by this system; operators receive ranked search \
     results";
pub const SCOPE: &str = "This report covers every record held about you, whatever its age, found by comparing your \
                         photo with every record in the store.";

/// The facts of one answer, from which [`Answer::into_report`] writes the report.
pub struct Answer<'a> {
    pub request_id: RequestId,
    pub received_at: Timestamp,
    pub answered_at: Timestamp,
    pub due_at: Timestamp,
    pub records: Vec<ReportRecord>,
    /// Review-band matches not disclosed.
    pub withheld: usize,
    pub probes: usize,
    pub compared: u64,
    pub thresholds: Thresholds,
    pub controller: &'a str,
    pub recipients: Vec<String>,
    pub supervisory_authority: &'a str,
    pub answer_log: LogOpening,
    /// How the requester's identity was established.
    pub identity: String,
    /// Whether copies of the templates were asked for (given only after identity).
    pub include_templates: bool,
    /// Days this request's row keeps its contact, probes and report once final.
    pub request_retention_days: u32,
}

impl Answer<'_> {
    pub fn into_report(self) -> AccessReport {
        let withheld = self.withheld;
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        AccessReport {
            format: FORMAT.into(),
            request_id: self.request_id.to_string(),
            received_at: self.received_at.to_string(),
            answered_at: self.answered_at.to_string(),
            due_at: self.due_at.to_string(),
            confirmation: if self.records.is_empty() {
                "We hold no record that matches your face at or above the strict threshold.".into()
            } else {
                format!("We hold {} record(s) of your face, listed below in full.", self.records.len())
            },
            records: self.records,
            erased_since: 0,
            withheld_for_review: withheld,
            review_note: if withheld == 0 {
                "No possible match is withheld.".into()
            } else {
                format!(
                    "{withheld} record(s) scored in the review band: they may be yours or a look-alike's. They are not \
                     shown until the privacy desk confirms them, because showing a stranger's data would breach \
                     their rights (GDPR Art. 15(4))."
                )
            },
            matching: Matching {
                method: METHOD.into(),
                probes: self.probes,
                records_compared: self.compared,
                strict_threshold: self.thresholds.strict,
                review_threshold: self.thresholds.review,
            },
            controller: self.controller.into(),
            purposes: strings(&PURPOSES),
            categories: strings(&CATEGORIES),
            recipients: self.recipients,
            retention: format!(
                "{RETENTION}. This request (your contact, your probes' matches and this report) is kept {} days after \
                 it is answered, then deleted; only its id, dates, states and log entries remain",
                self.request_retention_days
            ),
            your_rights: strings(&YOUR_RIGHTS),
            supervisory_authority: self.supervisory_authority.into(),
            source: SOURCE.into(),
            automated_decisions: AUTOMATED_DECISIONS.into(),
            scope: SCOPE.into(),
            answer_log: self.answer_log,
            identity: format!(
                "This answer was given only after your identity was established: {}. {}",
                self.identity,
                if self.include_templates {
                    "The copies of your templates you asked for are included, for that reason."
                } else {
                    "You did not ask for copies of the templates."
                }
            ),
        }
    }
}

/// How the records were found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matching {
    pub method: String,
    pub probes: usize,
    pub records_compared: u64,
    /// At or above: the person's record.
    pub strict_threshold: f32,
    /// At or above, below strict: possibly the person's, possibly a look-alike's.
    pub review_threshold: f32,
}

/// Where a record's enrolment is in the public log, and the salt that opens its commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOpening {
    pub leaf_index: Option<u64>,
    pub salt: String,
    pub commitment: String,
}

/// One record held about the person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRecord {
    pub record_id: String,
    pub score: f32,
    pub source_uri: String,
    pub collected_at: String,
    pub source_kind: String,
    pub legal_basis: String,
    pub jurisdiction: String,
    pub enrolled_at: String,
    /// Held back from searches by the ingest policy, pending review.
    pub quarantined: bool,
    /// Every client that received this record in a search result, and when.
    pub recipients: Vec<Disclosure>,
    pub enrolment_log: LogOpening,
    /// The template itself, when the person asked for a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Vec<f32>>,
}

/// The answer to an access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessReport {
    pub format: String,
    pub request_id: String,
    pub received_at: String,
    pub answered_at: String,
    pub due_at: String,
    /// Whether data about the person are processed, in a sentence.
    pub confirmation: String,
    pub records: Vec<ReportRecord>,
    /// Records listed when the report was issued and erased since (removed from it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub erased_since: usize,
    /// Review-band matches not disclosed (yet): they may be another person's.
    pub withheld_for_review: usize,
    pub review_note: String,
    pub matching: Matching,
    pub controller: String,
    pub purposes: Vec<String>,
    pub categories: Vec<String>,
    /// Every recipient named in `records`, once.
    pub recipients: Vec<String>,
    pub retention: String,
    pub your_rights: Vec<String>,
    pub supervisory_authority: String,
    pub source: String,
    pub automated_decisions: String,
    pub scope: String,
    /// Opens this answer's entry in the public log (kind "access-answered").
    pub answer_log: LogOpening,
    /// How the requester's identity was established before anything was disclosed.
    #[serde(default)]
    pub identity: String,
}

impl AccessReport {
    /// The report as a Markdown page for the person.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let mut line = |s: String| {
            md.push_str(&s);
            md.push('\n');
        };
        line(format!("# Access report for request {}", self.request_id));
        line(String::new());
        line(format!("Received {}; answered {}; due by {}.", self.received_at, self.answered_at, self.due_at));
        line(String::new());
        line(format!("**{}**", self.confirmation));
        line(String::new());
        line(format!("{} ", self.scope));
        line(String::new());
        if !self.identity.is_empty() {
            line(self.identity.clone());
            line(String::new());
        }
        line(format!("## Records ({})", self.records.len()));
        if self.erased_since > 0 {
            line(format!(
                "{} record(s) listed here when this report was issued have been erased since.",
                self.erased_since
            ));
            line(String::new());
        }
        for (n, r) in self.records.iter().enumerate() {
            line(String::new());
            line(format!("### {}. Record {}", n + 1, r.record_id));
            line(format!("- match score: {:.3}", r.score));
            line(format!("- source: {} ({})", r.source_uri, r.source_kind));
            line(format!("- collected: {}; stored: {}", r.collected_at, r.enrolled_at));
            line(format!("- legal basis declared: {}", r.legal_basis));
            line(format!("- jurisdiction on record: {}", r.jurisdiction));
            if r.quarantined {
                line("- held in quarantine by the ingest policy: not shown in searches".into());
            }
            if r.recipients.is_empty() {
                line("- recipients: nobody has received this record".into());
            } else {
                line(format!("- recipients ({}):", r.recipients.len()));
                for d in &r.recipients {
                    line(format!("  - {} at {}", d.client, d.at));
                }
            }
            let leaf = r.enrolment_log.leaf_index.map_or("unknown".into(), |i| i.to_string());
            line(format!(
                "- enrolment in the public log: leaf {leaf}, commitment {} (salt {})",
                r.enrolment_log.commitment, r.enrolment_log.salt
            ));
            if let Some(t) = &r.template {
                line(format!("- template: {} values (in the JSON report)", t.len()));
            }
        }
        line(String::new());
        line(format!("Withheld for review: {}. {}", self.withheld_for_review, self.review_note));
        line(String::new());
        line("## How your records were found".into());
        line(format!(
            "{}: {} probe(s) compared with {} records; strict threshold {:.3}, review band from {:.3}.",
            self.matching.method,
            self.matching.probes,
            self.matching.records_compared,
            self.matching.strict_threshold,
            self.matching.review_threshold
        ));
        line(String::new());
        line("## About the processing".into());
        line(format!("- controller: {}", self.controller));
        line(format!("- purposes: {}", self.purposes.join("; ")));
        line(format!("- categories of data: {}", self.categories.join("; ")));
        let recipients = if self.recipients.is_empty() { "none".to_string() } else { self.recipients.join(", ") };
        line(format!("- recipients: {recipients}"));
        line(format!("- retention: {}", self.retention));
        line(format!("- source: {}", self.source));
        line(format!("- automated decisions: {}", self.automated_decisions));
        line(format!("- supervisory authority: {}", self.supervisory_authority));
        line(String::new());
        line("## Your rights".into());
        for r in &self.your_rights {
            line(format!("- {r}"));
        }
        line(String::new());
        line(format!(
            "This answer is logged publicly as a salted commitment: {} (salt {}).",
            self.answer_log.commitment, self.answer_log.salt
        ));
        md
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

//! The access report (GDPR Art. 15): everything held about the person, in JSON, and the same
//! as a readable Markdown page. No time window, no cap: every record found is in it.
use serde::{Deserialize, Serialize};

use crate::store::Disclosure;

pub const FORMAT: &str = "oubli-access-report/v1";

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

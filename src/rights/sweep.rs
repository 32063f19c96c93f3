//! Policy sweeps: an administrator erases every record held whose provenance matches one rule
//! (all records from France, all scraped ones...), each through an erasure request of its own,
//! so each gets its own receipts.
use tracing::{info, instrument};

use super::{
    Error, Rights,
    erasure::new_erasure,
    request::{Common, Match, Origin, RequestId},
};
use crate::record::{Jurisdiction, LegalBasis, SourceKind};

/// A policy sweep's rule: one provenance field and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepRule {
    Jurisdiction(Jurisdiction),
    SourceKind(SourceKind),
    LegalBasis(LegalBasis),
}

impl std::str::FromStr for SweepRule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (field, value) = s
            .split_once(['=', ' '])
            .map(|(f, v)| (f.trim(), v.trim()))
            .ok_or_else(|| format!("rule {s:?}: write FIELD=VALUE, e.g. jurisdiction=FR"))?;
        match field {
            "jurisdiction" => value.parse().map(SweepRule::Jurisdiction).map_err(|e| format!("jurisdiction: {e}")),
            "source_kind" => SourceKind::from_name(value)
                .map(SweepRule::SourceKind)
                .ok_or_else(|| format!("source_kind {value:?}: use one of {}", SourceKind::names())),
            "legal_basis" => LegalBasis::from_name(value)
                .map(SweepRule::LegalBasis)
                .ok_or_else(|| format!("legal_basis {value:?}: use one of {}", LegalBasis::names())),
            other => Err(format!("rule field {other:?}: use jurisdiction, source_kind or legal_basis")),
        }
    }
}

impl std::fmt::Display for SweepRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SweepRule::Jurisdiction(j) => write!(f, "jurisdiction={j}"),
            SweepRule::SourceKind(k) => write!(f, "source_kind={}", k.name()),
            SweepRule::LegalBasis(b) => write!(f, "legal_basis={}", b.name()),
        }
    }
}

impl Rights {
    /// An administrator's policy sweep: every record held whose provenance matches `rule`
    /// gets an erasure request of its own (so its own receipts), queued for the worker.
    #[instrument(skip_all, fields(rule = %rule))]
    pub fn sweep(&self, rule: &SweepRule, dry_run: bool) -> Result<(usize, Vec<RequestId>), Error> {
        let mut hits = Vec::new();
        self.engine.records().for_each(&mut |record| {
            let p = &record.provenance;
            let hit = match rule {
                SweepRule::Jurisdiction(j) => p.jurisdiction() == *j,
                SweepRule::SourceKind(k) => p.source_kind() == *k,
                SweepRule::LegalBasis(b) => p.legal_basis() == *b,
            };
            if hit {
                hits.push(record.id);
            }
        })?;
        if dry_run {
            return Ok((hits.len(), Vec::new()));
        }
        let _guard = self.requests.lock();
        let mut ids = Vec::with_capacity(hits.len());
        for record_id in &hits {
            let mut common = Common::new(format!("policy sweep {rule}"), None, Vec::new(), self.now());
            common.matched = vec![Match { record_id: *record_id, score: 1.0 }];
            let request = new_erasure(common, Origin::Sweep { rule: rule.to_string() });
            self.requests.save(&request)?;
            ids.push(request.id);
        }
        info!(records = hits.len(), "policy sweep queued");
        self.requests.changed();
        Ok((hits.len(), ids))
    }
}

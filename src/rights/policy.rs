//! The ingest policy: which records may be enrolled at all.
//!
//! A policy is a TOML file of a few rules on provenance: the legal bases accepted, the source
//! kinds and jurisdictions refused, and what to do with a record whose jurisdiction is unknown
//! (allow, deny, or quarantine: store it, keep it out of operator searches, and still find it
//! for every rights request). The rules are checked in a fixed order and the first that
//! refuses names itself in the error. The default is the lawful profile; `permissive` exists
//! only to reproduce what Clearview did, for the demo.
use std::{collections::BTreeSet, path::Path};

use serde::{Deserialize, Serialize};

use crate::record::{Jurisdiction, LegalBasis, Provenance, SourceKind};

/// What to do with a record whose jurisdiction is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownAction {
    Allow,
    Deny,
    Quarantine,
}

/// The file format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// A name for reports and errors ("lawful").
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Legal bases accepted for enrolment; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_legal_bases: Option<Vec<String>>,
    #[serde(default)]
    pub denied_source_kinds: Vec<String>,
    /// ISO 3166-1 alpha-2 codes.
    #[serde(default)]
    pub denied_jurisdictions: Vec<String>,
    pub unknown_jurisdiction: UnknownAction,
}

/// A checked policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    file: PolicyFile,
    allowed_bases: Option<BTreeSet<LegalBasisKey>>,
    denied_kinds: BTreeSet<u8>,
    denied_jurisdictions: Vec<Jurisdiction>,
}

type LegalBasisKey = u8;

/// The rules, in the order they are checked.
pub const RULES: [&str; 4] = ["legal-basis", "source-kind", "jurisdiction", "unknown-jurisdiction"];

/// What the policy says of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Stored, but kept out of operator searches until a person reviews it.
    Quarantine {
        rule: &'static str,
    },
    Deny {
        rule: &'static str,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("policy {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("no built-in policy profile {0:?}: use lawful or permissive")]
    UnknownProfile(String),
}

const LAWFUL: &str = r#"name = "lawful"
description = "Biometric templates only with the person's explicit consent (GDPR Art. 9(2)(a)), never scraped; unknown jurisdictions quarantined for review."
allowed_legal_bases = ["consent"]
denied_source_kinds = ["public_web_scrape", "social_media_scrape"]
denied_jurisdictions = []
unknown_jurisdiction = "quarantine"
"#;

const PERMISSIVE: &str = r#"name = "permissive"
description = "What Clearview AI did: anything from anywhere, on no legal basis. For the demo only."
denied_source_kinds = []
denied_jurisdictions = []
unknown_jurisdiction = "allow"
"#;

impl Policy {
    /// A built-in profile: `lawful` (the default) or `permissive`.
    pub fn profile(name: &str) -> Result<Policy, PolicyError> {
        match name {
            "lawful" => Policy::parse(LAWFUL),
            "permissive" => Policy::parse(PERMISSIVE),
            other => Err(PolicyError::UnknownProfile(other.into())),
        }
    }

    pub fn lawful() -> Policy {
        Policy::profile("lawful").expect("the built-in lawful policy is valid")
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let file_error = |reason: String| PolicyError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        Policy::parse(&text).map_err(|e| match e {
            PolicyError::Invalid { reason, .. } => file_error(reason),
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Invalid { name: "?".into(), reason: e.to_string() })?;
        Policy::from_file(file)
    }

    pub fn from_file(file: PolicyFile) -> Result<Policy, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid { name: file.name.clone(), reason };
        if file.name.is_empty() {
            return Err(invalid("give the policy a name".into()));
        }
        let allowed_bases = match &file.allowed_legal_bases {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        LegalBasis::from_name(n).map(|b| b.code()).ok_or_else(|| {
                            invalid(format!("legal basis {n:?} is unknown; use {}", LegalBasis::names()))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let denied_kinds = file
            .denied_source_kinds
            .iter()
            .map(|n| {
                SourceKind::from_name(n)
                    .map(|k| k.code())
                    .ok_or_else(|| invalid(format!("source kind {n:?} is unknown; use {}", SourceKind::names())))
            })
            .collect::<Result<_, _>>()?;
        let denied_jurisdictions = file
            .denied_jurisdictions
            .iter()
            .map(|c| match c.parse::<Jurisdiction>() {
                Ok(j @ Jurisdiction::Country(_)) => Ok(j),
                _ => Err(invalid(format!(
                    "{c:?} is not an ISO 3166-1 country code (unknown jurisdictions have their own rule)"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy { file, allowed_bases, denied_kinds, denied_jurisdictions })
    }

    pub fn name(&self) -> &str {
        &self.file.name
    }

    pub fn file(&self) -> &PolicyFile {
        &self.file
    }

    /// The policy as TOML, as it would be written to a file.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.file).expect("a policy serialises")
    }

    /// The first rule that refuses or quarantines `provenance`, or `Allow`.
    pub fn decide(&self, provenance: &Provenance) -> Decision {
        let basis = provenance.legal_basis();
        if let Some(allowed) = &self.allowed_bases
            && !allowed.contains(&basis.code())
        {
            return Decision::Deny {
                rule: RULES[0],
                reason: format!(
                    "legal basis {} is not accepted for biometric templates (accepted: {})",
                    basis.name(),
                    self.file.allowed_legal_bases.as_deref().unwrap_or_default().join(", ")
                ),
            };
        }
        let kind = provenance.source_kind();
        if self.denied_kinds.contains(&kind.code()) {
            return Decision::Deny { rule: RULES[1], reason: format!("source kind {} is refused", kind.name()) };
        }
        let jurisdiction = provenance.jurisdiction();
        if self.denied_jurisdictions.contains(&jurisdiction) {
            return Decision::Deny {
                rule: RULES[2],
                reason: format!("records of people in {jurisdiction} are refused"),
            };
        }
        if jurisdiction == Jurisdiction::Unknown {
            match self.file.unknown_jurisdiction {
                UnknownAction::Allow => {}
                UnknownAction::Deny => {
                    return Decision::Deny {
                        rule: RULES[3],
                        reason: "records whose jurisdiction is unknown are refused".into(),
                    };
                }
                UnknownAction::Quarantine => return Decision::Quarantine { rule: RULES[3] },
            }
        }
        Decision::Allow
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::lawful()
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn provenance(kind: SourceKind, basis: LegalBasis, jurisdiction: &str) -> Provenance {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        Provenance::new("https://example.org/p.jpg".into(), t, kind, basis, jurisdiction.parse().unwrap(), t).unwrap()
    }

    fn rule(d: Decision) -> Option<&'static str> {
        match d {
            Decision::Allow => None,
            Decision::Quarantine { rule } | Decision::Deny { rule, .. } => Some(rule),
        }
    }

    #[test]
    fn lawful_refuses_each_unlawful_record_by_its_rule_and_lets_consent_through() {
        let p = Policy::lawful();
        use {LegalBasis as B, SourceKind as K};
        assert_eq!(p.decide(&provenance(K::ConsentedEnrolment, B::Consent, "FR")), Decision::Allow);
        assert_eq!(p.decide(&provenance(K::UserUpload, B::Consent, "DE")), Decision::Allow);
        assert_eq!(rule(p.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "FR"))), Some("legal-basis"));
        assert_eq!(rule(p.decide(&provenance(K::UserUpload, B::LegitimateInterests, "US"))), Some("legal-basis"));
        assert_eq!(rule(p.decide(&provenance(K::SocialMediaScrape, B::Consent, "US"))), Some("source-kind"));
        assert_eq!(
            p.decide(&provenance(K::ConsentedEnrolment, B::Consent, "unknown")),
            Decision::Quarantine { rule: "unknown-jurisdiction" }
        );
    }

    #[test]
    fn jurisdiction_and_unknown_rules_follow_the_file() {
        use {LegalBasis as B, SourceKind as K};
        let text = |unknown: &str| {
            format!("name = \"cnil\"\ndenied_jurisdictions = [\"fr\"]\nunknown_jurisdiction = \"{unknown}\"\n")
        };
        let deny = Policy::parse(&text("deny")).unwrap();
        assert_eq!(rule(deny.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "FR"))), Some("jurisdiction"));
        assert_eq!(deny.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "DE")), Decision::Allow);
        assert_eq!(
            rule(deny.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "unknown"))),
            Some("unknown-jurisdiction")
        );
        let allow = Policy::parse(&text("allow")).unwrap();
        assert_eq!(allow.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "unknown")), Decision::Allow);
        let permissive = Policy::profile("permissive").unwrap();
        assert_eq!(permissive.decide(&provenance(K::PublicWebScrape, B::NoneDeclared, "FR")), Decision::Allow);
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (text, why) in [
            ("name = \"x\"\nallowed_legal_bases = [\"vibes\"]\nunknown_jurisdiction = \"allow\"\n", "vibes"),
            ("name = \"x\"\ndenied_source_kinds = [\"web\"]\nunknown_jurisdiction = \"allow\"\n", "web"),
            ("name = \"x\"\ndenied_jurisdictions = [\"XX\"]\nunknown_jurisdiction = \"allow\"\n", "XX"),
            ("name = \"x\"\nunknown_jurisdiction = \"maybe\"\n", "maybe"),
            ("name = \"x\"\n", "unknown_jurisdiction"),
            ("name = \"x\"\nunknown_jurisdiction = \"allow\"\nfoo = 1\n", "foo"),
        ] {
            let err = Policy::parse(text).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(Policy::profile("clearview").is_err());
        let lawful = Policy::lawful();
        assert_eq!(Policy::parse(&lawful.to_toml()).unwrap(), lawful, "show round-trips");
    }
}

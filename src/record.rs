//! What a stored record is: its random id and its provenance.
//!
//! Provenance is required on every enrolment, because a rights request must be able to say
//! where each record came from (GDPR Art. 15(1)(g)) and policy decides on it. Every type here
//! is validated on construction, so the layers below never see a malformed value.
use std::{fmt, str::FromStr};

use jiff::{SignedDuration, Timestamp};

use crate::embedding::Embedding;

/// The longest source URI accepted, in bytes.
pub const MAX_SOURCE_URI_BYTES: usize = 2048;
/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// How far in the future a collection time may be, to allow for clock skew.
pub const COLLECTED_AT_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// Why a value is not valid record data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record id {0:?} is not 32 hex digits")]
    MalformedId(String),
    #[error("provenance is required: source_uri, collected_at, source_kind, legal_basis, jurisdiction")]
    MissingProvenance,
    #[error("provenance.source_uri is empty; say where the photo was found")]
    EmptySourceUri,
    #[error("provenance.source_uri is {0} bytes, at most {MAX_SOURCE_URI_BYTES} are allowed")]
    SourceUriTooLong(usize),
    #[error("provenance.collected_at is required")]
    MissingCollectedAt,
    #[error("provenance.collected_at is not a valid time: {0}")]
    InvalidCollectedAt(String),
    #[error("provenance.collected_at {collected_at} is in the future (server time {now})")]
    CollectedInFuture { collected_at: Timestamp, now: Timestamp },
    #[error("provenance.source_kind is unspecified; say how the photo was obtained")]
    UnspecifiedSourceKind,
    #[error("provenance.legal_basis is unspecified; declare one, or NONE_DECLARED if there is none")]
    UnspecifiedLegalBasis,
    #[error("unknown {field} value {value}")]
    UnknownEnumValue { field: &'static str, value: i32 },
    #[error("unknown {field} {value:?}; expected one of: {expected}")]
    UnknownName { field: &'static str, value: String, expected: String },
    #[error("provenance.jurisdiction {0:?} is not an ISO 3166-1 alpha-2 country code (such as \"FR\") nor \"unknown\"")]
    InvalidJurisdiction(String),
    #[error("idempotency_key is {0} bytes, at most {MAX_IDEMPOTENCY_KEY_BYTES} are allowed")]
    IdempotencyKeyTooLong(usize),
}

/// Declares a 128-bit random id written as 32 hex digits: `random`, `from_bytes`, `as_bytes`,
/// `Display`, `Debug`, `FromStr` (with the error the caller names) and serde as the hex string.
/// Written once so that every id type of the crate parses, prints and stores alike.
macro_rules! hex_id {
    ($(#[$meta:meta])* $name:ident, $err:ty, $malformed:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name([u8; 16]);

        impl $name {
            /// A fresh id from the operating system's random number generator.
            pub fn random() -> Self {
                $name($crate::record::random_128())
            }

            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = $err;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let malformed: fn(&str) -> $err = $malformed;
                let mut bytes = [0u8; 16];
                match hex::decode_to_slice(s, &mut bytes) {
                    Ok(()) => Ok($name(bytes)),
                    Err(_) => Err(malformed(s)),
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = $err;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}
pub(crate) use hex_id;

/// 128 bits from the operating system's random number generator.
pub(crate) fn random_128() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
    bytes
}

hex_id!(
    /// A record's id: 128 random bits, never derived from the template, the source or an
    /// identity. Serialised as its 32 hex digits.
    RecordId,
    RecordError,
    |s: &str| RecordError::MalformedId(s.chars().take(64).collect())
);

/// How a photo was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    PublicWebScrape,
    SocialMediaScrape,
    UserUpload,
    ConsentedEnrolment,
    ThirdPartyTransfer,
}

/// The legal basis declared for holding a record (GDPR Art. 6(1)), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterests,
    PublicTask,
    LegitimateInterests,
    NoneDeclared,
}

/// Defines the stable one-byte codes (for the store's record codec) and the snake_case names
/// (for files and reports) of a field-less enum.
macro_rules! codes_and_names {
    ($ty:ident { $($variant:ident = $code:literal $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub const fn code(self) -> u8 {
                match self { $($ty::$variant => $code),+ }
            }

            pub const fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($ty::$variant),)+ _ => None }
            }

            pub const fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some($ty::$variant),)+ _ => None }
            }

            /// Every name, for error messages.
            pub fn names() -> String {
                [$($name),+].join(", ")
            }
        }
    };
}

codes_and_names!(SourceKind {
    PublicWebScrape = 1 "public_web_scrape",
    SocialMediaScrape = 2 "social_media_scrape",
    UserUpload = 3 "user_upload",
    ConsentedEnrolment = 4 "consented_enrolment",
    ThirdPartyTransfer = 5 "third_party_transfer",
});

codes_and_names!(LegalBasis {
    Consent = 1 "consent",
    Contract = 2 "contract",
    LegalObligation = 3 "legal_obligation",
    VitalInterests = 4 "vital_interests",
    PublicTask = 5 "public_task",
    LegitimateInterests = 6 "legitimate_interests",
    NoneDeclared = 7 "none_declared",
});

/// Where the person is believed to live: a country, or honestly unknown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jurisdiction {
    Country([u8; 2]),
    Unknown,
}

/// ISO 3166-1 alpha-2 officially assigned codes, concatenated.
const ISO_3166_ALPHA2: &str = "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ\
CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGP\
GQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMA\
MCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQA\
RERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVC\
VEVGVIVNVUWFWSYEYTZAZMZW";

impl Jurisdiction {
    /// The spelling used on the wire and in reports: "FR", or "unknown".
    pub fn as_str(&self) -> &str {
        match self {
            Jurisdiction::Country(code) => std::str::from_utf8(code).expect("country codes are ASCII"),
            Jurisdiction::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jurisdiction({self})")
    }
}

impl FromStr for Jurisdiction {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || RecordError::InvalidJurisdiction(s.chars().take(16).collect());
        if s.eq_ignore_ascii_case("unknown") {
            return Ok(Jurisdiction::Unknown);
        }
        let code: [u8; 2] = s.to_ascii_uppercase().into_bytes().try_into().map_err(|_| invalid())?;
        let known = ISO_3166_ALPHA2.as_bytes().chunks_exact(2).any(|c| c == code);
        if known { Ok(Jurisdiction::Country(code)) } else { Err(invalid()) }
    }
}

/// Where a template came from and on what basis it is held. `Debug` hides the source URI.
#[derive(Clone, PartialEq, Eq)]
pub struct Provenance {
    source_uri: String,
    collected_at: Timestamp,
    source_kind: SourceKind,
    legal_basis: LegalBasis,
    jurisdiction: Jurisdiction,
}

impl Provenance {
    /// Validates provenance against the clock `now`.
    pub fn new(
        source_uri: String,
        collected_at: Timestamp,
        source_kind: SourceKind,
        legal_basis: LegalBasis,
        jurisdiction: Jurisdiction,
        now: Timestamp,
    ) -> Result<Self, RecordError> {
        if source_uri.is_empty() {
            return Err(RecordError::EmptySourceUri);
        }
        if source_uri.len() > MAX_SOURCE_URI_BYTES {
            return Err(RecordError::SourceUriTooLong(source_uri.len()));
        }
        if collected_at > now + COLLECTED_AT_SKEW {
            return Err(RecordError::CollectedInFuture { collected_at, now });
        }
        Ok(Provenance { source_uri, collected_at, source_kind, legal_basis, jurisdiction })
    }

    /// A scraped photo's provenance with nothing declared (no legal basis, jurisdiction
    /// unknown), collected and recorded at `at`: what a crawler knows, and what the tests,
    /// benches and examples enrol.
    pub fn scraped(source_uri: String, at: Timestamp) -> Result<Self, RecordError> {
        Provenance::new(
            source_uri,
            at,
            SourceKind::PublicWebScrape,
            LegalBasis::NoneDeclared,
            Jurisdiction::Unknown,
            at,
        )
    }

    /// Rebuilds provenance that was validated when it was stored (no clock check).
    pub(crate) fn from_stored(
        source_uri: String,
        collected_at: Timestamp,
        source_kind: SourceKind,
        legal_basis: LegalBasis,
        jurisdiction: Jurisdiction,
    ) -> Self {
        Provenance { source_uri, collected_at, source_kind, legal_basis, jurisdiction }
    }

    pub fn source_uri(&self) -> &str {
        &self.source_uri
    }
    pub fn collected_at(&self) -> Timestamp {
        self.collected_at
    }
    pub fn source_kind(&self) -> SourceKind {
        self.source_kind
    }
    pub fn legal_basis(&self) -> LegalBasis {
        self.legal_basis
    }
    pub fn jurisdiction(&self) -> Jurisdiction {
        self.jurisdiction
    }
}

impl fmt::Debug for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provenance")
            .field("source_uri", &"<redacted>")
            .field("collected_at", &self.collected_at)
            .field("source_kind", &self.source_kind)
            .field("legal_basis", &self.legal_basis)
            .field("jurisdiction", &self.jurisdiction)
            .finish()
    }
}

/// A client's idempotency key: non-empty, bounded. Stored only as a keyed hash.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `Ok(None)` for the empty string, which means "no key".
    pub fn parse(key: String) -> Result<Option<Self>, RecordError> {
        match key.len() {
            0 => Ok(None),
            n if n > MAX_IDEMPOTENCY_KEY_BYTES => Err(RecordError::IdempotencyKeyTooLong(n)),
            _ => Ok(Some(IdempotencyKey(key))),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdempotencyKey(<redacted>)")
    }
}

/// A template to store, with everything that goes with it.
#[derive(Debug)]
pub struct NewRecord {
    pub embedding: Embedding,
    pub provenance: Provenance,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A stored record as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: RecordId,
    pub provenance: Provenance,
    pub enrolled_at: Timestamp,
    pub embedding: Embedding,
    /// The salt of the record's commitment in the transparency log: given only to the person
    /// concerned, it lets them find their record's events in the public log.
    pub commitment_salt: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_round_trip_through_hex() {
        let id = RecordId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<RecordId>().unwrap(), id);
        assert!("xyz".parse::<RecordId>().is_err());
        assert!("00".repeat(17).parse::<RecordId>().is_err());
        assert_ne!(RecordId::random(), RecordId::random());
    }

    #[test]
    fn jurisdictions_are_iso_codes_or_unknown() {
        assert_eq!("fr".parse::<Jurisdiction>().unwrap().as_str(), "FR");
        assert_eq!("UNKNOWN".parse::<Jurisdiction>().unwrap(), Jurisdiction::Unknown);
        for bad in ["", "F", "FRA", "ZZ", "É1"] {
            assert!(bad.parse::<Jurisdiction>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(ISO_3166_ALPHA2.len(), 249 * 2);
    }

    #[test]
    fn byte_codes_round_trip() {
        for &k in SourceKind::ALL {
            assert_eq!(SourceKind::from_code(k.code()), Some(k));
            assert_eq!(SourceKind::from_name(k.name()), Some(k));
        }
        for &b in LegalBasis::ALL {
            assert_eq!(LegalBasis::from_code(b.code()), Some(b));
            assert_eq!(LegalBasis::from_name(b.name()), Some(b));
        }
        assert_eq!(LegalBasis::from_code(0), None);
    }

    #[test]
    fn provenance_rejects_future_and_oversize_values() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let make = |uri: &str, at: Timestamp| {
            Provenance::new(
                uri.to_string(),
                at,
                SourceKind::PublicWebScrape,
                LegalBasis::NoneDeclared,
                Jurisdiction::Unknown,
                now,
            )
        };
        assert!(make("https://a.example/1.jpg", now).is_ok());
        assert_eq!(make("", now), Err(RecordError::EmptySourceUri));
        assert_eq!(make(&"a".repeat(2049), now), Err(RecordError::SourceUriTooLong(2049)));
        let later = now + SignedDuration::from_hours(1);
        assert!(matches!(make("u", later), Err(RecordError::CollectedInFuture { .. })));
        let p = make("https://secret.example/x", now).unwrap();
        assert!(!format!("{p:?}").contains("secret"));
    }
}

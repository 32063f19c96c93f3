//! Identity before disclosure (GDPR Art. 12(6); EDPB Guidelines 01/2022): a photo of a face
//! proves nothing about who sends it, so no answer about a face is given, and nothing says
//! whether anything matched, until the person's identity is established by one of:
//! - a **presence-bound capture**: the server hands out a one-time challenge
//!   ([`Challenges::begin`]); a capture application the controller trusts (its Ed25519 key is
//!   in the capture-keys file) signs, for each probe, `SHA-256(CAPTURE_DOMAIN ‖ challenge ‖
//!   request digest ‖ template bytes)`; the request carries the signatures ([`Capture`]). A
//!   photo copied from the web has no fresh signature.
//! - the **privacy desk**, out of band (an ID document, a call), recorded as [`Identity::Desk`].
//!
//! The request digest binds the signature to what the request asks and where the answer goes
//! (kind, contact, jurisdiction, options), so a capture cannot be moved to another request.
//! Template bytes are the probe's values as sent, little-endian `f32`.
use std::{collections::BTreeMap, collections::HashMap, fmt, path::Path};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::request::{Kind, RequestId};

/// Domain of a capture signature's message.
pub const CAPTURE_DOMAIN: &[u8] = b"oubli/capture/v1\n";
/// Domain of the request digest.
pub const REQUEST_DOMAIN: &[u8] = b"oubli/capture-request/v1\n";
/// The longest a capture key's name may be.
const MAX_KEY_NAME: usize = 64;

/// How the requester's identity was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "how")]
pub enum Identity {
    /// Every probe was captured, for this request, by the trusted capture application `key`.
    Capture { key: String, at: Timestamp },
    /// The privacy desk checked it out of band.
    Desk { by: String, method: Method, note: String, at: Timestamp },
    /// Inherited from the completed access request whose records an erasure names.
    AccessRequest { id: RequestId },
}

impl Identity {
    /// One line for the report and the status.
    pub fn describe(&self) -> String {
        match self {
            Identity::Capture { key, at } => {
                format!("a live capture signed by the trusted capture application {key:?} at {at}")
            }
            Identity::Desk { by, method, at, .. } => {
                format!("checked by the privacy desk ({by}) by {} at {at}", method.name())
            }
            Identity::AccessRequest { id } => format!("established for access request {id}"),
        }
    }
}

/// How the privacy desk checked an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    IdDocument,
    VideoCall,
    InPerson,
    Other,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::IdDocument, Method::VideoCall, Method::InPerson, Method::Other];

    pub fn name(self) -> &'static str {
        match self {
            Method::IdDocument => "id-document",
            Method::VideoCall => "video-call",
            Method::InPerson => "in-person",
            Method::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Why a capture was refused. Each names what to do; none depends on what the store holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("the capture's challenge was not issued by this server (call BeginCapture first)")]
    UnknownChallenge,
    #[error("the capture's challenge has expired; begin a new capture")]
    ExpiredChallenge,
    #[error("the capture's challenge was already used; each capture is good for one request")]
    UsedChallenge,
    #[error("too many captures are under way; try again in {retry_after_secs} s")]
    TooManyChallenges { retry_after_secs: u64 },
    #[error("capture key {0:?} is not trusted by this server (see `oubli capture-keys add`)")]
    UnknownKey(String),
    #[error("the capture carries {signatures} signature(s) for {probes} probe(s): sign each probe")]
    SignatureCount { signatures: usize, probes: usize },
    #[error("signature {0} does not verify: it was not made for this challenge, this request and this template")]
    BadSignature(usize),
    #[error("the capture-keys file {path}: {reason}")]
    KeysFile { path: String, reason: String },
}

/// What a request asks and where its answer goes: the part a capture signs.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    pub kind: Kind,
    pub contact: &'a str,
    pub jurisdiction_claim: &'a str,
    pub include_templates: bool,
    pub never_enrol_again: bool,
}

impl Terms<'_> {
    /// SHA-256 of the terms, each field length-prefixed.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(REQUEST_DOMAIN);
        for field in [self.kind.name().as_bytes(), self.contact.as_bytes(), self.jurisdiction_claim.as_bytes()] {
            h.update((field.len() as u32).to_be_bytes());
            h.update(field);
        }
        h.update([u8::from(self.include_templates), u8::from(self.never_enrol_again)]);
        h.finalize().into()
    }
}

/// The message a capture application signs for one probe.
pub fn capture_message(challenge: &[u8; 32], request_digest: &[u8; 32], template: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(CAPTURE_DOMAIN);
    h.update(challenge);
    h.update(request_digest);
    for v in template {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// A request's signed captures: one signature per probe, in order.
#[derive(Clone, PartialEq, Eq)]
pub struct Capture {
    pub challenge: [u8; 32],
    pub key: String,
    pub signatures: Vec<[u8; 64]>,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture").field("key", &self.key).field("signatures", &self.signatures.len()).finish()
    }
}

/// A capture as a request carries it: the signatures and the probes' values as sent (before
/// normalisation), which is what was signed.
#[derive(Debug, Clone)]
pub struct Signed {
    pub capture: Capture,
    pub sent: Vec<Vec<f32>>,
}

impl Drop for Signed {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in &mut self.sent {
            v.zeroize();
        }
    }
}

/// Signs `templates` for `terms` under `challenge`: what a trusted capture application does
/// after its liveness check (`oubli capture` plays it for the synthetic world).
pub fn sign_capture(
    key: &SigningKey,
    name: &str,
    challenge: [u8; 32],
    terms: &Terms<'_>,
    templates: &[&[f32]],
) -> Capture {
    let digest = terms.digest();
    let signatures = templates.iter().map(|t| key.sign(&capture_message(&challenge, &digest, t)).to_bytes()).collect();
    Capture { challenge, key: name.to_string(), signatures }
}

/// The capture applications the controller trusts: name → Ed25519 public key. A TOML file of
/// `[[key]]` tables with `name` and `public_key` (64 hex digits), managed by
/// `oubli capture-keys add`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureKeys {
    keys: BTreeMap<String, VerifyingKey>,
}

#[derive(Serialize, Deserialize)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyLine>,
}

#[derive(Serialize, Deserialize)]
struct KeyLine {
    name: String,
    public_key: String,
}

impl CaptureKeys {
    /// The keys in `path`; none if the file does not exist. Whoever can write this file can
    /// make any capture trusted, so it is refused unless it is owner-only (as the tokens file).
    pub fn load(path: &Path) -> Result<CaptureKeys, CaptureError> {
        use std::io::Read;
        let fail = |reason: String| CaptureError::KeysFile { path: path.display().to_string(), reason };
        let mut file = match crate::store::private::open(path) {
            Ok(file) => file,
            Err(e) if e.is_not_found() => return Ok(CaptureKeys::default()),
            Err(e) => return Err(fail(e.to_string())),
        };
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| fail(e.to_string()))?;
        CaptureKeys::parse(&text).map_err(fail)
    }

    pub fn parse(text: &str) -> Result<CaptureKeys, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut keys = CaptureKeys::default();
        for line in file.key {
            let bytes: [u8; 32] = hex::decode(&line.public_key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("key {:?}: public_key is not 64 hex digits", line.name))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("key {:?}: not an Ed25519 public key", line.name))?;
            keys.add(&line.name, key)?;
        }
        Ok(keys)
    }

    /// Adds `key` as `name`; a name is a short word and is listed once.
    pub fn add(&mut self, name: &str, key: VerifyingKey) -> Result<(), String> {
        let ok = !name.is_empty()
            && name.len() <= MAX_KEY_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(format!("key name {name:?}: use 1 to {MAX_KEY_NAME} letters, digits, '-', '_' or '.'"));
        }
        if self.keys.insert(name.to_string(), key).is_some() {
            return Err(format!("key {name:?} is listed twice"));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&VerifyingKey> {
        self.keys.get(name)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn to_toml(&self) -> String {
        let file = KeysFile {
            key: self
                .keys
                .iter()
                .map(|(name, key)| KeyLine { name: name.clone(), public_key: hex::encode(key.as_bytes()) })
                .collect(),
        };
        toml::to_string(&file).expect("capture keys serialise")
    }
}

/// Outstanding one-time challenges: random, short-lived, single use. In memory only: a
/// restart forgets them, so none can be replayed after it either.
pub struct Challenges {
    ttl: SignedDuration,
    capacity: usize,
    /// Expiry, and whether it was used (kept until expiry, so a replay is told so).
    issued: Mutex<HashMap<[u8; 32], (Timestamp, bool)>>,
}

impl Challenges {
    pub fn new(ttl: std::time::Duration, capacity: usize) -> Challenges {
        Challenges {
            ttl: SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_secs(300)),
            capacity: capacity.max(1),
            issued: Mutex::default(),
        }
    }

    /// A new challenge and when it expires.
    pub fn begin(&self, now: Timestamp) -> Result<([u8; 32], Timestamp), CaptureError> {
        let mut issued = self.issued.lock();
        if issued.len() >= self.capacity {
            issued.retain(|_, (expires, _)| *expires > now);
        }
        if issued.len() >= self.capacity {
            let soonest = issued.values().map(|(e, _)| *e).min().unwrap_or(now);
            let wait = soonest.duration_since(now).as_secs().max(1) as u64;
            return Err(CaptureError::TooManyChallenges { retry_after_secs: wait });
        }
        let mut challenge = [0u8; 32];
        challenge[..16].copy_from_slice(&crate::record::random_128());
        challenge[16..].copy_from_slice(&crate::record::random_128());
        let expires = now.checked_add(self.ttl).unwrap_or(Timestamp::MAX);
        issued.insert(challenge, (expires, false));
        Ok((challenge, expires))
    }

    /// Uses `challenge` up, whatever the capture's fate: it is never good again.
    fn consume(&self, challenge: &[u8; 32], now: Timestamp) -> Result<(), CaptureError> {
        let mut issued = self.issued.lock();
        let Some((expires, used)) = issued.get_mut(challenge) else {
            return Err(CaptureError::UnknownChallenge);
        };
        if *used {
            return Err(CaptureError::UsedChallenge);
        }
        *used = true;
        if now >= *expires {
            return Err(CaptureError::ExpiredChallenge);
        }
        Ok(())
    }
}

/// Checks `capture` for a request with `terms` and `templates` (as sent): the challenge is
/// used up, the key is trusted, and every probe's signature verifies.
pub fn verify(
    keys: &CaptureKeys,
    challenges: &Challenges,
    capture: &Capture,
    terms: &Terms<'_>,
    templates: &[&[f32]],
    now: Timestamp,
) -> Result<Identity, CaptureError> {
    challenges.consume(&capture.challenge, now)?;
    let key = keys.get(&capture.key).ok_or_else(|| CaptureError::UnknownKey(capture.key.clone()))?;
    if capture.signatures.len() != templates.len() {
        return Err(CaptureError::SignatureCount { signatures: capture.signatures.len(), probes: templates.len() });
    }
    let digest = terms.digest();
    for (i, (template, signature)) in templates.iter().zip(&capture.signatures).enumerate() {
        let message = capture_message(&capture.challenge, &digest, template);
        key.verify(&message, &Signature::from_bytes(signature)).map_err(|_| CaptureError::BadSignature(i))?;
    }
    Ok(Identity::Capture { key: capture.key.clone(), at: now })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    const TERMS: Terms<'static> = Terms {
        kind: Kind::Access,
        contact: "me@example.org",
        jurisdiction_claim: "FR",
        include_templates: false,
        never_enrol_again: false,
    };

    fn setup() -> (CaptureKeys, Challenges, Timestamp) {
        let mut keys = CaptureKeys::default();
        keys.add("app", key(1).verifying_key()).unwrap();
        (keys, Challenges::new(std::time::Duration::from_secs(60), 16), "2026-12-01T10:00:00Z".parse().unwrap())
    }

    #[test]
    fn a_fresh_capture_verifies_once() {
        let (keys, challenges, now) = setup();
        let (challenge, _) = challenges.begin(now).unwrap();
        let t = [0.5f32, -0.25];
        let capture = sign_capture(&key(1), "app", challenge, &TERMS, &[&t]);
        assert!(matches!(verify(&keys, &challenges, &capture, &TERMS, &[&t], now), Ok(Identity::Capture { .. })));
        assert_eq!(verify(&keys, &challenges, &capture, &TERMS, &[&t], now), Err(CaptureError::UsedChallenge));
    }

    #[test]
    fn each_forgery_is_refused_by_name() {
        let (keys, challenges, now) = setup();
        let t = [0.5f32, -0.25];
        let other = [0.5f32, -0.5];
        let check = |capture: &Capture, terms: &Terms<'_>, templates: &[&[f32]], at| {
            verify(&keys, &challenges, capture, terms, templates, at).unwrap_err()
        };
        // A challenge never issued.
        let forged = sign_capture(&key(1), "app", [7; 32], &TERMS, &[&t]);
        assert_eq!(check(&forged, &TERMS, &[&t], now), CaptureError::UnknownChallenge);
        // Expired.
        let (c, expires) = challenges.begin(now).unwrap();
        let late = sign_capture(&key(1), "app", c, &TERMS, &[&t]);
        assert_eq!(check(&late, &TERMS, &[&t], expires), CaptureError::ExpiredChallenge);
        // An unknown key, and a known name signed by another key.
        let (c, _) = challenges.begin(now).unwrap();
        assert_eq!(
            check(&sign_capture(&key(2), "stranger", c, &TERMS, &[&t]), &TERMS, &[&t], now),
            CaptureError::UnknownKey("stranger".into())
        );
        let (c, _) = challenges.begin(now).unwrap();
        assert_eq!(
            check(&sign_capture(&key(2), "app", c, &TERMS, &[&t]), &TERMS, &[&t], now),
            CaptureError::BadSignature(0)
        );
        // A signature over another template, or for other terms.
        let (c, _) = challenges.begin(now).unwrap();
        assert_eq!(
            check(&sign_capture(&key(1), "app", c, &TERMS, &[&other]), &TERMS, &[&t], now),
            CaptureError::BadSignature(0)
        );
        let (c, _) = challenges.begin(now).unwrap();
        let elsewhere = Terms { contact: "stalker@example.org", ..TERMS };
        assert_eq!(
            check(&sign_capture(&key(1), "app", c, &TERMS, &[&t]), &elsewhere, &[&t], now),
            CaptureError::BadSignature(0)
        );
    }

    #[test]
    fn challenges_are_bounded() {
        let (_, _, now) = setup();
        let challenges = Challenges::new(std::time::Duration::from_secs(60), 4);
        for _ in 0..4 {
            challenges.begin(now).unwrap();
        }
        assert!(matches!(challenges.begin(now), Err(CaptureError::TooManyChallenges { retry_after_secs: 60 })));
        let later = now.checked_add(SignedDuration::from_secs(61)).unwrap();
        assert!(challenges.begin(later).is_ok(), "expired challenges make room");
    }

    #[test]
    fn keys_files_round_trip_and_refuse_bad_lines() {
        let (keys, _, _) = setup();
        assert_eq!(CaptureKeys::parse(&keys.to_toml()).unwrap(), keys);
        assert!(CaptureKeys::parse("[[key]]\nname = \"a\"\npublic_key = \"00\"\n").unwrap_err().contains("64 hex"));
        assert!(CaptureKeys::parse("[[key]]\nname = \"a b\"\npublic_key = \"".to_string().as_str()).is_err());
        let mut twice = keys.clone();
        assert!(twice.add("app", key(3).verifying_key()).unwrap_err().contains("twice"));
    }
}

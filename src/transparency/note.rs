//! C2SP signed notes (Ed25519) and tlog checkpoints, as golang.org/x/mod/sumdb/note and
//! c2sp.org/tlog-checkpoint define them (summary and vectors: ../shared/testdata/note/).
//!
//! A note is UTF-8 text ending in LF, a blank line, then signature lines
//! `— <name> <base64(key id ‖ signature)>`. The key id is the first 4 bytes of
//! `SHA-256(name ‖ LF ‖ 0x01 ‖ public key)`. Opening a note ignores signatures by unknown keys,
//! rejects the note if a known key's signature fails, and needs at least one that verifies.
use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::merkle::Hash;

const ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";
/// More signatures than this and a note is refused (as Go does).
const MAX_SIGNATURES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("invalid signature for key {0}")]
    InvalidSignature(String),
    #[error("note has no verifiable signatures")]
    NoVerifiableSignature,
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
}

/// The key id of a key of signature type `alg`: `SHA-256(name ‖ LF ‖ alg ‖ key)[:4]`.
pub(super) fn key_id(name: &str, alg: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// Parses a verifier key `<name>+<hex key id>+<base64(alg ‖ Ed25519 key)>` of signature type
/// `alg` (`wrong_alg` says why another type is refused): its name, key id and key. Shared by
/// the log's keys (0x01) and the witnesses' (`cosign`, 0x04); each wraps the reason in its own
/// error.
pub(super) fn parse_vkey<'a>(
    text: &'a str,
    alg: u8,
    wrong_alg: &'static str,
) -> Result<(&'a str, [u8; 4], VerifyingKey), &'static str> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected <name>+<key id>+<key>");
    };
    if !valid_name(name) {
        return Err("name is empty or has a space or a +");
    }
    let mut given = [0u8; 4];
    if id.len() != 8 || hex::decode_to_slice(id, &mut given).is_err() {
        return Err("key id is not 8 hex digits");
    }
    let raw = STANDARD.decode(key).map_err(|_| "key is not base64")?;
    let (&found, public) = raw.split_first().ok_or("key is empty")?;
    if found != alg {
        return Err(wrong_alg);
    }
    let public: [u8; 32] = public.try_into().map_err(|_| "an Ed25519 key is 32 bytes")?;
    if key_id(name, alg, &public) != given {
        return Err("key id does not match the name and key");
    }
    let key = VerifyingKey::from_bytes(&public).map_err(|_| "not an Ed25519 point")?;
    Ok((name, given, key))
}

/// A public key to check notes with: `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = parse_vkey(text.trim_end(), ED25519, "only Ed25519 (type 0x01) keys are supported")
            .map_err(NoteError::MalformedKey)?;
        Ok(VerifierKey { name: name.to_string(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+keyid`, how reports name a key.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.id))
    }
}

impl From<&VerifierKey> for VerifyingKey {
    fn from(key: &VerifierKey) -> Self {
        key.key
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), STANDARD.encode(raw))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

/// A private key that signs notes. The seed is zeroed on drop; `Debug` never shows it.
pub struct SignerKey {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl SignerKey {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::MalformedKey("name is empty or has a space or a +"));
        }
        let key = SigningKey::from_bytes(seed);
        Ok(SignerKey { name: name.to_string(), id: key_id(name, ED25519, key.verifying_key().as_bytes()), key })
    }

    /// Parses Go's `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text.trim_end().strip_prefix("PRIVATE+KEY+").ok_or(NoteError::MalformedKey("not a PRIVATE+KEY"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        let raw = Zeroizing::new(STANDARD.decode(key).map_err(|_| NoteError::MalformedKey("key is not base64"))?);
        let (&alg, seed) = raw.split_first().ok_or(NoteError::MalformedKey("key is empty"))?;
        let seed: &[u8; 32] = seed.try_into().map_err(|_| NoteError::MalformedKey("an Ed25519 seed is 32 bytes"))?;
        if alg != ED25519 {
            return Err(NoteError::MalformedKey("only Ed25519 (type 0x01) keys are supported"));
        }
        let signer = Self::from_seed(name, seed)?;
        if hex::encode(signer.id) != id {
            return Err(NoteError::MalformedKey("key id does not match the name and key"));
        }
        Ok(signer)
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// An Ed25519 signature of `bytes` (for documents other than notes, such as receipts).
    pub fn sign_bytes(&self, bytes: &[u8]) -> [u8; 64] {
        self.key.sign(bytes).to_bytes()
    }

    /// Signs `text` (non-empty, ending in LF) and returns the whole note.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let mut sig = self.id.to_vec();
        sig.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        Ok(format!("{text}\n{DASH}{} {}\n", self.name, STANDARD.encode(sig)))
    }
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{}, secret redacted)", self.name, hex::encode(self.id))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    text_problem(text).map_err(NoteError::Malformed)
}

/// Why `text` cannot be a note's text, if it cannot: it must be non-empty, end in LF and hold
/// no other control character.
pub(super) fn text_problem(text: &str) -> Result<(), &'static str> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err("text must be non-empty and end with a newline");
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err("only newline may appear as a control character");
    }
    Ok(())
}

/// One signature line of a note, split: the line (without its LF), the key name, and the
/// decoded bytes (key id first, at least one byte of signature after it).
pub(super) struct SignatureLine<'a> {
    pub line: &'a str,
    pub name: &'a str,
    pub raw: Vec<u8>,
}

/// Splits a signed note into its text (with its final LF) and its signature lines, checking the
/// signed-note syntax (not the signatures): what [`open`] and the witnesses' cosignatures
/// (`cosign`) both read.
pub(super) fn split(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), &'static str> {
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err("only newline may appear as a control character");
    }
    let body = note.strip_suffix('\n').ok_or("the last line must end with a newline")?;
    let split = note.rfind("\n\n").ok_or("no blank line before the signatures")?;
    let text = &note[..split + 1];
    text_problem(text)?;
    let lines: Vec<&str> = body.get(split + 2..).unwrap_or("").split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err("too many signatures");
    }
    let lines = lines.into_iter().map(signature_line).collect::<Result<_, _>>()?;
    Ok((text, lines))
}

/// Parses one signature line `— <name> <base64>` (without its LF).
pub(super) fn signature_line(line: &str) -> Result<SignatureLine<'_>, &'static str> {
    let rest = line.strip_prefix(DASH).ok_or("a line after the text is not a signature")?;
    let (name, b64) = rest.split_once(' ').ok_or("signature line has no signature")?;
    if !valid_name(name) || b64.contains(' ') {
        return Err("bad signature line");
    }
    let raw = STANDARD.decode(b64).map_err(|_| "signature is not base64")?;
    if raw.len() < 5 {
        return Err("signature too short");
    }
    Ok(SignatureLine { line, name, raw })
}

/// A note whose signatures were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The signed text, with its final newline.
    pub text: String,
    /// `name+keyid` of each known key whose signature verified.
    pub verified: Vec<String>,
    /// `name+keyid` of signatures by keys not given.
    pub unverified: Vec<String>,
}

/// Opens `note` with the known `keys`.
pub fn open(note: &str, keys: &[VerifierKey]) -> Result<Opened, NoteError> {
    let (text, lines) = split(note).map_err(NoteError::Malformed)?;
    let (mut verified, mut unverified) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for SignatureLine { line, name, raw } in lines {
        if !seen.insert(line) {
            continue;
        }
        let (id, sig) = raw.split_at(4);
        let label = format!("{name}+{}", hex::encode(id));
        match keys.iter().find(|k| k.name == name && k.id == id) {
            None => unverified.push(label),
            Some(key) => {
                let ok = Signature::from_slice(sig).is_ok_and(|s| key.key.verify(text.as_bytes(), &s).is_ok());
                if !ok {
                    return Err(NoteError::InvalidSignature(label));
                }
                verified.push(label);
            }
        }
    }
    if verified.is_empty() {
        return Err(NoteError::NoVerifiableSignature);
    }
    Ok(Opened { text: text.to_string(), verified, unverified })
}

/// The body of a c2sp.org/tlog-checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, each on its own line.
    pub fn text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root))
    }

    /// Parses checkpoint text strictly (no leading zeros, a 32-byte root). Extension lines
    /// are refused: this log writes none.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let bad = NoteError::MalformedCheckpoint;
        let body = text.strip_suffix('\n').ok_or(bad("must end with a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(bad("expected origin, size and root lines"));
        };
        if lines.next().is_some() {
            return Err(bad("unexpected extension lines"));
        }
        if origin.is_empty() {
            return Err(bad("empty origin"));
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("size is not a decimal number without leading zeros"));
        }
        let size = size.parse().map_err(|_| bad("size does not fit in 64 bits"))?;
        let root = STANDARD.decode(root).map_err(|_| bad("root is not base64"))?;
        let root = root.try_into().map_err(|_| bad("root is not 32 bytes"))?;
        Ok(Checkpoint { origin: origin.to_string(), size, root })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors() -> Vec<Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/note/vectors.json");
        let v: Value = serde_json::from_slice(&std::fs::read(path).expect("note vectors")).expect("json");
        v["cases"].as_array().expect("cases").clone()
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array().map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect()).unwrap_or_default()
    }

    #[test]
    fn every_note_vector_behaves_as_documented() {
        let cases = vectors();
        assert_eq!(cases.len(), 18);
        for c in cases {
            let id = c["id"].as_str().expect("id");
            let expect = c["expect"].as_str().expect("expect").trim();
            let keys: Result<Vec<VerifierKey>, _> =
                strings(&c["vkeys"]).iter().map(|k| VerifierKey::parse(k)).collect();
            if expect.starts_with("error: vkey rejected") {
                assert!(keys.is_err(), "{id}: a bad verifier key was accepted");
                continue;
            }
            let keys = keys.unwrap_or_else(|e| panic!("{id}: {e}"));
            for k in &keys {
                assert_eq!(VerifierKey::parse(&k.to_string()).as_ref(), Ok(k), "{id}: key round trip");
            }
            let note = c["note"].as_str().expect("note");
            if let Some(skey) = c["skey"].as_str() {
                let signer = SignerKey::parse(skey).unwrap_or_else(|e| panic!("{id}: {e}"));
                let text = c["text"].as_str().expect("text");
                assert_eq!(signer.sign(text).expect("sign"), note, "{id}: signing gives the exact note");
                assert!(keys.contains(&signer.verifier()), "{id}: signer matches its verifier key");
            }
            let opened = open(note, &keys);
            if expect == "ok" {
                let opened = opened.unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(opened.text, c["text"].as_str().expect("text"), "{id}");
                assert_eq!(opened.verified, strings(&c["verified"]), "{id}");
                assert_eq!(opened.unverified, strings(&c["unverified"]), "{id}");
            } else if let Some(message) = expect.strip_prefix("error: ") {
                let err = opened.expect_err(id).to_string();
                let want = message.split(" (").next().expect("message");
                assert!(err.contains(want), "{id}: got {err:?}, want {want:?}");
            } else {
                assert!(expect.starts_with("parse only"), "{id}: {expect}");
                let text = &note[..note.rfind("\n\n").expect("blank line") + 1];
                let checkpoint = Checkpoint::parse(text).unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(checkpoint.size, 20852163, "{id}");
                assert_eq!(checkpoint.text(), text, "{id}: checkpoint round trip");
            }
        }
    }

    /// A checkpoint carrying witness cosignatures (signature type 0x04, keys the reader does not
    /// hold) is still the log's checkpoint: unknown signatures are ignored, as the spec says.
    #[test]
    fn unknown_signature_lines_such_as_cosignatures_are_ignored() {
        let log = SignerKey::from_seed("example.com/log", &[5; 32]).expect("key");
        let text = "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n";
        let cosigned = format!(
            "{}\u{2014} witness.example/w1 {}\n\u{2014} witness.example/w2 {}\n",
            log.sign(text).expect("sign"),
            STANDARD.encode([1u8; 76]),
            STANDARD.encode([2u8; 76])
        );
        let opened = open(&cosigned, &[log.verifier()]).expect("opens");
        assert_eq!(opened.text, text);
        assert_eq!(opened.unverified, vec!["witness.example/w1+01010101", "witness.example/w2+02020202"]);
        assert_eq!(crate::transparency::receipt::open_checkpoint(&cosigned, &log.verifier()).expect("opens").size, 8);
        // Cosignatures before the log's own line change nothing either.
        let (note_text, log_line) = cosigned.split_once("\n\n").expect("blank line");
        let (log_line, rest) = log_line.split_once('\n').expect("lines");
        let reordered = format!("{note_text}\n\n{rest}{log_line}\n");
        assert_eq!(open(&reordered, &[log.verifier()]).expect("opens").text, text);
    }

    #[test]
    fn checkpoints_are_parsed_strictly() {
        let ok = "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n";
        assert_eq!(Checkpoint::parse(ok).expect("valid").size, 8);
        for bad in [
            "example.com/log\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
            "example.com/log\n-8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7Zoqudgjq=\n",
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n",
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
            "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Witness cosignatures (c2sp.org/tlog-cosignature, the Ed25519 `cosignature/v1` type) and the
//! body of a tlog-witness `add-checkpoint` request (c2sp.org/tlog-witness), both ways.
//!
//! A cosignature is one more signed-note signature line on a checkpoint: a witness states that,
//! at the time it gives, this is the largest tree of the log it has seen grow consistently. It
//! is timestamped and made with signature type 0x04, so it can never be mistaken for the log's
//! own signature (type 0x01) even under one name. Pure and synchronous: the witness server and
//! the log's client live in `crate::http`, the quorum check in `receipt::verify`.
use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use zeroize::Zeroizing;

use super::{
    merkle::Hash,
    note::{self, SignatureLine},
};

/// The signature type byte of timestamped Ed25519 checkpoint cosignatures.
pub const COSIGNATURE_V1: u8 = 0x04;
const DASH: &str = "\u{2014} ";
/// The header line of the signed message, for domain separation.
const HEADER: &str = "cosignature/v1\n";
/// The most consistency-proof lines a client may send (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;
/// More signature lines than this and a note is refused (as `note::open` does).
const MAX_SIGNATURES: usize = 100;
/// A timestamp may not exceed 2^63 - 1 (tlog-cosignature).
const MAX_TIME: u64 = i64::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignError {
    #[error("malformed witness key: {0}")]
    MalformedKey(&'static str),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("malformed cosignature by {name}: {reason}")]
    MalformedCosignature { name: String, reason: &'static str },
    #[error("the cosignature by {0} does not verify over this checkpoint")]
    InvalidSignature(String),
    #[error("the note already carries a different signature by {0}: one line per key")]
    DuplicateKey(String),
    #[error("a cosignature needs a time after 0 and at most 2^63-1, got {0}")]
    BadTime(u64),
    #[error("malformed add-checkpoint request: {0}")]
    MalformedRequest(&'static str),
}

/// A witness's public key: the vkey `<name>+<hex key id>+<base64(0x04 ‖ Ed25519 key)>`, with
/// the key id `SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4]`.
#[derive(Clone, PartialEq, Eq)]
pub struct WitnessKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl WitnessKey {
    /// Parses a cosigner vkey; refuses another signature type (a log's 0x01 key, say) or a key
    /// id that is not the name's and key's.
    pub fn parse(text: &str) -> Result<Self, CosignError> {
        let wrong = "not a cosignature/v1 key (type 0x04); a log's verifier key is type 0x01";
        let (name, id, key) =
            note::parse_vkey(text.trim(), COSIGNATURE_V1, wrong).map_err(CosignError::MalformedKey)?;
        Ok(WitnessKey { name: name.to_string(), id, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+keyid`, how reports name a witness.
    pub fn label(&self) -> String {
        format!("{}+{}", self.name, hex::encode(self.id))
    }
}

impl fmt::Display for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![COSIGNATURE_V1];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{}+{}", self.name, hex::encode(self.id), STANDARD.encode(raw))
    }
}

impl fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WitnessKey({self})")
    }
}

/// A witness's private key. The seed is zeroed on drop; `Debug` never shows it.
pub struct CosignerKey {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl CosignerKey {
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CosignError> {
        if !note::valid_name(name) {
            return Err(CosignError::MalformedKey("name is empty or has a space or a +"));
        }
        let key = SigningKey::from_bytes(seed);
        Ok(CosignerKey {
            name: name.to_string(),
            id: note::key_id(name, COSIGNATURE_V1, key.verifying_key().as_bytes()),
            key,
        })
    }

    /// A new key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, CosignError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|_| CosignError::MalformedKey("no random source to make a key"))?;
        Self::from_seed(name, &seed)
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x04 ‖ seed)>`, the key file's text.
    pub fn parse(text: &str) -> Result<Self, CosignError> {
        let bad = CosignError::MalformedKey;
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or(bad("not a PRIVATE+KEY"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        let raw = Zeroizing::new(STANDARD.decode(key).map_err(|_| bad("key is not base64"))?);
        let (&alg, seed) = raw.split_first().ok_or(bad("key is empty"))?;
        if alg != COSIGNATURE_V1 {
            return Err(bad("not a cosignature/v1 key (type 0x04)"));
        }
        let seed: &[u8; 32] = seed.try_into().map_err(|_| bad("an Ed25519 seed is 32 bytes"))?;
        let key = Self::from_seed(name, seed)?;
        if hex::encode(key.id) != id {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(key)
    }

    /// The key file's text (see [`CosignerKey::parse`]), zeroed on drop.
    pub fn to_private_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(vec![COSIGNATURE_V1]);
        raw.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!("PRIVATE+KEY+{}+{}+{}\n", self.name, hex::encode(self.id), STANDARD.encode(&*raw)))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> WitnessKey {
        WitnessKey { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// The cosignature line (ending in a newline) over `checkpoint_text` (the note's text, with
    /// its final newline, no signature lines) at `time` (POSIX seconds, not 0).
    pub fn cosign(&self, checkpoint_text: &str, time: u64) -> Result<String, CosignError> {
        if time == 0 || time > MAX_TIME {
            return Err(CosignError::BadTime(time));
        }
        check_text(checkpoint_text)?;
        let signature = self.key.sign(message(checkpoint_text, time).as_bytes());
        let mut raw = self.id.to_vec();
        raw.extend_from_slice(&time.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        Ok(format!("{DASH}{} {}\n", self.name, STANDARD.encode(raw)))
    }
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerKey({}+{}, secret redacted)", self.name, hex::encode(self.id))
    }
}

/// The message a cosignature signs: `cosignature/v1`, `time <decimal>`, then the checkpoint's
/// note text.
pub fn message(checkpoint_text: &str, time: u64) -> String {
    format!("{HEADER}time {time}\n{checkpoint_text}")
}

fn check_text(text: &str) -> Result<(), CosignError> {
    note::text_problem(text).map_err(CosignError::MalformedNote)
}

fn parse_line(line: &str) -> Result<SignatureLine<'_>, CosignError> {
    note::signature_line(line).map_err(CosignError::MalformedNote)
}

/// A signature line's key: its name and key id.
fn key_of<'a>(line: &'a SignatureLine<'_>) -> (&'a str, &'a [u8]) {
    (line.name, &line.raw[..4])
}

/// Splits a signed note into its text (with its final newline) and its signature lines
/// (without their newlines), checking the signed-note syntax (`note::split`).
pub fn split_note(note: &str) -> Result<(&str, Vec<&str>), CosignError> {
    let (text, lines) = note::split(note).map_err(CosignError::MalformedNote)?;
    Ok((text, lines.into_iter().map(|l| l.line).collect()))
}

/// A cosignature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// `name+keyid` of the witness.
    pub witness: String,
    /// When the witness signed (POSIX seconds).
    pub time: u64,
}

/// Checks one signature `line` (with or without its newline) over `checkpoint_text` against
/// `witnesses`: `Ok(None)` if no given witness made it (the name and key id of none match: the
/// log's own line, another witness's), the cosignature if it verifies, an error if a given
/// witness's line is malformed or does not verify.
pub fn verify_line(
    line: &str,
    checkpoint_text: &str,
    witnesses: &[WitnessKey],
) -> Result<Option<Cosignature>, CosignError> {
    let line = parse_line(line.strip_suffix('\n').unwrap_or(line))?;
    let Some(key) = witnesses.iter().find(|k| k.name == line.name && k.id == line.raw[..4]) else {
        return Ok(None);
    };
    let malformed = |reason| CosignError::MalformedCosignature { name: key.label(), reason };
    if line.raw.len() != 4 + 8 + 64 {
        return Err(malformed("a cosignature/v1 is a key id, a timestamp and a 64-byte signature"));
    }
    let time = u64::from_be_bytes(line.raw[4..12].try_into().expect("8 bytes by the length check"));
    if time == 0 || time > MAX_TIME {
        return Err(malformed("the timestamp is 0 or above 2^63-1"));
    }
    let signature = Signature::from_slice(&line.raw[12..]).map_err(|_| malformed("not an Ed25519 signature"))?;
    key.key
        .verify(message(checkpoint_text, time).as_bytes(), &signature)
        .map_err(|_| CosignError::InvalidSignature(key.label()))?;
    Ok(Some(Cosignature { witness: key.label(), time }))
}

/// The cosignatures of a note, by the given witnesses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cosigners {
    /// One per distinct witness whose cosignature verified, in the note's order.
    pub valid: Vec<Cosignature>,
    /// Given witnesses whose line did not verify, each with the reason.
    pub invalid: Vec<String>,
    /// Signature lines by no given witness (the log's own, other witnesses').
    pub other: usize,
}

impl Cosigners {
    /// How many distinct given witnesses cosigned.
    pub fn count(&self) -> usize {
        self.valid.len()
    }

    /// `name+keyid` of each witness that cosigned.
    pub fn labels(&self) -> Vec<&str> {
        self.valid.iter().map(|c| c.witness.as_str()).collect()
    }
}

/// Counts the distinct `witnesses` whose cosignatures on `note` (a signed checkpoint) verify
/// over its text. A witness's line that fails counts for nothing and is reported in `invalid`;
/// only a note that is not a signed note is an error.
pub fn count_cosigners(note: &str, witnesses: &[WitnessKey]) -> Result<Cosigners, CosignError> {
    let (text, lines) = split_note(note)?;
    let mut out = Cosigners::default();
    for line in lines {
        match verify_line(line, text, witnesses) {
            Ok(None) => out.other += 1,
            Ok(Some(c)) if out.valid.iter().any(|v| v.witness == c.witness) => {}
            Ok(Some(c)) => out.valid.push(c),
            Err(e) => out.invalid.push(e.to_string()),
        }
    }
    Ok(out)
}

/// `note` with the signature `lines` (one or more, each ending in a newline, as a witness
/// answers) added after its own: still one signed note over the same text. A line identical to
/// one already there is skipped; a different line by a key (name and key id) already there is
/// refused, so a note never carries two signatures by one key.
pub fn add_signatures(note: &str, lines: &str) -> Result<String, CosignError> {
    let (text, existing) = split_note(note)?;
    let body = lines.strip_suffix('\n').ok_or(CosignError::MalformedNote("signature lines end with a newline"))?;
    let mut all: Vec<SignatureLine<'_>> = existing.into_iter().map(parse_line).collect::<Result<_, _>>()?;
    for line in body.split('\n') {
        let line = parse_line(line)?;
        if all.iter().any(|l| l.line == line.line) {
            continue;
        }
        if let Some(same) = all.iter().find(|l| key_of(l) == key_of(&line)) {
            return Err(CosignError::DuplicateKey(format!("{}+{}", same.name, hex::encode(&same.raw[..4]))));
        }
        all.push(line);
    }
    if all.len() > MAX_SIGNATURES {
        return Err(CosignError::MalformedNote("too many signatures"));
    }
    let mut out = format!("{text}\n");
    for line in &all {
        out.push_str(line.line);
        out.push('\n');
    }
    Ok(out)
}

/// The body of a tlog-witness `add-checkpoint` request: the size of the tree the witness last
/// cosigned (as the log believes), the consistency proof from it, and the new checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint (a whole note, with its signature lines).
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// `old <size>\n`, one base64 hash a line, an empty line, then the checkpoint.
    pub fn format(&self) -> String {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&STANDARD.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a request body strictly (a witness answers 400 to any error here): UTF-8, the
    /// old size in decimal without leading zeros, at most 63 hashes of 32 bytes, an empty line,
    /// then a signed note (its signatures are checked by the witness, not here).
    pub fn parse(body: &[u8]) -> Result<Self, CosignError> {
        let bad = CosignError::MalformedRequest;
        let body = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (first, mut rest) = body.split_once('\n').ok_or(bad("no old size line"))?;
        let size = first.strip_prefix("old ").ok_or(bad("the first line is not `old <size>`"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("the old size is not a decimal number without leading zeros"));
        }
        let old_size = size.parse().map_err(|_| bad("the old size does not fit in 64 bits"))?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = rest.split_once('\n').ok_or(bad("no empty line before the checkpoint"))?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("more than 63 consistency proof lines"));
            }
            let hash = STANDARD.decode(line).map_err(|_| bad("a proof line is not base64"))?;
            proof.push(hash.try_into().map_err(|_| bad("a proof hash is not 32 bytes"))?);
        }
        split_note(rest).map_err(|_| bad("the checkpoint is not a signed note"))?;
        Ok(AddCheckpoint { old_size, proof, checkpoint: rest.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparency::note::{self, Checkpoint, SignerKey};
    use sha2::{Digest, Sha256};

    const TEXT: &str = "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n";

    fn witness(n: u8) -> CosignerKey {
        CosignerKey::from_seed(&format!("witness.example/w{n}"), &[n; 32]).unwrap()
    }

    fn log_note() -> (SignerKey, String) {
        let log = SignerKey::from_seed("example.com/log", &[9; 32]).unwrap();
        let note = log.sign(TEXT).unwrap();
        (log, note)
    }

    /// The key id and vkey are those the spec defines, computed here independently.
    #[test]
    fn keys_follow_the_spec_and_round_trip() {
        let key = witness(1);
        let vkey = key.verifier();
        let public = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let mut h = Sha256::new();
        h.update(b"witness.example/w1\n\x04");
        h.update(public.as_bytes());
        let id = hex::encode(&h.finalize()[..4]);
        let raw = [&[4u8][..], public.as_bytes()].concat();
        assert_eq!(vkey.to_string(), format!("witness.example/w1+{id}+{}", STANDARD.encode(raw)));
        assert_eq!(WitnessKey::parse(&vkey.to_string()), Ok(vkey.clone()));
        assert_eq!(vkey.label(), format!("witness.example/w1+{id}"));
        let again = CosignerKey::parse(&key.to_private_text()).unwrap();
        assert_eq!(again.verifier(), vkey);
        assert!(!format!("{key:?}").contains(&STANDARD.encode([1u8; 32])), "Debug hides the seed");
        assert_ne!(CosignerKey::generate("w").unwrap().verifier(), CosignerKey::generate("w").unwrap().verifier());
    }

    #[test]
    fn wrong_keys_are_refused_with_the_reason() {
        let vkey = witness(1).verifier().to_string();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();
        // The log's own (type 0x01) key is not a witness key.
        let log = SignerKey::from_seed("witness.example/w1", &[1; 32]).unwrap().verifier().to_string();
        let err = WitnessKey::parse(&log).unwrap_err().to_string();
        assert!(err.contains("type 0x04"), "{err}");
        let err = WitnessKey::parse(&format!("{name}+00000000+{key}")).unwrap_err().to_string();
        assert!(err.contains("key id does not match"), "{err}");
        let err = WitnessKey::parse(&format!("other.example+{id}+{key}")).unwrap_err().to_string();
        assert!(err.contains("key id does not match"), "{err}");
        for bad in ["", "a+b", "a b+00000000+BA==", &format!("{name}+{id}+!!")] {
            assert!(WitnessKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CosignerKey::from_seed("has space", &[1; 32]).is_err());
    }

    /// The line's bytes: key id, big-endian time, then an Ed25519 signature over the exact
    /// message of the spec (checked with the raw dalek key, not through this module).
    #[test]
    fn a_cosignature_signs_the_specified_message() {
        let key = witness(1);
        let line = key.cosign(TEXT, 1_679_315_147).unwrap();
        let b64 = line.strip_prefix("\u{2014} witness.example/w1 ").unwrap().strip_suffix('\n').unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw.len(), 76);
        assert_eq!(raw[..4], key.id);
        assert_eq!(u64::from_be_bytes(raw[4..12].try_into().unwrap()), 1_679_315_147);
        let signed = format!("cosignature/v1\ntime 1679315147\n{TEXT}");
        let public = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        public.verify_strict(signed.as_bytes(), &Signature::from_slice(&raw[12..]).unwrap()).unwrap();
        assert_eq!(
            verify_line(&line, TEXT, &[key.verifier()]),
            Ok(Some(Cosignature { witness: key.verifier().label(), time: 1_679_315_147 }))
        );
        assert_eq!(verify_line(&line, TEXT, &[witness(2).verifier()]), Ok(None), "another witness's line");
        let other = TEXT.replace("\n8\n", "\n9\n");
        assert_eq!(
            verify_line(&line, &other, &[key.verifier()]),
            Err(CosignError::InvalidSignature(key.verifier().label()))
        );
        assert_eq!(key.cosign(TEXT, 0), Err(CosignError::BadTime(0)));
        assert_eq!(key.cosign(TEXT, u64::MAX), Err(CosignError::BadTime(u64::MAX)));
    }

    #[test]
    fn cosigners_are_counted_once_each_and_only_when_valid() {
        let (log, note) = log_note();
        let (w1, w2, w3) = (witness(1), witness(2), witness(3));
        let both = [w1.verifier(), w2.verifier()];
        let counted = count_cosigners(&note, &both).unwrap();
        assert_eq!((counted.count(), counted.other), (0, 1));

        let one = add_signatures(&note, &w1.cosign(TEXT, 10).unwrap()).unwrap();
        let lines = w2.cosign(TEXT, 11).unwrap() + &w3.cosign(TEXT, 12).unwrap();
        let all = add_signatures(&one, &lines).unwrap();
        let counted = count_cosigners(&all, &both).unwrap();
        assert_eq!(counted.labels(), vec![w1.verifier().label(), w2.verifier().label()]);
        assert_eq!((counted.other, counted.invalid.len()), (2, 0));
        // Still a note the log's key opens: unknown signatures are ignored.
        let opened = note::open(&all, &[log.verifier()]).unwrap();
        assert_eq!(opened.text, TEXT);
        assert_eq!(opened.unverified.len(), 3);

        // A second, different line by one witness is refused when added.
        let again = w1.cosign(TEXT, 99).unwrap();
        assert!(
            matches!(add_signatures(&all, &again), Err(CosignError::DuplicateKey(k)) if k == w1.verifier().label())
        );
        // The same line twice is one line.
        assert_eq!(add_signatures(&all, &w1.cosign(TEXT, 10).unwrap()).unwrap(), all);
        // Put in by hand, it still counts once.
        let doubled = format!("{all}{again}");
        assert_eq!(count_cosigners(&doubled, &both).unwrap().count(), 2);

        // A cosignature over another checkpoint counts for nothing, and is reported.
        let other = TEXT.replace("\n8\n", "\n9\n");
        let forged = add_signatures(&note, &w2.cosign(&other, 13).unwrap()).unwrap();
        let counted = count_cosigners(&forged, &both).unwrap();
        assert_eq!(counted.count(), 0);
        assert!(counted.invalid[0].contains("does not verify"), "{counted:?}");
        // A log signature (type 0x01) under a witness's name is not its cosignature.
        let impostor = SignerKey::from_seed("witness.example/w1", &[1; 32]).unwrap().sign(TEXT).unwrap();
        let line = impostor.rsplit_once("\n\n").unwrap().1;
        let counted = count_cosigners(&add_signatures(&note, line).unwrap(), &both).unwrap();
        assert_eq!((counted.count(), counted.other), (0, 2));
        assert!(count_cosigners("no signatures\n", &both).is_err());
    }

    #[test]
    fn add_checkpoint_requests_round_trip_and_bad_ones_are_refused() {
        let (_, note) = log_note();
        let request = AddCheckpoint { old_size: 20852014, proof: vec![[1; 32], [2; 32]], checkpoint: note.clone() };
        let body = request.format();
        assert!(body.starts_with("old 20852014\nAQEB"), "{body}");
        assert!(body.contains("=\n\nexample.com/log\n8\n"), "{body}");
        assert_eq!(AddCheckpoint::parse(body.as_bytes()), Ok(request));
        let empty = AddCheckpoint { old_size: 0, proof: vec![], checkpoint: note.clone() };
        assert_eq!(empty.format(), format!("old 0\n\n{note}"));
        assert_eq!(AddCheckpoint::parse(empty.format().as_bytes()), Ok(empty));
        let hash = STANDARD.encode([1u8; 32]);
        let many = format!("old 1\n{}\n{note}", format!("{hash}\n").repeat(64));
        let bad: Vec<Vec<u8>> = vec![
            format!("old 01\n\n{note}").into_bytes(),
            format!("old -1\n\n{note}").into_bytes(),
            format!("old\n\n{note}").into_bytes(),
            format!("new 1\n\n{note}").into_bytes(),
            format!("old 18446744073709551616\n\n{note}").into_bytes(),
            format!("old 1\nAAAA\n\n{note}").into_bytes(),
            format!("old 1\n{hash}\n{note}").into_bytes(),
            format!("old 1\n\n{TEXT}").into_bytes(),
            "old 1\n".to_string().into_bytes(),
            many.into_bytes(),
            b"old 1\n\n\xff\n".to_vec(),
        ];
        for body in bad {
            let err = AddCheckpoint::parse(&body);
            assert!(
                matches!(err, Err(CosignError::MalformedRequest(_))),
                "{:?}: {err:?}",
                String::from_utf8_lossy(&body)
            );
        }
        assert!(Checkpoint::parse(TEXT).is_ok());
    }
}

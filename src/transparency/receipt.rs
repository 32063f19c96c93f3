//! Receipts: signed, self-contained JSON documents for logged events, and their offline check.
//!
//! A receipt says what was done, what was checked and what is still pending (never more), and
//! carries the leaf, its inclusion proof and the signed checkpoint it is in. The body is a JSON
//! string, signed as bytes with the log key (Ed25519), so any language can check the signature
//! before parsing anything: `{"body": "<json>", "key": "<verifier key>", "signature": "<b64>"}`.
//! A version-2 body is signed as `"oubli/receipt/v2\n" ‖ body`, a context no checkpoint note
//! starts with; its statements are those frozen when the entry was logged, and the entry
//! commits to their digest.
use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{
    cosign::{self, WitnessKey},
    event::{self, Entry, Event},
    merkle::{self, Hash, LeafIndex, TreeSize},
    note::{self, Checkpoint, SignerKey, VerifierKey},
};

pub const FORMAT: &str = "oubli-receipt/v2";
/// Receipts issued before statements were committed: the signature is over the body alone.
pub const FORMAT_V1: &str = "oubli-receipt/v1";
/// What a version-2 receipt's signature covers before the body.
pub const SIGNING_CONTEXT: &[u8] = b"oubli/receipt/v2\n";

/// Something still to happen, with its due date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub what: String,
    pub due: String,
}

/// What a receipt says was done, was checked, is still pending, and is never claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statements {
    pub done: Vec<String>,
    pub verified: Vec<String>,
    pub pending: Vec<Pending>,
    #[serde(default)]
    pub not_claimed: Vec<String>,
}

impl Statements {
    /// The canonical bytes a version-2 entry commits to: the JSON object
    /// `{"done":[..],"verified":[..],"pending":[{"what":..,"due":..}],"not_claimed":[..]}`, keys in
    /// this order, no whitespace, strings escaped minimally (docs/log-format.md).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("statements serialise")
    }

    fn of(body: &Body) -> Statements {
        Statements {
            done: body.done.clone(),
            verified: body.verified.clone(),
            pending: body.pending.clone(),
            not_claimed: body.not_claimed.clone(),
        }
    }
}

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub format: String,
    pub log_origin: String,
    /// The event's kind ("enrolment", ...).
    pub event: String,
    /// When it was logged (RFC 3339).
    pub logged_at: String,
    /// The salted commitment the event names (hex).
    pub commitment: String,
    /// Operations performed.
    pub done: Vec<String>,
    /// Evidence checked afterwards, with its result.
    pub verified: Vec<String>,
    /// What is still to happen.
    pub pending: Vec<Pending>,
    /// What no check can show, so the receipt never claims it (absent from version 1).
    #[serde(default)]
    pub not_claimed: Vec<String>,
    /// The leaf: the event's canonical bytes (base64), and where it is in the log.
    pub entry: String,
    pub leaf_index: u64,
    /// The signed checkpoint (a C2SP signed note) the leaf is proven against.
    pub checkpoint: String,
    /// The inclusion proof of the leaf in that checkpoint's tree (base64 hashes).
    pub inclusion_proof: Vec<String>,
}

/// A signed receipt, as stored and handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub body: String,
    pub key: String,
    pub signature: String,
}

impl Receipt {
    pub fn sign(body: &Body, signer: &SignerKey) -> Receipt {
        let body = serde_json::to_string(body).expect("a receipt body serialises");
        Receipt {
            signature: STANDARD.encode(signer.sign_bytes(&[SIGNING_CONTEXT, body.as_bytes()].concat())),
            key: signer.verifier().to_string(),
            body,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a receipt serialises") + "\n"
    }
}

/// One check and its result, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// A newer checkpoint to check the receipt's against, with the consistency proof between them.
pub struct Newer<'a> {
    pub note: &'a str,
    pub proof: &'a [Hash],
}

/// The witnesses a verifier trusts and how many of them must have cosigned the checkpoint.
pub struct Quorum<'a> {
    pub witnesses: &'a [WitnessKey],
    pub needed: usize,
}

/// Checks a receipt offline against the log's verifier key: its signature, the checkpoint's
/// signature, the leaf, the statement digest in the leaf, the inclusion proof and, given a newer
/// checkpoint, consistency. Returns every check made; the receipt holds only if all passed.
pub fn verify(receipt_json: &str, key: &VerifierKey, newer: Option<Newer<'_>>) -> Vec<Check> {
    verify_witnessed(receipt_json, key, None, newer)
}

/// [`verify`], and given a `quorum`, the check "witness cosignatures" right after the
/// checkpoint's origin: the receipt's checkpoint must carry valid cosignatures
/// (c2sp.org/tlog-cosignature) by at least `quorum.needed` distinct given witnesses.
pub fn verify_witnessed(
    receipt_json: &str,
    key: &VerifierKey,
    quorum: Option<Quorum<'_>>,
    newer: Option<Newer<'_>>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |name, result: Result<String, String>| {
        let ok = result.is_ok();
        checks.push(Check { name, ok, detail: result.unwrap_or_else(|e| e) });
        ok
    };
    let receipt: Receipt = match serde_json::from_str(receipt_json) {
        Ok(r) => r,
        Err(e) => {
            check("receipt parses", Err(format!("not a receipt: {e}")));
            return checks;
        }
    };
    // A version-1 body was signed alone; a version-2 one after its context.
    let format = serde_json::from_str::<serde_json::Value>(&receipt.body)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(str::to_owned));
    let message = if format.as_deref() == Some(FORMAT_V1) {
        receipt.body.as_bytes().to_vec()
    } else {
        [SIGNING_CONTEXT, receipt.body.as_bytes()].concat()
    };
    let signed = (|| {
        if receipt.key != key.to_string() {
            return Err(format!("signed by {}, not the trusted key {}", receipt.key, key.label()));
        }
        let sig = STANDARD.decode(&receipt.signature).map_err(|_| "signature is not base64".to_string())?;
        let sig = Signature::from_slice(&sig).map_err(|_| "signature is not 64 bytes".to_string())?;
        let public = VerifyingKey::from(key);
        public.verify(&message, &sig).map_err(|_| "signature does not verify".to_string())?;
        Ok(format!("signed by {}", key.label()))
    })();
    if !check("receipt signature", signed) {
        return checks;
    }
    let body: Body = match serde_json::from_str::<Body>(&receipt.body) {
        Ok(b) if b.format == FORMAT || b.format == FORMAT_V1 => b,
        Ok(b) => {
            check("receipt body", Err(format!("format {:?}, expected {FORMAT}", b.format)));
            return checks;
        }
        Err(e) => {
            check("receipt body", Err(format!("body does not parse: {e}")));
            return checks;
        }
    };
    let checkpoint = open_checkpoint(&body.checkpoint, key);
    let Some(checkpoint) = checkpoint.clone().ok() else {
        check("checkpoint signature", checkpoint.map(|_| String::new()));
        return checks;
    };
    check("checkpoint signature", Ok(format!("tree of {} leaves signed by {}", checkpoint.size, key.label())));
    check(
        "checkpoint origin",
        if checkpoint.origin == body.log_origin {
            Ok(checkpoint.origin.clone())
        } else {
            Err(format!("checkpoint of {:?}, receipt of {:?}", checkpoint.origin, body.log_origin))
        },
    );
    if let Some(quorum) = quorum {
        check("witness cosignatures", cosigned(&body.checkpoint, &quorum));
    }
    let leaf = (|| {
        let bytes = STANDARD.decode(&body.entry).map_err(|_| "entry is not base64".to_string())?;
        let entry = Entry::decode(&bytes).map_err(|e| e.to_string())?;
        let commitment = hex::encode(entry.event.commitment());
        if entry.event.name() != body.event || commitment != body.commitment || entry.time.to_string() != body.logged_at
        {
            return Err("the logged entry says something else than the receipt".to_string());
        }
        Ok((merkle::leaf_hash(&bytes), entry.statements, entry.event))
    })();
    let Ok((leaf, digest, event)) = leaf else {
        check("leaf matches the receipt", leaf.map(|_| String::new()));
        return checks;
    };
    check("leaf matches the receipt", Ok(format!("{} at {}", body.event, body.logged_at)));
    let committed = match digest {
        Some(digest) => {
            let canonical = Statements::of(&body).canonical();
            if super::event::statements_digest(canonical.as_bytes()) == digest {
                Ok(format!("the leaf commits to these statements ({})", hex::encode(&digest[..8])))
            } else {
                Err("the receipt's statements are not the ones the leaf commits to".to_string())
            }
        }
        // Written before statements were committed: nothing to check them against, said so.
        None => Ok("none: a version-1 leaf, whose statements were not committed in the log".into()),
    };
    check("statement digest in the leaf", committed);
    check("counts in the leaf against the statements", counts_stated(&event, &Statements::of(&body)));
    let proof: Result<Vec<Hash>, String> = body
        .inclusion_proof
        .iter()
        .map(|h| {
            STANDARD.decode(h).ok().and_then(|h| h.try_into().ok()).ok_or_else(|| "a proof hash is malformed".into())
        })
        .collect();
    let included = proof.and_then(|proof: Vec<Hash>| {
        merkle::verify_inclusion(&leaf, LeafIndex(body.leaf_index), TreeSize(checkpoint.size), &proof, &checkpoint.root)
            .map(|()| format!("leaf {} is in the tree of {} leaves", body.leaf_index, checkpoint.size))
            .map_err(|e| e.to_string())
    });
    check("inclusion proof", included);
    if let Some(newer) = newer {
        let result = open_checkpoint(newer.note, key).and_then(|later| {
            merkle::verify_consistency(
                TreeSize(checkpoint.size),
                TreeSize(later.size),
                &checkpoint.root,
                &later.root,
                newer.proof,
            )
            .map(|()| format!("tree of {} leaves extends the receipt's {}", later.size, checkpoint.size))
            .map_err(|e| e.to_string())
        });
        check("consistency with the newer checkpoint", result);
    }
    checks
}

/// Whether `note` carries cosignatures by at least `quorum.needed` of the given witnesses.
fn cosigned(note: &str, quorum: &Quorum<'_>) -> Result<String, String> {
    let found = cosign::count_cosigners(note, quorum.witnesses).map_err(|e| e.to_string())?;
    let given = quorum.witnesses.len();
    let mut detail = match found.count() {
        0 => format!("none of the {given} given witness(es) cosigned this checkpoint"),
        n => format!("{n} of the {given} given witness(es) cosigned this checkpoint ({})", found.labels().join(", ")),
    };
    if !found.invalid.is_empty() {
        detail.push_str(&format!("; refused: {}", found.invalid.join("; ")));
    }
    if found.count() >= quorum.needed {
        Ok(format!("{detail}; {} needed", quorum.needed))
    } else {
        Err(format!("{detail}; {} needed", quorum.needed))
    }
}

/// Whether each count the leaf holds is the one its statements give, in the line that states it
/// ([`super::statements::counts_stated`]).
fn counts_stated(event: &Event, statements: &Statements) -> Result<String, String> {
    let expected = super::statements::counts_stated(event);
    for (section, start) in &expected {
        let lines: Vec<&str> = match *section {
            "done" => statements.done.iter().map(String::as_str).collect(),
            "verified" => statements.verified.iter().map(String::as_str).collect(),
            _ => statements.pending.iter().map(|p| p.what.as_str()).collect(),
        };
        if !lines.iter().any(|line| line.starts_with(start.as_str())) {
            return Err(format!("the leaf's counts are not stated: no {section} line begins {start:?}"));
        }
    }
    Ok(match expected.len() {
        0 => "none: this entry holds no count".into(),
        n => format!("the {n} count(s) the {} leaf holds are the ones stated", event.name()),
    })
}

/// What a holder knows that opens a receipt's commitment: their request's id (a record's id,
/// for an enrolment leaf) and its salt; for an erasure, the record ids its status names.
pub struct Opening<'a> {
    pub id: [u8; 16],
    pub salt: [u8; 16],
    pub plan: Option<&'a [crate::record::RecordId]>,
}

/// The checks only the holder can make: the leaf's commitment opened with their salt, and for
/// an erasure's plan leaf the plan digest and count recomputed from the record ids. Run after
/// [`verify`], which checks that the leaf is the receipt's and in the log.
pub fn verify_opening(receipt_json: &str, opening: &Opening<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let entry = serde_json::from_str::<Receipt>(receipt_json)
        .map_err(|e| e.to_string())
        .and_then(|r| serde_json::from_str::<Body>(&r.body).map_err(|e| e.to_string()))
        .and_then(|b| STANDARD.decode(&b.entry).map_err(|e| e.to_string()))
        .and_then(|bytes| Entry::decode(&bytes).map_err(|e| e.to_string()));
    let entry = match entry {
        Ok(e) => e,
        Err(e) => {
            checks.push(Check { name: "commitment opened with your salt", ok: false, detail: e });
            return checks;
        }
    };
    let expected = match &entry.event {
        Event::Enrolled { .. } => event::commitment(&opening.salt, crate::record::RecordId::from_bytes(opening.id)),
        _ => event::request_commitment(&opening.salt, &opening.id),
    };
    let opened = *entry.event.commitment() == expected;
    checks.push(Check {
        name: "commitment opened with your salt",
        ok: opened,
        detail: if opened {
            format!("this {} leaf is about {}", entry.event.name(), hex::encode(opening.id))
        } else {
            "the leaf's commitment is not this id with this salt".into()
        },
    });
    if let (Some(plan), Event::ErasurePlanned { records, plan: digest, .. }) = (opening.plan, &entry.event) {
        let recomputed = event::plan_digest(&opening.salt, &opening.id, plan);
        let ok = recomputed == *digest && *records as usize == plan.len();
        checks.push(Check {
            name: "plan digest recomputed from your records",
            ok,
            detail: if ok {
                format!("the {} record id(s) of your erasure status are the plan that was logged", plan.len())
            } else {
                format!("the logged plan ({records} record(s)) is not the {} record id(s) given", plan.len())
            },
        });
    }
    checks
}

/// Opens a checkpoint note with `key` and parses its body.
pub fn open_checkpoint(note_text: &str, key: &VerifierKey) -> Result<Checkpoint, String> {
    let opened = note::open(note_text, std::slice::from_ref(key)).map_err(|e| e.to_string())?;
    Checkpoint::parse(&opened.text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparency::{
        cosign::{CosignerKey, add_signatures},
        event::Logged,
        log::LogWriter,
        statements::for_event,
    };

    use crate::transparency::log::Discard as Sink;

    /// A receipt whose checkpoint carries cosignatures passes "witness cosignatures" at a quorum
    /// its witnesses meet, fails it above, and the check sits right after "checkpoint origin".
    #[test]
    fn the_witness_quorum_is_checked_after_the_origin() {
        let signer = || SignerKey::from_seed("test.example/log", &[7; 32]).unwrap();
        let (mut log, _) =
            LogWriter::recover::<()>("test.example/log".into(), signer(), Vec::new(), |_, _| Ok(None), None).unwrap();
        let time = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let event = Event::ErasureTemplatesPurged { commitment: [1; 32], records: 2 };
        let entry = Logged::plain(time, event.clone());
        let staged = log.stage(std::slice::from_ref(&entry), &mut Sink);
        log.commit(staged);
        let plain = log.receipt(0, &entry.entry.encode(), &entry.entry, for_event(&event), None).unwrap();
        let (w1, w2) = (
            CosignerKey::from_seed("w.example/1", &[1; 32]).unwrap(),
            CosignerKey::from_seed("w.example/2", &[2; 32]).unwrap(),
        );
        let witnesses = [w1.verifier(), w2.verifier()];
        let mut body: Body = serde_json::from_str(&plain.body).unwrap();
        let text = &body.checkpoint[..body.checkpoint.rfind("\n\n").unwrap() + 1].to_string();
        let lines = w1.cosign(text, 100).unwrap() + &w2.cosign(text, 101).unwrap();
        body.checkpoint = add_signatures(&body.checkpoint, &lines).unwrap();
        let cosigned = Receipt::sign(&body, &signer()).to_json();
        let key = signer().verifier();

        let names = |checks: &[Check]| checks.iter().map(|c| c.name).collect::<Vec<_>>();
        let plain_checks = verify(&cosigned, &key, None);
        assert!(plain_checks.iter().all(|c| c.ok), "{plain_checks:#?}");
        let checks = verify_witnessed(&cosigned, &key, Some(Quorum { witnesses: &witnesses, needed: 2 }), None);
        assert!(checks.iter().all(|c| c.ok), "{checks:#?}");
        let mut expected = names(&plain_checks);
        expected.insert(3, "witness cosignatures");
        assert_eq!(names(&checks), expected);
        assert!(checks[3].detail.starts_with("2 of the 2 given witness(es)"), "{:?}", checks[3]);

        // One witness short, or none at all: the check fails and says so.
        let third = CosignerKey::from_seed("w.example/3", &[3; 32]).unwrap().verifier();
        let three = [w1.verifier(), w2.verifier(), third];
        let checks = verify_witnessed(&cosigned, &key, Some(Quorum { witnesses: &three, needed: 3 }), None);
        let witnessed = checks.iter().find(|c| c.name == "witness cosignatures").unwrap();
        assert!(
            !witnessed.ok && witnessed.detail.contains("2 of the 3") && witnessed.detail.contains("3 needed"),
            "{witnessed:?}"
        );
        let checks = verify_witnessed(&plain.to_json(), &key, Some(Quorum { witnesses: &witnesses, needed: 1 }), None);
        let witnessed = checks.iter().find(|c| c.name == "witness cosignatures").unwrap();
        assert!(!witnessed.ok && witnessed.detail.starts_with("none of the 2"), "{witnessed:?}");
    }
}

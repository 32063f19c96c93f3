//! `oubli verify --html OUT`: a copy of the receipt page (docs/verify/index.html) with the keys
//! it trusts pinned, so the person who opens it never has to find the log's key, and never
//! trusts the one inside the receipt. The page itself holds every check; this only fills its
//! one block of pinned configuration, after checking each key, and writes the copy.
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use oubli::transparency::note::VerifierKey;
use sha2::{Digest, Sha256};

/// The page as committed: its SHA-256 is printed in the README.
pub const PAGE: &str = include_str!("../../../docs/verify/index.html");
/// The pinned block, exactly as the page holds it (`null`: nothing pinned).
const UNPINNED: &str = r#"<script id="oubli-pinned" type="application/json">null</script>"#;
/// A witness's Ed25519 cosignature key type (c2sp.org/tlog-cosignature).
const COSIGNATURE_ED25519: u8 = 0x04;

/// Writes the page to `out` (0600) with `log_key` (a verifier key), the `witnesses`' keys
/// (`<name>+<hex key id>+<base64(0x04 ‖ key)>`) and the number of them that must cosign the
/// receipt's checkpoint (`quorum`: from 1 to their number, 0 without witnesses) pinned.
pub fn write_page(out: &Path, log_key: &str, witnesses: &[String], quorum: usize) -> Result<()> {
    crate::secret::write_private(out, pinned_page(log_key, witnesses, quorum)?)
}

/// The page's text with the keys pinned (see [`write_page`]).
pub fn pinned_page(log_key: &str, witnesses: &[String], quorum: usize) -> Result<String> {
    let log_key = VerifierKey::parse(log_key.trim()).context("the log's verifier key")?.to_string();
    let witnesses: Vec<String> = witnesses.iter().map(|w| witness_key(w.trim())).collect::<Result<_>>()?;
    let distinct: std::collections::HashSet<&String> = witnesses.iter().collect();
    if distinct.len() != witnesses.len() {
        bail!("a witness key is given twice");
    }
    if witnesses.is_empty() && quorum != 0 || !witnesses.is_empty() && !(1..=witnesses.len()).contains(&quorum) {
        bail!("the quorum is {quorum}: it must be between 1 and the {} witness key(s) given", witnesses.len());
    }
    let pinned = serde_json::json!({ "log_key": log_key, "witnesses": witnesses, "quorum": quorum });
    // `<` escaped, so no text inside the JSON can close the script element.
    let pinned = serde_json::to_string(&pinned).expect("JSON serialises").replace('<', "\\u003c");
    let block = UNPINNED.replace("null", &pinned);
    if PAGE.matches(UNPINNED).count() != 1 {
        bail!("docs/verify/index.html has no single pinned block to fill");
    }
    Ok(PAGE.replacen(UNPINNED, &block, 1))
}

/// Checks a witness's cosignature verifier key and returns it as given.
fn witness_key(text: &str) -> Result<String> {
    let context = || format!("witness key {text:?}: expected <name>+<hex key id>+<base64(0x04 ‖ Ed25519 key)>");
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        bail!(context());
    };
    let raw = STANDARD.decode(key).with_context(context)?;
    if name.is_empty() || name.chars().any(char::is_whitespace) || raw.len() != 33 || raw[0] != COSIGNATURE_ED25519 {
        bail!(context());
    }
    let digest = Sha256::new().chain_update(name).chain_update([b'\n']).chain_update(&raw).finalize();
    if hex::encode(&digest[..4]) != id.to_ascii_lowercase() {
        bail!("witness key {text:?}: the key id does not match the name and key");
    }
    ed25519_dalek::VerifyingKey::from_bytes(raw[1..].try_into().expect("33 bytes less the type"))
        .map_err(|_| anyhow::anyhow!("witness key {text:?}: not an Ed25519 point"))?;
    Ok(format!("{name}+{}+{key}", id.to_ascii_lowercase()))
}

/// The SHA-256 of a page, as `sha256sum` prints it.
pub fn sha256_hex(page: &str) -> String {
    hex::encode(Sha256::digest(page.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness(name: &str, seed: u8) -> String {
        let public = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
        let raw = [&[COSIGNATURE_ED25519][..], public.as_bytes()].concat();
        let id = Sha256::new().chain_update(name).chain_update([b'\n']).chain_update(&raw).finalize();
        format!("{name}+{}+{}", hex::encode(&id[..4]), STANDARD.encode(raw))
    }

    #[test]
    fn the_page_is_pinned_once_and_bad_keys_are_refused() {
        let log = oubli::transparency::note::SignerKey::from_seed("oubli.example/log", &[1; 32]).unwrap();
        let log = log.verifier().to_string();
        let (w1, w2) = (witness("w1.example", 2), witness("w2.example", 3));
        let page = pinned_page(&log, &[w1.clone(), w2.clone()], 2).unwrap();
        assert!(!page.contains(UNPINNED), "the pinned block was filled");
        assert!(
            page.contains(&format!(r#""log_key":"{log}""#)) && page.contains(&w1) && page.contains(r#""quorum":2"#)
        );
        assert!(pinned_page(&log, &[], 0).is_ok());
        for (witnesses, quorum) in
            [(vec![w1.clone()], 2), (vec![w1.clone()], 0), (vec![], 1), (vec![w1.clone(), w1.clone()], 1)]
        {
            assert!(pinned_page(&log, &witnesses, quorum).is_err(), "{witnesses:?} quorum {quorum} accepted");
        }
        // A log key (type 0x01) is not a witness key, and a wrong key id is refused.
        assert!(pinned_page(&log, std::slice::from_ref(&log), 1).is_err());
        let wrong_id = format!("w1.example+00000000+{}", w1.rsplit('+').next().unwrap());
        assert!(pinned_page(&log, &[wrong_id], 1).is_err());
        assert!(pinned_page("not a key", &[], 0).is_err());
    }
}

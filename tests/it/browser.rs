//! The receipt page (docs/verify/index.html) in a real browser. Debian's headless Chromium,
//! driven through the DevTools protocol by scripts/browser-verify.py (Playwright), opens the copy
//! `oubli verify --html` writes from a file URL and checks a real access report's receipt from a
//! test server: every check passes for the true receipt and its holder's salt, with the same
//! names in the same order as `oubli verify`; each tampered copy fails the check named for it.
//!
//! The tampered copies other than the signature's are signed again with the log's own key (read
//! from the server's key dir): a log that lies about its leaf, its proof or its statements still
//! signs what it says, and only the later checks catch it. Until the log collects witness
//! cosignatures, the test adds a real one (c2sp.org/tlog-cosignature, cosignature/v1) to the
//! receipt's checkpoint, and signs the body again, since the body holds the checkpoint.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signer, SigningKey};
use oubli::{
    grpc::pb::{
        self, rights_service_client::RightsServiceClient, transparency_service_client::TransparencyServiceClient,
    },
    transparency::{
        note::SignerKey,
        receipt::{self, Body, Receipt},
    },
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Dirs, Server, oubli, seeded, stream_of};

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Chromium's and Playwright's versions. Fails (never skips) when either is missing: `make test`
/// installs both.
fn browser_versions() -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: run `make deps` (make test does), which installs Debian's chromium"
    );
    let chromium = Command::new(CHROMIUM).arg("--version").output().expect("chromium --version runs");
    let playwright = Command::new("python3")
        .args(["-c", "import importlib.metadata as m, playwright.sync_api; print(m.version('playwright'))"])
        .env("PYTHONPATH", repo().join("target/python/deps"))
        .output()
        .expect("python3 runs");
    assert!(
        playwright.status.success(),
        "Playwright is not in target/python/deps: run `make python-deps` (make test does)\n{}",
        String::from_utf8_lossy(&playwright.stderr)
    );
    format!(
        "{}, playwright {}",
        String::from_utf8_lossy(&chromium.stdout).trim(),
        String::from_utf8_lossy(&playwright.stdout).trim()
    )
}

/// A witness's cosignature verifier key, `<name>+<hex key id>+<base64(0x04 ‖ key)>`, and key id.
fn witness_key(name: &str, key: &SigningKey) -> (String, [u8; 4]) {
    let raw = [&[0x04][..], key.verifying_key().as_bytes()].concat();
    let digest = Sha256::new().chain_update(name).chain_update(b"\n").chain_update(&raw).finalize();
    let id: [u8; 4] = digest[..4].try_into().expect("4 bytes");
    (format!("{name}+{}+{}", hex::encode(id), STANDARD.encode(raw)), id)
}

/// `note` with one more signature line: `name`'s cosignature/v1 at `time` over its text.
fn cosign(note: &str, name: &str, key: &SigningKey, time: u64) -> String {
    let text = &note[..note.rfind("\n\n").expect("a signed note") + 1];
    let signature = key.sign(format!("cosignature/v1\ntime {time}\n{text}").as_bytes());
    let (_, id) = witness_key(name, key);
    let raw = [&id[..], &time.to_be_bytes(), &signature.to_bytes()].concat();
    format!("{note}\u{2014} {name} {}\n", STANDARD.encode(raw))
}

/// The receipt with its body changed by `change`, signed again with the log's key.
fn resigned(receipt: &str, log: &SignerKey, change: impl FnOnce(&mut Body)) -> String {
    let r: Receipt = serde_json::from_str(receipt).expect("a receipt");
    let mut body: Body = serde_json::from_str(&r.body).expect("a body");
    change(&mut body);
    Receipt::sign(&body, log).to_json()
}

/// Flips one bit of a base64 value's byte `at`.
fn flip(b64: &str, at: usize) -> String {
    let mut bytes = STANDARD.decode(b64).expect("base64");
    bytes[at] ^= 1;
    STANDARD.encode(bytes)
}

/// The checks `oubli verify` printed, by name, in order, with their results.
fn cli_checks(out: &str, names: &[&str]) -> Vec<(String, bool)> {
    out.lines()
        .filter_map(|line| {
            let (ok, rest) = match line.split_at_checked(5)? {
                ("ok   ", rest) => (true, rest),
                ("FAIL ", rest) => (false, rest),
                _ => return None,
            };
            let name = names.iter().filter(|n| rest.starts_with(**n)).max_by_key(|n| n.len())?;
            Some((name.to_string(), ok))
        })
        .collect()
}

/// The page's verdicts for one case, in order.
fn verdicts(details: &Value, case: &str) -> Vec<(String, bool)> {
    details["cases"][case]
        .as_array()
        .unwrap_or_else(|| panic!("no verdicts for {case}: {details:#}"))
        .iter()
        .map(|c| (c["check"].as_str().expect("name").to_string(), c["ok"].as_bool().expect("ok")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_passes_a_true_receipt_and_fails_each_tampered_copy_on_its_check() {
    let versions = browser_versions();
    let server = Server::start(Dirs::new()).await;
    let (requests, values) = seeded(8, 21);
    server.client().await.enroll_stream(stream_of(requests)).await.expect("enrol");
    // The simplest real receipt a person holds: their access report's, with its salt.
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (request_id, secret) = crate::rights::submit(&mut rights, &values[0]).await;
    assert_eq!(crate::rights::wait(&mut rights, &request_id, &secret).await.state, "completed");
    let (report, receipt) = crate::rights::report(&mut rights, &request_id, &secret).await;
    let salt = report.answer_log.salt.clone();
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.expect("key").into_inner().verifier_key;
    // The log grows, so the receipt's checkpoint has a newer one to be consistent with.
    server.client().await.enroll_stream(stream_of(seeded(3, 22).0)).await.expect("enrol");
    let newer = log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("checkpoint").into_inner().checkpoint;

    let work = tempfile::tempdir().expect("tmp");
    let file = |name: &str| work.path().join(name);
    let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_string();
    let write = |name: &str, text: &str| {
        std::fs::write(file(name), text).expect("write");
        path(&file(name))
    };
    let body: Body = serde_json::from_str(&serde_json::from_str::<Receipt>(&receipt).expect("receipt").body).unwrap();
    let parsed = oubli::transparency::note::VerifierKey::parse(&key).expect("verifier key");
    let from = receipt::open_checkpoint(&body.checkpoint, &parsed).expect("receipt checkpoint").size;
    let addr = server.addr.to_string();
    let (ok, proof) = oubli(&["--server", &addr, "log", "consistency", "--from", &from.to_string()]);
    assert!(ok, "{proof}");
    let (true_receipt, newer_note, consistency, key_file) = (
        write("receipt.json", &receipt),
        write("newer.note", &newer),
        write("consistency.json", &proof),
        write("log.vkey", &key),
    );
    // `oubli verify` on the true receipt, everything given: the names and order to match.
    let (ok, cli_true) = oubli(&[
        "--server",
        &addr,
        "verify",
        &true_receipt,
        "--verifier-key",
        &key_file,
        "--checkpoint",
        &newer_note,
        "--request-id",
        &request_id,
        "--salt",
        &salt,
    ]);
    assert!(ok && cli_true.contains("every check passed"), "{cli_true}");
    drop((log, rights));
    let dirs = server.stop().await;

    // The log's own key, from the server's key dir: tampered copies are signed with it.
    let seed: [u8; 32] = std::fs::read(dirs.keys.join("log.key")).expect("log key").try_into().expect("32 bytes");
    let log_key = SignerKey::from_seed(&body.log_origin, &seed).expect("log signer");
    assert_eq!(log_key.verifier().to_string(), key, "the key dir's log key is the served one");
    assert_eq!(resigned(&receipt, &log_key, |_| {}), receipt, "signing the same body again gives the same receipt");

    // The pages: written by `oubli verify --html` (no receipt), owner-only, with its hash printed.
    let page = path(&file("page.html"));
    let (ok, out) = oubli(&["verify", "--html", &page, "--verifier-key", &key_file]);
    assert!(ok, "{out}");
    let written = std::fs::read(&page).expect("page written");
    assert!(out.contains(&hex::encode(Sha256::digest(&written))), "the page's SHA-256 is printed: {out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&page).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!out.contains("ok   ") && !out.contains("FAIL"), "no receipt, no check: {out}");
    let other_key = SignerKey::from_seed(&body.log_origin, &[9; 32]).unwrap().verifier().to_string();
    let other_page = path(&file("other.html"));
    let (ok, out) = oubli(&["verify", "--html", &other_page, "--verifier-key", &other_key]);
    assert!(ok, "{out}");
    // Witnesses pinned as `oubli verify --html` pins them (TODO: through --witness and --quorum
    // once VerifyArgs has them): the same block, filled with both witnesses' keys.
    let (w1, w2) = (SigningKey::from_bytes(&[31; 32]), SigningKey::from_bytes(&[32; 32]));
    let witnesses = [witness_key("witness.example/one", &w1).0, witness_key("witness.example/two", &w2).0];
    let unpinned = std::fs::read_to_string(repo().join("docs/verify/index.html")).expect("the page");
    let block = r#"<script id="oubli-pinned" type="application/json">null</script>"#;
    let pin = |name: &str, quorum: usize| {
        let pinned = json!({ "log_key": key, "witnesses": witnesses, "quorum": quorum }).to_string();
        write(name, &unpinned.replacen(block, &block.replace("null", &pinned), 1))
    };
    let (quorum1, quorum2) = (pin("witnesses-1.html", 1), pin("witnesses-2.html", 2));
    let bare_page = path(&repo().join("docs/verify/index.html"));

    // The tampered copies, each signed again by the log except the signature's own.
    let cosigned = resigned(&receipt, &log_key, |b| {
        b.checkpoint = cosign(&b.checkpoint, "witness.example/one", &w1, 1_800_000_000)
    });
    let mut bad_signature: Receipt = serde_json::from_str(&receipt).unwrap();
    bad_signature.signature = flip(&bad_signature.signature, 5);
    let cases: Vec<(&str, &str, String, Option<&str>)> = vec![
        // (case, page, receipt, the check that must fail)
        ("true", page.as_str(), true_receipt.clone(), None),
        ("cosigned", quorum1.as_str(), write("cosigned.json", &cosigned), None),
        ("pasted key", bare_page.as_str(), true_receipt.clone(), None),
        ("signature", page.as_str(), write("signature.json", &bad_signature.to_json()), Some("receipt signature")),
        (
            "leaf",
            page.as_str(),
            write("leaf.json", &resigned(&receipt, &log_key, |b| b.entry = flip(&b.entry, 10))),
            Some("leaf matches the receipt"),
        ),
        (
            "proof",
            page.as_str(),
            write(
                "proof.json",
                &resigned(&receipt, &log_key, |b| b.inclusion_proof[0] = flip(&b.inclusion_proof[0], 0)),
            ),
            Some("inclusion proof"),
        ),
        (
            "statement",
            page.as_str(),
            write("statement.json", &resigned(&receipt, &log_key, |b| b.done[0].push_str(", and nothing else"))),
            Some("statement digest in the leaf"),
        ),
        ("wrong log key", other_page.as_str(), true_receipt.clone(), Some("receipt signature")),
        ("missing cosignature", quorum2.as_str(), path(&file("cosigned.json")), Some("witness cosignatures")),
        ("no key", bare_page.as_str(), true_receipt.clone(), Some("receipt signature")),
        ("salt", page.as_str(), true_receipt.clone(), Some("commitment opened with your salt")),
    ];
    let wrong_salt = "00".repeat(16);
    let mut spec = serde_json::Map::new();
    for (case, page, receipt, _) in &cases {
        let mut c = json!({ "page": page, "receipt": receipt });
        match *case {
            "true" => {
                c["checkpoint"] = json!(newer_note);
                c["consistency"] = json!(consistency);
                c["id"] = json!(request_id);
                c["salt"] = json!(salt);
            }
            "salt" => {
                c["id"] = json!(request_id);
                c["salt"] = json!(wrong_salt);
            }
            "pasted key" => c["key"] = json!(key),
            _ => {}
        }
        spec.insert(case.to_string(), c);
    }
    let cases_file = write("cases.json", &json!({ "cases": spec }).to_string());
    let (shots, details_file) = (file("shots"), file("details.json"));

    let started = Instant::now();
    let mut child = Command::new("python3")
        .arg(repo().join("scripts/browser-verify.py"))
        .arg(&cases_file)
        .arg("--screenshots")
        .arg(&shots)
        .arg("--details")
        .arg(&details_file)
        .arg("--chromium")
        .arg(CHROMIUM)
        .env("PYTHONPATH", repo().join("target/python/deps"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    // Bounded: the script bounds itself (300 s); past 360 s this test stops the one process it started.
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(360) {
            child.kill().expect("kill the driver");
            panic!("scripts/browser-verify.py ran for more than 360 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().expect("output");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "the browser run failed ({versions}):\n{stderr}");
    eprintln!("browser run: {} cases in {:.1} s ({versions})", cases.len(), took.as_secs_f64());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let details: Value = serde_json::from_str(&std::fs::read_to_string(&details_file).unwrap()).unwrap();
    assert_eq!(details["network"], json!([]), "the page made no request");
    assert_eq!(details["errors"], json!([]), "no script error in the page");

    for (case, ..) in &cases {
        for (name, ok) in printed[*case].as_object().expect("a case's verdicts") {
            assert_eq!(verdicts(&details, case).iter().find(|(n, _)| n == name).map(|(_, o)| *o), ok.as_bool());
        }
    }
    let all: Vec<(String, bool)> = cases.iter().flat_map(|(case, ..)| verdicts(&details, case)).collect();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();

    // The true receipt: every check passes, the names and order of `oubli verify`.
    let page_true = verdicts(&details, "true");
    assert!(page_true.iter().all(|(_, ok)| *ok), "{page_true:?}");
    assert_eq!(page_true, cli_checks(&cli_true, &names), "the page's checks are the CLI's, in its order");
    assert_eq!(page_true.len(), 9, "{page_true:?}");
    let cosigned_checks = verdicts(&details, "cosigned");
    assert!(cosigned_checks.iter().all(|(_, ok)| *ok), "{cosigned_checks:?}");
    let at = cosigned_checks.iter().position(|(n, _)| n == "witness cosignatures").expect("the witness check");
    assert_eq!(cosigned_checks[at - 1].0, "checkpoint origin", "right after the origin: {cosigned_checks:?}");
    assert!(verdicts(&details, "pasted key").iter().all(|(_, ok)| *ok));

    // Each tampered copy fails the check named for it, after every earlier check passed; the CLI
    // fails the same checks on the same file (witnesses aside: the page alone checks them yet).
    for (case, _, receipt, failing) in &cases {
        let Some(failing) = failing else { continue };
        let checks = verdicts(&details, case);
        let at =
            checks.iter().position(|(n, _)| n == failing).unwrap_or_else(|| panic!("{case}: no {failing}: {checks:?}"));
        assert!(!checks[at].1, "{case}: {failing} passed: {checks:?}");
        assert!(checks[..at].iter().all(|(_, ok)| *ok), "{case}: an earlier check failed: {checks:?}");
        if *case == "missing cosignature" || *case == "no key" {
            continue; // the CLI checks no witness yet, and always needs a key
        }
        let trusted = match *case {
            "wrong log key" => other_key.clone(),
            _ => key.clone(),
        };
        let mut args = vec!["verify", receipt.as_str(), "--verifier-key", trusted.as_str()];
        if *case == "salt" {
            args.extend(["--request-id", &request_id, "--salt", &wrong_salt]);
        }
        let (ok, out) = oubli(&args);
        assert!(!ok, "{case}: the CLI passed it: {out}");
        let cli_failed: Vec<String> =
            cli_checks(&out, &names).into_iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
        let page_failed: Vec<String> = checks.into_iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
        assert_eq!(page_failed, cli_failed, "{case}: the page and the CLI fail the same checks\n{out}");
    }

    // Screenshots of both cases; `make docs-screenshots` copies them into docs/.
    for case in ["true", "statement"] {
        let png = std::fs::read(shots.join(format!("{case}.png"))).expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{case}.png is a PNG");
    }
    if std::env::var_os("OUBLI_WRITE_SCREENSHOTS").is_some() {
        std::fs::copy(shots.join("true.png"), repo().join("docs/verify-pass.png")).expect("copy");
        std::fs::copy(shots.join("statement.png"), repo().join("docs/verify-fail.png")).expect("copy");
    }
}

//! The log's tlog-tiles HTTP API, read as the ecosystem reads it: the tiles served over HTTP
//! are byte for byte the files `oubli log export` writes, and Cloudflare's `tlog_tiles` and
//! `signed_note` crates (not Oubli's code) verify the checkpoint, recompute the tree from the
//! tiles, and check inclusion and consistency proofs against them. And a log signing at a
//! cadence: receipts pending until a checkpoint covers their leaf.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Duration,
};

use oubli::grpc::pb::{self, transparency_service_client::TransparencyServiceClient};

use crate::harness::{Dirs, Server, oubli, request, seeded, stream_of};

/// One blocking HTTP/1.1 GET on loopback: status, headers (lower-case names) and body.
fn get(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).expect("connect to the tiles server");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).expect("read the answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<BTreeMap<_, _>>();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v == "chunked") {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let eol = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).expect("chunk size");
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
    panic!("too many chunks")
}

fn files_under(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, root, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// Tiles fetched over HTTP for the third-party reader. Its `Tile::path` is the Go sumdb layout
/// with the height in the path (`tile/8/0/001.p/5`, data tiles `tile/8/data/...`); C2SP
/// tlog-tiles fixes the height at 8 and drops it (`tile/0/001.p/5`, `tile/entries/...`). The
/// reader maps one to the other and fails on anything else: any other difference between the
/// crate's reading and Oubli's is a failing test.
struct HttpTiles(SocketAddr);

fn c2sp_path(tile: &tlog_tiles::Tile) -> String {
    let go = tile.path();
    let rest = go.strip_prefix("tile/8/").unwrap_or_else(|| panic!("the crate's path {go} is not of height 8"));
    match rest.strip_prefix("data/") {
        Some(n) => format!("/tile/entries/{n}"),
        None => format!("/tile/{rest}"),
    }
}

impl tlog_tiles::TileReader for HttpTiles {
    fn height(&self) -> u8 {
        8
    }
    fn read_tiles(&self, tiles: &[tlog_tiles::Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        Ok(tiles
            .iter()
            .map(|t| {
                let (status, _, body) = get(self.0, &c2sp_path(t));
                assert_eq!(status, 200, "{}", c2sp_path(t));
                body
            })
            .collect())
    }
    fn save_tiles(&self, _: &[tlog_tiles::Tile], _: &[Vec<u8>]) {}
}

fn hash(bytes: &[u8]) -> tlog_tiles::Hash {
    tlog_tiles::Hash(bytes.try_into().expect("32 bytes"))
}

/// The checkpoint note, verified by `signed_note` with the log's verifier key, read by
/// `tlog_tiles`: its size and root.
fn third_party_checkpoint(note: &str, verifier_key: &str) -> (u64, tlog_tiles::Hash) {
    let verifier = signed_note::StandardVerifier::new(verifier_key).expect("signed_note reads Oubli's verifier key");
    let known = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let opened = signed_note::Note::from_bytes(note.as_bytes()).expect("signed_note parses the checkpoint");
    opened.verify(&known).expect("signed_note verifies the log's signature");
    let checkpoint = tlog_tiles::Checkpoint::from_bytes(opened.text()).expect("tlog_tiles parses the checkpoint");
    (checkpoint.size(), *checkpoint.hash())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_over_http_are_the_exported_files_and_third_party_crates_verify_them() {
    let server = Server::start_with(
        Dirs::new(),
        Arc::new(|c: &mut oubli::Config| c.tiles_listen = Some("127.0.0.1:0".parse().unwrap())),
    )
    .await;
    let tiles = server.tiles_addr().expect("tiles served");
    let (requests, _) = seeded(700, 21);
    server.client().await.enroll_stream(stream_of(requests)).await.expect("enrol 700");
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let (status, headers, older) = get(tiles, "/checkpoint");
    assert_eq!(status, 200);
    assert_eq!(headers.get("cache-control").map(String::as_str), Some("no-cache"));
    let older = String::from_utf8(older).unwrap();
    let mut templates = server.client().await;
    for n in 0..5 {
        let (one, _) = seeded(1, 1000 + n);
        templates.enroll(one.into_iter().next().unwrap()).await.expect("enrol one");
    }
    let _ = request; // (kept for symmetry with other suites)

    // The export, computed from the entries over gRPC, is what the server serves from its tree.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = oubli(&["--server", &server.addr.to_string(), "log", "export", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let mut files = Vec::new();
    files_under(dir.path(), dir.path(), &mut files);
    files.sort();
    // 705 leaves: bundles and level-0 tiles 000, 001 and 002.p/193; level 1: 000.p/2.
    assert_eq!(files.len(), 1 + 3 + 3 + 1, "{files:?}");
    for file in &files {
        let (status, headers, body) = get(tiles, &format!("/{file}"));
        assert_eq!(status, 200, "{file}");
        assert_eq!(body, std::fs::read(dir.path().join(file)).unwrap(), "{file}: served and exported bytes differ");
        if file != "checkpoint" {
            assert_eq!(headers.get("cache-control").map(String::as_str), Some(oubli::http::tiles::IMMUTABLE), "{file}");
        }
    }
    for (path, status) in [
        ("/tile/0/002", 404),
        ("/tile/0/002.p/194", 404),
        ("/tile/0/002.p/193", 200),
        ("/tile/entries/002.p/193", 200),
        ("/tile/1/000.p/2", 200),
        ("/tile/0/2", 404),
        ("/tile/0/x000/002", 404),
    ] {
        assert_eq!(get(tiles, path).0, status, "{path}");
    }

    // The third-party crates: checkpoint signature and text, the tree from the tiles, proofs.
    let note = String::from_utf8(std::fs::read(dir.path().join("checkpoint")).unwrap()).unwrap();
    let (size, root) = third_party_checkpoint(&note, &key);
    let (old_size, old_root) = third_party_checkpoint(&older, &key);
    assert_eq!((old_size, size), (700, 705));
    let mut forged = note.clone().into_bytes();
    forged[note.find('\n').unwrap() + 2] ^= 1;
    let verifier = signed_note::StandardVerifier::new(&key).unwrap();
    let known = signed_note::VerifierList::new(vec![Box::new(verifier)]);
    let forged = signed_note::Note::from_bytes(&forged).unwrap();
    assert!(forged.verify(&known).is_err(), "an altered checkpoint does not verify");

    let reader = HttpTiles(tiles);
    let tree_size = size;
    let (recomputed, proofs, consistency) = tokio::task::spawn_blocking(move || {
        let hashes = tlog_tiles::TileHashReader::new(tree_size, root, &reader);
        let recomputed = tlog_tiles::tree_hash(tree_size, &hashes).expect("the tree from the tiles");
        let proofs: Vec<(u64, tlog_tiles::RecordProof)> = [0u64, 255, 256, 699, 704]
            .into_iter()
            .map(|leaf| (leaf, tlog_tiles::prove_record(tree_size, leaf, &hashes).expect("record proof")))
            .collect();
        let consistency = tlog_tiles::prove_tree(tree_size, 700, &hashes).expect("tree proof");
        // Every leaf, from the entry bundles, is in the tree (the crate's proof, checked by it).
        let mut entries = Vec::new();
        for path in ["/tile/entries/000", "/tile/entries/001", "/tile/entries/002.p/193"] {
            let (_, _, bundle) = get(reader.0, path);
            let mut rest = bundle.as_slice();
            while !rest.is_empty() {
                let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                entries.push(rest[2..2 + len].to_vec());
                rest = &rest[2 + len..];
            }
        }
        assert_eq!(entries.len() as u64, tree_size);
        for (leaf, entry) in entries.iter().enumerate() {
            let proof = tlog_tiles::prove_record(tree_size, leaf as u64, &hashes).expect("record proof");
            tlog_tiles::check_record(&proof, tree_size, root, leaf as u64, tlog_tiles::record_hash(entry))
                .unwrap_or_else(|e| panic!("leaf {leaf}: {e:?}"));
        }
        (recomputed, proofs, consistency)
    })
    .await
    .unwrap();
    assert_eq!(recomputed, root, "tlog_tiles recomputes the checkpoint's root from the served tiles");

    // The entry bundles hold the leaves whose hashes the level-0 tiles hold.
    let (_, _, bundle) = get(tiles, "/tile/entries/000");
    let (_, _, level0) = get(tiles, "/tile/0/000");
    let mut rest = bundle.as_slice();
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        entries.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    assert_eq!(entries.len(), 256);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(tlog_tiles::record_hash(entry), hash(&level0[32 * i..32 * i + 32]), "entry {i}");
    }

    for (leaf, proof) in proofs {
        let ours = log
            .get_inclusion_proof(pb::GetInclusionProofRequest { leaf_index: leaf, tree_size: size })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(proof, ours.hashes.iter().map(|h| hash(h)).collect::<Vec<_>>(), "leaf {leaf}: the same proof");
        let entry = log.get_entries(pb::GetEntriesRequest { start: leaf, end: leaf + 1 }).await.unwrap().into_inner();
        let leaf_hash = tlog_tiles::record_hash(&entry.entries[0].data);
        tlog_tiles::check_record(&proof, size, root, leaf, leaf_hash).expect("tlog_tiles checks the inclusion");
    }
    let ours = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: 700, to_size: 705 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(consistency, ours.hashes.iter().map(|h| hash(h)).collect::<Vec<_>>(), "the same consistency proof");
    tlog_tiles::check_tree(&consistency, size, root, old_size, old_root).expect("tlog_tiles checks the consistency");

    // A receipt's checkpoint and inclusion proof, checked by the third-party crates.
    let receipt = log.get_receipt(pb::GetReceiptRequest { leaf_index: 704 }).await.unwrap().into_inner().receipt;
    let receipt: serde_json::Value = serde_json::from_str(&receipt).unwrap();
    let body: serde_json::Value = serde_json::from_str(receipt["body"].as_str().unwrap()).unwrap();
    let (receipt_size, receipt_root) = third_party_checkpoint(body["checkpoint"].as_str().unwrap(), &key);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let proof: Vec<_> = body["inclusion_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hash(&b64.decode(h.as_str().unwrap()).unwrap()))
        .collect();
    let entry = b64.decode(body["entry"].as_str().unwrap()).unwrap();
    tlog_tiles::check_record(&proof, receipt_size, receipt_root, 704, tlog_tiles::record_hash(&entry))
        .expect("the receipt's proof checks");
    server.stop().await;
}

/// A log signing at a cadence: a new leaf's receipt is pending (UNAVAILABLE, `retry-after`)
/// and its tiles unserved until the integrator publishes a checkpoint covering it; a clean stop
/// publishes what was sequenced; `oubli log receipt --wait` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_pending_until_the_cadence_publishes_a_checkpoint_that_covers_them() {
    let slow: crate::harness::Configure = Arc::new(|c: &mut oubli::Config| {
        c.tiles_listen = Some("127.0.0.1:0".parse().unwrap());
        c.cadence = Some(oubli::http::integrate::Cadence { interval: Duration::from_secs(3600), ..Default::default() });
    });
    let server = Server::start_with(Dirs::new(), slow.clone()).await;
    let (one, _) = seeded(1, 5);
    server.client().await.enroll(one.into_iter().next().unwrap()).await.expect("enrol");
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let pending = log.get_receipt(pb::GetReceiptRequest { leaf_index: 0 }).await.expect_err("pending");
    assert_eq!(pending.code(), tonic::Code::Unavailable, "{pending:?}");
    assert!(pending.message().starts_with("pending:"), "{}", pending.message());
    assert_eq!(pending.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let checkpoint = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;
    assert!(checkpoint.contains("\n0\n"), "nothing published yet: {checkpoint}");
    let tiles = server.tiles_addr().unwrap();
    assert_eq!(get(tiles, "/tile/entries/000.p/1").0, 404, "unpublished leaves are not served");
    let (ok, out) = oubli(&["--server", &server.addr.to_string(), "log", "receipt", "--leaf", "0"]);
    assert!(!ok && out.contains("--wait"), "{out}");

    // A clean stop publishes the sequenced leaves; the receipt is then the same every time.
    let server = server.restart().await;
    let mut log = TransparencyServiceClient::new(server.channel().await);
    let first = log.get_receipt(pb::GetReceiptRequest { leaf_index: 0 }).await.expect("published").into_inner();
    let again = log.get_receipt(pb::GetReceiptRequest { leaf_index: 0 }).await.unwrap().into_inner();
    assert_eq!(first.receipt, again.receipt);
    assert_eq!(get(server.tiles_addr().unwrap(), "/tile/entries/000.p/1").0, 200);

    // At a short cadence, `--wait` gets the next leaf's receipt once it is published.
    let fast: crate::harness::Configure = Arc::new(|c: &mut oubli::Config| {
        c.cadence =
            Some(oubli::http::integrate::Cadence { interval: Duration::from_millis(100), ..Default::default() });
    });
    let server = server.restart_with(fast).await;
    let (one, _) = seeded(1, 6);
    server.client().await.enroll(one.into_iter().next().unwrap()).await.expect("enrol");
    let (ok, out) = oubli(&["--server", &server.addr.to_string(), "log", "receipt", "--leaf", "1", "--wait", "30"]);
    assert!(ok, "{out}");
    let receipt: serde_json::Value = serde_json::from_str(&out).expect("a receipt");
    let body: serde_json::Value = serde_json::from_str(receipt["body"].as_str().unwrap()).unwrap();
    assert!(body["checkpoint"].as_str().unwrap().contains("\n2\n"), "proven against the checkpoint of 2 leaves: {out}");
    server.stop().await;
}

//! The documentation runs as written: every ```sh block of README.md and docs/*.md, in order,
//! one bash session per file (`set -euo pipefail`), in a fresh temp dir, with this build's
//! `oubli` and `oubli-server`. Three stand-ins, each said in the transcript:
//! - `oubli-server ARGS &` starts the real server with ARGS plus `--listen 127.0.0.1:0`, waits
//!   for it to serve, and exports `OUBLI_SERVER` (the documented commands use the default
//!   address; a test may not take a fixed port). A server documented with `--listen ADDR`
//!   gets a free port instead, and `oubli --server ADDR` (or `https://ADDR`) and a gateway's
//!   `--shards http://ADDR,...` are pointed there; every server started is stopped at the end;
//! - `make TARGET` is checked with `make -n` (the target exists and its recipe expands) but not
//!   run: `make test` is what runs this, and `make demo` is run by itself;
//! - `target/release/oubli*` is this build's binary, and the temp dir links the repository's
//!   `examples/`, `proto/` and `scripts/`, so paths written from the repository root resolve.
//!
//! Also: the Python example (examples/python/client.py) against a live server.
use std::{path::Path, process::Command};

use crate::harness::{Dirs, Server};

const PRELUDE: &str = r#"
set -euo pipefail
declare -A SERVER_AT=()
SERVER_PIDS=()
oubli() {
  local args=() a prev= host
  for a in "$@"; do
    if [ "$prev" = "--server" ]; then
      host=${a#https://}
      [ -z "${SERVER_AT[$host]:-}" ] || a=${a%"$host"}${SERVER_AT[$host]}
    fi
    prev=$a
    args+=("$a")
  done
  "$OUBLI_BIN" "${args[@]}"
}
oubli-server() { "$OUBLI_SERVER_BIN" "$@"; }
start_server() {
  local args=() a prev= want=
  for a in "$@"; do
    if [ "$prev" = "--listen" ]; then want=$a; prev=; continue; fi
    if [ "$prev" = "--shards" ]; then
      local mapped=() s h
      IFS=, read -ra shards <<<"$a"
      for s in "${shards[@]}"; do
        h=${s#http://}
        [ -z "${SERVER_AT[$h]:-}" ] || s=http://${SERVER_AT[$h]}
        mapped+=("$s")
      done
      a=$(IFS=,; echo "${mapped[*]}")
    fi
    if [ "$prev" = "--primary" ]; then
      local h=${a#http://}
      [ -z "${SERVER_AT[$h]:-}" ] || a=http://${SERVER_AT[$h]}
    fi
    prev=$a
    [ "$a" = "&" ] || [ "$a" = "--listen" ] || args+=("$a")
  done
  echo "[docs test] starting oubli-server ${args[*]} --listen 127.0.0.1:0${want:+ (for $want)}"
  rm -f server.fifo && mkfifo server.fifo
  "$OUBLI_SERVER_BIN" "${args[@]}" --listen 127.0.0.1:0 >/dev/null 2>server.fifo &
  SERVER_PIDS+=("$!")
  exec 3<server.fifo
  # The server logs its address once it serves: read its log until then, then keep draining it.
  local line addr=
  while IFS= read -r line <&3; do
    echo "$line" >>server.log
    case "$line" in *"serving oubli.v1"*) addr=$(grep -o '127\.0\.0\.1:[0-9]*' <<<"$line" | head -1); break ;; esac
  done
  cat <&3 >>server.log &
  [ -n "$addr" ] || { cat server.log; return 1; }
  if [ -n "$want" ]; then SERVER_AT[$want]=$addr; else export OUBLI_SERVER=$addr; fi
}
stop_server() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" || true; done
  SERVER_PIDS=()
}
trap stop_server EXIT
make() {
  command make --no-print-directory -n -C "$REPO" "$@" >/dev/null
  echo "[docs test] make $*: target checked with make -n, not run"
}
"#;

/// The ```sh blocks of a markdown file, joined, with the stand-ins applied.
fn script(markdown: &str) -> String {
    let mut out = String::new();
    let mut in_sh = false;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        if fence {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let trimmed = line.trim_start();
        let rewritten = trimmed.replacen("target/release/", "", 1);
        let command = rewritten.split(" #").next().unwrap_or_default().trim();
        if rewritten.starts_with("oubli-server") && command.ends_with('&') {
            let args = command.trim_start_matches("oubli-server").trim_end_matches('&');
            out.push_str(&format!("start_server {}\n", args.trim()));
        } else if rewritten.starts_with("oubli ") {
            out.push_str(&rewritten);
            out.push('\n');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn run_doc(name: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let markdown = std::fs::read_to_string(repo.join(name)).expect("doc exists");
    let body = script(&markdown);
    assert!(!body.trim().is_empty(), "{name} has no sh block");
    let dir = tempfile::tempdir().expect("tmp");
    for linked in ["examples", "proto", "scripts"] {
        std::os::unix::fs::symlink(repo.join(linked), dir.path().join(linked)).expect("symlink");
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{PRELUDE}\n{body}"))
        .current_dir(dir.path())
        .env("REPO", repo)
        .env("OUBLI_BIN", env!("CARGO_BIN_EXE_oubli"))
        .env("OUBLI_SERVER_BIN", env!("CARGO_BIN_EXE_oubli-server"))
        .env("NO_COLOR", "1")
        .env_remove("OUBLI_SERVER")
        .env_remove("OUBLI_TOKEN")
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a command in {name} failed:\n{text}");
}

#[test]
fn readme_commands_run() {
    run_doc("README.md");
}

#[test]
fn usage_commands_run() {
    run_doc("docs/usage.md");
}

#[test]
fn educators_commands_run() {
    run_doc("docs/educators.md");
}

/// A new doc with commands gets its own test above.
#[test]
fn every_doc_with_commands_is_tested() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for entry in std::fs::read_dir(docs).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 name").to_string();
            let has_commands = std::fs::read_to_string(&path).expect("read").lines().any(|l| l.trim() == "```sh");
            assert!(!has_commands || ["usage.md", "educators.md"].contains(&name.as_str()), "docs/{name} is not run");
        }
    }
}

/// examples/python/client.py, with the stubs and packages `make python-deps` put under
/// target/python, against a live server: enrol, search, access request, receipt checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_against_a_live_server() {
    let server = Server::start(Dirs::new()).await;
    run_python_example(&server, &[]).await;
    server.stop().await;
}

/// The same over TLS, with `--ca-cert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_runs_over_tls() {
    let certs = crate::tls::certificates();
    let server =
        Server::start_tls(Dirs::new(), std::sync::Arc::new(|_| {}), certs.files.clone(), certs.ca_pem.clone()).await;
    run_python_example(&server, &["--ca-cert".into(), certs.ca.clone().into()]).await;
    server.stop().await;
}

async fn run_python_example(server: &Server, extra: &[std::ffi::OsString]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join("target/python");
    assert!(
        python.join("stubs/oubli/v1/templates_pb2.py").exists(),
        "no Python stubs in {}: run `make python-deps` (make test does)",
        python.display()
    );
    let token_file = server.dirs.keys.join(oubli::grpc::LOCAL_TOKEN_FILE);
    // The Python example plays the capture application the test servers trust.
    let key_dir = tempfile::tempdir().expect("temp dir");
    let capture_key = key_dir.path().join("capture.key");
    let seed = hex::encode(crate::harness::capture_key().to_bytes());
    std::fs::write(&capture_key, format!("name = \"{}\"\nsecret_key = \"{seed}\"\n", crate::harness::CAPTURE_APP))
        .expect("key file");
    let addr = server.addr.to_string();
    let path = format!("{}:{}", python.join("deps").display(), python.join("stubs").display());
    let script = repo.join("examples/python/client.py");
    let extra = extra.to_vec();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--server", &addr, "--token-file"])
            .arg(token_file)
            .arg("--capture-key")
            .arg(capture_key)
            .args(extra)
            .env("PYTHONPATH", path)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("joined");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Python example failed:\n{text}");
    assert!(text.contains("3 records disclosed") && text.contains("receipt: every check passed"), "{text}");
}

/// The README prints the receipt page's SHA-256, so a person can check they have the real page:
/// it stays the hash of docs/verify/index.html.
#[test]
fn the_readme_prints_the_receipt_page_s_sha256() {
    use sha2::{Digest, Sha256};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read(repo.join("docs/verify/index.html")).expect("the page");
    let line = format!("{}  docs/verify/index.html", hex::encode(Sha256::digest(&page)));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    assert!(readme.contains(&line), "README.md must print `{line}` (`sha256sum docs/verify/index.html`)");
}

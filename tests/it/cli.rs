//! The CLI in a shell pipeline: a reader that stops early (`oubli erase status ... | head`) ends
//! the command quietly with status 0, as ripgrep does, never with a panic.
use std::process::{Command, ExitStatus, Stdio};

use oubli::grpc::pb::{self, rights_service_client::RightsServiceClient};

use crate::harness::{Dirs, Server, oubli, seeded, stream_of};

/// Runs the CLI with a standard output whose reader has already gone, so that its first write
/// fails: its exit status and what it wrote to stderr.
fn into_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_oubli"))
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run oubli");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_reader_has_gone_exits_quietly() {
    let server = Server::start(Dirs::new()).await;
    let (requests, vectors) = seeded(3, 11);
    server.client().await.enroll_stream(stream_of(requests)).await.expect("enrol");
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let request = crate::harness::signed_erasure(
        &mut rights,
        pb::SubmitErasureRequestRequest {
            probes: vec![pb::Embedding { values: vectors[0].clone() }],
            contact: "person@example.org".into(),
            ..Default::default()
        },
    )
    .await;
    let erasure = rights.submit_erasure_request(request).await.expect("submitted").into_inner();
    let addr = server.addr.to_string();
    let (addr, id, secret) = (addr.as_str(), erasure.request_id.as_str(), erasure.request_secret.as_str());
    let no_token = ["--server", addr, "--token-file", "/nonexistent"];
    let status = [&no_token[..], &["erase", "status", id, "--secret", secret][..]].concat();
    let entries = [&no_token[..], &["log", "entries", "--start", "0", "--end", "1"][..]].concat();
    for args in [status, entries] {
        // Read to the end, the command prints its answer...
        let (ok, text) = oubli(&args);
        assert!(ok && !text.is_empty(), "{args:?}: {text}");
        // ...and with nobody reading, it stops at its first line, quietly and successfully.
        let (code, stderr) = into_closed_pipe(&args);
        assert!(code.success(), "{args:?} exited with {code}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
    server.stop().await;
}

//! Limits that hold against a determined caller, over real gRPC: a full worker queue refuses a
//! submission before storing it (and what was queued still runs after a restart), unknown
//! methods are audited and counted under one fixed label, anonymous transparency reads are
//! throttled; and the CLI's request secret from a file or the environment, its reports 0600.
use std::{os::unix::fs::MetadataExt, sync::Arc};

use oubli::{
    grpc::pb::{
        self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
        transparency_service_client::TransparencyServiceClient,
    },
    rights::auth::{Role, Tokens},
};
use tonic::Code;

use crate::harness::{Configure, Dirs, Server};

struct Staff {
    desk: String,
    auditor: String,
}

/// A tokens file beside the data dir, and `more` applied to the configuration.
fn configured(dirs: &Dirs, more: impl Fn(&mut oubli::Config) + Send + Sync + 'static) -> (Configure, Staff) {
    let path = dirs.keys.parent().expect("temp dir").join("tokens.toml");
    let staff = Staff {
        desk: Tokens::add(&path, "desk", &[Role::PrivacyDesk]).unwrap(),
        auditor: Tokens::add(&path, "auditor", &[Role::Auditor]).unwrap(),
    };
    let configure: Configure = Arc::new(move |c: &mut oubli::Config| {
        c.tokens_file = Some(path.clone());
        c.rights.submissions_per_minute = 1000;
        more(c);
    });
    (configure, staff)
}

fn probe(seed: u32) -> Vec<f32> {
    let v: Vec<f32> = (0..512u32).map(|i| ((i * 7 + seed * 13) % 17) as f32 - 8.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn access(seed: u32) -> pb::SubmitAccessRequestRequest {
    pb::SubmitAccessRequestRequest {
        probes: vec![pb::Embedding { values: probe(seed) }],
        contact: "jeanne@example.org".into(),
        ..Default::default()
    }
}

async fn stored_requests(server: &Server, desk: &str) -> Vec<pb::RequestStatus> {
    let mut desk = RightsServiceClient::new(server.channel_as(Some(desk)).await);
    desk.list_requests(pb::ListRequestsRequest::default()).await.unwrap().into_inner().requests
}

#[tokio::test]
async fn a_full_queue_refuses_a_submission_before_storing_it_and_a_restart_runs_what_was_queued() {
    let dirs = Dirs::new();
    let (held, staff) = configured(&dirs, |c| {
        c.process_requests = false;
        c.rights.queue_capacity = 2;
    });
    let server = Server::start_with(dirs, held).await;
    let mut public = RightsServiceClient::new(server.channel_as(None).await);
    let mut accepted = Vec::new();
    for seed in 0..2 {
        let r = public.submit_access_request(access(seed)).await.expect("room in the queue").into_inner();
        accepted.push((r.request_id, r.request_secret));
    }
    let refused = public.submit_access_request(access(2)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("try again in 60 s"), "{}", refused.message());
    assert_eq!(refused.metadata().get("retry-after").and_then(|v| v.to_str().ok()), Some("60"));
    let erasure = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: probe(3) }],
        contact: "jeanne@example.org".into(),
        ..Default::default()
    };
    assert_eq!(public.submit_erasure_request(erasure).await.unwrap_err().code(), Code::ResourceExhausted);
    let stored = stored_requests(&server, &staff.desk).await;
    assert_eq!(stored.len(), 2, "the refused submissions stored nothing");
    assert!(stored.iter().all(|s| s.state == "received"));

    // Restarted with the worker on: the queued requests are found in the store and answered.
    let (running, _) = configured(&server.dirs, |_| {});
    let server = server.restart_with(running).await;
    let mut public = RightsServiceClient::new(server.channel_as(None).await);
    for (id, secret) in &accepted {
        let status = public
            .get_request(pb::GetRequestRequest {
                request_id: id.clone(),
                request_secret: secret.clone(),
                wait_seconds: 30,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_ne!(status.state, "received", "the worker took it up after the restart");
        assert_ne!(status.state, "verifying");
    }
    public.submit_access_request(access(4)).await.expect("the queue drains");
    server.stop().await;
}

/// Calls `path` with an empty message, as a raw gRPC client.
async fn call(server: &Server, path: &'static str) -> Code {
    let mut grpc = tonic::client::Grpc::new(server.raw_channel().await);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(tonic::Request::new(()), http::uri::PathAndQuery::from_static(path), codec).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test]
async fn unknown_methods_are_audited_and_counted_under_one_label_never_the_callers_path() {
    let dirs = Dirs::new();
    let (configure, staff) = configured(&dirs, |c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap()));
    let server = Server::start_with(dirs, configure).await;
    let probes = ["/oubli.v1.RightsService/Drop%20Table", "/oubli.v9.Canary/Xyzzy", "/canary.Evil/Plugh"];
    for path in probes {
        assert_eq!(call(&server, path).await, Code::Unimplemented, "{path}");
    }
    assert_eq!(call(&server, "/oubli.v1.TransparencyService/GetCheckpoint").await, Code::Ok);
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&staff.auditor)).await);
    let events =
        admin.list_audit_events(pb::ListAuditEventsRequest { after: 0, limit: 100 }).await.unwrap().into_inner().events;
    let unknown: Vec<_> = events.iter().filter(|e| e.method == "unknown").collect();
    assert_eq!(unknown.len(), probes.len(), "each unknown call audited: {events:?}");
    assert!(unknown.iter().all(|e| e.code == "Unimplemented" && e.caller == "anonymous"));
    assert!(events.iter().any(|e| e.method == "/oubli.v1.TransparencyService/GetCheckpoint"));
    for e in &events {
        for word in ["Drop", "Canary", "Xyzzy", "canary", "Plugh"] {
            assert!(!e.method.contains(word), "the caller's path is in the audit trail: {e:?}");
        }
    }
    let metrics = scrape_metrics(server.metrics_addr().expect("metrics are served")).await;
    assert!(metrics.contains("oubli_rpc_calls_total{method=\"unknown\",code=\"Unimplemented\"} 3"), "{metrics}");
    for word in ["Drop", "Canary", "Xyzzy", "canary", "Plugh"] {
        assert!(!metrics.contains(word), "the caller's path is in the metrics");
    }
    server.stop().await;
}

#[tokio::test]
async fn anonymous_transparency_reads_are_throttled_per_address() {
    let dirs = Dirs::new();
    let (configure, staff) = configured(&dirs, |c| c.rights.transparency_reads_per_minute = 3);
    let server = Server::start_with(dirs, configure).await;
    let mut public = TransparencyServiceClient::new(server.channel_as(None).await);
    for _ in 0..3 {
        public.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("within the limit");
    }
    let refused = public.get_entries(pb::GetEntriesRequest { start: 0, end: 1 }).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("try again in "), "{}", refused.message());
    assert_eq!(
        public.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // A caller with a token (an auditor's witness) is not throttled.
    let mut auditor = TransparencyServiceClient::new(server.channel_as(Some(&staff.auditor)).await);
    for _ in 0..5 {
        auditor.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("an authenticated reader");
    }
    server.stop().await;
}

// The CLI runs as a blocking child process: the server needs threads of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_the_request_secret_from_a_file_or_the_environment_and_writes_receipts_0600() {
    let dirs = Dirs::new();
    let (configure, _) = configured(&dirs, |c| c.process_requests = false);
    let server = Server::start_with(dirs, configure).await;
    let mut public = RightsServiceClient::new(server.channel_as(None).await);
    let erasure = pb::SubmitErasureRequestRequest {
        probes: vec![pb::Embedding { values: probe(1) }],
        contact: "jeanne@example.org".into(),
        ..Default::default()
    };
    let r = public.submit_erasure_request(erasure).await.unwrap().into_inner();
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("erasure.secret");
    std::fs::write(&secret_file, format!("{}\n", r.request_secret)).unwrap();
    let out = tmp.path().join("receipts");
    let addr = server.addr.to_string();
    let oubli = |args: &[&str], secret_env: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_oubli"));
        command.args(["--server", &addr]).args(args).env_remove("OUBLI_REQUEST_SECRET");
        if let Some(s) = secret_env {
            command.env("OUBLI_REQUEST_SECRET", s);
        }
        let output = command.output().expect("run oubli");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let file = secret_file.to_str().unwrap();
    let (ok, text) =
        oubli(&["erase", "receipt", &r.request_id, "--secret-file", file, "--out", out.to_str().unwrap()], None);
    assert!(ok, "{text}");
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o700);
    let written = out.join("erasure.json");
    assert_eq!(std::fs::metadata(&written).unwrap().mode() & 0o777, 0o600, "the receipt is the person's alone");

    let (ok, text) = oubli(&["erase", "status", &r.request_id], Some(&r.request_secret));
    assert!(ok && text.contains("received"), "{text}");
    // The file wins over the environment; nothing at all is refused by the server.
    let (ok, text) = oubli(&["erase", "status", &r.request_id, "--secret-file", file], Some("not-the-secret"));
    assert!(ok, "{text}");
    let (ok, text) = oubli(&["erase", "status", &r.request_id], None);
    assert!(!ok && text.contains("secret"), "{text}");
    let (ok, text) = oubli(&["erase", "status", &r.request_id], Some("0".repeat(64).as_str()));
    assert!(!ok && text.contains("secret"), "{text}");
    let (_, help) = oubli(&["erase", "status", "--help"], None);
    assert!(help.contains("--secret-file") && help.contains("ps"), "{help}");
    server.stop().await;
}

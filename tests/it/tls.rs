//! TLS over real gRPC, with certificates made here by rcgen (no network, no openssl): the whole
//! rights flow (enrolment, an access request and its report and receipt, an erasure and its
//! receipt) over TLS; a plaintext client and a client trusting another CA refused; the CLI with
//! --ca-cert; bad certificate files refused naming them; and `oubli-server` refusing to serve in
//! clear off loopback, before it binds anything.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use oubli::grpc::{
    Embedded, TlsFiles,
    pb::{
        self, rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
        transparency_service_client::TransparencyServiceClient,
    },
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;
use tonic::Code;

use crate::{
    erasure::{body, receipts, submit_erasure},
    harness::{Dirs, Server, oubli},
    rights::{enrol, report, submit, tokens, wait, with_tokens},
};

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
pub struct Certs {
    pub dir: TempDir,
    pub ca_pem: Vec<u8>,
    pub ca: PathBuf,
    pub files: TlsFiles,
}

/// Makes a fresh CA (ECDSA P-256, through ring; each with its own name) and a server
/// certificate signed by it.
pub fn certificates() -> Certs {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    ca_params.distinguished_name.push(DnType::CommonName, format!("Oubli test CA {n}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().expect("a CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("names");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("a server key");
    let cert = params.signed_by(&key, &issuer).expect("a server certificate");

    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    let ca = write("ca.pem", &ca_cert.pem());
    let files = TlsFiles { cert: write("server.pem", &cert.pem()), key: write("server.key", &key.serialize_pem()) };
    Certs { ca_pem: ca_cert.pem().into_bytes(), ca, files, dir }
}

async fn start(certs: &Certs) -> Server {
    Server::start_tls(Dirs::new(), Arc::new(|_| {}), certs.files.clone(), certs.ca_pem.clone()).await
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// Every connection here is TLS (the harness's channels verify the server with the CA): the
/// operator enrols, a person's access request is answered with exactly their records and a
/// receipt that verifies, and their erasure purges the keys and logs a receipt that verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rights_flow_runs_over_tls() {
    let certs = certificates();
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_tls(dirs, with_tokens(path, |_| {}), certs.files.clone(), certs.ca_pem.clone()).await;
    let world = enrol(&server, &t.operator).await;
    let person = world.clear_cut(0);
    let probe = world.population.probe(person).to_vec();
    let expected: BTreeSet<String> = world.scored(person, 0.602, 2.0).into_iter().map(|(id, _)| id).collect();

    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (id, secret) = submit(&mut rights, &probe).await;
    assert_eq!(wait(&mut rights, &id, &secret).await.state, "completed");
    let (answer, receipt) = report(&mut rights, &id, &secret).await;
    let got: BTreeSet<String> = answer.records.iter().map(|r| r.record_id.clone()).collect();
    assert_eq!(got, expected, "exactly the person's records, over TLS");

    let (erasure, erasure_secret) = submit_erasure(&mut rights, &probe).await;
    assert_eq!(wait(&mut rights, &erasure, &erasure_secret).await.erasure_step, "keys_purged");
    let phase1 = receipts(&mut rights, &erasure, &erasure_secret).await.phase1_receipt_json;
    assert_eq!(body(&phase1).event, "erasure-phase-1");
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for record in &expected {
        let get = pb::GetRequest { record_id: record.clone(), include_embedding: false };
        assert_eq!(templates.get(get).await.unwrap_err().code(), Code::NotFound, "erased over TLS");
    }

    // Both receipts verify offline with the log's key, fetched over TLS.
    let mut log = TransparencyServiceClient::new(server.channel_as(None).await);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key_path = certs.dir.path().join("log.vkey");
    std::fs::write(&key_path, key).unwrap();
    for (name, json, event) in [("access.json", &receipt, "access-answered"), ("erasure.json", &phase1, "phase-1")] {
        let path = certs.dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        let (ok, out) = oubli(&["verify", arg(&path), "--verifier-key", arg(&key_path)]);
        assert!(ok && out.contains(event), "{name}: {out}");
    }
    server.stop().await;
}

/// A client speaking plaintext HTTP/2 gets a transport error, not an answer; a client trusting
/// another CA refuses the server's certificate; the right CA gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_answers_no_plaintext_client_and_no_client_trusting_another_ca() {
    let certs = certificates();
    let server = start(&certs).await;
    let mut log = TransparencyServiceClient::new(server.channel_tls(&certs.ca_pem).await.expect("the right CA"));
    log.get_checkpoint(pb::GetCheckpointRequest {}).await.expect("a checkpoint over TLS");

    let plain = tonic::transport::Channel::from_shared(format!("http://{}", server.addr)).unwrap().connect().await;
    let refused = match plain {
        Err(e) => format!("{e:?}"),
        Ok(channel) => {
            let status = TransparencyServiceClient::new(channel)
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await
                .expect_err("a plaintext call is not answered");
            format!("{status:?}")
        }
    };
    // (The server's TLS alert reads as a malformed HTTP/2 frame: the client gives up.)
    assert!(refused.contains("Transport"), "a transport error on the client's side: {refused}");

    let other = certificates();
    let error = server.channel_tls(&other.ca_pem).await.expect_err("another CA's client refuses the certificate");
    let chain = format!("{:?}", error);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
    server.stop().await;
}

/// `oubli --ca-cert` talks to a TLS server; without it, with another CA, or with a file that is
/// no certificate, it fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_connects_over_tls_with_ca_cert() {
    let certs = certificates();
    let server = start(&certs).await;
    let token = server.dirs.keys.join(oubli::grpc::LOCAL_TOKEN_FILE);
    let addr = server.addr.to_string();
    let https = format!("https://{addr}");
    let base = ["--token-file", arg(&token)];
    let run = |server: &str, ca: Option<&Path>, command: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(["--server", server]);
        if let Some(ca) = ca {
            args.extend(["--ca-cert", arg(ca)]);
        }
        args.extend(command);
        oubli(&args)
    };
    let (ok, out) = run(&addr, Some(&certs.ca), &["stats"]);
    assert!(ok && out.contains("records:"), "{out}");
    let (ok, out) = run(&https, Some(&certs.ca), &["log", "checkpoint"]);
    assert!(ok && out.contains("oubli.example/log"), "{out}");

    // Plaintext to a TLS server: no answer.
    let (ok, out) = run(&addr, None, &["stats"]);
    assert!(!ok && out.contains("if the server serves TLS, give --ca-cert"), "{out}");
    // https:// with the system's roots, and another CA: the certificate is refused.
    let (ok, out) = run(&https, None, &["stats"]);
    assert!(!ok && out.contains("over TLS"), "{out}");
    let other = certificates();
    let (ok, out) = run(&https, Some(&other.ca), &["stats"]);
    assert!(!ok && out.contains("over TLS") && out.contains("UnknownIssuer"), "{out}");
    // A key where the CA certificate should be, and --ca-cert with an http:// address.
    let (ok, out) = run(&addr, Some(&certs.files.key), &["stats"]);
    assert!(!ok && out.contains("server.key holds no PEM certificate"), "{out}");
    let (ok, out) = run(&format!("http://{addr}"), Some(&certs.ca), &["stats"]);
    assert!(!ok && out.contains("give https://"), "{out}");
    server.stop().await;
}

/// A certificate file that holds a key, and a key that is not the certificate's, are refused
/// before the store opens, naming the files.
#[tokio::test]
async fn bad_certificate_files_are_refused_naming_them() {
    let (certs, other) = (certificates(), certificates());
    let start = |tls: TlsFiles| async move {
        let dirs = Dirs::new();
        let mut config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
        config.tls = Some(tls);
        let error = Embedded::start(config).await.err().expect("refused").to_string();
        assert!(!dirs.data.exists(), "the store was not opened");
        error
    };
    let swapped = TlsFiles { cert: certs.files.key.clone(), key: certs.files.cert.clone() };
    let error = start(swapped).await;
    assert!(error.contains("server.key holds no PEM certificate") && error.contains("--tls-cert"), "{error}");
    let mismatched = TlsFiles { cert: certs.files.cert.clone(), key: other.files.key.clone() };
    let error = start(mismatched).await;
    assert!(error.contains("cannot be used together") && error.contains(arg(&other.files.key)), "{error}");
    let missing = TlsFiles { cert: certs.dir.path().join("absent.pem"), key: certs.files.key.clone() };
    let error = start(missing).await;
    assert!(error.contains("cannot read the TLS certificate") && error.contains("absent.pem"), "{error}");
}

/// Runs `oubli-server` with `args` on a temp data dir; it must exit by itself within a minute
/// (a server that started instead is killed and the test fails). Returns (success, stderr).
fn server_exits(args: &[&str]) -> (bool, String) {
    use std::io::Read;
    let dirs = Dirs::new();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_oubli-server"))
        .args(args)
        .arg("--data-dir")
        .arg(&dirs.data)
        .arg("--key-dir")
        .arg(&dirs.keys)
        .env("NO_COLOR", "1")
        .env_remove("OUBLI_INSECURE_PLAINTEXT")
        .env_remove("OUBLI_TLS_CERT")
        .env_remove("OUBLI_TLS_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("oubli-server runs");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // Its stderr closes when it exits.
    let Ok(text) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("oubli-server {args:?} did not exit: it started");
    };
    let status = child.wait().expect("oubli-server exit status");
    assert!(!dirs.data.exists(), "{args:?}: refused before the store was opened");
    (status.success(), text)
}

/// Plaintext off loopback is refused before anything is bound (`0.0.0.0` is every interface;
/// 192.0.2.10 is a documentation address this machine does not have, so nothing could bind it
/// either way); --insecure-plaintext gets past the refusal (to the bind, which then fails);
/// half a TLS configuration is refused.
#[test]
fn oubli_server_refuses_to_serve_in_clear_off_loopback() {
    for listen in ["0.0.0.0:0", "192.0.2.10:0"] {
        let (ok, out) = server_exits(&["--listen", listen]);
        assert!(!ok, "{listen}: {out}");
        for needed in ["refusing to serve in clear", "biometric templates", "--tls-cert", "--insecure-plaintext"] {
            assert!(out.contains(needed), "{listen}: no {needed:?} in {out}");
        }
    }
    let (ok, out) = server_exits(&["--listen", "192.0.2.10:0", "--insecure-plaintext"]);
    assert!(!ok && out.contains("cannot listen on 192.0.2.10:0") && !out.contains("refusing"), "{out}");
    let certs = certificates();
    let (ok, out) = server_exits(&["--listen", "127.0.0.1:0", "--tls-cert", arg(&certs.files.cert)]);
    assert!(!ok && out.contains("--tls-cert and --tls-key go together"), "{out}");
}

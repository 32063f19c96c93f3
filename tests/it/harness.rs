//! Starts and stops the real server in-process.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use oubli::{
    grpc::{
        AuthChannel, Bearer, Embedded,
        pb::{
            self, rights_service_client::RightsServiceClient, templates_service_client::TemplatesServiceClient,
            transparency_service_client::TransparencyServiceClient,
        },
    },
    rights::{
        identity::{CaptureKeys, Terms, sign_capture},
        request::Kind,
    },
    synth::{Population, PopulationConfig},
    transparency::{
        event::{Entry, Event},
        merkle::{self, Hash, TreeSize},
        note::VerifierKey,
        receipt,
    },
};
use tempfile::TempDir;
use tonic::transport::Channel;

/// A data dir and a key dir in a temp dir that lives as long as this value.
pub struct Dirs {
    _tmp: TempDir,
    pub data: PathBuf,
    pub keys: PathBuf,
}

impl Dirs {
    /// New dirs whose key dir trusts the test capture application ([`capture_key`]).
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (data, keys) = (tmp.path().join("data"), tmp.path().join("keys"));
        trust_capture_app(&keys);
        Dirs { _tmp: tmp, data, keys }
    }
}

/// The name of the capture application the tests' servers trust.
pub const CAPTURE_APP: &str = "test-capture-app";

/// The test capture application's private key.
pub fn capture_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

/// Lists the test capture application in `keys`' capture-keys file (the dir made 0700).
pub fn trust_capture_app(keys: &Path) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(keys).expect("key dir");
    let mut list = CaptureKeys::default();
    list.add(CAPTURE_APP, capture_key().verifying_key()).expect("a key name");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(keys.join(oubli::grpc::CAPTURE_KEYS_FILE))
        .expect("capture-keys file");
    std::io::Write::write_all(&mut file, list.to_toml().as_bytes()).expect("capture-keys written");
}

/// What the test capture application signs for a request with these terms and probes, under a
/// fresh challenge from the server.
pub async fn capture(
    rights: &mut RightsServiceClient<AuthChannel>,
    terms: &Terms<'_>,
    probes: &[pb::Embedding],
) -> pb::Capture {
    let begun = rights.begin_capture(pb::BeginCaptureRequest {}).await.expect("a challenge").into_inner();
    let challenge: [u8; 32] = begun.challenge.as_slice().try_into().expect("32 bytes");
    let templates: Vec<&[f32]> = probes.iter().map(|p| p.values.as_slice()).collect();
    let c = sign_capture(&capture_key(), CAPTURE_APP, challenge, terms, &templates);
    pb::Capture {
        challenge: c.challenge.to_vec(),
        key: c.key,
        signatures: c.signatures.iter().map(|s| s.to_vec()).collect(),
    }
}

/// `request` with its probes signed by the test capture application.
pub async fn signed_access(
    rights: &mut RightsServiceClient<AuthChannel>,
    mut request: pb::SubmitAccessRequestRequest,
) -> pb::SubmitAccessRequestRequest {
    let terms = Terms {
        kind: Kind::Access,
        contact: &request.contact,
        jurisdiction_claim: &request.jurisdiction_claim,
        include_templates: request.include_templates,
        never_enrol_again: false,
    };
    request.capture = Some(capture(rights, &terms, &request.probes).await);
    request
}

/// `request` (by probes) with its probes signed by the test capture application.
pub async fn signed_erasure(
    rights: &mut RightsServiceClient<AuthChannel>,
    mut request: pb::SubmitErasureRequestRequest,
) -> pb::SubmitErasureRequestRequest {
    let terms = Terms {
        kind: Kind::Erasure,
        contact: &request.contact,
        jurisdiction_claim: &request.jurisdiction_claim,
        include_templates: false,
        never_enrol_again: request.never_enrol_again,
    };
    request.capture = Some(capture(rights, &terms, &request.probes).await);
    request
}

pub struct Server {
    pub addr: SocketAddr,
    embedded: Embedded,
    pub dirs: Dirs,
    configure: Configure,
    /// The CA certificate (PEM) every connection verifies the server with, if it serves TLS.
    tls_ca: Option<Vec<u8>>,
}

/// Changes a test makes to the default configuration (kept for restarts).
pub type Configure = std::sync::Arc<dyn Fn(&mut oubli::Config) + Send + Sync>;

impl Server {
    /// A server whose ingest policy is permissive (most tests enrol scraped synthetic data),
    /// with the default local token.
    pub async fn start(dirs: Dirs) -> Server {
        Server::start_with(dirs, std::sync::Arc::new(|_| {})).await
    }

    pub async fn start_with(dirs: Dirs, configure: Configure) -> Server {
        let mut config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
        config.rights.policy = oubli::rights::PolicySource::Profile("permissive".into());
        configure(&mut config);
        let embedded = Embedded::start(config).await.expect("server starts");
        Server { addr: embedded.addr, embedded, dirs, configure, tls_ca: None }
    }

    /// As [`Server::start_with`], serving TLS with `files`; every connection made through this
    /// value ([`Server::channel`], [`Server::channel_as`], ...) is TLS, verified with `ca_pem`.
    pub async fn start_tls(dirs: Dirs, configure: Configure, files: oubli::grpc::TlsFiles, ca_pem: Vec<u8>) -> Server {
        let configure: Configure = std::sync::Arc::new(move |c: &mut oubli::Config| {
            configure(c);
            c.tls = Some(files.clone());
        });
        Server { tls_ca: Some(ca_pem), ..Server::start_with(dirs, configure).await }
    }

    /// Where the server serves metrics, if configured to.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.embedded.metrics_addr
    }

    /// Where the server serves the log's tiles, if configured to.
    pub fn tiles_addr(&self) -> Option<SocketAddr> {
        self.embedded.tiles_addr
    }

    /// A client with the local all-roles token.
    pub async fn client(&self) -> TemplatesServiceClient<AuthChannel> {
        TemplatesServiceClient::new(self.channel().await)
    }

    /// A connection with the local all-roles token.
    pub async fn channel(&self) -> AuthChannel {
        let token = std::fs::read_to_string(self.dirs.keys.join(oubli::grpc::LOCAL_TOKEN_FILE)).ok();
        self.channel_as(token.as_deref().map(str::trim)).await
    }

    /// A connection sending `token` (or none).
    pub async fn channel_as(&self, token: Option<&str>) -> AuthChannel {
        let channel = self.raw_channel().await;
        tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(token).expect("token"))
    }

    pub async fn raw_channel(&self) -> Channel {
        match &self.tls_ca {
            Some(ca) => self.channel_tls(ca).await.expect("connect over TLS"),
            None => {
                Channel::from_shared(format!("http://{}", self.addr)).expect("url").connect().await.expect("connect")
            }
        }
    }

    /// A TLS connection that trusts only `ca_pem` (the server's CA, or another to be refused).
    pub async fn channel_tls(&self, ca_pem: &[u8]) -> Result<Channel, tonic::transport::Error> {
        let tls =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
        Channel::from_shared(format!("https://{}", self.addr)).expect("url").tls_config(tls)?.connect().await
    }

    /// Stops the server, waits until the store is closed, and hands the dirs back.
    pub async fn stop(self) -> Dirs {
        self.embedded.stop().await.expect("server ran without error");
        self.dirs
    }

    pub async fn restart(self) -> Server {
        let (configure, tls_ca) = (self.configure.clone(), self.tls_ca.clone());
        Server { tls_ca, ..Server::start_with(self.stop().await, configure).await }
    }

    /// Restarts with a different configuration from now on.
    pub async fn restart_with(self, configure: Configure) -> Server {
        Server::start_with(self.stop().await, configure).await
    }
}

/// A valid enrolment request with a given vector and source.
pub fn request(values: Vec<f32>, source_uri: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        embedding: Some(pb::Embedding { values }),
        provenance: Some(pb::Provenance {
            source_uri: source_uri.to_string(),
            collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            source_kind: pb::SourceKind::PublicWebScrape.into(),
            legal_basis: pb::LegalBasis::NoneDeclared.into(),
            jurisdiction: "FR".into(),
        }),
        idempotency_key: String::new(),
    }
}

/// The items of an `EnrollStream` call, one per enrolment request.
pub fn stream_of(
    requests: impl IntoIterator<Item = pb::EnrollRequest>,
) -> impl tokio_stream::Stream<Item = pb::EnrollStreamRequest> {
    tokio_stream::iter(requests.into_iter().map(|r| pb::EnrollStreamRequest { item: Some(r) }))
}

/// `n` seeded synthetic enrolment requests (one sample of each of `n` identities), and their
/// unit-length vectors.
pub fn seeded(n: usize, seed: u64) -> (Vec<pb::EnrollRequest>, Vec<Vec<f32>>) {
    let config =
        PopulationConfig { seed, identities: n, samples_per_identity: 1, probes_per_identity: 0, ..Default::default() };
    let population = Population::generate(&config).expect("valid population");
    requests(&population)
}

/// Enrolment requests for every sample of `population`, and the samples.
pub fn requests(population: &Population) -> (Vec<pb::EnrollRequest>, Vec<Vec<f32>>) {
    (0..population.len())
        .map(|i| {
            let values = population.sample(i).to_vec();
            let request = pb::EnrollRequest {
                embedding: Some(pb::Embedding { values: values.clone() }),
                provenance: Some(oubli::grpc::provenance_to_pb(&population.provenance[i])),
                idempotency_key: String::new(),
            };
            (request, values)
        })
        .unzip()
}

pub async fn record_count(client: &mut TemplatesServiceClient<AuthChannel>) -> u64 {
    client.stats(pb::StatsRequest {}).await.expect("stats").into_inner().record_count
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Copies a directory tree (a data dir while its server is stopped).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Runs the `oubli` CLI; returns (success, stdout + stderr).
pub fn oubli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oubli")).args(args).output().expect("run oubli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The log now extends the checkpoint `before` (consistency proof checked).
pub async fn assert_log_extends(server_channel: oubli::grpc::AuthChannel, before: &str) -> u64 {
    let mut log = TransparencyServiceClient::new(server_channel);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    let key = VerifierKey::parse(&key).unwrap();
    let now = log.get_checkpoint(pb::GetCheckpointRequest {}).await.unwrap().into_inner().checkpoint;
    let (old, new) = (receipt::open_checkpoint(before, &key).unwrap(), receipt::open_checkpoint(&now, &key).unwrap());
    assert!(new.size >= old.size, "the log shrank from {} to {}", old.size, new.size);
    if old.size == 0 {
        // Every tree extends the empty one (and a proof from it proves nothing).
        return new.size;
    }
    let proof = log
        .get_consistency_proof(pb::GetConsistencyProofRequest { from_size: old.size, to_size: new.size })
        .await
        .unwrap()
        .into_inner();
    let proof: Vec<Hash> = proof.hashes.into_iter().map(|h| h.try_into().unwrap()).collect();
    merkle::verify_consistency(TreeSize(old.size), TreeSize(new.size), &old.root, &new.root, &proof)
        .expect("the log only grew");
    new.size
}

/// Every log entry's event.
pub async fn events(server_channel: oubli::grpc::AuthChannel) -> Vec<Event> {
    let mut log = TransparencyServiceClient::new(server_channel);
    let mut out = Vec::new();
    loop {
        let start = out.len() as u64;
        let page =
            log.get_entries(pb::GetEntriesRequest { start, end: start + 1000 }).await.unwrap().into_inner().entries;
        if page.is_empty() {
            return out;
        }
        out.extend(page.iter().map(|e| Entry::decode(&e.data).unwrap().event));
    }
}

/// An `oubli-server` process on a loopback port, its log lines on a channel (the crash tests',
/// built with the `failpoints` feature).
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub struct Process {
    pub child: std::process::Child,
    pub addr: String,
    lines: std::sync::mpsc::Receiver<String>,
}

/// A test that panics still stops the server it started (and the lock its cargo holds, which
/// the child inherits, is released).
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
impl Process {
    pub fn spawn(dirs: &Dirs, failpoint: Option<&str>) -> Process {
        Process::spawn_with(dirs, failpoint, &[])
    }

    /// As [`Process::spawn`], with more environment variables.
    pub fn spawn_with(dirs: &Dirs, failpoint: Option<&str>, env: &[(&str, &str)]) -> Process {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_oubli-server"));
        cmd.args(["--listen", "127.0.0.1:0", "--policy-profile", "permissive", "--purge-window-secs", "0"])
            .arg("--data-dir")
            .arg(&dirs.data)
            .arg("--key-dir")
            .arg(&dirs.keys)
            .env("NO_COLOR", "1")
            .env("OUBLI_LOG", "info")
            // One checkpoint per write batch unless a test asks for the cadence (`CADENCE`).
            .env("OUBLI_CHECKPOINT_INTERVAL_MS", "0")
            .env_remove("OUBLI_FAILPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(f) = failpoint {
            cmd.env("OUBLI_FAILPOINT", f);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().expect("oubli-server starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Process { child, addr: String::new(), lines };
        let line = process.wait_for("serving oubli.v1");
        let at = line.find("127.0.0.1:").expect("the address is logged");
        process.addr = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
        process
    }

    /// As [`Process::spawn`], signing checkpoints at a 50 ms cadence, as a server does by
    /// default (at 1 s): leaves may be sequenced but unpublished when it is killed.
    pub fn spawn_cadence(dirs: &Dirs) -> Process {
        Process::spawn_with(dirs, None, &[("OUBLI_CHECKPOINT_INTERVAL_MS", "50")])
    }

    /// The first log line containing `text` (the server is given a minute to get there).
    pub fn wait_for(&self, text: &str) -> String {
        loop {
            match self.lines.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    pub async fn channel(&self, dirs: &Dirs) -> oubli::grpc::AuthChannel {
        let token = std::fs::read_to_string(dirs.keys.join(oubli::grpc::LOCAL_TOKEN_FILE)).expect("local token");
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        tonic::service::interceptor::InterceptedService::new(
            channel,
            oubli::grpc::Bearer::new(Some(token.trim())).expect("token"),
        )
    }
}

#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn log_key(channel: oubli::grpc::AuthChannel) -> VerifierKey {
    let mut log = TransparencyServiceClient::new(channel);
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.unwrap().into_inner().verifier_key;
    VerifierKey::parse(&key).unwrap()
}

/// Calls `call` again while the answer is a pending receipt (a log signing at a cadence has
/// not yet published a checkpoint covering its leaf): at most 200 times, 50 ms apart.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
pub async fn until_published<T, F, Fut>(mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..200 {
        match call().await {
            Err(s) if s.code() == tonic::Code::Unavailable && s.message().starts_with("pending:") => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    call().await
}

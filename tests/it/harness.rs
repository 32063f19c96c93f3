//! Starts and stops the real server in-process.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use oubli::{
    grpc::{
        AuthChannel, Bearer, Embedded,
        pb::{self, templates_client::TemplatesClient},
    },
    synth::{Population, PopulationConfig},
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
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (data, keys) = (tmp.path().join("data"), tmp.path().join("keys"));
        Dirs { _tmp: tmp, data, keys }
    }
}

pub struct Server {
    pub addr: SocketAddr,
    embedded: Embedded,
    pub dirs: Dirs,
    configure: Configure,
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
        Server { addr: embedded.addr, embedded, dirs, configure }
    }

    /// A client with the local all-roles token.
    pub async fn client(&self) -> TemplatesClient<AuthChannel> {
        TemplatesClient::new(self.channel().await)
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
        Channel::from_shared(format!("http://{}", self.addr)).expect("url").connect().await.expect("connect")
    }

    /// Stops the server, waits until the store is closed, and hands the dirs back.
    pub async fn stop(self) -> Dirs {
        self.embedded.stop().await.expect("server ran without error");
        self.dirs
    }

    pub async fn restart(self) -> Server {
        let configure = self.configure.clone();
        Server::start_with(self.stop().await, configure).await
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

pub async fn record_count(client: &mut TemplatesClient<AuthChannel>) -> u64 {
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

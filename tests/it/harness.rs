//! Starts and stops the real server in-process.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use oubli::{
    grpc::{
        Embedded,
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
}

impl Server {
    pub async fn start(dirs: Dirs) -> Server {
        let config = oubli::Config {
            data_dir: dirs.data.clone(),
            key_dir: dirs.keys.clone(),
            dimension: None,
            log_origin: None,
        };
        let embedded = Embedded::start(config).await.expect("bind loopback");
        Server { addr: embedded.addr, embedded, dirs }
    }

    pub async fn client(&self) -> TemplatesClient<Channel> {
        TemplatesClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("url").connect().await.expect("connect")
    }

    /// Stops the server, waits until the store is closed, and hands the dirs back.
    pub async fn stop(self) -> Dirs {
        self.embedded.stop().await.expect("server ran without error");
        self.dirs
    }

    pub async fn restart(self) -> Server {
        Server::start(self.stop().await).await
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

pub async fn record_count(client: &mut TemplatesClient<Channel>) -> u64 {
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

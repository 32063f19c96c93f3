//! `oubli`: the command-line client, and `oubli demo`, which runs an embedded server.
use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::Timestamp;
use oubli::grpc::{
    AuthChannel, Bearer, MAX_STREAM_ITEMS,
    pb::{self, templates_service_client::TemplatesServiceClient},
};
use oubli::synth::files::{ProvenanceLine, read_jsonl, read_matrix};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// The token every connection sends, set once from the command line.
static TOKEN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
/// The CA certificate file every connection verifies the server with (TLS), set once likewise.
static CA_CERT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

#[macro_use]
mod output;
mod capture;
mod cluster;
mod cluster_walk;
mod demo;
mod erase;
mod export;
mod load;
mod log;
mod page;
mod rights;
mod secret;
mod synth;

#[derive(Parser, Debug)]
#[command(version, about = "Client for the Oubli face-template API (synthetic data only)")]
struct Cli {
    /// Server address: host:port, http://host:port or https://host:port.
    #[arg(long, global = true, env = "OUBLI_SERVER", default_value = "127.0.0.1:50051")]
    server: String,
    /// Connect over TLS and verify the server's certificate with this CA certificate (PEM).
    /// Without it, an https:// server is verified with the system's root certificates.
    #[arg(long, global = true, env = "OUBLI_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Bearer token for calls that need a role (operator, privacy-desk, auditor, admin, replica).
    #[arg(long, global = true, env = "OUBLI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token, used when --token is not given (a server with default
    /// settings writes its local all-roles token there on first start).
    #[arg(long, global = true, env = "OUBLI_TOKEN_FILE", default_value = "./oubli-keys/local.token")]
    token_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Enrol templates from a JSONL file (one record per line) or a .npy matrix plus a
    /// provenance JSONL file (one line per row).
    Enroll {
        /// records.jsonl, or embeddings.npy (float32, one row per template).
        file: PathBuf,
        /// Provenance for a .npy file: JSONL, one line per row.
        #[arg(long)]
        provenance: Option<PathBuf>,
        /// Records per stream (each stream is one atomic, durable write).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Search with a probe template taken from a file.
    Search {
        /// A .npy matrix, a JSONL file of records, or a JSON array of numbers.
        #[arg(long)]
        probe: PathBuf,
        /// Which row (.npy) or line (.jsonl) of the file to use, from 0.
        #[arg(long, default_value_t = 0)]
        row: usize,
        /// How many hits, 1 to 1000.
        #[arg(short, long, default_value_t = 10)]
        k: u32,
        /// Only hits scoring at least this (cosine, -1 to 1).
        #[arg(long)]
        min_score: Option<f32>,
        /// Use the exact scan even if the server answers from its HNSW index.
        #[arg(long)]
        exact: bool,
    },
    /// Show one record's provenance and metadata.
    Get {
        record_id: String,
        /// Also print the template itself.
        #[arg(long)]
        include_embedding: bool,
    },
    /// Show what the store holds.
    Stats,
    /// Start an embedded server on a local data dir and show what Oubli does, step by step.
    Demo(demo::Args),
    /// Generate, enrol and measure a seeded synthetic population.
    #[command(subcommand)]
    Synth(synth::Command),
    /// Read the public transparency log: checkpoint, verifier key, entries, proofs, receipts.
    #[command(subcommand)]
    Log(log::Command),
    /// Check a receipt offline: its signature, the checkpoint's, the leaf and its inclusion
    /// proof (and, with --checkpoint, that the log only grew since). Exit 0 only if all pass.
    Verify(log::VerifyArgs),
    /// Witness the log: `check` it as a monitor, or `serve` c2sp.org/tlog-witness and cosign
    /// the checkpoints logs push (`key` makes the witness's key).
    #[command(subcommand)]
    Witness(log::WitnessCommand),
    /// Access requests (GDPR Art. 15): submit one, follow it, read the report.
    #[command(subcommand)]
    Access(rights::Access),
    /// The privacy desk's view of rights requests.
    #[command(subcommand)]
    Requests(rights::Requests),
    /// The ingest policy: show, reload, or check a file offline.
    #[command(subcommand)]
    Policy(rights::PolicyCommand),
    /// The audit trail (auditor).
    #[command(subcommand)]
    Audit(rights::Audit),
    /// Manage a tokens file (offline).
    #[command(subcommand)]
    Tokens(rights::TokensCommand),
    /// The capture applications the server trusts to establish a person's identity (offline).
    #[command(subcommand)]
    CaptureKeys(capture::CaptureKeysCommand),
    /// Play a trusted capture application: sign the person's probes for one request, under a
    /// fresh challenge from the server, into a capture file for `access submit --capture` or
    /// `erase submit --capture`.
    Capture(capture::CaptureArgs),
    /// Erasure requests (GDPR Art. 17): submit one, follow it, get its receipts.
    #[command(subcommand)]
    Erase(erase::Erase),
    /// Ask for a signed, logged statement that nothing held matches your face any more.
    Attest(erase::AttestArgs),
    /// Key-encryption keys (admin).
    #[command(subcommand)]
    Keys(erase::Keys),
    /// Notices of erased records for their recipients (Art. 19; operator).
    #[command(subcommand)]
    Notifications(erase::Notifications),
    /// Concurrent clients with a mixed workload for a bounded time, then a consistency check.
    Load(load::Args),
    /// The etcd key store: its members' status, and a narrated purge on a local cluster.
    #[command(subcommand)]
    Cluster(cluster::Command),
}

/// One line of a records JSONL file: a template with its provenance.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecordLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    #[serde(flatten)]
    pub provenance: ProvenanceLine,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// An enrolment request from a template and a provenance line (checked here first, so a bad
/// line is reported with its line number before anything is sent).
pub fn enroll_request(
    embedding: Vec<f32>,
    provenance: &ProvenanceLine,
    idempotency_key: Option<String>,
) -> Result<pb::EnrollRequest> {
    let provenance = provenance.to_provenance(Timestamp::now())?;
    Ok(pb::EnrollRequest {
        embedding: Some(pb::Embedding { values: embedding }),
        provenance: Some(oubli::grpc::provenance_to_pb(&provenance)),
        idempotency_key: idempotency_key.unwrap_or_default(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let token = cli.token.clone().or_else(|| fs::read_to_string(&cli.token_file).ok().map(|t| t.trim().to_string()));
    let _ = TOKEN.set(token);
    let _ = CA_CERT.set(cli.ca_cert.clone());
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Synth(command) => synth::run(command, &cli.server, cli.json).await,
        Command::Log(command) => log::run(command, &cli.server).await,
        Command::Verify(args) => log::verify(args, &cli.server).await,
        Command::Witness(command) => log::witness_command(command, &cli.server).await,
        Command::Access(c) => rights::access(c, &cli.server, cli.json).await,
        Command::Requests(c) => rights::requests(c, &cli.server, cli.json).await,
        Command::Policy(c) => rights::policy(c, &cli.server).await,
        Command::Audit(c) => rights::audit(c, &cli.server, cli.json).await,
        Command::Tokens(c) => rights::tokens(c),
        Command::CaptureKeys(c) => capture::capture_keys(c),
        Command::Capture(args) => capture::capture(args, &cli.server).await,
        Command::Erase(c) => erase::erase(c, &cli.server, cli.json).await,
        Command::Attest(args) => erase::attest(args, &cli.server).await,
        Command::Keys(c) => erase::keys(c, &cli.server).await,
        Command::Notifications(c) => erase::notifications(c, &cli.server, cli.json).await,
        Command::Load(args) => load::run(args, &cli.server, cli.json).await,
        Command::Cluster(cluster::Command::Walk(args)) => cluster_walk::run(args).await,
        // The key store's client is synchronous over a runtime of its own.
        Command::Cluster(c) => {
            let json = cli.json;
            tokio::task::spawn_blocking(move || cluster::run(c, json)).await?
        }
        command => {
            let mut client = connect(&cli.server).await?;
            match command {
                Command::Enroll { file, provenance, batch } => {
                    let requests = read_records(&file, provenance.as_deref())?;
                    // Ids are printed as each stream is acknowledged (JSON: one object per stream).
                    let json = cli.json;
                    enroll_all(&mut client, requests, batch, !json, &mut |ids| {
                        if json {
                            outln!("{}", serde_json::json!({ "record_ids": ids }));
                        } else {
                            for id in ids {
                                outln!("{id}");
                            }
                        }
                        Ok(())
                    })
                    .await?;
                }
                Command::Search { probe, row, k, min_score, exact } => {
                    let values = read_probe(&probe, row)?;
                    let response = client
                        .search(pb::SearchRequest { probe: Some(pb::Embedding { values }), k, min_score, exact })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    print_search(&response, cli.json);
                }
                Command::Get { record_id, include_embedding } => {
                    let response = client
                        .get(pb::GetRequest { record_id, include_embedding })
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    let record = response.record.ok_or_else(|| anyhow!("server returned no record"))?;
                    print_record(&record, cli.json);
                }
                Command::Stats => {
                    let s = client.stats(pb::StatsRequest {}).await.map_err(status_error)?.into_inner();
                    if cli.json {
                        outln!(
                            "{}",
                            serde_json::json!({
                                "record_count": s.record_count, "dimension": s.dimension,
                                "bytes_on_disk": s.bytes_on_disk, "sst_file_count": s.sst_file_count,
                                "index": s.index,
                            })
                        );
                    } else {
                        outln!("records:       {}", s.record_count);
                        outln!("dimension:     {}", s.dimension);
                        outln!("bytes on disk: {}", s.bytes_on_disk);
                        outln!("SST files:     {}", s.sst_file_count);
                        outln!("index:         {}", s.index);
                    }
                }
                Command::Demo(_)
                | Command::Synth(_)
                | Command::Log(_)
                | Command::Verify(_)
                | Command::Witness(_)
                | Command::Access(_)
                | Command::Requests(_)
                | Command::Policy(_)
                | Command::Audit(_)
                | Command::Tokens(_)
                | Command::CaptureKeys(_)
                | Command::Capture(_)
                | Command::Erase(_)
                | Command::Attest(_)
                | Command::Keys(_)
                | Command::Notifications(_)
                | Command::Load(_)
                | Command::Cluster(_) => unreachable!("handled above"),
            }
            Ok(())
        }
    }
}

/// A connection to `server` (`host:port` or a URL) that sends the command line's token.
pub async fn channel(server: &str) -> Result<AuthChannel> {
    let token = TOKEN.get().cloned().flatten();
    channel_with(server, token.as_deref()).await
}

/// A connection to `server` that sends `token` (or none): over TLS when the command line gave
/// --ca-cert or the address is `https://`, the certificate checked for the address's host.
pub async fn channel_with(server: &str, token: Option<&str>) -> Result<AuthChannel> {
    let ca_cert = CA_CERT.get().cloned().flatten();
    let url = match (server.split_once("://"), &ca_cert) {
        (Some(("http", rest)), Some(_)) => {
            bail!("--ca-cert is for TLS, but the server address {server} is http://: give https://{rest} or {rest}")
        }
        (Some(_), _) => server.to_string(),
        (None, Some(_)) => format!("https://{server}"),
        (None, None) => format!("http://{server}"),
    };
    let mut endpoint = Channel::from_shared(url.clone())
        .with_context(|| format!("{server:?} is not a server address (use host:port)"))?;
    let tls = url.starts_with("https://");
    if tls {
        // tonic checks the certificate against the URL's host (a name or an IP address).
        let config = match &ca_cert {
            Some(path) => ClientTlsConfig::new().ca_certificate(read_ca_cert(path)?),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint.tls_config(config).with_context(|| format!("cannot set up TLS for {url}"))?;
    }
    let channel = endpoint.connect().await.with_context(|| {
        if tls {
            format!(
                "cannot reach an Oubli server over TLS at {url}; is oubli-server running with --tls-cert, \
                 and is its certificate signed by the CA given with --ca-cert, for this host?"
            )
        } else {
            format!("cannot reach an Oubli server at {url}; is oubli-server running?")
        }
    })?;
    let bearer = Bearer::new(token).context("the token is not valid header text")?;
    Ok(tonic::service::interceptor::InterceptedService::new(channel, bearer))
}

/// The CA certificate of --ca-cert, refused with the fix if the file holds none.
fn read_ca_cert(path: &Path) -> Result<Certificate> {
    let pem =
        fs::read(path).with_context(|| format!("cannot read the CA certificate {} (--ca-cert)", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "{} holds no PEM certificate: --ca-cert takes the certificate (PEM) of the CA that signed the server's",
            path.display()
        );
    }
    Ok(Certificate::from_pem(pem))
}

pub async fn connect(server: &str) -> Result<TemplatesServiceClient<AuthChannel>> {
    Ok(TemplatesServiceClient::new(channel(server).await?))
}

/// A gRPC error as the user should read it.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    // A connection that breaks on its first call is most often plaintext sent to a TLS server.
    let transport = std::error::Error::source(&status).is_some_and(|s| s.is::<tonic::transport::Error>());
    if transport && CA_CERT.get().cloned().flatten().is_none() {
        return anyhow!(
            "{:?}: {} (the connection failed: if the server serves TLS, give --ca-cert FILE or an https:// address)",
            status.code(),
            status.message()
        );
    }
    anyhow!("{:?}: {}", status.code(), status.message())
}

/// Whether the server answered that a receipt is pending: its leaf is logged, but the log
/// (signing checkpoints at a cadence) has not yet published a checkpoint covering it.
fn is_pending(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().starts_with("pending:")
}

/// Calls `call` again while the server answers that the receipt is pending, for at most `wait`
/// seconds, as each answer's `retry-after` says; then returns its last answer.
pub async fn until_published<T, F, Fut>(wait: u64, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    use std::time::Duration;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        match call().await {
            Err(status) if is_pending(&status) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    let hint = if wait == 0 { " (give --wait SECS to wait for it)" } else { "" };
                    return Err(tonic::Status::unavailable(format!("{}{hint}", status.message())));
                }
                let after = status
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(after.max(1)).min(deadline - now)).await;
            }
            other => return other,
        }
    }
}

/// Reads enrolment requests from a records JSONL file, or a .npy matrix with provenance JSONL.
pub fn read_records(file: &Path, provenance: Option<&Path>) -> Result<Vec<pb::EnrollRequest>> {
    let is_npy = file.extension().is_some_and(|e| e == "npy");
    if is_npy {
        let provenance =
            provenance.ok_or_else(|| anyhow!("a .npy file needs --provenance FILE.jsonl, one line per row"))?;
        let matrix = read_matrix(file)?;
        let lines: Vec<ProvenanceLine> = read_jsonl(provenance)?;
        if lines.len() != matrix.nrows() {
            bail!(
                "{} has {} rows but {} has {} lines",
                file.display(),
                matrix.nrows(),
                provenance.display(),
                lines.len()
            );
        }
        lines
            .iter()
            .zip(matrix.rows())
            .enumerate()
            .map(|(n, (line, row))| {
                enroll_request(row.to_vec(), line, None)
                    .with_context(|| format!("{} line {}", provenance.display(), n + 1))
            })
            .collect()
    } else {
        read_jsonl::<RecordLine>(file)?
            .into_iter()
            .enumerate()
            .map(|(n, line)| {
                let embedding = line.embedding.ok_or_else(|| anyhow!("line {}: no \"embedding\"", n + 1))?;
                enroll_request(embedding, &line.provenance, line.idempotency_key)
                    .with_context(|| format!("{} line {}", file.display(), n + 1))
            })
            .collect()
    }
}

pub fn read_probe(file: &Path, row: usize) -> Result<Vec<f32>> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let matrix = read_matrix(file)?;
            let r = matrix.rows().into_iter().nth(row);
            let r = r.ok_or_else(|| {
                anyhow!("{} has {} rows; --row {row} is past the end", file.display(), matrix.nrows())
            })?;
            Ok(r.to_vec())
        }
        Some("jsonl") => read_jsonl::<RecordLine>(file)?
            .into_iter()
            .nth(row)
            .and_then(|l| l.embedding)
            .ok_or_else(|| anyhow!("{} has no line {row} with an \"embedding\"", file.display())),
        _ => serde_json::from_slice(&fs::read(file).with_context(|| format!("cannot read {}", file.display()))?)
            .with_context(|| format!("{}: expected a JSON array of numbers", file.display())),
    }
}

/// Enrols `requests` in streams of `batch` (each one atomic, durable write), with a progress
/// bar, handing each stream's ids to `committed` as soon as the server acknowledges them: if a
/// later stream fails, the records already stored are not lost to the caller.
pub async fn enroll_all(
    client: &mut TemplatesServiceClient<AuthChannel>,
    requests: Vec<pb::EnrollRequest>,
    batch: usize,
    progress: bool,
    committed: &mut dyn FnMut(&[String]) -> Result<()>,
) -> Result<usize> {
    if !(1..=MAX_STREAM_ITEMS).contains(&batch) {
        bail!("--batch is {batch}; a stream holds 1 to {MAX_STREAM_ITEMS} records");
    }
    let total = requests.len();
    let bar = if progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} templates ({per_sec}, eta {eta})")
            .expect("the progress template is valid"),
    );
    let started = Instant::now();
    let mut done = 0;
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let chunk: Vec<_> = requests.by_ref().take(batch).collect();
        let n = chunk.len();
        let items = chunk.into_iter().map(|item| pb::EnrollStreamRequest { item: Some(item) });
        let response = client.enroll_stream(tokio_stream::iter(items)).await.map_err(|s| {
            status_error(s).context(format!(
                "the stream of records {done} to {} was refused; records before it were stored",
                done + n - 1
            ))
        })?;
        committed(&response.into_inner().record_ids)?;
        done += n;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if progress {
        eprintln!("enrolled {total} templates in {secs:.2} s ({:.0} per second)", total as f64 / secs.max(1e-9));
    }
    Ok(done)
}

pub fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| Timestamp::new(t.seconds, 0).ok()).map(|t| t.to_string()).unwrap_or_default()
}

/// Provenance from the server in the file spelling (the domain types name every value once).
fn provenance_of(p: Option<&pb::Provenance>) -> Option<ProvenanceLine> {
    let tomorrow = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(24)).ok()?;
    let mut p = oubli::grpc::provenance_from_pb(p.cloned(), tomorrow).ok().map(|p| ProvenanceLine::from(&p))?;
    p.collected_at = p.collected_at.parse::<Timestamp>().ok()?.round(jiff::Unit::Second).ok()?.to_string();
    Some(p)
}

pub fn provenance_json(p: Option<&pb::Provenance>) -> serde_json::Value {
    provenance_of(p).map_or(serde_json::Value::Null, |p| serde_json::json!(p))
}

pub fn provenance_line(p: Option<&pb::Provenance>) -> String {
    match provenance_of(p) {
        Some(p) => format!(
            "{}  collected {}  {}  basis: {}  jurisdiction: {}",
            p.source_uri, p.collected_at, p.source_kind, p.legal_basis, p.jurisdiction
        ),
        None => "(no valid provenance)".into(),
    }
}

fn print_search(response: &pb::SearchResponse, json: bool) {
    if json {
        let hits: Vec<_> = response
            .hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "record_id": h.record_id, "score": h.score,
                    "provenance": provenance_json(h.provenance.as_ref()),
                    "enrolled_at": time_text(h.enrolled_at.as_ref()),
                })
            })
            .collect();
        outln!("{}", serde_json::json!({ "hits": hits, "candidates": response.candidates, "index": response.index }));
    } else {
        outln!("{} hits from {} records ({} search)", response.hits.len(), response.candidates, response.index);
        for h in &response.hits {
            outln!("{:>7.4}  {}  {}", h.score, h.record_id, provenance_line(h.provenance.as_ref()));
        }
    }
}

fn print_record(record: &pb::Record, json: bool) {
    let embedding = record.embedding.as_ref().map(|e| e.values.clone());
    if json {
        let mut value = serde_json::json!({
            "record_id": record.record_id,
            "provenance": provenance_json(record.provenance.as_ref()),
            "enrolled_at": time_text(record.enrolled_at.as_ref()),
        });
        if let Some(e) = embedding {
            value["embedding"] = serde_json::json!(e);
        }
        outln!("{value}");
    } else {
        outln!("record:      {}", record.record_id);
        outln!("enrolled at: {}", time_text(record.enrolled_at.as_ref()));
        outln!("provenance:  {}", provenance_line(record.provenance.as_ref()));
        if let Some(e) = embedding {
            outln!("embedding:   {e:?}");
        }
    }
}

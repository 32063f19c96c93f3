//! `oubli load`: concurrent gRPC clients with a mixed workload for a bounded time, then a
//! consistency check of what they were told against what the server holds.
//!
//! Each client picks operations by weight: `enroll` (one random 512-d template), `search` (one
//! of the templates enrolled so far, or a random one), `access` (an access request by one
//! enrolled template, until answered) and `erase` (an erasure by one enrolled template, until
//! phase 1 is logged). Afterwards every acknowledged record not erased must be found, every
//! erased one must be gone, and the log must extend the checkpoint taken before the run.
//!
//! With `--bench` (or `--chroma URL`) it measures one operation instead (`--mix search:1` or
//! `--mix enroll:1`, `load/bench.rs`): requests built before the clock starts (probes from
//! `--probes FILE.npy`), each client's latencies kept in its own vector, a warm-up, then calls
//! per second and percentiles over the measured seconds, and no consistency check. `--chroma
//! URL --collection ID` sends the same searches and single-record adds to a Chroma server's
//! HTTP API (v2, `load/chroma.rs`), the calls its Python client makes, so both systems are
//! measured by the same client.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use oubli::{
    grpc::{
        AuthChannel, Embedded,
        pb::{
            self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
            templates_service_client::TemplatesServiceClient, transparency_service_client::TransparencyServiceClient,
        },
    },
    rights::{identity::Terms, request::Kind},
    transparency::{merkle, note::VerifierKey, receipt},
};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod bench;
mod chroma;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent clients (1 to 256).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds to run (1 to 3600).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Operation weights, e.g. enroll:40,search:50,access:5,erase:5.
    #[arg(long, default_value = "enroll:40,search:50,access:5,erase:5")]
    mix: String,
    /// Seed of the clients' random choices and templates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run against an embedded server on a fresh temp data dir (permissive policy, no
    /// per-address submission limit) instead of --server.
    #[arg(long)]
    embedded: bool,
    /// Template dimension (the server's).
    #[arg(long, default_value_t = 512)]
    dimension: usize,
    /// A capture application the server trusts (its key file, from `oubli capture-keys add
    /// --generate`): access and erasure requests are signed with it, so they are answered.
    /// With --embedded, a new one is made and trusted.
    #[arg(long)]
    capture_key: Option<std::path::PathBuf>,
    /// Measure one operation (the mix's only op: search or enroll) instead of the mixed run:
    /// pre-built requests, no shared ledger, no consistency check.
    #[arg(long)]
    bench: bool,
    /// Seconds of calls before the measured --duration (--bench; 0 to 600).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Search probes, a float32 .npy matrix (one row per probe), sent in turn by the clients
    /// (--bench); default: 1,000 random unit vectors.
    #[arg(long)]
    probes: Option<std::path::PathBuf>,
    /// Hits per search (--bench).
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Before measuring, search every probe once and write its hits to this file, one JSON
    /// object a line in row order: {"row", "ids", "scores"} (Oubli) or {"row", "ids",
    /// "distances"} (Chroma) (--bench, search).
    #[arg(long)]
    results: Option<std::path::PathBuf>,
    /// Send the calls to a Chroma server (its base URL, http://host:port) instead of Oubli
    /// (implies --bench): queries and single-record adds through its HTTP API v2, in the
    /// default tenant and database.
    #[arg(long, requires = "collection")]
    chroma: Option<String>,
    /// The Chroma collection's id (a UUID), for --chroma.
    #[arg(long)]
    collection: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Enroll,
    Search,
    Access,
    Erase,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Enroll => "enroll",
            Op::Search => "search",
            Op::Access => "access",
            Op::Erase => "erase",
        }
    }
}

fn parse_mix(mix: &str) -> Result<Vec<(Op, u32)>> {
    let mut out = Vec::new();
    for part in mix.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) = part.split_once(':').with_context(|| format!("mix item {part:?}: write op:weight"))?;
        let op = match name.trim() {
            "enroll" => Op::Enroll,
            "search" => Op::Search,
            "access" => Op::Access,
            "erase" => Op::Erase,
            other => bail!("mix op {other:?}: use enroll, search, access or erase"),
        };
        out.push((op, weight.trim().parse().with_context(|| format!("mix weight {weight:?}"))?));
    }
    if out.iter().map(|(_, w)| *w).sum::<u32>() == 0 {
        bail!("the mix {mix:?} has no weight");
    }
    Ok(out)
}

/// What the clients were told, shared.
#[derive(Default)]
struct Ledger {
    /// Acknowledged records and their templates (those not yet picked for erasure).
    pool: Vec<(String, Vec<f32>)>,
    acknowledged: BTreeSet<String>,
    erased: BTreeSet<String>,
    /// Records whose erasure failed or timed out after it was sent: the server may have erased
    /// them or not, so the check counts neither a loss nor a resurrection for them.
    unsettled: BTreeSet<String>,
    latencies: BTreeMap<Op, Vec<Duration>>,
    errors: BTreeMap<Op, Vec<String>>,
    /// Calls the server refused with RESOURCE_EXHAUSTED (its rate limits or its queue).
    throttled: BTreeMap<Op, usize>,
}

fn unit(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random::<f32>() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

pub async fn run(args: Args, server: &str, json: bool) -> Result<()> {
    if !(1..=256).contains(&args.clients) || !(1..=3600).contains(&args.duration) {
        bail!("use 1 to 256 clients and 1 to 3600 seconds");
    }
    if args.bench || args.chroma.is_some() {
        return bench::run(args, server, json).await;
    }
    if args.probes.is_some() || args.results.is_some() {
        bail!("--probes and --results are for --bench");
    }
    let mut mix = parse_mix(&args.mix)?;
    if !args.embedded && args.capture_key.is_none() {
        // A server answers a request only once the sender's identity is established: without
        // a capture application it trusts, access and erasure requests would wait forever.
        let before = mix.len();
        mix.retain(|(op, _)| !matches!(op, Op::Access | Op::Erase));
        if mix.len() < before {
            eprintln!(
                "access and erasure requests left out of the mix: the server answers them only with a signed \
                 capture (give --capture-key FILE, a capture application the server trusts)"
            );
        }
        if mix.is_empty() {
            bail!("nothing left to run: give --capture-key FILE for access and erasure requests");
        }
    }
    let (embedded, _tmp) = if args.embedded {
        let (server, token, tmp) = start_embedded(args.dimension).await?;
        (Some((server, token)), Some(tmp))
    } else {
        (None, None)
    };
    let app = match (&args.capture_key, &_tmp) {
        (Some(path), _) => Some(super::capture::App::load(path)?),
        (None, Some(tmp)) => Some(super::capture::App::trusted_by(
            &tmp.path().join("keys").join(oubli::grpc::CAPTURE_KEYS_FILE),
            "oubli-load",
        )?),
        (None, None) => None,
    };
    // Sources are unique to this run: an erasure suppresses its records' sources, and a later
    // run must never try to enrol them again.
    let run = {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).context("no randomness for the run's id")?;
        hex::encode(nonce)
    };
    let work = Arc::new(Work { mix: mix.clone(), app, run });
    let address = embedded.as_ref().map_or_else(|| server.to_string(), |(s, _)| s.addr.to_string());
    let token = embedded.as_ref().map(|(_, t)| t.clone());
    let connect = || {
        let address = address.clone();
        let token = token.clone();
        async move {
            match token {
                Some(t) => super::channel_with(&address, Some(&t)).await,
                None => super::channel(&address).await,
            }
        }
    };

    let mut log = TransparencyServiceClient::new(connect().await?);
    let before = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(super::status_error)?.into_inner();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    eprintln!("{} clients for {} s on {address}, mix {}", args.clients, args.duration, args.mix);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let channel = connect().await?;
        let (ledger, work) = (ledger.clone(), work.clone());
        let (seed, d) = (args.seed.wrapping_mul(1000).wrapping_add(c as u64), args.dimension);
        tasks.push(tokio::spawn(async move { client(c, channel, ledger, &work, seed, d, deadline).await }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = args.duration as f64;

    // Consistency: what the clients were told against what the server holds.
    let channel = connect().await?;
    AdminServiceClient::new(channel.clone()).run_purge(pb::RunPurgeRequest {}).await.map_err(super::status_error)?;
    let ledger = std::mem::take(&mut *ledger.lock());
    let mut templates = TemplatesServiceClient::new(channel.clone());
    let (mut lost, mut resurrected) = (Vec::new(), Vec::new());
    for id in ledger.acknowledged.iter().filter(|id| !ledger.unsettled.contains(*id)) {
        let got = templates.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        match (ledger.erased.contains(id), got) {
            (false, Err(e)) => lost.push(format!("{id}: {}", e.message())),
            (true, Ok(_)) => resurrected.push(id.clone()),
            (true, Err(e)) if e.code() != tonic::Code::NotFound => lost.push(format!("{id}: {}", e.message())),
            _ => {}
        }
    }
    let after = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(super::status_error)?.into_inner();
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.map_err(super::status_error)?.into_inner();
    let key = VerifierKey::parse(&key.verifier_key)?;
    let (old, new) = (
        receipt::open_checkpoint(&before.checkpoint, &key).map_err(anyhow::Error::msg)?,
        receipt::open_checkpoint(&after.checkpoint, &key).map_err(anyhow::Error::msg)?,
    );
    let proof =
        log.get_consistency_proof(pb::GetConsistencyProofRequest { from_size: old.size, to_size: new.size }).await;
    let consistent = old.size == 0
        || proof.is_ok_and(|p| {
            let hashes: Vec<merkle::Hash> =
                p.into_inner().hashes.into_iter().filter_map(|h| h.try_into().ok()).collect();
            merkle::verify_consistency(
                merkle::TreeSize(old.size),
                merkle::TreeSize(new.size),
                &old.root,
                &new.root,
                &hashes,
            )
            .is_ok()
        });

    outln!(
        "{:<8} {:>8} {:>9} {:>10} {:>10} {:>10} {:>9} {:>7}",
        "op",
        "count",
        "per s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "throttled",
        "errors"
    );
    let mut errors = 0;
    for (op, _) in &mix {
        let mut l = ledger.latencies.get(op).cloned().unwrap_or_default();
        l.sort();
        let q = |p: f64| l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).map_or(0.0, ms);
        let e = ledger.errors.get(op).map_or(0, Vec::len);
        errors += e;
        outln!(
            "{:<8} {:>8} {:>9.1} {:>10.2} {:>10.2} {:>10.2} {:>9} {:>7}",
            op.name(),
            l.len(),
            l.len() as f64 / wall,
            q(0.5),
            q(0.99),
            q(0.999),
            ledger.throttled.get(op).copied().unwrap_or(0),
            e
        );
    }
    for (op, list) in &ledger.errors {
        for e in list.iter().take(3) {
            eprintln!("  {} error: {e}", op.name());
        }
    }
    outln!(
        "consistency: {} acknowledged, {} erased, {} unsettled (an erasure that failed or timed out); {} lost, {} \
         resurrected; log {} -> {} leaves {}",
        ledger.acknowledged.len(),
        ledger.erased.len(),
        ledger.unsettled.len(),
        lost.len(),
        resurrected.len(),
        old.size,
        new.size,
        if consistent { "consistent" } else { "INCONSISTENT" }
    );
    for l in lost.iter().take(5) {
        eprintln!("  lost: {l}");
    }
    if let Some((server, _)) = embedded {
        drop((templates, log, channel));
        server.stop().await?;
    }
    if errors > 0 || !lost.is_empty() || !resurrected.is_empty() || !consistent {
        bail!("the load run failed its checks");
    }
    Ok(())
}

/// An embedded server on a fresh temp data dir (permissive policy, no per-address submission
/// limit), with its all-roles local token.
async fn start_embedded(dimension: usize) -> Result<(Embedded, String, TempDir)> {
    let tmp = TempDir::new()?;
    let mut config = oubli::Config::new(tmp.path().join("data"), tmp.path().join("keys"));
    config.rights.policy = oubli::rights::PolicySource::Profile("permissive".into());
    config.rights.submissions_per_minute = 1_000_000;
    config.rights.public_submissions_per_minute = 1_000_000;
    config.rights.queue_capacity = 1_000_000;
    config.dimension = Some(dimension);
    let server = Embedded::start(config).await.context("the embedded server did not start")?;
    let token = std::fs::read_to_string(tmp.path().join("keys").join(oubli::grpc::LOCAL_TOKEN_FILE))?;
    Ok((server, token.trim().to_string(), tmp))
}

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let mut name = [0u8; 8];
        getrandom::fill(&mut name).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let path = std::env::temp_dir().join(format!("oubli-load-{}", hex::encode(name)));
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What every client does: the mix of operations, and the capture application that signs its
/// rights requests.
struct Work {
    mix: Vec<(Op, u32)>,
    app: Option<super::capture::App>,
    /// This run's id, in every source it enrols.
    run: String,
}

async fn client(
    n: usize,
    channel: AuthChannel,
    ledger: Arc<Mutex<Ledger>>,
    work: &Work,
    seed: u64,
    d: usize,
    deadline: Instant,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut templates = TemplatesServiceClient::new(channel.clone());
    let mut rights = RightsServiceClient::new(channel);
    let mix = &work.mix;
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let mut pick = rng.random_range(0..total);
        let op = mix.iter().find(|(_, w)| {
            let hit = pick < *w;
            pick = pick.saturating_sub(*w);
            hit
        });
        let op = op.map_or(Op::Search, |(op, _)| *op);
        let started = Instant::now();
        let outcome: Result<(), tonic::Status> = match op {
            Op::Enroll => {
                let values = unit(&mut rng, d);
                i += 1;
                let request = pb::EnrollRequest {
                    embedding: Some(pb::Embedding { values: values.clone() }),
                    provenance: Some(pb::Provenance {
                        source_uri: format!("https://load.example/{}/{seed}/{n}/{i}.jpg", work.run),
                        collected_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                        // What the default (lawful) policy admits: the person enrolled, with consent.
                        source_kind: pb::SourceKind::ConsentedEnrolment.into(),
                        legal_basis: pb::LegalBasis::Consent.into(),
                        jurisdiction: "FR".into(),
                    }),
                    idempotency_key: String::new(),
                };
                match templates.enroll(request).await {
                    Ok(r) => {
                        let id = r.into_inner().record_id;
                        let mut l = ledger.lock();
                        l.acknowledged.insert(id.clone());
                        l.pool.push((id, values));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Search => {
                let probe = {
                    let l = ledger.lock();
                    (!l.pool.is_empty()).then(|| l.pool[rng.random_range(0..l.pool.len())].1.clone())
                }
                .unwrap_or_else(|| unit(&mut rng, d));
                let request = pb::SearchRequest {
                    probe: Some(pb::Embedding { values: probe }),
                    k: 10,
                    min_score: None,
                    exact: false,
                };
                templates.search(request).await.map(|_| ())
            }
            Op::Access | Op::Erase => {
                let picked = {
                    let mut l = ledger.lock();
                    if l.pool.is_empty() {
                        None
                    } else {
                        let at = rng.random_range(0..l.pool.len());
                        // An erased record leaves the pool, so no one searches for it again.
                        Some(if op == Op::Erase { l.pool.swap_remove(at) } else { l.pool[at].clone() })
                    }
                };
                match picked {
                    None => continue,
                    Some((id, probe)) => {
                        let answer = request(&mut rights, work.app.as_ref(), op, probe).await;
                        let mut l = ledger.lock();
                        match &answer {
                            Ok(erased) => {
                                l.erased.extend(erased.iter().cloned());
                                if op == Op::Erase {
                                    l.erased.insert(id);
                                }
                            }
                            // Refused by a limit: never stored, so still held.
                            Err(e) if op == Op::Erase && e.code() != tonic::Code::ResourceExhausted => {
                                l.unsettled.insert(id);
                            }
                            Err(_) => {}
                        }
                        answer.map(|_| ())
                    }
                }
            }
        };
        let took = started.elapsed();
        let mut l = ledger.lock();
        match outcome {
            Ok(()) => l.latencies.entry(op).or_default().push(took),
            // The server's limits at work (per address, global, queue): reported, not an error.
            Err(e) if e.code() == tonic::Code::ResourceExhausted => *l.throttled.entry(op).or_default() += 1,
            Err(e) => l.errors.entry(op).or_default().push(e.message().to_string()),
        }
    }
    Ok(())
}

/// An access or erasure request by `probe`, until answered (access) or phase 1 (erasure).
/// Returns the records an erasure removed.
async fn request(
    rights: &mut RightsServiceClient<AuthChannel>,
    app: Option<&super::capture::App>,
    op: Op,
    probe: Vec<f32>,
) -> Result<Vec<String>, tonic::Status> {
    let probes = vec![pb::Embedding { values: probe }];
    let contact = "load@example.org".to_string();
    let kind = if op == Op::Access { Kind::Access } else { Kind::Erasure };
    let terms =
        Terms { kind, contact: &contact, jurisdiction_claim: "", include_templates: false, never_enrol_again: false };
    let capture = match app {
        Some(app) => Some(
            app.sign(rights, &terms, &probes)
                .await
                .map_err(|e| {
                    e.downcast_ref::<tonic::Status>().cloned().unwrap_or_else(|| tonic::Status::unknown(e.to_string()))
                })?
                .0,
        ),
        None => None,
    };
    let (id, secret) = if op == Op::Access {
        let r = rights
            .submit_access_request(pb::SubmitAccessRequestRequest {
                probes,
                contact,
                jurisdiction_claim: String::new(),
                include_templates: false,
                capture,
            })
            .await?
            .into_inner();
        (r.request_id, r.request_secret)
    } else {
        let r = rights
            .submit_erasure_request(pb::SubmitErasureRequestRequest { probes, contact, capture, ..Default::default() })
            .await?
            .into_inner();
        (r.request_id, r.request_secret)
    };
    let status = rights
        .get_request(pb::GetRequestRequest { request_id: id.clone(), request_secret: secret.clone(), wait_seconds: 30 })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| tonic::Status::unknown(format!("request {id}: the server's answer holds no status")))?;
    let done = match op {
        Op::Erase => matches!(status.erasure_step.as_str(), "keys_purged" | "templates_purged"),
        _ => status.state == "completed",
    };
    if !done {
        return Err(tonic::Status::deadline_exceeded(format!(
            "request {id} is {} {} after 30 s",
            status.state, status.erasure_step
        )));
    }
    if op != Op::Erase {
        return Ok(Vec::new());
    }
    let request = pb::GetErasureReceiptsRequest { request_id: id, request_secret: secret };
    let r = crate::until_published(10, || {
        let (mut rights, request) = (rights.clone(), request.clone());
        async move { rights.get_erasure_receipts(request).await }
    })
    .await?
    .into_inner();
    let status: serde_json::Value =
        serde_json::from_str(&r.erasure_json).map_err(|e| tonic::Status::unknown(e.to_string()))?;
    Ok(status["records"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default())
}

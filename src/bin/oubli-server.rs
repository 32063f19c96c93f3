//! `oubli-server`: serves the Oubli API on a local data dir. Everything has a default, so it
//! runs with no arguments; every flag can also be set with an `OUBLI_*` environment variable.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use oubli::rights::{PolicySource, Thresholds};
use oubli::store::consensus::ClusterConfig;
use oubli::{
    engine::{IndexChoice, IndexConfig},
    index::HnswParams,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(version, about = "Serve the Oubli face-template API (synthetic data only)")]
struct Args {
    /// Where records are stored (RocksDB).
    #[arg(long, env = "OUBLI_DATA_DIR", default_value = "./oubli-data")]
    data_dir: PathBuf,
    /// Where the key-encryption and MAC keys live; created on first start. Keep it apart from
    /// the data dir: whoever holds both can read every template.
    #[arg(long, env = "OUBLI_KEY_DIR", default_value = "./oubli-keys")]
    key_dir: PathBuf,
    /// Address to listen on. Off loopback the server needs --tls-cert and --tls-key (or
    /// --insecure-plaintext).
    #[arg(long, env = "OUBLI_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Serve over TLS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "OUBLI_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "OUBLI_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Serve in clear on a non-loopback address anyway (only behind something that encrypts,
    /// such as a TLS-terminating proxy on the same host or a private tunnel).
    #[arg(long, env = "OUBLI_INSECURE_PLAINTEXT", conflicts_with = "tls_cert")]
    insecure_plaintext: bool,
    /// Template dimension of a new data dir (an existing one keeps its own; a different value
    /// is refused).
    #[arg(long, env = "OUBLI_DIMENSION")]
    dimension: Option<usize>,
    /// Name of the transparency log (its checkpoints' origin line and signing key name) for a
    /// new data dir, a schema-less URL such as example.com/oubli. An existing data dir keeps
    /// its own.
    #[arg(long, env = "OUBLI_LOG_ORIGIN")]
    log_origin: Option<String>,
    /// Open a data dir restored from a backup, whose log is behind the copy kept in the key dir
    /// (refused without this flag): copy the missing log entries back, re-apply every erasure
    /// journaled in the key dir (deleted again, logged as `erasure-reapplied`, purged) and
    /// continue the log. Needed once, on the first start after the restore.
    #[arg(long, env = "OUBLI_RESTORE_FROM_BACKUP")]
    restore_from_backup: bool,
    /// Keep the wrapped data keys in this etcd cluster (`etcd://HOST:PORT,HOST:PORT,...`)
    /// instead of the data dir: a record exists exactly when its key is committed there, and an
    /// erasure's phase 1 purges and checks every member. A data dir made without it refuses it.
    #[arg(long, env = "OUBLI_CLUSTER")]
    cluster: Option<String>,
    /// The etcd members' data dirs, in the order of --cluster, so phase 1 can check each member
    /// beside it (write-ahead-log segments, a byte scan); a member without one stays pending.
    #[arg(long, env = "OUBLI_ETCD_DATA_DIRS", value_delimiter = ',', requires = "cluster")]
    etcd_data_dirs: Vec<PathBuf>,
    /// The shard this node serves: its keys live under `/oubli/shard-S` in etcd.
    #[arg(long, env = "OUBLI_SHARD", default_value_t = 0, requires = "cluster")]
    shard: u32,
    /// How many shards the cluster has (the gateway's --shards, in the same order): this node
    /// refuses an enrolment whose source address places it on another shard.
    #[arg(long, env = "OUBLI_SHARD_COUNT", default_value_t = 1, requires = "cluster")]
    shard_count: u32,
    /// Which replica of the shard this node is: 0 (the default) is the shard's primary, which
    /// enrols, runs the rights workflows and writes the keys; 1 and up are read replicas, which
    /// copy the primary's ciphertexts, follow etcd's keys and serve Get, Search and Stats.
    #[arg(long, env = "OUBLI_REPLICA", default_value_t = 0, requires = "cluster")]
    replica: u32,
    /// With --replica 1 or more: the shard's primary (http://127.0.0.1:PORT).
    #[arg(long, env = "OUBLI_PRIMARY")]
    primary: Option<String>,
    /// With --replica 1 or more: a file holding a token with the replica role at the primary
    /// (`oubli tokens add --role replica`).
    #[arg(long, env = "OUBLI_REPLICA_TOKEN_FILE")]
    replica_token_file: Option<PathBuf>,
    /// `node` serves its data dir; `gateway` holds no data and serves TemplatesService (Enroll,
    /// EnrollStream, Get, Search, Stats) in front of the nodes of --shards, forwarding each caller's token.
    #[arg(long, env = "OUBLI_ROLE", value_enum, default_value_t = RoleArg::Node)]
    role: RoleArg,
    /// With --role gateway: each shard's node, in shard order (http://HOST:PORT,...).
    #[arg(long, env = "OUBLI_SHARDS", value_delimiter = ',')]
    shards: Vec<String>,
    /// Log format.
    #[arg(long, env = "OUBLI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Tokens file (TOML, `oubli tokens add` writes it). Default: tokens.toml in the key dir,
    /// created on first start with one local token holding every role (in local.token).
    #[arg(long, env = "OUBLI_TOKENS")]
    tokens: Option<PathBuf>,
    /// Ingest policy file (TOML; `oubli policy show` prints the format). Reloaded by
    /// `oubli policy reload`. Overrides --policy-profile.
    #[arg(long, env = "OUBLI_POLICY")]
    policy: Option<PathBuf>,
    /// Built-in ingest policy: lawful (consent only, no scraping, unknown jurisdictions
    /// quarantined) or permissive (what Clearview did; for the demo).
    #[arg(long, env = "OUBLI_POLICY_PROFILE", default_value = "lawful")]
    policy_profile: String,
    /// Match score at or above which a record is the requester's (default: FMR 1e-6 of the
    /// synthetic population).
    #[arg(long, env = "OUBLI_STRICT_THRESHOLD")]
    strict_threshold: Option<f32>,
    /// Lower end of the review band (default: FMR 1e-4): matches from here up to the strict
    /// threshold are withheld until the privacy desk decides.
    #[arg(long, env = "OUBLI_REVIEW_THRESHOLD")]
    review_threshold: Option<f32>,
    /// Days the audit trail keeps each event.
    #[arg(long, env = "OUBLI_AUDIT_RETENTION_DAYS", default_value_t = 365)]
    audit_retention_days: u32,
    /// Public rights requests accepted per minute from one address (an IPv4 address or an
    /// IPv6 /64).
    #[arg(long, env = "OUBLI_SUBMISSIONS_PER_MINUTE", default_value_t = 10)]
    submissions_per_minute: u32,
    /// Public rights requests accepted per minute from all addresses together.
    #[arg(long, env = "OUBLI_PUBLIC_SUBMISSIONS_PER_MINUTE", default_value_t = 600)]
    public_submissions_per_minute: u32,
    /// Anonymous transparency-log reads accepted per minute from one address.
    #[arg(long, env = "OUBLI_TRANSPARENCY_READS_PER_MINUTE", default_value_t = 600)]
    transparency_reads_per_minute: u32,
    /// Rights requests that may wait for the worker; beyond it public submissions are refused
    /// (RESOURCE_EXHAUSTED, retry advised) before anything is stored.
    #[arg(long, env = "OUBLI_QUEUE_CAPACITY", default_value_t = 1000)]
    queue_capacity: usize,
    /// Seconds erasures wait after phase 1 (data keys purged) so that one phase-2 purge of the
    /// templates serves all of them.
    #[arg(long, env = "OUBLI_PURGE_WINDOW_SECS", default_value_t = 3600)]
    purge_window_secs: u64,
    /// Days after an erasure by which the key-encryption key is rotated automatically, so that
    /// backups made before it become unreadable.
    #[arg(long, env = "OUBLI_ROTATION_DAYS", default_value_t = 30)]
    rotation_days: u32,
    /// Days a key-encryption key is used at most, erasure or not: then it is rotated, so old
    /// versions of rows and backups sealed under it become unreadable within that period.
    #[arg(long, env = "OUBLI_KEY_MAX_AGE_DAYS", default_value_t = 90)]
    key_max_age_days: u32,
    /// Serve Prometheus metrics (`GET /metrics`) on this address (for example 127.0.0.1:9464);
    /// off by default.
    #[arg(long, env = "OUBLI_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the log's C2SP tlog-tiles read API (`GET /checkpoint`, `/tile/...`) over plain
    /// HTTP on this address (for example 127.0.0.1:8080); off by default.
    #[arg(long, env = "OUBLI_TILES_LISTEN")]
    tiles_listen: Option<std::net::SocketAddr>,
    /// Sign a checkpoint at most this often (milliseconds) when entries were logged, and get it
    /// cosigned by the --witness list; 0 signs one checkpoint per write batch (every receipt
    /// ready at once, but too many checkpoints for witnesses to follow).
    #[arg(long, env = "OUBLI_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Sign (and get cosigned) again after this many seconds even if nothing was logged, so
    /// witnesses vouch for a quiet log too.
    #[arg(long, env = "OUBLI_CHECKPOINT_MAX_AGE_SECS", default_value_t = 300)]
    checkpoint_max_age_secs: u64,
    /// A witness to push every checkpoint to, as `URL=KEY`: its tlog-witness base URL
    /// (`http://127.0.0.1:7380`) and its cosignature verifier key (`oubli witness key`
    /// prints it). Repeat for several witnesses.
    #[arg(long = "witness", env = "OUBLI_WITNESSES", value_delimiter = ' ', value_parser = parse_witness)]
    witnesses: Vec<oubli::http::integrate::WitnessTarget>,
    /// Which index answers searches: the exact scan, the approximate HNSW graph, or auto (HNSW
    /// from --hnsw-min-records records on). The exact scan is always kept: a request with
    /// `exact = true`, and access and erasure requests, use it.
    #[arg(long, env = "OUBLI_INDEX", value_enum, default_value_t = IndexArg::Auto)]
    index: IndexArg,
    /// In auto, the record count from which HNSW answers.
    #[arg(long, env = "OUBLI_HNSW_MIN_RECORDS", default_value_t = IndexConfig::default().auto_min_records)]
    hnsw_min_records: usize,
    /// HNSW neighbours per node (2 to 100; twice this on the bottom layer). Changing it
    /// rebuilds the graph at the next start.
    #[arg(long, env = "OUBLI_HNSW_M", default_value_t = HnswParams::default().m)]
    hnsw_m: usize,
    /// HNSW candidates considered when linking a record. Changing it rebuilds the graph.
    #[arg(long, env = "OUBLI_HNSW_EF_CONSTRUCTION", default_value_t = HnswParams::default().ef_construction)]
    hnsw_ef_construction: usize,
    /// HNSW candidates kept while searching (more: slower, fewer misses).
    #[arg(long, env = "OUBLI_HNSW_EF_SEARCH", default_value_t = HnswParams::default().ef_search)]
    hnsw_ef_search: usize,
    #[command(flatten)]
    identity: IdentityArgs,
}

/// Identity before disclosure, the no-match attestation and the never-enrol-again list.
#[derive(clap::Args, Debug)]
struct IdentityArgs {
    /// The capture applications trusted to establish a requester's identity (see `oubli
    /// capture-keys add`), re-read at each capture; default: capture-keys.toml in the key dir.
    /// Without one, every request by selfie waits for the privacy desk.
    #[arg(long, env = "OUBLI_CAPTURE_KEYS")]
    capture_keys: Option<PathBuf>,
    /// Days a request by selfie waits for its sender's identity before it is denied.
    #[arg(long, env = "OUBLI_IDENTITY_DAYS", default_value_t = 30)]
    identity_days: u32,
    /// No-match attestations a completed erasure may ask for.
    #[arg(long, env = "OUBLI_ATTESTATIONS_PER_ERASURE", default_value_t = 1)]
    attestations_per_erasure: u32,
    /// Days after the delete during which they may be asked (the erasure's probes are kept,
    /// sealed, that long at most).
    #[arg(long, env = "OUBLI_ATTESTATION_DAYS", default_value_t = 7)]
    attestation_days: u32,
    /// Days a face kept with `never_enrol_again` is refused for.
    #[arg(long, env = "OUBLI_FACE_RETENTION_DAYS", default_value_t = 365)]
    face_retention_days: u32,
    /// Faces kept with `never_enrol_again`, at most, over all requests.
    #[arg(long, env = "OUBLI_MAX_FACES", default_value_t = 10_000)]
    max_faces: usize,
    /// Days a final rights request keeps its contact, probes, matches and report; then only
    /// its id, dates, states, identity method and log leaves are kept.
    #[arg(long, env = "OUBLI_REQUEST_RETENTION_DAYS", default_value_t = 365)]
    request_retention_days: u32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum IndexArg {
    Exact,
    Hnsw,
    Auto,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    Node,
    Gateway,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("OUBLI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }

    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(oubli::grpc::TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together: give both (or neither, on loopback)"),
    };
    if tls.is_none() && !args.insecure_plaintext {
        refuse_plaintext_off_loopback(&args.listen).await?;
    }
    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    if args.role == RoleArg::Gateway {
        if tls.is_some() {
            anyhow::bail!("--role gateway serves plaintext on loopback only so far: drop --tls-cert and --tls-key");
        }
        oubli::grpc::gateway::run(listener, &args.shards, shutdown_signal()).await?;
        return Ok(());
    }
    if !args.shards.is_empty() {
        anyhow::bail!("--shards is for --role gateway: a node serves its own data dir");
    }
    let mut config = oubli::Config::new(args.data_dir, args.key_dir);
    config.tls = tls;
    config.dimension = args.dimension;
    config.log_origin = args.log_origin;
    config.restore_from_backup = args.restore_from_backup;
    if let Some(spec) = &args.cluster {
        config.replica_of = match (args.replica, &args.primary, &args.replica_token_file) {
            (0, None, None) => None,
            (0, _, _) => {
                anyhow::bail!("--primary and --replica-token-file are for a read replica: add --replica 1 (or more)")
            }
            (replica, Some(primary), Some(file)) => {
                loopback_url(primary).context("--primary")?;
                let token = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the replica token file {}", file.display()))?;
                Some(oubli::grpc::replication::ReplicaOf {
                    replica,
                    primary: primary.clone(),
                    token: token.trim().to_string(),
                })
            }
            (replica, _, _) => anyhow::bail!(
                "--replica {replica} is a read replica: give its shard's primary (--primary http://127.0.0.1:PORT) and \
                 a token with the replica role there (--replica-token-file FILE)"
            ),
        };
        let mut cluster = ClusterConfig::parse(spec)?;
        if !args.etcd_data_dirs.is_empty() && args.etcd_data_dirs.len() != cluster.members.len() {
            anyhow::bail!(
                "--etcd-data-dirs names {} dirs for {} members: give one per member of --cluster, in its order",
                args.etcd_data_dirs.len(),
                cluster.members.len()
            );
        }
        cluster = cluster.with_data_dirs(&args.etcd_data_dirs);
        cluster.namespace = format!("{}{}", oubli::store::consensus::SHARDS_PREFIX, args.shard);
        config.cluster = Some(cluster);
        config.placement = Some(
            oubli::grpc::gateway::Placement::new(args.shard as usize, args.shard_count as usize)
                .map_err(anyhow::Error::msg)?,
        );
    }
    config.tiles_listen = args.tiles_listen;
    config.cadence = match args.checkpoint_interval_ms {
        0 if !args.witnesses.is_empty() => anyhow::bail!(
            "--witness needs a checkpoint cadence: with --checkpoint-interval-ms 0 every write batch signs its own \
             checkpoint, too many for a witness to follow"
        ),
        0 => None,
        ms => Some(oubli::http::integrate::Cadence {
            interval: std::time::Duration::from_millis(ms),
            max_age: std::time::Duration::from_secs(args.checkpoint_max_age_secs.max(1)),
            witnesses: args.witnesses,
            ..Default::default()
        }),
    };
    config.tokens_file = args.tokens;
    config.rights.policy = match args.policy {
        Some(path) => PolicySource::File(path),
        None => PolicySource::Profile(args.policy_profile),
    };
    let defaults = config.rights.thresholds;
    let thresholds = Thresholds {
        strict: args.strict_threshold.unwrap_or(defaults.strict),
        review: args.review_threshold.unwrap_or(defaults.review),
    };
    if !(-1.0..=1.0).contains(&thresholds.review)
        || !(-1.0..=1.0).contains(&thresholds.strict)
        || thresholds.review > thresholds.strict
    {
        anyhow::bail!(
            "thresholds must be cosines from -1 to 1 with review ({}) at most strict ({})",
            thresholds.review,
            thresholds.strict
        );
    }
    config.rights.thresholds = thresholds;
    config.rights.audit_retention_days = args.audit_retention_days;
    config.rights.submissions_per_minute = args.submissions_per_minute;
    config.rights.public_submissions_per_minute = args.public_submissions_per_minute;
    config.rights.transparency_reads_per_minute = args.transparency_reads_per_minute;
    config.rights.queue_capacity = args.queue_capacity.max(1);
    config.rights.purge_window = std::time::Duration::from_secs(args.purge_window_secs);
    config.metrics_listen = args.metrics_listen;
    config.rights.rotation_days = args.rotation_days.max(1);
    config.rights.key_max_age_days = args.key_max_age_days.max(1);
    let identity = args.identity;
    if let Some(path) = identity.capture_keys {
        config.rights.capture_keys = Some(path);
    }
    config.rights.identity_days = identity.identity_days.max(1);
    config.rights.attestations_per_erasure = identity.attestations_per_erasure;
    config.rights.attestation_days = identity.attestation_days;
    config.rights.face_retention_days = identity.face_retention_days;
    config.rights.max_faces = identity.max_faces;
    config.rights.request_retention_days = identity.request_retention_days.max(1);
    let index = IndexConfig {
        choice: match args.index {
            IndexArg::Exact => IndexChoice::Exact,
            IndexArg::Hnsw => IndexChoice::Hnsw,
            IndexArg::Auto => IndexChoice::Auto,
        },
        auto_min_records: args.hnsw_min_records,
        hnsw: HnswParams {
            m: args.hnsw_m,
            ef_construction: args.hnsw_ef_construction,
            ef_search: args.hnsw_ef_search,
            ..HnswParams::default()
        },
    };
    index.hnsw.check().context("invalid HNSW settings")?;
    config.index = index;
    let restore = config.restore_from_backup;
    match oubli::run(listener, config, shutdown_signal()).await {
        // Said plainly, alone: the operator's choice, not a crash.
        Err(e) if !restore && refused_restore(&e) => anyhow::bail!("{e}"),
        result => result.context("oubli-server failed")?,
    }
    Ok(())
}

/// Whether the server refused an older copy of the data dir (a restored backup).
fn refused_restore(e: &oubli::grpc::ServeError) -> bool {
    matches!(e, oubli::grpc::ServeError::Engine(oubli::engine::Error::Store(oubli::store::Error::BehindMirror { .. })))
}

/// Refuses, before anything is bound, to serve in clear on an address that is not loopback.
async fn refuse_plaintext_off_loopback(listen: &str) -> anyhow::Result<()> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen} is not an address to listen on (use host:port)"))?
        .collect();
    if let Some(open) = addrs.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
        anyhow::bail!(
            "refusing to serve in clear on {open} (--listen {listen}), which is not a loopback address: rights \
             requests carry biometric templates and request secrets, and tokens travel with every call. \
             Give --tls-cert FILE and --tls-key FILE to serve over TLS, or --insecure-plaintext if something \
             else encrypts the traffic (a TLS-terminating proxy on this host, a private tunnel)"
        );
    }
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining requests");
}

/// `URL=KEY`: a witness's base URL and its cosignature verifier key.
fn parse_witness(s: &str) -> Result<oubli::http::integrate::WitnessTarget, String> {
    let (url, key) = s.split_once('=').ok_or_else(|| {
        format!("{s:?}: expected URL=KEY, e.g. http://127.0.0.1:7380=witness.example+1a2b3c4d+BASE64")
    })?;
    if !url.starts_with("http://") {
        return Err(format!("{url:?}: a witness URL starts with http://"));
    }
    Ok(oubli::http::integrate::WitnessTarget { url: url.trim_end_matches('/').to_string(), key: key.to_string() })
}

/// Refuses a primary's URL off loopback: a replica's token and the records' ciphertexts go to
/// it in the clear.
fn loopback_url(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.port_u16().is_none() || !oubli::grpc::gateway::on_loopback(&uri) {
        anyhow::bail!(
            "{url:?}: give the primary as http://127.0.0.1:PORT (loopback only: the token goes in the clear)"
        );
    }
    Ok(())
}

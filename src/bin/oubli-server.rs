//! `oubli-server`: serves the Oubli API on a local data dir. Everything has a default, so it
//! runs with no arguments; every flag can also be set with an `OUBLI_*` environment variable.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
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
    /// Address to listen on.
    #[arg(long, env = "OUBLI_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// Template dimension of a new data dir (an existing one keeps its own; a different value
    /// is refused).
    #[arg(long, env = "OUBLI_DIMENSION")]
    dimension: Option<usize>,
    /// Name of the transparency log (its checkpoints' origin line and signing key name) for a
    /// new data dir, a schema-less URL such as example.com/oubli. An existing data dir keeps
    /// its own.
    #[arg(long, env = "OUBLI_LOG_ORIGIN")]
    log_origin: Option<String>,
    /// Log format.
    #[arg(long, env = "OUBLI_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("OUBLI_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }

    let listener =
        TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = oubli::Config {
        data_dir: args.data_dir,
        key_dir: args.key_dir,
        dimension: args.dimension,
        log_origin: args.log_origin,
    };
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
    oubli::grpc::run_with(listener, config, index, shutdown_signal()).await.context("oubli-server failed")?;
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

//! `oubli-server`: serves the Oubli API on a local data dir. Everything has a default, so it
//! runs with no arguments; every flag can also be set with an `OUBLI_*` environment variable.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
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
    oubli::run(listener, config, shutdown_signal()).await.context("oubli-server failed")?;
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

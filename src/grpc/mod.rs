//! The gRPC face of Oubli: tonic services, request validation, and the one mapping from domain
//! errors to `tonic::Status`. The only library module (with the binaries) that knows tonic or
//! prost; below it, everything is plain domain types.
mod convert;
mod status;
mod templates;
mod transparency;

use std::{future::Future, path::PathBuf, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::engine::{self, Engine, IndexConfig};

pub use convert::{provenance_from_pb, provenance_to_pb, timestamp_to_pb};
pub use templates::MAX_STREAM_ITEMS;

/// Code generated from `proto/oubli/v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("oubli.v1");

    /// The encoded descriptors of the v1 API, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("oubli_v1_descriptor");
}

/// The largest request message accepted (4 MiB): far above one enrolment (about 2 KiB at 512
/// dimensions), low enough that a hostile client cannot make the server buffer much.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Where the server keeps its data and how it is shaped.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub key_dir: PathBuf,
    /// Template dimension; `None` keeps the data dir's (512 for a new one).
    pub dimension: Option<usize>,
    /// The transparency log's origin (and key name) for a new data dir; `None` keeps the data
    /// dir's (`oubli.example/log` for a new one).
    pub log_origin: Option<String>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the store could not be opened: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Opens the store in `config` and serves the API on `listener` until `shutdown` completes,
/// then drains in-flight requests and closes the store. Indexes with the default
/// [`IndexConfig`]; see [`run_with`].
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    run_with(listener, config, IndexConfig::default(), shutdown).await
}

/// [`run`] with the search index chosen by `index`.
pub async fn run_with(
    listener: TcpListener,
    config: Config,
    index: IndexConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let engine = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            Engine::open_with(&config.data_dir, &config.key_dir, config.dimension, config.log_origin.as_deref(), index)
        })
        .await??
    };
    let engine = Arc::new(engine);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<pb::templates_server::TemplatesServer<templates::TemplatesService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled-in descriptor sets are valid");
    health_reporter
        .set_serving::<pb::transparency_server::TransparencyServer<transparency::TransparencyService>>()
        .await;
    let templates = pb::templates_server::TemplatesServer::new(templates::TemplatesService::new(engine.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let transparency =
        pb::transparency_server::TransparencyServer::new(transparency::TransparencyService::new(engine.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let addr = listener.local_addr().ok();
    info!(?addr, "serving oubli.v1");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(templates)
        .add_service(transparency)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    info!("server stopped");
    Ok(())
}

/// A server running in this process on a loopback port: for the demo and tests.
pub struct Embedded {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Embedded {
    /// Binds `127.0.0.1:0` and serves `config` there.
    pub async fn start(config: Config) -> std::io::Result<Embedded> {
        Self::start_with(config, IndexConfig::default()).await
    }

    /// [`Embedded::start`] with the search index chosen by `index`.
    pub async fn start_with(config: Config, index: IndexConfig) -> std::io::Result<Embedded> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_with(listener, config, index, async {
            let _ = stopped.await;
        }));
        Ok(Embedded { addr, stop, task })
    }

    /// Stops it, drains in-flight requests, and waits until the store is closed.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Accepted connections with Nagle's algorithm off: small gRPC replies would otherwise wait for
/// the peer's delayed ACK (about 40 ms each on Linux loopback).
fn incoming(listener: TcpListener) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot disable Nagle's algorithm on a connection");
        }
        Ok(conn)
    })
}

/// Runs blocking core work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, engine::Error> + Send + 'static,
) -> Result<T, tonic::Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => {
            tracing::error!(error = %e, "request handler failed");
            Err(tonic::Status::internal("the request failed inside the server; it has been logged"))
        }
    }
}

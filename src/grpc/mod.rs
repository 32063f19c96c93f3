//! The gRPC face of Oubli: tonic services, request validation, and the one mapping from domain
//! errors to `tonic::Status`. The only library module (with the binaries) that knows tonic or
//! prost; below it, everything is plain domain types.
pub mod convert;
pub mod gate;
pub mod gateway;
pub mod replication;
mod rights;
mod status;
mod templates;
mod tls;
mod transparency;

use std::{future::Future, path::PathBuf, sync::Arc};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::{
    engine::{self, Engine, IndexConfig, OpenOptions},
    rights::{
        Rights, Settings,
        auth::{AuthError, Role, Tokens},
        request::{Clock, SystemClock},
        worker::Worker,
    },
};
use tonic::Status;

pub use convert::{provenance_from_pb, provenance_to_pb, timestamp_to_pb};
pub use templates::MAX_STREAM_ITEMS;
pub use tls::{TlsError, TlsFiles};

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
#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub key_dir: PathBuf,
    /// Template dimension; `None` keeps the data dir's (512 for a new one).
    pub dimension: Option<usize>,
    /// The transparency log's origin (and key name) for a new data dir; `None` keeps the data
    /// dir's (`oubli.example/log` for a new one).
    pub log_origin: Option<String>,
    /// The tokens file; `None`: `tokens.toml` in the key dir, created on first start with one
    /// local token holding every role (written to `local.token` beside it).
    pub tokens_file: Option<PathBuf>,
    /// Thresholds, policy, retention, limits of the rights workflows.
    pub rights: Settings,
    pub clock: Arc<dyn Clock>,
    /// Run the request worker (tests turn it off to stop a request mid-way).
    pub process_requests: bool,
    /// Which index answers searches, and the HNSW parameters.
    pub index: IndexConfig,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP); `None`: not served.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Serve the API over TLS with this certificate and key; `None`: plaintext (the binary
    /// allows that only on loopback unless told `--insecure-plaintext`).
    pub tls: Option<TlsFiles>,
    /// Open a data dir whose log is behind the key dir's mirror (a restored backup), re-applying
    /// every journaled erasure, instead of refusing it.
    pub restore_from_backup: bool,
    /// Sign checkpoints at this cadence (and get them cosigned); `None`: one per write batch,
    /// so every receipt is ready at once (tests; a log no witness follows).
    pub cadence: Option<crate::http::integrate::Cadence>,
    /// Where to serve the log's tlog-tiles HTTP API; `None`: not served.
    pub tiles_listen: Option<std::net::SocketAddr>,
    /// The etcd cluster that holds the wrapped data keys, under this shard's namespace; `None`:
    /// the data dir holds them (one node).
    pub cluster: Option<crate::store::consensus::ClusterConfig>,
    /// Which shard of how many this node is, for the sources it accepts; `None`: every source.
    pub placement: Option<gateway::Placement>,
    /// A read replica of its shard (needs `cluster`): its number and its primary; `None`:
    /// the shard's primary, or one node.
    pub replica_of: Option<replication::ReplicaOf>,
}

impl Config {
    /// The defaults for a data dir and a key dir.
    pub fn new(data_dir: impl Into<PathBuf>, key_dir: impl Into<PathBuf>) -> Config {
        let key_dir = key_dir.into();
        Config {
            data_dir: data_dir.into(),
            dimension: None,
            log_origin: None,
            tokens_file: None,
            rights: Settings { capture_keys: Some(key_dir.join(CAPTURE_KEYS_FILE)), ..Settings::default() },
            key_dir,
            clock: Arc::new(SystemClock),
            process_requests: true,
            index: IndexConfig::default(),
            metrics_listen: None,
            tls: None,
            restore_from_backup: false,
            cadence: None,
            tiles_listen: None,
            cluster: None,
            placement: None,
            replica_of: None,
        }
    }
}

/// A client-side interceptor that sends a bearer token with every call (or nothing).
#[derive(Clone, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Bearer(token.map(|t| format!("Bearer {}", t.trim()).parse()).transpose()?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client connection that authenticates every call with a [`Bearer`] token.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// The file holding the local all-roles token made on first start, in the key dir.
pub const LOCAL_TOKEN_FILE: &str = "local.token";
/// The trusted capture applications, in the key dir unless configured elsewhere.
pub const CAPTURE_KEYS_FILE: &str = "capture-keys.toml";

/// Loads the tokens file; the default one is created on first start with a local token.
fn load_tokens(config: &Config) -> Result<Tokens, AuthError> {
    let path = config.tokens_file.clone().unwrap_or_else(|| config.key_dir.join("tokens.toml"));
    if config.tokens_file.is_none() && !path.exists() {
        let token = Tokens::add(&path, "local", &Role::ALL)?;
        let local = config.key_dir.join(LOCAL_TOKEN_FILE);
        crate::rights::auth::write_private(&local, format!("{token}\n").as_bytes())
            .map_err(|source| AuthError::Io { path: local.clone(), source })?;
        info!(path = %local.display(), "created a local token with every role");
    }
    let tokens = Tokens::load(&path)?;
    info!(tokens = tokens.len(), "tokens loaded");
    Ok(tokens)
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
    #[error(transparent)]
    Rights(#[from] crate::rights::Error),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("tokens: {0}")]
    Tokens(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Replica(String),
}

/// Opens the store in `config` and serves the API on `listener` until `shutdown` completes,
/// then drains in-flight requests and closes the store.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    serve(listener, config, shutdown, None).await
}

/// [`run`], telling `ready` once the store is open and the tokens are loaded.
async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), ServeError> {
    // Checked first: a bad certificate is refused before the store is opened.
    let tls = config.tls.as_ref().map(TlsFiles::server_config).transpose()?;
    let mut config = config;
    let primary = match (&config.replica_of, &mut config.cluster) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ServeError::Replica(
                "a read replica reads its shard's keys from etcd: give --cluster and the primary's --shard".into(),
            ));
        }
        (Some(of), Some(cluster)) => {
            cluster.replica = of.replica;
            Some(replication::Primary::connect(of).map_err(|s| ServeError::Replica(s.message().to_string()))?)
        }
    };
    let engine = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            Engine::open(&OpenOptions {
                data_dir: config.data_dir.clone(),
                key_dir: config.key_dir.clone(),
                dimension: config.dimension,
                log_origin: config.log_origin.clone(),
                index: config.index,
                restore_from_backup: config.restore_from_backup,
                cluster: config.cluster.clone(),
            })
        })
        .await??
    };
    let engine = Arc::new(engine);
    if config.cadence.is_some() {
        engine.log().set_signing(crate::transparency::log::Signing::Cadence);
    }
    let rights = {
        let (engine, settings, clock) = (engine.clone(), config.rights.clone(), config.clock.clone());
        let primary = primary.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || {
                let rights = Rights::new(engine, settings, clock)?;
                Ok::<_, crate::rights::Error>(match primary {
                    Some(p) => rights.with_primary(Arc::new(p)),
                    None => rights,
                })
            })
            .await??,
        )
    };
    let tokens = Arc::new(load_tokens(&config)?);
    // A replica holds no request: the primary runs every workflow.
    let worker = Worker::spawn(rights.clone(), config.process_requests && primary.is_none());
    let nudge = worker.nudge();
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::templates_service_server::TemplatesServiceServer<templates::TemplatesService>>()
        .await;
    // Which shard of how many this node is, for a gateway to check before it sends a call.
    if let Some(placement) = config.placement {
        health_reporter
            .set_service_status(gateway::shard_health_name(placement), tonic_health::ServingStatus::Serving)
            .await;
    }
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
        .set_serving::<pb::transparency_service_server::TransparencyServiceServer<transparency::TransparencyService>>()
        .await;
    let templates = pb::templates_service_server::TemplatesServiceServer::new(templates::TemplatesService::new(
        rights.clone(),
        config.placement,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let rights_service =
        pb::rights_service_server::RightsServiceServer::new(rights::RightsService::new(rights.clone(), nudge.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = pb::admin_service_server::AdminServiceServer::new(rights::AdminService::new(rights.clone(), nudge));
    let notifications = pb::notifications_service_server::NotificationsServiceServer::new(
        rights::NotificationsService::new(rights.clone()),
    );
    let replication = pb::replication_service_server::ReplicationServiceServer::new(
        replication::ReplicationService::new(rights.clone()),
    )
    .max_encoding_message_size(64 << 20);
    let transparency = pb::transparency_service_server::TransparencyServiceServer::new(
        transparency::TransparencyService::new(engine.clone(), rights.clone()),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES);

    let addr = listener.local_addr().ok();
    let metrics = match config.metrics_listen {
        Some(at) => {
            let listener = TcpListener::bind(at).await?;
            let bound = listener.local_addr()?;
            info!(addr = %bound, "serving metrics at /metrics");
            let rights = rights.clone();
            // Gauges read the store: off the async threads, errors as a client would see them.
            let render = move || {
                rights.gauges().map(|g| rights.metrics().render(&g)).map_err(|e| Status::from(e).message().to_string())
            };
            Some((bound, tokio::spawn(crate::metrics::serve(listener, Arc::new(render)))))
        }
        None => None,
    };
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = http_stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let tiles = match config.tiles_listen {
        Some(at) => {
            let listener = TcpListener::bind(at).await?;
            let bound = listener.local_addr()?;
            info!(addr = %bound, "serving the log's tiles at /checkpoint and /tile/");
            Some((bound, tokio::spawn(crate::http::tiles::serve(listener, engine.clone(), stopped()))))
        }
        None => None,
    };
    let integrator = config
        .cadence
        .clone()
        .map(|cadence| tokio::spawn(crate::http::integrate::run(engine.clone(), cadence, stopped())));
    let (stop_rounds, rounds_stopped) = tokio::sync::watch::channel(false);
    let rounds = match (&primary, &config.replica_of, addr) {
        (Some(p), Some(of), Some(at)) => {
            info!(replica = of.replica, primary = %of.primary, "a read replica: following the primary");
            Some(tokio::spawn(replication::follow(
                rights.clone(),
                p.clone(),
                of.replica,
                at.to_string(),
                rounds_stopped,
            )))
        }
        _ => None,
    };
    let replica_of = config.replica_of.as_ref().map(|of| Arc::<str>::from(of.primary.as_str()));
    info!(?addr, tls = tls.is_some(), "serving oubli.v1");
    if let Some(ready) = ready {
        let _ =
            ready.send(Bound { metrics: metrics.as_ref().map(|(a, _)| *a), tiles: tiles.as_ref().map(|(a, _)| *a) });
    }
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    server
        .layer(gate::GateLayer { tokens, rights: rights.clone(), replica_of })
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(templates)
        .add_service(transparency)
        .add_service(rights_service)
        .add_service(admin)
        .add_service(notifications)
        .add_service(replication)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    let _ = stop_rounds.send(true);
    if let Some(task) = rounds {
        let _ = task.await;
    }
    if let Some((_, task)) = metrics {
        task.abort();
    }
    // The integrator publishes what was sequenced last, then stops; the tiles server drains.
    let _ = stop_http.send(true);
    if let Some(task) = integrator {
        let _ = task.await;
    }
    if let Some((_, task)) = tiles {
        let _ = task.await;
    }
    // The services (and their nudges) are gone: once the worker has finished its current
    // round, nothing else holds the store, and it closes here.
    worker.shutdown().await?;
    drop(rights);
    drop(engine);
    info!("server stopped");
    Ok(())
}

/// Where the side listeners were bound.
#[derive(Debug, Clone, Copy)]
struct Bound {
    metrics: Option<std::net::SocketAddr>,
    tiles: Option<std::net::SocketAddr>,
}

/// A server running in this process on a loopback port: for the demo and tests.
pub struct Embedded {
    pub addr: std::net::SocketAddr,
    /// Where metrics are served, if the configuration asked for them.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the log's tiles are served, if the configuration asked for them.
    pub tiles_addr: Option<std::net::SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Embedded {
    /// Binds `127.0.0.1:0` and serves `config` there; returns once the server is ready (its
    /// store open, its tokens loaded), or with the reason it could not start.
    pub async fn start(config: Config) -> Result<Embedded, ServeError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = tokio::sync::oneshot::channel::<Bound>();
        let task = tokio::spawn(serve(
            listener,
            config,
            async {
                let _ = stopped.await;
            },
            Some(ready),
        ));
        let Ok(bound) = is_ready.await else {
            // The server ended before it was ready: its result says why.
            task.await??;
            return Err(ServeError::Listen(std::io::Error::other("the server stopped before it was ready")));
        };
        Ok(Embedded { addr, metrics_addr: bound.metrics, tiles_addr: bound.tiles, stop, task })
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

/// Runs blocking core or rights work off the async threads.
async fn blocking<T: Send + 'static, E: Into<tonic::Status> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, tonic::Status> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => {
            tracing::error!(error = %e, "request handler failed");
            Err(tonic::Status::internal("the request failed inside the server; it has been logged"))
        }
    }
}

//! The tlog-witness HTTP server (c2sp.org/tlog-witness): `POST /add-checkpoint` cosigns a
//! checkpoint that consistently extends the one it last cosigned for its log, and refuses any
//! other with the spec's status; `GET /<origin hash>/checkpoint` serves that last one.
//!
//! The decision is `transparency::witness::add_checkpoint` (pure); this module owns the I/O:
//! one state file per origin (named by the hex SHA-256 of the origin) holding the latest
//! cosigned checkpoint, replaced whole (temporary file, fsync, rename, fsync of the directory)
//! before the answer, under a mutex per origin, so that the check of the old size and the write
//! of the new state are one atomic step (the race the spec describes cannot roll a log back).
//! The mutexes are made at start for the configured logs only: the table never grows.
use std::{
    collections::HashMap,
    fs,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path as UrlPath, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::{net::TcpListener, sync::Mutex};

use crate::{
    store::private::{self, PrivateError},
    transparency::{
        cosign::{AddCheckpoint, CosignError, CosignerKey},
        note::VerifierKey,
        witness::{self, Refusal},
    },
};

/// A request body larger than this is refused (413): 63 proof lines and a checkpoint with many
/// signatures fit in far less.
const MAX_BODY: usize = 64 * 1024;

/// Why the witness cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WitnessServerError {
    #[error(transparent)]
    Private(#[from] PrivateError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a witness key file: {source}", path.display())]
    Key { path: PathBuf, source: CosignError },
    #[error("no log to witness: give the verifier key of at least one log")]
    NoLogs,
    #[error("two verifier keys name the log {0:?}: keep one (a witness trusts one key per log here)")]
    DuplicateLog(String),
    #[error("the witness server failed: {0}")]
    Serve(std::io::Error),
}

/// What a witness serves with: its cosigner key, the logs it witnesses (each verifier key's
/// name is its log's origin) and the directory of its per-origin state.
pub struct WitnessConfig {
    pub key: CosignerKey,
    pub logs: Vec<VerifierKey>,
    pub state_dir: PathBuf,
}

impl WitnessConfig {
    /// Loads the cosigner key from `key_file` (refused unless owner-only and not a symbolic
    /// link, as the server's key files are) and creates `state_dir` if it is missing.
    pub fn load(key_file: &Path, state_dir: PathBuf, logs: Vec<VerifierKey>) -> Result<Self, WitnessServerError> {
        let key = read_key(key_file)?;
        private::create_dir(&state_dir).map_err(|source| WitnessServerError::Io { path: state_dir.clone(), source })?;
        Ok(WitnessConfig { key, logs, state_dir })
    }
}

fn read_key(path: &Path) -> Result<CosignerKey, WitnessServerError> {
    use std::io::Read;
    let mut text = zeroize::Zeroizing::new(String::new());
    private::open(path)?
        .read_to_string(&mut text)
        .map_err(|source| WitnessServerError::Io { path: path.to_path_buf(), source })?;
    CosignerKey::parse(&text).map_err(|source| WitnessServerError::Key { path: path.to_path_buf(), source })
}

/// Writes `key` to the new file `path`, owner-only (0600), never over an existing file, its
/// directory synced.
pub fn create_key_file(path: &Path, key: &CosignerKey) -> Result<(), WitnessServerError> {
    let io = |source| WitnessServerError::Io { path: path.to_path_buf(), source };
    private::create(path, key.to_private_text().as_bytes()).map_err(io)?;
    sync_dir(path).map_err(io)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

struct Shared {
    key: CosignerKey,
    logs: Vec<VerifierKey>,
    state_dir: PathBuf,
    /// One lock per configured origin, made at start.
    locks: HashMap<String, Mutex<()>>,
}

impl Shared {
    fn state_path(&self, origin: &str) -> PathBuf {
        self.state_dir.join(witness::origin_hash(origin))
    }
}

/// Serves the witness on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: WitnessConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WitnessServerError> {
    if config.logs.is_empty() {
        return Err(WitnessServerError::NoLogs);
    }
    let mut locks = HashMap::new();
    for log in &config.logs {
        if locks.insert(log.name().to_string(), Mutex::new(())).is_some() {
            return Err(WitnessServerError::DuplicateLog(log.name().to_string()));
        }
    }
    let shared = Arc::new(Shared { key: config.key, logs: config.logs, state_dir: config.state_dir, locks });
    tracing::info!(logs = shared.locks.len(), "witness serving");
    let app = Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/{origin_hash}/checkpoint", get(checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(WitnessServerError::Serve)
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn refusal(refused: &Refusal) -> Response {
    let status = StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match refused {
        // The spec's body: the size the witness holds, in its own content type.
        Refusal::Conflict { stored, .. } => {
            (status, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{stored}\n")).into_response()
        }
        other => text(status, format!("{other}\n")),
    }
}

async fn add_checkpoint(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request = match AddCheckpoint::parse(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let origin = match witness::origin_of(&request) {
        Ok(o) => o.to_string(),
        Err(e) => return refusal(&e),
    };
    let Some(lock) = shared.locks.get(&origin) else {
        return refusal(&Refusal::UnknownOrigin(origin));
    };
    // Held from reading the state to writing the new one: one request per origin at a time.
    let _guard = lock.lock().await;
    let decided = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || decide(&shared, &origin, &request)).await
    };
    match decided {
        Ok(Ok(cosignature)) => text(StatusCode::OK, cosignature),
        Ok(Err(Decision::Refused(refused))) => {
            if refused.status() == 422 || matches!(refused, Refusal::OldAboveNew { .. }) {
                tracing::warn!(
                    status = refused.status(),
                    "witness refused a checkpoint that does not extend its state"
                );
            }
            refusal(&refused)
        }
        Ok(Err(Decision::Storage(message))) => {
            tracing::error!("witness state unusable");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{message}\n"))
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "the witness failed\n".into()),
    }
}

enum Decision {
    Refused(Refusal),
    Storage(String),
}

/// Reads the origin's state, decides, and on success replaces the state durably: called with
/// the origin's lock held.
fn decide(shared: &Shared, origin: &str, request: &AddCheckpoint) -> Result<String, Decision> {
    let path = shared.state_path(origin);
    let stored = match fs::read_to_string(&path) {
        Ok(note) => Some(
            witness::stored_checkpoint(&note)
                .map_err(|e| Decision::Storage(format!("the witness's state for this log is unreadable: {e}")))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Decision::Storage(format!("the witness cannot read its state: {e}"))),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let cosigned =
        witness::add_checkpoint(stored.as_ref(), &shared.logs, request, &shared.key, now).map_err(Decision::Refused)?;
    private::replace(&path, cosigned.state.as_bytes())
        .and_then(|()| sync_dir(&path))
        .map_err(|e| Decision::Storage(format!("the witness cannot write its state: {e}")))?;
    tracing::info!(size = cosigned.checkpoint.size, "witness cosigned");
    Ok(cosigned.cosignature)
}

/// The latest checkpoint cosigned for the log whose origin hashes to `origin_hash`.
async fn checkpoint(State(shared): State<Arc<Shared>>, UrlPath(origin_hash): UrlPath<String>) -> Response {
    let Some(origin) = shared.locks.keys().find(|o| witness::origin_hash(o) == origin_hash) else {
        return text(StatusCode::NOT_FOUND, "this witness does not witness that log\n".into());
    };
    let path = shared.state_path(origin);
    match tokio::task::spawn_blocking(move || fs::read_to_string(path)).await {
        Ok(Ok(note)) => text(StatusCode::OK, note),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            text(StatusCode::NOT_FOUND, "nothing cosigned for this log yet\n".into())
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "the witness cannot read its state\n".into()),
    }
}

//! The log's read API over plain HTTP, as C2SP tlog-tiles specifies it
//! (<https://c2sp.org/tlog-tiles>): `GET /checkpoint`, `GET /tile/<L>/<N>[.p/<W>]` and
//! `GET /tile/entries/<N>[.p/<W>]`, for monitors and witnesses that speak the ecosystem's
//! protocol rather than Oubli's gRPC. Only the published tree is served: a tile beyond the
//! latest checkpoint is 404 until a checkpoint covers it. Tiles and bundles never change once
//! served (a partial tile of width W is the same bytes forever), so they are cached as
//! immutable; the checkpoint is not cached.
use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{engine::Engine, transparency::tiles::TilePath};

/// Cache-Control of a tile or bundle: the same bytes forever.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The router: `/checkpoint` and `/tile/...`.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new().route("/checkpoint", get(checkpoint)).route("/tile/{*path}", get(tile)).with_state(engine)
}

/// Serves the tiles API on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, engine: Arc<Engine>, shutdown: impl Future<Output = ()> + Send + 'static) {
    if let Err(e) = axum::serve(listener, router(engine)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the tiles server stopped");
    }
}

async fn checkpoint(State(engine): State<Arc<Engine>>) -> Response {
    let note = engine.log().checkpoint();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], note).into_response()
}

async fn tile(State(engine): State<Arc<Engine>>, Path(path): Path<String>) -> Response {
    let tile = match TilePath::parse(&path) {
        Ok(tile) => tile,
        Err(e) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    };
    let found = tokio::task::spawn_blocking(move || engine.log().tile(&tile)).await;
    match found {
        Ok(Ok(Some(bytes))) => {
            ([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, IMMUTABLE)], bytes)
                .into_response()
        }
        Ok(Ok(None)) => {
            (StatusCode::NOT_FOUND, "no such tile in the published tree (yet): fetch /checkpoint for its size\n")
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading a tile failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the tile could not be read; the server's log has the details\n")
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "a tile handler failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the request failed inside the server; it has been logged\n")
                .into_response()
        }
    }
}

//! Oubli: a face-template store that honours access and erasure requests verifiably.
//!
//! All templates are synthetic. See ARCHITECTURE.md for the bird's-eye view; the modules, from
//! the bottom up:
//! - [`embedding`], [`record`]: validated domain values (templates, ids, provenance);
//! - [`transparency`]: RFC 6962 Merkle tree math for the transparency log (pure);
//! - [`index`]: in-memory nearest-neighbour search (sync, no I/O);
//! - [`store`]: encrypted RocksDB storage (the only module that knows RocksDB);
//! - [`engine`]: the store and the index kept in step (sync);
//! - [`rights`]: roles, ingest policy, recipients log, audit trail, access requests (sync);
//! - [`synth`]: seeded synthetic templates and provenance (the `synth` feature, on by default);
//! - [`grpc`]: the tonic services and `run`, the server as a library function;
//! - [`http`]: the tlog-witness server and the log's client for it (axum, hyper).
pub mod embedding;
pub mod engine;
pub mod failpoint;
pub mod grpc;
pub mod http;
pub mod index;
pub mod kernel;
pub mod metrics;
pub mod record;
pub mod rights;
pub mod store;
#[cfg(feature = "synth")]
pub mod synth;
pub mod transparency;

pub use grpc::{Config, run};

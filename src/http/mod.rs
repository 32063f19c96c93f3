//! Oubli over plain HTTP, beside gRPC: the log's C2SP tlog-tiles read API (`tiles`) and the
//! integrator that signs checkpoints at a cadence and gets them cosigned (`integrate`). The only
//! library module (with the binaries) that knows axum or hyper.
pub mod integrate;
pub mod tiles;

//! Oubli over plain HTTP, beside gRPC: the log's C2SP tlog-tiles read API (`tiles`), the
//! integrator that signs checkpoints at a cadence and gets them cosigned (`integrate`), the
//! c2sp.org/tlog-witness server (`witness`) and the log's client for it (`client`). Only this
//! module and the binaries name axum or hyper; what to decide lives below, in `transparency`
//! (pure).
pub mod client;
pub mod integrate;
pub mod tiles;
pub mod witness;

//! HTTP transport, beside `grpc` at the top of the library: the c2sp.org/tlog-witness server
//! (`witness`) and the log's client for it (`client`). Only this module and the binaries name
//! axum or hyper; what to decide lives below, in `transparency` (pure).
pub mod client;
pub mod witness;

//! One integration-test binary: a real server on 127.0.0.1:0, real RocksDB in a temp dir, real
//! gRPC. No mocks.
mod architecture;
mod browser;
mod cli;
mod cluster;
mod crash;
mod docs;
mod erasure;
mod fuzz;
mod harness;
mod identity;
mod index;
mod limits;
mod logs;
mod restore;
mod rights;
mod synth;
mod templates;
mod tiles;
mod tls;
mod transparency;
mod witness;

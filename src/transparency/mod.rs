//! The transparency log's pure parts: RFC 6962 tree math (and, through the open issue, signed
//! checkpoints and receipts). No I/O here: storage goes through `store`, serving through `grpc`.
pub mod event;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod statements;
pub mod tree;
pub mod witness;

#[cfg(test)]
mod tests;

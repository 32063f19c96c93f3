//! The transparency log, storage-free: RFC 6962 tree math (`merkle`, `tree`), C2SP signed notes
//! and checkpoints (`note`), witness cosignatures and the add-checkpoint body (`cosign`), log entries (`event`), the writer that sequences, signs and proves
//! (`log`), receipts and their offline check (`receipt`), and a witness's verdict (`witness`).
//! No I/O here: the rows go into the caller's write batch through `log::LogSink`, serving goes
//! through `grpc`.
pub mod cosign;
pub mod event;
pub mod log;
pub mod merkle;
pub mod note;
pub mod receipt;
pub mod statements;
pub mod tiles;
pub mod tree;
pub mod witness;

#[cfg(test)]
mod tests;

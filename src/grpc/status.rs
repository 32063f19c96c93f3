//! The one mapping from domain errors to gRPC status codes: one exhaustive `match` per layer's
//! error enum, no catch-all arm, so a new variant does not compile until someone decides what a
//! client sees. Storage and corruption details stay in the operator's log.
use std::fmt::Display;

use tonic::{Code, Status};

use crate::{
    embedding::EmbeddingError,
    engine,
    record::RecordError,
    rights::{self, auth::AuthError, identity::CaptureError, policy::PolicyError},
    store,
};

/// Paths and engine messages stay in the operator's log, not in the client's hands.
fn internal(e: &impl Display) -> Status {
    tracing::error!(error = %e, "storage failure");
    Status::internal("internal storage error; the server's log has the details")
}

/// Seconds a client should wait before asking again for a receipt that is pending.
pub const PENDING_RETRY_SECONDS: u64 = 1;

/// A receipt whose leaf no published checkpoint covers yet: UNAVAILABLE (retry) with a
/// `retry-after` hint in seconds.
fn pending(message: String) -> Status {
    let mut status = Status::unavailable(format!("pending: {message}"));
    status.metadata_mut().insert("retry-after", PENDING_RETRY_SECONDS.into());
    status
}

fn data_loss(e: &impl Display) -> Status {
    tracing::error!(error = %e, "corrupt data");
    Status::data_loss(e.to_string())
}

impl From<EmbeddingError> for Status {
    fn from(e: EmbeddingError) -> Self {
        match e {
            EmbeddingError::WrongDimension { .. } | EmbeddingError::NonFinite { .. } | EmbeddingError::Zero => {
                Status::invalid_argument(e.to_string())
            }
        }
    }
}

impl From<RecordError> for Status {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::MalformedId(_)
            | RecordError::MissingProvenance
            | RecordError::EmptySourceUri
            | RecordError::SourceUriTooLong(_)
            | RecordError::MissingCollectedAt
            | RecordError::InvalidCollectedAt(_)
            | RecordError::CollectedInFuture { .. }
            | RecordError::UnspecifiedSourceKind
            | RecordError::UnspecifiedLegalBasis
            | RecordError::UnknownEnumValue { .. }
            | RecordError::UnknownName { .. }
            | RecordError::InvalidJurisdiction(_)
            | RecordError::IdempotencyKeyTooLong(_) => Status::invalid_argument(e.to_string()),
        }
    }
}

impl From<store::Error> for Status {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Corrupt(_) | store::Error::LogMismatch(_) => data_loss(&e),
            store::Error::Proof(_) | store::Error::TooManyKeys { .. } => Status::invalid_argument(e.to_string()),
            store::Error::NoEntry { .. } => Status::not_found(e.to_string()),
            store::Error::Pending { .. } => pending(e.to_string()),
            store::Error::Unverified(_) | store::Error::Consensus { .. } => Status::unavailable(e.to_string()),
            store::Error::Fenced { .. } => Status::failed_precondition(e.to_string()),
            store::Error::KeyConflict(_) => Status::aborted(e.to_string()),
            store::Error::Rocks(_)
            | store::Error::Io { .. }
            | store::Error::DimensionMismatch { .. }
            | store::Error::InvalidDimension(_)
            | store::Error::UnsupportedFormat { .. }
            | store::Error::MissingKeys { .. }
            | store::Error::WrongKeys { .. }
            | store::Error::NestedDirs { .. }
            | store::Error::KeyFile { .. }
            | store::Error::KeyDirBound { .. }
            | store::Error::BehindMirror { .. }
            | store::Error::KeyHomeMismatch { .. }
            | store::Error::WrongCluster { .. }
            | store::Error::Private(_) => internal(&e),
        }
    }
}

impl From<engine::Error> for Status {
    fn from(e: engine::Error) -> Self {
        match e {
            engine::Error::InvalidK(_) | engine::Error::InvalidMinScore(_) => Status::invalid_argument(e.to_string()),
            engine::Error::NotFound(_) => Status::not_found(e.to_string()),
            engine::Error::IdempotencyConflict { .. } => Status::failed_precondition(e.to_string()),
            engine::Error::Store(s) => Status::from(s),
            // Index parameters are the operator's, checked at start-up.
            engine::Error::Index(_) => internal(&e),
        }
    }
}

impl From<PolicyError> for Status {
    fn from(e: PolicyError) -> Self {
        match e {
            // The policy is the operator's; a client sees why its call cannot go ahead now.
            PolicyError::File { .. } | PolicyError::Invalid { .. } | PolicyError::UnknownProfile(_) => {
                Status::failed_precondition(e.to_string())
            }
        }
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            // The tokens file is the operator's, and its path stays in the log.
            AuthError::Io { .. } | AuthError::Invalid { .. } | AuthError::Private(_) => internal(&e),
        }
    }
}

impl From<rights::Error> for Status {
    fn from(e: rights::Error) -> Self {
        match e {
            rights::Error::Engine(inner) => Status::from(inner),
            rights::Error::Policy(inner) => Status::from(inner),
            rights::Error::PolicyRefused { .. }
            | rights::Error::WrongState { .. }
            | rights::Error::StillMatches { .. } => Status::failed_precondition(e.to_string()),
            rights::Error::InvalidRequest(_) => Status::invalid_argument(e.to_string()),
            rights::Error::NoRequest(_) | rights::Error::NoNotification(_) => Status::not_found(e.to_string()),
            rights::Error::WrongSecret(_) => Status::permission_denied(e.to_string()),
            rights::Error::RateLimited { retry_after_secs } | rights::Error::QueueFull { retry_after_secs } => {
                retry_later(&e, retry_after_secs)
            }
            rights::Error::Capture(inner) => Status::from(inner),
            rights::Error::PrimaryUnavailable(_) => Status::unavailable(e.to_string()),
            rights::Error::CorruptRequest(..) => {
                tracing::error!(error = %e, "corrupt request");
                Status::new(Code::DataLoss, e.to_string())
            }
        }
    }
}

/// RESOURCE_EXHAUSTED, with when to retry in the message and in `retry-after` (seconds, as
/// in HTTP) for programs.
fn retry_later(e: &rights::Error, retry_after_secs: u64) -> Status {
    let mut status = Status::resource_exhausted(e.to_string());
    status.metadata_mut().insert("retry-after", retry_after_secs.into());
    status
}

impl From<CaptureError> for Status {
    fn from(e: CaptureError) -> Self {
        match e {
            CaptureError::UnknownChallenge
            | CaptureError::ExpiredChallenge
            | CaptureError::UsedChallenge
            | CaptureError::UnknownKey(_)
            | CaptureError::BadSignature(_) => Status::permission_denied(e.to_string()),
            CaptureError::SignatureCount { .. } => Status::invalid_argument(e.to_string()),
            CaptureError::TooManyChallenges { .. } => Status::resource_exhausted(e.to_string()),
            CaptureError::KeysFile { .. } => internal(&e),
        }
    }
}

/// Prefixes a status message with the stream item it is about.
pub fn for_item(item: usize, status: Status) -> Status {
    Status::new(status.code(), format!("item {item}: {}", status.message()))
}

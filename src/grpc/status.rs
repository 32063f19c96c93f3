//! The one mapping from domain errors to gRPC status codes. Exhaustive on purpose: a new error
//! variant does not compile until someone decides what a client sees.
use tonic::{Code, Status};

use crate::{embedding::EmbeddingError, engine, record::RecordError, rights, store};

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

impl From<engine::Error> for Status {
    fn from(e: engine::Error) -> Self {
        let code = match &e {
            engine::Error::InvalidK(_) | engine::Error::InvalidMinScore(_) => Code::InvalidArgument,
            engine::Error::NotFound(_) => Code::NotFound,
            engine::Error::IdempotencyConflict { .. } => Code::FailedPrecondition,
            // Index parameters are the operator's, checked at start-up.
            engine::Error::Index(_) => Code::Internal,
            engine::Error::Store(s) => match s {
                store::Error::Corrupt(_) | store::Error::LogMismatch(_) => Code::DataLoss,
                store::Error::Proof(_) => Code::InvalidArgument,
                store::Error::NoEntry { .. } => Code::NotFound,
                store::Error::Unverified(_) => Code::Unavailable,
                store::Error::Rocks(_)
                | store::Error::Io { .. }
                | store::Error::DimensionMismatch { .. }
                | store::Error::InvalidDimension(_)
                | store::Error::UnsupportedFormat { .. }
                | store::Error::MissingKeys { .. }
                | store::Error::WrongKeys { .. }
                | store::Error::NestedDirs { .. }
                | store::Error::KeyFile { .. } => Code::Internal,
            },
        };
        match code {
            // Paths and engine messages stay in the operator's log, not in the client's hands.
            Code::Internal => {
                tracing::error!(error = %e, "storage failure");
                Status::internal("internal storage error; the server's log has the details")
            }
            Code::DataLoss => {
                tracing::error!(error = %e, "corrupt data");
                Status::data_loss(e.to_string())
            }
            _ => Status::new(code, e.to_string()),
        }
    }
}

impl From<rights::Error> for Status {
    fn from(e: rights::Error) -> Self {
        let code = match &e {
            rights::Error::Engine(_) => Code::Unknown,
            rights::Error::PolicyRefused { .. } | rights::Error::Policy(_) | rights::Error::WrongState { .. } => {
                Code::FailedPrecondition
            }
            rights::Error::InvalidRequest(_) => Code::InvalidArgument,
            rights::Error::NoRequest(_) | rights::Error::NoNotification(_) => Code::NotFound,
            rights::Error::StillMatches { .. } => Code::FailedPrecondition,
            rights::Error::WrongSecret(_) => Code::PermissionDenied,
            rights::Error::RateLimited { .. } => Code::ResourceExhausted,
            rights::Error::CorruptRequest(..) => Code::DataLoss,
        };
        match e {
            rights::Error::Engine(inner) => Status::from(inner),
            e => {
                if code == Code::DataLoss {
                    tracing::error!(error = %e, "corrupt request");
                }
                Status::new(code, e.to_string())
            }
        }
    }
}

/// Prefixes a status message with the stream item it is about.
pub fn for_item(item: usize, status: Status) -> Status {
    Status::new(status.code(), format!("item {item}: {}", status.message()))
}

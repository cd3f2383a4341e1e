//! Every error a call can end with, and its gRPC status, in one place.

use crate::batcher::{JobError, SubmitError};
use meridian_proto::headers::GRPC_RETRY_PUSHBACK_MS;
use std::time::Duration;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// Why an inference (or another call) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    /// The server is draining (SIGTERM).
    #[error("the server is shutting down and takes no new requests")]
    Draining,
    /// No such model.
    #[error("unknown model '{0}'")]
    ModelNotFound(String),
    /// The model exists but not that version.
    #[error("model '{model}' has no version '{version}' loaded (loaded: {loaded})")]
    VersionNotFound {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
        /// What is loaded.
        loaded: String,
    },
    /// The model is loading or failed to load.
    #[error("model '{model}' is not ready: {reason}")]
    NotReady {
        /// The model.
        model: String,
        /// Its state and reason.
        reason: String,
    },
    /// The request is malformed; the message names the problem.
    #[error("{0}")]
    Invalid(String),
    /// The caller's identity is not among the model's `allowed_identities`.
    #[error("{}", denied_message(model, identity.as_deref()))]
    PermissionDenied {
        /// The model.
        model: String,
        /// The caller's verified identity; `None`: it has none.
        identity: Option<String>,
    },
    /// A rate limit refused the request.
    #[error("rate limit of model '{model}' exceeded for {scope}")]
    RateLimited {
        /// The model.
        model: String,
        /// Which bucket.
        scope: String,
        /// When to come back.
        retry_after: Duration,
    },
    /// The version's queue is full.
    #[error("model '{model}' version {version}: {source}")]
    Overloaded {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The batcher's refusal.
        source: SubmitError,
    },
    /// The deadline passed before the request ran.
    #[error("model '{model}': {message}")]
    DeadlineExceeded {
        /// The model.
        model: String,
        /// What happened.
        message: String,
    },
    /// The executor failed on the batch this request ran in.
    #[error("model '{model}' version {version} failed: {message}")]
    Internal {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// The executor's error.
        message: String,
    },
}

fn denied_message(model: &str, identity: Option<&str>) -> String {
    match identity {
        Some(identity) => format!("identity '{identity}' is not allowed to call model '{model}' (allowed_identities)"),
        None => format!(
            "model '{model}' admits only its allowed_identities and this call carries no verified identity \
             (no client certificate with a SPIFFE ID)"
        ),
    }
}

impl InferError {
    /// An INVALID_ARGUMENT error.
    pub fn invalid(message: impl Into<String>) -> Self {
        InferError::Invalid(message.into())
    }

    /// Maps a batcher outcome of `model`/`version`.
    pub fn from_job(model: &str, version: u64, e: JobError) -> Self {
        match e {
            JobError::DeadlineExceeded { .. } => {
                InferError::DeadlineExceeded { model: model.into(), message: e.to_string() }
            }
            JobError::Execution(message) => InferError::Internal { model: model.into(), version, message },
            JobError::ShuttingDown => InferError::NotReady { model: model.into(), reason: e.to_string() },
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            InferError::Draining | InferError::NotReady { .. } => Code::Unavailable,
            InferError::ModelNotFound(_) | InferError::VersionNotFound { .. } => Code::NotFound,
            InferError::Invalid(_) => Code::InvalidArgument,
            InferError::RateLimited { .. } | InferError::Overloaded { .. } => Code::ResourceExhausted,
            InferError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            InferError::Internal { .. } => Code::Internal,
            InferError::PermissionDenied { .. } => Code::PermissionDenied,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            InferError::RateLimited { retry_after, .. } => Some(*retry_after),
            InferError::Overloaded { source: SubmitError::QueueFull { retry_after, .. }, .. } => Some(*retry_after),
            InferError::Overloaded { source: SubmitError::QueueBytes { retry_after, .. }, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<InferError> for Status {
    fn from(e: InferError) -> Status {
        let mut metadata = MetadataMap::new();
        if let Some(after) = e.retry_after() {
            let ms = after.as_millis().max(1).to_string();
            if let Ok(v) = MetadataValue::try_from(ms.as_str()) {
                metadata.insert(GRPC_RETRY_PUSHBACK_MS, v);
            }
        }
        Status::with_metadata(e.code(), e.to_string(), metadata)
    }
}

/// The status name used in metrics labels (`OK`, `INVALID_ARGUMENT`…).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

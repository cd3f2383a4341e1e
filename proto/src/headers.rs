//! The `x-meridian-*` metadata names the sidecar and the filters share.
//!
//! The sidecar sets the load signals on every inference response (as gRPC
//! initial metadata, i.e. HTTP/2 response headers), so a proxy can steer on
//! them without an extra hop.

/// Requests waiting in the version's queue when this request joined it
/// (this one included).
pub const QUEUE_DEPTH: &str = "x-meridian-queue-depth";
/// Microseconds this request waited in the queue before its batch ran.
pub const QUEUE_TIME_US: &str = "x-meridian-queue-time-us";
/// Rows in the batch this request ran in.
pub const BATCH_SIZE: &str = "x-meridian-batch-size";
/// The model version that served the request.
pub const MODEL_VERSION: &str = "x-meridian-model-version";
/// The executor instance (worker) that ran the request.
pub const INSTANCE: &str = "x-meridian-instance";
/// Who is calling, for per-caller rate limits (until mTLS identities).
pub const CALLER: &str = "x-meridian-caller";
/// gRPC's retry pushback: milliseconds after which a retry may succeed.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

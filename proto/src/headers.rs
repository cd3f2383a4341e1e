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

// --- Set or read by the mesh (the filters and the region gateways). ---

/// The model a request calls, set by the caller (the gRPC path does not
/// carry it); the filters route and keep breakers per model.
pub const MODEL: &str = "x-meridian-model";
/// The caller's region, trusted only where the filter's config says so.
pub const CALLER_REGION: &str = "x-meridian-caller-region";
/// The residency zone a request must stay in (e.g. `eu`).
pub const RESIDENCY: &str = "x-meridian-residency";
/// The region that served a response, stamped by its region gateway.
pub const REGION: &str = "x-meridian-region";
/// Why the mesh refused a request it could not route (with UNAVAILABLE).
pub const REASON: &str = "x-meridian-reason";
/// The cluster the filter picked; the route reads it (`cluster_header`).
pub const CLUSTER: &str = "x-meridian-cluster";
/// The filter's decision (region order, reason, retries), when debugging.
pub const DECISION: &str = "x-meridian-decision";
/// The filter instance that handled a request.
pub const FILTER: &str = "x-meridian-filter";
/// A caller's request for a model version (canary split): honoured only
/// where the model's policy allows overrides, to an existing version.
pub const VERSION: &str = "x-meridian-version";
/// The model version the filter chose, which region gateways route on. The
/// caller-side proxy strips it from incoming requests (an internal-only
/// header), so only the filter sets it.
pub const ROUTE_VERSION: &str = "x-meridian-route-version";
/// Set by a region gateway on a reply it made because no sidecar could be
/// reached: a request that never reached a sidecar may be retried even when
/// its model is not idempotent.
pub const UNREACHED: &str = "x-meridian-unreached";
/// Makes the filter panic, when its debug config allows (tests FAIL_RELOAD).
pub const DEBUG_PANIC: &str = "x-meridian-debug-panic";
/// The caller-side route's one-header summary of a response, for the
/// filter to read in one host call:
/// `region|queue-depth|upstream-ms|attempts|grpc-status|http-status`
/// (empty where unknown).
pub const OUTCOME: &str = "x-meridian-outcome";
/// The request's routing headers in one, for the filter to read in one
/// host call: the caller-side connection manager (Envoy's early header
/// mutation, before any filter) overwrites whatever a client sent with the
/// values of
/// [`REQUEST_SUMMARY_FIELDS`], in that order, joined by `|` (empty where
/// absent).
pub const REQUEST_SUMMARY: &str = "x-meridian-request";
/// The headers [`REQUEST_SUMMARY`] carries, in order.
pub const REQUEST_SUMMARY_FIELDS: [&str; 6] = [MODEL, RESIDENCY, CALLER, CALLER_REGION, VERSION, GRPC_TIMEOUT];
/// gRPC's deadline header (`TimeoutValue TimeoutUnit`).
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

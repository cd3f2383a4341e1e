//! The `MeshPolicy` document, field by field. The doc comment of each
//! field is its documentation: it becomes the JSON schema's description
//! (`meridianctl schema`) and the reference in docs/policy.md.

pub use super::autoscaling::Autoscaling;
use super::duration::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `apiVersion` this version of Meridian reads.
pub const API_VERSION: &str = "meridian.dev/v1alpha1";
/// The `kind`.
pub const KIND: &str = "MeshPolicy";

/// A name used in Kubernetes resource names and Envoy cluster names:
/// lowercase letters, digits and `-`, starting and ending with a letter or
/// digit.
pub(crate) const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// `IP:PORT` or `HOST:PORT`.
pub(crate) const ADDRESS_PATTERN: &str = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$";

/// One Meridian mesh: its regions, models, callers and how calls are
/// routed, retried and broken. `meridianctl` derives from it the filter's
/// configuration, the Istio resources, the plain Envoy bootstraps and the
/// local mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "MeshPolicy")]
pub struct MeshPolicy {
    /// Always `meridian.dev/v1alpha1`.
    #[schemars(extend("enum" = [API_VERSION]))]
    pub api_version: String,
    /// Always `MeshPolicy`.
    #[schemars(extend("enum" = [KIND]))]
    pub kind: String,
    /// The policy's name and the Kubernetes namespace its resources go to.
    #[serde(default)]
    pub metadata: Metadata,
    /// Every region the mesh can route to, in order of preference when
    /// scores tie. At least one.
    #[schemars(length(min = 1))]
    pub regions: Vec<Region>,
    /// The models served, by name (the value callers send in
    /// `x-meridian-model`). A model not listed gets the mesh-wide defaults.
    #[serde(default)]
    pub models: BTreeMap<String, Model>,
    /// Known callers, by the identity they send in `x-meridian-caller`.
    #[serde(default)]
    pub callers: BTreeMap<String, Caller>,
    /// How regions are scored and how readily the leader changes.
    #[serde(default)]
    pub routing: Routing,
    /// Timeouts, retries, retry budgets, circuit breakers and health checks
    /// for every model (a model may override them).
    #[serde(default)]
    pub resilience: Resilience,
    /// Server-side dynamic batching defaults for every model's sidecars.
    #[serde(default)]
    pub batching: Batching,
    /// What Envoy does with calls when the filter's VM fails: `FAIL_RELOAD`
    /// (start a fresh VM; calls fail meanwhile), `FAIL_OPEN` (calls pass
    /// without Meridian's routing) or `FAIL_CLOSE` (calls fail).
    #[serde(default)]
    pub fail_strategy: FailStrategy,
    /// The caller-side proxy: the Envoy (or Istio sidecar) that runs the
    /// filter in front of callers.
    #[serde(default)]
    pub caller_proxy: CallerProxy,
    /// The filter module and its operator switches.
    #[serde(default)]
    pub filter: Filter,
    /// Settings used only when rendering Istio resources.
    #[serde(default)]
    pub istio: Istio,
    /// What the mesh reports beyond its metrics: distributed traces.
    #[serde(default)]
    pub telemetry: Telemetry,
}

/// The policy's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metadata {
    /// Prefix of every rendered resource's name.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 40))]
    pub name: String,
    /// The Kubernetes namespace of the rendered Istio resources.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 63))]
    pub namespace: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Self { name: "meridian".into(), namespace: "meridian".into() }
    }
}

/// A region: a failure domain with its own model servers, behind one
/// gateway, inside one residency zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Region {
    /// Its name (`eu-west`), unique in the policy.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 40))]
    pub name: String,
    /// Its residency zone (`eu`): calls bound to a zone never leave it,
    /// failover included.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 40))]
    pub zone: String,
    /// Its locality as Istio and Envoy write it, `region[/zone[/subzone]]`
    /// (`europe-west1/europe-west1-b`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[^/]+(/[^/]+){0,2}$"))]
    pub locality: Option<String>,
    /// The region's gateway, which callers in every region connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// The Kubernetes Service of the region's model servers (Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    /// The region's model servers (`meridian-sidecar`s), for plain Envoy
    /// and the local mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// How much the region takes at once.
    #[serde(default)]
    pub capacity: Capacity,
}

/// A region's gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// `IP:PORT` or `HOST:PORT` that callers connect to (in the local mesh,
    /// an address in the region's `127.0.N.0/24` block).
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub address: String,
    /// The mesh-internal host name Istio callers use for this gateway (the
    /// ServiceEntry's host). Default: `<region>.gateway.<metadata.name>.internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: Option<String>,
    /// Envoy admin address of this gateway in the local mesh (`IP:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub admin: Option<String>,
}

/// A Kubernetes Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Its host name (`models.eu-west.svc.cluster.local`).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: String,
    /// Its gRPC port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// One model server of a region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Its gRPC address, `IP:PORT`.
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub address: String,
    /// The version label it serves (a name from a model's `versions`); the
    /// region's gateway routes calls for that version here.
    #[serde(default = "defaults::version")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub version: String,
    /// Its metrics address (`/metrics`, `/healthz`), `IP:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub metrics: Option<String>,
}

/// A region's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Capacity {
    /// Calls the region's gateway has in flight at most (Envoy circuit
    /// breaker `max_requests`, Istio `connectionPool.http.http2MaxRequests`);
    /// more fail fast and fail over.
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self { max_concurrent_requests: 100_000 }
    }
}

/// A model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Model {
    /// Its versions. Default: one, `v1`, serving model version 1 everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ModelVersion>,
    /// The version most calls go to. Default: the first of `versions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub stable: Option<String>,
    /// A canary split between `stable` and another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Shadow traffic: a share of the calls also sent to another version in
    /// the caller's region, answers dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
    /// Its service-level objectives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Slo>,
    /// Whether a call may run twice. `false`: retried only when it never
    /// reached a model server. Default: `resilience.retry.idempotent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Its request timeout (every attempt together). Default:
    /// `resilience.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Overrides of `resilience.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryOverride>,
    /// Overrides of `resilience.breaker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerOverride>,
    /// Overrides of the mesh-wide `batching`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingOverride>,
    /// How each region scales the model's servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// A version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelVersion {
    /// Its label (`v1`): the version label of the endpoints (and Kubernetes
    /// pods) that serve it.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 40))]
    pub name: String,
    /// The model version number the model servers serve it as (the folder
    /// in their repository; `x-meridian-model-version` on answers).
    /// Default: the label's digits (`v2` → 2), else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub model_version: Option<u64>,
    /// The regions that run it. Default: every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

/// A canary split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// The version under test (one of `versions`, not `stable`).
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub version: String,
    /// Percent of calls (or of sticky keys) on the canary, 0–100. With
    /// `steps`, the first step's weight applies instead.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: f64,
    /// What keeps a caller on its version while the weight changes:
    /// `caller` (the `x-meridian-caller` identity) or `{header: NAME}`.
    /// Absent: each call is drawn on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<Sticky>,
    /// Whether `x-meridian-version` may pick stable or canary.
    #[serde(default)]
    pub allow_override: bool,
    /// A progressive rollout: each step's weight and how long it holds; after
    /// the last the canary is promoted (100 %). Empty: `weight` stays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// What the canary is judged on against stable; a breach rolls it back
    /// to 0 % until its configuration changes.
    #[serde(default)]
    pub analysis: Analysis,
}

/// The sticky key of a canary split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Sticky {
    /// The caller identity (`x-meridian-caller`).
    Caller,
    /// A request header's value (lowercase name).
    Header(#[schemars(regex(pattern = "^[a-z0-9!#$%&'*+.^_`|~-]+$"))] String),
}

/// One rollout step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Percent of calls on the canary during the step.
    #[schemars(range(min = 0, max = 100))]
    pub weight: f64,
    /// How long the step holds before the next (if the analysis passes).
    pub hold: Duration,
}

/// A canary's analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Analysis {
    /// Canary error rate (server-side failures) above which it rolls back.
    /// Default: the model's `slo.errorRate`, else 0.05.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub max_error_rate: Option<f64>,
    /// Canary p99 above this multiple of stable's p99 rolls it back.
    #[schemars(range(min = 1))]
    pub max_p99_ratio: f64,
    /// Calls the canary needs in the window before it is judged.
    #[schemars(range(min = 1))]
    pub min_samples: u32,
    /// The window rates and p99 are measured over.
    pub window: Duration,
}

impl Default for Analysis {
    fn default() -> Self {
        Self { max_error_rate: None, max_p99_ratio: 2.0, min_samples: 50, window: Duration::from_secs(10) }
    }
}

/// Shadow traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shadow {
    /// The version that receives the mirrored calls.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub version: String,
    /// Percent of the model's calls mirrored.
    #[schemars(range(min = 0, max = 100))]
    pub percent: u32,
}

/// A model's service-level objectives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Slo {
    /// The p99 latency objective. A call slower than this counts as slow
    /// for the circuit breakers unless `breaker.slowCall` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<Duration>,
    /// The error-rate objective (0–1); a canary above it rolls back unless
    /// `canary.analysis.maxErrorRate` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1))]
    pub error_rate: Option<f64>,
}

/// Who calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Caller {
    /// Its SPIFFE identity (`spiffe://<trust domain>/ns/<ns>/sa/<account>`),
    /// from which Istio's AuthorizationPolicy admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$"))]
    pub identity: Option<String>,
    /// The residency zone its calls must stay in (a hard rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub residency: Option<String>,
    /// The region it calls from (the local mesh's traffic; with
    /// `callerProxy.trustCallerRegionHeader`, sent in
    /// `x-meridian-caller-region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub region: Option<String>,
    /// The models it may call. Default: every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Region scoring and hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Routing {
    /// A region must score below `leader × (1 − margin)` to take over…
    #[schemars(range(min = 0), extend("exclusiveMaximum" = 1))]
    pub margin: f64,
    /// …and at least this much below it…
    pub min_margin: Duration,
    /// …continuously for this long.
    pub dwell: Duration,
    /// Score added per call queued at a region's model servers (their
    /// in-band `x-meridian-queue-depth`), in milliseconds.
    #[schemars(range(min = 0))]
    pub ms_per_queued_request: f64,
    /// Queue depth from which a region counts as overloaded (goes last).
    #[schemars(range(min = 0))]
    pub spill_queue_depth: f64,
    /// The latency assumed for a region with no samples yet.
    pub unknown_latency: Duration,
    /// Weight of the newest sample in the latency average (0 < α ≤ 1).
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub ewma_alpha: f64,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            margin: 0.2,
            min_margin: Duration::from_millis(5),
            dwell: Duration::from_secs(3),
            ms_per_queued_request: 1.0,
            spill_queue_depth: 64.0,
            unknown_latency: Duration::from_millis(50),
            ewma_alpha: 0.2,
        }
    }
}

/// Mesh-wide resilience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resilience {
    /// A call's timeout, every attempt together.
    pub timeout: Duration,
    /// Retries.
    pub retry: Retry,
    /// The retry budget, per model.
    pub budget: Budget,
    /// Circuit breakers, per (region, model).
    pub breaker: Breaker,
    /// Active health checks of every region.
    pub health: Health,
    /// How many regions one call may try, the first included.
    #[schemars(range(min = 1, max = 4))]
    pub max_failover_regions: usize,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            retry: Retry::default(),
            budget: Budget::default(),
            breaker: Breaker::default(),
            health: Health::default(),
            max_failover_regions: 3,
        }
    }
}

/// Retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts per call, the first included (each retry goes to the next
    /// region of the order).
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: u32,
    /// Each attempt's timeout.
    pub per_try_timeout: Duration,
    /// The first retry's back-off (Envoy's jittered back-off grows to 10×).
    pub backoff: Duration,
    /// Whether calls may run twice (see `models.<m>.idempotent`).
    pub idempotent: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            per_try_timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(25),
            idempotent: true,
        }
    }
}

/// A model's retry overrides; absent fields keep `resilience.retry`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryOverride {
    /// Attempts per call, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: Option<u32>,
    /// Each attempt's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// The first retry's back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

/// The retry budget: over `window`, retries may be at most
/// `minRetries + ratio × calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Budget {
    /// Retries allowed per call.
    #[schemars(range(min = 0, max = 10))]
    pub ratio: f64,
    /// Retries always allowed per window.
    pub min_retries: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self { ratio: 0.2, min_retries: 10, window: Duration::from_secs(10) }
    }
}

/// Circuit breaker thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Breaker {
    /// Failures in a row that open the breaker.
    #[schemars(range(min = 1))]
    pub consecutive_failures: u32,
    /// Failure rate over the window that opens it (0 < rate ≤ 1).
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub failure_rate: f64,
    /// Slow-call rate over the window that opens it (0 < rate ≤ 1).
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub slow_call_rate: f64,
    /// A success slower than this counts as slow. Default: the model's
    /// `slo.p99`, else 1s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<Duration>,
    /// The sliding window.
    pub window: Duration,
    /// Calls the window needs before its rates count.
    pub min_volume: u32,
    /// How long the first trip stays open (doubling per trip in a row).
    pub base_open: Duration,
    /// The longest an open period grows to.
    pub max_open: Duration,
    /// Calls let through while half-open.
    #[schemars(range(min = 1))]
    pub half_open_probes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            slow_call_rate: 0.8,
            slow_call: None,
            window: Duration::from_secs(10),
            min_volume: 20,
            base_open: Duration::from_secs(1),
            max_open: Duration::from_secs(30),
            half_open_probes: 3,
        }
    }
}

/// A model's breaker overrides; absent fields keep `resilience.breaker`'s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakerOverride {
    /// Failures in a row that open the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: Option<u32>,
    /// Failure rate over the window that opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub failure_rate: Option<f64>,
    /// Slow-call rate over the window that opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub slow_call_rate: Option<f64>,
    /// A success slower than this counts as slow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<Duration>,
    /// Calls the window needs before its rates count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_volume: Option<u32>,
    /// How long the first trip stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_open: Option<Duration>,
    /// The longest an open period grows to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open: Option<Duration>,
}

/// Active health checks (`grpc.health.v1.Health/Check` through each
/// region's gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Health {
    /// Time between probes of each region.
    pub interval: Duration,
    /// A probe not answered by then failed.
    pub timeout: Duration,
    /// Failed probes in a row that mark a region unhealthy.
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again.
    #[schemars(range(min = 1))]
    pub healthy_threshold: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 2,
            healthy_threshold: 1,
        }
    }
}

/// Dynamic batching at the model servers (their `config.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Batching {
    /// The most rows one batch holds; 0: the model does not batch.
    pub max_batch_size: u32,
    /// How long the oldest call waits for others.
    pub max_queue_delay: Duration,
    /// Batch sizes that run as soon as they are reached.
    pub preferred_batch_sizes: Vec<u32>,
    /// Calls that may wait; beyond it RESOURCE_EXHAUSTED.
    #[schemars(range(min = 1))]
    pub max_queue_size: u32,
    /// Executor instances per model version.
    #[schemars(range(min = 1))]
    pub instances: u32,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch_size: 64,
            max_queue_delay: Duration::from_micros(500),
            preferred_batch_sizes: Vec::new(),
            max_queue_size: 1024,
            instances: 1,
        }
    }
}

/// A model's batching overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchingOverride {
    /// The most rows one batch holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// How long the oldest call waits for others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_delay: Option<Duration>,
    /// Batch sizes that run as soon as they are reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_batch_sizes: Option<Vec<u32>>,
    /// Calls that may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_queue_size: Option<u32>,
    /// Executor instances per model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub instances: Option<u32>,
}

/// What Envoy does when the filter's VM fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    /// Start a fresh VM.
    #[default]
    FailReload,
    /// Let calls pass without the filter.
    FailOpen,
    /// Fail calls.
    FailClose,
}

/// The caller-side proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CallerProxy {
    /// The region its callers are in. Default: the first region.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub region: Option<String>,
    /// Its listener for callers (plain Envoy and the local mesh).
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub listen: String,
    /// Its Envoy admin listener (plain Envoy and the local mesh).
    #[schemars(regex(pattern = ADDRESS_PATTERN))]
    pub admin: String,
    /// Take the caller's region from `x-meridian-caller-region` (a proxy
    /// that fronts callers of several regions).
    pub trust_caller_region_header: bool,
    /// The host callers address models by in Istio (a ServiceEntry is
    /// rendered for it).
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub host: String,
    /// The gRPC port callers use in Istio (also every region gateway's).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

impl Default for CallerProxy {
    fn default() -> Self {
        Self {
            region: None,
            listen: "127.0.0.1:10000".into(),
            admin: "127.0.0.1:9901".into(),
            trust_caller_region_header: false,
            host: "models.meridian.internal".into(),
            port: 8001,
        }
    }
}

/// The filter module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Filter {
    /// Where the module is: for Istio, where it fetches it (`oci://…`,
    /// `https://…`, `file://…`); for `meridianctl serve`, a `file://` URL
    /// names the module the caller-side proxies load (else `--wasm`), so a
    /// new module rolls out by editing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(oci|https|http|file)://.+"))]
    pub url: Option<String>,
    /// The module's sha256 (64 hex digits): Istio refuses a module that
    /// does not match. Pin it (a module that cannot be fetched otherwise
    /// still blocks pod start; istio#53279).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// How often each Envoy worker shares outcomes and refreshes its view.
    pub tick: Duration,
    /// Answer each call with `x-meridian-decision` (the version, region
    /// order, reason and retries granted).
    pub decision_header: bool,
    /// Panic on `x-meridian-debug-panic` (to exercise `failStrategy`).
    /// Never in production.
    pub panic_header: bool,
    /// Istio `WasmPlugin` priority within its phase (higher runs first).
    pub priority: i32,
}

impl Default for Filter {
    fn default() -> Self {
        Self {
            url: None,
            sha256: None,
            tick: Duration::from_millis(50),
            decision_header: false,
            panic_header: false,
            priority: 10,
        }
    }
}

/// Istio-only settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Istio {
    /// Pod labels of the callers whose sidecars run the filter (in each
    /// region's cluster, `meridian.dev/region: <region>` is added).
    pub caller_selector: BTreeMap<String, String>,
    /// Pod labels of each region's Meridian ingress gateway.
    pub gateway_selector: BTreeMap<String, String>,
    /// The mesh's SPIFFE trust domain.
    #[schemars(regex(pattern = "^[a-z0-9._-]+$"))]
    pub trust_domain: String,
}

impl Default for Istio {
    fn default() -> Self {
        Self {
            caller_selector: BTreeMap::from([("meridian.dev/caller".into(), "true".into())]),
            gateway_selector: BTreeMap::from([("istio".into(), "meridian-gateway".into())]),
            trust_domain: "cluster.local".into(),
        }
    }
}

/// What the mesh reports beyond its metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Telemetry {
    /// Distributed tracing with OpenTelemetry; absent: no spans anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
}

/// Distributed tracing: the caller-side proxies, the region gateways and
/// the model servers each export their spans (OTLP over gRPC) to one
/// collector; a call's spans share its W3C `traceparent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// The OpenTelemetry collector's OTLP/gRPC address, `host:port`
    /// (`otel-collector.observability:4317`).
    #[schemars(regex(pattern = "^[A-Za-z0-9._-]+:[0-9]{1,5}$"))]
    pub otlp: String,
    /// Percent of calls that start a trace at the caller-side proxy (a
    /// caller's own sampled `traceparent` is followed).
    #[serde(default = "defaults::sampling_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub sampling_percent: f64,
}

mod defaults {
    pub(super) fn version() -> String {
        "v1".into()
    }

    pub(super) fn sampling_percent() -> f64 {
        100.0
    }
}

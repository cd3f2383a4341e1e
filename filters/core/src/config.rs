//! The filter's plugin configuration (the WasmPlugin `pluginConfig`, or the
//! `StringValue` in a plain Envoy bootstrap) and its validation.
//!
//! ```json
//! {
//!   "name": "meridian",
//!   "region": "eu-west",
//!   "regions": [
//!     {"name": "eu-west", "zone": "eu"},
//!     {"name": "eu-central", "zone": "eu"},
//!     {"name": "us-east", "zone": "us"}
//!   ],
//!   "callers": {"billing": {"residency": "eu"}},
//!   "models": {"mlp": {"retry": {"max_attempts": 3}}}
//! }
//! ```
//!
//! Every other key is optional. Unknown keys are rejected so that a typo
//! never passes silently; every error names the field at fault.

use crate::breaker::BreakerConfig;
use crate::budget::RetryPolicy;
use crate::canary::{Analysis, Step};
use crate::region::{Region, RoutingPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of every cluster the filter routes to: `meridian~eu-west`
/// for one region, `meridian~eu-west~eu-central` for a failover order.
pub const CLUSTER_PREFIX: &str = "meridian";

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The name stamped in `x-meridian-filter` on requests and responses.
    pub name: String,
    /// The region this Envoy (and so its callers) is in.
    pub region: String,
    /// Every region the mesh can route to, with its residency zone.
    pub regions: Vec<RegionConfig>,
    /// Take the caller's region from `x-meridian-caller-region` (a gateway
    /// that fronts callers from several regions). Off: the caller is in
    /// `region`.
    #[serde(default)]
    pub trust_caller_region_header: bool,
    /// Read the request's routing headers from `x-meridian-request`, the
    /// one header the connection manager builds from them before any
    /// filter runs (`meridian_proto::headers::REQUEST_SUMMARY`): one host
    /// call instead of one per header. Renderers set it only where they
    /// render what builds it; a request without the header (or with a
    /// value that does not split into exactly its fields) is read header by
    /// header.
    #[serde(default)]
    pub request_summary: bool,
    /// Per-caller policy, keyed by the `x-meridian-caller` identity.
    #[serde(default)]
    pub callers: BTreeMap<String, CallerPolicy>,
    /// Per-model policy; a model not listed gets `default_model`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelPolicy>,
    /// The policy for models not listed in `models`.
    #[serde(default)]
    pub default_model: ModelPolicy,
    /// Region scoring and hysteresis.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Active health checks.
    #[serde(default)]
    pub health: HealthConfig,
    /// The retry budget, per model.
    #[serde(default)]
    pub retry_budget: BudgetConfig,
    /// How many regions one call may try, the first included (the length of
    /// the failover order, and so of the aggregate clusters rendered).
    #[serde(default = "defaults::max_failover_regions")]
    pub max_failover_regions: usize,
    /// How often each worker shares its outcomes and refreshes its view.
    #[serde(default = "defaults::tick_ms")]
    pub tick_ms: u64,
    /// Put the decision (`x-meridian-decision`: region order, reason,
    /// retries, version) on each routed request, where the proxies' and the
    /// model server's trace spans record it. On when the mesh traces.
    #[serde(default)]
    pub trace_decision: bool,
    /// Operator switches for debugging.
    #[serde(default)]
    pub debug: DebugConfig,
}

/// A region: its name and residency zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Its name (`eu-west`); also its cluster's name after `meridian~`.
    pub name: String,
    /// Its residency zone (`eu`).
    pub zone: String,
}

/// What the policy says about one caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerPolicy {
    /// The zone this caller's requests must stay in.
    #[serde(default)]
    pub residency: Option<String>,
}

/// What the policy says about one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolicy {
    /// Its circuit breakers (one per region).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Its retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Its canary split between two versions, if it has one.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Its request timeout (all attempts together), when it differs from
    /// the route's; the filter then sets `x-envoy-upstream-rq-timeout-ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A model's split between a stable and a canary version. The filter picks
/// the version first (override, sticky key, or a draw), then the region for
/// it, and sends the version in `x-meridian-version`; a region gateway
/// routes it to that version's sidecars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The version most traffic goes to.
    pub stable: String,
    /// The version under test.
    pub canary: String,
    /// Percent of requests (or of sticky keys) on the canary, 0–100.
    pub weight: f64,
    /// What keeps a caller on its version while the weight changes; absent:
    /// the split is per request.
    #[serde(default)]
    pub sticky: Option<StickyKey>,
    /// Whether a request's `x-meridian-version` may pick a version (only an
    /// existing one; otherwise it is ignored and counted).
    #[serde(default)]
    pub allow_override: bool,
    /// The regions that run the canary; absent: every region. A request on
    /// the canary whose primary region lacks it is served stable, counted.
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    /// A progressive rollout: each step's canary weight and how long it
    /// holds; the canary moves to the next step when the step has held and
    /// the analysis passed with enough samples, and is promoted (100 %)
    /// after the last. Empty: `weight` stays as configured.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The SLOs the canary is judged on against stable; a breach rolls it
    /// back to 0 % until the configuration changes.
    #[serde(default)]
    pub analysis: Analysis,
}

/// The sticky key of a canary split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyKey {
    /// A request header's value (`{"header": "x-user"}`).
    Header(String),
    /// The caller identity, `x-meridian-caller` (`"caller"`).
    Caller,
}

/// Region scoring and hysteresis knobs (the router's, see [`RoutingPolicy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// A challenger must score below `leader × (1 − margin)`…
    pub margin: f64,
    /// …and at least this many milliseconds below it…
    pub min_margin_ms: f64,
    /// …continuously for this long.
    pub dwell_ms: u64,
    /// Milliseconds of score per request queued at a region's sidecars.
    pub ms_per_queued_request: f64,
    /// Queue depth from which a region counts as overloaded.
    pub spill_queue_depth: f64,
    /// The latency assumed for a region with no samples yet.
    pub unknown_latency_ms: f64,
    /// Weight of the newest sample in the latency EWMA (0 < α ≤ 1).
    pub ewma_alpha: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            margin: 0.2,
            min_margin_ms: 5.0,
            dwell_ms: 3_000,
            ms_per_queued_request: 1.0,
            spill_queue_depth: 64.0,
            unknown_latency_ms: 50.0,
            ewma_alpha: 0.2,
        }
    }
}

/// Active health checks (`grpc.health.v1.Health/Check`, service "").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between probes of each region.
    pub interval_ms: u64,
    /// A probe not answered by then failed.
    pub timeout_ms: u64,
    /// Failed probes in a row that mark a region unhealthy.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again.
    pub healthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { interval_ms: 1_000, timeout_ms: 500, unhealthy_threshold: 2, healthy_threshold: 1 }
    }
}

/// Retries per model may be at most `min_retries + ratio × requests` over
/// `window_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Retries allowed per request.
    pub ratio: f64,
    /// Retries always allowed per window.
    pub min_retries: u32,
    /// The window.
    pub window_ms: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { ratio: 0.2, min_retries: 10, window_ms: 10_000 }
    }
}

/// Debugging switches, off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Answer each request with `x-meridian-decision` (the region order, the
    /// reason and the retries granted) and `x-meridian-filter` (the filter's
    /// `name`). Off, the filter touches responses only to read them.
    pub decision_header: bool,
    /// Panic when a request carries `x-meridian-debug-panic` (to exercise
    /// `failure_policy: FAIL_RELOAD`). Never enable in production.
    pub panic_header: bool,
}

mod defaults {
    pub(super) fn max_failover_regions() -> usize {
        3
    }
    pub(super) fn tick_ms() -> u64 {
        50
    }
}

/// Why a plugin configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A human-readable reason that names the field at fault.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid meridian filter configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(message: String) -> ConfigError {
    ConfigError { message }
}

// === impl FilterConfig ===

impl FilterConfig {
    /// A configuration with every optional key at its default.
    pub fn new(name: &str, region: &str, regions: &[(&str, &str)]) -> Self {
        Self {
            name: name.into(),
            region: region.into(),
            regions: regions.iter().map(|(n, z)| RegionConfig { name: (*n).into(), zone: (*z).into() }).collect(),
            trust_caller_region_header: false,
            request_summary: false,
            callers: BTreeMap::new(),
            models: BTreeMap::new(),
            default_model: ModelPolicy::default(),
            routing: RoutingConfig::default(),
            health: HealthConfig::default(),
            retry_budget: BudgetConfig::default(),
            max_failover_regions: defaults::max_failover_regions(),
            tick_ms: defaults::tick_ms(),
            trace_decision: false,
            debug: DebugConfig::default(),
        }
    }

    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: FilterConfig = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The policy for `model`.
    pub fn model(&self, model: &str) -> &ModelPolicy {
        self.models.get(model).unwrap_or(&self.default_model)
    }

    /// The routing policy the [`crate::region::Router`] runs.
    pub fn routing_policy(&self) -> RoutingPolicy {
        RoutingPolicy {
            regions: self.regions.iter().map(|r| Region { name: r.name.clone(), zone: r.zone.clone() }).collect(),
            knobs: self.routing.clone(),
        }
    }

    /// Every cluster a decision can name, each with its regions in order:
    /// the single regions, then every ordered choice of 2 up to
    /// `max_failover_regions` distinct regions (what a renderer must create).
    pub fn clusters(&self) -> Vec<(String, Vec<String>)> {
        let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        let mut out = Vec::new();
        let mut order = Vec::new();
        permutations(&names, self.max_failover_regions.min(names.len()), &mut order, &mut out);
        out.sort_by(|a: &(String, Vec<String>), b| a.1.len().cmp(&b.1.len()).then(a.0.cmp(&b.0)));
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        header_value("name", &self.name)?;
        if self.regions.is_empty() {
            return Err(invalid("field `regions` must list at least one region".into()));
        }
        for (i, r) in self.regions.iter().enumerate() {
            cluster_part(&format!("regions[{i}].name"), &r.name)?;
            if r.zone.is_empty() {
                return Err(invalid(format!("field `regions[{i}].zone` must not be empty")));
            }
            if self.regions[..i].iter().any(|o| o.name == r.name) {
                return Err(invalid(format!("field `regions[{i}].name`: region `{}` is listed twice", r.name)));
            }
        }
        let known_region = |name: &str| self.regions.iter().any(|r| r.name == name);
        if !known_region(&self.region) {
            return Err(invalid(format!("field `region`: `{}` is not one of `regions`", self.region)));
        }
        for (caller, policy) in &self.callers {
            if let Some(zone) = &policy.residency {
                if !self.regions.iter().any(|r| &r.zone == zone) {
                    return Err(invalid(format!(
                        "field `callers.{caller}.residency`: no region is in zone `{zone}` (zones: {})",
                        self.zones().join(", ")
                    )));
                }
            }
        }
        let models = self.models.iter().map(|(k, v)| (format!("models.{k}"), v));
        for (path, model) in models.chain([("default_model".to_string(), &self.default_model)]) {
            model.validate(&path)?;
            if let Some(c) = &model.canary {
                c.validate(&format!("{path}.canary"), &known_region)?;
                if path == "default_model" && !c.steps.is_empty() {
                    return Err(invalid(
                        "field `default_model.canary.steps`: a rollout's shared state is per model; name the model \
                         under `models`"
                            .into(),
                    ));
                }
            }
        }
        let r = &self.routing;
        if !(0.0..1.0).contains(&r.margin) {
            return Err(invalid(format!("field `routing.margin` must be in [0, 1), got {}", r.margin)));
        }
        if !(r.ewma_alpha > 0.0 && r.ewma_alpha <= 1.0) {
            return Err(invalid(format!("field `routing.ewma_alpha` must be in (0, 1], got {}", r.ewma_alpha)));
        }
        for (field, v) in [
            ("min_margin_ms", r.min_margin_ms),
            ("ms_per_queued_request", r.ms_per_queued_request),
            ("spill_queue_depth", r.spill_queue_depth),
            ("unknown_latency_ms", r.unknown_latency_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(format!("field `routing.{field}` must be a finite number ≥ 0, got {v}")));
            }
        }
        let h = &self.health;
        if h.interval_ms < 10 || h.timeout_ms == 0 || h.unhealthy_threshold == 0 || h.healthy_threshold == 0 {
            return Err(invalid(
                "field `health`: interval_ms must be ≥ 10 and timeout_ms, unhealthy_threshold, healthy_threshold ≥ 1"
                    .into(),
            ));
        }
        let b = &self.retry_budget;
        if !(b.ratio.is_finite() && b.ratio >= 0.0) || b.window_ms < 100 {
            return Err(invalid("field `retry_budget`: ratio must be ≥ 0 and window_ms ≥ 100".into()));
        }
        if self.max_failover_regions == 0 || self.max_failover_regions > 4 {
            return Err(invalid(format!(
                "field `max_failover_regions` must be 1 to 4, got {}",
                self.max_failover_regions
            )));
        }
        if !(10..=1_000).contains(&self.tick_ms) {
            return Err(invalid(format!("field `tick_ms` must be 10 to 1000, got {}", self.tick_ms)));
        }
        Ok(())
    }

    fn zones(&self) -> Vec<&str> {
        let mut zones: Vec<&str> = self.regions.iter().map(|r| r.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        zones
    }
}

/// The cluster that serves `regions` in this order.
pub fn cluster_name<S: AsRef<str>>(regions: &[S]) -> String {
    let mut name = String::from(CLUSTER_PREFIX);
    for r in regions {
        name.push('~');
        name.push_str(r.as_ref());
    }
    name
}

fn permutations<'a>(names: &[&'a str], max: usize, order: &mut Vec<&'a str>, out: &mut Vec<(String, Vec<String>)>) {
    if !order.is_empty() {
        out.push((cluster_name(order), order.iter().map(|s| s.to_string()).collect()));
    }
    if order.len() == max {
        return;
    }
    for n in names {
        if !order.contains(n) {
            order.push(n);
            permutations(names, max, order, out);
            order.pop();
        }
    }
}

impl ModelPolicy {
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let b = &self.breaker;
        for (field, v) in [("failure_rate", b.failure_rate), ("slow_call_rate", b.slow_call_rate)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(invalid(format!("field `{path}.breaker.{field}` must be in (0, 1], got {v}")));
            }
        }
        if b.consecutive_failures == 0 || b.half_open_probes == 0 || b.window_ms < 10 || b.base_open_ms == 0 {
            return Err(invalid(format!(
                "field `{path}.breaker`: consecutive_failures, half_open_probes and base_open_ms must be ≥ 1, window_ms ≥ 10"
            )));
        }
        if b.max_open_ms < b.base_open_ms {
            return Err(invalid(format!("field `{path}.breaker.max_open_ms` must be ≥ base_open_ms")));
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > 5 {
            return Err(invalid(format!("field `{path}.retry.max_attempts` must be 1 to 5, got {}", r.max_attempts)));
        }
        if r.per_try_timeout_ms == 0 {
            return Err(invalid(format!("field `{path}.retry.per_try_timeout_ms` must be ≥ 1")));
        }
        if self.timeout_ms == Some(0) {
            return Err(invalid(format!("field `{path}.timeout_ms` must be ≥ 1")));
        }
        Ok(())
    }
}

impl CanaryConfig {
    fn validate(&self, path: &str, known_region: &dyn Fn(&str) -> bool) -> Result<(), ConfigError> {
        cluster_part(&format!("{path}.stable"), &self.stable)?;
        cluster_part(&format!("{path}.canary"), &self.canary)?;
        if self.stable == self.canary {
            return Err(invalid(format!("field `{path}.canary` must differ from `stable` (both `{}`)", self.stable)));
        }
        if !(0.0..=100.0).contains(&self.weight) {
            return Err(invalid(format!("field `{path}.weight` must be a percent in [0, 100], got {}", self.weight)));
        }
        if let Some(StickyKey::Header(h)) = &self.sticky {
            header_value(&format!("{path}.sticky.header"), h)?;
            if h.bytes().any(|b| b.is_ascii_uppercase()) || h.starts_with(':') {
                return Err(invalid(format!(
                    "field `{path}.sticky.header` must be a lowercase regular header name, got `{h}`"
                )));
            }
        }
        for (i, r) in self.regions.iter().flatten().enumerate() {
            if !known_region(r) {
                return Err(invalid(format!("field `{path}.regions[{i}]`: `{r}` is not one of `regions`")));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !(0.0..=100.0).contains(&step.weight) {
                return Err(invalid(format!(
                    "field `{path}.steps[{i}].weight` must be a percent in [0, 100], got {}",
                    step.weight
                )));
            }
        }
        let a = &self.analysis;
        if !(0.0..=1.0).contains(&a.max_error_rate) {
            return Err(invalid(format!(
                "field `{path}.analysis.max_error_rate` must be in [0, 1], got {}",
                a.max_error_rate
            )));
        }
        if !(a.max_p99_ratio.is_finite() && a.max_p99_ratio >= 1.0) {
            return Err(invalid(format!("field `{path}.analysis.max_p99_ratio` must be ≥ 1, got {}", a.max_p99_ratio)));
        }
        if a.min_samples == 0 || a.window_ms < 100 {
            return Err(invalid(format!("field `{path}.analysis`: min_samples must be ≥ 1 and window_ms ≥ 100")));
        }
        Ok(())
    }

    /// A hash of what the rollout depends on (versions, weight, steps,
    /// analysis): a rollout's shared state belongs to one configuration;
    /// a changed one starts over (and lifts a rollback).
    pub fn rollout_hash(&self) -> u64 {
        crate::canary::fnv1a(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// Whether `region` runs the canary.
    pub fn in_region(&self, region: &str) -> bool {
        self.regions.as_ref().is_none_or(|rs| rs.iter().any(|r| r == region))
    }
}

fn header_value(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(invalid(format!("field `{field}` must not be empty")));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(format!("field `{field}` must be printable ASCII without spaces, found {bad:?}")));
    }
    Ok(())
}

fn cluster_part(field: &str, value: &str) -> Result<(), ConfigError> {
    header_value(field, value)?;
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
        return Err(invalid(format!("field `{field}` may hold only letters, digits, `-` and `_`, found {bad:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"name":"meridian","region":"eu-west","regions":[
        {"name":"eu-west","zone":"eu"},{"name":"eu-central","zone":"eu"},{"name":"us-east","zone":"us"}]}"#;

    fn with(patch: &str) -> Result<FilterConfig, ConfigError> {
        let mut value: serde_json::Value = serde_json::from_str(VALID).expect("valid json");
        let patch: serde_json::Value = serde_json::from_str(patch).expect("patch json");
        for (k, v) in patch.as_object().expect("object") {
            value[k] = v.clone();
        }
        FilterConfig::from_json(value.to_string().as_bytes())
    }

    #[test]
    fn parses_a_minimal_config_with_defaults() {
        let config = FilterConfig::from_json(VALID.as_bytes()).expect("valid");
        assert_eq!(
            config,
            FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")])
        );
        assert_eq!(config.model("anything").retry.max_attempts, 3);
    }

    #[test]
    fn rejects_unknown_fields_naming_them() {
        let err = with(r#"{"nmae":"b"}"#).expect_err("unknown field");
        assert!(err.message.contains("nmae"), "{err}");
        let err = with(r#"{"routing":{"dwel_ms":1}}"#).expect_err("nested unknown field");
        assert!(err.message.contains("dwel_ms"), "{err}");
    }

    #[test]
    fn every_error_names_its_field() {
        for (patch, field) in [
            (r#"{"name":""}"#, "name"),
            (r#"{"name":"a b"}"#, "name"),
            (r#"{"region":"mars"}"#, "region"),
            (r#"{"regions":[]}"#, "regions"),
            (r#"{"regions":[{"name":"a","zone":"eu"},{"name":"a","zone":"eu"}],"region":"a"}"#, "regions[1].name"),
            (r#"{"regions":[{"name":"a~b","zone":"eu"}],"region":"a~b"}"#, "regions[0].name"),
            (r#"{"callers":{"billing":{"residency":"apac"}}}"#, "callers.billing.residency"),
            (r#"{"models":{"mlp":{"retry":{"max_attempts":0}}}}"#, "models.mlp.retry.max_attempts"),
            (r#"{"models":{"mlp":{"breaker":{"failure_rate":1.5}}}}"#, "models.mlp.breaker.failure_rate"),
            (r#"{"models":{"mlp":{"canary":{"stable":"v1","canary":"v2","weight":101}}}}"#, "models.mlp.canary.weight"),
            (r#"{"models":{"mlp":{"canary":{"stable":"v1","canary":"v1","weight":5}}}}"#, "models.mlp.canary.canary"),
            (
                r#"{"models":{"mlp":{"canary":{"stable":"v1","canary":"v2","weight":5,"sticky":{"header":"X-User"}}}}}"#,
                "models.mlp.canary.sticky.header",
            ),
            (
                r#"{"models":{"mlp":{"canary":{"stable":"v1","canary":"v2","weight":5,"regions":["mars"]}}}}"#,
                "models.mlp.canary.regions[0]",
            ),
            (r#"{"routing":{"margin":1.0}}"#, "routing.margin"),
            (r#"{"max_failover_regions":0}"#, "max_failover_regions"),
            (r#"{"tick_ms":1}"#, "tick_ms"),
        ] {
            let err = with(patch).expect_err(patch);
            assert!(err.message.contains(&format!("`{field}`")), "{patch}: {err}");
        }
    }

    #[test]
    fn rejects_non_json() {
        assert!(FilterConfig::from_json(b"name: a").is_err());
    }

    #[test]
    fn clusters_cover_every_order_up_to_the_failover_length() {
        let config = FilterConfig::from_json(VALID.as_bytes()).expect("valid");
        let clusters = config.clusters();
        assert_eq!(clusters.len(), 3 + 6 + 6);
        assert_eq!(clusters[0].0, "meridian~eu-central");
        assert!(clusters.iter().any(|(n, r)| n == "meridian~us-east~eu-west~eu-central" && r.len() == 3));
        let two = FilterConfig { max_failover_regions: 2, ..config };
        assert_eq!(two.clusters().len(), 3 + 6);
    }
}

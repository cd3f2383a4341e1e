//! What the policy means once its defaults are filled in: each model's
//! versions and stable version, the regions each version runs in, and the
//! filter configuration of a caller-side proxy in a region. Renderers and
//! the local mesh read the policy through these, never on their own.

use super::spec::{Batching, Breaker, Canary, MeshPolicy, Model, ModelVersion, Region, Retry, Sticky};
use meridian_filters_core::breaker::BreakerConfig;
use meridian_filters_core::budget::RetryPolicy;
use meridian_filters_core::canary::{Analysis, Step};
use meridian_filters_core::config::{
    BudgetConfig, CallerPolicy, CanaryConfig, DebugConfig, HealthConfig, ModelPolicy, RegionConfig, RoutingConfig,
    StickyKey,
};
use meridian_filters_core::{ConfigError, FilterConfig};
use std::collections::BTreeMap;

/// The version label of a model that lists none.
pub const DEFAULT_VERSION: &str = "v1";
/// The built-in model the local mesh generates when a policy names no model.
pub const DEFAULT_MODEL: &str = "mlp";

// === impl Model ===

impl Model {
    /// Its versions; one, `v1`, when it lists none.
    pub fn resolved_versions(&self) -> Vec<ModelVersion> {
        if self.versions.is_empty() {
            vec![ModelVersion { name: DEFAULT_VERSION.into(), model_version: None, regions: None }]
        } else {
            self.versions.clone()
        }
    }

    /// Its stable version: `stable`, else the first version.
    pub fn stable_version(&self) -> String {
        self.stable
            .clone()
            .or_else(|| self.versions.first().map(|v| v.name.clone()))
            .unwrap_or_else(|| DEFAULT_VERSION.into())
    }

    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<ModelVersion> {
        self.resolved_versions().into_iter().find(|v| v.name == name)
    }

    /// Its batching: the policy's with this model's overrides.
    pub fn batching(&self, defaults: &Batching) -> Batching {
        let mut b = defaults.clone();
        if let Some(o) = &self.batching {
            if let Some(v) = o.max_batch_size {
                b.max_batch_size = v;
            }
            if let Some(v) = o.max_queue_delay {
                b.max_queue_delay = v;
            }
            if let Some(v) = &o.preferred_batch_sizes {
                b.preferred_batch_sizes = v.clone();
            }
            if let Some(v) = o.max_queue_size {
                b.max_queue_size = v;
            }
            if let Some(v) = o.instances {
                b.instances = v;
            }
        }
        b
    }
}

// === impl ModelVersion ===

impl ModelVersion {
    /// The model version number its servers serve it as: `modelVersion`,
    /// else the label's digits (`v2` → 2), else 1.
    pub fn number(&self) -> u64 {
        self.model_version.unwrap_or_else(|| {
            let digits: String = self.name.chars().filter(char::is_ascii_digit).collect();
            digits.parse().ok().filter(|n| *n > 0).unwrap_or(1)
        })
    }

    /// Whether it runs in `region` (every region when `regions` is absent).
    pub fn runs_in(&self, region: &str) -> bool {
        self.regions.as_ref().is_none_or(|rs| rs.iter().any(|r| r == region))
    }
}

// === impl Region ===

impl Region {
    /// The host Istio callers use for this region's gateway.
    pub fn gateway_host(&self, policy_name: &str) -> String {
        self.gateway
            .as_ref()
            .and_then(|g| g.host.clone())
            .unwrap_or_else(|| format!("{}.gateway.{policy_name}.internal", self.name))
    }
}

// === impl MeshPolicy ===

impl MeshPolicy {
    /// The region named `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Every model, by name; the built-in `mlp` when the policy names none.
    pub fn resolved_models(&self) -> BTreeMap<String, Model> {
        if self.models.is_empty() {
            BTreeMap::from([(DEFAULT_MODEL.to_string(), Model::default())])
        } else {
            self.models.clone()
        }
    }

    /// Every version label some model has, in first-seen order.
    pub fn version_labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = Vec::new();
        for model in self.resolved_models().values() {
            for v in model.resolved_versions() {
                if !labels.contains(&v.name) {
                    labels.push(v.name);
                }
            }
        }
        labels
    }

    /// The version labels that run in `region` (some model's version runs
    /// there), stable labels first.
    pub fn versions_in(&self, region: &str) -> Vec<String> {
        let models = self.resolved_models();
        let mut labels: Vec<String> = models.values().map(Model::stable_version).collect();
        for model in models.values() {
            for v in model.resolved_versions() {
                if v.runs_in(region) {
                    labels.push(v.name);
                }
            }
        }
        let mut seen = Vec::new();
        labels.retain(|l| {
            let fresh = !seen.contains(l);
            seen.push(l.clone());
            fresh
        });
        labels
    }

    /// The version label calls without a version go to at a gateway: the
    /// first model's stable version.
    pub fn default_version(&self) -> String {
        self.resolved_models().values().next().map(Model::stable_version).unwrap_or_else(|| DEFAULT_VERSION.into())
    }

    /// Models whose stable version differs from [`MeshPolicy::default_version`]
    /// (a gateway routes their calls without a version by model).
    pub fn models_off_default(&self) -> Vec<(String, String)> {
        let default = self.default_version();
        self.resolved_models()
            .iter()
            .map(|(name, m)| (name.clone(), m.stable_version()))
            .filter(|(_, stable)| *stable != default)
            .collect()
    }

    /// The shadowed models: (model, version, percent).
    pub fn shadows(&self) -> Vec<(String, String, u32)> {
        self.models
            .iter()
            .filter_map(|(name, m)| m.shadow.as_ref().map(|s| (name.clone(), s.version.clone(), s.percent)))
            .collect()
    }
}

fn breaker(global: &Breaker, model: Option<&Model>) -> BreakerConfig {
    let o = model.and_then(|m| m.breaker.clone()).unwrap_or_default();
    let slo_p99 = model.and_then(|m| m.slo.as_ref()).and_then(|s| s.p99);
    let slow_call = o.slow_call.or(global.slow_call).or(slo_p99).map_or(1_000, |d| d.as_millis());
    BreakerConfig {
        consecutive_failures: o.consecutive_failures.unwrap_or(global.consecutive_failures),
        failure_rate: o.failure_rate.unwrap_or(global.failure_rate),
        slow_call_rate: o.slow_call_rate.unwrap_or(global.slow_call_rate),
        slow_call_ms: slow_call,
        window_ms: global.window.as_millis(),
        min_volume: o.min_volume.unwrap_or(global.min_volume),
        base_open_ms: o.base_open.unwrap_or(global.base_open).as_millis(),
        max_open_ms: o.max_open.unwrap_or(global.max_open).as_millis(),
        half_open_probes: global.half_open_probes,
    }
}

fn retry(global: &Retry, model: Option<&Model>) -> RetryPolicy {
    let o = model.and_then(|m| m.retry.clone()).unwrap_or_default();
    RetryPolicy {
        max_attempts: o.max_attempts.unwrap_or(global.max_attempts),
        per_try_timeout_ms: o.per_try_timeout.unwrap_or(global.per_try_timeout).as_millis(),
        backoff_ms: o.backoff.unwrap_or(global.backoff).as_millis(),
        idempotent: model.and_then(|m| m.idempotent).unwrap_or(global.idempotent),
    }
}

fn canary(model: &Model, c: &Canary) -> CanaryConfig {
    let regions = model.version(&c.version).and_then(|v| v.regions);
    let slo_error_rate = model.slo.as_ref().and_then(|s| s.error_rate);
    CanaryConfig {
        stable: model.stable_version(),
        canary: c.version.clone(),
        weight: c.weight,
        sticky: c.sticky.as_ref().map(|s| match s {
            Sticky::Caller => StickyKey::Caller,
            Sticky::Header(h) => StickyKey::Header(h.clone()),
        }),
        allow_override: c.allow_override,
        regions,
        steps: c.steps.iter().map(|s| Step { weight: s.weight, hold_ms: s.hold.as_millis() }).collect(),
        analysis: Analysis {
            max_error_rate: c.analysis.max_error_rate.or(slo_error_rate).unwrap_or(0.05),
            max_p99_ratio: c.analysis.max_p99_ratio,
            min_samples: c.analysis.min_samples,
            window_ms: c.analysis.window.as_millis(),
        },
    }
}

/// The filter configuration of a caller-side proxy in `region`; the core
/// validates it as the filter will.
pub fn filter_config(policy: &MeshPolicy, region: &str) -> Result<FilterConfig, ConfigError> {
    let r = &policy.resilience;
    let models = policy
        .models
        .iter()
        .map(|(name, m)| {
            let policy = ModelPolicy {
                breaker: breaker(&r.breaker, Some(m)),
                retry: retry(&r.retry, Some(m)),
                canary: m.canary.as_ref().map(|c| canary(m, c)),
                timeout_ms: Some(m.timeout.unwrap_or(r.timeout).as_millis()),
            };
            (name.clone(), policy)
        })
        .collect();
    let routing = &policy.routing;
    let config = FilterConfig {
        name: policy.metadata.name.clone(),
        region: region.to_string(),
        regions: policy.regions.iter().map(|r| RegionConfig { name: r.name.clone(), zone: r.zone.clone() }).collect(),
        trust_caller_region_header: policy.caller_proxy.trust_caller_region_header,
        // Every renderer has the caller-side connection manager build it
        // (`render::envoy::request_summary_mutation`).
        request_summary: true,
        callers: policy
            .callers
            .iter()
            .map(|(name, c)| (name.clone(), CallerPolicy { residency: c.residency.clone() }))
            .collect(),
        models,
        default_model: ModelPolicy {
            breaker: breaker(&r.breaker, None),
            retry: retry(&r.retry, None),
            canary: None,
            timeout_ms: Some(r.timeout.as_millis()),
        },
        routing: RoutingConfig {
            margin: routing.margin,
            min_margin_ms: routing.min_margin.as_millis_f64(),
            dwell_ms: routing.dwell.as_millis(),
            ms_per_queued_request: routing.ms_per_queued_request,
            spill_queue_depth: routing.spill_queue_depth,
            unknown_latency_ms: routing.unknown_latency.as_millis_f64(),
            ewma_alpha: routing.ewma_alpha,
        },
        health: HealthConfig {
            interval_ms: r.health.interval.as_millis(),
            timeout_ms: r.health.timeout.as_millis(),
            unhealthy_threshold: r.health.unhealthy_threshold,
            healthy_threshold: r.health.healthy_threshold,
        },
        retry_budget: BudgetConfig {
            ratio: r.budget.ratio,
            min_retries: r.budget.min_retries,
            window_ms: r.budget.window.as_millis(),
        },
        max_failover_regions: r.max_failover_regions,
        tick_ms: policy.filter.tick.as_millis(),
        trace_decision: policy.telemetry.tracing.is_some(),
        debug: DebugConfig { decision_header: policy.filter.decision_header, panic_header: policy.filter.panic_header },
    };
    // What the filter will run: the same bytes through the same check.
    let json = serde_json::to_vec(&config).map_err(|e| ConfigError { message: e.to_string() })?;
    FilterConfig::from_json(&json)
}

//! The state every Envoy worker shares: region health, one breaker and
//! latency/load estimate per (region, model), a retry budget per model, the
//! health prober's lease and the live workers.
//!
//! It lives in one proxy-wasm shared-data key as JSON and changes only
//! through [`Delta::apply`] under compare-and-swap: each worker gathers its
//! outcomes in a [`Delta`] and applies it once per tick, retrying on a CAS
//! conflict, so no update is lost and the hot path never touches shared data.

use crate::breaker::{Breaker, BreakerState, Outcome};
use crate::budget::RetryBudget;
use crate::canary::{Rollout, VersionStats};
use crate::config::FilterConfig;
use crate::region::{RegionStatus, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The shared state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeshState {
    /// Active health per region.
    #[serde(default)]
    pub health: BTreeMap<String, Health>,
    /// Per `region/model`.
    #[serde(default)]
    pub links: BTreeMap<String, Link>,
    /// Retry budget per model.
    #[serde(default)]
    pub budgets: BTreeMap<String, RetryBudget>,
    /// Who sends health probes, until when.
    #[serde(default)]
    pub prober: Option<Lease>,
    /// Worker id → when it last applied a delta.
    #[serde(default)]
    pub workers: BTreeMap<String, u64>,
    /// Routing hysteresis per `caller-region|model|residency`, shared so
    /// that every worker follows the same leader.
    #[serde(default)]
    pub routers: BTreeMap<String, Router>,
    /// Canary rollouts per model: every worker follows the same step, and a
    /// rollback holds across workers and VM reloads until the model's
    /// canary configuration changes.
    #[serde(default)]
    pub rollouts: BTreeMap<String, Rollout>,
    /// Outcomes per `model/version` over the model's analysis window.
    #[serde(default)]
    pub versions: BTreeMap<String, VersionStats>,
}

/// A region's active health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether probes pass (a region never probed counts as healthy).
    pub healthy: bool,
    /// Probes in a row with the same result.
    pub streak: u32,
    /// When the last probe answered.
    pub last_probe_ms: u64,
}

/// What the mesh knows of one (region, model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The circuit breaker.
    pub breaker: Breaker,
    /// Latency EWMA of successful calls, ms.
    pub latency_ewma_ms: Option<f64>,
    /// The queue depth the region's sidecar last reported.
    pub queue_depth: f64,
}

/// The health prober's lease: one worker sends every probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder's worker id.
    pub holder: String,
    /// When it lapses unless renewed.
    pub until_ms: u64,
}

/// What one worker saw since its last tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delta {
    /// Finished attempts, in order.
    pub outcomes: Vec<AttemptOutcome>,
    /// Per model: (requests, retries reserved minus retries returned).
    pub budget: BTreeMap<String, (u32, i64)>,
    /// Health probe results: (region, passed, when).
    pub probes: Vec<(String, bool, u64)>,
    /// Finished calls of models with a canary split, by version.
    pub versions: Vec<VersionOutcome>,
}

/// How one call to one version of a model ended (caller errors are not
/// counted: they say nothing of the version).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionOutcome {
    /// `model/version`.
    pub key: String,
    /// When it finished.
    pub at_ms: u64,
    /// Its latency if it succeeded; `None`: a server-side failure.
    pub latency_ms: Option<u64>,
}

/// One attempt's result at one region.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    /// The region that served (or failed) it.
    pub region: String,
    /// The model called.
    pub model: String,
    /// When it finished.
    pub at_ms: u64,
    /// What it tells the breaker.
    pub outcome: Outcome,
    /// The sidecar's queue depth, when it reported one.
    pub queue_depth: Option<f64>,
}

/// The key of a (region, model) link.
pub fn link_key(region: &str, model: &str) -> String {
    format!("{region}/{model}")
}

// === impl MeshState ===

impl MeshState {
    /// Decodes the shared bytes; empty or unreadable bytes (another
    /// version's format) start afresh rather than failing every request.
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// Encodes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What the router needs to know of `region` for `model` at `now_ms`.
    pub fn status(&self, region: &str, model: &str, now_ms: u64) -> RegionStatus {
        let link = self.links.get(&link_key(region, model));
        RegionStatus {
            healthy: self.health.get(region).is_none_or(|h| h.healthy),
            breaker_open: matches!(self.breaker_state(region, model, now_ms), BreakerState::Open { .. }),
            latency_ewma_ms: link.and_then(|l| l.latency_ewma_ms),
            queue_depth: link.map_or(0.0, |l| l.queue_depth),
        }
    }

    /// The breaker state of (`region`, `model`) at `now_ms`.
    pub fn breaker_state(&self, region: &str, model: &str, now_ms: u64) -> BreakerState {
        self.links.get(&link_key(region, model)).map_or(BreakerState::Closed, |l| l.breaker.state(now_ms))
    }

    /// Workers seen within `3 × tick_ms` of the latest one (at least 1).
    /// Measured against the latest sighting, not the clock, so a stale
    /// snapshot never makes a worker think it is alone.
    pub fn live_workers(&self, config: &FilterConfig) -> usize {
        let latest = self.workers.values().copied().max().unwrap_or(0);
        let horizon = latest.saturating_sub(3 * config.tick_ms);
        self.workers.values().filter(|&&seen| seen >= horizon).count().max(1)
    }

    /// Takes or renews the prober lease for `worker` if it is free, lapsed
    /// or already its own; true when `worker` holds it afterwards.
    pub fn try_lease(&mut self, worker: &str, now_ms: u64, hold_ms: u64) -> bool {
        let free = self.prober.as_ref().is_none_or(|l| l.holder == worker || l.until_ms <= now_ms);
        if free {
            self.prober = Some(Lease { holder: worker.to_string(), until_ms: now_ms + hold_ms });
        }
        free
    }

    /// Admits a half-open probe call to (`region`, `model`); false when the
    /// probes are all out.
    pub fn admit_probe(&mut self, config: &FilterConfig, region: &str, model: &str, now_ms: u64) -> bool {
        let link = self.link(config, region, model);
        !matches!(link.breaker.admit(now_ms), crate::breaker::Admission::Rejected { .. })
    }

    fn link(&mut self, config: &FilterConfig, region: &str, model: &str) -> &mut Link {
        let breaker = &config.model(model).breaker;
        let link = self.links.entry(link_key(region, model)).or_insert_with(|| Link {
            breaker: Breaker::new(breaker.clone()),
            latency_ewma_ms: None,
            queue_depth: 0.0,
        });
        link.breaker.set_config(breaker);
        link
    }
}

// === impl Delta ===

impl Delta {
    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty() && self.budget.is_empty() && self.probes.is_empty()
    }

    /// Applies this delta to `state` at `now_ms`; `worker`, when given, is
    /// recorded as live (a serving worker takes its share of the budget).
    pub fn apply(&self, state: &mut MeshState, config: &FilterConfig, worker: Option<&str>, now_ms: u64) {
        if let Some(worker) = worker {
            state.workers.insert(worker.to_string(), now_ms);
        }
        let horizon = now_ms.saturating_sub(10 * config.tick_ms.max(100));
        state.workers.retain(|_, seen| *seen >= horizon);
        for o in &self.outcomes {
            let link = state.link(config, &o.region, &o.model);
            link.breaker.record(o.at_ms, o.outcome);
            if let Outcome::Success { latency_ms } = o.outcome {
                let alpha = config.routing.ewma_alpha;
                let sample = latency_ms as f64;
                link.latency_ewma_ms = Some(link.latency_ewma_ms.map_or(sample, |e| e + alpha * (sample - e)));
            }
            if let Some(depth) = o.queue_depth {
                link.queue_depth = depth;
            }
        }
        let b = &config.retry_budget;
        for (model, (requests, retries)) in &self.budget {
            state
                .budgets
                .entry(model.clone())
                .or_insert_with(|| RetryBudget::new(b.ratio, b.min_retries, b.window_ms))
                .add(now_ms, *requests, *retries);
        }
        for v in &self.versions {
            let model = v.key.split('/').next().unwrap_or_default();
            let window = config.model(model).canary.as_ref().map_or(10_000, |c| c.analysis.window_ms);
            state.versions.entry(v.key.clone()).or_default().record(window, v.at_ms, v.latency_ms);
        }
        let h = &config.health;
        for (region, passed, at) in &self.probes {
            let entry =
                state.health.entry(region.clone()).or_insert(Health { healthy: true, streak: 0, last_probe_ms: 0 });
            if *passed == entry.healthy {
                entry.streak = 0;
            } else {
                entry.streak += 1;
                let threshold = if entry.healthy { h.unhealthy_threshold } else { h.healthy_threshold };
                if entry.streak >= threshold {
                    entry.healthy = *passed;
                    entry.streak = 0;
                }
            }
            entry.last_probe_ms = entry.last_probe_ms.max(*at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FilterConfig {
        FilterConfig::new("m", "a", &[("a", "eu"), ("b", "eu")])
    }

    fn failure(region: &str, at_ms: u64) -> AttemptOutcome {
        AttemptOutcome {
            region: region.into(),
            model: "mlp".into(),
            at_ms,
            outcome: Outcome::Failure,
            queue_depth: None,
        }
    }

    #[test]
    fn survives_the_shared_data_round_trip() {
        let config = config();
        let mut state = MeshState::default();
        let delta = Delta {
            outcomes: (0..5).map(|t| failure("a", t)).collect(),
            budget: BTreeMap::from([("mlp".into(), (10, 2))]),
            probes: vec![("b".into(), false, 1), ("b".into(), false, 2)],
            versions: vec![crate::state::VersionOutcome { key: "mlp/v2".into(), at_ms: 3, latency_ms: Some(4) }],
        };
        delta.apply(&mut state, &config, Some("w1"), 10);
        let back = MeshState::decode(&state.encode());
        assert_eq!(back, state);
        assert_eq!(back.versions["mlp/v2"].observed(10_000, 10).calls, 1, "version stats travel too");
        assert!(back.status("a", "mlp", 10).breaker_open, "5 failures in a row open the breaker");
        assert!(!back.status("b", "mlp", 10).healthy, "2 failed probes mark it unhealthy");
        assert_eq!(back.budgets["mlp"].totals(10), (10, 2));
    }

    #[test]
    fn unreadable_bytes_start_afresh() {
        assert_eq!(MeshState::decode(b""), MeshState::default());
        assert_eq!(MeshState::decode(b"{not json"), MeshState::default());
    }

    #[test]
    fn one_prober_at_a_time_until_its_lease_lapses() {
        let mut state = MeshState::default();
        assert!(state.try_lease("w1", 0, 300));
        assert!(!state.try_lease("w2", 100, 300));
        assert!(state.try_lease("w1", 200, 300), "the holder renews");
        assert!(!state.try_lease("w2", 499, 300));
        assert!(state.try_lease("w2", 500, 300), "lapsed");
    }

    #[test]
    fn health_needs_its_thresholds_both_ways() {
        let config = FilterConfig {
            health: crate::config::HealthConfig { healthy_threshold: 2, ..Default::default() },
            ..config()
        };
        let mut state = MeshState::default();
        let probe = |state: &mut MeshState, ok: bool, t: u64| {
            Delta { probes: vec![("a".into(), ok, t)], ..Delta::default() }.apply(state, &config, Some("w"), t)
        };
        probe(&mut state, false, 1);
        assert!(state.health["a"].healthy, "one failed probe is not enough");
        probe(&mut state, true, 2);
        probe(&mut state, false, 3);
        assert!(state.health["a"].healthy, "the streak restarted");
        probe(&mut state, false, 4);
        assert!(!state.health["a"].healthy);
        probe(&mut state, true, 5);
        assert!(!state.health["a"].healthy);
        probe(&mut state, true, 6);
        assert!(state.health["a"].healthy);
    }
}

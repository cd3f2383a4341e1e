//! Canary splitting: which version of a model serves a request, and the
//! progressive rollout that moves the canary's weight step by step —
//! promoting, holding, or rolling back on gRPC-aware SLOs.
//!
//! - [`bucket`]: a sticky key (a header, a cookie, the caller identity)
//!   hashed into one of [`BUCKETS`] buckets. A key is on the canary while
//!   its bucket is below the canary's share, so raising the weight only ever
//!   moves keys stable → canary, never back and forth.
//! - [`Split::choose`]: header override (where allowed, to existing
//!   versions), else the sticky bucket, else a per-request draw.
//! - [`Rollout`]: the step machine. It lives in the shared state so every
//!   worker (and a VM that restarts) sees the same step; a rollback pins
//!   the canary at 0 until the configuration changes (its hash differs).
//! - [`VersionStats`]: per-version outcome counters and a latency
//!   histogram over a sliding window, for the analysis.
//!
//! The planner (`crate::decision`) picks each request's version with
//! [`Split::choose`]; rollouts live in the shared state and advance every
//! tick (`Planner::advance`).

use serde::{Deserialize, Serialize};

/// Buckets a sticky key hashes into (weights have 0.01 % resolution).
pub const BUCKETS: u32 = 10_000;

/// FNV-1a, 64-bit: stable across processes, VMs and restarts (no random
/// seed), so a key keeps its bucket everywhere.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The bucket of `key` for `model` (salted with the model, so one caller is
/// not on the canary of every model at once).
pub fn bucket(model: &str, key: &str) -> u32 {
    let mut bytes = Vec::with_capacity(model.len() + key.len() + 1);
    bytes.extend_from_slice(model.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    // FNV's bits mix poorly for keys that differ in a digit or two; the
    // SplitMix64 finaliser spreads them before the modulo.
    let mut h = fnv1a(&bytes);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(BUCKETS)) as u32
}

/// Whether bucket `b` is on the canary at `canary_percent` (0–100).
pub fn on_canary(b: u32, canary_percent: f64) -> bool {
    f64::from(b) < canary_percent.clamp(0.0, 100.0) * f64::from(BUCKETS) / 100.0
}

/// One step of a rollout: the canary's weight, held for `hold_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Percent of traffic on the canary (0–100).
    pub weight: f64,
    /// How long the step holds before the next, if the analysis passes.
    pub hold_ms: u64,
}

/// The SLOs a canary is judged on, against stable over the same window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Analysis {
    /// Canary gRPC error rate (server-side failures) above which it rolls back.
    pub max_error_rate: f64,
    /// Canary p99 above `max_p99_ratio × stable p99` rolls it back.
    pub max_p99_ratio: f64,
    /// Calls the canary needs in the window before it is judged (and
    /// before a step may be promoted).
    pub min_samples: u32,
    /// The window the rates and p99 are measured over.
    pub window_ms: u64,
}

impl Default for Analysis {
    fn default() -> Self {
        Self { max_error_rate: 0.05, max_p99_ratio: 2.0, min_samples: 50, window_ms: 10_000 }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// At step `step`, since `since_ms`.
    Progressing {
        /// The step index.
        step: usize,
        /// When it began.
        since_ms: u64,
    },
    /// Every step passed: the canary takes all traffic.
    Promoted,
    /// An SLO was breached: the canary takes none until the config changes.
    RolledBack {
        /// When.
        at_ms: u64,
        /// Which SLO.
        reason: Breach,
    },
}

/// Which SLO a canary breached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Breach {
    /// Its error rate.
    ErrorRate,
    /// Its p99 latency against stable's.
    Latency,
}

/// A model's rollout state, as shared by every worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The hash of the rollout config this state belongs to: a new config
    /// starts a new rollout (and lifts a rollback).
    pub config_hash: u64,
    /// Where it stands.
    pub phase: Phase,
}

/// What the analysis saw of one version over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed {
    /// Calls judged (successes + failures; caller errors excluded).
    pub calls: u32,
    /// Server-side failures.
    pub failures: u32,
    /// p99 latency of successes, ms.
    pub p99_ms: Option<f64>,
}

// === impl Rollout ===

impl Rollout {
    /// A rollout at its first step.
    pub fn start(config_hash: u64, now_ms: u64) -> Self {
        Self { config_hash, phase: Phase::Progressing { step: 0, since_ms: now_ms } }
    }

    /// The canary's weight now (percent).
    pub fn weight(&self, steps: &[Step]) -> f64 {
        match self.phase {
            Phase::Progressing { step, .. } => steps.get(step).map_or(100.0, |s| s.weight),
            Phase::Promoted => 100.0,
            Phase::RolledBack { .. } => 0.0,
        }
    }

    /// Judges the canary and moves the rollout: roll back on a breach (with
    /// enough canary samples), promote to the next step once the step has
    /// held and the canary has enough samples, else hold.
    pub fn advance(&mut self, steps: &[Step], analysis: &Analysis, canary: Observed, stable: Observed, now_ms: u64) {
        let Phase::Progressing { step, since_ms } = self.phase else { return };
        if canary.calls >= analysis.min_samples.max(1) {
            let error_rate = f64::from(canary.failures) / f64::from(canary.calls);
            if error_rate > analysis.max_error_rate {
                self.phase = Phase::RolledBack { at_ms: now_ms, reason: Breach::ErrorRate };
                return;
            }
            if let (Some(c), Some(s)) = (canary.p99_ms, stable.p99_ms) {
                if stable.calls >= analysis.min_samples && c > analysis.max_p99_ratio * s.max(1.0) {
                    self.phase = Phase::RolledBack { at_ms: now_ms, reason: Breach::Latency };
                    return;
                }
            }
        }
        let held = now_ms.saturating_sub(since_ms) >= steps.get(step).map_or(0, |s| s.hold_ms);
        let judged = canary.calls >= analysis.min_samples || steps.get(step).is_some_and(|s| s.weight <= 0.0);
        if held && judged {
            self.phase = if step + 1 >= steps.len() {
                Phase::Promoted
            } else {
                Phase::Progressing { step: step + 1, since_ms: now_ms }
            };
        }
    }
}

/// Latency bucket upper bounds, ms (the last is open-ended).
const LATENCY_BOUNDS_MS: [f64; 16] =
    [1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 30.0, 50.0, 80.0, 120.0, 200.0, 300.0, 500.0, 1_000.0, f64::INFINITY];

/// A version's outcomes over a sliding window of ten slices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    slices: Vec<Slice>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Slice {
    start_ms: u64,
    failures: u32,
    latency: [u32; 16],
}

// === impl VersionStats ===

impl VersionStats {
    /// Records a success of `latency_ms` (`Some`) or a failure (`None`).
    pub fn record(&mut self, window_ms: u64, now_ms: u64, latency_ms: Option<u64>) {
        let width = (window_ms / 10).max(1);
        let start = now_ms - now_ms % width;
        if self.slices.len() != 10 {
            self.slices = vec![Slice::default(); 10];
        }
        let slot = &mut self.slices[((now_ms / width) % 10) as usize];
        if slot.start_ms != start {
            *slot = Slice { start_ms: start, ..Slice::default() };
        }
        match latency_ms {
            Some(ms) => {
                let i = LATENCY_BOUNDS_MS.iter().position(|b| ms as f64 <= *b).unwrap_or(15);
                slot.latency[i] += 1;
            }
            None => slot.failures += 1,
        }
    }

    /// What the window ending at `now_ms` holds (p99 as the bucket bound).
    pub fn observed(&self, window_ms: u64, now_ms: u64) -> Observed {
        let live = self.slices.iter().filter(|s| s.start_ms + window_ms > now_ms && s.start_ms <= now_ms);
        let mut latency = [0u32; 16];
        let mut failures = 0;
        for s in live {
            failures += s.failures;
            for (t, c) in latency.iter_mut().zip(s.latency) {
                *t += c;
            }
        }
        let successes: u32 = latency.iter().sum();
        let p99_ms = (successes > 0).then(|| {
            let rank = (f64::from(successes) * 0.99).ceil() as u32;
            let mut seen = 0;
            let i = latency.iter().position(|c| {
                seen += c;
                seen >= rank
            });
            i.map_or(f64::INFINITY, |i| LATENCY_BOUNDS_MS[i])
        });
        Observed { calls: successes + failures, failures, p99_ms }
    }
}

/// How a request's version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// By the allowed `x-meridian-version` header.
    Override,
    /// By its sticky key's bucket.
    Sticky,
    /// By a per-request draw (no key).
    Draw,
}

/// A model's split between its stable and canary versions.
#[derive(Debug, Clone, PartialEq)]
pub struct Split<'a> {
    /// The model (salts the buckets).
    pub model: &'a str,
    /// The stable version.
    pub stable: &'a str,
    /// The canary version.
    pub canary: &'a str,
    /// The canary's weight now, percent.
    pub canary_percent: f64,
    /// Whether `x-meridian-version` may pick a version.
    pub allow_override: bool,
}

/// What [`Split::choose`] needs of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitInput<'a> {
    /// `x-meridian-version`, if sent.
    pub override_version: Option<&'a str>,
    /// The sticky key's value, if the request has one.
    pub sticky_key: Option<&'a str>,
    /// A uniform draw in `0..BUCKETS` for requests without a key.
    pub draw: u32,
}

impl Split<'_> {
    /// The version for a request, how it was chosen, and whether an
    /// override was ignored (not allowed, or not an existing version).
    pub fn choose<'v>(&'v self, input: SplitInput<'_>) -> (&'v str, Choice, bool) {
        let mut ignored = false;
        if let Some(v) = input.override_version {
            if self.allow_override && (v == self.stable || v == self.canary) {
                let chosen = if v == self.stable { self.stable } else { self.canary };
                return (chosen, Choice::Override, false);
            }
            ignored = true;
        }
        let (b, how) = match input.sticky_key {
            Some(key) => (bucket(self.model, key), Choice::Sticky),
            None => (input.draw % BUCKETS, Choice::Draw),
        };
        let version = if on_canary(b, self.canary_percent) { self.canary } else { self.stable };
        (version, how, ignored)
    }
}

#[cfg(test)]
mod tests;

//! The Kubernetes `HorizontalPodAutoscaler` algorithm (`autoscaling/v2`
//! with `behavior`), step for step as the controller runs it
//! (`pkg/controller/podautoscaler/horizontal.go`), for one scale target:
//!
//! 1. A current count outside `[min, max]` is brought inside at once.
//! 2. Each metric proposes `ceil(current × value / target)` — or the
//!    current count while `|1 − value / target| ≤ tolerance` — and each open
//!    schedule proposes its floor (KEDA's cron scaler is a metric too); the
//!    largest proposal is the recommendation.
//! 3. Stabilisation: the recommendation is recorded; a scale-up goes no
//!    higher than the lowest recommendation of the scale-up window, a
//!    scale-down no lower than the highest of the scale-down window.
//! 4. Rate: the change is limited by the policies over the scale events of
//!    their periods (`selectPolicy` picks the most or least permissive, or
//!    none), and by min/max.
//! 5. Meridian's cost cap: no more replicas than the rest of the budget
//!    pays for until the next decision — but never fewer than min.
//!
//! Time is Unix milliseconds, passed in.

use crate::behavior::{Behavior, PolicyKind, ScalingRules, SelectPolicy};
use crate::cost::{CostCap, Ledger};
use crate::schedule::{self, Schedule};
use std::fmt;

/// Kubernetes' default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// What the replicas are scaled on, averaged over the replicas (a Pods
/// metric of type `AverageValue`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Time calls wait in the batcher's queue per unit of compute time —
    /// Triton's autoscaling signal: above 1, calls wait longer than they
    /// run.
    QueueToComputeRatio(f64),
    /// Calls queued or running per replica.
    InFlightPerReplica(f64),
}

impl Target {
    /// The target value.
    pub fn value(&self) -> f64 {
        match *self {
            Target::QueueToComputeRatio(v) | Target::InFlightPerReplica(v) => v,
        }
    }

    /// The metric's name (the sidecar's recording as Prometheus and the
    /// HPA see it).
    pub fn metric_name(&self) -> &'static str {
        match self {
            Target::QueueToComputeRatio(_) => "meridian_queue_to_compute_ratio",
            Target::InFlightPerReplica(_) => "meridian_in_flight_per_replica",
        }
    }
}

/// One scale target's autoscaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The fewest replicas (the baseline capacity), at least 1.
    pub min_replicas: u32,
    /// The most (the per-region cap).
    pub max_replicas: u32,
    /// What is scaled on.
    pub target: Target,
    /// How far from 1 the usage ratio must be before anything changes.
    pub tolerance: f64,
    /// Time between decisions (what the cost cap's budget is spent over).
    pub sync_period_ms: u64,
    /// How fast replicas may change.
    pub behavior: Behavior,
    /// Known peaks.
    pub schedules: Vec<Schedule>,
    /// A replica-hours budget.
    pub cost_cap: Option<CostCap>,
}

impl Spec {
    /// A spec with Kubernetes' defaults around `min`, `max` and `target`.
    pub fn new(min_replicas: u32, max_replicas: u32, target: Target) -> Self {
        Self {
            min_replicas,
            max_replicas,
            target,
            tolerance: DEFAULT_TOLERANCE,
            sync_period_ms: 15_000,
            behavior: Behavior::default(),
            schedules: Vec::new(),
            cost_cap: None,
        }
    }
}

/// What one decision sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Now, Unix milliseconds.
    pub now_ms: u64,
    /// The replicas there are (started or starting: the scale target's
    /// `spec.replicas`).
    pub current: u32,
    /// The metric averaged over the replicas; `None` when it could not be
    /// read (no replica answered).
    pub metric: Option<f64>,
}

/// Why the count is what it is: the step that had the last word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The usage ratio is within the tolerance of 1.
    WithinTolerance,
    /// The metric asked for it (and nothing limited it).
    Metric,
    /// An open schedule's floor asked for it.
    Schedule(String),
    /// No metric and no schedule: nothing changes.
    NoMetrics,
    /// The current count was above max.
    AboveMax,
    /// The current count was below min.
    BelowMin,
    /// A higher recommendation in the scale-down window holds replicas up.
    ScaleDownStabilized,
    /// A lower recommendation in the scale-up window holds replicas down.
    ScaleUpStabilized,
    /// The scale-up policies limit the rate.
    ScaleUpLimit,
    /// The scale-down policies limit the rate.
    ScaleDownLimit,
    /// Capped at max.
    TooManyReplicas,
    /// Held at min.
    TooFewReplicas,
    /// The replica-hours budget allows no more.
    CostCap,
}

impl Reason {
    /// A short label (logs, the `reason` label of metrics).
    pub fn as_str(&self) -> &str {
        match self {
            Reason::WithinTolerance => "within-tolerance",
            Reason::Metric => "metric",
            Reason::Schedule(_) => "schedule",
            Reason::NoMetrics => "no-metrics",
            Reason::AboveMax => "above-max",
            Reason::BelowMin => "below-min",
            Reason::ScaleDownStabilized => "scale-down-stabilized",
            Reason::ScaleUpStabilized => "scale-up-stabilized",
            Reason::ScaleUpLimit => "scale-up-limit",
            Reason::ScaleDownLimit => "scale-down-limit",
            Reason::TooManyReplicas => "too-many-replicas",
            Reason::TooFewReplicas => "too-few-replicas",
            Reason::CostCap => "cost-cap",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Schedule(name) => write!(f, "schedule {name}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// When.
    pub now_ms: u64,
    /// The replicas there were.
    pub current: u32,
    /// What the metrics and schedules proposed, before stabilisation and
    /// limits (the current count where they proposed nothing).
    pub proposed: u32,
    /// The replicas there should be.
    pub desired: u32,
    /// The metric's value, when read.
    pub metric: Option<f64>,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    /// Whether the count changes.
    pub fn changes(&self) -> bool {
        self.desired != self.current
    }
}

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    at_ms: u64,
    replicas: u32,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    at_ms: u64,
    change: u32,
}

/// The autoscaler of one scale target: the spec and the history the
/// algorithm keeps (recommendations, scale events, replica-hours).
#[derive(Debug, Clone)]
pub struct Autoscaler {
    spec: Spec,
    recommendations: Vec<Recommendation>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
    ledger: Ledger,
    started: bool,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(spec: Spec) -> Self {
        Self {
            spec,
            recommendations: Vec::new(),
            up_events: Vec::new(),
            down_events: Vec::new(),
            ledger: Ledger::default(),
            started: false,
        }
    }

    /// Its spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Replica-hours run in the cost cap's window (or the last 24 h).
    pub fn replica_hours(&self, now_ms: u64) -> f64 {
        self.ledger.used_hours(now_ms, self.spec.cost_cap.map_or(86_400, |c| c.window_secs))
    }

    /// Decides the replica count for `obs`, and records it as done (a
    /// change is a scale event the rate policies count from now on).
    pub fn decide(&mut self, obs: Observation) -> Decision {
        let spec = &self.spec;
        let (now, current) = (obs.now_ms, obs.current);
        let window = spec.cost_cap.map_or(86_400, |c| c.window_secs);
        self.ledger.observe(now, current, window);
        if !self.started {
            self.started = true;
            // The controller starts a new target's scale-down window with
            // the current count, so it never scales down at once.
            if spec.behavior.scale_down.stabilization_window_secs > 0 {
                self.recommendations.push(Recommendation { at_ms: now, replicas: current });
            }
        }
        let (proposed, source) = self.propose(obs);
        let (mut desired, mut reason) = if current > spec.max_replicas {
            (spec.max_replicas, Reason::AboveMax)
        } else if current < spec.min_replicas {
            (spec.min_replicas, Reason::BelowMin)
        } else if let Some(source) = source.clone() {
            let stabilized = self.stabilize(now, current, proposed);
            let (limited, limit) = self.limit_rate(now, current, stabilized);
            let reason = match limit {
                Some(limit) => limit,
                None if stabilized != proposed => {
                    if proposed >= current {
                        Reason::ScaleUpStabilized
                    } else {
                        Reason::ScaleDownStabilized
                    }
                }
                None => source,
            };
            (limited, reason)
        } else {
            (current, Reason::NoMetrics)
        };
        if let Some(cap) = &self.spec.cost_cap {
            let horizon = self.spec.sync_period_ms as f64 / 1000.0;
            let ceiling = self.ledger.ceiling(cap, now, horizon, self.spec.min_replicas);
            if desired > ceiling && desired > self.spec.min_replicas {
                desired = ceiling.max(self.spec.min_replicas);
                reason = Reason::CostCap;
            }
        }
        self.record_scale(now, current, desired);
        self.ledger.run_from(now, desired);
        Decision { now_ms: now, current, proposed, desired, metric: obs.metric, reason }
    }

    /// Step 2: the largest proposal of the metric and the open schedules.
    fn propose(&self, obs: Observation) -> (u32, Option<Reason>) {
        let spec = &self.spec;
        let mut best: Option<(u32, Reason)> = None;
        if let Some(value) = obs.metric.filter(|v| v.is_finite() && *v >= 0.0) {
            let ratio = value / spec.target.value();
            best = Some(if (1.0 - ratio).abs() <= spec.tolerance {
                (obs.current, Reason::WithinTolerance)
            } else {
                (ceil_u32(ratio * f64::from(obs.current)), Reason::Metric)
            });
        }
        let now_secs = i64::try_from(obs.now_ms / 1000).unwrap_or(i64::MAX);
        if let Some((floor, name)) = schedule::active_floor(&spec.schedules, now_secs) {
            if best.as_ref().is_none_or(|(r, _)| floor > *r) {
                best = Some((floor, Reason::Schedule(name.to_string())));
            }
        }
        match best {
            Some((r, reason)) => (r, Some(reason)),
            None => (obs.current, None),
        }
    }

    /// Step 3 (`stabilizeRecommendationWithBehaviors`).
    fn stabilize(&mut self, now: u64, current: u32, proposed: u32) -> u32 {
        let up_window = u64::from(self.spec.behavior.scale_up.stabilization_window_secs) * 1000;
        let down_window = u64::from(self.spec.behavior.scale_down.stabilization_window_secs) * 1000;
        let up_cutoff = now.saturating_sub(up_window);
        let down_cutoff = now.saturating_sub(down_window);
        let (mut up, mut down) = (proposed, proposed);
        let mut old = None;
        for (i, rec) in self.recommendations.iter().enumerate() {
            if rec.at_ms > up_cutoff {
                up = up.min(rec.replicas);
            }
            if rec.at_ms > down_cutoff {
                down = down.max(rec.replicas);
            }
            if rec.at_ms < up_cutoff && rec.at_ms < down_cutoff {
                old = Some(i);
            }
        }
        let stabilized = current.max(up).min(down);
        let rec = Recommendation { at_ms: now, replicas: proposed };
        match old {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
        stabilized
    }

    /// Step 4 (`convertDesiredReplicasWithBehaviorRate`).
    fn limit_rate(&self, now: u64, current: u32, desired: u32) -> (u32, Option<Reason>) {
        let spec = &self.spec;
        if desired > current {
            let limit = rate_limit(current, now, &self.up_events, &self.down_events, &spec.behavior.scale_up, true)
                .max(current);
            let (allowed, reason) = if spec.max_replicas > limit {
                (limit, Reason::ScaleUpLimit)
            } else {
                (spec.max_replicas, Reason::TooManyReplicas)
            };
            if desired > allowed {
                return (allowed, Some(reason));
            }
        } else if desired < current {
            let limit = rate_limit(current, now, &self.up_events, &self.down_events, &spec.behavior.scale_down, false)
                .min(current);
            let (allowed, reason) = if spec.min_replicas < limit {
                (limit, Reason::ScaleDownLimit)
            } else {
                (spec.min_replicas, Reason::TooFewReplicas)
            };
            if desired < allowed {
                return (allowed, Some(reason));
            }
        }
        (desired, None)
    }

    /// `storeScaleEvent`: a change is counted by the policies of its
    /// direction for their periods.
    fn record_scale(&mut self, now: u64, current: u32, desired: u32) {
        let behavior = &self.spec.behavior;
        let (events, change, keep_secs) = if desired > current {
            (&mut self.up_events, desired - current, behavior.scale_up.longest_period_secs())
        } else if desired < current {
            (&mut self.down_events, current - desired, behavior.scale_down.longest_period_secs())
        } else {
            return;
        };
        let cutoff = now.saturating_sub(u64::from(keep_secs) * 1000);
        events.retain(|e| e.at_ms > cutoff);
        events.push(ScaleEvent { at_ms: now, change });
    }
}

fn ceil_u32(x: f64) -> u32 {
    let c = x.ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// Replicas changed by `events` in the `period_secs` before `now`
/// (`getReplicasChangePerPeriod`).
fn change_in_period(events: &[ScaleEvent], now: u64, period_secs: u32) -> i64 {
    let cutoff = now.saturating_sub(u64::from(period_secs) * 1000);
    events.iter().filter(|e| e.at_ms > cutoff).map(|e| i64::from(e.change)).sum()
}

fn clamp_i64(x: i64) -> u32 {
    u32::try_from(x.max(0)).unwrap_or(u32::MAX)
}

/// How far the rate policies let the count go from `current` in one
/// direction: `calculateScaleUpLimitWithScalingRules` (`grow`) and
/// `calculateScaleDownLimitWithBehaviors`. Each policy counts from the
/// period's start (the count before every change made within it); up
/// rounds up, down truncates, as Go's conversions do.
fn rate_limit(current: u32, now: u64, up: &[ScaleEvent], down: &[ScaleEvent], rules: &ScalingRules, grow: bool) -> u32 {
    // The most change is the highest limit going up and the lowest going down.
    type Pick = fn(i64, i64) -> i64;
    let (most, least): (Pick, Pick) = if grow { (i64::max, i64::min) } else { (i64::min, i64::max) };
    let pick = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => most,
        SelectPolicy::Min => least,
    };
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start =
            i64::from(current) - change_in_period(up, now, p.period_secs) + change_in_period(down, now, p.period_secs);
        let value = i64::from(p.value);
        let share = f64::from(p.value) / 100.0;
        let proposed = match (p.kind, grow) {
            (PolicyKind::Pods, true) => start + value,
            (PolicyKind::Pods, false) => start - value,
            (PolicyKind::Percent, true) => (start as f64 * (1.0 + share)).ceil() as i64,
            (PolicyKind::Percent, false) => (start as f64 * (1.0 - share)) as i64,
        };
        result = Some(result.map_or(proposed, |r| pick(r, proposed)));
    }
    result.map_or(current, clamp_i64)
}

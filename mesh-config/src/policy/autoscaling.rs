//! `models.<m>.autoscaling`: how each region scales a model's servers —
//! the Kubernetes HPA's knobs (min, max, target, behavior), schedules for
//! known peaks (KEDA's cron scaler), a cost cap — and what one replica
//! can do, for `meridianctl simulate`.
//!
//! The same values feed the rendered HPA or KEDA `ScaledObject`, the local
//! mesh's regional autoscalers and the simulation, through
//! [`Autoscaling::spec_for`] (`meridian_autoscale`'s algorithm).

use super::duration::Duration;
use meridian_autoscale as autoscale;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A model's autoscaling, for every region (each region scales alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// The fewest replicas per region (the baseline kept whatever the load
    /// or the budget), at least 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: u32,
    /// The most replicas per region.
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
    /// What is scaled on, averaged over a region's replicas.
    pub target: AutoscalingTarget,
    /// How far from the target (as a fraction) the metric must be before
    /// anything changes (Kubernetes' 0.1).
    #[serde(default = "tolerance")]
    #[schemars(range(min = 0), extend("exclusiveMaximum" = 1))]
    pub tolerance: f64,
    /// Time between decisions (the HPA controller's sync period; KEDA's
    /// `pollingInterval`).
    #[serde(default = "sync_period")]
    pub sync_period: Duration,
    /// Scaling up: Kubernetes' default is no stabilisation, and double or
    /// add 4 replicas per 15 s, whichever is more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// Scaling down: Kubernetes' default is the highest recommendation of
    /// the last 300 s, then at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
    /// Windows of known peaks, each with a replica floor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleWindow>,
    /// A replica-hours budget per region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_cap: Option<CostCap>,
    /// What one replica can do (measured with `make bench-sidecar`), for
    /// `meridianctl simulate`.
    #[serde(default)]
    pub replica: ReplicaCapacity,
    /// The Kubernetes workload scaled: its name, with `{model}`, `{version}`
    /// and `{region}` replaced.
    #[serde(default = "deployment")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
    /// Per-region overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, RegionAutoscaling>,
}

fn one() -> u32 {
    1
}
fn tolerance() -> f64 {
    autoscale::hpa::DEFAULT_TOLERANCE
}
fn sync_period() -> Duration {
    Duration::from_secs(15)
}
fn deployment() -> String {
    "{model}-{version}".into()
}

/// The metric and its target value (exactly one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum AutoscalingTarget {
    /// Time calls wait in the batcher's queue per unit of compute time
    /// (Triton's signal): 0.5 means calls wait half as long as they run.
    QueueToComputeRatio(#[schemars(extend("exclusiveMinimum" = 0))] f64),
    /// Calls queued or running per replica.
    InFlightPerReplica(#[schemars(extend("exclusiveMinimum" = 0))] f64),
}

impl AutoscalingTarget {
    /// The algorithm's target.
    pub fn to_target(self) -> autoscale::Target {
        match self {
            AutoscalingTarget::QueueToComputeRatio(v) => autoscale::Target::QueueToComputeRatio(v),
            AutoscalingTarget::InFlightPerReplica(v) => autoscale::Target::InFlightPerReplica(v),
        }
    }
}

/// One direction's rules (the HPA's `behavior.scaleUp` / `scaleDown`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingRules {
    /// Past recommendations considered (at most 1 h): a scale-up takes the
    /// lowest, a scale-down the highest.
    #[serde(default)]
    pub stabilization_window: Duration,
    /// `Max` (the policy allowing the most change), `Min` or `Disabled`.
    #[serde(default)]
    pub select_policy: SelectPolicy,
    /// Rate policies; at least one unless `Disabled`.
    #[serde(default)]
    pub policies: Vec<ScalingPolicy>,
}

/// Which policy wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum SelectPolicy {
    /// The most change.
    #[default]
    Max,
    /// The least change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// A rate policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub kind: PolicyType,
    /// How many replicas (or percent of them).
    #[schemars(range(min = 1))]
    pub value: u32,
    /// Over what period (1 s – 30 min).
    pub period: Duration,
}

/// A rate policy's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyType {
    /// Replicas.
    Pods,
    /// Percent of the replicas at the period's start.
    Percent,
}

/// A window of a known peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleWindow {
    /// Its name.
    #[schemars(regex(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 40))]
    pub name: String,
    /// When it opens: five-field cron (`0 8 * * 1-5`).
    pub start: String,
    /// When it closes: five-field cron.
    pub end: String,
    /// The timezone of `start` and `end`: `UTC` (the only one Meridian
    /// evaluates; KEDA receives it as written).
    #[serde(default = "utc")]
    pub timezone: String,
    /// The replicas kept while it is open (the metric may ask for more).
    #[schemars(range(min = 1))]
    pub replicas: u32,
}

fn utc() -> String {
    "UTC".into()
}

/// A replica-hours budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CostCap {
    /// Replica-hours per window per region; above `minReplicas`, no
    /// replica is started that the rest of it cannot pay for.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub max_replica_hours: f64,
    /// The rolling window (default 24h).
    #[serde(default = "day")]
    pub window: Duration,
}

fn day() -> Duration {
    Duration::from_secs(86_400)
}

/// What one replica can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReplicaCapacity {
    /// Calls per second at its best batch size.
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub requests_per_second: f64,
    /// Time one call computes (its batch's run time).
    pub compute_time: Duration,
    /// Time from start to serving (pod scheduling, image, model load,
    /// warmup).
    pub startup: Duration,
}

impl Default for ReplicaCapacity {
    fn default() -> Self {
        Self { requests_per_second: 500.0, compute_time: Duration::from_millis(20), startup: Duration::from_secs(30) }
    }
}

/// A region's overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionAutoscaling {
    /// Its `minReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<u32>,
    /// Its `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<u32>,
    /// Its schedules (replacing the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<ScheduleWindow>>,
    /// Its cost cap (replacing the model's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_cap: Option<CostCap>,
}

/// One region's resolved autoscaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionScaling {
    /// Min.
    pub min_replicas: u32,
    /// Max.
    pub max_replicas: u32,
    /// Its schedules.
    pub schedules: Vec<ScheduleWindow>,
    /// Its cap.
    pub cost_cap: Option<CostCap>,
}

impl ScalingRules {
    fn to_rules(&self) -> autoscale::ScalingRules {
        autoscale::ScalingRules {
            stabilization_window_secs: secs(self.stabilization_window),
            select_policy: match self.select_policy {
                SelectPolicy::Max => autoscale::SelectPolicy::Max,
                SelectPolicy::Min => autoscale::SelectPolicy::Min,
                SelectPolicy::Disabled => autoscale::SelectPolicy::Disabled,
            },
            policies: self
                .policies
                .iter()
                .map(|p| autoscale::ScalingPolicy {
                    kind: match p.kind {
                        PolicyType::Pods => autoscale::PolicyKind::Pods,
                        PolicyType::Percent => autoscale::PolicyKind::Percent,
                    },
                    value: p.value,
                    period_secs: secs(p.period),
                })
                .collect(),
        }
    }

    /// The rules as the HPA's `behavior.scaleUp`/`scaleDown` (and KEDA's
    /// `advanced.horizontalPodAutoscalerConfig.behavior`).
    pub fn from_rules(rules: &autoscale::ScalingRules) -> Self {
        Self {
            stabilization_window: Duration::from_secs(u64::from(rules.stabilization_window_secs)),
            select_policy: match rules.select_policy {
                autoscale::SelectPolicy::Max => SelectPolicy::Max,
                autoscale::SelectPolicy::Min => SelectPolicy::Min,
                autoscale::SelectPolicy::Disabled => SelectPolicy::Disabled,
            },
            policies: rules
                .policies
                .iter()
                .map(|p| ScalingPolicy {
                    kind: match p.kind {
                        autoscale::PolicyKind::Pods => PolicyType::Pods,
                        autoscale::PolicyKind::Percent => PolicyType::Percent,
                    },
                    value: p.value,
                    period: Duration::from_secs(u64::from(p.period_secs)),
                })
                .collect(),
        }
    }
}

/// Whole seconds (Kubernetes counts in seconds), rounded up.
pub(crate) fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
}

impl Autoscaling {
    /// `region`'s min, max, schedules and cap (its overrides applied).
    pub fn for_region(&self, region: &str) -> RegionScaling {
        let o = self.regions.get(region).cloned().unwrap_or_default();
        RegionScaling {
            min_replicas: o.min_replicas.unwrap_or(self.min_replicas),
            max_replicas: o.max_replicas.unwrap_or(self.max_replicas),
            schedules: o.schedules.unwrap_or_else(|| self.schedules.clone()),
            cost_cap: o.cost_cap.or_else(|| self.cost_cap.clone()),
        }
    }

    /// The behavior in force (Kubernetes' defaults where absent).
    pub fn behavior(&self) -> autoscale::Behavior {
        let defaults = autoscale::Behavior::default();
        autoscale::Behavior {
            scale_up: self.scale_up.as_ref().map_or(defaults.scale_up, ScalingRules::to_rules),
            scale_down: self.scale_down.as_ref().map_or(defaults.scale_down, ScalingRules::to_rules),
        }
    }

    /// The algorithm's spec for `region`. Errors: a schedule's cron that
    /// does not parse (validation reports it first, by field).
    pub fn spec_for(&self, region: &str) -> Result<autoscale::Spec, String> {
        let r = self.for_region(region);
        let schedules = r
            .schedules
            .iter()
            .map(|w| {
                Ok(autoscale::schedule::Schedule {
                    name: w.name.clone(),
                    start: autoscale::schedule::CronExpr::parse(&w.start).map_err(|e| e.to_string())?,
                    end: autoscale::schedule::CronExpr::parse(&w.end).map_err(|e| e.to_string())?,
                    replicas: w.replicas,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(autoscale::Spec {
            min_replicas: r.min_replicas,
            max_replicas: r.max_replicas,
            target: self.target.to_target(),
            tolerance: self.tolerance,
            sync_period_ms: self.sync_period.as_millis().max(1),
            behavior: self.behavior(),
            schedules,
            cost_cap: r.cost_cap.map(|c| autoscale::cost::CostCap {
                max_replica_hours: c.max_replica_hours,
                window_secs: c.window.as_millis() / 1000,
            }),
        })
    }

    /// The replica model of `meridianctl simulate`.
    pub fn replica_model(&self) -> autoscale::simulate::ReplicaModel {
        autoscale::simulate::ReplicaModel {
            capacity_rps: self.replica.requests_per_second,
            compute_time_s: self.replica.compute_time.as_millis_f64() / 1000.0,
            startup_s: self.replica.startup.as_millis_f64() / 1000.0,
        }
    }

    /// The scaled workload's name in `region` for `version`.
    pub fn deployment_name(&self, model: &str, version: &str, region: &str) -> String {
        self.deployment.replace("{model}", model).replace("{version}", version).replace("{region}", region)
    }
}

//! How fast replicas may change: the `behavior` of a Kubernetes
//! `HorizontalPodAutoscaler` (`autoscaling/v2`), with its defaults.

use serde::{Deserialize, Serialize};

/// A rate policy's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// At most `value` replicas added (or removed) per period.
    Pods,
    /// At most `value` percent of the replicas at the period's start.
    Percent,
}

/// One rate policy: at most `value` (`kind`) per `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingPolicy {
    /// Pods or percent.
    pub kind: PolicyKind,
    /// How many (or what percentage); positive.
    pub value: u32,
    /// The period the change is counted over, 1–1800 seconds.
    pub period_secs: u32,
}

/// Which policy wins when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SelectPolicy {
    /// The one allowing the largest change (Kubernetes' default).
    #[default]
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No change in this direction at all.
    Disabled,
}

/// The rules of one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingRules {
    /// Recommendations are stabilised over this many past seconds: for a
    /// scale-up the lowest of them, for a scale-down the highest.
    pub stabilization_window_secs: u32,
    /// Which policy wins.
    pub select_policy: SelectPolicy,
    /// The rate policies.
    pub policies: Vec<ScalingPolicy>,
}

impl ScalingRules {
    /// Kubernetes' default for scaling up: no stabilisation; double or add
    /// four replicas every 15 s, whichever is more.
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window_secs: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                ScalingPolicy { kind: PolicyKind::Percent, value: 100, period_secs: 15 },
                ScalingPolicy { kind: PolicyKind::Pods, value: 4, period_secs: 15 },
            ],
        }
    }

    /// Kubernetes' default for scaling down: the highest recommendation of
    /// the last 300 s; then down to the target at once (100 % per 15 s).
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window_secs: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy { kind: PolicyKind::Percent, value: 100, period_secs: 15 }],
        }
    }

    /// The longest policy period (how long scale events must be kept).
    pub fn longest_period_secs(&self) -> u32 {
        self.policies.iter().map(|p| p.period_secs).max().unwrap_or(0)
    }
}

/// Both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behavior {
    /// Scaling up.
    pub scale_up: ScalingRules,
    /// Scaling down.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    fn default() -> Self {
        Self { scale_up: ScalingRules::default_scale_up(), scale_down: ScalingRules::default_scale_down() }
    }
}

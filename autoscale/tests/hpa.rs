//! The HPA algorithm against the Kubernetes documentation's worked cases
//! ("Horizontal Pod Autoscaling": algorithm details, scaling policies,
//! stabilisation window, default behavior, the examples of `behavior`),
//! plus schedules, min/max and the cost cap.

use meridian_autoscale::behavior::{Behavior, PolicyKind, ScalingPolicy, ScalingRules, SelectPolicy};
use meridian_autoscale::cost::CostCap;
use meridian_autoscale::schedule::{CronExpr, Schedule};
use meridian_autoscale::{Autoscaler, Observation, Reason, Spec, Target};

const S: u64 = 1000;
/// 2026-12-03T00:00:00Z.
const DAY0: u64 = 1_796_256_000_000;

fn spec(min: u32, max: u32, target: f64) -> Spec {
    Spec::new(min, max, Target::InFlightPerReplica(target))
}

fn no_stabilisation(mut spec: Spec) -> Spec {
    spec.behavior.scale_down.stabilization_window_secs = 0;
    spec
}

fn at(t: u64, current: u32, metric: f64) -> Observation {
    Observation { now_ms: DAY0 + t, current, metric: Some(metric) }
}

/// Runs decisions every `every` ms from `from`, applying each, until `until`;
/// returns the counts after each.
fn run(
    a: &mut Autoscaler,
    mut current: u32,
    from: u64,
    every: u64,
    until: u64,
    metric: impl Fn(u32) -> f64,
) -> Vec<u32> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= until {
        let d = a.decide(at(t, current, metric(current)));
        current = d.desired;
        out.push(current);
        t += every;
    }
    out
}

#[test]
fn the_ratio_doubles_or_halves_the_replicas() {
    // "if the current metric value is 200m, and the desired value is 100m,
    // the number of replicas will be doubled"
    let mut a = Autoscaler::new(spec(1, 100, 0.1));
    let d = a.decide(at(0, 3, 0.2));
    assert_eq!((d.proposed, d.desired, d.reason), (6, 6, Reason::Metric));
    // "If the current value is instead 50m, you'll halve the number of replicas"
    let mut a = Autoscaler::new(no_stabilisation(spec(1, 100, 0.1)));
    let d = a.decide(at(0, 6, 0.05));
    assert_eq!((d.proposed, d.desired), (3, 3));
}

#[test]
fn within_the_tolerance_nothing_changes() {
    // "The control plane skips any scaling action if the ratio is
    // sufficiently close to 1.0 (within a globally-configurable tolerance,
    // 0.1 by default)."
    let mut a = Autoscaler::new(no_stabilisation(spec(1, 100, 10.0)));
    // (Exactly 1.1 is 0.10000000000000009 from 1 in binary floating point,
    // in Go as here, so it scales.)
    for v in [9.01, 9.5, 10.0, 10.5, 10.99] {
        let d = a.decide(at(0, 10, v));
        assert_eq!((d.desired, d.reason.clone()), (10, Reason::WithinTolerance), "metric {v}");
    }
    let d = a.decide(at(S, 10, 11.2));
    assert_eq!((d.desired, d.reason), (12, Reason::Metric), "ceil(1.12 × 10)");
    let d = a.decide(at(2 * S, 12, 10.7));
    assert_eq!(d.desired, 12, "1.07 is within the tolerance again");
    let d = a.decide(at(3 * S, 12, 8.9));
    assert_eq!(d.desired, 11, "ceil(0.89 × 12) = 11");
}

#[test]
fn the_default_scale_down_waits_five_minutes_for_the_highest_recommendation() {
    // Default behaviour: "the highest recommendation of the last 300 s";
    // the controller starts the window with the current count.
    let mut a = Autoscaler::new(spec(1, 100, 0.1));
    let counts = run(&mut a, 6, 0, 15 * S, 285 * S, |_| 0.05);
    assert!(counts.iter().all(|&c| c == 6), "held for 300 s: {counts:?}");
    let d = a.decide(at(300 * S, 6, 0.05));
    assert_eq!(d.desired, 3, "the start's recommendation has left the window");

    // A spike inside the window holds the count at the spike's recommendation.
    let mut a = Autoscaler::new(spec(1, 100, 1.0));
    a.decide(at(0, 4, 1.0)); // starts the window at 4
    let d = a.decide(at(400 * S, 4, 2.0));
    assert_eq!(d.desired, 8);
    let d = a.decide(at(415 * S, 8, 0.25));
    assert_eq!((d.proposed, d.desired, d.reason), (2, 8, Reason::ScaleDownStabilized));
    let d = a.decide(at(699 * S, 8, 0.25));
    assert_eq!(d.desired, 8, "400 s + 300 s has not passed");
    let d = a.decide(at(700 * S, 8, 0.25));
    assert_eq!(d.desired, 2);
}

#[test]
fn the_default_scale_up_adds_four_or_doubles_every_15_seconds() {
    // "the HPA can ... add 4 Pods or a 100% of the currently running
    // replicas every 15 seconds" (whichever is more: selectPolicy Max)
    let mut a = Autoscaler::new(spec(1, 100, 1.0));
    let d = a.decide(at(0, 1, 10.0));
    assert_eq!((d.proposed, d.desired, d.reason), (10, 5, Reason::ScaleUpLimit), "max(1 × 2, 1 + 4)");
    let d = a.decide(at(5 * S, 5, 2.0));
    assert_eq!((d.desired, d.reason), (5, Reason::ScaleUpLimit), "the period started at 1: 1 + 4");
    let d = a.decide(at(15 * S, 5, 2.0));
    assert_eq!(d.desired, 10, "a new period: max(5 × 2, 5 + 4)");
    let d = a.decide(at(30 * S, 10, 4.0));
    assert_eq!(d.desired, 20, "doubling beats adding four");
}

#[test]
fn the_documented_scale_down_policies_remove_ten_percent_then_four_pods_per_minute() {
    // behavior.scaleDown.policies: [Pods 4 / 60 s, Percent 10 / 60 s]:
    // "if there are 80 replicas and the target has to be scaled down to 10
    // replicas then during the first step 8 replicas will be reduced. In the
    // next iteration when the number of replicas is 72, 10% of the pods is
    // 7.2 but the number is rounded up to 8. ... When the number of replicas
    // falls below 40 the first policy (Pods) is applied and 4 replicas will
    // be reduced at a time."
    let mut s = no_stabilisation(spec(1, 100, 1.0));
    s.behavior.scale_down.policies = vec![
        ScalingPolicy { kind: PolicyKind::Pods, value: 4, period_secs: 60 },
        ScalingPolicy { kind: PolicyKind::Percent, value: 10, period_secs: 60 },
    ];
    let mut a = Autoscaler::new(s);
    // The load is what 10 replicas carry at the target.
    let counts = run(&mut a, 80, 0, 60 * S, 13 * 60 * S, |_current| 0.0);
    assert_eq!(counts, vec![72, 64, 57, 51, 45, 40, 36, 32, 28, 24, 20, 16, 12, 8]);
    // The same rules, the target at 10 (metric = 10 × target / replicas).
    let mut s = no_stabilisation(spec(1, 100, 1.0));
    s.behavior.scale_down.policies = vec![
        ScalingPolicy { kind: PolicyKind::Pods, value: 4, period_secs: 60 },
        ScalingPolicy { kind: PolicyKind::Percent, value: 10, period_secs: 60 },
    ];
    let mut a = Autoscaler::new(s);
    let counts = run(&mut a, 80, 0, 60 * S, 14 * 60 * S, |current| 10.0 / f64::from(current));
    assert_eq!(counts[..3], [72, 64, 57]);
    assert_eq!(*counts.last().unwrap_or(&0), 10, "{counts:?}");
    let from_40: Vec<u32> = counts.windows(2).filter(|w| w[0] <= 40 && w[1] > 10).map(|w| w[0] - w[1]).collect();
    assert!(from_40.iter().all(|&step| step == 4), "4 at a time below 40: {counts:?}");
}

#[test]
fn a_period_counts_the_changes_already_made_in_it() {
    let mut s = no_stabilisation(spec(1, 100, 1.0));
    s.behavior.scale_down.policies = vec![ScalingPolicy { kind: PolicyKind::Percent, value: 10, period_secs: 60 }];
    let mut a = Autoscaler::new(s);
    assert_eq!(a.decide(at(0, 80, 0.0)).desired, 72);
    let d = a.decide(at(15 * S, 72, 0.0));
    assert_eq!((d.desired, d.reason), (72, Reason::ScaleDownLimit), "the period began at 80: at most 72");
    assert_eq!(a.decide(at(60 * S, 72, 0.0)).desired, 64, "a new period");
}

#[test]
fn select_policy_min_takes_the_smallest_change_and_disabled_none() {
    let policies = vec![
        ScalingPolicy { kind: PolicyKind::Pods, value: 4, period_secs: 60 },
        ScalingPolicy { kind: PolicyKind::Percent, value: 10, period_secs: 60 },
    ];
    let mut s = no_stabilisation(spec(1, 100, 1.0));
    s.behavior.scale_down.policies = policies.clone();
    s.behavior.scale_down.select_policy = SelectPolicy::Min;
    assert_eq!(Autoscaler::new(s).decide(at(0, 80, 0.0)).desired, 76, "4 pods is less than 10 %");

    // "Example: disable scale down": selectPolicy: Disabled.
    let mut s = no_stabilisation(spec(1, 100, 1.0));
    s.behavior.scale_down.select_policy = SelectPolicy::Disabled;
    let mut a = Autoscaler::new(s);
    let counts = run(&mut a, 80, 0, 60 * S, 600 * S, |_| 0.0);
    assert!(counts.iter().all(|&c| c == 80), "{counts:?}");
    // Scaling up still works.
    assert!(a.decide(at(700 * S, 80, 2.0)).desired > 80);

    let mut s = spec(1, 100, 1.0);
    s.behavior.scale_up.select_policy = SelectPolicy::Min;
    // Min of (1 × 2, 1 + 4) = 2.
    assert_eq!(Autoscaler::new(s).decide(at(0, 1, 10.0)).desired, 2);
}

#[test]
fn a_scale_up_window_takes_the_lowest_recent_recommendation() {
    let mut s = spec(1, 100, 1.0);
    s.behavior.scale_up.stabilization_window_secs = 60;
    let mut a = Autoscaler::new(s);
    let d = a.decide(at(0, 4, 1.0));
    assert_eq!(d.desired, 4);
    let d = a.decide(at(15 * S, 4, 2.0));
    assert_eq!((d.proposed, d.desired, d.reason), (8, 4, Reason::ScaleUpStabilized));
    let d = a.decide(at(30 * S, 4, 1.5));
    assert_eq!(d.desired, 4, "4 at 0 s is still in the window");
    let d = a.decide(at(61 * S, 4, 2.0));
    assert_eq!(d.desired, 6, "the lowest of 8, 6 and 8");
}

#[test]
fn out_of_range_counts_are_corrected_at_once() {
    let mut a = Autoscaler::new(spec(2, 10, 1.0));
    let d = a.decide(at(0, 14, 1.0));
    assert_eq!((d.desired, d.reason), (10, Reason::AboveMax));
    let d = a.decide(at(S, 1, 1.0));
    assert_eq!((d.desired, d.reason), (2, Reason::BelowMin));
    let d = a.decide(at(20 * S, 10, 5.0));
    assert_eq!((d.desired, d.reason), (10, Reason::TooManyReplicas));
    let mut a = Autoscaler::new(no_stabilisation(spec(2, 10, 1.0)));
    let d = a.decide(at(0, 5, 0.01));
    assert_eq!((d.desired, d.reason), (2, Reason::TooFewReplicas));
}

#[test]
fn no_metric_and_no_schedule_changes_nothing() {
    let mut a = Autoscaler::new(spec(1, 10, 1.0));
    let d = a.decide(Observation { now_ms: DAY0, current: 3, metric: None });
    assert_eq!((d.desired, d.reason), (3, Reason::NoMetrics));
    let d = a.decide(Observation { now_ms: DAY0, current: 3, metric: Some(f64::NAN) });
    assert_eq!(d.reason, Reason::NoMetrics, "NaN is no reading");
}

fn launch() -> Schedule {
    Schedule {
        name: "launch".into(),
        start: CronExpr::parse("0 9 * * *").expect("start"),
        end: CronExpr::parse("0 11 * * *").expect("end"),
        replicas: 6,
    }
}

#[test]
fn an_open_schedule_is_a_floor_the_metric_can_exceed() {
    let mut s = spec(1, 20, 1.0);
    s.schedules = vec![launch()];
    let mut a = Autoscaler::new(s);
    let d = a.decide(at(8 * 3600 * S, 1, 1.0));
    assert_eq!(d.desired, 1, "closed before 09:00");
    let d = a.decide(at(9 * 3600 * S, 1, 1.0));
    assert_eq!(
        (d.proposed, d.desired, d.reason),
        (6, 5, Reason::ScaleUpLimit),
        "the floor goes through the rate limits"
    );
    let d = a.decide(at(9 * 3600 * S + 15 * S, 5, 1.0));
    assert_eq!((d.desired, d.reason), (6, Reason::Schedule("launch".into())));
    let d = a.decide(at(9 * 3600 * S + 30 * S, 6, 2.0));
    assert_eq!((d.desired, d.reason), (12, Reason::Metric), "the metric asks for more");
    // After 11:00 and the scale-down window, back to what the metric asks.
    let d = a.decide(at(11 * 3600 * S + 301 * S, 12, 0.1));
    assert_eq!(d.desired, 2);
}

#[test]
fn the_cost_cap_stops_growth_above_the_baseline() {
    let mut s = spec(2, 50, 1.0);
    s.cost_cap = Some(CostCap { max_replica_hours: 10.0, window_secs: 86_400 });
    s.sync_period_ms = 60_000;
    let mut a = Autoscaler::new(s);
    let mut current = 2;
    let mut capped = false;
    for minute in 0..24 * 60 {
        let d = a.decide(at(minute * 60 * S, current, 5.0));
        assert!(d.desired >= 2, "never below the baseline");
        capped |= d.reason == Reason::CostCap;
        current = d.desired;
    }
    assert!(capped);
    assert_eq!(current, 2, "the budget is spent: the baseline only");
    // 10 replica-hours plus the baseline's 2 × 24 at most.
    assert!(a.replica_hours(DAY0 + 24 * 3600 * S) <= 10.0 + 48.0 + 1e-9);
}

#[test]
fn default_behavior_is_kubernetes_defaults() {
    let b = Behavior::default();
    assert_eq!(b.scale_up.stabilization_window_secs, 0);
    assert_eq!(b.scale_down.stabilization_window_secs, 300);
    assert_eq!(b.scale_up.select_policy, SelectPolicy::Max);
    assert_eq!(b.scale_up.policies.len(), 2);
    assert_eq!(b.scale_down, ScalingRules::default_scale_down());
}

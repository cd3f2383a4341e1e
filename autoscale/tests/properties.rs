//! Properties of the autoscaler over random metric sequences: never below
//! min, never above max, never past the cost cap above the baseline, and
//! never faster than a single Pods policy allows.

use meridian_autoscale::behavior::{PolicyKind, ScalingPolicy, SelectPolicy};
use meridian_autoscale::cost::CostCap;
use meridian_autoscale::{Autoscaler, Observation, Reason, Spec, Target};
use proptest::prelude::*;

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (1u32..5, 0u32..30, 0.05f64..10.0, 0u32..120, 0u32..600, 1u32..10, 1u32..300, prop::bool::ANY).prop_map(
        |(min, extra, target, up_window, down_window, pods, percent, min_select)| {
            let mut s = Spec::new(min, min + extra, Target::QueueToComputeRatio(target));
            s.behavior.scale_up.stabilization_window_secs = up_window;
            s.behavior.scale_down.stabilization_window_secs = down_window;
            s.behavior.scale_up.policies = vec![
                ScalingPolicy { kind: PolicyKind::Pods, value: pods, period_secs: 30 },
                ScalingPolicy { kind: PolicyKind::Percent, value: percent, period_secs: 60 },
            ];
            if min_select {
                s.behavior.scale_up.select_policy = SelectPolicy::Min;
            }
            s
        },
    )
}

proptest! {
    #[test]
    fn replicas_stay_within_min_and_max(
        spec in spec_strategy(),
        start in 1u32..40,
        metrics in prop::collection::vec(prop::option::of(0.0f64..100.0), 1..80),
        step in 1u64..60,
    ) {
        let (min, max) = (spec.min_replicas, spec.max_replicas);
        let mut a = Autoscaler::new(spec);
        let mut current = start;
        for (i, m) in metrics.into_iter().enumerate() {
            let d = a.decide(Observation { now_ms: 1_000_000 + i as u64 * step * 1000, current, metric: m });
            prop_assert!(d.desired >= min && d.desired <= max, "{d:?} outside [{min}, {max}]");
            current = d.desired;
        }
    }

    #[test]
    fn the_cost_cap_holds_above_the_baseline(
        spec in spec_strategy(),
        cap in 0.5f64..30.0,
        metrics in prop::collection::vec(0.0f64..100.0, 1..200),
    ) {
        let mut spec = spec;
        spec.sync_period_ms = 60_000;
        spec.cost_cap = Some(CostCap { max_replica_hours: cap, window_secs: 6 * 3600 });
        let min = spec.min_replicas;
        let mut a = Autoscaler::new(spec);
        let mut current = min;
        for (i, m) in metrics.into_iter().enumerate() {
            let now = i as u64 * 60_000;
            let d = a.decide(Observation { now_ms: now, current, metric: Some(m) });
            prop_assert!(d.desired >= min);
            if d.desired > min && d.desired > current {
                // A scale-up above the baseline is paid for until the next decision.
                let spent = a.replica_hours(now);
                prop_assert!(spent + f64::from(d.desired) / 60.0 <= cap + 1e-9, "{spent} + {} > {cap}", d.desired);
            }
            current = d.desired;
        }
    }

    #[test]
    fn a_single_pods_policy_bounds_every_period(
        value in 1u32..6,
        period in 10u32..120,
        metrics in prop::collection::vec(0.0f64..50.0, 1..100),
    ) {
        let mut spec = Spec::new(1, 1000, Target::InFlightPerReplica(1.0));
        spec.behavior.scale_up.policies = vec![ScalingPolicy { kind: PolicyKind::Pods, value, period_secs: period }];
        let mut a = Autoscaler::new(spec);
        let mut current = 1;
        // (time, count after the decision)
        let mut counts: Vec<(u64, u32)> = vec![(0, 1)];
        for (i, m) in metrics.into_iter().enumerate() {
            let now = 1000 + i as u64 * 5000;
            let d = a.decide(Observation { now_ms: now, current, metric: Some(m) });
            if d.desired > current {
                // Kubernetes counts from the period's start: the count before
                // every change made within it.
                let cutoff = now.saturating_sub(u64::from(period) * 1000);
                let at_start = counts.iter().rev().find(|(t, _)| *t <= cutoff).map_or(1, |(_, c)| *c);
                prop_assert!(d.desired <= at_start + value, "{} > {at_start} + {value} within {period} s", d.desired);
                prop_assert!(matches!(d.reason, Reason::Metric | Reason::ScaleUpLimit | Reason::ScaleUpStabilized));
            }
            counts.push((now, d.desired));
            current = d.desired;
        }
    }
}

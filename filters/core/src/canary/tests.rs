use super::*;
use proptest::prelude::*;

fn steps() -> Vec<Step> {
    vec![
        Step { weight: 5.0, hold_ms: 1_000 },
        Step { weight: 25.0, hold_ms: 1_000 },
        Step { weight: 50.0, hold_ms: 1_000 },
    ]
}

fn analysis() -> Analysis {
    Analysis { max_error_rate: 0.05, max_p99_ratio: 2.0, min_samples: 20, window_ms: 10_000 }
}

fn healthy(calls: u32) -> Observed {
    Observed { calls, failures: 0, p99_ms: Some(10.0) }
}

#[test]
fn fnv1a_matches_its_reference_vectors() {
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn a_healthy_canary_is_promoted_through_every_step() {
    let mut r = Rollout::start(1, 0);
    let mut weights = vec![r.weight(&steps())];
    for t in (100..=5_000).step_by(100) {
        r.advance(&steps(), &analysis(), healthy(100), healthy(1_000), t);
        let w = r.weight(&steps());
        if weights.last() != Some(&w) {
            weights.push(w);
        }
    }
    assert_eq!(weights, vec![5.0, 25.0, 50.0, 100.0]);
    assert_eq!(r.phase, Phase::Promoted);
}

#[test]
fn a_step_waits_for_enough_samples() {
    let mut r = Rollout::start(1, 0);
    r.advance(&steps(), &analysis(), healthy(5), healthy(1_000), 5_000);
    assert_eq!(r.phase, Phase::Progressing { step: 0, since_ms: 0 }, "5 calls are not enough to judge");
}

#[test]
fn a_failing_or_slow_canary_rolls_back_and_stays_back() {
    let mut r = Rollout::start(1, 0);
    let failing = Observed { calls: 40, failures: 4, p99_ms: Some(10.0) };
    r.advance(&steps(), &analysis(), failing, healthy(1_000), 300);
    assert_eq!(r.phase, Phase::RolledBack { at_ms: 300, reason: Breach::ErrorRate });
    assert_eq!(r.weight(&steps()), 0.0);
    r.advance(&steps(), &analysis(), healthy(1_000), healthy(1_000), 60_000);
    assert_eq!(r.weight(&steps()), 0.0, "a rollback holds until the config changes");

    let mut slow = Rollout::start(1, 0);
    let canary = Observed { calls: 40, failures: 0, p99_ms: Some(80.0) };
    slow.advance(&steps(), &analysis(), canary, healthy(1_000), 10);
    assert_eq!(slow.phase, Phase::RolledBack { at_ms: 10, reason: Breach::Latency });
}

#[test]
fn overrides_only_where_allowed_and_only_to_existing_versions() {
    let split = Split { model: "mlp", stable: "v1", canary: "v2", canary_percent: 0.0, allow_override: true };
    let with = |v| SplitInput { override_version: Some(v), ..SplitInput::default() };
    assert_eq!(split.choose(with("v2")), ("v2", Choice::Override, false));
    assert_eq!(split.choose(with("v9")), ("v1", Choice::Draw, true), "unknown version: ignored, counted");
    let locked = Split { allow_override: false, ..split };
    assert_eq!(locked.choose(with("v2")), ("v1", Choice::Draw, true));
}

#[test]
fn version_stats_give_rates_and_p99_over_the_window() {
    let mut s = VersionStats::default();
    for i in 0..99 {
        s.record(10_000, 1_000 + i, Some(4));
    }
    s.record(10_000, 1_200, Some(250));
    s.record(10_000, 1_300, None);
    let o = s.observed(10_000, 2_000);
    assert_eq!((o.calls, o.failures), (101, 1));
    assert_eq!(o.p99_ms, Some(5.0), "99 of 100 successes are ≤ 5 ms");
    assert_eq!(s.observed(10_000, 30_000), Observed::default(), "the window slid past them");
}

proptest! {
    /// Raising the canary's weight only moves keys stable → canary.
    #[test]
    fn buckets_are_monotonic_in_the_weight(key in "[a-z0-9-]{1,24}", w1 in 0.0f64..100.0, dw in 0.0f64..100.0) {
        let b = bucket("mlp", &key);
        prop_assert!(b < BUCKETS);
        let w2 = (w1 + dw).min(100.0);
        prop_assert!(!on_canary(b, w1) || on_canary(b, w2), "key {} left the canary when its weight rose", key);
    }

    /// Over many keys the canary's share matches its weight.
    #[test]
    fn sticky_shares_match_the_weight(weight in 0.0f64..100.0, salt in 0u32..1000) {
        let n = 20_000u32;
        let split = Split { model: "mlp", stable: "v1", canary: "v2", canary_percent: weight, allow_override: false };
        let on = (0..n).filter(|i| {
            let key = format!("caller-{salt}-{i}");
            split.choose(SplitInput { sticky_key: Some(&key), ..SplitInput::default() }).0 == "v2"
        }).count() as f64;
        let p = weight / 100.0;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        // 5 σ (a false alarm once in ~1.7 million cases, where 256 cases a
        // run at 3.29 σ would fail one run in four), plus the 0.01 % bucket
        // resolution. The 99.9 % interval is the Envoy split test's bound.
        prop_assert!((on - p * f64::from(n)).abs() <= 5.0 * sigma + 2.0 + 1e-4 * f64::from(n), "{} of {} at {}%", on, n, weight);
    }

    /// The step machine: the weight only rises while progressing, never
    /// rises after a rollback, and promotion passes every step in order.
    #[test]
    fn the_rollout_state_machine(events in proptest::collection::vec((0u64..700, 0u32..60, 0u32..8, 1u32..40), 1..200)) {
        let steps = steps();
        let mut r = Rollout::start(7, 0);
        let mut now = 0;
        let mut last_weight = r.weight(&steps);
        let mut seen_steps = vec![0usize];
        for (dt, calls, failures, p99) in events {
            now += dt;
            let canary = Observed { calls, failures: failures.min(calls), p99_ms: Some(f64::from(p99)) };
            let was_back = matches!(r.phase, Phase::RolledBack { .. });
            r.advance(&steps, &analysis(), canary, healthy(1_000), now);
            let w = r.weight(&steps);
            match r.phase {
                Phase::RolledBack { .. } => prop_assert_eq!(w, 0.0),
                _ => {
                    prop_assert!(!was_back, "left a rollback without a config change");
                    prop_assert!(w >= last_weight, "the weight fell without a rollback");
                }
            }
            if let Phase::Progressing { step, .. } = r.phase {
                if seen_steps.last() != Some(&step) {
                    seen_steps.push(step);
                }
            }
            if r.phase == Phase::Promoted {
                prop_assert_eq!(&seen_steps, &vec![0, 1, 2], "promoted without passing every step");
            }
            last_weight = w;
        }
    }
}

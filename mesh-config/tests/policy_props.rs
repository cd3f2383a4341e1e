//! Property: the policy's own checks catch everything the filter would
//! refuse. For any policy — valid or not — either it is accepted and the
//! filter configuration of every region passes the filter's validation,
//! or it is refused with errors that name policy fields; never with the
//! catch-all "derived filter configuration is invalid".

use meridian_mesh_config::policy::spec::{
    Analysis, Caller, Canary, MeshPolicy, Model, ModelVersion, Region, Step, Sticky,
};
use meridian_mesh_config::policy::{Duration, Policy};
use proptest::prelude::*;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![1 => Just(0u64), 1 => 1u64..10, 8 => 100u64..1_000].prop_map(Duration::from_millis)
}

fn policy() -> impl Strategy<Value = MeshPolicy> {
    let regions = proptest::collection::vec(
        (prop_oneof![9 => 0usize..4, 1 => Just(4usize)], prop_oneof![Just("eu"), Just("us")]),
        1..4,
    )
    .prop_map(|mut rs| {
        // Mostly distinct names (index 4 repeats eu-west on purpose).
        let mut seen = Vec::new();
        rs.retain(|(i, _)| {
            let fresh = !seen.contains(i);
            seen.push(*i);
            fresh
        });
        rs
    });
    let model = (
        0usize..3,
        proptest::option::of((
            0usize..3,
            0.0f64..=100.0,
            any::<bool>(),
            proptest::collection::vec((0.0f64..=100.0, duration()), 0..3),
            duration(),
        )),
        proptest::option::of(duration()),
        proptest::option::of(any::<bool>()),
    );
    let knobs = (duration(), duration(), duration(), duration(), duration(), duration(), 1usize..6, 0.0f64..3.0);
    (regions, proptest::collection::vec(model, 0..3), proptest::collection::vec((0usize..4, 0usize..3), 0..3), knobs)
        .prop_map(|(regions, models, callers, knobs)| {
            let names = ["eu-west", "eu-central", "us-east", "ap-south", "eu-west"];
            let mut p: MeshPolicy = serde_json::from_value(serde_json::json!({
                "apiVersion": "meridian.dev/v1alpha1", "kind": "MeshPolicy", "regions": [{"name": "x", "zone": "eu"}]
            }))
            .expect("minimal");
            p.regions = regions
                .iter()
                .map(|(i, zone)| {
                    serde_json::from_value::<Region>(serde_json::json!({"name": names[*i], "zone": zone}))
                        .expect("region")
                })
                .collect();
            for (m, (versions, canary, timeout, idempotent)) in models.into_iter().enumerate() {
                let versions: Vec<ModelVersion> = (0..=versions)
                    .map(|v| ModelVersion { name: format!("v{}", v + 1), model_version: None, regions: None })
                    .collect();
                let canary = canary.map(|(v, weight, sticky, steps, window)| Canary {
                    version: format!("v{}", v + 1),
                    weight,
                    sticky: sticky.then_some(Sticky::Caller),
                    allow_override: false,
                    steps: steps.into_iter().map(|(weight, hold)| Step { weight, hold }).collect(),
                    analysis: Analysis { window, ..Analysis::default() },
                });
                p.models
                    .insert(format!("model-{m}"), Model { versions, canary, timeout, idempotent, ..Model::default() });
            }
            for (i, (zone, region)) in callers.into_iter().enumerate() {
                p.callers.insert(
                    format!("caller-{i}"),
                    Caller {
                        residency: ["eu", "us", "apac", "eu"].get(zone).map(|z| z.to_string()),
                        region: names.get(region).map(|r| r.to_string()),
                        ..Caller::default()
                    },
                );
            }
            let (timeout, per_try, window, base_open, interval, tick, attempts, ratio) = knobs;
            p.resilience.timeout = timeout;
            p.resilience.retry.per_try_timeout = per_try;
            p.resilience.retry.max_attempts = attempts as u32;
            p.resilience.budget.window = window;
            p.resilience.budget.ratio = ratio;
            p.resilience.breaker.base_open = base_open;
            p.resilience.health.interval = interval;
            p.filter.tick = tick;
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]
    #[test]
    fn the_policy_checks_cover_the_filters(p in policy()) {
        match Policy::from_spec(p) {
            Ok(policy) => {
                for r in &policy.spec().regions {
                    prop_assert!(policy.filter_config(&r.name).is_ok());
                }
            }
            Err(errors) => {
                for e in errors.iter() {
                    prop_assert!(!e.message.contains("derived"), "the policy's checks missed what the filter refuses: {}", e);
                    prop_assert!(!e.path().is_empty(), "an error without a field: {}", e);
                }
            }
        }
    }
}

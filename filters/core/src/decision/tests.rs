use super::*;
use crate::config::CallerPolicy;
use proptest::prelude::*;

fn config() -> FilterConfig {
    let mut c = FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")]);
    c.callers.insert("billing".into(), CallerPolicy { residency: Some("eu".into()) });
    c.routing.dwell_ms = 1_000;
    c
}

/// Several workers sharing one state, as Envoy's threads do.
struct Mesh {
    config: FilterConfig,
    state: MeshState,
    workers: Vec<Planner>,
}

impl Mesh {
    fn new(config: FilterConfig, workers: usize) -> Self {
        let planners = (0..workers).map(|i| Planner::new(config.clone(), format!("w{i}"))).collect();
        let mut mesh = Self { config, state: MeshState::default(), workers: planners };
        mesh.tick(0);
        mesh
    }

    fn tick(&mut self, now: u64) {
        for w in &mut self.workers {
            let delta = w.take_delta();
            delta.apply(&mut self.state, &self.config, Some(w.worker()), now);
            w.advance(&mut self.state, now);
        }
        for w in &mut self.workers {
            w.refresh(self.state.clone());
        }
    }

    fn decide(&mut self, worker: usize, attrs: &RequestAttrs<'_>, now: u64) -> Decision {
        let (state, config) = (&mut self.state, &self.config);
        self.workers[worker].decide(attrs, now, &mut |region, model| state.admit_probe(config, region, model, now))
    }
}

fn plan(d: Decision) -> RoutePlan {
    match d {
        Decision::Route(p) => p,
        Decision::Reject(r) => panic!("rejected: {r:?}"),
    }
}

const MLP: RequestAttrs<'static> = RequestAttrs {
    model: Some("mlp"),
    caller: None,
    caller_region: None,
    residency: None,
    deadline_ms: None,
    debug_panic: false,
    version_override: None,
    sticky_key: None,
};

fn ok_from(region: &str) -> Completion<'_> {
    Completion {
        grpc_status: Some(0),
        http_status: 200,
        served_region: Some(region),
        latency_ms: Some(5),
        ..Default::default()
    }
}

/// eu-west serves 20 calls at 5 ms, then its next 5 fail (each rescued by
/// eu-central): its breaker opens at t = 10 until 1010.
fn serve_then_fail_local(mesh: &mut Mesh) {
    for _ in 0..20 {
        let p = plan(mesh.decide(0, &MLP, 5));
        mesh.workers[0].complete(&p, &ok_from("eu-west"), 5);
    }
    for _ in 0..5 {
        let p = plan(mesh.decide(0, &MLP, 10));
        mesh.workers[0].complete(&p, &Completion { attempts: Some(2), ..ok_from("eu-central") }, 10);
    }
}

#[test]
fn a_healthy_mesh_routes_locally_with_failover_in_order() {
    let mut mesh = Mesh::new(config(), 1);
    let p = plan(mesh.decide(0, &MLP, 1));
    assert_eq!(p.regions[0], "eu-west");
    assert_eq!(p.cluster, format!("meridian~{}", p.regions.join("~")));
    assert_eq!((p.retries, p.reason), (2, Reason::Local));
    assert_eq!(mesh.workers[0].take_counters()["meridian.decision.eu-west"], 1);
}

#[test]
fn failures_at_the_local_region_move_traffic_at_the_next_tick() {
    let mut mesh = Mesh::new(config(), 2);
    for i in 0..5 {
        let p = plan(mesh.decide(i % 2, &MLP, 10));
        // The local attempt failed; the retry succeeded at eu-central.
        let done = Completion { attempts: Some(2), ..ok_from("eu-central") };
        mesh.workers[i % 2].complete(&p, &done, 10);
    }
    // Each worker sees the others' outcomes at its next tick.
    mesh.tick(20);
    mesh.tick(21);
    let p = plan(mesh.decide(0, &MLP, 21));
    assert_eq!(p.regions[0], "eu-central", "5 failures in a row opened eu-west's breaker");
    assert_eq!(p.reason, Reason::LocalUnavailable);
    assert_eq!(p.regions.last().map(String::as_str), Some("eu-west"), "an open breaker is only the last resort");
    assert_eq!(mesh.state.breaker_state("eu-west", "mlp", 21), BreakerState::Open { until_ms: 1_010 });
}

#[test]
fn the_local_region_returns_through_probes_and_the_dwell_time() {
    let mut mesh = Mesh::new(config(), 1);
    serve_then_fail_local(&mut mesh);
    mesh.tick(20);
    // Open until 1010; then half-open, but eu-central leads until eu-west has
    // been wanted back for the dwell time (1 s).
    let mut leaders = Vec::new();
    let mut t = 20;
    while t < 4_000 {
        mesh.tick(t);
        let p = plan(mesh.decide(0, &MLP, t));
        leaders.push((t, p.regions[0].clone()));
        mesh.workers[0].complete(&p, &ok_from(&p.regions[0]), t);
        t += 50;
    }
    let back = leaders.iter().find(|(_, r)| r == "eu-west").map(|(t, _)| *t).expect("eu-west leads again");
    assert!((2_000..=2_200).contains(&back), "back at {back}: open 1 s, then a 1 s dwell");
    let flips = leaders.windows(2).filter(|w| w[0].1 != w[1].1).count();
    assert_eq!(flips, 1, "no flapping: {leaders:?}");
    assert_eq!(mesh.state.breaker_state("eu-west", "mlp", t), BreakerState::Closed, "probes closed it");
}

#[test]
fn a_half_open_region_admits_only_its_probes() {
    let mut config = config();
    config.routing.dwell_ms = 0;
    let mut mesh = Mesh::new(config, 3);
    serve_then_fail_local(&mut mesh);
    mesh.tick(1_100);
    mesh.tick(1_150);
    let plans: Vec<_> = (0..10).map(|i| plan(mesh.decide(i % 3, &MLP, 1_160))).collect();
    let primaries: Vec<&String> = plans.iter().map(|p| &p.regions[0]).collect();
    let probes = primaries.iter().filter(|r| **r == "eu-west").count();
    assert_eq!(probes, 3, "half_open_probes across all workers: {primaries:?}");
    // The others keep it as the last resort, after every other region.
    for p in plans.iter().filter(|p| p.regions[0] != "eu-west") {
        assert_eq!(p.regions.last().map(String::as_str), Some("eu-west"), "{:?}", p.regions);
    }
}

#[test]
fn residency_from_policy_or_header_and_their_conflict() {
    let mut mesh = Mesh::new(config(), 1);
    let billing = RequestAttrs { caller: Some("billing"), ..MLP };
    assert!(!plan(mesh.decide(0, &billing, 1)).regions.contains(&"us-east".to_string()));
    let conflict = RequestAttrs { residency: Some("us"), ..billing };
    match mesh.decide(0, &conflict, 1) {
        Decision::Reject(r) => {
            assert_eq!(r.reason, "residency-conflict");
            assert!(r.message.contains("`eu`") && r.message.contains("`us`"), "{}", r.message);
        }
        d => panic!("{d:?}"),
    }
    let nowhere = RequestAttrs { residency: Some("apac"), ..MLP };
    match mesh.decide(0, &nowhere, 1) {
        Decision::Reject(r) => assert_eq!(r.reason, "residency-excludes-all"),
        d => panic!("{d:?}"),
    }
    assert_eq!(mesh.workers[0].take_counters()["meridian.residency_rejected"], 2);
}

#[test]
fn every_eu_region_down_fails_fast_with_the_reason() {
    let mut mesh = Mesh::new(config(), 1);
    let probes = Delta {
        probes: ["eu-west", "eu-central"]
            .iter()
            .flat_map(|r| [(r.to_string(), false, 5), (r.to_string(), false, 6)])
            .collect(),
        ..Delta::default()
    };
    probes.apply(&mut mesh.state, &mesh.config, None, 6);
    mesh.tick(10);
    match mesh.decide(0, &RequestAttrs { residency: Some("eu"), ..MLP }, 11) {
        Decision::Reject(r) => {
            assert_eq!(r.reason, "no-available-region");
            assert!(r.message.contains("residency zone `eu`"), "{}", r.message);
        }
        d => panic!("{d:?}"),
    }
    assert_eq!(plan(mesh.decide(0, &MLP, 11)).regions, vec!["us-east"], "unbound calls still go somewhere");
}

#[test]
fn no_retry_when_the_deadline_cannot_fit_one() {
    let mut mesh = Mesh::new(config(), 1);
    let short = RequestAttrs { deadline_ms: Some(500), ..MLP };
    let p = plan(mesh.decide(0, &short, 1));
    assert_eq!((p.retries, p.retry_limited), (0, Some(RetryLimit::NoTimeLeft)));
    let long = RequestAttrs { deadline_ms: Some(5_000), ..MLP };
    assert_eq!(plan(mesh.decide(0, &long, 1)).retries, 2);
}

#[test]
fn a_non_idempotent_model_retries_only_unreached_requests() {
    let mut config = config();
    config.models.insert("charge".into(), crate::config::ModelPolicy::default());
    if let Some(m) = config.models.get_mut("charge") {
        m.retry.idempotent = false;
    }
    let mut mesh = Mesh::new(config, 1);
    let p = plan(mesh.decide(0, &RequestAttrs { model: Some("charge"), ..MLP }, 1));
    assert!(!p.idempotent);
    assert!(!RETRY_ON_NOT_IDEMPOTENT.contains("5xx") && !RETRY_ON_NOT_IDEMPOTENT.contains("reset"));
    assert!(!RETRY_ON_NOT_IDEMPOTENT.contains("unavailable"), "UNAVAILABLE may come from a sidecar that ran it");
}

proptest! {
    /// With any mix of workers, ticks and failures, the retries Envoy may
    /// make (the grants not returned) stay within the shared budget.
    #[test]
    fn retries_stay_within_the_budget(steps in proptest::collection::vec((0usize..3, any::<bool>(), 0u64..40), 1..600)) {
        let mut config = config();
        config.retry_budget = crate::config::BudgetConfig { ratio: 0.2, min_retries: 5, window_ms: 100_000 };
        let mut mesh = Mesh::new(config, 3);
        let (mut requests, mut retries_used) = (0u64, 0u64);
        let mut now = 1;
        for (worker, fails, dt) in steps {
            now += dt;
            if dt > 30 {
                mesh.tick(now);
            }
            let p = plan(mesh.decide(worker, &MLP, now));
            requests += 1;
            // A failing request uses every retry it was granted.
            let used = if fails { p.retries } else { 0 };
            retries_used += u64::from(used);
            let done = Completion { attempts: Some(used + 1), ..ok_from(&p.regions[(used as usize) % p.regions.len()]) };
            mesh.workers[worker].complete(&p, &done, now);
            prop_assert!(retries_used as f64 <= 5.0 + 0.2 * requests as f64 + 1e-9, "{} retries for {} requests", retries_used, requests);
        }
    }

    /// Whatever happens, a request bound to `eu` is never routed outside it.
    #[test]
    fn residency_holds_under_any_outcomes(steps in proptest::collection::vec((0u8..3, 0u8..4, 0u64..300), 1..300)) {
        let mut mesh = Mesh::new(config(), 2);
        let eu = RequestAttrs { residency: Some("eu"), ..MLP };
        let mut now = 1;
        for (i, (region, status, dt)) in steps.into_iter().enumerate() {
            now += dt;
            if i % 7 == 0 {
                mesh.tick(now);
            }
            match mesh.decide(i % 2, &eu, now) {
                Decision::Route(p) => {
                    prop_assert!(p.regions.iter().all(|r| r != "us-east"), "{:?}", p.regions);
                    let served = ["eu-west", "eu-central", "us-east"][region as usize];
                    let grpc = [0, 14, 4, 3][status as usize];
                    let done = Completion { grpc_status: Some(grpc), http_status: 200, served_region: Some(served), ..Default::default() };
                    mesh.workers[i % 2].complete(&p, &done, now);
                }
                Decision::Reject(r) => prop_assert_eq!(r.reason, "no-available-region"),
            }
        }
    }
}

#[test]
fn the_outcome_summary_parses_with_gaps() {
    let full = Completion::from_outcome("eu-central|3|12|2|0|200");
    assert_eq!(
        full,
        Completion {
            grpc_status: Some(0),
            http_status: 200,
            served_region: Some("eu-central"),
            attempts: Some(2),
            latency_ms: Some(12),
            queue_depth: Some(3.0),
        }
    );
    let local_reply = Completion::from_outcome("||||14|200");
    assert_eq!((local_reply.served_region, local_reply.attempts, local_reply.grpc_status), (None, None, Some(14)));
    assert_eq!(Completion::from_outcome(""), Completion::default());
}

#[test]
fn grpc_messages_are_percent_encoded() {
    let r = Rejection { reason: "x", message: "zone `eu` — 100%\n".into(), residency: true };
    assert_eq!(r.grpc_message(), "zone `eu` %E2%80%94 100%25%0A");
}

fn canary_config(weight: f64, sticky: Option<crate::config::StickyKey>) -> FilterConfig {
    let mut c = config();
    let canary = crate::config::CanaryConfig {
        stable: "v1".into(),
        canary: "v2".into(),
        weight,
        sticky,
        allow_override: false,
        ..Default::default()
    };
    c.models.insert("mlp".into(), crate::config::ModelPolicy { canary: Some(canary), ..Default::default() });
    c
}

fn version(mesh: &mut Mesh, attrs: &RequestAttrs<'_>) -> String {
    plan(mesh.decide(0, attrs, 10)).version.expect("a canary model has a version")
}

#[test]
fn a_model_without_a_canary_has_no_version() {
    let mut mesh = Mesh::new(config(), 1);
    assert_eq!(plan(mesh.decide(0, &MLP, 10)).version, None);
}

#[test]
fn per_request_draws_land_within_the_binomial_interval() {
    // 10,000 requests at 10 %: within 3.29 σ (the 99.9 % interval) of 1,000.
    let mut mesh = Mesh::new(canary_config(10.0, None), 1);
    let canary = (0..10_000).filter(|_| version(&mut mesh, &MLP) == "v2").count() as f64;
    let sigma = (10_000.0f64 * 0.1 * 0.9).sqrt();
    assert!((canary - 1_000.0).abs() <= 3.29 * sigma, "{canary} of 10,000 on the canary");
    let counters = mesh.workers[0].take_counters();
    assert_eq!(counters.get("meridian.canary.mlp.v2").copied(), Some(canary as u64));
    assert_eq!(counters.get("meridian.canary.mlp.v1").copied(), Some(10_000 - canary as u64));
}

#[test]
fn a_sticky_key_keeps_its_version_and_raising_the_weight_only_moves_keys_to_the_canary() {
    let sticky = Some(crate::config::StickyKey::Header("x-user".into()));
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let mut before: Option<Vec<String>> = None;
    for weight in [10.0, 20.0, 35.0, 50.0] {
        let mut mesh = Mesh::new(canary_config(weight, sticky.clone()), 1);
        let now: Vec<String> = keys
            .iter()
            .map(|k| {
                let attrs = RequestAttrs { sticky_key: Some(k), ..MLP };
                let v = version(&mut mesh, &attrs);
                assert_eq!(v, version(&mut mesh, &attrs), "{k} flipped between two calls");
                v
            })
            .collect();
        if let Some(before) = &before {
            for (k, (b, n)) in keys.iter().zip(before.iter().zip(&now)) {
                assert!(!(b == "v2" && n == "v1"), "{k} moved back to stable when the weight rose to {weight}");
            }
        }
        let on = now.iter().filter(|v| *v == "v2").count() as f64;
        assert!((on / 500.0 - weight / 100.0).abs() < 0.1, "{on} of 500 keys at {weight} %");
        before = Some(now);
    }
}

#[test]
fn overrides_only_where_allowed_and_only_to_existing_versions() {
    let mut c = canary_config(0.0, None);
    let mut mesh = Mesh::new(c.clone(), 1);
    let asks_v2 = RequestAttrs { version_override: Some("v2"), ..MLP };
    assert_eq!(version(&mut mesh, &asks_v2), "v1", "not allowed: ignored");
    assert_eq!(mesh.workers[0].take_counters().get("meridian.canary.mlp.override_ignored").copied(), Some(1));
    if let Some(canary) = c.models.get_mut("mlp").and_then(|m| m.canary.as_mut()) {
        canary.allow_override = true;
    }
    let mut mesh = Mesh::new(c, 1);
    assert_eq!(version(&mut mesh, &asks_v2), "v2");
    let asks_v9 = RequestAttrs { version_override: Some("v9"), ..MLP };
    assert_eq!(version(&mut mesh, &asks_v9), "v1", "no such version: ignored");
    assert_eq!(mesh.workers[0].take_counters().get("meridian.canary.mlp.override_ignored").copied(), Some(1));
}

#[test]
fn a_region_without_the_canary_serves_stable_and_counts_it() {
    let mut c = canary_config(100.0, None);
    if let Some(canary) = c.models.get_mut("mlp").and_then(|m| m.canary.as_mut()) {
        canary.regions = Some(vec!["eu-central".into()]);
    }
    let mut mesh = Mesh::new(c, 1);
    // The local region (eu-west) is primary and lacks the canary.
    assert_eq!(version(&mut mesh, &MLP), "v1");
    let counters = mesh.workers[0].take_counters();
    assert_eq!(counters.get("meridian.canary.mlp.stable_fallback").copied(), Some(1));
    assert_eq!(counters.get("meridian.canary.mlp.v1").copied(), Some(1));
}

fn rollout_config(steps: &[(f64, u64)]) -> FilterConfig {
    let mut c = canary_config(0.0, None);
    if let Some(canary) = c.models.get_mut("mlp").and_then(|m| m.canary.as_mut()) {
        canary.steps = steps.iter().map(|&(weight, hold_ms)| crate::canary::Step { weight, hold_ms }).collect();
        canary.analysis =
            crate::canary::Analysis { max_error_rate: 0.1, max_p99_ratio: 2.0, min_samples: 20, window_ms: 10_000 };
    }
    c
}

/// Decides and completes `n` calls on `worker`; calls on `v2` get
/// `canary_status`, calls on `v1` succeed. Returns how many went to `v2`.
fn serve(mesh: &mut Mesh, worker: usize, n: usize, now: u64, canary_status: u32) -> usize {
    let mut on_canary = 0;
    for _ in 0..n {
        let p = plan(mesh.decide(worker, &MLP, now));
        let canary = p.version.as_deref() == Some("v2");
        on_canary += usize::from(canary);
        let done = Completion { grpc_status: Some(if canary { canary_status } else { 0 }), ..ok_from("eu-west") };
        mesh.workers[worker].complete(&p, &done, now);
    }
    on_canary
}

#[test]
fn a_failing_canary_is_rolled_back_for_every_worker_and_stays_back_until_the_config_changes() {
    let mut mesh = Mesh::new(rollout_config(&[(50.0, 60_000)]), 2);
    // Fewer failed canary calls than min_samples: not judged yet.
    let mut failed = 0;
    while failed < 15 {
        failed += serve(&mut mesh, 0, 1, 100, 14);
    }
    mesh.tick(200);
    assert!(matches!(mesh.state.rollouts["mlp"].phase, Phase::Progressing { step: 0, .. }));
    // Enough samples over the error rate: rolled back at the next tick.
    while failed < 25 {
        failed += serve(&mut mesh, 1, 1, 300, 14);
    }
    mesh.tick(400);
    assert!(matches!(mesh.state.rollouts["mlp"].phase, Phase::RolledBack { .. }), "{:?}", mesh.state.rollouts);
    for w in 0..2 {
        assert_eq!(serve(&mut mesh, w, 200, 500, 0), 0, "worker {w} still sends calls to the canary");
    }
    let rolled_back: u64 =
        mesh.workers.iter_mut().filter_map(|w| w.take_counters().get("meridian.canary.mlp.rolled_back").copied()).sum();
    assert_eq!(rolled_back, 1, "one worker made the move");
    assert!(mesh.workers[0].gauges(500).contains(&("meridian.canary.mlp.phase".into(), 2)));
    assert!(mesh.workers[0].gauges(500).contains(&("meridian.canary.mlp.weight_pct".into(), 0)));

    // A VM reload: a new planner on the same shared state keeps it rolled back.
    let config = mesh.config.clone();
    mesh.workers[0] = Planner::new(config.clone(), "w0".into());
    mesh.tick(60_000);
    assert_eq!(serve(&mut mesh, 0, 200, 60_100, 0), 0);
    assert!(matches!(mesh.state.rollouts["mlp"].phase, Phase::RolledBack { .. }));

    // A changed configuration starts a new rollout at its first step.
    let changed = rollout_config(&[(40.0, 60_000)]);
    mesh.config = changed.clone();
    mesh.workers = (0..2).map(|i| Planner::new(changed.clone(), format!("w{i}"))).collect();
    mesh.tick(61_000);
    assert!(matches!(mesh.state.rollouts["mlp"].phase, Phase::Progressing { step: 0, .. }));
    let on = serve(&mut mesh, 0, 1_000, 61_100, 0);
    assert!((300..500).contains(&on), "{on} of 1,000 at 40 %");
}

#[test]
fn a_failing_canary_under_a_rollout_does_not_open_the_regions_breakers() {
    let mut mesh = Mesh::new(rollout_config(&[(50.0, 60_000)]), 1);
    // Canary calls fail (each retried in two more regions), stable ones pass.
    for t in 0..80 {
        let p = plan(mesh.decide(0, &MLP, 100 + t));
        let canary = p.version.as_deref() == Some("v2");
        let done = if canary {
            Completion {
                grpc_status: Some(14),
                attempts: Some(3),
                served_region: Some("us-east"),
                ..ok_from("eu-west")
            }
        } else {
            ok_from("eu-west")
        };
        mesh.workers[0].complete(&p, &done, 100 + t);
    }
    mesh.tick(200);
    for region in ["eu-west", "eu-central", "us-east"] {
        assert!(!mesh.state.status(region, "mlp", 200).breaker_open, "{region}'s breaker opened");
    }
    assert!(matches!(mesh.state.rollouts["mlp"].phase, Phase::RolledBack { .. }), "the rollout judged it instead");
    assert_eq!(plan(mesh.decide(0, &MLP, 300)).regions[0], "eu-west", "stable traffic stays local");
}

#[test]
fn a_healthy_canary_is_promoted_through_every_step() {
    let mut mesh = Mesh::new(rollout_config(&[(10.0, 1_000), (50.0, 1_000)]), 2);
    let mut now = 0;
    let mut weights = Vec::new();
    for _ in 0..40 {
        now += 100;
        serve(&mut mesh, (now / 100 % 2) as usize, 50, now, 0);
        mesh.tick(now);
        let canary = mesh.config.models["mlp"].canary.as_ref().expect("canary");
        weights.push(crate::decision::canary_weight(&mesh.state, "mlp", canary, canary.rollout_hash()));
    }
    assert!(weights.contains(&10.0) && weights.contains(&50.0), "{weights:?}");
    assert_eq!(mesh.state.rollouts["mlp"].phase, Phase::Promoted);
    assert_eq!(weights.last(), Some(&100.0));
    assert_eq!(serve(&mut mesh, 0, 100, now, 0), 100, "promoted: every call on the canary");
    let promoted: u64 =
        mesh.workers.iter_mut().filter_map(|w| w.take_counters().get("meridian.canary.mlp.promoted").copied()).sum();
    assert_eq!(promoted, 1);
}

#[test]
fn explain_says_why_each_region_is_left_out() {
    let mut mesh = Mesh::new(config(), 1);
    // eu-central fails its health checks.
    let probes =
        Delta { probes: vec![("eu-central".into(), false, 1), ("eu-central".into(), false, 2)], ..Delta::default() };
    probes.apply(&mut mesh.state, &mesh.config, None, 2);
    mesh.tick(3);
    let billing = RequestAttrs { caller: Some("billing"), ..MLP };
    let e = mesh.workers[0].explain(&billing, 3);
    let plan = plan(e.decision.clone());
    assert_eq!(plan.regions, ["eu-west"]);
    assert_eq!(e.residency.as_deref(), Some("eu"), "the caller's policy binds it");
    let verdict = |r: &str| e.regions.iter().find(|a| a.region == r).map(|a| a.verdict);
    assert!(matches!(verdict("eu-west"), Some(crate::region::Verdict::Usable { .. })));
    assert_eq!(verdict("eu-central"), Some(crate::region::Verdict::Unhealthy));
    assert_eq!(verdict("us-east"), Some(crate::region::Verdict::OutsideResidency));
    // A residency conflict is refused before any region is assessed.
    let conflict = RequestAttrs { residency: Some("us"), ..billing };
    let e = mesh.workers[0].explain(&conflict, 3);
    assert!(matches!(e.decision, Decision::Reject(ref r) if r.reason == "residency-conflict"));
    assert!(e.regions.is_empty());
}

#[test]
fn a_plan_says_how_its_version_was_picked_and_carries_the_models_timeout() {
    let mut c = canary_config(30.0, Some(crate::config::StickyKey::Header("x-user".into())));
    c.default_model.timeout_ms = Some(30_000);
    if let Some(m) = c.models.get_mut("mlp") {
        m.timeout_ms = Some(2_500);
    }
    let mut mesh = Mesh::new(c, 1);
    let keyed = RequestAttrs { sticky_key: Some("user-7"), ..MLP };
    let p = plan(mesh.decide(0, &keyed, 5));
    let pick = p.version_pick.expect("a canary model's plan says how");
    let b = crate::canary::bucket("mlp", "user-7");
    assert_eq!((pick.how, pick.bucket, pick.canary_percent), (Choice::Sticky, Some(b), 30.0));
    assert_eq!(p.version.as_deref(), Some(if crate::canary::on_canary(b, 30.0) { "v2" } else { "v1" }));
    assert_eq!(p.timeout_ms, Some(2_500));
    let p = plan(mesh.decide(0, &RequestAttrs { model: Some("other"), ..MLP }, 5));
    assert_eq!((p.version_pick, p.timeout_ms), (None, Some(30_000)), "the default model's");
}

proptest! {
    /// What explain reports is what decide does: the regions routed to are
    /// usable ones in the assessment, every region it leaves out has a
    /// reason (or lies beyond the failover length), whatever the state.
    #[test]
    fn explain_matches_the_decision(
        down in proptest::collection::vec(any::<bool>(), 3),
        open in proptest::collection::vec(any::<bool>(), 3),
        latency in proptest::collection::vec(1u64..400, 3),
        residency in proptest::option::of(prop_oneof![Just("eu"), Just("us"), Just("apac")]),
        from in 0usize..3,
        max in 1usize..4,
    ) {
        let names = ["eu-west", "eu-central", "us-east"];
        let mut c = config();
        c.trust_caller_region_header = true;
        c.max_failover_regions = max;
        let mut state = MeshState::default();
        let mut delta = Delta::default();
        for (i, r) in names.iter().enumerate() {
            if down[i] {
                delta.probes.extend([(r.to_string(), false, 1), (r.to_string(), false, 2)]);
            }
            delta.outcomes.push(crate::state::AttemptOutcome {
                region: r.to_string(), model: "mlp".into(), at_ms: 3,
                outcome: crate::breaker::Outcome::Success { latency_ms: latency[i] }, queue_depth: None,
            });
            if open[i] {
                for _ in 0..c.default_model.breaker.consecutive_failures {
                    delta.outcomes.push(crate::state::AttemptOutcome {
                        region: r.to_string(), model: "mlp".into(), at_ms: 4,
                        outcome: crate::breaker::Outcome::Failure, queue_depth: None,
                    });
                }
            }
        }
        delta.apply(&mut state, &c, None, 4);
        let mut planner = Planner::new(c.clone(), "w".into());
        planner.refresh(state.clone());
        let attrs = RequestAttrs { residency, caller_region: Some(names[from]), ..MLP };
        let e = planner.explain(&attrs, 5);
        match &e.decision {
            Decision::Route(p) => {
                prop_assert!(p.regions.len() <= max);
                // Usable regions first, then healthy ones with an open breaker (the last resort).
                let usable = |r: &String| e.regions.iter().any(|a| &a.region == r && matches!(a.verdict, crate::region::Verdict::Usable { .. }));
                let open = |r: &String| e.regions.iter().any(|a| &a.region == r && a.verdict == crate::region::Verdict::BreakerOpen);
                let first_open = p.regions.iter().position(|r| !usable(r)).unwrap_or(p.regions.len());
                for r in &p.regions[first_open..] {
                    prop_assert!(open(r), "{} routed but neither usable nor open: {:?}", r, e.regions);
                }
                let candidates = e.regions.iter().filter(|a| matches!(a.verdict, crate::region::Verdict::Usable { .. } | crate::region::Verdict::BreakerOpen)).count();
                prop_assert_eq!(p.regions.len(), candidates.min(max), "every usable, then open, region is routed to, up to the failover length");
            }
            Decision::Reject(r) => {
                prop_assert!(
                    e.regions.iter().all(|a| !matches!(a.verdict, crate::region::Verdict::Usable { .. } | crate::region::Verdict::BreakerOpen)),
                    "refused ({}) with a usable or last-resort region: {:?}", r.reason, e.regions
                );
            }
        }
    }
}

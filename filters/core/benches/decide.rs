//! `cargo bench -p meridian-filters-core --bench decide`: the decision
//! core's per-request cost, natively (the wasm build runs the same code in
//! Envoy's V8): one `decide` plus one `complete`, as the filter does per
//! request, and one tick's `Delta::apply` + `advance` for comparison.

use meridian_filters_core::decision::Completion;
use meridian_filters_core::state::MeshState;
use meridian_filters_core::{Decision, FilterConfig, Planner, RequestAttrs};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let config =
        FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")]);
    let mut planner = Planner::new(config.clone(), "w1".into());
    let mut state = MeshState::default();
    let attrs =
        RequestAttrs { model: Some("mlp"), residency: Some("eu"), deadline_ms: Some(5_000), ..Default::default() };
    let n = 200_000u64;
    let mut now = 1_000_000;
    let start = Instant::now();
    let mut ticks = std::time::Duration::ZERO;
    for i in 0..n {
        if i % 200 == 0 {
            // One tick per 200 requests (a worker at 4,000 req/s, 50 ms ticks).
            let t = Instant::now();
            now += 50;
            let delta = planner.take_delta();
            delta.apply(&mut state, &config, Some("w1"), now);
            planner.advance(&mut state, now);
            let bytes = state.encode();
            planner.refresh(MeshState::decode(&bytes));
            ticks += t.elapsed();
        }
        let decision = planner.decide(black_box(&attrs), now, &mut |_, _| true);
        if let Decision::Route(plan) = decision {
            let done = Completion {
                grpc_status: Some(0),
                http_status: 200,
                served_region: Some("eu-west"),
                latency_ms: Some(3),
                queue_depth: Some(1.0),
                ..Default::default()
            };
            planner.complete(&plan, &done, now);
        }
    }
    let total = start.elapsed();
    let per_request = (total - ticks).as_nanos() as f64 / n as f64;
    let per_tick = ticks.as_nanos() as f64 / (n / 200) as f64;
    println!("decide+complete: {per_request:.0} ns/request; tick (apply+advance+encode+decode): {per_tick:.0} ns ({:.0} ns/request amortised)", per_tick / 200.0);
}

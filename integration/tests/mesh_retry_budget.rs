//! Retry budget: a region failing half its calls with UNAVAILABLE gets
//! retried elsewhere, but never beyond the budget — checked against
//! Envoy's own retry counters.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_integration::wait::calls_after;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_a_region_fails_half_its_calls() -> anyhow::Result<()> {
    // Keep the failing region in front: only the budget limits retries.
    let mut spec = MeshSpec::three_regions()?.with_breakers_held_closed();
    spec.policy.resilience.budget.ratio = 0.2;
    spec.policy.resilience.budget.min_retries = 10;
    spec.policy.resilience.budget.window = meridian_mesh_config::policy::Duration::from_secs(60);
    let budget = spec.policy.resilience.budget.clone();
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    tokio::task::block_in_place(|| {
        mesh.set_fault("eu-west", Fault { abort_percent: 50, abort_grpc_status: 14, ..Fault::default() })
    })?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 8, Duration::from_millis(1)).await?;
    calls_after(&load, Instant::now(), 3_000).await?;
    let records = load.stop().await;

    let (retries, requests, exhausted) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let caller = mesh.caller();
        Ok((
            caller.stat_sum("cluster.meridian~", ".upstream_rq_retry")?,
            caller.stat("http.meridian_ingress.downstream_rq_total")?.unwrap_or(0),
            caller.stat("wasmcustom.meridian.retry.budget_exhausted")?.unwrap_or(0),
        ))
    })?;
    let allowed = f64::from(budget.min_retries) + budget.ratio * requests as f64;
    assert!(requests >= records.len() as u64, "{requests} requests counted for {} calls", records.len());
    assert!(retries as f64 <= allowed, "{retries} retries for {requests} requests: over the budget ({allowed})");
    assert!(retries as f64 >= 0.5 * allowed, "the budget is used, not starved: {retries} of {allowed}");
    assert!(exhausted > 0, "budget exhaustion is counted in Envoy stats");
    let failed = records.iter().filter(|r| r.code != 0).count();
    let failed_share = failed as f64 / records.len() as f64;
    // Half the first attempts fail; the budget rescues at most ~20 % of calls.
    assert!((0.2..0.45).contains(&failed_share), "{failed} of {} failed", records.len());
    eprintln!(
        "retry budget: {requests} requests, {retries} retries (budget {allowed:.0}), {exhausted} calls refused a retry, {failed} failed"
    );
    Ok(())
}

//! Canary splitting through the real mesh: the filter picks `v1` (stable)
//! or `v2` (canary) for the MLP, each region's gateway routes `v2` to a
//! sidecar serving the canary model (answering `x-meridian-model-version: 2`),
//! everything else to the stable sidecars (version 1).

use meridian_filters_core::canary::{bucket, on_canary};
use meridian_integration::load::{call, connect, CallSpec, Load, Record};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_integration::wait::until_records;
use meridian_mesh_config::policy::spec::{Analysis, Canary, Shadow, Step, Sticky};
use std::time::{Duration, Instant};

/// `integration/policies/canary.yaml` (v1 and v2 in every region) with the
/// MLP's canary at `weight`.
fn spec(weight: f64, sticky: Option<Sticky>) -> anyhow::Result<MeshSpec> {
    let mut spec = MeshSpec::test_policy("canary")?;
    let mlp = spec.policy.models.get_mut(MODEL).ok_or_else(|| anyhow::anyhow!("the policy has the MLP"))?;
    mlp.canary = Some(Canary { weight, sticky, ..canary(&mlp.canary) });
    Ok(spec)
}

fn canary(existing: &Option<Canary>) -> Canary {
    existing.clone().unwrap_or(Canary {
        version: "v2".into(),
        weight: 0.0,
        sticky: None,
        allow_override: false,
        steps: Vec::new(),
        analysis: Analysis::default(),
    })
}

fn served_by_canary(r: &Record) -> bool {
    r.model_version.as_deref() == Some("2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_split_within_the_binomial_interval() -> anyhow::Result<()> {
    for weight in [10.0, 50.0] {
        split_within_the_interval(weight).await?;
    }
    Ok(())
}

async fn split_within_the_interval(weight: f64) -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec(weight, None)?))?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 8, Duration::ZERO).await?;
    until_records(&load, Duration::from_secs(120), "10,000 calls", |r| r.len() >= 10_000).await?;
    let records = load.stop().await;
    let failed: Vec<&Record> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} failed, first: {:?}", failed.len(), failed.first());
    assert!(
        records.iter().all(|r| matches!(r.model_version.as_deref(), Some("1" | "2"))),
        "every call names its version"
    );

    // The first 10,000: the canary's share within the 99.9 % interval (±3.29 σ).
    let canary = records[..10_000].iter().filter(|r| served_by_canary(r)).count() as f64;
    let p = weight / 100.0;
    let (mean, sigma) = (10_000.0 * p, (10_000.0 * p * (1.0 - p)).sqrt());
    eprintln!("{weight} %: {canary} of the first 10,000 calls on the canary ({} calls in all)", records.len());
    assert!((canary - mean).abs() <= 3.29 * sigma, "{canary} of 10,000 on the canary ({mean} ± {:.0})", 3.29 * sigma);

    // The filter's counters agree with what the sidecars answered.
    let on_canary = records.iter().filter(|r| served_by_canary(r)).count() as u64;
    let total = records.len() as u64;
    let caller = mesh.caller();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v1 = caller.stat("wasmcustom.meridian.canary.mlp.v1")?.unwrap_or(0);
        let v2 = caller.stat("wasmcustom.meridian.canary.mlp.v2")?.unwrap_or(0);
        if v1 + v2 >= total {
            assert_eq!((v1, v2), (total - on_canary, on_canary), "counters per version");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "counters flushed: v1 {v1} + v2 {v2} of {total}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One call per caller, each caller's identity its sticky key.
async fn versions(addr: std::net::SocketAddr, callers: &[String]) -> anyhow::Result<Vec<bool>> {
    let mut client = connect(addr).await?;
    let mut out = Vec::new();
    for (i, c) in callers.iter().enumerate() {
        let spec = CallSpec { caller: Some(c.clone()), ..CallSpec::new(MODEL, 16) };
        let r = call(&mut client, &spec, i as u32).await;
        anyhow::ensure!(r.code == 0, "{c}: {r:?}");
        out.push(served_by_canary(&r));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_keeps_its_version_across_three_weight_changes() -> anyhow::Result<()> {
    // Each weight change reaches Envoy over xDS (ECDS).
    let spec = spec(10.0, Some(Sticky::Caller))?;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let callers: Vec<String> = (0..200).map(|i| format!("caller-{i}")).collect();
    let mut seen: Vec<Vec<bool>> = vec![versions(mesh.listener(), &callers).await?];
    for weight in [20.0, 30.0, 40.0] {
        // The policy with the new weight (and a new name, to see it applied).
        let mut policy = mesh.policy().clone();
        policy.metadata.name = format!("w{weight}");
        if let Some(c) = policy.models.get_mut(MODEL).and_then(|m| m.canary.as_mut()) {
            c.weight = weight;
        }
        let filter = tokio::task::block_in_place(|| mesh.push_policy(&policy))?;
        // Applied once a call is handled by the filter under its new name.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut client = connect(mesh.listener()).await?;
            let r = call(&mut client, &CallSpec::new(MODEL, 16), 0).await;
            if r.filter.as_deref() == Some(filter.name.as_str()) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "weight {weight} not applied: {r:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen.push(versions(mesh.listener(), &callers).await?);
    }

    let weights = [10.0, 20.0, 30.0, 40.0];
    let mut flips = 0;
    for (k, caller) in callers.iter().enumerate() {
        let b = bucket(MODEL, caller);
        for (phase, weight) in weights.iter().enumerate() {
            assert_eq!(seen[phase][k], on_canary(b, *weight), "{caller} (bucket {b}) at {weight} %");
        }
        // A key whose bucket no change crossed keeps its version throughout.
        let crossed = weights.iter().any(|w| on_canary(b, *w)) && !on_canary(b, weights[0]);
        if !crossed && seen.iter().any(|s| s[k] != seen[0][k]) {
            flips += 1;
        }
        // Raising the weight only ever moves a key stable → canary.
        assert!(seen.windows(2).all(|w| !w[0][k] || w[1][k]), "{caller} went back to stable");
    }
    assert_eq!(flips, 0);
    let per_phase: Vec<usize> = seen.iter().map(|s| s.iter().filter(|c| **c).count()).collect();
    eprintln!("callers on the canary at 10/20/30/40 %: {per_phase:?} of 200");
    let moved = (0..callers.len()).filter(|k| !seen[0][*k] && seen[3][*k]).count();
    assert!(moved > 20, "raising 10 % → 40 % moved only {moved} of 200 callers to the canary");
    Ok(())
}

/// A rollout of `steps`; the analysis judges the canary after 20 calls over
/// a 5 s window, and rolls it back above 10 % errors.
fn rollout(steps: &[(f64, u64)]) -> anyhow::Result<MeshSpec> {
    // Breakers as configured: a failing canary under a rollout is judged by
    // the rollout, not by the regions' breakers.
    let mut spec = spec(0.0, None)?;
    let policy = spec.policy.models.get_mut(MODEL).and_then(|m| m.canary.as_mut());
    if let Some(c) = policy {
        c.steps = steps
            .iter()
            .map(|&(weight, hold_ms)| Step {
                weight,
                hold: meridian_mesh_config::policy::Duration::from_millis(hold_ms),
            })
            .collect();
        c.analysis = Analysis {
            max_error_rate: Some(0.1),
            max_p99_ratio: 5.0,
            min_samples: MIN_SAMPLES,
            window: meridian_mesh_config::policy::Duration::from_secs(5),
        };
    }
    Ok(spec)
}

const MIN_SAMPLES: u32 = 20;

async fn phase(mesh: &Mesh) -> anyhow::Result<Option<u64>> {
    tokio::task::block_in_place(|| mesh.caller().stat("wasmcustom.meridian.canary.mlp.phase"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_within_seconds_and_stays_back() -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&rollout(&[(50.0, 60_000)])?))?;
    // The canary answers UNAVAILABLE everywhere (retries cannot rescue it).
    let broken = Fault { abort_percent: 100, abort_grpc_status: 14, ..Fault::default() };
    tokio::task::block_in_place(|| {
        ["eu-west", "eu-central", "us-east"].iter().try_for_each(|r| mesh.set_version_fault(r, "v2", broken))
    })?;
    let started = Instant::now();
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::ZERO).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while phase(&mesh).await? != Some(2) {
        anyhow::ensure!(Instant::now() < deadline, "not rolled back within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rolled_back_seen = Instant::now();
    until_records(&load, Duration::from_secs(10), "500 calls after the rollback", |r| {
        r.iter().filter(|r| r.sent > rolled_back_seen + Duration::from_millis(200)).count() >= 500
    })
    .await?;
    let records = load.stop().await;
    let on_canary: Vec<&Record> = records.iter().filter(|r| r.chosen_version.as_deref() == Some("v2")).collect();
    let first = on_canary.first().map(|r| r.sent).unwrap_or(started);
    let last = on_canary.last().map(|r| r.sent).unwrap_or(started);
    let failed = records.iter().filter(|r| r.code != 0).count();
    // Calls decided in the two ticks before every worker had seen the
    // rollback (the tick that judged it, and the other worker's next one).
    let rate_per_ms = records.len() as f64 / records.last().map_or(1.0, |r| (r.sent - started).as_millis() as f64);
    let bound = MIN_SAMPLES as usize + (rate_per_ms * 2.0 * mesh.filter().tick_ms as f64).ceil() as usize;
    eprintln!(
        "canary calls {} (all failed), the last {:?} after the first; {failed} failed calls in all, bound {bound}",
        on_canary.len(),
        last - first
    );
    assert!(last - first < Duration::from_secs(5), "the canary took calls for {:?}", last - first);
    assert_eq!(failed, on_canary.len(), "only canary calls failed");
    assert!(failed <= bound, "{failed} failed calls, more than {MIN_SAMPLES} samples + two ticks of calls ({bound})");
    // Every worker follows the rollback at its next tick (a margin of four
    // ticks for a loaded machine).
    let all_know = rolled_back_seen + Duration::from_millis(4 * mesh.filter().tick_ms);
    let after: Vec<&Record> = records.iter().filter(|r| r.sent > all_know).collect();
    assert!(after.len() >= 400, "{} calls after every worker knew", after.len());
    assert!(
        after.iter().all(|r| r.code == 0 && r.model_version.as_deref() == Some("1")),
        "all stable after the rollback"
    );
    assert_eq!(mesh.caller().stat("wasmcustom.meridian.canary.mlp.weight_pct")?, Some(0));
    for region in ["eu-west", "eu-central", "us-east"] {
        let breaker = mesh.caller().stat(&format!("wasmcustom.meridian.breaker.{region}.mlp"))?.unwrap_or(0);
        assert_eq!(breaker, 0, "{region}'s breaker is not closed: the canary's failures reached it");
    }

    // It stays back with the canary healthy again, until the config changes.
    tokio::task::block_in_place(|| {
        ["eu-west", "eu-central", "us-east"].iter().try_for_each(|r| mesh.set_version_fault(r, "v2", Fault::default()))
    })?;
    let mut client = connect(mesh.listener()).await?;
    for i in 0..200 {
        let r = call(&mut client, &CallSpec::new(MODEL, 16), i).await;
        assert_eq!((r.code, r.model_version.as_deref()), (0, Some("1")), "{r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_through_every_step() -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&rollout(&[(10.0, 1_000), (50.0, 1_000)])?))?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::ZERO).await?;
    let mut weights = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while phase(&mesh).await? != Some(1) {
        let w = tokio::task::block_in_place(|| mesh.caller().stat("wasmcustom.meridian.canary.mlp.weight_pct"))?;
        if weights.last() != Some(&w) {
            weights.push(w);
        }
        anyhow::ensure!(Instant::now() < deadline, "not promoted within 20 s; weights seen {weights:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let promoted = Instant::now();
    until_records(&load, Duration::from_secs(10), "200 calls after the promotion", |r| {
        r.iter().filter(|r| r.sent > promoted + Duration::from_millis(200)).count() >= 200
    })
    .await?;
    let records = load.stop().await;
    eprintln!("weights seen {weights:?}, then promoted");
    assert!(weights.contains(&Some(10)) && weights.contains(&Some(50)), "every step: {weights:?}");
    assert!(records.iter().all(|r| r.code == 0));
    let after: Vec<&Record> = records.iter().filter(|r| r.sent > promoted + Duration::from_millis(200)).collect();
    assert!(after.iter().all(|r| r.model_version.as_deref() == Some("2")), "promoted: every call on the canary");
    assert_eq!(mesh.caller().stat("wasmcustom.meridian.canary.mlp.weight_pct")?, Some(100));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_calls_reach_the_other_version_and_their_answers_are_dropped() -> anyhow::Result<()> {
    // Every call to the MLP mirrored to v2 in eu-west; no canary split.
    let mut spec = MeshSpec::test_policy("canary")?;
    let mlp = spec.policy.models.get_mut(MODEL).ok_or_else(|| anyhow::anyhow!("the policy has the MLP"))?;
    mlp.canary = None;
    mlp.shadow = Some(Shadow { version: "v2".into(), percent: 100 });
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let mut client = connect(mesh.listener()).await?;
    for i in 0..300 {
        let r = call(&mut client, &CallSpec::new(MODEL, 16), i).await;
        assert_eq!((r.code, r.model_version.as_deref()), (0, Some("1")), "callers get stable's answers: {r:?}");
    }
    // Mirrored calls are sent alongside; wait until all 300 have answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shadowed = tokio::task::block_in_place(|| mesh.canary_inference_count("eu-west"))?;
        let counted = tokio::task::block_in_place(|| mesh.caller().stat("cluster.meridian-shadow.upstream_rq_200"))?;
        if shadowed >= 300 && counted >= Some(300) {
            assert_eq!((shadowed, counted), (300, Some(300)), "one mirror per call, counted by Envoy");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "shadow calls: {shadowed} answered, {counted:?} counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for region in ["eu-central", "us-east"] {
        let n = tokio::task::block_in_place(|| mesh.canary_inference_count(region))?;
        assert_eq!(n, 0, "{region}'s v2 saw no shadow calls");
    }
    assert_eq!(tokio::task::block_in_place(|| mesh.inference_count("eu-west"))?, 300, "stable served every call once");
    Ok(())
}

//! Canary splitting through the real mesh: the filter picks `v1` (stable)
//! or `v2` (canary) for the MLP, each region's gateway routes `v2` to a
//! sidecar serving the canary model (answering `x-meridian-model-version: 2`),
//! everything else to the stable sidecars (version 1).

use meridian_filters_core::canary::{bucket, on_canary};
use meridian_filters_core::config::{CanaryConfig, ModelPolicy, StickyKey};
use meridian_integration::load::{call, connect, CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use meridian_integration::wait::until_records;
use std::time::{Duration, Instant};

fn spec(weight: f64, sticky: Option<StickyKey>) -> MeshSpec {
    let mut spec = MeshSpec::three_regions();
    spec.canary_version = Some("v2".into());
    let canary =
        CanaryConfig { stable: "v1".into(), canary: "v2".into(), weight, sticky, allow_override: false, regions: None };
    spec.filter.models.insert(MODEL.into(), ModelPolicy { canary: Some(canary), ..Default::default() });
    spec
}

fn served_by_canary(r: &Record) -> bool {
    r.model_version.as_deref() == Some("2")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_split_within_the_binomial_interval() -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec(10.0, None)))?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 8, Duration::ZERO).await?;
    until_records(&load, Duration::from_secs(120), "10,000 calls", |r| r.len() >= 10_000).await?;
    let records = load.stop().await;
    let failed: Vec<&Record> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} failed, first: {:?}", failed.len(), failed.first());
    assert!(
        records.iter().all(|r| matches!(r.model_version.as_deref(), Some("1" | "2"))),
        "every call names its version"
    );

    // The first 10,000: canary share 10 % within the 99.9 % interval (±3.29 σ).
    let canary = records[..10_000].iter().filter(|r| served_by_canary(r)).count() as f64;
    let sigma = (10_000.0f64 * 0.1 * 0.9).sqrt();
    eprintln!("{canary} of the first 10,000 calls on the canary ({} calls in all)", records.len());
    assert!(
        (canary - 1_000.0).abs() <= 3.29 * sigma,
        "{canary} of 10,000 calls on the canary (1,000 ± {:.0})",
        3.29 * sigma
    );

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

/// One call per caller on a fresh connection (a replaced listener serves
/// new connections), each caller's identity its sticky key.
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
    let mut spec = spec(10.0, Some(StickyKey::Caller));
    spec.dynamic_listener = true;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let callers: Vec<String> = (0..200).map(|i| format!("caller-{i}")).collect();
    let mut seen: Vec<Vec<bool>> = vec![versions(mesh.listener(), &callers).await?];
    for weight in [20.0, 30.0, 40.0] {
        let mut filter = mesh.filter().clone();
        filter.name = format!("w{weight}");
        if let Some(c) = filter.models.get_mut(MODEL).and_then(|m| m.canary.as_mut()) {
            c.weight = weight;
        }
        tokio::task::block_in_place(|| mesh.push_plugin_config(&serde_json::to_string(&filter)?))?;
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

//! A healthy three-region mesh: every call stays in the callers' region,
//! and one prober — not one per worker thread — checks each region's health.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_mesh_keeps_all_traffic_local() -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&MeshSpec::three_regions()?))?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::ZERO).await?;
    while load.count() < 400 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let records = load.stop().await;
    let failed: Vec<_> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} failed, first: {:?}", failed.len(), failed.first());
    let elsewhere: Vec<_> = records.iter().filter(|r| r.region.as_deref() != Some("eu-west")).collect();
    assert!(
        elsewhere.is_empty(),
        "{} of {} served outside eu-west: {:?}",
        elsewhere.len(),
        records.len(),
        elsewhere.first()
    );
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        assert_eq!(mesh.inference_count("eu-central")?, 0);
        assert_eq!(mesh.inference_count("us-east")?, 0);
        assert!(mesh.inference_count("eu-west")? >= records.len() as u64);
        Ok(())
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prober_checks_each_region_whatever_the_worker_count() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.caller_concurrency = 3;
    let interval = Duration::from_millis(spec.policy.resilience.health.interval.as_millis());
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    // Calls on several connections, so every worker serves (only serving
    // workers compete for the prober lease).
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 6, Duration::from_millis(5)).await?;
    while load.count() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // us-east gets no calls: every request its gateway sees is a probe.
    let probes = |mesh: &Mesh| -> anyhow::Result<u64> {
        Ok(mesh.gateway("us-east")?.stat("http.gateway_us_east.downstream_rq_total")?.unwrap_or(0))
    };
    let (before, start) = (tokio::task::block_in_place(|| probes(&mesh))?, Instant::now());
    while start.elapsed() < 20 * interval {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, elapsed) = (tokio::task::block_in_place(|| probes(&mesh))?, start.elapsed());
    load.stop().await;
    let expected = elapsed.as_secs_f64() / interval.as_secs_f64();
    let seen = (after - before) as f64;
    assert!(seen <= expected + 3.0, "{seen} probes in {elapsed:?}: more than one prober (expected ~{expected:.0})");
    assert!(seen >= expected * 0.6, "{seen} probes in {elapsed:?}: the prober stalls (expected ~{expected:.0})");
    assert_eq!(tokio::task::block_in_place(|| mesh.inference_count("us-east"))?, 0);
    Ok(())
}

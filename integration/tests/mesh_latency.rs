//! Latency: 200 ms injected at the callers' region gateway moves traffic to
//! the faster region — only after the dwell time — and it stays there.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_integration::wait::{calls_after, until_records};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_local_region_loses_its_traffic_after_the_dwell_time() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.policy.routing.dwell = meridian_mesh_config::policy::Duration::from_secs(1);
    let dwell = Duration::from_millis(spec.policy.routing.dwell.as_millis());
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let eu = CallSpec { residency: Some("eu".into()), ..CallSpec::new(MODEL, 16) };
    let load = Load::start(mesh.listener(), eu, 8, Duration::from_millis(2)).await?;
    calls_after(&load, Instant::now(), 300).await?;

    let slowed = Instant::now();
    tokio::task::block_in_place(|| {
        mesh.set_fault("eu-west", Fault { delay_percent: 100, delay_ms: 200, ..Fault::default() })
    })?;
    until_records(&load, Duration::from_secs(10), "a call served by eu-central", |r| {
        r.iter().any(|r| r.sent > slowed && r.region.as_deref() == Some("eu-central"))
    })
    .await?;
    let records = load.records();
    let moved = records
        .iter()
        .filter(|r| r.sent > slowed && r.region.as_deref() == Some("eu-central"))
        .map(|r| r.sent)
        .min()
        .unwrap_or(slowed);
    assert!(moved - slowed >= dwell, "moved {:?} after the slowdown: before the dwell time", moved - slowed);
    assert!(moved - slowed <= dwell + Duration::from_secs(2), "moved only {:?} after the slowdown", moved - slowed);
    let settled = moved + Duration::from_millis(300);
    calls_after(&load, settled, 1_000).await?;
    let records = load.stop().await;
    let back: Vec<_> =
        records.iter().filter(|r| r.sent > settled && r.region.as_deref() != Some("eu-central")).collect();
    assert!(back.is_empty(), "{} calls went back to the slow region: {:?}", back.len(), back.first());
    assert!(records.iter().all(|r| r.code == 0), "no call failed");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let to_central = mesh.caller().stat("wasmcustom.meridian.decision.eu-central")?.unwrap_or(0);
        assert!(to_central >= 1_000, "Envoy stats count the decisions: {to_central}");
        Ok(())
    })?;
    eprintln!(
        "latency: traffic moved {:?} after 200 ms was injected (dwell {dwell:?}), none came back",
        moved - slowed
    );
    Ok(())
}

//! Failover: the callers' region loses its sidecars under steady load. No
//! idempotent call fails, all traffic leaves within 1 s; when the sidecars
//! come back the breaker half-opens, traffic returns after the dwell time,
//! and stays (no flapping).

use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use meridian_integration::wait::until_records as wait_until;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_local_region_loses_no_call_and_traffic_returns_without_flapping() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.policy.routing.dwell = meridian_mesh_config::policy::Duration::from_secs(1);
    let dwell = Duration::from_millis(spec.policy.routing.dwell.as_millis());
    let mut mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 4, Duration::from_millis(2)).await?;
    wait_until(&load, Duration::from_secs(10), "200 calls", |r| r.len() >= 200).await?;

    tokio::task::block_in_place(|| mesh.kill_sidecars("eu-west"))?;
    // From here on eu-west's sidecar is dead (killed and reaped).
    let killed = Instant::now();
    let after_kill = |r: &Record| r.sent > killed + Duration::from_millis(1_500);
    wait_until(&load, Duration::from_secs(10), "200 calls after the kill", |r| {
        r.iter().filter(|r| after_kill(r)).count() >= 200
    })
    .await?;
    let records = load.records();
    let last_local = records
        .iter()
        .filter(|r| r.sent > killed && r.primary.as_deref() == Some("eu-west"))
        .map(|r| r.sent - killed)
        .max()
        .unwrap_or_default();
    assert!(last_local <= Duration::from_secs(1), "calls still aimed at eu-west {last_local:?} after the kill");
    let stale: Vec<&Record> =
        records.iter().filter(|r| r.sent > killed && r.region.as_deref() == Some("eu-west")).collect();
    if !stale.is_empty() {
        let stats = tokio::task::block_in_place(|| mesh.caller().stats(""))?;
        let stats: Vec<_> =
            stats.into_iter().filter(|(k, v)| *v > 0 && (k.contains("retry") || k.starts_with("wasmcustom"))).collect();
        panic!("{} calls answered by eu-west after the kill: {:?}\n{stats:?}", stale.len(), stale.first());
    }
    let after: Vec<&Record> = records.iter().filter(|r| after_kill(r)).collect();
    assert!(after.iter().all(|r| r.region.as_deref() == Some("eu-central")), "failover goes to the next eu region");

    let restarted = Instant::now();
    tokio::task::block_in_place(|| mesh.restart_sidecars("eu-west"))?;
    let back = wait_until(&load, Duration::from_secs(20), "a call served by eu-west again", |r| {
        r.iter().any(|r| r.sent > restarted && r.region.as_deref() == Some("eu-west"))
    })
    .await;
    if back.is_err() {
        let stats = tokio::task::block_in_place(|| mesh.caller().stats("wasmcustom"))?;
        let records = load.records();
        panic!("{back:?}\nstats: {stats:?}\nlast: {:?}", records.last());
    }
    let back = load
        .records()
        .iter()
        .filter(|r| r.sent > restarted && r.region.as_deref() == Some("eu-west"))
        .map(|r| r.sent)
        .min()
        .unwrap_or(restarted);
    assert!(back - restarted >= dwell, "traffic returned after {:?}, before the dwell time", back - restarted);
    let settled = back + Duration::from_millis(300);
    wait_until(&load, Duration::from_secs(10), "2 s after the return", |r| {
        r.iter().any(|r| r.sent > settled + Duration::from_secs(2))
    })
    .await?;
    let records = load.stop().await;
    let flapped: Vec<&Record> =
        records.iter().filter(|r| r.sent > settled && r.region.as_deref() != Some("eu-west")).collect();
    assert!(flapped.is_empty(), "{} calls left eu-west after it came back: {:?}", flapped.len(), flapped.first());
    let failed: Vec<&Record> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} of {} calls failed, first: {:?}", failed.len(), records.len(), failed.first());
    eprintln!(
        "failover: {} calls, 0 failed; last call aimed at eu-west {:?} after the kill; back {:?} after the restart",
        records.len(),
        last_local,
        back - restarted
    );
    Ok(())
}

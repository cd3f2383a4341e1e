//! Residency under chaos: calls bound to `eu` never reach us-east — over
//! more than 10,000 calls while eu regions fail, slow down and die — and
//! with every eu region down they fail fast with UNAVAILABLE and the reason.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_integration::wait::{calls_after, until_records};
use std::time::{Duration, Instant};

/// One chaos step, applied to the running mesh.
type ChaosStep = dyn Fn(&mut Mesh) -> anyhow::Result<()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eu_calls_never_reach_us_east_even_with_every_eu_region_down() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.policy.routing.dwell = meridian_mesh_config::policy::Duration::from_millis(500);
    let mut mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let eu = CallSpec { residency: Some("eu".into()), ..CallSpec::new(MODEL, 16) };
    let load = Load::start(mesh.listener(), eu, 8, Duration::ZERO).await?;

    // Chaos, one step after another, each under load.
    let steps: [(&str, &ChaosStep); 5] = [
        ("eu-west aborts half its calls", &|m| {
            m.set_fault("eu-west", Fault { abort_percent: 50, abort_grpc_status: 14, ..Fault::default() })
        }),
        ("eu-central slows by 20 ms", &|m| {
            m.set_fault("eu-central", Fault { delay_percent: 100, delay_ms: 20, ..Fault::default() })
        }),
        ("eu-west dies", &|m| m.kill_sidecars("eu-west")),
        ("eu-central aborts every call", &|m| {
            m.set_fault("eu-central", Fault { abort_percent: 100, abort_grpc_status: 14, ..Fault::default() })
        }),
        ("eu-central dies too", &|m| m.kill_sidecars("eu-central")),
    ];
    for (what, step) in steps {
        tokio::task::block_in_place(|| step(&mut mesh)).map_err(|e| e.context(what))?;
        calls_after(&load, Instant::now(), 1_500).await?;
    }
    let all_down = Instant::now();
    until_records(&load, Duration::from_secs(10), "fail-fast refusals with every eu region down", |r| {
        r.iter().filter(|r| r.sent > all_down && r.reason.is_some()).count() >= 500
    })
    .await?;
    until_records(&load, Duration::from_secs(60), "10,000 calls", |r| r.len() >= 10_000).await?;
    let records = load.stop().await;

    let abroad: Vec<_> = records.iter().filter(|r| r.region.as_deref() == Some("us-east")).collect();
    assert!(abroad.is_empty(), "{} eu calls served by us-east: {:?}", abroad.len(), abroad.first());
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        assert_eq!(mesh.inference_count("us-east")?, 0, "us-east's sidecar saw no inference call");
        let rejected = mesh.caller().stat("wasmcustom.meridian.residency_rejected")?.unwrap_or(0);
        assert!(rejected >= 500, "residency rejections counted in Envoy stats: {rejected}");
        Ok(())
    })?;
    let refused: Vec<_> = records.iter().filter(|r| r.reason.is_some()).collect();
    for r in &refused {
        assert_eq!(r.code, tonic::Code::Unavailable as i32, "{r:?}");
        assert_eq!(r.reason.as_deref(), Some("no-available-region"));
        assert!(r.message.contains("residency zone `eu`"), "{}", r.message);
    }
    eprintln!(
        "residency: {} eu calls under chaos, 0 reached us-east; {} refused fast (no-available-region), {} ok",
        records.len(),
        refused.len(),
        records.iter().filter(|r| r.code == 0).count()
    );
    Ok(())
}

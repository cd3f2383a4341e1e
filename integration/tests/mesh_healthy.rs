//! A healthy three-region mesh: every call stays in the callers' region,
//! and the filter's stats say so.

use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_mesh_keeps_all_traffic_local() -> anyhow::Result<()> {
    let mesh = tokio::task::block_in_place(|| Mesh::start(&MeshSpec::three_regions()))?;
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

//! A model marked not idempotent is never retried once its request reached
//! a sidecar, but is when no sidecar was reached; an idempotent one is
//! retried in the next region either way.

use meridian_integration::load::{call, connect, CallSpec, Record};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_mesh_config::policy::spec::Model;

async fn calls(mesh: &Mesh, model: &str, n: usize) -> anyhow::Result<Vec<Record>> {
    let mut client = connect(mesh.listener()).await?;
    // `x-meridian-model` names the policy; the body still calls the served `mlp`.
    let spec = CallSpec { policy_model: Some(model.into()), ..CallSpec::new(MODEL, 16) };
    let mut out = Vec::new();
    for i in 0..n {
        out.push(call(&mut client, &spec, i as u32).await);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_idempotent_calls_are_retried_only_when_no_sidecar_was_reached() -> anyhow::Result<()> {
    // Keep eu-west first whatever fails: this test is about retries only.
    let mut spec = MeshSpec::three_regions()?.with_breakers_held_closed();
    spec.policy.resilience.health.unhealthy_threshold = 1_000_000;
    // …and the budget out of the way: every failing first attempt may retry.
    spec.policy.resilience.budget.ratio = 1.0;
    spec.policy.models.insert("charge".into(), Model { idempotent: Some(false), ..Model::default() });
    let mut mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let retries = |mesh: &Mesh| mesh.caller().stat_sum("cluster.meridian~", ".upstream_rq_retry");

    // eu-west's sidecars answer UNAVAILABLE (the call reached the region).
    tokio::task::block_in_place(|| {
        mesh.set_fault("eu-west", Fault { abort_percent: 100, abort_grpc_status: 14, ..Fault::default() })
    })?;
    let before = tokio::task::block_in_place(|| retries(&mesh))?;
    let unsafe_calls = calls(&mesh, "charge", 20).await?;
    assert!(unsafe_calls.iter().all(|r| r.code == tonic::Code::Unavailable as i32), "{:?}", unsafe_calls.first());
    assert_eq!(tokio::task::block_in_place(|| retries(&mesh))?, before, "no retry of a call that may have run");
    let safe_calls = calls(&mesh, MODEL, 20).await?;
    let bad = safe_calls.iter().find(|r| r.code != 0 || r.region.as_deref() != Some("eu-central"));
    assert!(bad.is_none(), "idempotent calls are retried in eu-central: {bad:?}");
    assert!(tokio::task::block_in_place(|| retries(&mesh))? >= before + 20, "each idempotent call retried once");

    // eu-west's sidecar is gone: the gateway reaches none and says so.
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        mesh.set_fault("eu-west", Fault::default())?;
        mesh.kill_sidecars("eu-west")
    })?;
    let unreached = calls(&mesh, "charge", 20).await?;
    assert!(
        unreached.iter().all(|r| r.code == 0 && r.region.as_deref() == Some("eu-central")),
        "an unreached call is retried even when not idempotent: {:?}",
        unreached.iter().find(|r| r.code != 0)
    );
    Ok(())
}

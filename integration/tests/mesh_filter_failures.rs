//! The filter's own failures: a bad configuration pushed at run time is
//! rejected with a log naming the field while the old one keeps serving; a
//! filter panic is recovered by `failure_policy: FAIL_RELOAD`.

use meridian_integration::load::{call, connect, CallSpec, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use std::time::{Duration, Instant};

async fn calls(addr: std::net::SocketAddr, spec: &CallSpec, n: usize) -> anyhow::Result<Vec<Record>> {
    // A fresh connection: a replaced listener serves new connections.
    let mut client = connect(addr).await?;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(call(&mut client, spec, i as u32).await);
    }
    Ok(out)
}

fn poll(within: Duration, what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done()? {
        anyhow::ensure!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_rejected_and_the_old_one_keeps_serving() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.dynamic_listener = true;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let addr = mesh.listener();
    let spec_call = CallSpec::new(MODEL, 16);
    assert!(calls(addr, &spec_call, 20).await?.iter().all(|r| r.code == 0 && r.filter.as_deref() == Some("meridian")));

    let mut bad = serde_json::to_value(mesh.filter())?;
    bad["routing"]["dwel_ms"] = serde_json::json!(5);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        mesh.push_plugin_config(&bad.to_string())?;
        let caller = mesh.caller();
        poll(Duration::from_secs(10), "the bad config rejected", || {
            Ok(caller.stat("listener_manager.lds.update_rejected")?.unwrap_or(0) >= 1)
        })?;
        assert!(
            caller.log().contains("unknown field `dwel_ms`"),
            "the filter's log names the field:\n{}",
            caller.log()
        );
        Ok(())
    })?;
    let after = calls(addr, &spec_call, 50).await?;
    assert!(after.iter().all(|r| r.code == 0 && r.filter.as_deref() == Some("meridian")), "{:?}", after.first());

    // A good update (the policy renamed) applies, without a restart.
    let mut good = mesh.policy().clone();
    good.metadata.name = "meridian-v2".into();
    tokio::task::block_in_place(|| mesh.push_policy(&good))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = calls(addr, &spec_call, 1).await?;
        if r[0].filter.as_deref() == Some("meridian-v2") {
            assert_eq!(r[0].code, 0);
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the good update never applied: {:?}", r[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_panic_is_recovered_by_fail_reload() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    spec.policy.filter.panic_header = true;
    spec.caller_concurrency = 1;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let addr = mesh.listener();
    let normal = CallSpec::new(MODEL, 16);
    assert!(calls(addr, &normal, 10).await?.iter().all(|r| r.code == 0));

    let mut client = connect(addr).await?;
    let mut panic_call = tonic::Request::new(meridian_proto::inference::ModelInferRequest::default());
    panic_call.metadata_mut().insert("x-meridian-debug-panic", "1".parse()?);
    let status = client.model_infer(panic_call).await.expect_err("the filter panicked on this call");
    assert_ne!(status.code(), tonic::Code::Ok);

    // FAIL_RELOAD brings a fresh VM: calls succeed again, routed by the filter.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = calls(addr, &normal, 1).await?;
        if r[0].code == 0 && r[0].filter.as_deref() == Some("meridian") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no recovery after the panic: {:?}", r[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = calls(addr, &normal, 100).await?;
    assert!(after.iter().all(|r| r.code == 0 && r.region.as_deref() == Some("eu-west")), "{:?}", after.first());
    let log = mesh.caller().log();
    assert!(log.contains("panicking as asked"), "the panic is in Envoy's log:\n{log}");
    Ok(())
}

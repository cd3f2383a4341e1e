//! Live configuration through Meridian's xDS server, in real Envoy: every
//! Envoy of the mesh bootstraps from the server and takes its listeners,
//! routes, clusters and the filter's configuration (ECDS) from it.
//!
//! - A canary weight change and a residency change pushed under steady
//!   load: no call fails, every call sent a second after the push behaves
//!   the new way, the Envoy is the same process (same pid, hot-restart
//!   epoch unchanged), and no listener is modified or drained — only ECDS
//!   moves.
//! - A policy with an error is refused at the server (status shows the
//!   errors) and no proxy changes; a configuration Envoy refuses (a module
//!   that is not Wasm) is NACKed, status shows Envoy's reason, and traffic
//!   keeps the last good configuration until a good one comes.
//! - With the server down the proxies keep serving their last
//!   configuration; a change made meanwhile reaches them when it returns.

use meridian_filters_core::canary::{bucket, on_canary};
use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use meridian_integration::wait::until_records;
use meridian_mesh_config::policy::spec::{Caller, Sticky};
use meridian_proto::xds::meridian::xds::v1::StatusResponse;
use std::time::{Duration, Instant};

/// Polls the server's status until `done` holds (or fails after `within`).
async fn until_status(
    mesh: &Mesh,
    within: Duration,
    what: &str,
    done: impl Fn(&StatusResponse) -> bool,
) -> anyhow::Result<StatusResponse> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(status) = mesh.xds_status().await {
            if done(&status) {
                return Ok(status);
            }
            anyhow::ensure!(Instant::now() < deadline, "{what} not within {within:?}: {status:#?}");
        } else {
            anyhow::ensure!(Instant::now() < deadline, "{what} not within {within:?}: the server does not answer");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_in_sync(proxies: usize) -> impl Fn(&StatusResponse) -> bool {
    move |s: &StatusResponse| s.proxies.len() == proxies && s.proxies.iter().all(|p| p.in_sync)
}

fn ecds_version(status: &StatusResponse) -> Option<String> {
    status
        .proxies
        .iter()
        .find(|p| p.role == "caller-proxy")
        .and_then(|p| p.resources.iter().find(|r| r.type_url.ends_with("TypedExtensionConfig")))
        .map(|r| r.acked_version.clone())
}

fn stat(mesh: &Mesh, name: &str) -> anyhow::Result<u64> {
    Ok(tokio::task::block_in_place(|| mesh.caller().stat(name))?.unwrap_or(0))
}

/// A sticky key off the canary at 10 % and on it at 50 %.
fn moving_key() -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|k| !on_canary(bucket(MODEL, k), 10.0) && on_canary(bucket(MODEL, k), 50.0))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_and_residency_changes_reach_every_worker_within_a_second_with_no_failed_call() -> anyhow::Result<()> {
    let mut spec = MeshSpec::test_policy("canary")?;
    let mlp = spec.policy.models.get_mut(MODEL).ok_or_else(|| anyhow::anyhow!("the MLP"))?;
    if let Some(canary) = mlp.canary.as_mut() {
        canary.sticky = Some(Sticky::Caller);
    }
    let key = moving_key();
    spec.policy.callers.insert(key.clone(), Caller { region: Some("eu-west".into()), ..Caller::default() });
    spec.policy.callers.insert("app".into(), Caller { region: Some("us-east".into()), ..Caller::default() });
    spec.policy.caller_proxy.trust_caller_region_header = true;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    until_status(&mesh, Duration::from_secs(10), "every proxy in sync", all_in_sync(4)).await?;

    // Steady load: the sticky caller (on v1 at 10 %), and `app` calling from us-east.
    let keyed =
        CallSpec { caller: Some(key.clone()), caller_region: Some("eu-west".into()), ..CallSpec::new(MODEL, 16) };
    let app =
        CallSpec { caller: Some("app".into()), caller_region: Some("us-east".into()), ..CallSpec::new(MODEL, 16) };
    let keyed_load = Load::start(mesh.listener(), keyed, 4, Duration::ZERO).await?;
    let app_load = Load::start(mesh.listener(), app, 4, Duration::ZERO).await?;
    until_records(&app_load, Duration::from_secs(20), "300 calls from us-east", |r| r.len() >= 300).await?;
    until_records(&keyed_load, Duration::from_secs(20), "300 sticky calls", |r| r.len() >= 300).await?;
    let before: Vec<Record> = keyed_load.records();
    assert!(before.iter().all(|r| r.model_version.as_deref() == Some("1")), "{key} starts on v1");
    assert!(app_load.records().iter().all(|r| r.region.as_deref() == Some("us-east")), "app starts local");

    let pid = mesh.caller().pid();
    let epoch = stat(&mesh, "server.hot_restart_epoch")?;
    let modified = stat(&mesh, "listener_manager.listener_modified")?;
    let lds = stat(&mesh, "listener_manager.lds.update_success")?;
    let ecds = stat(&mesh, "extension_config_discovery.http_filter.meridian.update_success")?;

    // The canary to 50 % and `app` bound to eu, in one policy change.
    let mut policy = mesh.policy().clone();
    if let Some(c) = policy.models.get_mut(MODEL).and_then(|m| m.canary.as_mut()) {
        c.weight = 50.0;
    }
    if let Some(app) = policy.callers.get_mut("app") {
        app.residency = Some("eu".into());
    }
    tokio::task::block_in_place(|| mesh.push_policy(&policy))?;
    let pushed = Instant::now();
    let status = until_status(&mesh, Duration::from_secs(10), "generation 2 in sync", |s| {
        s.policy_version == 2 && all_in_sync(4)(s)
    })
    .await?;
    let settled = pushed + Duration::from_secs(1);
    until_records(&app_load, Duration::from_secs(20), "500 calls after the second", |r| {
        r.iter().filter(|r| r.sent > settled).count() >= 500
    })
    .await?;
    until_records(&keyed_load, Duration::from_secs(20), "500 sticky calls after the second", |r| {
        r.iter().filter(|r| r.sent > settled).count() >= 500
    })
    .await?;
    let keyed_records = keyed_load.stop().await;
    let app_records = app_load.stop().await;

    let failed: Vec<&Record> = keyed_records.iter().chain(&app_records).filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} calls failed, first: {:?}", failed.len(), failed.first());
    let stale_keyed =
        keyed_records.iter().filter(|r| r.sent > settled && r.model_version.as_deref() != Some("2")).count();
    let stale_app = app_records.iter().filter(|r| r.sent > settled && r.region.as_deref() == Some("us-east")).count();
    assert_eq!(stale_keyed, 0, "{key} on v2 a second after the push");
    assert_eq!(stale_app, 0, "app's calls stay in eu a second after the push");
    let last_old = keyed_records
        .iter()
        .filter(|r| r.model_version.as_deref() == Some("1"))
        .chain(app_records.iter().filter(|r| r.region.as_deref() == Some("us-east")))
        .map(|r| r.sent)
        .max()
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(pushed));

    assert_eq!(mesh.caller().pid(), pid, "the same Envoy process");
    assert_eq!(stat(&mesh, "server.hot_restart_epoch")?, epoch, "no hot restart");
    assert_eq!(stat(&mesh, "listener_manager.listener_modified")?, modified, "no listener modified");
    assert_eq!(stat(&mesh, "listener_manager.lds.update_success")?, lds, "no LDS update for an ECDS-only change");
    assert_eq!(stat(&mesh, "listener_manager.total_listeners_draining")?, 0, "no listener draining");
    assert!(stat(&mesh, "extension_config_discovery.http_filter.meridian.update_success")? > ecds, "ECDS applied it");
    assert_eq!(ecds_version(&status).as_deref(), Some("2"));
    eprintln!(
        "xDS: weight 10 → 50 % and app bound to eu pushed under load: {} calls, 0 failed; the last call with the old \
         behaviour left {:?} after the push; same pid, no listener modified or drained",
        keyed_records.len() + app_records.len(),
        last_old
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_policy_and_a_nacked_configuration_leave_every_proxy_on_the_last_good_one() -> anyhow::Result<()> {
    let spec = MeshSpec::three_regions()?;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    until_status(&mesh, Duration::from_secs(10), "every proxy in sync", all_in_sync(4)).await?;
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 2, Duration::from_millis(2)).await?;

    // A policy with an error: refused at the server; nothing moves.
    let text = std::fs::read_to_string(mesh.policy_file())?;
    let broken = text.replacen("\"maxAttempts\": 3", "\"maxAttempts\": 9", 1);
    anyhow::ensure!(broken != text, "the policy file names maxAttempts");
    tokio::task::block_in_place(|| mesh.write_policy_file(&broken))?;
    let status = until_status(&mesh, Duration::from_secs(10), "the refusal", |s| s.refused.is_some()).await?;
    let errors = status.refused.as_ref().map(|r| r.errors.join("\n")).unwrap_or_default();
    assert!(errors.contains("resilience.retry.maxAttempts: 9 is above 5"), "{errors}");
    assert_eq!(status.policy_version, 1, "the proxies keep generation 1");
    assert!(all_in_sync(4)(&status), "{status:#?}");

    // A configuration Envoy refuses: the module is not Wasm.
    let dir = tempfile::tempdir()?;
    let bad_module = dir.path().join("broken.wasm");
    std::fs::write(&bad_module, "this is not a WebAssembly module")?;
    let mut policy = mesh.policy().clone();
    policy.metadata.name = "meridian-v2".into();
    policy.filter.url = Some(format!("file://{}", bad_module.display()));
    tokio::task::block_in_place(|| mesh.push_policy(&policy))?;
    let status = until_status(&mesh, Duration::from_secs(10), "the NACK", |s| {
        s.policy_version == 2 && s.proxies.iter().any(|p| p.resources.iter().any(|r| !r.nack_error.is_empty()))
    })
    .await?;
    let caller = status.proxies.iter().find(|p| p.role == "caller-proxy").ok_or_else(|| anyhow::anyhow!("caller"))?;
    let nack = caller.resources.iter().find(|r| !r.nack_error.is_empty()).ok_or_else(|| anyhow::anyhow!("nack"))?;
    assert!(nack.type_url.ends_with("TypedExtensionConfig"), "{nack:?}");
    assert!(nack.nack_error.contains("Wasm"), "Envoy's reason: {}", nack.nack_error);
    assert_eq!((nack.nacked_version.as_str(), nack.acked_version.as_str()), ("2", "1"));
    assert!(!caller.in_sync, "a NACKed proxy is not up to date");
    assert!(status.proxies.iter().filter(|p| p.role == "region-gateway").all(|p| p.in_sync));
    let since = Instant::now();
    until_records(&load, Duration::from_secs(10), "100 calls on the old configuration", |r| {
        r.iter().filter(|r| r.sent > since).count() >= 100
    })
    .await?;
    let on_old = load.records();
    assert!(
        on_old.iter().filter(|r| r.sent > since).all(|r| r.code == 0 && r.filter.as_deref() == Some("meridian")),
        "traffic keeps the last good filter configuration"
    );

    // A good one again: every proxy takes it.
    policy.metadata.name = "meridian-v3".into();
    policy.filter.url = None;
    tokio::task::block_in_place(|| mesh.push_policy(&policy))?;
    until_status(&mesh, Duration::from_secs(10), "generation 3 in sync", |s| {
        s.policy_version == 3 && all_in_sync(4)(s)
    })
    .await?;
    let fixed = Instant::now();
    until_records(&load, Duration::from_secs(10), "calls on the new configuration", |r| {
        r.iter().any(|r| r.sent > fixed && r.filter.as_deref() == Some("meridian-v3"))
    })
    .await?;
    let records = load.stop().await;
    let failed: Vec<&Record> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed.first());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxies_keep_serving_while_the_server_is_down_and_resync_when_it_returns() -> anyhow::Result<()> {
    let spec = MeshSpec::three_regions()?;
    let mut mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    until_status(&mesh, Duration::from_secs(10), "every proxy in sync", all_in_sync(4)).await?;
    let pid = mesh.caller().pid();
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 2, Duration::from_millis(2)).await?;

    mesh.stop_xds();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stat(&mesh, "control_plane.connected_state")? != 0 {
        anyhow::ensure!(Instant::now() < deadline, "the caller Envoy still reports its control plane connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = Instant::now();
    until_records(&load, Duration::from_secs(10), "200 calls with the server down", |r| {
        r.iter().filter(|r| r.sent > down).count() >= 200
    })
    .await?;
    // Changed while the server is down…
    let mut policy = mesh.policy().clone();
    policy.metadata.name = "meridian-next".into();
    tokio::task::block_in_place(|| mesh.push_policy(&policy))?;
    // …and applied once it is back.
    tokio::task::block_in_place(|| mesh.restart_xds())?;
    until_status(&mesh, Duration::from_secs(30), "every proxy back and in sync", all_in_sync(4)).await?;
    let back = Instant::now();
    until_records(&load, Duration::from_secs(10), "calls under the change", |r| {
        r.iter().any(|r| r.sent > back && r.filter.as_deref() == Some("meridian-next"))
    })
    .await?;
    let records = load.stop().await;
    let failed: Vec<&Record> = records.iter().filter(|r| r.code != 0).collect();
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed.first());
    assert!(records.iter().filter(|r| r.sent > down && r.sent < back).count() >= 200);
    assert_eq!(mesh.caller().pid(), pid, "the same Envoy process throughout");
    Ok(())
}

//! The local mesh autoscales for real: a burst of calls bound to us-east
//! raises us-east's replicas within its sync period and the p99 recovers;
//! when the burst ends the replicas drain back after the scale-down
//! stabilisation window with no failed call; the other regions keep their
//! one replica — eu-central's sidecars are even paused (hung) meanwhile,
//! which stalls nothing but eu-central's own autoscaler.
//!
//! Each replica's capacity is made the bottleneck without spending CPU:
//! every batch takes at least 20 ms (`execute_delay_us`) and holds at most
//! 4 rows, so one replica serves ~200 calls/s.

use meridian_integration::autoscaler::AutoscalingOptions;
use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, Observability, MODEL};
use meridian_integration::prometheus::{parse_text, sum_of};
use meridian_integration::wait::calls_after;
use meridian_mesh_config::policy::autoscaling::Autoscaling;
use meridian_mesh_config::policy::spec::BatchingOverride;
use std::time::{Duration, Instant};

fn quantile(records: &[&Record], q: usize) -> Duration {
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort();
    latencies.get((latencies.len() * q).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default()
}

fn p99(records: &[&Record]) -> Duration {
    quantile(records, 99)
}

/// Polls `done` every 50 ms until it holds; fails naming `what`.
async fn until(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if tokio::task::block_in_place(&mut done)? {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_its_region_up_and_the_replicas_drain_back_without_failed_calls() -> anyhow::Result<()> {
    let mut spec = MeshSpec::three_regions()?;
    // (Through JSON: serde_yaml reads enums as YAML tags.)
    let scaling: Autoscaling = serde_json::from_value(serde_yaml::from_str(
        "minReplicas: 1
maxReplicas: 4
target: {inFlightPerReplica: 8}
syncPeriod: 1s
scaleDown:
  stabilizationWindow: 4s
  policies: [{type: Percent, value: 100, period: 1s}]
",
    )?)?;
    let model = spec.policy.models.entry(MODEL.to_string()).or_default();
    model.autoscaling = Some(scaling);
    model.batching = Some(BatchingOverride { max_batch_size: Some(4), ..BatchingOverride::default() });
    spec.autoscaling = Some(AutoscalingOptions::default());
    spec.execute_delay = Some(Duration::from_millis(20));
    spec.observability = Some(Observability::default());
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let replicas = |mesh: &Mesh, region: &str| mesh.replicas(region, "v1");

    // A region whose sidecars hang: its autoscaler reads nothing and waits.
    tokio::task::block_in_place(|| mesh.pause_sidecars("eu-central", true))?;

    // The burst: 32 callers bound to the us zone, so us-east alone serves them.
    let us = CallSpec { residency: Some("us".into()), ..CallSpec::new(MODEL, 16) };
    let burst_start = Instant::now();
    let burst = Load::start(mesh.listener(), us.clone(), 32, Duration::ZERO).await?;
    let first_up =
        until(Duration::from_secs(20), "us-east above one replica", || Ok(replicas(&mesh, "us-east")? > 1)).await?;
    let scaled =
        until(Duration::from_secs(20), "us-east at four replicas", || Ok(replicas(&mesh, "us-east")? == 4)).await?;
    println!("burst → 2 replicas in {:?}, → 4 in {:?}", first_up - burst_start, scaled - burst_start);
    // The first replica's backlog from before the scale-up drains first.
    // Prometheus discovers the new replicas.
    let up = |mesh: &Mesh| -> anyhow::Result<usize> {
        let prometheus = mesh.prometheus().expect("observability");
        Ok(prometheus.query(r#"up{job="meridian-sidecar",region="us-east"} == 1"#)?.len())
    };
    until(Duration::from_secs(15), "Prometheus scraping us-east's four replicas", || Ok(up(&mesh)? == 4)).await?;
    calls_after(&burst, scaled, 200).await?;
    let settled = Instant::now();
    calls_after(&burst, settled, 400).await?;
    let records = burst.stop().await;
    let burst_stopped = Instant::now();
    let before: Vec<&Record> =
        records.iter().filter(|r| r.sent > burst_start + Duration::from_millis(300) && r.sent < first_up).collect();
    let after: Vec<&Record> = records.iter().filter(|r| r.sent > settled).collect();
    let (p99_before, p99_after) = (p99(&before), p99(&after));
    println!(
        "p99 with one replica {p99_before:?} (p50 {:?}, {} calls), with four {p99_after:?} (p50 {:?}, {} calls)",
        quantile(&before, 50),
        before.len(),
        quantile(&after, 50),
        after.len()
    );
    assert!(before.len() >= 20, "enough calls at one replica to measure: {}", before.len());
    assert!(p99_after * 2 < p99_before, "p99 recovers: {p99_before:?} → {p99_after:?}");
    assert!(records.iter().all(|r| r.region.as_deref() == Some("us-east")), "the burst stays in us-east");

    // The burst ends; a trickle continues. After the 4 s window the extra
    // replicas drain, and no call fails meanwhile.
    tokio::task::block_in_place(|| mesh.pause_sidecars("eu-central", false))?;
    let trickle_start = Instant::now();
    let trickle = Load::start(mesh.listener(), us, 2, Duration::from_millis(5)).await?;
    let drained =
        until(Duration::from_secs(30), "us-east back at one replica", || Ok(replicas(&mesh, "us-east")? == 1)).await?;
    println!("the trickle began; back at one replica {:?} later", drained - trickle_start);
    // The burst's last recommendation came at most one sync period before
    // it stopped; the 4 s window holds the replicas from then on.
    assert!(drained - burst_stopped >= Duration::from_secs(3), "not before the stabilisation window");
    calls_after(&trickle, drained, 100).await?;
    let trickle = trickle.stop().await;
    let failed: Vec<&Record> = records.iter().chain(&trickle).filter(|r| r.code != 0).collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        records.len() + trickle.len(),
        failed.first()
    );

    // Every decision is exported; the other regions never moved.
    let autoscalers = mesh.autoscalers().expect("autoscalers");
    let status = autoscalers.status_of("us-east", "v1").expect("status");
    // Up to four (in one or two steps: the first decision's average may
    // include samples from before the burst), then down to one, no flapping.
    let history = &status.history;
    let peak = history.iter().position(|r| *r == 4).expect("reached four");
    assert!(peak <= 2 && history[..=peak].windows(2).all(|w| w[0] < w[1]), "{history:?}");
    assert!(history[peak..].windows(2).all(|w| w[1] < w[0]) && history.last() == Some(&1), "{history:?}");
    for region in ["eu-west", "eu-central"] {
        assert_eq!(replicas(&mesh, region)?, 1, "{region} keeps one replica");
        let s = autoscalers.status_of(region, "v1").expect("status");
        assert_eq!(s.history, [1], "{region} never scaled: {s:?}");
    }
    let text =
        tokio::task::block_in_place(|| meridian_integration::http::get(autoscalers.metrics_addr(), "/metrics"))?.body;
    let samples = parse_text(&text);
    let series = |name: &str, labels: &[(&str, &str)]| sum_of(&samples, name, labels);
    let steps = |up: bool| history.windows(2).filter(|w| (w[1] > w[0]) == up).count() as f64;
    assert_eq!(
        series("meridian_autoscaler_scale_events_total", &[("region", "us-east"), ("direction", "up")]),
        steps(true)
    );
    assert_eq!(
        series("meridian_autoscaler_scale_events_total", &[("region", "us-east"), ("direction", "down")]),
        steps(false)
    );
    assert_eq!(series("meridian_autoscaler_current_replicas", &[("region", "us-east")]), 1.0);
    assert_eq!(series("meridian_autoscaler_metric_target", &[("region", "us-east")]), 8.0);
    assert_eq!(series("meridian_autoscaler_scale_events_total", &[("region", "eu-west")]), 0.0);
    assert!(
        series("meridian_autoscaler_decisions_total", &[("region", "us-east"), ("reason", "scale-down-stabilized")])
            >= 1.0,
        "{text}"
    );
    // The drained replicas left the mesh: the policy the xDS server serves lists one us-east server.
    let served: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(mesh.policy_file())?)?;
    let us_east =
        served["regions"].as_array().and_then(|r| r.iter().find(|r| r["name"] == "us-east")).expect("us-east");
    assert_eq!(us_east["endpoints"].as_array().map(Vec::len), Some(1));
    until(Duration::from_secs(15), "Prometheus scraping one us-east replica", || Ok(up(&mesh)? == 1)).await?;
    let decisions = mesh.prometheus().expect("observability").query(
        r#"meridian_autoscaler_scale_events_total{job="meridian-autoscaler",region="us-east",direction="up"}"#,
    )?;
    assert_eq!(decisions.len(), 1, "Prometheus scrapes the autoscalers' decisions");
    assert_eq!(decisions[0].value, steps(true));
    Ok(())
}

//! `make demo`: the local multi-region mesh with a built-in model, traffic
//! from several callers, and a live per-region table.
//!
//! Three regions on loopback — eu-west (127.0.1.0/24), eu-central
//! (127.0.2.0/24), us-east (127.0.3.0/24) — each with real sidecars behind
//! a region gateway Envoy, and one caller-side Envoy running the Meridian
//! filters. While it runs, the mesh is described (pids, roles, regions,
//! addresses, admin endpoints) in `--mesh-file` (default `.mesh/mesh.json`).
//! Ctrl-C (or SIGTERM) stops every process and removes the file.

use anyhow::{Context, Result};
use clap::Parser;
use meridian_filters_core::config::{CanaryConfig, ModelPolicy};
use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The local multi-region Meridian mesh, with live traffic.
#[derive(Debug, Parser)]
#[command(name = "meridian-demo", about)]
struct Args {
    /// Where the running mesh is described (JSON), for operators and scripts.
    #[arg(long, default_value = ".mesh/mesh.json")]
    mesh_file: PathBuf,
    /// Sidecars per region.
    #[arg(long, default_value_t = 1)]
    sidecars: usize,
    /// Layer widths of the built-in MLP (`meridian-sidecar generate-models --mlp-dims`).
    #[arg(long, default_value = "64,256,10")]
    mlp_dims: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Seconds between table refreshes.
    #[arg(long, default_value_t = 1)]
    refresh_secs: u64,
    /// Print each table below the last instead of redrawing the screen.
    #[arg(long)]
    plain: bool,
}

/// The demo's callers: (name, caller region, residency, concurrency).
const CALLERS: [(&str, &str, Option<&str>, usize); 3] =
    [("web-eu", "eu-west", Some("eu"), 2), ("batch-any", "eu-west", None, 2), ("app-us", "us-east", None, 2)];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut spec = MeshSpec::three_regions();
    spec.sidecars_per_region = args.sidecars;
    spec.mlp_dims = args.mlp_dims.clone();
    spec.filter.trust_caller_region_header = true;
    spec.filter.routing.dwell_ms = 2_000;
    // A canary: 20 % of the model's calls go to v2 (another seed, served as
    // version 2 by one more sidecar per region).
    spec.canary_version = Some("v2".into());
    let canary = CanaryConfig { stable: "v1".into(), canary: "v2".into(), weight: 20.0, ..Default::default() };
    spec.filter.models.insert(MODEL.into(), ModelPolicy { canary: Some(canary), ..Default::default() });
    let width: usize = args.mlp_dims.split(',').next().and_then(|w| w.trim().parse().ok()).context("--mlp-dims")?;

    eprintln!("starting the mesh: 3 regions × {} sidecar(s), gateways, caller-side Envoy…", args.sidecars);
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    mesh.write_description(&args.mesh_file)?;
    eprintln!("mesh described in {}", args.mesh_file.display());
    eprintln!("callers send to {} (gRPC, KServe v2; header x-meridian-model: {MODEL})", mesh.listener());
    for region in mesh.region_names() {
        let admin = mesh.gateway(&region)?.admin();
        eprintln!("  slow {region} down: curl -X POST 'http://{admin}/runtime_modify?fault.http.delay.fixed_delay_percent=100&fault.http.delay.fixed_duration_ms=200'");
    }

    let mut loads = Vec::new();
    for (name, region, residency, concurrency) in CALLERS {
        let spec = CallSpec {
            caller: Some(name.to_string()),
            caller_region: Some(region.to_string()),
            residency: residency.map(str::to_string),
            ..CallSpec::new(MODEL, width)
        };
        loads.push((name, Load::start(mesh.listener(), spec, concurrency, Duration::from_millis(20)).await?));
    }

    let started = Instant::now();
    let stop_at = args.duration_secs.map(|s| started + Duration::from_secs(s));
    let mut seen = vec![0usize; loads.len()];
    let mut ticker = tokio::time::interval(Duration::from_secs(args.refresh_secs.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm() => break,
        }
        let mut window: Vec<(&str, Vec<Record>)> = Vec::new();
        for (i, (name, load)) in loads.iter().enumerate() {
            let records = load.records();
            window.push((name, records[seen[i].min(records.len())..].to_vec()));
            seen[i] = records.len();
        }
        let table = tokio::task::block_in_place(|| render(&mesh, &window, started.elapsed()));
        if !args.plain {
            print!("\x1b[2J\x1b[H");
        }
        println!("{table}");
        std::io::stdout().flush()?;
        mesh.write_description(&args.mesh_file)?;
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            break;
        }
    }
    eprintln!("stopping the mesh…");
    for (_, load) in loads {
        load.stop().await;
    }
    drop(mesh);
    let _ = std::fs::remove_file(&args.mesh_file);
    eprintln!("stopped");
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

fn render(mesh: &Mesh, window: &[(&str, Vec<Record>)], uptime: Duration) -> String {
    let mut out = String::new();
    let all: Vec<&Record> = window.iter().flat_map(|(_, r)| r.iter()).collect();
    out.push_str(&format!(
        "Meridian local mesh — up {:.0} s — caller listener {} — last {} calls\n\n",
        uptime.as_secs_f64(),
        mesh.listener(),
        all.len()
    ));
    out.push_str(&format!(
        "{:<12} {:>9} {:>7} {:>9} {:>9} {:>10} {:>8}\n",
        "region", "requests", "errors", "p50 ms", "p99 ms", "breaker", "health"
    ));
    let stats = mesh.caller().stats("wasmcustom.meridian.").unwrap_or_default();
    let gauge = |name: String| stats.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    for region in mesh.region_names() {
        let served: Vec<&&Record> = all.iter().filter(|r| r.region.as_deref() == Some(region.as_str())).collect();
        let mut latencies: Vec<Duration> = served.iter().filter(|r| r.code == 0).map(|r| r.latency).collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        };
        let breaker = match gauge(format!("wasmcustom.meridian.breaker.{region}.{MODEL}")) {
            Some(1) => "open",
            Some(2) => "half-open",
            Some(_) => "closed",
            None => "-",
        };
        let health = match gauge(format!("wasmcustom.meridian.healthy.{region}")) {
            Some(0) => "down",
            Some(_) => "up",
            None => "-",
        };
        let errors = served.iter().filter(|r| r.code != 0).count();
        out.push_str(&format!(
            "{:<12} {:>9} {:>7} {:>9} {:>9} {:>10} {:>8}\n",
            region,
            served.len(),
            errors,
            pct(0.5),
            pct(0.99),
            breaker,
            health
        ));
    }
    out.push_str(&format!(
        "\ncanary: {MODEL} v2 at {}% ({})\n",
        gauge(format!("wasmcustom.meridian.canary.{MODEL}.weight_pct")).map_or("-".into(), |w| w.to_string()),
        match gauge(format!("wasmcustom.meridian.canary.{MODEL}.phase")) {
            Some(1) => "promoted",
            Some(2) => "rolled back",
            Some(_) => "split",
            None => "-",
        }
    ));
    out.push_str(&format!(
        "\n{:<10} {:<10} {:<10} {:>7} {:>8} {:>6}  where its calls went\n",
        "caller", "from", "residency", "calls", "failed", "on v2"
    ));
    for ((name, records), (_, from, residency, _)) in window.iter().zip(CALLERS) {
        let mut by_region: BTreeMap<String, usize> = BTreeMap::new();
        for r in records {
            let key = match (&r.region, &r.reason) {
                (_, Some(reason)) => format!("refused({reason})"),
                (Some(region), None) if r.code == 0 => region.clone(),
                _ => "failed".to_string(),
            };
            *by_region.entry(key).or_default() += 1;
        }
        let total = records.len().max(1);
        let split: Vec<String> =
            by_region.iter().map(|(k, n)| format!("{k} {:.0}%", 100.0 * *n as f64 / total as f64)).collect();
        let on_v2 = records.iter().filter(|r| r.model_version.as_deref() == Some("2")).count();
        out.push_str(&format!(
            "{:<10} {:<10} {:<10} {:>7} {:>8} {:>5.0}%  {}\n",
            name,
            from,
            residency.unwrap_or("-"),
            records.len(),
            records.iter().filter(|r| r.code != 0).count(),
            100.0 * on_v2 as f64 / total as f64,
            split.join(", ")
        ));
    }
    out.push_str("\nCtrl-C stops every process.");
    out
}

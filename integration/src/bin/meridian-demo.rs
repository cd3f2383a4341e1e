//! `make demo`: the local multi-region mesh a `MeshPolicy` describes
//! (`-f`, default `examples/policy.yaml`), with a built-in model, traffic
//! from the policy's callers, and a live per-region table.
//!
//! Every region of the policy runs on its loopback block (127.0.N.0/24):
//! real sidecars, one per endpoint and version, behind a region gateway
//! Envoy, and one caller-side Envoy running the Meridian filter with the
//! configuration the policy derives. While it runs, the mesh is described
//! (pids, roles, regions, addresses, admin endpoints) in `--mesh-file`
//! (default `.mesh/mesh.json`). Ctrl-C (or SIGTERM) stops every process and
//! removes the file.

use anyhow::{Context, Result};
use clap::Parser;
use meridian_integration::autoscaler::AutoscalingOptions;
use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Mesh, MeshSpec, Observability, MODEL};
use meridian_integration::prometheus::{sum_of, TextSample};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The local multi-region Meridian mesh, with live traffic.
#[derive(Debug, Parser)]
#[command(name = "meridian-demo", about)]
struct Args {
    /// The MeshPolicy to run.
    #[arg(short = 'f', long = "file", default_value = "examples/policy.yaml")]
    file: PathBuf,
    /// Where the running mesh is described (JSON), for operators and scripts.
    #[arg(long, default_value = ".mesh/mesh.json")]
    mesh_file: PathBuf,
    /// Bind each process to its address in the policy but a port the OS
    /// picks (to run beside another mesh).
    #[arg(long)]
    ephemeral_ports: bool,
    /// Where the xDS server every Envoy of the mesh bootstraps from listens
    /// (`meridianctl status --xds ADDR` reads it); with --ephemeral-ports a
    /// free port.
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds_listen: std::net::SocketAddr,
    /// Calls in flight per caller of the policy (0: no traffic).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
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
    /// Run the hops behind the caller-side proxy (caller proxy → gateway → sidecar) in plaintext instead of
    /// mutual TLS.
    #[arg(long)]
    no_mtls: bool,
    /// Where the mesh's Prometheus listens (with --ephemeral-ports a free port).
    #[arg(long, default_value = "127.0.0.1:9090")]
    prometheus_listen: std::net::SocketAddr,
    /// Where the prober's /metrics listens (with --ephemeral-ports a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    prober_listen: std::net::SocketAddr,
    /// Seconds between the prober's rounds (drift checks and synthetic calls).
    #[arg(long, default_value_t = 2.0)]
    probe_interval_secs: f64,
    /// Where the regional autoscalers' decisions (/metrics) are served (with --ephemeral-ports a free port).
    #[arg(long, default_value = "127.0.0.1:9101")]
    autoscaler_listen: std::net::SocketAddr,
}

/// A caller of the policy the demo sends traffic as.
#[derive(Debug, Clone)]
struct Caller {
    name: String,
    region: String,
    residency: Option<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut spec = MeshSpec::from_policy_file(&args.file)?;
    spec.ephemeral_ports = args.ephemeral_ports;
    spec.xds_listen = Some(if args.ephemeral_ports { ([127, 0, 0, 1], 0).into() } else { args.xds_listen });
    spec.mlp_dims = args.mlp_dims.clone();
    spec.mtls = !args.no_mtls;
    let free = |addr: std::net::SocketAddr| if args.ephemeral_ports { ([127, 0, 0, 1], 0).into() } else { addr };
    anyhow::ensure!(
        args.probe_interval_secs.is_finite() && args.probe_interval_secs > 0.0,
        "--probe-interval-secs must be a positive number"
    );
    spec.observability = Some(Observability {
        probe_interval: Duration::from_secs_f64(args.probe_interval_secs),
        scrape_interval: Duration::from_secs(1),
        prometheus_listen: free(args.prometheus_listen),
        prober_listen: free(args.prober_listen),
    });
    spec.autoscaling =
        Some(AutoscalingOptions { metrics_listen: free(args.autoscaler_listen), ..AutoscalingOptions::default() });
    let width: usize = args.mlp_dims.split(',').next().and_then(|w| w.trim().parse().ok()).context("--mlp-dims")?;
    let policy = spec.policy.clone();
    let callers: Vec<Caller> = policy
        .callers
        .iter()
        .map(|(name, c)| Caller {
            name: name.clone(),
            region: c.region.clone().unwrap_or_else(|| policy.regions[0].name.clone()),
            residency: c.residency.clone(),
        })
        .collect();

    eprintln!(
        "starting the mesh of {}: {} regions ({}), gateways, caller-side Envoy…",
        args.file.display(),
        policy.regions.len(),
        policy
            .regions
            .iter()
            .map(|r| format!("{} × {} sidecar(s)", r.name, r.endpoints.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    mesh.write_description(&args.mesh_file)?;
    eprintln!("mesh described in {}", args.mesh_file.display());
    eprintln!(
        "every Envoy takes its configuration from the xDS server at {}: `meridianctl status --xds {}`; edit {} to \
         change the mesh live",
        mesh.xds_addr(),
        mesh.xds_addr(),
        mesh.policy_file().display()
    );
    eprintln!("callers send to {} (gRPC, KServe v2; header x-meridian-model: {MODEL})", mesh.listener());
    match mesh.certs() {
        Some(certs) => eprintln!(
            "mutual TLS on every hop behind the caller-side proxy (SPIFFE identities, certificates under {}; \
             rotate: `meridianctl certs -f {} --out {}`)",
            certs.root.display(),
            mesh.policy_file().display(),
            certs.root.display()
        ),
        None => eprintln!("plaintext between the proxies and the model servers (--no-mtls)"),
    }
    if let (Some(prometheus), Some(prober)) = (mesh.prometheus(), mesh.prober()) {
        eprintln!(
            "Prometheus at http://{} scrapes every sidecar, gateway, the caller proxy and the prober, with the rules \
             of deploy/prometheus/ (dashboard: deploy/grafana/meridian-dashboard.json); the prober's metrics at \
             http://{}/metrics",
            prometheus.addr(),
            prober.metrics()
        );
    }
    if let Some(autoscalers) = mesh.autoscalers() {
        eprintln!(
            "each region scales its model servers on its own (models.*.autoscaling); decisions at http://{}/metrics",
            autoscalers.metrics_addr()
        );
    }
    for region in mesh.region_names() {
        let admin = mesh.gateway(&region)?.admin();
        eprintln!("  slow {region} down: curl -X POST 'http://{admin}/runtime_modify?fault.http.delay.fixed_delay_percent=100&fault.http.delay.fixed_duration_ms=200'");
    }

    let mut loads = Vec::new();
    if args.concurrency > 0 {
        for caller in &callers {
            let spec = CallSpec {
                caller: Some(caller.name.clone()),
                caller_region: Some(caller.region.clone()),
                residency: caller.residency.clone(),
                ..CallSpec::new(MODEL, width)
            };
            let load = Load::start(mesh.listener(), spec, args.concurrency, Duration::from_millis(20)).await?;
            loads.push((caller.name.clone(), load));
        }
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
            window.push((name.as_str(), records[seen[i].min(records.len())..].to_vec()));
            seen[i] = records.len();
        }
        let control = match mesh.xds_status().await {
            Ok(status) => {
                let synced = status.proxies.iter().filter(|p| p.in_sync).count();
                let mut line = format!(
                    "control plane {}: policy generation {}, {synced} of {} proxies in sync",
                    mesh.xds_addr(),
                    status.policy_version,
                    status.proxies.len()
                );
                if let Some(refused) = &status.refused {
                    line.push_str(&format!("; last edit REFUSED: {}", refused.errors.join("; ")));
                }
                line
            }
            Err(e) => format!("control plane {}: unreachable ({e})", mesh.xds_addr()),
        };
        let table = tokio::task::block_in_place(|| render(&mesh, &callers, &window, started.elapsed(), &control));
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

/// The region's drift: `ok` when every version's last check agreed with
/// its reference, `DRIFT <versions>` when one did not, `error` when a check
/// had no answer, `-` before the first check.
fn drift_status(probes: &[TextSample], region: &str) -> String {
    let checks: Vec<&TextSample> =
        probes.iter().filter(|s| s.is("meridian_probe_max_abs_error", &[("region", region)])).collect();
    if checks.is_empty() {
        return "-".into();
    }
    let tolerance = |s: &TextSample| {
        let version = s.labels.get("version").map(String::as_str).unwrap_or_default();
        sum_of(probes, "meridian_probe_drift_tolerance", &[("version", version)])
    };
    let drifted: Vec<&str> = checks
        .iter()
        .filter(|s| s.value > tolerance(s))
        .filter_map(|s| s.labels.get("version").map(String::as_str))
        .collect();
    if !drifted.is_empty() {
        format!("DRIFT {}", drifted.join(","))
    } else if checks.iter().any(|s| s.value.is_nan()) {
        "error".into()
    } else {
        "ok".into()
    }
}

/// The region's synthetic calls through the caller proxy: successes of all.
fn probe_status(probes: &[TextSample], region: &str) -> String {
    let ok = sum_of(probes, "meridian_probe_synthetic_total", &[("region", region), ("result", "ok")]);
    let all = sum_of(probes, "meridian_probe_synthetic_total", &[("region", region)]);
    if all == 0.0 {
        "-".into()
    } else {
        format!("{ok:.0}/{all:.0}")
    }
}

/// The region's model servers per version label (`v1=1 v2=2`); a version
/// its autoscaler wants resized shows the target (`v1=1→3`).
fn replicas(mesh: &Mesh, region: &str) -> String {
    mesh.policy()
        .versions_in(region)
        .iter()
        .map(|label| {
            let now = mesh.replicas(region, label).unwrap_or(0);
            let desired = mesh
                .autoscalers()
                .and_then(|a| a.status_of(region, label))
                .map(|s| s.decision.desired as usize)
                .filter(|d| *d != now);
            match desired {
                Some(d) => format!("{label}={now}→{d}"),
                None => format!("{label}={now}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn render(mesh: &Mesh, callers: &[Caller], window: &[(&str, Vec<Record>)], uptime: Duration, control: &str) -> String {
    let mut out = String::new();
    let all: Vec<&Record> = window.iter().flat_map(|(_, r)| r.iter()).collect();
    out.push_str(&format!(
        "Meridian local mesh — up {:.0} s — caller listener {} — last {} calls\n{control}\n\n",
        uptime.as_secs_f64(),
        mesh.listener(),
        all.len()
    ));
    out.push_str(&format!(
        "{:<12} {:>9} {:>7} {:>9} {:>9} {:>10} {:>8} {:>12} {:>12} {:>14}\n",
        "region", "requests", "errors", "p50 ms", "p99 ms", "breaker", "health", "drift", "probes ok", "replicas"
    ));
    let probes: Vec<TextSample> = mesh.prober().and_then(|p| p.samples().ok()).unwrap_or_default();
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
            "{:<12} {:>9} {:>7} {:>9} {:>9} {:>10} {:>8} {:>12} {:>12} {:>14}\n",
            region,
            served.len(),
            errors,
            pct(0.5),
            pct(0.99),
            breaker,
            health,
            drift_status(&probes, &region),
            probe_status(&probes, &region),
            replicas(mesh, &region),
        ));
    }
    let models = mesh.policy().resolved_models();
    let canaries: Vec<(String, String, String)> = models
        .iter()
        .filter_map(|(name, m)| m.canary.as_ref().map(|c| (name.clone(), c.version.clone(), m.stable_version())))
        .collect();
    for (model, canary, _) in &canaries {
        out.push_str(&format!(
            "\ncanary: {model} {canary} at {}% ({})\n",
            gauge(format!("wasmcustom.meridian.canary.{model}.weight_pct")).map_or("-".into(), |w| w.to_string()),
            match gauge(format!("wasmcustom.meridian.canary.{model}.phase")) {
                Some(1) => "promoted",
                Some(2) => "rolled back",
                Some(_) => "split",
                None => "-",
            }
        ));
    }
    // The model version number the canary answers as (x-meridian-model-version).
    let canary_number = canaries
        .first()
        .and_then(|(model, canary, _)| models.get(model).and_then(|m| m.version(canary)))
        .map(|v| v.number().to_string());
    let canary_label = canaries.first().map_or("canary".to_string(), |(_, c, _)| format!("on {c}"));
    out.push_str(&format!(
        "\n{:<10} {:<10} {:<10} {:>7} {:>8} {:>6}  where its calls went\n",
        "caller", "from", "residency", "calls", "failed", canary_label
    ));
    for ((name, records), caller) in window.iter().zip(callers) {
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
        let on_canary =
            records.iter().filter(|r| r.model_version.is_some() && r.model_version == canary_number).count();
        out.push_str(&format!(
            "{:<10} {:<10} {:<10} {:>7} {:>8} {:>5.0}%  {}\n",
            name,
            caller.region,
            caller.residency.as_deref().unwrap_or("-"),
            records.len(),
            records.iter().filter(|r| r.code != 0).count(),
            100.0 * on_canary as f64 / total as f64,
            split.join(", ")
        ));
    }
    out.push_str("\nCtrl-C stops every process.");
    out
}

//! `make bench-filters`: what the Meridian filter costs Envoy.
//!
//! One Envoy (one worker thread) with five listeners in front of the same
//! upstream (a real sidecar serving a small MLP): no wasm filter, a trivial
//! wasm filter that adds one response header, the same trivial filter set to
//! route by header (it only sets `x-meridian-cluster`, so Envoy clears the
//! route cache and the `cluster_header` route re-matches: the floor of any
//! header-routing filter), the Meridian filter, and the Meridian filter
//! with a canary split on the called model (the canary stage's cost).
//! The same closed-loop gRPC load runs against each listener in turn, in
//! short turns (250 ms) in a shuffled order, over several rounds,
//! each variant on its own connections kept for the whole run; Envoy's CPU
//! time comes from its threads' run time in /proc (nanoseconds).
//! Envoy runs alone on CPU 0 (the load and the sidecar on CPU 1), so its
//! CPU per request is not blurred by contention; the ratios are medians of
//! the per-round ratios.
//! Prints req/s, p50/p99 and Envoy CPU per request per variant, then one
//! machine-readable line:
//! `bench-filters: added_cpu_ratio=<meridian added CPU / trivial added CPU> throughput_ratio=<meridian / no-wasm>`,
//! and Meridian's added CPU over the header-route floor's as
//! `bench-filters-floor-ratio: meridian_over_floor=<x>`.

use anyhow::{Context, Result};
use meridian_filters_core::FilterConfig;
use meridian_integration::bench::{arg, Rng, Tally};
use meridian_integration::envoy::Envoy;
use meridian_integration::load::{call, connect, CallSpec};
use meridian_integration::mesh::MeshSpec;
use meridian_integration::sidecar::{generate_models, process_cpu_time_ns, Sidecar};
use meridian_mesh_config::policy::spec::{Analysis, Canary};
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::envoy::{
    caller_from_policy, caller_proxy, request_summary_mutation, CALLER_LISTENER, FILTER_NAME,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `header-route`: the trivial filter set to route by header (the floor of
/// any header-routing filter); `meridian-canary`: the Meridian filter with
/// a canary split on the called model (the canary stage's cost) — all
/// measured in the same run.
/// `request-summary`: no wasm, only the connection manager's early header
/// mutation that builds `x-meridian-request` for the Meridian filter (its
/// share of Meridian's cost). `meridian-unfolded`: the Meridian filter
/// reading each routing header with its own host call, as it did before
/// `x-meridian-request` (what the fold saves).
const VARIANTS: [&str; 7] =
    ["no-wasm", "trivial-wasm", "header-route", "meridian", "meridian-canary", "request-summary", "meridian-unfolded"];

/// One round's figures: added Envoy CPU per request over no-wasm (µs) and
/// throughput against no-wasm.
#[derive(Debug, Clone, Copy)]
struct Round {
    trivial: f64,
    floor: f64,
    meridian: f64,
    canary: f64,
    request_summary: f64,
    unfolded: f64,
    throughput: f64,
    floor_throughput: f64,
}

#[derive(Debug, Default, Clone)]
struct Sample {
    tally: Tally,
    envoy_cpu: Duration,
}

impl std::ops::Deref for Sample {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.tally
    }
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.tally.merge(other.tally);
        self.envoy_cpu += other.envoy_cpu;
    }
    fn cpu_us_per_req(&self) -> f64 {
        self.envoy_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// The bench Envoy: the rendered caller proxy plus two listeners that
/// route to the same region cluster without wasm or with the trivial filter.
fn config(upstream: std::net::SocketAddr, baseline_wasm: &std::path::Path) -> Result<String> {
    // The filter configuration comes from the bench's policy, as everywhere.
    let spec = MeshSpec::test_policy("bench")?.policy;
    let policy = Policy::from_spec(spec.clone()).map_err(anyhow::Error::msg)?;
    let mut proxy =
        caller_from_policy(&policy, "bench", meridian_integration::wasm_path()?).map_err(anyhow::Error::msg)?;
    proxy.admin = "127.0.0.1:0".parse()?;
    proxy.listen = "127.0.0.1:0".parse()?;
    proxy.regions[0].addr = upstream.into();
    let yaml = caller_proxy(&proxy);
    let mut doc: Value = serde_yaml::from_str(&yaml)?;
    let meridian = doc["static_resources"]["listeners"][0].clone();
    let filters = meridian["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"].clone();
    let router = filters.as_array().and_then(|f| f.last()).cloned().context("the caller listener's router")?;
    let meridian_at = filters
        .as_array()
        .and_then(|f| f.iter().position(|f| f["name"] == FILTER_NAME))
        .context("the caller listener's Meridian filter")?;
    // Every variant shares Meridian's route (retry policy, outcome header);
    // those without a routing filter name the cluster instead of reading it
    // from `x-meridian-cluster`.
    let variant = |name: &str, filters: Vec<Value>, by_header: bool| {
        let mut l = meridian.clone();
        l["name"] = json!(name);
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["stat_prefix"] = json!(name);
        hcm["http_filters"] = json!(filters);
        let route = &mut hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"];
        if let Some(r) = route.as_object_mut().filter(|_| !by_header) {
            r.remove("cluster_header");
            r.insert("cluster".into(), json!("meridian~bench"));
        }
        l
    };
    let baseline = |name: &str, configuration: &str| {
        json!({
            "name": name,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": name,
                    "root_id": name,
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": configuration
                    },
                    "vm_config": {
                        "vm_id": name,
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": baseline_wasm.display().to_string() } }
                    }
                }
            }
        })
    };
    // The Meridian filter again, with a 10 % canary split on the model the
    // load calls (its own VM, so the two share no state).
    let mut canary_spec = spec;
    if let Some(mlp) = canary_spec.models.get_mut("mlp") {
        mlp.canary = Some(Canary {
            version: "v2".into(),
            weight: 10.0,
            sticky: None,
            allow_override: false,
            steps: Vec::new(),
            analysis: Analysis::default(),
        });
    }
    let canary_filter = Policy::from_spec(canary_spec)
        .map_err(anyhow::Error::msg)?
        .filter_config("bench")
        .map_err(anyhow::Error::msg)?;
    // The Meridian listener again, named `name`, with `filter` in its own
    // VM (so the variants share no state).
    let meridian_with = |name: &str, filter: &FilterConfig| -> Result<Value> {
        let mut l = meridian.clone();
        l["name"] = json!(name);
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["stat_prefix"] = json!(name);
        let wasm = &mut hcm["http_filters"][meridian_at]["typed_config"]["config"];
        wasm["configuration"]["value"] = json!(serde_json::to_string(filter)?);
        wasm["vm_config"]["vm_id"] = json!(name);
        Ok(l)
    };
    let canary = meridian_with("meridian-canary", &canary_filter)?;
    // The Meridian filter reading header by header, as before the fold:
    // no `x-meridian-request`.
    let mut unfolded_filter = policy.filter_config("bench").map_err(anyhow::Error::msg)?;
    unfolded_filter.request_summary = false;
    let mut unfolded = meridian_with("meridian-unfolded", &unfolded_filter)?;
    if let Some(hcm) = unfolded["filter_chains"][0]["filters"][0]["typed_config"].as_object_mut() {
        hcm.remove("early_header_mutation_extensions");
    }
    let mut summary = variant("request-summary", vec![router.clone()], false);
    summary["filter_chains"][0]["filters"][0]["typed_config"]["early_header_mutation_extensions"] =
        json!([request_summary_mutation()]);
    let listeners = vec![
        variant("no-wasm", vec![router.clone()], false),
        variant("trivial-wasm", vec![baseline("baseline", ""), router.clone()], false),
        variant("header-route", vec![baseline("header-route", "route:meridian~bench"), router], true),
        meridian,
        canary,
        summary,
        unfolded,
    ];
    doc["static_resources"]["listeners"] = json!(listeners);
    Ok(serde_yaml::to_string(&doc)?)
}

type Client =
    meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>;

/// Runs the closed loop on `clients` for `duration`: each keeps calling
/// until the time is up. The clients come back to `clients`, connected,
/// so no connection set-up lands in a later slice's measurement; `seed`
/// moves on so that no two slices send the same inputs.
async fn closed_loop(clients: &mut Vec<Client>, duration: Duration, envoy_pid: u32, seed: &mut u32) -> Result<Sample> {
    let spec = CallSpec { timeout: Duration::from_secs(10), ..CallSpec::new("mlp", 16) };
    let cpu0 = process_cpu_time_ns(envoy_pid)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut client) in clients.drain(..).enumerate() {
        let spec = spec.clone();
        let mut seed = seed.wrapping_add(i as u32 * 7_919);
        tasks.push(tokio::spawn(async move {
            let mut s = Tally::default();
            while start.elapsed() < duration {
                let r = call(&mut client, &spec, seed).await;
                seed = seed.wrapping_add(1);
                s.requests += 1;
                if r.code != 0 {
                    s.errors += 1;
                }
                s.latencies.push(r.latency);
            }
            (s, client)
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        let (s, client) = t.await?;
        tally.merge(s);
        clients.push(client);
    }
    tally.wall = start.elapsed();
    *seed = seed.wrapping_add(1_000_003);
    Ok(Sample { tally, envoy_cpu: process_cpu_time_ns(envoy_pid)?.saturating_sub(cpu0) })
}

/// Sets the CPU affinity of every thread of `pid` (`taskset -a -p -c`).
fn pin(pid: u32, cpus: &str) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset failed for pid {pid}");
    Ok(())
}

fn main() -> Result<()> {
    let rounds: usize = arg("--rounds", "5").parse()?;
    let secs: u64 = arg("--secs", "3").parse()?;
    let concurrency: usize = arg("--concurrency", "32").parse()?;
    // The length of one turn of a variant within a round.
    let slice_ms: u64 = arg("--slice-ms", "250").parse()?;
    // Profiling aid: run one variant only (`--only meridian`).
    let only = Some(arg("--only", "")).filter(|o| !o.is_empty());
    let baseline_wasm =
        meridian_integration::workspace_root().join("target/wasm32-wasip1/release-wasm/meridian_baseline_filter.wasm");
    anyhow::ensure!(baseline_wasm.is_file(), "{} missing (make bench-filters builds it)", baseline_wasm.display());

    let dir = tempfile::tempdir()?;
    generate_models(&dir.path().join("models"), &["--mlp-dims", "16,32,4", "--no-dynamic-batching"])?;
    let sidecar = Sidecar::start("127.0.9.10", &dir.path().join("models"), &[])?;
    let envoy = Envoy::start(&config(sidecar.grpc(), &baseline_wasm)?).context("starting the bench Envoy")?;
    eprintln!("bench Envoy pid {}", envoy.pid());
    // Envoy alone on CPU 0; the load and the sidecar share CPU 1: Envoy's
    // CPU per request is then measured without contention noise.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 && arg("--no-pin", "no") == "no" {
        pin(envoy.pid(), "0")?;
        pin(sidecar.pid(), "1")?;
        pin(std::process::id(), "1")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;

    println!(
        "bench-filters: one Envoy worker, gRPC ModelInfer, c={concurrency}, {rounds} rounds × {secs} s per variant, \
         interleaved in {slice_ms} ms turns"
    );
    // Every variant keeps its connections for the whole run, warmed (and
    // its VM started) before anything is measured.
    let mut seed = 0u32;
    let mut clients: Vec<Vec<Client>> = Vec::new();
    for name in VARIANTS {
        let listener = if name == "meridian" { CALLER_LISTENER.to_string() } else { name.to_string() };
        let addr = envoy.listener(&listener)?;
        let mut these = Vec::new();
        for _ in 0..concurrency {
            these.push(rt.block_on(connect(addr))?);
        }
        rt.block_on(closed_loop(&mut these, Duration::from_millis(300), envoy.pid(), &mut seed))?;
        clients.push(these);
    }
    let slices = (secs * 1000 / slice_ms).max(2);
    // Seeded: the same orders on every run.
    let mut shuffle = Rng(0x5eed);
    let mut totals: Vec<Sample> = vec![Sample::default(); VARIANTS.len()];
    let mut per_round: Vec<Round> = Vec::new();
    for round in 0..rounds {
        // A round gives each variant `secs` in slices of `slice_ms`, the
        // variants taking turns in a fresh random order each time: the
        // machine's speed drifts over seconds, so each variant sees the
        // same fast and slow moments; and no variant is favoured by its
        // place (one that ran just before runs with warm caches, so a fixed
        // order would favour whichever comes twice in a row).
        let mut this_round: Vec<Sample> = vec![Sample::default(); VARIANTS.len()];
        for _ in 0..slices {
            let mut order: Vec<usize> = (0..VARIANTS.len()).collect();
            shuffle.shuffle(&mut order);
            for i in order {
                if only.as_deref().is_some_and(|o| o != VARIANTS[i]) {
                    continue;
                }
                let s =
                    rt.block_on(closed_loop(&mut clients[i], Duration::from_millis(slice_ms), envoy.pid(), &mut seed))?;
                this_round[i].merge(s.clone());
                totals[i].merge(s);
            }
        }
        for (name, s) in VARIANTS.iter().zip(&this_round).filter(|(_, s)| s.requests > 0) {
            println!(
                "  round {round} {name:<15} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  envoy {:>6.1} µs/req  errors {}",
                s.rps(),
                s.pct(0.5),
                s.pct(0.99),
                s.cpu_us_per_req(),
                s.errors
            );
        }
        let this_round: Vec<Option<Sample>> =
            this_round.into_iter().map(|s| Some(s).filter(|s| s.requests > 0)).collect();
        if let [Some(plain), Some(trivial), Some(floor), Some(meridian), Some(canary), Some(summary), Some(unfolded)] =
            this_round.as_slice()
        {
            per_round.push(Round {
                trivial: trivial.cpu_us_per_req() - plain.cpu_us_per_req(),
                floor: floor.cpu_us_per_req() - plain.cpu_us_per_req(),
                meridian: meridian.cpu_us_per_req() - plain.cpu_us_per_req(),
                canary: canary.cpu_us_per_req() - meridian.cpu_us_per_req(),
                request_summary: summary.cpu_us_per_req() - plain.cpu_us_per_req(),
                unfolded: unfolded.cpu_us_per_req() - plain.cpu_us_per_req(),
                throughput: meridian.rps() / plain.rps(),
                floor_throughput: floor.rps() / plain.rps(),
            });
        }
    }
    println!(
        "\n{:<13} {:>9} {:>9} {:>9} {:>14} {:>8}",
        "variant", "req/s", "p50 ms", "p99 ms", "envoy µs/req", "errors"
    );
    for (name, t) in VARIANTS.iter().zip(&totals) {
        println!(
            "{:<13} {:>9.0} {:>9.2} {:>9.2} {:>14.1} {:>8}",
            name,
            t.rps(),
            t.pct(0.5),
            t.pct(0.99),
            t.cpu_us_per_req(),
            t.errors
        );
    }
    // Rounds are interleaved, so each round compares the variants under the
    // same conditions; the median round ratio resists a noisy round.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let trivial_added = median(per_round.iter().map(|r| r.trivial).collect());
    let floor_added = median(per_round.iter().map(|r| r.floor).collect());
    let meridian_added = median(per_round.iter().map(|r| r.meridian).collect());
    let cpu_ratios: Vec<f64> = per_round.iter().map(|r| r.meridian / r.trivial).collect();
    let over_floor: Vec<f64> = per_round.iter().map(|r| r.meridian / r.floor).collect();
    let floor_ratios: Vec<f64> = per_round.iter().map(|r| r.floor / r.trivial).collect();
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    println!("per-round added_cpu_ratio: {} (median is reported)", spread(&cpu_ratios));
    println!("per-round header-route floor / trivial: {} (median is reported)", spread(&floor_ratios));
    println!("per-round meridian / header-route floor: {} (median is reported)", spread(&over_floor));
    let cpu_ratio = median(cpu_ratios);
    let throughput_ratio = median(per_round.iter().map(|r| r.throughput).collect());
    println!(
        "added Envoy CPU per request (median of rounds): trivial {trivial_added:.1} µs, header-route floor \
         {floor_added:.1} µs, meridian {meridian_added:.1} µs"
    );
    println!(
        "bench-filters-floor: added_cpu_ratio={:.2} throughput_ratio={:.2} (a filter that only sets the cluster header)",
        median(floor_ratios),
        median(per_round.iter().map(|r| r.floor_throughput).collect())
    );
    println!(
        "bench-filters-floor-ratio: meridian_over_floor={:.2} (Meridian's added CPU over the header-route floor's)",
        median(over_floor)
    );
    let canary_added = median(per_round.iter().map(|r| r.canary).collect());
    let summary_added = median(per_round.iter().map(|r| r.request_summary).collect());
    println!(
        "bench-filters-summary: added_us={summary_added:.1} (the early header mutation that builds x-meridian-request, \
         without wasm; part of Meridian's added CPU)"
    );
    let unfolded_added = median(per_round.iter().map(|r| r.unfolded).collect());
    println!(
        "bench-filters-unfolded: added_us={unfolded_added:.1} (Meridian reading header by header, no x-meridian-request: \
         {:.1} µs more than folded)",
        unfolded_added - meridian_added
    );
    println!(
        "bench-filters-canary: added_us={canary_added:.1} (the canary stage: Meridian with a 10 % split over Meridian \
         without one)"
    );
    // Every Meridian request should have read its headers in one
    // (`x-meridian-request`); a fallback would measure another filter.
    let mut fallbacks = 0;
    for name in ["missing", "ambiguous"] {
        fallbacks += envoy.stat(&format!("wasmcustom.meridian.request_summary.{name}"))?.unwrap_or(0);
    }
    println!("requests that read their routing headers one by one (no usable x-meridian-request): {fallbacks}");
    println!("bench-filters: added_cpu_ratio={cpu_ratio:.2} throughput_ratio={throughput_ratio:.2}");
    drop(envoy);
    drop(sidecar);
    Ok(())
}

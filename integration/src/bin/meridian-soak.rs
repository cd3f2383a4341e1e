//! `make soak`: the local mesh under steady load from several callers for
//! minutes (default 10), through a seeded schedule of chaos — a region's
//! sidecars hung (SIGSTOP, then SIGCONT) or killed and restarted, latency
//! and aborts injected at gateways, a gateway Envoy killed and restarted,
//! the caller proxy's filter VM replaced (a new module pushed by ECDS: a
//! fresh VM takes new calls, the old one finishes its own) — printing per phase the calls, the failures and where calls went,
//! and at the end
//!
//! `soak: calls=N failed_idempotent=F residency_violations=R max_rss_mb=M`
//!
//! plus the memory of the sidecars and Envoys: the last minute's mean RSS
//! per process against the second minute's.
//!
//! A call may fail only when its residency zone has no allowed region left
//! (the us zone's one region hung, killed, or behind a dead gateway, and
//! the seconds its health takes to come back): those are counted apart,
//! with the filter's fail-fast reason or not. Every other failure counts in
//! `failed_idempotent` (every call here is idempotent). Exit status 1 when
//! `failed_idempotent` or `residency_violations` is not 0, or memory grew
//! more than 10 %.

use anyhow::{Context, Result};
use clap::Parser;
use meridian_integration::bench::Rng;
use meridian_integration::load::{CallSpec, Load, Record};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "meridian-soak", about = "The local mesh under load and a seeded schedule of chaos")]
struct Args {
    /// The mesh (its regions' zones decide which calls may fail).
    #[arg(short = 'f', long = "policy", default_value = "integration/policies/three-regions.yaml")]
    policy: PathBuf,
    /// How long to run.
    #[arg(long, default_value_t = 600)]
    duration_secs: u64,
    /// How long each chaos phase lasts (the first and last are calm).
    #[arg(long, default_value_t = 30)]
    phase_secs: u64,
    /// The schedule's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Closed-loop callers per caller class (eu-bound, unbound, us-bound).
    #[arg(long, default_value_t = 3)]
    concurrency: usize,
    /// After a phase that left a zone without a region, the seconds its
    /// calls may still fail fast while the region's health comes back.
    #[arg(long, default_value_t = 10)]
    recovery_secs: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// One chaos action, applied at a phase's start and undone at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chaos {
    Calm,
    /// Every sidecar of the region hangs (SIGSTOP).
    Pause(String),
    /// Every sidecar of the region killed (SIGKILL), restarted at the end.
    Kill(String),
    /// 200 ms added to every call at the region's gateway.
    Latency(String),
    /// Half the calls at the region's gateway aborted with UNAVAILABLE
    /// (only regions with a zone-mate: half-failing the only region of a
    /// zone leaves its calls nowhere to go).
    Abort(String),
    /// The region's gateway Envoy killed, restarted at the end.
    GatewayKill(String),
    /// The caller proxy's filter VM replaced: the module, with one more
    /// custom section (so another VM, not the cached one), pushed by ECDS.
    VmReload,
}

impl Chaos {
    fn describe(&self) -> String {
        match self {
            Chaos::Calm => "calm".into(),
            Chaos::Pause(r) => format!("{r}: sidecars hung (SIGSTOP)"),
            Chaos::Kill(r) => format!("{r}: sidecars killed"),
            Chaos::Latency(r) => format!("{r}: +200 ms at the gateway"),
            Chaos::Abort(r) => format!("{r}: 50 % aborted at the gateway"),
            Chaos::GatewayKill(r) => format!("{r}: gateway Envoy killed"),
            Chaos::VmReload => "caller proxy's filter VM reloaded (new module)".into(),
        }
    }

    /// The region it takes out of service, if any.
    fn outage(&self) -> Option<&str> {
        match self {
            Chaos::Pause(r) | Chaos::Kill(r) | Chaos::GatewayKill(r) => Some(r),
            _ => None,
        }
    }
}

/// The schedule: calm first and last, chaos between, every kind of action
/// at least once when there are enough phases, each on a random region.
fn schedule(phases: usize, regions: &[String], paired: &[String], seed: u64) -> Vec<Chaos> {
    let mut rng = Rng(seed);
    let kinds: [fn(String) -> Chaos; 5] = [Chaos::Pause, Chaos::Kill, Chaos::Latency, Chaos::Abort, Chaos::GatewayKill];
    let mut out = vec![Chaos::Calm];
    let middle = phases.saturating_sub(2);
    let pick = |rng: &mut Rng, kind: fn(String) -> Chaos| {
        let abort = kind(String::new()) == Chaos::Abort(String::new());
        kind(rng.pick(if abort && !paired.is_empty() { paired } else { regions }))
    };
    for i in 0..middle {
        let chaos = if i == middle / 2 {
            Chaos::VmReload
        } else if i < kinds.len() {
            pick(&mut rng, kinds[i])
        } else if rng.next_u64().is_multiple_of(6) {
            Chaos::VmReload
        } else {
            let kind = rng.pick(&kinds);
            pick(&mut rng, kind)
        };
        out.push(chaos);
    }
    if phases > 1 {
        out.push(Chaos::Calm);
    }
    out
}

/// `module` with a custom section named `name` appended: the same code,
/// other bytes (Envoy keys its VMs by the module's hash).
fn with_custom_section(module: &[u8], name: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut content = Vec::new();
    leb128(name.len(), &mut content);
    content.extend_from_slice(name.as_bytes());
    let mut out = module.to_vec();
    out.push(0); // custom section
    leb128(content.len(), &mut out);
    out.extend_from_slice(&content);
    out
}

fn apply(mesh: &mut Mesh, chaos: &Chaos, scratch: &std::path::Path, phase: usize) -> Result<()> {
    match chaos {
        Chaos::Calm => Ok(()),
        Chaos::Pause(r) => mesh.pause_sidecars(r, true),
        Chaos::Kill(r) => mesh.kill_sidecars(r),
        Chaos::Latency(r) => mesh.set_fault(r, Fault { delay_ms: 200, delay_percent: 100, ..Fault::default() }),
        Chaos::Abort(r) => mesh.set_fault(r, Fault { abort_percent: 50, abort_grpc_status: 14, ..Fault::default() }),
        Chaos::GatewayKill(r) => mesh.kill_gateway(r),
        Chaos::VmReload => {
            let module = std::fs::read(meridian_integration::wasm_path()?)?;
            let path = scratch.join(format!("meridian_filters-{phase}.wasm"));
            std::fs::write(&path, with_custom_section(&module, &format!("meridian-soak-{phase}")))?;
            let mut policy = mesh.policy().clone();
            policy.filter.url = Some(format!("file://{}", path.display()));
            mesh.push_policy(&policy).map(|_| ())
        }
    }
}

fn undo(mesh: &mut Mesh, chaos: &Chaos) -> Result<()> {
    match chaos {
        Chaos::Pause(r) => mesh.pause_sidecars(r, false),
        Chaos::Kill(r) => mesh.restart_sidecars(r),
        Chaos::Latency(r) | Chaos::Abort(r) => mesh.set_fault(r, Fault::default()),
        Chaos::GatewayKill(r) => mesh.restart_gateway(r),
        Chaos::Calm | Chaos::VmReload => Ok(()),
    }
}

/// A caller class: its calls, and the zone they must stay in.
struct Class {
    name: &'static str,
    zone: Option<String>,
    load: Load,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct PhaseReport {
    phase: usize,
    from_s: u64,
    to_s: u64,
    chaos: String,
    calls: usize,
    failed: usize,
    failed_allowed: usize,
    served: BTreeMap<String, usize>,
    reasons: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct Memory {
    second_minute_mb: f64,
    last_minute_mb: f64,
    ratio: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.phase_secs >= 5, "--phase-secs must be at least 5");
    anyhow::ensure!(args.duration_secs >= 3 * 60, "--duration-secs must be at least 180 (RSS compares minutes)");
    let spec = MeshSpec::from_policy_file(&args.policy)?;
    let scratch = tempfile::tempdir()?;
    let zones: BTreeMap<String, Vec<String>> = spec.policy.regions.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.zone.clone()).or_default().push(r.name.clone());
        m
    });
    let regions: Vec<String> = spec.policy.regions.iter().map(|r| r.name.clone()).collect();
    let mut mesh = tokio::task::block_in_place(|| Mesh::start(&spec)).context("starting the mesh")?;
    let listener = mesh.listener();
    eprintln!(
        "soak: mesh up (callers at {listener}); {} s in {} s phases, seed {}",
        args.duration_secs, args.phase_secs, args.seed
    );

    let mut classes = Vec::new();
    let bound = |zone: &str| CallSpec { residency: Some(zone.to_string()), ..CallSpec::new(MODEL, 16) };
    for (name, zone) in [("eu-bound", Some("eu")), ("unbound", None), ("us-bound", Some("us"))] {
        if zone.is_some_and(|z| !zones.contains_key(z)) {
            continue;
        }
        let call = zone.map_or_else(|| CallSpec::new(MODEL, 16), bound);
        let load = Load::start(listener, call, args.concurrency, Duration::from_millis(2)).await?;
        classes.push(Class { name, zone: zone.map(str::to_string), load });
    }

    let phases = (args.duration_secs / args.phase_secs).max(1) as usize;
    let paired: Vec<String> =
        regions.iter().filter(|r| zones.values().any(|z| z.len() > 1 && z.contains(r))).cloned().collect();
    let plan = schedule(phases, &regions, &paired, args.seed);
    let start = Instant::now();
    let phase_len = Duration::from_secs(args.phase_secs);
    let mut windows: Vec<(Instant, Instant, Chaos)> = Vec::new();
    let mut memory: Vec<(Duration, Vec<(&'static str, u64)>)> = Vec::new();
    let mut max_rss = 0u64;
    for (i, chaos) in plan.iter().enumerate() {
        let from = start + phase_len * i as u32;
        let to = from + phase_len;
        eprintln!(
            "soak: phase {i} ({}–{} s): {}",
            phase_len.as_secs() * i as u64,
            phase_len.as_secs() * (i as u64 + 1),
            chaos.describe()
        );
        tokio::task::block_in_place(|| apply(&mut mesh, chaos, scratch.path(), i)).with_context(|| chaos.describe())?;
        // Sample memory every 5 s through the phase (the phase's clock).
        let mut next = Instant::now();
        while Instant::now() < to {
            if Instant::now() >= next {
                let sample: Vec<(&'static str, u64)> =
                    mesh.memory().into_iter().map(|(kind, _, _, bytes)| (kind, bytes)).collect();
                max_rss = max_rss.max(sample.iter().map(|(_, b)| *b).max().unwrap_or(0));
                memory.push((start.elapsed(), sample));
                next += Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(200).min(to.saturating_duration_since(Instant::now()))).await;
        }
        tokio::task::block_in_place(|| undo(&mut mesh, chaos))
            .with_context(|| format!("undoing {}", chaos.describe()))?;
        windows.push((from, to, chaos.clone()));
    }

    let mut all: Vec<(&'static str, Option<String>, Record)> = Vec::new();
    for class in classes {
        let (name, zone) = (class.name, class.zone.clone());
        all.extend(class.load.stop().await.into_iter().map(|r| (name, zone.clone(), r)));
    }
    let recovery = Duration::from_secs(args.recovery_secs);
    // Whether `zone` had no allowed region at `t`: its every region out,
    // or back less than the recovery time ago.
    let outage = |zone: &Option<String>, t: Instant| -> bool {
        let Some(zone) = zone else {
            // Unbound calls may go anywhere: some region is always up.
            return false;
        };
        let members = zones.get(zone).cloned().unwrap_or_default();
        members.iter().all(|m| {
            windows
                .iter()
                .any(|(from, to, chaos)| chaos.outage() == Some(m.as_str()) && t >= *from && t < *to + recovery)
        })
    };
    let mut reports: Vec<PhaseReport> = windows
        .iter()
        .enumerate()
        .map(|(i, (from, to, chaos))| PhaseReport {
            phase: i,
            from_s: from.duration_since(start).as_secs(),
            to_s: to.duration_since(start).as_secs(),
            chaos: chaos.describe(),
            ..PhaseReport::default()
        })
        .collect();
    let (mut calls, mut failed_idempotent, mut violations) = (0usize, 0usize, 0usize);
    let (mut outage_fail_fast, mut outage_other) = (0usize, 0usize);
    for (class, zone, record) in &all {
        calls += 1;
        let phase = windows.iter().position(|(from, to, _)| record.sent >= *from && record.sent < *to).unwrap_or(0);
        let report = &mut reports[phase];
        report.calls += 1;
        if let Some(region) = &record.region {
            *report.served.entry(region.clone()).or_default() += 1;
            let allowed = zone.as_ref().is_none_or(|z| zones.get(z).is_some_and(|rs| rs.contains(region)));
            if !allowed {
                violations += 1;
            }
        }
        if record.code != 0 {
            report.failed += 1;
            let reason = record.reason.clone().unwrap_or_else(|| format!("grpc-{}", record.code));
            *report.reasons.entry(reason.clone()).or_default() += 1;
            if outage(zone, record.sent) {
                report.failed_allowed += 1;
                if reason == "no-available-region" {
                    outage_fail_fast += 1;
                } else {
                    outage_other += 1;
                }
            } else {
                failed_idempotent += 1;
                if report.failed - report.failed_allowed <= 3 {
                    eprintln!(
                        "soak: failed at {:.1} s ({class}): code {} {:?} reason {:?} primary {:?} decision {:?}",
                        record.sent.duration_since(start).as_secs_f64(),
                        record.code,
                        record.message,
                        record.reason,
                        record.primary,
                        record.decision
                    );
                }
            }
        }
    }
    for r in &reports {
        let served: Vec<String> = r.served.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let reasons: Vec<String> = r.reasons.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "phase {:>2} {:>4}–{:<4}s {:<44} calls={:<6} failed={:<4} (no region: {:<4}) served: {}{}",
            r.phase,
            r.from_s,
            r.to_s,
            r.chaos,
            r.calls,
            r.failed,
            r.failed_allowed,
            served.join(" "),
            if reasons.is_empty() { String::new() } else { format!("  failures: {}", reasons.join(" ")) }
        );
    }
    // Mean RSS per process of each kind: the second minute against the last.
    let mean = |kinds: &[&str], from: Duration, to: Duration| -> f64 {
        let values: Vec<f64> = memory
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .flat_map(|(_, s)| s.iter().filter(|(k, _)| kinds.contains(k)).map(|(_, b)| *b as f64))
            .collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64 / 1_048_576.0
        }
    };
    let end = start.elapsed();
    let minute = Duration::from_secs(60);
    let mut memories = BTreeMap::new();
    for (label, kinds) in [("sidecar", &["sidecar"][..]), ("envoy", &["gateway", "caller-proxy"][..])] {
        let second = mean(kinds, minute, minute * 2);
        let last = mean(kinds, end.saturating_sub(minute), end);
        let ratio = if second > 0.0 { last / second } else { f64::NAN };
        println!("memory {label}: second minute {second:.1} MB per process, last minute {last:.1} MB ({ratio:.3}×)");
        memories.insert(label, Memory { second_minute_mb: second, last_minute_mb: last, ratio });
    }
    println!(
        "no-region failures: {outage_fail_fast} with the fail-fast reason, {outage_other} otherwise (calls in flight when the zone's last region went)"
    );
    let max_rss_mb = max_rss as f64 / 1_048_576.0;
    println!(
        "soak: calls={calls} failed_idempotent={failed_idempotent} residency_violations={violations} max_rss_mb={max_rss_mb:.0}"
    );
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "calls": calls,
            "failed_idempotent": failed_idempotent,
            "residency_violations": violations,
            "max_rss_mb": max_rss_mb,
            "no_region_failures": { "fail_fast": outage_fail_fast, "other": outage_other },
            "memory": memories,
            "phases": reports,
            "seed": args.seed,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let grew = memories.values().any(|m| m.ratio.is_finite() && (m.ratio - 1.0).abs() > 0.10);
    if failed_idempotent > 0 || violations > 0 || grew {
        std::process::exit(1);
    }
    Ok(())
}

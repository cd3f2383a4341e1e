//! The local mesh's regional autoscalers: one thread per region, so a
//! region whose sidecars hang or whose gateway stalls never delays another
//! region's decisions.
//!
//! Each thread scales every version label of its region that a model with
//! `autoscaling` runs there, with `meridian_autoscale`'s Kubernetes HPA
//! algorithm on the live metrics of that version's sidecars (scraped four
//! times per sync period and averaged, as a Prometheus rate would):
//!
//! - `inFlightPerReplica`: `meridian_inference_pending_requests` summed
//!   over the replicas, per replica;
//! - `queueToComputeRatio`: over the period, the growth of the queue-time
//!   sum over the growth of the compute time per call (request time minus
//!   queue time).
//!
//! A scale-up starts a sidecar at the next free address of the region's
//! block (same repository and flags as the version's others), publishes
//! the policy with it (the xDS server pushes the gateway's clusters) and
//! waits until the gateway lists it. A scale-down drains the newest
//! replica: it leaves the policy first, and once the gateway no longer
//! lists it the sidecar gets SIGTERM — it reports NOT_SERVING, finishes
//! the calls it has and exits — so no call is lost. The filter sees the
//! change through its load signals (each answer's queue depth).
//!
//! Every decision is exported (`/metrics`: desired, current, the metric
//! and its target, decisions by reason, scale events by direction) and
//! each change is logged to stderr with its reason.

use crate::mesh::{lock, Publisher, Server, Servers, MODEL};
use crate::prometheus::parse_text;
use crate::sidecar::Sidecar;
use anyhow::{Context, Result};
use meridian_autoscale::{Autoscaler, Decision, Observation, Target};
use meridian_mesh_config::policy::MeshPolicy;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the mesh runs its autoscalers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscalingOptions {
    /// Where the decisions' `/metrics` listens (port 0: a free port).
    pub metrics_listen: SocketAddr,
    /// How long a started replica may take to appear at the gateway, and a
    /// drained one to leave it.
    pub gateway_wait: Duration,
}

impl Default for AutoscalingOptions {
    fn default() -> Self {
        Self { metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)), gateway_wait: Duration::from_secs(15) }
    }
}

/// The (version label, version number, model) pairs some model's
/// `autoscaling` covers, in the policy's order (the first model wins a
/// label two models share: the local mesh serves one model).
pub fn scaled_versions(policy: &MeshPolicy) -> impl Iterator<Item = (String, u64, String)> + '_ {
    let mut seen = Vec::new();
    policy.resolved_models().into_iter().filter(|(_, m)| m.autoscaling.is_some()).flat_map(move |(name, m)| {
        let fresh: Vec<(String, u64, String)> = m
            .resolved_versions()
            .into_iter()
            .filter(|v| !seen.contains(&v.name))
            .map(|v| (v.name.clone(), v.number(), name.clone()))
            .collect();
        seen.extend(fresh.iter().map(|(l, _, _)| l.clone()));
        fresh
    })
}

/// What the mesh hands a region's autoscaler.
#[derive(Debug, Clone)]
pub struct RegionHandle {
    /// The region.
    pub name: String,
    /// Its address block (`127.0.N.0/24`).
    pub block: String,
    /// Its gateway's admin address.
    pub gateway_admin: SocketAddr,
    /// Its servers.
    pub(crate) servers: Servers,
}

/// The last decision for one (region, version).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The region.
    pub region: String,
    /// The version label.
    pub version: String,
    /// What the autoscaler decided.
    pub decision: Decision,
    /// The replicas after acting on it.
    pub replicas: usize,
    /// Every replica count it has had, in order (the first is the start).
    pub history: Vec<usize>,
}

/// The decisions' Prometheus series.
#[derive(Debug, Clone)]
struct Exported {
    registry: Registry,
    desired: IntGaugeVec,
    current: IntGaugeVec,
    metric: GaugeVec,
    target: GaugeVec,
    decisions: IntCounterVec,
    scale_events: IntCounterVec,
    errors: IntCounterVec,
}

impl Exported {
    fn new() -> Result<Self> {
        let rv = &["region", "version"];
        let registry = Registry::new();
        let desired = IntGaugeVec::new(
            Opts::new("meridian_autoscaler_desired_replicas", "Replicas the last decision asked for."),
            rv,
        )?;
        let current = IntGaugeVec::new(
            Opts::new("meridian_autoscaler_current_replicas", "Replicas after the last decision."),
            rv,
        )?;
        let metric = GaugeVec::new(
            Opts::new("meridian_autoscaler_metric_value", "The scaling metric as the last decision saw it."),
            &["region", "version", "metric"],
        )?;
        let target = GaugeVec::new(
            Opts::new("meridian_autoscaler_metric_target", "The scaling metric's target."),
            &["region", "version", "metric"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("meridian_autoscaler_decisions_total", "Decisions by the reason that had the last word."),
            &["region", "version", "reason"],
        )?;
        let scale_events = IntCounterVec::new(
            Opts::new("meridian_autoscaler_scale_events_total", "Replica count changes by direction (up, down)."),
            &["region", "version", "direction"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("meridian_autoscaler_errors_total", "Replicas that failed to start or drain."),
            rv,
        )?;
        for c in [
            Box::new(desired.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(current.clone()),
            Box::new(metric.clone()),
            Box::new(target.clone()),
            Box::new(decisions.clone()),
            Box::new(scale_events.clone()),
            Box::new(errors.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Self { registry, desired, current, metric, target, decisions, scale_events, errors })
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Every region's autoscaler, its decisions' `/metrics`, and (for a mesh
/// serving the user's policy file) the watcher that republishes it.
/// Dropping it stops them all.
#[derive(Debug)]
pub struct Autoscalers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    status: Arc<Mutex<BTreeMap<(String, String), Status>>>,
    metrics_addr: SocketAddr,
    /// Serves `/metrics`; shut down without blocking (a mesh may be
    /// dropped inside an async test).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Autoscalers {
    /// Starts a thread per region that runs some scaled version.
    pub(crate) fn start(
        policy: &MeshPolicy,
        regions: &[RegionHandle],
        publisher: Arc<Publisher>,
        options: &AutoscalingOptions,
    ) -> Result<Self> {
        let exported = Exported::new()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("autoscaler-metrics")
            .enable_all()
            .build()?;
        let served = exported.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(options.metrics_listen))
            .with_context(|| format!("binding the autoscaler's metrics to {}", options.metrics_listen))?;
        let metrics_addr = listener.local_addr()?;
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let served = served.clone();
                async move { served.render() }
            }),
        );
        runtime.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });

        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let mut threads = Vec::new();
        for region in regions {
            let mut versions = Vec::new();
            for (label, number, model) in scaled_versions(policy) {
                let Some(scaling) = policy.models.get(&model).and_then(|m| m.autoscaling.clone()) else { continue };
                let runs_here = lock(&region.servers).iter().any(|s| s.version == label);
                if !runs_here {
                    continue;
                }
                let spec = scaling.spec_for(&region.name).map_err(anyhow::Error::msg)?;
                let period = Duration::from_millis(spec.sync_period_ms);
                versions.push(ScaledVersion {
                    label,
                    number,
                    target: spec.target,
                    autoscaler: Autoscaler::new(spec),
                    period,
                    samples: Vec::new(),
                    last_sums: None,
                    next_decision: Instant::now() + period,
                    history: vec![],
                });
            }
            if versions.is_empty() {
                continue;
            }
            let mut scaler = RegionScaler {
                region: region.clone(),
                versions,
                publisher: publisher.clone(),
                exported: exported.clone(),
                status: status.clone(),
                gateway_wait: options.gateway_wait,
            };
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("autoscaler-{}", region.name))
                    .spawn(move || scaler.run(&stop))?,
            );
        }
        if publisher.watches_source() {
            let watch_stop = stop.clone();
            threads.push(std::thread::Builder::new().name("policy-watch".into()).spawn(move || {
                while !watch_stop.load(Ordering::Relaxed) {
                    if let Err(e) = publisher.sync_source() {
                        eprintln!("autoscaler: republishing the policy: {e:#}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })?);
        }
        Ok(Self { stop, threads, status, metrics_addr, runtime: Some(runtime) })
    }

    /// Where the decisions' `/metrics` listens.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The last decision of every (region, version), with its history.
    pub fn status(&self) -> Vec<Status> {
        lock(&self.status).values().cloned().collect()
    }

    /// The last decision for `region`'s `version`.
    pub fn status_of(&self, region: &str, version: &str) -> Option<Status> {
        lock(&self.status).get(&(region.to_string(), version.to_string())).cloned()
    }
}

impl Drop for Autoscalers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One scaled version of a region.
#[derive(Debug)]
struct ScaledVersion {
    label: String,
    number: u64,
    target: Target,
    autoscaler: Autoscaler,
    period: Duration,
    /// In-flight per replica, sampled since the last decision.
    samples: Vec<f64>,
    /// (queue seconds, request seconds) summed over the replicas at the
    /// last decision, for the ratio's growth.
    last_sums: Option<(f64, f64)>,
    next_decision: Instant,
    history: Vec<usize>,
}

/// What one scrape of a version's replicas read.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    replicas: usize,
    pending: f64,
    queue_sum: f64,
    request_sum: f64,
}

struct RegionScaler {
    region: RegionHandle,
    versions: Vec<ScaledVersion>,
    publisher: Arc<Publisher>,
    exported: Exported,
    status: Arc<Mutex<BTreeMap<(String, String), Status>>>,
    gateway_wait: Duration,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RegionScaler {
    fn run(&mut self, stop: &AtomicBool) {
        let step = self.versions.iter().map(|v| v.period / 4).min().unwrap_or(Duration::from_millis(250));
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            next += step;
            // The controller's clock: wake at the next sample, checking for stop.
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
            for i in 0..self.versions.len() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                self.tick(i);
            }
            if Instant::now() > next + step {
                next = Instant::now();
            }
        }
    }

    fn tick(&mut self, i: usize) {
        let reading = self.read(&self.versions[i].label, self.versions[i].number);
        let v = &mut self.versions[i];
        if reading.replicas > 0 {
            v.samples.push(reading.pending / reading.replicas as f64);
        }
        if Instant::now() < v.next_decision {
            return;
        }
        v.next_decision += v.period;
        let metric = match v.target {
            Target::InFlightPerReplica(_) => {
                let mean = (!v.samples.is_empty()).then(|| v.samples.iter().sum::<f64>() / v.samples.len() as f64);
                v.samples.clear();
                mean
            }
            Target::QueueToComputeRatio(_) => {
                let sums = (reading.queue_sum, reading.request_sum);
                let ratio = v.last_sums.and_then(|(q0, r0)| {
                    let (dq, dr) = (sums.0 - q0, sums.1 - r0);
                    // Counters of drained replicas leave the sum: no reading then.
                    (dq >= 0.0 && dr > dq).then(|| dq / (dr - dq))
                });
                v.last_sums = Some(sums);
                ratio
            }
        };
        let current = lock(&self.region.servers).iter().filter(|s| s.version == v.label).count();
        let decision = v.autoscaler.decide(Observation { now_ms: unix_ms(), current: current as u32, metric });
        let label = v.label.clone();
        let target = v.target;
        let replicas = self.act(&label, &decision);
        let v = &mut self.versions[i];
        if v.history.is_empty() {
            v.history.push(current);
        }
        if v.history.last() != Some(&replicas) {
            v.history.push(replicas);
        }
        let history = v.history.clone();
        self.export(&label, target, &decision, replicas);
        lock(&self.status).insert(
            (self.region.name.clone(), label.clone()),
            Status { region: self.region.name.clone(), version: label, decision, replicas, history },
        );
    }

    /// Scrapes the version's running replicas.
    fn read(&self, label: &str, number: u64) -> Reading {
        let targets: Vec<SocketAddr> = lock(&self.region.servers)
            .iter()
            .filter(|s| s.version == label && s.process.is_some())
            .map(|s| s.metrics)
            .collect();
        let version = number.to_string();
        let mut reading = Reading::default();
        // A paused replica must not hold the region's decisions.
        let within = self.versions.iter().map(|v| v.period / 2).min().unwrap_or(Duration::from_millis(500));
        for addr in targets {
            let Ok(response) = crate::http::request_within(addr, "GET", "/metrics", &[], within) else { continue };
            reading.replicas += 1;
            for sample in parse_text(&response.body) {
                let ours = sample.labels.get("model").is_some_and(|m| m == MODEL)
                    && sample.labels.get("version").is_some_and(|v| *v == version);
                if !ours {
                    continue;
                }
                match sample.name.as_str() {
                    "meridian_inference_pending_requests" => reading.pending += sample.value,
                    "meridian_inference_queue_duration_seconds_sum" => reading.queue_sum += sample.value,
                    "meridian_inference_request_duration_seconds_sum" => reading.request_sum += sample.value,
                    _ => {}
                }
            }
        }
        reading
    }

    /// Starts or drains replicas until the count is the decision's (or
    /// one fails); returns the count after.
    fn act(&mut self, label: &str, decision: &Decision) -> usize {
        let (from, to) = (decision.current as usize, decision.desired as usize);
        if from != to {
            eprintln!(
                "autoscaler {}/{label}: {from} → {to} replicas ({}; metric {})",
                self.region.name,
                decision.reason,
                decision.metric.map_or("unread".to_string(), |m| format!("{m:.2}"))
            );
        }
        let mut count = from;
        while count < to {
            match self.add_replica(label) {
                Ok(()) => count += 1,
                Err(e) => {
                    eprintln!("autoscaler {}/{label}: starting a replica: {e:#}", self.region.name);
                    self.exported.errors.with_label_values(&[&self.region.name, label]).inc();
                    break;
                }
            }
        }
        while count > to {
            match self.drain_replica(label) {
                Ok(()) => count -= 1,
                Err(e) => {
                    eprintln!("autoscaler {}/{label}: draining a replica: {e:#}", self.region.name);
                    self.exported.errors.with_label_values(&[&self.region.name, label]).inc();
                    break;
                }
            }
        }
        lock(&self.region.servers).iter().filter(|s| s.version == label).count()
    }

    /// The next address of the region's block no server uses (from .100).
    fn free_ip(&self) -> Result<IpAddr> {
        let prefix = self.region.block.strip_suffix(".0/24").context("the region's block is not a /24")?;
        let used: Vec<IpAddr> = lock(&self.region.servers).iter().map(|s| s.grpc.ip()).collect();
        (100..250)
            .filter_map(|host| format!("{prefix}.{host}").parse::<IpAddr>().ok())
            .find(|ip| !used.contains(ip))
            .context("no free address left in the region's block")
    }

    fn add_replica(&mut self, label: &str) -> Result<()> {
        let (repository, args) = lock(&self.region.servers)
            .iter()
            .find(|s| s.version == label)
            .map(|s| (s.repository.clone(), s.args.clone()))
            .with_context(|| format!("no server of {label} to copy"))?;
        let ip = self.free_ip()?;
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = Sidecar::start_at(&format!("{ip}:0"), &format!("{ip}:0"), &repository, &arg_refs)?;
        let (grpc, metrics) = (process.grpc(), process.metrics());
        lock(&self.region.servers).push(Server {
            version: label.to_string(),
            repository,
            args,
            process: Some(process),
            grpc,
            metrics,
            autoscaled: true,
        });
        self.publisher.publish()?;
        self.wait_gateway(grpc, true)
    }

    fn drain_replica(&mut self, label: &str) -> Result<()> {
        let server = {
            let mut servers = lock(&self.region.servers);
            // The newest first; a region keeps at least one server per version.
            let of_version = servers.iter().filter(|s| s.version == label).count();
            anyhow::ensure!(of_version > 1, "the last server of {label} stays");
            let at = servers.iter().rposition(|s| s.version == label).context("no server of the version")?;
            servers.remove(at)
        };
        let published = self.publisher.publish();
        let left = published.and_then(|()| self.wait_gateway(server.grpc, false));
        if let Err(e) = &left {
            eprintln!("autoscaler {}/{label}: {} did not leave the gateway: {e:#}", self.region.name, server.grpc);
        }
        if let Some(process) = server.process {
            // NOT_SERVING, the calls it holds finish, then it exits.
            let status = process.terminate()?;
            anyhow::ensure!(status.success(), "{} exited with {status} while draining", server.grpc);
        }
        Ok(())
    }

    /// Waits until the gateway lists `addr` among its hosts (or no longer does).
    fn wait_gateway(&self, addr: SocketAddr, present: bool) -> Result<()> {
        let deadline = Instant::now() + self.gateway_wait;
        let needle = format!("::{addr}::");
        loop {
            let listed =
                crate::http::request_within(self.region.gateway_admin, "GET", "/clusters", &[], Duration::from_secs(2))
                    .map(|r| r.body.contains(&needle))
                    .unwrap_or(!present);
            if listed == present {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the gateway still {} {addr} after {:?}",
                if present { "lacks" } else { "lists" },
                self.gateway_wait
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn export(&self, label: &str, target: Target, decision: &Decision, replicas: usize) {
        let (e, r) = (&self.exported, self.region.name.as_str());
        e.desired.with_label_values(&[r, label]).set(i64::from(decision.desired));
        e.current.with_label_values(&[r, label]).set(replicas as i64);
        let metric = target.metric_name();
        e.target.with_label_values(&[r, label, metric]).set(target.value());
        if let Some(m) = decision.metric {
            e.metric.with_label_values(&[r, label, metric]).set(m);
        }
        e.decisions.with_label_values(&[r, label, decision.reason.as_str()]).inc();
        if decision.desired > decision.current {
            e.scale_events.with_label_values(&[r, label, "up"]).inc();
        } else if decision.desired < decision.current {
            e.scale_events.with_label_values(&[r, label, "down"]).inc();
        }
    }
}

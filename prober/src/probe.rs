//! One probe round, and the loop that runs a round every interval.

use crate::metrics::ProbeMetrics;
use crate::targets::{DriftTarget, SyntheticTarget, Targets};
use meridian_mesh_config::policy::{MeshPolicy, Policy};
use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::reference::ReferenceSet;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// How the prober runs.
#[derive(Debug, Clone)]
pub struct ProberConfig {
    /// The `MeshPolicy` file, re-read every round.
    pub policy_file: PathBuf,
    /// Each version label's reference set.
    pub references: BTreeMap<String, Arc<ReferenceSet>>,
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// Deadline of each call.
    pub timeout: Duration,
    /// Mutual TLS to the gateways (a mesh whose gateways require it); the
    /// caller-side proxy's listener is called in plaintext, as callers do.
    pub gateway_tls: Option<ClientTlsConfig>,
}

/// What a drift check found.
#[derive(Debug, Clone, PartialEq)]
pub enum DriftResult {
    /// The answer agrees with the reference within its tolerance.
    Ok(f64),
    /// The answer is further from the reference than the tolerance.
    Drift(f64),
    /// No comparable answer (the call failed, or its outputs differ in kind).
    Error(String),
}

/// A round's drift check of one (region, version).
#[derive(Debug, Clone)]
pub struct DriftCheck {
    /// The region.
    pub region: String,
    /// The version label.
    pub version: String,
    /// What it found.
    pub result: DriftResult,
}

/// A round's synthetic call as one region's callers.
#[derive(Debug, Clone)]
pub struct SyntheticCall {
    /// The callers' region.
    pub region: String,
    /// The region that served it (the gateway's `x-meridian-region`).
    pub served_region: Option<String>,
    /// End-to-end latency.
    pub latency: Duration,
    /// `Ok`, or the gRPC status it failed with.
    pub result: Result<(), String>,
}

/// Everything one round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Drift checks.
    pub drift: Vec<DriftCheck>,
    /// Synthetic calls.
    pub synthetic: Vec<SyntheticCall>,
}

/// The prober: its targets (from the policy), its connections and metrics.
#[derive(Debug)]
pub struct Prober {
    config: ProberConfig,
    metrics: ProbeMetrics,
    policy: Option<MeshPolicy>,
    channels: HashMap<String, Channel>,
}

impl Prober {
    /// A prober exporting into `metrics`.
    pub fn new(config: ProberConfig, metrics: ProbeMetrics) -> Self {
        for (label, reference) in &config.references {
            metrics.tolerance.with_label_values(&[reference.model.as_str(), label.as_str()]).set(reference.tolerance);
        }
        Self { config, metrics, policy: None, channels: HashMap::new() }
    }

    /// Runs a round every interval, forever.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }

    /// Re-reads the policy (keeping the last good one if it no longer
    /// parses), probes every target once and records what it found.
    pub async fn round(&mut self) -> Round {
        match std::fs::read_to_string(&self.config.policy_file) {
            Ok(text) => match Policy::parse(&text) {
                Ok(policy) => self.policy = Some(policy.into_spec()),
                Err(e) => {
                    tracing::warn!(file = %self.config.policy_file.display(), "policy refused, keeping the last one: {e}")
                }
            },
            Err(e) => tracing::warn!(file = %self.config.policy_file.display(), "cannot read the policy: {e}"),
        }
        let Some(policy) = &self.policy else { return Round::default() };
        let targets = Targets::from_policy(policy, &self.config.references);
        let mut round = Round::default();
        for target in &targets.drift {
            let result = self.drift(target).await;
            let m = &self.metrics;
            let labels = [target.reference.model.as_str(), target.version.as_str(), target.region.as_str()];
            let (value, outcome) = match &result {
                DriftResult::Ok(e) => (*e, "ok"),
                DriftResult::Drift(e) => (*e, "drift"),
                DriftResult::Error(message) => {
                    tracing::debug!(region = %target.region, version = %target.version, "drift check failed: {message}");
                    (f64::NAN, "error")
                }
            };
            m.max_abs_error.with_label_values(&labels).set(value);
            m.drift_checks.with_label_values(&[labels[0], labels[1], labels[2], outcome]).inc();
            round.drift.push(DriftCheck { region: target.region.clone(), version: target.version.clone(), result });
        }
        for target in &targets.synthetic {
            let call = self.synthetic(target).await;
            let served = call.served_region.as_deref().unwrap_or("none");
            let outcome = if call.result.is_ok() { "ok" } else { "error" };
            self.metrics.synthetic.with_label_values(&[&call.region, served, outcome]).inc();
            if call.result.is_ok() {
                self.metrics.synthetic_duration.with_label_values(&[&call.region]).observe(call.latency.as_secs_f64());
            }
            round.synthetic.push(call);
        }
        self.metrics.rounds.inc();
        round
    }

    fn client(&mut self, addr: &str, tls: bool) -> Result<GrpcInferenceServiceClient<Channel>, String> {
        if let Some(channel) = self.channels.get(addr) {
            return Ok(GrpcInferenceServiceClient::new(channel.clone()));
        }
        let tls = self.config.gateway_tls.clone().filter(|_| tls);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("`{addr}` is not an address: {e}"))?
            .connect_timeout(self.config.timeout);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS to {addr}: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        self.channels.insert(addr.to_string(), channel.clone());
        Ok(GrpcInferenceServiceClient::new(channel))
    }

    async fn drift(&mut self, target: &DriftTarget) -> DriftResult {
        let mut client = match self.client(&target.gateway, true) {
            Ok(c) => c,
            Err(e) => return DriftResult::Error(e),
        };
        let mut request = tonic::Request::new(target.reference.request(""));
        request.set_timeout(self.config.timeout);
        let md = request.metadata_mut();
        for (name, value) in [(headers::ROUTE_VERSION, &target.version), (headers::MODEL, &target.reference.model)] {
            match value.parse() {
                Ok(v) => {
                    md.insert(name, v);
                }
                Err(_) => return DriftResult::Error(format!("`{value}` cannot be a header value")),
            }
        }
        match client.model_infer(request).await {
            Err(status) => DriftResult::Error(format!("{:?}: {}", status.code(), status.message())),
            Ok(answer) => match target.reference.max_abs_error(answer.get_ref()) {
                Err(e) => DriftResult::Error(e.to_string()),
                Ok(e) if e <= target.reference.tolerance => DriftResult::Ok(e),
                Ok(e) => DriftResult::Drift(e),
            },
        }
    }

    async fn synthetic(&mut self, target: &SyntheticTarget) -> SyntheticCall {
        let mut call = SyntheticCall {
            region: target.region.clone(),
            served_region: None,
            latency: Duration::ZERO,
            result: Ok(()),
        };
        let mut client = match self.client(&target.proxy, false) {
            Ok(c) => c,
            Err(e) => {
                call.result = Err(e);
                return call;
            }
        };
        let mut request = tonic::Request::new(target.reference.request(""));
        request.set_timeout(self.config.timeout);
        let md = request.metadata_mut();
        for (name, value) in [(headers::MODEL, &target.reference.model), (headers::CALLER_REGION, &target.region)] {
            if let Ok(v) = value.parse() {
                md.insert(name, v);
            }
        }
        let started = Instant::now();
        let answer = client.model_infer(request).await;
        call.latency = started.elapsed();
        match answer {
            Ok(answer) => {
                call.served_region =
                    answer.metadata().get(headers::REGION).and_then(|v| v.to_str().ok()).map(str::to_string);
            }
            Err(status) => {
                call.served_region =
                    status.metadata().get(headers::REGION).and_then(|v| v.to_str().ok()).map(str::to_string);
                call.result = Err(format!("{:?}: {}", status.code(), status.message()));
            }
        }
        call
    }
}

//! Loading one model's versions: prepare, check, warm up, start batchers.

use super::model_config::{ModelConfig, RateLimit, VersionPolicy};
use super::{Fingerprint, Model, ModelState};
use crate::batcher::policy::BatchPolicy;
use crate::batcher::{Batcher, BatcherConfig, Rejected, Submitted, TraceLink};
use crate::executor::device::Devices;
use crate::executor::{Executor, Signature};
use crate::metrics::Metrics;
use crate::prediction::PredictionWindows;
use crate::stats::{VersionMetrics, VersionObserver, VersionStats};
use crate::tensor::Tensor;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The file each version folder holds.
pub(super) const MODEL_FILE: &str = "model.onnx";

/// A version ready to serve: its signature, batcher and statistics.
#[derive(Debug)]
pub struct LoadedVersion {
    /// The version number.
    pub version: u64,
    /// Inputs and outputs, from the ONNX file.
    pub signature: Signature,
    /// The model's configuration.
    pub config: Arc<ModelConfig>,
    /// Its batcher.
    pub batcher: Batcher,
    /// Cumulative statistics.
    pub stats: Arc<VersionStats>,
    /// Where it runs (`cpu`, `cuda:N`).
    pub device: String,
    metrics: VersionMetrics,
}

impl LoadedVersion {
    /// Queues a request (see [`Batcher::submit_traced`]) and counts it pending.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        level: usize,
        deadline: Option<Instant>,
        link: Option<TraceLink>,
    ) -> Result<Submitted, Rejected> {
        self.metrics.pending.inc();
        let submitted = self.batcher.submit_traced(inputs, level, deadline, link);
        if submitted.is_err() {
            self.metrics.pending.dec();
        }
        submitted
    }

    /// Counts a call this version served (`requests_total{status="OK"}`).
    pub fn count_served(&self) {
        self.metrics.served.inc();
    }
}

/// A model's rate limits (governor token buckets).
#[derive(Debug)]
pub struct ModelLimits {
    model: Option<DefaultDirectRateLimiter>,
    per_caller: Option<DefaultKeyedRateLimiter<String>>,
}

/// Which limit refused a request, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// "model" or "caller '<id>'".
    pub scope: String,
    /// When a token is available again.
    pub retry_after: Duration,
}

impl ModelLimits {
    fn new(limit: &RateLimit) -> Option<Self> {
        let quota = |rps: u32| {
            let rate = NonZeroU32::new(rps)?;
            let burst = limit.burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Some(Quota::per_second(rate).allow_burst(burst))
        };
        let model = limit.requests_per_second.and_then(quota).map(governor::RateLimiter::direct);
        let per_caller = limit.per_caller_requests_per_second.and_then(quota).map(governor::RateLimiter::keyed);
        (model.is_some() || per_caller.is_some()).then_some(Self { model, per_caller })
    }

    /// Takes a token from the caller's bucket, then the model's.
    pub fn check(&self, caller: Option<&str>) -> Result<(), Limited> {
        let now = DefaultClock::default().now();
        if let (Some(limiter), Some(caller)) = (&self.per_caller, caller) {
            limiter
                .check_key(&caller.to_string())
                .map_err(|n| Limited { scope: format!("caller '{caller}'"), retry_after: n.wait_time_from(now) })?;
        }
        if let Some(limiter) = &self.model {
            limiter.check().map_err(|n| Limited { scope: "model".into(), retry_after: n.wait_time_from(now) })?;
        }
        Ok(())
    }
}

/// Loads every version the policy selects. Runs on a blocking thread.
pub(super) fn load_model(devices: &Devices, metrics: &Metrics, name: &str, dir: &Path) -> Result<Model, String> {
    let fingerprint = Fingerprint::of(dir);
    let config = Arc::new(ModelConfig::load(dir).map_err(|e| e.to_string())?);
    let numbers = select_versions(dir, &config.version_policy, config.file_name())?;
    let mut versions = BTreeMap::new();
    for number in numbers {
        let started = Instant::now();
        let version = load_version(devices, metrics, name, number, dir, &config)?;
        metrics.loaded(name, number, started.elapsed().as_secs_f64(), config.instances);
        tracing::info!(model = name, version = number, seconds = started.elapsed().as_secs_f64(), "version loaded");
        versions.insert(number, Arc::new(version));
    }
    Ok(Model {
        name: name.to_string(),
        state: ModelState::Ready,
        limits: config.rate_limit.as_ref().and_then(ModelLimits::new).map(Arc::new),
        config: Some(config),
        versions,
        fingerprint,
    })
}

fn select_versions(dir: &Path, policy: &VersionPolicy, config_file: &str) -> Result<Vec<u64>, String> {
    let mut available: Vec<u64> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot list versions: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
        .filter(|v| dir.join(v.to_string()).join(MODEL_FILE).is_file())
        .collect();
    available.sort_unstable();
    if available.is_empty() {
        return Err(format!(
            "{}: no version folder holds {MODEL_FILE} (expected <model>/<version>/{MODEL_FILE})",
            dir.display()
        ));
    }
    Ok(match policy {
        VersionPolicy::Latest(n) => available.iter().rev().take(*n as usize).rev().copied().collect(),
        VersionPolicy::All {} => available,
        VersionPolicy::Specific(wanted) => {
            if let Some(missing) = wanted.iter().find(|v| !available.contains(v)) {
                return Err(format!(
                    "{}: version_policy.specific names version {missing}, but {missing}/{MODEL_FILE} does not exist (found {available:?})",
                    dir.join(config_file).display()
                ));
            }
            let mut wanted = wanted.clone();
            wanted.sort_unstable();
            wanted.dedup();
            wanted
        }
    })
}

fn load_version(
    devices: &Devices,
    metrics: &Metrics,
    name: &str,
    number: u64,
    dir: &Path,
    config: &Arc<ModelConfig>,
) -> Result<LoadedVersion, String> {
    let path = dir.join(number.to_string()).join(MODEL_FILE);
    let options = config.prepare_options();
    // A device the config pins and this server lacks is the config's fault: name the file.
    let config_path = dir.join(config.file_name());
    devices.runtime_for(config.device).map_err(|e| format!("{}: {e}", config_path.display()))?;
    let (executor, device) = devices.prepare(config.device, &path, &options)?;
    let mut executor: Arc<dyn Executor> = Arc::from(executor);
    if config.execute_delay_us > 0 {
        let delay = std::time::Duration::from_micros(config.execute_delay_us);
        executor = Arc::new(crate::executor::delay::Delayed::new(executor, delay));
    }
    tracing::info!(model = name, version = number, device, precision = config.precision.name(), "prepared");
    let signature = executor.signature().clone();
    check_batchable(&signature, config.max_batch_size, &path)?;
    let warnings = config
        .declared
        .check(&signature, config.max_batch_size)
        .map_err(|e| format!("{}: {e} (model file {})", config_path.display(), path.display()))?;
    for warning in warnings {
        tracing::warn!(file = %config_path.display(), "{warning}");
    }
    warm_up(executor.as_ref(), config, &path)?;

    let dynamic = config.dynamic_batching.as_ref();
    let batcher_config = BatcherConfig {
        policy: BatchPolicy {
            dynamic: dynamic.is_some(),
            max_rows: config.max_batch_size.max(1),
            preferred: dynamic.map(|d| d.preferred_batch_sizes.clone()).unwrap_or_default(),
            max_queue_delay: config.max_queue_delay(),
        },
        max_queue_size: dynamic.map(|d| d.max_queue_size).unwrap_or(1024),
        max_queue_bytes: dynamic
            .map_or(crate::repository::model_config::DEFAULT_MAX_QUEUE_BYTES, |d| d.max_queue_bytes),
        priority_levels: dynamic.map(|d| d.priority_levels as usize).unwrap_or(1),
        instances: config.instances,
    };
    let stats = Arc::new(VersionStats::default());
    let version_metrics = metrics.version(name, number);
    let observer = Arc::new(VersionObserver {
        stats: stats.clone(),
        metrics: version_metrics.clone(),
        span_name: format!("batch {name}/{number}"),
        predictions: std::sync::Mutex::new(PredictionWindows::new(config.prediction_shift.window_rows)),
    });
    let batcher = Batcher::start(&format!("{name}-{number}"), executor, batcher_config, observer)
        .map_err(|e| format!("starting batcher threads: {e}"))?;
    Ok(LoadedVersion {
        version: number,
        signature,
        config: config.clone(),
        batcher,
        stats,
        device: device.to_string(),
        metrics: version_metrics,
    })
}

/// A batching model needs an open leading dimension on every input and output.
fn check_batchable(signature: &Signature, max_batch_size: usize, path: &Path) -> Result<(), String> {
    if max_batch_size == 0 {
        return Ok(());
    }
    for (kind, spec) in
        signature.inputs.iter().map(|s| ("input", s)).chain(signature.outputs.iter().map(|s| ("output", s)))
    {
        if spec.shape.first() != Some(&-1) {
            return Err(format!(
                "{}: max_batch_size is {max_batch_size} but {kind} '{}' has shape {:?} without an open batch dimension; \
                 set max_batch_size: 0 or export the model with a dynamic first dimension",
                path.display(),
                spec.name,
                spec.shape
            ));
        }
    }
    Ok(())
}

/// Runs one zero-filled batch per warmup size before the version is ready.
fn warm_up(executor: &dyn Executor, config: &ModelConfig, path: &Path) -> Result<(), String> {
    let Some(warmup) = &config.warmup else { return Ok(()) };
    for &size in &warmup.batch_sizes {
        let inputs = executor
            .signature()
            .inputs
            .iter()
            .map(|spec| {
                let mut shape: Vec<usize> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect();
                if config.max_batch_size > 0 {
                    if let Some(first) = shape.first_mut() {
                        *first = size;
                    }
                }
                Tensor::zeros(spec.dtype, shape)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: warmup inputs: {e}", path.display()))?;
        executor.run(inputs).map_err(|e| format!("{}: warmup batch of {size} failed: {e}", path.display()))?;
    }
    Ok(())
}

//! Per-version inference statistics, as Triton's ModelStatistics reports
//! them, and the Prometheus metrics that mirror them.

use crate::batcher::{BatchObserver, BatchTrace, JobError};
use crate::prediction::PredictionWindows;
use crate::tensor::Tensor;
use prometheus::{Gauge, Histogram, IntCounter, IntGauge};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A count and a total duration.
#[derive(Debug, Default)]
pub struct StatDuration {
    count: AtomicU64,
    ns: AtomicU64,
}

impl StatDuration {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// (count, total nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Ordering::Relaxed), self.ns.load(Ordering::Relaxed))
    }
}

/// Cumulative statistics of one model version.
#[derive(Debug, Default)]
pub struct VersionStats {
    /// Inferences run (rows).
    pub inference_count: AtomicU64,
    /// Batches run.
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last inference.
    pub last_inference_ms: AtomicU64,
    /// Requests that ran successfully, with their queue + compute time.
    pub success: StatDuration,
    /// Requests that failed or expired.
    pub fail: StatDuration,
    /// Time requests spent queued.
    pub queue: StatDuration,
    /// Time batches spent computing, counted per request.
    pub compute_infer: StatDuration,
    /// Per batch size: (batches, compute nanoseconds).
    pub batches: Mutex<BTreeMap<usize, (u64, u64)>>,
}

/// Prometheus series of one version (labels already applied).
#[derive(Debug, Clone)]
pub struct VersionMetrics {
    /// `meridian_inference_request_duration_seconds`.
    pub request_duration: Histogram,
    /// `meridian_inference_queue_duration_seconds`.
    pub queue: Histogram,
    /// `meridian_inference_compute_duration_seconds`.
    pub compute: Histogram,
    /// `meridian_inference_batch_size`.
    pub batch_size: Histogram,
    /// `meridian_inference_pending_requests`.
    pub pending: IntGauge,
    /// `meridian_prediction_psi`.
    pub psi: Gauge,
    /// `meridian_prediction_windows_total`.
    pub prediction_windows: IntCounter,
    /// `meridian_inference_requests_total{status="OK"}` of this version,
    /// resolved once (a served call counts without a label lookup).
    pub served: IntCounter,
}

/// Feeds [`VersionStats`] and [`VersionMetrics`] from the batcher.
#[derive(Debug)]
pub struct VersionObserver {
    /// The statistics.
    pub stats: std::sync::Arc<VersionStats>,
    /// The metrics.
    pub metrics: VersionMetrics,
    /// The name of its batches' trace spans (`batch <model>/<version>`).
    pub span_name: String,
    /// The top output's windows, for the prediction shift.
    pub predictions: Mutex<PredictionWindows>,
}

impl BatchObserver for VersionObserver {
    fn batch_ran(&self, rows: usize, requests: usize, compute: Duration, ok: bool) {
        self.metrics.compute.observe(compute.as_secs_f64());
        self.metrics.batch_size.observe(rows as f64);
        if !ok {
            return;
        }
        let s = &self.stats;
        s.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        s.execution_count.fetch_add(1, Ordering::Relaxed);
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        s.last_inference_ms.store(now_ms, Ordering::Relaxed);
        for _ in 0..requests {
            s.compute_infer.add(compute);
        }
        let mut batches = s.batches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = batches.entry(rows).or_default();
        entry.0 += 1;
        entry.1 += compute.as_nanos() as u64;
    }

    fn request_done(&self, queue_time: Duration, compute_time: Duration, result: Result<(), &JobError>) {
        self.metrics.pending.dec();
        self.metrics.queue.observe(queue_time.as_secs_f64());
        self.stats.queue.add(queue_time);
        match result {
            Ok(()) => {
                self.metrics.request_duration.observe((queue_time + compute_time).as_secs_f64());
                self.stats.success.add(queue_time + compute_time)
            }
            Err(_) => self.stats.fail.add(queue_time + compute_time),
        }
    }

    fn batch_outputs(&self, outputs: &[Tensor]) {
        let Some(top) = outputs.first() else { return };
        let completed = self.predictions.lock().unwrap_or_else(|p| p.into_inner()).observe(top);
        for psi in completed {
            self.metrics.psi.set(psi);
            self.metrics.prediction_windows.inc();
        }
    }

    fn batch_traced(&self, batch: &BatchTrace<'_>) {
        crate::telemetry::batch_span(&self.span_name, batch);
    }
}

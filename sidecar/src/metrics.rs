//! Prometheus metrics and the metrics/health HTTP listener.
//!
//! | Meridian metric | Triton's counterpart |
//! |---|---|
//! | `meridian_inference_requests_total{model,version,status}` | `nv_inference_request_success` / `nv_inference_request_failure` |
//! | `meridian_inference_request_duration_seconds{model,version}` (histogram: queue + compute of each request that ran) | `nv_inference_request_duration_us` |
//! | `meridian_inference_queue_duration_seconds{model,version}` (histogram) | `nv_inference_queue_duration_us` |
//! | `meridian_inference_compute_duration_seconds{model,version}` (histogram, per batch) | `nv_inference_compute_infer_duration_us` |
//! | `meridian_inference_batch_size{model,version}` (histogram) | `nv_inference_exec_count` / `nv_inference_count` |
//! | `meridian_inference_pending_requests{model,version}` (gauge) | `nv_inference_pending_request_count` |
//! | `meridian_model_load_duration_seconds{model,version}` (gauge) | `nv_model_load_duration_secs` |
//! | `meridian_executor_instances{model,version}` (gauge: worker threads; busy fraction = rate of the compute histogram's sum / this) | Triton's `instance_group` count |
//! | `meridian_prediction_psi{model,version}` (gauge: the last window's population stability index against the baseline window, see [`crate::prediction`]) | — |
//! | `meridian_prediction_windows_total{model,version}` (windows compared with the baseline) | — |
//! | `meridian_tls_certificate_expiry_timestamp_seconds{certificate}` (gauge) | — |
//! | `meridian_tls_reloads_total{result}` | — |
//! | `meridian_tls_handshake_failures_total{reason}` | — |

use crate::stats::VersionMetrics;
use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the sidecar exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queue: HistogramVec,
    compute: HistogramVec,
    batch_size: HistogramVec,
    pending: IntGaugeVec,
    load: GaugeVec,
    instances: IntGaugeVec,
    psi: GaugeVec,
    prediction_windows: IntCounterVec,
    tls_expiry: IntGaugeVec,
    tls_reloads: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let mv = &["model", "version"];
        let requests = IntCounterVec::new(
            Opts::new("meridian_inference_requests_total", "Inference requests by model, version and gRPC status."),
            &["model", "version", "status"],
        )
        .expect("valid metric");
        let seconds = exponential_buckets(50e-6, 2.0, 16).expect("valid buckets");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_inference_request_duration_seconds",
                "Time a request that ran spent in the server: queued and computing.",
            )
            .buckets(seconds.clone()),
            mv,
        )
        .expect("valid metric");
        let queue = HistogramVec::new(
            HistogramOpts::new("meridian_inference_queue_duration_seconds", "Time requests wait in the batcher queue.")
                .buckets(seconds.clone()),
            mv,
        )
        .expect("valid metric");
        let compute = HistogramVec::new(
            HistogramOpts::new(
                "meridian_inference_compute_duration_seconds",
                "Time a batch takes to run on the executor.",
            )
            .buckets(seconds),
            mv,
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new("meridian_inference_batch_size", "Rows per executed batch.")
                .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
            mv,
        )
        .expect("valid metric");
        let pending =
            IntGaugeVec::new(Opts::new("meridian_inference_pending_requests", "Requests queued or running."), mv)
                .expect("valid metric");
        let instances = IntGaugeVec::new(
            Opts::new(
                "meridian_executor_instances",
                "Executor instances (batch worker threads) per version: rate(meridian_inference_compute_duration_seconds_sum) \
                 divided by this is the executor's busy fraction.",
            ),
            mv,
        )
        .expect("valid metric");
        let load = GaugeVec::new(
            Opts::new("meridian_model_load_duration_seconds", "Time the last load of a version took, warmup included."),
            mv,
        )
        .expect("valid metric");
        let psi = GaugeVec::new(
            Opts::new(
                "meridian_prediction_psi",
                "Population stability index of the last window of the top output against the baseline window.",
            ),
            mv,
        )
        .expect("valid metric");
        let prediction_windows = IntCounterVec::new(
            Opts::new("meridian_prediction_windows_total", "Windows of predictions compared with the baseline."),
            mv,
        )
        .expect("valid metric");
        let tls_expiry = IntGaugeVec::new(
            Opts::new(
                "meridian_tls_certificate_expiry_timestamp_seconds",
                "When each TLS certificate in force expires (server; client_ca_N per CA of the bundle), Unix seconds.",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        let tls_reloads = IntCounterVec::new(
            Opts::new("meridian_tls_reloads_total", "TLS material reloads by result (applied or refused)."),
            &["result"],
        )
        .expect("valid metric");
        let tls_handshake_failures = IntCounterVec::new(
            Opts::new(
                "meridian_tls_handshake_failures_total",
                "TLS handshakes refused or timed out, by reason (no_client_certificate, unknown_issuer, expired, \
                 bad_certificate, not_tls, incompatible, timeout, io, other).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for c in [
            Box::new(tls_expiry.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tls_reloads.clone()),
            Box::new(tls_handshake_failures.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(queue.clone()),
            Box::new(compute.clone()),
            Box::new(batch_size.clone()),
            Box::new(pending.clone()),
            Box::new(load.clone()),
            Box::new(instances.clone()),
            Box::new(psi.clone()),
            Box::new(prediction_windows.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_duration,
            queue,
            compute,
            batch_size,
            pending,
            load,
            instances,
            psi,
            prediction_windows,
            tls_expiry,
            tls_reloads,
            tls_handshake_failures,
        }
    }

    /// The series of one version.
    pub fn version(&self, model: &str, version: u64) -> VersionMetrics {
        let v = version.to_string();
        let labels = [model, v.as_str()];
        VersionMetrics {
            request_duration: self.request_duration.with_label_values(&labels),
            queue: self.queue.with_label_values(&labels),
            compute: self.compute.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            pending: self.pending.with_label_values(&labels),
            psi: self.psi.with_label_values(&labels),
            prediction_windows: self.prediction_windows.with_label_values(&labels),
            served: self.requests.with_label_values(&[model, v.as_str(), "OK"]),
        }
    }

    /// Counts one finished request.
    pub fn request(&self, model: &str, version: &str, status: &str) {
        self.requests.with_label_values(&[model, version, status]).inc();
    }

    /// Records how long a version took to load and how many executor
    /// instances serve it.
    pub fn loaded(&self, model: &str, version: u64, seconds: f64, instances: usize) {
        let labels = [model, &version.to_string()];
        self.load.with_label_values(&labels).set(seconds);
        self.instances.with_label_values(&labels).set(i64::try_from(instances).unwrap_or(i64::MAX));
    }

    /// The expiry of each certificate in force (replacing the last set).
    pub fn tls_loaded(&self, expiries: &[(String, i64)]) {
        self.tls_expiry.reset();
        for (certificate, at) in expiries {
            self.tls_expiry.with_label_values(&[certificate.as_str()]).set(*at);
        }
    }

    /// Counts a reload of TLS material, applied or refused.
    pub fn tls_reload(&self, applied: bool) {
        self.tls_reloads.with_label_values(&[if applied { "applied" } else { "refused" }]).inc();
    }

    /// Counts a refused or timed-out handshake.
    pub fn tls_handshake_failed(&self, reason: &str) {
        self.tls_handshake_failures.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The metrics and health HTTP routes: `/metrics` (Prometheus text),
/// `/healthz` (200 while the process runs), `/readyz` (200 once the
/// repository's first load is done, every model is ready and the server is
/// not draining, else 503).
pub fn router(state: std::sync::Arc<crate::grpc::ServerState>) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let metrics = state.metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let state = state.clone();
                async move {
                    if state.is_ready() {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

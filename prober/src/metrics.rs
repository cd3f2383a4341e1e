//! The prober's Prometheus metrics.
//!
//! | metric | what |
//! |---|---|
//! | `meridian_probe_max_abs_error{model,version,region}` | the last drift check's largest absolute difference from the reference (NaN when the check failed) |
//! | `meridian_probe_drift_tolerance{model,version}` | the reference set's tolerance |
//! | `meridian_probe_drift_checks_total{model,version,region,result}` | drift checks: `ok`, `drift` (beyond the tolerance), `error` (no comparable answer) |
//! | `meridian_probe_synthetic_total{region,served_region,result}` | synthetic calls through the caller-side proxy: `ok` or `error` (`served_region`: the gateway's `x-meridian-region`, `none` without one) |
//! | `meridian_probe_synthetic_duration_seconds{region}` | their end-to-end latency (histogram, successful calls) |
//! | `meridian_probe_rounds_total` | rounds completed |

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the prober exports.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    registry: Registry,
    /// `meridian_probe_max_abs_error`.
    pub max_abs_error: GaugeVec,
    /// `meridian_probe_drift_tolerance`.
    pub tolerance: GaugeVec,
    /// `meridian_probe_drift_checks_total`.
    pub drift_checks: IntCounterVec,
    /// `meridian_probe_synthetic_total`.
    pub synthetic: IntCounterVec,
    /// `meridian_probe_synthetic_duration_seconds`.
    pub synthetic_duration: HistogramVec,
    /// `meridian_probe_rounds_total`.
    pub rounds: IntCounter,
}

impl ProbeMetrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let max_abs_error = GaugeVec::new(
            Opts::new(
                "meridian_probe_max_abs_error",
                "Largest absolute difference of the last drift check's answer from the reference outputs.",
            ),
            &["model", "version", "region"],
        )
        .expect("valid metric");
        let tolerance = GaugeVec::new(
            Opts::new("meridian_probe_drift_tolerance", "The reference set's tolerance."),
            &["model", "version"],
        )
        .expect("valid metric");
        let drift_checks = IntCounterVec::new(
            Opts::new("meridian_probe_drift_checks_total", "Drift checks by result (ok, drift, error)."),
            &["model", "version", "region", "result"],
        )
        .expect("valid metric");
        let synthetic = IntCounterVec::new(
            Opts::new(
                "meridian_probe_synthetic_total",
                "Synthetic calls through the caller-side proxy by callers' region, serving region and result.",
            ),
            &["region", "served_region", "result"],
        )
        .expect("valid metric");
        let synthetic_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_probe_synthetic_duration_seconds",
                "End-to-end latency of successful synthetic calls.",
            )
            .buckets(exponential_buckets(250e-6, 2.0, 14).expect("valid buckets")),
            &["region"],
        )
        .expect("valid metric");
        let rounds = IntCounter::new("meridian_probe_rounds_total", "Probe rounds completed.").expect("valid metric");
        for c in [
            Box::new(max_abs_error.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tolerance.clone()),
            Box::new(drift_checks.clone()),
            Box::new(synthetic.clone()),
            Box::new(synthetic_duration.clone()),
            Box::new(rounds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self { registry, max_abs_error, tolerance, drift_checks, synthetic, synthetic_duration, rounds }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// `/metrics` (Prometheus text) and `/healthz`.
    pub fn router(&self) -> axum::Router {
        use axum::http::header;
        use axum::routing::get;
        let metrics = self.clone();
        axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
                }),
            )
            .route("/healthz", get(|| async { "ok\n" }))
    }
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

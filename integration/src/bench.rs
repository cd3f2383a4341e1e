//! Helpers the benchmark binaries share: flags and latency percentiles.

use std::time::Duration;

/// The value after flag `name` on the command line, else `default`.
pub fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_string())
}

/// The `p` quantile (0–1) of `latencies`, in ms; NaN when empty.
pub fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    let mut l = latencies.to_vec();
    l.sort_unstable();
    l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1))).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// What a closed-loop run counted: calls, failures, each success's latency
/// and the wall time.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Calls made.
    pub requests: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Latencies.
    pub latencies: Vec<Duration>,
    /// The run's wall time.
    pub wall: Duration,
}

impl Tally {
    /// Adds another run's counts (wall times add up: runs are sequential).
    pub fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self.wall += other.wall;
    }

    /// Calls per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `p` latency quantile, ms.
    pub fn pct(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }
}

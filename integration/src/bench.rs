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

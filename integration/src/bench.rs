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

/// SplitMix64: seeded draws for the benchmarks' schedules, the same on
/// every run with the same seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One of `items`.
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize].clone()
    }

    /// Puts `items` in a random order (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for k in (1..items.len()).rev() {
            items.swap(k, (self.next_u64() % (k as u64 + 1)) as usize);
        }
    }
}

//! A circuit breaker for one (region, model).
//!
//! Closed → Open on `consecutive_failures` failures in a row, or when the
//! sliding window holds at least `min_volume` calls and the failure rate or
//! the slow-call rate reaches its threshold. Open lasts `base_open_ms`,
//! doubling on each trip in a row up to `max_open_ms`. Then HalfOpen lets
//! `half_open_probes` calls through: all succeeding closes the breaker (and
//! forgets the trips), any failure opens it again for longer.

use serde::{Deserialize, Serialize};

/// What a finished call tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded, in `latency_ms`.
    Success {
        /// How long it took.
        latency_ms: u64,
    },
    /// The upstream failed (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
    /// INTERNAL, 5xx, reset, connect failure).
    Failure,
    /// The caller's own mistake (INVALID_ARGUMENT, NOT_FOUND…): says nothing
    /// about the upstream's health and never trips a breaker.
    CallerError,
}

/// Classifies a finished call from its gRPC status (if any), HTTP status
/// and whether the stream was reset or never connected. gRPC-aware: an HTTP
/// 200 carrying `grpc-status: 14` is a failure.
pub fn classify(
    grpc_status: Option<u32>,
    http_status: u16,
    reset_or_connect_failure: bool,
    latency_ms: u64,
) -> Outcome {
    if reset_or_connect_failure {
        return Outcome::Failure;
    }
    match grpc_status {
        Some(0) => Outcome::Success { latency_ms },
        // DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE,
        // UNKNOWN, DATA_LOSS: the server side failed.
        Some(2 | 4 | 8 | 13 | 14 | 15) => Outcome::Failure,
        // CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
        // PERMISSION_DENIED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE,
        // UNIMPLEMENTED, UNAUTHENTICATED: about the request, not the region.
        Some(_) => Outcome::CallerError,
        None if http_status >= 500 => Outcome::Failure,
        None if http_status >= 400 => Outcome::CallerError,
        None => Outcome::Success { latency_ms },
    }
}

/// Breaker thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Failure rate (0..=1) over the window that opens it.
    pub failure_rate: f64,
    /// Slow-call rate (0..=1) over the window that opens it.
    pub slow_call_rate: f64,
    /// A success slower than this counts as slow.
    pub slow_call_ms: u64,
    /// The sliding window's length.
    pub window_ms: u64,
    /// Calls the window needs before rates count.
    pub min_volume: u32,
    /// How long the first trip stays open.
    pub base_open_ms: u64,
    /// The longest an open period grows to.
    pub max_open_ms: u64,
    /// Calls let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            slow_call_rate: 0.8,
            slow_call_ms: 1_000,
            window_ms: 10_000,
            min_volume: 20,
            base_open_ms: 1_000,
            max_open_ms: 30_000,
            half_open_probes: 3,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until `until_ms`.
    Open {
        /// When probing may start.
        until_ms: u64,
    },
    /// A bounded number of probe calls flow.
    HalfOpen {
        /// Probes admitted so far.
        admitted: u32,
        /// Probes that succeeded.
        succeeded: u32,
    },
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go (closed).
    Allowed,
    /// Go, as a half-open probe.
    Probe,
    /// Refused; open for `retry_after_ms` more.
    Rejected {
        /// Time until probing starts.
        retry_after_ms: u64,
    },
}

const BUCKETS: u64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    start_ms: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// One breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    /// Not serialized: the holder sets it from the policy in force
    /// ([`Breaker::set_config`]), so a config change applies to live state.
    #[serde(skip)]
    config: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    trips: u32,
    window: [Bucket; BUCKETS as usize],
}

// === impl Breaker ===

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, state: BreakerState::Closed, consecutive: 0, trips: 0, window: Default::default() }
    }

    /// The state at `now_ms` (an open breaker past its time reads half-open).
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.state {
            BreakerState::Open { until_ms } if now_ms >= until_ms => {
                BreakerState::HalfOpen { admitted: 0, succeeded: 0 }
            }
            s => s,
        }
    }

    /// Applies thresholds from the policy now in force.
    pub fn set_config(&mut self, config: &BreakerConfig) {
        if self.config != *config {
            self.config = config.clone();
        }
    }

    /// Trips in a row (reset when a half-open period succeeds).
    pub fn trips(&self) -> u32 {
        self.trips
    }

    /// Asks to send a call at `now_ms`; a probe counts as admitted.
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        self.state = self.state(now_ms);
        match &mut self.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open { until_ms } => Admission::Rejected { retry_after_ms: until_ms.saturating_sub(now_ms) },
            BreakerState::HalfOpen { admitted, .. } => {
                if *admitted < self.config.half_open_probes {
                    *admitted += 1;
                    Admission::Probe
                } else {
                    Admission::Rejected { retry_after_ms: 0 }
                }
            }
        }
    }

    /// Records a finished call.
    pub fn record(&mut self, now_ms: u64, outcome: Outcome) {
        self.state = self.state(now_ms);
        let failed = match outcome {
            Outcome::CallerError => return,
            Outcome::Failure => true,
            Outcome::Success { .. } => false,
        };
        let slow = matches!(outcome, Outcome::Success { latency_ms } if latency_ms >= self.config.slow_call_ms);
        let bucket = self.bucket(now_ms);
        bucket.calls += 1;
        bucket.failures += u32::from(failed);
        bucket.slow += u32::from(slow);
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };

        match &mut self.state {
            BreakerState::Closed => {
                if self.consecutive >= self.config.consecutive_failures || self.window_trips(now_ms) {
                    self.open(now_ms);
                }
            }
            BreakerState::HalfOpen { succeeded, .. } => {
                if failed {
                    self.open(now_ms);
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_probes {
                        self.state = BreakerState::Closed;
                        self.trips = 0;
                        self.consecutive = 0;
                        self.window = Default::default();
                    }
                }
            }
            // A straggler finishing while open changes nothing.
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now_ms: u64) {
        let factor = 1u64 << self.trips.min(20);
        let open_ms = self.config.base_open_ms.saturating_mul(factor).min(self.config.max_open_ms);
        self.trips += 1;
        self.state = BreakerState::Open { until_ms: now_ms + open_ms };
        self.window = Default::default();
    }

    fn bucket(&mut self, now_ms: u64) -> &mut Bucket {
        let width = (self.config.window_ms / BUCKETS).max(1);
        let start = now_ms - now_ms % width;
        let slot = &mut self.window[((now_ms / width) % BUCKETS) as usize];
        if slot.start_ms != start {
            *slot = Bucket { start_ms: start, ..Bucket::default() };
        }
        slot
    }

    fn window_trips(&self, now_ms: u64) -> bool {
        let (calls, failures, slow) = self
            .window
            .iter()
            .filter(|b| b.calls > 0 && b.start_ms + self.config.window_ms > now_ms)
            .fold((0u32, 0u32, 0u32), |(c, f, s), b| (c + b.calls, f + b.failures, s + b.slow));
        if calls < self.config.min_volume.max(1) {
            return false;
        }
        let rate = |n: u32| f64::from(n) / f64::from(calls);
        rate(failures) >= self.config.failure_rate || rate(slow) >= self.config.slow_call_rate
    }
}

#[cfg(test)]
mod tests;

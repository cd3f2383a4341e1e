//! Retries: a model's retry rules, and a budget so a sick region causes no
//! retry storm. The per-request grant ([`crate::decision::Planner::decide`])
//! reserves retries from the budget up front, because Envoy makes them after
//! the filter has decided.

use serde::{Deserialize, Serialize};

/// A retry budget: over a sliding window, retries may be at most
/// `min_retries + ratio × requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    ratio: f64,
    min_retries: u32,
    window_ms: u64,
    buckets: [(u64, u32, u32); 10],
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `min_retries`, per
    /// `window_ms`.
    pub fn new(ratio: f64, min_retries: u32, window_ms: u64) -> Self {
        Self { ratio: ratio.max(0.0), min_retries, window_ms: window_ms.max(10), buckets: [(0, 0, 0); 10] }
    }

    /// Counts an original request.
    pub fn record_request(&mut self, now_ms: u64) {
        self.slot(now_ms).1 += 1;
    }

    /// Takes a retry from the budget if there is room.
    pub fn try_retry(&mut self, now_ms: u64) -> bool {
        let (requests, retries) = self.totals(now_ms);
        let allowed = f64::from(self.min_retries) + self.ratio * f64::from(requests);
        if f64::from(retries) + 1.0 > allowed {
            return false;
        }
        self.slot(now_ms).2 += 1;
        true
    }

    /// Adds `requests` and a signed number of `retries` (a negative count
    /// returns reserved retries that were not used) at `now_ms`.
    pub fn add(&mut self, now_ms: u64, requests: u32, retries: i64) {
        let slot = self.slot(now_ms);
        slot.1 = slot.1.saturating_add(requests);
        let r = i64::from(slot.2) + retries;
        slot.2 = u32::try_from(r.max(0)).unwrap_or(u32::MAX);
    }

    /// Retries still allowed in the window ending at `now_ms`, given
    /// `extra_requests` and `extra_retries` not yet recorded here.
    pub fn room(&self, now_ms: u64, extra_requests: i64, extra_retries: i64) -> f64 {
        let (requests, retries) = self.totals(now_ms);
        let requests = (i64::from(requests) + extra_requests).max(0) as f64;
        let retries = (i64::from(retries) + extra_retries).max(0) as f64;
        f64::from(self.min_retries) + self.ratio * requests - retries
    }

    /// (requests, retries) in the window ending at `now_ms`.
    pub fn totals(&self, now_ms: u64) -> (u32, u32) {
        // A bucket counts while it started less than a window ago; the one
        // that started exactly a window ago shares its slot with now's.
        self.buckets
            .iter()
            .filter(|b| b.0 + self.window_ms > now_ms && b.0 <= now_ms)
            .fold((0, 0), |(q, r), b| (q + b.1, r + b.2))
    }

    fn slot(&mut self, now_ms: u64) -> &mut (u64, u32, u32) {
        let width = self.window_ms / 10;
        let start = now_ms - now_ms % width;
        let slot = &mut self.buckets[((now_ms / width) % 10) as usize];
        if slot.0 != start {
            *slot = (start, 0, 0);
        }
        slot
    }
}

/// A model's retry rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Each attempt's own timeout.
    pub per_try_timeout_ms: u64,
    /// Pause before a retry.
    pub backoff_ms: u64,
    /// Whether the model may run a request twice.
    pub idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, per_try_timeout_ms: 1_000, backoff_ms: 25, idempotent: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn retries_never_exceed_the_budget(events in proptest::collection::vec((0u64..50, any::<bool>()), 1..400), ratio in 0.0f64..1.0, min in 0u32..10) {
            let mut b = RetryBudget::new(ratio, min, 1000);
            let mut now = 0;
            for (dt, is_retry) in events {
                now += dt;
                if is_retry {
                    // Whenever a retry is granted, the window stays within budget.
                    if b.try_retry(now) {
                        let (requests, retries) = b.totals(now);
                        prop_assert!(f64::from(retries) <= f64::from(min) + ratio * f64::from(requests) + 1e-9);
                    }
                } else {
                    b.record_request(now);
                }
            }
        }
    }
}

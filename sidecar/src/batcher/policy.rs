//! When to run a batch: a pure function of what is pending and the clock.

use std::time::{Duration, Instant};

/// The batching rules of one model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Whether requests are batched at all. Without it each request runs on
    /// its own, as soon as an instance is free.
    pub dynamic: bool,
    /// The most rows one batch may hold.
    pub max_rows: usize,
    /// Batch sizes to flush at as soon as they are reached, ascending.
    pub preferred: Vec<usize>,
    /// How long the oldest request may wait for others to join it.
    pub max_queue_delay: Duration,
}

/// What the worker should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Form a batch now, of at most this many rows (0: the head request
    /// alone, whatever its size).
    Now(usize),
    /// Nothing to do before this instant, unless a request arrives.
    WaitUntil(Instant),
}

impl BatchPolicy {
    /// Decides for `pending_rows` compatible rows waiting, the oldest
    /// enqueued at `oldest`.
    ///
    /// - Without dynamic batching: the head request runs alone, now.
    /// - A full batch (`max_rows`) runs now.
    /// - The largest preferred size, once reached, runs now.
    /// - When the oldest request has waited `max_queue_delay`, whatever is
    ///   pending runs now.
    /// - Otherwise wait until that delay ends.
    pub fn decide(&self, pending_rows: usize, oldest: Instant, now: Instant) -> Flush {
        if !self.dynamic {
            return Flush::Now(0);
        }
        if pending_rows >= self.max_rows {
            return Flush::Now(self.max_rows);
        }
        if let Some(&largest) = self.preferred.iter().rev().find(|&&p| p <= self.max_rows) {
            if pending_rows >= largest {
                return Flush::Now(largest);
            }
        }
        let due = oldest + self.max_queue_delay;
        if now >= due {
            Flush::Now(self.max_rows)
        } else {
            Flush::WaitUntil(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BatchPolicy {
        BatchPolicy {
            dynamic: true,
            max_rows: 64,
            preferred: vec![16, 32],
            max_queue_delay: Duration::from_micros(500),
        }
    }

    #[test]
    fn waits_for_the_delay_then_flushes_what_is_there() {
        let t0 = Instant::now();
        let p = policy();
        assert_eq!(p.decide(3, t0, t0), Flush::WaitUntil(t0 + Duration::from_micros(500)));
        assert_eq!(p.decide(3, t0, t0 + Duration::from_micros(500)), Flush::Now(64));
    }

    #[test]
    fn flushes_full_and_preferred_batches_at_once() {
        let t0 = Instant::now();
        let p = policy();
        assert_eq!(p.decide(64, t0, t0), Flush::Now(64));
        assert_eq!(p.decide(100, t0, t0), Flush::Now(64));
        assert_eq!(p.decide(32, t0, t0), Flush::Now(32));
        assert_eq!(p.decide(40, t0, t0), Flush::Now(32));
        assert!(matches!(p.decide(16, t0, t0), Flush::WaitUntil(_)), "only the largest preferred size flushes early");
    }

    #[test]
    fn without_dynamic_batching_each_request_runs_alone() {
        let t0 = Instant::now();
        let p = BatchPolicy { dynamic: false, ..policy() };
        assert_eq!(p.decide(1, t0, t0), Flush::Now(0));
    }
}

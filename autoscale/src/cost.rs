//! A cost cap: replica-hours over a rolling window. The autoscaler never
//! starts a period it cannot pay for — above the baseline, which critical
//! services keep whatever the budget says.

use std::collections::VecDeque;

/// At most `max_replica_hours` over any `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostCap {
    /// The budget.
    pub max_replica_hours: f64,
    /// The rolling window it is counted over.
    pub window_secs: u64,
}

/// What has been run: `replicas` from `from_ms` to `to_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    from_ms: u64,
    to_ms: u64,
    replicas: u32,
}

/// Replica-time spent, kept for one window.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    spans: VecDeque<Span>,
    last: Option<(u64, u32)>,
}

impl Ledger {
    /// Records that `replicas` ran since the previous observation (the
    /// previous count is what ran in between).
    pub fn observe(&mut self, now_ms: u64, replicas: u32, window_secs: u64) {
        if let Some((since, ran)) = self.last {
            if now_ms > since && ran > 0 {
                self.spans.push_back(Span { from_ms: since, to_ms: now_ms, replicas: ran });
            }
        }
        self.last = Some((now_ms, replicas));
        let cutoff = now_ms.saturating_sub(window_secs * 1000);
        while self.spans.front().is_some_and(|s| s.to_ms <= cutoff) {
            self.spans.pop_front();
        }
    }

    /// Records that `replicas` run from `now_ms` on (a decision's count,
    /// charged until the next observation).
    pub fn run_from(&mut self, now_ms: u64, replicas: u32) {
        self.last = Some((now_ms, replicas));
    }

    /// Replica-hours spent in the window ending at `now_ms`.
    pub fn used_hours(&self, now_ms: u64, window_secs: u64) -> f64 {
        let cutoff = now_ms.saturating_sub(window_secs * 1000);
        let ms: f64 = self
            .spans
            .iter()
            .map(|s| (s.to_ms.min(now_ms).saturating_sub(s.from_ms.max(cutoff))) as f64 * f64::from(s.replicas))
            .sum();
        ms / 3_600_000.0
    }

    /// The most replicas the budget pays for over the next `horizon_secs`
    /// (the time to the next decision), never below `floor`.
    pub fn ceiling(&self, cap: &CostCap, now_ms: u64, horizon_secs: f64, floor: u32) -> u32 {
        let left = (cap.max_replica_hours - self.used_hours(now_ms, cap.window_secs)).max(0.0);
        let affordable = (left * 3600.0 / horizon_secs.max(1e-3)).floor();
        let affordable = if affordable >= f64::from(u32::MAX) { u32::MAX } else { affordable as u32 };
        affordable.max(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_hours_count_what_ran_inside_the_window() {
        let mut l = Ledger::default();
        let hour = 3_600_000;
        l.observe(0, 4, 7200);
        l.observe(hour, 2, 7200); // 4 replicas for an hour
        l.observe(2 * hour, 2, 7200); // 2 for an hour
        assert!((l.used_hours(2 * hour, 7200) - 6.0).abs() < 1e-9);
        // Half an hour later the window starts at 0:30: 2 + 2 (+ nothing recorded yet).
        assert!((l.used_hours(2 * hour + hour / 2, 7200) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn the_ceiling_is_what_the_rest_of_the_budget_buys_but_never_below_the_floor() {
        let cap = CostCap { max_replica_hours: 10.0, window_secs: 86_400 };
        let mut l = Ledger::default();
        l.observe(0, 8, cap.window_secs);
        l.observe(3_600_000, 8, cap.window_secs); // 8 used, 2 left
                                                  // 2 replica-hours over the next 15 minutes buys 8 replicas.
        assert_eq!(l.ceiling(&cap, 3_600_000, 900.0, 1), 8);
        l.observe(7_200_000, 8, cap.window_secs); // 16 used: over
        assert_eq!(l.ceiling(&cap, 7_200_000, 900.0, 3), 3);
    }
}

use super::*;
use proptest::prelude::*;

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        min_volume: 10,
        base_open_ms: 100,
        max_open_ms: 800,
        half_open_probes: 2,
        ..Default::default()
    }
}

#[test]
fn classification_is_grpc_aware() {
    assert_eq!(classify(Some(14), 200, false, 5), Outcome::Failure, "UNAVAILABLE over HTTP 200");
    assert_eq!(classify(Some(8), 200, false, 5), Outcome::Failure, "RESOURCE_EXHAUSTED");
    assert_eq!(classify(Some(4), 200, false, 5), Outcome::Failure, "DEADLINE_EXCEEDED");
    assert_eq!(classify(Some(13), 200, false, 5), Outcome::Failure, "INTERNAL");
    assert_eq!(classify(Some(3), 200, false, 5), Outcome::CallerError, "INVALID_ARGUMENT");
    assert_eq!(classify(Some(5), 200, false, 5), Outcome::CallerError, "NOT_FOUND");
    assert_eq!(classify(Some(0), 200, false, 5), Outcome::Success { latency_ms: 5 });
    assert_eq!(classify(None, 503, false, 5), Outcome::Failure);
    assert_eq!(classify(None, 404, false, 5), Outcome::CallerError);
    assert_eq!(classify(None, 0, true, 5), Outcome::Failure, "reset / connect failure");
}

#[test]
fn opens_on_consecutive_failures_then_probes_then_closes() {
    let mut b = Breaker::new(config());
    for t in 0..3 {
        assert_eq!(b.admit(t), Admission::Allowed);
        b.record(t, Outcome::Failure);
    }
    assert_eq!(b.state(3), BreakerState::Open { until_ms: 102 });
    assert_eq!(b.admit(50), Admission::Rejected { retry_after_ms: 52 });
    assert_eq!(b.admit(102), Admission::Probe);
    assert_eq!(b.admit(102), Admission::Probe);
    assert_eq!(b.admit(102), Admission::Rejected { retry_after_ms: 0 }, "only two probes");
    b.record(110, Outcome::Success { latency_ms: 1 });
    b.record(111, Outcome::Success { latency_ms: 1 });
    assert_eq!(b.state(112), BreakerState::Closed);
    assert_eq!(b.trips(), 0);
}

#[test]
fn repeated_trips_stay_open_longer_up_to_the_cap() {
    let mut b = Breaker::new(config());
    let mut now = 0;
    let mut lengths = Vec::new();
    for _ in 0..6 {
        while b.state(now) == BreakerState::Closed || matches!(b.state(now), BreakerState::HalfOpen { .. }) {
            b.admit(now);
            b.record(now, Outcome::Failure);
        }
        let BreakerState::Open { until_ms } = b.state(now) else { panic!("open") };
        lengths.push(until_ms - now);
        now = until_ms;
    }
    assert_eq!(lengths, vec![100, 200, 400, 800, 800, 800]);
}

#[test]
fn the_failure_rate_needs_the_minimum_volume() {
    let mut b = Breaker::new(BreakerConfig { consecutive_failures: 100, ..config() });
    // 9 calls, alternating: 50 % failures but under min_volume 10.
    for t in 0..9 {
        b.record(t, if t % 2 == 0 { Outcome::Failure } else { Outcome::Success { latency_ms: 1 } });
    }
    assert_eq!(b.state(9), BreakerState::Closed);
    b.record(9, Outcome::Failure);
    assert!(matches!(b.state(10), BreakerState::Open { .. }), "10 calls, 60 % failed");
}

#[test]
fn slow_calls_open_the_breaker() {
    let mut b = Breaker::new(BreakerConfig { consecutive_failures: 100, slow_call_ms: 200, ..config() });
    for t in 0..10 {
        b.record(t, Outcome::Success { latency_ms: 250 });
    }
    assert!(matches!(b.state(10), BreakerState::Open { .. }));
}

proptest! {
    /// Caller errors never trip; an open breaker never admits before its
    /// time; half-open never admits more than the probe count.
    #[test]
    fn invariants(events in proptest::collection::vec((0u64..30, 0u8..4), 1..300)) {
        let mut b = Breaker::new(config());
        let mut callers_only = Breaker::new(config());
        let mut now = 0;
        let mut probes = 0;
        for (dt, kind) in events {
            now += dt;
            let before = b.state(now);
            let admission = b.admit(now);
            match before {
                BreakerState::Open { until_ms } => {
                    prop_assert!(now < until_ms);
                    prop_assert_eq!(admission, Admission::Rejected { retry_after_ms: until_ms - now });
                }
                BreakerState::Closed => prop_assert_eq!(admission, Admission::Allowed),
                BreakerState::HalfOpen { .. } => {}
            }
            if admission == Admission::Probe { probes += 1; } else if !matches!(b.state(now), BreakerState::HalfOpen { .. }) { probes = 0; }
            prop_assert!(probes <= config().half_open_probes as usize);
            let outcome = match kind {
                0 => Outcome::Failure,
                1 => Outcome::CallerError,
                _ => Outcome::Success { latency_ms: 1 },
            };
            if !matches!(admission, Admission::Rejected { .. }) {
                b.record(now, outcome);
            }
            callers_only.record(now, Outcome::CallerError);
            prop_assert_eq!(callers_only.state(now), BreakerState::Closed);
        }
    }
}

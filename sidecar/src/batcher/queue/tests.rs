use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn entry(id: usize, rows: usize, key: u64, level: usize, enqueued: Instant, deadline: Option<Instant>) -> Entry<usize> {
    Entry { item: id, rows, bytes: rows * 100, key, level, enqueued, deadline }
}

#[derive(Debug, Clone)]
enum Op {
    Push { rows: usize, key: u64, level: usize, ttl_ms: Option<u64> },
    Take { max_rows: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..5, 0u64..3, 0usize..3, proptest::option::of(0u64..20))
            .prop_map(|(rows, key, level, ttl_ms)| Op::Push { rows, key, level, ttl_ms }),
        2 => (0usize..10).prop_map(|max_rows| Op::Take { max_rows }),
        1 => (0u64..10).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    /// The bound holds; every request leaves exactly once; batches hold one
    /// key, fit max_rows, and never contain an expired request.
    #[test]
    fn queue_invariants(
        ops in proptest::collection::vec(op(), 1..200),
        capacity in 1usize..12,
        byte_capacity in 100usize..1500,
    ) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut q = Queue::new(3, capacity, byte_capacity, Duration::from_millis(15));
        let mut inside = BTreeSet::new();
        let mut next_id = 0;
        for op in ops {
            match op {
                Op::Push { rows, key, level, ttl_ms } => {
                    let deadline = ttl_ms.map(|ms| now + Duration::from_millis(ms));
                    let was = q.len();
                    match q.push(entry(next_id, rows, key, level, now, deadline)) {
                        Ok(depth) => { prop_assert_eq!(depth, was + 1); inside.insert(next_id); }
                        Err((full, e)) => {
                            prop_assert_eq!(full.depth, was);
                            if full.by_bytes {
                                prop_assert!(full.bytes + e.bytes > byte_capacity, "refused by bytes with room");
                            } else {
                                prop_assert_eq!(was, capacity);
                            }
                            prop_assert_eq!(e.item, next_id);
                        }
                    }
                    next_id += 1;
                }
                Op::Take { max_rows } => {
                    let taken = q.take(now, max_rows);
                    for e in &taken.expired {
                        prop_assert!(e.deadline.is_some_and(|d| d <= now), "only expired requests are expired");
                        prop_assert!(inside.remove(&e.item), "left twice");
                    }
                    if let Some(head) = taken.batch.first() {
                        let rows: usize = taken.batch.iter().map(|e| e.rows).sum();
                        if max_rows == 0 { prop_assert_eq!(taken.batch.len(), 1); }
                        else { prop_assert!(rows <= max_rows.max(head.rows), "{} rows over {}", rows, max_rows); }
                        for e in &taken.batch {
                            prop_assert_eq!(e.key, head.key);
                            prop_assert!(e.deadline.is_none_or(|d| d > now), "an expired request was batched");
                            prop_assert!(inside.remove(&e.item), "left twice");
                        }
                    } else {
                        prop_assert!(q.is_empty(), "no batch although requests wait");
                    }
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
            }
            prop_assert_eq!(q.len(), inside.len());
            prop_assert!(q.len() <= capacity);
        }
        for e in q.drain_all() { prop_assert!(inside.remove(&e.item)); }
        prop_assert!(inside.is_empty(), "requests lost: {:?}", inside);
    }

    /// Under a steady stream of high-priority requests, a low-priority one is
    /// served within the starvation limit (plus one step).
    #[test]
    fn low_priority_is_not_starved(limit_ms in 1u64..30, step_us in 100u64..2000, levels in 2usize..4) {
        let t0 = Instant::now();
        let limit = Duration::from_millis(limit_ms);
        let step = Duration::from_micros(step_us);
        let mut q = Queue::new(levels, 1000, usize::MAX, limit);
        q.push(entry(0, 1, 0, levels - 1, t0, None)).expect("room");
        let mut now = t0;
        let mut id = 1;
        loop {
            // Two high-priority arrivals per step, one batch of one taken.
            for _ in 0..2 { q.push(entry(id, 1, 0, 0, now, None)).expect("room"); id += 1; }
            let taken = q.take(now, 1);
            if taken.batch.iter().any(|e| e.item == 0) { break; }
            now += step;
            prop_assert!(now - t0 <= limit + step, "the low-priority request waited {:?}", now - t0);
        }
    }
}

#[test]
fn higher_priority_goes_first_and_batches_across_levels() {
    let t0 = Instant::now();
    let mut q = Queue::new(2, 10, usize::MAX, Duration::from_secs(1));
    q.push(entry(1, 1, 7, 1, t0, None)).expect("room");
    q.push(entry(2, 1, 7, 0, t0, None)).expect("room");
    q.push(entry(3, 1, 9, 0, t0, None)).expect("room");
    assert_eq!(q.pending(t0), Some((2, t0)), "two rows share the head's key");
    let taken = q.take(t0, 8);
    assert_eq!(taken.batch.iter().map(|e| e.item).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(q.take(t0, 8).batch.iter().map(|e| e.item).collect::<Vec<_>>(), vec![3]);
}

#[test]
fn expired_requests_are_returned_not_batched() {
    let t0 = Instant::now();
    let mut q = Queue::new(1, 10, usize::MAX, Duration::from_secs(1));
    q.push(entry(1, 1, 0, 0, t0, Some(t0 + Duration::from_millis(5)))).expect("room");
    q.push(entry(2, 1, 0, 0, t0, None)).expect("room");
    let taken = q.take(t0 + Duration::from_millis(5), 8);
    assert_eq!(taken.expired.iter().map(|e| e.item).collect::<Vec<_>>(), vec![1]);
    assert_eq!(taken.batch.iter().map(|e| e.item).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn queued_bytes_are_bounded_and_freed_when_requests_leave() {
    let t0 = Instant::now();
    let mut q = Queue::new(1, 10, 500, Duration::from_secs(1));
    q.push(entry(1, 2, 0, 0, t0, Some(t0 + Duration::from_millis(5)))).expect("200 bytes");
    q.push(entry(2, 2, 0, 0, t0, None)).expect("400 bytes");
    let (full, refused) = q.push(entry(3, 2, 0, 0, t0, None)).expect_err("600 bytes is over 500");
    assert_eq!((full.depth, full.bytes, full.by_bytes, refused.item), (2, 400, true, 3));
    assert_eq!(q.bytes(), 400);
    // The expired one and the batch give their bytes back.
    let taken = q.take(t0 + Duration::from_millis(5), 8);
    assert_eq!((taken.expired.len(), taken.batch.len()), (1, 1));
    assert_eq!(q.bytes(), 0);
    q.push(entry(3, 2, 0, 0, t0, None)).expect("room again");
    q.push(entry(4, 2, 0, 0, t0, None)).expect("400 bytes");
    assert_eq!(q.bytes(), 400);
    let taken = q.take(t0, 8);
    assert_eq!(taken.batch.len(), 2);
    assert_eq!(q.bytes(), 0);
}

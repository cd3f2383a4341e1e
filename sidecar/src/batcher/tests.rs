use super::*;
use crate::executor::{RunError, Signature, TensorSpec};
use crate::tensor::{DataType, TensorData};
use proptest::prelude::*;
use std::sync::atomic::AtomicUsize;

/// Doubles input 0 (FP32). A value of -1 fails the batch; while `gate` is
/// held, runs block. Records every value it ran.
#[derive(Debug)]
struct Doubler {
    signature: Signature,
    gate: Mutex<()>,
    seen: Mutex<Vec<f32>>,
    batches: AtomicUsize,
}

impl Doubler {
    fn new() -> Arc<Self> {
        let spec = |n: &str| TensorSpec { name: n.into(), dtype: DataType::F32, shape: vec![-1, -1] };
        Arc::new(Self {
            signature: Signature { inputs: vec![spec("x")], outputs: vec![spec("y")] },
            gate: Mutex::new(()),
            seen: Mutex::new(Vec::new()),
            batches: AtomicUsize::new(0),
        })
    }
}

impl Executor for Doubler {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let _open = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        self.batches.fetch_add(1, Ordering::SeqCst);
        let x = &inputs[0];
        let values = f32s(x);
        self.seen.lock().expect("seen").extend(&values);
        if values.contains(&-1.0) {
            return Err(RunError::Execution("poisoned input".into()));
        }
        let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        Ok(vec![tensor(x.shape().to_vec(), &doubled)])
    }
}

#[derive(Debug, Default)]
struct NoObserver;

impl BatchObserver for NoObserver {
    fn batch_ran(&self, _: usize, _: usize, _: Duration, _: bool) {}
    fn request_done(&self, _: Duration, _: Duration, _: Result<(), &JobError>) {}
}

fn tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor::try_new(DataType::F32, shape, TensorData::Fixed(values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .expect("tensor")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::Fixed(b) => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        TensorData::Bytes(_) => panic!("not fixed"),
    }
}

fn config(max_rows: usize, delay_us: u64, queue: usize, instances: usize) -> BatcherConfig {
    BatcherConfig {
        policy: BatchPolicy {
            dynamic: true,
            max_rows,
            preferred: vec![],
            max_queue_delay: Duration::from_micros(delay_us),
        },
        max_queue_size: queue,
        max_queue_bytes: usize::MAX,
        priority_levels: 2,
        instances,
    }
}

fn start(executor: Arc<Doubler>, config: BatcherConfig) -> Batcher {
    Batcher::start("test", executor, config, Arc::new(NoObserver)).expect("threads")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Requests of mixed sizes and widths, sent at once from many threads,
    /// each get exactly their own rows back.
    #[test]
    fn each_request_gets_exactly_its_own_rows(
        requests in proptest::collection::vec((1usize..4, 1usize..3), 1..40),
        max_rows in 1usize..9,
        instances in 1usize..3,
    ) {
        let batcher = Arc::new(start(Doubler::new(), config(max_rows.max(3), 300, 1000, instances)));
        let handles: Vec<_> = requests.iter().enumerate().map(|(id, &(rows, width))| {
            let batcher = batcher.clone();
            std::thread::spawn(move || {
                let values: Vec<f32> = (0..rows * width).map(|j| (id * 100 + j) as f32).collect();
                let sub = batcher.submit(vec![tensor(vec![rows, width], &values)], id % 2, None).expect("queued");
                let out = sub.reply.blocking_recv().expect("answered").expect("ran");
                (values, out)
            })
        }).collect();
        for h in handles {
            let (values, out) = h.join().expect("thread");
            let expected: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
            prop_assert_eq!(out.outputs.len(), 1);
            prop_assert_eq!(f32s(&out.outputs[0]), expected);
            prop_assert!(out.batch_rows <= max_rows.max(3));
        }
    }
}

#[test]
fn requests_past_their_deadline_never_run() {
    let exec = Doubler::new();
    let batcher = start(exec.clone(), config(8, 0, 100, 1));
    let gate = exec.gate.lock().expect("gate");
    // The first request occupies the worker while the gate is held.
    let blocker = batcher.submit(vec![tensor(vec![1, 1], &[1.0])], 0, None).expect("queued");
    while batcher.depth() > 0 {
        std::thread::yield_now();
    }
    let deadline = Instant::now() + Duration::from_millis(20);
    let doomed: Vec<_> = (0..5)
        .map(|i| batcher.submit(vec![tensor(vec![1, 1], &[100.0 + i as f32])], 0, Some(deadline)).expect("queued"))
        .collect();
    let survivor = batcher.submit(vec![tensor(vec![1, 1], &[7.0])], 0, None).expect("queued");
    while Instant::now() <= deadline {
        std::thread::yield_now();
    }
    drop(gate);
    for d in doomed {
        let err = d.reply.blocking_recv().expect("answered").expect_err("expired");
        assert!(matches!(err, JobError::DeadlineExceeded { .. }), "{err:?}");
    }
    assert_eq!(f32s(&survivor.reply.blocking_recv().expect("answered").expect("ran").outputs[0]), vec![14.0]);
    blocker.reply.blocking_recv().expect("answered").expect("ran");
    let seen = exec.seen.lock().expect("seen").clone();
    assert!(seen.iter().all(|v| *v < 100.0), "an expired request ran: {seen:?}");
}

#[test]
fn a_full_queue_refuses_with_a_retry_hint_and_keeps_its_bound() {
    let exec = Doubler::new();
    let batcher = start(exec.clone(), config(1, 0, 3, 1));
    let gate = exec.gate.lock().expect("gate");
    let mut accepted = vec![batcher.submit(vec![tensor(vec![1, 1], &[0.0])], 0, None).expect("queued")];
    // Wait until the worker took the first one and is blocked on the gate.
    while batcher.depth() > 0 {
        std::thread::yield_now();
    }
    for i in 1..=3 {
        accepted.push(batcher.submit(vec![tensor(vec![1, 1], &[i as f32])], 0, None).expect("room"));
    }
    match batcher.submit(vec![tensor(vec![1, 1], &[9.0])], 0, None) {
        Err(Rejected { error: SubmitError::QueueFull { depth, retry_after }, .. }) => {
            assert_eq!(depth, 3);
            assert!(retry_after >= Duration::from_millis(1));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(batcher.depth(), 3);
    drop(gate);
    for a in accepted {
        a.reply.blocking_recv().expect("answered").expect("ran");
    }
}

#[test]
fn a_failing_batch_fails_only_its_requests_and_the_batcher_goes_on() {
    let exec = Doubler::new();
    let batcher = start(exec, config(1, 0, 10, 1));
    let bad = batcher.submit(vec![tensor(vec![1, 1], &[-1.0])], 0, None).expect("queued");
    let err = bad.reply.blocking_recv().expect("answered").expect_err("fails");
    assert_eq!(err, JobError::Execution("execution failed: poisoned input".into()));
    let good = batcher.submit(vec![tensor(vec![1, 1], &[3.0])], 0, None).expect("queued");
    assert_eq!(f32s(&good.reply.blocking_recv().expect("answered").expect("ran").outputs[0]), vec![6.0]);
}

#[test]
fn shutdown_finishes_what_is_queued_then_refuses() {
    let exec = Doubler::new();
    let batcher = start(exec.clone(), config(4, 50_000, 10, 1));
    let subs: Vec<_> =
        (0..3).map(|i| batcher.submit(vec![tensor(vec![1, 1], &[i as f32])], 0, None).expect("queued")).collect();
    batcher.close();
    assert!(matches!(
        batcher.submit(vec![tensor(vec![1, 1], &[0.0])], 0, None),
        Err(Rejected { error: SubmitError::ShuttingDown, .. })
    ));
    for (i, s) in subs.into_iter().enumerate() {
        assert_eq!(f32s(&s.reply.blocking_recv().expect("answered").expect("ran").outputs[0]), vec![i as f32 * 2.0]);
    }
}

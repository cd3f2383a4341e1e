//! The dynamic batcher of one model version: a bounded priority queue, a
//! pure flush policy, and worker threads (one per executor instance) that
//! concatenate compatible requests along the batch dimension, run them, and
//! scatter the rows back to each caller.
//!
//! It knows nothing of gRPC: callers submit tensors and get tensors or a
//! [`JobError`] back through a oneshot channel. Workers are plain OS
//! threads, never the async runtime's.

pub mod policy;
pub mod queue;
mod worker;

use crate::executor::Executor;
use crate::tensor::Tensor;
use policy::BatchPolicy;
use queue::{Entry, Queue};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::oneshot;

/// How a version's batcher behaves.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// When batches flush.
    pub policy: BatchPolicy,
    /// The most requests that may wait.
    pub max_queue_size: usize,
    /// The most bytes of inputs they may hold together.
    pub max_queue_bytes: usize,
    /// Priority levels (1 = only one).
    pub priority_levels: usize,
    /// Worker threads, each running batches on the shared executor.
    pub instances: usize,
}

/// What a caller gets back for a request that ran.
#[derive(Debug)]
pub struct JobOutput {
    /// The request's own rows of every output, in the model's output order.
    pub outputs: Vec<Tensor>,
    /// Time spent waiting in the queue.
    pub queue_time: Duration,
    /// Time the batch took to run.
    pub compute_time: Duration,
    /// Rows in the batch it ran in.
    pub batch_rows: usize,
    /// The instance (worker) that ran it.
    pub instance: usize,
    /// When its batch started to run.
    pub batch_started: Instant,
}

/// A request's span in a distributed trace, carried opaquely so that the
/// span of the batch it runs in can link to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLink {
    /// The W3C trace id.
    pub trace_id: u128,
    /// The request span's id.
    pub span_id: u64,
}

/// One batch that served traced requests, for the observer's span.
#[derive(Debug)]
pub struct BatchTrace<'a> {
    /// When it started to run.
    pub started: Instant,
    /// How long it ran.
    pub compute: Duration,
    /// Its rows.
    pub rows: usize,
    /// The instance (worker) that ran it.
    pub instance: usize,
    /// Whether it produced outputs.
    pub ok: bool,
    /// The spans of the traced requests it served.
    pub links: &'a [TraceLink],
}

/// Why a request did not produce outputs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Its deadline passed before it could run; it never ran.
    #[error("deadline exceeded after {queued_ms} ms in the queue; the request did not run")]
    DeadlineExceeded {
        /// Time spent queued.
        queued_ms: u64,
    },
    /// The batch it ran in failed; other batches are unaffected.
    #[error("{0}")]
    Execution(String),
    /// The version is being unloaded and the request could not run.
    #[error("the model version is shutting down")]
    ShuttingDown,
}

/// Why a request was not queued.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is at `max_queue_size`.
    #[error("queue full: {depth} requests waiting (max_queue_size)")]
    QueueFull {
        /// Requests waiting.
        depth: usize,
        /// When the queue is likely to have room again.
        retry_after: Duration,
    },
    /// The waiting requests hold too many bytes for this one to join them.
    #[error(
        "queue full: {queued_bytes} bytes of inputs waiting, this request's {request_bytes} would pass \
         max_queue_bytes ({limit})"
    )]
    QueueBytes {
        /// Bytes waiting.
        queued_bytes: usize,
        /// This request's bytes.
        request_bytes: usize,
        /// The bound.
        limit: usize,
        /// When the queue is likely to have room again (none when the
        /// request alone is over the bound).
        retry_after: Option<Duration>,
    },
    /// The version no longer accepts requests.
    #[error("the model version is shutting down")]
    ShuttingDown,
}

/// Hooks for statistics and metrics, called from worker threads.
pub trait BatchObserver: Send + Sync + std::fmt::Debug {
    /// A batch of `rows` rows from `requests` requests ran (or failed).
    fn batch_ran(&self, rows: usize, requests: usize, compute: Duration, ok: bool);
    /// A request left the queue: it ran (successfully or not) or expired.
    fn request_done(&self, queue_time: Duration, compute_time: Duration, result: Result<(), &JobError>);
    /// A batch ran that served at least one traced request.
    fn batch_traced(&self, _batch: &BatchTrace<'_>) {}
    /// A batch ran: its outputs, all rows, before they are split per request.
    fn batch_outputs(&self, _outputs: &[Tensor]) {}
}

/// A request the batcher did not queue, with its inputs handed back.
#[derive(Debug)]
pub struct Rejected {
    /// Why.
    pub error: SubmitError,
    /// The inputs, untouched, to submit elsewhere.
    pub inputs: Vec<Tensor>,
}

/// The receiving end of a submitted request.
pub type Reply = oneshot::Receiver<Result<JobOutput, JobError>>;

/// A submitted request's reply channel and the queue depth it saw.
#[derive(Debug)]
pub struct Submitted {
    /// Resolves when the request ran, failed or expired.
    pub reply: Reply,
    /// Requests waiting, this one included, when it joined.
    pub depth: usize,
}

struct Pending {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<Result<JobOutput, JobError>>,
    link: Option<TraceLink>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("inputs", &self.inputs.len()).finish()
    }
}

#[derive(Debug)]
struct State {
    queue: Queue<Pending>,
    accepting: bool,
    /// Workers blocked on the condition variable. A submission only
    /// signals when one waits: a busy worker looks at the queue anyway when
    /// its batch is done, and skipping the wake saves a syscall per request.
    waiting: usize,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    policy: BatchPolicy,
    executor: Arc<dyn Executor>,
    observer: Arc<dyn BatchObserver>,
    /// Smoothed compute time per row, for queue-full pushback.
    row_ns: AtomicU64,
    instances: usize,
}

/// A running batcher. Dropping it without [`Batcher::shutdown`] also stops
/// the workers after the queue drains.
#[derive(Debug)]
pub struct Batcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

// === impl Batcher ===

impl Batcher {
    /// Starts `config.instances` worker threads named after `name`.
    pub fn start(
        name: &str,
        executor: Arc<dyn Executor>,
        config: BatcherConfig,
        observer: Arc<dyn BatchObserver>,
    ) -> std::io::Result<Self> {
        let starvation_limit = (config.policy.max_queue_delay * 20).max(Duration::from_millis(10));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Queue::new(
                    config.priority_levels,
                    config.max_queue_size,
                    config.max_queue_bytes,
                    starvation_limit,
                ),
                accepting: true,
                waiting: 0,
            }),
            wake: Condvar::new(),
            policy: config.policy,
            executor,
            observer,
            row_ns: AtomicU64::new(0),
            instances: config.instances.max(1),
        });
        let workers = (0..shared.instances)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new().name(format!("batch-{name}-{i}")).spawn(move || worker::run(&shared, i))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { shared, workers: Mutex::new(workers) })
    }

    /// Queues a request. `inputs` follow the model's input order and share a
    /// batch dimension; `level` 0 is the highest priority.
    pub fn submit(&self, inputs: Vec<Tensor>, level: usize, deadline: Option<Instant>) -> Result<Submitted, Rejected> {
        self.submit_traced(inputs, level, deadline, None)
    }

    /// [`Batcher::submit`] for a traced request: the batch it runs in is
    /// reported with `link` ([`BatchObserver::batch_traced`]).
    pub fn submit_traced(
        &self,
        inputs: Vec<Tensor>,
        level: usize,
        deadline: Option<Instant>,
        link: Option<TraceLink>,
    ) -> Result<Submitted, Rejected> {
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            rows: inputs.first().map(Tensor::rows).unwrap_or(1),
            bytes: inputs.iter().map(Tensor::byte_len).sum(),
            key: batch_key(&inputs),
            item: Pending { inputs, reply: tx, link },
            level,
            enqueued: Instant::now(),
            deadline,
        };
        let mut state = self.shared.lock();
        if !state.accepting {
            return Err(Rejected { error: SubmitError::ShuttingDown, inputs: entry.item.inputs });
        }
        match state.queue.push(entry) {
            Ok(depth) => {
                let wake = state.waiting > 0;
                drop(state);
                if wake {
                    self.shared.wake.notify_one();
                }
                Ok(Submitted { reply: rx, depth })
            }
            Err((full, entry)) => {
                let retry_after = self.shared.drain_estimate(full.depth);
                let error = if full.by_bytes {
                    let limit = state.queue.byte_capacity();
                    SubmitError::QueueBytes {
                        queued_bytes: full.bytes,
                        request_bytes: entry.bytes,
                        limit,
                        retry_after: (entry.bytes <= limit).then_some(retry_after),
                    }
                } else {
                    SubmitError::QueueFull { depth: full.depth, retry_after }
                };
                Err(Rejected { error, inputs: entry.item.inputs })
            }
        }
    }

    /// Requests waiting now.
    pub fn depth(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Stops taking requests (later submissions get
    /// [`SubmitError::ShuttingDown`]), lets the workers finish everything
    /// queued, and waits for them.
    pub fn close(&self) {
        self.shared.lock().accepting = false;
        self.shared.wake.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker never panics while holding the lock (execution runs
        // outside it), so a poisoned lock still guards a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain_estimate(&self, depth: usize) -> Duration {
        let row_ns = self.row_ns.load(Ordering::Relaxed).max(100_000);
        Duration::from_nanos(row_ns.saturating_mul(depth as u64) / self.instances as u64).max(Duration::from_millis(1))
    }

    fn record_row_time(&self, compute: Duration, rows: usize) {
        let sample = (compute.as_nanos() as u64) / rows.max(1) as u64;
        let old = self.row_ns.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old * 7 + sample) / 8 };
        self.row_ns.store(new, Ordering::Relaxed);
    }
}

/// Requests can share a batch when every input has the same datatype and the
/// same dimensions after the batch dimension.
fn batch_key(inputs: &[Tensor]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in inputs {
        t.dtype().hash(&mut h);
        t.shape().get(1..).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests;

//! A worker thread: waits for the policy to call a batch, runs it on the
//! executor outside the queue lock, and answers every request in it.

use super::policy::Flush;
use super::queue::Entry;
use super::{BatchTrace, JobError, JobOutput, Pending, Shared, TraceLink};
use crate::tensor::Tensor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub(super) fn run(shared: &Shared, instance: usize) {
    while let Some((batch, expired)) = next_batch(shared) {
        for e in expired {
            let queued = e.enqueued.elapsed();
            let err = JobError::DeadlineExceeded { queued_ms: queued.as_millis() as u64 };
            shared.observer.request_done(queued, Duration::ZERO, Err(&err));
            let _ = e.item.reply.send(Err(err));
        }
        if !batch.is_empty() {
            execute(shared, instance, batch);
        }
    }
}

type Batch = Vec<Entry<Pending>>;

/// Blocks until there is a batch to run (or expired requests to answer);
/// `None` once the batcher stopped accepting and the queue is empty.
///
/// As in Triton, the queue delay runs from the head request's arrival: a
/// request that queued while the instance was busy runs as soon as it is
/// free. (Restarting the delay when the instance frees up, to merge more
/// callers into one batch, measured 25 % slower in `make bench-sidecar`.)
fn next_batch(shared: &Shared) -> Option<(Batch, Batch)> {
    let mut state = shared.lock();
    loop {
        let now = Instant::now();
        match state.queue.pending(now) {
            None if !state.accepting => return None,
            None => {
                state.waiting += 1;
                state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                state.waiting -= 1;
            }
            Some((rows, oldest)) => {
                // While shutting down, flush whatever is there without waiting.
                let flush = if state.accepting {
                    shared.policy.decide(rows, oldest, now)
                } else {
                    Flush::Now(shared.policy.max_rows)
                };
                match flush {
                    Flush::Now(max_rows) => {
                        let max_rows = if shared.policy.dynamic { max_rows } else { 0 };
                        let taken = state.queue.take(now, max_rows);
                        return Some((taken.batch, taken.expired));
                    }
                    Flush::WaitUntil(t) => {
                        state.waiting += 1;
                        let (mut s, _) = shared
                            .wake
                            .wait_timeout(state, t.saturating_duration_since(now))
                            .unwrap_or_else(|p| p.into_inner());
                        s.waiting -= 1;
                        state = s;
                    }
                }
            }
        }
    }
}

fn execute(shared: &Shared, instance: usize, mut batch: Batch) {
    let span = tracing::debug_span!("batch", instance, requests = batch.len(), rows = tracing::field::Empty);
    let _entered = span.enter();
    let started = Instant::now();
    let rows: Vec<usize> = batch.iter().map(|e| e.rows).collect();
    let total_rows: usize = rows.iter().sum();
    span.record("rows", total_rows);
    let result = assemble(&mut batch).and_then(|inputs| {
        catch_unwind(AssertUnwindSafe(|| shared.executor.run(inputs)))
            .map_err(|_| "the executor panicked".to_string())?
            .map_err(|e| e.to_string())
    });
    let compute = started.elapsed();
    if let Ok(outputs) = &result {
        shared.observer.batch_outputs(outputs);
    }
    let scattered = result.and_then(|outputs| scatter(outputs, &rows));
    shared.observer.batch_ran(total_rows, batch.len(), compute, scattered.is_ok());
    let links: Vec<TraceLink> = batch.iter().filter_map(|e| e.item.link).collect();
    if !links.is_empty() {
        let trace = BatchTrace { started, compute, rows: total_rows, instance, ok: scattered.is_ok(), links: &links };
        shared.observer.batch_traced(&trace);
    }
    match scattered {
        Ok(per_request) => {
            shared.record_row_time(compute, total_rows);
            for (e, outputs) in batch.into_iter().zip(per_request) {
                let queue_time = started.saturating_duration_since(e.enqueued);
                shared.observer.request_done(queue_time, compute, Ok(()));
                let out = JobOutput {
                    outputs,
                    queue_time,
                    compute_time: compute,
                    batch_rows: total_rows,
                    instance,
                    batch_started: started,
                };
                let _ = e.item.reply.send(Ok(out));
            }
        }
        Err(message) => {
            let err = JobError::Execution(message);
            for e in batch {
                shared.observer.request_done(started.saturating_duration_since(e.enqueued), compute, Err(&err));
                let _ = e.item.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Concatenates each input across the batch's requests, moving the inputs
/// out of the entries (a lone request's inputs are not copied at all).
fn assemble(batch: &mut Batch) -> Result<Vec<Tensor>, String> {
    if let [single] = batch.as_mut_slice() {
        return Ok(std::mem::take(&mut single.item.inputs));
    }
    let inputs = batch.first().map(|e| e.item.inputs.len()).unwrap_or(0);
    (0..inputs)
        .map(|i| {
            let parts: Vec<&Tensor> = batch.iter().filter_map(|e| e.item.inputs.get(i)).collect();
            Tensor::concat(&parts).map_err(|e| format!("assembling the batch: {e}"))
        })
        .collect()
}

/// Splits every output back into each request's rows.
fn scatter(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>, String> {
    if let [_] = rows {
        return Ok(vec![outputs]);
    }
    let mut per_request: Vec<Vec<Tensor>> = rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for output in outputs {
        let pieces = output
            .split_rows(rows)
            .map_err(|e| format!("the model's output does not keep the batch dimension: {e}"))?;
        for (slot, piece) in per_request.iter_mut().zip(pieces) {
            slot.push(piece);
        }
    }
    Ok(per_request)
}

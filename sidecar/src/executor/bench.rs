//! Measuring an executor outside the server (no gRPC, no batcher): rows per
//! second for a batch size on a number of threads, host copies included,
//! and agreement with another executor on the same input. Behind
//! `meridian-sidecar bench`, the GPU device script's raw figures.

use super::{Executor, RunError};
use crate::models;
use crate::tensor::{DataType, Tensor, TensorData};
use std::time::{Duration, Instant};

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Rows (inferences) per second over all threads.
    pub rows_per_second: f64,
    /// Mean wall time of one batch on one thread, ms.
    pub ms_per_batch: f64,
    /// Batches run.
    pub batches: u64,
}

/// A deterministic FP32 input of `rows` rows for the executor's first input
/// (its shape after the batch dimension; open dimensions become 1): the
/// seeded stream of [`models::weights`] with seed 99, in ±1.
pub fn input(executor: &dyn Executor, rows: usize) -> Result<Tensor, RunError> {
    let spec =
        executor.signature().inputs.first().ok_or_else(|| RunError::Execution("the model has no input".into()))?;
    if spec.dtype != DataType::F32 {
        return Err(RunError::Execution(format!("input {} is {:?}; the bench feeds FP32", spec.name, spec.dtype)));
    }
    let mut shape = vec![rows];
    shape.extend(spec.shape.iter().skip(1).map(|&d| if d > 0 { d as usize } else { 1 }));
    let values = models::weights(99, 0, shape.iter().product(), 1.0);
    Ok(Tensor::try_new(DataType::F32, shape, TensorData::Fixed(values.iter().flat_map(|v| v.to_le_bytes()).collect()))?)
}

/// Runs `rows`-row batches on `threads` threads at once for `duration`
/// (after one warm-up batch per thread), each run converting the host
/// input and returning the host output, as the batcher does.
pub fn throughput(
    executor: &dyn Executor,
    rows: usize,
    threads: usize,
    duration: Duration,
) -> Result<Throughput, RunError> {
    let batch = input(executor, rows)?;
    let results: Vec<Result<(u64, Duration), RunError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let batch = batch.clone();
                scope.spawn(move || -> Result<(u64, Duration), RunError> {
                    executor.run(vec![batch.clone()])?;
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < duration {
                        executor.run(vec![batch.clone()])?;
                        n += 1;
                    }
                    Ok((n, start.elapsed()))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(RunError::Execution("a bench thread panicked".into()))))
            .collect()
    });
    let mut batches = 0u64;
    let mut rate = 0.0;
    let mut busy = Duration::ZERO;
    for r in results {
        let (n, wall) = r?;
        batches += n;
        rate += (n as usize * rows) as f64 / wall.as_secs_f64().max(1e-9);
        busy += wall;
    }
    Ok(Throughput { rows_per_second: rate, ms_per_batch: busy.as_secs_f64() * 1e3 / batches.max(1) as f64, batches })
}

/// What one executor spends per row at a batch size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuCost {
    /// Rows per second of CPU time the whole process used (every thread:
    /// the caller's and tract's intra-op threads).
    pub rows_per_cpu_second: f64,
    /// Rows per second of wall time.
    pub rows_per_second: f64,
    /// Batches run.
    pub batches: u64,
}

/// CPU time this process has used, all threads together, from each
/// thread's `schedstat` (nanoseconds, unlike the 10 ms ticks of `stat`).
pub fn process_cpu_time() -> std::io::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task")? {
        // A thread that exited between the listing and the read is gone.
        let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else { continue };
        total += text.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// Runs `rows`-row batches back to back on one thread for `duration`, as
/// one batcher instance does (host conversion included, after one warm-up
/// batch), and measures the process's CPU time over them: the executor's
/// own cost per row, the baseline the served cost is compared with.
pub fn cpu_cost(executor: &dyn Executor, rows: usize, duration: Duration) -> Result<CpuCost, RunError> {
    let batch = input(executor, rows)?;
    executor.run(vec![batch.clone()])?;
    let cpu = |e: std::io::Error| RunError::Execution(format!("reading the process CPU time: {e}"));
    let cpu0 = process_cpu_time().map_err(cpu)?;
    let start = Instant::now();
    let mut batches = 0u64;
    while start.elapsed() < duration {
        executor.run(vec![batch.clone()])?;
        batches += 1;
    }
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    let used = process_cpu_time().map_err(cpu)?.saturating_sub(cpu0).as_secs_f64().max(1e-9);
    let total = (batches as usize * rows) as f64;
    Ok(CpuCost { rows_per_cpu_second: total / used, rows_per_second: total / wall, batches })
}

/// The first output of `executor` on the deterministic `rows`-row input,
/// as FP32 values.
pub fn output(executor: &dyn Executor, rows: usize) -> Result<Vec<f32>, RunError> {
    let out = executor.run(vec![input(executor, rows)?])?;
    let first = out.into_iter().next().ok_or_else(|| RunError::Execution("the model returned nothing".into()))?;
    match first.data() {
        TensorData::Fixed(bytes) if first.dtype() == DataType::F32 => {
            Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
        _ => Err(RunError::Execution(format!("the first output is {:?}, not FP32", first.dtype()))),
    }
}

/// The largest absolute difference between two executors' first outputs on
/// the same deterministic input.
pub fn max_abs_diff(a: &dyn Executor, b: &dyn Executor, rows: usize) -> Result<f32, RunError> {
    let (x, y) = (output(a, rows)?, output(b, rows)?);
    if x.len() != y.len() {
        return Err(RunError::Execution(format!("outputs differ in size: {} vs {}", x.len(), y.len())));
    }
    Ok(x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::cpu::CpuRuntime;
    use crate::executor::{PrepareOptions, Runtime};

    #[test]
    fn measures_rows_and_compares_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mlp.onnx");
        std::fs::write(&path, models::mlp(&[8, 16, 4], 3)).expect("write");
        let exec =
            CpuRuntime.prepare(&path, &PrepareOptions { batch_buckets: vec![4], threads: 1, ..Default::default() });
        let exec = exec.expect("prepare");
        let t = throughput(exec.as_ref(), 4, 2, Duration::from_millis(50)).expect("bench");
        assert!(t.batches > 0 && t.rows_per_second > 0.0 && t.ms_per_batch > 0.0, "{t:?}");
        assert_eq!(max_abs_diff(exec.as_ref(), exec.as_ref(), 3).expect("diff"), 0.0);
        let other = dir.path().join("other.onnx");
        std::fs::write(&other, models::mlp(&[8, 16, 4], 4)).expect("write");
        let other = CpuRuntime.prepare(&other, &PrepareOptions::default()).expect("prepare");
        assert!(max_abs_diff(exec.as_ref(), other.as_ref(), 3).expect("diff") > 1e-3, "other weights, other output");
        assert_eq!(output(exec.as_ref(), 3).expect("out").len(), 12);
        let cost = cpu_cost(exec.as_ref(), 4, Duration::from_millis(50)).expect("cost");
        assert!(cost.batches > 0 && cost.rows_per_cpu_second > 0.0 && cost.rows_per_second > 0.0, "{cost:?}");
    }
}

//! An executor that takes at least a fixed time per batch: the model runs,
//! then the worker thread sleeps the rest. A stand-in for a slower device
//! (Triton's identity backend has `execute_delay_ms` for the same): a
//! replica's capacity becomes `instances × max_batch_size / delay` without
//! burning CPU, so load tests and the local mesh's autoscaling can make one
//! replica the bottleneck on a small machine. Set by `execute_delay_us` in
//! config.yaml; never on by default.

use super::{Executor, RunError, Signature};
use crate::tensor::Tensor;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `inner`, taking at least `delay` per run.
#[derive(Debug)]
pub struct Delayed {
    inner: Arc<dyn Executor>,
    delay: Duration,
}

impl Delayed {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Executor>, delay: Duration) -> Self {
        Self { inner, delay }
    }
}

impl Executor for Delayed {
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let started = Instant::now();
        let result = self.inner.run(inputs);
        if let Some(rest) = self.delay.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        result
    }

    fn plan_ops(&self, rows: usize) -> Vec<String> {
        self.inner.plan_ops(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::cpu::CpuRuntime;
    use crate::executor::{PrepareOptions, Runtime};

    #[test]
    fn a_run_takes_at_least_the_delay_and_returns_the_same_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mlp.onnx");
        std::fs::write(&path, crate::models::mlp(&[8, 16, 4], 3)).expect("write");
        let inner: Arc<dyn Executor> =
            Arc::from(CpuRuntime.prepare(&path, &PrepareOptions::default()).expect("prepared"));
        let delayed = Delayed::new(inner.clone(), Duration::from_millis(30));
        let input = crate::tensor::Tensor::zeros(crate::tensor::DataType::F32, vec![2, 8]).expect("tensor");
        let started = Instant::now();
        let out = delayed.run(vec![input.clone()]).expect("runs");
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(out, inner.run(vec![input]).expect("runs"));
    }
}

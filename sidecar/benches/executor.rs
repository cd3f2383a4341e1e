//! `cargo bench -p meridian-sidecar --bench executor`: raw CPU executor
//! throughput on the MLP 512→2048→2048→10 per batch size, with a plan fixed
//! to the batch size (a bucket) against the symbolic-batch plan, measured
//! in the same run.

use meridian_sidecar::executor::cpu::CpuRuntime;
use meridian_sidecar::executor::{PrepareOptions, Runtime};
use meridian_sidecar::models;
use meridian_sidecar::tensor::{DataType, Tensor};
use std::time::{Duration, Instant};

fn rows_per_second(exec: &dyn meridian_sidecar::executor::Executor, batch: usize) -> f64 {
    let input = Tensor::zeros(DataType::F32, vec![batch, 512]).expect("tensor");
    let budget = Duration::from_millis(600);
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < budget {
        exec.run(vec![input.clone()]).expect("run");
        runs += 1;
    }
    (runs * batch) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mlp.onnx");
    std::fs::write(&path, models::mlp(&[512, 2048, 2048, 10], 42)).expect("write");
    let sizes = [1usize, 8, 16, 32, 64];
    let fixed = CpuRuntime
        .prepare(&path, &PrepareOptions { batch_buckets: sizes.to_vec(), threads: 1, ..Default::default() })
        .expect("prepare");
    let symbolic = CpuRuntime
        .prepare(&path, &PrepareOptions { batch_buckets: vec![], threads: 1, ..Default::default() })
        .expect("prepare");
    let two = CpuRuntime
        .prepare(&path, &PrepareOptions { batch_buckets: sizes.to_vec(), threads: 2, ..Default::default() })
        .expect("prepare");
    println!("{:>6} {:>14} {:>16} {:>18}", "batch", "fixed rows/s", "symbolic rows/s", "fixed 2 threads");
    for batch in sizes {
        let f = rows_per_second(fixed.as_ref(), batch);
        let s = rows_per_second(symbolic.as_ref(), batch);
        let t = rows_per_second(two.as_ref(), batch);
        println!("{batch:>6} {f:>14.0} {s:>16.0} {t:>18.0}");
    }
}

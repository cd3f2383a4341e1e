//! Devices and precisions: the transformer block against an independent
//! reference, FP16 computation behind FP32 inputs and outputs, the ops tract
//! leaves for tract-cuda, and what happens without a GPU (CI has none).

use meridian_sidecar::executor::cpu::CpuRuntime;
use meridian_sidecar::executor::cuda::{self, CudaRuntime};
use meridian_sidecar::executor::{plan, Precision, PrepareError, PrepareOptions, Runtime};
use meridian_sidecar::models::{self, block_weights, BlockShape};
use meridian_sidecar::tensor::{DataType, Tensor, TensorData};
use std::path::PathBuf;

const SMALL: BlockShape = BlockShape { seq: 5, width: 16, heads: 4, ffn: 24 };
const SEED: u64 = 11;

fn write(dir: &tempfile::TempDir, name: &str, onnx: Vec<u8>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, onnx).expect("write model");
    path
}

fn f32_tensor(shape: Vec<usize>, values: &[f32]) -> Tensor {
    Tensor::try_new(DataType::F32, shape, TensorData::Fixed(values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .expect("tensor")
}

fn f32_values(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::Fixed(bytes) => {
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        TensorData::Bytes(_) => panic!("expected FP32 contents"),
    }
}

/// `x @ w + b` for row-major `x [n, i]`, `w [i, o]`.
fn dense(x: &[f32], n: usize, seed: u64, (w, b): (u64, u64), i: usize, o: usize) -> Vec<f32> {
    let scale = 1.0 / (i as f32).sqrt();
    let (w, b) = (models::weights(seed, w, i * o, scale), models::weights(seed, b, o, scale));
    let mut y = vec![0f32; n * o];
    for r in 0..n {
        for c in 0..o {
            y[r * o + c] = b[c] + (0..i).map(|k| x[r * i + k] * w[k * o + c]).sum::<f32>();
        }
    }
    y
}

fn layer_norm(x: &[f32], width: usize, seed: u64, ids: (u64, u64)) -> Vec<f32> {
    let (g, b) = models::layer_norm_params(seed, ids, width);
    let (g, b) = (&g, &b);
    x.chunks(width)
        .flat_map(|row| {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + 1e-5).sqrt();
            row.iter().enumerate().map(move |(i, v)| (v - mean) * inv * g[i] + b[i]).collect::<Vec<_>>()
        })
        .collect()
}

/// The block computed directly from its definition, one sequence at a time.
fn reference_block(x: &[f32], shape: BlockShape, seed: u64) -> Vec<f32> {
    let BlockShape { seq, width, heads, ffn } = shape;
    let head = width / heads;
    let mut out = Vec::with_capacity(x.len());
    for s in x.chunks(seq * width) {
        let h = layer_norm(s, width, seed, block_weights::LN1);
        let q = dense(&h, seq, seed, block_weights::Q, width, width);
        let k = dense(&h, seq, seed, block_weights::K, width, width);
        let v = dense(&h, seq, seed, block_weights::V, width, width);
        let mut ctx = vec![0f32; seq * width];
        for hd in 0..heads {
            for i in 0..seq {
                let scores: Vec<f32> = (0..seq)
                    .map(|j| {
                        (0..head).map(|d| q[i * width + hd * head + d] * k[j * width + hd * head + d]).sum::<f32>()
                            / (head as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f32 = exp.iter().sum();
                for d in 0..head {
                    ctx[i * width + hd * head + d] =
                        (0..seq).map(|j| exp[j] / total * v[j * width + hd * head + d]).sum::<f32>();
                }
            }
        }
        let o = dense(&ctx, seq, seed, block_weights::O, width, width);
        let res1: Vec<f32> = s.iter().zip(&o).map(|(a, b)| a + b).collect();
        let h2 = layer_norm(&res1, width, seed, block_weights::LN2);
        let up = dense(&h2, seq, seed, block_weights::UP, width, ffn);
        let c = (2.0 / std::f32::consts::PI).sqrt();
        let gelu: Vec<f32> = up.iter().map(|&u| 0.5 * u * (1.0 + (c * (u + 0.044715 * u * u * u)).tanh())).collect();
        let down = dense(&gelu, seq, seed, block_weights::DOWN, ffn, width);
        out.extend(res1.iter().zip(&down).map(|(a, b)| a + b));
    }
    out
}

fn input(batch: usize, shape: BlockShape) -> Vec<f32> {
    models::weights(99, 0, batch * shape.seq * shape.width, 2.0)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn the_transformer_block_matches_its_definition_on_the_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "block.onnx", models::transformer_block(SMALL, SEED));
    let exec = CpuRuntime
        .prepare(&path, &PrepareOptions { batch_buckets: vec![3], threads: 1, ..Default::default() })
        .expect("prepare");
    assert_eq!(exec.signature().inputs[0].shape, vec![-1, 5, 16]);
    assert_eq!(exec.signature().outputs[0].shape, vec![-1, 5, 16]);
    for batch in [1, 3] {
        let x = input(batch, SMALL);
        let out = exec.run(vec![f32_tensor(vec![batch, 5, 16], &x)]).expect("run");
        let got = f32_values(&out[0]);
        let want = reference_block(&x, SMALL, SEED);
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-4, "batch {batch}: max |tract - reference| = {diff}");
        // Not the identity: the block changes its input.
        assert!(max_abs_diff(&got, &x) > 0.1);
    }
}

/// Op kinds tract-cuda 0.23.9 translates to the device (its
/// `register_cuda_op!` list and copy-based ops) that the generated models
/// decluttered into; anything else would run on the host.
const CUDA_OPS: &[&str] = &[
    "Source",
    "Const",
    "EinSum",
    "Add",
    "Sub",
    "Mul",
    "Reduce<Sum>",
    "RmsNorm",
    "Softmax",
    "Tanh",
    "Square",
    "Reshape",
    "Max",
];

#[test]
fn the_generated_models_decluttered_hold_only_ops_tract_cuda_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let block = write(&dir, "block.onnx", models::transformer_block(SMALL, SEED));
    let mlp = write(&dir, "mlp.onnx", models::mlp(&[16, 32, 8], 1));
    for path in [block, mlp] {
        let loaded = plan::load(&path, Precision::Fp32).expect("load");
        let ops: Vec<String> = loaded.model.nodes().iter().map(|n| n.op.name().to_string()).collect();
        let host: Vec<&String> = ops.iter().filter(|o| !CUDA_OPS.contains(&o.as_str())).collect();
        assert!(host.is_empty(), "{}: ops tract-cuda would leave on the host: {host:?} (all: {ops:?})", path.display());
    }
}

#[test]
fn fp16_computes_behind_fp32_inputs_and_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mlp = write(&dir, "mlp.onnx", models::mlp(&[32, 64, 8], 5));
    let block = write(&dir, "block.onnx", models::transformer_block(SMALL, SEED));
    let fp16 = PrepareOptions { batch_buckets: vec![2], threads: 1, precision: Precision::Fp16 };
    let fp32 = PrepareOptions { batch_buckets: vec![2], threads: 1, precision: Precision::Fp32 };
    for (path, shape, tolerance) in [(&mlp, vec![2, 32], 5e-3), (&block, vec![2, 5, 16], 5e-2)] {
        let half = CpuRuntime.prepare(path, &fp16).expect("fp16");
        let full = CpuRuntime.prepare(path, &fp32).expect("fp32");
        assert_eq!(half.signature(), full.signature(), "the interface keeps the file's types");
        assert_eq!(half.signature().inputs[0].dtype, DataType::F32);
        let x = models::weights(3, 0, shape.iter().product(), 1.0);
        let a = f32_values(&half.run(vec![f32_tensor(shape.clone(), &x)]).expect("fp16 run")[0]);
        let b = f32_values(&full.run(vec![f32_tensor(shape.clone(), &x)]).expect("fp32 run")[0]);
        let diff = max_abs_diff(&a, &b);
        assert!(diff < tolerance, "{}: fp16 vs fp32 differ by {diff}", path.display());
        assert!(diff > 0.0, "{}: fp16 gave bit-identical results: not computed in fp16", path.display());
    }
    let loaded = plan::load(&mlp, Precision::Fp16).expect("load");
    assert!(loaded.model.nodes().iter().any(|n| n.outputs.iter().any(|o| o.fact.datum_type == f16_type())));
}

fn f16_type() -> tract_onnx::prelude::DatumType {
    tract_onnx::prelude::DatumType::F16
}

#[test]
fn without_a_gpu_cuda_says_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, "mlp.onnx", models::mlp(&[8, 4], 1));
    match cuda::probe() {
        Err(reason) => {
            // CI: no NVIDIA driver. tract-cuda's check names the driver library.
            assert!(reason.contains("libcuda.so"), "{reason}");
            let err = CudaRuntime.prepare(&path, &PrepareOptions::default()).expect_err("no gpu");
            match err {
                PrepareError::Device(message) => assert!(message.contains("libcuda.so"), "{message}"),
                other => panic!("expected a device error, got {other}"),
            }
        }
        Ok(gpu) => {
            // A machine with a GPU: the same model runs there, and agrees with the CPU.
            let exec = CudaRuntime.prepare(&path, &PrepareOptions::default()).expect(&gpu.description);
            let x = f32_tensor(vec![1, 8], &[0.5; 8]);
            let cpu = CpuRuntime.prepare(&path, &PrepareOptions::default()).expect("cpu");
            let diff = max_abs_diff(
                &f32_values(&exec.run(vec![x.clone()]).expect("gpu run")[0]),
                &f32_values(&cpu.run(vec![x]).expect("cpu run")[0]),
            );
            assert!(diff < 1e-5, "gpu vs cpu: {diff}");
        }
    }
}

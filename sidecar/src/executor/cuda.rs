//! The CUDA executor: tract-cuda, with the same plans per batch bucket as
//! the CPU executor, and every panic inside tract-cuda turned into an error.
//!
//! tract-cuda drives device 0 of the devices visible to the process (see
//! [`super::device::DeviceChoice::restrict_visible_devices`] for `cuda:N`),
//! loads the driver and libraries (cudart, NVRTC, cuBLAS, cuDNN) at run time,
//! and compiles its kernels with NVRTC into a cubin cache on first use;
//! [`kernels`] precompiles that cache without a GPU.

pub mod kernels;

use super::plan::{self, PlannedExecutor};
use super::{Executor, PrepareError, PrepareOptions, RunError, Runtime, Signature};
use crate::tensor::Tensor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tract_onnx::prelude::*;

/// tract-cuda's runtime, on device 0 of the visible devices.
#[derive(Debug, Default, Clone, Copy)]
pub struct CudaRuntime;

/// A usable GPU, as [`probe`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// The device's name, compute capability and memory, for the start log.
    pub description: String,
}

impl Runtime for CudaRuntime {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn prepare(&self, path: &Path, options: &PrepareOptions) -> Result<Box<dyn Executor>, PrepareError> {
        let loaded = plan::load(path, options.precision)?;
        let runtime = tract_cuda_runtime().map_err(PrepareError::Device)?;
        let planned = guarded("preparing the model on CUDA", || {
            PlannedExecutor::plan(path, loaded, runtime, &RunOptions::default(), options)
        })
        .map_err(PrepareError::Device)??;
        Ok(Box::new(CudaExecutor { planned }))
    }
}

/// A model planned on the GPU. Each batcher worker thread runs on its own
/// CUDA stream (tract-cuda keeps one per thread), so several instances
/// overlap copies with compute.
#[derive(Debug)]
struct CudaExecutor {
    planned: PlannedExecutor,
}

impl Executor for CudaExecutor {
    fn signature(&self) -> &Signature {
        self.planned.signature()
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        guarded("running a batch on CUDA", || self.planned.run(inputs)).map_err(RunError::Execution)?
    }

    fn plan_ops(&self, rows: usize) -> Vec<String> {
        self.planned.plan_ops(rows)
    }
}

/// Of a CUDA plan's ops, those that run on the host: everything but
/// tract-cuda's device ops (`Gpu…`, `Cuda…`, `ConvCudnn`), the host↔device
/// copies at the plan's edges (`DeviceSync…`), sources and constants.
pub fn host_ops(ops: &[String]) -> Vec<String> {
    ops.iter()
        .filter(|o| {
            !["Gpu", "Cuda", "ConvCudnn", "DeviceSync"].iter().any(|p| o.starts_with(p))
                && !matches!(o.as_str(), "Source" | "Const")
        })
        .cloned()
        .collect()
}

/// tract's "cuda" runtime. Naming `tract_cuda` here also keeps the crate
/// linked, without which its runtime never registers.
fn tract_cuda_runtime() -> Result<&'static dyn tract_onnx::prelude::Runtime, String> {
    tract_cuda::utils::ensure_cuda_runtime_dependencies("CUDA is not usable").map_err(|e| format!("{e:#}"))?;
    tract_onnx::prelude::runtime_for_name("cuda")
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| "tract-cuda's runtime is not registered in this build".to_string())
}

/// Runs `f`; a panic inside it (tract-cuda panics where context or stream
/// creation fails) becomes an error naming `what`.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        format!("tract-cuda panicked while {what}: {message}")
    })
}

/// Checks that models can run on CUDA here: the driver and every library
/// tract-cuda needs load (its own check names the first one missing), a
/// context comes up, and a small model plans, runs and returns the right
/// answer. Cold, this compiles tract-cuda's kernels unless the cubin cache
/// holds them (see [`kernels::precompile`]).
pub fn probe() -> Result<GpuInfo, String> {
    let runtime = tract_cuda_runtime()?;
    guarded("probing the GPU", || -> Result<GpuInfo, String> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 3])).map_err(|e| e.to_string())?;
        let one = model.add_const("one", tensor2(&[[1f32; 3]; 2])).map_err(|e| e.to_string())?;
        let y = model
            .wire_node("y", tract_onnx::tract_core::ops::math::add(), &[x, one])
            .map_err(|e| format!("building the probe model: {e:#}"))?;
        model.select_output_outlets(&y).map_err(|e| e.to_string())?;
        let plan = runtime.prepare(model).map_err(|e| format!("planning a probe model on CUDA: {e:#}"))?;
        let input = tensor2(&[[1f32, 2., 3.], [4., 5., 6.]]);
        let out = plan.run(tvec![input.into()]).map_err(|e| format!("running a probe model on CUDA: {e:#}"))?;
        let got: Vec<f32> = out
            .first()
            .and_then(|t| t.to_plain_array_view::<f32>().ok())
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        if got != [2., 3., 4., 5., 6., 7.] {
            return Err(format!("a probe model on CUDA returned {got:?}, expected [2, 3, 4, 5, 6, 7]"));
        }
        Ok(GpuInfo { description: describe_device() })
    })?
}

/// Device 0's name, compute capability and memory.
fn describe_device() -> String {
    match cudarc::runtime::result::device::get_device_prop(0) {
        Ok(prop) => {
            let name: Vec<u8> = prop.name.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
            format!(
                "{} (compute capability {}.{}, {} MiB)",
                String::from_utf8_lossy(&name),
                prop.major,
                prop.minor,
                prop.totalGlobalMem / (1 << 20)
            )
        }
        Err(e) => format!("CUDA device 0 (properties unavailable: {e})"),
    }
}

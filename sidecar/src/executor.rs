//! Executors: a loaded model that runs a batch of inputs, behind one trait so
//! the batcher and repository do not care which device runs it.
//!
//! The shape follows tract's own: a runtime *prepares* a model file into an
//! [`Executor`], which *runs* tensors. Executors know nothing of gRPC.

pub mod bench;
pub mod cpu;
pub mod cuda;
pub mod delay;
pub mod device;
pub mod plan;

use crate::tensor::{DataType, Tensor, TensorError};
use std::path::Path;
use thiserror::Error;

/// One input or output of a model, as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The tensor's name in the model.
    pub name: String,
    /// Its element type.
    pub dtype: DataType,
    /// Its full shape, batch dimension included; -1 marks a dimension the
    /// model leaves open.
    pub shape: Vec<i64>,
}

/// What a model takes and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Inputs, in the model's order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in the model's order.
    pub outputs: Vec<TensorSpec>,
}

/// How to prepare a model.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// Batch sizes to build a dedicated plan for (the model's leading
    /// dimension fixed to that size). Other sizes run a plan with a symbolic
    /// batch dimension.
    pub batch_buckets: Vec<usize>,
    /// Threads one batch may use (intra-op parallelism); 1: the worker
    /// thread alone.
    pub threads: usize,
    /// The precision the model computes in; inputs and outputs keep the
    /// file's types.
    pub precision: Precision,
}

/// The floating-point precision a model computes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// As the file says (FP32 for FP32 models).
    #[default]
    Fp32,
    /// FP32 computation translated to FP16 (tract's float translator), with
    /// casts at the inputs and outputs.
    Fp16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            _ => Err(format!("'{s}' is not a precision: expected fp32 or fp16")),
        }
    }
}

impl Precision {
    /// The name used in config.yaml.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
        }
    }
}

/// Why a model could not be prepared.
#[derive(Debug, Error)]
pub enum PrepareError {
    /// The file is not a model this runtime can load.
    #[error("loading {path}: {message}")]
    Load {
        /// The model file.
        path: String,
        /// What tract said.
        message: String,
    },
    /// The model uses something the protocol cannot carry.
    #[error("{0}")]
    Unsupported(String),
    /// The device could not take the model (no usable GPU, a failure inside
    /// the GPU runtime).
    #[error("{0}")]
    Device(String),
}

/// Why a batch failed to run.
#[derive(Debug, Error)]
pub enum RunError {
    /// The inputs do not fit the model.
    #[error("{0}")]
    Input(#[from] TensorError),
    /// The runtime failed while executing.
    #[error("execution failed: {0}")]
    Execution(String),
}

/// A model prepared on some device, ready to run batches.
///
/// `run` is called from the batcher's worker threads, never from the async
/// runtime; an implementation may block.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// What the model takes and returns.
    fn signature(&self) -> &Signature;

    /// Runs one batch. `inputs` follow `signature().inputs` in order; the
    /// result follows `signature().outputs`.
    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError>;

    /// The ops of the plan that runs `rows`-row batches, by name, for
    /// placement checks (tract-cuda names device ops `Gpu…`/`Cuda…`).
    fn plan_ops(&self, rows: usize) -> Vec<String> {
        let _ = rows;
        Vec::new()
    }
}

/// Something that turns a model file into an [`Executor`].
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// A short name for logs ("cpu", "cuda").
    fn name(&self) -> &'static str;

    /// Loads, optimises and plans the model at `path`.
    fn prepare(&self, path: &Path, options: &PrepareOptions) -> Result<Box<dyn Executor>, PrepareError>;
}

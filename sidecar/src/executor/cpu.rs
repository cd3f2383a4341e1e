//! The CPU executor: tract, with one optimised plan per batch bucket and a
//! symbolic-batch plan for every other size.

use super::{Executor, PrepareError, PrepareOptions, RunError, Runtime, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tract_onnx::prelude::*;

/// tract's CPU runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuRuntime;

/// A model planned by tract for the CPU.
#[derive(Debug)]
pub struct CpuExecutor {
    signature: Signature,
    /// Plans with the batch dimension fixed, by batch size.
    buckets: BTreeMap<usize, Box<dyn Runnable>>,
    /// The plan for any batch size (or the only plan of a model without a
    /// symbolic batch dimension).
    general: Box<dyn Runnable>,
}

impl Runtime for CpuRuntime {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn prepare(&self, path: &Path, options: &PrepareOptions) -> Result<Box<dyn Executor>, PrepareError> {
        let load = |e: TractError| PrepareError::Load { path: path.display().to_string(), message: format!("{e:#}") };
        let model = tract_onnx::onnx().model_for_path(path).map_err(load)?.into_typed().map_err(load)?;
        let signature = signature(&model)?;
        let runtime = tract_onnx::prelude::runtime_for_name("cpu")
            .map_err(load)?
            .ok_or_else(|| PrepareError::Unsupported("tract's CPU runtime is not registered".into()))?;

        let run_options = RunOptions {
            executor: (options.threads > 1).then(|| tract_linalg::multithread::Executor::multithread(options.threads)),
            ..RunOptions::default()
        };
        let mut buckets = BTreeMap::new();
        if let Some(batch) = batch_symbol(&model) {
            for &size in &options.batch_buckets {
                let subs = HashMap::from([(batch.clone(), TDim::Val(size as i64))]);
                let fixed = model.set_symbols(&subs).map_err(load)?;
                buckets.insert(size, runtime.prepare_with_options(fixed, &run_options).map_err(load)?);
            }
        }
        let general = runtime.prepare_with_options(model, &run_options).map_err(load)?;
        Ok(Box::new(CpuExecutor { signature, buckets, general }))
    }
}

impl Executor for CpuExecutor {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let rows = inputs.first().map(Tensor::rows).unwrap_or(1);
        let plan = self.buckets.get(&rows).unwrap_or(&self.general);
        let values = inputs.iter().map(|t| t.to_tract().map(TValue::from)).collect::<Result<TVec<_>, _>>()?;
        let outputs = plan.run(values).map_err(|e| RunError::Execution(format!("{e:#}")))?;
        outputs.iter().map(|t| Tensor::from_tract(t).map_err(RunError::from)).collect()
    }
}

/// The symbol of the leading dimension shared by the model's inputs, if any.
fn batch_symbol(model: &TypedModel) -> Option<Symbol> {
    let fact = model.input_fact(0).ok()?;
    match fact.shape.dims().first()? {
        TDim::Sym(s) => Some(s.clone()),
        _ => None,
    }
}

fn signature(model: &TypedModel) -> Result<Signature, PrepareError> {
    let spec = |name: String, fact: &TypedFact| -> Result<TensorSpec, PrepareError> {
        let dtype = DataType::from_tract(fact.datum_type).ok_or_else(|| {
            PrepareError::Unsupported(format!(
                "tensor {name} has type {:?}, which the v2 protocol cannot carry",
                fact.datum_type
            ))
        })?;
        let shape = fact.shape.dims().iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
        Ok(TensorSpec { name, dtype, shape })
    };
    let inputs = model
        .inputs
        .iter()
        .map(|o| {
            let fact = model.outlet_fact(*o).map_err(|e| PrepareError::Unsupported(e.to_string()))?;
            spec(model.node(o.node).name.clone(), fact)
        })
        .collect::<Result<_, _>>()?;
    let outputs = model
        .outputs
        .iter()
        .map(|o| {
            let fact = model.outlet_fact(*o).map_err(|e| PrepareError::Unsupported(e.to_string()))?;
            let name = model.outlet_label(*o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone());
            spec(name, fact)
        })
        .collect::<Result<_, _>>()?;
    Ok(Signature { inputs, outputs })
}

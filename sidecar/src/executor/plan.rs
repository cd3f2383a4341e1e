//! What the CPU and CUDA executors share: loading an ONNX file into tract,
//! the optional FP16 translation, and one plan per batch bucket plus a
//! symbolic-batch plan for every other size.
//!
//! Model → plan → run, as tract has it: [`load`] reads and types the model,
//! [`PlannedExecutor::plan`] asks a tract runtime for the plans, and the
//! executor runs whichever plan fits a batch.

use super::{Executor, Precision, PrepareError, PrepareOptions, RunError, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::transform::ModelTransform;

/// A model read from disk: its typed graph (decluttered) and the signature
/// clients see. The signature is the file's, whatever precision it runs at.
#[derive(Debug)]
pub struct LoadedModel {
    /// The graph to plan.
    pub model: TypedModel,
    /// The file's inputs and outputs.
    pub signature: Signature,
}

/// Reads, types and declutters the ONNX file at `path`; with
/// [`Precision::Fp16`], translates FP32 computation to FP16 behind casts at
/// the inputs and outputs, so callers keep sending and receiving FP32.
pub fn load(path: &Path, precision: Precision) -> Result<LoadedModel, PrepareError> {
    let load = |e: TractError| PrepareError::Load { path: path.display().to_string(), message: format!("{e:#}") };
    let model = tract_onnx::onnx().model_for_path(path).map_err(load)?.into_typed().map_err(load)?;
    let signature = signature(&model)?;
    let mut model = model.into_decluttered().map_err(load)?;
    if precision == Precision::Fp16 {
        model = to_fp16(model).map_err(load)?;
    }
    Ok(LoadedModel { model, signature })
}

/// Runs the model's FP32 computation in FP16: tract's float translator,
/// then FP32 → FP16 casts after every FP32 input and FP16 → FP32 casts
/// before every output that was FP32, so the graph's interface is unchanged.
fn to_fp16(model: TypedModel) -> TractResult<TypedModel> {
    let original_inputs: Vec<DatumType> =
        model.inputs.iter().map(|o| model.outlet_fact(*o).map(|f| f.datum_type)).collect::<TractResult<_>>()?;
    let original_outputs: Vec<DatumType> =
        model.outputs.iter().map(|o| model.outlet_fact(*o).map(|f| f.datum_type)).collect::<TractResult<_>>()?;
    let mut model = model;
    FloatPrecisionTranslator::new(f32::datum_type(), f16::datum_type()).transform(&mut model)?;

    for (ix, dt) in original_inputs.iter().enumerate() {
        if *dt != DatumType::F32 {
            continue;
        }
        let source = model.inputs[ix];
        let name = model.node(source.node).name.clone();
        // Wire a cast (FP16 → FP16 for now) between the source and its
        // consumers, then turn the source back to FP32: the cast becomes the
        // conversion.
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(&model, source)?;
        let casted = patch.wire_node(format!("{name}.to_f16"), cast(DatumType::F16), &[tap])?[0];
        patch.shunt_outside(&model, source, casted)?;
        patch.apply(&mut model)?;
        let mut fact = model.outlet_fact(source)?.without_value();
        fact.datum_type = DatumType::F32;
        model.node_mut(source.node).op = Box::new(TypedSource::new(fact.clone()));
        model.set_input_fact(ix, fact)?;
    }
    let mut outputs = model.outputs.clone();
    for (ix, dt) in original_outputs.iter().enumerate() {
        let outlet = outputs[ix];
        if *dt == DatumType::F32 && model.outlet_fact(outlet)?.datum_type == DatumType::F16 {
            let label = model.outlet_label(outlet).map(str::to_string);
            let name = label.clone().unwrap_or_else(|| model.node(outlet.node).name.clone());
            outputs[ix] = model.wire_node(format!("{name}.to_f32"), cast(DatumType::F32), &[outlet])?[0];
            if let Some(label) = label {
                model.set_outlet_label(outputs[ix], label)?;
            }
        }
    }
    model.select_output_outlets(&outputs)?;
    model.into_decluttered()
}

/// A model planned by a tract runtime: a plan per batch bucket and one for
/// every other size.
#[derive(Debug)]
pub struct PlannedExecutor {
    signature: Signature,
    /// Plans with the batch dimension fixed, by batch size.
    buckets: BTreeMap<usize, Box<dyn Runnable>>,
    /// The plan for any batch size (or the only plan of a model without a
    /// symbolic batch dimension).
    general: Box<dyn Runnable>,
}

impl PlannedExecutor {
    /// Plans `loaded` on `runtime` with `run_options`: one plan per bucket
    /// in `options`, and the general plan.
    pub fn plan(
        path: &Path,
        loaded: LoadedModel,
        runtime: &dyn tract_onnx::prelude::Runtime,
        run_options: &RunOptions,
        options: &PrepareOptions,
    ) -> Result<Self, PrepareError> {
        let load = |e: TractError| PrepareError::Load { path: path.display().to_string(), message: format!("{e:#}") };
        let LoadedModel { model, signature } = loaded;
        let mut buckets = BTreeMap::new();
        if let Some(batch) = batch_symbol(&model) {
            for &size in &options.batch_buckets {
                let subs = HashMap::from([(batch.clone(), TDim::Val(size as i64))]);
                let fixed = model.set_symbols(&subs).map_err(load)?;
                buckets.insert(size, runtime.prepare_with_options(fixed, run_options).map_err(load)?);
            }
        }
        let general = runtime.prepare_with_options(model, run_options).map_err(load)?;
        Ok(PlannedExecutor { signature, buckets, general })
    }
}

impl Executor for PlannedExecutor {
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

    fn plan_ops(&self, rows: usize) -> Vec<String> {
        let plan = self.buckets.get(&rows).unwrap_or(&self.general);
        plan.typed_model().map(|m| m.nodes().iter().map(|n| n.op.name().to_string()).collect()).unwrap_or_default()
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

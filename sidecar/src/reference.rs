//! Making a model version's reference set (`meridian-sidecar reference`):
//! seeded inputs for every input the model takes, run once on the CPU at
//! FP32, and the outputs it gave, written beside the model as
//! `reference.json` for drift probes ([`meridian_proto::reference`]).

use crate::executor::cpu::CpuRuntime;
use crate::executor::{PrepareOptions, Runtime};
use crate::models;
use crate::tensor::{DataType, Tensor, TensorData};
use anyhow::{bail, Context, Result};
use meridian_proto::reference::{ReferenceSet, ReferenceTensor};
use std::path::Path;

/// What to make.
#[derive(Debug, Clone)]
pub struct ReferenceOptions {
    /// The model's name on the server.
    pub model: String,
    /// The version number the file is the model of.
    pub version: String,
    /// Rows (the batch dimension of every input).
    pub rows: usize,
    /// Seed of the inputs (uniform in [-1, 1]).
    pub seed: u64,
    /// The largest absolute difference an answer may have.
    pub tolerance: f64,
}

/// Runs the ONNX file at `model_file` on seeded inputs and returns the
/// inputs with the outputs it gave. Inputs must be FP32 (the numeric
/// types a reference holds are FP32, FP64, INT32, INT64 outputs).
pub fn make(model_file: &Path, options: &ReferenceOptions) -> Result<ReferenceSet> {
    anyhow::ensure!(options.rows > 0, "--rows must be at least 1");
    anyhow::ensure!(
        options.tolerance.is_finite() && options.tolerance >= 0.0,
        "--tolerance must be a non-negative number"
    );
    let prepare = PrepareOptions { batch_buckets: vec![options.rows], threads: 1, ..Default::default() };
    let executor =
        CpuRuntime.prepare(model_file, &prepare).with_context(|| format!("loading {}", model_file.display()))?;
    let signature = executor.signature().clone();
    let mut inputs = Vec::new();
    let mut reference_inputs = Vec::new();
    for (index, spec) in signature.inputs.iter().enumerate() {
        if spec.dtype != DataType::F32 {
            bail!("input `{}` is {}; reference inputs are FP32 only", spec.name, spec.dtype.as_v2());
        }
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .enumerate()
            .map(|(axis, d)| if axis == 0 || *d < 0 { options.rows } else { *d as usize })
            .collect();
        let count = shape.iter().product();
        let values = models::weights(options.seed, index as u64, count, 1.0);
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        inputs.push(Tensor::try_new(DataType::F32, shape.clone(), TensorData::Fixed(bytes))?);
        reference_inputs.push(ReferenceTensor {
            name: spec.name.clone(),
            datatype: "FP32".into(),
            shape: shape.iter().map(|d| *d as i64).collect(),
            data: values.into_iter().map(f64::from).collect(),
        });
    }
    let outputs = executor.run(inputs).with_context(|| format!("running {}", model_file.display()))?;
    let outputs = signature
        .outputs
        .iter()
        .zip(outputs)
        .map(|(spec, t)| reference_output(&spec.name, &t))
        .collect::<Result<Vec<_>>>()?;
    Ok(ReferenceSet {
        model: options.model.clone(),
        version: options.version.clone(),
        tolerance: options.tolerance,
        inputs: reference_inputs,
        outputs,
    })
}

fn reference_output(name: &str, t: &Tensor) -> Result<ReferenceTensor> {
    let data = match t.dtype() {
        DataType::F32 | DataType::F64 | DataType::I32 | DataType::I64 => t.to_f64(),
        _ => None,
    };
    let Some(data) = data else {
        bail!("output `{name}` is {}; a reference holds FP32, FP64, INT32 or INT64", t.dtype().as_v2())
    };
    Ok(ReferenceTensor {
        name: name.to_string(),
        datatype: t.dtype().as_v2().to_string(),
        shape: t.shape().iter().map(|d| *d as i64).collect(),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReferenceOptions {
        ReferenceOptions { model: "mlp".into(), version: "1".into(), rows: 4, seed: 7, tolerance: 1e-4 }
    }

    #[test]
    fn the_reference_is_the_models_answer_and_another_seed_of_weights_is_far_from_it() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let ours = dir.path().join("ours.onnx");
        let theirs = dir.path().join("theirs.onnx");
        std::fs::write(&ours, models::mlp(&[8, 16, 4], 42))?;
        std::fs::write(&theirs, models::mlp(&[8, 16, 4], 43))?;
        let reference = make(&ours, &options())?;
        assert_eq!(reference.inputs[0].shape, vec![4, 8]);
        assert_eq!(reference.outputs[0].shape, vec![4, 4]);
        // Softmax rows sum to 1.
        for row in reference.outputs[0].data.chunks(4) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        // The same file and seed give the same set; other weights do not.
        assert_eq!(make(&ours, &options())?, reference);
        let other = make(&theirs, &options())?;
        assert_eq!(other.inputs, reference.inputs);
        let worst = other.outputs[0]
            .data
            .iter()
            .zip(&reference.outputs[0].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst > 1e-3, "other weights answer within {worst}");
        Ok(())
    }

    #[test]
    fn bad_options_and_files_are_named() {
        let missing = make(Path::new("/nonexistent/model.onnx"), &options()).expect_err("no file");
        assert!(format!("{missing:#}").contains("/nonexistent/model.onnx"), "{missing:#}");
        let zero = make(Path::new("x"), &ReferenceOptions { rows: 0, ..options() }).expect_err("no rows");
        assert!(zero.to_string().contains("--rows"), "{zero}");
    }
}

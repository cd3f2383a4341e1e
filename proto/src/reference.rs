//! Reference sets: inputs a model version was run on and the outputs it
//! gave, stored beside the model (`<model>/<version>/reference.json`, made
//! by `meridian-sidecar reference`), so that a prober can send the same
//! inputs to any server that claims to serve that version and measure how
//! far its answers are from the reference (the largest absolute difference
//! of any element).
//!
//! Tensors are numeric (`FP32`, `FP64`, `INT32`, `INT64`), kept as JSON
//! numbers row-major, as in KServe v2's JSON tensors.

use crate::inference::model_infer_request::InferInputTensor;
use crate::inference::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use serde::{Deserialize, Serialize};

/// One model version's reference inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSet {
    /// The model's name on the server.
    pub model: String,
    /// The version number the outputs came from.
    pub version: String,
    /// The largest absolute difference an answer may have and still agree.
    pub tolerance: f64,
    /// The request's inputs.
    pub inputs: Vec<ReferenceTensor>,
    /// The outputs the version gave.
    pub outputs: Vec<ReferenceTensor>,
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTensor {
    /// The tensor's name in the model.
    pub name: String,
    /// KServe v2 datatype: `FP32`, `FP64`, `INT32` or `INT64`.
    pub datatype: String,
    /// Its shape, batch dimension first.
    pub shape: Vec<i64>,
    /// Its elements, row-major.
    pub data: Vec<f64>,
}

/// Why an answer could not be compared with its reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The answer lacks an output the reference has.
    #[error("the answer has no output `{0}`")]
    MissingOutput(String),
    /// An output's shape differs.
    #[error("output `{name}` has shape {got:?}, the reference {want:?}")]
    Shape {
        /// The output.
        name: String,
        /// The answer's shape.
        got: Vec<i64>,
        /// The reference's shape.
        want: Vec<i64>,
    },
    /// A datatype the reference format does not hold.
    #[error("output `{name}`: datatype {datatype} is not one of FP32, FP64, INT32, INT64")]
    Datatype {
        /// The output.
        name: String,
        /// Its datatype.
        datatype: String,
    },
    /// Raw contents of the wrong length.
    #[error("output `{0}`: raw contents do not hold its shape")]
    RawLength(String),
}

// === impl ReferenceSet ===

impl ReferenceSet {
    /// Parses a reference file's JSON.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The inference request of the reference inputs, for `model_version`
    /// ("" lets the server pick, as a mesh's routed call does).
    pub fn request(&self, model_version: &str) -> ModelInferRequest {
        ModelInferRequest {
            model_name: self.model.clone(),
            model_version: model_version.to_string(),
            inputs: self
                .inputs
                .iter()
                .map(|t| InferInputTensor {
                    name: t.name.clone(),
                    datatype: t.datatype.clone(),
                    shape: t.shape.clone(),
                    contents: Some(contents(&t.datatype, &t.data)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// The largest absolute difference between `answer`'s outputs and the
    /// reference's (an element that is NaN in one and not the other counts
    /// as infinitely far).
    pub fn max_abs_error(&self, answer: &ModelInferResponse) -> Result<f64, ReferenceError> {
        let mut worst: f64 = 0.0;
        for want in &self.outputs {
            let (index, got) = answer
                .outputs
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == want.name)
                .ok_or_else(|| ReferenceError::MissingOutput(want.name.clone()))?;
            if got.shape != want.shape {
                return Err(ReferenceError::Shape {
                    name: want.name.clone(),
                    got: got.shape.clone(),
                    want: want.shape.clone(),
                });
            }
            let values = match answer.raw_output_contents.get(index) {
                Some(raw) => decode_raw(&got.name, &got.datatype, raw)?,
                None => decode_typed(&got.name, &got.datatype, got.contents.as_ref())?,
            };
            if values.len() != want.data.len() {
                return Err(ReferenceError::RawLength(want.name.clone()));
            }
            for (a, b) in values.iter().zip(&want.data) {
                let diff = if a.is_nan() && b.is_nan() { 0.0 } else { (a - b).abs() };
                worst = worst.max(if diff.is_nan() { f64::INFINITY } else { diff });
            }
        }
        Ok(worst)
    }
}

fn contents(datatype: &str, data: &[f64]) -> InferTensorContents {
    match datatype {
        "FP64" => InferTensorContents { fp64_contents: data.to_vec(), ..Default::default() },
        "INT32" => InferTensorContents { int_contents: data.iter().map(|v| *v as i32).collect(), ..Default::default() },
        "INT64" => {
            InferTensorContents { int64_contents: data.iter().map(|v| *v as i64).collect(), ..Default::default() }
        }
        _ => InferTensorContents { fp32_contents: data.iter().map(|v| *v as f32).collect(), ..Default::default() },
    }
}

fn decode_typed(name: &str, datatype: &str, c: Option<&InferTensorContents>) -> Result<Vec<f64>, ReferenceError> {
    let empty = InferTensorContents::default();
    let c = c.unwrap_or(&empty);
    Ok(match datatype {
        "FP32" => c.fp32_contents.iter().map(|v| f64::from(*v)).collect(),
        "FP64" => c.fp64_contents.clone(),
        "INT32" => c.int_contents.iter().map(|v| f64::from(*v)).collect(),
        "INT64" => c.int64_contents.iter().map(|v| *v as f64).collect(),
        other => return Err(ReferenceError::Datatype { name: name.into(), datatype: other.into() }),
    })
}

fn decode_raw(name: &str, datatype: &str, raw: &[u8]) -> Result<Vec<f64>, ReferenceError> {
    fn read<const N: usize>(name: &str, raw: &[u8], f: impl Fn([u8; N]) -> f64) -> Result<Vec<f64>, ReferenceError> {
        if !raw.len().is_multiple_of(N) {
            return Err(ReferenceError::RawLength(name.into()));
        }
        Ok(raw.chunks_exact(N).map(|c| f(c.try_into().unwrap_or([0; N]))).collect())
    }
    match datatype {
        "FP32" => read::<4>(name, raw, |b| f64::from(f32::from_le_bytes(b))),
        "FP64" => read::<8>(name, raw, f64::from_le_bytes),
        "INT32" => read::<4>(name, raw, |b| f64::from(i32::from_le_bytes(b))),
        "INT64" => read::<8>(name, raw, |b| i64::from_le_bytes(b) as f64),
        other => Err(ReferenceError::Datatype { name: name.into(), datatype: other.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::model_infer_response::InferOutputTensor;

    fn set() -> ReferenceSet {
        ReferenceSet {
            model: "mlp".into(),
            version: "1".into(),
            tolerance: 1e-4,
            inputs: vec![ReferenceTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                data: vec![0.5, -1.0],
            }],
            outputs: vec![ReferenceTensor {
                name: "y".into(),
                datatype: "FP32".into(),
                shape: vec![1, 2],
                data: vec![0.25, 0.75],
            }],
        }
    }

    fn answer(values: &[f32], raw: bool) -> ModelInferResponse {
        let output = |contents| InferOutputTensor {
            name: "y".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            contents,
            ..Default::default()
        };
        if raw {
            ModelInferResponse {
                outputs: vec![output(None)],
                raw_output_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
                ..Default::default()
            }
        } else {
            let typed = InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() };
            ModelInferResponse { outputs: vec![output(Some(typed))], ..Default::default() }
        }
    }

    #[test]
    fn the_request_carries_the_inputs_and_the_error_is_the_largest_difference() {
        let s = set();
        let request = s.request("");
        assert_eq!(request.model_name, "mlp");
        assert_eq!(request.inputs[0].contents.as_ref().map(|c| c.fp32_contents.clone()), Some(vec![0.5, -1.0]));
        for raw in [false, true] {
            assert_eq!(s.max_abs_error(&answer(&[0.25, 0.75], raw)), Ok(0.0));
            let err = s.max_abs_error(&answer(&[0.25, 0.5], raw)).expect("comparable");
            assert!((err - 0.25).abs() < 1e-9, "{err}");
            assert_eq!(s.max_abs_error(&answer(&[f32::NAN, 0.75], raw)), Ok(f64::INFINITY));
        }
    }

    #[test]
    fn answers_that_cannot_be_compared_say_why() {
        let s = set();
        let mut other_name = answer(&[0.25, 0.75], false);
        other_name.outputs[0].name = "z".into();
        assert_eq!(s.max_abs_error(&other_name), Err(ReferenceError::MissingOutput("y".into())));
        let mut other_shape = answer(&[0.25, 0.75], false);
        other_shape.outputs[0].shape = vec![2, 1];
        assert!(matches!(s.max_abs_error(&other_shape), Err(ReferenceError::Shape { .. })));
        let mut short = answer(&[0.25, 0.75], true);
        short.raw_output_contents[0].pop();
        assert_eq!(s.max_abs_error(&short), Err(ReferenceError::RawLength("y".into())));
    }

    #[test]
    fn the_file_round_trips_and_unknown_keys_are_refused() {
        let s = set();
        let text = serde_json::to_string(&s).expect("json");
        assert_eq!(ReferenceSet::from_json(&text).expect("parses"), s);
        let extra = text.replacen('{', "{\"tolerence\":1,", 1);
        let err = ReferenceSet::from_json(&extra).expect_err("unknown key");
        assert!(err.to_string().contains("tolerence"), "{err}");
    }
}

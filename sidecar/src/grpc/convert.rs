//! Between v2 messages and the sidecar's tensors: decoding and validating a
//! request's inputs against the model, encoding outputs raw or typed.

use super::status::InferError;
use crate::executor::{Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::model_infer_response::InferOutputTensor;
use meridian_proto::inference::{InferTensorContents, ModelInferRequest};

/// A request's inputs in the model's order, and what to send back.
#[derive(Debug)]
pub struct Decoded {
    /// One tensor per model input, in the model's order.
    pub inputs: Vec<Tensor>,
    /// The request used `raw_input_contents`: reply raw too.
    pub raw: bool,
    /// Indices of the model outputs to return, in the requested order.
    pub outputs: Vec<usize>,
}

/// Decodes and validates a request's inputs for a model with this
/// signature and `max_batch_size` (0: the model does not batch).
pub fn decode(
    req: &mut ModelInferRequest,
    signature: &Signature,
    max_batch_size: usize,
) -> Result<Decoded, InferError> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(InferError::invalid(format!(
            "raw_input_contents has {} entries but the request has {} inputs; send one per input, in order",
            req.raw_input_contents.len(),
            req.inputs.len()
        )));
    }
    let mut slots: Vec<Option<Tensor>> = vec![None; signature.inputs.len()];
    let mut raws = std::mem::take(&mut req.raw_input_contents).into_iter();
    for input in &mut req.inputs {
        let index = signature.inputs.iter().position(|s| s.name == input.name).ok_or_else(|| {
            InferError::invalid(format!("unknown input '{}'; the model takes {}", input.name, names(&signature.inputs)))
        })?;
        if slots[index].is_some() {
            return Err(InferError::invalid(format!("input '{}' is given twice", input.name)));
        }
        let spec = &signature.inputs[index];
        let shape = check_shape(input, spec, max_batch_size)?;
        let dtype = check_dtype(input, spec)?;
        let data = match raws.next() {
            // As Triton answers: one input, one place for its data.
            Some(_) if input.contents.is_some() => {
                return Err(InferError::invalid(format!(
                    "input '{}': contents must not be given when the request uses raw_input_contents; \
                     send each input's data in one of them",
                    input.name
                )))
            }
            Some(bytes) => raw_data(dtype, bytes, &input.name)?,
            None => typed_data(dtype, input.contents.take().unwrap_or_default(), &input.name)?,
        };
        let tensor = Tensor::try_new(dtype, shape, data)
            .map_err(|e| InferError::invalid(format!("input '{}': {e}", input.name)))?;
        slots[index] = Some(tensor);
    }
    let inputs = slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(t, spec)| t.ok_or_else(|| InferError::invalid(format!("missing input '{}'", spec.name))))
        .collect::<Result<Vec<_>, _>>()?;
    if max_batch_size > 0 {
        let rows = inputs[0].rows();
        if let Some((t, spec)) = inputs.iter().zip(&signature.inputs).find(|(t, _)| t.rows() != rows) {
            return Err(InferError::invalid(format!(
                "input '{}' has batch size {} but '{}' has {rows}; every input must share the batch dimension",
                spec.name,
                t.rows(),
                signature.inputs[0].name
            )));
        }
    }
    let outputs = if req.outputs.is_empty() {
        (0..signature.outputs.len()).collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                signature.outputs.iter().position(|s| s.name == o.name).ok_or_else(|| {
                    InferError::invalid(format!(
                        "unknown output '{}'; the model returns {}",
                        o.name,
                        names(&signature.outputs)
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Decoded { inputs, raw, outputs })
}

fn names(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
}

fn check_dtype(input: &InferInputTensor, spec: &TensorSpec) -> Result<DataType, InferError> {
    let dtype = DataType::from_v2(&input.datatype).ok_or_else(|| {
        InferError::invalid(format!(
            "input '{}': unknown datatype '{}' (BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES…)",
            input.name, input.datatype
        ))
    })?;
    if dtype != spec.dtype {
        let hint = if dtype == DataType::Bytes { "; BYTES is accepted only by inputs that take strings" } else { "" };
        return Err(InferError::invalid(format!(
            "input '{}': datatype {} does not match the model's {}{hint}",
            input.name,
            dtype.as_v2(),
            spec.dtype.as_v2()
        )));
    }
    Ok(dtype)
}

fn check_shape(input: &InferInputTensor, spec: &TensorSpec, max_batch_size: usize) -> Result<Vec<usize>, InferError> {
    let bad = |why: String| InferError::invalid(format!("input '{}': shape {:?} {why}", input.name, input.shape));
    if input.shape.len() != spec.shape.len() {
        return Err(bad(format!(
            "has {} dimensions, the model expects {:?}",
            input.shape.len(),
            model_shape(spec, max_batch_size)
        )));
    }
    let mut shape = Vec::with_capacity(input.shape.len());
    for (i, (&got, &want)) in input.shape.iter().zip(&spec.shape).enumerate() {
        if got < 0 {
            return Err(bad("has a negative dimension".into()));
        }
        if max_batch_size > 0 && i == 0 {
            if got == 0 || got as usize > max_batch_size {
                return Err(bad(format!("has batch size {got}, allowed 1..={max_batch_size} (max_batch_size)")));
            }
        } else if want >= 0 && got != want {
            return Err(bad(format!("does not match the model's {:?}", model_shape(spec, max_batch_size))));
        }
        shape.push(got as usize);
    }
    Ok(shape)
}

/// The shape as Triton shows it: -1 for the batch dimension when batching.
pub fn model_shape(spec: &TensorSpec, max_batch_size: usize) -> Vec<i64> {
    let mut shape = spec.shape.clone();
    if max_batch_size > 0 {
        if let Some(first) = shape.first_mut() {
            *first = -1;
        }
    }
    shape
}

fn raw_data(dtype: DataType, bytes: Vec<u8>, name: &str) -> Result<TensorData, InferError> {
    if dtype != DataType::Bytes {
        return Ok(TensorData::Fixed(bytes));
    }
    // BYTES raw: each element is a 4-byte little-endian length, then the bytes.
    let mut items = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (len, tail) = rest.split_at_checked(4).ok_or_else(|| {
            InferError::invalid(format!("input '{name}': BYTES contents end inside an element's 4-byte length"))
        })?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (item, tail) = tail.split_at_checked(len).ok_or_else(|| {
            InferError::invalid(format!(
                "input '{name}': a BYTES element claims {len} bytes but only {} remain",
                tail.len()
            ))
        })?;
        items.push(item.to_vec());
        rest = tail;
    }
    Ok(TensorData::Bytes(items))
}

fn typed_data(dtype: DataType, c: InferTensorContents, name: &str) -> Result<TensorData, InferError> {
    fn narrow<T: TryFrom<i64> + Copy, const N: usize>(
        values: impl Iterator<Item = i64>,
        to_le: impl Fn(T) -> [u8; N],
        name: &str,
        dtype: DataType,
    ) -> Result<TensorData, InferError> {
        let mut out = Vec::new();
        for v in values {
            let t = T::try_from(v).map_err(|_| {
                InferError::invalid(format!("input '{name}': value {v} is out of range for {}", dtype.as_v2()))
            })?;
            out.extend_from_slice(&to_le(t));
        }
        Ok(TensorData::Fixed(out))
    }
    let bytes = |v: Vec<u8>| Ok(TensorData::Fixed(v));
    match dtype {
        DataType::Bool => bytes(c.bool_contents.into_iter().map(u8::from).collect()),
        DataType::I8 => narrow::<i8, 1>(c.int_contents.into_iter().map(i64::from), i8::to_le_bytes, name, dtype),
        DataType::I16 => narrow::<i16, 2>(c.int_contents.into_iter().map(i64::from), i16::to_le_bytes, name, dtype),
        DataType::I32 => bytes(c.int_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::I64 => bytes(c.int64_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::U8 => narrow::<u8, 1>(c.uint_contents.into_iter().map(i64::from), u8::to_le_bytes, name, dtype),
        DataType::U16 => narrow::<u16, 2>(c.uint_contents.into_iter().map(i64::from), u16::to_le_bytes, name, dtype),
        DataType::U32 => bytes(c.uint_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::U64 => bytes(c.uint64_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::F32 => bytes(c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::F64 => bytes(c.fp64_contents.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DataType::Bytes => Ok(TensorData::Bytes(c.bytes_contents)),
        DataType::F16 | DataType::Bf16 => Err(InferError::invalid(format!(
            "input '{name}': {} has no typed contents field; send it in raw_input_contents",
            dtype.as_v2()
        ))),
    }
}

/// Builds the response outputs for `decoded.outputs`, raw when the request
/// was raw (FP16 and BF16 are always raw: they have no typed field).
pub fn encode(
    outputs: Vec<Tensor>,
    signature: &Signature,
    wanted: &[usize],
    raw: bool,
) -> (Vec<InferOutputTensor>, Vec<Vec<u8>>) {
    let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    let mut tensors = Vec::with_capacity(wanted.len());
    let mut raw_contents = Vec::new();
    let all_raw = raw || wanted.iter().any(|&i| matches!(signature.outputs[i].dtype, DataType::F16 | DataType::Bf16));
    for &i in wanted {
        let Some(t) = slots.get_mut(i).and_then(Option::take) else { continue };
        let mut out = InferOutputTensor {
            name: signature.outputs[i].name.clone(),
            datatype: t.dtype().as_v2().to_string(),
            shape: t.shape().iter().map(|&d| d as i64).collect(),
            ..Default::default()
        };
        let dtype = t.dtype();
        if all_raw {
            raw_contents.push(match t.into_data() {
                TensorData::Fixed(b) => b,
                TensorData::Bytes(items) => {
                    let mut b = Vec::new();
                    for item in items {
                        b.extend_from_slice(&(item.len() as u32).to_le_bytes());
                        b.extend_from_slice(&item);
                    }
                    b
                }
            });
        } else {
            out.contents = Some(typed_contents(dtype, t.into_data()));
        }
        tensors.push(out);
    }
    (tensors, raw_contents)
}

fn typed_contents(dtype: DataType, data: TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    let b = match data {
        TensorData::Bytes(items) => {
            c.bytes_contents = items;
            return c;
        }
        TensorData::Fixed(b) => b,
    };
    match dtype {
        DataType::Bool => c.bool_contents = b.iter().map(|&x| x != 0).collect(),
        DataType::I8 => c.int_contents = b.iter().map(|&x| i32::from(x as i8)).collect(),
        DataType::I16 => {
            c.int_contents = b.chunks_exact(2).map(|x| i32::from(i16::from_le_bytes([x[0], x[1]]))).collect()
        }
        DataType::I32 => {
            c.int_contents = b.chunks_exact(4).map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect()
        }
        DataType::I64 => c.int64_contents = b.chunks_exact(8).map(|x| i64::from_le_bytes(arr8(x))).collect(),
        DataType::U8 => c.uint_contents = b.iter().map(|&x| u32::from(x)).collect(),
        DataType::U16 => {
            c.uint_contents = b.chunks_exact(2).map(|x| u32::from(u16::from_le_bytes([x[0], x[1]]))).collect()
        }
        DataType::U32 => {
            c.uint_contents = b.chunks_exact(4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect()
        }
        DataType::U64 => c.uint64_contents = b.chunks_exact(8).map(|x| u64::from_le_bytes(arr8(x))).collect(),
        DataType::F32 => {
            c.fp32_contents = b.chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect()
        }
        DataType::F64 => c.fp64_contents = b.chunks_exact(8).map(|x| f64::from_le_bytes(arr8(x))).collect(),
        DataType::F16 | DataType::Bf16 | DataType::Bytes => {}
    }
    c
}

fn arr8(x: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(x);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::TensorSpec;

    fn signature(dtype: DataType) -> Signature {
        let spec = |name: &str| TensorSpec { name: name.into(), dtype, shape: vec![-1, 3] };
        Signature { inputs: vec![spec("x")], outputs: vec![spec("y")] }
    }

    fn typed(dtype: DataType, contents: InferTensorContents) -> ModelInferRequest {
        ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: dtype.as_v2().into(),
                shape: vec![1, 3],
                contents: Some(contents),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Typed contents decode to the same bytes raw contents would carry, and
    /// encode back to the same typed field.
    #[test]
    fn typed_contents_round_trip_for_every_typed_datatype() {
        let c = |f: fn(&mut InferTensorContents)| {
            let mut c = InferTensorContents::default();
            f(&mut c);
            c
        };
        let cases = [
            (DataType::Bool, c(|c| c.bool_contents = vec![true, false, true])),
            (DataType::I8, c(|c| c.int_contents = vec![-128, 0, 127])),
            (DataType::I16, c(|c| c.int_contents = vec![-32768, 1, 32767])),
            (DataType::I32, c(|c| c.int_contents = vec![i32::MIN, 0, i32::MAX])),
            (DataType::I64, c(|c| c.int64_contents = vec![i64::MIN, 0, i64::MAX])),
            (DataType::U8, c(|c| c.uint_contents = vec![0, 1, 255])),
            (DataType::U16, c(|c| c.uint_contents = vec![0, 1, 65535])),
            (DataType::U32, c(|c| c.uint_contents = vec![0, 1, u32::MAX])),
            (DataType::U64, c(|c| c.uint64_contents = vec![0, 1, u64::MAX])),
            (DataType::F32, c(|c| c.fp32_contents = vec![-1.5, 0.0, 3.25])),
            (DataType::F64, c(|c| c.fp64_contents = vec![-1.5, 0.0, 1e300])),
            (DataType::Bytes, c(|c| c.bytes_contents = vec![b"a".to_vec(), vec![], b"xyz".to_vec()])),
        ];
        for (dtype, contents) in cases {
            let sig = signature(dtype);
            let mut req = typed(dtype, contents.clone());
            let decoded = decode(&mut req, &sig, 8).unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
            assert!(!decoded.raw);
            let (outputs, raw) = encode(decoded.inputs, &sig, &decoded.outputs, false);
            assert!(raw.is_empty());
            assert_eq!(outputs[0].contents.as_ref(), Some(&contents), "{dtype:?}");
        }
    }

    #[test]
    fn narrowing_refuses_values_out_of_range() {
        for (dtype, contents) in [
            (DataType::I8, InferTensorContents { int_contents: vec![0, 128, 0], ..Default::default() }),
            (DataType::I16, InferTensorContents { int_contents: vec![0, -40000, 0], ..Default::default() }),
            (DataType::U8, InferTensorContents { uint_contents: vec![0, 256, 0], ..Default::default() }),
            (DataType::U16, InferTensorContents { uint_contents: vec![0, 70000, 0], ..Default::default() }),
        ] {
            let err = decode(&mut typed(dtype, contents), &signature(dtype), 8).expect_err("out of range");
            assert!(err.to_string().contains("out of range") && err.to_string().contains(dtype.as_v2()), "{err}");
        }
    }

    #[test]
    fn raw_and_typed_contents_together_are_refused() {
        let sig = signature(DataType::F32);
        let mut req =
            typed(DataType::F32, InferTensorContents { fp32_contents: vec![1.0, 2.0, 3.0], ..Default::default() });
        req.raw_input_contents = vec![[1f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect()];
        let err = decode(&mut req.clone(), &sig, 8).expect_err("both");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("input 'x': contents must not be given"), "{err}");
        req.inputs[0].contents = None;
        decode(&mut req, &sig, 8).expect("raw alone");
    }

    #[test]
    fn malformed_bytes_elements_are_refused() {
        let sig = signature(DataType::Bytes);
        let mut req = typed(DataType::Bytes, InferTensorContents::default());
        req.inputs[0].contents = None;
        req.raw_input_contents = vec![vec![5, 0, 0, 0, b'a']];
        let err = decode(&mut req.clone(), &sig, 8).expect_err("short element");
        assert!(err.to_string().contains("claims 5 bytes"), "{err}");
        req.raw_input_contents = vec![vec![1, 0]];
        let err = decode(&mut req, &sig, 8).expect_err("short length");
        assert!(err.to_string().contains("4-byte length"), "{err}");
    }
}

//! KServe v2 REST inference bodies and Triton's binary tensor data
//! extension, to and from the v2 messages the gRPC service runs.
//!
//! A request body is a JSON header, then (with `Inference-Header-Content-Length`)
//! the binary data of every input whose `parameters.binary_data_size` is
//! set, in input order. Every input reaches the service as
//! `raw_input_contents` (JSON `data` is packed little-endian here), so the
//! reply is raw too and each output is written as JSON `data` or as binary
//! after the JSON header, as the request asked.

use crate::tensor::DataType;
use meridian_proto::inference::infer_parameter::ParameterChoice;
use meridian_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use meridian_proto::inference::{InferParameter, ModelInferRequest, ModelInferResponse};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The header that splits a body into its JSON and binary parts.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request the REST front refuses, with the message its 400 carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

#[derive(Debug, Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Debug, Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

/// How each output of the reply is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlan {
    /// Per output name: binary (after the JSON header) or JSON `data`.
    named: HashMap<String, bool>,
    /// For outputs the request did not list (it listed none).
    default_binary: bool,
}

impl OutputPlan {
    fn binary(&self, name: &str) -> bool {
        self.named.get(name).copied().unwrap_or(self.default_binary)
    }
}

/// Decodes a REST inference body for `model`/`version` into the v2 request
/// (every input raw) and how to write the reply. `header_length` is the
/// `Inference-Header-Content-Length` value, if sent.
pub fn decode(
    body: &[u8],
    header_length: Option<&str>,
    model: &str,
    version: &str,
) -> Result<(ModelInferRequest, OutputPlan), BadRequest> {
    let (json, mut binary) = match header_length {
        None => (body, &body[body.len()..]),
        Some(text) => {
            let n: usize = text
                .trim()
                .parse()
                .map_err(|_| bad(format!("Inference-Header-Content-Length '{text}' is not a byte count")))?;
            if n > body.len() {
                return Err(bad(format!(
                    "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            body.split_at(n)
        }
    };
    let request: RequestJson = serde_json::from_slice(json)
        .map_err(|e| bad(format!("the request body is not a v2 inference request: {e}")))?;
    let mut parameters = HashMap::new();
    let mut default_binary = false;
    for (key, value) in request.parameters {
        if key == "binary_data_output" {
            default_binary = value
                .as_bool()
                .ok_or_else(|| bad(format!("parameter 'binary_data_output' must be a boolean, not {value}")))?;
            continue;
        }
        parameters.insert(key.clone(), parameter(&key, value)?);
    }
    let mut inputs = Vec::with_capacity(request.inputs.len());
    let mut raw = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        let dtype = DataType::from_v2(&input.datatype).ok_or_else(|| {
            bad(format!(
                "input '{}': unknown datatype '{}' (BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, BF16, FP32, FP64, BYTES…)",
                input.name, input.datatype
            ))
        })?;
        let mut input_parameters = HashMap::new();
        let mut binary_size = None;
        for (key, value) in input.parameters {
            if key == "binary_data_size" {
                binary_size = Some(value.as_u64().ok_or_else(|| {
                    bad(format!("input '{}': binary_data_size must be a byte count, not {value}", input.name))
                })? as usize);
                continue;
            }
            input_parameters.insert(key.clone(), parameter(&key, value)?);
        }
        let bytes = match (binary_size, input.data) {
            // As Triton answers (and as gRPC does for raw plus typed
            // contents): one input, one place for its data.
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input '{}': both binary data (binary_data_size) and JSON data are given; send one of them",
                    input.name
                )))
            }
            (Some(n), None) => {
                let (this, rest) = binary.split_at_checked(n).ok_or_else(|| {
                    bad(format!(
                        "input '{}': binary_data_size is {n} but only {} bytes of binary data remain",
                        input.name,
                        binary.len()
                    ))
                })?;
                binary = rest;
                this.to_vec()
            }
            (None, Some(data)) => pack(&data, dtype, &input.name)?,
            (None, None) => {
                return Err(bad(format!(
                    "input '{}' has no data: give `data` or parameters.binary_data_size",
                    input.name
                )))
            }
        };
        raw.push(bytes);
        inputs.push(InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters: input_parameters,
            contents: None,
        });
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data follow the JSON header that no input's binary_data_size claims",
            binary.len()
        )));
    }
    let mut named = HashMap::new();
    let mut outputs = Vec::new();
    for output in request.outputs.unwrap_or_default() {
        let mut output_parameters = HashMap::new();
        let mut binary = default_binary;
        for (key, value) in output.parameters {
            match key.as_str() {
                "binary_data" => {
                    binary = value.as_bool().ok_or_else(|| {
                        bad(format!("output '{}': binary_data must be a boolean, not {value}", output.name))
                    })?
                }
                "classification" if value.as_u64() != Some(0) => {
                    return Err(bad(format!(
                        "output '{}': the classification extension is not supported; request the output itself",
                        output.name
                    )))
                }
                _ => {
                    output_parameters.insert(key.clone(), parameter(&key, value)?);
                }
            }
        }
        named.insert(output.name.clone(), binary);
        outputs.push(InferRequestedOutputTensor { name: output.name, parameters: output_parameters });
    }
    let request = ModelInferRequest {
        model_name: model.to_string(),
        model_version: version.to_string(),
        id: request.id.unwrap_or_default(),
        parameters,
        inputs,
        outputs,
        raw_input_contents: raw,
    };
    Ok((request, OutputPlan { named, default_binary }))
}

/// A JSON parameter as a v2 one: booleans, integers, floats and strings.
fn parameter(key: &str, value: Value) -> Result<InferParameter, BadRequest> {
    let choice = match value {
        Value::Bool(b) => ParameterChoice::BoolParam(b),
        Value::String(s) => ParameterChoice::StringParam(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ParameterChoice::Int64Param(i),
            (None, Some(u), _) => ParameterChoice::Uint64Param(u),
            (_, _, Some(f)) => ParameterChoice::DoubleParam(f),
            _ => return Err(bad(format!("parameter '{key}': {n} is not a number this server reads"))),
        },
        other => {
            return Err(bad(format!("parameter '{key}' must be a boolean, number or string, not {other}")));
        }
    };
    Ok(InferParameter { parameter_choice: Some(choice) })
}

/// JSON `data` (flat or nested in row-major order) as little-endian bytes of
/// `dtype` (BYTES: each element a 4-byte length, then its bytes).
fn pack(data: &Value, dtype: DataType, name: &str) -> Result<Vec<u8>, BadRequest> {
    let mut out = Vec::new();
    let mut stack = vec![data];
    // Depth-first, left to right: push children reversed.
    while let Some(v) = stack.pop() {
        if let Value::Array(items) = v {
            stack.extend(items.iter().rev());
            continue;
        }
        put(&mut out, v, dtype, name)?;
    }
    Ok(out)
}

fn put(out: &mut Vec<u8>, v: &Value, dtype: DataType, name: &str) -> Result<(), BadRequest> {
    let wrong = || bad(format!("input '{name}': {v} is not a {} value", dtype.as_v2()));
    let int = |min: i64, max: i64| -> Result<i64, BadRequest> {
        let i = v.as_i64().ok_or_else(wrong)?;
        if i < min || i > max {
            return Err(bad(format!("input '{name}': value {i} is out of range for {}", dtype.as_v2())));
        }
        Ok(i)
    };
    match dtype {
        DataType::Bool => out.push(u8::from(v.as_bool().ok_or_else(wrong)?)),
        DataType::I8 => out.extend_from_slice(&(int(i8::MIN.into(), i8::MAX.into())? as i8).to_le_bytes()),
        DataType::I16 => out.extend_from_slice(&(int(i16::MIN.into(), i16::MAX.into())? as i16).to_le_bytes()),
        DataType::I32 => out.extend_from_slice(&(int(i32::MIN.into(), i32::MAX.into())? as i32).to_le_bytes()),
        DataType::I64 => out.extend_from_slice(&v.as_i64().ok_or_else(wrong)?.to_le_bytes()),
        DataType::U8 => out.extend_from_slice(&(int(0, u8::MAX.into())? as u8).to_le_bytes()),
        DataType::U16 => out.extend_from_slice(&(int(0, u16::MAX.into())? as u16).to_le_bytes()),
        DataType::U32 => out.extend_from_slice(&(int(0, u32::MAX.into())? as u32).to_le_bytes()),
        DataType::U64 => out.extend_from_slice(&v.as_u64().ok_or_else(wrong)?.to_le_bytes()),
        DataType::F32 => out.extend_from_slice(&(v.as_f64().ok_or_else(wrong)? as f32).to_le_bytes()),
        DataType::F64 => out.extend_from_slice(&v.as_f64().ok_or_else(wrong)?.to_le_bytes()),
        DataType::Bytes => {
            let s = v.as_str().ok_or_else(wrong)?;
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        DataType::F16 | DataType::Bf16 => {
            return Err(bad(format!(
                "input '{name}': {} data cannot be written in JSON; send it as binary data (binary_data_size)",
                dtype.as_v2()
            )))
        }
    }
    Ok(())
}

/// An encoded reply: the body, and the JSON header's length when binary
/// data follows it (the `Inference-Header-Content-Length` to send).
#[derive(Debug)]
pub struct Encoded {
    /// The whole body.
    pub body: Vec<u8>,
    /// `Some(n)`: the first `n` bytes are JSON, binary outputs follow.
    pub header_length: Option<usize>,
}

/// Writes the service's (raw) reply as the REST body `plan` asks for.
pub fn encode(response: ModelInferResponse, plan: &OutputPlan) -> Result<Encoded, String> {
    if response.raw_output_contents.len() != response.outputs.len() {
        return Err(format!(
            "the service answered {} outputs with {} raw contents",
            response.outputs.len(),
            response.raw_output_contents.len()
        ));
    }
    let mut json = String::with_capacity(256);
    json.push_str("{\"model_name\":");
    push_str(&mut json, &response.model_name);
    json.push_str(",\"model_version\":");
    push_str(&mut json, &response.model_version);
    if !response.id.is_empty() {
        json.push_str(",\"id\":");
        push_str(&mut json, &response.id);
    }
    json.push_str(",\"outputs\":[");
    let mut binary = Vec::new();
    for (i, (output, raw)) in response.outputs.iter().zip(response.raw_output_contents).enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"name\":");
        push_str(&mut json, &output.name);
        json.push_str(",\"datatype\":");
        push_str(&mut json, &output.datatype);
        json.push_str(",\"shape\":[");
        for (k, d) in output.shape.iter().enumerate() {
            if k > 0 {
                json.push(',');
            }
            let _ = write!(json, "{d}");
        }
        json.push(']');
        let dtype = DataType::from_v2(&output.datatype)
            .ok_or_else(|| format!("output '{}' has datatype '{}'", output.name, output.datatype))?;
        if plan.binary(&output.name) || matches!(dtype, DataType::F16 | DataType::Bf16) {
            let _ = write!(json, ",\"parameters\":{{\"binary_data_size\":{}}}}}", raw.len());
            binary.push(raw);
        } else {
            json.push_str(",\"data\":[");
            unpack(&mut json, &raw, dtype).map_err(|e| format!("output '{}': {e}", output.name))?;
            json.push_str("]}");
        }
    }
    json.push_str("]}");
    if binary.is_empty() {
        return Ok(Encoded { body: json.into_bytes(), header_length: None });
    }
    let header_length = json.len();
    let mut body = json.into_bytes();
    body.reserve(binary.iter().map(Vec::len).sum());
    for b in binary {
        body.extend_from_slice(&b);
    }
    Ok(Encoded { body, header_length: Some(header_length) })
}

fn push_str(json: &mut String, s: &str) {
    // serde_json escapes exactly as JSON needs; a str always serializes.
    json.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Writes little-endian `raw` of `dtype` as comma-separated JSON values.
fn unpack(json: &mut String, raw: &[u8], dtype: DataType) -> Result<(), String> {
    fn each<const N: usize>(json: &mut String, raw: &[u8], f: impl Fn(&mut String, [u8; N])) {
        for (i, chunk) in raw.chunks_exact(N).enumerate() {
            if i > 0 {
                json.push(',');
            }
            let mut b = [0u8; N];
            b.copy_from_slice(chunk);
            f(json, b);
        }
    }
    fn num(json: &mut String, v: impl std::fmt::Display) {
        let _ = write!(json, "{v}");
    }
    fn float(json: &mut String, v: impl std::fmt::Display, finite: bool) {
        // JSON has no NaN or infinity.
        if finite {
            let _ = write!(json, "{v}");
        } else {
            json.push_str("null");
        }
    }
    match dtype {
        DataType::Bool => each::<1>(json, raw, |j, b| j.push_str(if b[0] != 0 { "true" } else { "false" })),
        DataType::U8 => each::<1>(json, raw, |j, b| num(j, b[0])),
        DataType::I8 => each::<1>(json, raw, |j, b| num(j, i8::from_le_bytes(b))),
        DataType::U16 => each::<2>(json, raw, |j, b| num(j, u16::from_le_bytes(b))),
        DataType::I16 => each::<2>(json, raw, |j, b| num(j, i16::from_le_bytes(b))),
        DataType::U32 => each::<4>(json, raw, |j, b| num(j, u32::from_le_bytes(b))),
        DataType::I32 => each::<4>(json, raw, |j, b| num(j, i32::from_le_bytes(b))),
        DataType::U64 => each::<8>(json, raw, |j, b| num(j, u64::from_le_bytes(b))),
        DataType::I64 => each::<8>(json, raw, |j, b| num(j, i64::from_le_bytes(b))),
        DataType::F32 => each::<4>(json, raw, |j, b| {
            let v = f32::from_le_bytes(b);
            float(j, v, v.is_finite())
        }),
        DataType::F64 => each::<8>(json, raw, |j, b| {
            let v = f64::from_le_bytes(b);
            float(j, v, v.is_finite())
        }),
        DataType::Bytes => {
            let mut rest = raw;
            let mut first = true;
            while !rest.is_empty() {
                let (len, tail) = rest.split_at_checked(4).ok_or("BYTES data ends inside a length")?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let (item, tail) = tail.split_at_checked(len).ok_or("a BYTES element runs past the data")?;
                if !first {
                    json.push(',');
                }
                first = false;
                push_str(json, &String::from_utf8_lossy(item));
                rest = tail;
            }
        }
        DataType::F16 | DataType::Bf16 => return Err(format!("{} is only sent as binary data", dtype.as_v2())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::inference::model_infer_response::InferOutputTensor;

    #[test]
    fn json_data_is_packed_little_endian_and_nested_arrays_flatten() {
        let body = br#"{"id":"7","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1.5,2],[3,-4]]},
            {"name":"s","shape":[2],"datatype":"BYTES","data":["ab",""]}]}"#;
        let (req, plan) = decode(body, None, "m", "").expect("valid");
        assert_eq!(req.id, "7");
        let floats: Vec<f32> =
            req.raw_input_contents[0].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, [1.5, 2.0, 3.0, -4.0]);
        assert_eq!(req.raw_input_contents[1], [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert!(!plan.binary("y"));
    }

    #[test]
    fn binary_inputs_are_cut_from_after_the_header_in_order() {
        let json = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":4}},
            {"name":"b","shape":[1],"datatype":"INT8","data":[-3]},
            {"name":"c","shape":[2],"datatype":"UINT8","parameters":{"binary_data_size":2}}],
            "outputs":[{"name":"y","parameters":{"binary_data":true}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[7, 0, 0, 0, 9, 10]);
        let len = json.len().to_string();
        let (req, plan) = decode(&body, Some(&len), "m", "2").expect("valid");
        assert_eq!(req.raw_input_contents, vec![vec![7, 0, 0, 0], vec![0xfd], vec![9, 10]]);
        assert_eq!(req.model_version, "2");
        assert!(plan.binary("y"));
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: [(&[u8], Option<&str>, &str); 7] = [
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#,
             None, "both binary data"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32"}]}"#, None, "input 'a' has no data"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"INT8","data":[300]}]}"#, None, "out of range for INT8"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP16","data":[1]}]}"#, None, "binary data"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FLOAT","data":[1]}]}"#, None, "unknown datatype 'FLOAT'"),
            (br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":["x"]}]}"#, None, "\"x\" is not a FP32"),
            (br#"{"inputs":"#, None, "not a v2 inference request"),
        ];
        for (body, header, needle) in cases {
            let err = decode(body, header, "m", "").expect_err(needle);
            assert!(err.0.contains(needle), "{needle}: {err}");
        }
        let err = decode(b"{}", Some("9"), "m", "").expect_err("short");
        assert!(err.0.contains("has only 2 bytes"), "{err}");
        let mut extra = br#"{"inputs":[]}"#.to_vec();
        extra.push(1);
        assert!(decode(&extra, Some("13"), "m", "").expect_err("extra").0.contains("1 bytes of binary data"));
    }

    #[test]
    fn replies_write_json_or_binary_as_asked() {
        let response = ModelInferResponse {
            model_name: "m".into(),
            model_version: "1".into(),
            id: String::new(),
            parameters: Default::default(),
            outputs: ["y", "z"]
                .map(|n| InferOutputTensor {
                    name: n.into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 2],
                    ..Default::default()
                })
                .to_vec(),
            raw_output_contents: vec![
                [0.5f32, f32::NAN].iter().flat_map(|v| v.to_le_bytes()).collect(),
                [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ],
        };
        let plan = OutputPlan { named: HashMap::from([("z".to_string(), true)]), default_binary: false };
        let encoded = encode(response, &plan).expect("encodes");
        let n = encoded.header_length.expect("binary follows");
        let json: Value = serde_json::from_slice(&encoded.body[..n]).expect("json");
        assert_eq!(json["outputs"][0]["data"], serde_json::json!([0.5, null]));
        assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 8);
        assert_eq!(&encoded.body[n..], &[0, 0, 128, 63, 0, 0, 0, 64]);
        assert!(json.get("id").is_none());
    }
}

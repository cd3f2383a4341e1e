//! Deterministic, seeded ONNX models that the project generates itself (no
//! download): the built-in demo and benchmark models, and the test models.
//!
//! Weights come from a SplitMix64 stream per tensor, so any implementation
//! can recompute them from the seed (the Python tests do, to check outputs
//! against a reference computed independently of tract):
//! `tensor_seed = seed ^ (index + 1) * 0x9E3779B97F4A7C15`, element `i` is
//! `splitmix64(tensor_seed + (i + 1) * 0x9E3779B97F4A7C15)`, mapped to
//! `((z >> 40) / 2^24 * 2 - 1) * scale` with `scale = 1 / sqrt(fan_in)`.

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType as OnnxType, tensor_shape_proto::dimension::Value as Dim,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The name of the symbolic batch dimension in generated models.
pub const BATCH_DIM: &str = "batch";

/// SplitMix64's output function.
fn splitmix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` seeded weights for tensor `index` of a model, uniform in
/// `[-scale, scale)`.
pub fn weights(seed: u64, index: u64, count: usize, scale: f32) -> Vec<f32> {
    let tensor_seed = seed ^ (index + 1).wrapping_mul(GOLDEN);
    (0..count as u64)
        .map(|i| {
            let z = splitmix64(tensor_seed.wrapping_add((i + 1).wrapping_mul(GOLDEN)));
            (((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A multilayer perceptron `dims[0] → dims[1] → … → dims[n]`: Gemm + ReLU
/// between layers, Softmax at the end. Input `input` is FP32
/// `[batch, dims[0]]`, output `output` is FP32 `[batch, dims[n]]`. Weight
/// tensor `2k` is layer `k`'s matrix (`[in, out]`, row-major), `2k+1` its
/// bias.
pub fn mlp(dims: &[usize], seed: u64) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut prev = "input".to_string();
    let layers = dims.len().saturating_sub(1);
    for (k, pair) in dims.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let scale = 1.0 / (fan_in as f32).sqrt();
        let (w, b) = (format!("w{k}"), format!("b{k}"));
        initializers.push(f32_tensor(&w, &[fan_in, fan_out], &weights(seed, 2 * k as u64, fan_in * fan_out, scale)));
        initializers.push(f32_tensor(&b, &[fan_out], &weights(seed, 2 * k as u64 + 1, fan_out, scale)));
        let gemm_out = format!("gemm{k}");
        nodes.push(node("Gemm", &[&prev, &w, &b], &gemm_out, vec![]));
        prev = if k + 1 < layers {
            let relu = format!("relu{k}");
            nodes.push(node("Relu", &[&gemm_out], &relu, vec![]));
            relu
        } else {
            gemm_out
        };
    }
    nodes.push(node("Softmax", &[&prev], "output", vec![int_attr("axis", 1)]));
    let graph = GraphProto {
        name: "mlp".into(),
        node: nodes,
        initializer: initializers,
        input: vec![value_info("input", OnnxType::Float, dims[0])],
        output: vec![value_info("output", OnnxType::Float, dims[dims.len() - 1])],
        ..Default::default()
    };
    model(graph)
}

/// A model that echoes one input per datatype: `in_<type>` → `out_<type>`,
/// each `[batch, width]`, for `FP32 FP16 INT8 INT16 INT32 INT64 UINT8 BOOL`
/// and `BYTES` (an ONNX string tensor).
pub fn echo_types(width: usize) -> Vec<u8> {
    let types = [
        ("bytes", OnnxType::String),
        ("fp32", OnnxType::Float),
        ("fp16", OnnxType::Float16),
        ("int8", OnnxType::Int8),
        ("int16", OnnxType::Int16),
        ("int32", OnnxType::Int32),
        ("int64", OnnxType::Int64),
        ("uint8", OnnxType::Uint8),
        ("bool", OnnxType::Bool),
    ];
    let graph = GraphProto {
        name: "echo_types".into(),
        node: types.iter().map(|(n, _)| node("Identity", &[&format!("in_{n}")], &format!("out_{n}"), vec![])).collect(),
        input: types.iter().map(|(n, t)| value_info(&format!("in_{n}"), *t, width)).collect(),
        output: types.iter().map(|(n, t)| value_info(&format!("out_{n}"), *t, width)).collect(),
        ..Default::default()
    };
    model(graph)
}

/// A model whose output depends on a runtime index: `output = data[indices]`
/// (ONNX Gather) over a constant FP32 `data` of `len` elements, with
/// `indices` an INT64 `[1]` input. An index outside `0..len` fails inside
/// the executor; used to test that an executor error fails only its batch.
pub fn gather(len: usize) -> Vec<u8> {
    let data = f32_tensor("data", &[len], &(0..len).map(|i| i as f32 * 10.0).collect::<Vec<_>>());
    let fixed = |name: &str, elem: OnnxType| {
        let dim = Dimension { value: Some(Dim::DimValue(1)), ..Default::default() };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(TensorShapeProto { dim: vec![dim] }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let graph = GraphProto {
        name: "gather".into(),
        node: vec![node("Gather", &["data", "indices"], "output", vec![int_attr("axis", 0)])],
        initializer: vec![data],
        input: vec![fixed("indices", OnnxType::Int64)],
        output: vec![fixed("output", OnnxType::Float)],
        ..Default::default()
    };
    model(graph)
}

fn model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "meridian".into(),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: OnnxType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: OnnxType, width: usize) -> ValueInfoProto {
    let dim = |v| Dimension { value: Some(v), ..Default::default() };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: vec![dim(Dim::DimParam(BATCH_DIM.into())), dim(Dim::DimValue(width as i64))],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_deterministic_and_bounded() {
        let a = weights(7, 0, 1000, 0.5);
        assert_eq!(a, weights(7, 0, 1000, 0.5));
        assert_ne!(a, weights(8, 0, 1000, 0.5));
        assert_ne!(a, weights(7, 1, 1000, 0.5));
        assert!(a.iter().all(|w| (-0.5..0.5).contains(w)));
        // Roughly centred: a uniform stream, not a constant.
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn splitmix_matches_its_reference_vector() {
        // SplitMix64 with state 0 advanced once (the published reference
        // sequence starts 0xE220A8397B1DCDAF).
        assert_eq!(splitmix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
    }
}

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

/// The shape of a pre-LN transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Tokens per sequence.
    pub seq: usize,
    /// Model width.
    pub width: usize,
    /// Attention heads (`width` divisible by it).
    pub heads: usize,
    /// Hidden width of the MLP.
    pub ffn: usize,
}

impl BlockShape {
    /// The benchmark block: `[N, 64, 256]`, 4 heads, MLP 1024.
    pub const BENCH: BlockShape = BlockShape { seq: 64, width: 256, heads: 4, ffn: 1024 };
}

/// Weight tensor indexes of [`transformer_block`], in the order the seeded
/// stream numbers them.
pub mod block_weights {
    /// LayerNorm 1 scale (`1 + w`, w in ±0.1) and bias (±0.1).
    pub const LN1: (u64, u64) = (0, 1);
    /// Query, key, value and output projections: matrix `[width, width]`
    /// (`[in, out]`) and bias, scale `1/sqrt(width)`.
    pub const Q: (u64, u64) = (2, 3);
    /// Key projection.
    pub const K: (u64, u64) = (4, 5);
    /// Value projection.
    pub const V: (u64, u64) = (6, 7);
    /// Output projection.
    pub const O: (u64, u64) = (8, 9);
    /// LayerNorm 2.
    pub const LN2: (u64, u64) = (10, 11);
    /// MLP up: `[width, ffn]`, scale `1/sqrt(width)`.
    pub const UP: (u64, u64) = (12, 13);
    /// MLP down: `[ffn, width]`, scale `1/sqrt(ffn)`.
    pub const DOWN: (u64, u64) = (14, 15);
}

/// LayerNorm parameters: scale `1 + w` and bias `w`, w uniform in ±0.1.
pub fn layer_norm_params(seed: u64, (scale, bias): (u64, u64), width: usize) -> (Vec<f32>, Vec<f32>) {
    let gamma = weights(seed, scale, width, 0.1).into_iter().map(|w| 1.0 + w).collect();
    (gamma, weights(seed, bias, width, 0.1))
}

/// A pre-LN transformer block on `input` FP32 `[batch, seq, width]`:
/// `x + Attn(LN1(x))`, then `h + MLP(LN2(h))`, with multi-head scaled
/// dot-product attention (no mask) and a GELU MLP. GELU is the tanh form,
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` with `x³` as `x·x·x`: every
/// op tract makes of it (multiply, add, tanh) has a tract-cuda kernel, where
/// the erf form becomes `GeluExact` and a constant `Pow` becomes `PowConst`,
/// both of which tract-cuda 0.23.9 leaves on the host. LayerNormalization is
/// opset 17's, eps 1e-5.
/// Output `output` has the input's shape. Weights: [`block_weights`].
pub fn transformer_block(shape: BlockShape, seed: u64) -> Vec<u8> {
    let BlockShape { seq, width, heads, ffn } = shape;
    let head = width / heads;
    let mut init = Vec::new();
    let mut nodes = Vec::new();
    let linear = |init: &mut Vec<TensorProto>, name: &str, (w, b): (u64, u64), fan_in: usize, fan_out: usize| {
        let scale = 1.0 / (fan_in as f32).sqrt();
        init.push(f32_tensor(&format!("{name}.w"), &[fan_in, fan_out], &weights(seed, w, fan_in * fan_out, scale)));
        init.push(f32_tensor(&format!("{name}.b"), &[fan_out], &weights(seed, b, fan_out, scale)));
    };
    let norm = |init: &mut Vec<TensorProto>, name: &str, ids: (u64, u64)| {
        let (gamma, beta) = layer_norm_params(seed, ids, width);
        init.push(f32_tensor(&format!("{name}.g"), &[width], &gamma));
        init.push(f32_tensor(&format!("{name}.b"), &[width], &beta));
    };
    norm(&mut init, "ln1", block_weights::LN1);
    linear(&mut init, "q", block_weights::Q, width, width);
    linear(&mut init, "k", block_weights::K, width, width);
    linear(&mut init, "v", block_weights::V, width, width);
    linear(&mut init, "o", block_weights::O, width, width);
    norm(&mut init, "ln2", block_weights::LN2);
    linear(&mut init, "up", block_weights::UP, width, ffn);
    linear(&mut init, "down", block_weights::DOWN, ffn, width);
    let scalar = |name: &str, v: f32| f32_tensor(name, &[], &[v]);
    init.push(scalar("c.scale", 1.0 / (head as f32).sqrt()));
    init.push(scalar("c.coef", 0.044715));
    init.push(scalar("c.sqrt2pi", (2.0 / std::f32::consts::PI).sqrt()));
    init.push(scalar("c.one", 1.0));
    init.push(scalar("c.half", 0.5));
    init.push(i64_tensor("c.heads_shape", &[0, 0, heads as i64, head as i64]));
    init.push(i64_tensor("c.width_shape", &[0, 0, width as i64]));

    let ln = |nodes: &mut Vec<NodeProto>, x: &str, name: &str| {
        let out = format!("{name}.out");
        let (g, b) = (format!("{name}.g"), format!("{name}.b"));
        let attrs = vec![int_attr("axis", -1), float_attr("epsilon", 1e-5)];
        nodes.push(node("LayerNormalization", &[x, &g, &b], &out, attrs));
        out
    };
    let dense = |nodes: &mut Vec<NodeProto>, x: &str, name: &str| {
        let mm = format!("{name}.mm");
        nodes.push(node("MatMul", &[x, &format!("{name}.w")], &mm, vec![]));
        let out = format!("{name}.out");
        nodes.push(node("Add", &[&mm, &format!("{name}.b")], &out, vec![]));
        out
    };
    // Attention.
    let h1 = ln(&mut nodes, "input", "ln1");
    let split = |nodes: &mut Vec<NodeProto>, x: &str, name: &str, perm: &[i64]| {
        let r = format!("{name}.heads");
        nodes.push(node("Reshape", &[x, "c.heads_shape"], &r, vec![]));
        let t = format!("{name}.t");
        nodes.push(node("Transpose", &[&r], &t, vec![ints_attr("perm", perm)]));
        t
    };
    let q = dense(&mut nodes, &h1, "q");
    let k = dense(&mut nodes, &h1, "k");
    let v = dense(&mut nodes, &h1, "v");
    let q = split(&mut nodes, &q, "q", &[0, 2, 1, 3]); // [B, H, S, Dh]
    let k = split(&mut nodes, &k, "k", &[0, 2, 3, 1]); // [B, H, Dh, S]
    let v = split(&mut nodes, &v, "v", &[0, 2, 1, 3]);
    nodes.push(node("MatMul", &[&q, &k], "att.scores", vec![]));
    nodes.push(node("Mul", &["att.scores", "c.scale"], "att.scaled", vec![]));
    nodes.push(node("Softmax", &["att.scaled"], "att.probs", vec![int_attr("axis", -1)]));
    nodes.push(node("MatMul", &["att.probs", &v], "att.ctx", vec![]));
    nodes.push(node("Transpose", &["att.ctx"], "att.ctx_t", vec![ints_attr("perm", &[0, 2, 1, 3])]));
    nodes.push(node("Reshape", &["att.ctx_t", "c.width_shape"], "att.merged", vec![]));
    let o = dense(&mut nodes, "att.merged", "o");
    nodes.push(node("Add", &["input", &o], "res1", vec![]));
    // MLP.
    let h2 = ln(&mut nodes, "res1", "ln2");
    let up = dense(&mut nodes, &h2, "up");
    nodes.push(node("Mul", &[&up, &up], "gelu.square", vec![]));
    nodes.push(node("Mul", &["gelu.square", &up], "gelu.cube", vec![]));
    nodes.push(node("Mul", &["gelu.cube", "c.coef"], "gelu.cube_c", vec![]));
    nodes.push(node("Add", &[&up, "gelu.cube_c"], "gelu.inner", vec![]));
    nodes.push(node("Mul", &["gelu.inner", "c.sqrt2pi"], "gelu.scaled", vec![]));
    nodes.push(node("Tanh", &["gelu.scaled"], "gelu.tanh", vec![]));
    nodes.push(node("Add", &["gelu.tanh", "c.one"], "gelu.one_plus", vec![]));
    nodes.push(node("Mul", &[&up, "gelu.one_plus"], "gelu.x_times", vec![]));
    nodes.push(node("Mul", &["gelu.x_times", "c.half"], "gelu.out", vec![]));
    let down = dense(&mut nodes, "gelu.out", "down");
    nodes.push(node("Add", &["res1", &down], "output", vec![]));

    let graph = GraphProto {
        name: "transformer_block".into(),
        node: nodes,
        initializer: init,
        input: vec![value_info_dims("input", OnnxType::Float, &[seq, width])],
        output: vec![value_info_dims("output", OnnxType::Float, &[seq, width])],
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

fn float_attr(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: value, ..Default::default() }
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: OnnxType::Int64 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
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
    value_info_dims(name, elem, &[width])
}

/// `[batch, dims...]` with a symbolic batch.
fn value_info_dims(name: &str, elem: OnnxType, dims: &[usize]) -> ValueInfoProto {
    let dim = |v| Dimension { value: Some(v), ..Default::default() };
    let mut shape = vec![dim(Dim::DimParam(BATCH_DIM.into()))];
    shape.extend(dims.iter().map(|&d| dim(Dim::DimValue(d as i64))));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim: shape }),
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

//! The sidecar's request decoding: any bytes as a `ModelInferRequest`
//! (prost), then its inputs decoded and validated against a batching
//! FP32 model and a non-batching model with a BYTES input, as
//! `ModelInfer` does before anything is queued. Errors are answers;
//! a panic or an allocation beyond the limits is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::inference::ModelInferRequest;
use meridian_sidecar::executor::{Signature, TensorSpec};
use meridian_sidecar::grpc::convert;
use meridian_sidecar::tensor::DataType;
use prost::Message;

fn spec(name: &str, dtype: DataType, shape: &[i64]) -> TensorSpec {
    TensorSpec { name: name.into(), dtype, shape: shape.to_vec() }
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ModelInferRequest::decode(data) else { return };
    let mlp = Signature {
        inputs: vec![spec("input", DataType::F32, &[-1, 16])],
        outputs: vec![spec("output", DataType::F32, &[-1, 4])],
    };
    let strings = Signature {
        inputs: vec![spec("text", DataType::Bytes, &[2]), spec("ids", DataType::I64, &[2, 3])],
        outputs: vec![spec("out", DataType::F32, &[2])],
    };
    let _ = convert::decode(&mut request.clone(), &mlp, 64);
    let _ = convert::decode(&mut request.clone(), &strings, 0);
});

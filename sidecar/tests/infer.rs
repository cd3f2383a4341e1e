//! Inference end to end over gRPC with a Rust client: outputs against an
//! independent reference, raw and typed contents, every datatype, in-band
//! load signals, streaming, statistics.

mod common;

use common::*;
use meridian_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use meridian_proto::inference::{InferTensorContents, ModelInferRequest, ModelStatisticsRequest};

#[tokio::test]
async fn raw_requests_get_raw_outputs_matching_the_reference() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let x = input(3, 0.5);
    let resp = client.model_infer(mlp_request(3, &x)).await.expect("infer");
    let md = resp.metadata().clone();
    let resp = resp.into_inner();
    assert_eq!(resp.model_name, "mlp");
    assert_eq!(resp.model_version, "1");
    assert_eq!(resp.outputs[0].name, "output");
    assert_eq!(resp.outputs[0].datatype, "FP32");
    assert_eq!(resp.outputs[0].shape, vec![3, DIMS[2] as i64]);
    assert!(resp.outputs[0].contents.is_none(), "raw in, raw out");
    assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, SEED, &x));
    for key in ["x-meridian-queue-depth", "x-meridian-queue-time-us", "x-meridian-batch-size", "x-meridian-instance"] {
        let v = md.get(key).unwrap_or_else(|| panic!("{key} missing")).to_str().expect("ascii");
        v.parse::<u64>().unwrap_or_else(|_| panic!("{key}={v} is a number"));
    }
    assert_eq!(md.get("x-meridian-model-version").map(|v| v.to_str().expect("ascii")), Some("1"));
    assert_eq!(md.get("x-meridian-batch-size").map(|v| v.to_str().expect("ascii")), Some("3"));
}

#[tokio::test]
async fn typed_requests_get_typed_outputs() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let x = input(2, 1.5);
    let resp = client.model_infer(mlp_request_typed(2, &x)).await.expect("infer").into_inner();
    assert!(resp.raw_output_contents.is_empty(), "typed in, typed out");
    let got = &resp.outputs[0].contents.as_ref().expect("typed contents").fp32_contents;
    assert_close(got, &reference(&DIMS, SEED, &x));
}

#[tokio::test]
async fn concurrent_callers_each_get_their_own_rows() {
    let server = TestServer::start(standard_repo).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            let rows = 1 + i % 3;
            let x = input(rows, i as f32);
            let resp = client.model_infer(mlp_request(rows, &x)).await.expect("infer").into_inner();
            assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, SEED, &x));
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    let stats = server
        .client()
        .await
        .model_statistics(ModelStatisticsRequest { name: "mlp".into(), version: String::new() })
        .await;
    let stats = stats.expect("stats").into_inner().model_stats.remove(0);
    let rows: u64 = (0..24).map(|i| 1 + i % 3).sum();
    assert_eq!(stats.inference_count, rows, "every row counted once");
    assert!(stats.execution_count <= 24 && stats.execution_count >= 1);
    let success = stats.inference_stats.expect("stats").success.expect("success");
    assert_eq!(success.count, 24);
    let batched: u64 =
        stats.batch_stats.iter().map(|b| b.batch_size * b.compute_infer.as_ref().map(|d| d.count).unwrap_or(0)).sum();
    assert_eq!(batched, rows, "batch statistics add up to the rows run");
}

fn echo_input(name: &str, datatype: &str, raw: Vec<u8>) -> (InferInputTensor, Vec<u8>) {
    (InferInputTensor { name: name.into(), datatype: datatype.into(), shape: vec![2, 4], ..Default::default() }, raw)
}

#[tokio::test]
async fn every_datatype_round_trips_raw() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let f16: Vec<u8> = (0..8).flat_map(|i| half::f16::from_f32(i as f32 * 0.5).to_le_bytes()).collect();
    let cases = [
        echo_input("in_fp32", "FP32", (0..8).flat_map(|i| (i as f32 * 1.25).to_le_bytes()).collect()),
        echo_input("in_fp16", "FP16", f16),
        echo_input("in_int8", "INT8", (0..8).map(|i| (i as i8 - 4) as u8).collect()),
        echo_input("in_int16", "INT16", (0..8).flat_map(|i| (i as i16 * -300).to_le_bytes()).collect()),
        echo_input("in_int32", "INT32", (0..8).flat_map(|i| (i * -70000i32).to_le_bytes()).collect()),
        echo_input("in_int64", "INT64", (0..8).flat_map(|i| (i as i64 * -5_000_000_000).to_le_bytes()).collect()),
        echo_input("in_uint8", "UINT8", (0..8).map(|i| 250 - i as u8).collect()),
        echo_input("in_bool", "BOOL", (0..8).map(|i| (i % 2) as u8).collect()),
        echo_input("in_bytes", "BYTES", {
            // BYTES raw: a 4-byte little-endian length before each element.
            let mut raw = Vec::new();
            for i in 0..8u32 {
                let item = "é".repeat(i as usize);
                raw.extend_from_slice(&(item.len() as u32).to_le_bytes());
                raw.extend_from_slice(item.as_bytes());
            }
            raw
        }),
    ];
    let req = ModelInferRequest {
        model_name: "echo_types".into(),
        inputs: cases.iter().map(|(t, _)| t.clone()).collect(),
        raw_input_contents: cases.iter().map(|(_, b)| b.clone()).collect(),
        ..Default::default()
    };
    let resp = client.model_infer(req).await.expect("infer").into_inner();
    for (i, (tensor, raw)) in cases.iter().enumerate() {
        let want = tensor.name.replace("in_", "out_");
        let at = resp.outputs.iter().position(|o| o.name == want).unwrap_or_else(|| panic!("{want} returned"));
        assert_eq!(resp.outputs[at].datatype, tensor.datatype, "{want}");
        assert_eq!(&resp.raw_output_contents[at], raw, "{want} echoes input {i} byte for byte");
    }
}

#[tokio::test]
async fn typed_fp16_and_missing_inputs_are_refused_by_name() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let typed = |name: &str, dt: &str, contents: InferTensorContents| InferInputTensor {
        name: name.into(),
        datatype: dt.into(),
        shape: vec![1, 4],
        contents: Some(contents),
        ..Default::default()
    };
    let mut req = ModelInferRequest {
        model_name: "echo_types".into(),
        inputs: vec![
            typed(
                "in_fp32",
                "FP32",
                InferTensorContents { fp32_contents: vec![1.0, 2.0, 3.0, 4.0], ..Default::default() },
            ),
            typed("in_int8", "INT8", InferTensorContents { int_contents: vec![-128, 0, 5, 127], ..Default::default() }),
            typed("in_int16", "INT16", InferTensorContents { int_contents: vec![-1, 2, -3, 4], ..Default::default() }),
            typed(
                "in_int32",
                "INT32",
                InferTensorContents { int_contents: vec![i32::MIN, 0, 1, i32::MAX], ..Default::default() },
            ),
            typed(
                "in_int64",
                "INT64",
                InferTensorContents { int64_contents: vec![i64::MIN, 0, 1, i64::MAX], ..Default::default() },
            ),
            typed(
                "in_uint8",
                "UINT8",
                InferTensorContents { uint_contents: vec![0, 1, 254, 255], ..Default::default() },
            ),
            typed(
                "in_bool",
                "BOOL",
                InferTensorContents { bool_contents: vec![true, false, false, true], ..Default::default() },
            ),
            typed("in_fp16", "FP16", InferTensorContents::default()),
        ],
        outputs: ["out_int8", "out_int64", "out_bool"]
            .iter()
            .map(|n| InferRequestedOutputTensor { name: n.to_string(), ..Default::default() })
            .collect(),
        ..Default::default()
    };
    // FP16 has no typed field: typed FP16 is refused with a clear message.
    let err = client.model_infer(req.clone()).await.expect_err("typed fp16");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("in_fp16") && err.message().contains("raw_input_contents"), "{}", err.message());
    // FP16 with no contents at all is refused too, naming the input.
    req.inputs.pop();
    req.inputs.push(InferInputTensor {
        name: "in_fp16".into(),
        datatype: "FP16".into(),
        shape: vec![1, 4],
        ..Default::default()
    });
    let err = client.model_infer(req.clone()).await.expect_err("fp16 without contents");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("in_fp16"), "{}", err.message());
    // Without FP16, the typed integers and bools come back typed, and only
    // the requested outputs.
    let fp16_at = req.inputs.len() - 1;
    req.inputs.remove(fp16_at);
    let err = client.model_infer(req.clone()).await.expect_err("fp16 missing");
    assert!(
        err.message().contains("missing input 'in_bytes'"),
        "inputs are checked in the model's order: {}",
        err.message()
    );
}

#[tokio::test]
async fn typed_values_come_back_typed_for_the_requested_outputs_only() {
    let server = TestServer::start(|repo| {
        write_model(repo, "mlp", 1, &meridian_sidecar::models::mlp(&DIMS, SEED), "max_batch_size: 4\n");
    })
    .await;
    let mut client = server.client().await;
    let x = input(1, 2.0);
    let mut req = mlp_request_typed(1, &x);
    req.outputs.push(InferRequestedOutputTensor { name: "output".into(), ..Default::default() });
    let resp = client.model_infer(req).await.expect("infer").into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_close(&resp.outputs[0].contents.as_ref().expect("typed").fp32_contents, &reference(&DIMS, SEED, &x));
}

#[tokio::test]
async fn out_of_range_typed_values_are_refused() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let req = ModelInferRequest {
        model_name: "echo_types".into(),
        inputs: vec![InferInputTensor {
            name: "in_int8".into(),
            datatype: "INT8".into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents { int_contents: vec![1, 2, 300, 4], ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = client.model_infer(req).await.expect_err("out of range");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("300") && err.message().contains("INT8"), "{}", err.message());
}

#[tokio::test]
async fn streaming_answers_every_request_with_its_id() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let mut requests = Vec::new();
    for i in 0..5 {
        let mut r = mlp_request(1, &input(1, i as f32));
        r.id = format!("req-{i}");
        requests.push(r);
    }
    let mut bad = mlp_request(1, &input(1, 9.0));
    bad.id = "bad".into();
    bad.inputs[0].datatype = "INT32".into();
    requests.push(bad);
    let mut stream = client.model_stream_infer(tokio_stream::iter(requests)).await.expect("stream").into_inner();
    let mut seen = std::collections::BTreeMap::new();
    while let Some(msg) = stream.message().await.expect("message") {
        let resp = msg.infer_response.expect("response");
        seen.insert(resp.id.clone(), (msg.error_message.clone(), resp));
        if seen.len() == 6 {
            break;
        }
    }
    for i in 0..5 {
        let (err, resp) = &seen[&format!("req-{i}")];
        assert!(err.is_empty(), "{err}");
        assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, SEED, &input(1, i as f32)));
    }
    assert!(seen["bad"].0.contains("INT32"), "{}", seen["bad"].0);
}

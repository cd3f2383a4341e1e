//! Every bad request gets its gRPC status and a message naming the
//! problem, and the server goes on serving correctly afterwards.

mod common;

use common::*;
use meridian_proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use meridian_proto::inference::{InferParameter, ModelInferRequest, ModelMetadataRequest};
use tonic::Code;

fn with(f: impl FnOnce(&mut ModelInferRequest)) -> ModelInferRequest {
    let mut r = mlp_request(1, &input(1, 0.0));
    f(&mut r);
    r
}

#[tokio::test]
async fn bad_requests_get_a_status_and_a_message_that_names_the_problem() {
    let server = TestServer::start(standard_repo).await;
    let mut client = server.client().await;
    let cases: Vec<(&str, ModelInferRequest, Code, &[&str])> = vec![
        ("unknown model", with(|r| r.model_name = "nope".into()), Code::NotFound, &["nope"]),
        ("unknown version", with(|r| r.model_version = "7".into()), Code::NotFound, &["version '7'", "loaded: 1"]),
        (
            "bad datatype",
            with(|r| r.inputs[0].datatype = "INT32".into()),
            Code::InvalidArgument,
            &["'input'", "INT32", "FP32"],
        ),
        (
            "unknown datatype",
            with(|r| r.inputs[0].datatype = "FLOAT".into()),
            Code::InvalidArgument,
            &["unknown datatype 'FLOAT'"],
        ),
        (
            "bytes to a float model",
            with(|r| r.inputs[0].datatype = "BYTES".into()),
            Code::InvalidArgument,
            &["BYTES", "strings"],
        ),
        (
            "wrong rank",
            with(|r| r.inputs[0].shape = vec![16]),
            Code::InvalidArgument,
            &["'input'", "[16]", "dimensions"],
        ),
        ("wrong width", with(|r| r.inputs[0].shape = vec![1, 15]), Code::InvalidArgument, &["[1, 15]", "[-1, 16]"]),
        (
            "batch over max",
            with(|r| r.inputs[0].shape = vec![9, 16]),
            Code::InvalidArgument,
            &["batch size 9", "1..=8"],
        ),
        ("zero batch", with(|r| r.inputs[0].shape = vec![0, 16]), Code::InvalidArgument, &["batch size 0"]),
        ("negative dimension", with(|r| r.inputs[0].shape = vec![-1, 16]), Code::InvalidArgument, &["negative"]),
        (
            "short raw contents",
            with(|r| r.raw_input_contents[0].truncate(60)),
            Code::InvalidArgument,
            &["'input'", "64 bytes", "got 60"],
        ),
        (
            "raw and typed contents together",
            with(|r| {
                r.inputs[0].contents = Some(meridian_proto::inference::InferTensorContents {
                    fp32_contents: vec![0.5; 16],
                    ..Default::default()
                })
            }),
            Code::InvalidArgument,
            &["input 'input': contents must not be given", "raw_input_contents"],
        ),
        (
            "raw count mismatch",
            with(|r| r.raw_input_contents.push(vec![1])),
            Code::InvalidArgument,
            &["raw_input_contents has 2", "1 inputs"],
        ),
        (
            "missing input",
            with(|r| {
                r.inputs.clear();
                r.raw_input_contents.clear();
            }),
            Code::InvalidArgument,
            &["missing input 'input'"],
        ),
        (
            "unknown input",
            with(|r| r.inputs[0].name = "x".into()),
            Code::InvalidArgument,
            &["unknown input 'x'", "'input'"],
        ),
        (
            "duplicate input",
            with(|r| {
                let t = r.inputs[0].clone();
                r.inputs.push(t);
                let b = r.raw_input_contents[0].clone();
                r.raw_input_contents.push(b);
            }),
            Code::InvalidArgument,
            &["given twice"],
        ),
        (
            "unknown output",
            with(|r| r.outputs.push(InferRequestedOutputTensor { name: "logits".into(), ..Default::default() })),
            Code::InvalidArgument,
            &["unknown output 'logits'", "'output'"],
        ),
        (
            "priority out of range",
            with(|r| {
                r.parameters.insert(
                    "priority".into(),
                    InferParameter {
                        parameter_choice: Some(
                            meridian_proto::inference::infer_parameter::ParameterChoice::Int64Param(5),
                        ),
                    },
                );
            }),
            Code::InvalidArgument,
            &["priority", "1..=2"],
        ),
        (
            "typed contents of the wrong kind",
            with(|r| {
                r.raw_input_contents.clear();
                r.inputs[0].contents = Some(meridian_proto::inference::InferTensorContents {
                    int_contents: vec![1; 16],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            &["'input'", "needs 64 bytes, got 0"],
        ),
    ];
    for (what, req, code, needles) in cases {
        let err = client.model_infer(req).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        for n in needles {
            assert!(err.message().contains(n), "{what}: {:?} lacks {n:?}", err.message());
        }
    }
    let err = client
        .model_metadata(ModelMetadataRequest { name: "nope".into(), version: String::new() })
        .await
        .expect_err("meta");
    assert_eq!(err.code(), Code::NotFound);

    // Nothing above ran, nothing broke: the next request is served correctly.
    let x = input(2, 3.0);
    let resp = client.model_infer(mlp_request(2, &x)).await.expect("still serving").into_inner();
    assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, SEED, &x));
}

#[tokio::test]
async fn a_model_that_fails_at_run_time_fails_only_its_batch_with_internal() {
    // Gather with an index past the end fails inside the executor.
    let server = TestServer::start(|repo| {
        standard_repo(repo);
        write_model(repo, "gather", 1, &meridian_sidecar::models::gather(4), "max_batch_size: 0\n");
    })
    .await;
    let mut client = server.client().await;
    let req = |index: i64| ModelInferRequest {
        model_name: "gather".into(),
        inputs: vec![InferInputTensor {
            name: "indices".into(),
            datatype: "INT64".into(),
            shape: vec![1],
            ..Default::default()
        }],
        raw_input_contents: vec![index.to_le_bytes().to_vec()],
        ..Default::default()
    };
    let ok = client.model_infer(req(2)).await.expect("index 2 works").into_inner();
    assert_eq!(f32s(&ok.raw_output_contents[0]), vec![20.0]);
    let err = client.model_infer(req(10)).await.expect_err("fails at run time");
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    assert!(err.message().contains("model 'gather' version 1 failed"), "{}", err.message());
    client.model_infer(req(3)).await.expect("the same model serves the next request");
    let x = input(1, 4.0);
    let resp = client.model_infer(mlp_request(1, &x)).await.expect("other models still serve").into_inner();
    assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, SEED, &x));
}

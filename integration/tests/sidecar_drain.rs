//! SIGTERM drains the real sidecar process: calls in flight finish, new
//! calls get UNAVAILABLE, the process exits 0.

use meridian_integration::sidecar::{generate_models, Sidecar};
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::ModelInferRequest;
use std::time::Duration;

const WIDTH: usize = 512;
const ROWS: usize = 64;

fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![ROWS as i64, WIDTH as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0; ROWS * WIDTH * 4]],
        ..Default::default()
    }
}

fn pending(sidecar: &Sidecar) -> i64 {
    let body = meridian_integration::http::get(sidecar.metrics(), "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines()
        .find_map(|l| l.strip_prefix(r#"meridian_inference_pending_requests{model="mlp",version="1"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_calls_in_flight_then_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "512,2048,2048,8", "--max-batch-size", "64"]).expect("models");
    let sidecar = Sidecar::start("127.0.0.1", dir.path(), &["--drain-grace-secs", "30", "--repository-poll-secs", "0"])
        .expect("sidecar");
    let url = format!("http://{}", sidecar.grpc());
    let mut calls = Vec::new();
    for _ in 0..12 {
        let mut client = GrpcInferenceServiceClient::connect(url.clone()).await.expect("connect");
        calls.push(tokio::spawn(async move { client.model_infer(request()).await }));
    }
    // Bounded wait until the calls are queued behind the busy instance.
    for _ in 0..2000 {
        if pending(&sidecar) >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(pending(&sidecar) >= 1, "calls are in flight at SIGTERM");
    let mut late = GrpcInferenceServiceClient::connect(url.clone()).await.expect("connect");
    let pid = sidecar.pid();
    let exit = tokio::task::spawn_blocking(move || sidecar.terminate());
    // While draining, a new call on an open connection is refused clearly.
    let mut refused = None;
    for _ in 0..500 {
        match late.model_infer(request()).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let refused = refused.expect("a call after SIGTERM is refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{}", refused.message());
    for call in calls {
        call.await.expect("task").expect("every call in flight at SIGTERM completes");
    }
    let status = exit.await.expect("join").expect("wait");
    assert!(status.success(), "sidecar {pid} exited with {status}");
}

//! Back-pressure: a full queue, deadlines and rate limits, each with its
//! status, message and retry pushback.

mod common;

use common::*;
use meridian_proto::inference::ModelStatisticsRequest;
use meridian_sidecar::models;
use std::time::Duration;
use tonic::Code;

/// Wide enough that one 64-row request takes milliseconds on the CPU.
const SLOW: [usize; 4] = [512, 2048, 2048, 8];
const ROWS: usize = 64;

fn slow_request(seed: f32) -> meridian_proto::inference::ModelInferRequest {
    let mut r = mlp_request(1, &[]);
    r.inputs[0].shape = vec![ROWS as i64, SLOW[0] as i64];
    r.raw_input_contents = vec![(0..SLOW[0] * ROWS).flat_map(|i| ((i as f32 + seed) * 0.001).to_le_bytes()).collect()];
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_resource_exhausted_with_retry_pushback() {
    let server = TestServer::start(|repo| {
        write_model(
            repo,
            "mlp",
            1,
            &models::mlp(&SLOW, 1),
            "max_batch_size: 64\ndynamic_batching:\n  max_queue_delay_us: 0\n  max_queue_size: 2\n",
        );
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move { client.model_infer(slow_request(i as f32)).await }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
                assert!(
                    status.message().contains("queue full") && status.message().contains("max_queue_size"),
                    "{}",
                    status.message()
                );
                let ms = status.metadata().get("grpc-retry-pushback-ms").expect("pushback").to_str().expect("ascii");
                assert!(ms.parse::<u64>().expect("number") >= 1);
                exhausted += 1;
            }
        }
    }
    assert!(exhausted > 0, "40 concurrent requests never filled a queue of 2");
    assert!(ok >= 3, "the accepted ones ran ({ok})");
    // The server still serves once the burst is over.
    server.client().await.model_infer(slow_request(0.0)).await.expect("serves after the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_deadline_passes_in_the_queue_never_runs() {
    let server = TestServer::start(|repo| {
        write_model(
            repo,
            "mlp",
            1,
            &models::mlp(&SLOW, 1),
            "max_batch_size: 64\ndynamic_batching:\n  max_queue_delay_us: 0\n  max_queue_size: 100\n",
        );
    })
    .await;
    // Fill the queue with work, then send one request with a 200 ms deadline
    // (the sidecar answers 20 ms before it: margin enough for a loaded
    // machine to run its timer before the transport's own CANCELLED).
    // Connect every caller first, so the backlog arrives at once even when
    // connecting is slow on a loaded machine; 60 full batches keep the
    // instance busy for hundreds of milliseconds.
    let mut clients = Vec::new();
    for _ in 0..60 {
        clients.push(server.client().await);
    }
    let mut backlog = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        backlog.push(tokio::spawn(async move { client.model_infer(slow_request(i as f32)).await }));
    }
    // Wait (bounded) until the backlog is queued behind the busy instance.
    let mut most = 0;
    for _ in 0..2500 {
        most = most.max(server.pending("mlp").await);
        if most >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(most >= 40, "the backlog is queued (at most {most} pending seen)");
    let mut client = server.client().await;
    let mut doomed = tonic::Request::new(slow_request(99.0));
    doomed.set_timeout(Duration::from_millis(200));
    let err = client.model_infer(doomed).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err.message());
    assert!(err.message().contains("model 'mlp'") && err.message().contains("deadline exceeded"), "{}", err.message());
    let mut ran = 0;
    for t in backlog {
        t.await.expect("task").expect("backlog runs");
        ran += 1;
    }
    let stats = client.model_statistics(ModelStatisticsRequest { name: "mlp".into(), version: "1".into() }).await;
    let stats = stats.expect("stats").into_inner().model_stats.remove(0);
    assert_eq!(stats.inference_count, ran * ROWS as u64, "only the backlog ran; the expired request never did");
    assert_eq!(
        stats.inference_stats.expect("stats").fail.expect("fail").count,
        1,
        "the expired request counts as failed"
    );
}

/// A server whose `mlp` has the given `rate_limit` keys, and a client.
async fn limited_server(
    limits: &str,
) -> (
    TestServer,
    meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>,
) {
    let config = format!("max_batch_size: 4\nrate_limit:\n  {limits}\n");
    let server = TestServer::start(|repo| write_model(repo, "mlp", 1, &models::mlp(&DIMS, SEED), &config)).await;
    let client = server.client().await;
    (server, client)
}

/// A request from `caller` (the x-meridian-caller header).
fn as_caller(caller: &str) -> tonic::Request<meridian_proto::inference::ModelInferRequest> {
    let mut r = tonic::Request::new(mlp_request(1, &input(1, 0.0)));
    r.metadata_mut().insert("x-meridian-caller", caller.parse().expect("ascii"));
    r
}

#[tokio::test]
async fn rate_limits_apply_per_caller() {
    let (_server, mut client) = limited_server("per_caller_requests_per_second: 1\n  burst: 2").await;
    client.model_infer(as_caller("alice")).await.expect("first");
    client.model_infer(as_caller("alice")).await.expect("burst of 2");
    let err = client.model_infer(as_caller("alice")).await.expect_err("third within a second");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("caller 'alice'"), "{}", err.message());
    assert!(err.metadata().get("grpc-retry-pushback-ms").is_some(), "pushback set");
    client.model_infer(as_caller("bob")).await.expect("another caller has its own bucket");
}

#[tokio::test]
async fn the_model_rate_limit_covers_every_caller() {
    let (_server, mut client) = limited_server("requests_per_second: 1\n  burst: 1").await;
    client.model_infer(as_caller("alice")).await.expect("first");
    let err = client.model_infer(as_caller("bob")).await.expect_err("the model's one token is spent");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("rate limit of model 'mlp' exceeded for model"), "{}", err.message());
    let ms: u64 =
        err.metadata().get("grpc-retry-pushback-ms").expect("pushback").to_str().expect("ascii").parse().expect("ms");
    assert!((1..=1000).contains(&ms), "{ms}");
}

//! The model repository: bad configs, load/unload over gRPC, reload when
//! files change with requests in flight, health per model.

mod common;

use common::*;
use meridian_proto::health::health_check_response::ServingStatus;
use meridian_proto::health::health_client::HealthClient;
use meridian_proto::health::HealthCheckRequest;
use meridian_proto::inference::{
    ModelReadyRequest, RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
    ServerReadyRequest,
};
use meridian_sidecar::executor::device::DeviceChoice;
use meridian_sidecar::models;
use std::time::Duration;
use tonic::Code;

async fn ready(server: &TestServer, name: &str) -> bool {
    let mut c = server.client().await;
    c.model_ready(ModelReadyRequest { name: name.into(), version: String::new() })
        .await
        .expect("ready")
        .into_inner()
        .ready
}

async fn health(server: &TestServer, service: &str) -> Result<i32, tonic::Status> {
    let mut h = HealthClient::connect(format!("http://{}", server.bound.grpc)).await.expect("connect");
    h.check(HealthCheckRequest { service: service.into() }).await.map(|r| r.into_inner().status)
}

#[tokio::test]
async fn a_model_pinned_to_a_missing_gpu_fails_alone_and_says_why() {
    // `--device auto` on a machine without a GPU (CI): the server serves on the
    // CPU; a model whose config.yaml asks for CUDA fails to load with the reason;
    // a model asking for the CPU at FP16 serves.
    let server = TestServer::start_on(
        |repo| {
            standard_repo(repo);
            write_model(repo, "on_gpu", 1, &models::mlp(&DIMS, SEED), "max_batch_size: 4\ndevice: cuda\n");
            write_model(
                repo,
                "half",
                1,
                &models::mlp(&DIMS, SEED),
                "max_batch_size: 4\ndevice: cpu\nprecision: fp16\n",
            );
        },
        None,
        DeviceChoice::Auto,
    )
    .await;
    if meridian_sidecar::executor::cuda::probe().is_ok() {
        return; // A GPU is here: `device: cuda` loads; nothing to check about its absence.
    }
    assert!(!ready(&server, "on_gpu").await);
    assert!(ready(&server, "mlp").await && ready(&server, "half").await, "the other models keep serving");
    let mut c = server.client().await;
    let index = c.repository_index(RepositoryIndexRequest::default()).await.expect("index").into_inner();
    let on_gpu = index.models.iter().find(|m| m.name == "on_gpu").expect("listed");
    assert_eq!(on_gpu.state, "UNAVAILABLE");
    assert!(
        on_gpu.reason.contains("on_gpu/config.yaml")
            && on_gpu.reason.contains("device: cuda:0, but no GPU is usable")
            && on_gpu.reason.contains("libcuda.so"),
        "{}",
        on_gpu.reason
    );
    // The FP16 model answers in FP32, close to the FP32 model.
    let x = input(1, 0.25);
    let full = c.model_infer(mlp_request(1, &x)).await.expect("fp32").into_inner();
    let half = c
        .model_infer({
            let mut r = mlp_request(1, &x);
            r.model_name = "half".into();
            r
        })
        .await
        .expect("fp16")
        .into_inner();
    assert_eq!(half.outputs[0].datatype, "FP32");
    let values = |r: &meridian_proto::inference::ModelInferResponse| -> Vec<f32> {
        r.raw_output_contents[0].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let diff = values(&full).iter().zip(values(&half)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 5e-3, "fp16 vs fp32: {diff}");
}

#[tokio::test]
async fn a_bad_config_rejects_only_that_model_and_says_why() {
    let server = TestServer::start(|repo| {
        standard_repo(repo);
        write_model(repo, "typo", 1, &models::mlp(&DIMS, SEED), "max_batch_size: 4\nmax_bacth_delay: 9\n");
    })
    .await;
    assert!(!ready(&server, "typo").await);
    assert!(ready(&server, "mlp").await, "the other models keep serving");
    let mut c = server.client().await;
    assert!(!c.server_ready(ServerReadyRequest {}).await.expect("server ready").into_inner().ready);
    let index = c.repository_index(RepositoryIndexRequest::default()).await.expect("index").into_inner();
    let typo = index.models.iter().find(|m| m.name == "typo").expect("listed");
    assert_eq!(typo.state, "UNAVAILABLE");
    assert!(typo.reason.contains("typo/config.yaml") && typo.reason.contains("max_bacth_delay"), "{}", typo.reason);
    let err = c
        .model_infer({
            let mut r = mlp_request(1, &input(1, 0.0));
            r.model_name = "typo".into();
            r
        })
        .await
        .expect_err("not ready");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("max_bacth_delay"), "{}", err.message());
    assert_eq!(health(&server, "typo").await.expect("health"), ServingStatus::NotServing as i32);
    assert_eq!(health(&server, "mlp").await.expect("health"), ServingStatus::Serving as i32);
    assert_eq!(health(&server, "").await.expect("health"), ServingStatus::NotServing as i32);
    assert_eq!(health(&server, "missing").await.expect_err("unknown").code(), Code::NotFound);
}

#[tokio::test]
async fn unload_and_load_over_grpc() {
    let server = TestServer::start(standard_repo).await;
    let mut c = server.client().await;
    c.repository_model_unload(RepositoryModelUnloadRequest { model_name: "mlp".into(), ..Default::default() })
        .await
        .expect("unload");
    assert!(!ready(&server, "mlp").await);
    let err = c.model_infer(mlp_request(1, &input(1, 0.0))).await.expect_err("unloaded");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("unloaded"), "{}", err.message());
    c.repository_model_load(RepositoryModelLoadRequest { model_name: "mlp".into(), ..Default::default() })
        .await
        .expect("load");
    assert!(ready(&server, "mlp").await);
    c.model_infer(mlp_request(1, &input(1, 0.0))).await.expect("serves again");
    let err = c
        .repository_model_load(RepositoryModelLoadRequest { model_name: "ghost".into(), ..Default::default() })
        .await
        .expect_err("no such model");
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .repository_model_unload(RepositoryModelUnloadRequest { model_name: "ghost".into(), ..Default::default() })
        .await
        .expect_err("no such model");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_new_version_on_disk_is_served_without_failing_requests_in_flight() {
    let server = TestServer::start_with(standard_repo, Some(Duration::from_millis(50))).await;
    let repo = server.repo();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for i in 0..4 {
        let mut client = server.client().await;
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeSet::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let x = input(1, (i * 1000 + n) as f32);
                let resp = client
                    .model_infer(mlp_request(1, &x))
                    .await
                    .expect("no request fails during the reload")
                    .into_inner();
                versions.insert(resp.model_version.clone());
                let seed = if resp.model_version == "2" { SEED + 1 } else { SEED };
                assert_close(&f32s(&resp.raw_output_contents[0]), &reference(&DIMS, seed, &x));
                n += 1;
            }
            (n, versions)
        }));
    }
    // Version 2 (other weights) appears on disk; the poller loads it.
    let dir = repo.join("mlp").join("2");
    std::fs::create_dir_all(&dir).expect("dir");
    let tmp = repo.join("mlp.onnx.tmp");
    std::fs::write(&tmp, models::mlp(&DIMS, SEED + 1)).expect("write");
    std::fs::rename(&tmp, dir.join("model.onnx")).expect("rename");
    let mut c = server.client().await;
    let mut served_two = false;
    for _ in 0..500 {
        let resp = c.model_infer(mlp_request(1, &input(1, 0.0))).await.expect("infer").into_inner();
        if resp.model_version == "2" {
            served_two = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(served_two, "version 2 was never served");
    for c in callers {
        let (n, _) = c.await.expect("caller");
        assert!(n > 0);
    }
    let index = c
        .repository_index(RepositoryIndexRequest { ready: true, ..Default::default() })
        .await
        .expect("index")
        .into_inner();
    let mlp: Vec<_> = index.models.iter().filter(|m| m.name == "mlp").map(|m| m.version.as_str()).collect();
    assert_eq!(mlp, vec!["2"], "latest: 1 serves only the newest version");
}

#[tokio::test]
async fn health_watch_follows_a_model_going_down_and_up() {
    let server = TestServer::start(standard_repo).await;
    let mut h = HealthClient::connect(format!("http://{}", server.bound.grpc)).await.expect("connect");
    let mut watch = h.watch(HealthCheckRequest { service: "mlp".into() }).await.expect("watch").into_inner();
    assert_eq!(watch.message().await.expect("msg").expect("first").status, ServingStatus::Serving as i32);
    let mut c = server.client().await;
    c.repository_model_unload(RepositoryModelUnloadRequest { model_name: "mlp".into(), ..Default::default() })
        .await
        .expect("unload");
    assert_eq!(watch.message().await.expect("msg").expect("second").status, ServingStatus::NotServing as i32);
    c.repository_model_load(RepositoryModelLoadRequest { model_name: "mlp".into(), ..Default::default() })
        .await
        .expect("load");
    assert_eq!(watch.message().await.expect("msg").expect("third").status, ServingStatus::Serving as i32);
}

#[tokio::test]
async fn metrics_and_readiness_over_http() {
    let server = TestServer::start(standard_repo).await;
    let mut c = server.client().await;
    c.model_infer(mlp_request(2, &input(2, 0.0))).await.expect("infer");
    let _ = c
        .model_infer({
            let mut r = mlp_request(1, &input(1, 0.0));
            r.inputs[0].datatype = "INT8".into();
            r
        })
        .await;
    let metrics = server.http_get("/metrics").await;
    assert!(
        metrics.contains(r#"meridian_inference_requests_total{model="mlp",status="OK",version="1"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meridian_inference_requests_total{model="mlp",status="INVALID_ARGUMENT",version=""} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"meridian_inference_batch_size_sum{model="mlp",version="1"} 2"#), "{metrics}");
    assert!(metrics.contains("meridian_inference_queue_duration_seconds_bucket"), "{metrics}");
    assert!(metrics.contains(r#"meridian_inference_pending_requests{model="mlp",version="1"} 0"#), "{metrics}");
    assert!(metrics.contains("meridian_model_load_duration_seconds"), "{metrics}");
    assert!(server.http_get("/readyz").await.starts_with("HTTP/1.1 200"));
    assert!(server.http_get("/healthz").await.starts_with("HTTP/1.1 200"));
}

//! The KServe v2 REST front against an in-process server: inference with
//! JSON and binary tensors, the status and error body of each refusal, and
//! Triton model repositories (config.pbtxt) whose settings take effect.

mod common;

use common::{f32s, reference, write_model, TestServer, DIMS, SEED};
use meridian_proto::inference::ModelConfigRequest;
use meridian_sidecar::limits::Limits;
use meridian_sidecar::models;
use serde_json::json;
use std::path::Path;

/// The test MLP as a Triton repository entry: config.pbtxt, no config.yaml.
fn triton_model(repo: &Path, name: &str, pbtxt: &str) {
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).expect("model dir");
    std::fs::write(dir.join("1/model.onnx"), models::mlp(&DIMS, SEED)).expect("model file");
    std::fs::write(dir.join("config.pbtxt"), pbtxt).expect("config");
}

fn input(rows: usize) -> Vec<f32> {
    (0..rows * DIMS[0]).map(|i| (i as f32 * 0.37).sin()).collect()
}

#[tokio::test]
async fn json_and_binary_inference_match_the_reference() {
    let server = TestServer::start(common::standard_repo).await;
    let x = input(3);
    let want = reference(&DIMS, SEED, &x);
    let body = json!({
        "id": "r1",
        "inputs": [{ "name": "input", "shape": [3, DIMS[0]], "datatype": "FP32", "data": x }],
    });
    let reply = server.rest("POST", "/v2/models/mlp/infer", &[], body.to_string().as_bytes()).await;
    assert_eq!(reply.status, 200, "{:?}", String::from_utf8_lossy(&reply.body));
    let out = reply.json();
    assert_eq!(
        (out["model_name"].as_str(), out["model_version"].as_str(), out["id"].as_str()),
        (Some("mlp"), Some("1"), Some("r1"))
    );
    assert_eq!(out["outputs"][0]["shape"], json!([3, DIMS[2]]));
    let got: Vec<f32> = out["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
    assert_eq!(reply.headers.get("x-meridian-model-version").map(String::as_str), Some("1"));

    // The binary extension, both ways, on the versioned route.
    let header = json!({
        "inputs": [{ "name": "input", "shape": [3, DIMS[0]], "datatype": "FP32", "parameters": { "binary_data_size": 4 * x.len() } }],
        "outputs": [{ "name": "output", "parameters": { "binary_data": true } }],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    let length = header.len().to_string();
    let reply = server
        .rest("POST", "/v2/models/mlp/versions/1/infer", &[("inference-header-content-length", &length)], &body)
        .await;
    assert_eq!(reply.status, 200, "{:?}", String::from_utf8_lossy(&reply.body));
    let n: usize = reply.headers["inference-header-content-length"].parse().expect("length");
    assert_eq!(reply.json()["outputs"][0]["parameters"]["binary_data_size"], 4 * want.len());
    for (g, w) in f32s(&reply.body[n..]).iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[tokio::test]
async fn refusals_have_the_grpc_codes_http_status_and_a_json_error() {
    let server = TestServer::start(|repo| {
        common::standard_repo(repo);
        write_model(
            repo,
            "limited",
            1,
            &models::mlp(&DIMS, SEED),
            "max_batch_size: 8\nrate_limit: {requests_per_second: 1, burst: 1}\n",
        );
    })
    .await;
    let one = || {
        json!({ "inputs": [{ "name": "input", "shape": [1, DIMS[0]], "datatype": "FP32", "data": input(1) }] })
            .to_string()
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/v2/models/nope/infer", one().into_bytes(), 404, "unknown model 'nope'"),
        ("POST", "/v2/models/mlp/versions/7/infer", one().into_bytes(), 404, "no version '7'"),
        ("POST", "/v2/models/mlp/infer", b"{\"inputs\": [".to_vec(), 400, "not a v2 inference request"),
        (
            "POST",
            "/v2/models/mlp/infer",
            json!({ "inputs": [{ "name": "input", "shape": [1, 15], "datatype": "FP32", "data": vec![0.0; 15] }] })
                .to_string()
                .into_bytes(),
            400,
            "input 'input': shape [1, 15]",
        ),
        (
            "POST",
            "/v2/models/mlp/infer",
            json!({ "inputs": [{ "name": "input", "shape": [1, DIMS[0]], "datatype": "FP32", "data": input(1),
                                 "parameters": { "binary_data_size": 64 } }] })
            .to_string()
            .into_bytes(),
            400,
            "both binary data (binary_data_size) and JSON data",
        ),
        ("GET", "/v2/models/mlp/infer", Vec::new(), 405, "method not allowed"),
        ("GET", "/v2/nothing/here", Vec::new(), 404, "no such endpoint"),
        ("GET", "/v2/models/%FF/ready", Vec::new(), 400, "bad path"),
        (
            "POST",
            "/v2/repository/models/mlp/load",
            br#"{"parameters": {"config": "{}"}}"#.to_vec(),
            400,
            "[\"config\"] are not supported",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let reply = server.rest(method, path, &[], &body).await;
        assert_eq!(reply.status, status, "{method} {path}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.headers.get("content-type").map(String::as_str), Some("application/json"), "{path}");
        assert!(reply.error().contains(needle), "{method} {path}: {}", reply.error());
    }
    let gzip = server.rest("POST", "/v2/models/mlp/infer", &[("content-encoding", "gzip")], b"x").await;
    assert_eq!((gzip.status, gzip.error().contains("Content-Encoding")), (415, true));

    // Rate limited: 429 with Retry-After, as gRPC's RESOURCE_EXHAUSTED.
    let limited = one();
    let first = server.rest("POST", "/v2/models/limited/infer", &[], limited.as_bytes()).await;
    assert_eq!(first.status, 200);
    let second = server.rest("POST", "/v2/models/limited/infer", &[], limited.as_bytes()).await;
    assert_eq!(second.status, 429, "{}", String::from_utf8_lossy(&second.body));
    assert!(second.error().contains("rate limit of model 'limited'"), "{}", second.error());
    let after: u64 = second.headers.get("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!(after >= 1, "{after}");
}

#[tokio::test]
async fn bodies_over_the_message_limit_are_413() {
    let limits = Limits { max_message_bytes: 4096, ..Limits::default() };
    let server = TestServer::start_limited(common::standard_repo, limits).await;
    let reply = server.rest("POST", "/v2/models/mlp/infer", &[], &vec![b' '; 8192]).await;
    assert_eq!(reply.status, 413);
    assert!(reply.error().contains("request body"), "{}", reply.error());
}

const TRITON_MLP: &str = r#"
name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4 ]
  max_queue_delay_microseconds: 30000000
  priority_levels: 2
  default_queue_policy { max_queue_size: 16 }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
optimization { graph { level: 1 } }
"#;

#[tokio::test]
async fn a_triton_repository_serves_with_its_batching_settings_in_effect() {
    let server = TestServer::start(|repo| triton_model(repo, "mlp", TRITON_MLP)).await;
    // The configuration Triton's clients read shows the pbtxt's settings.
    let config = server
        .client()
        .await
        .model_config(ModelConfigRequest { name: "mlp".into(), version: String::new() })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    let rest = server.rest("GET", "/v2/models/mlp/config", &[], b"").await.json();
    assert_eq!(rest["dynamic_batching"]["preferred_batch_size"], json!([4]));
    assert_eq!(rest["dynamic_batching"]["max_queue_delay_microseconds"], 30_000_000);
    assert_eq!(rest["dynamic_batching"]["priority_levels"], 2);
    assert_eq!(rest["dynamic_batching"]["default_queue_policy"]["max_queue_size"], 16);
    assert_eq!(rest["instance_group"][0]["count"], 2);
    assert_eq!(config.max_batch_size, 8);

    // They take effect: four one-row requests are held by the 30 s queue
    // delay until the preferred size, 4, is reached, then run as one batch
    // (each would fail at its 20 s timeout otherwise).
    let body = json!({
        "parameters": { "timeout": 20_000_000 },
        "inputs": [{ "name": "input", "shape": [1, DIMS[0]], "datatype": "FP32", "data": input(1) }],
    })
    .to_string();
    let call = || server.rest("POST", "/v2/models/mlp/infer", &[], body.as_bytes());
    let (a, b, c, d) = tokio::join!(call(), call(), call(), call());
    for reply in [a, b, c, d] {
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.headers.get("x-meridian-batch-size").map(String::as_str), Some("4"));
    }
    let all = server.rest("GET", "/v2/models/stats", &[], b"").await.json();
    assert_eq!(all["model_stats"][0]["name"], "mlp", "{all}");
    let stats = server.rest("GET", "/v2/models/mlp/stats", &[], b"").await.json();
    assert_eq!(
        stats["model_stats"][0]["batch_stats"],
        json!([{
            "batch_size": 4,
            "compute_infer": stats["model_stats"][0]["batch_stats"][0]["compute_infer"],
            "compute_input": { "count": 1, "ns": 0 },
            "compute_output": { "count": 1, "ns": 0 },
        }])
    );
}

#[tokio::test]
async fn a_pbtxt_the_model_contradicts_fails_its_load_naming_the_file_and_key() {
    let server = TestServer::start(|repo| {
        triton_model(
            repo,
            "wrong_dims",
            &TRITON_MLP.replace("name: \"mlp\"\n", "").replace("dims: [ 16 ]", "dims: [ 15 ]"),
        );
        triton_model(repo, "sequence", "max_batch_size: 8\nsequence_batching { }\n");
        triton_model(repo, "typo", "max_batch_size: 8\ninput [ { name: \"input\" data_typ: TYPE_FP32 } ]\n");
        write_model(repo, "both", 1, &models::mlp(&DIMS, SEED), "max_batch_size: 8\n");
        std::fs::write(repo.join("both/config.pbtxt"), "max_batch_size: 8\n").expect("pbtxt");
    })
    .await;
    let index = server.rest("POST", "/v2/repository/index", &[], b"").await.json();
    let reason = |name: &str| -> String {
        let entry = index.as_array().expect("list").iter().find(|m| m["name"] == name).expect(name);
        assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
        entry["reason"].as_str().expect("reason").to_string()
    };
    let wrong = reason("wrong_dims");
    assert!(wrong.contains("wrong_dims/config.pbtxt") && wrong.contains("input 'input': dims [15]"), "{wrong}");
    assert!(reason("sequence").contains("sequence_batching: stateful sequence batching is not supported"));
    let typo = reason("typo");
    assert!(typo.contains("config.pbtxt: line 2, column") && typo.contains("data_typ"), "{typo}");
    assert!(reason("both").contains("keep one configuration per model"));
}

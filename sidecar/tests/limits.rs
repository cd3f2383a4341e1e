//! What one client can make the server hold: message size, queued bytes,
//! header size, streams per connection, and slow clients (no preface, a
//! body that never ends). Each limit answers with a clear status, and the
//! server keeps serving everyone else.

mod common;

use common::*;
use meridian_sidecar::limits::Limits;
use meridian_sidecar::models;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

fn limits() -> Limits {
    Limits {
        max_message_bytes: 4096,
        max_header_list_bytes: 8192,
        max_concurrent_streams: 2,
        request_timeout: Duration::from_millis(800),
        preface_timeout: Duration::from_millis(300),
        ..Limits::default()
    }
}

/// `mlp` whose batches take at least `delay_ms` (one instance, at most 4
/// rows per batch) with the queue limits in `queue`.
fn slow_repo(delay_ms: u64, queue: &'static str) -> impl FnOnce(&std::path::Path) {
    move |repo| {
        write_model(
            repo,
            "mlp",
            1,
            &models::mlp(&DIMS, SEED),
            &format!(
                "max_batch_size: 4\ndynamic_batching:\n  max_queue_delay_us: 0\n{queue}execute_delay_us: {}\n",
                delay_ms * 1000
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_resource_exhausted_before_its_body_is_read() {
    let server = TestServer::start_limited(standard_repo, limits()).await;
    let mut client = server.client().await;
    // 100 rows of 16 floats: 6,400 bytes of tensor, over 4,096.
    let big = mlp_request(100, &input(100, 0.5));
    let status = client.model_infer(big).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(
        status.message().contains("over this server's limit of 4096 bytes (--max-message-bytes)"),
        "{}",
        status.message()
    );
    // Within the limit, on the same connection, it serves.
    let small = client.model_infer(mlp_request(2, &input(2, 0.5))).await.expect("a small request");
    assert_eq!(small.get_ref().raw_output_contents.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_bytes_are_bounded_per_version() {
    // One row is 64 bytes; 150 bytes hold two waiting requests.
    let server =
        TestServer::start_limited(slow_repo(300, "  max_queue_bytes: 150\n  max_queue_size: 100\n"), Limits::default())
            .await;
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut client = server.client().await;
        calls.push(tokio::spawn(async move { client.model_infer(mlp_request(1, &input(1, i as f32))).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for c in calls {
        match c.await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
                assert!(status.message().contains("max_queue_bytes (150)"), "{}", status.message());
                assert!(status.metadata().get("grpc-retry-pushback-ms").is_some(), "room comes back: retry later");
                refused += 1;
            }
        }
    }
    // Two fit in the queue (128 bytes; one more may already be running);
    // a third waiting one would make 192.
    assert!(refused >= 1 && ok >= 2, "ok {ok}, refused {refused}");
    // A request bigger than the whole bound can never wait: no pushback.
    let mut client = server.client().await;
    let status = client.model_infer(mlp_request(3, &input(3, 0.0))).await.expect_err("192 bytes alone");
    assert_eq!(status.code(), Code::ResourceExhausted, "{}", status.message());
    assert!(status.message().contains("this request's 192 would pass max_queue_bytes (150)"), "{}", status.message());
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none(), "retrying cannot help");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_refused_and_the_server_goes_on() {
    let server = TestServer::start_limited(standard_repo, limits()).await;
    let mut client = server.client().await;
    let mut request = tonic::Request::new(mlp_request(1, &input(1, 0.0)));
    request.metadata_mut().insert("x-padding", "a".repeat(16 * 1024).parse().expect("ascii"));
    let status = client.model_infer(request).await.expect_err("16 KiB of headers over 8 KiB");
    assert_ne!(status.code(), Code::Ok);
    let mut fresh = server.client().await;
    fresh.model_infer(mlp_request(1, &input(1, 0.0))).await.expect("serves others");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_are_bounded() {
    let server = TestServer::start_limited(slow_repo(100, "  max_queue_size: 100\n"), limits()).await;
    let client = server.client().await; // one connection
                                        // The first call brings the server's SETTINGS, so the client knows the
                                        // bound (a stream opened before them would be refused: REFUSED_STREAM).
    client.clone().model_infer(mlp_request(1, &input(1, 9.0))).await.expect("first call");
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move { c.model_infer(mlp_request(1, &input(1, i as f32))).await }));
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        most = most.max(server.pending("mlp").await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in calls {
        c.await.expect("task").expect("every call runs, two at a time");
    }
    assert!((1..=2).contains(&most), "at most two calls of one connection in the server at once, saw {most}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_server() {
    let server = TestServer::start_limited(slow_repo(0, ""), limits()).await;
    let addr = server.bound.grpc;
    // Slowloris: 50 connections that send part of the preface, then nothing.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("write");
        slow.push(s);
    }
    // Everyone else is served meanwhile.
    let mut client = server.client().await;
    client.model_infer(mlp_request(1, &input(1, 0.0))).await.expect("served beside 50 slow connections");
    // Each slow connection is closed once the preface timeout passes.
    let started = Instant::now();
    for mut s in slow {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed within 5 s");
        assert!(matches!(read, Ok(0) | Err(_)), "the server closed it: {read:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // A call whose body never ends is cut at the request timeout.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request =
        tonic::codegen::http::Request::post(format!("http://{addr}/inference.GRPCInferenceService/ModelInfer"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
    let sent = Instant::now();
    let (response, mut body) = h2.send_request(request, false).expect("sent");
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100]), false).expect("5 of 105 bytes");
    let response = tokio::time::timeout(Duration::from_secs(5), response).await.expect("answered").expect("response");
    // Trailers-only (the status in the headers) or trailers after a body.
    let in_headers = response.headers().get("grpc-status").map(|v| v.to_str().unwrap_or_default().to_string());
    let mut stream = response.into_body();
    while let Some(chunk) = stream.data().await {
        let _ = chunk;
    }
    let trailers = stream.trailers().await.ok().flatten().unwrap_or_default();
    let status = in_headers.or_else(|| trailers.get("grpc-status").map(|v| v.to_str().unwrap_or_default().to_string()));
    assert!(status.is_some(), "a gRPC status came back");
    assert!(sent.elapsed() < Duration::from_secs(5), "cut at the request timeout, not held");
    assert!(status.as_deref() != Some("0"), "never OK: {status:?}");
    // And the server still serves.
    client.model_infer(mlp_request(1, &input(1, 0.0))).await.expect("still serving");
}

//! An in-process sidecar on 127.0.0.1 port 0 over a temporary repository of
//! the project's seeded models, stopped when the handle drops.

#![allow(dead_code, unreachable_pub)]

use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::{InferTensorContents, ModelInferRequest};
use meridian_sidecar::executor::device::DeviceChoice;
use meridian_sidecar::limits::Limits;
use meridian_sidecar::models;
use meridian_sidecar::server::{self, Bound, ServerConfig, TlsConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The test MLP's widths: small, so debug builds stay quick.
pub const DIMS: [usize; 3] = [16, 32, 4];
pub const SEED: u64 = 7;

pub struct TestServer {
    pub bound: Bound,
    pub dir: tempfile::TempDir,
    /// How `client()` connects when the server runs TLS.
    pub client_tls: Option<ClientTlsConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), server::ServerError>>>,
}

/// Writes `<repo>/<name>/<version>/model.onnx` and `<repo>/<name>/config.yaml`.
pub fn write_model(repo: &Path, name: &str, version: u64, onnx: &[u8], config: &str) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).expect("model dir");
    std::fs::write(dir.join("model.onnx"), onnx).expect("model file");
    std::fs::write(repo.join(name).join("config.yaml"), config).expect("config");
}

/// The standard test repository: `mlp` (batching, max 8) and `echo_types`.
pub fn standard_repo(repo: &Path) {
    write_model(
        repo,
        "mlp",
        1,
        &models::mlp(&DIMS, SEED),
        "max_batch_size: 8\ndynamic_batching:\n  max_queue_delay_us: 200\n  priority_levels: 2\n",
    );
    write_model(repo, "echo_types", 1, &models::echo_types(4), "max_batch_size: 8\n");
}

impl TestServer {
    pub async fn start(fill: impl FnOnce(&Path)) -> Self {
        Self::start_with(fill, None).await
    }

    pub async fn start_with(fill: impl FnOnce(&Path), poll: Option<Duration>) -> Self {
        Self::start_on(fill, poll, DeviceChoice::Cpu).await
    }

    pub async fn start_on(fill: impl FnOnce(&Path), poll: Option<Duration>, device: DeviceChoice) -> Self {
        Self::start_full(fill, poll, device, None, None, Limits::default()).await
    }

    /// A server with other limits.
    pub async fn start_limited(fill: impl FnOnce(&Path), limits: Limits) -> Self {
        Self::start_full(fill, None, DeviceChoice::Cpu, None, None, limits).await
    }

    /// A server with TLS; `client()` connects with `client_tls`.
    pub async fn start_tls(fill: impl FnOnce(&Path), tls: TlsConfig, client_tls: ClientTlsConfig) -> Self {
        Self::start_full(fill, None, DeviceChoice::Cpu, Some(tls), Some(client_tls), Limits::default()).await
    }

    async fn start_full(
        fill: impl FnOnce(&Path),
        poll: Option<Duration>,
        device: DeviceChoice,
        tls: Option<TlsConfig>,
        client_tls: Option<ClientTlsConfig>,
        limits: Limits,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path());
        let config = ServerConfig {
            model_repository: dir.path().to_path_buf(),
            grpc_listen: "127.0.0.1:0".parse().expect("addr"),
            metrics_listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            device,
            poll_interval: poll,
            drain_grace: Duration::from_secs(5),
            caller_header: "x-meridian-caller".into(),
            tls,
            limits,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server::run(
            config,
            async {
                let _ = stopped.await;
            },
            move |b| {
                let _ = bound_tx.send(b);
            },
        ));
        let bound = bound_rx.await.expect("server bound");
        let server = TestServer { bound, dir, client_tls, stop: Some(stop), task: Some(task) };
        server.wait_loaded().await;
        server
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub async fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        match &self.client_tls {
            None => GrpcInferenceServiceClient::connect(format!("http://{}", self.bound.grpc)).await.expect("connect"),
            Some(tls) => GrpcInferenceServiceClient::new(
                Endpoint::from_shared(format!("https://{}", self.bound.grpc))
                    .expect("endpoint")
                    .tls_config(tls.clone())
                    .expect("tls config")
                    .connect()
                    .await
                    .expect("connect with TLS"),
            ),
        }
    }

    /// Waits until no model is LOADING (ready or failed).
    pub async fn wait_loaded(&self) {
        let mut client = self.client().await;
        for _ in 0..2000 {
            let index = client
                .repository_index(meridian_proto::inference::RepositoryIndexRequest::default())
                .await
                .expect("index")
                .into_inner();
            let dirs = std::fs::read_dir(self.dir.path()).expect("repo").count();
            if index.models.iter().all(|m| m.state != "LOADING" && m.reason != "not loaded")
                && index.models.iter().map(|m| &m.name).collect::<std::collections::BTreeSet<_>>().len() == dirs
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("models did not finish loading");
    }

    /// GET `path` on the metrics listener; the whole response as text.
    pub async fn http_get(&self, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.bound.metrics).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    /// One HTTP/1.1 request to the REST listener: the status, the headers
    /// (names lower-case) and the body.
    pub async fn rest(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.bound.http).await.expect("connect");
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(body).await.expect("write body");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let mut lines = head.lines();
        let status =
            lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply { status, headers, body: out[split + 4..].to_vec() }
    }

    /// Requests queued or running for `model` version 1, from /metrics.
    pub async fn pending(&self, model: &str) -> i64 {
        let metrics = self.http_get("/metrics").await;
        let key = format!("meridian_inference_pending_requests{{model=\"{model}\",version=\"1\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server ran");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A REST reply.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (the JSON part of a binary reply).
    pub fn json(&self) -> serde_json::Value {
        let end =
            self.headers.get("inference-header-content-length").and_then(|n| n.parse().ok()).unwrap_or(self.body.len());
        serde_json::from_slice(&self.body[..end])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error in {:?}", self.json())).to_string()
    }
}

/// A raw FP32 request for `mlp`.
pub fn mlp_request(rows: usize, values: &[f32]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, DIMS[0] as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    }
}

/// The same request with typed contents.
pub fn mlp_request_typed(rows: usize, values: &[f32]) -> ModelInferRequest {
    let mut r = mlp_request(rows, values);
    r.raw_input_contents.clear();
    r.inputs[0].contents = Some(InferTensorContents { fp32_contents: values.to_vec(), ..Default::default() });
    r
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The MLP's output computed independently of tract: plain loops over the
/// seeded weights (Gemm + ReLU, softmax at the end).
pub fn reference(dims: &[usize], seed: u64, input: &[f32]) -> Vec<f32> {
    let rows = input.len() / dims[0];
    let mut x = input.to_vec();
    let layers = dims.len() - 1;
    for k in 0..layers {
        let (fan_in, fan_out) = (dims[k], dims[k + 1]);
        let scale = 1.0 / (fan_in as f32).sqrt();
        let w = models::weights(seed, 2 * k as u64, fan_in * fan_out, scale);
        let b = models::weights(seed, 2 * k as u64 + 1, fan_out, scale);
        let mut y = vec![0f32; rows * fan_out];
        for r in 0..rows {
            for o in 0..fan_out {
                let mut acc = b[o];
                for i in 0..fan_in {
                    acc += x[r * fan_in + i] * w[i * fan_out + o];
                }
                y[r * fan_out + o] = if k + 1 < layers { acc.max(0.0) } else { acc };
            }
        }
        x = y;
    }
    let width = dims[layers];
    for row in x.chunks_mut(width) {
        let max = row.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        for v in row.iter_mut() {
            *v = (*v - max).exp() / sum;
        }
    }
    x
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5, "element {i}: got {g}, want {w}");
    }
}

pub fn input(rows: usize, salt: f32) -> Vec<f32> {
    (0..rows * DIMS[0]).map(|i| (i as f32 * 0.37 + salt).sin()).collect()
}

//! Callers for the mesh: closed-loop gRPC ModelInfer load through the
//! caller-side Envoy, recording what happened to every call.

use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::{InferTensorContents, ModelInferRequest};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Who is calling, and how.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The model called (the request body's `model_name`, and
    /// `x-meridian-model` unless `policy_model` says otherwise).
    pub model: String,
    /// `x-meridian-model` when it differs from `model` (the filter's policy
    /// key for the call).
    pub policy_model: Option<String>,
    /// Input width of the model (`[1, width]` FP32).
    pub width: usize,
    /// `x-meridian-caller`.
    pub caller: Option<String>,
    /// `x-meridian-residency`.
    pub residency: Option<String>,
    /// `x-meridian-caller-region` (honoured where the filter trusts it).
    pub caller_region: Option<String>,
    /// The call's deadline (sent as `grpc-timeout`).
    pub timeout: Duration,
    /// More request metadata (a canary's sticky header, `x-meridian-version`).
    pub headers: Vec<(String, String)>,
}

impl CallSpec {
    /// Calls `model` of input width `width` with a 5 s deadline.
    pub fn new(model: &str, width: usize) -> Self {
        Self {
            model: model.into(),
            policy_model: None,
            width,
            caller: None,
            residency: None,
            caller_region: None,
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
        }
    }
}

/// One finished call.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was sent.
    pub sent: Instant,
    /// How long it took.
    pub latency: Duration,
    /// The gRPC status code (0: OK).
    pub code: i32,
    /// The status message, on failure.
    pub message: String,
    /// `x-meridian-region`: who served it.
    pub region: Option<String>,
    /// `x-meridian-reason`, on a mesh refusal.
    pub reason: Option<String>,
    /// The primary region of `x-meridian-decision`.
    pub primary: Option<String>,
    /// `x-meridian-filter`: the filter instance that handled it.
    pub filter: Option<String>,
    /// `x-meridian-model-version`: the model version that answered.
    pub model_version: Option<String>,
    /// The version the filter chose (`version=` of `x-meridian-decision`),
    /// failed calls included.
    pub chosen_version: Option<String>,
    /// `x-meridian-decision` as sent (with `filter.decisionHeader`).
    pub decision: Option<String>,
}

/// Connects one caller (one HTTP/2 connection).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<GrpcInferenceServiceClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    Ok(GrpcInferenceServiceClient::new(channel))
}

/// Makes one call.
pub async fn call(client: &mut GrpcInferenceServiceClient<Channel>, spec: &CallSpec, seed: u32) -> Record {
    let values: Vec<f32> = (0..spec.width).map(|i| ((seed as usize + i) % 17) as f32 / 17.0).collect();
    let mut request = tonic::Request::new(ModelInferRequest {
        model_name: spec.model.clone(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, spec.width as i64],
            contents: Some(InferTensorContents { fp32_contents: values, ..Default::default() }),
            ..Default::default()
        }],
        ..Default::default()
    });
    request.set_timeout(spec.timeout);
    let meta = request.metadata_mut();
    let mut insert = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            meta.insert(name, v);
        }
    };
    insert(headers::MODEL, spec.policy_model.as_deref().unwrap_or(&spec.model));
    if let Some(c) = &spec.caller {
        insert(headers::CALLER, c);
    }
    if let Some(r) = &spec.residency {
        insert(headers::RESIDENCY, r);
    }
    if let Some(r) = &spec.caller_region {
        insert(headers::CALLER_REGION, r);
    }
    for (name, value) in &spec.headers {
        if let (Ok(k), Ok(v)) = (name.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), value.parse()) {
            meta.insert(k, v);
        }
    }
    let sent = Instant::now();
    let result = client.model_infer(request).await;
    let latency = sent.elapsed();
    let text = |m: &tonic::metadata::MetadataMap, k: &str| m.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    match result {
        Ok(response) => {
            let m = response.metadata();
            let primary = text(m, headers::DECISION).and_then(|d| primary_of(&d));
            Record {
                sent,
                latency,
                code: 0,
                message: String::new(),
                region: text(m, headers::REGION),
                reason: None,
                primary,
                filter: text(m, headers::FILTER),
                model_version: text(m, headers::MODEL_VERSION),
                chosen_version: text(m, headers::DECISION).and_then(|d| version_of(&d)),
                decision: text(m, headers::DECISION),
            }
        }
        Err(status) => {
            let m = status.metadata();
            Record {
                sent,
                latency,
                code: status.code() as i32,
                message: status.message().to_string(),
                region: text(m, headers::REGION),
                reason: text(m, headers::REASON),
                primary: text(m, headers::DECISION).and_then(|d| primary_of(&d)),
                filter: text(m, headers::FILTER),
                model_version: text(m, headers::MODEL_VERSION),
                chosen_version: text(m, headers::DECISION).and_then(|d| version_of(&d)),
                decision: text(m, headers::DECISION),
            }
        }
    }
}

fn version_of(decision: &str) -> Option<String> {
    decision.split(';').find_map(|kv| kv.strip_prefix("version=")).filter(|v| *v != "-").map(str::to_string)
}

fn primary_of(decision: &str) -> Option<String> {
    let regions = decision.split(';').find_map(|kv| kv.strip_prefix("regions="))?;
    regions.split(',').next().map(str::to_string)
}

/// Closed-loop load in the background: `concurrency` callers, each sending
/// its next call when the last one finished (plus `pause`).
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the callers against `addr` (one HTTP/2 connection each).
    pub async fn start(addr: SocketAddr, spec: CallSpec, concurrency: usize, pause: Duration) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for caller in 0..concurrency {
            let mut client = connect(addr).await?;
            let (stop, records, spec) = (stop.clone(), records.clone(), spec.clone());
            tasks.push(tokio::spawn(async move {
                let mut seed = caller as u32 * 1_000_003;
                while !stop.load(Ordering::Relaxed) {
                    let record = call(&mut client, &spec, seed).await;
                    seed = seed.wrapping_add(1);
                    if let Ok(mut r) = records.lock() {
                        r.push(record);
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }));
        }
        Ok(Self { stop, records, tasks })
    }

    /// The calls finished so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many calls finished so far.
    pub fn count(&self) -> usize {
        self.records.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Stops the callers, waits for their last calls, returns every record.
    pub async fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.records.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }
}

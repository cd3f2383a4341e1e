//! `inference.GRPCInferenceService`.

use super::convert::{self, model_shape};
use super::status::{code_name, InferError};
use super::ServerState;
use crate::batcher::{Rejected, SubmitError, TraceLink};
use crate::grpc::Caller;
use crate::repository::model_config::VersionPolicy;
use crate::repository::{LoadedVersion, Model, ModelState};
use crate::telemetry::{CallSpan, Incoming, Served};
use crate::tensor::DataType;
use crate::tls::PeerIdentity;
use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use meridian_proto::inference::{self as pb, infer_parameter::ParameterChoice, model_version_policy};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// The Triton platform name of an ONNX model.
const PLATFORM: &str = "onnxruntime_onnx";

/// The v2 service over the shared server state.
#[derive(Debug, Clone)]
pub struct InferenceService {
    state: Arc<ServerState>,
}

impl InferenceService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

/// What a served request reports in-band, besides its outputs.
#[derive(Debug, Clone, Copy)]
struct LoadSignals {
    depth: usize,
    queue_time: Duration,
    batch_rows: usize,
    version: u64,
    instance: usize,
    batch_started: Instant,
    compute_time: Duration,
}

impl LoadSignals {
    fn write(&self, md: &mut MetadataMap) {
        let mut put = |k: &'static str, v: u64| {
            let mut value = MetadataValue::from(v);
            // They change with every reply: HPACK gains nothing from
            // indexing them, and skipping the table saves a search per
            // header (h2 writes sensitive values as never-indexed literals).
            value.set_sensitive(true);
            md.insert(k, value);
        };
        put(headers::QUEUE_DEPTH, self.depth as u64);
        put(headers::QUEUE_TIME_US, u64::try_from(self.queue_time.as_micros()).unwrap_or(u64::MAX));
        put(headers::BATCH_SIZE, self.batch_rows as u64);
        put(headers::MODEL_VERSION, self.version);
        put(headers::INSTANCE, self.instance as u64);
    }
}

type InferStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.state.is_ready() }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let req = req.into_inner();
        let ready = self
            .state
            .repo
            .model(&req.name)
            .is_some_and(|m| m.state == ModelState::Ready && m.version(&req.version).is_some());
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "meridian-sidecar".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: ["model_configuration", "model_repository", "statistics", "schedule_policy"]
                .map(String::from)
                .to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let req = req.into_inner();
        let (model, version) = resolve(&self.state, &req.name, &req.version)?;
        let max = version.config.max_batch_size;
        let meta = |specs: &[crate::executor::TensorSpec]| {
            specs
                .iter()
                .map(|s| pb::model_metadata_response::TensorMetadata {
                    name: s.name.clone(),
                    datatype: s.dtype.as_v2().into(),
                    shape: model_shape(s, max),
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: model.name.clone(),
            versions: model.versions.keys().map(u64::to_string).collect(),
            platform: PLATFORM.into(),
            inputs: meta(&version.signature.inputs),
            outputs: meta(&version.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (metadata, extensions, req) = req.into_parts();
        let arrived = extensions.get::<Arrival>().map(|a| a.0).unwrap_or_else(Instant::now);
        let caller = self.state.caller(extensions.get::<PeerIdentity>(), &metadata);
        let (resp, signals) = infer(&self.state, req, &metadata, &caller, Some(arrived)).await?;
        let mut response = Response::new(resp);
        signals.write(response.metadata_mut());
        Ok(response)
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let (metadata, extensions, mut incoming) = req.into_parts();
        let caller = Arc::new(self.state.caller(extensions.get::<PeerIdentity>(), &metadata));
        let metadata = Arc::new(metadata);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Some(next) = incoming.next().await {
                let Ok(request) = next else { break };
                let (state, metadata, caller, tx) = (state.clone(), metadata.clone(), caller.clone(), tx.clone());
                // Requests of one stream run concurrently (so they can share
                // batches); responses carry the request id.
                tokio::spawn(async move {
                    let id = request.id.clone();
                    // The stream's grpc-timeout bounds the whole stream (the
                    // transport enforces it); each request has its own
                    // `timeout` parameter and the model's default.
                    let message = match infer(&state, request, &metadata, &caller, None).await {
                        Ok((resp, _)) => {
                            pb::ModelStreamInferResponse { error_message: String::new(), infer_response: Some(resp) }
                        }
                        Err(status) => pb::ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: Some(pb::ModelInferResponse { id, ..Default::default() }),
                        },
                    };
                    let _ = tx.send(Ok(message)).await;
                });
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let req = req.into_inner();
        let (model, version) = resolve(&self.state, &req.name, &req.version)?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(model_config(&model, &version)) }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let req = req.into_inner();
        let models = if req.name.is_empty() {
            self.state.repo.models()
        } else {
            vec![self.state.repo.model(&req.name).ok_or_else(|| InferError::ModelNotFound(req.name.clone()))?]
        };
        let mut model_stats = Vec::new();
        for model in models {
            for (number, version) in &model.versions {
                if !req.version.is_empty() && req.version != number.to_string() {
                    continue;
                }
                model_stats.push(statistics(&model.name, version));
            }
        }
        if !req.name.is_empty() && !req.version.is_empty() && model_stats.is_empty() {
            return Err(InferError::VersionNotFound {
                model: req.name,
                version: req.version,
                loaded: "see ModelMetadata".into(),
            }
            .into());
        }
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let req = req.into_inner();
        let known = self.state.repo.models();
        let mut models = Vec::new();
        for m in &known {
            if m.versions.is_empty() || m.state != ModelState::Ready {
                let reason = match &m.state {
                    ModelState::Unavailable(r) => r.clone(),
                    _ => String::new(),
                };
                models.push(pb::repository_index_response::ModelIndex {
                    name: m.name.clone(),
                    version: String::new(),
                    state: m.state.name().into(),
                    reason,
                });
            } else {
                for v in m.versions.keys() {
                    models.push(pb::repository_index_response::ModelIndex {
                        name: m.name.clone(),
                        version: v.to_string(),
                        state: "READY".into(),
                        reason: String::new(),
                    });
                }
            }
        }
        for name in self.state.repo.model_dirs().unwrap_or_default() {
            if !known.iter().any(|m| m.name == name) {
                models.push(pb::repository_index_response::ModelIndex {
                    name,
                    version: String::new(),
                    state: "UNAVAILABLE".into(),
                    reason: "not loaded".into(),
                });
            }
        }
        if req.ready {
            models.retain(|m| m.state == "READY");
        }
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let name = req.into_inner().model_name;
        if !self.state.repo.root().join(&name).is_dir()
            || name.contains('/')
            || name.starts_with('.')
            || name.is_empty()
        {
            return Err(InferError::ModelNotFound(name).into());
        }
        self.state
            .repo
            .load(&name)
            .await
            .map_err(|reason| Status::invalid_argument(format!("failed to load model '{name}': {reason}")))?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let name = req.into_inner().model_name;
        self.state.repo.unload(&name).await.map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// The model and version a request names, if ready.
fn resolve(state: &ServerState, name: &str, version: &str) -> Result<(Arc<Model>, Arc<LoadedVersion>), InferError> {
    let model = state.repo.model(name).ok_or_else(|| InferError::ModelNotFound(name.to_string()))?;
    if model.state != ModelState::Ready {
        let reason = match &model.state {
            ModelState::Unavailable(r) => format!("UNAVAILABLE: {r}"),
            other => other.name().to_string(),
        };
        return Err(InferError::NotReady { model: name.to_string(), reason });
    }
    let loaded = model.version(version).cloned().ok_or_else(|| InferError::VersionNotFound {
        model: name.to_string(),
        version: version.to_string(),
        loaded: model.versions.keys().map(u64::to_string).collect::<Vec<_>>().join(", "),
    })?;
    Ok((model, loaded))
}

/// When a unary call reached the service, before its body was decoded; set
/// by [`stamp_arrival`] so deadlines count from the same instant as the
/// transport's own `grpc-timeout` timer.
#[derive(Debug, Clone, Copy)]
pub struct Arrival(Instant);

/// A tonic interceptor that records [`Arrival`].
pub fn stamp_arrival(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.extensions_mut().insert(Arrival(Instant::now()));
    Ok(req)
}

/// Runs one inference end to end; shared by ModelInfer and ModelStreamInfer.
/// `arrived` is set for unary calls, whose `grpc-timeout` then applies.
async fn infer(
    state: &Arc<ServerState>,
    req: pb::ModelInferRequest,
    metadata: &MetadataMap,
    caller: &Caller,
    arrived: Option<Instant>,
) -> Result<(pb::ModelInferResponse, LoadSignals), Status> {
    let model_name = req.model_name.clone();
    let (trace_id, parent_id) = traceparent(metadata);
    let span = tracing::debug_span!("infer", model = %model_name, version = %req.model_version, id = %req.id, trace_id, parent_id);
    let _in_flight = state.track();
    let mut call_span = call_span(metadata, caller, &model_name, arrived);
    let link = call_span.as_ref().map(CallSpan::link);
    let result = infer_inner(state, req, metadata, caller, arrived, link).instrument(span).await;
    // A served call was counted by its version (infer_inner).
    if let Err(e) = &result {
        state.metrics.request(&model_name, "", code_name(e.code()));
    }
    match (call_span.take(), &result) {
        (Some(mut span), Ok((_, s))) => {
            span.set("meridian.model_version", s.version.to_string());
            span.set("meridian.queue_depth", s.depth as i64);
            span.served(&Served {
                batch_started: s.batch_started,
                queue_time: s.queue_time,
                compute_time: s.compute_time,
                batch_rows: s.batch_rows,
                instance: s.instance,
            });
        }
        (Some(span), Err(e)) => span.failed(e.code() as i32, &e.to_string()),
        (None, _) => {}
    }
    result.map_err(Status::from)
}

/// The call's trace span (when tracing is on and the call sampled), with
/// what the mesh said about it: the model, the caller's verified identity,
/// the filter's decision.
fn call_span(metadata: &MetadataMap, caller: &Caller, model: &str, arrived: Option<Instant>) -> Option<CallSpan> {
    // Off (the usual case): no header lookups on the request path.
    if !crate::telemetry::enabled() {
        return None;
    }
    let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    let incoming = Incoming { traceparent: header("traceparent"), tracestate: header("tracestate") };
    let method = if arrived.is_some() { "ModelInfer" } else { "ModelStreamInfer" };
    let mut span = CallSpan::start(method, incoming, arrived.unwrap_or_else(Instant::now))?;
    span.set("meridian.model", model.to_string());
    if let Some(identity) = &caller.identity {
        span.set("meridian.caller", identity.clone());
    }
    if let Some(decision) = header(headers::DECISION) {
        span.set("meridian.decision", decision.to_string());
    }
    Some(span)
}

async fn infer_inner(
    state: &Arc<ServerState>,
    mut req: pb::ModelInferRequest,
    metadata: &MetadataMap,
    caller: &Caller,
    unary_arrival: Option<Instant>,
    link: Option<TraceLink>,
) -> Result<(pb::ModelInferResponse, LoadSignals), InferError> {
    if state.is_draining() {
        return Err(InferError::Draining);
    }
    let arrived = unary_arrival.unwrap_or_else(Instant::now);
    let (model, mut version) = resolve(state, &req.model_name, &req.model_version)?;
    if let Some(allowed) = model.config.as_ref().and_then(|c| c.allowed_identities.as_ref()) {
        let admitted = caller.identity.as_deref().is_some_and(|id| allowed.iter().any(|p| p.matches(id)));
        if !admitted {
            return Err(InferError::PermissionDenied { model: model.name.clone(), identity: caller.identity.clone() });
        }
    }
    if let Some(limits) = &model.limits {
        limits.check(caller.limit_key.as_deref()).map_err(|l| InferError::RateLimited {
            model: model.name.clone(),
            scope: l.scope,
            retry_after: l.retry_after,
        })?;
    }
    let config = version.config.clone();
    let decoded = convert::decode(&mut req, &version.signature, config.max_batch_size)?;
    let batching = config.dynamic_batching.as_ref();
    let levels = batching.map(|d| d.priority_levels as usize).unwrap_or(1);
    let default_level = batching.map(|d| d.default_priority_level as usize).unwrap_or(0);
    let level = priority_level(&req, levels, default_level)?;
    let grpc_timeout = if unary_arrival.is_some() { metadata.get("grpc-timeout") } else { None };
    let deadline = deadline(&req, grpc_timeout, arrived, batching.map(|d| d.default_timeout_us).unwrap_or(0))?;

    // A reload may retire the version between resolve and submit: then the
    // request goes to the version that replaced it.
    let mut inputs = decoded.inputs;
    let submitted = loop {
        match version.submit(inputs, level, deadline, link) {
            Ok(s) => break s,
            Err(Rejected { error: SubmitError::ShuttingDown, inputs: back }) => {
                let (_, newer) = resolve(state, &req.model_name, &req.model_version)?;
                if Arc::ptr_eq(&newer, &version) {
                    return Err(InferError::NotReady {
                        model: model.name.clone(),
                        reason: "the version is shutting down".into(),
                    });
                }
                version = newer;
                inputs = back;
            }
            Err(Rejected { error, .. }) => {
                return Err(InferError::Overloaded {
                    model: model.name.clone(),
                    version: version.version,
                    source: error,
                })
            }
        }
    };
    let depth = submitted.depth;
    let reply = match deadline {
        Some(d) => {
            tokio::time::timeout_at(d.into(), submitted.reply).await.map_err(|_| InferError::DeadlineExceeded {
                model: model.name.clone(),
                message: format!("deadline exceeded after {} ms", arrived.elapsed().as_millis()),
            })?
        }
        None => submitted.reply.await,
    };
    let output = reply
        .map_err(|_| InferError::Internal {
            model: model.name.clone(),
            version: version.version,
            message: "the worker went away".into(),
        })?
        .map_err(|e| InferError::from_job(&model.name, version.version, e))?;
    version.count_served();
    let signals = LoadSignals {
        depth,
        queue_time: output.queue_time,
        batch_rows: output.batch_rows,
        version: version.version,
        instance: output.instance,
        batch_started: output.batch_started,
        compute_time: output.compute_time,
    };
    let (outputs, raw_output_contents) =
        convert::encode(output.outputs, &version.signature, &decoded.outputs, decoded.raw);
    Ok((
        pb::ModelInferResponse {
            model_name: model.name.clone(),
            model_version: version.version.to_string(),
            id: req.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents,
        },
        signals,
    ))
}

fn int_param(req: &pb::ModelInferRequest, key: &str) -> Result<Option<i64>, InferError> {
    match req.parameters.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) => Ok(Some(*v)),
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(i64::try_from(*v).unwrap_or(i64::MAX))),
        Some(_) => Err(InferError::invalid(format!("parameter '{key}' must be an integer"))),
    }
}

/// `priority` parameter: 1 is the highest; 0 or absent is the model's
/// `default_priority_level` (0 there: the lowest level).
fn priority_level(req: &pb::ModelInferRequest, levels: usize, default_level: usize) -> Result<usize, InferError> {
    match int_param(req, "priority")? {
        None | Some(0) if default_level >= 1 && default_level <= levels => Ok(default_level - 1),
        None | Some(0) => Ok(levels - 1),
        Some(p) if p >= 1 && (p as usize) <= levels => Ok(p as usize - 1),
        Some(p) => Err(InferError::invalid(format!(
            "parameter 'priority' is {p}; this model has priority levels 1..={levels}"
        ))),
    }
}

/// The earliest of the caller's `grpc-timeout`, the `timeout` parameter
/// (microseconds) and the model's default timeout.
fn deadline(
    req: &pb::ModelInferRequest,
    grpc_timeout: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    arrived: Instant,
    default_us: u64,
) -> Result<Option<Instant>, InferError> {
    let mut timeouts = Vec::new();
    if let Some(v) = grpc_timeout {
        let text = v.to_str().unwrap_or_default();
        timeouts.push(
            parse_grpc_timeout(text).ok_or_else(|| InferError::invalid(format!("malformed grpc-timeout '{text}'")))?,
        );
    }
    match int_param(req, "timeout")? {
        Some(us) if us < 0 => return Err(InferError::invalid("parameter 'timeout' must not be negative")),
        Some(us) if us > 0 => timeouts.push(Duration::from_micros(us as u64)),
        _ => {}
    }
    if default_us > 0 && timeouts.is_empty() {
        timeouts.push(Duration::from_micros(default_us));
    }
    // Answer a little before the caller's deadline: the transport runs its
    // own timer on `grpc-timeout` and would otherwise win the race with
    // CANCELLED instead of DEADLINE_EXCEEDED. The margin is 5 ms or a tenth
    // of the timeout (tokio's timers tick in milliseconds and a busy host
    // delays them), never more than half of it.
    Ok(timeouts.into_iter().min().map(|t| arrived + t - (t / 10).max(DEADLINE_MARGIN).min(t / 2)))
}

/// The least time before the caller's deadline the sidecar gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

/// Parses gRPC's `grpc-timeout` (`<digits><H|M|S|m|u|n>`).
pub fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The trace and parent span ids of a W3C `traceparent`, if well formed.
fn traceparent(metadata: &MetadataMap) -> (Option<String>, Option<String>) {
    let Some(value) = metadata.get("traceparent").and_then(|v| v.to_str().ok()) else { return (None, None) };
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match parts.as_slice() {
        [version, trace, parent, flags] if hex(version, 2) && hex(trace, 32) && hex(parent, 16) && hex(flags, 2) => {
            (Some(trace.to_string()), Some(parent.to_string()))
        }
        _ => (None, None),
    }
}

fn data_type(d: DataType) -> i32 {
    use pb::DataType as P;
    (match d {
        DataType::Bool => P::TypeBool,
        DataType::U8 => P::TypeUint8,
        DataType::U16 => P::TypeUint16,
        DataType::U32 => P::TypeUint32,
        DataType::U64 => P::TypeUint64,
        DataType::I8 => P::TypeInt8,
        DataType::I16 => P::TypeInt16,
        DataType::I32 => P::TypeInt32,
        DataType::I64 => P::TypeInt64,
        DataType::F16 => P::TypeFp16,
        DataType::Bf16 => P::TypeBf16,
        DataType::F32 => P::TypeFp32,
        DataType::F64 => P::TypeFp64,
        DataType::Bytes => P::TypeString,
    }) as i32
}

/// Triton's view of the model's configuration.
fn model_config(model: &Model, version: &LoadedVersion) -> pb::ModelConfig {
    let c = &version.config;
    let dims = |s: &crate::executor::TensorSpec| -> Vec<i64> {
        if c.max_batch_size > 0 {
            s.shape.get(1..).unwrap_or_default().to_vec()
        } else {
            s.shape.clone()
        }
    };
    let policy = match &c.version_policy {
        VersionPolicy::Latest(n) => {
            model_version_policy::PolicyChoice::Latest(model_version_policy::Latest { num_versions: *n })
        }
        VersionPolicy::All {} => model_version_policy::PolicyChoice::All(model_version_policy::All {}),
        VersionPolicy::Specific(v) => model_version_policy::PolicyChoice::Specific(model_version_policy::Specific {
            versions: v.iter().map(|&x| x as i64).collect(),
        }),
    };
    pb::ModelConfig {
        name: model.name.clone(),
        platform: PLATFORM.into(),
        backend: "onnxruntime".into(),
        runtime: "meridian-tract".into(),
        version_policy: Some(pb::ModelVersionPolicy { policy_choice: Some(policy) }),
        max_batch_size: c.max_batch_size as i32,
        input: version
            .signature
            .inputs
            .iter()
            .map(|s| pb::ModelInput {
                name: s.name.clone(),
                data_type: data_type(s.dtype),
                dims: dims(s),
                ..Default::default()
            })
            .collect(),
        output: version
            .signature
            .outputs
            .iter()
            .map(|s| pb::ModelOutput {
                name: s.name.clone(),
                data_type: data_type(s.dtype),
                dims: dims(s),
                ..Default::default()
            })
            .collect(),
        instance_group: vec![instance_group(model, version)],
        scheduling_choice: c.dynamic_batching.as_ref().map(|d| {
            pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
                preferred_batch_size: d.preferred_batch_sizes.iter().map(|&x| x as i32).collect(),
                max_queue_delay_microseconds: d.max_queue_delay_us,
                priority_levels: d.priority_levels as u64,
                default_priority_level: if d.default_priority_level == 0 {
                    d.priority_levels as u64
                } else {
                    d.default_priority_level as u64
                },
                default_queue_policy: Some(pb::ModelQueuePolicy {
                    // Triton's 0: no limit.
                    max_queue_size: u32::try_from(d.max_queue_size).unwrap_or(0),
                    default_timeout_microseconds: d.default_timeout_us,
                    allow_timeout_override: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        ..Default::default()
    }
}

/// Where the version's instances run, as Triton shows it.
fn instance_group(model: &Model, version: &LoadedVersion) -> pb::ModelInstanceGroup {
    use pb::model_instance_group::Kind;
    let (kind, gpus, suffix) = match version.device.strip_prefix("cuda:").and_then(|n| n.parse::<i32>().ok()) {
        Some(gpu) => (Kind::Gpu, vec![gpu], "gpu"),
        None => (Kind::Cpu, vec![], "cpu"),
    };
    pb::ModelInstanceGroup {
        name: format!("{}_{suffix}", model.name),
        count: version.config.instances as i32,
        kind: kind as i32,
        gpus,
        ..Default::default()
    }
}

fn statistics(model: &str, v: &LoadedVersion) -> pb::ModelStatistics {
    let s = &v.stats;
    let d = |x: &crate::stats::StatDuration| {
        let (count, ns) = x.get();
        Some(pb::StatisticDuration { count, ns })
    };
    let batches = s.batches.lock().unwrap_or_else(|p| p.into_inner());
    // Inputs and outputs are converted inside the measured compute time, so
    // their own durations are 0 but, as Triton's tools require, counted
    // once per request like compute_infer.
    let (computed, _) = s.compute_infer.get();
    let zero = || Some(pb::StatisticDuration { count: computed, ns: 0 });
    pb::ModelStatistics {
        name: model.to_string(),
        version: v.version.to_string(),
        last_inference: s.last_inference_ms.load(Ordering::Relaxed),
        inference_count: s.inference_count.load(Ordering::Relaxed),
        execution_count: s.execution_count.load(Ordering::Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success: d(&s.success),
            fail: d(&s.fail),
            queue: d(&s.queue),
            compute_input: zero(),
            compute_infer: d(&s.compute_infer),
            compute_output: zero(),
            cache_hit: Some(pb::StatisticDuration::default()),
            cache_miss: Some(pb::StatisticDuration::default()),
        }),
        batch_stats: batches
            .iter()
            .map(|(&rows, &(count, ns))| pb::InferBatchStatistics {
                batch_size: rows as u64,
                compute_input: Some(pb::StatisticDuration { count, ns: 0 }),
                compute_infer: Some(pb::StatisticDuration { count, ns }),
                compute_output: Some(pb::StatisticDuration { count, ns: 0 }),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}

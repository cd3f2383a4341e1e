//! KServe v2 REST (HTTP/JSON) with Triton's extensions, on `--http-listen`:
//! health, server and model metadata, readiness, inference (JSON tensors
//! and the binary tensor data extension), model configuration and
//! statistics, and the repository (index, load, unload).
//!
//! Every route translates its request into the v2 message and calls the
//! same [`InferenceService`] the gRPC front serves, so both fronts share
//! one behaviour: validation, limits, batching, metrics. A gRPC status
//! becomes the HTTP status in [`RestError`] (400, 403, 404, 429 with
//! `Retry-After`, 503…) with the body `{"error": "…"}`.

pub mod body;

use crate::grpc::inference::InferenceService;
use crate::grpc::reflect;
use crate::grpc::ServerState;
use crate::tls::{PeerIdentity, TlsListener};
use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use meridian_proto::headers::GRPC_RETRY_PUSHBACK_MS;
use meridian_proto::inference as pb;
use meridian_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use serde::Deserialize;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The REST routes over the shared server state; bodies above
/// `max_body_bytes` get 413 before they are read.
pub fn router(state: Arc<ServerState>, max_body_bytes: usize) -> Router {
    let service = InferenceService::new(state.clone());
    let rest = Rest { state, service };
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_statistics))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/versions/{version}/config", get(model_config))
        .route("/v2/models/{name}/stats", get(statistics))
        .route("/v2/models/{name}/versions/{version}/stats", get(statistics))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{name}/load", post(repository_load))
        .route("/v2/repository/models/{name}/unload", post(repository_unload))
        .fallback(|| async { RestError::new(StatusCode::NOT_FOUND, "no such endpoint; see the KServe v2 REST API") })
        .method_not_allowed_fallback(|| async {
            RestError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(rest)
}

#[derive(Debug, Clone)]
struct Rest {
    state: Arc<ServerState>,
    service: InferenceService,
}

/// The connection a request came on: its verified peer identity under TLS,
/// for `allowed_identities` and per-caller limits as on gRPC.
#[derive(Debug, Clone)]
pub struct RestPeer(Option<PeerIdentity>);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for RestPeer {
    fn connect_info(_: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        RestPeer(None)
    }
}

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for RestPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        RestPeer(Some(stream.remote_addr().clone()))
    }
}

type Peer = Option<Extension<ConnectInfo<RestPeer>>>;

/// `{name}` and, on the `/versions/{version}` routes, the version.
#[derive(Debug, Deserialize)]
struct ModelPath {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ModelPath {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, RestError> {
        // A path that does not decode (say, invalid UTF-8) gets the same
        // JSON error body as every other refusal.
        Path::<ModelPath>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| p)
            .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, format!("bad path: {}", e.body_text())))
    }
}

impl ModelPath {
    fn version(&self) -> String {
        self.version.clone().unwrap_or_default()
    }
}

/// An error reply: the status, `{"error": message}`, and `Retry-After`
/// where the server asks the client to come back later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestError {
    status: StatusCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl RestError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_ms: None }
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Status> for RestError {
    fn from(status: Status) -> Self {
        let retry_after_ms =
            status.metadata().get(GRPC_RETRY_PUSHBACK_MS).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Self { status: http_status(status.code()), message: status.message().to_string(), retry_after_ms }
    }
}

impl From<body::BadRequest> for RestError {
    fn from(e: body::BadRequest) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.0)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(ms) = self.retry_after_ms {
            // Whole seconds, rounded up: HTTP has no finer unit.
            if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&ms.to_string()) {
                response.headers_mut().insert(GRPC_RETRY_PUSHBACK_MS, v);
            }
        }
        response
    }
}

fn json(value: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// The v2 request `message` as the service sees it: the HTTP headers as
/// metadata (the caller header, `traceparent`) and the connection's peer.
fn request<T>(peer: &Peer, headers: HeaderMap, message: T) -> tonic::Request<T> {
    let mut extensions = tonic::Extensions::new();
    if let Some(Extension(ConnectInfo(RestPeer(Some(identity))))) = peer {
        extensions.insert(identity.clone());
    }
    tonic::Request::from_parts(MetadataMap::from_headers(headers), extensions, message)
}

async fn live() -> Response {
    json(&serde_json::json!({ "live": true }))
}

async fn ready(State(rest): State<Rest>) -> Response {
    if rest.state.is_ready() {
        json(&serde_json::json!({ "ready": true }))
    } else {
        RestError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready: loading, draining, or a model is not ready")
            .into_response()
    }
}

async fn server_metadata(State(rest): State<Rest>) -> Result<Response, RestError> {
    let meta = rest.service.server_metadata(tonic::Request::new(pb::ServerMetadataRequest {})).await?.into_inner();
    let mut extensions = meta.extensions;
    extensions.push("binary_tensor_data".into());
    Ok(json(&serde_json::json!({ "name": meta.name, "version": meta.version, "extensions": extensions })))
}

async fn model_metadata(State(rest): State<Rest>, path: ModelPath) -> Result<Response, RestError> {
    let message = pb::ModelMetadataRequest { name: path.name.clone(), version: path.version() };
    let meta = rest.service.model_metadata(tonic::Request::new(message)).await?.into_inner();
    let tensors = |ts: &[pb::model_metadata_response::TensorMetadata]| -> serde_json::Value {
        ts.iter().map(|t| serde_json::json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape })).collect()
    };
    Ok(json(&serde_json::json!({
        "name": meta.name,
        "versions": meta.versions,
        "platform": meta.platform,
        "inputs": tensors(&meta.inputs),
        "outputs": tensors(&meta.outputs),
    })))
}

async fn model_ready(State(rest): State<Rest>, path: ModelPath) -> Result<Response, RestError> {
    let message = pb::ModelReadyRequest { name: path.name.clone(), version: path.version() };
    let ready = rest.service.model_ready(tonic::Request::new(message)).await?.into_inner().ready;
    if ready {
        Ok(json(&serde_json::json!({ "name": path.name, "ready": true })))
    } else {
        Err(RestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model '{}' version '{}' is not ready", path.name, path.version()),
        ))
    }
}

async fn model_config(State(rest): State<Rest>, path: ModelPath) -> Result<Response, RestError> {
    let message = pb::ModelConfigRequest { name: path.name.clone(), version: path.version() };
    let config = rest.service.model_config(tonic::Request::new(message)).await?.into_inner().config.unwrap_or_default();
    // As Triton: the configuration itself, not wrapped.
    Ok(json(&reflect::to_json("ModelConfig", &config)))
}

async fn all_statistics(State(rest): State<Rest>) -> Result<Response, RestError> {
    statistics_of(&rest, String::new(), String::new()).await
}

async fn statistics(State(rest): State<Rest>, path: ModelPath) -> Result<Response, RestError> {
    let version = path.version();
    statistics_of(&rest, path.name, version).await
}

async fn statistics_of(rest: &Rest, name: String, version: String) -> Result<Response, RestError> {
    let stats = rest
        .service
        .model_statistics(tonic::Request::new(pb::ModelStatisticsRequest { name, version }))
        .await?
        .into_inner();
    Ok(json(&reflect::to_json("ModelStatisticsResponse", &stats)))
}

async fn infer(
    State(rest): State<Rest>,
    peer: Peer,
    path: ModelPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RestError> {
    let body =
        body.map_err(|e| RestError::new(e.status(), format!("cannot read the request body: {}", e.body_text())))?;
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(RestError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {encoding:?} is not supported; send the body uncompressed"),
            ));
        }
    }
    let header_length = match headers.get(body::HEADER_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| RestError::new(StatusCode::BAD_REQUEST, "Inference-Header-Content-Length is not text"))?,
        ),
        None => None,
    };
    let (message, plan) = body::decode(&body, header_length, &path.name, &path.version())?;
    drop(body);
    let response = rest.service.model_infer(request(&peer, headers, message)).await?;
    let (metadata, reply, _) = response.into_parts();
    let encoded = body::encode(reply, &plan).map_err(|e| RestError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut response = encoded.body.into_response();
    let headers = response.headers_mut();
    // The load signals the gRPC reply carries as metadata.
    for (name, value) in metadata.into_headers().iter() {
        headers.insert(name.clone(), value.clone());
    }
    match encoded.header_length {
        Some(n) => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            headers.insert(body::HEADER_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(State(rest): State<Rest>, body: Bytes) -> Result<Response, RestError> {
    let query: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            RestError::new(StatusCode::BAD_REQUEST, format!("the body is not a repository index request: {e}"))
        })?
    };
    let index = rest
        .service
        .repository_index(tonic::Request::new(pb::RepositoryIndexRequest {
            repository_name: String::new(),
            ready: query.ready,
        }))
        .await?
        .into_inner();
    let models: serde_json::Value = index
        .models
        .iter()
        .map(|m| {
            let mut entry = serde_json::json!({ "name": m.name, "state": m.state });
            if !m.version.is_empty() {
                entry["version"] = m.version.clone().into();
            }
            if !m.reason.is_empty() {
                entry["reason"] = m.reason.clone().into();
            }
            entry
        })
        .collect();
    Ok(json(&models))
}

/// Load takes no parameters here and unload only `unload_dependents` (no
/// model has dependents: there are no ensembles); a body that sets others
/// (a config override, files) is refused rather than ignored.
fn no_parameters(body: &Bytes, what: &str, allowed: &[&str]) -> Result<(), RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, format!("the body of {what} is not JSON: {e}")))?;
    match value.get("parameters").and_then(|p| p.as_object()) {
        Some(p) if p.keys().any(|k| !allowed.contains(&k.as_str())) => {
            let keys: Vec<&str> = p.keys().map(String::as_str).filter(|k| !allowed.contains(k)).collect();
            Err(RestError::new(
                StatusCode::BAD_REQUEST,
                format!("{what}: parameters {keys:?} are not supported; edit the model folder instead"),
            ))
        }
        _ => Ok(()),
    }
}

async fn repository_load(State(rest): State<Rest>, path: ModelPath, body: Bytes) -> Result<Response, RestError> {
    no_parameters(&body, "load", &[])?;
    rest.service
        .repository_model_load(tonic::Request::new(pb::RepositoryModelLoadRequest {
            model_name: path.name,
            ..Default::default()
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn repository_unload(State(rest): State<Rest>, path: ModelPath, body: Bytes) -> Result<Response, RestError> {
    no_parameters(&body, "unload", &["unload_dependents"])?;
    rest.service
        .repository_model_unload(tonic::Request::new(pb::RepositoryModelUnloadRequest {
            model_name: path.name,
            ..Default::default()
        }))
        .await?;
    Ok(StatusCode::OK.into_response())
}

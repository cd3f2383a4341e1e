//! Wiring a running sidecar: the repository, the gRPC server, the REST
//! server, the metrics listener, the repository poller and the drain on shutdown.

use crate::executor::cuda;
use crate::executor::device::{DeviceChoice, DeviceError, Devices};
use crate::grpc::health::HealthService;
use crate::grpc::inference::InferenceService;
use crate::grpc::{IdentitySettings, ServerState};
use crate::metrics::Metrics;
use crate::repository::{self, Repository};
use crate::tls::identity::IdentityPattern;
use crate::tls::{Alpn, TlsError, TlsFiles, TlsListener, TlsSource};
use meridian_proto::health::health_server::HealthServer;
use meridian_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the sidecar.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model repository folder.
    pub model_repository: PathBuf,
    /// The gRPC listener.
    pub grpc_listen: SocketAddr,
    /// The KServe v2 REST listener.
    pub http_listen: SocketAddr,
    /// The metrics and health HTTP listener.
    pub metrics_listen: SocketAddr,
    /// Where models run unless their config.yaml says otherwise.
    pub device: DeviceChoice,
    /// How often to look for changed model files; `None`: never.
    pub poll_interval: Option<Duration>,
    /// How long in-flight calls may take to finish after SIGTERM.
    pub drain_grace: Duration,
    /// The metadata key that names the caller, for per-caller rate limits.
    pub caller_header: String,
    /// TLS on the gRPC and REST listeners; `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// What one client can make the server hold.
    pub limits: crate::limits::Limits,
}

/// TLS on the gRPC and REST listeners (the REST one speaks HTTP/1.1).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The PEM files (with a client CA bundle: mTLS).
    pub files: TlsFiles,
    /// How often to check the files for new material.
    pub poll_interval: Duration,
    /// Peers whose forwarded client identity (`x-forwarded-client-cert`)
    /// is believed: the region gateways.
    pub trusted_proxies: Vec<IdentityPattern>,
    /// The metrics listener behind the same TLS (HTTP/1.1; client
    /// certificates required when the gRPC listener requires them).
    pub metrics: bool,
}

/// Why the server could not start or run.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The repository folder cannot be read.
    #[error("model repository {path}: {source}")]
    Repository {
        /// The folder.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device asked for is not usable.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The TLS material was refused.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// The bound addresses of a started server.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
    /// KServe v2 REST.
    pub http: SocketAddr,
    /// Metrics and health.
    pub metrics: SocketAddr,
}

/// Runs the sidecar until `shutdown` resolves, then drains: health turns
/// NOT_SERVING, new calls get UNAVAILABLE, in-flight calls get
/// `drain_grace` to finish, then the listeners close. `on_bound` hears the
/// bound addresses once both listeners are up.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(Bound),
) -> Result<(), ServerError> {
    std::fs::read_dir(&config.model_repository)
        .map_err(|source| ServerError::Repository { path: config.model_repository.display().to_string(), source })?;
    // Probing a GPU may compile kernels (when the cubin cache is cold): off
    // the async workers.
    let choice = config.device;
    let devices = tokio::task::spawn_blocking(move || Devices::select(choice, cuda::probe))
        .await
        .map_err(|e| DeviceError { choice, reason: format!("the device probe failed: {e}") })??;
    tracing::info!("{}", devices.summary());
    let metrics = Metrics::new();
    let tls = match &config.tls {
        Some(t) => Some((TlsSource::new(t.files.clone(), Alpn::H2, metrics.clone())?, t)),
        None => None,
    };
    let rest_tls = match &config.tls {
        Some(t) => Some(TlsSource::new(t.files.clone(), Alpn::Http11, metrics.clone())?),
        None => None,
    };
    let metrics_tls = match &config.tls {
        Some(t) if t.metrics => Some(TlsSource::new(t.files.clone(), Alpn::Http11, metrics.clone())?),
        _ => None,
    };
    let identity = IdentitySettings {
        client_certificates: config.tls.as_ref().is_some_and(|t| t.files.client_ca.is_some()),
        trusted_proxies: config.tls.as_ref().map(|t| t.trusted_proxies.clone()).unwrap_or_default(),
    };
    let repo = Arc::new(Repository::new(config.model_repository.clone(), devices, metrics.clone()));
    let state = Arc::new(ServerState::new(repo.clone(), metrics.clone(), config.caller_header.clone(), identity));

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.grpc_listen, source })?;
    let rest_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.http_listen, source })?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.metrics_listen, source })?;
    let bound = Bound {
        grpc: grpc_listener.local_addr().map_err(|source| ServerError::Bind { addr: config.grpc_listen, source })?,
        http: rest_listener.local_addr().map_err(|source| ServerError::Bind { addr: config.http_listen, source })?,
        metrics: metrics_listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: config.metrics_listen, source })?,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http_stop = stopped(stop_rx.clone());
    let http_router = crate::metrics::router(state.clone());
    let mut watchers = Vec::new();
    let http =
        match metrics_tls {
            Some(source) => {
                watchers.push(tokio::spawn(
                    source.clone().watch(config.tls.as_ref().map_or(Duration::from_secs(1), |t| t.poll_interval)),
                ));
                let listener = TlsListener::new(metrics_listener, source, HANDSHAKE_TIMEOUT)
                    .map_err(|source| ServerError::Bind { addr: config.metrics_listen, source })?;
                tokio::spawn(async move { axum::serve(listener, http_router).with_graceful_shutdown(http_stop).await })
            }
            None => tokio::spawn(async move {
                axum::serve(metrics_listener, http_router).with_graceful_shutdown(http_stop).await
            }),
        };
    let limits = config.limits;
    let rest_router = crate::rest::router(state.clone(), limits.max_message_bytes);
    let rest_stop = stopped(stop_rx.clone());
    let rest = match rest_tls {
        Some(source) => {
            watchers.push(tokio::spawn(
                source.clone().watch(config.tls.as_ref().map_or(Duration::from_secs(1), |t| t.poll_interval)),
            ));
            let listener = TlsListener::new(rest_listener, source, HANDSHAKE_TIMEOUT)
                .map_err(|source| ServerError::Bind { addr: config.http_listen, source })?;
            let service = rest_router.into_make_service_with_connect_info::<crate::rest::RestPeer>();
            tokio::spawn(async move { axum::serve(listener, service).with_graceful_shutdown(rest_stop).await })
        }
        None => {
            let service = rest_router.into_make_service_with_connect_info::<crate::rest::RestPeer>();
            tokio::spawn(async move { axum::serve(rest_listener, service).with_graceful_shutdown(rest_stop).await })
        }
    };
    let router = tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .layer(crate::limits::ResourceExhaustedLayer::new(limits.max_message_bytes))
        .add_service(
            GrpcInferenceServiceServer::new(InferenceService::new(state.clone()))
                .max_decoding_message_size(limits.max_message_bytes),
        )
        .add_service(HealthServer::new(HealthService::new(state.clone())));
    let grpc = match tls {
        Some((source, t)) => {
            watchers.push(tokio::spawn(source.clone().watch(t.poll_interval)));
            let incoming = crate::tls::incoming(grpc_listener, source, HANDSHAKE_TIMEOUT);
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())))
        }
        None => tokio::spawn(router.serve_with_incoming_shutdown(
            crate::limits::incoming(grpc_listener, limits.preface_timeout),
            stopped(stop_rx.clone()),
        )),
    };
    tracing::info!(grpc = %bound.grpc, http = %bound.http, metrics = %bound.metrics, repository = %config.model_repository.display(), "listening");
    on_bound(bound);

    repo.load_all()
        .await
        .map_err(|source| ServerError::Repository { path: config.model_repository.display().to_string(), source })?;
    state.mark_loaded();
    let poller = config.poll_interval.map(|every| tokio::spawn(repository::poll(repo.clone(), every)));

    shutdown.await;
    tracing::info!(in_flight = state.in_flight(), grace_s = config.drain_grace.as_secs_f64(), "draining");
    state.start_draining();
    if tokio::time::timeout(config.drain_grace, state.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "drain grace period over; closing with calls in flight");
    }
    for task in poller.into_iter().chain(watchers) {
        task.abort();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), rest).await;
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(error = %join, "the gRPC server task failed"),
        Err(_) => tracing::warn!("the gRPC server did not close within 5 s"),
    }
    tracing::info!("drained; exiting");
    Ok(())
}

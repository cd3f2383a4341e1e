//! Wiring a running sidecar: the repository, the gRPC server, the metrics
//! listener, the repository poller and the drain on shutdown.

use crate::executor::cuda;
use crate::executor::device::{DeviceChoice, DeviceError, Devices};
use crate::grpc::health::HealthService;
use crate::grpc::inference::InferenceService;
use crate::grpc::ServerState;
use crate::metrics::Metrics;
use crate::repository::{self, Repository};
use meridian_proto::health::health_server::HealthServer;
use meridian_proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tonic::transport::server::TcpIncoming;

/// How to run the sidecar.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model repository folder.
    pub model_repository: PathBuf,
    /// The gRPC listener.
    pub grpc_listen: SocketAddr,
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
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// The bound addresses of a started server.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// gRPC.
    pub grpc: SocketAddr,
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
    let repo = Arc::new(Repository::new(config.model_repository.clone(), devices, metrics.clone()));
    let state = Arc::new(ServerState::new(repo.clone(), metrics.clone(), config.caller_header.clone()));

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.grpc_listen, source })?;
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.metrics_listen, source })?;
    let bound = Bound {
        grpc: grpc_listener.local_addr().map_err(|source| ServerError::Bind { addr: config.grpc_listen, source })?,
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
    let http =
        tokio::spawn(async move { axum::serve(metrics_listener, http_router).with_graceful_shutdown(http_stop).await });
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                GrpcInferenceServiceServer::new(InferenceService::new(state.clone()))
                    .max_decoding_message_size(256 << 20),
            )
            .add_service(HealthServer::new(HealthService::new(state.clone())))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                stopped(stop_rx.clone()),
            ),
    );
    tracing::info!(grpc = %bound.grpc, metrics = %bound.metrics, repository = %config.model_repository.display(), "listening");
    on_bound(bound);

    repo.load_all()
        .await
        .map_err(|source| ServerError::Repository { path: config.model_repository.display().to_string(), source })?;
    let poller = config.poll_interval.map(|every| tokio::spawn(repository::poll(repo.clone(), every)));

    shutdown.await;
    tracing::info!(in_flight = state.in_flight(), grace_s = config.drain_grace.as_secs_f64(), "draining");
    state.start_draining();
    if tokio::time::timeout(config.drain_grace, state.wait_idle()).await.is_err() {
        tracing::warn!(in_flight = state.in_flight(), "drain grace period over; closing with calls in flight");
    }
    if let Some(p) = poller {
        p.abort();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(error = %join, "the gRPC server task failed"),
        Err(_) => tracing::warn!("the gRPC server did not close within 5 s"),
    }
    tracing::info!("drained; exiting");
    Ok(())
}

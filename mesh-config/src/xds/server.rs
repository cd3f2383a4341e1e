//! The server: reads the policy, serves ADS and the status service on one
//! gRPC listener, and watches the policy file — a valid change becomes the
//! next generation, pushed to every connected proxy; an invalid one is
//! refused (its errors logged and shown by `meridianctl status`) and every
//! proxy keeps what it has.

use super::ads::Ads;
use super::codec::Codec;
use super::snapshot::Snapshot;
use super::state::Shared;
use super::status::StatusService;
use crate::certs::MeshCerts;
use crate::policy::Policy;
use meridian_proto::xds::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use meridian_proto::xds::meridian::xds::v1::mesh_status_server::MeshStatusServer;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The policy file, watched for changes.
    pub policy_file: PathBuf,
    /// Where to listen (loopback by default in `meridianctl serve`).
    pub listen: SocketAddr,
    /// The filter module the caller-side proxies load (a `file://` URL in
    /// the policy's `filter.url` takes precedence).
    pub wasm: PathBuf,
    /// How often the policy file is checked.
    pub poll: Duration,
    /// Mutual TLS on every hop, with the certificates under this root
    /// (`meridianctl certs`); `None`: plaintext.
    pub certs: Option<PathBuf>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The policy file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The policy (or what it renders) is invalid.
    #[error("{path}: the policy is invalid:\n{}", errors.join("\n"))]
    Policy {
        /// The file.
        path: String,
        /// Every error.
        errors: Vec<String>,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (every stream ends) and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.shared.close();
        self.watcher.abort();
        let _ = (&mut self.served).await;
    }

    /// Serves until the process ends (or the server fails).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.served.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Other(e.to_string())),
            Err(e) => Err(ServeError::Other(e.to_string())),
        }
    }
}

/// The module the proxies load: the policy's `file://` URL, else `fallback`.
fn module(policy: &Policy, fallback: &Path) -> PathBuf {
    policy
        .spec()
        .filter
        .url
        .as_deref()
        .and_then(|u| u.strip_prefix("file://"))
        .map_or_else(|| fallback.to_path_buf(), PathBuf::from)
}

/// Reads, validates and renders the policy in `path`.
fn load(
    path: &Path,
    wasm: &Path,
    certs: Option<&Path>,
    codec: &Codec,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
    let policy = Policy::parse(&text).map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let certs = certs.map(MeshCerts::new);
    Snapshot::build(&policy, &module(&policy, wasm), certs.as_ref(), codec, previous, generation)
}

/// Starts the server: the policy must be valid to start.
pub async fn serve(options: ServerOptions) -> Result<Running, ServeError> {
    let codec = Codec::new().map_err(ServeError::Other)?;
    let path = options.policy_file.display().to_string();
    let first = std::fs::read_to_string(&options.policy_file)
        .map_err(|source| ServeError::Read { path: path.clone(), source })?;
    let snapshot = load(&options.policy_file, &options.wasm, options.certs.as_deref(), &codec, None, 1)
        .map_err(|errors| ServeError::Policy { path: path.clone(), errors })?;
    let shared = Shared::new(options.policy_file.clone(), snapshot);
    let listener =
        TcpListener::bind(options.listen).await.map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr: options.listen, source })?;
    let (shutdown, stop) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(AggregatedDiscoveryServiceServer::new(Ads { shared: shared.clone() }))
        .add_service(MeshStatusServer::new(StatusService { shared: shared.clone() }));
    let served = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop.await;
    }));
    let watcher = tokio::spawn(watch(options, codec, shared.clone(), first));
    tracing::info!(%addr, policy = %path, "xDS server listening");
    Ok(Running { addr, shared, shutdown: Some(shutdown), served, watcher })
}

/// Polls the policy file; each change that reads differently is accepted
/// (a new generation) or refused.
async fn watch(options: ServerOptions, codec: Codec, shared: Arc<Shared>, mut last: String) {
    let mut tick = tokio::time::interval(options.poll);
    loop {
        tick.tick().await;
        let Ok(text) = tokio::fs::read_to_string(&options.policy_file).await else { continue };
        if text == last {
            continue;
        }
        last = text;
        let previous = shared.snapshot();
        let generation = previous.generation + 1;
        match load(&options.policy_file, &options.wasm, options.certs.as_deref(), &codec, Some(&previous), generation) {
            Ok(snapshot) => {
                let moved: usize = snapshot
                    .nodes
                    .iter()
                    .map(|(k, types)| {
                        types
                            .iter()
                            .filter(|(t, typed)| previous.nodes.get(k).and_then(|n| n.get(*t)) != Some(typed))
                            .count()
                    })
                    .sum();
                tracing::info!(generation, changed_resources = moved, "policy accepted");
                shared.accept(snapshot);
            }
            Err(errors) => {
                for e in &errors {
                    tracing::warn!(error = %e, "policy refused; the proxies keep generation {}", previous.generation);
                }
                shared.refuse(errors);
            }
        }
    }
}

/// A server on its own thread and runtime, for programs that are not
/// async (the local mesh harness); stopped when dropped.
#[derive(Debug)]
pub struct Background {
    addr: SocketAddr,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts the server; returns once it listens.
    pub fn start(options: ServerOptions) -> Result<Self, ServeError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr, ServeError>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("meridian-xds".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServeError::Other(e.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let running = match serve(options).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(running.local_addr()));
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                    running.stop().await;
                });
            })
            .map_err(|e| ServeError::Other(e.to_string()))?;
        let addr = ready_rx.recv().map_err(|_| ServeError::Other("the server thread ended".into()))??;
        Ok(Self { addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

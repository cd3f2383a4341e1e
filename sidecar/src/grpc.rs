//! The gRPC front: `inference.GRPCInferenceService` (KServe v2 with Triton's
//! extensions) and `grpc.health.v1`. The only module that imports the proto
//! crate; everything below it deals in tensors and plain errors.

pub mod convert;
pub mod health;
pub mod inference;
pub mod reflect;
pub mod status;

use crate::metrics::Metrics;
use crate::repository::Repository;
use crate::tls::identity::{self, IdentityPattern};
use crate::tls::PeerIdentity;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tonic::metadata::MetadataMap;

/// How the listener identifies callers.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// Client certificates are required (mTLS): the caller header is never
    /// trusted for rate limits.
    pub client_certificates: bool,
    /// Peers (region gateways) whose forwarded client identity
    /// (`x-forwarded-client-cert`) is believed.
    pub trusted_proxies: Vec<IdentityPattern>,
}

/// A call's caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The verified SPIFFE ID.
    pub identity: Option<String>,
    /// The per-caller rate limit bucket.
    pub limit_key: Option<String>,
}

/// What every handler shares.
#[derive(Debug)]
pub struct ServerState {
    /// The models.
    pub repo: Arc<Repository>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The metadata key naming the caller, for per-caller rate limits.
    pub caller_header: String,
    /// How callers are identified.
    pub identity: IdentitySettings,
    draining: AtomicBool,
    /// The repository's first load has finished (until then nothing is
    /// ready, even an empty-looking repository).
    loaded: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl ServerState {
    /// State over a repository.
    pub fn new(repo: Arc<Repository>, metrics: Metrics, caller_header: String, identity: IdentitySettings) -> Self {
        Self {
            repo,
            metrics,
            caller_header,
            identity,
            draining: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Who is calling, for `allowed_identities` and rate limits: the
    /// verified identity (the peer certificate's SPIFFE ID, or the one a
    /// trusted proxy forwarded), and the rate-limit key — that identity, or
    /// the caller header only where the listener takes no client
    /// certificates.
    pub fn caller(&self, peer: Option<&PeerIdentity>, metadata: &MetadataMap) -> Caller {
        let spiffe_id = peer.and_then(|p| p.spiffe_id.as_deref());
        let verified = match (spiffe_id, self.identity.trusted_proxies.is_empty()) {
            (Some(id), true) => Some(id.to_string()),
            (id, false) => identity::caller_identity(
                id,
                metadata.get(identity::XFCC).and_then(|v| v.to_str().ok()),
                &self.identity.trusted_proxies,
            ),
            (None, true) => None,
        };
        let limit_key = match &verified {
            Some(id) => Some(id.clone()),
            None if self.identity.client_certificates => None,
            None => metadata.get(self.caller_header.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string),
        };
        Caller { identity: verified, limit_key }
    }

    /// Starts draining: health turns NOT_SERVING and new calls get UNAVAILABLE.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.repo.notify();
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Marks the repository's first load done.
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::SeqCst);
        self.repo.notify();
    }

    /// Ready: the first load done, not draining, and every model ready.
    pub fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::SeqCst) && !self.is_draining() && self.repo.all_ready()
    }

    /// Inference calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no inference call is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a call in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One inference call in flight.
#[derive(Debug)]
pub struct InFlight(Arc<ServerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

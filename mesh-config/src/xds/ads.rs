//! The Aggregated Discovery Service, state of the world: one gRPC stream
//! per Envoy carries its listeners, routes, clusters and the filter's
//! configuration (ECDS).
//!
//! Per type the stream remembers what it sent (version, nonce, names).
//! A request whose nonce answers the last response is an ACK (its version
//! is the one sent) or a NACK (it carries `error_detail`, Envoy's reason,
//! and keeps its old version); a request with an older nonce is stale and
//! ignored. A new snapshot is pushed type by type — clusters first, then
//! listeners, routes, the filter — and only the types whose version moved.
//! Clusters a new snapshot drops stay until the proxy has acknowledged
//! everything else at the new versions (make before break: no route or
//! filter configuration ever names a cluster the proxy lacks).

use super::snapshot::{Snapshot, Typed};
use super::state::{unix_now, Proxy, Shared};
use super::{type_of, CLUSTER, TYPES};
use crate::render::envoy::{Role, REGION_KEY, ROLE_KEY};
use meridian_proto::xds::envoy::config::core::v3::{ControlPlane, Node};
use meridian_proto::xds::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use meridian_proto::xds::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The service.
#[derive(Debug, Clone)]
pub(crate) struct Ads {
    pub(crate) shared: Arc<Shared>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaOutbound = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Outbound;
    type DeltaAggregatedResourcesStream = DeltaOutbound;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Outbound>, Status> {
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let id = shared.open_stream();
            let mut stream = AdsStream {
                shared: shared.clone(),
                id,
                peer,
                node_id: String::new(),
                node: None,
                subscriptions: BTreeMap::new(),
                nonce: 0,
                tx: tx.clone(),
            };
            let result = stream.run(inbound).await;
            shared.disconnect(id);
            if let Err(status) = result {
                tracing::warn!(node = %stream.node_id, error = %status.message(), "xDS stream refused");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaOutbound>, Status> {
        Err(Status::unimplemented(
            "Meridian's xDS server speaks state-of-the-world ADS (ads_config.api_type: GRPC), not delta",
        ))
    }
}

/// What one type's subscription stands at on one stream.
#[derive(Debug, Clone, Default)]
struct Subscription {
    /// The names asked for (empty: every resource of the type).
    names: Vec<String>,
    sent_version: Option<String>,
    sent_nonce: String,
    sent_names: Vec<String>,
    /// What the last response held (clusters only: for make before break).
    sent: Vec<(String, prost_types::Any)>,
    /// The version the last response stands for when it kept dropped
    /// clusters (the final one follows once the rest is acknowledged).
    holding: Option<String>,
}

#[derive(Debug)]
struct AdsStream {
    shared: Arc<Shared>,
    id: u64,
    peer: String,
    node_id: String,
    node: Option<(Role, String)>,
    subscriptions: BTreeMap<&'static str, Subscription>,
    nonce: u64,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
}

impl AdsStream {
    async fn run(&mut self, mut inbound: Streaming<DiscoveryRequest>) -> Result<(), Status> {
        let mut changes = self.shared.subscribe();
        changes.borrow_and_update();
        let mut closing = self.shared.closing();
        loop {
            tokio::select! {
                _ = closing.changed() => {
                    return Err(Status::unavailable("the xDS server is shutting down"));
                }
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.on_request(request).await?,
                    // The proxy went away (or its stream broke).
                    Ok(None) | Err(_) => return Ok(()),
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let snapshot = changes.borrow_and_update().clone();
                    self.push_changes(&snapshot).await?;
                }
            }
        }
    }

    async fn on_request(&mut self, request: DiscoveryRequest) -> Result<(), Status> {
        if self.node.is_none() {
            self.identify(request.node.as_ref())?;
        }
        let Some(type_url) = type_of(&request.type_url) else {
            // A type this server does not serve: answer empty so Envoy's
            // initialisation does not wait for it.
            return self.respond_unknown(&request.type_url).await;
        };
        let snapshot = self.shared.snapshot();
        if !self.subscriptions.contains_key(type_url) {
            self.shared.subscribe_type(self.id, type_url);
        }
        let sub = self.subscriptions.entry(type_url).or_default();
        if !request.response_nonce.is_empty() {
            if request.response_nonce != sub.sent_nonce {
                // An answer to a response this stream has since replaced.
                return Ok(());
            }
            match &request.error_detail {
                Some(error) => {
                    let version = sub.sent_version.clone().unwrap_or_default();
                    tracing::warn!(node = %self.node_id, type_url, version, error = %error.message, "NACK");
                    self.shared.nack(self.id, type_url, &version, &error.message);
                }
                // A cluster set still holding dropped clusters is not the
                // version in force: only the final one counts as an ACK.
                None if sub.holding.is_some() => {}
                None => self.shared.ack(self.id, type_url, &request.version_info),
            }
        }
        let sub = self.subscriptions.entry(type_url).or_default();
        let names_changed = request.resource_names != sub.sent_names;
        sub.names = request.resource_names.clone();
        if sub.sent_version.is_none() || names_changed {
            self.send(&snapshot, type_url, false).await?;
        }
        self.release_held_clusters(&snapshot).await
    }

    /// Reads the node's role and region from its metadata.
    fn identify(&mut self, node: Option<&Node>) -> Result<(), Status> {
        let node = node.ok_or_else(|| Status::invalid_argument("the first request carries no node"))?;
        let field = |key: &str| -> Option<String> {
            let fields = &node.metadata.as_ref()?.fields;
            match fields.get(key)?.kind.as_ref()? {
                prost_types::value::Kind::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        };
        let role = field(ROLE_KEY).and_then(|r| Role::parse(&r)).ok_or_else(|| {
            Status::invalid_argument(format!(
                "node {}: metadata `{ROLE_KEY}` is not caller-proxy or region-gateway (bootstrap with `meridianctl \
                 render envoy --xds ADDR`)",
                node.id
            ))
        })?;
        let region = field(REGION_KEY)
            .ok_or_else(|| Status::invalid_argument(format!("node {}: no metadata `{REGION_KEY}`", node.id)))?;
        if self.shared.snapshot().node(role, &region).is_none() {
            return Err(Status::not_found(format!("node {}: the policy has no {role} in region {region}", node.id)));
        }
        self.node_id = node.id.clone();
        self.node = Some((role, region.clone()));
        self.shared.connect(
            self.id,
            Proxy {
                node_id: node.id.clone(),
                role,
                region,
                peer: self.peer.clone(),
                connected_unix: unix_now(),
                types: BTreeMap::new(),
            },
        );
        tracing::info!(node = %node.id, role = %role, peer = %self.peer, "proxy connected");
        Ok(())
    }

    /// Sends what changed in `snapshot`, clusters first.
    async fn push_changes(&mut self, snapshot: &Snapshot) -> Result<(), Status> {
        let Some((role, region)) = self.node.clone() else { return Ok(()) };
        let Some(node) = snapshot.node(role, &region) else { return Ok(()) };
        for type_url in TYPES {
            let Some(sub) = self.subscriptions.get(type_url) else { continue };
            let current = node.get(type_url).map(|t| t.version.clone());
            if sub.sent_version != current || sub.holding.is_some() {
                // Clusters: keep the dropped ones while anything else moves.
                let others_move = TYPES.iter().filter(|t| **t != CLUSTER).any(|t| {
                    self.subscriptions.get(t).is_some_and(|s| s.sent_version != node.get(t).map(|x| x.version.clone()))
                });
                self.send(snapshot, type_url, type_url == CLUSTER && others_move).await?;
            }
        }
        Ok(())
    }

    /// Sends `type_url`'s resources from `snapshot`. With `hold`, clusters
    /// the proxy has and the snapshot drops are kept in this response.
    async fn send(&mut self, snapshot: &Snapshot, type_url: &'static str, hold: bool) -> Result<(), Status> {
        let Some((role, region)) = self.node.clone() else { return Ok(()) };
        let empty = Typed::default();
        let typed = snapshot.node(role, &region).and_then(|n| n.get(type_url)).unwrap_or(&empty);
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let sub = self.subscriptions.entry(type_url).or_default();
        let mut resources: Vec<(String, prost_types::Any)> =
            typed.resources.iter().filter(|(n, _)| sub.names.is_empty() || sub.names.contains(n)).cloned().collect();
        let mut version = typed.version.clone();
        sub.holding = None;
        if hold {
            let dropped: Vec<(String, prost_types::Any)> =
                sub.sent.iter().filter(|(n, _)| !typed.resources.iter().any(|(m, _)| m == n)).cloned().collect();
            if !dropped.is_empty() {
                resources.extend(dropped);
                version = format!("{}+held", typed.version);
                sub.holding = Some(typed.version.clone());
            }
        }
        sub.sent_version = Some(typed.version.clone());
        sub.sent_nonce = nonce.clone();
        sub.sent_names = sub.names.clone();
        sub.sent = if type_url == CLUSTER { resources.clone() } else { Vec::new() };
        let response = DiscoveryResponse {
            version_info: version,
            resources: resources.into_iter().map(|(_, r)| r).collect(),
            type_url: type_url.to_string(),
            nonce,
            control_plane: Some(ControlPlane { identifier: "meridianctl".into() }),
            ..DiscoveryResponse::default()
        };
        self.emit(response).await
    }

    /// Once everything else is acknowledged at the versions in force, the
    /// final cluster set (without the dropped clusters) follows.
    async fn release_held_clusters(&mut self, snapshot: &Snapshot) -> Result<(), Status> {
        let Some(held) = self.subscriptions.get(CLUSTER).and_then(|s| s.holding.clone()) else { return Ok(()) };
        let Some((role, region)) = self.node.clone() else { return Ok(()) };
        let Some(node) = snapshot.node(role, &region) else { return Ok(()) };
        let acked_rest = self
            .subscriptions
            .keys()
            .filter(|t| **t != CLUSTER)
            .all(|t| self.shared.acked(self.id, t).as_deref() == node.get(t).map(|x| x.version.as_str()));
        let current = node.get(CLUSTER).map(|t| t.version.clone());
        if acked_rest && current.as_deref() == Some(held.as_str()) {
            self.send(snapshot, CLUSTER, false).await?;
        }
        Ok(())
    }

    async fn respond_unknown(&mut self, type_url: &str) -> Result<(), Status> {
        self.nonce += 1;
        let response = DiscoveryResponse {
            version_info: "0".into(),
            type_url: type_url.to_string(),
            nonce: self.nonce.to_string(),
            ..DiscoveryResponse::default()
        };
        self.emit(response).await
    }

    async fn emit(&self, response: DiscoveryResponse) -> Result<(), Status> {
        self.tx.send(Ok(response)).await.map_err(|_| Status::cancelled("the proxy's stream closed"))
    }
}

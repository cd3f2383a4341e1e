//! Envoy served by Meridian's xDS server: a bootstrap that only knows the
//! server (ADS over gRPC, its node identifying its role and region), and
//! the resources the server serves it — the same listeners, routes,
//! clusters and filter configuration the static bootstraps embed, with the
//! routes by RDS and the filter's configuration by ECDS, so that a new
//! filter configuration replaces neither a listener nor a connection.

use super::caller::{caller_clusters, caller_listener_dynamic, caller_route_config, meridian_wasm, FILTER_NAME};
use super::common::{http2_options, socket_address, stats_config, to_yaml};
use super::gateway::{gateway_clusters, gateway_listener, gateway_route_config, runtime_layers};
use super::{CallerProxy, RegionGateway};
use serde_json::{json, Value};
use std::fmt;
use std::net::SocketAddr;

/// The bootstrap cluster that reaches the xDS server.
pub const XDS_CLUSTER: &str = "meridian_xds";
/// Node metadata keys the server reads.
pub const ROLE_KEY: &str = "meridian.role";
/// See [`ROLE_KEY`].
pub const REGION_KEY: &str = "meridian.region";

/// What a proxy is in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The caller-side proxy running the filter.
    CallerProxy,
    /// A region's gateway.
    RegionGateway,
}

impl Role {
    /// As the node metadata says it (`caller-proxy`, `region-gateway`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::CallerProxy => "caller-proxy",
            Role::RegionGateway => "region-gateway",
        }
    }

    /// Reads [`Role::as_str`]'s words.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "caller-proxy" => Some(Role::CallerProxy),
            "region-gateway" => Some(Role::RegionGateway),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A proxy as the xDS server knows it: its node id, role and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsNode {
    /// Envoy's node id (`caller-eu-west`, `gateway-us-east`).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its region.
    pub region: String,
}

impl XdsNode {
    /// The conventional node of `role` in `region`.
    pub fn new(role: Role, region: &str) -> Self {
        let prefix = match role {
            Role::CallerProxy => "caller",
            Role::RegionGateway => "gateway",
        };
        Self { id: format!("{prefix}-{region}"), role, region: region.to_string() }
    }
}

/// A bootstrap that takes everything from the xDS server at `xds` over
/// one ADS stream. A gateway's also carries the runtime layers its fault
/// filter reads (set at run time through `admin`).
pub fn xds_bootstrap(node: &XdsNode, admin: Option<SocketAddr>, xds: SocketAddr) -> String {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut config = json!({
        "node": {
            "id": node.id,
            "cluster": "meridian",
            "metadata": { ROLE_KEY: node.role.as_str(), REGION_KEY: node.region }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }]
            },
            "lds_config": ads,
            "cds_config": ads
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": http2_options(),
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(xds) } }] }]
                }
            }]
        }
    });
    if node.role == Role::RegionGateway {
        config["layered_runtime"] = runtime_layers();
    }
    if node.role == Role::CallerProxy {
        config["stats_config"] = stats_config();
    }
    if let Some(admin) = admin {
        config["admin"] = json!({ "address": socket_address(admin) });
    }
    to_yaml(&config)
}

/// Everything one proxy is served, as JSON (with `@type`s), by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// `envoy.config.listener.v3.Listener`s.
    pub listeners: Vec<Value>,
    /// `envoy.config.route.v3.RouteConfiguration`s.
    pub routes: Vec<Value>,
    /// `envoy.config.cluster.v3.Cluster`s.
    pub clusters: Vec<Value>,
    /// `envoy.config.core.v3.TypedExtensionConfig`s (ECDS).
    pub extension_configs: Vec<Value>,
}

/// The caller-side proxy's resources: its listener (routes by RDS, the
/// filter by ECDS), its routes, its clusters, and the filter's
/// configuration with `plugin_config`.
pub fn caller_resources(proxy: &CallerProxy, plugin_config: &str) -> Resources {
    Resources {
        listeners: vec![caller_listener_dynamic(proxy)],
        routes: vec![caller_route_config(proxy)],
        clusters: caller_clusters(proxy),
        extension_configs: vec![json!({ "name": FILTER_NAME, "typed_config": meridian_wasm(proxy, plugin_config) })],
    }
}

/// A region gateway's resources: its listener (routes by RDS), its routes
/// and a cluster per version label.
pub fn gateway_resources(gateway: &RegionGateway) -> Resources {
    Resources {
        listeners: vec![gateway_listener(gateway, true)],
        routes: vec![gateway_route_config(gateway)],
        clusters: gateway_clusters(gateway),
        extension_configs: Vec::new(),
    }
}

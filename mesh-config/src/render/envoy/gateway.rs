//! A region gateway: the region's ingress in front of its model servers.
//! It routes each model version to its servers, stamps the region on
//! responses, marks replies it made because no server was reached, and
//! carries a fault filter that an operator drives at run time.

use super::common::{ads_source, circuit_breakers, http2_options, listener, router, socket_address, to_yaml};
use super::tls::{self, HopTls};
use super::tracing::{collector_cluster, hcm_tracing, TraceExport};
use meridian_proto::headers;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The listener's name in [`region_gateway`].
pub const GATEWAY_LISTENER: &str = "meridian_gateway";

/// Runtime keys of a region gateway's fault filter.
pub mod fault_keys {
    /// Percent of inference calls delayed.
    pub const DELAY_PERCENT: &str = "fault.http.delay.fixed_delay_percent";
    /// The delay, ms.
    pub const DELAY_MS: &str = "fault.http.delay.fixed_duration_ms";
    /// Percent of inference calls aborted.
    pub const ABORT_PERCENT: &str = "fault.http.abort.abort_percent";
    /// The gRPC status of an abort.
    pub const ABORT_GRPC_STATUS: &str = "fault.http.abort.grpc_status";

    /// The same four keys for the calls a gateway routes to one model
    /// version (canary), in the order above: `fault.<version>.…`.
    pub fn for_version(version: &str) -> [String; 4] {
        [
            format!("fault.{version}.delay.fixed_delay_percent"),
            format!("fault.{version}.delay.fixed_duration_ms"),
            format!("fault.{version}.abort.abort_percent"),
            format!("fault.{version}.abort.grpc_status"),
        ]
    }
}

/// What [`region_gateway`] renders.
#[derive(Debug, Clone)]
pub struct RegionGateway {
    /// The region's name, stamped on responses.
    pub region: String,
    /// Envoy's admin listener (none: no admin endpoint, and so no run-time
    /// fault injection).
    pub admin: Option<SocketAddr>,
    /// The gateway's listener.
    pub listen: SocketAddr,
    /// The region's model servers by version label; calls whose
    /// `x-meridian-route-version` names a label go to its servers.
    pub versions: Vec<(String, Vec<SocketAddr>)>,
    /// The label calls without a version (or with one this region does not
    /// run) go to, unless their model is in `model_defaults`.
    pub default_version: String,
    /// Models whose calls without a version go to another label: (model, label).
    pub model_defaults: Vec<(String, String)>,
    /// The label (one of `versions`) that mirrored calls (authority
    /// holding `-shadow`) go to, if any.
    pub shadow: Option<String>,
    /// Calls in flight to each label's servers at most.
    pub max_requests: u32,
    /// Mutual TLS on both sides; `None`: plaintext.
    pub tls: Option<GatewayTls>,
    /// Spans of every call to a collector; `None`: no tracing.
    pub tracing: Option<TraceExport>,
}

/// The service name of a region gateway's spans.
pub fn gateway_service(region: &str) -> String {
    format!("meridian-gateway-{region}")
}

/// A gateway's mutual TLS: callers must present a certificate of the mesh
/// (their identity is forwarded to the model servers in
/// `x-forwarded-client-cert`, appended to what a caller-side proxy
/// forwarded), and the model servers must be who they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTls {
    /// The listener: the gateway's certificate and the identities it admits.
    pub downstream: HopTls,
    /// To the model servers: the same certificate and their identity.
    pub upstream: HopTls,
}

/// The cluster of a gateway's servers of one version label.
pub fn version_cluster(version: &str) -> String {
    format!("sidecars~{version}")
}

/// Renders a region gateway's bootstrap (YAML).
pub fn region_gateway(gateway: &RegionGateway) -> String {
    let config = json!({
        // A node identity: SDS (mutual TLS) needs one.
        "node": { "id": format!("meridian-gateway-{}", gateway.region), "cluster": "meridian" },
        "layered_runtime": runtime_layers(),
        "static_resources": {
            "listeners": [gateway_listener(gateway, false)],
            "clusters": gateway_clusters(gateway)
        }
    });
    let mut config = config;
    if let Some(admin) = gateway.admin {
        config["admin"] = json!({ "address": socket_address(admin) });
    }
    to_yaml(&config)
}

/// The runtime layers a gateway's fault filter reads (the admin layer is
/// what `POST /runtime_modify` writes).
pub(crate) fn runtime_layers() -> Value {
    json!({
        "layers": [
            { "name": "static", "static_layer": {} },
            { "name": "admin", "admin_layer": {} }
        ]
    })
}

/// A gateway's route configuration (`region`; served by RDS over xDS).
pub fn gateway_route_config(gateway: &RegionGateway) -> Value {
    // A version's route has its own fault settings, under its own runtime
    // keys (`fault_keys::for_version`), so a canary can be made to fail alone.
    let version_fault = |version: &str| {
        let [delay_percent, delay_ms, abort_percent, grpc_status] = fault_keys::for_version(version);
        let mut config = fault_config();
        config["delay_percent_runtime"] = json!(delay_percent);
        config["delay_duration_runtime"] = json!(delay_ms);
        config["abort_percent_runtime"] = json!(abort_percent);
        config["abort_grpc_status_runtime"] = json!(grpc_status);
        json!({ "envoy.filters.http.fault": config })
    };
    let to = |version: &str| json!({ "cluster": version_cluster(version), "timeout": "0s" });
    let mut routes: Vec<Value> = Vec::new();
    if let Some(version) = &gateway.shadow {
        routes.push(json!({
            "match": {
                "prefix": "/",
                // Envoy marks a mirrored call's authority with `-shadow`
                // (before the port, where there is one).
                "headers": [{ "name": ":authority", "string_match": { "contains": "-shadow" } }]
            },
            "route": to(version)
        }));
    }
    for (version, _) in gateway.versions.iter().filter(|(v, _)| *v != gateway.default_version) {
        routes.push(json!({
            "match": {
                "prefix": "/",
                "headers": [{ "name": headers::ROUTE_VERSION, "string_match": { "exact": version } }]
            },
            "route": to(version),
            "typed_per_filter_config": version_fault(version)
        }));
    }
    for (model, version) in &gateway.model_defaults {
        if gateway.versions.iter().any(|(v, _)| v == version) {
            routes.push(json!({
                "match": {
                    "prefix": "/",
                    "headers": [{ "name": headers::MODEL, "string_match": { "exact": model } }]
                },
                "route": to(version)
            }));
        }
    }
    routes.push(json!({ "match": { "prefix": "/" }, "route": to(&gateway.default_version) }));
    json!({
        "name": GATEWAY_ROUTES,
        "response_headers_to_add": [overwrite(headers::REGION, &gateway.region)],
        "virtual_hosts": [{ "name": "sidecars", "domains": ["*"], "routes": routes }]
    })
}

/// A gateway's route configuration's name.
pub const GATEWAY_ROUTES: &str = "region";

fn overwrite(key: &str, value: &str) -> Value {
    json!({ "header": { "key": key, "value": value }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" })
}

/// A gateway's listener: its fault filter, the "no server reached" mark,
/// and its routes inline or, over xDS, by RDS.
pub fn gateway_listener(gateway: &RegionGateway, dynamic_routes: bool) -> Value {
    let fault = json!({ "name": "envoy.filters.http.fault", "typed_config": fault_config() });
    let mut hcm = json!({
        "stat_prefix": format!("gateway_{}", gateway.region.replace('-', "_")),
        "local_reply_config": {
            "mappers": [{
                // No sidecar reached: connect failure, none healthy, overflow.
                "filter": { "response_flag_filter": { "flags": ["UF", "UH", "UO"] } },
                "headers_to_add": [overwrite(headers::UNREACHED, "1")]
            }]
        },
        "http_filters": [fault, router()]
    });
    if dynamic_routes {
        hcm["rds"] = json!({ "config_source": ads_source(), "route_config_name": GATEWAY_ROUTES });
    } else {
        hcm["route_config"] = gateway_route_config(gateway);
    }
    if gateway.tls.is_some() {
        // The verified caller's identity travels on, after whatever the
        // proxy before it verified; the model server believes the
        // header only from gateways.
        hcm["forward_client_cert_details"] = json!("APPEND_FORWARD");
        hcm["set_current_client_cert_details"] = json!({ "uri": true });
    }
    if let Some(export) = &gateway.tracing {
        hcm["tracing"] = hcm_tracing(export, &gateway_service(&gateway.region));
    }
    let mut listener = listener(GATEWAY_LISTENER, gateway.listen, hcm);
    if let Some(t) = &gateway.tls {
        listener["filter_chains"][0]["transport_socket"] = tls::downstream(&t.downstream);
    }
    listener
}

/// A gateway's clusters: one per version label of its servers.
pub fn gateway_clusters(gateway: &RegionGateway) -> Vec<Value> {
    let mut clusters: Vec<Value> = gateway.tracing.iter().map(collector_cluster).collect();
    clusters.extend(gateway.versions.iter().map(|(v, addrs)| {
        let mut cluster = sidecar_cluster(&version_cluster(v), addrs, gateway.max_requests);
        if let Some(t) = &gateway.tls {
            cluster["transport_socket"] = tls::upstream(&t.upstream);
        }
        cluster
    }));
    clusters
}

/// Inference calls only: health checks report the sidecars as they are.
fn fault_config() -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "headers": [{ "name": ":path", "string_match": { "prefix": "/inference." } }],
        "delay": { "fixed_delay": "0.001s", "percentage": { "numerator": 0, "denominator": "HUNDRED" } },
        "abort": { "grpc_status": 14, "percentage": { "numerator": 0, "denominator": "HUNDRED" } }
    })
}

fn sidecar_cluster(name: &str, sidecars: &[SocketAddr], max_requests: u32) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "circuit_breakers": circuit_breakers(max_requests),
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": sidecars.iter().map(|a| json!({ "endpoint": { "address": socket_address(*a) } })).collect::<Vec<_>>() }]
        }
    })
}

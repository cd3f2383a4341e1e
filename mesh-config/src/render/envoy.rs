//! Plain Envoy bootstraps (no Istio) for the two proxies of a Meridian
//! mesh:
//!
//! - [`caller_proxy`]: the caller-side Envoy. The Meridian filter picks a
//!   cluster per request (`x-meridian-cluster`, routed with
//!   `cluster_header`): one cluster per region, and one aggregate cluster
//!   per failover order whose children are those regions in that order.
//!   The route's retry policy moves each retry to the next region
//!   (`previous_priorities`), so a call that fails in one region is retried
//!   in the next within the same client call, never outside the order.
//! - [`region_gateway`]: a region's ingress in front of its sidecars. It
//!   stamps `x-meridian-region` on responses, marks replies it made because
//!   no sidecar could be reached with `x-meridian-unreached`, and carries a
//!   fault filter (delay, gRPC abort) that is off until an operator sets
//!   its runtime keys through the admin endpoint (`POST /runtime_modify`).

use crate::policy::spec::FailStrategy as PolicyFailStrategy;
use crate::policy::{Pointer, Policy, PolicyError, PolicyErrors};
use meridian_filters_core::config::cluster_name;
use meridian_filters_core::decision::{
    RETRY_CLASS_HEADER, RETRY_CLASS_NOT_IDEMPOTENT, RETRY_ON_IDEMPOTENT, RETRY_ON_NOT_IDEMPOTENT,
};
use meridian_filters_core::FilterConfig;
use meridian_proto::headers;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One region as the caller-side Envoy reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionUpstream {
    /// The region's name (as in the filter config).
    pub region: String,
    /// Its gateway (or sidecar) address.
    pub addr: HostPort,
    /// Speak HTTP/2 to it (gRPC, health probes). Off: HTTP/1.1 or HTTP/2
    /// as the caller did.
    pub http2: bool,
    /// Calls in flight to it at most (Envoy's circuit breaker `max_requests`).
    pub max_requests: u32,
}

/// An upstream's address: an IP address or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The IP address or host name.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Reads `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr.into());
        }
        let (host, port) = text.rsplit_once(':')?;
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        Some(Self { host: host.to_string(), port: port.parse().ok()? }).filter(|_| host_ok)
    }

    /// Whether `host` is an IP address (else Envoy resolves it by DNS).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What [`caller_proxy`] renders.
#[derive(Debug, Clone)]
pub struct CallerProxy {
    /// Envoy's admin listener (port 0: Envoy picks one).
    pub admin: SocketAddr,
    /// The listener callers send requests to (port 0: Envoy picks one).
    pub listen: SocketAddr,
    /// Every region in the filter config, with its address.
    pub regions: Vec<RegionUpstream>,
    /// The built `meridian_filters.wasm`.
    pub wasm: PathBuf,
    /// The filter's configuration.
    pub filter: FilterConfig,
    /// Shadow traffic, per model.
    pub shadows: Vec<Shadow>,
    /// What Envoy does when the filter's VM fails.
    pub fail_strategy: FailStrategy,
}

/// Shadow traffic: a share of one model's calls also sent, through Envoy's
/// request mirroring, to another version in the local region. The mirror's
/// responses are discarded; its outcomes are counted in the
/// `cluster.meridian-shadow.*` stats. Envoy marks mirrored calls by adding
/// `-shadow` to their authority (before the port), which the region gateway
/// routes to the shadow version ([`RegionGateway::shadow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    /// The model whose calls are mirrored (`x-meridian-model`).
    pub model: String,
    /// The version that receives them.
    pub version: String,
    /// Percent of the model's calls mirrored.
    pub percent: u32,
}

/// What Envoy does when the filter's VM fails (`failure_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailStrategy {
    /// A fresh VM replaces it (`FAIL_RELOAD`).
    #[default]
    Reload,
    /// Calls pass without the filter (`FAIL_OPEN`).
    Open,
    /// Calls fail (`FAIL_CLOSED`).
    Close,
}

impl FailStrategy {
    /// Envoy's name for it.
    pub fn envoy_name(self) -> &'static str {
        match self {
            FailStrategy::Reload => "FAIL_RELOAD",
            FailStrategy::Open => "FAIL_OPEN",
            FailStrategy::Close => "FAIL_CLOSED",
        }
    }
}

/// The cluster mirrored calls go to: the local region's gateway.
pub const SHADOW_CLUSTER: &str = "meridian-shadow";

/// The value of `x-meridian-outcome`, in Envoy's formatter syntax; the
/// filter parses it with `meridian_filters_core::decision::Completion::from_outcome`.
pub const OUTCOME_FORMAT: &str = "%RESP(x-meridian-region)%|%RESP(x-meridian-queue-depth)%|%RESP(x-envoy-upstream-service-time)%|%UPSTREAM_REQUEST_ATTEMPT_COUNT%|%RESP(grpc-status)%|%RESPONSE_CODE%";

/// The listener's name in [`caller_proxy`].
pub const CALLER_LISTENER: &str = "meridian_ingress";
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

/// Renders the caller-side bootstrap as YAML that `envoy --mode validate`
/// accepts. The filter runs in V8 with the policy's `failure_policy`
/// (`FAIL_RELOAD` by default: a VM that dies, a panic, is replaced by a
/// fresh one).
pub fn caller_proxy(proxy: &CallerProxy) -> String {
    let config = json!({
        "admin": { "address": socket_address(proxy.admin) },
        "static_resources": {
            "listeners": [caller_listener(proxy, &serde_json::to_string(&proxy.filter).unwrap_or_default())],
            "clusters": caller_clusters(proxy)
        }
    });
    to_yaml(&config)
}

/// The caller-side bootstrap with its listener served from a file (LDS
/// over the filesystem): Envoy watches `lds_dir` and applies a new
/// `lds.yaml` (moved into place) without a restart, or rejects it and keeps
/// the listener it has. Write the file with [`caller_lds`].
pub fn caller_proxy_with_lds(proxy: &CallerProxy, lds_dir: &std::path::Path) -> String {
    let config = json!({
        "node": { "id": "meridian-caller", "cluster": "meridian" },
        "admin": { "address": socket_address(proxy.admin) },
        "dynamic_resources": {
            "lds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": lds_dir.join("lds.yaml").display().to_string(),
                    "watched_directory": { "path": lds_dir.display().to_string() }
                }
            }
        },
        "static_resources": { "clusters": caller_clusters(proxy) }
    });
    to_yaml(&config)
}

/// The LDS file for [`caller_proxy_with_lds`]: the caller listener with
/// `plugin_config` (the filter's JSON, passed as text so that a tool can
/// push any bytes, including a configuration the filter will refuse).
pub fn caller_lds(proxy: &CallerProxy, plugin_config: &str) -> String {
    let mut listener = caller_listener(proxy, plugin_config);
    listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    to_yaml(&json!({ "resources": [listener] }))
}

/// The caller-side routes for `filter`: a `cluster_header` route (the
/// filter's pick) with the retry policy that moves each retry to the next
/// region, the not-idempotent variant first where a model needs it, and
/// for each shadowed model the same routes with a mirror to
/// `shadow_cluster` first. Istio's EnvoyFilter inserts the same routes.
pub fn caller_routes(filter: &FilterConfig, shadows: &[Shadow], shadow_cluster: &str) -> Vec<Value> {
    // The filter sets per request only what differs from these defaults
    // (fewer retries under the budget, another per-try timeout, the
    // not-idempotent class): most requests need one header, the cluster.
    let defaults = &filter.default_model.retry;
    let route_timeout = format!("{}s", filter.default_model.timeout_ms.unwrap_or(30_000) as f64 / 1000.0);
    let retry_policy = |retry_on: &str| {
        json!({
            "retry_on": retry_on,
            "num_retries": defaults.max_attempts.saturating_sub(1),
            "per_try_timeout": format!("{}s", defaults.per_try_timeout_ms as f64 / 1000.0),
            "retriable_headers": [{ "name": headers::UNREACHED, "present_match": true }],
            // Each retry goes to the next region of the order, then to
            // another host.
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 1
                }
            },
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": { "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate" }
            }],
            "host_selection_retry_max_attempts": 3,
            "retry_back_off": {
                "base_interval": format!("{}s", defaults.backoff_ms.max(1) as f64 / 1000.0),
                "max_interval": format!("{}s", (defaults.backoff_ms.max(1) * 10) as f64 / 1000.0)
            }
        })
    };
    let route = |retry_on: &str| {
        json!({
            "cluster_header": headers::CLUSTER,
            "timeout": route_timeout,
            // A gRPC caller's own deadline (grpc-timeout) bounds the call.
            "max_stream_duration": { "grpc_timeout_header_max": "0s" },
            "retry_policy": retry_policy(retry_on)
        })
    };
    let mut routes = Vec::new();
    // The not-idempotent route exists only when some model needs it.
    let any_unsafe = filter.models.values().chain([&filter.default_model]).any(|m| !m.retry.idempotent);
    if any_unsafe {
        routes.push(json!({
            "name": "meridian-not-idempotent",
            "match": {
                "prefix": "/",
                "headers": [{ "name": RETRY_CLASS_HEADER, "string_match": { "exact": RETRY_CLASS_NOT_IDEMPOTENT } }]
            },
            "route": route(RETRY_ON_NOT_IDEMPOTENT)
        }));
    }
    routes.push(json!({ "name": "meridian", "match": { "prefix": "/" }, "route": route(RETRY_ON_IDEMPOTENT) }));
    if !shadows.is_empty() {
        // The same routes for each shadowed model, first, with the mirror.
        let mut mirrored: Vec<Value> = Vec::new();
        for shadow in shadows {
            for r in &routes {
                let mut r = r.clone();
                r["name"] = json!(format!("{}-shadow-{}", r["name"].as_str().unwrap_or("meridian"), shadow.model));
                let model = json!({ "name": headers::MODEL, "string_match": { "exact": shadow.model } });
                match r["match"]["headers"].as_array_mut() {
                    Some(h) => h.push(model),
                    None => r["match"]["headers"] = json!([model]),
                }
                r["route"]["request_mirror_policies"] = json!([{
                    "cluster": shadow_cluster,
                    "runtime_fraction": { "default_value": { "numerator": shadow.percent, "denominator": "HUNDRED" } }
                }]);
                mirrored.push(r);
            }
        }
        mirrored.extend(routes);
        routes = mirrored;
    }
    routes
}

/// What the caller-side virtual host adds to every response for the
/// filter: Envoy's attempt count, and the one-header outcome summary.
pub fn caller_virtual_host_fields() -> Value {
    json!({
        // x-envoy-attempt-count on responses: how many regions a call
        // tried, read by the filter.
        "include_attempt_count_in_response": true,
        // Everything the filter needs of a response in one header: one
        // host call instead of six.
        "response_headers_to_add": [{
            "header": { "key": headers::OUTCOME, "value": OUTCOME_FORMAT },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
        }]
    })
}

/// An aggregate cluster: `children` in preference order (Envoy's retry
/// priority moves each retry to the next).
pub fn aggregate_cluster(name: &str, children: Vec<String>) -> Value {
    json!({
        "name": name,
        "connect_timeout": "0.25s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": circuit_breakers(100_000),
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": children
            }
        }
    })
}

fn caller_listener(proxy: &CallerProxy, plugin_config: &str) -> Value {
    let routes = caller_routes(&proxy.filter, &proxy.shadows, SHADOW_CLUSTER);
    let mut virtual_host = json!({ "name": "models", "domains": ["*"], "routes": routes });
    if let (Some(vh), Value::Object(extra)) = (virtual_host.as_object_mut(), caller_virtual_host_fields()) {
        vh.extend(extra);
    }
    let wasm_filter = json!({
        "name": "meridian",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meridian",
                "root_id": "meridian",
                "failure_policy": proxy.fail_strategy.envoy_name(),
                "configuration": { "@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin_config },
                "vm_config": {
                    "vm_id": "meridian",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": { "local": { "filename": proxy.wasm.display().to_string() } }
                }
            }
        }
    });
    listener(
        CALLER_LISTENER,
        proxy.listen,
        json!({
            "stat_prefix": CALLER_LISTENER,
            "route_config": {
                "name": "meridian_routes",
                // Only the filter says which version a call goes to: a
                // client's value is dropped before any filter runs.
                "internal_only_headers": [headers::ROUTE_VERSION],
                "virtual_hosts": [virtual_host]
            },
            "http_filters": [wasm_filter, router()]
        }),
    )
}

fn caller_clusters(proxy: &CallerProxy) -> Vec<Value> {
    let mut clusters: Vec<Value> = Vec::new();
    if !proxy.shadows.is_empty() {
        if let Some(local) = proxy.regions.iter().find(|r| r.region == proxy.filter.region) {
            clusters.push(region_cluster(SHADOW_CLUSTER, local));
        }
    }
    for (name, regions) in proxy.filter.clusters() {
        if let [region] = regions.as_slice() {
            let Some(upstream) = proxy.regions.iter().find(|r| &r.region == region) else { continue };
            clusters.push(region_cluster(&name, upstream));
        } else {
            clusters.push(aggregate_cluster(&name, regions.iter().map(|r| cluster_name(&[r])).collect()));
        }
    }
    clusters
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
}

/// The cluster of a gateway's servers of one version label.
pub fn version_cluster(version: &str) -> String {
    format!("sidecars~{version}")
}

/// Renders a region gateway's bootstrap (YAML).
pub fn region_gateway(gateway: &RegionGateway) -> String {
    // Inference calls only: health checks report the sidecars as they are.
    let fault_config = || {
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "headers": [{ "name": ":path", "string_match": { "prefix": "/inference." } }],
            "delay": { "fixed_delay": "0.001s", "percentage": { "numerator": 0, "denominator": "HUNDRED" } },
            "abort": { "grpc_status": 14, "percentage": { "numerator": 0, "denominator": "HUNDRED" } }
        })
    };
    let fault = json!({ "name": "envoy.filters.http.fault", "typed_config": fault_config() });
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
    let overwrite = |key: &str, value: &str| json!({ "header": { "key": key, "value": value }, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD" });
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
    let mut config = json!({
        "layered_runtime": {
            "layers": [
                { "name": "static", "static_layer": {} },
                { "name": "admin", "admin_layer": {} }
            ]
        },
        "static_resources": {
            "listeners": [listener(GATEWAY_LISTENER, gateway.listen, json!({
                "stat_prefix": format!("gateway_{}", gateway.region.replace('-', "_")),
                "local_reply_config": {
                    "mappers": [{
                        // No sidecar reached: connect failure, none healthy, overflow.
                        "filter": { "response_flag_filter": { "flags": ["UF", "UH", "UO"] } },
                        "headers_to_add": [overwrite(headers::UNREACHED, "1")]
                    }]
                },
                "route_config": {
                    "name": "region",
                    "response_headers_to_add": [overwrite(headers::REGION, &gateway.region)],
                    "virtual_hosts": [{ "name": "sidecars", "domains": ["*"], "routes": routes }]
                },
                "http_filters": [fault, router()]
            }))],
            "clusters": gateway
                .versions
                .iter()
                .map(|(v, addrs)| sidecar_cluster(&version_cluster(v), addrs, gateway.max_requests))
                .collect::<Vec<_>>()
        }
    });
    if let Some(admin) = gateway.admin {
        config["admin"] = json!({ "address": socket_address(admin) });
    }
    to_yaml(&config)
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

fn listener(name: &str, addr: SocketAddr, mut hcm: Value) -> Value {
    hcm["@type"] =
        json!("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    hcm["codec_type"] = json!("AUTO");
    json!({
        "name": name,
        "address": socket_address(addr),
        "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }] }]
    })
}

fn region_cluster(name: &str, upstream: &RegionUpstream) -> Value {
    let protocol = if upstream.http2 {
        http2_options()
    } else {
        json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "use_downstream_protocol_config": {}
            }
        })
    };
    json!({
        "name": name,
        "type": if upstream.addr.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "0.25s",
        "circuit_breakers": circuit_breakers(upstream.max_requests),
        "typed_extension_protocol_options": protocol,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": host_address(&upstream.addr) } }] }]
        }
    })
}

fn http2_options() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    })
}

/// Envoy's defaults allow only 3 concurrent retries per cluster, which drops
/// failover retries silently under load; the filter's budget is the limit.
/// `max_requests`: the region's capacity (calls in flight).
fn circuit_breakers(max_requests: u32) -> Value {
    json!({ "thresholds": [{
        "max_connections": 100000, "max_pending_requests": 100000, "max_requests": max_requests, "max_retries": 100000
    }] })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    })
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

fn host_address(addr: &HostPort) -> Value {
    json!({ "socket_address": { "address": addr.host, "port_value": addr.port } })
}

fn to_yaml(config: &Value) -> String {
    serde_yaml::to_string(config).unwrap_or_else(|e| unreachable!("a JSON value always renders as YAML: {e}"))
}

// === from a policy ===

/// The caller-side proxy of `region` as `policy` describes it: its
/// listener and admin from `callerProxy`, every region's gateway address,
/// the filter configuration derived for `region`, the shadowed models.
pub fn caller_from_policy(policy: &Policy, region: &str, wasm: PathBuf) -> Result<CallerProxy, PolicyErrors> {
    let spec = policy.spec();
    let mut errors = Vec::new();
    let filter = policy.filter_config(region).map_err(|e| PolicyErrors(vec![e]))?;
    let proxy_at = Pointer::root().key("callerProxy");
    let mut socket = |field: &str, text: &str| -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            errors.push(policy.error(proxy_at.key(field), format!("`{text}` is not IP:PORT (Envoy listens on an IP)")));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = socket("listen", &spec.caller_proxy.listen);
    let admin = socket("admin", &spec.caller_proxy.admin);
    let mut regions = Vec::new();
    for (i, r) in spec.regions.iter().enumerate() {
        let at = Pointer::root().key("regions").index(i);
        match r.gateway.as_ref().and_then(|g| HostPort::parse(&g.address)) {
            Some(addr) => regions.push(RegionUpstream {
                region: r.name.clone(),
                addr,
                http2: true,
                max_requests: r.capacity.max_concurrent_requests,
            }),
            None => errors.push(policy.error(
                at.key("gateway"),
                format!("plain Envoy reaches region {} through its gateway: set regions[{i}].gateway.address", r.name),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    Ok(CallerProxy {
        admin,
        listen,
        regions,
        wasm,
        filter,
        shadows: spec
            .shadows()
            .into_iter()
            .map(|(model, version, percent)| Shadow { model, version, percent })
            .collect(),
        fail_strategy: match spec.fail_strategy {
            PolicyFailStrategy::FailReload => FailStrategy::Reload,
            PolicyFailStrategy::FailOpen => FailStrategy::Open,
            PolicyFailStrategy::FailClose => FailStrategy::Close,
        },
    })
}

/// The gateway of `region` as `policy` describes it: its listener (and
/// admin) from `regions[].gateway`, its model servers from
/// `regions[].endpoints` by version label.
pub fn gateway_from_policy(policy: &Policy, region: &str) -> Result<RegionGateway, PolicyErrors> {
    let spec = policy.spec();
    let Some(i) = spec.regions.iter().position(|r| r.name == region) else {
        let names: Vec<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
        return Err(PolicyErrors(vec![PolicyError::at(
            Pointer::root().key("regions"),
            None,
            format!("no region `{region}` (regions: {})", names.join(", ")),
        )]));
    };
    let r = &spec.regions[i];
    let at = Pointer::root().key("regions").index(i);
    let mut errors = Vec::new();
    let gateway = r.gateway.as_ref();
    let listen = match gateway.map(|g| g.address.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            errors.push(policy.error(
                at.key("gateway").key("address"),
                "the gateway listens on this address: write IP:PORT".to_string(),
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
        None => {
            errors.push(policy.error(at.key("gateway"), format!("set regions[{i}].gateway.address (its listener)")));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let admin = match gateway.and_then(|g| g.admin.as_deref()).map(str::parse::<SocketAddr>) {
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            errors.push(policy.error(at.key("gateway").key("admin"), "write IP:PORT".to_string()));
            None
        }
        None => None,
    };
    if r.endpoints.is_empty() {
        errors.push(policy.error(
            at.key("endpoints"),
            format!("plain Envoy routes to the region's model servers: list them in regions[{i}].endpoints"),
        ));
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let mut versions: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for e in &r.endpoints {
        let addr: SocketAddr = e.address.parse().map_err(|_| {
            PolicyErrors(vec![policy.error(at.key("endpoints"), format!("`{}` is not IP:PORT", e.address))])
        })?;
        match versions.iter_mut().find(|(v, _)| *v == e.version) {
            Some((_, addrs)) => addrs.push(addr),
            None => versions.push((e.version.clone(), vec![addr])),
        }
    }
    let shadow = spec.shadows().into_iter().map(|(_, v, _)| v).find(|v| versions.iter().any(|(l, _)| l == v));
    Ok(RegionGateway {
        region: region.to_string(),
        admin,
        listen,
        versions,
        default_version: spec.default_version(),
        model_defaults: spec.models_off_default(),
        shadow,
        max_requests: r.capacity.max_concurrent_requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> CallerProxy {
        let filter =
            FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")]);
        let up = |region: &str, addr: &str| RegionUpstream {
            region: region.into(),
            addr: HostPort::parse(addr).expect("addr"),
            http2: true,
            max_requests: 1_000,
        };
        CallerProxy {
            admin: "127.0.0.1:0".parse().expect("addr"),
            listen: "127.0.0.1:10000".parse().expect("addr"),
            regions: vec![
                up("eu-west", "127.0.1.1:10001"),
                up("eu-central", "127.0.2.1:10001"),
                up("us-east", "127.0.3.1:10001"),
            ],
            wasm: PathBuf::from("/x/meridian_filters.wasm"),
            filter,
            shadows: Vec::new(),
            fail_strategy: FailStrategy::Reload,
        }
    }

    fn parse(yaml: &str) -> Value {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn embeds_the_filter_config_as_a_string_value() {
        let yaml = parse(&caller_proxy(&proxy()));
        let hcm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        let embedded: FilterConfig =
            serde_json::from_str(wasm["configuration"]["value"].as_str().expect("string")).expect("filter config");
        assert_eq!(embedded, proxy().filter);
        assert_eq!(wasm["failure_policy"], json!("FAIL_RELOAD"));
        let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["route"]["cluster_header"], json!("x-meridian-cluster"));
        assert_eq!(routes[0]["route"]["retry_policy"]["retry_on"], json!(RETRY_ON_IDEMPOTENT));
        assert_eq!(routes[0]["route"]["retry_policy"]["num_retries"], json!(2), "the default model's max_attempts − 1");
        assert_eq!(routes.as_array().map(Vec::len), Some(1), "no not-idempotent model, no route for it");
        let mut unsafe_model = proxy();
        let mut charge = meridian_filters_core::config::ModelPolicy::default();
        charge.retry.idempotent = false;
        unsafe_model.filter.models.insert("charge".into(), charge);
        let yaml = parse(&caller_proxy(&unsafe_model));
        let routes = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["route_config"]["virtual_hosts"][0]["routes"];
        assert_eq!(routes[0]["match"]["headers"][0]["name"], json!("x-meridian-retry-class"));
        assert_eq!(routes[0]["route"]["retry_policy"]["retry_on"], json!(RETRY_ON_NOT_IDEMPOTENT));
    }

    #[test]
    fn renders_every_cluster_the_filter_can_name() {
        let yaml = parse(&caller_proxy(&proxy()));
        let clusters = yaml["static_resources"]["clusters"].as_array().expect("clusters");
        let names: Vec<&str> = clusters.iter().filter_map(|c| c["name"].as_str()).collect();
        for (name, _) in proxy().filter.clusters() {
            assert!(names.contains(&name.as_str()), "{name} missing");
        }
        let agg = clusters.iter().find(|c| c["name"] == "meridian~us-east~eu-west").expect("aggregate");
        assert_eq!(agg["cluster_type"]["typed_config"]["clusters"], json!(["meridian~us-east", "meridian~eu-west"]));
        let eu_west = clusters.iter().find(|c| c["name"] == "meridian~eu-west").expect("region");
        let ep =
            &eu_west["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!((ep["address"].as_str(), ep["port_value"].as_u64()), (Some("127.0.1.1"), Some(10001)));
    }

    #[test]
    fn a_gateway_stamps_its_region_and_lists_its_sidecars() {
        let yaml = parse(&region_gateway(&RegionGateway {
            region: "eu-west".into(),
            admin: Some("127.0.1.1:0".parse().expect("addr")),
            listen: "127.0.1.1:0".parse().expect("addr"),
            versions: vec![(
                "v1".into(),
                vec!["127.0.1.2:8001".parse().expect("addr"), "127.0.1.3:8001".parse().expect("addr")],
            )],
            default_version: "v1".into(),
            model_defaults: vec![],
            shadow: None,
            max_requests: 1_000,
        }));
        let hcm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(
            hcm["route_config"]["response_headers_to_add"][0]["header"],
            json!({"key": "x-meridian-region", "value": "eu-west"})
        );
        assert_eq!(hcm["http_filters"][0]["name"], json!("envoy.filters.http.fault"));
        let eps = yaml["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .expect("eps")
            .len();
        assert_eq!(eps, 2);
    }

    #[test]
    fn a_shadowed_model_gets_mirrored_routes_first_and_the_shadow_cluster() {
        let mut p = proxy();
        p.shadows = vec![Shadow { model: "mlp".into(), version: "v2".into(), percent: 25 }];
        let yaml = parse(&caller_proxy(&p));
        let hcm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2, "the mirrored route, then the plain one");
        assert_eq!(routes[0]["match"]["headers"][0]["name"], json!("x-meridian-model"));
        let mirror = &routes[0]["route"]["request_mirror_policies"][0];
        assert_eq!(mirror["cluster"], json!(SHADOW_CLUSTER));
        assert_eq!(mirror["runtime_fraction"]["default_value"]["numerator"], json!(25));
        assert!(routes[1]["route"].get("request_mirror_policies").is_none());
        let clusters = yaml["static_resources"]["clusters"].as_array().expect("clusters");
        let shadow = clusters.iter().find(|c| c["name"] == json!(SHADOW_CLUSTER)).expect("shadow cluster");
        let ep = &shadow["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(ep["address"], json!("127.0.1.1"), "the local region's gateway");
    }

    #[test]
    fn a_gateway_routes_each_version_to_its_sidecars_and_the_rest_to_stable() {
        let addr = |s: &str| -> SocketAddr { s.parse().expect("addr") };
        let yaml = parse(&region_gateway(&RegionGateway {
            region: "eu-west".into(),
            admin: Some(addr("127.0.1.1:0")),
            listen: addr("127.0.1.1:0"),
            versions: vec![("v1".into(), vec![addr("127.0.1.2:8001")]), ("v2".into(), vec![addr("127.0.1.3:8001")])],
            default_version: "v1".into(),
            model_defaults: vec![],
            shadow: None,
            max_requests: 1_000,
        }));
        let hcm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["match"]["headers"][0]["name"], json!("x-meridian-route-version"));
        assert_eq!(routes[0]["match"]["headers"][0]["string_match"]["exact"], json!("v2"));
        assert_eq!(routes[0]["route"]["cluster"], json!("sidecars~v2"));
        assert_eq!(routes[1]["route"]["cluster"], json!("sidecars~v1"), "no version, or one not here: stable");
        let clusters: Vec<&str> = yaml["static_resources"]["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(clusters, ["sidecars~v1", "sidecars~v2"]);
    }
}

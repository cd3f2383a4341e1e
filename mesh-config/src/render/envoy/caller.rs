//! The caller-side Envoy: the listener callers send to, with the Meridian
//! filter before the router; the `cluster_header` routes with the retry
//! policy that moves each retry to the next region; a cluster per region
//! and an aggregate cluster per failover order.

use super::common::{
    ads_source, circuit_breakers, host_address, http2_options, listener, router, socket_address, stats_config, to_yaml,
};
use super::tls::{self, HopTls};
use super::tracing::{collector_cluster, hcm_tracing, TraceExport};
use super::{FailStrategy, HostPort};
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
    /// Mutual TLS to its gateway (the gateway's identity); `None`: plaintext.
    pub tls: Option<HopTls>,
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
    /// Spans of every call to a collector; `None`: no tracing.
    pub tracing: Option<TraceExport>,
}

/// The service name of the caller-side proxy's spans.
pub const CALLER_SERVICE: &str = "meridian-caller-proxy";

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

/// The cluster mirrored calls go to: the local region's gateway.
pub const SHADOW_CLUSTER: &str = "meridian-shadow";

/// The value of `x-meridian-outcome`, in Envoy's formatter syntax; the
/// filter parses it with `meridian_filters_core::decision::Completion::from_outcome`.
pub const OUTCOME_FORMAT: &str = "%RESP(x-meridian-region)%|%RESP(x-meridian-queue-depth)%|%RESP(x-envoy-upstream-service-time)%|%UPSTREAM_REQUEST_ATTEMPT_COUNT%|%RESP(grpc-status)%|%RESPONSE_CODE%";

/// The listener's name in [`caller_proxy`].
pub const CALLER_LISTENER: &str = "meridian_ingress";
/// Renders the caller-side bootstrap as YAML that `envoy --mode validate`
/// accepts. The filter runs in V8 with the policy's `failure_policy`
/// (`FAIL_RELOAD` by default: a VM that dies, a panic, is replaced by a
/// fresh one).
pub fn caller_proxy(proxy: &CallerProxy) -> String {
    let config = json!({
        // A node identity: SDS (mutual TLS) needs one.
        "node": { "id": format!("meridian-caller-{}", proxy.filter.region), "cluster": "meridian" },
        "admin": { "address": socket_address(proxy.admin) },
        "stats_config": stats_config(),
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
        "stats_config": stats_config(),
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

/// The caller-side route configuration (`meridian_routes`; served by RDS
/// over xDS).
pub fn caller_route_config(proxy: &CallerProxy) -> Value {
    let routes = caller_routes(&proxy.filter, &proxy.shadows, SHADOW_CLUSTER);
    let mut virtual_host = json!({ "name": "models", "domains": ["*"], "routes": routes });
    if let (Some(vh), Value::Object(extra)) = (virtual_host.as_object_mut(), caller_virtual_host_fields()) {
        vh.extend(extra);
    }
    json!({
        "name": CALLER_ROUTES,
        // Only the filter says which version a call goes to: a client's
        // value is dropped before any filter runs.
        "internal_only_headers": [headers::ROUTE_VERSION],
        "virtual_hosts": [virtual_host]
    })
}

/// The Meridian filter's configuration (an
/// `envoy.extensions.filters.http.wasm.v3.Wasm`, with its `@type`; served
/// by ECDS over xDS): V8, the module, the policy's failure policy, and
/// `plugin_config` — the filter's JSON, passed as text so that a tool can
/// push any bytes, including a configuration the filter will refuse.
pub fn meridian_wasm(proxy: &CallerProxy, plugin_config: &str) -> Value {
    json!({
        "@type": WASM_TYPE,
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
    })
}

/// The type of [`meridian_wasm`].
pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The caller side's route configuration.
pub const CALLER_ROUTES: &str = "meridian_routes";
/// The name of the Meridian filter (and of its ECDS resource).
pub const FILTER_NAME: &str = "meridian";

/// The value of `x-meridian-request`, in Envoy's formatter syntax: the
/// headers of [`headers::REQUEST_SUMMARY_FIELDS`], in order, joined by `|`
/// (Envoy writes an absent header as empty).
pub fn request_summary_format() -> String {
    headers::REQUEST_SUMMARY_FIELDS.iter().map(|h| format!("%REQ({h})%")).collect::<Vec<_>>().join("|")
}

/// The name of the early header mutation that builds `x-meridian-request`.
pub const REQUEST_SUMMARY_MUTATION: &str = "envoy.http.early_header_mutation.header_mutation";

/// The connection manager's early header mutation (Envoy's
/// `early_header_mutation_extensions`: applied to the request headers
/// before any filter, with no filter instance per request) that sets
/// `x-meridian-request` — overwriting any value a client sent — to the
/// request's routing headers in one, for the Meridian filter to read in
/// one host call instead of one per header
/// ([`FilterConfig::request_summary`]).
pub fn request_summary_mutation() -> Value {
    json!({
        "name": REQUEST_SUMMARY_MUTATION,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            "mutations": [{
                "append": {
                    "header": { "key": headers::REQUEST_SUMMARY, "value": request_summary_format() },
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                }
            }]
        }
    })
}

/// Adds [`request_summary_mutation`] to a caller-side connection manager
/// where the filter's configuration reads it.
fn add_request_summary(proxy: &CallerProxy, hcm: &mut Value) {
    if proxy.filter.request_summary {
        hcm["early_header_mutation_extensions"] = json!([request_summary_mutation()]);
    }
}

fn caller_listener(proxy: &CallerProxy, plugin_config: &str) -> Value {
    let wasm_filter = json!({ "name": FILTER_NAME, "typed_config": meridian_wasm(proxy, plugin_config) });
    let mut hcm = json!({
        "stat_prefix": CALLER_LISTENER,
        // A caller's own x-forwarded-client-cert never travels on: the
        // model servers believe what the mesh's proxies forward.
        "forward_client_cert_details": "SANITIZE",
        "route_config": caller_route_config(proxy),
        "http_filters": [wasm_filter, router()]
    });
    add_request_summary(proxy, &mut hcm);
    if let Some(export) = &proxy.tracing {
        hcm["tracing"] = hcm_tracing(export, CALLER_SERVICE);
    }
    listener(CALLER_LISTENER, proxy.listen, hcm)
}

/// The caller listener as xDS serves it: its routes by RDS
/// ([`CALLER_ROUTES`]), the filter's configuration by ECDS
/// ([`FILTER_NAME`]) — so a new filter configuration replaces neither the
/// listener nor its connections.
pub fn caller_listener_dynamic(proxy: &CallerProxy) -> Value {
    let wasm_filter = json!({
        "name": FILTER_NAME,
        "config_discovery": { "config_source": ads_source(), "type_urls": [WASM_TYPE] }
    });
    let mut hcm = json!({
        "stat_prefix": CALLER_LISTENER,
        "forward_client_cert_details": "SANITIZE",
        "rds": { "config_source": ads_source(), "route_config_name": CALLER_ROUTES },
        "http_filters": [wasm_filter, router()]
    });
    add_request_summary(proxy, &mut hcm);
    if let Some(export) = &proxy.tracing {
        hcm["tracing"] = hcm_tracing(export, CALLER_SERVICE);
    }
    listener(CALLER_LISTENER, proxy.listen, hcm)
}

/// Every cluster of the caller side: one per region, one per failover order
/// (and the shadow cluster when a model is shadowed).
pub fn caller_clusters(proxy: &CallerProxy) -> Vec<Value> {
    let mut clusters: Vec<Value> = proxy.tracing.iter().map(collector_cluster).collect();
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
    let mut cluster = json!({
        "name": name,
        "type": if upstream.addr.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "0.25s",
        "circuit_breakers": circuit_breakers(upstream.max_requests),
        "typed_extension_protocol_options": protocol,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": host_address(&upstream.addr) } }] }]
        }
    });
    if let Some(hop) = &upstream.tls {
        cluster["transport_socket"] = tls::upstream(hop);
    }
    cluster
}

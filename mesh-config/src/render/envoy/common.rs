//! Pieces every rendered bootstrap shares.

use super::HostPort;
use serde_json::{json, Value};
use std::net::SocketAddr;

pub(super) fn listener(name: &str, addr: SocketAddr, mut hcm: Value) -> Value {
    hcm["@type"] =
        json!("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager");
    hcm["codec_type"] = json!("AUTO");
    json!({
        "name": name,
        "address": socket_address(addr),
        "filter_chains": [{ "filters": [{ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm }] }]
    })
}

pub(super) fn http2_options() -> Value {
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
pub(super) fn circuit_breakers(max_requests: u32) -> Value {
    json!({ "thresholds": [{
        "max_connections": 100000, "max_pending_requests": 100000, "max_requests": max_requests, "max_retries": 100000
    }] })
}

pub(super) fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
    })
}

pub(super) fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

pub(super) fn host_address(addr: &HostPort) -> Value {
    json!({ "socket_address": { "address": addr.host, "port_value": addr.port } })
}

pub(super) fn to_yaml(config: &Value) -> String {
    serde_yaml::to_string(config).unwrap_or_else(|e| unreachable!("a JSON value always renders as YAML: {e}"))
}

/// A config source that is the ADS stream the bootstrap opened.
pub(super) fn ads_source() -> Value {
    json!({ "ads": {}, "resource_api_version": "V3" })
}

/// Envoy's `stats_config`: tag extractors that turn the region, model and
/// outcome the filter writes into its stat names
/// (`meridian.breaker.<region>.<model>`, …) into tags, so that
/// `/stats/prometheus` exports `meridian_breaker{region="…",model="…"}`
/// rather than one metric name per region. `/stats` keeps the full names.
/// Names are matched in full, with the `wasmcustom.` namespace of the
/// filter's stats; a region or model holds no dot.
pub(super) fn stats_config() -> Value {
    const SEGMENT: &str = r"[^.]+";
    let tag = |name: &str, regex: String| json!({ "tag_name": name, "regex": regex });
    let stat = |rest: &str| format!(r"^wasmcustom\.meridian\.{rest}$");
    json!({
        "stats_tags": [
            tag("region", stat(&format!(r"healthy(\.({SEGMENT}))"))),
            tag("region", stat(&format!(r"decision(\.({SEGMENT}))"))),
            tag("region", stat(&format!(r"breaker(\.({SEGMENT}))\.{SEGMENT}"))),
            tag("model", stat(&format!(r"breaker\.{SEGMENT}(\.({SEGMENT}))"))),
            tag("region", stat(&format!(r"outcome(\.({SEGMENT}))\.{SEGMENT}"))),
            tag("outcome", stat(&format!(r"outcome\.{SEGMENT}(\.({SEGMENT}))"))),
            tag("model", stat(&format!(r"canary(\.({SEGMENT}))\.{SEGMENT}"))),
        ]
    })
}

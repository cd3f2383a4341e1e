//! Distributed tracing in the proxies: Envoy's OpenTelemetry tracer on the
//! HTTP connection manager, exporting over OTLP/gRPC to a collector
//! cluster. Envoy starts (or continues) the W3C trace of every call and
//! sends `traceparent` upstream with its own span as the parent, so the
//! next hop's span nests under it; the filter's decision
//! (`x-meridian-decision`, on the request when tracing is on) and the
//! model are tagged on the span.

use super::common::{host_address, http2_options};
use super::HostPort;
use meridian_proto::headers;
use serde_json::{json, Value};

/// Where a proxy's spans go, and how many calls start a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The collector's OTLP/gRPC address.
    pub collector: HostPort,
    /// Percent of calls without a sampled parent that start a trace.
    pub sampling_percent: f64,
}

/// The cluster of the collector.
pub const COLLECTOR_CLUSTER: &str = "meridian-otlp";

/// The connection manager's `tracing`: Envoy's OpenTelemetry tracer under
/// `service_name` (what the span's resource is called in the trace).
pub fn hcm_tracing(export: &TraceExport, service_name: &str) -> Value {
    let tag = |tag: &str, header: &str| json!({ "tag": tag, "request_header": { "name": header } });
    json!({
        "random_sampling": { "value": export.sampling_percent },
        "custom_tags": [
            tag("meridian.model", headers::MODEL),
            tag("meridian.decision", headers::DECISION),
            tag("meridian.version", headers::ROUTE_VERSION)
        ],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": { "envoy_grpc": { "cluster_name": COLLECTOR_CLUSTER }, "timeout": "1s" },
                "service_name": service_name
            }
        }
    })
}

/// The collector's cluster (HTTP/2: OTLP is gRPC).
pub fn collector_cluster(export: &TraceExport) -> Value {
    json!({
        "name": COLLECTOR_CLUSTER,
        "type": if export.collector.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_options(),
        "load_assignment": {
            "cluster_name": COLLECTOR_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": host_address(&export.collector) } }] }]
        }
    })
}

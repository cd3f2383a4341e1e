//! The caller side of one region: the Meridian filter in its callers'
//! sidecars (WasmPlugin, or TrafficExtension from Istio 1.30) with the
//! plugin configuration derived for the region, and the EnvoyFilter
//! patches Istio does not generate — an aggregate cluster per failover
//! order over Istio's own `outbound|PORT||HOST` gateway clusters, the
//! `cluster_header` routes (retry policy, outcome header) first in the
//! model host's virtual host, and the early header mutation that folds the
//! request's routing headers into `x-meridian-request` in the outbound
//! connection manager.

use super::{metadata, object_name, region::gateway_address, selector, IstioVersion};
use crate::policy::spec::FailStrategy;
use crate::policy::{Policy, PolicyErrors};
use crate::render::envoy::{
    aggregate_cluster, caller_routes, caller_virtual_host_fields, request_summary_mutation, Shadow,
};
use meridian_proto::headers;
use serde_json::{json, Value};

/// Where Istio fetches the filter module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// `oci://…`, `https://…` or `file://…`.
    pub url: String,
    /// Its sha256, when pinned.
    pub sha256: Option<String>,
}

/// Istio's name for the outbound cluster of `host:port`.
pub fn istio_cluster(host: &str, port: u16) -> String {
    format!("outbound|{port}||{host}")
}

/// The caller-side documents of `region`.
pub(crate) fn render(
    policy: &Policy,
    region: &str,
    module: &Module,
    version: IstioVersion,
) -> Result<Vec<Value>, PolicyErrors> {
    let spec = policy.spec();
    let name = &spec.metadata.name;
    let filter = policy.filter_config(region).map_err(|e| PolicyErrors(vec![e]))?;
    let plugin_config = serde_json::to_value(&filter).unwrap_or_default();
    let pods = selector(&spec.istio.caller_selector, Some(region));
    let fail_strategy = match spec.fail_strategy {
        FailStrategy::FailReload => "FAIL_RELOAD",
        FailStrategy::FailOpen => "FAIL_OPEN",
        FailStrategy::FailClose => "FAIL_CLOSE",
    };
    let port = spec.caller_proxy.port;
    // Outbound calls to the model host's port only.
    let traffic_match = json!([{ "mode": "CLIENT", "ports": [{ "number": port }] }]);
    let mut wasm = json!({
        "url": module.url,
        "imagePullPolicy": "IfNotPresent",
        "failStrategy": fail_strategy,
        "pluginName": "meridian",
        "type": "HTTP",
        "pluginConfig": plugin_config
    });
    if let Some(sha) = &module.sha256 {
        wasm["sha256"] = json!(sha);
    }
    let plugin_name = object_name(&[name, region]);
    // After Istio's authentication and authorization (a refused call never
    // counts against a region), before its stats.
    let filter_doc = if version.has_traffic_extension() {
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "TrafficExtension",
            "metadata": metadata(policy, &plugin_name, Some(region)),
            "spec": {
                "selector": { "matchLabels": pods },
                "phase": "STATS",
                "priority": spec.filter.priority,
                "match": traffic_match,
                "wasm": wasm
            }
        })
    } else {
        let mut spec_doc = json!({
            "selector": { "matchLabels": pods },
            "phase": "STATS",
            "priority": spec.filter.priority,
            "match": traffic_match
        });
        if let (Some(doc), Value::Object(w)) = (spec_doc.as_object_mut(), wasm) {
            doc.extend(w);
        }
        json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": metadata(policy, &plugin_name, Some(region)),
            "spec": spec_doc
        })
    };

    // Istio's cluster of each region's gateway.
    let region_cluster = |r: &str| -> Option<String> {
        let region = spec.region(r)?;
        let addr = gateway_address(region)?;
        Some(istio_cluster(&region.gateway_host(name), addr.port))
    };
    let mut patches = Vec::new();
    for (cluster, regions) in filter.clusters() {
        let children: Vec<String> = regions.iter().filter_map(|r| region_cluster(r)).collect();
        patches.push(json!({
            "applyTo": "CLUSTER",
            "match": { "context": "SIDECAR_OUTBOUND" },
            "patch": { "operation": "ADD", "value": aggregate_cluster(&cluster, children) }
        }));
    }
    let vhost = format!("{}:{port}", spec.caller_proxy.host);
    let route_match = json!({
        "context": "SIDECAR_OUTBOUND",
        "routeConfiguration": { "portNumber": port, "vhost": { "name": vhost } }
    });
    let shadows: Vec<Shadow> =
        spec.shadows().into_iter().map(|(model, version, percent)| Shadow { model, version, percent }).collect();
    let mirror = region_cluster(region).unwrap_or_default();
    // INSERT_FIRST puts each route before the others: insert the last first.
    for route in caller_routes(&filter, &shadows, &mirror).into_iter().rev() {
        patches.push(json!({
            "applyTo": "HTTP_ROUTE",
            "match": route_match,
            "patch": { "operation": "INSERT_FIRST", "value": route }
        }));
    }
    if filter.request_summary {
        // The request's routing headers in one (`x-meridian-request`),
        // built by the outbound connection manager before any HTTP filter
        // runs; the Meridian filter reads it in one host call.
        patches.push(json!({
            "applyTo": "NETWORK_FILTER",
            "match": {
                "context": "SIDECAR_OUTBOUND",
                "listener": {
                    "portNumber": port,
                    "filterChain": { "filter": { "name": "envoy.filters.network.http_connection_manager" } }
                }
            },
            "patch": {
                "operation": "MERGE",
                "value": {
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "early_header_mutation_extensions": [request_summary_mutation()]
                    }
                }
            }
        }));
    }
    patches.push(json!({
        "applyTo": "VIRTUAL_HOST",
        "match": route_match,
        "patch": { "operation": "MERGE", "value": caller_virtual_host_fields() }
    }));
    patches.push(json!({
        // Only the filter says which version a call goes to: a caller's own
        // value is dropped before any filter runs.
        "applyTo": "ROUTE_CONFIGURATION",
        "match": { "context": "SIDECAR_OUTBOUND", "routeConfiguration": { "portNumber": port } },
        "patch": { "operation": "MERGE", "value": { "internal_only_headers": [headers::ROUTE_VERSION] } }
    }));
    let envoy_filter = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(policy, &object_name(&[name, region, "caller"]), Some(region)),
        "spec": {
            "workloadSelector": { "labels": selector(&spec.istio.caller_selector, Some(region)) },
            "configPatches": patches
        }
    });
    Ok(vec![filter_doc, envoy_filter])
}

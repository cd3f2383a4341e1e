//! Per region: the ServiceEntry and DestinationRule through which callers
//! everywhere reach its gateway, the Gateway and VirtualService that route
//! each model version to its subset, the model servers' DestinationRule,
//! and an EnvoyFilter that marks the gateway's own "no server reached"
//! replies; plus the ServiceEntry of the host callers address models by.

use super::{metadata, object_name, selector};
use crate::policy::spec::{Breaker, Region};
use crate::policy::Policy;
use crate::render::envoy::HostPort;
use meridian_proto::headers;
use serde_json::{json, Value};

/// The gateway port's name (Istio infers the protocol from its prefix too).
pub const PORT_NAME: &str = "grpc-meridian";

/// The documents of every region, and the callers' model host.
pub(crate) fn render(policy: &Policy) -> Vec<Value> {
    let spec = policy.spec();
    let name = &spec.metadata.name;
    let proxy = &spec.caller_proxy;
    let mut docs = vec![json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": metadata(policy, &object_name(&[name, "models"]), None),
        "spec": {
            // The host callers send every model call to; the Meridian
            // filter in their sidecar picks the region.
            "hosts": [proxy.host],
            "location": "MESH_INTERNAL",
            "resolution": "NONE",
            "ports": [{ "number": proxy.port, "name": PORT_NAME, "protocol": "GRPC" }]
        }
    })];
    for region in &spec.regions {
        docs.extend(region_documents(policy, region));
    }
    docs
}

/// The gateway's address as callers reach it.
pub(crate) fn gateway_address(region: &Region) -> Option<HostPort> {
    region.gateway.as_ref().and_then(|g| HostPort::parse(&g.address))
}

fn outlier_detection(b: &Breaker) -> Value {
    json!({
        "consecutive5xxErrors": b.consecutive_failures,
        "consecutiveGatewayErrors": b.consecutive_failures,
        "interval": "1s",
        "baseEjectionTime": b.base_open.max(crate::policy::Duration::from_millis(1)).to_proto_string(),
        "maxEjectionPercent": 100
    })
}

fn region_documents(policy: &Policy, region: &Region) -> Vec<Value> {
    let spec = policy.spec();
    let name = &spec.metadata.name;
    let (Some(addr), Some(service)) = (gateway_address(region), region.service.as_ref()) else { return Vec::new() };
    let gateway_host = region.gateway_host(name);
    let capacity = region.capacity.max_concurrent_requests;
    let breaker = &spec.resilience.breaker;
    let mut endpoint = json!({ "address": addr.host, "labels": { super::REGION_LABEL: region.name } });
    if let Some(locality) = &region.locality {
        endpoint["locality"] = json!(locality);
    }
    let mut docs = vec![
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": metadata(policy, &object_name(&[name, "gateway", &region.name]), Some(&region.name)),
            "spec": {
                "hosts": [gateway_host],
                "location": "MESH_INTERNAL",
                "resolution": if addr.is_ip() { "STATIC" } else { "DNS" },
                "ports": [{ "number": addr.port, "name": PORT_NAME, "protocol": "GRPC" }],
                "endpoints": [endpoint]
            }
        }),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": metadata(policy, &object_name(&[name, "gateway", &region.name]), Some(&region.name)),
            "spec": {
                "host": gateway_host,
                "trafficPolicy": {
                    "connectionPool": {
                        "tcp": { "connectTimeout": "250ms" },
                        // Istio's default retry limit per cluster is high;
                        // the filter's budget is what bounds retries.
                        "http": { "http2MaxRequests": capacity, "maxRetries": capacity }
                    },
                    "outlierDetection": outlier_detection(breaker),
                    "tls": { "mode": "ISTIO_MUTUAL" }
                }
            }
        }),
    ];
    let versions = spec.versions_in(&region.name);
    docs.push(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": metadata(policy, &object_name(&[name, "models", &region.name]), Some(&region.name)),
        "spec": {
            "host": service.host,
            "trafficPolicy": {
                "connectionPool": { "http": { "http2MaxRequests": capacity } },
                "outlierDetection": outlier_detection(breaker),
                "tls": { "mode": "ISTIO_MUTUAL" }
            },
            "subsets": versions.iter().map(|v| json!({ "name": v, "labels": { "version": v } })).collect::<Vec<_>>()
        }
    }));
    let gateway_name = object_name(&[name, &region.name]);
    docs.push(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": metadata(policy, &gateway_name, Some(&region.name)),
        "spec": {
            "selector": selector(&spec.istio.gateway_selector, Some(&region.name)),
            "servers": [{
                "port": { "number": addr.port, "name": PORT_NAME, "protocol": "GRPC" },
                // Callers' sidecars keep the model host as authority; the
                // filter's health probes use their own.
                "hosts": ["*"],
                "tls": { "mode": "ISTIO_MUTUAL" }
            }]
        }
    }));
    let destination = |subset: &str| json!([{ "destination": { "host": service.host, "port": { "number": service.port }, "subset": subset } }]);
    let stamp = json!({ "response": { "set": { headers::REGION: region.name } } });
    // The caller side retries across regions; the gateway does not retry.
    let no_retries = json!({ "attempts": 0 });
    let mut routes = Vec::new();
    for (model, version, _) in spec.shadows() {
        if versions.contains(&version) {
            routes.push(json!({
                "name": object_name(&["shadow", &model]),
                // Envoy marks a mirrored call's authority with `-shadow`.
                "match": [{ "authority": { "regex": ".*-shadow.*" } }],
                "route": destination(&version),
                "headers": stamp,
                "retries": no_retries
            }));
            break;
        }
    }
    let default_version = spec.default_version();
    for version in versions.iter().filter(|v| **v != default_version) {
        routes.push(json!({
            "name": object_name(&["version", version]),
            "match": [{ "headers": { headers::ROUTE_VERSION: { "exact": version } } }],
            "route": destination(version),
            "headers": stamp,
            "retries": no_retries
        }));
    }
    for (model, version) in spec.models_off_default() {
        routes.push(json!({
            "name": object_name(&["model", &model]),
            "match": [{ "headers": { headers::MODEL: { "exact": model } } }],
            "route": destination(&version),
            "headers": stamp,
            "retries": no_retries
        }));
    }
    routes.push(
        json!({ "name": "default", "route": destination(&default_version), "headers": stamp, "retries": no_retries }),
    );
    docs.push(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata(policy, &gateway_name, Some(&region.name)),
        "spec": {
            "hosts": ["*"],
            "gateways": [gateway_name],
            "http": routes
        }
    }));
    docs.push(json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": metadata(policy, &object_name(&[name, &region.name, "gateway"]), Some(&region.name)),
        "spec": {
            "workloadSelector": { "labels": selector(&spec.istio.gateway_selector, Some(&region.name)) },
            "configPatches": [{
                // A reply the gateway made because no model server could be
                // reached says so: the caller side may then retry even a
                // call that must not run twice.
                "applyTo": "NETWORK_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": { "filterChain": { "filter": { "name": "envoy.filters.network.http_connection_manager" } } }
                },
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "local_reply_config": {
                                "mappers": [{
                                    "filter": { "response_flag_filter": { "flags": ["UF", "UH", "UO"] } },
                                    "headers_to_add": [{
                                        "header": { "key": headers::UNREACHED, "value": "1" },
                                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                                    }]
                                }]
                            }
                        }
                    }
                }
            }]
        }
    }));
    docs
}

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
    pub addr: SocketAddr,
    /// Speak HTTP/2 to it (gRPC, health probes). Off: HTTP/1.1 or HTTP/2
    /// as the caller did.
    pub http2: bool,
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
    /// Shadow traffic, if any.
    pub shadow: Option<Shadow>,
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
/// accepts. The filter runs in V8 with `failure_policy: FAIL_RELOAD`: a VM
/// that dies (a panic) is replaced by a fresh one.
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

fn caller_listener(proxy: &CallerProxy, plugin_config: &str) -> Value {
    // The filter sets per request only what differs from these defaults
    // (fewer retries under the budget, another per-try timeout, the
    // not-idempotent class): most requests need one header, the cluster.
    let defaults = &proxy.filter.default_model.retry;
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
            "timeout": "30s",
            // A gRPC caller's own deadline (grpc-timeout) bounds the call.
            "max_stream_duration": { "grpc_timeout_header_max": "0s" },
            "retry_policy": retry_policy(retry_on)
        })
    };
    let mut routes = Vec::new();
    // The not-idempotent route exists only when some model needs it.
    let any_unsafe = proxy.filter.models.values().chain([&proxy.filter.default_model]).any(|m| !m.retry.idempotent);
    if any_unsafe {
        routes.push(json!({
            "match": {
                "prefix": "/",
                "headers": [{ "name": RETRY_CLASS_HEADER, "string_match": { "exact": RETRY_CLASS_NOT_IDEMPOTENT } }]
            },
            "route": route(RETRY_ON_NOT_IDEMPOTENT)
        }));
    }
    routes.push(json!({ "match": { "prefix": "/" }, "route": route(RETRY_ON_IDEMPOTENT) }));
    if let Some(shadow) = &proxy.shadow {
        // The same routes for the shadowed model, first, with the mirror.
        let mut mirrored: Vec<Value> = routes.clone();
        for r in &mut mirrored {
            let model = json!({ "name": headers::MODEL, "string_match": { "exact": shadow.model } });
            match r["match"]["headers"].as_array_mut() {
                Some(h) => h.push(model),
                None => r["match"]["headers"] = json!([model]),
            }
            r["route"]["request_mirror_policies"] = json!([{
                "cluster": SHADOW_CLUSTER,
                "runtime_fraction": { "default_value": { "numerator": shadow.percent, "denominator": "HUNDRED" } }
            }]);
        }
        mirrored.extend(routes);
        routes = mirrored;
    }
    let wasm_filter = json!({
        "name": "meridian",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "meridian",
                "root_id": "meridian",
                "failure_policy": "FAIL_RELOAD",
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
                "virtual_hosts": [{
                    "name": "models",
                    "domains": ["*"],
                    // x-envoy-attempt-count on responses: how many regions
                    // a call tried, read by the filter.
                    "include_attempt_count_in_response": true,
                    // Everything the filter needs of a response in one
                    // header: one host call instead of six.
                    "response_headers_to_add": [{
                        "header": { "key": headers::OUTCOME, "value": OUTCOME_FORMAT },
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                    }],
                    "routes": routes
                }]
            },
            "http_filters": [wasm_filter, router()]
        }),
    )
}

fn caller_clusters(proxy: &CallerProxy) -> Vec<Value> {
    let mut clusters: Vec<Value> = Vec::new();
    if proxy.shadow.is_some() {
        if let Some(local) = proxy.regions.iter().find(|r| r.region == proxy.filter.region) {
            clusters.push(region_cluster(SHADOW_CLUSTER, local));
        }
    }
    for (name, regions) in proxy.filter.clusters() {
        if let [region] = regions.as_slice() {
            let Some(upstream) = proxy.regions.iter().find(|r| &r.region == region) else { continue };
            clusters.push(region_cluster(&name, upstream));
        } else {
            clusters.push(json!({
                "name": name,
                "connect_timeout": "0.25s",
                "lb_policy": "CLUSTER_PROVIDED",
                "circuit_breakers": circuit_breakers(),
                "cluster_type": {
                    "name": "envoy.clusters.aggregate",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                        "clusters": regions.iter().map(|r| cluster_name(&[r])).collect::<Vec<_>>()
                    }
                }
            }));
        }
    }
    clusters
}

/// What [`region_gateway`] renders.
#[derive(Debug, Clone)]
pub struct RegionGateway {
    /// The region's name, stamped on responses.
    pub region: String,
    /// Envoy's admin listener.
    pub admin: SocketAddr,
    /// The gateway's listener.
    pub listen: SocketAddr,
    /// The region's sidecars (gRPC): the stable version's, and every call's
    /// without a version (or with one this region does not run).
    pub sidecars: Vec<SocketAddr>,
    /// Sidecars per other model version (canary splits): calls whose
    /// `x-meridian-route-version` names the version go to them.
    pub versions: Vec<(String, Vec<SocketAddr>)>,
    /// The version (one of `versions`) that mirrored calls (authority
    /// holding `-shadow`) go to, if any.
    pub shadow: Option<String>,
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
    let config = json!({
        "admin": { "address": socket_address(gateway.admin) },
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
                    "virtual_hosts": [{
                        "name": "sidecars",
                        "domains": ["*"],
                        "routes": gateway.shadow.iter().map(|version| json!({
                            "match": {
                                "prefix": "/",
                                // Envoy marks a mirrored call's authority with
                                // `-shadow` (before the port, where there is one).
                                "headers": [{ "name": ":authority", "string_match": { "contains": "-shadow" } }]
                            },
                            "route": { "cluster": format!("sidecars~{version}"), "timeout": "0s" }
                        })).chain(gateway.versions.iter().map(|(version, _)| json!({
                            "match": {
                                "prefix": "/",
                                "headers": [{ "name": headers::ROUTE_VERSION, "string_match": { "exact": version } }]
                            },
                            "route": { "cluster": format!("sidecars~{version}"), "timeout": "0s" },
                            "typed_per_filter_config": version_fault(version)
                        }))).chain([json!({ "match": { "prefix": "/" }, "route": { "cluster": "sidecars", "timeout": "0s" } })])
                        .collect::<Vec<_>>()
                    }]
                },
                "http_filters": [fault, router()]
            }))],
            "clusters": std::iter::once(sidecar_cluster("sidecars", &gateway.sidecars))
                .chain(gateway.versions.iter().map(|(v, addrs)| sidecar_cluster(&format!("sidecars~{v}"), addrs)))
                .collect::<Vec<_>>()
        }
    });
    to_yaml(&config)
}

fn sidecar_cluster(name: &str, sidecars: &[SocketAddr]) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "circuit_breakers": circuit_breakers(),
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
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "circuit_breakers": circuit_breakers(),
        "typed_extension_protocol_options": protocol,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(upstream.addr) } }] }]
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
fn circuit_breakers() -> Value {
    json!({ "thresholds": [{
        "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000, "max_retries": 100000
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

fn to_yaml(config: &Value) -> String {
    serde_yaml::to_string(config).unwrap_or_else(|e| unreachable!("a JSON value always renders as YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> CallerProxy {
        let filter =
            FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")]);
        let up = |region: &str, addr: &str| RegionUpstream {
            region: region.into(),
            addr: addr.parse().expect("addr"),
            http2: true,
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
            shadow: None,
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
            admin: "127.0.1.1:0".parse().expect("addr"),
            listen: "127.0.1.1:0".parse().expect("addr"),
            sidecars: vec!["127.0.1.2:8001".parse().expect("addr"), "127.0.1.3:8001".parse().expect("addr")],
            versions: vec![],
            shadow: None,
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
        p.shadow = Some(Shadow { model: "mlp".into(), version: "v2".into(), percent: 25 });
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
        let addr = |s: &str| s.parse().expect("addr");
        let yaml = parse(&region_gateway(&RegionGateway {
            region: "eu-west".into(),
            admin: addr("127.0.1.1:0"),
            listen: addr("127.0.1.1:0"),
            sidecars: vec![addr("127.0.1.2:8001")],
            versions: vec![("v2".into(), vec![addr("127.0.1.3:8001")])],
            shadow: None,
        }));
        let hcm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0]["match"]["headers"][0]["name"], json!("x-meridian-route-version"));
        assert_eq!(routes[0]["match"]["headers"][0]["string_match"]["exact"], json!("v2"));
        assert_eq!(routes[0]["route"]["cluster"], json!("sidecars~v2"));
        assert_eq!(routes[1]["route"]["cluster"], json!("sidecars"), "no version, or one not here: stable");
        let clusters: Vec<&str> = yaml["static_resources"]["clusters"]
            .as_array()
            .expect("clusters")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(clusters, ["sidecars", "sidecars~v2"]);
    }
}

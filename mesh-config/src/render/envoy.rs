//! Plain Envoy bootstrap configuration (no Istio) with the Meridian filter.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;

/// What [`bootstrap`] needs to render a one-listener Envoy with the Meridian
/// wasm filter in front of one upstream.
#[derive(Debug, Clone)]
pub struct FilterProxy {
    /// Envoy's admin listener (port 0: Envoy picks one).
    pub admin: SocketAddr,
    /// The listener callers send requests to (port 0: Envoy picks one).
    pub listen: SocketAddr,
    /// The upstream every request is routed to.
    pub upstream: SocketAddr,
    /// The built `meridian_filters.wasm`.
    pub wasm: PathBuf,
    /// The filter's plugin configuration, as JSON.
    pub plugin_config: Value,
}

/// Renders the bootstrap as YAML that `envoy --mode validate` accepts.
///
/// The filter runs in Envoy's V8 runtime with `failure_policy: FAIL_RELOAD`,
/// so a VM that dies (a panic) is replaced by a fresh one rather than
/// failing every later request. The upstream cluster speaks HTTP/1.1 or
/// HTTP/2 as the caller did (`use_downstream_protocol_config`), so both
/// plain HTTP and gRPC pass through.
pub fn bootstrap(proxy: &FilterProxy) -> String {
    let plugin_config = proxy.plugin_config.to_string();
    let config = json!({
        "admin": { "address": socket_address(proxy.admin) },
        "static_resources": {
            "listeners": [{
                "name": "meridian_ingress",
                "address": socket_address(proxy.listen),
                "filter_chains": [{
                    "filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "meridian_ingress",
                            "codec_type": "AUTO",
                            "route_config": {
                                "name": "meridian_routes",
                                "virtual_hosts": [{
                                    "name": "all",
                                    "domains": ["*"],
                                    "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": "upstream", "timeout": "30s" } }]
                                }]
                            },
                            "http_filters": [
                                {
                                    "name": "meridian",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                        "config": {
                                            "name": "meridian",
                                            "root_id": "meridian",
                                            "failure_policy": "FAIL_RELOAD",
                                            "configuration": {
                                                "@type": "type.googleapis.com/google.protobuf.StringValue",
                                                "value": plugin_config
                                            },
                                            "vm_config": {
                                                "vm_id": "meridian",
                                                "runtime": "envoy.wasm.runtime.v8",
                                                "code": { "local": { "filename": proxy.wasm.display().to_string() } }
                                            }
                                        }
                                    }
                                },
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" }
                                }
                            ]
                        }
                    }]
                }]
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "use_downstream_protocol_config": {}
                    }
                },
                "load_assignment": {
                    "cluster_name": "upstream",
                    "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": socket_address(proxy.upstream) } }] }]
                }
            }]
        }
    });
    serde_yaml::to_string(&config).unwrap_or_else(|e| unreachable!("a JSON value always renders as YAML: {e}"))
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> FilterProxy {
        FilterProxy {
            admin: "127.0.0.1:0".parse().expect("addr"),
            listen: "127.0.1.1:10000".parse().expect("addr"),
            upstream: "127.0.2.1:8001".parse().expect("addr"),
            wasm: PathBuf::from("/x/meridian_filters.wasm"),
            plugin_config: json!({"name": "meridian"}),
        }
    }

    #[test]
    fn embeds_the_plugin_config_as_a_string_value() {
        let yaml: Value = serde_yaml::from_str(&bootstrap(&proxy())).expect("yaml");
        let wasm = &yaml["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["configuration"]["value"], json!(r#"{"name":"meridian"}"#));
        assert_eq!(wasm["vm_config"]["code"]["local"]["filename"], json!("/x/meridian_filters.wasm"));
        assert_eq!(wasm["failure_policy"], json!("FAIL_RELOAD"));
    }

    #[test]
    fn routes_to_the_upstream_address() {
        let yaml: Value = serde_yaml::from_str(&bootstrap(&proxy())).expect("yaml");
        let endpoint =
            &yaml["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"];
        assert_eq!(endpoint["address"]["socket_address"]["address"], json!("127.0.2.1"));
        assert_eq!(endpoint["address"]["socket_address"]["port_value"], json!(8001));
        let listener = &yaml["static_resources"]["listeners"][0]["address"]["socket_address"];
        assert_eq!(listener["address"], json!("127.0.1.1"));
        assert_eq!(listener["port_value"], json!(10000));
    }
}

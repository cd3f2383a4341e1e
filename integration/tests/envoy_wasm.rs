//! The pipeline end to end: the built `.wasm` loads in the real Envoy 1.40,
//! its configuration is validated, and a request through the listener shows
//! the filter ran on both the request and the response.

use meridian_integration::{envoy, http, upstream::EchoUpstream, wasm_path};
use meridian_mesh_config::render::envoy::{bootstrap, FilterProxy};
use serde_json::json;

fn config(upstream: std::net::SocketAddr, plugin_config: serde_json::Value) -> String {
    bootstrap(&FilterProxy {
        admin: "127.0.0.1:0".parse().expect("addr"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstream,
        wasm: wasm_path().expect("the filters are built"),
        plugin_config,
    })
}

#[test]
fn envoy_validates_the_rendered_config() {
    let out = envoy::validate(&config("127.0.0.1:1".parse().expect("addr"), json!({"name": "meridian-test"})))
        .expect("envoy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "validate failed:\n{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration") || stderr.contains("OK"), "{stderr}");
}

#[test]
fn envoy_rejects_a_bad_plugin_config_at_validation() {
    let out =
        envoy::validate(&config("127.0.0.1:1".parse().expect("addr"), json!({"nmae": "typo"}))).expect("envoy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "validate accepted a bad plugin config:\n{stderr}");
    assert!(stderr.contains("unknown field `nmae`"), "the filter's log names the field:\n{stderr}");
}

#[test]
fn a_request_through_envoy_runs_the_filter() {
    let upstream = EchoUpstream::start("127.0.0.1").expect("echo upstream");
    let envoy = envoy::Envoy::start(&config(upstream.addr(), json!({"name": "meridian-test"}))).expect("envoy starts");
    let listener = envoy.listener("meridian_ingress").expect("listener bound");

    // The client tries to forge the filter's header; the filter overwrites it.
    let response = http::request(listener, "GET", "/hello", &[("x-meridian-filter", "forged")]).expect("request");
    assert_eq!(response.status, 200, "{response:?}\n{}", envoy.log());
    assert_eq!(response.header("x-meridian-filter"), Some("meridian-test"), "response stamped by the filter");
    let forwarded = response.body.to_ascii_lowercase();
    assert!(forwarded.contains("x-meridian-filter: meridian-test"), "upstream saw the filter's header:\n{forwarded}");
    assert!(!forwarded.contains("forged"), "the client's value was overwritten:\n{forwarded}");
    assert_eq!(envoy.stat("cluster.upstream.upstream_rq_completed").expect("stats"), Some(1));
}

//! The pipeline end to end: the built `.wasm` loads in the real Envoy 1.40,
//! its configuration is validated, and a request through the listener shows
//! the filter ran on both the request and the response.

use meridian_filters_core::FilterConfig;
use meridian_integration::{envoy, http, upstream::EchoUpstream, wasm_path};
use meridian_mesh_config::render::envoy::{caller_proxy, CallerProxy, RegionUpstream};
use serde_json::json;

/// One region, "local", served by `upstream` over HTTP/1.1 (health probes
/// would fail against the echo server, so they never count).
fn filter(name: &str) -> FilterConfig {
    let mut filter = FilterConfig::new(name, "local", &[("local", "eu")]);
    filter.health.unhealthy_threshold = u32::MAX;
    filter.debug.decision_header = true;
    filter
}

fn config(upstream: std::net::SocketAddr, filter: FilterConfig) -> String {
    caller_proxy(&CallerProxy {
        admin: "127.0.0.1:0".parse().expect("addr"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        regions: vec![RegionUpstream {
            region: "local".into(),
            addr: upstream.into(),
            http2: false,
            max_requests: 1_000,
            tls: None,
        }],
        wasm: wasm_path().expect("the filters are built"),
        filter,
        shadows: Vec::new(),
        fail_strategy: Default::default(),
        tracing: None,
    })
}

/// Puts `key: value` into the rendered plugin configuration, unchecked.
fn with_plugin_key(yaml: &str, key: &str, value: serde_json::Value) -> String {
    let mut doc: serde_json::Value = serde_yaml::from_str(yaml).expect("yaml");
    let filters = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array_mut()
        .expect("http filters");
    let wasm = filters.iter_mut().find(|f| f["name"] == "meridian").expect("the Meridian filter");
    let config = &mut wasm["typed_config"]["config"]["configuration"]["value"];
    let mut plugin: serde_json::Value = serde_json::from_str(config.as_str().expect("string")).expect("json");
    plugin[key] = value;
    *config = json!(plugin.to_string());
    serde_yaml::to_string(&doc).expect("yaml")
}

#[test]
fn envoy_validates_the_rendered_config() {
    let out =
        envoy::validate(&config("127.0.0.1:1".parse().expect("addr"), filter("meridian-test"))).expect("envoy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "validate failed:\n{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration") || stderr.contains("OK"), "{stderr}");
}

#[test]
fn envoy_rejects_a_bad_plugin_config_at_validation() {
    let rendered = config("127.0.0.1:1".parse().expect("addr"), filter("meridian-test"));
    let out = envoy::validate(&with_plugin_key(&rendered, "nmae", json!("typo"))).expect("envoy runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "validate accepted a bad plugin config:\n{stderr}");
    assert!(stderr.contains("unknown field `nmae`"), "the filter's log names the field:\n{stderr}");
}

#[test]
fn a_request_through_envoy_runs_the_filter() {
    let upstream = EchoUpstream::start("127.0.0.1").expect("echo upstream");
    let envoy = envoy::Envoy::start(&config(upstream.addr(), filter("meridian-test"))).expect("envoy starts");
    let listener = envoy.listener("meridian_ingress").expect("listener bound");

    // The client tries to forge the mesh's headers and to steer Envoy's retries.
    let forged = [
        ("x-meridian-filter", "forged"),
        ("x-meridian-cluster", "meridian~forged"),
        ("x-envoy-max-retries", "9"),
        ("x-envoy-force-trace", "true"),
        ("x-envoy-foo", "bar"),
        ("x-meridian-route-version", "forged"),
    ];
    let response = http::request(listener, "GET", "/hello", &forged).expect("request");
    assert_eq!(response.status, 200, "{response:?}\n{}", envoy.log());
    assert_eq!(response.header("x-meridian-filter"), Some("meridian-test"), "response stamped by the filter");
    let outcome = response.header("x-meridian-outcome").unwrap_or_default();
    assert!(outcome.starts_with("||") && outcome.ends_with("|1||200"), "the route's outcome summary: {outcome}");
    let forwarded = response.body.to_ascii_lowercase();
    assert!(forwarded.contains("x-meridian-filter: meridian-test"), "upstream saw the filter's header:\n{forwarded}");
    assert!(forwarded.contains("x-meridian-cluster: meridian~local"), "routed by the filter:\n{forwarded}");
    assert!(!forwarded.contains("forged"), "the client's values were overwritten:\n{forwarded}");
    // Envoy itself drops client-sent retry and tracing controls.
    assert!(!forwarded.contains("x-envoy-max-retries") && !forwarded.contains("x-envoy-force-trace"), "{forwarded}");
    assert_eq!(envoy.stat("cluster.meridian~local.upstream_rq_completed").expect("stats"), Some(1));
}

/// With the request summary on, as every policy renders it: the request's
/// routing headers reach the filter in one `x-meridian-request` (a
/// client's own value replaced), the route still follows the filter's
/// cluster header (Envoy clears the route cache on the filter's header
/// write), and the outcome is counted.
#[test]
fn the_request_summary_carries_the_routing_headers_in_one() {
    let upstream = EchoUpstream::start("127.0.0.1").expect("echo upstream");
    let mut config = filter("meridian-test");
    config.request_summary = true;
    let envoy = envoy::Envoy::start(&self::config(upstream.addr(), config)).expect("envoy starts");
    let listener = envoy.listener("meridian_ingress").expect("listener bound");
    let sent = [
        ("x-meridian-model", "mlp"),
        ("x-meridian-residency", "eu"),
        ("grpc-timeout", "2S"),
        ("x-meridian-request", "forged|us|||||"),
    ];
    let response = http::request(listener, "GET", "/hello", &sent).expect("request");
    assert_eq!(response.status, 200, "{response:?}\n{}", envoy.log());
    let forwarded = response.body.to_ascii_lowercase();
    assert!(forwarded.contains("x-meridian-request: mlp|eu||||2s"), "built by Envoy, not the client:\n{forwarded}");
    assert!(!forwarded.contains("forged"), "{forwarded}");
    assert!(forwarded.contains("x-meridian-cluster: meridian~local"), "routed by the filter:\n{forwarded}");
    let stat = |name: &str| envoy.stat(&format!("wasmcustom.meridian.{name}")).expect("stats").unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // Counters reach Envoy on the filter's next tick.
    while stat("outcome.local.success") + stat("outcome.local.failure") == 0 {
        assert!(std::time::Instant::now() < deadline, "no outcome counted:\n{}", envoy.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(stat("outcome.local.success"), 1);
    assert_eq!(stat("outcome.local.failure"), 0);
    assert_eq!(stat("request_summary.missing") + stat("request_summary.ambiguous"), 0, "one read, no fallback");
}

#[test]
fn a_region_gateway_with_model_versions_is_valid_envoy_config() {
    use meridian_mesh_config::render::envoy::{region_gateway, RegionGateway};
    let addr = |s: &str| s.parse().expect("addr");
    let yaml = region_gateway(&RegionGateway {
        region: "eu-west".into(),
        admin: Some(addr("127.0.1.1:0")),
        listen: addr("127.0.1.1:0"),
        versions: vec![
            ("v1".into(), vec![addr("127.0.1.2:8001")]),
            ("v2".into(), vec![addr("127.0.1.3:8001"), addr("127.0.1.4:8001")]),
        ],
        default_version: "v1".into(),
        model_defaults: vec![("resnet".into(), "v2".into())],
        shadow: Some("v2".into()),
        max_requests: 1_000,
        tls: None,
        tracing: None,
    });
    let out = envoy::validate(&yaml).expect("envoy runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

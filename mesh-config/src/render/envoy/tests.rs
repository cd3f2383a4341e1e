use super::*;
use meridian_filters_core::decision::{RETRY_ON_IDEMPOTENT, RETRY_ON_NOT_IDEMPOTENT};
use meridian_filters_core::FilterConfig;
use serde_json::{json, Value};
use std::path::PathBuf;

fn proxy() -> CallerProxy {
    let filter =
        FilterConfig::new("meridian", "eu-west", &[("eu-west", "eu"), ("eu-central", "eu"), ("us-east", "us")]);
    let up = |region: &str, addr: &str| RegionUpstream {
        region: region.into(),
        addr: HostPort::parse(addr).expect("addr"),
        http2: true,
        max_requests: 1_000,
        tls: None,
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
        tracing: None,
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
    let ep = &eu_west["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
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
        tls: None,
        tracing: None,
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
        tls: None,
        tracing: None,
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

#[test]
fn a_filter_that_reads_the_request_summary_gets_the_mutation_that_builds_it() {
    let hcm = |proxy: &CallerProxy, dynamic: bool| -> Value {
        let listener = if dynamic {
            caller_listener_dynamic(proxy)
        } else {
            parse(&caller_proxy(proxy))["static_resources"]["listeners"][0].clone()
        };
        listener["filter_chains"][0]["filters"][0]["typed_config"].clone()
    };
    let names = |hcm: &Value| -> Vec<Value> {
        hcm["http_filters"].as_array().expect("filters").iter().map(|f| f["name"].clone()).collect()
    };
    let mut p = proxy();
    assert_eq!(names(&hcm(&p, false)), [json!("meridian"), json!("envoy.filters.http.router")], "not asked for");
    assert!(hcm(&p, false).get("early_header_mutation_extensions").is_none());
    p.filter.request_summary = true;
    for dynamic in [false, true] {
        let hcm = hcm(&p, dynamic);
        assert_eq!(names(&hcm), [json!("meridian"), json!("envoy.filters.http.router")], "dynamic: {dynamic}");
        assert_eq!(hcm["early_header_mutation_extensions"], json!([request_summary_mutation()]), "dynamic: {dynamic}");
    }
    let summary = request_summary_mutation();
    let set = &summary["typed_config"]["mutations"][0]["append"];
    assert_eq!(set["header"]["key"], json!("x-meridian-request"));
    assert_eq!(
        set["header"]["value"],
        json!(
            "%REQ(x-meridian-model)%|%REQ(x-meridian-residency)%|%REQ(x-meridian-caller)%|\
             %REQ(x-meridian-caller-region)%|%REQ(x-meridian-version)%|%REQ(grpc-timeout)%"
        )
    );
    // A client's own value is replaced, never appended to.
    assert_eq!(set["append_action"], json!("OVERWRITE_IF_EXISTS_OR_ADD"));
}

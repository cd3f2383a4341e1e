//! The Istio rendering's Envoy side, in the real Envoy. No istiod can run
//! here, so this test does what istiod does with the rendered resources on
//! one caller's sidecar — an outbound listener for the model port whose
//! route configuration holds Istio's virtual host for the model host,
//! Istio's `outbound|PORT||HOST` clusters for every region's gateway (here
//! pointing at the local mesh's gateways), the filter with the
//! TrafficExtension's `pluginConfig` and `failStrategy` — and applies the
//! rendered EnvoyFilter's patches (CLUSTER ADD, HTTP_ROUTE INSERT_FIRST,
//! NETWORK_FILTER, VIRTUAL_HOST and ROUTE_CONFIGURATION MERGE) as istiod
//! applies them. Then
//! calls go through it: the patch values are configuration Envoy accepts,
//! the filter routes through the aggregate clusters built over Istio's
//! cluster names, its health probes reach every region, and a call failing
//! in its region is retried in the next one within the same client call.

use meridian_integration::envoy::Envoy;
use meridian_integration::load::{call, connect, CallSpec, Record};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_mesh_config::policy::spec::Service;
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::envoy::HostPort;
use meridian_mesh_config::render::istio::{render, IstioOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Protobuf merge on JSON, as istiod's MERGE: messages merge field by
/// field, lists append, anything else is replaced.
fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot, v) => *slot = v.clone(),
    }
}

fn route_config<'a>(bootstrap: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    bootstrap["static_resources"]["listeners"]
        .as_array_mut()?
        .iter_mut()
        .map(|l| &mut l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"])
        .find(|rc| rc["name"] == json!(name))
}

/// Applies an EnvoyFilter's patches to a bootstrap's static resources;
/// a patch kind this does not know fails the test.
fn apply(bootstrap: &mut Value, envoy_filter: &Value) -> anyhow::Result<usize> {
    let mut applied = 0;
    for patch in envoy_filter["spec"]["configPatches"].as_array().into_iter().flatten() {
        let kind =
            (patch["applyTo"].as_str().unwrap_or_default(), patch["patch"]["operation"].as_str().unwrap_or_default());
        let value = &patch["patch"]["value"];
        let routing = &patch["match"]["routeConfiguration"];
        anyhow::ensure!(patch["match"]["context"] == "SIDECAR_OUTBOUND", "an outbound sidecar patch: {patch}");
        if kind == ("CLUSTER", "ADD") {
            let clusters =
                bootstrap["static_resources"]["clusters"].as_array_mut().ok_or_else(|| anyhow::anyhow!("clusters"))?;
            clusters.push(value.clone());
            applied += 1;
            continue;
        }
        if kind == ("NETWORK_FILTER", "MERGE") {
            let listener = &patch["match"]["listener"];
            anyhow::ensure!(
                listener["filterChain"]["filter"]["name"] == "envoy.filters.network.http_connection_manager",
                "a network filter patch names the HTTP connection manager: {patch}"
            );
            let port = listener["portNumber"].as_u64().ok_or_else(|| anyhow::anyhow!("no portNumber: {patch}"))?;
            let hcm_filter = bootstrap["static_resources"]["listeners"]
                .as_array_mut()
                .and_then(|ls| {
                    ls.iter_mut()
                        .map(|l| &mut l["filter_chains"][0]["filters"][0])
                        .find(|f| f["typed_config"]["route_config"]["name"] == json!(port.to_string()))
                })
                .ok_or_else(|| anyhow::anyhow!("no outbound listener for port {port}"))?;
            merge(hcm_filter, value);
            applied += 1;
            continue;
        }
        let port = routing["portNumber"].as_u64().ok_or_else(|| anyhow::anyhow!("no portNumber: {patch}"))?;
        let rc = route_config(bootstrap, &port.to_string()).ok_or_else(|| anyhow::anyhow!("no route config {port}"))?;
        if kind == ("ROUTE_CONFIGURATION", "MERGE") {
            merge(rc, value);
            applied += 1;
            continue;
        }
        let vhost = routing["vhost"]["name"].as_str().ok_or_else(|| anyhow::anyhow!("no vhost name: {patch}"))?;
        let vh = rc["virtual_hosts"]
            .as_array_mut()
            .and_then(|vs| vs.iter_mut().find(|v| v["name"] == json!(vhost)))
            .ok_or_else(|| anyhow::anyhow!("no virtual host {vhost}"))?;
        match kind {
            ("VIRTUAL_HOST", "MERGE") => merge(vh, value),
            ("HTTP_ROUTE", "INSERT_FIRST") => {
                vh["routes"].as_array_mut().ok_or_else(|| anyhow::anyhow!("routes"))?.insert(0, value.clone())
            }
            other => anyhow::bail!("the test does not apply {other:?} patches"),
        }
        applied += 1;
    }
    Ok(applied)
}

fn http2() -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    })
}

/// What istiod would give a caller's sidecar in eu-west for the rendered
/// resources, before the EnvoyFilter: `gateways` maps each region's Istio
/// cluster name to where that gateway listens here.
fn istio_sidecar(
    plugin: &Value,
    model_host: &str,
    model_port: u16,
    gateways: &[(String, HostPort)],
) -> anyhow::Result<Value> {
    let wasm = meridian_integration::wasm_path()?;
    let failure_policy = match plugin["spec"]["wasm"]["failStrategy"].as_str() {
        Some("FAIL_OPEN") => "FAIL_OPEN",
        Some("FAIL_CLOSE") => "FAIL_CLOSED",
        _ => "FAIL_RELOAD",
    };
    let mut clusters: Vec<Value> = gateways
        .iter()
        .map(|(name, addr)| {
            json!({
                "name": name,
                "type": "STATIC",
                "connect_timeout": "0.25s",
                "typed_extension_protocol_options": http2(),
                "load_assignment": { "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                    "socket_address": { "address": addr.host, "port_value": addr.port } } } }] }] }
            })
        })
        .collect();
    // The model host's own cluster (a ServiceEntry with resolution NONE):
    // nothing listens there; only the filter's routes lead anywhere.
    let model_cluster = format!("outbound|{model_port}||{model_host}");
    clusters.push(json!({ "name": model_cluster, "type": "STATIC", "connect_timeout": "0.25s",
        "load_assignment": { "cluster_name": model_cluster, "endpoints": [] } }));
    Ok(json!({
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } } },
        "static_resources": {
            "listeners": [{
                "name": "meridian_ingress",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": 0 } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": format!("outbound_0.0.0.0_{model_port}"),
                        "codec_type": "AUTO",
                        "route_config": {
                            "name": model_port.to_string(),
                            "virtual_hosts": [{
                                "name": format!("{model_host}:{model_port}"),
                                "domains": [model_host, format!("{model_host}:{model_port}"), "*"],
                                "routes": [{ "name": "default", "match": { "prefix": "/" },
                                             "route": { "cluster": model_cluster, "timeout": "0s" } }]
                            }]
                        },
                        "http_filters": [
                            {
                                "name": "meridian",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                                    "config": {
                                        "name": "meridian",
                                        "root_id": plugin["spec"]["wasm"]["pluginName"],
                                        "failure_policy": failure_policy,
                                        "configuration": {
                                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                                            "value": plugin["spec"]["wasm"]["pluginConfig"].to_string()
                                        },
                                        "vm_config": { "runtime": "envoy.wasm.runtime.v8",
                                                       "code": { "local": { "filename": wasm.display().to_string() } } }
                                    }
                                }
                            },
                            { "name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }
                        ]
                    }
                }] }]
            }],
            "clusters": clusters
        }
    }))
}

async fn calls(addr: std::net::SocketAddr, n: u32) -> anyhow::Result<Vec<Record>> {
    let mut client = connect(addr).await?;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(call(&mut client, &CallSpec::new(MODEL, 16), i).await);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_envoyfilter_routes_and_fails_over_in_real_envoy() -> anyhow::Result<()> {
    // The test mesh with what Istio needs: each region's Service and the module's URL.
    // Breakers held closed: a failing region stays first, so retries are what rescue calls.
    // The budget out of the way: every failing call may be retried.
    let mut spec = MeshSpec::three_regions()?.with_breakers_held_closed();
    spec.policy.resilience.budget.ratio = 1.0;
    spec.policy.resilience.budget.min_retries = 1_000;
    for r in &mut spec.policy.regions {
        r.service = Some(Service { host: format!("models.{}.svc.cluster.local", r.name), port: 8001 });
    }
    spec.policy.filter.url = Some("oci://registry.example.com/meridian-filters:test".into());
    let policy = Policy::from_spec(spec.policy.clone()).map_err(anyhow::Error::msg)?;
    let rendered = render(&policy, &IstioOptions::default()).map_err(anyhow::Error::msg)?;
    let region = policy.caller_region().to_string();
    let labelled = |kind: &str| {
        rendered
            .documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["labels"]["meridian.dev/region"] == json!(region))
            .cloned()
    };
    let plugin = labelled("TrafficExtension").ok_or_else(|| anyhow::anyhow!("the region's TrafficExtension"))?;
    let envoy_filter = rendered
        .documents
        .iter()
        .find(|d| d["kind"] == "EnvoyFilter" && d["metadata"]["name"] == json!(format!("meridian-{region}-caller")))
        .ok_or_else(|| anyhow::anyhow!("the region's caller EnvoyFilter"))?;

    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    // Istio's cluster name of each region's gateway (from its ServiceEntry),
    // pointing at where the local mesh's gateway listens.
    let mut gateways = Vec::new();
    for se in rendered.documents.iter().filter(|d| d["kind"] == "ServiceEntry") {
        let Some(r) = se["metadata"]["labels"]["meridian.dev/region"].as_str() else { continue };
        let name = format!(
            "outbound|{}||{}",
            se["spec"]["ports"][0]["number"],
            se["spec"]["hosts"][0].as_str().unwrap_or_default()
        );
        gateways.push((name, HostPort::from(mesh.gateway(r)?.listener("meridian_gateway")?)));
    }
    let proxy = &policy.spec().caller_proxy;
    let mut bootstrap = istio_sidecar(&plugin, &proxy.host, proxy.port, &gateways)?;
    let applied = apply(&mut bootstrap, envoy_filter)?;
    assert!(applied >= 15 + 2, "every cluster and route patch applied: {applied}");
    let sidecar = tokio::task::block_in_place(|| Envoy::start_with(&serde_yaml::to_string(&bootstrap)?, 2))?;
    let addr = sidecar.listener("meridian_ingress")?;

    // Routed by the filter, through the patched route and aggregate clusters.
    let healthy = calls(addr, 50).await?;
    let bad = healthy.iter().find(|r| r.code != 0 || r.region.as_deref() != Some("eu-west"));
    assert!(bad.is_none(), "served locally through the patched routes: {bad:?}");
    assert!(healthy.iter().all(|r| r.decision.as_deref().is_some_and(|d| d.starts_with("regions=eu-west,"))));
    // The filter's probes reach every region through the aggregate clusters.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = tokio::task::block_in_place(|| -> anyhow::Result<u64> {
            let mut up = 0;
            for r in ["eu-west", "eu-central", "us-east"] {
                up += sidecar.stat(&format!("wasmcustom.meridian.healthy.{r}"))?.unwrap_or(0);
            }
            Ok(up)
        })?;
        if up == 3 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "probes through the Istio-named clusters: {up} of 3 regions healthy"
        );
        let _ = calls(addr, 1).await?;
    }

    // The connection manager's early mutation the patches merged did its
    // part: every call's routing headers came in one `x-meridian-request`
    // (no fallback counted once the outcomes were).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = |name: &str| tokio::task::block_in_place(|| sidecar.stat(&format!("wasmcustom.meridian.{name}")));
        let served = stat("outcome.eu-west.success")?.unwrap_or(0);
        if served >= 50 {
            for fallback in ["request_summary.missing", "request_summary.ambiguous"] {
                assert_eq!(stat(fallback)?.unwrap_or(0), 0, "{fallback}");
            }
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the filter counted {served} of 50+ outcomes in eu-west");
        let _ = calls(addr, 1).await?;
    }

    // eu-west answers UNAVAILABLE: each call is retried in eu-central, within the call.
    tokio::task::block_in_place(|| {
        mesh.set_fault("eu-west", Fault { abort_percent: 100, abort_grpc_status: 14, ..Fault::default() })
    })?;
    let failing_over = calls(addr, 50).await?;
    let bad = failing_over.iter().find(|r| r.code != 0 || r.region.as_deref() != Some("eu-central"));
    assert!(bad.is_none(), "retried in the next region: {bad:?}");
    let retries = tokio::task::block_in_place(|| sidecar.stat_sum("cluster.meridian~", ".upstream_rq_retry"))?;
    assert!(retries >= 50, "Envoy counted the cross-region retries: {retries}");
    eprintln!(
        "istio patches: {applied} applied; 50 calls local, then 50 retried eu-west → eu-central ({retries} retries)"
    );
    Ok(())
}

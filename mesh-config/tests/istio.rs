//! `meridianctl render istio`: every document it renders — for the example
//! policy on Istio 1.29 (WasmPlugin) and 1.30 (TrafficExtension), and for
//! a policy exercising every feature — passes Istio's own CRD schemas
//! (`../shared/istio/crds.gen.yaml`, with their CEL rules) under a real
//! JSON-schema validator; violations planted on purpose fail it; the
//! documents refer to each other consistently; the golden files and the
//! manifests shipped under `istio/` are what the renderer prints.

use meridian_filters_core::FilterConfig;
use meridian_mesh_config::crd::CrdSchemas;
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::istio::{render, IstioOptions, IstioVersion, Rendered};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A sha256 for the golden files (what `--wasm-sha256` would pass).
pub const GOLDEN_SHA256: &str = "2c4a6e1f0b9d8c7a6e5f4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a19080";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Istio's CRD bundle: `$MERIDIAN_ISTIO_CRDS`, else `../shared/istio/crds.gen.yaml`.
fn schemas() -> &'static CrdSchemas {
    static SCHEMAS: OnceLock<CrdSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let path = std::env::var_os("MERIDIAN_ISTIO_CRDS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("../shared/istio/crds.gen.yaml"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("Istio's CRDs at {} (set MERIDIAN_ISTIO_CRDS): {e}", path.display()));
        CrdSchemas::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    })
}

fn policy(path: &Path) -> Policy {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Policy::parse(&text).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

fn example() -> Policy {
    policy(&root().join("examples/policy.yaml"))
}

fn rendered(policy: &Policy, minor: u32) -> Rendered {
    let options =
        IstioOptions { version: IstioVersion { minor }, wasm_url: None, wasm_sha256: Some(GOLDEN_SHA256.into()) };
    render(policy, &options).unwrap_or_else(|e| panic!("render: {e}"))
}

fn assert_valid(documents: &[Value]) {
    let errors: Vec<String> = documents.iter().flat_map(|d| schemas().validate(d)).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{} violations:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn the_example_renders_at_least_seven_kinds_all_valid_against_istios_crds() {
    for minor in [29, 30] {
        let out = rendered(&example(), minor);
        let kinds = out.kinds();
        assert!(kinds.len() >= 7, "{kinds:?}");
        for kind in [
            "AuthorizationPolicy",
            "DestinationRule",
            "EnvoyFilter",
            "Gateway",
            "PeerAuthentication",
            "ServiceEntry",
            "VirtualService",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "1.{minor}: no {kind} in {kinds:?}");
        }
        let filter_kind = if minor >= 30 { "TrafficExtension" } else { "WasmPlugin" };
        let absent = if minor >= 30 { "WasmPlugin" } else { "TrafficExtension" };
        assert!(kinds.iter().any(|k| k == filter_kind) && !kinds.iter().any(|k| k == absent), "1.{minor}: {kinds:?}");
        assert_valid(&out.documents);
        // Every document is checked: the bundle knows each kind and version.
        for d in &out.documents {
            assert!(schemas().knows(d["apiVersion"].as_str().unwrap_or(""), d["kind"].as_str().unwrap_or("")), "{d}");
        }
    }
}

#[test]
fn a_policy_using_every_feature_renders_valid_documents() {
    let policy = policy(&root().join("mesh-config/tests/policies/two-models.yaml"));
    for minor in [22, 29, 30] {
        let out = rendered(&policy, minor);
        assert_valid(&out.documents);
        assert!(
            out.notes.iter().any(|n| n.contains("legacy")),
            "the caller without identity is noted: {:?}",
            out.notes
        );
    }
}

#[test]
fn violations_planted_on_purpose_fail_the_schema_check() {
    let out = rendered(&example(), 30);
    let find = |kind: &str| out.documents.iter().position(|d| d["kind"] == kind).expect(kind);
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut d = out.documents[find("TrafficExtension")].clone();
    d["spec"]["wasm"]["failStrategy"] = json!("FAIL_SOMETIMES");
    cases.push(("spec.wasm.failStrategy", d));
    let mut d = out.documents[find("TrafficExtension")].clone();
    d["spec"]["wasm"]["url"] = json!("ftp://example.com/m.wasm");
    cases.push(("url", d));
    let mut d = out.documents[find("DestinationRule")].clone();
    d["spec"]["trafficPolicy"]["outlierDetection"]["interval"] = json!("0s");
    cases.push(("greater than 1ms", d));
    let mut d = out.documents[find("DestinationRule")].clone();
    d["spec"]["trafficPolicy"]["conectionPool"] = json!({});
    cases.push(("conectionPool", d));
    let mut d = out.documents[find("ServiceEntry")].clone();
    d["spec"].as_object_mut().expect("spec").remove("hosts");
    cases.push(("hosts", d));
    let mut d = out.documents[find("VirtualService")].clone();
    d["metadata"]["name"] = json!("Demo_EU");
    cases.push(("metadata.name", d));
    let mut d = out.documents[find("AuthorizationPolicy")].clone();
    d["spec"]["action"] = json!("PERMIT");
    cases.push(("spec.action", d));
    let mut d = out.documents[find("Gateway")].clone();
    d["spec"]["servers"][0]["tls"]["mode"] = json!("MUTUAL_MAYBE");
    cases.push(("spec.servers[0].tls.mode", d));
    let mut d = out.documents[find("Gateway")].clone();
    d["spec"]["servers"][0]["port"].as_object_mut().expect("port").remove("protocol");
    cases.push(("protocol", d));
    for (needle, doc) in cases {
        let errors: Vec<String> = schemas().validate(&doc).iter().map(ToString::to_string).collect();
        assert!(errors.iter().any(|e| e.contains(needle)), "a planted violation ({needle}) passed: {errors:?}");
    }
}

fn by_kind<'a>(out: &'a Rendered, kind: &str) -> Vec<&'a Value> {
    out.documents.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn the_documents_refer_to_each_other() {
    let policy = example();
    let out = rendered(&policy, 30);
    // Each region's filter runs the configuration derived for that region.
    for ext in by_kind(&out, "TrafficExtension") {
        let region = ext["metadata"]["labels"]["meridian.dev/region"].as_str().expect("region label");
        let config: FilterConfig =
            serde_json::from_value(ext["spec"]["wasm"]["pluginConfig"].clone()).expect("pluginConfig");
        assert_eq!(config, policy.filter_config(region).expect("derived"));
        assert_eq!(ext["spec"]["selector"]["matchLabels"]["meridian.dev/region"], json!(region));
    }
    // Every child of every aggregate cluster is Istio's cluster of a
    // ServiceEntry host and port; every cluster the filter can name exists.
    let entries: Vec<String> = by_kind(&out, "ServiceEntry")
        .iter()
        .flat_map(|se| {
            let port = se["spec"]["ports"][0]["number"].as_u64().unwrap_or(0);
            se["spec"]["hosts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |h| format!("outbound|{port}||{}", h.as_str().unwrap_or_default()))
        })
        .collect();
    for ef in by_kind(&out, "EnvoyFilter")
        .iter()
        .filter(|d| d["metadata"]["name"].as_str().unwrap_or("").ends_with("-caller"))
    {
        let added: Vec<&Value> = ef["spec"]["configPatches"]
            .as_array()
            .expect("patches")
            .iter()
            .filter(|p| p["applyTo"] == "CLUSTER")
            .map(|p| &p["patch"]["value"])
            .collect();
        let names: Vec<&str> = added.iter().filter_map(|c| c["name"].as_str()).collect();
        for (cluster, _) in policy.filter_config("eu-west").expect("derived").clusters() {
            assert!(names.contains(&cluster.as_str()), "{cluster} not added");
        }
        for c in &added {
            for child in c["cluster_type"]["typed_config"]["clusters"].as_array().expect("children") {
                assert!(
                    entries.contains(&child.as_str().unwrap_or_default().to_string()),
                    "{child} has no ServiceEntry"
                );
            }
        }
    }
    // Each VirtualService routes to subsets its region's DestinationRule defines.
    for vs in by_kind(&out, "VirtualService") {
        let region = vs["metadata"]["labels"]["meridian.dev/region"].as_str().expect("region");
        let dr = by_kind(&out, "DestinationRule")
            .into_iter()
            .find(|d| d["metadata"]["name"] == json!(format!("demo-models-{region}")))
            .expect("the region's model DestinationRule");
        let subsets: Vec<&Value> =
            dr["spec"]["subsets"].as_array().expect("subsets").iter().map(|s| &s["name"]).collect();
        for route in vs["spec"]["http"].as_array().expect("routes") {
            let dest = &route["route"][0]["destination"];
            assert_eq!(dest["host"], dr["spec"]["host"]);
            assert!(subsets.contains(&&dest["subset"]), "{dest} not among {subsets:?}");
        }
        let gateway = vs["spec"]["gateways"][0].as_str().expect("gateway");
        assert!(by_kind(&out, "Gateway").iter().any(|g| g["metadata"]["name"] == json!(gateway)));
    }
    // The callers' identities admit them per model.
    let mlp = by_kind(&out, "AuthorizationPolicy")
        .into_iter()
        .find(|a| a["metadata"]["name"] == "demo-model-mlp")
        .expect("mlp's AuthorizationPolicy");
    assert_eq!(
        mlp["spec"]["rules"][0]["from"][0]["source"]["principals"],
        json!([
            "cluster.local/ns/app/sa/app-us",
            "cluster.local/ns/batch/sa/batch-any",
            "cluster.local/ns/web/sa/web-eu"
        ])
    );
    assert_eq!(
        mlp["spec"]["rules"][0]["when"][0],
        json!({"key": "request.headers[x-meridian-model]", "values": ["mlp"]})
    );
}

#[test]
fn a_model_no_caller_may_call_is_closed() {
    let policy = policy(&root().join("mesh-config/tests/policies/two-models.yaml"));
    let out = rendered(&policy, 30);
    let charge = by_kind(&out, "AuthorizationPolicy")
        .into_iter()
        .find(|a| a["metadata"]["name"] == "shop-model-charge")
        .expect("charge's policy");
    assert_eq!(charge["spec"]["rules"][0]["from"][0]["source"]["principals"], json!(["example.com/ns/pay/sa/billing"]));
}

#[test]
fn rendering_needs_services_gateways_and_a_module_url() {
    let text = std::fs::read_to_string(root().join("integration/policies/three-regions.yaml")).expect("policy");
    let policy = Policy::parse(&text).expect("valid");
    let err = render(&policy, &IstioOptions::default()).expect_err("no services, no url");
    let all = err.to_string();
    assert!(all.contains("regions[0]: Istio routes region eu-west to its model servers' Kubernetes Service"), "{all}");
    assert!(all.contains("filter.url: Istio fetches the filter from a URL"), "{all}");
    assert!(all.contains("set regions[0].service (host, port) (line 8, column 5)"), "positions in the file: {all}");
    let bad = IstioOptions { wasm_sha256: Some("xyz".into()), ..IstioOptions::default() };
    assert!(render(&example(), &bad).expect_err("bad sha").to_string().contains("64 lowercase hex"));
    assert!(IstioVersion::parse("1.21").is_err());
    assert!(IstioVersion::parse("2.0").is_err());
    assert_eq!(IstioVersion::parse("1.30.2").map(|v| v.minor), Ok(30));
}

/// The golden files and the shipped manifests: `MERIDIAN_UPDATE_GOLDEN=1`
/// rewrites them from the renderer.
#[test]
fn golden_files_and_shipped_manifests_match_the_renderer() {
    let update = std::env::var_os("MERIDIAN_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for minor in [29, 30] {
        let yaml = format!(
            "# meridianctl render istio -f examples/policy.yaml --istio-version 1.{minor} --wasm-sha256 {GOLDEN_SHA256}\n{}",
            rendered(&example(), minor).to_yaml()
        );
        for path in [
            root().join(format!("mesh-config/tests/golden/istio-1.{minor}.yaml")),
            root().join(format!("istio/examples/demo-istio-1.{minor}.yaml")),
        ] {
            if update {
                std::fs::create_dir_all(path.parent().expect("folder")).expect("mkdir");
                std::fs::write(&path, &yaml).expect("write golden");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "out of date (MERIDIAN_UPDATE_GOLDEN=1 cargo test -p meridian-mesh-config): {stale:?}");
}

#[test]
fn every_manifest_shipped_under_istio_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("istio/examples")).expect("istio/examples") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
            .filter(|v: &Value| !v.is_null())
            .collect();
        assert!(!docs.is_empty(), "{}", path.display());
        assert_valid(&docs);
        checked += docs.len();
    }
    assert!(checked > 20, "{checked} documents");
}

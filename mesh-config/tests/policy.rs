//! `MeshPolicy` reading: the example is valid; errors of every kind name
//! their field path, line and column, and several are reported at once;
//! `meridianctl validate` exits 1 with all of them (text and JSON).

use meridian_mesh_config::policy::Policy;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> String {
    std::fs::read_to_string(root().join("examples/policy.yaml")).expect("examples/policy.yaml")
}

const MINIMAL: &str = "apiVersion: meridian.dev/v1alpha1
kind: MeshPolicy
regions:
  - name: eu-west
    zone: eu
  - name: us-east
    zone: us
";

/// The errors of `text`, as printed.
fn errors(text: &str) -> Vec<String> {
    match Policy::parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_example_and_a_minimal_policy_are_valid() {
    let policy = Policy::parse(&example()).unwrap_or_else(|e| panic!("examples/policy.yaml:\n{e}"));
    assert_eq!(policy.spec().regions.len(), 3);
    let filter = policy.filter_config("eu-west").expect("derived");
    assert_eq!(filter.region, "eu-west");
    assert_eq!(filter.callers["web-eu"].residency.as_deref(), Some("eu"));
    let canary = filter.models["mlp"].canary.as_ref().expect("canary");
    assert_eq!((canary.stable.as_str(), canary.canary.as_str(), canary.weight), ("v1", "v2", 20.0));
    assert_eq!(canary.analysis.max_error_rate, 0.01, "the SLO's error rate judges the canary");
    assert_eq!(filter.models["mlp"].breaker.slow_call_ms, 250, "the SLO's p99 is the slow-call threshold");
    assert_eq!(filter.routing.dwell_ms, 2_000);
    let minimal = Policy::parse(MINIMAL).expect("minimal");
    assert_eq!(minimal.filter_config("us-east").expect("derived").max_failover_regions, 3);
}

#[test]
fn the_bar_three_planted_errors_are_all_named_with_field_and_line() {
    let text = example()
        .replace(
            "canary: {version: v2, weight: 20, allowOverride: true}",
            "canary: {version: v2, weight: 120, allowOverride: true}",
        )
        .replace("    residency: eu        #", "    residency: apac      #")
        .replace("  dwell: 2s", "  dwel: 2s");
    let found = errors(&text);
    assert_eq!(found.len(), 3, "{found:#?}");
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).map(|i| i + 1).expect(needle);
    let weight_line = line_of("weight: 120");
    let dwel_line = line_of("dwel: 2s");
    let apac_line = line_of("residency: apac");
    let weight_column = text.lines().nth(weight_line - 1).and_then(|l| l.find("120")).map(|c| c + 1).expect("col");
    assert!(
        found.contains(&format!(
            "models.mlp.canary.weight: 120 is above 100 (line {weight_line}, column {weight_column})"
        )),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|e| e.starts_with("routing.dwel: unknown field; did you mean `dwell`?")
            && e.ends_with(&format!("(line {dwel_line}, column 3)"))),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|e| e.starts_with("callers.web-eu.residency: no region is in zone `apac` (zones: eu, us)")
            && e.ends_with(&format!("(line {apac_line}, column 16)"))),
        "{found:#?}"
    );
}

#[test]
fn schema_errors_of_every_kind_name_their_field() {
    for (patch, expected) in [
        ("kind: MeshPolicy\n", "apiVersion: is required but missing (line 1, column 1)"),
        ("regions: []\n", "regions: must list at least 1"),
        ("regions:\n  - {name: EU_West, zone: eu}\n", "regions[0].name: `EU_West` must be lowercase letters"),
        (
            "regions:\n  - {name: a, zone: eu, capacity: {maxConcurrentRequests: many}}\n",
            "regions[0].capacity.maxConcurrentRequests: expected a whole number, got the string `many`",
        ),
        ("regions:\n  - {name: a}\n", "regions[0].zone: is required but missing"),
        (
            "failStrategy: FAIL_SOMETIMES\n",
            "failStrategy: `FAIL_SOMETIMES` is not one of `FAIL_RELOAD`, `FAIL_OPEN`, `FAIL_CLOSE`",
        ),
        ("failStrategy: FAIL_CLOS\n", "did you mean `FAIL_CLOSE`?"),
        ("resilience: {timeout: 30}\n", "resilience.timeout: expected a string, got `30`"),
        ("resilience: {timeout: 30sec}\n", "resilience.timeout: `30sec` is not a duration"),
        ("resilience: {maxFailoverRegions: 9}\n", "resilience.maxFailoverRegions: 9 is above 4"),
        ("routing: {margin: 1}\n", "routing.margin: 1 must be below 1"),
        ("models:\n  mlp: {canary: {weight: 5}}\n", "models.mlp.canary.version: is required but missing"),
        (
            "models:\n  mlp: {canary: {version: v2, sticky: callr}}\n",
            "models.mlp.canary.sticky: `callr` is not `caller`",
        ),
        (
            "callers:\n  web: {identity: \"https://x\"}\n",
            "callers.web.identity: `https://x` does not match the pattern",
        ),
        (
            "regions:\n  - {name: a, zone: eu, gateway: {address: nowhere}}\n",
            "regions[0].gateway.address: `nowhere` is not an address",
        ),
    ] {
        let text = if patch.starts_with("kind:") { patch.to_string() } else { format!("{MINIMAL}{patch}") };
        // A replacement of `regions` drops the minimal policy's.
        let text = if patch.starts_with("regions:") {
            format!("apiVersion: meridian.dev/v1alpha1\nkind: MeshPolicy\n{patch}")
        } else {
            text
        };
        let found = errors(&text);
        assert!(found.iter().any(|e| e.contains(expected)), "{patch}: expected `{expected}` in {found:#?}");
        assert!(found.iter().all(|e| e.contains("(line ")), "{patch}: every error has its line: {found:#?}");
    }
}

#[test]
fn cross_reference_errors_name_their_field() {
    for (patch, expected) in [
        (
            "  - {name: eu-west, zone: eu}\n",
            "regions[2].name: region `eu-west` is listed twice (first as regions[0])",
        ),
        (
            "models:\n  mlp:\n    versions: [{name: v1}, {name: v2}]\n    canary: {version: v3, weight: 5}\n",
            "models.mlp.canary.version: `v3` is not one of the versions (v1, v2)",
        ),
        ("models:\n  mlp:\n    canary: {version: v1, weight: 5}\n", "models.mlp.canary.version: `v1` is the stable version"),
        (
            "models:\n  mlp:\n    versions: [{name: v1, regions: [eu-west]}]\n",
            "models.mlp.versions[0].regions: the stable version `v1` must run in every region",
        ),
        (
            "models:\n  mlp:\n    versions: [{name: v1}, {name: v2, regions: [eu-wset]}]\n",
            "models.mlp.versions[1].regions[0]: `eu-wset` is not a region (regions: eu-west, us-east); did you mean `eu-west`?",
        ),
        ("callers:\n  web: {region: mars}\n", "callers.web.region: `mars` is not a region"),
        ("callers:\n  web: {models: [resnet]}\n", "callers.web.models[0]: `resnet` is not a model of this policy"),
        ("callerProxy: {region: asia}\n", "callerProxy.region: `asia` is not a region"),
        ("resilience: {health: {interval: 5ms}}\n", "resilience.health.interval: 5ms is below the minimum of 10ms"),
        ("resilience: {breaker: {baseOpen: 10s, maxOpen: 1s}}\n", "resilience.breaker.maxOpen: 1s is shorter than baseOpen (10s)"),
        ("filter: {tick: 2s}\n", "filter.tick: 2s is above the maximum of 1s"),
        ("batching: {maxBatchSize: 8, preferredBatchSizes: [4, 16]}\n", "batching.preferredBatchSizes[1]: 16 is not a batch size"),
        ("models:\n  Big_Model: {}\n", "models.Big_Model: `Big_Model` is not a model name"),
    ] {
        let found = errors(&format!("{MINIMAL}{patch}"));
        assert!(found.iter().any(|e| e.contains(expected)), "{patch}: expected `{expected}` in {found:#?}");
    }
}

#[test]
fn endpoints_must_serve_the_versions_their_region_runs() {
    let text = format!(
        "{}models:\n  mlp:\n    versions: [{{name: v1}}, {{name: v2}}]\n",
        MINIMAL.replace(
            "  - name: eu-west\n    zone: eu\n",
            "  - name: eu-west\n    zone: eu\n    endpoints: [{address: \"127.0.1.10:8001\"}, {address: \"127.0.1.10:8001\", version: v3}]\n"
        )
    );
    let found = errors(&text);
    for expected in [
        "regions[0].endpoints[1].address: `127.0.1.10:8001` is also regions[0].endpoints[0].address",
        "regions[0].endpoints[1].version: `v3` is not a version of any model (versions: v1, v2)",
        "regions[0].endpoints: no endpoint serves version `v2`, which runs in eu-west",
    ] {
        assert!(found.iter().any(|e| e.contains(expected)), "expected `{expected}` in {found:#?}");
    }
}

#[test]
fn yaml_problems_are_errors_with_a_position() {
    let found = errors("apiVersion: meridian.dev/v1alpha1\nkind: MeshPolicy\nregions: [\n");
    assert!(found[0].starts_with("not valid YAML") && found[0].contains("(line "), "{found:?}");
    let found = errors(&format!("{MINIMAL}kind: MeshPolicy\n"));
    assert_eq!(found, ["kind: key `kind` appears twice in this mapping (line 8, column 1)"]);
}

fn meridianctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridianctl")).args(args).output().expect("meridianctl runs")
}

#[test]
fn validate_exits_1_with_every_error_and_0_when_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "{MINIMAL}routing: {{margn: 0.1}}\nresilience: {{timeout: soon}}\ncallers:\n  web: {{residency: apac}}\n"
        ),
    )
    .expect("write");
    let out = meridianctl(&["validate", "-f", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routing.margn: unknown field; did you mean `margin`? (line 8, column 11)"), "{stderr}");
    assert!(stderr.contains("resilience.timeout: `soon` is not a duration"), "{stderr}");
    assert!(
        stderr.contains("callers.web.residency: no region is in zone `apac` (zones: eu, us) (line 11, column 20)"),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "every error at once: {stderr}");

    let out = meridianctl(&["validate", "-f", bad.to_str().expect("path"), "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["path"], "routing.margn");
    assert_eq!(report["errors"][0]["line"], 8);
    assert_eq!(report["errors"][0]["column"], 11);

    let example = root().join("examples/policy.yaml");
    let out = meridianctl(&["validate", "-f", example.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid — 3 region(s), 1 model(s), 3 caller(s)"));
    let out = meridianctl(&["validate", "-f", "/nonexistent/policy.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/policy.yaml"));
}

#[test]
fn render_commands_print_from_the_policy() {
    let example = root().join("examples/policy.yaml");
    let example = example.to_str().expect("path");
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("meridian_filters.wasm");
    std::fs::write(&wasm, b"\0asm").expect("write");
    let out_dir = dir.path().join("envoy");
    let out = meridianctl(&[
        "render",
        "envoy",
        "-f",
        example,
        "--wasm",
        wasm.to_str().expect("path"),
        "--out-dir",
        out_dir.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in [
        "caller-eu-west",
        "caller-eu-central",
        "caller-us-east",
        "gateway-eu-west",
        "gateway-eu-central",
        "gateway-us-east",
    ] {
        let text = std::fs::read_to_string(out_dir.join(format!("{name}.yaml"))).expect(name);
        let doc: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
        assert!(doc["static_resources"]["listeners"][0].is_object(), "{name}");
    }
    let out = meridianctl(&["render", "envoy", "-f", example]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wasm PATH is needed"));
    let out = meridianctl(&["render", "envoy", "-f", example, "--role", "gateway", "--region", "us-east"]);
    assert!(out.status.success(), "a gateway needs no module: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("value: us-east"));

    let crds = root().join("../shared/istio/crds.gen.yaml");
    let out = meridianctl(&[
        "render",
        "istio",
        "-f",
        example,
        "--istio-version",
        "1.29",
        "--check-crds",
        crds.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind: WasmPlugin") && !text.contains("kind: TrafficExtension"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: no sha256"), "the unpinned module is noted");
    let out = meridianctl(&["render", "istio", "-f", example, "--istio-version", "1.9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`1.9` is older than 1.22"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = meridianctl(&["render", "sidecar", "-f", example, "--model", "mlp"]);
    assert!(out.status.success());
    let config: serde_json::Value = serde_yaml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    assert_eq!(config["dynamic_batching"]["preferred_batch_sizes"], serde_json::json!([16, 32, 64]));
    assert_eq!(config["dynamic_batching"]["max_queue_delay_us"], 500);
    let out = meridianctl(&["render", "sidecar", "-f", example, "--model", "resnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model `resnet` (models: mlp)"));
}

#[test]
fn explain_prints_the_decision_and_why_regions_are_left_out() {
    let example = root().join("examples/policy.yaml");
    let example = example.to_str().expect("path");
    let out = meridianctl(&[
        "explain", "-f", example, "--model", "mlp", "--caller", "web-eu", "--down", "eu-west", "-o", "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["regions"], serde_json::json!(["eu-central"]));
    assert_eq!(report["reason"], "local-unavailable");
    assert_eq!(report["residency"], "eu");
    let why: Vec<String> = report["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .map(|e| format!("{} {}", e["region"], e["why"]))
        .collect();
    assert!(why.iter().any(|w| w.contains("eu-west") && w.contains("down: its health checks fail")), "{why:?}");
    assert!(
        why.iter().any(|w| w.contains("us-east") && w.contains("outside residency zone eu (its zone: us)")),
        "{why:?}"
    );

    let out = meridianctl(&[
        "explain",
        "-f",
        example,
        "--model",
        "mlp",
        "--caller",
        "web-eu",
        "--down",
        "eu-west",
        "--down",
        "eu-central",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("refused:  gRPC UNAVAILABLE, x-meridian-reason: no-available-region"), "{text}");
    let out = meridianctl(&["explain", "-f", example, "--model", "mlp", "--from", "us-east", "--slow", "us-east=300"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("reason:   faster") && text.contains("regions:  eu-central"), "{text}");
    assert!(text.contains("drawn per call: 20% of calls go to v2"), "{text}");
    let out = meridianctl(&["explain", "-f", example, "--model", "mlp", "--down", "mars"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mars: no such region"));
}

#[test]
fn render_envoy_xds_prints_bootstraps_that_only_know_the_server() {
    let example = root().join("examples/policy.yaml");
    let example = example.to_str().expect("path");
    let out = meridianctl(&[
        "render",
        "envoy",
        "-f",
        example,
        "--xds",
        "127.0.0.1:18000",
        "--role",
        "gateway",
        "--region",
        "eu-central",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_yaml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("YAML");
    assert_eq!(doc["node"]["id"], "gateway-eu-central");
    assert_eq!(doc["node"]["metadata"]["meridian.role"], "region-gateway");
    assert_eq!(doc["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    assert_eq!(doc["admin"]["address"]["socket_address"]["port_value"], 9902, "the gateway's admin from the policy");
    assert!(doc["static_resources"]["listeners"].is_null(), "listeners come from the server");
    let out = meridianctl(&["render", "envoy", "-f", example, "--xds", "127.0.0.1:18000", "--region", "mars"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--region mars: the policy has no such region"));
}

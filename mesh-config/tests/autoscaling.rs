//! `models.<m>.autoscaling`: validation by field and line, the Kubernetes
//! manifests (KEDA ScaledObject against KEDA's own CRD, HPA against
//! Kubernetes' own schemas through PyPI `kubernetes-validate`), and
//! `meridianctl simulate` on the shipped traces.

use meridian_mesh_config::crd::CrdSchemas;
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::k8s::{self, AutoscalerKind, K8sOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example() -> PathBuf {
    root().join("examples/autoscaling/policy.yaml")
}

fn load(path: &Path) -> Policy {
    Policy::parse(&std::fs::read_to_string(path).expect("read")).expect("valid policy")
}

fn meridianctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridianctl")).args(args).output().expect("meridianctl runs")
}

const REGIONS: &str = "apiVersion: meridian.dev/v1alpha1
kind: MeshPolicy
regions:
  - {name: eu-west, zone: eu}
  - {name: us-east, zone: us}
models:
  mlp:
    autoscaling:
";

fn errors(autoscaling: &str) -> Vec<String> {
    let text = format!("{REGIONS}{autoscaling}");
    match Policy::parse(&text) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn bad_autoscaling_is_named_by_field_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "      minReplicas: 5\n      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n",
            "models.mlp.autoscaling.minReplicas: in eu-west: minReplicas 5 is above maxReplicas 3 (line 9",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 0}\n",
            "models.mlp.autoscaling.target.inFlightPerReplica: 0 must be above 0",
        ),
        (
            "      maxReplicas: 3\n      target: {cpu: 50}\n",
            "models.mlp.autoscaling.target: {\"cpu\":50} must have exactly one of `queueToComputeRatio`, `inFlightPerReplica`",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      schedules:\n        - {name: peak, start: \"0 9 * *\", end: \"0 10 * * *\", replicas: 2}\n",
            "models.mlp.autoscaling.schedules[0].start: `0 9 * *` is not a five-field cron expression: it has 4 fields",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      schedules:\n        - {name: peak, start: \"0 9 * * *\", end: \"0 10 * * *\", timezone: Europe/Paris, replicas: 2}\n",
            "models.mlp.autoscaling.schedules[0].timezone: `Europe/Paris`: Meridian evaluates schedules in UTC only",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      schedules:\n        - {name: peak, start: \"0 9 * * *\", end: \"0 10 * * *\", replicas: 7}\n",
            "models.mlp.autoscaling.schedules[0].replicas: 7 is above maxReplicas (3) in eu-west",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      scaleUp: {policies: []}\n",
            "models.mlp.autoscaling.scaleUp.policies: at least one policy",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      scaleDown: {policies: [{type: Pods, value: 1, period: 1500ms}]}\n",
            "models.mlp.autoscaling.scaleDown.policies[0].period: 1500ms is not a whole number of seconds",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      scaleDown: {stabilizationWindow: 2h, policies: [{type: Pods, value: 1, period: 60s}]}\n",
            "models.mlp.autoscaling.scaleDown.stabilizationWindow: 2h is outside 0s–3600s",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      regions: {ap-south: {maxReplicas: 2}}\n",
            "models.mlp.autoscaling.regions.ap-south: `ap-south` is not a region (regions: eu-west, us-east)",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      regions: {us-east: {minReplicas: 4}}\n",
            "models.mlp.autoscaling.regions.us-east.minReplicas: in us-east: minReplicas 4 is above maxReplicas 3",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      deployment: \"Model_{model}\"\n",
            "models.mlp.autoscaling.deployment: `Model_{model}` gives `Model_mlp`, not a Kubernetes name",
        ),
        (
            "      maxReplicas: 3\n      target: {inFlightPerReplica: 8}\n      costCap: {maxReplicaHours: 5, window: 1s}\n",
            "models.mlp.autoscaling.costCap.window: 1s is shorter than syncPeriod (15s)",
        ),
    ];
    for (yaml, expected) in cases {
        let found = errors(yaml);
        assert!(found.iter().any(|e| e.contains(expected)), "expected `{expected}` in {found:#?}");
        assert!(found.iter().all(|e| e.contains("(line ")), "every error has its line: {found:#?}");
    }
    assert_eq!(errors("      maxReplicas: 3\n      target: {queueToComputeRatio: 0.5}\n"), Vec::<String>::new());
}

#[test]
fn the_region_overrides_and_kubernetes_defaults_reach_the_algorithm() {
    let policy = load(&example());
    let a = policy.spec().models["mlp"].autoscaling.clone().expect("autoscaling");
    let eu = a.spec_for("eu-west").expect("spec");
    let us = a.spec_for("us-east").expect("spec");
    assert_eq!((eu.min_replicas, eu.max_replicas, eu.schedules.len()), (2, 12, 1));
    assert_eq!((us.min_replicas, us.max_replicas, us.schedules.len()), (2, 8, 0));
    assert_eq!(eu.behavior.scale_up, meridian_autoscale::ScalingRules::default_scale_up(), "the default");
    assert_eq!(eu.behavior.scale_down.policies.len(), 1);
    assert_eq!(eu.behavior.scale_down.stabilization_window_secs, 300);
    assert_eq!(eu.sync_period_ms, 15_000);
}

fn keda_crd() -> CrdSchemas {
    let text = std::fs::read_to_string(root().join("deploy/keda/keda.sh_scaledobjects.yaml")).expect("KEDA's CRD");
    CrdSchemas::from_yaml(&text).expect("the CRD loads")
}

#[test]
fn scaled_objects_validate_against_kedas_crd_and_carry_the_policy() {
    let policy = load(&example());
    let rendered = k8s::render(&policy, &K8sOptions::default());
    let schemas = keda_crd();
    assert_eq!(rendered.documents.len(), 3, "one per region (one version)");
    for doc in &rendered.documents {
        assert!(schemas.knows("keda.sh/v1alpha1", "ScaledObject"));
        let errors = schemas.validate(doc);
        assert!(errors.is_empty(), "{errors:#?}");
    }
    let eu = &rendered.documents[0];
    assert_eq!(eu["metadata"]["name"], "shop-mlp-v1-eu-west");
    assert_eq!(eu["metadata"]["namespace"], "models");
    assert_eq!(eu["spec"]["scaleTargetRef"]["name"], "mlp-v1");
    assert_eq!((eu["spec"]["minReplicaCount"].as_u64(), eu["spec"]["maxReplicaCount"].as_u64()), (Some(2), Some(12)));
    let triggers = eu["spec"]["triggers"].as_array().expect("triggers");
    assert_eq!(triggers[0]["type"], "prometheus");
    assert_eq!(triggers[0]["metricType"], "AverageValue");
    assert_eq!(triggers[0]["metadata"]["threshold"], "12");
    assert_eq!(triggers[0]["metadata"]["activationThreshold"], "0");
    assert!(triggers[0]["metadata"]["query"].as_str().is_some_and(|q| q.contains(r#"model="mlp",version="1""#)));
    assert_eq!(triggers[1]["type"], "cron");
    assert_eq!(triggers[1]["metadata"]["start"], "45 8 * * *");
    assert_eq!(triggers[1]["metadata"]["desiredReplicas"], "8");
    let behavior = &eu["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 300);
    assert_eq!(
        behavior["scaleDown"]["policies"][0],
        serde_json::json!({"type": "Percent", "value": 50, "periodSeconds": 60})
    );
    assert_eq!(behavior["scaleUp"]["selectPolicy"], "Max");
    let us = &rendered.documents[2];
    assert_eq!(us["spec"]["maxReplicaCount"], 8);
    assert_eq!(us["spec"]["triggers"].as_array().map(Vec::len), Some(1), "us-east has no schedule");
    assert!(rendered.notes.iter().any(|n| n.contains("costCap")), "{:?}", rendered.notes);

    // The check can fail: a trigger without its type, a negative count.
    let mut broken = eu.clone();
    broken["spec"]["triggers"][0].as_object_mut().map(|t| t.remove("type"));
    broken["spec"]["pollingInterval"] = serde_json::json!("soon");
    let errors = schemas.validate(&broken);
    assert!(errors.iter().any(|e| e.to_string().contains("spec.triggers[0]")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.to_string().contains("spec.pollingInterval")), "{errors:#?}");
}

/// Runs PyPI kubernetes-validate (bootstrap: `.tools/k8s`) on a YAML stream,
/// strict, against Kubernetes 1.37's schemas.
fn kubernetes_validate(yaml: &str) -> (bool, String) {
    let tools = root().join(".tools/k8s");
    assert!(tools.join("kubernetes_validate").exists(), "kubernetes-validate is missing: run `make bootstrap`");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = Command::new("python3")
        .env("PYTHONPATH", &tools)
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.37"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn hpas_validate_against_kubernetes_own_schemas() {
    let policy = load(&example());
    let options = K8sOptions { autoscaler: AutoscalerKind::Hpa, ..K8sOptions::default() };
    let rendered = k8s::render(&policy, &options);
    assert_eq!(rendered.documents.len(), 3);
    let (ok, out) = kubernetes_validate(&rendered.to_yaml());
    assert!(ok, "{out}");
    // An unknown kind only warns: every HPA must be named as passed.
    for doc in &rendered.documents {
        let name = doc["metadata"]["name"].as_str().expect("name");
        assert!(
            out.contains(&format!("passed for resource horizontalpodautoscaler/{name} against version 1.37")),
            "{out}"
        );
    }
    let eu = &rendered.documents[0];
    assert_eq!(eu["apiVersion"], "autoscaling/v2");
    assert_eq!(eu["spec"]["metrics"][0]["pods"]["metric"]["name"], "meridian_in_flight_per_replica");
    assert_eq!(eu["spec"]["metrics"][0]["pods"]["target"]["averageValue"], "12");
    assert!(
        rendered.notes.iter().any(|n| n.contains("schedules in eu-west") && n.contains("--autoscaler keda")),
        "{:?}",
        rendered.notes
    );

    // The check can fail.
    let mut broken: Value = eu.clone();
    broken["spec"]["maxReplicas"] = serde_json::json!("many");
    let (ok, out) = kubernetes_validate(&serde_yaml::to_string(&broken).expect("yaml"));
    assert!(!ok && out.contains("spec.maxReplicas"), "{out}");
    let mut broken: Value = eu.clone();
    broken["spec"]["behavior"]["scaleUp"]["cooldown"] = serde_json::json!(5);
    let (ok, out) = kubernetes_validate(&serde_yaml::to_string(&broken).expect("yaml"));
    assert!(!ok && out.contains("cooldown"), "{out}");
}

#[test]
fn render_k8s_checks_crds_from_the_command_line() {
    let crd = root().join("deploy/keda/keda.sh_scaledobjects.yaml");
    let out = meridianctl(&[
        "render",
        "k8s",
        "-f",
        example().to_str().expect("path"),
        "--check-crds",
        crd.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 documents valid against"));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect();
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d["kind"] == "ScaledObject"));
}

fn simulate(trace: &str, extra: &[&str]) -> (std::process::Output, Value) {
    let trace = root().join("examples/autoscaling").join(trace);
    let policy = example();
    let mut args = vec!["simulate", "-f", policy.to_str().expect("path"), "--trace"];
    let trace = trace.to_str().expect("path").to_string();
    args.push(&trace);
    args.extend_from_slice(&["-o", "json"]);
    args.extend_from_slice(extra);
    let out = meridianctl(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = serde_json::from_slice(&out.stdout).expect("JSON");
    (out, report)
}

fn region<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["regions"].as_array().and_then(|rs| rs.iter().find(|r| r["region"] == name)).expect("region")
}

#[test]
fn pre_scaling_for_the_launch_spike_cuts_slo_violations() {
    let (_, with) = simulate("launch-spike.csv", &[]);
    let (_, without) = simulate("launch-spike.csv", &["--without-schedules"]);
    let (w, wo) = (region(&with, "eu-west"), region(&without, "eu-west"));
    let violated = |r: &Value| r["slo_violation_s"].as_f64().expect("seconds");
    assert!(violated(wo) > 0.0, "without the schedule the spike overruns the objective: {wo}");
    assert!(violated(w) < violated(wo), "with {} s, without {} s", violated(w), violated(wo));
    // The schedule pre-scales to its floor before 09:00.
    let events = w["events"].as_array().expect("events");
    let first_up = events.iter().find(|e| e["to"].as_u64() > e["from"].as_u64()).expect("a scale-up");
    assert!(first_up["t_s"].as_f64().expect("time") < 9.0 * 3600.0, "{first_up}");
    assert_eq!(first_up["reason"], "scale-up-limit", "the floor goes through the scale-up policies");
    // us-east has no schedule and flat load: it stays at its baseline.
    let us = region(&with, "us-east");
    assert_eq!((us["peak_replicas"].as_u64(), us["events"].as_array().map(Vec::len)), (Some(2), Some(0)));
    // The cap holds: no region above its max.
    assert!(w["peak_replicas"].as_u64() <= Some(12));
}

#[test]
fn simulate_writes_its_table_and_plot_on_both_traces() {
    let dir = tempfile::tempdir().expect("tempdir");
    for trace in ["diurnal.csv", "launch-spike.csv"] {
        let plot = dir.path().join(trace.replace(".csv", ".svg"));
        let trace_path = root().join("examples/autoscaling").join(trace);
        let out = meridianctl(&[
            "simulate",
            "-f",
            example().to_str().expect("path"),
            "--trace",
            trace_path.to_str().expect("path"),
            "--plot",
            plot.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let table = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].split_whitespace().eq([
                "region",
                "slo_violation_s",
                "replica_hours",
                "peak_replicas",
                "scale_events",
                "max_p99_ms"
            ]),
            "{table}"
        );
        assert_eq!(lines.len(), 4, "{table}");
        for (line, name) in lines[1..].iter().zip(["eu-west", "eu-central", "us-east"]) {
            let cells: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cells[0], name);
            let hours: f64 = cells[2].parse().expect("replica-hours");
            assert!(hours > 0.0, "{line}");
        }
        let svg = std::fs::read_to_string(&plot).expect("the plot");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Per region: load, started, serving, p99, objective.
        assert_eq!(svg.matches("<polyline").count(), 15, "five lines per region");
        assert!(svg.contains("eu-west — p99 latency (ms)"));
    }
    // The diurnal day: each region scales up for its own peak and back down.
    let (_, day) = simulate("diurnal.csv", &[]);
    for name in ["eu-west", "eu-central", "us-east"] {
        let r = region(&day, name);
        let events = r["events"].as_array().expect("events");
        assert!(events.iter().any(|e| e["to"].as_u64() > e["from"].as_u64()), "{name} scales up");
        assert!(events.iter().any(|e| e["to"].as_u64() < e["from"].as_u64()), "{name} scales down");
    }
}

#[test]
fn simulate_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("t.csv");
    std::fs::write(&trace, "time_s,eu-west,ap-south\n0,1,1\n60,2,2\n").expect("write");
    let out =
        meridianctl(&["simulate", "-f", example().to_str().expect("path"), "--trace", trace.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the trace's column `ap-south` is not a region of the policy")
    );
    std::fs::write(&trace, "time_s,eu-west\n0,1\n60,lots\n").expect("write");
    let out =
        meridianctl(&["simulate", "-f", example().to_str().expect("path"), "--trace", trace.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("t.csv: line 3: `lots` (eu-west) is not a number"), "{stderr}");
    let demo = root().join("examples/policy.yaml");
    std::fs::write(&trace, "time_s,eu-west\n0,1\n60,2\n").expect("write");
    let out = meridianctl(&[
        "simulate",
        "-f",
        demo.to_str().expect("path"),
        "--trace",
        trace.to_str().expect("path"),
        "--start",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start `yesterday`: not an RFC 3339 time"));
}

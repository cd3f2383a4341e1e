//! Observability of the local mesh, with real processes: Prometheus (the
//! bootstrap's 2.42) scrapes every sidecar, gateway, the caller-side proxy
//! and the prober with the rules of `deploy/prometheus/`; the recording
//! rules produce series; every query of the shipped Grafana dashboard
//! parses and names metrics that exist; and a region whose model file is
//! replaced by other weights is caught by the prober within two probe
//! rounds, the drift alert firing for that region alone.

use anyhow::{Context, Result};
use meridian_integration::load::{CallSpec, Load};
use meridian_integration::mesh::{Mesh, MeshSpec, Observability, MODEL};
use meridian_integration::prometheus::{self, sum_of, Prometheus, Sample, TextSample};
use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::reference::ReferenceSet;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const DRIFTED_REGION: &str = "us-east";
const DRIFTED_VERSION: &str = "v2";

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
async fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        match block_in_place(&mut check) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {within:?} (last error: {last})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The metric names an expression refers to: identifiers outside label
/// matchers, ranges, strings and `by`/`without`/`on`/`ignoring`/`group_*`
/// lists, that are not functions, keywords or aggregations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] =
        &["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"];
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_braces, mut depth_brackets) = (0, 0, 0);
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
            }
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            '(' if skip_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_list = false;
            }
            c if (c.is_ascii_alphabetic() || c == '_' || c == ':') && depth_braces == 0 && depth_brackets == 0 => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if KEYWORDS.contains(&word.as_str()) {
                    skip_list =
                        matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right");
                } else if next != Some(&'(') && !AGGREGATIONS.contains(&word.as_str()) {
                    names.insert(word);
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// Every query of the shipped dashboard (panels and template variables),
/// with its variables set to match anything.
fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let path = meridian_integration::workspace_root().join("deploy/grafana/meridian-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().context("panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((panel["title"].as_str().unwrap_or("?").to_string(), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"].as_str().or_else(|| variable["query"]["query"].as_str()).unwrap_or_default();
        if let Some(inner) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s).trim();
            out.push((format!("variable {}", variable["name"]), selector.to_string()));
        }
    }
    let set = |e: &str| e.replace("$region", ".*").replace("$model", ".*");
    Ok(out.into_iter().map(|(title, expr)| (title, set(&expr))).collect())
}

fn regions_of(samples: &[Sample]) -> BTreeSet<String> {
    samples.iter().map(|s| s.label("region").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh_and_a_region_serving_other_weights_is_caught() -> Result<()> {
    let mut spec = MeshSpec::test_policy("canary")?;
    // Synthetic calls are made as each region's callers.
    spec.policy.caller_proxy.trust_caller_region_header = true;
    spec.observability = Some(Observability::default());
    let mesh = block_in_place(|| Mesh::start(&spec))?;
    let prom: &Prometheus = mesh.prometheus().context("observability")?;
    let prober = mesh.prober().context("observability")?;
    let regions = mesh.region_names();

    // Traffic through the mesh, and one call no region may serve (an
    // unknown residency zone), so that the filter's rejection counters exist.
    let load = Load::start(mesh.listener(), CallSpec::new(MODEL, 16), 2, Duration::ZERO).await?;
    let mut channel = GrpcInferenceServiceClient::connect(format!("http://{}", mesh.listener())).await?;
    let mut rejected = CallSpec::new(MODEL, 16);
    rejected.residency = Some("nowhere".into());
    let record = meridian_integration::load::call(&mut channel, &rejected, 1).await;
    assert_ne!(record.code, 0, "a call with no allowed region is refused");

    // Every target is scraped and up.
    let expected = mesh.scrape_target_count();
    let up = eventually(Duration::from_secs(60), "every target up", || {
        let up = prom.query("up")?;
        Ok((up.len() == expected && up.iter().all(|s| s.value == 1.0)).then_some(up))
    })
    .await?;
    let jobs: BTreeSet<&str> = up.iter().map(|s| s.label("job")).collect();
    assert_eq!(
        jobs,
        BTreeSet::from(["meridian-caller-proxy", "meridian-gateway", "meridian-prober", "meridian-sidecar"])
    );

    // The recording rules produce series, per region where they should.
    for rule in [
        "region_model_version:meridian_inference_requests:rate1m",
        "region_model:meridian_inference_requests:rate1m",
        "region_model:meridian_inference_errors:ratio_rate1m",
        "region_model:meridian_inference_request_duration_seconds:p99_1m",
        "region_model:meridian_inference_queue_duration_seconds:p99_1m",
        "region_model:meridian_inference_pending_requests:sum",
        "region_model:meridian_inference_batch_size:mean_1m",
        "region:meridian_outcome:rate1m",
        "model_version_region:meridian_probe_drift:ratio",
        "region:meridian_probe_synthetic_success:ratio_rate5m",
    ] {
        // (A model without calls has no quantiles: NaN, as in Prometheus.)
        eventually(Duration::from_secs(60), rule, || {
            let s = prom.query(rule)?;
            Ok(s.iter().any(|s| s.value.is_finite()).then_some(()))
        })
        .await?;
    }
    // The probes reach every region: drift ratios and synthetic successes for all three.
    let drift = eventually(Duration::from_secs(30), "drift ratios of every region and version", || {
        let s = prom.query("model_version_region:meridian_probe_drift:ratio")?;
        Ok((s.len() == 2 * regions.len()).then_some(s))
    })
    .await?;
    assert!(drift.iter().all(|s| s.value <= 1.0), "clean regions are within the tolerance: {drift:?}");
    let synthetic = prom.query("region:meridian_probe_synthetic_success:ratio_rate5m")?;
    assert_eq!(regions_of(&synthetic), regions.iter().cloned().collect());
    // The filter's stats carry their region as a label (Envoy tag extraction).
    let healthy = prom.query("meridian_healthy")?;
    assert_eq!(regions_of(&healthy), regions.iter().cloned().collect(), "{healthy:?}");
    assert!(healthy.iter().all(|s| s.value == 1.0 && s.label("proxy_region") == "eu-west"), "{healthy:?}");

    // A region's canary model file replaced with other weights.
    let reference_file = mesh.references().get(DRIFTED_VERSION).context("v2's reference set")?;
    let reference = ReferenceSet::from_json(&std::fs::read_to_string(reference_file)?)?;
    let rounds = |samples: &[TextSample]| sum_of(samples, "meridian_probe_rounds_total", &[]);
    let drift_checks = |samples: &[TextSample], region: &str, result: &str| {
        sum_of(
            samples,
            "meridian_probe_drift_checks_total",
            &[("region", region), ("version", DRIFTED_VERSION), ("result", result)],
        )
    };
    block_in_place(|| mesh.replace_model(DRIFTED_REGION, DRIFTED_VERSION, 4242))?;
    // The moment the region serves the new weights (seen with the reference
    // inputs at its gateway): the prober's round count then.
    let gateway = mesh.gateway_addr(DRIFTED_REGION).context("gateway")?;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{gateway}")).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let served_new_at_round = loop {
        let mut request = tonic::Request::new(reference.request(""));
        request.metadata_mut().insert(headers::ROUTE_VERSION, DRIFTED_VERSION.parse()?);
        if let Ok(answer) = client.model_infer(request).await {
            if reference.max_abs_error(answer.get_ref())? > reference.tolerance {
                break rounds(&block_in_place(|| prober.samples())?);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{DRIFTED_REGION} never served the new weights");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The prober reports the drift within two rounds of that moment.
    let (caught_at_round, samples) = eventually(Duration::from_secs(30), "the prober reports the drift", || {
        let samples = prober.samples()?;
        Ok((drift_checks(&samples, DRIFTED_REGION, "drift") > 0.0).then(|| (rounds(&samples), samples)))
    })
    .await?;
    assert!(
        caught_at_round <= served_new_at_round + 2.0,
        "served from round {served_new_at_round}, caught at round {caught_at_round}"
    );
    let error =
        sum_of(&samples, "meridian_probe_max_abs_error", &[("region", DRIFTED_REGION), ("version", DRIFTED_VERSION)]);
    assert!(error > reference.tolerance, "{error}");

    // The alert fires for that region and version alone.
    let firing = eventually(Duration::from_secs(30), "MeridianModelDrift firing", || {
        let s = prom.query(r#"ALERTS{alertname="MeridianModelDrift",alertstate="firing"}"#)?;
        Ok((!s.is_empty()).then_some(s))
    })
    .await?;
    let drifted: BTreeSet<(&str, &str)> = firing.iter().map(|s| (s.label("region"), s.label("version"))).collect();
    assert_eq!(drifted, BTreeSet::from([(DRIFTED_REGION, DRIFTED_VERSION)]));
    let samples = block_in_place(|| prober.samples())?;
    for region in regions.iter().filter(|r| *r != DRIFTED_REGION) {
        assert_eq!(drift_checks(&samples, region, "drift"), 0.0, "{region} drifted");
        assert!(drift_checks(&samples, region, "ok") > 0.0, "{region} was checked");
    }
    // Synthetic calls as each region's callers were served there.
    for region in &regions {
        let ok = sum_of(
            &samples,
            "meridian_probe_synthetic_total",
            &[("region", region), ("served_region", region), ("result", "ok")],
        );
        assert!(ok > 0.0, "no synthetic call as {region} served in {region}");
    }

    // Every dashboard query parses and names metrics that exist (ALERTS
    // exists now that an alert fires). Envoy exports a filter counter from
    // its first event on; one that no call of this test caused must be a
    // counter the filter counts (its dotted name in the decision core).
    let names: BTreeSet<String> = block_in_place(|| prom.metric_names())?.into_iter().collect();
    let core = std::fs::read_to_string(meridian_integration::workspace_root().join("filters/core/src/decision.rs"))?;
    for (title, expr) in dashboard_queries()? {
        block_in_place(|| prom.query(&expr)).with_context(|| format!("dashboard panel {title:?}: {expr}"))?;
        for name in metric_names(&expr) {
            let event_counter = name.starts_with("meridian_")
                && ["meridian.retry.", "meridian.reject."].iter().any(|prefix| {
                    core.contains(&format!("\"{prefix}{}\"", name.trim_start_matches(&prefix.replace('.', "_"))))
                });
            assert!(
                names.contains(&name) || event_counter,
                "dashboard panel {title:?} names {name}, which Prometheus has not seen and the filter does not count"
            );
        }
    }

    let records = load.stop().await;
    let failed = records.iter().filter(|r| r.code != 0).count();
    assert_eq!(failed, 0, "{failed} of {} calls failed", records.len());
    Ok(())
}

#[test]
fn metric_names_skip_functions_labels_and_grouping() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (region, le) (rate(meridian_x_bucket{region=~"a|b", q="by(x)"}[5m])))
           / on(model) group_left() max by (model)(meridian_tol) > bool 2 and ALERTS"#,
    );
    assert_eq!(names, BTreeSet::from(["meridian_x_bucket".into(), "meridian_tol".into(), "ALERTS".into()]));
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let files = prometheus::shipped_rule_files();
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let checked = prometheus::check_rules(&refs)?;
    assert!(checked.matches("SUCCESS").count() == 2, "{checked}");
    let tests = meridian_integration::workspace_root().join("deploy/prometheus/tests/meridian.test.yml");
    let out = prometheus::promtool()?.arg("test").arg("rules").arg(&tests).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "promtool test rules:\n{text}");
    Ok(())
}

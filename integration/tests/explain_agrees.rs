//! `meridianctl explain` against the running filter: for every scenario —
//! callers bound to residencies or not, calling from each region, canary
//! keys on both sides of the split, a region the canary does not run, a
//! residency conflict, a zone no region is in — under four sets of regions
//! down (their sidecars paused, so the filter's health checks fail), the
//! decision explain computes from the policy is the decision the filter in
//! Envoy makes: the same version, region order, reason and retries, or the
//! same refusal. The regions answer with set-apart latencies (injected at
//! their gateways), which explain is given (`--slow`), since the failover
//! order and a faster region's lead follow measured latency.

use meridian_filters_core::canary::{bucket, on_canary};
use meridian_integration::load::{call, connect, CallSpec, Record};
use meridian_integration::mesh::{Fault, Mesh, MeshSpec, MODEL};
use meridian_mesh_config::explain::{explain, Report, Scenario};
use meridian_mesh_config::policy::Policy;
use std::time::{Duration, Instant};

/// The request a scenario sends through the mesh.
fn call_spec(s: &Scenario) -> CallSpec {
    let mut spec = CallSpec::new(MODEL, 16);
    spec.caller = s.caller.clone();
    spec.residency = s.residency.clone();
    spec.caller_region = s.from.clone();
    if let Some(key) = &s.canary_key {
        spec.headers.push(("x-user".into(), key.clone()));
    }
    spec
}

/// What explain says, in the filter's own words: the decision header's
/// fields for a routed call, the reason for a refused one.
fn expected(report: &Report) -> String {
    if report.outcome == "refused" {
        return format!("refused:{}", report.reason);
    }
    format!(
        "regions={};reason={};retries={};version={}",
        report.regions.join(","),
        report.reason,
        report.retries,
        report.version.as_deref().unwrap_or("-")
    )
}

fn observed(r: &Record) -> String {
    if let Some(reason) = &r.reason {
        return format!("refused:{reason}");
    }
    // The header's canary field (weight and phase) is not part of explain's answer.
    r.decision
        .as_deref()
        .map(|d| d.split(';').filter(|kv| !kv.starts_with("canary=")).collect::<Vec<_>>().join(";"))
        .unwrap_or_else(|| format!("no decision header (code {}: {})", r.code, r.message))
}

/// A sticky key on the canary (bucket below 30 %) and one off it.
fn keys() -> (String, String) {
    let find = |want: bool| (0..).map(|i| format!("user-{i}")).find(|k| on_canary(bucket(MODEL, k), 30.0) == want);
    (find(true).unwrap_or_default(), find(false).unwrap_or_default())
}

/// Each region's added latency (its gateway's injected delay), ms: the
/// failover order follows measured latency, so the mesh's regions are set
/// apart enough that their order is certain, and explain is told it.
const DELAY_MS: [(&str, u64); 3] = [("eu-west", 0), ("eu-central", 20), ("us-east", 150)];

fn scenario(caller: Option<&str>, from: &str, residency: Option<&str>, key: &str, down: &[&str]) -> Scenario {
    Scenario {
        model: MODEL.into(),
        caller: caller.map(str::to_string),
        residency: residency.map(str::to_string),
        from: Some(from.to_string()),
        down: down.iter().map(|r| r.to_string()).collect(),
        // What the filter measures: the delay plus a couple of ms of serving.
        slow: DELAY_MS.iter().map(|(r, ms)| (r.to_string(), ms + 2)).collect(),
        canary_key: Some(key.to_string()),
        ..Scenario::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_filter_in_envoy_on_every_scenario() -> anyhow::Result<()> {
    let spec = MeshSpec::test_policy("explain")?;
    let policy = Policy::from_spec(spec.policy.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    tokio::task::block_in_place(|| {
        DELAY_MS.iter().try_for_each(|(r, ms)| {
            mesh.set_fault(r, Fault { delay_percent: u32::from(*ms > 0) * 100, delay_ms: *ms, ..Fault::default() })
        })
    })?;
    let (on, off) = keys();
    let regions = ["eu-west", "eu-central", "us-east"];
    let mut agreed = 0;
    let mut outcomes = std::collections::BTreeSet::new();
    let mut client = connect(mesh.listener()).await?;
    for down in [&[][..], &["eu-west"], &["eu-west", "eu-central"], &["us-east"]] {
        tokio::task::block_in_place(|| regions.iter().try_for_each(|r| mesh.pause_sidecars(r, down.contains(r))))?;
        // The filter's health view (its gauges, flushed every tick by a
        // worker that serves calls) shows the set.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let _ = call(&mut client, &CallSpec::new(MODEL, 16), 0).await;
            let mut matches = true;
            for r in regions {
                let healthy =
                    tokio::task::block_in_place(|| mesh.caller().stat(&format!("wasmcustom.meridian.healthy.{r}")))?;
                matches &= healthy == Some(u64::from(!down.contains(&r)));
            }
            if matches {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the filter never saw {down:?} down");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Explain is told the steady latencies; a region just back from a
        // pause last measured what the pause did to it (its backlog), and a
        // region no scenario's leader reaches would keep that sample. Fresh
        // samples first: calls from each region's own callers stay local.
        for r in regions.iter().filter(|r| !down.contains(r)) {
            let mut local = CallSpec::new(MODEL, 16);
            local.caller_region = Some(r.to_string());
            for i in 0..20 {
                call(&mut client, &local, i).await;
            }
        }
        let mut scenarios = vec![
            scenario(Some("web-eu"), "eu-west", None, &on, down),
            scenario(Some("web-eu"), "eu-west", None, &off, down),
            scenario(Some("app-us"), "us-east", None, &on, down),
            scenario(Some("batch"), "eu-west", None, &off, down),
            scenario(Some("audit-us"), "eu-central", None, &on, down),
            scenario(None, "us-east", Some("eu"), &on, down),
        ];
        if down.is_empty() {
            // Refused whatever is down: a caller bound to eu asking for us,
            // and a zone no region is in.
            scenarios.push(scenario(Some("web-eu"), "eu-west", Some("us"), &on, down));
            scenarios.push(scenario(None, "eu-west", Some("apac"), &on, down));
        }
        for s in &scenarios {
            let report = explain(&policy, s).map_err(|e| anyhow::anyhow!("{e}"))?;
            let want = expected(&report);
            // The filter's workers adopt a new health view at their next
            // tick (and a route change after the dwell): the first calls may
            // see the old one. Then every call must agree.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut seen = observed(&call(&mut client, &call_spec(s), 0).await);
            while seen != want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen = observed(&call(&mut client, &call_spec(s), 0).await);
            }
            assert_eq!(seen, want, "explain disagrees with the filter for {s:?}\nexplain said:\n{report}");
            for i in 1..=5 {
                let again = observed(&call(&mut client, &call_spec(s), i).await);
                assert_eq!(again, want, "the filter changed its mind for {s:?}");
            }
            agreed += 1;
            outcomes.insert(want);
        }
    }
    for r in regions {
        tokio::task::block_in_place(|| mesh.pause_sidecars(r, false))?;
    }
    eprintln!("explain agreed with the filter on {agreed} scenarios, {} distinct decisions:", outcomes.len());
    for o in &outcomes {
        eprintln!("  {o}");
    }
    assert!(agreed >= 20, "{agreed} scenarios");
    assert!(outcomes.len() >= 10, "the scenarios exercise varied decisions: {outcomes:?}");
    for needle in [
        "version=v2",
        "version=v1",
        "refused:no-available-region",
        "refused:residency-conflict",
        "refused:residency-excludes-all",
        "reason=local-unavailable",
        "reason=faster",
    ] {
        assert!(outcomes.iter().any(|o| o.contains(needle)), "no scenario gave {needle}: {outcomes:?}");
    }
    Ok(())
}

//! `meridianctl render envoy` from the example policy: the caller-side
//! bootstrap of every region and every region's gateway pass
//! `envoy --mode validate` (the filter's VM starts and accepts the derived
//! configuration); a policy without what plain Envoy needs says which
//! field is missing.

use meridian_integration::{envoy, wasm_path, workspace_root};
use meridian_mesh_config::certs::{self, MeshCerts};
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::envoy::{
    caller_from_policy, caller_mtls, caller_proxy, gateway_from_policy, gateway_mtls, region_gateway,
};

fn policy(path: &str) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(workspace_root().join(path))?;
    Policy::parse(&text).map_err(|e| anyhow::anyhow!("{path}:\n{e}"))
}

#[test]
fn every_caller_and_gateway_of_the_example_passes_envoy_validate() -> anyhow::Result<()> {
    let policy = policy("examples/policy.yaml")?;
    let mut validated = Vec::new();
    for region in policy.spec().regions.iter().map(|r| r.name.clone()) {
        let caller = caller_proxy(&caller_from_policy(&policy, &region, wasm_path()?).map_err(anyhow::Error::msg)?);
        let gateway = region_gateway(&gateway_from_policy(&policy, &region).map_err(anyhow::Error::msg)?);
        for (role, yaml) in [("caller", caller), ("gateway", gateway)] {
            let out = envoy::validate(&yaml)?;
            anyhow::ensure!(
                out.status.success(),
                "envoy --mode validate refused the {role} of {region}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            validated.push(format!("{role}-{region}"));
        }
    }
    assert_eq!(validated.len(), 6, "{validated:?}");
    Ok(())
}

#[test]
fn the_traced_caller_and_gateway_pass_envoy_validate() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("examples/policy.yaml"))?;
    let traced = format!(
        "{text}\ntelemetry:\n  tracing:\n    otlp: otel-collector.observability:4317\n    samplingPercent: 5\n"
    );
    let policy = Policy::parse(&traced).map_err(|e| anyhow::anyhow!("{e}"))?;
    let caller = caller_from_policy(&policy, "eu-west", wasm_path()?).map_err(anyhow::Error::msg)?;
    let gateway = gateway_from_policy(&policy, "eu-west").map_err(anyhow::Error::msg)?;
    for (role, yaml) in [("caller", caller_proxy(&caller)), ("gateway", region_gateway(&gateway))] {
        assert!(yaml.contains("envoy.tracers.opentelemetry"), "{role}: no tracer rendered");
        assert!(yaml.contains("otel-collector.observability"), "{role}: no collector cluster");
        let out = envoy::validate(&yaml)?;
        anyhow::ensure!(
            out.status.success(),
            "envoy --mode validate refused the traced {role}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A collector that is not host:port is refused, naming the field.
    let bad = format!("{text}\ntelemetry:\n  tracing:\n    otlp: http://collector\n");
    let err = Policy::parse(&bad).expect_err("not host:port").to_string();
    assert!(err.contains("telemetry.tracing.otlp"), "{err}");
    Ok(())
}

#[test]
fn the_mutual_tls_caller_and_gateway_pass_envoy_validate() -> anyhow::Result<()> {
    let policy = policy("examples/policy.yaml")?;
    let dir = tempfile::tempdir()?;
    certs::issue(&policy, dir.path(), 1, false)?;
    let layout = MeshCerts::new(dir.path());
    let mut caller = caller_from_policy(&policy, "eu-west", wasm_path()?).map_err(anyhow::Error::msg)?;
    caller_mtls(&policy, &layout, &mut caller);
    let mut gateway = gateway_from_policy(&policy, "eu-west").map_err(anyhow::Error::msg)?;
    gateway_mtls(&policy, &layout, &mut gateway);
    for (role, yaml) in [("caller", caller_proxy(&caller)), ("gateway", region_gateway(&gateway))] {
        assert!(yaml.contains("UpstreamTlsContext"), "{role}: no TLS rendered");
        let out = envoy::validate(&yaml)?;
        anyhow::ensure!(
            out.status.success(),
            "envoy --mode validate refused the mTLS {role}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn plain_envoy_needs_gateways_and_endpoints_and_says_where() -> anyhow::Result<()> {
    let mut spec = policy("examples/policy.yaml")?.into_spec();
    spec.regions[1].gateway = None;
    spec.regions[2].endpoints.clear();
    let policy = Policy::from_spec(spec).map_err(anyhow::Error::msg)?;
    let err = caller_from_policy(&policy, "eu-west", wasm_path()?).expect_err("a region without a gateway");
    assert!(
        err.to_string().contains("regions[1].gateway: plain Envoy reaches region eu-central through its gateway"),
        "{err}"
    );
    let err = gateway_from_policy(&policy, "us-east").expect_err("no endpoints");
    assert!(
        err.to_string().contains("regions[2].endpoints: plain Envoy routes to the region's model servers"),
        "{err}"
    );
    Ok(())
}

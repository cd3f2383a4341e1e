//! Distributed tracing through the local mesh: the caller-side Envoy, the
//! region gateway's Envoy (OpenTelemetry tracers) and the model server
//! (OTLP exporter) all send spans to the test's OTLP receiver, and one call
//! is one trace: caller proxy → gateway → the sidecar's call span with its
//! queue and execute children, and the batch span linked to it.

use meridian_integration::load::{call, connect, CallSpec};
use meridian_integration::mesh::{Mesh, MeshSpec, MODEL};
use meridian_integration::otlp::{ReceivedSpan, Receiver};
use meridian_mesh_config::policy::spec::Tracing;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

type Client = GrpcInferenceServiceClient<tonic::transport::Channel>;

/// One call through the mesh, with the caller's own `traceparent` if any.
async fn call_with(client: &mut Client, traceparent: Option<&str>) -> anyhow::Result<()> {
    let mut spec = CallSpec::new(MODEL, 16);
    spec.headers.extend(traceparent.map(|tp| ("traceparent".to_string(), tp.to_string())));
    let record = call(client, &spec, 0).await;
    anyhow::ensure!(record.code == 0, "the call failed: {record:?}");
    Ok(())
}

fn of<'a>(spans: &'a [ReceivedSpan], trace: &str, service: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace && s.service == service).collect()
}

/// The spans of `trace` from all three hops, the sidecar's three included.
fn complete(spans: &[ReceivedSpan], trace: &str) -> bool {
    let names: Vec<&str> = of(spans, trace, "meridian-sidecar-eu-west").iter().map(|s| s.name.as_str()).collect();
    !of(spans, trace, "meridian-caller-proxy").is_empty()
        && !of(spans, trace, "meridian-gateway-eu-west").is_empty()
        && names.contains(&"queue")
        && names.contains(&"execute")
        && names.iter().any(|n| n.ends_with("/ModelInfer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_is_one_trace_across_caller_proxy_gateway_and_sidecar() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let mut spec = MeshSpec::three_regions()?;
    spec.policy.telemetry.tracing = Some(Tracing { otlp: receiver.addr().to_string(), sampling_percent: 100.0 });
    let mesh = tokio::task::block_in_place(|| Mesh::start(&spec))?;
    let mut client = connect(mesh.listener()).await?;

    // A caller with its own sampled trace.
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    call_with(&mut client, Some(&traceparent)).await?;
    let spans = receiver.wait_for(Duration::from_secs(30), |s| complete(s, TRACE)).await;
    assert!(complete(&spans, TRACE), "the trace lacks a hop; received: {spans:#?}");

    // Parent chain: the caller's span → the caller proxy → the gateway → the sidecar.
    let proxy = of(&spans, TRACE, "meridian-caller-proxy");
    let proxy_root =
        proxy.iter().find(|s| s.parent_span_id == CALLER_SPAN).expect("the caller proxy continues the caller's trace");
    let proxy_ids: Vec<&str> = proxy.iter().map(|s| s.span_id.as_str()).collect();
    let gateway = of(&spans, TRACE, "meridian-gateway-eu-west");
    let gateway_ids: Vec<&str> = gateway.iter().map(|s| s.span_id.as_str()).collect();
    assert!(
        gateway.iter().any(|s| proxy_ids.contains(&s.parent_span_id.as_str())),
        "the gateway's span is not a child of the caller proxy's: {gateway:#?} / {proxy:#?}"
    );
    let sidecar = of(&spans, TRACE, "meridian-sidecar-eu-west");
    let call = sidecar.iter().find(|s| s.name.ends_with("/ModelInfer")).expect("call span");
    assert!(
        gateway_ids.contains(&call.parent_span_id.as_str()),
        "the sidecar's call span is not a child of the gateway's: {call:#?} / {gateway:#?}"
    );
    for child in ["queue", "execute"] {
        let span = sidecar.iter().find(|s| s.name == child).expect("child");
        assert_eq!(span.parent_span_id, call.span_id, "{child} is not the call's child");
        assert!(span.start_ns >= call.start_ns && span.end_ns <= call.end_ns, "{child} outside its call: {span:#?}");
    }
    // The filter's decision and the model, on the proxy's span and the sidecar's.
    let decision = proxy_root.attribute("meridian.decision").unwrap_or_default();
    assert!(decision.starts_with("regions=eu-west"), "caller proxy span: {proxy_root:#?}");
    assert_eq!(call.attribute("meridian.decision"), Some(decision));
    assert_eq!(call.attribute("meridian.model"), Some(MODEL));
    assert_eq!(proxy_root.attribute("meridian.model"), Some(MODEL));

    // The batch that ran it: its own trace, linked to the call span.
    let call_link = (TRACE.to_string(), call.span_id.clone());
    let spans = receiver
        .wait_for(Duration::from_secs(30), |s| {
            s.iter().any(|b| b.name.starts_with("batch ") && b.links.contains(&call_link))
        })
        .await;
    let batch = spans
        .iter()
        .find(|b| b.name.starts_with("batch ") && b.links.contains(&call_link))
        .expect("a batch span linked to the call");
    assert_ne!(batch.trace_id, TRACE, "a batch is not any one call's child");
    assert_eq!(batch.attribute("meridian.batch_rows").map(|r| r.parse::<u64>().is_ok()), Some(true));

    // A caller without a trace: the caller proxy starts one, and the model
    // server's span still continues it.
    call_with(&mut client, None).await?;
    let started_by_proxy = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .filter(|s| s.service == "meridian-caller-proxy" && s.trace_id != TRACE)
            .map(|s| s.trace_id.clone())
            .find(|t| complete(spans, t))
    };
    let spans = receiver.wait_for(Duration::from_secs(30), |s| started_by_proxy(s).is_some()).await;
    assert!(started_by_proxy(&spans).is_some(), "no complete trace for a call without traceparent: {spans:#?}");
    Ok(())
}

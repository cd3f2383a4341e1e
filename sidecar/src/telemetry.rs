//! Distributed tracing: OpenTelemetry spans exported over OTLP/gRPC
//! (`--otlp-endpoint`).
//!
//! Each inference call gets a server span whose parent is the caller's W3C
//! `traceparent` (the proxy's span, in the mesh), with two children timed
//! on the batcher's clock: `queue` (waiting for a batch) and `execute` (the
//! batch running). Each batch that served traced calls gets one `batch`
//! span, in a trace of its own, linked to every call span it served — a
//! batch has many parents, which only links can say.
//!
//! Like OpenTelemetry's own global provider, the exporter is installed once
//! per process ([`install`]); without it nothing is created and a call pays
//! one check.

use crate::batcher::{BatchTrace, TraceLink};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

static TRACING: OnceLock<Tracing> = OnceLock::new();

#[derive(Debug)]
struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Where spans go and which calls are traced.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// The collector's OTLP/gRPC endpoint (`http://host:4317`, or `host:port`).
    pub endpoint: String,
    /// The `service.name` of this server's spans.
    pub service_name: String,
    /// Attributes of every span's resource (`meridian.region`, …).
    pub resource: Vec<(String, String)>,
    /// Share (0–1) of calls without a sampled parent that start a trace; a
    /// caller's sampling decision is always followed.
    pub sampling_ratio: f64,
    /// How long finished spans wait before they are sent.
    pub flush: Duration,
}

/// Starts exporting spans. Must run inside the Tokio runtime (the gRPC
/// exporter's connection lives there). Once per process.
pub fn install(options: &TraceOptions) -> anyhow::Result<()> {
    let endpoint = if options.endpoint.contains("://") {
        options.endpoint.clone()
    } else {
        format!("http://{}", options.endpoint)
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("the OTLP exporter for {endpoint}: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(options.flush).build())
        .build();
    let resource = Resource::builder()
        .with_service_name(options.service_name.clone())
        .with_attributes(options.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(options.sampling_ratio))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("meridian-sidecar");
    TRACING.set(Tracing { provider, tracer }).map_err(|_| anyhow::anyhow!("tracing is already installed"))
}

/// Whether spans are exported (checked before any per-call work).
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// Sends what is buffered and stops exporting (at shutdown).
pub fn shutdown() {
    if let Some(t) = TRACING.get() {
        if let Err(e) = t.provider.shutdown() {
            tracing::warn!("flushing spans at shutdown: {e}");
        }
    }
}

/// The W3C trace context headers a call arrived with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Incoming<'a> {
    /// `traceparent`.
    pub traceparent: Option<&'a str>,
    /// `tracestate`.
    pub tracestate: Option<&'a str>,
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// How a served call spent its time, on the batcher's clock.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// When its batch started (its queue wait ends here).
    pub batch_started: Instant,
    /// Time in the queue.
    pub queue_time: Duration,
    /// Time the batch ran.
    pub compute_time: Duration,
    /// Rows in the batch.
    pub batch_rows: usize,
    /// The instance that ran it.
    pub instance: usize,
}

/// The span of one inference call, while it runs.
#[derive(Debug)]
pub struct CallSpan {
    span: Span,
    context: Context,
    clock: Clock,
}

impl CallSpan {
    /// Starts the span of a call to `method` that arrived at `arrived`, a
    /// child of the caller's trace context; `None` when tracing is off or
    /// the call is not sampled.
    pub fn start(method: &str, incoming: Incoming<'_>, arrived: Instant) -> Option<Self> {
        let t = TRACING.get()?;
        let parent = TraceContextPropagator::new().extract(&incoming);
        let clock = Clock::now();
        let span = t
            .tracer
            .span_builder(format!("inference.GRPCInferenceService/{method}"))
            .with_kind(SpanKind::Server)
            .with_start_time(clock.at(arrived))
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "inference.GRPCInferenceService"),
                KeyValue::new("rpc.method", method.to_string()),
            ])
            .start_with_context(&t.tracer, &parent);
        if !span.span_context().is_sampled() {
            return None;
        }
        let context = Context::new().with_remote_span_context(span.span_context().clone());
        Some(Self { span, context, clock })
    }

    /// What a batch span links to.
    pub fn link(&self) -> TraceLink {
        let cx = self.span.span_context();
        TraceLink {
            trace_id: u128::from_be_bytes(cx.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
        }
    }

    /// Records an attribute on the call's span.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.span.set_attribute(KeyValue::new(key, value));
    }

    /// Ends a served call: its `queue` and `execute` children, then itself.
    pub fn served(mut self, served: &Served) {
        if let Some(t) = TRACING.get() {
            let queued = served.batch_started.checked_sub(served.queue_time).unwrap_or(served.batch_started);
            let mut queue = t
                .tracer
                .span_builder("queue")
                .with_start_time(self.clock.at(queued))
                .start_with_context(&t.tracer, &self.context);
            queue.end_with_timestamp(self.clock.at(served.batch_started));
            let mut execute = t
                .tracer
                .span_builder("execute")
                .with_start_time(self.clock.at(served.batch_started))
                .with_attributes([
                    KeyValue::new("meridian.batch_rows", served.batch_rows as i64),
                    KeyValue::new("meridian.instance", served.instance as i64),
                ])
                .start_with_context(&t.tracer, &self.context);
            execute.end_with_timestamp(self.clock.at(served.batch_started + served.compute_time));
        }
        self.span.set_attribute(KeyValue::new("rpc.grpc.status_code", 0i64));
        self.span.end();
    }

    /// Ends a failed call with its gRPC status.
    pub fn failed(mut self, grpc_code: i32, message: &str) {
        self.span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(grpc_code)));
        self.span.set_status(Status::error(message.to_string()));
        self.span.end();
    }
}

/// Records the span of a batch that served traced calls, linked to each.
pub fn batch_span(name: &str, batch: &BatchTrace<'_>) {
    let Some(t) = TRACING.get() else { return };
    let clock = Clock::now();
    let links = batch
        .links
        .iter()
        .map(|l| {
            Link::with_context(SpanContext::new(
                TraceId::from(l.trace_id),
                SpanId::from(l.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ))
        })
        .collect();
    let mut span = t
        .tracer
        .span_builder(name.to_string())
        .with_start_time(clock.at(batch.started))
        .with_links(links)
        .with_attributes([
            KeyValue::new("meridian.batch_rows", batch.rows as i64),
            KeyValue::new("meridian.batch_requests", batch.links.len() as i64),
            KeyValue::new("meridian.instance", batch.instance as i64),
        ])
        // Its own trace: a batch is not any one call's child.
        .start_with_context(&t.tracer, &Context::new());
    if !batch.ok {
        span.set_status(Status::error("the batch failed"));
    }
    span.end_with_timestamp(clock.at(batch.started + batch.compute));
}

/// Maps the monotonic clock the batcher uses onto wall-clock time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall: SystemTime,
    mono: Instant,
}

impl Clock {
    fn now() -> Self {
        Self { wall: SystemTime::now(), mono: Instant::now() }
    }

    fn at(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_maps_instants_both_sides_of_now() {
        let clock = Clock::now();
        let earlier = clock.mono - Duration::from_millis(250);
        let later = clock.mono + Duration::from_millis(100);
        assert_eq!(clock.wall.duration_since(clock.at(earlier)).ok(), Some(Duration::from_millis(250)));
        assert_eq!(clock.at(later).duration_since(clock.wall).ok(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn only_the_trace_context_headers_are_extracted() {
        let incoming =
            Incoming { traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), tracestate: None };
        let parent = TraceContextPropagator::new().extract(&incoming);
        let cx = parent.span().span_context().clone();
        assert_eq!(format!("{:032x}", cx.trace_id()), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(format!("{:016x}", cx.span_id()), "b7ad6b7169203331");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(incoming.get("x-meridian-model"), None);
    }
}

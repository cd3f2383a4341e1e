//! The per-request context: request headers → decision → cluster and retry
//! headers (or an immediate UNAVAILABLE); response → outcome.

use crate::root::{now_ms, Shared};
use crate::shared;
use meridian_filters_core::decision::{Completion, Decision, Rejection, RoutePlan};
use meridian_filters_core::RequestAttrs;
use meridian_proto::headers;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, GrpcStatusCode};
use std::rc::Rc;

/// Request headers only the mesh may set; a client's values are dropped.
const INTERNAL: [&str; 3] = [headers::CLUSTER, headers::DECISION, headers::UNREACHED];

#[derive(Debug)]
pub(crate) struct MeridianHttp {
    shared: Rc<Shared>,
    plan: Option<RoutePlan>,
    grpc_status: Option<u32>,
    http_status: u16,
    served_region: Option<String>,
    latency_ms: Option<u64>,
    queue_depth: Option<f64>,
}

impl MeridianHttp {
    pub(crate) fn new(shared: Rc<Shared>) -> Self {
        Self {
            shared,
            plan: None,
            grpc_status: None,
            http_status: 0,
            served_region: None,
            latency_ms: None,
            queue_depth: None,
        }
    }

    fn route(&mut self, plan: RoutePlan, client_headers: &[(String, String)]) {
        // Overwrite, never trust: drop every x-envoy-* and internal header
        // the client sent before setting ours.
        for (name, _) in client_headers {
            if name.starts_with("x-envoy-") || INTERNAL.contains(&name.as_str()) {
                self.set_http_request_header(name, None);
            }
        }
        let retries = plan.retries.to_string();
        let per_try = plan.per_try_timeout_ms.to_string();
        self.set_http_request_header(headers::CLUSTER, Some(&plan.cluster));
        self.set_http_request_header(headers::FILTER, Some(&self.shared.config.name));
        self.set_http_request_header("x-envoy-max-retries", Some(&retries));
        if plan.retries > 0 {
            self.set_http_request_header("x-envoy-retry-on", Some(plan.retry_on));
            if !plan.retry_grpc_on.is_empty() {
                self.set_http_request_header("x-envoy-retry-grpc-on", Some(plan.retry_grpc_on));
            }
            self.set_http_request_header("x-envoy-retriable-header-names", Some(headers::UNREACHED));
            self.set_http_request_header("x-envoy-upstream-rq-per-try-timeout-ms", Some(&per_try));
        }
        self.plan = Some(plan);
    }

    fn reject(&mut self, rejection: &Rejection, grpc: bool) -> Action {
        let reason = rejection.reason.as_bytes();
        if grpc {
            let message = percent_encode(&rejection.message);
            let _ = hostcalls::send_grpc_response(
                GrpcStatusCode::Unavailable,
                Some(&message),
                vec![(headers::REASON, reason), (headers::FILTER, self.shared.config.name.as_bytes())],
            );
        } else {
            self.send_http_response(
                503,
                vec![(headers::REASON, rejection.reason), ("content-type", "text/plain")],
                Some(format!("{}\n", rejection.message).as_bytes()),
            );
        }
        Action::Pause
    }
}

impl Context for MeridianHttp {}

impl HttpContext for MeridianHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let pairs = self.get_http_request_headers();
        let attrs = RequestAttrs::from_headers(&pairs);
        if attrs.debug_panic && self.shared.config.debug.panic_header {
            panic!("x-meridian-debug-panic: panicking as asked (debug.panic_header is on)");
        }
        let now = now_ms();
        let config = self.shared.config.clone();
        let mut admit = |region: &str, model: &str| {
            shared::update(|state| state.admit_probe(&config, region, model, now)).is_some_and(|(_, admitted)| admitted)
        };
        let decision = self.shared.planner.borrow_mut().decide(&attrs, now, &mut admit);
        match decision {
            Decision::Route(plan) => {
                self.route(plan, &pairs);
                Action::Continue
            }
            Decision::Reject(rejection) => {
                let grpc = pairs.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/grpc"));
                self.reject(&rejection, grpc)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = &self.plan else { return Action::Continue };
        for (name, value) in self.get_http_response_headers() {
            match name.as_str() {
                ":status" => self.http_status = value.parse().unwrap_or(0),
                "grpc-status" => self.grpc_status = value.parse().ok(),
                headers::REGION => self.served_region = Some(value),
                headers::QUEUE_DEPTH => self.queue_depth = value.parse().ok(),
                "x-envoy-upstream-service-time" => self.latency_ms = value.parse().ok(),
                _ => {}
            }
        }
        if self.shared.config.debug.decision_header {
            let decision =
                format!("regions={};reason={};retries={}", plan.regions.join(","), plan.reason.as_str(), plan.retries);
            self.set_http_response_header(headers::DECISION, Some(&decision));
        }
        self.set_http_response_header(headers::FILTER, Some(&self.shared.config.name));
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.plan.is_some() {
            if let Some(status) = self.get_http_response_trailer("grpc-status") {
                self.grpc_status = status.parse().ok();
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(plan) = self.plan.take() else { return };
        // Without the region's stamp, Envoy answered itself (every attempt
        // failed): ask how many attempts it made.
        let attempts = if self.served_region.is_none() { attempt_count() } else { None };
        let done = Completion {
            grpc_status: self.grpc_status,
            http_status: self.http_status,
            served_region: self.served_region.as_deref(),
            attempts,
            latency_ms: self.latency_ms,
            queue_depth: self.queue_depth,
        };
        self.shared.planner.borrow_mut().complete(&plan, &done, now_ms());
    }
}

/// `upstream.request_attempt_count`, an integer property (little-endian).
fn attempt_count() -> Option<u32> {
    let bytes = hostcalls::get_property(vec!["upstream", "request_attempt_count"]).ok()??;
    let mut le = [0u8; 8];
    let n = bytes.len().min(8);
    le[..n].copy_from_slice(&bytes[..n]);
    u32::try_from(u64::from_le_bytes(le)).ok().filter(|n| *n > 0)
}

/// gRPC's `grpc-message` encoding: percent-encode bytes outside printable
/// ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

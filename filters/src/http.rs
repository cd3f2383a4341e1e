//! The per-request context: request headers → decision → cluster and retry
//! headers (or an immediate UNAVAILABLE); response → outcome.

use crate::root::Shared;
use crate::shared;
use meridian_filters_core::decision::{
    Completion, Decision, Rejection, RoutePlan, RETRY_CLASS_HEADER, RETRY_CLASS_NOT_IDEMPOTENT,
};
use meridian_filters_core::request::RequestHeaders;
use meridian_proto::headers;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, GrpcStatusCode};
use std::rc::Rc;

#[derive(Debug)]
pub(crate) struct MeridianHttp {
    shared: Rc<Shared>,
    plan: Option<RoutePlan>,
    /// `x-meridian-outcome`, read with the response headers.
    outcome: Option<String>,
    /// `grpc-status` from the trailers, when the response had any.
    trailer_status: Option<u32>,
}

impl MeridianHttp {
    pub(crate) fn new(shared: Rc<Shared>) -> Self {
        Self { shared, plan: None, outcome: None, trailer_status: None }
    }

    /// Sets what the route needs beyond its defaults: always the cluster
    /// (overwriting any value a client sent); the retry count, per-try
    /// timeout and retry class only when they differ from the route's (the
    /// default model's) — so a typical request costs one header write.
    /// Envoy itself drops client-sent retry and timeout controls
    /// (`x-envoy-max-retries`, `x-envoy-retry-on`, … — see
    /// docs/ARCHITECTURE.md), so only the filter's own settings reach the
    /// router.
    fn route(&mut self, plan: RoutePlan) {
        self.set_http_request_header(headers::CLUSTER, Some(&plan.cluster));
        let defaults = &self.shared.config.default_model.retry;
        if plan.retries != defaults.max_attempts.saturating_sub(1) {
            self.set_http_request_header("x-envoy-max-retries", Some(&plan.retries.to_string()));
        }
        if plan.retries > 0 && plan.per_try_timeout_ms != defaults.per_try_timeout_ms {
            self.set_http_request_header(
                "x-envoy-upstream-rq-per-try-timeout-ms",
                Some(&plan.per_try_timeout_ms.to_string()),
            );
        }
        if !plan.idempotent {
            self.set_http_request_header(RETRY_CLASS_HEADER, Some(RETRY_CLASS_NOT_IDEMPOTENT));
        }
        if let Some(timeout_ms) = plan.timeout_ms.filter(|t| Some(*t) != self.shared.config.default_model.timeout_ms) {
            self.set_http_request_header("x-envoy-upstream-rq-timeout-ms", Some(&timeout_ms.to_string()));
        }
        if let Some(version) = &plan.version {
            self.set_http_request_header(headers::ROUTE_VERSION, Some(version));
        }
        if self.shared.config.debug.decision_header {
            self.set_http_request_header(headers::FILTER, Some(&self.shared.config.name));
        }
        // For the trace: Envoy tags its span with it, the model server
        // records it on its own; one host call, only when the mesh traces.
        if self.shared.config.trace_decision {
            self.set_http_request_header(headers::DECISION, Some(&plan.summary()));
        }
        // The route is chosen again on the headers just set: Envoy clears
        // its route cache on every request-header write of a module of ABI
        // 0.2.1, which proxy-wasm 0.2 exports (a later ABI would need the
        // `clear_route_cache` foreign function, one more host call).
        self.plan = Some(plan);
    }

    fn reject(&mut self, rejection: &Rejection, grpc: bool) -> Action {
        let reason = rejection.reason.as_bytes();
        if grpc {
            let message = rejection.grpc_message();
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
        let config = self.shared.config.clone();
        let request = RequestHeaders::read(&config, |name| self.get_http_request_header(name));
        if let Some(counter) = request.summary().fallback_counter() {
            self.shared.planner.borrow_mut().count(counter, 1);
        }
        let attrs = request.attrs();
        if attrs.debug_panic {
            panic!("x-meridian-debug-panic: panicking as asked (debug.panic_header is on)");
        }
        let now = self.shared.now_ms.get();
        let mut admit = |region: &str, model: &str| {
            shared::update(|state| state.admit_probe(&config, region, model, now)).is_some_and(|(_, admitted)| admitted)
        };
        let decision = self.shared.planner.borrow_mut().decide(&attrs, now, &mut admit);
        match decision {
            Decision::Route(plan) => {
                self.route(plan);
                Action::Continue
            }
            Decision::Reject(rejection) => {
                let grpc =
                    self.get_http_request_header("content-type").is_some_and(|v| v.starts_with("application/grpc"));
                self.reject(&rejection, grpc)
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = &self.plan else { return Action::Continue };
        // One read: the route summarises the response in
        // `x-meridian-outcome` (region, queue depth, upstream time, attempts,
        // gRPC and HTTP status), so the filter makes one host call, not six.
        self.outcome = self.get_http_response_header(headers::OUTCOME);
        // The decision and the filter's name go back to the caller only when
        // asked (`debug.decision_header`): each header is a host call.
        if self.shared.config.debug.decision_header {
            self.set_http_response_header(headers::DECISION, Some(&plan.summary()));
            self.set_http_response_header(headers::FILTER, Some(&self.shared.config.name));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.plan.is_some() {
            if let Some(status) = self.get_http_response_trailer("grpc-status") {
                self.trailer_status = status.parse().ok();
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(plan) = self.plan.take() else { return };
        let mut done = Completion::from_outcome(self.outcome.as_deref().unwrap_or_default());
        if self.trailer_status.is_some() {
            done.grpc_status = self.trailer_status;
        }
        self.shared.planner.borrow_mut().complete(&plan, &done, self.shared.now_ms.get());
    }
}

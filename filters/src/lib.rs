//! Meridian's Proxy-Wasm filter for Envoy, built as one `wasm32-wasip1`
//! module (`make wasm`): region-aware routing under data residency, circuit
//! breaking per (region, model) and retries under a budget.
//!
//! This crate is only the adapter: it moves data between Envoy's ABI and
//! the decision core ([`meridian_filters_core`]), which holds every
//! decision and is tested natively.
//!
//! - `root`: per worker, the configuration, the tick (share outcomes
//!   under CAS, refresh the view, probe health under a lease, flush stats).
//! - `http`: per request, headers → core → the cluster header (and retry
//!   headers where they differ from the route's), or an immediate gRPC
//!   UNAVAILABLE with `x-meridian-reason`; response → outcome.
//! - `shared`: the CAS loop over the one shared-data key.
//! - `metrics`: Envoy stats defined on first use.
//!
//! The plugin configuration is JSON ([`meridian_filters_core::FilterConfig`]),
//! delivered as a `google.protobuf.StringValue` or by Istio's
//! `WasmPlugin.pluginConfig`. A configuration that does not parse is
//! rejected in `on_configure` with a log line naming the field; Envoy then
//! refuses it and the previous one stays in force.

#![forbid(unsafe_code)]

pub use meridian_filters_core::{ConfigError, FilterConfig};

/// The header the filter stamps on requests and responses.
pub const FILTER_HEADER: &str = meridian_proto::headers::FILTER;

#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod metrics;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg(target_arch = "wasm32")]
mod shared;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::MeridianRoot::new(context_id))
    });
}}

//! Meridian's Proxy-Wasm filters for Envoy, built as one `wasm32-wasip1`
//! module (`make wasm`).
//!
//! The module's plugin configuration is JSON (see [`config::FilterConfig`]),
//! delivered by Envoy as a `google.protobuf.StringValue` or by Istio's
//! `WasmPlugin.pluginConfig`. A configuration that does not parse is rejected
//! in `on_configure` with a log line naming the field; Envoy then refuses the
//! plugin (or keeps the previous configuration on an update).
//!
//! What the filter does per request:
//! - request: overwrites `x-meridian-filter` with the plugin name, so the
//!   upstream sees which Meridian filter handled the call and no client can
//!   forge it;
//! - response: adds `x-meridian-filter` with the same value, so callers and
//!   tests can see the filter ran.

#![forbid(unsafe_code)]

pub mod config;
// The proxy-wasm adapter exists only in the wasm build; natively the crate is
// its configuration and (later) its decision logic, tested as plain Rust.
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod root;

pub use config::{ConfigError, FilterConfig};

/// The header the filter stamps on requests and responses.
pub const FILTER_HEADER: &str = "x-meridian-filter";

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::MeridianRoot::default())
    });
}}

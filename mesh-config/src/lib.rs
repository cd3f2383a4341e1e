//! Meridian's mesh configuration: pure renderers from Meridian settings to
//! the configuration of the proxies that run the filters.
//!
//! - [`render::envoy`]: a plain Envoy bootstrap with the Meridian wasm
//!   filter on an HTTP/2-capable listener in front of one upstream.
//!
//! All file and process I/O lives in the `meridianctl` binary; everything
//! here is a pure function of its inputs.

#![forbid(unsafe_code)]

pub mod render;

//! Meridian's mesh configuration: pure renderers from Meridian settings to
//! the configuration of the proxies that run the filters.
//!
//! - [`render::envoy`]: plain Envoy bootstraps for the caller-side proxy
//!   (the Meridian wasm filter, a cluster per region and an aggregate
//!   cluster per failover order) and for a region gateway (region stamp,
//!   run-time fault injection).
//!
//! All file and process I/O lives in the `meridianctl` binary; everything
//! here is a pure function of its inputs.

#![forbid(unsafe_code)]

pub mod render;

//! Meridian's mesh configuration: the `MeshPolicy` that describes a mesh,
//! and pure renderers from it to the configuration of the proxies that run
//! the filters.
//!
//! - [`policy`]: the `MeshPolicy` YAML — its schema, validation (every
//!   error with its field path and line) and the filter configuration
//!   derived from it.
//! - [`render::envoy`]: plain Envoy bootstraps for the caller-side proxy
//!   (the Meridian wasm filter, a cluster per region and an aggregate
//!   cluster per failover order) and for a region gateway (region stamp,
//!   run-time fault injection).
//!
//! - [`render::istio`]: Istio resources (WasmPlugin or TrafficExtension,
//!   EnvoyFilter, DestinationRule, ServiceEntry, Gateway, VirtualService,
//!   PeerAuthentication, AuthorizationPolicy).
//! - [`explain`]: the decision the filter would make for a call, by the
//!   filter's own planner.
//! - [`xds`]: the xDS server (ADS: LDS, RDS, CDS, ECDS) that serves the
//!   policy to every Envoy, live.
//! - [`crd`]: Kubernetes CRD schemas (Istio's) as validators, CEL rules included.
//!
//! All file and process I/O lives in the `meridianctl` binary; everything
//! here is a pure function of its inputs.

#![forbid(unsafe_code)]

pub mod crd;
pub mod explain;
pub mod policy;
pub mod render;
pub mod xds;

pub use policy::{MeshPolicy, Policy, PolicyError, PolicyErrors};

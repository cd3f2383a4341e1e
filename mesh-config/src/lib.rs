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
//! - [`render::k8s`]: Kubernetes autoscaling per (model, version, region):
//!   a HorizontalPodAutoscaler or a KEDA ScaledObject.
//! - [`simulate`]: a policy's autoscaling replayed on a request-rate trace.
//! - [`explain`]: the decision the filter would make for a call, by the
//!   filter's own planner.
//! - [`xds`]: the xDS server (ADS: LDS, RDS, CDS, ECDS) that serves the
//!   policy to every Envoy, live.
//! - [`crd`]: Kubernetes CRD schemas (Istio's) as validators, CEL rules included.
//! - [`certs`]: the mesh's workload identities (SPIFFE IDs), their
//!   certificate folders, and the development PKI `meridianctl certs` writes.
//!
//! The policy, the renderers and explain are pure functions of their
//! inputs; files are read and written by the `meridianctl` binary, the xDS
//! server (the policy file it watches) and `certs::issue`.

#![forbid(unsafe_code)]

pub mod certs;
pub mod crd;
pub mod explain;
pub mod policy;
pub mod render;
pub mod simulate;
pub mod xds;

pub use policy::{MeshPolicy, Policy, PolicyError, PolicyErrors};

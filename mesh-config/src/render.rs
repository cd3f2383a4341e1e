//! Renderers: pure functions from a policy to the configuration of what
//! runs it.
//!
//! - [`envoy`]: plain Envoy bootstraps (caller-side proxy, region gateway).
//! - [`istio`]: Istio resources (the filter, EnvoyFilter patches, traffic
//!   and security resources).
//! - [`k8s`]: Kubernetes autoscaling (HPA or KEDA `ScaledObject`).
//! - [`sidecar`]: a model's `config.yaml` for `meridian-sidecar`.

pub mod envoy;
pub mod istio;
pub mod k8s;
pub mod sidecar;

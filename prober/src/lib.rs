//! `meridian-prober`: continuous checks of what the mesh serves.
//!
//! - **Drift**: each model version has a reference set (inputs and the
//!   outputs the version gave, `meridian-sidecar reference`). Every
//!   interval the prober sends it to every region's gateway for every
//!   version the region runs (`x-meridian-route-version`), and exports the
//!   largest absolute difference from the reference per (model, version,
//!   region): a region serving other weights than the reference's stands
//!   out at the next round.
//! - **Synthetic transactions**: every interval, one call per region
//!   through the caller-side proxy, as that region's callers make it
//!   (`x-meridian-caller-region`, which the proxy honours when the policy
//!   trusts it), exporting success, end-to-end latency and the region
//!   that served it.
//!
//! Targets come from the `MeshPolicy` (re-read every round, so a policy
//! edit is followed); results are Prometheus metrics on `/metrics`
//! ([`metrics`]), which `deploy/prometheus/meridian.alerts.yml` alerts on.

#![forbid(unsafe_code)]

pub mod metrics;
pub mod probe;
pub mod targets;

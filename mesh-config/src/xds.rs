//! Meridian's xDS server: `meridianctl serve -f policy.yaml`. Every Envoy
//! of the mesh — each region's caller-side proxy and gateway — bootstraps
//! from it (`meridianctl render envoy --xds ADDR`) and takes its
//! listeners, routes, clusters and the filter's configuration (ECDS) over
//! one ADS stream (state of the world). A policy change becomes one new
//! generation pushed to every connected proxy; only the resource types
//! whose content changed move, so a new filter configuration reaches every
//! worker with no listener drain, no restart and no failed call.
//!
//! - [`codec`]: the renderers' JSON as protobuf, by Envoy's descriptors.
//! - [`snapshot`]: what each proxy of a policy is served, versioned per type.
//! - `ads`: the ADS streams — ACK/NACK per proxy and type, make before break.
//! - `status`: `meridian.xds.v1.MeshStatus`, read by `meridianctl status`.
//! - [`server`]: serving, watching the policy file, refusing bad policies.

pub mod codec;
pub mod server;
pub mod snapshot;

mod ads;
mod state;
mod status;

pub use server::{serve, Background, Running, ServeError, ServerOptions};

/// `envoy.config.listener.v3.Listener`.
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration`.
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.config.cluster.v3.Cluster`.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.core.v3.TypedExtensionConfig` (ECDS).
pub const EXTENSION_CONFIG: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// Every type served, in the order a change is pushed: clusters before
/// what names them.
pub const TYPES: [&str; 4] = [CLUSTER, LISTENER, ROUTE, EXTENSION_CONFIG];

/// The short name of a type URL (`Listener`, …), for people.
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

fn type_of(type_url: &str) -> Option<&'static str> {
    TYPES.into_iter().find(|t| *t == type_url)
}

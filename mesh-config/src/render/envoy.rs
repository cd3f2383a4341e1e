//! Plain Envoy bootstraps (no Istio) for the two proxies of a Meridian
//! mesh:
//!
//! - [`caller_proxy`]: the caller-side Envoy. The Meridian filter picks a
//!   cluster per request (`x-meridian-cluster`, routed with
//!   `cluster_header`): one cluster per region, and one aggregate cluster
//!   per failover order whose children are those regions in that order.
//!   The route's retry policy moves each retry to the next region
//!   (`previous_priorities`), so a call that fails in one region is retried
//!   in the next within the same client call, never outside the order.
//! - [`region_gateway`]: a region's ingress in front of its sidecars. It
//!   stamps `x-meridian-region` on responses, marks replies it made because
//!   no sidecar could be reached with `x-meridian-unreached`, and carries a
//!   fault filter (delay, gRPC abort) that is off until an operator sets
//!   its runtime keys through the admin endpoint (`POST /runtime_modify`).
//! - [`xds_bootstrap`], [`caller_resources`], [`gateway_resources`]: the
//!   same proxies served by Meridian's xDS server (`crate::xds`).
//! - [`caller_mtls`], [`gateway_mtls`]: mutual TLS on the hops behind the
//!   caller-side proxy, certificates by SDS from files, each peer checked
//!   by its SPIFFE ID ([`HopTls`]).
//! - [`TraceExport`]: Envoy's OpenTelemetry tracer on both proxies, spans
//!   to the policy's collector (`telemetry.tracing`).

mod caller;
mod common;
mod from_policy;
mod gateway;
mod tls;
mod tracing;
mod xds;

pub use caller::{
    aggregate_cluster, caller_clusters, caller_lds, caller_listener_dynamic, caller_proxy, caller_proxy_with_lds,
    caller_route_config, caller_routes, caller_virtual_host_fields, meridian_wasm, request_summary_format,
    request_summary_mutation, CallerProxy, RegionUpstream, Shadow, CALLER_LISTENER, CALLER_ROUTES, CALLER_SERVICE,
    FILTER_NAME, OUTCOME_FORMAT, REQUEST_SUMMARY_MUTATION, SHADOW_CLUSTER, WASM_TYPE,
};
pub use from_policy::{caller_from_policy, caller_mtls, gateway_from_policy, gateway_mtls, trace_export};
pub use gateway::{
    fault_keys, gateway_clusters, gateway_listener, gateway_route_config, gateway_service, region_gateway,
    version_cluster, GatewayTls, RegionGateway, GATEWAY_LISTENER, GATEWAY_ROUTES,
};
pub use tls::HopTls;
pub use tracing::{collector_cluster, hcm_tracing, TraceExport, COLLECTOR_CLUSTER};
pub use xds::{
    caller_resources, gateway_resources, xds_bootstrap, Resources, Role, XdsNode, REGION_KEY, ROLE_KEY, XDS_CLUSTER,
};

use std::net::SocketAddr;

/// An upstream's address: an IP address or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The IP address or host name.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// Reads `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr.into());
        }
        let (host, port) = text.rsplit_once(':')?;
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
        Some(Self { host: host.to_string(), port: port.parse().ok()? }).filter(|_| host_ok)
    }

    /// Whether `host` is an IP address (else Envoy resolves it by DNS).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What Envoy does when the filter's VM fails (`failure_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailStrategy {
    /// A fresh VM replaces it (`FAIL_RELOAD`).
    #[default]
    Reload,
    /// Calls pass without the filter (`FAIL_OPEN`).
    Open,
    /// Calls fail (`FAIL_CLOSED`).
    Close,
}

impl FailStrategy {
    /// Envoy's name for it.
    pub fn envoy_name(self) -> &'static str {
        match self {
            FailStrategy::Reload => "FAIL_RELOAD",
            FailStrategy::Open => "FAIL_OPEN",
            FailStrategy::Close => "FAIL_CLOSED",
        }
    }
}

#[cfg(test)]
mod tests;

//! The proxies a policy describes, ready to render.

use super::caller::{CallerProxy, RegionUpstream, Shadow};
use super::gateway::{GatewayTls, RegionGateway};
use super::tls::HopTls;
use super::tracing::TraceExport;
use super::{FailStrategy, HostPort};
use crate::certs::{identity, MeshCerts, Workload};
use crate::policy::spec::FailStrategy as PolicyFailStrategy;
use crate::policy::{Pointer, Policy, PolicyError, PolicyErrors};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The caller-side proxy of `region` as `policy` describes it: its
/// listener and admin from `callerProxy`, every region's gateway address,
/// the filter configuration derived for `region`, the shadowed models.
pub fn caller_from_policy(policy: &Policy, region: &str, wasm: PathBuf) -> Result<CallerProxy, PolicyErrors> {
    let spec = policy.spec();
    let mut errors = Vec::new();
    let filter = policy.filter_config(region).map_err(|e| PolicyErrors(vec![e]))?;
    let proxy_at = Pointer::root().key("callerProxy");
    let mut socket = |field: &str, text: &str| -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            errors.push(policy.error(proxy_at.key(field), format!("`{text}` is not IP:PORT (Envoy listens on an IP)")));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = socket("listen", &spec.caller_proxy.listen);
    let admin = socket("admin", &spec.caller_proxy.admin);
    let mut regions = Vec::new();
    for (i, r) in spec.regions.iter().enumerate() {
        let at = Pointer::root().key("regions").index(i);
        match r.gateway.as_ref().and_then(|g| HostPort::parse(&g.address)) {
            Some(addr) => regions.push(RegionUpstream {
                region: r.name.clone(),
                addr,
                http2: true,
                max_requests: r.capacity.max_concurrent_requests,
                tls: None,
            }),
            None => errors.push(policy.error(
                at.key("gateway"),
                format!("plain Envoy reaches region {} through its gateway: set regions[{i}].gateway.address", r.name),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    Ok(CallerProxy {
        admin,
        listen,
        regions,
        wasm,
        filter,
        shadows: spec
            .shadows()
            .into_iter()
            .map(|(model, version, percent)| Shadow { model, version, percent })
            .collect(),
        fail_strategy: match spec.fail_strategy {
            PolicyFailStrategy::FailReload => FailStrategy::Reload,
            PolicyFailStrategy::FailOpen => FailStrategy::Open,
            PolicyFailStrategy::FailClose => FailStrategy::Close,
        },
        tracing: trace_export(policy)?,
    })
}

/// Where the proxies send their spans (`telemetry.tracing`), if anywhere.
pub fn trace_export(policy: &Policy) -> Result<Option<TraceExport>, PolicyErrors> {
    let Some(tracing) = &policy.spec().telemetry.tracing else { return Ok(None) };
    let at = Pointer::root().key("telemetry").key("tracing");
    let collector = HostPort::parse(&tracing.otlp).ok_or_else(|| {
        PolicyErrors(vec![policy.error(at.key("otlp"), format!("`{}` is not host:port", tracing.otlp))])
    })?;
    Ok(Some(TraceExport { collector, sampling_percent: tracing.sampling_percent }))
}

/// The gateway of `region` as `policy` describes it: its listener (and
/// admin) from `regions[].gateway`, its model servers from
/// `regions[].endpoints` by version label.
pub fn gateway_from_policy(policy: &Policy, region: &str) -> Result<RegionGateway, PolicyErrors> {
    let spec = policy.spec();
    let Some(i) = spec.regions.iter().position(|r| r.name == region) else {
        let names: Vec<&str> = spec.regions.iter().map(|r| r.name.as_str()).collect();
        return Err(PolicyErrors(vec![PolicyError::at(
            Pointer::root().key("regions"),
            None,
            format!("no region `{region}` (regions: {})", names.join(", ")),
        )]));
    };
    let r = &spec.regions[i];
    let at = Pointer::root().key("regions").index(i);
    let mut errors = Vec::new();
    let gateway = r.gateway.as_ref();
    let listen = match gateway.map(|g| g.address.parse::<SocketAddr>()) {
        Some(Ok(addr)) => addr,
        Some(Err(_)) => {
            errors.push(policy.error(
                at.key("gateway").key("address"),
                "the gateway listens on this address: write IP:PORT".to_string(),
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
        None => {
            errors.push(policy.error(at.key("gateway"), format!("set regions[{i}].gateway.address (its listener)")));
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let admin = match gateway.and_then(|g| g.admin.as_deref()).map(str::parse::<SocketAddr>) {
        Some(Ok(addr)) => Some(addr),
        Some(Err(_)) => {
            errors.push(policy.error(at.key("gateway").key("admin"), "write IP:PORT".to_string()));
            None
        }
        None => None,
    };
    if r.endpoints.is_empty() {
        errors.push(policy.error(
            at.key("endpoints"),
            format!("plain Envoy routes to the region's model servers: list them in regions[{i}].endpoints"),
        ));
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let mut versions: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for e in &r.endpoints {
        let addr: SocketAddr = e.address.parse().map_err(|_| {
            PolicyErrors(vec![policy.error(at.key("endpoints"), format!("`{}` is not IP:PORT", e.address))])
        })?;
        match versions.iter_mut().find(|(v, _)| *v == e.version) {
            Some((_, addrs)) => addrs.push(addr),
            None => versions.push((e.version.clone(), vec![addr])),
        }
    }
    let shadow = spec.shadows().into_iter().map(|(_, v, _)| v).find(|v| versions.iter().any(|(l, _)| l == v));
    Ok(RegionGateway {
        region: region.to_string(),
        admin,
        listen,
        versions,
        default_version: spec.default_version(),
        model_defaults: spec.models_off_default(),
        shadow,
        max_requests: r.capacity.max_concurrent_requests,
        tls: None,
        tracing: trace_export(policy)?,
    })
}

/// Mutual TLS for the caller-side proxy, from the certificates under
/// `certs` ([`crate::certs`] layout): it presents its own certificate and
/// expects each region's gateway by its SPIFFE ID.
pub fn caller_mtls(policy: &Policy, certs: &MeshCerts, proxy: &mut CallerProxy) {
    let dir = certs.files(&Workload::CallerProxy).dir;
    for upstream in &mut proxy.regions {
        let peer = identity(policy, &Workload::Gateway(upstream.region.clone()));
        upstream.tls = Some(HopTls { dir: dir.clone(), peer });
    }
}

/// Mutual TLS for a region gateway: it admits any identity of the trust
/// domain (Istio's AuthorizationPolicy, or the model servers'
/// `allowed_identities`, decide who may call what), forwards it, and
/// expects its region's model servers by their SPIFFE ID.
pub fn gateway_mtls(policy: &Policy, certs: &MeshCerts, gateway: &mut RegionGateway) {
    let dir = certs.files(&Workload::Gateway(gateway.region.clone())).dir;
    let trust_domain = format!("spiffe://{}/", policy.spec().istio.trust_domain);
    gateway.tls = Some(GatewayTls {
        downstream: HopTls { dir: dir.clone(), peer: trust_domain },
        upstream: HopTls { dir, peer: identity(policy, &Workload::Sidecar(gateway.region.clone())) },
    });
}

//! What every proxy of a policy is served: per (role, region), per resource
//! type, the encoded resources and their version. A type's version changes
//! only when its content does, so a change of the filter's configuration
//! alone moves only the ECDS version — the listener, and its connections,
//! stay as they are.

use super::codec::Codec;
use super::{CLUSTER, EXTENSION_CONFIG, LISTENER, ROUTE, TYPES};
use crate::certs::MeshCerts;
use crate::policy::Policy;
use crate::render::envoy::{
    caller_from_policy, caller_mtls, caller_resources, gateway_from_policy, gateway_mtls, gateway_resources, Role,
};
use std::collections::BTreeMap;
use std::path::Path;

/// One type's resources for one proxy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Typed {
    /// The version Envoy acknowledges (the policy generation at which
    /// this content appeared).
    pub version: String,
    /// By name, in order.
    pub resources: Vec<(String, prost_types::Any)>,
    /// A digest of the encoded resources (what "changed" means).
    pub digest: u64,
}

impl Typed {
    /// The resources named in `names` (all of them when `names` is empty:
    /// a wildcard subscription).
    pub fn selected(&self, names: &[String]) -> Vec<prost_types::Any> {
        self.resources.iter().filter(|(n, _)| names.is_empty() || names.contains(n)).map(|(_, r)| r.clone()).collect()
    }

    /// The resource names.
    pub fn names(&self) -> Vec<String> {
        self.resources.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Everything one proxy is served, by type URL.
pub type NodeResources = BTreeMap<&'static str, Typed>;

/// Every proxy's resources for one accepted policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The policy generation (1 for the first accepted policy).
    pub generation: u64,
    /// By (role, region).
    pub nodes: BTreeMap<(Role, String), NodeResources>,
}

impl Snapshot {
    /// The resources of the proxy of `role` in `region`.
    pub fn node(&self, role: Role, region: &str) -> Option<&NodeResources> {
        self.nodes.get(&(role, region.to_string()))
    }

    /// Builds generation `generation` from `policy`, keeping a type's
    /// version from `previous` where its content is unchanged. `wasm` is the
    /// filter module the proxies load; with `certs`, every hop runs mutual
    /// TLS with the certificates there. Errors: every reason a proxy could
    /// not be rendered (a region without a gateway address, a workload
    /// without its certificate, …).
    pub fn build(
        policy: &Policy,
        wasm: &Path,
        certs: Option<&MeshCerts>,
        codec: &Codec,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Result<Self, Vec<String>> {
        let mut nodes = BTreeMap::new();
        let mut errors = Vec::new();
        if let Some(certs) = certs {
            certs.check(policy).map_err(|e| vec![e])?;
        }
        for region in policy.spec().regions.iter().map(|r| r.name.clone()) {
            match caller_from_policy(policy, &region, wasm.to_path_buf()) {
                Ok(mut proxy) => {
                    if let Some(certs) = certs {
                        caller_mtls(policy, certs, &mut proxy);
                    }
                    let plugin_config = serde_json::to_string(&proxy.filter).map_err(|e| vec![e.to_string()])?;
                    nodes.insert((Role::CallerProxy, region.clone()), caller_resources(&proxy, &plugin_config));
                }
                Err(e) => errors.extend(e.iter().map(|e| format!("caller-side proxy of {region}: {e}"))),
            }
            // A region without model servers listed has no gateway to serve.
            let has_endpoints = policy.spec().region(&region).is_some_and(|r| !r.endpoints.is_empty());
            if has_endpoints {
                match gateway_from_policy(policy, &region) {
                    Ok(mut gateway) => {
                        if let Some(certs) = certs {
                            gateway_mtls(policy, certs, &mut gateway);
                        }
                        nodes.insert((Role::RegionGateway, region.clone()), gateway_resources(&gateway));
                    }
                    Err(e) => errors.extend(e.iter().map(|e| format!("gateway of {region}: {e}"))),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut snapshot = Snapshot { generation, nodes: BTreeMap::new() };
        for (key, resources) in nodes {
            let mut typed = NodeResources::new();
            for (type_url, values) in [
                (CLUSTER, &resources.clusters),
                (LISTENER, &resources.listeners),
                (ROUTE, &resources.routes),
                (EXTENSION_CONFIG, &resources.extension_configs),
            ] {
                let mut encoded = Vec::new();
                for v in values {
                    let name = v["name"].as_str().unwrap_or_default().to_string();
                    let any = codec.to_any(type_url, v).map_err(|e| vec![format!("{} {}: {e}", key.0, key.1)])?;
                    encoded.push((name, any));
                }
                // The JSON, not the bytes: protobuf maps encode in no fixed order.
                let digest = digest(values);
                let version = previous
                    .and_then(|p| p.nodes.get(&key))
                    .and_then(|n| n.get(type_url))
                    .filter(|t| t.digest == digest)
                    .map_or_else(|| generation.to_string(), |t| t.version.clone());
                typed.insert(type_url, Typed { version, resources: encoded, digest });
            }
            debug_assert_eq!(typed.len(), TYPES.len());
            snapshot.nodes.insert(key, typed);
        }
        Ok(snapshot)
    }
}

/// FNV-1a over the resources' JSON (serde_json's maps are sorted).
fn digest(resources: &[serde_json::Value]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in resources {
        for b in r.to_string().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

//! What to probe, from a `MeshPolicy` and the reference sets at hand.

use meridian_mesh_config::policy::MeshPolicy;
use meridian_proto::reference::ReferenceSet;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One drift check: a version's reference set, sent to one region's gateway.
#[derive(Debug, Clone)]
pub struct DriftTarget {
    /// The region.
    pub region: String,
    /// Its gateway (`host:port`).
    pub gateway: String,
    /// The version label (the policy's `versions[].name`).
    pub version: String,
    /// The version's reference set.
    pub reference: Arc<ReferenceSet>,
}

/// One synthetic call: through the caller-side proxy, as `region`'s callers.
#[derive(Debug, Clone)]
pub struct SyntheticTarget {
    /// The callers' region the call is made as.
    pub region: String,
    /// The caller-side proxy's listener (`host:port`).
    pub proxy: String,
    /// The model, as callers name it (`x-meridian-model`), and what is sent.
    pub reference: Arc<ReferenceSet>,
}

/// Every check of one round.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Drift checks, by region then version.
    pub drift: Vec<DriftTarget>,
    /// Synthetic calls, one per region.
    pub synthetic: Vec<SyntheticTarget>,
}

impl Targets {
    /// Every (region, version) pair the policy runs and a reference exists
    /// for (keyed by version label), at each region's gateway; one
    /// synthetic call per region, with the reference of the policy's
    /// default version (or the first reference) as its body.
    pub fn from_policy(policy: &MeshPolicy, references: &BTreeMap<String, Arc<ReferenceSet>>) -> Self {
        let mut targets = Targets::default();
        for region in &policy.regions {
            let Some(gateway) = &region.gateway else { continue };
            let mut versions: Vec<&str> = region.endpoints.iter().map(|e| e.version.as_str()).collect();
            versions.sort_unstable();
            versions.dedup();
            for version in versions {
                if let Some(reference) = references.get(version) {
                    targets.drift.push(DriftTarget {
                        region: region.name.clone(),
                        gateway: gateway.address.clone(),
                        version: version.to_string(),
                        reference: reference.clone(),
                    });
                }
            }
        }
        let default = references.get(&policy.default_version()).or_else(|| references.values().next());
        if let Some(reference) = default {
            for region in &policy.regions {
                targets.synthetic.push(SyntheticTarget {
                    region: region.name.clone(),
                    proxy: policy.caller_proxy.listen.clone(),
                    reference: reference.clone(),
                });
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_mesh_config::policy::Policy;

    const POLICY: &str = r#"
apiVersion: meridian.dev/v1alpha1
kind: MeshPolicy
metadata: {name: t}
regions:
  - name: a
    zone: eu
    gateway: {address: "127.0.1.1:10001"}
    endpoints:
      - {address: "127.0.1.10:8001", version: v1}
      - {address: "127.0.1.11:8001", version: v1}
      - {address: "127.0.1.30:8001", version: v2}
  - name: b
    zone: us
    gateway: {address: "127.0.2.1:10001"}
    endpoints:
      - {address: "127.0.2.10:8001", version: v1}
      - {address: "127.0.2.30:8001", version: v2}
models:
  mlp:
    versions: [{name: v1, modelVersion: 1}, {name: v2, modelVersion: 2}]
callerProxy: {region: a, listen: "127.0.0.1:10000"}
"#;

    fn reference(version: &str) -> Arc<ReferenceSet> {
        Arc::new(ReferenceSet {
            model: "mlp".into(),
            version: version.into(),
            tolerance: 1e-4,
            inputs: vec![],
            outputs: vec![],
        })
    }

    #[test]
    fn every_region_and_version_with_a_reference_is_checked_once() {
        let policy = Policy::parse(POLICY).expect("valid policy").into_spec();
        let refs = BTreeMap::from([("v1".to_string(), reference("1")), ("v2".to_string(), reference("2"))]);
        let t = Targets::from_policy(&policy, &refs);
        let drift: Vec<(&str, &str, &str)> =
            t.drift.iter().map(|d| (d.region.as_str(), d.version.as_str(), d.gateway.as_str())).collect();
        assert_eq!(
            drift,
            [
                ("a", "v1", "127.0.1.1:10001"),
                ("a", "v2", "127.0.1.1:10001"),
                ("b", "v1", "127.0.2.1:10001"),
                ("b", "v2", "127.0.2.1:10001")
            ]
        );
        let synthetic: Vec<(&str, &str)> = t.synthetic.iter().map(|s| (s.region.as_str(), s.proxy.as_str())).collect();
        assert_eq!(synthetic, [("a", "127.0.0.1:10000"), ("b", "127.0.0.1:10000")]);
        assert!(t.synthetic.iter().all(|s| s.reference.version == "1"), "the default version's reference");

        // Without v2's reference, v2 is not checked.
        let only_v1 = BTreeMap::from([("v1".to_string(), reference("1"))]);
        assert_eq!(Targets::from_policy(&policy, &only_v1).drift.len(), 2);
    }
}

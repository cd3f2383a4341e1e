//! Istio resources for a policy: one manifest set for the whole mesh,
//! applied as is to every region's cluster (Istio multi-primary, or one
//! cluster whose pods carry `meridian.dev/region`). What differs per region
//! selects its pods by that label, so in each cluster only its own
//! region's resources take effect.
//!
//! The request path they build is the local mesh's:
//!
//! ```text
//! caller ─▶ its Istio sidecar ─ Meridian filter (WasmPlugin / TrafficExtension)
//!            └─ x-meridian-cluster ─▶ aggregate cluster (EnvoyFilter) over
//!               outbound|PORT||<region>.gateway… (ServiceEntry, DestinationRule)
//!                 ─mTLS─▶ region gateway (Gateway, VirtualService: version → subset)
//!                           ─mTLS─▶ model servers (DestinationRule subsets)
//! ```
//!
//! - [`caller`]: the filter (WasmPlugin, or TrafficExtension from Istio
//!   1.30) and the EnvoyFilter patches Istio does not generate: the
//!   aggregate cluster per failover order over Istio's clusters, the
//!   `cluster_header` routes with their retry policy.
//! - [`region`]: per region, its gateway's ServiceEntry and
//!   DestinationRule, the Gateway and VirtualService that route each
//!   version to its subset, and the model servers' DestinationRule.
//! - [`security`]: PeerAuthentication STRICT and an AuthorizationPolicy
//!   per model from the callers' identities.
//!
//! Every document validates against Istio's CRD schemas (see
//! `mesh-config/tests/istio_schemas.rs`).

pub mod caller;
pub mod region;
pub mod security;

use crate::policy::{Pointer, Policy, PolicyError, PolicyErrors};
use serde_json::{json, Value};
use std::fmt;

/// The label that ties a pod (caller or gateway) to its region.
pub const REGION_LABEL: &str = "meridian.dev/region";
/// The label every rendered resource carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meridianctl");

/// An Istio minor version (`1.29`): which resources exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IstioVersion {
    /// The minor number (29 for 1.29).
    pub minor: u32,
}

impl IstioVersion {
    /// The oldest version rendered for: the `v1` networking and security
    /// APIs are served from 1.22.
    pub const OLDEST: IstioVersion = IstioVersion { minor: 22 };
    /// The version `TrafficExtension` arrived in.
    pub const TRAFFIC_EXTENSION: IstioVersion = IstioVersion { minor: 30 };

    /// Reads `1.N` (`1.29`, `1.30`; a patch number is allowed and ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an Istio version like 1.29 or 1.30");
        let rest = text.strip_prefix("1.").ok_or_else(bad)?;
        let minor: u32 = rest.split('.').next().unwrap_or_default().parse().map_err(|_| bad())?;
        let version = Self { minor };
        if version < Self::OLDEST {
            return Err(format!(
                "Istio `{text}` is older than 1.{}, the first with the v1 APIs Meridian renders",
                Self::OLDEST.minor
            ));
        }
        Ok(version)
    }

    /// Whether the filter is installed as a `TrafficExtension`.
    pub fn has_traffic_extension(self) -> bool {
        self >= Self::TRAFFIC_EXTENSION
    }
}

impl fmt::Display for IstioVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioOptions {
    /// The Istio version the manifests are for.
    pub version: IstioVersion,
    /// Where Istio fetches the filter module (overrides `filter.url`).
    pub wasm_url: Option<String>,
    /// The module's sha256 (overrides `filter.sha256`).
    pub wasm_sha256: Option<String>,
}

impl Default for IstioOptions {
    fn default() -> Self {
        Self { version: IstioVersion { minor: 30 }, wasm_url: None, wasm_sha256: None }
    }
}

/// The rendered manifests and what the user should know about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The documents, in apply order.
    pub documents: Vec<Value>,
    /// Things worth a line on stderr (not errors).
    pub notes: Vec<String>,
}

impl Rendered {
    /// The documents as one YAML stream (`---` between them).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for doc in &self.documents {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(doc).unwrap_or_default());
        }
        out
    }

    /// The distinct kinds rendered.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> =
            self.documents.iter().filter_map(|d| d["kind"].as_str().map(str::to_string)).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Every Istio resource the policy needs.
pub fn render(policy: &Policy, options: &IstioOptions) -> Result<Rendered, PolicyErrors> {
    let spec = policy.spec();
    let mut errors = Vec::new();
    for (i, r) in spec.regions.iter().enumerate() {
        let at = Pointer::root().key("regions").index(i);
        if r.service.is_none() {
            errors.push(policy.error(
                at.clone(),
                format!(
                    "Istio routes region {} to its model servers' Kubernetes Service: set regions[{i}].service \
                     (host, port)",
                    r.name
                ),
            ));
        }
        if r.gateway.is_none() {
            errors.push(policy.error(
                at,
                format!("Istio reaches region {} through its gateway: set regions[{i}].gateway.address", r.name),
            ));
        }
    }
    let url = options.wasm_url.clone().or_else(|| spec.filter.url.clone());
    if url.is_none() {
        errors.push(policy.error(
            Pointer::root().key("filter").key("url"),
            "Istio fetches the filter from a URL: set filter.url or pass --wasm-url (oci://…, https://…)",
        ));
    }
    if let Some(sha) = &options.wasm_sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            errors.push(PolicyError::at(
                Pointer::root(),
                None,
                format!("--wasm-sha256 `{sha}` is not 64 lowercase hex digits"),
            ));
        }
    }
    if let Some(url) = &options.wasm_url {
        if !["oci://", "https://", "http://", "file://"].iter().any(|p| url.starts_with(p)) {
            errors.push(PolicyError::at(
                Pointer::root(),
                None,
                format!("--wasm-url `{url}` must start with oci://, https://, http:// or file://"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    let mut notes = Vec::new();
    let sha256 = options.wasm_sha256.clone().or_else(|| spec.filter.sha256.clone());
    if sha256.is_none() {
        notes.push(
            "no sha256 for the filter module (filter.sha256 or --wasm-sha256): Istio will not verify it, and a module \
             that cannot be fetched still blocks pod start (istio#53279); pin it"
                .to_string(),
        );
    }
    let module = caller::Module { url: url.unwrap_or_default(), sha256 };
    let mut documents = security::render(policy, &mut notes);
    documents.extend(region::render(policy));
    for r in &spec.regions {
        documents.extend(caller::render(policy, &r.name, &module, options.version)?);
    }
    Ok(Rendered { documents, notes })
}

/// `metadata` of a rendered resource.
pub(crate) fn metadata(policy: &Policy, name: &str, region: Option<&str>) -> Value {
    let mut labels = json!({ MANAGED_BY.0: MANAGED_BY.1, "meridian.dev/policy": policy.spec().metadata.name });
    if let Some(r) = region {
        labels[REGION_LABEL] = json!(r);
    }
    json!({ "name": name, "namespace": policy.spec().metadata.namespace, "labels": labels })
}

/// A Kubernetes object name from parts (`meridian`, `eu-west`, `mlp_v2` →
/// `meridian-eu-west-mlp-v2`): lowercase, `_` as `-`, at most 63.
pub(crate) fn object_name(parts: &[&str]) -> String {
    let mut name: String = parts.join("-").to_ascii_lowercase().replace('_', "-");
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// A pod selector: `labels`, plus the region label when given.
pub(crate) fn selector(labels: &std::collections::BTreeMap<String, String>, region: Option<&str>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in labels {
        m.insert(k.clone(), json!(v));
    }
    if let Some(r) = region {
        m.insert(REGION_LABEL.into(), json!(r));
    }
    Value::Object(m)
}

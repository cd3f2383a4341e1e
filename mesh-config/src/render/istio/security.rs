//! Mutual TLS everywhere in the namespace (PeerAuthentication STRICT), and
//! per model an AuthorizationPolicy at the region gateways that admits the
//! callers allowed to call it, by their SPIFFE identity — not by any
//! header a caller could forge.

use super::{metadata, object_name, selector};
use crate::policy::Policy;
use meridian_proto::headers;
use serde_json::{json, Value};

/// The gRPC path prefix of inference calls.
const INFERENCE_PATHS: &str = "/inference.GRPCInferenceService/*";
/// The gRPC health service (the filter's probes, Triton's clients).
const HEALTH_PATHS: &str = "/grpc.health.v1.Health/*";

/// Istio's principal for a SPIFFE ID: the ID without `spiffe://`.
pub fn principal(identity: &str) -> &str {
    identity.strip_prefix("spiffe://").unwrap_or(identity)
}

pub(crate) fn render(policy: &Policy, notes: &mut Vec<String>) -> Vec<Value> {
    let spec = policy.spec();
    let name = &spec.metadata.name;
    let mut docs = vec![json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": metadata(policy, &object_name(&[name, "strict"]), None),
        "spec": { "mtls": { "mode": "STRICT" } }
    })];
    let anonymous: Vec<&String> = spec.callers.iter().filter(|(_, c)| c.identity.is_none()).map(|(n, _)| n).collect();
    if !anonymous.is_empty() {
        notes.push(format!(
            "caller(s) without an identity are not admitted by any AuthorizationPolicy: {}",
            anonymous.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let gateways = json!({ "matchLabels": selector(&spec.istio.gateway_selector, None) });
    let mut everyone: Vec<String> = Vec::new();
    for (model, _) in spec.resolved_models() {
        let mut principals: Vec<String> = spec
            .callers
            .values()
            .filter(|c| c.models.as_ref().is_none_or(|ms| ms.contains(&model)))
            .filter_map(|c| c.identity.as_deref().map(|i| principal(i).to_string()))
            .collect();
        principals.sort();
        principals.dedup();
        everyone.extend(principals.iter().cloned());
        // An ALLOW policy without rules admits nothing: a model no caller
        // may call is closed.
        let rules = if principals.is_empty() {
            json!([])
        } else {
            json!([{
                "from": [{ "source": { "principals": principals } }],
                "to": [{ "operation": { "paths": [INFERENCE_PATHS] } }],
                "when": [{ "key": format!("request.headers[{}]", headers::MODEL), "values": [model] }]
            }])
        };
        docs.push(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata(policy, &object_name(&[name, "model", &model]), None),
            "spec": { "selector": gateways, "action": "ALLOW", "rules": rules }
        }));
    }
    everyone.sort();
    everyone.dedup();
    if !everyone.is_empty() {
        // Health checks and server metadata from any known caller (the
        // filter's probes come from the callers' sidecars).
        docs.push(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": metadata(policy, &object_name(&[name, "health"]), None),
            "spec": {
                "selector": gateways,
                "action": "ALLOW",
                "rules": [{
                    "from": [{ "source": { "principals": everyone } }],
                    "to": [{ "operation": { "paths": [
                        HEALTH_PATHS,
                        "/inference.GRPCInferenceService/ServerLive",
                        "/inference.GRPCInferenceService/ServerReady"
                    ] } }]
                }]
            }
        }));
    }
    docs
}

//! A model's `config.yaml` for `meridian-sidecar`: the policy's batching
//! (with the model's overrides) in the sidecar's own keys.

use crate::policy::{Pointer, Policy, PolicyError};
use serde_json::json;

/// The `config.yaml` of `model` (YAML). A model the policy does not name
/// gets the mesh-wide batching.
pub fn model_config(policy: &Policy, model: &str) -> Result<String, PolicyError> {
    model_config_with(policy, model, false)
}

/// [`model_config`] for a mesh with mutual TLS: the model also admits only
/// the identities the policy allows to call it
/// ([`crate::certs::allowed_identities`]).
pub fn model_config_mtls(policy: &Policy, model: &str) -> Result<String, PolicyError> {
    model_config_with(policy, model, true)
}

fn model_config_with(policy: &Policy, model: &str, mtls: bool) -> Result<String, PolicyError> {
    let spec = policy.spec();
    let models = spec.resolved_models();
    let m = models.get(model).cloned().or_else(|| spec.models.is_empty().then(Default::default)).ok_or_else(|| {
        let names: Vec<&String> = models.keys().collect();
        PolicyError::at(
            Pointer::root().key("models"),
            None,
            format!("no model `{model}` (models: {})", names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
        )
    })?;
    let b = m.batching(&spec.batching);
    let mut config = json!({ "max_batch_size": b.max_batch_size, "instances": b.instances });
    if b.max_batch_size > 0 {
        config["dynamic_batching"] = json!({
            "max_queue_delay_us": b.max_queue_delay.as_micros(),
            "preferred_batch_sizes": b.preferred_batch_sizes,
            "max_queue_size": b.max_queue_size,
        });
    }
    if mtls {
        config["allowed_identities"] = json!(crate::certs::allowed_identities(policy, model));
    }
    let yaml = serde_yaml::to_string(&config).map_err(|e| PolicyError::at(Pointer::root(), None, e.to_string()))?;
    Ok(format!("# {model}: rendered by meridianctl from the MeshPolicy's batching\n{yaml}"))
}

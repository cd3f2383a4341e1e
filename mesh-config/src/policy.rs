//! The `MeshPolicy`: one YAML document that describes a Meridian mesh —
//! regions, models and their versions, callers, routing, resilience,
//! batching — from which everything else is derived: the filter's
//! configuration, the Istio resources, the plain Envoy bootstraps and the
//! local mesh.
//!
//! Reading a policy ([`Policy::parse`]) reports every problem at once,
//! each naming its field and line:
//!
//! 1. YAML with positions ([`yaml`]);
//! 2. the JSON schema generated from the types ([`schema`]): unknown
//!    fields, types, ranges, patterns;
//! 3. what a schema cannot say ([`validate`]): cross-references (a canary
//!    version the model does not have, a residency zone no region is in),
//!    duration bounds, the derived filter configuration.
//!
//! ```
//! let policy = meridian_mesh_config::policy::Policy::parse(r#"
//! apiVersion: meridian.dev/v1alpha1
//! kind: MeshPolicy
//! regions:
//!   - {name: eu-west, zone: eu}
//!   - {name: us-east, zone: us}
//! callers:
//!   billing: {residency: eu}
//! "#).expect("valid");
//! let filter = policy.filter_config("eu-west").expect("derived");
//! assert_eq!(filter.callers["billing"].residency.as_deref(), Some("eu"));
//! ```

pub mod autoscaling;
pub mod derive;
pub mod duration;
pub mod error;
pub mod schema;
pub mod spec;
pub mod validate;
pub mod yaml;

pub use duration::Duration;
pub use error::{Pointer, PolicyError, PolicyErrors, Position};
pub use spec::MeshPolicy;

use meridian_filters_core::FilterConfig;
use serde_json::Value;
use yaml::Located;

/// `instance` without the fields `errors` point at (the nearest enclosing
/// mapping member, so that lists keep their indexes), for checking the rest.
fn set_aside(mut instance: Value, errors: &[PolicyError]) -> Value {
    for e in errors {
        let mut segments: Vec<&str> = e.pointer.as_str().split('/').skip(1).collect();
        while let Some(last) = segments.pop() {
            let parent = format!("/{}", segments.join("/"));
            let parent = if segments.is_empty() { "" } else { parent.as_str() };
            if let Some(Value::Object(map)) = instance.pointer_mut(parent) {
                map.remove(&last.replace("~1", "/").replace("~0", "~"));
                break;
            }
        }
    }
    instance
}

/// A policy that passed validation, with where each field is in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    spec: MeshPolicy,
    source: Located,
}

// === impl Policy ===

impl Policy {
    /// Reads and validates a policy; every error found, in file order.
    ///
    /// Schema errors do not hide the others: the fields at fault are set
    /// aside and the rest is still checked for cross-references (so three
    /// mistakes of three kinds are reported together).
    pub fn parse(text: &str) -> Result<Self, PolicyErrors> {
        let source = Located::parse(text)?;
        let instance = source.without_nulls();
        let mut errors = schema::check(&instance, &source);
        let readable = if errors.is_empty() { instance } else { set_aside(instance, &errors) };
        match serde_json::from_value::<MeshPolicy>(readable) {
            Ok(spec) => {
                let policy = Self { spec, source };
                let at_fault: Vec<String> = errors.iter().map(|e| e.pointer.as_str().to_string()).collect();
                let semantic = validate::check(&policy);
                if errors.is_empty() && semantic.is_empty() {
                    return Ok(policy);
                }
                errors.extend(
                    semantic.into_iter().filter(|e| {
                        !at_fault.iter().any(|p| e.pointer.as_str().starts_with(p.as_str()) && !p.is_empty())
                    }),
                );
            }
            // The schema is generated from these types, so with no schema
            // error this is rare (a value the schema lets through and
            // serde not); with schema errors, they say it already.
            Err(e) if errors.is_empty() => errors.push(PolicyError::at(Pointer::root(), None, e.to_string())),
            Err(_) => {}
        }
        errors.sort_by_key(|e| (e.position.is_none(), e.position));
        errors.dedup();
        Err(PolicyErrors(errors))
    }

    /// Validates a policy built in code (no positions in its errors).
    pub fn from_spec(spec: MeshPolicy) -> Result<Self, PolicyErrors> {
        let value = serde_json::to_value(&spec).map_err(|e| PolicyError::at(Pointer::root(), None, e.to_string()))?;
        let source = Located::unplaced(value);
        let errors = schema::check(&source.without_nulls(), &source);
        let policy = Self { spec, source };
        let errors = if errors.is_empty() { validate::check(&policy) } else { errors };
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyErrors(errors))
        }
    }

    /// The policy.
    pub fn spec(&self) -> &MeshPolicy {
        &self.spec
    }

    /// The policy, to change in code; [`Policy::from_spec`] validates the result.
    pub fn into_spec(self) -> MeshPolicy {
        self.spec
    }

    /// An error at `pointer`, positioned in the file when it was read from one.
    pub fn error(&self, pointer: Pointer, message: impl Into<String>) -> PolicyError {
        let position = self.source.position(&pointer);
        PolicyError::at(pointer, position, message.into())
    }

    /// The region callers of the caller-side proxy are in: `callerProxy.region`,
    /// else the first region.
    pub fn caller_region(&self) -> &str {
        self.spec.caller_proxy.region.as_deref().unwrap_or(&self.spec.regions[0].name)
    }

    /// The filter's configuration for a caller-side proxy in `region`.
    pub fn filter_config(&self, region: &str) -> Result<FilterConfig, PolicyError> {
        if !self.spec.regions.iter().any(|r| r.name == region) {
            let names: Vec<&str> = self.spec.regions.iter().map(|r| r.name.as_str()).collect();
            return Err(PolicyError::at(
                Pointer::root().key("regions"),
                None,
                format!("no region `{region}` (regions: {})", names.join(", ")),
            ));
        }
        derive::filter_config(&self.spec, region)
            .map_err(|e| self.error(Pointer::root(), format!("the derived filter configuration is invalid: {e}")))
    }
}

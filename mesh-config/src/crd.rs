//! Kubernetes CustomResourceDefinitions as validators: each served
//! version's `openAPIV3Schema` checked with a JSON-schema validator the way
//! the API server checks a custom resource under `kubectl apply`'s strict
//! field validation, and its `x-kubernetes-validations` CEL rules evaluated.
//!
//! What the API server does and this does too: types, enums, ranges,
//! patterns, `required`, `oneOf`, unknown fields rejected (strict), `nullable`,
//! `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-int-or-string`,
//! `int32`/`uint32` ranges, object names (DNS-1123), label keys and values,
//! and every CEL rule (with the Kubernetes `url()`/`isURL()` and
//! `substring()` functions). What it does not: defaulting, and rules that
//! need `oldSelf` (updates), which a new resource does not run.

use cel::extractors::This;
use cel::{Context, Program, Value as CelValue};
use jsonschema::Validator;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One violation in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdError {
    /// `Kind/name` of the document.
    pub object: String,
    /// Where in it (`spec.url`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CrdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.path, self.message)
        }
    }
}

/// One step from a schema node to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Property(String),
    Items,
    Values,
}

#[derive(Debug)]
struct Rule {
    at: Vec<Step>,
    text: String,
    message: String,
    program: Program,
}

struct Kind {
    validator: Validator,
    rules: Vec<Rule>,
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kind").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

/// The schemas of a CRD bundle, by `apiVersion` and `kind`.
#[derive(Debug)]
pub struct CrdSchemas {
    kinds: BTreeMap<(String, String), Kind>,
}

const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

// === impl CrdSchemas ===

impl CrdSchemas {
    /// Reads a YAML stream of CustomResourceDefinitions.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let mut kinds = BTreeMap::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let crd: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
            if crd.is_null() {
                continue;
            }
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let group = crd["spec"]["group"].as_str().ok_or("a CRD without spec.group")?;
            let kind = crd["spec"]["names"]["kind"].as_str().ok_or("a CRD without spec.names.kind")?;
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                if version["served"] == false {
                    continue;
                }
                let name = version["name"].as_str().ok_or("a CRD version without a name")?;
                let api_version = format!("{group}/{name}");
                let schema = &version["schema"]["openAPIV3Schema"];
                let compiled = compile(&api_version, kind, schema)
                    .map_err(|e| format!("{kind} {api_version}: the schema does not compile: {e}"))?;
                kinds.insert((api_version, kind.to_string()), compiled);
            }
        }
        if kinds.is_empty() {
            return Err("no CustomResourceDefinition in the bundle".into());
        }
        Ok(Self { kinds })
    }

    /// Whether the bundle has `kind` at `api_version`.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        self.kinds.contains_key(&(api_version.to_string(), kind.to_string()))
    }

    /// Every violation in `doc` (empty: the API server would take it).
    pub fn validate(&self, doc: &Value) -> Vec<CrdError> {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let kind_name = doc["kind"].as_str().unwrap_or_default();
        let object = format!("{kind_name}/{}", doc["metadata"]["name"].as_str().unwrap_or("?"));
        let Some(kind) = self.kinds.get(&(api_version.to_string(), kind_name.to_string())) else {
            let served: Vec<String> =
                self.kinds.keys().filter(|(_, k)| k == kind_name).map(|(v, _)| v.clone()).collect();
            let message = if served.is_empty() {
                format!("no CRD in the bundle defines kind `{kind_name}`")
            } else {
                format!("`{api_version}` is not a served version of {kind_name} (served: {})", served.join(", "))
            };
            return vec![CrdError { object, path: String::new(), message }];
        };
        let mut errors: Vec<CrdError> = kind
            .validator
            .iter_errors(doc)
            .map(|e| CrdError {
                object: object.clone(),
                path: dotted(e.instance_path().as_str()),
                message: e.to_string(),
            })
            .collect();
        let mut context = Context::default();
        register_kubernetes_functions(&mut context);
        for rule in &kind.rules {
            for (path, node) in nodes_at(doc, &rule.at) {
                let mut scope = context.new_inner_scope();
                let value = match cel::to_value(node) {
                    Ok(v) => v,
                    Err(e) => {
                        errors.push(CrdError { object: object.clone(), path, message: format!("cannot read: {e}") });
                        continue;
                    }
                };
                if let Err(e) = scope.add_variable("self", value) {
                    errors.push(CrdError { object: object.clone(), path, message: e.to_string() });
                    continue;
                }
                match rule.program.execute(&scope) {
                    Ok(CelValue::Bool(true)) => {}
                    Ok(CelValue::Bool(false)) => {
                        errors.push(CrdError {
                            object: object.clone(),
                            path,
                            message: format!("{} (rule: {})", rule.message, rule.text),
                        });
                    }
                    Ok(other) => errors.push(CrdError {
                        object: object.clone(),
                        path,
                        message: format!("rule `{}` gave {other:?}, not a boolean", rule.text),
                    }),
                    Err(e) => errors.push(CrdError {
                        object: object.clone(),
                        path,
                        message: format!("rule `{}` could not be evaluated: {e}", rule.text),
                    }),
                }
            }
        }
        errors
    }
}

fn dotted(pointer: &str) -> String {
    crate::policy::Pointer::from_json(pointer).path()
}

/// The JSON schema of a whole object of `kind`, and its CEL rules.
fn compile(api_version: &str, kind: &str, schema: &Value) -> Result<Kind, String> {
    let mut rules = Vec::new();
    collect_rules(schema, &mut Vec::new(), &mut rules)?;
    let mut properties = schema.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
    for v in properties.values_mut() {
        *v = convert(v);
    }
    properties.insert("apiVersion".into(), json!({ "const": api_version }));
    properties.insert("kind".into(), json!({ "const": kind }));
    properties.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "maxLength": 253, "pattern": DNS_SUBDOMAIN },
                "namespace": { "type": "string", "maxLength": 63, "pattern": DNS_LABEL },
                "labels": {
                    "type": "object",
                    "propertyNames": { "maxLength": 317, "pattern": LABEL_KEY },
                    "additionalProperties": { "type": "string", "maxLength": 63, "pattern": LABEL_VALUE }
                },
                "annotations": { "type": "object", "additionalProperties": { "type": "string" } }
            }
        }),
    );
    let root = json!({
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": false,
        "properties": properties
    });
    let validator =
        jsonschema::options().with_draft(jsonschema::Draft::Draft202012).build(&root).map_err(|e| e.to_string())?;
    Ok(Kind { validator, rules })
}

/// An OpenAPI v3 (structural) schema node as JSON Schema, strict about
/// unknown fields as `kubectl apply --validate=strict` is.
fn convert(node: &Value) -> Value {
    let Value::Object(map) = node else { return node.clone() };
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "properties" => {
                let props: Map<String, Value> = v
                    .as_object()
                    .map(|m| m.iter().map(|(name, s)| (name.clone(), convert(s))).collect())
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "not" => {
                out.insert(k.clone(), convert(v));
            }
            "additionalProperties" if v.is_object() => {
                out.insert(k.clone(), convert(v));
            }
            "allOf" | "anyOf" | "oneOf" => {
                out.insert(k.clone(), Value::Array(v.as_array().into_iter().flatten().map(convert).collect()));
            }
            k if k.starts_with("x-kubernetes-") || k == "nullable" => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        out.remove("type");
        out.entry("anyOf").or_insert_with(|| json!([{ "type": "integer" }, { "type": "string" }]));
    }
    let is_object = map.get("type") == Some(&json!("object"));
    if is_object && !preserve && !out.contains_key("additionalProperties") {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    match map.get("format").and_then(Value::as_str) {
        Some("int32") => {
            out.entry("minimum").or_insert(json!(i32::MIN));
            out.entry("maximum").or_insert(json!(i32::MAX));
        }
        Some("uint32") => {
            out.entry("minimum").or_insert(json!(0));
            out.entry("maximum").or_insert(json!(u32::MAX));
        }
        _ => {}
    }
    if map.get("nullable") == Some(&Value::Bool(true)) {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".into(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

fn collect_rules(node: &Value, at: &mut Vec<Step>, rules: &mut Vec<Rule>) -> Result<(), String> {
    for rule in node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let text = rule["rule"].as_str().unwrap_or_default().to_string();
        if text.contains("oldSelf") {
            continue;
        }
        let program = Program::compile(&text).map_err(|e| format!("CEL rule `{text}`: {e}"))?;
        let message = rule["message"].as_str().map(str::to_string).unwrap_or_else(|| "failed rule".to_string());
        rules.push(Rule { at: at.clone(), text, message, program });
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            at.push(Step::Property(name.clone()));
            collect_rules(child, at, rules)?;
            at.pop();
        }
    }
    if let Some(items) = node.get("items") {
        at.push(Step::Items);
        collect_rules(items, at, rules)?;
        at.pop();
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        at.push(Step::Values);
        collect_rules(values, at, rules)?;
        at.pop();
    }
    Ok(())
}

/// Every node of `doc` at the schema path `at`, with its dotted path.
fn nodes_at<'a>(doc: &'a Value, at: &[Step]) -> Vec<(String, &'a Value)> {
    let mut current = vec![(String::new(), doc)];
    for step in at {
        let mut next = Vec::new();
        for (path, node) in current {
            let join = |p: &str, s: &str| if p.is_empty() { s.to_string() } else { format!("{p}.{s}") };
            match step {
                Step::Property(name) => {
                    if let Some(child) = node.get(name) {
                        next.push((join(&path, name), child));
                    }
                }
                Step::Items => {
                    for (i, child) in node.as_array().into_iter().flatten().enumerate() {
                        next.push((format!("{path}[{i}]"), child));
                    }
                }
                Step::Values => {
                    for (k, child) in node.as_object().into_iter().flatten() {
                        next.push((join(&path, k), child));
                    }
                }
            }
        }
        current = next;
    }
    current.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// The Kubernetes CEL library functions Istio's rules use beyond CEL's own.
fn register_kubernetes_functions(context: &mut Context) {
    // url(s) keeps the text; getScheme/getHost read it.
    context.add_function("url", |s: Arc<String>| -> Arc<String> { s });
    context.add_function("isURL", |s: Arc<String>| -> bool { scheme(&s).is_some() || s.starts_with('/') });
    context.add_function("getScheme", |This(s): This<Arc<String>>| -> Arc<String> {
        Arc::new(scheme(&s).unwrap_or_default().to_string())
    });
    context.add_function("getHost", |This(s): This<Arc<String>>| -> Arc<String> {
        let rest = s.split_once("://").map_or("", |(_, r)| r);
        Arc::new(rest.split(['/', '?', '#']).next().unwrap_or_default().to_string())
    });
    context.add_function("substring", |This(s): This<Arc<String>>, start: i64, end: i64| -> Arc<String> {
        let chars: Vec<char> = s.chars().collect();
        let clamp = |i: i64| usize::try_from(i).unwrap_or(0).min(chars.len());
        let (a, b) = (clamp(start), clamp(end));
        Arc::new(chars[a..b.max(a)].iter().collect())
    });
    context
        .add_function("lowerAscii", |This(s): This<Arc<String>>| -> Arc<String> { Arc::new(s.to_ascii_lowercase()) });
}

/// The scheme of an absolute URL (`oci` in `oci://…`), as Go's url.Parse reads it.
fn scheme(s: &str) -> Option<&str> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let ok = first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) && !rest.is_empty();
    ok.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: example.io
  names: {kind: Widget}
  versions:
  - name: v1
    served: true
    schema:
      openAPIV3Schema:
        properties:
          spec:
            properties:
              url:
                type: string
                x-kubernetes-validations:
                - rule: 'url(self).getScheme() in ["oci", "https"]'
                  message: url must be oci or https
              timeout:
                type: string
                x-kubernetes-validations:
                - rule: duration(self) >= duration('1ms')
                  message: must be a valid duration greater than 1ms
              count: {type: integer, format: int32, nullable: true}
              mode: {type: string, enum: [A, B]}
              free: {type: object, x-kubernetes-preserve-unknown-fields: true}
            type: object
        type: object
"#;

    fn widget(spec: Value) -> Value {
        json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn checks_schema_strictness_and_cel_rules() {
        let schemas = CrdSchemas::from_yaml(BUNDLE).expect("bundle");
        let ok = widget(json!({"url": "oci://r/x:1", "timeout": "2s", "count": null, "mode": "A", "free": {"any": 1}}));
        assert_eq!(schemas.validate(&ok), vec![]);
        for (spec, needle) in [
            (json!({"url": "ftp://x"}), "url must be oci or https"),
            (json!({"timeout": "0s"}), "greater than 1ms"),
            (json!({"mode": "C"}), "spec.mode"),
            (json!({"count": 3_000_000_000u64}), "spec.count"),
            (json!({"typo": 1}), "typo"),
        ] {
            let errors = schemas.validate(&widget(spec.clone()));
            assert!(errors.iter().any(|e| e.to_string().contains(needle)), "{spec}: {errors:?}");
        }
        let mut bad_name = ok.clone();
        bad_name["metadata"]["name"] = json!("Not_A_Name");
        assert!(!schemas.validate(&bad_name).is_empty());
        let mut other = ok;
        other["apiVersion"] = json!("example.io/v2");
        assert!(schemas.validate(&other)[0].message.contains("not a served version"));
    }
}

//! The policy's JSON schema — generated from the Rust types, so the types,
//! the schema, the reference docs and the validation never disagree — and
//! the check of a document against it, every error at once, each turned
//! into a sentence that names the field.

use super::duration::DURATION_PATTERN;
use super::error::{Pointer, PolicyError};
use super::spec::MeshPolicy;
use super::yaml::Located;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The JSON schema (draft 2020-12) of a `MeshPolicy` document, as
/// `meridianctl schema` prints it (for editors: yaml-language-server's
/// `# yaml-language-server: $schema=…`).
pub fn json_schema() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12();
    let schema = settings.into_generator().into_root_schema_for::<MeshPolicy>();
    let mut value = schema.to_value();
    drop_null_alternatives(&mut value);
    if let Some(root) = value.as_object_mut() {
        root.insert("$id".into(), Value::String("https://meridian.dev/schemas/meshpolicy-v1alpha1.json".into()));
    }
    value
}

/// `key:` with no value reads as absent (see [`Located::without_nulls`]),
/// so an optional field's schema need not admit `null`: dropping the
/// alternative keeps errors inside optional sections precise (no "matches
/// none of anyOf" for a typo three levels down).
fn drop_null_alternatives(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(alternatives)) = map.get("anyOf") {
                let non_null: Vec<Value> =
                    alternatives.iter().filter(|a| a.get("type") != Some(&Value::from("null"))).cloned().collect();
                if non_null.len() == 1 && alternatives.len() == 2 {
                    map.remove("anyOf");
                    if let Value::Object(inner) = &non_null[0] {
                        for (k, v) in inner {
                            map.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get("type") {
                let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
                if kept.len() == 1 {
                    map.insert("type".into(), kept[0].clone());
                }
            }
            for v in map.values_mut() {
                drop_null_alternatives(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_alternatives),
        _ => {}
    }
}

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&json_schema())
            .unwrap_or_else(|e| unreachable!("the generated MeshPolicy schema compiles: {e}"))
    })
}

/// Checks `instance` (the document without null members) against the
/// schema; every violation, each with its field and position.
pub(crate) fn check(instance: &Value, source: &Located) -> Vec<PolicyError> {
    let mut out = Vec::new();
    for error in validator().iter_errors(instance) {
        explain(&error, instance, source, &mut out);
    }
    out
}

fn pointer_of(error: &ValidationError<'_>) -> Pointer {
    let mut p = Pointer::root();
    for segment in error.instance_path().iter() {
        p = match segment {
            LocationSegment::Property(name) => p.key(&name),
            LocationSegment::Index(i) => p.index(i),
        };
    }
    p
}

fn explain(error: &ValidationError<'_>, instance: &Value, source: &Located, out: &mut Vec<PolicyError>) {
    let pointer = pointer_of(error);
    let value = error.instance();
    let shown = show(value);
    let at = source.position(&pointer);
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = known_properties(error, instance);
            for name in unexpected {
                let member = pointer.key(name);
                let mut message = "unknown field".to_string();
                if let Some(near) = closest(name, &known) {
                    message.push_str(&format!("; did you mean `{near}`?"));
                } else if !known.is_empty() {
                    message.push_str(&format!("; expected one of: {}", known.join(", ")));
                }
                out.push(PolicyError::at(member.clone(), source.key_position(&member), message));
            }
            return;
        }
        ValidationErrorKind::Required { property } => {
            // Named at the missing field's path; placed where its mapping is.
            let name = property.as_str().unwrap_or_default();
            let at =
                if pointer.as_str().is_empty() { source.position(&pointer) } else { source.key_position(&pointer) };
            out.push(PolicyError::at(pointer.key(name), at, "is required but missing".into()));
            return;
        }
        ValidationErrorKind::Type { kind } => format!("expected {}, got {}", type_name(kind), describe(value)),
        ValidationErrorKind::Maximum { limit } => format!("{shown} is above {}", show(limit)),
        ValidationErrorKind::Minimum { limit } => format!("{shown} is below {}", show(limit)),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("{shown} must be below {}", show(limit)),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("{shown} must be above {}", show(limit)),
        ValidationErrorKind::MinItems { limit } => format!("must list at least {limit}"),
        ValidationErrorKind::MaxItems { limit } => format!("may list at most {limit}"),
        ValidationErrorKind::MinLength { limit } => format!("must be at least {limit} characters long"),
        ValidationErrorKind::MaxLength { limit } => format!("{shown} is longer than {limit} characters"),
        ValidationErrorKind::Enum { options } => {
            let names: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
                .collect();
            one_of(value, &names)
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("{shown} is not {}", show(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } => pattern_message(&shown, pattern),
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // The alternatives whose type matches the value: with one, its
            // own errors say best what is wrong.
            let matching: Vec<&Vec<ValidationError<'static>>> = context
                .iter()
                .filter(|errors| {
                    !errors.iter().any(|e| {
                        matches!(e.kind(), ValidationErrorKind::Type { .. } | ValidationErrorKind::Constant { .. })
                            && e.instance_path() == error.instance_path()
                    })
                })
                .collect();
            let here = |e: &&ValidationError<'static>| e.instance_path() == error.instance_path();
            // Else the alternatives whose shape fits (every error is inside
            // the value): with one, its errors say what is wrong.
            let fitting: Vec<&Vec<ValidationError<'static>>> =
                matching.iter().copied().filter(|errors| !errors.iter().any(|e| here(&e))).collect();
            let single = match (matching.as_slice(), fitting.as_slice()) {
                ([errors], _) | (_, [errors]) => Some(*errors),
                _ => None,
            };
            if let Some(errors) = single {
                for e in errors.iter() {
                    explain(e, instance, source, out);
                }
                return;
            }
            // A mapping with one of several keys (`{inFlightPerReplica: 8}`).
            let keys: Vec<String> = context
                .iter()
                .flat_map(|errors| errors.iter().filter(here))
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Required { property } => property.as_str().map(str::to_string),
                    _ => None,
                })
                .collect();
            if keys.len() == context.len() {
                let message = format!(
                    "{shown} must have exactly one of {}",
                    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                );
                return out.push(PolicyError::at(pointer, at, message));
            }
            let constants: Vec<String> = context
                .iter()
                .flat_map(|errors| errors.iter().filter(here))
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => expected_value.as_str().map(str::to_string),
                    _ => None,
                })
                .collect();
            if constants.len() == context.len() {
                // An enum whose variants carry docs: one `const` each.
                return out.push(PolicyError::at(pointer, at, one_of(value, &constants)));
            }
            let forms: Vec<String> = context
                .iter()
                .flat_map(|errors| errors.iter().filter(here))
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Constant { expected_value } => Some(show(expected_value)),
                    ValidationErrorKind::Type { kind } => Some(type_name(kind)),
                    _ => None,
                })
                .collect();
            format!("{shown} is not {}", forms.join(" or "))
        }
        ValidationErrorKind::UniqueItems => "lists an item twice".to_string(),
        _ => error.to_string(),
    };
    out.push(PolicyError::at(pointer, at, message));
}

/// The properties the object at the error's place may have, from its
/// schema (for "did you mean").
fn known_properties(error: &ValidationError<'_>, _instance: &Value) -> Vec<String> {
    let schema = json_schema();
    let mut node = deref(&schema, &schema);
    for segment in error.instance_path().iter() {
        let next = match segment {
            LocationSegment::Property(name) => node
                .get("properties")
                .and_then(|p| p.get(name.as_ref()))
                .or_else(|| node.get("additionalProperties").filter(|v| v.is_object())),
            LocationSegment::Index(_) => node.get("items"),
        };
        match next {
            Some(n) => node = deref(&schema, n),
            None => return Vec::new(),
        }
    }
    node.get("properties").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// `node`, or what its `$ref` points to.
fn deref<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(target) => resolve_ref(schema, target).unwrap_or(node),
        None => node,
    }
}

fn resolve_ref<'a>(schema: &'a Value, target: &str) -> Option<&'a Value> {
    schema.pointer(target.strip_prefix('#')?)
}

/// `` `x` is not one of `a`, `b`; did you mean `a`? ``
fn one_of(value: &Value, names: &[String]) -> String {
    let listed: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    let near = value.as_str().and_then(|v| closest(v, names));
    match near {
        Some(n) => format!("{} is not one of {}; did you mean `{n}`?", show(value), listed.join(", ")),
        None => format!("{} is not one of {}", show(value), listed.join(", ")),
    }
}

fn pattern_message(shown: &str, pattern: &str) -> String {
    match pattern {
        DURATION_PATTERN => {
            format!("{shown} is not a duration (write a number and a unit: 500us, 250ms, 1.5s, 2m, 1h)")
        }
        super::spec::NAME_PATTERN => {
            format!("{shown} must be lowercase letters, digits and `-`, starting and ending with a letter or digit")
        }
        super::spec::ADDRESS_PATTERN => format!("{shown} is not an address (write IP:PORT or HOST:PORT)"),
        _ => format!("{shown} does not match the pattern {pattern}"),
    }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "a mapping".to_string(),
        "array" => "a list".to_string(),
        "integer" => "a whole number".to_string(),
        other => format!("a {other}"),
    };
    match kind {
        jsonschema::error::TypeKind::Single(t) => one(t),
        jsonschema::error::TypeKind::Multiple(set) => set.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A value as the message shows it: `120`, `` `eu` ``.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Number(n) => {
            n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15).map_or(n.to_string(), |f| format!("{}", f as i64))
        }
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// The name in `known` nearest to `name` (at most a third of its letters
/// away), for "did you mean".
pub(crate) fn closest(name: &str, known: &[String]) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d > 0 && *d <= (k.len().max(3) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb { prev } else { 1 + prev.min(row[j]).min(row[j + 1]) };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The field reference as a Markdown table (docs/policy.md).
pub fn reference_markdown() -> String {
    let mut out = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    for (path, ty, default, description) in reference_rows() {
        let cell = |s: &str| s.replace('|', "\\|");
        out.push_str(&format!("| `{path}` | {ty} | {} | {} |\n", cell(&default), cell(&description)));
    }
    out
}

/// The schema's property tree, flattened for the reference docs: one row
/// per field path (`models.<name>.canary.weight`) with its type, default
/// and description.
pub fn reference_rows() -> Vec<(String, String, String, String)> {
    let schema = json_schema();
    let mut rows = Vec::new();
    walk(&schema, &schema, "", &Map::new(), &mut rows, 0);
    rows
}

fn walk(
    schema: &Value,
    node: &Value,
    path: &str,
    inherited_default: &Map<String, Value>,
    rows: &mut Vec<(String, String, String, String)>,
    depth: usize,
) {
    if depth > 12 {
        return;
    }
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(target) => resolve_ref(schema, target).unwrap_or(node),
        None => node,
    };
    let Some(properties) = node.get("properties").and_then(Value::as_object) else { return };
    let own_default = node.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
    let defaults = if own_default.is_empty() { inherited_default.clone() } else { own_default };
    let required: Vec<&str> =
        node.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    for (name, prop) in properties {
        let full = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let target = match prop.get("$ref").and_then(Value::as_str) {
            Some(t) => resolve_ref(schema, t).unwrap_or(prop),
            None => prop,
        };
        let description = prop
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ");
        let default = prop
            .get("default")
            .or_else(|| defaults.get(name))
            .filter(|d| !d.is_null())
            .map(|d| match d {
                Value::Object(m) if !m.is_empty() => "see below".to_string(),
                other => format!("`{}`", serde_json::to_string(other).unwrap_or_default()),
            })
            .unwrap_or_else(|| if required.contains(&name.as_str()) { "required".into() } else { "—".into() });
        rows.push((full.clone(), schema_type(schema, prop), default, description));
        let child_defaults = prop.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
        walk(schema, target, &full, &child_defaults, rows, depth + 1);
        if let Some(items) = target.get("items") {
            walk(schema, items, &format!("{full}[]"), &Map::new(), rows, depth + 1);
        }
        if let Some(values) = target.get("additionalProperties").filter(|v| v.is_object()) {
            walk(schema, values, &format!("{full}.<name>"), &Map::new(), rows, depth + 1);
        }
    }
}

fn schema_type(schema: &Value, node: &Value) -> String {
    let node = match node.get("$ref").and_then(Value::as_str) {
        Some(t) => resolve_ref(schema, t).unwrap_or(node),
        None => node,
    };
    if node.get("pattern").and_then(Value::as_str) == Some(DURATION_PATTERN) {
        return "duration".into();
    }
    if let Some(options) = node.get("enum").and_then(Value::as_array) {
        return options.iter().map(show).collect::<Vec<_>>().join(" \\| ");
    }
    if let Some(alternatives) = node.get("oneOf").and_then(Value::as_array) {
        return alternatives.iter().map(|a| schema_type(schema, a)).collect::<Vec<_>>().join(" \\| ");
    }
    if let Some(c) = node.get("const") {
        return show(c);
    }
    match node.get("type").and_then(Value::as_str) {
        Some("array") => {
            let item = node.get("items").map(|i| schema_type(schema, i)).unwrap_or_default();
            format!("list of {item}")
        }
        Some("object") if node.get("additionalProperties").is_some_and(Value::is_object) => {
            let values = node.get("additionalProperties").map(|v| schema_type(schema, v)).unwrap_or_default();
            format!("map of {values}")
        }
        Some("object") => "mapping".into(),
        Some(t) => t.to_string(),
        None => "any".into(),
    }
}

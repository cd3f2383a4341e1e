//! YAML with positions: the policy is read into a JSON value plus the line
//! and column of every node and every mapping key, so that each error —
//! from the schema, from cross-references, from the derived filter
//! configuration — can say where in the file it is.
//!
//! Scalars resolve by YAML 1.2's core schema (`true`, `null`, `~`, `12`,
//! `1.5`, `0x1f`; anything quoted is a string). Anchors and aliases work;
//! `<<` merge keys merge. Duplicate keys, non-scalar keys and more than one
//! document are errors.

use super::error::{Pointer, PolicyError, Position};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML document read as JSON, with where each node is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Located {
    /// The document.
    pub value: Value,
    /// Where each node starts, by JSON pointer (`""` is the root).
    nodes: BTreeMap<String, Position>,
    /// Where each mapping key is, by the JSON pointer of its value.
    keys: BTreeMap<String, Position>,
}

impl Located {
    /// A document that came from no file (positions unknown).
    pub fn unplaced(value: Value) -> Self {
        Self { value, ..Self::default() }
    }

    /// Reads one YAML document.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if let Err(e) = parser.load(&mut builder, true) {
            let m = e.marker();
            return Err(PolicyError::at(Pointer::root(), Some(position(m)), format!("not valid YAML: {}", e.info())));
        }
        if let Some(error) = builder.error {
            return Err(error);
        }
        match builder.documents {
            0 => Err(PolicyError::at(Pointer::root(), None, "the file holds no YAML document".into())),
            1 => Ok(Located { value: builder.root.unwrap_or(Value::Null), nodes: builder.nodes, keys: builder.keys }),
            n => Err(PolicyError::at(
                Pointer::root(),
                builder.second_document,
                format!("expected one YAML document, found {n} (a policy is one document)"),
            )),
        }
    }

    /// Where the node at `pointer` starts; for a node that is not there
    /// (a missing field), where its nearest present ancestor starts.
    pub fn position(&self, pointer: &Pointer) -> Option<Position> {
        let mut p = pointer.as_str().to_string();
        loop {
            if let Some(pos) = self.nodes.get(&p) {
                return Some(*pos);
            }
            p = p.rsplit_once('/')?.0.to_string();
        }
    }

    /// Where the key of the mapping member at `pointer` is (falls back to
    /// the node's position).
    pub fn key_position(&self, pointer: &Pointer) -> Option<Position> {
        self.keys.get(pointer.as_str()).copied().or_else(|| self.position(pointer))
    }

    /// The document with every `null` mapping member removed: `key:` with
    /// no value reads as if the key were absent (as serde reads an
    /// optional field).
    pub fn without_nulls(&self) -> Value {
        fn strip(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip(v))).collect())
                }
                Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
                other => other.clone(),
            }
        }
        strip(&self.value)
    }
}

fn position(m: &Marker) -> Position {
    Position { line: m.line(), column: m.col() + 1 }
}

/// A container being built.
#[derive(Debug)]
enum Frame {
    Seq {
        pointer: String,
        items: Vec<Value>,
        anchor: usize,
    },
    Map {
        pointer: String,
        map: Map<String, Value>,
        /// The keys written in this mapping (not merged in).
        explicit: Vec<String>,
        key: Option<(String, Position)>,
        anchor: usize,
    },
}

#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    nodes: BTreeMap<String, Position>,
    keys: BTreeMap<String, Position>,
    /// Anchor id → (value, pointer where it was defined).
    anchors: BTreeMap<usize, (Value, String)>,
    documents: usize,
    second_document: Option<Position>,
    error: Option<PolicyError>,
}

impl Builder {
    fn fail(&mut self, pointer: &str, at: Position, message: String) {
        if self.error.is_none() {
            self.error = Some(PolicyError::at(Pointer::from_json(pointer), Some(at), message));
        }
    }

    /// The pointer the next node gets, or `None` when it is a mapping key.
    fn next_pointer(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq { pointer, items, .. }) => Some(format!("{pointer}/{}", items.len())),
            Some(Frame::Map { pointer, key: Some((k, _)), .. }) => Some(format!("{pointer}/{}", escape(k))),
            Some(Frame::Map { key: None, .. }) => None,
        }
    }

    /// A finished node (scalar, alias or container) at `at`.
    fn add(&mut self, value: Value, at: Position, anchor: usize, pointer: Option<String>) {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), pointer.clone().unwrap_or_default()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { pointer, map, explicit, key, .. }) => match key.take() {
                None => {
                    let name = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".into(),
                        _ => {
                            let p = pointer.clone();
                            return self.fail(&p, at, "a mapping key must be a plain value, not a list or map".into());
                        }
                    };
                    let member = format!("{pointer}/{}", escape(&name));
                    if explicit.contains(&name) {
                        let message = format!("key `{name}` appears twice in this mapping");
                        return self.fail(&member, at, message);
                    }
                    // A block mapping's start event comes after its first key:
                    // the mapping is where its first key is.
                    if explicit.is_empty() {
                        let start = self.nodes.entry(pointer.clone()).or_insert(at);
                        if at < *start {
                            *start = at;
                        }
                    }
                    explicit.push(name.clone());
                    self.keys.insert(member, at);
                    *key = Some((name, at));
                }
                Some((name, key_at)) if name == "<<" => {
                    // A merge key: the mapping (or list of mappings) given
                    // adds the members this mapping does not set itself.
                    let sources = match value {
                        Value::Object(m) => vec![m],
                        Value::Array(items) if items.iter().all(Value::is_object) => {
                            items.into_iter().filter_map(|v| v.as_object().cloned()).collect()
                        }
                        _ => {
                            let p = pointer.clone();
                            return self.fail(&p, key_at, "`<<` must merge a mapping or a list of mappings".into());
                        }
                    };
                    for source in sources {
                        for (k, v) in source {
                            map.entry(k).or_insert(v);
                        }
                    }
                }
                Some((name, _)) => {
                    map.insert(name, value);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = position(&mark);
        match event {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents == 2 {
                    self.second_document = Some(at);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let pointer = self.next_pointer();
                if let Some(p) = &pointer {
                    self.nodes.insert(p.clone(), at);
                }
                let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == TScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    Value::String(text)
                };
                self.add(value, at, anchor, pointer);
            }
            Event::Alias(id) => {
                let pointer = self.next_pointer();
                let Some((value, origin)) = self.anchors.get(&id).cloned() else {
                    return self.fail(pointer.as_deref().unwrap_or(""), at, "an alias names no anchor".into());
                };
                if let Some(p) = &pointer {
                    // The alias's nodes are where the anchor's are.
                    let copied: Vec<(String, Position)> = self
                        .nodes
                        .range(origin.clone()..)
                        .take_while(|(k, _)| k.starts_with(&origin))
                        .map(|(k, v)| (format!("{p}{}", &k[origin.len()..]), *v))
                        .collect();
                    self.nodes.extend(copied);
                    self.nodes.insert(p.clone(), at);
                }
                self.add(value, at, 0, pointer);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let Some(pointer) = self.next_pointer() else {
                    let p = match self.stack.last() {
                        Some(Frame::Map { pointer, .. } | Frame::Seq { pointer, .. }) => pointer.clone(),
                        None => String::new(),
                    };
                    return self.fail(&p, at, "a mapping key must be a plain value, not a list or map".into());
                };
                self.nodes.insert(pointer.clone(), at);
                self.stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq { pointer, items: Vec::new(), anchor }
                } else {
                    Frame::Map { pointer, map: Map::new(), explicit: Vec::new(), key: None, anchor }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, pointer, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pointer, items, anchor }) => (Value::Array(items), pointer, anchor),
                    Some(Frame::Map { pointer, map, anchor, .. }) => (Value::Object(map), pointer, anchor),
                    None => return,
                };
                let start = self.nodes.get(&pointer).copied().unwrap_or(at);
                self.add(value, start, anchor, Some(pointer));
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

/// A JSON pointer segment (`~` → `~0`, `/` → `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1i128, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let int = if let Some(hex) = text.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = text.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok().map(|n| sign * n)
    } else {
        None
    };
    if let Some(n) = int {
        if let Ok(u) = u64::try_from(n) {
            return Value::Number(u.into());
        }
        if let Ok(i) = i64::try_from(n) {
            return Value::Number(i.into());
        }
    }
    if is_float(digits) {
        if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// `[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?` and friends, without the sign
/// (`.inf` and `.nan` stay strings: JSON has no such numbers).
fn is_float(t: &str) -> bool {
    let (mantissa, exponent) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(whole) && digits(frac) && !(whole.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_values_and_where_they_are() {
        let doc = Located::parse("a: 1\nb:\n  - x\n  - 'y'\n  - {c: true, d: ~}\ne: 1.5\n").expect("valid");
        assert_eq!(doc.value, json!({"a": 1, "b": ["x", "y", {"c": true, "d": null}], "e": 1.5}));
        let at = |p: &str| doc.position(&Pointer::from_json(p)).map(|p| (p.line, p.column));
        assert_eq!(at("/a"), Some((1, 4)));
        assert_eq!(at("/b/1"), Some((4, 5)));
        assert_eq!(at("/b/2/c"), Some((5, 9)));
        assert_eq!(at("/b/2/missing"), Some((5, 5)), "a missing member: its mapping");
        assert_eq!(doc.key_position(&Pointer::from_json("/e")).map(|p| (p.line, p.column)), Some((6, 1)));
        assert_eq!(doc.without_nulls(), json!({"a": 1, "b": ["x", "y", {"c": true}], "e": 1.5}));
    }

    #[test]
    fn resolves_scalars_by_the_core_schema() {
        let doc = Located::parse(
            "[1, -2, 0x1f, 0o17, 1.5, -1e3, .5, '1', \"true\", true, False, ~, null, .inf, 1.2.3, 08, yes, !!str 5]",
        )
        .expect("valid");
        assert_eq!(
            doc.value,
            json!([
                1, -2, 31, 15, 1.5, -1000.0, 0.5, "1", "true", true, false, null, null, ".inf", "1.2.3", 8, "yes", "5"
            ])
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let doc = Located::parse("base: &b {x: 1, y: 2}\ncopy: *b\nmerged:\n  <<: *b\n  y: 3\n").expect("valid");
        assert_eq!(doc.value["copy"], json!({"x": 1, "y": 2}));
        assert_eq!(doc.value["merged"], json!({"x": 1, "y": 3}), "a key of its own wins over the merged one");
        assert_eq!(doc.position(&Pointer::from_json("/copy/x")).map(|p| p.line), Some(1), "where the anchor is");
    }

    #[test]
    fn duplicate_keys_and_bad_yaml_are_errors_with_a_position() {
        let err = Located::parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.to_string(), "a: key `a` appears twice in this mapping (line 3, column 1)");
        let err = Located::parse("a: [1, 2\nb: 3\n").expect_err("syntax");
        assert!(err.to_string().starts_with("not valid YAML"), "{err}");
        assert!(err.position.is_some(), "{err}");
        let err = Located::parse("a: 1\n---\nb: 2\n").expect_err("two documents");
        assert!(err.to_string().contains("found 2") && err.to_string().contains("line 2"), "{err}");
        let err = Located::parse("? [a]\n: 1\n").expect_err("complex key");
        assert!(err.to_string().contains("mapping key must be a plain value"), "{err}");
        assert!(Located::parse("").is_err(), "an empty file holds no policy");
    }
}

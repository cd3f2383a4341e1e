//! Policy errors: each names the field (`models.mlp.canary.weight`) and,
//! where the file has one, the line and column.

use serde::Serialize;
use std::fmt;

/// A place in the file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// A field's place in the document, as a JSON pointer (`/models/mlp/canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pointer(String);

// === impl Pointer ===

impl Pointer {
    /// The document itself.
    pub fn root() -> Self {
        Self(String::new())
    }

    /// From a JSON pointer string (`""`, `/a/0/b`).
    pub fn from_json(pointer: &str) -> Self {
        Self(pointer.to_string())
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A member of this object.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}/{}", self.0, key.replace('~', "~0").replace('/', "~1")))
    }

    /// An item of this list.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}/{index}", self.0))
    }

    /// As a field path: `models.mlp.canary.weight`, `regions[1].zone`
    /// (keys that are not plain names are quoted: `callers."a.b"`).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in self.0.split('/').skip(1) {
            let segment = segment.replace("~1", "/").replace("~0", "~");
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
                out.push_str(&format!("[{segment}]"));
                continue;
            }
            if !out.is_empty() {
                out.push('.');
            }
            let plain =
                !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            if plain {
                out.push_str(&segment);
            } else {
                out.push_str(&format!("{segment:?}"));
            }
        }
        out
    }
}

/// One problem in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The field at fault.
    pub pointer: Pointer,
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
}

// === impl PolicyError ===

impl PolicyError {
    /// An error at `pointer`.
    pub fn at(pointer: Pointer, position: Option<Position>, message: String) -> Self {
        Self { pointer, position, message }
    }

    /// The field path (`models.mlp.canary.weight`; empty for the document).
    pub fn path(&self) -> String {
        self.pointer.path()
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path();
        if path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{path}: {}", self.message)?;
        }
        if let Some(p) = self.position {
            write!(f, " (line {}, column {})", p.line, p.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl Serialize for PolicyError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PolicyError", 5)?;
        st.serialize_field("path", &self.path())?;
        st.serialize_field("line", &self.position.map(|p| p.line))?;
        st.serialize_field("column", &self.position.map(|p| p.column))?;
        st.serialize_field("message", &self.message)?;
        st.serialize_field("error", &self.to_string())?;
        st.end()
    }
}

/// Every problem found in a policy, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        Self(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_document() {
        let p = Pointer::root().key("models").key("mlp").key("canary").key("weight");
        assert_eq!(p.path(), "models.mlp.canary.weight");
        assert_eq!(Pointer::root().key("regions").index(1).key("zone").path(), "regions[1].zone");
        assert_eq!(Pointer::root().key("callers").key("a.b").path(), "callers.\"a.b\"");
        assert_eq!(Pointer::root().key("x/y").as_str(), "/x~1y");
        let e = PolicyError::at(p, Some(Position { line: 14, column: 15 }), "120 is above 100".into());
        assert_eq!(e.to_string(), "models.mlp.canary.weight: 120 is above 100 (line 14, column 15)");
    }
}

//! The filter's plugin configuration and its validation.

use serde::Deserialize;
use std::fmt;

/// The plugin configuration, as JSON:
///
/// ```json
/// {"name": "meridian-region"}
/// ```
///
/// Unknown fields are rejected so that a typo never passes silently.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The name this filter instance reports in `x-meridian-filter`.
    pub name: String,
}

/// Why a plugin configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A human-readable reason that names the field at fault.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid meridian filter configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

// === impl FilterConfig ===

impl FilterConfig {
    /// Parses and validates the plugin configuration bytes.
    ///
    /// Fails when the bytes are not JSON, a field is unknown or missing, or
    /// `name` is empty or not a valid header value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: FilterConfig = serde_json::from_slice(bytes).map_err(|e| ConfigError { message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError { message: "field `name` must not be empty".into() });
        }
        if let Some(bad) = self.name.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ConfigError {
                message: format!("field `name` must be printable ASCII without spaces, found {bad:?}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_config() {
        let config = FilterConfig::from_json(br#"{"name":"meridian-region"}"#).expect("valid");
        assert_eq!(config.name, "meridian-region");
    }

    #[test]
    fn rejects_unknown_fields_naming_them() {
        let err = FilterConfig::from_json(br#"{"name":"a","nmae":"b"}"#).expect_err("unknown field");
        assert!(err.message.contains("nmae"), "{err}");
    }

    #[test]
    fn rejects_missing_and_empty_names() {
        assert!(FilterConfig::from_json(b"{}").expect_err("missing").message.contains("name"));
        assert!(FilterConfig::from_json(br#"{"name":""}"#).expect_err("empty").message.contains("name"));
        assert!(FilterConfig::from_json(br#"{"name":"a b"}"#).expect_err("space").message.contains("name"));
    }

    #[test]
    fn rejects_non_json() {
        assert!(FilterConfig::from_json(b"name: a").is_err());
    }
}

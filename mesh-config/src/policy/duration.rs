//! Durations as the policy writes them: `250ms`, `1.5s`, `2m`, `500us`.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// The pattern every duration matches (also in the JSON schema, so that
/// editors check it as the user types).
pub const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(us|ms|s|m|h)$";

/// A span of time, kept in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    micros: u64,
}

// === impl Duration ===

impl Duration {
    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self { micros: ms * 1_000 }
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self { micros: s * 1_000_000 }
    }

    /// `us` microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Self { micros: us }
    }

    /// Whole microseconds.
    pub fn as_micros(self) -> u64 {
        self.micros
    }

    /// Whole milliseconds, rounded up (a 1.5 ms timeout never becomes 1 ms).
    pub fn as_millis(self) -> u64 {
        self.micros.div_ceil(1_000)
    }

    /// Milliseconds, with fractions.
    pub fn as_millis_f64(self) -> f64 {
        self.micros as f64 / 1_000.0
    }

    /// As Envoy and Istio write durations: seconds with up to six
    /// decimals and an `s` (`0.25s`, `30s`).
    pub fn to_proto_string(self) -> String {
        let secs = self.micros / 1_000_000;
        let frac = self.micros % 1_000_000;
        if frac == 0 {
            format!("{secs}s")
        } else {
            let digits = format!("{frac:06}");
            format!("{secs}.{}s", digits.trim_end_matches('0'))
        }
    }

    /// Parses `<number><unit>` with unit `us`, `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a duration (write a number and a unit: 500us, 250ms, 1.5s, 2m, 1h)");
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let per_unit: u64 = match unit {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let mut micros = whole.checked_mul(per_unit).ok_or_else(bad)?;
        if !fraction.is_empty() {
            let digits = fraction.len().min(12);
            let scale = 10u128.pow(digits as u32);
            let value: u128 = fraction[..digits].parse().map_err(|_| bad())?;
            let extra = value * u128::from(per_unit) / scale;
            if !(value * u128::from(per_unit)).is_multiple_of(scale) {
                return Err(format!("`{text}` is finer than a microsecond"));
            }
            micros = micros.checked_add(u64::try_from(extra).map_err(|_| bad())?).ok_or_else(bad)?;
        }
        Ok(Self { micros })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.micros;
        match m {
            0 => write!(f, "0s"),
            _ if m.is_multiple_of(3_600_000_000) => write!(f, "{}h", m / 3_600_000_000),
            _ if m.is_multiple_of(60_000_000) => write!(f, "{}m", m / 60_000_000),
            _ if m.is_multiple_of(1_000_000) => write!(f, "{}s", m / 1_000_000),
            _ if m.is_multiple_of(1_000) => write!(f, "{}ms", m / 1_000),
            _ => write!(f, "{m}us"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number and a unit, `us`, `ms`, `s`, `m` or `h` (`250ms`, `1.5s`)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_fractions() {
        for (text, micros) in [
            ("500us", 500),
            ("250ms", 250_000),
            ("1.5s", 1_500_000),
            ("2m", 120_000_000),
            ("1h", 3_600_000_000),
            ("0s", 0),
            ("0.001ms", 1),
        ] {
            assert_eq!(Duration::parse(text), Ok(Duration::from_micros(micros)), "{text}");
        }
        for bad in ["", "5", "ms", "1.ms", ".5s", "5 s", "5sec", "-1s", "1e3ms", "0.0001ms", "99999999999999999999h"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_parser() {
        let schema = serde_json::json!({ "type": "string", "pattern": DURATION_PATTERN });
        for text in ["500us", "250ms", "1.5s", "2m", "1h", "5", "1.ms", ".5s", "5sec", "-1s", "1s ", "us"] {
            let by_schema = jsonschema::is_valid(&schema, &serde_json::json!(text));
            assert_eq!(by_schema, Duration::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn renders_for_humans_and_for_envoy() {
        assert_eq!(Duration::from_millis(250).to_string(), "250ms");
        assert_eq!(Duration::from_secs(120).to_string(), "2m");
        assert_eq!(Duration::from_micros(1_500).to_string(), "1500us");
        assert_eq!(Duration::from_millis(250).to_proto_string(), "0.25s");
        assert_eq!(Duration::from_secs(30).to_proto_string(), "30s");
        assert_eq!(Duration::from_micros(1_500).to_proto_string(), "0.0015s");
        assert_eq!(Duration::from_micros(1_500).as_millis(), 2, "rounded up");
    }
}

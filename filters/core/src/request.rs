//! A request's routing attributes, as read from its headers.

use meridian_proto::headers;

/// What the decision needs to know of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestAttrs<'a> {
    /// `x-meridian-model`.
    pub model: Option<&'a str>,
    /// `x-meridian-caller`: the caller's identity, for per-caller policy.
    pub caller: Option<&'a str>,
    /// `x-meridian-caller-region` (used only when the config trusts it).
    pub caller_region: Option<&'a str>,
    /// `x-meridian-residency`.
    pub residency: Option<&'a str>,
    /// The caller's deadline from `grpc-timeout`, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// `x-meridian-debug-panic` is present.
    pub debug_panic: bool,
}

// === impl RequestAttrs ===

impl<'a> RequestAttrs<'a> {
    /// Reads the attributes from a request's header pairs (names lower-case,
    /// as Envoy hands them over). Empty values count as absent.
    pub fn from_headers(pairs: &'a [(String, String)]) -> Self {
        let mut attrs = Self::default();
        for (name, value) in pairs {
            let value = Some(value.as_str()).filter(|v| !v.is_empty());
            match name.as_str() {
                headers::MODEL => attrs.model = value,
                headers::CALLER => attrs.caller = value,
                headers::CALLER_REGION => attrs.caller_region = value,
                headers::RESIDENCY => attrs.residency = value,
                "grpc-timeout" => attrs.deadline_ms = value.and_then(parse_grpc_timeout),
                headers::DEBUG_PANIC => attrs.debug_panic = true,
                _ => {}
            }
        }
        attrs
    }
}

/// Parses a gRPC `grpc-timeout` value (`TimeoutValue TimeoutUnit`: up to 8
/// digits and one of `H M S m u n`) into whole milliseconds, rounding up.
pub fn parse_grpc_timeout(value: &str) -> Option<u64> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ns_per_unit: u64 = match unit {
        "H" => 3_600_000_000_000,
        "M" => 60_000_000_000,
        "S" => 1_000_000_000,
        "m" => 1_000_000,
        "u" => 1_000,
        "n" => 1,
        _ => return None,
    };
    Some(n.saturating_mul(ns_per_unit).div_ceil(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(3_600_000));
        assert_eq!(parse_grpc_timeout("2M"), Some(120_000));
        assert_eq!(parse_grpc_timeout("3S"), Some(3_000));
        assert_eq!(parse_grpc_timeout("250m"), Some(250));
        assert_eq!(parse_grpc_timeout("1500u"), Some(2));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(100));
        for bad in ["", "S", "10", "10x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_meridian_headers() {
        let pairs: Vec<(String, String)> = [
            ("x-meridian-model", "mlp"),
            ("x-meridian-caller", "billing"),
            ("x-meridian-residency", ""),
            ("grpc-timeout", "500m"),
            ("x-other", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let attrs = RequestAttrs::from_headers(&pairs);
        assert_eq!(attrs.model, Some("mlp"));
        assert_eq!(attrs.caller, Some("billing"));
        assert_eq!(attrs.residency, None, "empty is absent");
        assert_eq!(attrs.deadline_ms, Some(500));
        assert!(!attrs.debug_panic);
    }
}

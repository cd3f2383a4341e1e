//! A request's routing attributes, as read from its headers.

use crate::config::FilterConfig;
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
    /// `x-meridian-debug-panic` is present and the config honours it.
    pub debug_panic: bool,
}

/// The header values a decision reads, fetched one by one from the host
/// (a single-header read costs Envoy far less than the whole map).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHeaders {
    model: Option<String>,
    caller: Option<String>,
    caller_region: Option<String>,
    residency: Option<String>,
    grpc_timeout: Option<String>,
    debug_panic: bool,
}

// === impl RequestHeaders ===

impl RequestHeaders {
    /// Reads, through `get`, the headers `config` makes relevant: the
    /// caller only where some caller has a policy, the caller's region only
    /// where the config trusts it, the debug-panic header only where the
    /// config allows it (each read is a host call that re-enters the VM to
    /// copy the value). Empty values count as absent.
    pub fn read(config: &FilterConfig, mut get: impl FnMut(&str) -> Option<String>) -> Self {
        let mut read = |name: &str| get(name).filter(|v| !v.is_empty());
        Self {
            model: read(headers::MODEL),
            caller: if config.callers.is_empty() { None } else { read(headers::CALLER) },
            residency: read(headers::RESIDENCY),
            grpc_timeout: read("grpc-timeout"),
            caller_region: if config.trust_caller_region_header { read(headers::CALLER_REGION) } else { None },
            debug_panic: config.debug.panic_header && read(headers::DEBUG_PANIC).is_some(),
        }
    }

    /// The attributes the planner decides on.
    pub fn attrs(&self) -> RequestAttrs<'_> {
        RequestAttrs {
            model: self.model.as_deref(),
            caller: self.caller.as_deref(),
            caller_region: self.caller_region.as_deref(),
            residency: self.residency.as_deref(),
            deadline_ms: self.grpc_timeout.as_deref().and_then(parse_grpc_timeout),
            debug_panic: self.debug_panic,
        }
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
    fn reads_the_meridian_headers_the_config_makes_relevant() {
        let pairs = [
            ("x-meridian-model", "mlp"),
            ("x-meridian-caller", "billing"),
            ("x-meridian-residency", ""),
            ("x-meridian-caller-region", "us-east"),
            ("x-meridian-debug-panic", "1"),
            ("grpc-timeout", "500m"),
        ];
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let mut config = FilterConfig::new("m", "eu-west", &[("eu-west", "eu")]);
        let read = RequestHeaders::read(&config, get);
        assert_eq!(read.attrs().caller, None, "no caller has a policy: not read");
        config.callers.insert("billing".into(), Default::default());
        let read = RequestHeaders::read(&config, get);
        let attrs = read.attrs();
        assert_eq!(attrs.model, Some("mlp"));
        assert_eq!(attrs.caller, Some("billing"));
        assert_eq!(attrs.residency, None, "empty is absent");
        assert_eq!(attrs.deadline_ms, Some(500));
        assert_eq!(attrs.caller_region, None, "not trusted by default");
        assert!(!attrs.debug_panic, "not honoured by default");
        config.trust_caller_region_header = true;
        config.debug.panic_header = true;
        let read = RequestHeaders::read(&config, get);
        assert_eq!(read.attrs().caller_region, Some("us-east"));
        assert!(read.attrs().debug_panic);
    }
}

//! A request's routing attributes, as read from its headers.

use crate::config::{FilterConfig, StickyKey};
use crate::decision::UNNAMED_MODEL;
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
    /// `x-meridian-version`, read only for a model whose canary allows overrides.
    pub version_override: Option<&'a str>,
    /// The value of the model's canary sticky key, if it has one.
    pub sticky_key: Option<&'a str>,
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
    version_override: Option<String>,
    sticky_key: Option<String>,
}

// === impl RequestHeaders ===

impl RequestHeaders {
    /// Reads, through `get`, the headers `config` makes relevant: the
    /// caller only where some caller has a policy, the caller's region only
    /// where the config trusts it, the debug-panic header only where the
    /// config allows it (each read is a host call that re-enters the VM to
    /// copy the value). Empty values count as absent.
    /// For a model with a canary split, also the version override (where
    /// allowed) and the sticky key (a header, or the caller).
    pub fn read(config: &FilterConfig, mut get: impl FnMut(&str) -> Option<String>) -> Self {
        let mut read = |name: &str| get(name).filter(|v| !v.is_empty());
        let model = read(headers::MODEL);
        let canary = config.model(model.as_deref().unwrap_or(UNNAMED_MODEL)).canary.as_ref();
        let sticky_is_caller = canary.is_some_and(|c| c.sticky == Some(StickyKey::Caller));
        let caller = if config.callers.is_empty() && !sticky_is_caller { None } else { read(headers::CALLER) };
        let sticky_key = match canary.and_then(|c| c.sticky.as_ref()) {
            Some(StickyKey::Header(name)) => read(name),
            Some(StickyKey::Caller) => caller.clone(),
            None => None,
        };
        Self {
            version_override: canary.filter(|c| c.allow_override).and_then(|_| read(headers::VERSION)),
            sticky_key,
            model,
            caller,
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
            version_override: self.version_override.as_deref(),
            sticky_key: self.sticky_key.as_deref(),
        }
    }
}

/// Parses a gRPC `grpc-timeout` value (`TimeoutValue TimeoutUnit`: up to 8
/// digits and one of `H M S m u n`) into whole milliseconds, rounding up.
pub fn parse_grpc_timeout(value: &str) -> Option<u64> {
    // ASCII only: splitting off the unit must not cut a character in two.
    if !value.is_ascii() {
        return None;
    }
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

    /// Found by `make fuzz` (target `headers`): a value ending in a
    /// multi-byte character panicked, splitting inside it.
    #[test]
    fn a_timeout_ending_in_a_multi_byte_character_is_no_timeout() {
        assert_eq!(parse_grpc_timeout("gV2|1\u{343}"), None);
        assert_eq!(parse_grpc_timeout("1\u{e9}"), None);
        assert_eq!(parse_grpc_timeout("\u{1F600}"), None);
    }

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
        assert_eq!((read.attrs().version_override, read.attrs().sticky_key), (None, None), "no canary: not read");
    }

    #[test]
    fn a_canary_model_reads_its_sticky_key_and_the_override_where_allowed() {
        let pairs = [
            ("x-meridian-model", "mlp"),
            ("x-user", "u-17"),
            ("x-meridian-version", "v2"),
            ("x-meridian-caller", "web"),
        ];
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let mut config = FilterConfig::new("m", "eu-west", &[("eu-west", "eu")]);
        let canary = crate::config::CanaryConfig {
            stable: "v1".into(),
            canary: "v2".into(),
            weight: 10.0,
            sticky: Some(StickyKey::Header("x-user".into())),
            allow_override: false,
            ..Default::default()
        };
        config.models.insert("mlp".into(), crate::config::ModelPolicy { canary: Some(canary), ..Default::default() });
        let read = RequestHeaders::read(&config, get);
        assert_eq!((read.attrs().sticky_key, read.attrs().version_override), (Some("u-17"), None));
        let policy = config.models.get_mut("mlp").and_then(|m| m.canary.as_mut()).expect("canary");
        policy.allow_override = true;
        policy.sticky = Some(StickyKey::Caller);
        let read = RequestHeaders::read(&config, get);
        assert_eq!((read.attrs().sticky_key, read.attrs().version_override), (Some("web"), Some("v2")));
        assert_eq!(read.attrs().caller, Some("web"));
    }
}

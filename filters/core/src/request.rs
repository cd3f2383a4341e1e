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
    summary: SummaryRead,
}

/// How [`RequestHeaders::read`] used `x-meridian-request`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SummaryRead {
    /// The configuration does not ask for it.
    #[default]
    NotAsked,
    /// Its fields replaced the headers it carries.
    Used,
    /// Asked for but absent: nothing built it (the Istio EnvoyFilter that
    /// adds the connection manager's early mutation not applied).
    Missing,
    /// Present but not exactly one value per field (a client's `|` in a
    /// value): read header by header.
    Ambiguous,
}

impl SummaryRead {
    /// The counter a fallback to header-by-header reads increments.
    pub fn fallback_counter(self) -> Option<&'static str> {
        match self {
            Self::NotAsked | Self::Used => None,
            Self::Missing => Some("meridian.request_summary.missing"),
            Self::Ambiguous => Some("meridian.request_summary.ambiguous"),
        }
    }
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
    ///
    /// With [`FilterConfig::request_summary`], the headers that
    /// `x-meridian-request` carries come from that one read; the others
    /// (a canary's sticky header, the debug-panic header) are read one by
    /// one, as is everything when the summary is missing or malformed.
    pub fn read(config: &FilterConfig, mut get: impl FnMut(&str) -> Option<String>) -> Self {
        let raw = if config.request_summary { get(headers::REQUEST_SUMMARY) } else { None };
        let summary = raw.as_deref().and_then(RequestSummary::parse);
        let summary_read = match (config.request_summary, &raw, &summary) {
            (false, _, _) => SummaryRead::NotAsked,
            (true, None, _) => SummaryRead::Missing,
            (true, Some(_), None) => SummaryRead::Ambiguous,
            (true, Some(_), Some(_)) => SummaryRead::Used,
        };
        let mut read = |name: &str| {
            let value = match summary.as_ref().and_then(|s| s.field(name)) {
                Some(field) => field.map(str::to_owned),
                None => get(name),
            };
            value.filter(|v| !v.is_empty())
        };
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
            grpc_timeout: read(headers::GRPC_TIMEOUT),
            caller_region: if config.trust_caller_region_header { read(headers::CALLER_REGION) } else { None },
            debug_panic: config.debug.panic_header && read(headers::DEBUG_PANIC).is_some(),
            summary: summary_read,
        }
    }

    /// How `x-meridian-request` was used.
    pub fn summary(&self) -> SummaryRead {
        self.summary
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

/// `x-meridian-request` split into the values of
/// [`headers::REQUEST_SUMMARY_FIELDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSummary<'a> {
    values: [&'a str; headers::REQUEST_SUMMARY_FIELDS.len()],
}

impl<'a> RequestSummary<'a> {
    /// Splits `value` at `|` into exactly one value per field; `None` when
    /// the count differs. Header values are the client's and may hold a
    /// `|` themselves: then the count is off and the value is ambiguous, so
    /// it is not used (the headers are read one by one instead).
    pub fn parse(value: &'a str) -> Option<Self> {
        let mut values = [""; headers::REQUEST_SUMMARY_FIELDS.len()];
        let mut parts = value.split('|');
        for slot in &mut values {
            *slot = parts.next()?;
        }
        parts.next().is_none().then_some(Self { values })
    }

    /// The value of header `name` if the summary carries that header
    /// (`Some(None)`: it carries it and the request had none), `None` if it
    /// does not carry it.
    pub fn field(&self, name: &str) -> Option<Option<&'a str>> {
        let i = headers::REQUEST_SUMMARY_FIELDS.iter().position(|f| *f == name)?;
        Some(Some(self.values[i]).filter(|v| !v.is_empty()))
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

    /// The value Envoy's `header_mutation` builds from `pairs` (first value
    /// of each field, empty where absent).
    fn summary_of(pairs: &[(&str, &str)]) -> String {
        headers::REQUEST_SUMMARY_FIELDS
            .iter()
            .map(|f| pairs.iter().find(|(k, _)| k == f).map_or("", |(_, v)| *v))
            .collect::<Vec<_>>()
            .join("|")
    }

    fn canary_config() -> FilterConfig {
        let mut config = FilterConfig::new("m", "eu-west", &[("eu-west", "eu")]);
        config.trust_caller_region_header = true;
        config.callers.insert("billing".into(), Default::default());
        let canary = crate::config::CanaryConfig {
            stable: "v1".into(),
            canary: "v2".into(),
            weight: 10.0,
            sticky: Some(StickyKey::Header("x-user".into())),
            allow_override: true,
            ..Default::default()
        };
        config.models.insert("mlp".into(), crate::config::ModelPolicy { canary: Some(canary), ..Default::default() });
        config
    }

    #[test]
    fn the_summary_replaces_the_headers_it_carries_with_one_read() {
        let mut pairs = vec![
            ("x-meridian-model", "mlp"),
            ("x-meridian-residency", "eu"),
            ("x-meridian-caller", "billing"),
            ("x-meridian-caller-region", "us-east"),
            ("x-meridian-version", "v2"),
            ("grpc-timeout", "250m"),
            ("x-user", "u-17"),
        ];
        let mut config = canary_config();
        let individually =
            RequestHeaders::read(&config, |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
        let summary = summary_of(&pairs);
        assert_eq!(summary, "mlp|eu|billing|us-east|v2|250m");
        pairs.push((headers::REQUEST_SUMMARY, &summary));
        config.request_summary = true;
        let mut asked = Vec::new();
        let folded = RequestHeaders::read(&config, |name| {
            asked.push(name.to_string());
            pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        });
        assert_eq!(folded.attrs(), individually.attrs());
        assert_eq!((folded.summary(), individually.summary()), (SummaryRead::Used, SummaryRead::NotAsked));
        assert_eq!(folded.attrs().sticky_key, Some("u-17"));
        assert_eq!(asked, ["x-meridian-request", "x-user"], "one read for the summary, one for the sticky header");
    }

    #[test]
    fn an_ambiguous_missing_or_unasked_summary_is_not_used() {
        // A client's own `|` in a value: seven fields, not six.
        let pairs =
            [("x-meridian-model", "mlp|eu"), ("x-meridian-residency", "us"), ("x-meridian-request", "mlp|eu|||||")];
        let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let mut config = FilterConfig::new("m", "eu-west", &[("eu-west", "eu")]);
        config.request_summary = true;
        let read = RequestHeaders::read(&config, get);
        assert_eq!((read.attrs().model, read.attrs().residency), (Some("mlp|eu"), Some("us")));
        assert_eq!(read.summary(), SummaryRead::Ambiguous);
        // Off (nothing builds it): a client's summary is never read.
        config.request_summary = false;
        let forged = [("x-meridian-request", "mlp|us|||||"), ("x-meridian-model", "mlp")];
        let mut asked = Vec::new();
        let read = RequestHeaders::read(&config, |name| {
            asked.push(name.to_string());
            forged.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        });
        assert_eq!((read.attrs().model, read.attrs().residency), (Some("mlp"), None));
        assert!(!asked.iter().any(|n| n == "x-meridian-request"));
        assert_eq!(read.summary(), SummaryRead::NotAsked);
        // On, but missing (nothing built it): header by header.
        config.request_summary = true;
        let read = RequestHeaders::read(&config, |name| (name == "x-meridian-model").then(|| "mlp".to_string()));
        assert_eq!(read.attrs().model, Some("mlp"));
        assert_eq!(read.summary(), SummaryRead::Missing);
        assert_eq!(read.summary().fallback_counter(), Some("meridian.request_summary.missing"));
        assert_eq!(RequestSummary::parse("a|b|c|d|e"), None, "five fields");
        assert_eq!(RequestSummary::parse("a|b|c|d|e|f|g"), None, "seven fields");
        assert_eq!(RequestSummary::parse("|||||").and_then(|s| s.field("x-meridian-model")), Some(None));
        assert_eq!(RequestSummary::parse("|||||").and_then(|s| s.field("x-user")), None, "not carried");
    }

    proptest::proptest! {
        /// Whatever a client sends — `|` in values, empty values, missing
        /// headers — the attributes read through the summary Envoy builds
        /// are those read header by header.
        #[test]
        fn reading_through_the_summary_never_changes_the_attributes(
            values in proptest::collection::vec(proptest::option::of("[a-z|0-9mSu-]{0,6}"), 7),
            canary_model in proptest::bool::ANY,
        ) {
            let names = [
                "x-meridian-model", "x-meridian-residency", "x-meridian-caller",
                "x-meridian-caller-region", "x-meridian-version", "grpc-timeout", "x-user",
            ];
            let mut pairs: Vec<(&str, &str)> = names
                .iter()
                .zip(&values)
                .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
                .collect();
            let mut config = canary_config();
            if canary_model {
                // Some requests for the canary model, whose sticky header and override count.
                pairs.retain(|(k, _)| *k != "x-meridian-model");
                pairs.push(("x-meridian-model", "mlp"));
            }
            let individually = RequestHeaders::read(&config, |name| {
                pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
            });
            let summary = summary_of(&pairs);
            pairs.push((headers::REQUEST_SUMMARY, &summary));
            config.request_summary = true;
            let folded = RequestHeaders::read(&config, |name| {
                pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
            });
            proptest::prop_assert_eq!(folded.attrs(), individually.attrs());
            // Only a `|` in a carried header (not x-user) makes it ambiguous.
            let carried_bar = pairs.iter().any(|(k, v)| headers::REQUEST_SUMMARY_FIELDS.contains(k) && v.contains('|'));
            let expected = if carried_bar { SummaryRead::Ambiguous } else { SummaryRead::Used };
            proptest::prop_assert_eq!(folded.summary(), expected);
        }
    }
}

//! The filter's plugin configuration (JSON, as Envoy hands it to the VM):
//! parsed and validated, and when accepted, a planner built from it decides
//! a request for each of its models.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_filters_core::config::FilterConfig;
use meridian_filters_core::decision::Planner;
use meridian_filters_core::request::RequestAttrs;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = FilterConfig::from_json(data) else { return };
    let models: Vec<String> = config.models.keys().cloned().collect();
    let callers: Vec<String> = config.callers.keys().cloned().collect();
    let mut planner = Planner::new(config, "fuzz".into());
    for model in models.iter().map(String::as_str).chain([None, Some("unknown")].into_iter().flatten()) {
        let attrs = RequestAttrs {
            model: Some(model),
            caller: callers.first().map(String::as_str),
            deadline_ms: Some(1000),
            ..Default::default()
        };
        let _ = planner.decide(&attrs, 1_000, &mut |_, _| true);
    }
});

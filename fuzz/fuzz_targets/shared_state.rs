//! The shared state every worker reads from Envoy's shared data: any bytes
//! decode (unreadable ones start afresh), re-encode, and a planner that
//! takes the state as its snapshot decides requests without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_filters_core::config::FilterConfig;
use meridian_filters_core::decision::Planner;
use meridian_filters_core::request::RequestAttrs;
use meridian_filters_core::state::MeshState;

fuzz_target!(|data: &[u8]| {
    let state = MeshState::decode(data);
    let again = MeshState::decode(&state.encode());
    let config = FilterConfig::new("fuzz", "a", &[("a", "eu"), ("b", "eu"), ("c", "us")]);
    let mut planner = Planner::new(config, "fuzz".into());
    planner.refresh(again);
    for residency in [None, Some("eu"), Some("us")] {
        let attrs = RequestAttrs { model: Some("m"), residency, ..Default::default() };
        let _ = planner.decide(&attrs, 5_000, &mut |_, _| true);
        let _ = planner.gauges(5_000);
    }
});

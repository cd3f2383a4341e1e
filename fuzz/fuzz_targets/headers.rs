//! Header values the filter parses: `grpc-timeout` and the caller-side
//! route's `x-meridian-outcome` summary.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_filters_core::decision::Completion;
use meridian_filters_core::request::parse_grpc_timeout;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_grpc_timeout(text);
    let _ = Completion::from_outcome(text);
});

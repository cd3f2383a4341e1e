//! A model's Triton `config.pbtxt`, as the sidecar reads it from its
//! repository (the colon insertion, the text-format parser, the mapping).

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_sidecar::repository::pbtxt;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = pbtxt::parse(text, "mlp");
    }
});

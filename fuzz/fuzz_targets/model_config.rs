//! A model's `config.yaml`, as the sidecar reads it from its repository.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_sidecar::repository::model_config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ModelConfig::parse(text);
    }
});

//! The `MeshPolicy` YAML as `meridianctl validate` reads it: parsed,
//! validated, and when accepted, the filter configuration derived for its
//! caller proxy's region.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_mesh_config::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::parse(text) {
        let _ = policy.filter_config(policy.caller_region());
    }
});

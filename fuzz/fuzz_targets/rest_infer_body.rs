//! A KServe v2 REST inference body (JSON header and binary tensor data),
//! as the sidecar's REST listener reads it. The first byte picks whether an
//! `Inference-Header-Content-Length` is sent and how long it says the JSON is.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_sidecar::rest::body;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let header = (first != 0).then(|| (usize::from(first) % (rest.len() + 2)).to_string());
    let _ = body::decode(rest, header.as_deref(), "mlp", "");
});

//! The active health check: `grpc.health.v1.Health/Check` for the server
//! as a whole (service ""), which the adapter sends with
//! `dispatch_http_call` to each region's cluster, and how its answer reads.

/// The request's headers (HTTP/2, gRPC).
pub const HEADERS: [(&str, &str); 5] = [
    (":method", "POST"),
    (":path", "/grpc.health.v1.Health/Check"),
    (":authority", "meridian-health"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
];

/// One gRPC message: uncompressed, 0 bytes: `HealthCheckRequest { service: "" }`.
pub const BODY: [u8; 5] = [0, 0, 0, 0, 0];

/// Whether the answer says SERVING: HTTP 200, `grpc-status: 0` (in the
/// headers or the trailers), and a `HealthCheckResponse` whose field 1
/// (`status`, varint) is 1.
pub fn passed(headers: &[(String, String)], trailers: &[(String, String)], body: Option<&[u8]>) -> bool {
    let find = |pairs: &[(String, String)], name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if find(headers, ":status").as_deref() != Some("200") {
        return false;
    }
    let grpc_status = find(headers, "grpc-status").or_else(|| find(trailers, "grpc-status"));
    if grpc_status.as_deref() != Some("0") {
        return false;
    }
    // 5-byte prefix (compressed flag, big-endian length), then the message.
    matches!(body, Some([0, _, _, _, _, message @ ..]) if message == [0x08, 0x01])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x01];
    const NOT_SERVING: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x02];

    #[test]
    fn serving_with_the_status_in_trailers_or_headers() {
        let ok = pairs(&[(":status", "200"), ("content-type", "application/grpc")]);
        assert!(passed(&ok, &pairs(&[("grpc-status", "0")]), Some(&SERVING)));
        let trailers_only = pairs(&[(":status", "200"), ("grpc-status", "0")]);
        assert!(passed(&trailers_only, &[], Some(&SERVING)));
    }

    #[test]
    fn anything_else_fails() {
        let ok = pairs(&[(":status", "200")]);
        let status_ok = pairs(&[("grpc-status", "0")]);
        assert!(!passed(&ok, &status_ok, Some(&NOT_SERVING)), "NOT_SERVING (draining)");
        assert!(!passed(&ok, &status_ok, Some(&[0, 0, 0, 0, 0])), "UNKNOWN (empty message)");
        assert!(!passed(&ok, &pairs(&[("grpc-status", "14")]), Some(&SERVING)), "UNAVAILABLE");
        assert!(!passed(&ok, &[], Some(&SERVING)), "no gRPC status at all");
        assert!(!passed(&pairs(&[(":status", "503")]), &status_ok, Some(&SERVING)), "HTTP 503");
        assert!(!passed(&[], &[], None), "timed out: no answer");
        assert!(!passed(&ok, &status_ok, Some(&[1, 0, 0, 0, 2, 0x08, 0x01])), "compressed: not ours");
    }
}

//! The active health check: `grpc.health.v1.Health/Check` for the server
//! as a whole (service ""), sent with `dispatch_http_call` to a region's
//! cluster.

/// The request's headers (HTTP/2, gRPC).
pub(crate) const HEADERS: [(&str, &str); 5] = [
    (":method", "POST"),
    (":path", "/grpc.health.v1.Health/Check"),
    (":authority", "meridian-health"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
];

/// One gRPC message: uncompressed, 0 bytes: `HealthCheckRequest { service: "" }`.
pub(crate) const BODY: [u8; 5] = [0, 0, 0, 0, 0];

/// Whether the answer says SERVING: HTTP 200, `grpc-status: 0` (in the
/// headers or the trailers), and a `HealthCheckResponse` whose field 1
/// (`status`, varint) is 1.
pub(crate) fn passed(headers: &[(String, String)], trailers: &[(String, String)], body: Option<&[u8]>) -> bool {
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

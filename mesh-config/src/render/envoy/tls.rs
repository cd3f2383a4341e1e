//! Mutual TLS between the proxies and to the model servers: Envoy's TLS
//! transport sockets with the workload's certificate and the CA bundle
//! from files (SDS through `path_config_source`, each folder watched, so a
//! rotated certificate is taken without a restart), and the peer's SPIFFE
//! ID checked against its URI SAN.

use meridian_pki::{WorkloadFiles, CA_SECRET, CERT_SECRET};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What a proxy presents and expects on one hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopTls {
    /// The proxy's own certificate folder ([`WorkloadFiles`] layout).
    pub dir: PathBuf,
    /// The peer's SPIFFE ID: exact, or a prefix when it ends in `/`
    /// (`spiffe://cluster.local/`: any identity of the trust domain).
    pub peer: String,
}

fn sds(name: &str, file: PathBuf, dir: &std::path::Path) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": file.display().to_string(),
                "watched_directory": { "path": dir.display().to_string() }
            }
        }
    })
}

fn common_tls_context(hop: &HopTls) -> Value {
    let files = WorkloadFiles::new(&hop.dir);
    let matcher = if hop.peer.ends_with('/') { json!({ "prefix": hop.peer }) } else { json!({ "exact": hop.peer }) };
    json!({
        "alpn_protocols": ["h2"],
        "tls_certificate_sds_secret_configs": [sds(CERT_SECRET, files.sds_cert(), &hop.dir)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{ "san_type": "URI", "matcher": matcher }]
            },
            "validation_context_sds_secret_config": sds(CA_SECRET, files.sds_ca(), &hop.dir)
        }
    })
}

/// A cluster's transport socket: TLS to a peer whose certificate carries
/// `hop.peer`, presenting the proxy's own certificate.
pub(crate) fn upstream(hop: &HopTls) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common_tls_context(hop)
        }
    })
}

/// A listener's transport socket: TLS that requires a client certificate
/// chaining to the bundle and carrying `hop.peer`.
pub(crate) fn downstream(hop: &HopTls) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": common_tls_context(hop)
        }
    })
}

//! `meridianctl certs` and mutual TLS in what the policy renders: every
//! workload's certificate carries its SPIFFE ID; re-running rotates them
//! from the same CA; a new CA is trusted beside the old one; the Envoy
//! configuration puts TLS on each hop with the right peer identity, the xDS
//! server encodes it, and refuses a mesh whose certificates are missing.

use meridian_mesh_config::certs::{self, MeshCerts, Workload};
use meridian_mesh_config::policy::Policy;
use meridian_mesh_config::render::envoy::{
    caller_clusters, caller_from_policy, caller_mtls, gateway_clusters, gateway_from_policy, gateway_listener,
    gateway_mtls,
};
use meridian_mesh_config::xds::codec::Codec;
use meridian_mesh_config::xds::snapshot::Snapshot;
use std::path::{Path, PathBuf};

fn example() -> Policy {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/policy.yaml")).expect("example");
    Policy::parse(&text).expect("valid example")
}

/// (URI SANs, IP SANs, serial) of a PEM certificate.
fn inspect(path: &Path) -> (Vec<String>, Vec<String>, String) {
    let pem = std::fs::read(path).expect("cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
    let cert = pem.parse_x509().expect("x509");
    let mut uris = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
                }
                _ => {}
            }
        }
    }
    (uris, ips, cert.raw_serial_as_string())
}

#[test]
fn every_workload_gets_its_spiffe_certificate_and_a_rerun_rotates_them() {
    let policy = example();
    let dir = tempfile::tempdir().expect("tmp");
    let first = certs::issue(&policy, dir.path(), 30, false).expect("issue");
    // The caller proxy, the prober, a gateway and a sidecar folder per region, each caller.
    assert_eq!(first.len(), 2 + 2 * 3 + 3);
    let layout = MeshCerts::new(dir.path());
    for issued in &first {
        let (uris, _, serial) = inspect(&layout.files(&issued.workload).cert());
        assert_eq!(uris, std::slice::from_ref(&issued.identity), "{}", issued.workload);
        assert_eq!(serial, issued.serial);
    }
    let gateway = certs::identity(&policy, &Workload::Gateway("eu-west".into()));
    assert_eq!(gateway, "spiffe://cluster.local/ns/meridian/sa/meridian-gateway-eu-west");
    let web = certs::identity(&policy, &Workload::Caller("web-eu".into()));
    assert_eq!(web, "spiffe://cluster.local/ns/web/sa/web-eu", "a caller keeps the policy's identity");
    let (_, ips, _) = inspect(&layout.files(&Workload::Sidecar("eu-west".into())).cert());
    assert!(ips.contains(&"127.0.1.10".to_string()) && ips.contains(&"127.0.1.30".to_string()), "{ips:?}");
    layout.check(&policy).expect("complete");

    // Again: the same CA, new certificates.
    let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
    let second = certs::issue(&policy, dir.path(), 30, false).expect("rotate");
    assert_eq!(std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"), ca);
    assert!(first.iter().zip(&second).all(|(a, b)| a.serial != b.serial));

    // A new CA: every bundle holds it and the old one.
    certs::issue(&policy, dir.path(), 30, true).expect("new CA");
    let bundle = std::fs::read_to_string(layout.files(&Workload::CallerProxy).ca()).expect("bundle");
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(bundle.ends_with(&ca), "the old CA stays trusted");

    // A missing folder is named.
    std::fs::remove_dir_all(layout.files(&Workload::Gateway("us-east".into())).dir).expect("rm");
    let err = layout.check(&policy).expect_err("incomplete");
    assert!(err.contains("gateway-us-east/cert.pem") && err.contains("meridianctl certs"), "{err}");
}

#[test]
fn each_hop_checks_its_peer_by_spiffe_id() {
    let policy = example();
    let dir = tempfile::tempdir().expect("tmp");
    certs::issue(&policy, dir.path(), 30, false).expect("issue");
    let layout = MeshCerts::new(dir.path());

    let mut caller = caller_from_policy(&policy, "eu-west", PathBuf::from("/x.wasm")).expect("caller");
    caller_mtls(&policy, &layout, &mut caller);
    let clusters = caller_clusters(&caller);
    let us_east = clusters.iter().find(|c| c["name"] == "meridian~us-east").expect("us-east cluster");
    let tls = &us_east["transport_socket"]["typed_config"];
    assert_eq!(tls["@type"], "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    let context = &tls["common_tls_context"];
    assert_eq!(
        context["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"][0]
            ["matcher"]["exact"],
        "spiffe://cluster.local/ns/meridian/sa/meridian-gateway-us-east"
    );
    let sds = &context["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"];
    let own = layout.files(&Workload::CallerProxy);
    assert_eq!(sds["path"], own.sds_cert().display().to_string());
    assert_eq!(sds["watched_directory"]["path"], own.dir.display().to_string());

    let mut gateway = gateway_from_policy(&policy, "eu-west").expect("gateway");
    gateway_mtls(&policy, &layout, &mut gateway);
    let listener = gateway_listener(&gateway, true);
    let downstream = &listener["filter_chains"][0]["transport_socket"]["typed_config"];
    assert_eq!(downstream["require_client_certificate"], true);
    let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["forward_client_cert_details"], "APPEND_FORWARD");
    assert_eq!(hcm["set_current_client_cert_details"]["uri"], true);
    for cluster in gateway_clusters(&gateway) {
        let san = &cluster["transport_socket"]["typed_config"]["common_tls_context"]["combined_validation_context"]
            ["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"];
        assert_eq!(san, "spiffe://cluster.local/ns/meridian/sa/meridian-sidecar-eu-west");
    }
}

#[test]
fn the_xds_snapshot_encodes_tls_and_refuses_missing_certificates() {
    let policy = example();
    let dir = tempfile::tempdir().expect("tmp");
    certs::issue(&policy, dir.path(), 30, false).expect("issue");
    let layout = MeshCerts::new(dir.path());
    let codec = Codec::new().expect("codec");
    let snapshot = Snapshot::build(&policy, Path::new("/x.wasm"), Some(&layout), &codec, None, 1).expect("build");
    assert!(snapshot.generation == 1);
    std::fs::remove_file(layout.files(&Workload::Sidecar("eu-central".into())).key()).expect("rm");
    let errors = Snapshot::build(&policy, Path::new("/x.wasm"), Some(&layout), &codec, None, 2).expect_err("missing");
    assert!(errors[0].contains("sidecar-eu-central/key.pem"), "{errors:?}");
}

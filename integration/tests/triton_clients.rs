//! Triton's own tools, unchanged, against the real sidecar process:
//! `tritonclient` (Python, gRPC and HTTP) and `perf_analyzer` (both
//! protocols).

use meridian_integration::sidecar::{generate_models, Sidecar};
use meridian_integration::{tools, workspace_root};

fn sidecar() -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "16,32,4", "--seed", "7", "--max-batch-size", "8"]).expect("models");
    let sidecar = Sidecar::start("127.0.0.1", dir.path(), &["--repository-poll-secs", "0"]).expect("sidecar");
    (sidecar, dir)
}

/// The MLP's settings as a Triton `config.pbtxt` (what a Triton repository
/// brings), read back by the HTTP check.
const TRITON_MLP: &str = r#"name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_queue_policy { max_queue_size: 64 }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
"#;

/// A sidecar whose `mlp` is configured by a Triton config.pbtxt.
fn triton_repository_sidecar() -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "16,32,4", "--seed", "7", "--max-batch-size", "8"]).expect("models");
    std::fs::remove_file(dir.path().join("mlp/config.yaml")).expect("config.yaml");
    std::fs::write(dir.path().join("mlp/config.pbtxt"), TRITON_MLP).expect("config.pbtxt");
    let sidecar = Sidecar::start("127.0.0.1", dir.path(), &["--repository-poll-secs", "0"]).expect("sidecar");
    (sidecar, dir)
}

#[test]
fn tritonclient_http_works_unchanged_on_a_triton_repository() {
    let (sidecar, _dir) = triton_repository_sidecar();
    let out = tools::python()
        .expect("python clients")
        .arg(workspace_root().join("integration/python/tritonclient_http_check.py"))
        .env("MERIDIAN_HTTP", sidecar.http().to_string())
        .env("MERIDIAN_MLP_DIMS", "16,32,4")
        .env("MERIDIAN_SEED", "7")
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient.http checks failed:\n{report}\n{}", sidecar.log());
    assert!(report.contains("Ran 9 tests") && report.contains("OK"), "{report}");
}

#[test]
fn perf_analyzer_runs_unchanged_over_http() {
    let (sidecar, _dir) = triton_repository_sidecar();
    perf_analyzer(&sidecar, "http", &sidecar.http().to_string());
}

/// Runs perf_analyzer briefly on `mlp` and returns its report, checked for
/// a throughput above zero and the server-side statistics it read.
fn perf_analyzer(sidecar: &Sidecar, protocol: &str, url: &str) -> String {
    let out = tools::perf_analyzer()
        .expect("perf_analyzer")
        .args(["-m", "mlp", "-i", protocol, "-u", url])
        .args(["--concurrency-range", "4", "-p", "500", "-r", "6", "-s", "50"])
        .output()
        .expect("perf_analyzer runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "perf_analyzer -i {protocol} failed:\n{report}\n{}", sidecar.log());
    let throughput: f64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Throughput: "))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no throughput in:\n{report}"));
    assert!(throughput > 0.0, "{report}");
    // It read the server-side statistics (ModelStatistics) as well.
    assert!(report.contains("Server:") && report.contains("Inference count"), "{report}");
    report
}

#[test]
fn tritonclient_works_unchanged() {
    let (sidecar, _dir) = sidecar();
    let out = tools::python()
        .expect("python clients")
        .arg(workspace_root().join("integration/python/tritonclient_check.py"))
        .env("MERIDIAN_GRPC", sidecar.grpc().to_string())
        .env("MERIDIAN_MLP_DIMS", "16,32,4")
        .env("MERIDIAN_SEED", "7")
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient checks failed:\n{report}\n{}", sidecar.log());
    assert!(report.contains("Ran 6 tests") && report.contains("OK"), "{report}");
}

#[test]
fn perf_analyzer_runs_unchanged() {
    let (sidecar, _dir) = sidecar();
    perf_analyzer(&sidecar, "grpc", &sidecar.grpc().to_string());
}

#[test]
fn tritonclient_works_unchanged_over_mutual_tls() {
    use meridian_pki::{Authority, Validity, Workload, WorkloadFiles};
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = Authority::generate("test CA", Validity::days(1)).expect("ca");
    let server = WorkloadFiles::new(certs.path().join("server"));
    let client = WorkloadFiles::new(certs.path().join("client"));
    for (files, id) in [(&server, "spiffe://td/ns/models/sa/sidecar"), (&client, "spiffe://td/ns/app/sa/triton")] {
        files.write(&ca.issue(&Workload::spiffe(id).expect("id")).expect("issue"), ca.cert_pem()).expect("write");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "16,32,4", "--seed", "7", "--max-batch-size", "8"]).expect("models");
    // Only the Triton client's identity may call the model.
    let config = dir.path().join("mlp/config.yaml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("allowed_identities: [spiffe://td/ns/app/sa/triton]\n");
    std::fs::write(&config, text).expect("config");
    let path = |p: std::path::PathBuf| p.display().to_string();
    let (cert, key, ca_file) = (path(server.cert()), path(server.key()), path(server.ca()));
    let sidecar = Sidecar::start(
        "127.0.0.1",
        dir.path(),
        &["--repository-poll-secs", "0", "--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca_file],
    )
    .expect("sidecar");
    let out = tools::python()
        .expect("python clients")
        .arg(workspace_root().join("integration/python/tritonclient_check.py"))
        // The certificate names localhost (and 127.0.0.1); gRPC checks it.
        .env("MERIDIAN_GRPC", format!("localhost:{}", sidecar.grpc().port()))
        .env("MERIDIAN_MLP_DIMS", "16,32,4")
        .env("MERIDIAN_SEED", "7")
        .env("MERIDIAN_TLS_DIR", client.dir.display().to_string())
        .output()
        .expect("python runs");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient checks over mTLS failed:\n{report}\n{}", sidecar.log());
    assert!(report.contains("Ran 6 tests") && report.contains("OK"), "{report}");
}

//! `--device` on the real binary, on a machine without a GPU (CI): `auto`
//! serves on the CPU and says why once at start; `cuda` refuses to start and
//! names what is missing.

use meridian_integration::sidecar::{binary, generate_models, Sidecar};
use std::process::Command;

#[test]
fn auto_serves_on_the_cpu_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "8,4"]).expect("models");
    let sidecar = Sidecar::start("127.0.0.1", dir.path(), &["--device", "auto"]).expect("sidecar");
    let log = sidecar.log();
    let line = log.lines().find(|l| l.contains("device auto:")).unwrap_or_else(|| panic!("no device line in:\n{log}"));
    if line.contains("models run on CUDA") {
        return; // This machine has a usable GPU.
    }
    assert!(line.contains("models run on the CPU, as no GPU is usable") && line.contains("libcuda.so"), "{line}");
    assert_eq!(log.matches("device auto:").count(), 1, "said once:\n{log}");
}

#[test]
fn cuda_without_a_gpu_fails_at_start_naming_what_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate_models(dir.path(), &["--mlp-dims", "8,4"]).expect("models");
    let out = Command::new(binary().expect("binary"))
        .arg("--model-repository")
        .arg(dir.path())
        .args(["--device", "cuda:1", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        panic!("--device cuda:1 started: {stderr}");
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--device cuda:1: no usable GPU") && stderr.contains("libcuda.so"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it must not have started listening");
}

//! `meridian-prober` as a user runs it: bad flags and files are refused
//! with the flag or file named; against a mesh whose gateway does not
//! answer, every check counts as an error and the error gauge is NaN
//! (never a stale agreement).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROBER: &str = env!("CARGO_BIN_EXE_meridian-prober");

const POLICY: &str = r#"
apiVersion: meridian.dev/v1alpha1
kind: MeshPolicy
metadata: {name: t}
regions:
  - name: a
    zone: eu
    gateway: {address: "127.0.0.1:1"}
    endpoints: [{address: "127.0.0.1:2"}]
models:
  mlp: {}
callerProxy: {region: a, listen: "127.0.0.1:3"}
"#;

const REFERENCE: &str = r#"{"model":"mlp","version":"1","tolerance":0.0001,
  "inputs":[{"name":"input","datatype":"FP32","shape":[1,2],"data":[0.5,-1.0]}],
  "outputs":[{"name":"output","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]}]}"#;

fn refused(args: &[&str]) -> String {
    let out = Command::new(PROBER).args(args).output().expect("runs");
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_flags_and_files_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write");
    let p = policy.to_str().expect("utf-8");
    assert!(refused(&["-f", p, "--reference", "v1"]).contains("--reference v1: expected LABEL=FILE"));
    assert!(refused(&["-f", p, "--reference", "v1=/nonexistent.json"]).contains("reading /nonexistent.json"));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"model":"mlp"}"#).expect("write");
    let spec = format!("v1={}", bad.display());
    assert!(refused(&["-f", p, "--reference", &spec]).contains("missing field"));
    let good = dir.path().join("good.json");
    std::fs::write(&good, REFERENCE).expect("write");
    let spec = format!("v1={}", good.display());
    assert!(refused(&["-f", p, "--reference", &spec, "--interval-secs", "0"]).contains("--interval-secs"));
    assert!(refused(&["-f", p, "--reference", &spec, "--tls-cert", "x.pem"]).contains("--tls-key"));
}

fn metrics(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read");
    body
}

#[test]
fn an_unreachable_gateway_is_an_error_never_a_stale_agreement() {
    let dir = tempfile::tempdir().expect("tmp");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write");
    let reference = dir.path().join("reference.json");
    std::fs::write(&reference, REFERENCE).expect("write");
    let mut child = Command::new(PROBER)
        .arg("-f")
        .arg(&policy)
        .arg("--reference")
        .arg(format!("v1={}", reference.display()))
        .args(["--interval-secs", "0.2", "--timeout-ms", "500", "--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let addr = line.trim().strip_prefix("metrics=").expect("metrics= line").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = metrics(&addr);
        if text.contains(r#"meridian_probe_drift_checks_total{model="mlp",region="a",result="error",version="v1"}"#) {
            break text;
        }
        assert!(Instant::now() < deadline, "no failed check counted:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains(r#"meridian_probe_max_abs_error{model="mlp",region="a",version="v1"} NaN"#), "{text}");
    assert!(text.contains(r#"meridian_probe_drift_tolerance{model="mlp",version="v1"} 0.0001"#), "{text}");
    assert!(text.contains(r#"meridian_probe_synthetic_total{region="a",result="error",served_region="none"}"#));
    assert!(!text.contains(r#"result="ok""#), "{text}");
}

//! `make demo`'s program: it starts the mesh, describes it in the mesh
//! file while it runs, prints the live table, and on exit stops every
//! process and removes the file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn the_demo_describes_the_running_mesh_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mesh_file = dir.path().join("mesh.json");
    let policy = meridian_integration::workspace_root().join("examples/policy.yaml");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_meridian-demo"))
        .arg("-f")
        .arg(&policy)
        .args(["--duration-secs", "4", "--plain", "--mlp-dims", "16,32,4", "--ephemeral-ports", "--mesh-file"])
        .arg(&mesh_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;

    let deadline = Instant::now() + Duration::from_secs(60);
    while !mesh_file.exists() {
        anyhow::ensure!(demo.try_wait()?.is_none(), "the demo exited before describing the mesh");
        anyhow::ensure!(Instant::now() < deadline, "no mesh file within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let description: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mesh_file)?)?;
    let admin: std::net::SocketAddr = description["caller"]["admin"].as_str().unwrap_or_default().parse()?;
    assert_eq!(meridian_integration::http::get(admin, "/ready")?.status, 200, "the described admin answers");
    let mut pids = vec![description["caller"]["pid"].as_u64().unwrap_or_default()];
    let regions = description["regions"].as_array().cloned().unwrap_or_default();
    assert_eq!(regions.len(), 3);
    for (r, block) in regions.iter().zip(1..) {
        assert_eq!(r["block"], serde_json::json!(format!("127.0.{block}.0/24")));
        assert!(r["gateway"]["listener"].as_str().unwrap_or_default().starts_with(&format!("127.0.{block}.")));
        pids.push(r["gateway"]["pid"].as_u64().unwrap_or_default());
        for s in r["sidecars"].as_array().into_iter().flatten() {
            pids.push(s["pid"].as_u64().unwrap_or_default());
        }
    }
    // The caller proxy, three gateways, three stable sidecars and three of the canary version.
    assert_eq!(pids.len(), 1 + 3 + 3 + 3);
    // The mesh's Prometheus and prober run beside it.
    let prometheus: std::net::SocketAddr = description["prometheus"].as_str().unwrap_or_default().parse()?;
    assert_eq!(meridian_integration::http::get(prometheus, "/-/ready")?.status, 200, "{description:#}");
    let prober: std::net::SocketAddr = description["prober"]["metrics"].as_str().unwrap_or_default().parse()?;
    assert_eq!(meridian_integration::http::get(prober, "/metrics")?.status, 200);
    pids.push(description["prober"]["pid"].as_u64().unwrap_or_default());
    // The regional autoscalers export their decisions.
    let autoscaler: std::net::SocketAddr = description["autoscaler"].as_str().unwrap_or_default().parse()?;
    let decisions = meridian_integration::http::get(autoscaler, "/metrics")?;
    assert_eq!(decisions.status, 200);
    assert_eq!(regions[0]["sidecars"][1]["version"], serde_json::json!("v2"));
    assert!(pids.iter().all(|p| alive(*p)), "every described process runs: {pids:?}");

    // Every hop behind the caller-side proxy runs mutual TLS: the caller
    // proxy and each gateway with calls to make handshake (Envoy's
    // `ssl.handshake` per cluster).
    assert!(description["mtls"].as_str().is_some_and(|root| !root.is_empty()), "{description:#}");
    let handshakes = |admin: std::net::SocketAddr| -> anyhow::Result<u64> {
        let stats = meridian_integration::http::get(admin, "/stats?filter=ssl.handshake$")?;
        Ok(stats.body.lines().filter_map(|l| l.rsplit_once(": ").and_then(|(_, v)| v.trim().parse::<u64>().ok())).sum())
    };
    let gateway_admin: std::net::SocketAddr = regions[0]["gateway"]["admin"].as_str().unwrap_or_default().parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while handshakes(admin)? == 0 || handshakes(gateway_admin)? == 0 {
        anyhow::ensure!(Instant::now() < deadline, "no TLS handshakes at the caller proxy and eu-west's gateway");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every Envoy of the demo takes its configuration from the xDS server,
    // and `meridianctl status` lists each in sync.
    let xds = description["xds"].as_str().unwrap_or_default().to_string();
    let meridianctl = meridian_integration::built_binary("meridianctl", "cargo build -p meridian-mesh-config")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = Command::new(&meridianctl).args(["status", "--xds", &xds, "-o", "json"]).output()?;
        anyhow::ensure!(out.status.success(), "meridianctl status: {}", String::from_utf8_lossy(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let proxies = status["proxies"].as_array().cloned().unwrap_or_default();
        if proxies.len() == 4 && proxies.iter().all(|p| p["in_sync"] == true) {
            break status;
        }
        anyhow::ensure!(Instant::now() < deadline, "not every proxy in sync: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut nodes: Vec<String> = status["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["node_id"].as_str().map(String::from))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["caller-eu-west", "gateway-eu-central", "gateway-eu-west", "gateway-us-east"]);
    let text = Command::new(&meridianctl).args(["status", "--xds", &xds]).output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.matches("SYNCED").count(), 4, "{text}");

    let output = demo.wait_with_output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "eu-west",
        "eu-central",
        "us-east",
        "p99 ms",
        "breaker",
        "drift",
        "probes ok",
        "web-eu",
        "app-us",
        "canary: mlp v2 at 20%",
        "replicas",
        "v1=1 v2=1",
        "on v2",
    ] {
        assert!(table.contains(needle), "the table shows {needle}:\n{table}");
    }
    assert!(!mesh_file.exists(), "the mesh file is removed on exit");
    assert!(pids.iter().all(|p| !alive(*p)), "every process stopped: {pids:?}");
    Ok(())
}

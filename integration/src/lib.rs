//! The local mesh harness: starts real processes (Envoy 1.40 with the built
//! Meridian `.wasm`, upstreams) on loopback addresses and stops them when
//! their handles drop, on failure too.
//!
//! Tools come from the project's bootstrap (`make bootstrap`): Envoy under
//! `.tools/envoy`, the filters from `make wasm`. A missing tool is an error
//! that says which make target provides it; tests never skip silently.

#![forbid(unsafe_code)]

pub mod autoscaler;
pub mod bench;
pub mod envoy;
pub mod http;
pub mod load;
pub mod mesh;
pub mod otlp;
pub mod prober;
pub mod prometheus;
pub mod sidecar;
pub mod tools;
pub mod upstream;
pub mod wait;

use std::path::{Path, PathBuf};

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The built filters module: `$MERIDIAN_WASM`, else the `make wasm` output.
pub fn wasm_path() -> anyhow::Result<PathBuf> {
    tool_path("MERIDIAN_WASM", "target/wasm32-wasip1/release-wasm/meridian_filters.wasm", "make wasm")
}

/// The pinned Envoy binary: `$MERIDIAN_ENVOY`, else the bootstrap's.
pub fn envoy_path() -> anyhow::Result<PathBuf> {
    tool_path("MERIDIAN_ENVOY", ".tools/envoy/envoy/_bin/envoy", "make bootstrap")
}

pub(crate) fn tool_path(var: &str, default: &str, provided_by: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| workspace_root().join(default));
    anyhow::ensure!(path.is_file(), "{} not found (set ${var} or run `{provided_by}`)", path.display());
    Ok(path)
}

/// A binary of the workspace cargo built next to the running test or tool
/// (`target/<profile>/<name>`); `build` says how to build it when missing.
pub fn built_binary(name: &str, build: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().ok_or_else(|| anyhow::anyhow!("executable folder"))?;
    // Test binaries live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or_else(|| anyhow::anyhow!("profile folder"))?;
    }
    let path = dir.join(name);
    anyhow::ensure!(path.is_file(), "{} not found (build it: {build})", path.display());
    Ok(path)
}

/// Polls `GET path` on `addr` (every 20 ms, for at most `within`) until it
/// answers 200; fails early, with the process's log, if `child` exits.
pub(crate) fn wait_for_ok(
    child: &mut std::process::Child,
    addr: std::net::SocketAddr,
    path: &str,
    within: std::time::Duration,
    what: &str,
    log: &Path,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + within;
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{what} exited with {status} while starting:\n{}", log());
        }
        if matches!(http::get(addr, path), Ok(r) if r.status == 200) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{what} not ready ({path}) within {within:?}:\n{}", log());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

//! The local mesh harness: starts real processes (Envoy 1.40 with the built
//! Meridian `.wasm`, upstreams) on loopback addresses and stops them when
//! their handles drop, on failure too.
//!
//! Tools come from the project's bootstrap (`make bootstrap`): Envoy under
//! `.tools/envoy`, the filters from `make wasm`. A missing tool is an error
//! that says which make target provides it; tests never skip silently.

#![forbid(unsafe_code)]

pub mod envoy;
pub mod http;
pub mod sidecar;
pub mod tools;
pub mod upstream;

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

fn tool_path(var: &str, default: &str, provided_by: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| workspace_root().join(default));
    anyhow::ensure!(path.is_file(), "{} not found (set ${var} or run `{provided_by}`)", path.display());
    Ok(path)
}

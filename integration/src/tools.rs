//! The Python test clients the bootstrap installs: Triton's `tritonclient`
//! and `perf_analyzer`.

use crate::workspace_root;
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

/// The folder the bootstrap installed the Python clients into.
pub fn python_site() -> Result<PathBuf> {
    let site = workspace_root().join(".tools/python");
    anyhow::ensure!(
        site.join("tritonclient").is_dir(),
        "{} has no tritonclient (run `make bootstrap`)",
        site.display()
    );
    Ok(site)
}

/// `python3` with the bootstrap's packages on `PYTHONPATH`.
pub fn python() -> Result<Command> {
    let mut cmd = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.env("PYTHONPATH", python_site()?).env("PYTHONUNBUFFERED", "1");
    Ok(cmd)
}

/// Triton's `perf_analyzer` from the tritonclient wheel, with the libraries
/// it links (libb64 from Debian, libcudart from PyPI) on `LD_LIBRARY_PATH`.
pub fn perf_analyzer() -> Result<Command> {
    let site = python_site()?;
    let bin = site.join("bin/perf_analyzer");
    anyhow::ensure!(bin.is_file(), "{} missing (run `make bootstrap`)", bin.display());
    let libs = [workspace_root().join(".tools/libb64/usr/lib/x86_64-linux-gnu"), site.join("nvidia/cuda_runtime/lib")];
    let mut cmd = Command::new(bin);
    cmd.env("LD_LIBRARY_PATH", std::env::join_paths(libs)?);
    Ok(cmd)
}

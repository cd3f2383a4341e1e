//! Spawning the real `meridian-sidecar` binary.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// The sidecar binary: `$MERIDIAN_SIDECAR`, else the one cargo built next
/// to the running test or tool (`target/<profile>/meridian-sidecar`).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MERIDIAN_SIDECAR") {
        return Ok(PathBuf::from(path));
    }
    crate::built_binary("meridian-sidecar", "cargo build -p meridian-sidecar")
}

/// Writes the seeded demo repository (`mlp`, `echo_types`) with
/// `meridian-sidecar generate-models`.
pub fn generate_models(out: &Path, extra: &[&str]) -> Result<()> {
    let status = Command::new(binary()?)
        .arg("generate-models")
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .context("running meridian-sidecar generate-models")?;
    anyhow::ensure!(status.success(), "generate-models failed: {status}");
    Ok(())
}

/// Writes the reference set of the model version in `version_dir` to `out`
/// with `meridian-sidecar reference`.
pub fn make_reference(version_dir: &Path, out: &Path) -> Result<()> {
    let status = Command::new(binary()?)
        .arg("reference")
        .arg("--version-dir")
        .arg(version_dir)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .context("running meridian-sidecar reference")?;
    anyhow::ensure!(
        status.success(),
        "meridian-sidecar reference --version-dir {} failed: {status}",
        version_dir.display()
    );
    Ok(())
}

/// The host part of `host:port` (IPv6 in brackets stays bracketed).
fn host(listen: &str) -> &str {
    listen.rsplit_once(':').map_or(listen, |(h, _)| h)
}

/// A running sidecar process; killed when dropped.
#[derive(Debug)]
pub struct Sidecar {
    child: Child,
    grpc: SocketAddr,
    metrics: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the sidecar on `ip` (ports chosen by the OS) over
    /// `repository`, with extra flags, and waits until ServerReady.
    pub fn start(ip: &str, repository: &Path, extra: &[&str]) -> Result<Self> {
        Self::start_at(&format!("{ip}:0"), &format!("{ip}:0"), repository, extra)
    }

    /// Starts the sidecar on the given gRPC and metrics addresses (say, the
    /// ones a killed sidecar had) and waits until ServerReady.
    pub fn start_at(grpc_listen: &str, metrics_listen: &str, repository: &Path, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("sidecar.log");
        let mut child = Command::new(binary()?)
            .arg("--model-repository")
            .arg(repository)
            .args(["--grpc-listen", grpc_listen, "--metrics-listen", metrics_listen])
            // REST on the gRPC address's host, any port (the default 8000
            // would collide between sidecars).
            .args(["--http-listen", &format!("{}:0", host(grpc_listen))])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning meridian-sidecar")?;
        let stdout = child.stdout.take().context("sidecar stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = |key: &str| -> Result<SocketAddr> {
            let value = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("no {key} in {line:?}"))?;
            Ok(value.parse()?)
        };
        let (grpc, metrics, http) = match (addr("grpc="), addr("metrics="), addr("http=")) {
            (Ok(g), Ok(m), Ok(h)) => (g, m, h),
            _ => {
                let _ = child.kill();
                bail!("sidecar did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
        };
        let mut sidecar = Sidecar { child, grpc, metrics, http, log, _dir: dir };
        sidecar.wait_ready(Duration::from_secs(60))?;
        Ok(sidecar)
    }

    /// The gRPC address.
    pub fn grpc(&self) -> SocketAddr {
        self.grpc
    }

    /// The metrics address.
    pub fn metrics(&self) -> SocketAddr {
        self.metrics
    }

    /// The KServe v2 REST address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sidecar's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time (user + system) the process has used, from /proc.
    pub fn cpu_time(&self) -> Result<Duration> {
        process_cpu_time(self.pid())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> Result<ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        Ok(self.child.wait()?)
    }

    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let log = self.log.clone();
        crate::wait_for_ok(&mut self.child, self.metrics, "/readyz", within, "meridian-sidecar", &log)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time used so far by every thread of process `pid`, to the
/// nanosecond: the sum of its threads' run time in
/// `/proc/<pid>/task/*/schedstat` (`process_cpu_time` counts 10 ms
/// ticks, too coarse for sub-second samples).
pub fn process_cpu_time_ns(pid: u32) -> Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that exited between the listing and the read is gone.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let ns = text.split_whitespace().next().context("empty schedstat")?;
        total += ns.parse::<u64>().with_context(|| format!("{}: {text}", path.display()))?;
    }
    Ok(Duration::from_nanos(total))
}

/// utime + stime of a process, from `/proc/<pid>/stat`.
pub fn process_cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
    let hz = 100; // USER_HZ on Linux
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

//! Spawning the real `meridian-prober` binary.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running prober; killed when dropped.
#[derive(Debug)]
pub struct ProberProcess {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ProberProcess {
    /// Starts `meridian-prober` on the policy file with each version
    /// label's reference set, a round every `interval`, `/metrics` on
    /// `listen` (port 0: a free one); with `tls`, the folder of its
    /// certificate (`cert.pem`, `key.pem`, `ca.pem`) for the gateways.
    pub fn start(
        policy: &Path,
        references: &BTreeMap<String, PathBuf>,
        interval: Duration,
        listen: SocketAddr,
        tls: Option<&Path>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("prober.log");
        let mut command = Command::new(crate::built_binary("meridian-prober", "cargo build -p meridian-prober")?);
        let interval = interval.as_secs_f64().to_string();
        let listen = listen.to_string();
        command.arg("--policy").arg(policy);
        command.args(["--interval-secs", &interval, "--timeout-ms", "2000", "--metrics-listen", &listen]);
        if let Some(dir) = tls {
            for (flag, file) in [("--tls-cert", "cert.pem"), ("--tls-key", "key.pem"), ("--tls-ca", "ca.pem")] {
                command.arg(flag).arg(dir.join(file));
            }
        }
        for (label, file) in references {
            command.arg("--reference").arg(format!("{label}={}", file.display()));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning meridian-prober")?;
        let stdout = child.stdout.take().context("prober stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(metrics) = line.trim().strip_prefix("metrics=").and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            bail!("meridian-prober did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        Ok(Self { child, metrics, log, _dir: dir })
    }

    /// Where `/metrics` listens.
    pub fn metrics(&self) -> SocketAddr {
        self.metrics
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its metrics now: (name, labels, value).
    pub fn samples(&self) -> Result<Vec<crate::prometheus::TextSample>> {
        Ok(crate::prometheus::parse_text(&crate::http::get(self.metrics, "/metrics")?.body))
    }
}

impl Drop for ProberProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

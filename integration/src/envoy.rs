//! Spawning the real Envoy 1.40 and finding its addresses.

use crate::http;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A running Envoy; killed when dropped.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    dir: TempDir,
}

/// Runs `envoy --mode validate` on a configuration text.
pub fn validate(config_yaml: &str) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, config_yaml)?;
    Command::new(crate::envoy_path()?)
        .args(["--mode", "validate", "--disable-hot-restart", "--log-level", "info", "-c"])
        .arg(&config)
        .output()
        .context("running envoy --mode validate")
}

impl Envoy {
    /// Starts Envoy (one worker thread) with `config_yaml` and waits until
    /// its admin endpoint reports LIVE.
    pub fn start(config_yaml: &str) -> Result<Self> {
        Self::start_with(config_yaml, 1)
    }

    /// Starts Envoy with `concurrency` worker threads.
    pub fn start_with(config_yaml: &str, concurrency: u32) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin-address");
        std::fs::write(&config, config_yaml)?;
        let log = std::fs::File::create(dir.path().join("envoy.log"))?;
        let child = Command::new(crate::envoy_path()?)
            .args(["--disable-hot-restart", "--concurrency", &concurrency.to_string(), "--log-level", "info", "-c"])
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning envoy")?;
        let mut envoy = Envoy { child, admin: SocketAddr::from(([127, 0, 0, 1], 0)), dir };
        envoy.admin = envoy.wait_for_admin(&admin_path)?;
        envoy.wait_until_live()?;
        Ok(envoy)
    }

    /// The admin endpoint.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envoy.log")).unwrap_or_default()
    }

    /// The bound address of listener `name` (resolves port 0).
    pub fn listener(&self, name: &str) -> Result<SocketAddr> {
        let body = http::get(self.admin, "/listeners?format=json")?.body;
        let listeners: serde_json::Value = serde_json::from_str(&body).context("parsing /listeners")?;
        let found = listeners["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .with_context(|| format!("no listener {name} in {body}"))?;
        let sock = &found["local_address"]["socket_address"];
        let ip = sock["address"].as_str().context("listener address")?;
        let port = sock["port_value"].as_u64().context("listener port")?;
        Ok(format!("{ip}:{port}").parse()?)
    }

    /// [`Envoy::listener`], waiting up to `within` for the listener to
    /// arrive: an Envoy that bootstraps from xDS goes live when its initial
    /// fetch times out even without its listeners (a slow, busy machine),
    /// and takes them when the server answers.
    pub fn wait_listener(&self, name: &str, within: Duration) -> Result<SocketAddr> {
        let deadline = std::time::Instant::now() + within;
        loop {
            match self.listener(name) {
                Ok(addr) => return Ok(addr),
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(e.context(format!("after waiting {within:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST path` on the admin endpoint (e.g. `/runtime_modify?k=v`);
    /// fails unless it answers 200.
    pub fn admin_post(&self, path: &str) -> Result<()> {
        let response = http::request(self.admin, "POST", path, &[])?;
        anyhow::ensure!(response.status == 200, "POST {path}: {} {}", response.status, response.body);
        Ok(())
    }

    /// Every counter and gauge whose name starts with `prefix`.
    pub fn stats(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let body = http::get(self.admin, "/stats")?.body;
        Ok(body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect())
    }

    /// The sum of every stat whose name starts with `prefix` and ends with `suffix`.
    pub fn stat_sum(&self, prefix: &str, suffix: &str) -> Result<u64> {
        Ok(self.stats(prefix)?.into_iter().filter(|(k, _)| k.ends_with(suffix)).map(|(_, v)| v).sum())
    }

    /// The value of counter or gauge `name` from `/stats`.
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        let body = http::get(self.admin, &format!("/stats?filter=^{name}$"))?.body;
        Ok(body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok()))
    }

    fn wait_for_admin(&mut self, path: &Path) -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("envoy exited with {status} before its admin came up:\n{}", self.log());
            }
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(addr) = text.trim().parse() {
                    return Ok(addr);
                }
            }
            if Instant::now() > deadline {
                bail!("envoy admin address not written within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_live(&mut self) -> Result<()> {
        let log = self.dir.path().join("envoy.log");
        crate::wait_for_ok(&mut self.child, self.admin, "/ready", Duration::from_secs(20), "envoy", &log)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

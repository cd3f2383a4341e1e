//! A real Prometheus (Debian's 2.42, from the bootstrap) scraping the
//! local mesh, with the rules the project ships in `deploy/prometheus/`,
//! and a few reads of its HTTP API; plus `promtool`, and a reader of the
//! Prometheus text format for the processes' own `/metrics`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bootstrap's `prometheus`: `$MERIDIAN_PROMETHEUS`, else `.tools/prometheus`.
pub fn prometheus_path() -> Result<PathBuf> {
    crate::tool_path("MERIDIAN_PROMETHEUS", ".tools/prometheus/usr/bin/prometheus", "make bootstrap")
}

/// The bootstrap's `promtool`.
pub fn promtool() -> Result<Command> {
    let path = crate::tool_path("MERIDIAN_PROMTOOL", ".tools/prometheus/usr/bin/promtool", "make bootstrap")?;
    Ok(Command::new(path))
}

/// The rule files the project ships (recording rules, then alerts).
pub fn shipped_rule_files() -> Vec<PathBuf> {
    let dir = crate::workspace_root().join("deploy/prometheus");
    vec![dir.join("meridian.rules.yml"), dir.join("meridian.alerts.yml")]
}

/// One scrape job: its name, the metrics path and each target with its
/// extra labels.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// `job` label.
    pub name: String,
    /// `/metrics`, or Envoy's `/stats/prometheus`.
    pub metrics_path: String,
    /// Targets and their labels.
    pub targets: Vec<(SocketAddr, BTreeMap<String, String>)>,
    /// Instead of `targets`, a file-based service discovery file (JSON:
    /// `[{targets, labels}]`) whose changes Prometheus follows.
    pub targets_file: Option<PathBuf>,
}

/// One series of a query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its labels (`__name__` included when the query keeps it).
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name` ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or_default()
    }
}

/// Targets as Prometheus's `static_configs` (and file-based discovery's
/// files): one group per target, with its labels.
pub fn static_targets(targets: &[(SocketAddr, BTreeMap<String, String>)]) -> Value {
    Value::Array(
        targets
            .iter()
            .map(|(addr, labels)| serde_json::json!({ "targets": [addr.to_string()], "labels": labels }))
            .collect(),
    )
}

/// A running Prometheus; killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on `listen` (port 0: a free port) scraping `jobs`
    /// and evaluating `rule_files` every `interval`, and waits until it is
    /// ready.
    pub fn start(jobs: &[ScrapeJob], rule_files: &[PathBuf], interval: Duration, listen: SocketAddr) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let every = format!("{}ms", interval.as_millis().max(1));
        let config = serde_json::json!({
            "global": { "scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every },
            "rule_files": rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "scrape_configs": jobs.iter().map(|job| {
                let mut config = serde_json::json!({ "job_name": job.name, "metrics_path": job.metrics_path });
                match &job.targets_file {
                    Some(file) => {
                        config["file_sd_configs"] =
                            serde_json::json!([{ "files": [file.display().to_string()], "refresh_interval": "1s" }]);
                    }
                    None => config["static_configs"] = static_targets(&job.targets),
                }
                config
            }).collect::<Vec<_>>(),
        });
        // JSON is YAML.
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, serde_json::to_string_pretty(&config)?)?;
        let addr = std::net::TcpListener::bind(listen)
            .with_context(|| format!("prometheus cannot listen on {listen}"))?
            .local_addr()?;
        let log = dir.path().join("prometheus.log");
        let mut child = Command::new(prometheus_path()?)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawning prometheus")?;
        crate::wait_for_ok(&mut child, addr, "/-/ready", Duration::from_secs(60), "prometheus", &log)?;
        Ok(Self { child, addr, log, _dir: dir })
    }

    /// Where its web UI and API listen.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query; an expression Prometheus refuses is an error
    /// with its message.
    pub fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))?;
        let result = data.get("result").and_then(Value::as_array).context("no result")?;
        result
            .iter()
            .map(|r| {
                let labels = r
                    .get("metric")
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                    .unwrap_or_default();
                let value = r
                    .get("value")
                    .and_then(|v| v.get(1))
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<f64>().ok())
                    .with_context(|| format!("no value in {r}"))?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Every metric name Prometheus holds a series of.
    pub fn metric_names(&self) -> Result<Vec<String>> {
        let data = self.api("/api/v1/label/__name__/values")?;
        Ok(data.as_array().context("a list")?.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
    }

    fn api(&self, path: &str) -> Result<Value> {
        let response = crate::http::get(self.addr, path)?;
        let body: Value = serde_json::from_str(&response.body)
            .with_context(|| format!("prometheus {path}: HTTP {} {}", response.status, response.body))?;
        if body.get("status").and_then(Value::as_str) != Some("success") {
            bail!("prometheus refused {path}: {}", body.get("error").and_then(Value::as_str).unwrap_or(&response.body));
        }
        body.get("data").cloned().context("no data")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    /// The metric name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

impl TextSample {
    /// Whether it is `name` with every label of `labels`.
    pub fn is(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name && labels.iter().all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// The sum of the values of the samples that are `name` with `labels`.
pub fn sum_of(samples: &[TextSample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.is(name, labels)).map(|s| s.value).sum()
}

/// The samples of a Prometheus text exposition (`name{labels} value`
/// lines; comments skipped).
pub fn parse_text(text: &str) -> Vec<TextSample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}')?;
                    let labels = body
                        .split("\",")
                        .filter_map(|pair| {
                            let (k, v) = pair.split_once("=\"")?;
                            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
                        })
                        .collect();
                    (name.to_string(), labels)
                }
            };
            Some(TextSample { name, labels, value })
        })
        .collect()
}

/// Checks rule files with `promtool check rules`, returning its output.
pub fn check_rules(files: &[&Path]) -> Result<String> {
    let out = promtool()?.arg("check").arg("rules").args(files).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(out.status.success(), "promtool check rules failed:\n{text}");
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_exposition_lines_parse_with_their_labels() {
        let text = "# HELP x y\n# TYPE x gauge\nmeridian_probe_rounds_total 3\n\
                    meridian_probe_max_abs_error{model=\"mlp\",version=\"v1\",region=\"eu-west\"} 0.5\n\
                    meridian_x{a=\"b c\"} NaN\n";
        let samples = parse_text(text);
        assert_eq!(samples.len(), 3);
        let rounds = TextSample { name: "meridian_probe_rounds_total".into(), labels: BTreeMap::new(), value: 3.0 };
        assert_eq!(samples[0], rounds);
        assert!(samples[1].is("meridian_probe_max_abs_error", &[("region", "eu-west"), ("model", "mlp")]));
        assert!(!samples[1].is("meridian_probe_max_abs_error", &[("region", "us-east")]));
        assert_eq!(samples[1].value, 0.5);
        assert!(samples[2].value.is_nan());
        assert!(samples[2].is("meridian_x", &[("a", "b c")]));
        assert_eq!(sum_of(&samples, "meridian_probe_rounds_total", &[]), 3.0);
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(percent_encode("up{job=\"a b\"}"), "up%7Bjob%3D%22a%20b%22%7D");
    }
}

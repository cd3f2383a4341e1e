//! `meridian-prober`: drift checks against reference sets and synthetic
//! calls through the mesh, exported on `/metrics`.

use anyhow::{Context, Result};
use clap::Parser;
use meridian_prober::metrics::ProbeMetrics;
use meridian_prober::probe::{Prober, ProberConfig};
use meridian_proto::reference::ReferenceSet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Probes every region and version of a mesh: reference sets through each region's gateway (drift), and one
/// call per region through the caller-side proxy (synthetic transactions); Prometheus metrics on /metrics.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The MeshPolicy (re-read every round).
    #[arg(long, short = 'f', value_name = "FILE")]
    policy: PathBuf,
    /// A version label's reference set (`meridian-sidecar reference`), as LABEL=FILE; repeat per version.
    #[arg(long = "reference", value_name = "LABEL=FILE", required = true)]
    references: Vec<String>,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 10.0)]
    interval_secs: f64,
    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Where /metrics listens (port 0: one the OS picks, printed on the first line of stdout).
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_listen: SocketAddr,
    /// The prober's certificate (PEM), for gateways that require mutual TLS (`meridianctl certs` writes
    /// `prober/cert.pem`); with --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA bundle the gateways' certificates must chain to (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// The name the gateways' certificates must hold (a DNS SAN).
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
    /// Log filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

fn references(specs: &[String]) -> Result<BTreeMap<String, Arc<ReferenceSet>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (label, file) = spec
            .split_once('=')
            .filter(|(l, f)| !l.is_empty() && !f.is_empty())
            .with_context(|| format!("--reference {spec}: expected LABEL=FILE"))?;
        let text = std::fs::read_to_string(file).with_context(|| format!("--reference {spec}: reading {file}"))?;
        let set = ReferenceSet::from_json(&text).with_context(|| format!("--reference {spec}: {file}"))?;
        anyhow::ensure!(
            out.insert(label.to_string(), Arc::new(set)).is_none(),
            "--reference {spec}: {label} has a reference already"
        );
    }
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .with_context(|| format!("--log {}", cli.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    anyhow::ensure!(
        cli.interval_secs.is_finite() && cli.interval_secs > 0.0,
        "--interval-secs must be a positive number of seconds"
    );
    anyhow::ensure!(cli.timeout_ms > 0, "--timeout-ms must be positive");
    let gateway_tls = match (&cli.tls_cert, &cli.tls_key, &cli.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let read =
                |flag: &str, p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("{flag} {}", p.display()));
            Some(
                ClientTlsConfig::new()
                    .identity(Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?))
                    .ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?))
                    .domain_name(cli.tls_server_name.clone()),
            )
        }
        _ => None,
    };
    let config = ProberConfig {
        gateway_tls,
        policy_file: cli.policy,
        references: references(&cli.references)?,
        interval: Duration::from_secs_f64(cli.interval_secs),
        timeout: Duration::from_millis(cli.timeout_ms),
    };
    let metrics = ProbeMetrics::new();
    let listener = tokio::net::TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("--metrics-listen {}", cli.metrics_listen))?;
    println!("metrics={}", listener.local_addr()?);
    let router = metrics.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    Prober::new(config, metrics).run().await;
    Ok(())
}

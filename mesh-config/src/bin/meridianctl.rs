//! `meridianctl`: Meridian's command-line tool.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meridian_filters_core::FilterConfig;
use meridian_mesh_config::render::envoy::{self, CallerProxy, RegionGateway, RegionUpstream, Shadow};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Meridian's mesh configuration tool.
#[derive(Debug, Parser)]
#[command(name = "meridianctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render proxy configuration.
    #[command(subcommand)]
    Render(Render),
}

#[derive(Debug, Subcommand)]
enum Render {
    /// The caller-side Envoy bootstrap (YAML, on stdout): the Meridian wasm
    /// filter, a cluster per region and one per failover order.
    Envoy {
        /// Path to the built meridian_filters.wasm.
        #[arg(long)]
        wasm: PathBuf,
        /// The filter's configuration (JSON).
        #[arg(long)]
        filter_config: PathBuf,
        /// A region's gateway address, as NAME=IP:PORT; one per region.
        #[arg(long = "region", value_parser = parse_region, required = true)]
        regions: Vec<(String, SocketAddr)>,
        /// Listener address for callers.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// Envoy admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Shadow traffic: mirror PERCENT of MODEL's calls to VERSION in the local region (answers dropped).
        #[arg(long, value_name = "MODEL=VERSION:PERCENT", value_parser = parse_shadow)]
        shadow: Option<Shadow>,
    },
    /// A region gateway's Envoy bootstrap (YAML, on stdout).
    Gateway {
        /// The region's name.
        #[arg(long)]
        region: String,
        /// The gateway's listener.
        #[arg(long)]
        listen: SocketAddr,
        /// Envoy admin address.
        #[arg(long)]
        admin: SocketAddr,
        /// A sidecar's gRPC address; one per sidecar (the stable version's).
        #[arg(long = "sidecar", required = true)]
        sidecars: Vec<SocketAddr>,
        /// A sidecar of another model version (canary), as VERSION=IP:PORT; one per sidecar.
        #[arg(long = "version-sidecar", value_name = "VERSION=IP:PORT", value_parser = parse_region)]
        version_sidecars: Vec<(String, SocketAddr)>,
        /// The version (one of --version-sidecar's) that mirrored calls go to.
        #[arg(long, value_name = "VERSION")]
        shadow_version: Option<String>,
    },
}

fn parse_region(value: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = value.split_once('=').ok_or_else(|| format!("`{value}`: expected NAME=IP:PORT"))?;
    let addr = addr.parse().map_err(|e| format!("`{value}`: bad address: {e}"))?;
    Ok((name.to_string(), addr))
}

fn parse_shadow(value: &str) -> Result<Shadow, String> {
    let bad = || format!("`{value}`: expected MODEL=VERSION:PERCENT, PERCENT in 0..=100");
    let (model, rest) = value.split_once('=').ok_or_else(bad)?;
    let (version, percent) = rest.rsplit_once(':').ok_or_else(bad)?;
    let percent: u32 = percent.parse().map_err(|_| bad())?;
    if model.is_empty() || version.is_empty() || percent > 100 {
        return Err(bad());
    }
    Ok(Shadow { model: model.into(), version: version.into(), percent })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Render(Render::Envoy { wasm, filter_config, regions, listen, admin, shadow }) => {
            let wasm =
                std::fs::canonicalize(&wasm).with_context(|| format!("--wasm {}: no such file", wasm.display()))?;
            let bytes = std::fs::read(&filter_config)
                .with_context(|| format!("--filter-config {}: cannot read", filter_config.display()))?;
            let filter = FilterConfig::from_json(&bytes)
                .with_context(|| format!("--filter-config {}", filter_config.display()))?;
            for r in &filter.regions {
                anyhow::ensure!(regions.iter().any(|(n, _)| *n == r.name), "--region {}=ADDR is missing", r.name);
            }
            let regions =
                regions.into_iter().map(|(region, addr)| RegionUpstream { region, addr, http2: true }).collect();
            print!("{}", envoy::caller_proxy(&CallerProxy { admin, listen, regions, wasm, filter, shadow }));
        }
        Command::Render(Render::Gateway { region, listen, admin, sidecars, version_sidecars, shadow_version }) => {
            let mut versions: Vec<(String, Vec<SocketAddr>)> = Vec::new();
            for (version, addr) in version_sidecars {
                match versions.iter_mut().find(|(v, _)| *v == version) {
                    Some((_, addrs)) => addrs.push(addr),
                    None => versions.push((version, vec![addr])),
                }
            }
            if let Some(v) = shadow_version.as_ref().filter(|v| !versions.iter().any(|(n, _)| n == *v)) {
                anyhow::bail!("--shadow-version {v}: no --version-sidecar {v}=IP:PORT serves it");
            }
            let gateway = RegionGateway { region, admin, listen, sidecars, versions, shadow: shadow_version };
            print!("{}", envoy::region_gateway(&gateway));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_flags_parse_and_bad_ones_say_the_form() {
        assert_eq!(parse_shadow("mlp=v2:25"), Ok(Shadow { model: "mlp".into(), version: "v2".into(), percent: 25 }));
        for bad in ["mlp", "mlp=v2", "mlp=v2:x", "mlp=v2:101", "=v2:5", "mlp=:5"] {
            let err = parse_shadow(bad).expect_err(bad);
            assert!(err.contains("MODEL=VERSION:PERCENT"), "{bad}: {err}");
        }
    }
}

//! `meridianctl`: Meridian's command-line tool.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meridian_mesh_config::render::envoy::{self, FilterProxy};
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
    /// A plain Envoy bootstrap (YAML, on stdout) with the Meridian wasm filter
    /// on one listener in front of one upstream.
    Envoy {
        /// Path to the built meridian_filters.wasm.
        #[arg(long)]
        wasm: PathBuf,
        /// Listener address for callers.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// Upstream address every request goes to.
        #[arg(long)]
        upstream: SocketAddr,
        /// Envoy admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// The name the filter stamps in `x-meridian-filter`.
        #[arg(long, default_value = "meridian")]
        name: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Render(Render::Envoy { wasm, listen, upstream, admin, name }) => {
            let wasm =
                std::fs::canonicalize(&wasm).with_context(|| format!("--wasm {}: no such file", wasm.display()))?;
            let proxy =
                FilterProxy { admin, listen, upstream, wasm, plugin_config: serde_json::json!({ "name": name }) };
            print!("{}", envoy::bootstrap(&proxy));
        }
    }
    Ok(())
}

//! `meridianctl`: Meridian's command-line tool. It reads a `MeshPolicy`
//! and validates it, renders what runs it (Istio resources, plain Envoy
//! bootstraps, model-server configuration) and explains the routing
//! decision a call would get.
//!
//! Exit codes: 0 success; 1 the policy (or an input) is invalid, every
//! error printed; 2 bad usage (clap).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use meridian_autoscale::simulate::Trace;
use meridian_mesh_config::crd::CrdSchemas;
use meridian_mesh_config::explain::{explain, Scenario};
use meridian_mesh_config::policy::{schema, Policy, PolicyErrors};
use meridian_mesh_config::render::{envoy, istio, k8s};
use meridian_mesh_config::simulate;
use meridian_mesh_config::xds::{type_name, ServerOptions};
use meridian_proto::xds::meridian::xds::v1::mesh_status_client::MeshStatusClient;
use meridian_proto::xds::meridian::xds::v1::{StatusRequest, StatusResponse};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Meridian's mesh configuration tool.
#[derive(Debug, Parser)]
#[command(name = "meridianctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a policy: exit 0 when valid, 1 with every error (field path, line, column).
    Validate {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the MeshPolicy JSON schema (or its field reference as Markdown).
    Schema {
        /// The field reference as a Markdown table instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Render what runs the policy.
    #[command(subcommand)]
    Render(Render),
    /// Serve the policy to every Envoy of the mesh over xDS (ADS: listeners,
    /// routes, clusters, the filter's configuration by ECDS), watching the
    /// file: a valid change is pushed live, an invalid one refused.
    Serve {
        /// The MeshPolicy file (watched).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Where to listen for Envoy (and `meridianctl status`).
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_listen: SocketAddr,
        /// The built meridian_filters.wasm the caller-side proxies load (a
        /// `file://` filter.url in the policy takes precedence).
        #[arg(long)]
        wasm: PathBuf,
        /// How often the policy file is checked, in milliseconds.
        #[arg(long, default_value_t = 250)]
        poll_ms: u64,
        /// Mutual TLS on every hop with the certificates under DIR (`meridianctl certs`).
        #[arg(long, value_name = "DIR")]
        certs: Option<PathBuf>,
        /// Log filter (tracing's EnvFilter syntax).
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// A development PKI for the policy's mesh: a CA (kept in DIR and reused unless --new-ca), and a certificate
    /// for every workload — the caller-side proxy, each region's gateway and model servers, each caller — with
    /// its SPIFFE ID, and the SDS files Envoy reads them through. Re-run to rotate; running proxies and
    /// sidecars pick the new files up.
    Certs {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The certificate root.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Validity of the workload certificates, in days (the CA: twice that).
        #[arg(long, default_value_t = 30)]
        days: i64,
        /// Make a new CA (the old one stays in every bundle beside it until the next run).
        #[arg(long)]
        new_ca: bool,
    },
    /// Every proxy connected to an xDS server, what it acknowledged, and
    /// whether it is in sync (like `istioctl proxy-status`).
    Status {
        /// The xDS server (`meridianctl serve --xds-listen`).
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds: SocketAddr,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the decision the filter would make for a call: version, region
    /// order, reason, retries, and why each left-out region is left out.
    Explain {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The model called.
        #[arg(long)]
        model: String,
        /// The caller identity (x-meridian-caller).
        #[arg(long)]
        caller: Option<String>,
        /// The residency zone the call asks for (x-meridian-residency).
        #[arg(long)]
        residency: Option<String>,
        /// The caller's region (default: the caller's region in the policy,
        /// else callerProxy.region).
        #[arg(long)]
        from: Option<String>,
        /// A region whose health checks fail; repeat for more.
        #[arg(long, value_name = "REGION")]
        down: Vec<String>,
        /// A region whose circuit breaker for the model is open; repeat for more.
        #[arg(long, value_name = "REGION")]
        open: Vec<String>,
        /// A region answering in MS milliseconds, as REGION=MS; repeat for more.
        #[arg(long, value_name = "REGION=MS", value_parser = parse_slow)]
        slow: Vec<(String, u64)>,
        /// The canary's sticky key (the sticky header's value, or the caller).
        #[arg(long)]
        canary_key: Option<String>,
        /// The version asked for (x-meridian-version).
        #[arg(long)]
        version: Option<String>,
        /// The caller's deadline in milliseconds (grpc-timeout).
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Replay a request-rate trace through a model's autoscaling and a
    /// queueing model of one replica: per region, the seconds above the p99
    /// objective, replica-hours, peak replicas and scale events.
    Simulate {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The trace: CSV `time_s,<region>,…`, req/s per region.
        #[arg(long)]
        trace: PathBuf,
        /// The model (default: the only one with autoscaling).
        #[arg(long)]
        model: Option<String>,
        /// The p99 objective in ms (default: the model's slo.p99).
        #[arg(long, value_name = "MS")]
        slo_p99: Option<f64>,
        /// The wall time of the trace's first row (schedules are cron in UTC), RFC 3339.
        #[arg(long, default_value = "2026-01-05T00:00:00Z")]
        start: String,
        /// The model's time step in seconds.
        #[arg(long, default_value_t = 1.0)]
        step: f64,
        /// Simulate without the schedules (what do they buy?).
        #[arg(long)]
        without_schedules: bool,
        /// Also write a chart (SVG): load, capacity and replicas, p99 against the objective.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn parse_slow(value: &str) -> Result<(String, u64), String> {
    let (region, ms) = value.split_once('=').ok_or_else(|| format!("`{value}`: expected REGION=MS"))?;
    let ms = ms.trim_end_matches("ms").parse().map_err(|_| format!("`{value}`: MS must be a whole number"))?;
    Ok((region.to_string(), ms))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Autoscaler {
    /// KEDA ScaledObject: Prometheus and cron triggers.
    Keda,
    /// HorizontalPodAutoscaler autoscaling/v2 (Pods metric via prometheus-adapter; no schedules).
    Hpa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The caller-side proxy running the filter.
    Caller,
    /// The region's gateway in front of its model servers.
    Gateway,
}

#[derive(Debug, Subcommand)]
enum Render {
    /// Istio resources (YAML stream): WasmPlugin or TrafficExtension,
    /// EnvoyFilter, DestinationRule, ServiceEntry, Gateway, VirtualService,
    /// PeerAuthentication, AuthorizationPolicy.
    Istio {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The Istio version (1.22 and later); from 1.30 the filter is a TrafficExtension.
        #[arg(long, default_value = "1.30")]
        istio_version: String,
        /// Where Istio fetches the filter module (oci://…, https://…); overrides filter.url.
        #[arg(long)]
        wasm_url: Option<String>,
        /// The module's sha256; overrides filter.sha256.
        #[arg(long)]
        wasm_sha256: Option<String>,
        /// Check every document against these CustomResourceDefinitions
        /// (e.g. Istio's crds.gen.yaml) before printing; exit 1 on a violation.
        #[arg(long, value_name = "CRDS.yaml")]
        check_crds: Option<PathBuf>,
    },
    /// Plain Envoy bootstraps (YAML): the caller-side proxy of a region,
    /// or a region's gateway; with --out-dir, every one of them.
    Envoy {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The region (default: callerProxy.region, else the first).
        #[arg(long)]
        region: Option<String>,
        /// Which proxy.
        #[arg(long, value_enum, default_value_t = Role::Caller)]
        role: Role,
        /// The built meridian_filters.wasm (for the caller-side proxy).
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Write caller-<region>.yaml and gateway-<region>.yaml for every
        /// region into this folder instead of printing one.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Bootstrap from this xDS server (`meridianctl serve`) instead of
        /// embedding the configuration.
        #[arg(long, value_name = "ADDR")]
        xds: Option<SocketAddr>,
        /// Mutual TLS on every hop with the certificates under DIR (`meridianctl certs`).
        #[arg(long, value_name = "DIR", conflicts_with = "xds")]
        certs: Option<PathBuf>,
    },
    /// Kubernetes autoscaling (YAML stream): per model with autoscaling,
    /// version and region, a KEDA ScaledObject (default) or a
    /// HorizontalPodAutoscaler.
    K8s {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Which autoscaler.
        #[arg(long, value_enum, default_value_t = Autoscaler::Keda)]
        autoscaler: Autoscaler,
        /// The Prometheus KEDA queries.
        #[arg(long, default_value = "http://prometheus-operated.monitoring.svc:9090")]
        prometheus_url: String,
        /// Check every document against these CustomResourceDefinitions
        /// (e.g. deploy/keda/keda.sh_scaledobjects.yaml) before printing.
        #[arg(long, value_name = "CRDS.yaml")]
        check_crds: Option<PathBuf>,
    },
    /// A model's config.yaml for meridian-sidecar (batching from the policy).
    Sidecar {
        /// The MeshPolicy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// The model.
        #[arg(long)]
        model: String,
        /// For a mesh with mutual TLS: also list the identities allowed to call the model (allowed_identities).
        #[arg(long)]
        mtls: bool,
    },
}

/// Why a command failed: an invalid policy (every error), or anything else.
#[derive(Debug)]
enum Failure {
    Policy(PathBuf, PolicyErrors),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Policy(file, errors)) => {
            for e in errors.iter() {
                eprintln!("{}: {e}", file.display());
            }
            eprintln!("{}: {} error{}", file.display(), errors.len(), if errors.len() == 1 { "" } else { "s" });
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            eprintln!("meridianctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Checks `documents` against the CRDs in `crds`: every violation, or a line
/// on stderr saying they are valid.
fn check_against(crds: &Path, documents: &[serde_json::Value]) -> Result<(), Failure> {
    let text = std::fs::read_to_string(crds).with_context(|| format!("cannot read {}", crds.display()))?;
    let schemas = CrdSchemas::from_yaml(&text).map_err(anyhow::Error::msg)?;
    let errors: Vec<String> = documents.iter().flat_map(|d| schemas.validate(d)).map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        return Err(anyhow::anyhow!("rendered resources violate {}:\n{}", crds.display(), errors.join("\n")).into());
    }
    eprintln!("{} documents valid against {}", documents.len(), crds.display());
    Ok(())
}

fn load(file: &Path) -> Result<Policy, Failure> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Policy::parse(&text).map_err(|e| Failure::Policy(file.to_path_buf(), e))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Validate { file, output } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let result = Policy::parse(&text);
            if output == Output::Json {
                let errors = result.as_ref().err().map(|e| e.0.clone()).unwrap_or_default();
                let report = serde_json::json!({
                    "file": file.display().to_string(),
                    "valid": errors.is_empty(),
                    "errors": errors,
                });
                println!("{}", serde_json::to_string_pretty(&report).context("JSON")?);
                if !errors.is_empty() {
                    std::process::exit(1);
                }
                return Ok(());
            }
            let policy = result.map_err(|e| Failure::Policy(file.clone(), e))?;
            let spec = policy.spec();
            println!(
                "{}: valid — {} region(s), {} model(s), {} caller(s)",
                file.display(),
                spec.regions.len(),
                spec.models.len(),
                spec.callers.len()
            );
        }
        Command::Schema { markdown } => {
            if markdown {
                print!("{}", schema::reference_markdown());
            } else {
                println!("{}", serde_json::to_string_pretty(&schema::json_schema()).context("JSON")?);
            }
        }
        Command::Render(Render::Envoy { file, region, role, wasm, out_dir, xds: Some(server), certs: _ }) => {
            let policy = load(&file)?;
            let bootstrap = |role: envoy::Role, region: &str| -> Result<String, Failure> {
                let admin = match role {
                    envoy::Role::CallerProxy => Some(policy.spec().caller_proxy.admin.clone()),
                    envoy::Role::RegionGateway => {
                        policy.spec().region(region).and_then(|r| r.gateway.as_ref()).and_then(|g| g.admin.clone())
                    }
                };
                let admin = admin
                    .map(|a| a.parse::<SocketAddr>().with_context(|| format!("admin address `{a}` is not IP:PORT")))
                    .transpose()?;
                Ok(envoy::xds_bootstrap(&envoy::XdsNode::new(role, region), admin, server))
            };
            let _ = wasm;
            if let Some(dir) = out_dir {
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                for r in policy.spec().regions.iter().map(|r| r.name.clone()) {
                    for (role, name) in [(envoy::Role::CallerProxy, "caller"), (envoy::Role::RegionGateway, "gateway")]
                    {
                        let path = dir.join(format!("{name}-{r}.yaml"));
                        std::fs::write(&path, bootstrap(role, &r)?)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                }
            } else {
                let region = region.unwrap_or_else(|| policy.caller_region().to_string());
                if policy.spec().region(&region).is_none() {
                    return Err(anyhow::anyhow!("--region {region}: the policy has no such region").into());
                }
                let role = match role {
                    Role::Caller => envoy::Role::CallerProxy,
                    Role::Gateway => envoy::Role::RegionGateway,
                };
                print!("{}", bootstrap(role, &region)?);
            }
        }
        Command::Render(Render::Envoy { file, region, role, wasm, out_dir, xds: None, certs }) => {
            let policy = load(&file)?;
            let certs = certs.map(meridian_mesh_config::certs::MeshCerts::new);
            if let Some(c) = &certs {
                c.check(&policy).map_err(anyhow::Error::msg)?;
            }
            let wasm = || -> Result<PathBuf, Failure> {
                let wasm = wasm.clone().context("--wasm PATH is needed to render a caller-side proxy")?;
                Ok(std::fs::canonicalize(&wasm).with_context(|| format!("--wasm {}: no such file", wasm.display()))?)
            };
            let caller = |region: &str| -> Result<String, Failure> {
                let mut proxy = envoy::caller_from_policy(&policy, region, wasm()?)
                    .map_err(|e| Failure::Policy(file.clone(), e))?;
                if let Some(c) = &certs {
                    envoy::caller_mtls(&policy, c, &mut proxy);
                }
                Ok(envoy::caller_proxy(&proxy))
            };
            let gateway = |region: &str| -> Result<String, Failure> {
                let mut gateway =
                    envoy::gateway_from_policy(&policy, region).map_err(|e| Failure::Policy(file.clone(), e))?;
                if let Some(c) = &certs {
                    envoy::gateway_mtls(&policy, c, &mut gateway);
                }
                Ok(envoy::region_gateway(&gateway))
            };
            if let Some(dir) = out_dir {
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                let regions: Vec<String> = policy.spec().regions.iter().map(|r| r.name.clone()).collect();
                for r in &regions {
                    for (name, yaml) in
                        [(format!("caller-{r}.yaml"), caller(r)?), (format!("gateway-{r}.yaml"), gateway(r)?)]
                    {
                        let path = dir.join(name);
                        std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                }
            } else {
                let region = region.unwrap_or_else(|| policy.caller_region().to_string());
                let yaml = match role {
                    Role::Caller => caller(&region)?,
                    Role::Gateway => gateway(&region)?,
                };
                print!("{yaml}");
            }
        }
        Command::Render(Render::Istio { file, istio_version, wasm_url, wasm_sha256, check_crds }) => {
            let policy = load(&file)?;
            let version = istio::IstioVersion::parse(&istio_version).map_err(anyhow::Error::msg)?;
            let options = istio::IstioOptions { version, wasm_url, wasm_sha256 };
            let rendered = istio::render(&policy, &options).map_err(|e| Failure::Policy(file.clone(), e))?;
            for note in &rendered.notes {
                eprintln!("note: {note}");
            }
            if let Some(crds) = check_crds {
                check_against(&crds, &rendered.documents)?;
            }
            print!("{}", rendered.to_yaml());
        }
        Command::Render(Render::K8s { file, autoscaler, prometheus_url, check_crds }) => {
            let policy = load(&file)?;
            let options = k8s::K8sOptions {
                autoscaler: match autoscaler {
                    Autoscaler::Keda => k8s::AutoscalerKind::Keda,
                    Autoscaler::Hpa => k8s::AutoscalerKind::Hpa,
                },
                prometheus_url,
            };
            let rendered = k8s::render(&policy, &options);
            for note in &rendered.notes {
                eprintln!("note: {note}");
            }
            if rendered.documents.is_empty() {
                eprintln!("note: no model has `autoscaling`: nothing to render");
            }
            if let Some(crds) = check_crds {
                check_against(&crds, &rendered.documents)?;
            }
            print!("{}", rendered.to_yaml());
        }
        Command::Render(Render::Sidecar { file, model, mtls }) => {
            let policy = load(&file)?;
            let render = if mtls {
                meridian_mesh_config::render::sidecar::model_config_mtls
            } else {
                meridian_mesh_config::render::sidecar::model_config
            };
            let config = render(&policy, &model).map_err(|e| Failure::Policy(file.clone(), PolicyErrors(vec![e])))?;
            print!("{config}");
        }
        Command::Certs { file, out, days, new_ca } => {
            let policy = load(&file)?;
            if days < 1 {
                return Err(anyhow::anyhow!("--days {days}: must be at least 1").into());
            }
            let issued = meridian_mesh_config::certs::issue(&policy, &out, days, new_ca)
                .with_context(|| format!("issuing certificates under {}", out.display()))?;
            println!("{:<24} {:<58} SERIAL", "WORKLOAD", "SPIFFE ID");
            for i in &issued {
                println!("{:<24} {:<58} {}", i.workload.to_string(), i.identity, i.serial);
            }
            eprintln!(
                "{} certificates under {} (valid {days} days; CA: {}/ca.pem)",
                issued.len(),
                out.display(),
                out.display()
            );
        }
        Command::Serve { file, xds_listen, wasm, poll_ms, certs, log } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_new(&log).context("--log")?)
                .with_writer(std::io::stderr)
                .init();
            let wasm =
                std::fs::canonicalize(&wasm).with_context(|| format!("--wasm {}: no such file", wasm.display()))?;
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            runtime.block_on(async {
                let options = ServerOptions {
                    policy_file: file,
                    listen: xds_listen,
                    wasm,
                    poll: Duration::from_millis(poll_ms),
                    certs,
                };
                let running = meridian_mesh_config::xds::serve(options).await.map_err(anyhow::Error::new)?;
                tokio::select! {
                    served = running.wait() => served.map_err(anyhow::Error::new),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
        }
        Command::Status { xds, output } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
            let status = runtime.block_on(async {
                let mut client = MeshStatusClient::connect(format!("http://{xds}"))
                    .await
                    .with_context(|| format!("no xDS server at {xds}"))?;
                let response = client.get(StatusRequest {}).await.with_context(|| format!("{xds}: status"))?;
                anyhow::Ok(response.into_inner())
            })?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status_json(&status)).context("JSON")?),
                Output::Text => print!("{}", status_text(&status)),
            }
        }
        Command::Simulate { file, trace, model, slo_p99, start, step, without_schedules, plot, output } => {
            let policy = load(&file)?;
            let text = std::fs::read_to_string(&trace).with_context(|| format!("cannot read {}", trace.display()))?;
            let parsed = Trace::parse_csv(&text).map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
            let start_ms = chrono::DateTime::parse_from_rfc3339(&start)
                .map_err(|e| anyhow::anyhow!("--start `{start}`: not an RFC 3339 time ({e})"))?
                .timestamp_millis();
            let start_unix_ms =
                u64::try_from(start_ms).map_err(|_| anyhow::anyhow!("--start `{start}`: before 1970"))?;
            if !(step > 0.0 && step <= 60.0) {
                return Err(anyhow::anyhow!("--step {step}: must be above 0 and at most 60 seconds").into());
            }
            if let Some(ms) = slo_p99.filter(|ms| ms.is_nan() || *ms <= 0.0) {
                return Err(anyhow::anyhow!("--slo-p99 {ms}: must be above 0").into());
            }
            let request = simulate::Request {
                model,
                slo_p99_s: slo_p99.map(|ms| ms / 1000.0),
                start_unix_ms,
                step_s: step,
                without_schedules,
            };
            let outcome = simulate::run(&policy, &parsed, &request).map_err(anyhow::Error::msg)?;
            match output {
                Output::Text => print!("{}", outcome.table()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&outcome.json()).context("JSON")?),
            }
            if let Some(path) = plot {
                let title = format!("{} — {} on {}", file.display(), outcome.model, trace.display());
                std::fs::write(&path, meridian_autoscale::plot::svg(&outcome.regions, &title))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("plot: {}", path.display());
            }
        }
        Command::Explain {
            file,
            model,
            caller,
            residency,
            from,
            down,
            open,
            slow,
            canary_key,
            version,
            deadline_ms,
            output,
        } => {
            let policy = load(&file)?;
            let scenario =
                Scenario { model, caller, residency, from, down, open, slow, canary_key, version, deadline_ms };
            let report = explain(&policy, &scenario).map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
            match output {
                Output::Text => print!("{report}"),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report).context("JSON")?),
            }
        }
    }
    Ok(())
}

/// The status as JSON (`-o json`).
fn status_json(s: &StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "policy_file": s.policy_file,
        "policy_version": s.policy_version,
        "policy_accepted_unix": s.policy_accepted_unix,
        "refused": s.refused.as_ref().map(|r| serde_json::json!({ "at_unix": r.at_unix, "errors": r.errors })),
        "proxies": s.proxies.iter().map(|p| serde_json::json!({
            "node_id": p.node_id,
            "role": p.role,
            "region": p.region,
            "peer": p.peer,
            "in_sync": p.in_sync,
            "connected_unix": p.connected_unix,
            "resources": p.resources.iter().map(|r| serde_json::json!({
                "type": type_name(&r.type_url),
                "type_url": r.type_url,
                "current_version": r.current_version,
                "acked_version": r.acked_version,
                "nacked_version": r.nacked_version,
                "nack_error": r.nack_error,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The status as a table.
fn status_text(s: &StatusResponse) -> String {
    let mut out = format!("policy {} — generation {}\n", s.policy_file, s.policy_version);
    if let Some(r) = &s.refused {
        out.push_str(&format!(
            "last change REFUSED ({} error(s)); the proxies keep generation {}:\n",
            r.errors.len(),
            s.policy_version
        ));
        for e in &r.errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out.push_str(&format!(
        "\n{:<22} {:<15} {:<11} {:<10} {:<10} {:<10} {:<10} {}\n",
        "NODE", "ROLE", "REGION", "CLUSTER", "LISTENER", "ROUTE", "ECDS", "STATUS"
    ));
    for p in &s.proxies {
        let cell = |short: &str| {
            p.resources
                .iter()
                .find(|r| type_name(&r.type_url).starts_with(short))
                .map(|r| {
                    if !r.nack_error.is_empty() {
                        format!("NACK {}", r.nacked_version)
                    } else if r.acked_version == r.current_version {
                        r.acked_version.clone()
                    } else {
                        format!("{}→{}", r.acked_version, r.current_version)
                    }
                })
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "{:<22} {:<15} {:<11} {:<10} {:<10} {:<10} {:<10} {}\n",
            p.node_id,
            p.role,
            p.region,
            cell("Cluster"),
            cell("Listener"),
            cell("RouteConfiguration"),
            cell("TypedExtensionConfig"),
            if p.in_sync { "SYNCED" } else { "STALE" }
        ));
        for r in p.resources.iter().filter(|r| !r.nack_error.is_empty()) {
            out.push_str(&format!("  NACK of {} {}: {}\n", type_name(&r.type_url), r.nacked_version, r.nack_error));
        }
    }
    if s.proxies.is_empty() {
        out.push_str("(no proxy connected)\n");
    }
    out
}

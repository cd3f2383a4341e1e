//! `meridian-sidecar`: wiring only. See the library for the parts.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use meridian_sidecar::executor::cuda::kernels;
use meridian_sidecar::executor::device::DeviceChoice;
use meridian_sidecar::executor::Precision;
use meridian_sidecar::limits::Limits;
use meridian_sidecar::models;
use meridian_sidecar::server::{self, ServerConfig, TlsConfig};
use meridian_sidecar::telemetry::{self, TraceOptions};
use meridian_sidecar::tls::identity::IdentityPattern;
use meridian_sidecar::tls::TlsFiles;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A KServe v2 / Open Inference Protocol model server for ONNX models, with
/// server-side dynamic batching. Triton's clients and perf_analyzer talk to
/// it unchanged.
#[derive(Debug, Parser)]
#[command(name = "meridian-sidecar", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Serve,
}

#[derive(Debug, Args)]
struct Serve {
    /// The model repository: DIR/<model>/config.yaml and DIR/<model>/<version>/model.onnx.
    #[arg(long, value_name = "DIR", required = true)]
    model_repository: Option<PathBuf>,
    /// Address of the gRPC server (inference.GRPCInferenceService and grpc.health.v1).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8001")]
    grpc_listen: SocketAddr,
    /// Address of the KServe v2 REST server (HTTP/JSON, Triton's binary tensor data extension; TLS with --tls-cert).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    http_listen: SocketAddr,
    /// Address of the HTTP listener for /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8002")]
    metrics_listen: SocketAddr,
    /// Where models run unless their config.yaml says otherwise: auto (CUDA when a usable GPU and its
    /// libraries are present, else the CPU), cpu, cuda or cuda:N (fails at start without a usable GPU).
    #[arg(long, value_name = "auto|cpu|cuda[:N]", default_value = "auto")]
    device: DeviceChoice,
    /// How often to check the repository for added, changed or removed models, in seconds; 0 disables it.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    repository_poll_secs: f64,
    /// After SIGTERM, how long in-flight calls may take to finish, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    drain_grace_secs: f64,
    /// The largest request message accepted, in bytes; larger ones get RESOURCE_EXHAUSTED before their body is
    /// read. Raise it for models whose largest batch needs more.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// The largest header list of a request, in bytes (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_header_list_bytes)]
    max_header_bytes: u32,
    /// Concurrent streams (calls) per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_concurrent_streams)]
    max_concurrent_streams: u32,
    /// The longest a call may take, reading its request included (a shorter grpc-timeout wins), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().request_timeout.as_secs_f64())]
    request_timeout_secs: f64,
    /// How long a new plaintext connection may take to send the HTTP/2 preface before it is closed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Limits::default().preface_timeout.as_secs_f64())]
    preface_timeout_secs: f64,
    /// The request metadata key that names the caller (per-caller rate limits).
    #[arg(long, value_name = "KEY", default_value = meridian_proto::headers::CALLER)]
    caller_header: String,
    /// TLS on the gRPC listener: the server's certificate chain (PEM, leaf first). Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate that chains to a CA in this PEM bundle; their SPIFFE ID
    /// (URI SAN) is their identity for allowed_identities and per-caller rate limits. Without it: server-only TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// How often to check the certificate, key and CA files for new material, in seconds (new connections use it;
    /// established ones keep theirs; a bad file is refused and the old material stays).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    tls_poll_secs: f64,
    /// A peer whose forwarded client identity (x-forwarded-client-cert) is believed, as a SPIFFE ID or a prefix
    /// ending in `*` (the region gateways). Repeatable.
    #[arg(long, value_name = "SPIFFE_ID", requires = "tls_client_ca")]
    trusted_proxy: Vec<IdentityPattern>,
    /// Serve the metrics listener behind the same TLS (HTTP/1.1; with --tls-client-ca, scrapers present a
    /// client certificate).
    #[arg(long, requires = "tls_cert")]
    metrics_tls: bool,
    /// Threads serving gRPC and HTTP (the async runtime's workers); 0: half the cores, at least one (model execution
    /// runs on its own threads and needs the rest; one per core measured 7 % more server CPU per request at
    /// concurrency 32 on 2 cores).
    #[arg(long, value_name = "N", default_value_t = 0)]
    io_threads: usize,
    /// Export trace spans (OpenTelemetry, OTLP over gRPC) to this collector, `host:port` or `http://host:port`:
    /// a span per inference call (parented on the caller's W3C traceparent) with its queue and execute
    /// children, and a span per batch linked to the calls it served. Without it nothing is traced.
    #[arg(long, value_name = "ADDR")]
    otlp_endpoint: Option<String>,
    /// The service.name of the exported spans.
    #[arg(long, value_name = "NAME", default_value = "meridian-sidecar", requires = "otlp_endpoint")]
    otlp_service_name: String,
    /// An attribute of the spans' resource (`meridian.region=eu-west`). Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value, requires = "otlp_endpoint")]
    otlp_resource: Vec<(String, String)>,
    /// Share (0–1) of calls without a sampled traceparent that start a trace; a caller's sampled or unsampled
    /// traceparent is always followed.
    #[arg(long, value_name = "RATIO", default_value_t = 1.0, requires = "otlp_endpoint")]
    trace_sampling_ratio: f64,
    /// How long finished spans wait before they are sent, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, requires = "otlp_endpoint")]
    otlp_flush_secs: f64,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes the project's seeded demo models as a model repository: `mlp` (FP32 MLP with softmax) and `echo_types`.
    GenerateModels {
        /// The repository folder to write (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The MLP's layer widths, input first.
        #[arg(long, value_delimiter = ',', default_value = "512,2048,2048,10")]
        mlp_dims: Vec<usize>,
        /// The weights' seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// max_batch_size written to each config.yaml.
        #[arg(long, default_value_t = 64)]
        max_batch_size: usize,
        /// Write configs without dynamic_batching (each request runs alone).
        #[arg(long)]
        no_dynamic_batching: bool,
        /// dynamic_batching.max_queue_delay_us written to each config.yaml.
        #[arg(long, default_value_t = 500)]
        max_queue_delay_us: u64,
        /// intra_op_threads written to each config.yaml.
        #[arg(long, default_value_t = 1)]
        intra_op_threads: usize,
        /// Also write `transformer`: the pre-LN transformer block on [N, 64, 256] (4 heads, GELU MLP 1024).
        #[arg(long)]
        transformer: bool,
        /// Extra lines appended to each config.yaml (e.g. "device: cuda\nprecision: fp16").
        #[arg(long, value_name = "YAML", default_value = "")]
        config_extra: String,
    },
    /// Writes a model version's reference set: seeded inputs, run once on the CPU at FP32, and the outputs it gave
    /// (`<version folder>/reference.json` by default), for drift probes (`meridian-prober`).
    Reference {
        /// The version folder (`<repository>/<model>/<version>`, holding model.onnx).
        #[arg(long, value_name = "DIR")]
        version_dir: PathBuf,
        /// Rows of the inputs.
        #[arg(long, default_value_t = 8)]
        rows: usize,
        /// Seed of the inputs.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The largest absolute difference a server's answer may have and still agree.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f64,
        /// Where to write it (default: reference.json in the version folder).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Measures what a served model's executor costs per row with nothing around it: the version prepared exactly
    /// as the server prepares it (the folder's config.yaml or config.pbtxt: batch buckets, intra-op threads,
    /// precision, device), batches run back to back on one thread, the process's CPU time per row. The baseline of
    /// `bench-sidecar`'s serving_efficiency.
    ExecutorCost {
        /// The model folder (`<repository>/<model>`).
        #[arg(long, value_name = "DIR")]
        model_dir: PathBuf,
        /// The version folder to measure (default: the highest).
        #[arg(long)]
        version: Option<u64>,
        /// Batch sizes (rows) to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batch: Vec<usize>,
        /// Seconds per batch size.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Where the model runs unless its config pins a device (as the server's --device).
        #[arg(long, value_name = "auto|cpu|cuda[:N]", default_value = "cpu")]
        device: DeviceChoice,
    },
    /// Measures a model's executor outside the server (no gRPC, no batcher): its agreement with the CPU at FP32,
    /// which ops stay on the host, then rows/s per batch size and thread count, host copies included.
    Bench {
        /// The ONNX file.
        #[arg(long, value_name = "FILE")]
        model: PathBuf,
        /// Where it runs.
        #[arg(long, value_name = "auto|cpu|cuda[:N]", default_value = "auto")]
        device: DeviceChoice,
        /// fp32 or fp16.
        #[arg(long, default_value = "fp32")]
        precision: Precision,
        /// Batch sizes (rows) to measure, each with its own plan.
        #[arg(long, value_delimiter = ',', default_value = "1,32,256,1024")]
        batch: Vec<usize>,
        /// Threads running batches at once (each its own CUDA stream on the GPU).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        threads: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Rows of the deterministic input the CPU comparison runs.
        #[arg(long, default_value_t = 8)]
        check_rows: usize,
        /// Write the first output on that input here (FP32, little-endian), for outside comparisons.
        #[arg(long, value_name = "FILE")]
        dump_output: Option<PathBuf>,
    },
    /// Compiles tract-cuda's kernel libraries into its cubin cache, without a GPU, so a GPU start does not
    /// spend minutes compiling. Needs NVRTC 13.0 on LD_LIBRARY_PATH (PyPI nvidia-cuda-nvrtc) and its headers.
    CudaPrecompile {
        /// GPU architectures, as compute capability without the dot (90: H100/H200).
        #[arg(long, value_delimiter = ',', default_value = "90")]
        arch: Vec<u32>,
        /// The cache root the sidecar will run with as XDG_CACHE_HOME; default: this user's cache folder.
        #[arg(long, value_name = "DIR")]
        cache_home: Option<PathBuf>,
        /// A CUDA toolkit root or the PyPI wheels' nvidia/cu13 folder (cuda_fp16.h, CCCL); default: $CUDA_HOME.
        #[arg(long, value_name = "DIR", env = "CUDA_HOME")]
        cuda_home: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::GenerateModels {
            out,
            mlp_dims,
            seed,
            max_batch_size,
            no_dynamic_batching,
            max_queue_delay_us,
            intra_op_threads,
            transformer,
            config_extra,
        }) => {
            anyhow::ensure!(mlp_dims.len() >= 2, "--mlp-dims needs at least an input and an output width");
            let batching = if no_dynamic_batching {
                String::new()
            } else {
                format!("dynamic_batching:\n  max_queue_delay_us: {max_queue_delay_us}\n  max_queue_size: 1024\n")
            };
            let extra = if config_extra.is_empty() { String::new() } else { format!("{}\n", config_extra.trim_end()) };
            let config =
                format!("max_batch_size: {max_batch_size}\nintra_op_threads: {intra_op_threads}\n{batching}{extra}");
            write_model(&out, "mlp", &models::mlp(&mlp_dims, seed), &config)?;
            write_model(&out, "echo_types", &models::echo_types(4), &format!("max_batch_size: {max_batch_size}\n"))?;
            let mut written = vec!["mlp", "echo_types"];
            if transformer {
                write_model(&out, "transformer", &models::transformer_block(models::BlockShape::BENCH, seed), &config)?;
                written.push("transformer");
            }
            println!("wrote {} under {}", written.join(", "), out.display());
            Ok(())
        }
        Some(Command::Reference { version_dir, rows, seed, tolerance, out }) => {
            let version = version_dir.file_name().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
            let model = version_dir
                .parent()
                .and_then(|m| m.file_name())
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_default();
            anyhow::ensure!(
                version.parse::<u64>().is_ok() && !model.is_empty(),
                "--version-dir {} is not <repository>/<model>/<version number>",
                version_dir.display()
            );
            let options = meridian_sidecar::reference::ReferenceOptions { model, version, rows, seed, tolerance };
            let set = meridian_sidecar::reference::make(&version_dir.join("model.onnx"), &options)?;
            let out = out.unwrap_or_else(|| version_dir.join("reference.json"));
            std::fs::write(&out, serde_json::to_string(&set)?).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} ({} rows of {}/{})", out.display(), rows, set.model, set.version);
            Ok(())
        }
        Some(Command::ExecutorCost { model_dir, version, batch, seconds, device }) => {
            tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
            executor_cost(&model_dir, version, &batch, seconds, device)
        }
        Some(Command::Bench { model, device, precision, batch, threads, seconds, check_rows, dump_output }) => {
            tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
            device.restrict_visible_devices();
            bench(&model, device, precision, &batch, &threads, seconds, check_rows, dump_output.as_deref())
        }
        Some(Command::CudaPrecompile { arch, cache_home, cuda_home }) => {
            let options = kernels::PrecompileOptions { archs: arch, cache_home, cuda_home };
            let started = std::time::Instant::now();
            let cubins = kernels::precompile(&options)?;
            for c in &cubins {
                println!(
                    "{} {} {} {}",
                    c.arch,
                    c.library,
                    if c.compiled { "compiled" } else { "cached" },
                    c.path.display()
                );
            }
            println!(
                "cuda-precompile: {} libraries ({} compiled) in {:.1} s",
                cubins.len(),
                cubins.iter().filter(|c| c.compiled).count(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        None => serve(cli.serve),
    }
}

#[allow(clippy::too_many_arguments)]
fn bench(
    model: &std::path::Path,
    device: DeviceChoice,
    precision: Precision,
    batches: &[usize],
    threads: &[usize],
    seconds: f64,
    check_rows: usize,
    dump_output: Option<&std::path::Path>,
) -> Result<()> {
    use meridian_sidecar::executor::{bench, cuda, device::Devices, PrepareOptions};
    let devices = Devices::select(device, cuda::probe)?;
    eprintln!("{}", devices.summary());
    let runtime = devices.runtime_for(Some(device)).map_err(anyhow::Error::msg)?;
    let mut buckets = batches.to_vec();
    buckets.push(check_rows);
    let options = PrepareOptions { batch_buckets: buckets, threads: 1, precision };
    let started = std::time::Instant::now();
    let exec = runtime.prepare(model, &options)?;
    let prepare_s = started.elapsed().as_secs_f64();
    let reference = devices
        .runtime_for(Some(DeviceChoice::Cpu))
        .map_err(anyhow::Error::msg)?
        .prepare(model, &PrepareOptions { batch_buckets: vec![check_rows], ..Default::default() })?;
    let diff = bench::max_abs_diff(exec.as_ref(), reference.as_ref(), check_rows)?;
    let name = model
        .parent()
        .and_then(|v| v.parent())
        .and_then(|m| m.file_name())
        .map_or_else(|| model.display().to_string(), |n| n.to_string_lossy().into_owned());
    let host = if runtime.name() == "cuda" {
        let largest = batches.iter().copied().max().unwrap_or(check_rows);
        cuda::host_ops(&exec.plan_ops(largest))
    } else {
        Vec::new()
    };
    let label = format!("model={name} device={} precision={}", runtime.name(), precision.name());
    println!(
        "bench: {label} prepare_s={prepare_s:.2} check_rows={check_rows} max_abs_diff_vs_cpu_fp32={diff:.3e} host_ops=[{}]",
        host.join(",")
    );
    if let Some(path) = dump_output {
        let values = bench::output(exec.as_ref(), check_rows)?;
        std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for &rows in batches {
        for &n in threads {
            let t = bench::throughput(exec.as_ref(), rows, n, Duration::from_secs_f64(seconds))?;
            println!(
                "bench: {label} batch={rows} threads={n} rows_per_s={:.0} ms_per_batch={:.3}",
                t.rows_per_second, t.ms_per_batch
            );
        }
    }
    Ok(())
}

fn executor_cost(
    model_dir: &std::path::Path,
    version: Option<u64>,
    batches: &[usize],
    seconds: f64,
    device: DeviceChoice,
) -> Result<()> {
    use meridian_sidecar::executor::{bench, cuda, device::Devices};
    use meridian_sidecar::repository::model_config::ModelConfig;
    let config = ModelConfig::load(model_dir)?;
    let version = match version {
        Some(v) => v,
        None => std::fs::read_dir(model_dir)
            .with_context(|| format!("listing {}", model_dir.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .with_context(|| format!("{}: no version folder", model_dir.display()))?,
    };
    let path = model_dir.join(version.to_string()).join("model.onnx");
    let devices = Devices::select(config.device.unwrap_or(device), cuda::probe)?;
    let (exec, on) = devices.prepare(config.device, &path, &config.prepare_options()).map_err(anyhow::Error::msg)?;
    for &rows in batches {
        let cost = bench::cpu_cost(exec.as_ref(), rows, Duration::from_secs_f64(seconds))?;
        println!(
            "executor-cost: device={on} batch={rows} rows_per_cpu_s={:.1} rows_per_s={:.1} batches={}",
            cost.rows_per_cpu_second, cost.rows_per_second, cost.batches
        );
    }
    Ok(())
}

fn write_model(repo: &std::path::Path, name: &str, onnx: &[u8], config: &str) -> Result<()> {
    let dir = repo.join(name).join("1");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("model.onnx"), onnx).with_context(|| format!("writing {}/model.onnx", dir.display()))?;
    std::fs::write(repo.join(name).join("config.yaml"), config)
        .with_context(|| format!("writing {name}/config.yaml"))?;
    Ok(())
}

fn serve(args: Serve) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log))
        .with_context(|| format!("--log {}", args.log))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    anyhow::ensure!(args.drain_grace_secs >= 0.0, "--drain-grace-secs must not be negative");
    anyhow::ensure!(args.repository_poll_secs >= 0.0, "--repository-poll-secs must not be negative");
    anyhow::ensure!(args.tls_poll_secs > 0.0, "--tls-poll-secs must be positive");
    anyhow::ensure!(args.max_message_bytes >= 1024, "--max-message-bytes must be at least 1024");
    anyhow::ensure!(args.max_header_bytes >= 1024, "--max-header-bytes must be at least 1024");
    anyhow::ensure!(args.max_concurrent_streams >= 1, "--max-concurrent-streams must be at least 1");
    anyhow::ensure!(
        args.request_timeout_secs.is_finite() && args.request_timeout_secs > 0.0,
        "--request-timeout-secs must be positive"
    );
    anyhow::ensure!(
        args.preface_timeout_secs.is_finite() && args.preface_timeout_secs > 0.0,
        "--preface-timeout-secs must be positive"
    );
    let limits = Limits {
        max_message_bytes: args.max_message_bytes,
        max_header_list_bytes: args.max_header_bytes,
        max_concurrent_streams: args.max_concurrent_streams,
        request_timeout: Duration::from_secs_f64(args.request_timeout_secs),
        preface_timeout: Duration::from_secs_f64(args.preface_timeout_secs),
        ..Limits::default()
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.trace_sampling_ratio),
        "--trace-sampling-ratio must be between 0 and 1, not {}",
        args.trace_sampling_ratio
    );
    anyhow::ensure!(args.otlp_flush_secs > 0.0, "--otlp-flush-secs must be positive");
    let trace_options = args.otlp_endpoint.map(|endpoint| TraceOptions {
        endpoint,
        service_name: args.otlp_service_name,
        resource: args.otlp_resource,
        sampling_ratio: args.trace_sampling_ratio,
        flush: Duration::from_secs_f64(args.otlp_flush_secs),
    });
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            files: TlsFiles { cert, key, client_ca: args.tls_client_ca },
            poll_interval: Duration::from_secs_f64(args.tls_poll_secs),
            trusted_proxies: args.trusted_proxy,
            metrics: args.metrics_tls,
        }),
        _ => None,
    };
    // Before any thread starts: tract-cuda drives the first visible device.
    args.device.restrict_visible_devices();
    let config = ServerConfig {
        model_repository: args.model_repository.context("--model-repository is required")?,
        grpc_listen: args.grpc_listen,
        metrics_listen: args.metrics_listen,
        http_listen: args.http_listen,
        device: args.device,
        poll_interval: (args.repository_poll_secs > 0.0).then(|| Duration::from_secs_f64(args.repository_poll_secs)),
        drain_grace: Duration::from_secs_f64(args.drain_grace_secs),
        caller_header: args.caller_header.to_ascii_lowercase(),
        tls,
        limits,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    builder.worker_threads(if args.io_threads > 0 { args.io_threads } else { (cores / 2).max(1) });
    let runtime = builder.enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        if let Some(options) = &trace_options {
            telemetry::install(options).context("--otlp-endpoint")?;
        }
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return std::future::pending().await;
                }
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        };
        server::run(config, shutdown, |bound| {
            // One line on stdout that scripts can wait for.
            println!("meridian-sidecar listening grpc={} metrics={} http={}", bound.grpc, bound.metrics, bound.http);
        })
        .await?;
        // The last spans, before the exporter's connection goes away.
        let _ = tokio::task::spawn_blocking(telemetry::shutdown).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

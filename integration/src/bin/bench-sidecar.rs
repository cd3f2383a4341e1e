//! `make bench-sidecar`: closed-loop batch-1 requests to the MLP
//! 512→2048→2048→10, with server-side dynamic batching on and off,
//! interleaved in one run, at several concurrencies. Prints req/s, p50/p99
//! latency and server CPU per request, then one machine-readable line:
//! `bench-sidecar: batching_gain_c32=<ratio> p99_on_ms=<x> p99_off_ms=<y>`.
//! A third sidecar, batching on, serves behind mutual TLS (client
//! certificates required, the caller's SPIFFE ID checked against the
//! model's `allowed_identities`), measured in the same rounds:
//! `bench-sidecar-mtls: throughput_ratio_c32=<mTLS / plaintext>`.
//!
//! Serving efficiency: the batch sizes the batcher formed during the
//! batching-on runs at the top concurrency (from ModelStatistics) are run
//! again on the bare executor, prepared as the server prepares it
//! (`meridian-sidecar executor-cost`); the CPU those rows would cost there,
//! over the CPU the server spent serving them, is
//! `serving_efficiency=<x>` on the `bench-sidecar:` line (1.0: serving adds
//! nothing to the executor's own cost).

use anyhow::{Context, Result};
use meridian_integration::bench::{arg, Tally};
use meridian_integration::sidecar::{generate_models, process_cpu_time, Sidecar};
use meridian_pki::{Authority, Validity, Workload, WorkloadFiles};
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::{ModelInferRequest, ModelStatisticsRequest};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

#[derive(Debug, Default, Clone)]
struct Sample {
    tally: Tally,
    server_cpu: Duration,
    client_cpu: Duration,
}

impl std::ops::Deref for Sample {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.tally
    }
}

impl Sample {
    fn merge(&mut self, o: Sample) {
        self.tally.merge(o.tally);
        self.server_cpu += o.server_cpu;
        self.client_cpu += o.client_cpu;
    }
    fn cpu_ms_per_req(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e3 / self.requests.max(1) as f64
    }
    fn client_cpu_ms_per_req(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e3 / self.requests.max(1) as f64
    }
}

fn request(seed: usize) -> ModelInferRequest {
    let values: Vec<u8> = (0..512).flat_map(|i| (((seed * 31 + i) % 97) as f32 / 97.0).to_le_bytes()).collect();
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 512],
            ..Default::default()
        }],
        raw_input_contents: vec![values],
        ..Default::default()
    }
}

async fn closed_loop(channels: &[Channel], concurrency: usize, duration: Duration) -> Sample {
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let mut client = GrpcInferenceServiceClient::new(channels[i % channels.len()].clone());
            let req = request(i);
            tokio::spawn(async move {
                let mut s = Tally::default();
                while start.elapsed() < duration {
                    let t = Instant::now();
                    match client.model_infer(req.clone()).await {
                        Ok(_) => {
                            s.requests += 1;
                            s.latencies.push(t.elapsed());
                        }
                        Err(_) => s.errors += 1,
                    }
                }
                s
            })
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        if let Ok(s) = t.await {
            tally.merge(s);
        }
    }
    tally.wall = start.elapsed();
    Sample { tally, ..Sample::default() }
}

async fn connect(sidecar: &Sidecar, n: usize, tls: Option<&ClientTlsConfig>) -> Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..n {
        let endpoint = match tls {
            None => Channel::from_shared(format!("http://{}", sidecar.grpc()))?,
            Some(tls) => Channel::from_shared(format!("https://{}", sidecar.grpc()))?.tls_config(tls.clone())?,
        };
        channels.push(endpoint.tcp_nodelay(true).connect().await?);
    }
    Ok(channels)
}

/// A CA, the sidecar's certificate and the client's, under `dir`; the
/// client's TLS configuration.
fn pki(dir: &std::path::Path) -> Result<(WorkloadFiles, ClientTlsConfig)> {
    let ca = Authority::generate("bench CA", Validity::days(1))?;
    let server = WorkloadFiles::new(dir.join("server"));
    server.write(&ca.issue(&Workload::spiffe("spiffe://bench/ns/models/sa/sidecar")?)?, ca.cert_pem())?;
    let client = ca.issue(&Workload::spiffe(CLIENT)?)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    Ok((server, tls))
}

const CLIENT: &str = "spiffe://bench/ns/app/sa/bench-client";

/// Batches run so far per batch size (rows), from ModelStatistics.
async fn batch_counts(channel: &Channel) -> Result<BTreeMap<usize, u64>> {
    let stats = GrpcInferenceServiceClient::new(channel.clone())
        .model_statistics(ModelStatisticsRequest { name: "mlp".into(), version: String::new() })
        .await?
        .into_inner();
    let mut counts = BTreeMap::new();
    for model in stats.model_stats {
        for b in model.batch_stats {
            let count = b.compute_infer.map_or(0, |d| d.count);
            *counts.entry(b.batch_size as usize).or_default() += count;
        }
    }
    Ok(counts)
}

/// Rows per CPU-second of the bare executor at each batch size, from
/// `meridian-sidecar executor-cost` over the served model's folder.
fn executor_cost(model_dir: &std::path::Path, sizes: &[usize], seconds: f64) -> Result<BTreeMap<usize, f64>> {
    let list = sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let out = std::process::Command::new(meridian_integration::sidecar::binary()?)
        .arg("executor-cost")
        .arg("--model-dir")
        .arg(model_dir)
        .args(["--batch", &list, "--seconds", &seconds.to_string()])
        .output()
        .context("running meridian-sidecar executor-cost")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "executor-cost failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    let mut rates = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("executor-cost:")) {
        let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
        let batch: usize = field("batch=").context("batch=")?.parse()?;
        let rate: f64 = field("rows_per_cpu_s=").context("rows_per_cpu_s=")?.parse()?;
        rates.insert(batch, rate);
    }
    Ok(rates)
}

fn main() -> Result<()> {
    let seconds: f64 = arg("--seconds", "4").parse().context("--seconds")?;
    let rounds: usize = arg("--rounds", "2").parse().context("--rounds")?;
    let levels: Vec<usize> = arg("--concurrency", "1,8,32").split(',').map(|c| c.parse()).collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let (on_dir, off_dir, mtls_dir) = (dir.path().join("on"), dir.path().join("off"), dir.path().join("mtls"));
    let threads = arg("--intra-op-threads", "2");
    let delay = arg("--max-queue-delay-us", "500");
    generate_models(
        &on_dir,
        &["--max-batch-size", "64", "--intra-op-threads", &threads, "--max-queue-delay-us", &delay],
    )?;
    generate_models(&off_dir, &["--max-batch-size", "64", "--intra-op-threads", &threads, "--no-dynamic-batching"])?;
    let allowed = format!("allowed_identities: ['{CLIENT}']");
    generate_models(
        &mtls_dir,
        &[
            "--max-batch-size",
            "64",
            "--intra-op-threads",
            &threads,
            "--max-queue-delay-us",
            &delay,
            "--config-extra",
            &allowed,
        ],
    )?;
    let (server_files, client_tls) = pki(&dir.path().join("pki"))?;
    let io = arg("--io-threads", "0");
    let flags = ["--log", "warn", "--repository-poll-secs", "0", "--io-threads", io.as_str()];
    let on = Sidecar::start("127.0.0.1", &on_dir, &flags)?;
    let off = Sidecar::start("127.0.0.1", &off_dir, &flags)?;
    let path = |p: std::path::PathBuf| p.display().to_string();
    let (cert, key, ca) = (path(server_files.cert()), path(server_files.key()), path(server_files.ca()));
    let mut tls_flags = flags.to_vec();
    tls_flags.extend(["--tls-cert", cert.as_str(), "--tls-key", key.as_str(), "--tls-client-ca", ca.as_str()]);
    let mtls = Sidecar::start("127.0.0.1", &mtls_dir, &tls_flags)?;

    // One client thread, so the client's share of the two cores is the same
    // in both modes.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = Duration::from_secs_f64(seconds);
    let mut results: BTreeMap<(usize, &str), Sample> = BTreeMap::new();
    let top = *levels.iter().max().unwrap_or(&32);
    // Batches the batcher formed during the batching-on runs at `top`, and
    // the CPU the same rows cost on the bare executor, measured in the same
    // round (this machine's speed drifts between minutes).
    let mut formed: BTreeMap<usize, u64> = BTreeMap::new();
    let mut raw_cpu = 0.0f64;
    let executor_seconds: f64 = arg("--executor-seconds", "0.5").parse().context("--executor-seconds")?;
    rt.block_on(async {
        let on_channels = connect(&on, 4, None).await?;
        let off_channels = connect(&off, 4, None).await?;
        let mtls_channels = connect(&mtls, 4, Some(&client_tls)).await?;
        // Warm the servers up.
        for channels in [&on_channels, &off_channels, &mtls_channels] {
            let warm = closed_loop(channels, 8, Duration::from_millis(500)).await;
            anyhow::ensure!(warm.errors == 0 && warm.requests > 0, "warm-up calls failed");
        }
        for round in 0..rounds {
            for &c in &levels {
                for (mode, sidecar, channels) in
                    [("on", &on, &on_channels), ("off", &off, &off_channels), ("mtls", &mtls, &mtls_channels)]
                {
                    let counted = mode == "on" && c == top;
                    let before = if counted { batch_counts(&channels[0]).await? } else { BTreeMap::new() };
                    let cpu0 = sidecar.cpu_time()?;
                    let me0 = process_cpu_time(std::process::id())?;
                    let mut s = closed_loop(channels, c, duration).await;
                    s.server_cpu = sidecar.cpu_time()?.saturating_sub(cpu0);
                    s.client_cpu = process_cpu_time(std::process::id())?.saturating_sub(me0);
                    if counted {
                        let mut round: BTreeMap<usize, u64> = BTreeMap::new();
                        for (size, n) in batch_counts(&channels[0]).await? {
                            let n = n - before.get(&size).copied().unwrap_or(0);
                            if n > 0 {
                                round.insert(size, n);
                            }
                        }
                        let sizes: Vec<usize> = round.keys().copied().collect();
                        let rates = executor_cost(&on_dir.join("mlp"), &sizes, executor_seconds)?;
                        for (size, n) in round {
                            raw_cpu += (size as u64 * n) as f64 / rates[&size];
                            *formed.entry(size).or_default() += n;
                        }
                    }
                    eprintln!(
                        "round {round} c={c:<3} batching {mode:<3}: {:>8.0} req/s p50 {:>6.2} ms p99 {:>6.2} ms, {} errors",
                        s.rps(),
                        s.pct(0.5),
                        s.pct(0.99),
                        s.errors
                    );
                    results.entry((c, mode)).or_default().merge(s);
                }
            }
        }
        anyhow::Ok(())
    })?;

    println!(
        "{:<6} {:<9} {:>10} {:>9} {:>9} {:>18} {:>18} {:>7}",
        "conc", "batching", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "client CPU ms/req", "errors"
    );
    for ((c, mode), s) in &results {
        println!(
            "{c:<6} {mode:<9} {:>10.0} {:>9.2} {:>9.2} {:>18.3} {:>18.3} {:>7}",
            s.rps(),
            s.pct(0.5),
            s.pct(0.99),
            s.cpu_ms_per_req(),
            s.client_cpu_ms_per_req(),
            s.errors
        );
    }
    for &c in &levels {
        if let (Some(a), Some(b)) = (results.get(&(c, "on")), results.get(&(c, "off"))) {
            println!("c={c}: throughput on/off = {:.2}x", a.rps() / b.rps());
        }
    }
    let (on_s, off_s) = (&results[&(top, "on")], &results[&(top, "off")]);

    let served_rows: u64 = formed.iter().map(|(size, n)| *size as u64 * n).sum();
    let served_cpu = on_s.server_cpu.as_secs_f64();
    let efficiency = raw_cpu / served_cpu.max(1e-9);
    let mean_batch = served_rows as f64 / formed.values().sum::<u64>().max(1) as f64;
    let histogram: Vec<String> = formed.iter().map(|(size, n)| format!("{size}:{n}")).collect();
    println!(
        "bench-sidecar-efficiency: c={top} rows={served_rows} (requests {}) mean_batch={mean_batch:.1} \
         served_rows_per_cpu_s={:.0} raw_rows_per_cpu_s={:.0} batches=[{}]",
        on_s.requests,
        served_rows as f64 / served_cpu.max(1e-9),
        served_rows as f64 / raw_cpu.max(1e-9),
        histogram.join(" ")
    );
    println!(
        "bench-sidecar: batching_gain_c{top}={:.2} p99_on_ms={:.2} p99_off_ms={:.2} serving_efficiency={efficiency:.2} \
         (c={top}; bar >= 0.85)",
        on_s.rps() / off_s.rps(),
        on_s.pct(0.99),
        off_s.pct(0.99)
    );
    let mtls_s = &results[&(top, "mtls")];
    println!(
        "bench-sidecar-mtls: throughput_ratio_c{top}={:.2} (mTLS {:.0} req/s / plaintext {:.0} req/s, batching on; \
         bar >= 0.85) p99_mtls_ms={:.2} errors={}",
        mtls_s.rps() / on_s.rps(),
        mtls_s.rps(),
        on_s.rps(),
        mtls_s.pct(0.99),
        mtls_s.errors
    );
    Ok(())
}

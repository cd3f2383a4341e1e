//! `bench-serve`: closed-loop load on a running sidecar, for the served
//! throughput of the GPU device script: `--concurrency` callers each send
//! `--rows` rows per request to `--model` for `--seconds`; prints requests
//! and rows per second, p50/p99 and the mean batch the server formed (from
//! the `x-meridian-batch-size` response header), ending with one line:
//! `bench-serve: model=<m> rows_per_s=<x> mean_batch_rows=<b> p99_ms=<y> errors=<n>`.

use anyhow::{Context, Result};
use meridian_integration::bench::{arg, Tally};
use meridian_proto::headers;
use meridian_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use meridian_proto::inference::model_infer_request::InferInputTensor;
use meridian_proto::inference::ModelInferRequest;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn request(model: &str, input: &str, rows: usize, row_shape: &[usize], salt: usize) -> ModelInferRequest {
    let per_row: usize = row_shape.iter().product();
    let values: Vec<u8> =
        (0..rows * per_row).flat_map(|i| ((((salt * 31 + i) % 97) as f32 / 97.0) - 0.5).to_le_bytes()).collect();
    let mut shape = vec![rows as i64];
    shape.extend(row_shape.iter().map(|&d| d as i64));
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor { name: input.into(), datatype: "FP32".into(), shape, ..Default::default() }],
        raw_input_contents: vec![values],
        ..Default::default()
    }
}

fn main() -> Result<()> {
    let addr = arg("--addr", "127.0.0.1:8001");
    let model = arg("--model", "mlp");
    let input = arg("--input", "input");
    let row_shape: Vec<usize> =
        arg("--row-shape", "512").split(',').map(|d| d.parse()).collect::<Result<_, _>>().context("--row-shape")?;
    let rows: usize = arg("--rows", "64").parse().context("--rows")?;
    let concurrency: usize = arg("--concurrency", "64").parse().context("--concurrency")?;
    let connections: usize = arg("--connections", "8").parse().context("--connections")?;
    let seconds: f64 = arg("--seconds", "5").parse().context("--seconds")?;
    let threads: usize = arg("--threads", "4").parse().context("--threads")?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()?;
    let (tally, batch_rows) = rt.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            channels.push(Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?);
        }
        // Warm-up: plans, allocations, connections.
        let mut warm = GrpcInferenceServiceClient::new(channels[0].clone()).max_decoding_message_size(256 << 20);
        warm.model_infer(request(&model, &input, rows, &row_shape, 0)).await.context("warm-up call")?;
        let duration = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let mut client = GrpcInferenceServiceClient::new(channels[i % channels.len()].clone())
                    .max_decoding_message_size(256 << 20);
                let req = request(&model, &input, rows, &row_shape, i);
                tokio::spawn(async move {
                    let (mut t, mut batch_rows) = (Tally::default(), Vec::new());
                    while start.elapsed() < duration {
                        let sent = Instant::now();
                        match client.model_infer(req.clone()).await {
                            Ok(resp) => {
                                t.requests += 1;
                                t.latencies.push(sent.elapsed());
                                if let Some(b) = resp.metadata().get(headers::BATCH_SIZE) {
                                    batch_rows.extend(b.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
                                }
                            }
                            Err(_) => t.errors += 1,
                        }
                    }
                    (t, batch_rows)
                })
            })
            .collect();
        let (mut tally, mut batch_rows) = (Tally::default(), Vec::new());
        for task in tasks {
            let (t, b) = task.await?;
            tally.merge(t);
            batch_rows.extend(b);
        }
        tally.wall = start.elapsed();
        anyhow::Ok((tally, batch_rows))
    })?;
    let mean_batch = batch_rows.iter().sum::<u64>() as f64 / batch_rows.len().max(1) as f64;
    println!(
        "{model}: {:.0} req/s, {:.0} rows/s ({rows} rows per request, {concurrency} callers), p50 {:.2} ms, p99 {:.2} ms, \
         mean batch {mean_batch:.1} rows, {} errors",
        tally.rps(),
        tally.rps() * rows as f64,
        tally.pct(0.5),
        tally.pct(0.99),
        tally.errors
    );
    println!(
        "bench-serve: model={model} rows_per_s={:.0} mean_batch_rows={mean_batch:.1} p99_ms={:.2} errors={}",
        tally.rps() * rows as f64,
        tally.pct(0.99),
        tally.errors
    );
    Ok(())
}

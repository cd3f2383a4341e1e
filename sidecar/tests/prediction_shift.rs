//! The prediction shift monitor on a running server: the first window of
//! the MLP's predicted classes is the baseline; a window of fresh inputs
//! from the same distribution keeps `meridian_prediction_psi` below the
//! alert threshold (0.2, `deploy/prometheus/meridian.alerts.yml`), a window
//! of shifted inputs takes it above.

mod common;

use common::{mlp_request, write_model, TestServer, DIMS, SEED};
use meridian_sidecar::models;

const WINDOW: usize = 400;
const THRESHOLD: f64 = 0.2;

/// `rows` inputs uniform in [-1, 1] (seeded), times `scale`, plus `shift`.
fn inputs(seed: u64, rows: usize, scale: f32, shift: f32) -> Vec<f32> {
    models::weights(seed, 0, rows * DIMS[0], 1.0).into_iter().map(|v| v * scale + shift).collect()
}

async fn send_window(server: &TestServer, values: &[f32]) {
    let mut client = server.client().await;
    for chunk in values.chunks(40 * DIMS[0]) {
        let rows = chunk.len() / DIMS[0];
        client.model_infer(mlp_request(rows, chunk)).await.expect("inference");
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    let key = format!("{name}{{model=\"mlp\",version=\"1\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn psi_stays_below_the_threshold_for_the_same_inputs_and_crosses_it_for_shifted_ones() {
    let server = TestServer::start(|repo| {
        let config = format!("max_batch_size: 64\nprediction_shift: {{window_rows: {WINDOW}}}\n");
        write_model(repo, "mlp", 1, &models::mlp(&DIMS, SEED), &config);
    })
    .await;

    // The baseline window: no comparison yet.
    send_window(&server, &inputs(100, WINDOW, 1.0, 0.0)).await;
    let text = server.http_get("/metrics").await;
    assert_eq!(metric(&text, "meridian_prediction_windows_total"), Some(0.0), "{text}");

    // Fresh inputs of the same distribution.
    send_window(&server, &inputs(200, WINDOW, 1.0, 0.0)).await;
    let text = server.http_get("/metrics").await;
    assert_eq!(metric(&text, "meridian_prediction_windows_total"), Some(1.0));
    let same = metric(&text, "meridian_prediction_psi").expect("psi exported");
    assert!(same < THRESHOLD, "the same distribution gave PSI {same}");

    // Shifted and scaled inputs move the predicted classes.
    send_window(&server, &inputs(300, WINDOW, 3.0, 2.0)).await;
    let text = server.http_get("/metrics").await;
    assert_eq!(metric(&text, "meridian_prediction_windows_total"), Some(2.0));
    let shifted = metric(&text, "meridian_prediction_psi").expect("psi exported");
    assert!(shifted > THRESHOLD, "shifted inputs gave PSI {shifted} (same: {same})");
    eprintln!("prediction shift: same distribution psi={same:.4}, shifted psi={shifted:.4}");
}

#[tokio::test]
async fn a_config_with_an_unknown_prediction_shift_key_is_refused_by_name() {
    let server = TestServer::start(|repo| {
        write_model(repo, "mlp", 1, &models::mlp(&DIMS, SEED), "prediction_shift: {window: 10}\n");
    })
    .await;
    let mut client = server.client().await;
    let err = client.model_infer(mlp_request(1, &[0.0; 16])).await.expect_err("the model did not load");
    assert!(err.message().contains("unknown field `window`"), "{}", err.message());
}

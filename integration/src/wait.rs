//! Polling helpers for tests: wait for a condition with a deadline, never
//! for a fixed time.

use crate::load::{Load, Record};
use std::time::{Duration, Instant};

/// Polls `done` over the load's records every 20 ms until it holds; fails
/// naming `what` after `within`.
pub async fn until_records(
    load: &Load,
    within: Duration,
    what: &str,
    done: impl Fn(&[Record]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if done(&load.records()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `count` calls were sent after `since`.
pub async fn calls_after(load: &Load, since: Instant, count: usize) -> anyhow::Result<()> {
    until_records(load, Duration::from_secs(30), &format!("{count} calls"), |r| {
        r.iter().filter(|r| r.sent > since).count() >= count
    })
    .await
}

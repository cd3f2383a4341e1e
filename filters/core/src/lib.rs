//! Meridian's decision core: the logic the Proxy-Wasm filters run per
//! request, as plain Rust with no proxy-wasm dependency, no clock and no
//! I/O. Time (`now_ms`) and state snapshots are passed in, so every decision
//! is a function of its inputs and is tested natively.
//!
//! - [`region`]: which regions may serve a request and in which order —
//!   residency as a hard filter, health and breakers, latency and load
//!   scores, locality, hysteresis against flapping, spill-over.
//! - [`breaker`]: a circuit breaker per (region, model) with gRPC-aware
//!   outcome classification.
//! - [`budget`]: retry budgets and the per-attempt retry decision.
//!
//! Not wired into the wasm adapter yet: the filters module still only stamps
//! its header (see docs/ARCHITECTURE.md).

#![forbid(unsafe_code)]

pub mod breaker;
pub mod budget;
pub mod region;

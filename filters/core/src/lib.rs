//! Meridian's decision core: the logic the Proxy-Wasm filters run per
//! request, as plain Rust with no proxy-wasm dependency, no clock and no
//! I/O. Time (`now_ms`) and state snapshots are passed in, so every decision
//! is a function of its inputs and is tested natively.
//!
//! - [`config`]: the plugin configuration and its validation.
//! - [`request`]: a request's attributes, from its headers.
//! - [`region`]: which regions may serve a request (and, for explain, why
//!   not) and in which order —
//!   residency as a hard filter, health and breakers, latency and load
//!   scores, locality, hysteresis against flapping, spill-over.
//! - [`breaker`]: a circuit breaker per (region, model) with gRPC-aware
//!   outcome classification.
//! - [`budget`]: retry rules and budgets.
//! - [`canary`]: version splitting (sticky buckets, header override) and
//!   the progressive rollout's step machine.
//! - [`state`]: the state shared by Envoy's workers, and the deltas that
//!   change it.
//! - [`probe`]: the `grpc.health.v1` check the prober sends, and how its
//!   answer reads.
//! - [`decision`]: one worker's planner: request → cluster and retry grant,
//!   or a local reply; finished request → outcomes.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod budget;
pub mod canary;
pub mod config;
pub mod decision;
pub mod probe;
pub mod region;
pub mod request;
pub mod state;

pub use config::{ConfigError, FilterConfig};
pub use decision::{Completion, Decision, Planner, RoutePlan};
pub use request::RequestAttrs;

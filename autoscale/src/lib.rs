//! Meridian's autoscaler, as plain Rust: no clock, no I/O, no metrics
//! client. Time and observations are arguments, so a decision is a
//! function of its inputs — the same code decides in the local mesh's
//! regional autoscalers and in `meridianctl simulate`.
//!
//! - [`behavior`]: scale-up and scale-down rules (stabilisation window,
//!   rate policies, `selectPolicy`), with Kubernetes' defaults.
//! - [`hpa`]: the Kubernetes `HorizontalPodAutoscaler` algorithm, step for
//!   step: the usage ratio and its tolerance, the stabilisation of
//!   recommendations, the rate limits over the recorded scale events,
//!   min/max — plus Meridian's schedules (KEDA's cron scaler) and cost cap.
//! - [`schedule`]: cron windows with a replica floor, for known peaks.
//! - [`cost`]: replica-hours over a rolling window, and the ceiling they
//!   leave.
//! - [`simulate`]: a request-rate trace replayed through the autoscaler and
//!   a queueing model of one replica's capacity and start-up time.
//! - [`plot`]: the simulation as an SVG chart.

#![forbid(unsafe_code)]

pub mod behavior;
pub mod cost;
pub mod hpa;
pub mod plot;
pub mod schedule;
pub mod simulate;

pub use behavior::{Behavior, PolicyKind, ScalingPolicy, ScalingRules, SelectPolicy};
pub use hpa::{Autoscaler, Decision, Observation, Reason, Spec, Target};

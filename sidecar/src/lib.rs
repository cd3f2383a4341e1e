//! `meridian-sidecar`: a KServe v2 / Open Inference Protocol model server
//! for ONNX models with server-side dynamic batching.
//!
//! The layers, from the wire inwards (each knows only those below it):
//! - [`grpc`]: the v2 gRPC service and `grpc.health.v1`. Errors map to
//!   gRPC status in `grpc::status`.
//! - [`rest`]: KServe v2 REST; each route becomes the v2 message and is
//!   served by the same service as gRPC (status → HTTP status in one place).
//! - [`repository`]: model folders, version policy, load/unload/reload,
//!   warmup; one [`batcher::Batcher`] per loaded version.
//! - [`batcher`]: queue, pure flush policy, worker threads.
//! - [`executor`]: a prepared model that runs a batch (tract on the CPU,
//!   tract-cuda on the GPU), and where models run.
//! - [`tensor`]: datatype + shape + little-endian bytes.
//!
//! [`metrics`] and [`stats`] observe the batcher, [`telemetry`] traces each
//! call and batch (OpenTelemetry); [`models`] generates the
//! project's own seeded ONNX models.

// Denied everywhere; `executor::cuda::kernels` alone allows it, to call NVRTC.
#![deny(unsafe_code)]

pub mod batcher;
pub mod executor;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod prediction;
pub mod reference;
pub mod repository;
pub mod rest;
pub mod server;
pub mod stats;
pub mod telemetry;
pub mod tensor;
pub mod tls;

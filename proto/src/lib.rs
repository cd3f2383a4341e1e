//! The KServe v2 / Open Inference Protocol gRPC service (with the Triton
//! extensions Triton's clients use) and `grpc.health.v1`, generated once for
//! every Meridian crate.
//!
//! The `.proto` sources live in `proto/proto/`. They are compiled at build
//! time by [protox](https://docs.rs/protox) — no system `protoc` — and the
//! generated code is wire-compatible with Triton's `tritonclient`
//! (checked by `tests/tritonclient_compat.rs`).
//!
//! - [`inference`]: messages, `grpc_inference_service_client` and
//!   `grpc_inference_service_server`.
//! - [`health`]: `grpc.health.v1` messages, client and server.
//! - [`headers`]: the `x-meridian-*` metadata names (always available, also
//!   without the `grpc` feature).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded `FileDescriptorSet`, for reflection
//!   and compatibility checks.

#![forbid(unsafe_code)]

pub mod headers;

/// `package inference`: KServe v2 and Triton's model configuration.
#[cfg(feature = "grpc")]
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// `package grpc.health.v1`: the standard gRPC health checking protocol.
#[cfg(feature = "grpc")]
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all)]
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every Meridian proto.
#[cfg(feature = "grpc")]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/meridian_descriptor.bin"));

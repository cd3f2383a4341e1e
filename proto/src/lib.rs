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
//! - `reference` (feature `reference`): reference sets of inputs and the
//!   outputs a model version gave, for drift probes.
//! - [`headers`]: the `x-meridian-*` metadata names (always available, also
//!   without the `grpc` feature).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded `FileDescriptorSet`, for reflection
//!   and compatibility checks.

#![forbid(unsafe_code)]

pub mod headers;

#[cfg(feature = "reference")]
pub mod reference;

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

/// Envoy's Aggregated Discovery Service (`envoy.service.discovery.v3`,
/// with the messages it uses) and Meridian's control-plane status service
/// (`meridian.xds.v1`), generated from the vendored Envoy API protos
/// (`envoy-api/`, see its SOURCE.md).
#[cfg(feature = "xds")]
#[allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, rustdoc::all)]
pub mod xds {
    include!(concat!(env!("OUT_DIR"), "/xds.rs"));
}

/// The encoded `FileDescriptorSet` of every Envoy resource type the xDS
/// server serves (Listener, RouteConfiguration, Cluster,
/// TypedExtensionConfig, the HTTP connection manager, router, fault, Wasm,
/// aggregate cluster, retry plugins, upstream HTTP options) and their
/// imports: what turns the renderers' JSON into protobuf.
#[cfg(feature = "xds")]
pub const ENVOY_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// The encoded `google.protobuf.FileDescriptorSet` of every Meridian proto.
#[cfg(feature = "grpc")]
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/meridian_descriptor.bin"));

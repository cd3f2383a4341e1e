//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic clients and servers.

fn main() {
    #[cfg(feature = "grpc")]
    grpc::generate();
    #[cfg(feature = "xds")]
    xds::generate();
}

/// Envoy's ADS and Meridian's status service (code), and the descriptors
/// of every Envoy resource the xDS server serves (`envoy_descriptor.bin`).
#[cfg(feature = "xds")]
mod xds {
    use prost_types::FileDescriptorSet;
    use std::path::PathBuf;

    /// The resources the server serves, and the extensions inside them.
    const RESOURCES: &[&str] = &[
        "envoy/service/discovery/v3/ads.proto",
        "envoy/config/listener/v3/listener.proto",
        "envoy/config/cluster/v3/cluster.proto",
        "envoy/config/route/v3/route.proto",
        "envoy/config/core/v3/extension.proto",
        "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
        "envoy/extensions/filters/http/router/v3/router.proto",
        "envoy/extensions/filters/http/fault/v3/fault.proto",
        "envoy/extensions/filters/http/wasm/v3/wasm.proto",
        "envoy/extensions/http/early_header_mutation/header_mutation/v3/header_mutation.proto",
        "envoy/extensions/clusters/aggregate/v3/cluster.proto",
        "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
        "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
        "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
        "envoy/extensions/transport_sockets/tls/v3/tls.proto",
        "envoy/extensions/transport_sockets/tls/v3/secret.proto",
        "envoy/config/trace/v3/opentelemetry.proto",
        "google/protobuf/wrappers.proto",
    ];

    pub(crate) fn generate() {
        let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let api = manifest_dir.join("envoy-api");
        println!("cargo:rerun-if-changed={}", api.display());
        let own = manifest_dir.join("proto");
        let status = "meridian/xds/v1/status.proto";
        println!("cargo:rerun-if-changed={}", own.join(status).display());
        let includes: Vec<PathBuf> = ["data-plane-api", "xds", "protoc-gen-validate", "googleapis"]
            .iter()
            .map(|d| api.join(d))
            .chain([own])
            .collect();
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

        let resources: FileDescriptorSet =
            protox::compile(RESOURCES, &includes).unwrap_or_else(|e| panic!("compiling the Envoy protos: {e}"));
        std::fs::write(out_dir.join("envoy_descriptor.bin"), prost::Message::encode_to_vec(&resources))
            .expect("writing the Envoy descriptor set");

        // Code only for what the server speaks: ADS and the status service
        // (and what their messages use).
        let services: FileDescriptorSet = protox::compile(["envoy/service/discovery/v3/ads.proto", status], &includes)
            .unwrap_or_else(|e| panic!("compiling the xDS services: {e}"));
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .include_file("xds.rs")
            .compile_fds(services)
            .unwrap_or_else(|e| panic!("generating the xDS code: {e}"));
    }
}

#[cfg(feature = "grpc")]
mod grpc {
    use prost_types::FileDescriptorSet;
    use std::path::PathBuf;

    const PROTOS: &[&str] = &["grpc_service.proto", "model_config.proto", "health.proto"];

    pub(crate) fn generate() {
        let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
        let include = manifest_dir.join("proto");
        for proto in PROTOS {
            println!("cargo:rerun-if-changed={}", include.join(proto).display());
        }
        let fds: FileDescriptorSet =
            protox::compile(PROTOS, [&include]).unwrap_or_else(|e| panic!("compiling protos: {e}"));

        let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        let encoded = prost::Message::encode_to_vec(&fds);
        std::fs::write(out_dir.join("meridian_descriptor.bin"), encoded).expect("writing the descriptor set");

        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)
            .unwrap_or_else(|e| panic!("generating code: {e}"));
    }
}

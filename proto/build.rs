//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates prost messages plus tonic clients and servers.

fn main() {
    #[cfg(feature = "grpc")]
    grpc::generate();
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

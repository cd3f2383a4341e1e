//! Wire compatibility with Triton's clients: every package, service, method,
//! message, enum and field Meridian defines must match the descriptors that
//! PyPI `tritonclient[grpc]` ships (`tritonclient/grpc/service_pb2.py` and
//! `model_config_pb2.py`): names, field numbers, types, labels and oneofs.
//!
//! The descriptors are read with the Python interpreter and the packages the
//! bootstrap installs in `.tools/python` (`make bootstrap`).

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Prints `{"<file name>": "<hex of the serialized FileDescriptorProto>"}`.
const DUMP: &str = r#"
import json
from tritonclient.grpc import service_pb2, model_config_pb2
print(json.dumps({m.DESCRIPTOR.name: m.DESCRIPTOR.serialized_pb.hex() for m in (service_pb2, model_config_pb2)}))
"#;

fn tritonclient_files() -> BTreeMap<String, FileDescriptorProto> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let site = std::env::var_os("MERIDIAN_PYTHONPATH").map(PathBuf::from).unwrap_or_else(|| root.join(".tools/python"));
    assert!(
        site.join("tritonclient").is_dir(),
        "tritonclient not installed in {} (run `make bootstrap`)",
        site.display()
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python).arg("-c").arg(DUMP).env("PYTHONPATH", &site).output().expect("running python3");
    assert!(out.status.success(), "dumping tritonclient descriptors failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let files: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).expect("descriptor JSON");
    files
        .into_iter()
        .map(|(name, hex)| {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>();
            (name, FileDescriptorProto::decode(bytes.as_slice()).expect("FileDescriptorProto"))
        })
        .collect()
}

fn meridian_files() -> Vec<FileDescriptorProto> {
    FileDescriptorSet::decode(meridian_proto::FILE_DESCRIPTOR_SET).expect("our descriptor set").file
}

/// Every difference between what we define and what Triton defines.
fn mismatches(ours: &[FileDescriptorProto], theirs: &BTreeMap<String, FileDescriptorProto>) -> Vec<String> {
    let mut out = Vec::new();
    for file in ours.iter().filter(|f| f.package() == "inference") {
        let Some(triton) = theirs.get(file.name()) else {
            out.push(format!("file {} is not in tritonclient", file.name()));
            continue;
        };
        if file.package() != triton.package() {
            out.push(format!("{}: package {} vs {}", file.name(), file.package(), triton.package()));
        }
        for service in &file.service {
            let Some(t) = triton.service.iter().find(|s| s.name == service.name) else {
                out.push(format!("service {} missing", service.name()));
                continue;
            };
            for m in &service.method {
                match t.method.iter().find(|x| x.name == m.name) {
                    None => out.push(format!("rpc {}.{} missing", service.name(), m.name())),
                    Some(x) => {
                        let sig = |m: &prost_types::MethodDescriptorProto| {
                            (
                                m.input_type().to_string(),
                                m.output_type().to_string(),
                                m.client_streaming(),
                                m.server_streaming(),
                            )
                        };
                        if sig(m) != sig(x) {
                            out.push(format!("rpc {}.{}: {:?} vs {:?}", service.name(), m.name(), sig(m), sig(x)));
                        }
                    }
                }
            }
        }
        compare_enums(".inference", &file.enum_type, &triton.enum_type, &mut out);
        compare_messages(".inference", &file.message_type, &triton.message_type, &mut out);
    }
    out
}

fn compare_messages(scope: &str, ours: &[DescriptorProto], theirs: &[DescriptorProto], out: &mut Vec<String>) {
    for msg in ours {
        let path = format!("{scope}.{}", msg.name());
        let Some(t) = theirs.iter().find(|m| m.name == msg.name) else {
            out.push(format!("message {path} missing in tritonclient"));
            continue;
        };
        for field in &msg.field {
            let Some(tf) = t.field.iter().find(|f| f.name == field.name) else {
                out.push(format!("field {path}.{} missing in tritonclient", field.name()));
                continue;
            };
            let oneof = |m: &DescriptorProto, f: &prost_types::FieldDescriptorProto| {
                f.oneof_index.and_then(|i| m.oneof_decl.get(i as usize)).map(|o| o.name().to_string())
            };
            let ours = (field.number(), field.r#type(), field.label(), field.type_name(), oneof(msg, field));
            let theirs = (tf.number(), tf.r#type(), tf.label(), tf.type_name(), oneof(t, tf));
            if ours != theirs {
                out.push(format!("field {path}.{}: ours {ours:?} vs tritonclient {theirs:?}", field.name()));
            }
        }
        compare_enums(&path, &msg.enum_type, &t.enum_type, out);
        compare_messages(&path, &msg.nested_type, &t.nested_type, out);
    }
}

fn compare_enums(scope: &str, ours: &[EnumDescriptorProto], theirs: &[EnumDescriptorProto], out: &mut Vec<String>) {
    for e in ours {
        let Some(t) = theirs.iter().find(|x| x.name == e.name) else {
            out.push(format!("enum {scope}.{} missing in tritonclient", e.name()));
            continue;
        };
        for v in &e.value {
            if !t.value.iter().any(|x| x.name == v.name && x.number == v.number) {
                out.push(format!("enum value {scope}.{}.{} = {} differs", e.name(), v.name(), v.number()));
            }
        }
    }
}

fn count_fields(msgs: &[DescriptorProto]) -> usize {
    msgs.iter().map(|m| m.field.len() + count_fields(&m.nested_type)).sum()
}

#[test]
fn every_definition_matches_tritonclient() {
    let ours = meridian_files();
    let theirs = tritonclient_files();
    let problems = mismatches(&ours, &theirs);
    assert!(problems.is_empty(), "not wire-compatible with tritonclient:\n{}", problems.join("\n"));

    // The comparison covered what we define, not an empty set.
    let service = ours.iter().find(|f| f.name() == "grpc_service.proto").expect("grpc_service.proto");
    let rpcs: Vec<&str> = service.service[0].method.iter().map(|m| m.name()).collect();
    for rpc in [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    ] {
        assert!(rpcs.contains(&rpc), "{rpc} is defined");
    }
    let fields: usize = ours.iter().filter(|f| f.package() == "inference").map(|f| count_fields(&f.message_type)).sum();
    assert!(fields > 150, "compared {fields} fields");
}

#[test]
fn a_changed_field_number_is_caught() {
    let theirs = tritonclient_files();
    let mut ours = meridian_files();
    let file = ours.iter_mut().find(|f| f.name() == "grpc_service.proto").expect("grpc_service.proto");
    let infer = file.message_type.iter_mut().find(|m| m.name() == "ModelInferRequest").expect("ModelInferRequest");
    let raw = infer.field.iter_mut().find(|f| f.name() == "raw_input_contents").expect("raw_input_contents");
    raw.number = Some(8);
    let problems = mismatches(&ours, &theirs);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("ModelInferRequest.raw_input_contents"), "{problems:?}");
}

#[test]
fn a_changed_nested_enum_value_is_caught() {
    let theirs = tritonclient_files();
    let mut ours = meridian_files();
    let file = ours.iter_mut().find(|f| f.name() == "model_config.proto").expect("model_config.proto");
    let data_type = file.enum_type.iter_mut().find(|e| e.name() == "DataType").expect("DataType");
    data_type.value[11].number = Some(99);
    let problems = mismatches(&ours, &theirs);
    assert!(problems.iter().any(|p| p.contains("DataType")), "{problems:?}");
}

#[test]
fn the_health_service_is_grpc_health_v1() {
    let ours = meridian_files();
    let health = ours.iter().find(|f| f.package() == "grpc.health.v1").expect("grpc.health.v1");
    let service = &health.service[0];
    assert_eq!(service.name(), "Health");
    let methods: Vec<(&str, bool)> = service.method.iter().map(|m| (m.name(), m.server_streaming())).collect();
    assert_eq!(methods, [("Check", false), ("Watch", true)]);
}

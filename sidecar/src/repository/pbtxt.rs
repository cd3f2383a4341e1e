//! Triton's `<model>/config.pbtxt` (protobuf text format of
//! `inference.ModelConfig`) as a [`ModelConfig`]. A Triton repository of
//! ONNX models serves unchanged; every key Meridian does not act on is
//! reported by name: a warning where ignoring it leaves the served results
//! and admission unchanged, an error where it would not.
//!
//! | config.pbtxt | Meridian |
//! |---|---|
//! | `platform: "onnxruntime_onnx"`, `backend: "onnxruntime"` | required when set (other platforms are errors) |
//! | `max_batch_size` | `max_batch_size` |
//! | `input`, `output` (`name`, `data_type`, `dims`) | checked against the ONNX file at load |
//! | `dynamic_batching.preferred_batch_size` | `dynamic_batching.preferred_batch_sizes` |
//! | `dynamic_batching.max_queue_delay_microseconds` (default 0) | `dynamic_batching.max_queue_delay_us` |
//! | `dynamic_batching.priority_levels`, `default_priority_level` | the same |
//! | `dynamic_batching.default_queue_policy.max_queue_size` (0: no limit) | `max_queue_size` |
//! | `dynamic_batching.default_queue_policy.default_timeout_microseconds` | `default_timeout_us` |
//! | `instance_group` (`count`, `kind`, `gpus`) | `instances` (the sum), `device` |
//! | `version_policy` | `version_policy` |
//! | `model_warmup` (`batch_size`, `count`) | `warmup.batch_sizes` (zero-filled) |
//! | `parameters { key: "intra_op_thread_count" }` | `intra_op_threads` |

use super::model_config::{Declared, DeclaredTensor, DynamicBatching, ModelConfig, VersionPolicy, Warmup};
use crate::executor::device::DeviceChoice;
use crate::grpc::reflect;
use crate::tensor::DataType;
use meridian_proto::inference as pb;
use meridian_proto::inference::model_config::SchedulingChoice;
use meridian_proto::inference::model_instance_group::Kind;
use meridian_proto::inference::model_queue_policy::TimeoutAction;
use meridian_proto::inference::model_version_policy::PolicyChoice;

/// The ONNX model file name Meridian loads from each version folder.
const MODEL_FILE: &str = "model.onnx";

/// Top-level keys that are read but change nothing Meridian serves.
const IGNORED: &[(&str, &str)] = &[
    (
        "optimization",
        "execution accelerators and graph optimisation belong to onnxruntime; tract plans the model itself",
    ),
    ("metric_tags", "Meridian's metrics carry the model and version labels"),
    ("model_operations", "operation-level options apply to Triton's backends only"),
    ("response_cache", "Meridian has no response cache; every request runs"),
    ("cc_model_filenames", "used by TensorRT models only"),
    ("runtime", "models run on Meridian's tract runtime"),
];

/// Top-level keys Meridian does not implement and that change results or
/// admission if ignored.
const REFUSED: &[(&str, &str)] = &[
    ("sequence_batching", "stateful sequence batching is not supported"),
    ("ensemble_scheduling", "ensembles are not supported"),
    ("batch_input", "batch inputs (ragged batching) are not supported"),
    ("batch_output", "batch outputs (ragged batching) are not supported"),
    ("model_repository_agents", "repository agents are not supported"),
];

/// Parses `text` for the model in folder `model_name`: the configuration
/// and the warnings to log (each naming its key).
pub fn parse(text: &str, model_name: &str) -> Result<(ModelConfig, Vec<String>), String> {
    let (triton, dynamic) = reflect::parse_text::<pb::ModelConfig>("ModelConfig", text).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    for (field, _) in dynamic.fields() {
        let name = field.name();
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == name) {
            return Err(format!("{name}: {why}"));
        }
        if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == name) {
            warnings.push(format!("{name}: ignored ({why})"));
        }
    }
    if !triton.name.is_empty() && triton.name != model_name {
        return Err(format!("name: '{}' does not match the model's folder '{model_name}'", triton.name));
    }
    if !triton.platform.is_empty() && triton.platform != "onnxruntime_onnx" {
        return Err(format!("platform: '{}' is not served here; only onnxruntime_onnx (ONNX models)", triton.platform));
    }
    if !triton.backend.is_empty() && triton.backend != "onnxruntime" {
        return Err(format!("backend: '{}' is not served here; only onnxruntime (ONNX models)", triton.backend));
    }
    if !triton.default_model_filename.is_empty() && triton.default_model_filename != MODEL_FILE {
        return Err(format!(
            "default_model_filename: '{}' is not supported; name each version's file {MODEL_FILE}",
            triton.default_model_filename
        ));
    }
    if triton.model_transaction_policy.as_ref().is_some_and(|p| p.decoupled) {
        return Err("model_transaction_policy.decoupled: decoupled models are not supported".into());
    }
    let max_batch_size = usize::try_from(triton.max_batch_size)
        .map_err(|_| format!("max_batch_size: {} must not be negative", triton.max_batch_size))?;
    let mut config = ModelConfig { max_batch_size, from_pbtxt: true, ..ModelConfig::default() };
    config.declared = Declared {
        inputs: triton.input.iter().map(declared_input).collect::<Result<_, _>>()?,
        outputs: triton.output.iter().map(declared_output).collect::<Result<_, _>>()?,
    };
    if triton.output.iter().any(|o| !o.label_filename.is_empty()) {
        warnings.push("output.label_filename: ignored (the classification extension is not supported)".into());
    }
    if let Some(SchedulingChoice::DynamicBatching(d)) = &triton.scheduling_choice {
        config.dynamic_batching = Some(dynamic_batching(d, &mut warnings)?);
    }
    (config.instances, config.device) = instances(&triton.instance_group)?;
    if let Some(policy) = triton.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        config.version_policy = match policy {
            PolicyChoice::Latest(l) => VersionPolicy::Latest(l.num_versions),
            PolicyChoice::All(_) => VersionPolicy::All {},
            PolicyChoice::Specific(s) => VersionPolicy::Specific(
                s.versions
                    .iter()
                    .map(|&v| u64::try_from(v).map_err(|_| format!("version_policy.specific: version {v} is negative")))
                    .collect::<Result<_, _>>()?,
            ),
        };
    }
    if !triton.model_warmup.is_empty() {
        let mut batch_sizes = Vec::new();
        for w in &triton.model_warmup {
            if w.inputs
                .values()
                .any(|i| !matches!(i.input_data_type, Some(pb::model_warmup::input::InputDataType::ZeroData(_))))
            {
                warnings.push(format!(
                    "model_warmup '{}': inputs: random_data and input_data_file are run as zero data",
                    w.name
                ));
            }
            let size = (w.batch_size as usize).max(1);
            batch_sizes.extend(std::iter::repeat_n(size, (w.count as usize).max(1)));
        }
        config.warmup = Some(Warmup { batch_sizes });
    }
    for (key, value) in &triton.parameters {
        match key.as_str() {
            "intra_op_thread_count" => {
                config.intra_op_threads = value.string_value.trim().parse().map_err(|_| {
                    format!("parameters.intra_op_thread_count: '{}' is not a thread count", value.string_value)
                })?;
            }
            other => warnings.push(format!("parameters.{other}: ignored (not an option of Meridian's runtime)")),
        }
    }
    Ok((config, warnings))
}

fn data_type(value: i32, key: &str) -> Result<DataType, String> {
    let name = pb::DataType::try_from(value).map(|d| d.as_str_name()).unwrap_or("TYPE_INVALID");
    let v2 = match name.strip_prefix("TYPE_") {
        Some("STRING") => "BYTES",
        Some(other) => other,
        None => name,
    };
    DataType::from_v2(v2).ok_or_else(|| format!("{key}: data_type {name} is not a tensor type"))
}

fn declared_input(input: &pb::ModelInput) -> Result<DeclaredTensor, String> {
    let key = format!("input '{}'", input.name);
    if input.reshape.is_some() {
        return Err(format!("{key}: reshape is not supported; export the model with the shape it takes"));
    }
    if input.is_shape_tensor {
        return Err(format!("{key}: shape tensors are not supported"));
    }
    if input.allow_ragged_batch {
        return Err(format!("{key}: allow_ragged_batch is not supported"));
    }
    if input.optional {
        return Err(format!("{key}: optional inputs are not supported; every input must be sent"));
    }
    Ok(DeclaredTensor { name: input.name.clone(), dtype: data_type(input.data_type, &key)?, dims: input.dims.clone() })
}

fn declared_output(output: &pb::ModelOutput) -> Result<DeclaredTensor, String> {
    let key = format!("output '{}'", output.name);
    if output.reshape.is_some() {
        return Err(format!("{key}: reshape is not supported; export the model with the shape it returns"));
    }
    if output.is_shape_tensor {
        return Err(format!("{key}: shape tensors are not supported"));
    }
    Ok(DeclaredTensor {
        name: output.name.clone(),
        dtype: data_type(output.data_type, &key)?,
        dims: output.dims.clone(),
    })
}

fn dynamic_batching(d: &pb::ModelDynamicBatching, warnings: &mut Vec<String>) -> Result<DynamicBatching, String> {
    if !d.priority_queue_policy.is_empty() {
        return Err("dynamic_batching.priority_queue_policy: per-level queue policies are not supported; \
                    use default_queue_policy"
            .into());
    }
    if d.preserve_ordering {
        warnings.push("dynamic_batching.preserve_ordering: ignored (each request has its own reply)".into());
    }
    let mut batching = DynamicBatching {
        max_queue_delay_us: d.max_queue_delay_microseconds,
        preferred_batch_sizes: d
            .preferred_batch_size
            .iter()
            .map(|&p| usize::try_from(p).map_err(|_| format!("dynamic_batching.preferred_batch_size: {p} is negative")))
            .collect::<Result<_, _>>()?,
        priority_levels: u32::try_from(d.priority_levels.max(1))
            .map_err(|_| format!("dynamic_batching.priority_levels: {} is too many", d.priority_levels))?,
        default_priority_level: u32::try_from(d.default_priority_level).map_err(|_| {
            format!("dynamic_batching.default_priority_level: {} is too large", d.default_priority_level)
        })?,
        ..DynamicBatching::default()
    };
    if let Some(q) = &d.default_queue_policy {
        if q.timeout_action == TimeoutAction::Delay as i32 {
            return Err("dynamic_batching.default_queue_policy.timeout_action: DELAY is not supported; \
                        timed-out requests are rejected (REJECT)"
                .into());
        }
        if !q.allow_timeout_override && q.default_timeout_microseconds > 0 {
            return Err("dynamic_batching.default_queue_policy.allow_timeout_override: false is not supported; \
                        a request's own timeout always applies"
                .into());
        }
        // Triton: 0 means no limit.
        batching.max_queue_size = if q.max_queue_size == 0 { usize::MAX } else { q.max_queue_size as usize };
        batching.default_timeout_us = q.default_timeout_microseconds;
    } else {
        batching.max_queue_size = usize::MAX;
    }
    Ok(batching)
}

/// The instance count (the sum over groups) and the device they pin.
fn instances(groups: &[pb::ModelInstanceGroup]) -> Result<(usize, Option<DeviceChoice>), String> {
    if groups.is_empty() {
        return Ok((1, None));
    }
    let mut count = 0usize;
    let mut device = None;
    for (i, g) in groups.iter().enumerate() {
        let key = format!("instance_group[{i}]");
        let n = usize::try_from(g.count).map_err(|_| format!("{key}.count: {} is negative", g.count))?;
        // Triton: an absent count is one instance.
        count += if g.count == 0 { 1 } else { n };
        let this = match Kind::try_from(g.kind).unwrap_or(Kind::Auto) {
            Kind::Auto => None,
            Kind::Cpu => Some(DeviceChoice::Cpu),
            Kind::Gpu => match g.gpus.as_slice() {
                [] => Some(DeviceChoice::Cuda(0)),
                [gpu] => Some(DeviceChoice::Cuda(
                    usize::try_from(*gpu).map_err(|_| format!("{key}.gpus: {gpu} is not a GPU index"))?,
                )),
                more => return Err(format!("{key}.gpus: {more:?}: one model runs on one GPU here; list one")),
            },
            Kind::Model => return Err(format!("{key}.kind: KIND_MODEL is not supported")),
        };
        if i > 0 && this != device {
            return Err(format!("{key}.kind: every instance group must run on the same device here"));
        }
        device = this;
    }
    Ok((count, device))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRITON: &str = r#"
name: "mlp"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "output" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2000
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 50000 allow_timeout_override: true }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
model_warmup [ { name: "w" batch_size: 4 count: 2 inputs { key: "input" value { data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } } ]
parameters { key: "intra_op_thread_count" value { string_value: "2" } }
optimization { graph { level: 1 } }
"#;

    #[test]
    fn a_triton_config_maps_to_the_same_serving() {
        let (c, warnings) = parse(TRITON, "mlp").expect("valid");
        assert_eq!(c.max_batch_size, 8);
        let d = c.dynamic_batching.as_ref().expect("batching");
        assert_eq!(d.preferred_batch_sizes, [4, 8]);
        assert_eq!((d.max_queue_delay_us, d.priority_levels, d.default_priority_level), (2000, 2, 1));
        assert_eq!((d.max_queue_size, d.default_timeout_us), (64, 50_000));
        assert_eq!((c.instances, c.device, c.intra_op_threads), (2, Some(DeviceChoice::Cpu), 2));
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.warmup.as_ref().map(|w| w.batch_sizes.clone()), Some(vec![4, 4]));
        assert_eq!(c.declared.inputs[0], DeclaredTensor { name: "input".into(), dtype: DataType::F32, dims: vec![16] });
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("optimization: ignored"), "{warnings:?}");
    }

    #[test]
    fn triton_defaults_are_kept() {
        let (c, _) = parse("max_batch_size: 4\ndynamic_batching { }", "m").expect("valid");
        let d = c.dynamic_batching.expect("batching");
        // Triton's defaults, not config.yaml's: no delay, no queue limit.
        assert_eq!((d.max_queue_delay_us, d.max_queue_size), (0, usize::MAX));
        assert_eq!((c.instances, c.device), (1, None));
    }

    #[test]
    fn what_would_change_behaviour_is_an_error_naming_the_key() {
        let cases = [
            ("sequence_batching { }", "sequence_batching: stateful"),
            ("platform: \"tensorrt_plan\"", "platform: 'tensorrt_plan'"),
            ("backend: \"python\"", "backend: 'python'"),
            ("name: \"other\"", "does not match the model's folder 'm'"),
            ("default_model_filename: \"net.onnx\"", "default_model_filename"),
            (
                "max_batch_size: 4 input [ { name: \"x\" data_type: TYPE_FP32 dims: [1] reshape { shape: [] } } ]",
                "input 'x': reshape",
            ),
            ("max_batch_size: 4 dynamic_batching { default_queue_policy { timeout_action: DELAY } }", "DELAY"),
            (
                "max_batch_size: 4 dynamic_batching { priority_queue_policy { key: 1 value { } } }",
                "priority_queue_policy",
            ),
            ("instance_group [ { kind: KIND_GPU gpus: [0, 1] } ]", "instance_group[0].gpus"),
            ("model_transaction_policy { decoupled: true }", "decoupled"),
            ("max_batch_size: -1", "max_batch_size: -1"),
            ("max_batch_szie: 4", "line 1, column 1"),
        ];
        for (text, needle) in cases {
            let err = parse(text, "m").expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn ignored_keys_are_warned_by_name() {
        let (_, warnings) = parse(
            "parameters { key: \"enable_mem_arena\" value { string_value: \"1\" } }\nresponse_cache { enable: true }",
            "m",
        )
        .expect("valid");
        assert!(warnings.iter().any(|w| w.starts_with("parameters.enable_mem_arena")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.starts_with("response_cache")), "{warnings:?}");
    }
}

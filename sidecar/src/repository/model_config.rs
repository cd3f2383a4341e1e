//! `<model>/config.yaml` (or Triton's `config.pbtxt`, see [`super::pbtxt`]):
//! how one model is served. Every key is optional; inputs and outputs come
//! from the ONNX file.

use crate::executor::device::DeviceChoice;
use crate::executor::{Precision, Signature};
use crate::tensor::DataType;
use crate::tls::identity::IdentityPattern;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// A model's serving configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The most rows one batch may hold; 0: the model does not batch and
    /// each request must match the model's shape exactly.
    #[serde(default)]
    pub max_batch_size: usize,
    /// Server-side dynamic batching; without it each request runs alone.
    #[serde(default)]
    pub dynamic_batching: Option<DynamicBatching>,
    /// Executor instances (worker threads) per version.
    #[serde(default = "one")]
    pub instances: usize,
    /// Threads one batch may use on the CPU (intra-op parallelism, like
    /// onnxruntime's `intra_op_num_threads`); 1: the worker thread alone.
    #[serde(default = "one")]
    pub intra_op_threads: usize,
    /// Where this model runs: `auto` (or absent) follows the server's
    /// `--device`; `cpu`, `cuda` or `cuda:N` pin it.
    #[serde(default)]
    pub device: Option<DeviceChoice>,
    /// `fp32` (as the file is) or `fp16` (computation translated to FP16;
    /// inputs and outputs keep their types).
    #[serde(default)]
    pub precision: Precision,
    /// Which versions under the model's folder are served.
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    pub version_policy: VersionPolicy,
    /// Batches to run before a version reports ready.
    #[serde(default)]
    pub warmup: Option<Warmup>,
    /// Request rate limits (governor), per model and per caller.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Who may run inference on this model: exact SPIFFE IDs or prefixes
    /// ending in `*` (`spiffe://td/ns/web/*`), matched against the caller's
    /// verified identity (mTLS). Absent: every caller.
    #[serde(default)]
    pub allowed_identities: Option<Vec<IdentityPattern>>,
    /// The prediction shift monitor (`meridian_prediction_psi`).
    #[serde(default)]
    pub prediction_shift: PredictionShift,
    /// Each batch takes at least this many microseconds (the worker sleeps
    /// the rest): a stand-in for a slower device in load tests, like
    /// Triton's identity backend's `execute_delay_ms`. 0 (default): off.
    #[serde(default)]
    pub execute_delay_us: u64,
    /// The inputs and outputs a Triton config.pbtxt declares, checked
    /// against the ONNX file at load (config.yaml declares none).
    #[serde(skip)]
    pub declared: Declared,
    /// Read from Triton's config.pbtxt rather than config.yaml.
    #[serde(skip)]
    pub from_pbtxt: bool,
}

/// Tensors a configuration declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Declared inputs; empty: taken from the model.
    pub inputs: Vec<DeclaredTensor>,
    /// Declared outputs; empty: taken from the model.
    pub outputs: Vec<DeclaredTensor>,
}

/// One declared tensor: its name, type and dims (without the batch
/// dimension when the model batches; -1: any size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredTensor {
    /// The tensor's name in the ONNX file.
    pub name: String,
    /// Its element type.
    pub dtype: DataType,
    /// Its dims.
    pub dims: Vec<i64>,
}

impl Declared {
    /// Checks the declarations against the model's signature, as Triton
    /// does when it loads a model: every declared tensor exists with that
    /// type and compatible dims, and declared inputs cover every model
    /// input. Returns warnings for dims the config fixes but the model
    /// leaves free (the model's shape is what requests are checked against).
    pub fn check(&self, signature: &Signature, max_batch_size: usize) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let sides = [("input", &self.inputs, &signature.inputs), ("output", &self.outputs, &signature.outputs)];
        for (side, declared, specs) in sides {
            for d in declared {
                let spec = specs.iter().find(|s| s.name == d.name).ok_or_else(|| {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    format!("{side} '{}' is not in the model, whose {side}s are {names:?}", d.name)
                })?;
                if spec.dtype != d.dtype {
                    return Err(format!(
                        "{side} '{}': data_type {} does not match the model's {}",
                        d.name,
                        d.dtype.as_v2(),
                        spec.dtype.as_v2()
                    ));
                }
                let model_dims =
                    if max_batch_size > 0 { spec.shape.get(1..).unwrap_or_default() } else { &spec.shape[..] };
                let compatible = model_dims.len() == d.dims.len()
                    && model_dims.iter().zip(&d.dims).all(|(&m, &c)| m < 0 || c < 0 || m == c);
                if !compatible {
                    return Err(format!(
                        "{side} '{}': dims {:?} do not match the model's {model_dims:?}{}",
                        d.name,
                        d.dims,
                        if max_batch_size > 0 { " (without the batch dimension)" } else { "" }
                    ));
                }
                if model_dims.iter().zip(&d.dims).any(|(&m, &c)| m < 0 && c >= 0) {
                    warnings.push(format!(
                        "{side} '{}': dims {:?} fix sizes the model leaves free ({model_dims:?}); requests are checked against the model's",
                        d.name, d.dims
                    ));
                }
            }
        }
        if !self.inputs.is_empty() {
            if let Some(missing) = signature.inputs.iter().find(|s| !self.inputs.iter().any(|d| d.name == s.name)) {
                return Err(format!(
                    "input '{}' of the model is not declared; declare every input or none",
                    missing.name
                ));
            }
        }
        Ok(warnings)
    }
}

/// How the distribution of a model's top output is watched (see
/// [`crate::prediction`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictionShift {
    /// Rows per window; the first window after a load is the baseline,
    /// each later one is compared with it. 0: off.
    #[serde(default = "default_window_rows")]
    pub window_rows: usize,
}

impl Default for PredictionShift {
    fn default() -> Self {
        Self { window_rows: default_window_rows() }
    }
}

fn default_window_rows() -> usize {
    1000
}

/// Dynamic batching settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatching {
    /// How long the oldest request may wait for others, in microseconds.
    #[serde(default = "default_delay_us")]
    pub max_queue_delay_us: u64,
    /// Batch sizes to flush at as soon as they are reached.
    #[serde(default)]
    pub preferred_batch_sizes: Vec<usize>,
    /// The most requests that may wait; beyond it RESOURCE_EXHAUSTED.
    #[serde(default = "default_queue")]
    pub max_queue_size: usize,
    /// The most bytes of inputs the waiting requests may hold together;
    /// beyond it RESOURCE_EXHAUSTED (default 256 MiB).
    #[serde(default = "default_queue_bytes")]
    pub max_queue_bytes: usize,
    /// Timeout for requests without their own `grpc-timeout`, in
    /// microseconds; 0: none.
    #[serde(default)]
    pub default_timeout_us: u64,
    /// Priority levels; requests pick one with the `priority` parameter
    /// (1 is the highest).
    #[serde(default = "one_u32")]
    pub priority_levels: u32,
    /// The level of requests that name none (or priority 0); 0: the lowest.
    #[serde(default)]
    pub default_priority_level: u32,
}

impl Default for DynamicBatching {
    fn default() -> Self {
        DynamicBatching {
            max_queue_delay_us: default_delay_us(),
            preferred_batch_sizes: Vec::new(),
            max_queue_size: default_queue(),
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            default_timeout_us: 0,
            priority_levels: 1,
            default_priority_level: 0,
        }
    }
}

/// Which versions to serve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The `n` highest version numbers.
    Latest(u32),
    /// Every version folder.
    All {},
    /// Exactly these versions.
    Specific(Vec<u64>),
}

/// Warmup runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// One zero-filled batch of each size runs before the version is ready.
    pub batch_sizes: Vec<usize>,
}

/// Token-bucket rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second for the whole model (all callers).
    #[serde(default)]
    pub requests_per_second: Option<u32>,
    /// Requests per second for each caller (the caller header).
    #[serde(default)]
    pub per_caller_requests_per_second: Option<u32>,
    /// Burst size of both buckets; defaults to one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

fn one() -> usize {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_delay_us() -> u64 {
    500
}
/// Triton's configuration file name.
pub const PBTXT: &str = "config.pbtxt";

/// 256 MiB.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 256 << 20;

fn default_queue_bytes() -> usize {
    DEFAULT_MAX_QUEUE_BYTES
}

fn default_queue() -> usize {
    1024
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            max_batch_size: 0,
            dynamic_batching: None,
            instances: 1,
            intra_op_threads: 1,
            device: None,
            precision: Precision::Fp32,
            version_policy: VersionPolicy::default(),
            warmup: None,
            rate_limit: None,
            allowed_identities: None,
            prediction_shift: PredictionShift::default(),
            execute_delay_us: 0,
            declared: Declared::default(),
            from_pbtxt: false,
        }
    }
}

/// Why a `config.yaml` was rejected; the message names the file and key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// What is wrong, naming the key and what is allowed.
    pub message: String,
}

// === impl ModelConfig ===

impl ModelConfig {
    /// Reads `config.yaml`, or Triton's `config.pbtxt`, from a model
    /// folder (both is an error); neither means every default. Keys of a
    /// config.pbtxt that are ignored are logged as warnings.
    pub fn load(model_dir: &Path) -> Result<Self, ConfigError> {
        let path = model_dir.join("config.yaml");
        let file = path.display().to_string();
        let pbtxt = model_dir.join(PBTXT);
        if pbtxt.is_file() {
            if path.exists() {
                return Err(ConfigError {
                    file,
                    message: format!("{PBTXT} is here too; keep one configuration per model"),
                });
            }
            let file = pbtxt.display().to_string();
            let text = std::fs::read_to_string(&pbtxt)
                .map_err(|e| ConfigError { file: file.clone(), message: format!("cannot read: {e}") })?;
            let name = model_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let (config, warnings) =
                super::pbtxt::parse(&text, name).map_err(|message| ConfigError { file: file.clone(), message })?;
            config.validate().map_err(|message| ConfigError { file: file.clone(), message })?;
            for warning in warnings {
                tracing::warn!(file = %file, "{warning}");
            }
            return Ok(config);
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|message| ConfigError { file, message }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ConfigError { file, message: format!("cannot read: {e}") }),
        }
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: ModelConfig = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// The file this configuration is read from, in a model folder.
    pub fn file_name(&self) -> &'static str {
        if self.from_pbtxt {
            PBTXT
        } else {
            "config.yaml"
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.instances == 0 {
            return Err("instances: must be at least 1".into());
        }
        if self.intra_op_threads == 0 || self.intra_op_threads > 256 {
            return Err("intra_op_threads: must be within 1..=256".into());
        }
        if let VersionPolicy::Latest(0) = self.version_policy {
            return Err("version_policy.latest: must be at least 1".into());
        }
        if let VersionPolicy::Specific(v) = &self.version_policy {
            if v.is_empty() {
                return Err("version_policy.specific: must list at least one version".into());
            }
        }
        if let Some(d) = &self.dynamic_batching {
            if self.max_batch_size == 0 {
                return Err("dynamic_batching: needs max_batch_size > 0 (0 means the model does not batch)".into());
            }
            if let Some(p) = d.preferred_batch_sizes.iter().find(|&&p| p == 0 || p > self.max_batch_size) {
                return Err(format!(
                    "dynamic_batching.preferred_batch_sizes: {p} is not within 1..={} (max_batch_size)",
                    self.max_batch_size
                ));
            }
            if d.max_queue_bytes == 0 {
                return Err("dynamic_batching.max_queue_bytes: must be at least 1".into());
            }
            if d.max_queue_size == 0 {
                return Err("dynamic_batching.max_queue_size: must be at least 1".into());
            }
            if d.priority_levels == 0 {
                return Err("dynamic_batching.priority_levels: must be at least 1".into());
            }
            if d.default_priority_level > d.priority_levels {
                return Err(format!(
                    "dynamic_batching.default_priority_level: {} is not within 0..={} (priority_levels)",
                    d.default_priority_level, d.priority_levels
                ));
            }
        }
        if let Some(w) = &self.warmup {
            let limit = self.max_batch_size.max(1);
            if let Some(b) = w.batch_sizes.iter().find(|&&b| b == 0 || b > limit) {
                return Err(format!("warmup.batch_sizes: {b} is not within 1..={limit} (max_batch_size)"));
            }
        }
        if self.allowed_identities.as_ref().is_some_and(Vec::is_empty) {
            return Err("allowed_identities: empty, which admits no caller (omit the key to admit every caller)".into());
        }
        if let Some(r) = &self.rate_limit {
            if r.requests_per_second == Some(0) || r.per_caller_requests_per_second == Some(0) || r.burst == Some(0) {
                return Err("rate_limit: rates and burst must be at least 1".into());
            }
        }
        Ok(())
    }

    /// How the model's executor is prepared: a plan per batch bucket, its
    /// intra-op threads and precision.
    pub fn prepare_options(&self) -> crate::executor::PrepareOptions {
        crate::executor::PrepareOptions {
            batch_buckets: self.batch_buckets(),
            threads: self.intra_op_threads,
            precision: self.precision,
        }
    }

    /// The queue delay, or zero without dynamic batching.
    pub fn max_queue_delay(&self) -> Duration {
        self.dynamic_batching.as_ref().map(|d| Duration::from_micros(d.max_queue_delay_us)).unwrap_or_default()
    }

    /// Batch sizes worth a dedicated plan: powers of two up to
    /// max_batch_size, the max itself, preferred and warmup sizes.
    pub fn batch_buckets(&self) -> Vec<usize> {
        if self.max_batch_size == 0 {
            return Vec::new();
        }
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |s| s.checked_mul(2))
            .take_while(|&s| s <= self.max_batch_size)
            .collect();
        sizes.push(self.max_batch_size);
        if let Some(d) = &self.dynamic_batching {
            sizes.extend(&d.preferred_batch_sizes);
        }
        if let Some(w) = &self.warmup {
            sizes.extend(&w.batch_sizes);
        }
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let c = ModelConfig::parse(
            "max_batch_size: 64\ndynamic_batching:\n  max_queue_delay_us: 500\n  preferred_batch_sizes: [16, 32, 64]\n  \
             max_queue_size: 1024\n  default_timeout_us: 0\n  priority_levels: 2\ninstances: 1\n\
             version_policy: {latest: 1}\nwarmup: {batch_sizes: [1, 8, 64]}\n",
        )
        .expect("valid");
        assert_eq!(c.max_batch_size, 64);
        assert_eq!(c.dynamic_batching.as_ref().map(|d| d.priority_levels), Some(2));
        assert_eq!(c.batch_buckets(), vec![1, 2, 4, 8, 16, 32, 64]);
        assert_eq!(ModelConfig::parse("version_policy: {all: {}}").expect("all").version_policy, VersionPolicy::All {});
        assert_eq!(
            ModelConfig::parse("version_policy: {specific: [1, 3]}").expect("specific").version_policy,
            VersionPolicy::Specific(vec![1, 3])
        );
        assert_eq!(ModelConfig::parse("").expect("empty"), ModelConfig::default());
        let gpu = ModelConfig::parse("device: cuda:1\nprecision: fp16").expect("device");
        assert_eq!((gpu.device, gpu.precision), (Some(DeviceChoice::Cuda(1)), Precision::Fp16));
    }

    #[test]
    fn allowed_identities_are_spiffe_patterns() {
        let c = ModelConfig::parse("allowed_identities: ['spiffe://td/ns/web/*', spiffe://td/ns/app/sa/app]")
            .expect("valid");
        let patterns = c.allowed_identities.expect("set");
        assert!(patterns[0].matches("spiffe://td/ns/web/sa/x") && patterns[1].matches("spiffe://td/ns/app/sa/app"));
        assert!(!patterns.iter().any(|p| p.matches("spiffe://td/ns/app/sa/app2")));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = ModelConfig::parse("max_batch_size: 8\nmax_bacth_delay: 3\n").expect_err("typo");
        assert!(err.contains("unknown field `max_bacth_delay`") && err.contains("line 2"), "{err}");
        let err = ModelConfig::parse("dynamic_batching: {max_queue_delay: 3}\nmax_batch_size: 8").expect_err("typo");
        assert!(err.contains("max_queue_delay") && err.contains("max_queue_delay_us"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key_and_what_is_allowed() {
        let cases = [
            ("instances: 0", "instances"),
            ("max_batch_size: -1", "max_batch_size"),
            ("dynamic_batching: {}", "needs max_batch_size > 0"),
            ("max_batch_size: 8\ndynamic_batching: {preferred_batch_sizes: [16]}", "1..=8"),
            ("max_batch_size: 8\nwarmup: {batch_sizes: [9]}", "warmup.batch_sizes"),
            ("version_policy: {latest: 0}", "version_policy.latest"),
            ("version_policy: {newest: 1}", "newest"),
            ("rate_limit: {requests_per_second: 0}", "rate_limit"),
            ("device: gpu", "device: 'gpu' is not a device: expected auto, cpu, cuda or cuda:N"),
            ("precision: int8", "precision: unknown variant `int8`, expected `fp32` or `fp16`"),
            ("allowed_identities: []", "allowed_identities: empty"),
            ("allowed_identities: [web]", "`web` is not a SPIFFE ID"),
            ("allowed_identities: ['spiffe://td/ns/w*b']", "`*` may only end a pattern"),
        ];
        for (text, needle) in cases {
            let err = ModelConfig::parse(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}

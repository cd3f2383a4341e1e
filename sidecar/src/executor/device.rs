//! Where models run: `--device auto|cpu|cuda[:N]` for the server, and a
//! per-model `device` in config.yaml, decided once at start.
//!
//! `auto` takes CUDA when [`super::cuda::probe`] finds a usable GPU and its
//! libraries, else the CPU, and says which and why. `cuda` without a usable
//! GPU stops the server at start with what is missing. A model may ask for
//! `cpu` on a GPU server; one that asks for `cuda` where there is none fails
//! to load with the reason, and the other models keep serving.

use super::cpu::CpuRuntime;
use super::cuda::{CudaRuntime, GpuInfo};
use super::{Executor, PrepareError, PrepareOptions, Runtime};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// A device request, from `--device` or a model's `device` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU.
    Auto,
    /// tract on the CPU.
    Cpu,
    /// tract-cuda on CUDA device N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{s}' is not a device: expected auto, cpu, cuda or cuda:N (N a device number)");
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceChoice::Cuda).ok_or_else(bad),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only config.yaml's `device` key deserializes one: name it, as
        // serde_yaml does not prefix custom errors with their key.
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| serde::de::Error::custom(format!("device: {e}")))
    }
}

impl DeviceChoice {
    /// tract-cuda always drives device 0 of the devices the process sees;
    /// `cuda:N` makes device N that one by narrowing `CUDA_VISIBLE_DEVICES`
    /// (to its Nth entry where it is already set). Call before any thread
    /// starts and before CUDA is touched.
    pub fn restrict_visible_devices(self) {
        let DeviceChoice::Cuda(n) = self else { return };
        if n == 0 && std::env::var_os("CUDA_VISIBLE_DEVICES").is_none() {
            return;
        }
        let visible = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(list) => list.split(',').nth(n).map(|s| s.trim().to_string()).unwrap_or_else(|| format!("{n}")),
            Err(_) => n.to_string(),
        };
        std::env::set_var("CUDA_VISIBLE_DEVICES", visible);
    }
}

/// Why the server cannot start on the device asked for.
#[derive(Debug, thiserror::Error)]
#[error("--device {choice}: no usable GPU: {reason}")]
pub struct DeviceError {
    /// What was asked.
    pub choice: DeviceChoice,
    /// What is missing.
    pub reason: String,
}

/// The devices this server places models on.
#[derive(Debug, Clone)]
pub struct Devices {
    cpu: Arc<dyn Runtime>,
    /// The GPU runtime and the device number asked for, or why there is none.
    gpu: Result<(Arc<dyn Runtime>, usize), String>,
    /// Whether models without a `device` key go to the GPU.
    gpu_by_default: bool,
    /// One line saying what was chosen and why.
    summary: String,
}

impl Devices {
    /// The CPU only (tests, tools).
    pub fn cpu_only() -> Self {
        Devices {
            cpu: Arc::new(CpuRuntime),
            gpu: Err("the server was started with --device cpu".into()),
            gpu_by_default: false,
            summary: "device cpu: models run on the CPU".into(),
        }
    }

    /// Decides from `--device`, calling `probe` (normally
    /// [`super::cuda::probe`]) unless the choice is `cpu`.
    pub fn select(choice: DeviceChoice, probe: impl FnOnce() -> Result<GpuInfo, String>) -> Result<Self, DeviceError> {
        let cpu: Arc<dyn Runtime> = Arc::new(CpuRuntime);
        match choice {
            DeviceChoice::Cpu => Ok(Self::cpu_only()),
            DeviceChoice::Auto => Ok(match probe() {
                Ok(gpu) => Devices {
                    cpu,
                    gpu: Ok((Arc::new(CudaRuntime), 0)),
                    gpu_by_default: true,
                    summary: format!("device auto: models run on CUDA device 0, {}", gpu.description),
                },
                Err(reason) => Devices {
                    cpu,
                    summary: format!("device auto: models run on the CPU, as no GPU is usable: {reason}"),
                    gpu: Err(reason),
                    gpu_by_default: false,
                },
            }),
            DeviceChoice::Cuda(n) => {
                let gpu = probe().map_err(|reason| DeviceError { choice, reason })?;
                Ok(Devices {
                    cpu,
                    gpu: Ok((Arc::new(CudaRuntime), n)),
                    gpu_by_default: true,
                    summary: format!("device cuda:{n}: models run on {}", gpu.description),
                })
            }
        }
    }

    /// What was chosen and why, for the start log.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The runtime for a model whose config.yaml asks for `wanted` (`None`
    /// or `auto`: the server's choice), or why it cannot have it.
    pub fn runtime_for(&self, wanted: Option<DeviceChoice>) -> Result<Arc<dyn Runtime>, String> {
        match (wanted.unwrap_or(DeviceChoice::Auto), &self.gpu) {
            (DeviceChoice::Cpu, _) => Ok(self.cpu.clone()),
            (DeviceChoice::Auto, Ok((gpu, _))) if self.gpu_by_default => Ok(gpu.clone()),
            (DeviceChoice::Auto, _) => Ok(self.cpu.clone()),
            (DeviceChoice::Cuda(n), Ok((gpu, server))) if n == *server => Ok(gpu.clone()),
            (DeviceChoice::Cuda(n), Ok((_, server))) => Err(format!(
                "device: cuda:{n}, but this server drives CUDA device {server} (--device cuda:{server}); tract-cuda runs \
                 one device per process, so serve device {n} from a sidecar started with --device cuda:{n}"
            )),
            (DeviceChoice::Cuda(n), Err(reason)) => Err(format!("device: cuda:{n}, but no GPU is usable: {reason}")),
        }
    }

    /// Prepares the model at `path` where `wanted` says. A model left to
    /// `auto` that the GPU runtime cannot take (a tract-cuda panic or error
    /// while planning) falls back to the CPU with one warning; a model pinned
    /// to `cuda` fails with the error. Returns the executor and the runtime's
    /// name.
    pub fn prepare(
        &self,
        wanted: Option<DeviceChoice>,
        path: &Path,
        options: &PrepareOptions,
    ) -> Result<(Box<dyn Executor>, &'static str), String> {
        let runtime = self.runtime_for(wanted)?;
        match runtime.prepare(path, options) {
            Ok(exec) => Ok((exec, runtime.name())),
            Err(PrepareError::Device(reason)) if matches!(wanted, None | Some(DeviceChoice::Auto)) => {
                tracing::warn!(model = %path.display(), %reason, "the GPU cannot take this model; it runs on the CPU");
                let exec = self.cpu.prepare(path, options).map_err(|e| e.to_string())?;
                Ok((exec, self.cpu.name()))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GPU runtime that fails inside, as tract-cuda does when it panics.
    #[derive(Debug)]
    struct FailingGpu;

    impl Runtime for FailingGpu {
        fn name(&self) -> &'static str {
            "cuda"
        }
        fn prepare(&self, _: &Path, _: &PrepareOptions) -> Result<Box<dyn Executor>, PrepareError> {
            Err(PrepareError::Device("tract-cuda panicked while preparing the model on CUDA: out of memory".into()))
        }
    }

    #[test]
    fn a_model_the_gpu_cannot_take_falls_back_to_the_cpu_only_under_auto() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mlp.onnx");
        std::fs::write(&path, crate::models::mlp(&[4, 2], 1)).expect("write");
        let devices = Devices {
            cpu: Arc::new(CpuRuntime),
            gpu: Ok((Arc::new(FailingGpu), 0)),
            gpu_by_default: true,
            summary: String::new(),
        };
        let options = PrepareOptions::default();
        for wanted in [None, Some(DeviceChoice::Auto)] {
            let (exec, on) = devices.prepare(wanted, &path, &options).expect("fell back");
            assert_eq!(on, "cpu");
            assert_eq!(exec.signature().inputs[0].shape, vec![-1, 4]);
        }
        let err = devices.prepare(Some(DeviceChoice::Cuda(0)), &path, &options).map(|_| ()).expect_err("pinned");
        assert!(err.contains("out of memory"), "{err}");
    }

    #[test]
    fn device_names_parse_and_print() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(want));
        }
        assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().expect_err(bad);
            assert!(err.contains("auto, cpu, cuda or cuda:N"), "{err}");
        }
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_says_why() {
        let devices = Devices::select(DeviceChoice::Auto, || Err("libcuda.so.1 not found".into())).expect("auto");
        assert!(
            devices.summary().contains("CPU") && devices.summary().contains("libcuda.so.1"),
            "{}",
            devices.summary()
        );
        assert_eq!(devices.runtime_for(None).map(|r| r.name()), Ok("cpu"));
        let err = devices.runtime_for(Some(DeviceChoice::Cuda(0))).expect_err("no gpu");
        assert!(err.contains("no GPU is usable: libcuda.so.1 not found"), "{err}");
    }

    #[test]
    fn cuda_without_a_gpu_stops_the_server_with_the_reason() {
        let err = Devices::select(DeviceChoice::Cuda(1), || Err("libcuda.so.1 not found".into())).expect_err("cuda");
        assert_eq!(err.to_string(), "--device cuda:1: no usable GPU: libcuda.so.1 not found");
    }

    #[test]
    fn models_follow_the_server_unless_they_say_otherwise() {
        let gpu = || Ok(GpuInfo { description: "H200".into() });
        let devices = Devices::select(DeviceChoice::Cuda(1), gpu).expect("cuda");
        assert_eq!(devices.runtime_for(None).map(|r| r.name()), Ok("cuda"));
        assert_eq!(devices.runtime_for(Some(DeviceChoice::Auto)).map(|r| r.name()), Ok("cuda"));
        assert_eq!(devices.runtime_for(Some(DeviceChoice::Cpu)).map(|r| r.name()), Ok("cpu"));
        assert_eq!(devices.runtime_for(Some(DeviceChoice::Cuda(1))).map(|r| r.name()), Ok("cuda"));
        let err = devices.runtime_for(Some(DeviceChoice::Cuda(0))).expect_err("other device");
        assert!(err.contains("drives CUDA device 1") && err.contains("--device cuda:0"), "{err}");
        let auto = Devices::select(DeviceChoice::Auto, gpu).expect("auto");
        assert_eq!(auto.runtime_for(None).map(|r| r.name()), Ok("cuda"));
        assert!(auto.summary().contains("H200"));
    }
}

//! The CPU executor: tract, with one optimised plan per batch bucket and a
//! symbolic-batch plan for every other size.

use super::plan::{self, PlannedExecutor};
use super::{Executor, PrepareError, PrepareOptions, Runtime};
use std::path::Path;
use tract_onnx::prelude::*;

/// tract's CPU runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuRuntime;

impl Runtime for CpuRuntime {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn prepare(&self, path: &Path, options: &PrepareOptions) -> Result<Box<dyn Executor>, PrepareError> {
        let loaded = plan::load(path, options.precision)?;
        let runtime = tract_onnx::prelude::runtime_for_name("cpu")
            .map_err(|e| PrepareError::Unsupported(format!("{e:#}")))?
            .ok_or_else(|| PrepareError::Unsupported("tract's CPU runtime is not registered".into()))?;
        let run_options = RunOptions {
            executor: (options.threads > 1).then(|| tract_linalg::multithread::Executor::multithread(options.threads)),
            ..RunOptions::default()
        };
        Ok(Box::new(PlannedExecutor::plan(path, loaded, runtime, &run_options, options)?))
    }
}

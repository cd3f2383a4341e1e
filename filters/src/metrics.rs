//! Envoy stats the filter defines on first use (they show in `/stats` as
//! `wasmcustom.<name>`, in `/stats/prometheus` as `<name>`).

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

/// This VM's metric ids by name.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    /// Adds `by` to counter `name`.
    pub(crate) fn increment(&mut self, name: &str, by: u64) {
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }

    /// Sets gauge `name`.
    pub(crate) fn set(&mut self, name: &str, value: i64) {
        if let Some(id) = self.id(MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, u64::try_from(value).unwrap_or(0));
        }
    }

    fn id(&mut self, kind: MetricType, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        match hostcalls::define_metric(kind, name) {
            Ok(id) => {
                self.ids.insert(name.to_string(), id);
                Some(id)
            }
            Err(status) => {
                log::warn!("meridian: defining metric {name} failed: {status:?}");
                None
            }
        }
    }
}

//! The root context, one per worker thread (and one on the main thread):
//! owns the configuration and the worker's [`Planner`], and on every tick
//! shares what the worker learned, refreshes its view, probes health when
//! it holds the prober lease, and flushes stats.

use crate::http::MeridianHttp;
use crate::metrics::Metrics;
use crate::shared;
use meridian_filters_core::probe;
use meridian_filters_core::{FilterConfig, Planner};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, MapType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from Envoy's clock.
pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the root shares with its request contexts.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Rc<FilterConfig>,
    pub(crate) planner: RefCell<Planner>,
    /// Set once this worker has served a request: only serving workers
    /// count in the budget's share and take the prober lease.
    pub(crate) serving: Cell<bool>,
    /// The time of the last tick, ms: requests read this instead of asking
    /// Envoy for the time (one host call fewer each way; every decision
    /// and breaker window tolerates a tick's staleness).
    pub(crate) now_ms: Cell<u64>,
}

/// One per VM and thread.
#[derive(Debug)]
pub(crate) struct MeridianRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    metrics: Metrics,
    next_probe_ms: u64,
    probes: HashMap<u32, String>,
    /// A failed dispatch (e.g. on the main thread) stops this context from
    /// taking the lease again.
    can_probe: bool,
}

impl MeridianRoot {
    pub(crate) fn new(context_id: u32) -> Self {
        Self {
            context_id,
            shared: None,
            metrics: Metrics::default(),
            next_probe_ms: 0,
            probes: HashMap::new(),
            can_probe: true,
        }
    }

    fn worker_id(&self) -> String {
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("w{}-{}", self.context_id, nanos % 1_000_000_000_000)
    }

    fn send_probes(&mut self, shared: &Shared, now: u64) {
        let timeout = Duration::from_millis(shared.config.health.timeout_ms);
        for region in &shared.config.regions {
            let cluster = meridian_filters_core::config::cluster_name(&[&region.name]);
            match self.dispatch_http_call(&cluster, probe::HEADERS.to_vec(), Some(&probe::BODY), vec![], timeout) {
                Ok(token) => {
                    self.probes.insert(token, region.name.clone());
                }
                Err(status) => {
                    log::warn!("meridian: health probe to {cluster} not sent ({status:?}); leaving the prober lease");
                    self.can_probe = false;
                    let worker = shared.planner.borrow().worker().to_string();
                    shared::update(|state| {
                        if state.prober.as_ref().is_some_and(|l| l.holder == worker) {
                            state.prober = None;
                        }
                    });
                    return;
                }
            }
        }
        self.next_probe_ms = now + shared.config.health.interval_ms;
    }
}

impl Context for MeridianRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(region) = self.probes.remove(&token_id) else { return };
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let trailers = hostcalls::get_map(MapType::HttpCallResponseTrailers).unwrap_or_default();
        let body = self.get_http_call_response_body(0, body_size);
        let passed = probe::passed(&headers, &trailers, body.as_deref());
        if let Some(shared) = &self.shared {
            shared.planner.borrow_mut().record_probe(&region, passed, now_ms());
        }
    }
}

impl RootContext for MeridianRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        shared::ensure();
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                log::info!(
                    "meridian filter configured: name={} region={} regions={}",
                    config.name,
                    config.region,
                    config.regions.len()
                );
                let tick = Duration::from_millis(config.tick_ms);
                let planner = Planner::new(config.clone(), self.worker_id());
                self.shared = Some(Rc::new(Shared {
                    config: Rc::new(config),
                    planner: RefCell::new(planner),
                    serving: Cell::new(false),
                    now_ms: Cell::new(now_ms()),
                }));
                self.set_tick_period(tick);
                true
            }
            Err(e) => {
                // Returning false makes Envoy reject this configuration; on an
                // update the previous one stays in force.
                log::error!("{e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let now = now_ms();
        shared.now_ms.set(now);
        let serving = shared.serving.get();
        let (delta, worker) = {
            let mut planner = shared.planner.borrow_mut();
            (planner.take_delta(), planner.worker().to_string())
        };
        let due = serving && self.can_probe && now >= self.next_probe_ms;
        let hold = 3 * shared.config.health.interval_ms;
        let result = {
            let mut planner = shared.planner.borrow_mut();
            shared::update(|state| {
                delta.apply(state, &shared.config, serving.then_some(worker.as_str()), now);
                planner.advance(state, now);
                due && state.try_lease(&worker, now, hold)
            })
        };
        let lead = match result {
            Some((state, lead)) => {
                shared.planner.borrow_mut().refresh(state);
                lead
            }
            None => {
                shared.planner.borrow_mut().restore_delta(delta);
                false
            }
        };
        if lead {
            self.send_probes(&shared, now);
        } else if due {
            self.next_probe_ms = now + shared.config.health.interval_ms;
        }
        let (counters, gauges) = {
            let mut planner = shared.planner.borrow_mut();
            (planner.take_counters(), planner.gauges(now))
        };
        for (name, by) in counters {
            self.metrics.increment(&name, by);
        }
        if serving {
            for (name, value) in gauges {
                self.metrics.set(&name, value);
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        shared.serving.set(true);
        Some(Box::new(MeridianHttp::new(shared)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

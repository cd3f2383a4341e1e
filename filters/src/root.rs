//! The root context: owns the validated configuration and hands each request
//! context a copy.

use crate::config::FilterConfig;
use crate::http::MeridianHttp;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

/// One per VM and thread; Envoy calls `on_configure` before any request.
#[derive(Debug, Default)]
pub(crate) struct MeridianRoot {
    config: Option<Rc<FilterConfig>>,
}

impl Context for MeridianRoot {}

impl RootContext for MeridianRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                log::info!("meridian filter configured: name={}", config.name);
                self.config = Some(Rc::new(config));
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(MeridianHttp::new(config)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

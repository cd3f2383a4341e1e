//! A trivial Proxy-Wasm filter: what any wasm filter costs in Envoy (a VM
//! entry per callback, one host call). `make bench-filters` reports
//! Meridian's added CPU as a multiple of this one's.
//!
//! Without configuration it adds one response header (`x-baseline: 1`): the
//! bar's baseline. Configured with `route:<cluster>` it instead sets
//! `x-meridian-cluster: <cluster>` on the request (Envoy then clears the
//! route cache and a `cluster_header` route re-matches): the floor of any
//! filter that routes by header, as Meridian's does, measured in the same
//! run.

#![forbid(unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};
    use std::rc::Rc;

    #[derive(Debug, Default)]
    pub(crate) struct Root {
        /// The cluster to route to (`route:<cluster>`), or none.
        route: Option<Rc<str>>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let config = self.get_plugin_configuration().unwrap_or_default();
            let text = String::from_utf8_lossy(&config);
            self.route = text.trim().strip_prefix("route:").map(Rc::from);
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Baseline { route: self.route.clone() }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    #[derive(Debug)]
    struct Baseline {
        route: Option<Rc<str>>,
    }

    impl Context for Baseline {}

    impl HttpContext for Baseline {
        fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            if let Some(cluster) = &self.route {
                self.set_http_request_header("x-meridian-cluster", Some(cluster));
            }
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            if self.route.is_none() {
                self.set_http_response_header("x-baseline", Some("1"));
            }
            Action::Continue
        }
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(filter::Root::default()) });
}}

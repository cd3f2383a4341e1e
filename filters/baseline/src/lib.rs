//! A trivial Proxy-Wasm filter that adds one response header
//! (`x-baseline: 1`) and does nothing else: what any wasm filter costs in
//! Envoy (VM entry per callback, one host call). `make bench-filters`
//! reports Meridian's added CPU as a multiple of this one's.

#![forbid(unsafe_code)]

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType};

    #[derive(Debug)]
    pub(crate) struct Root;

    impl Context for Root {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Baseline))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    #[derive(Debug)]
    struct Baseline;

    impl Context for Baseline {}

    impl HttpContext for Baseline {
        fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
            self.set_http_response_header("x-baseline", Some("1"));
            Action::Continue
        }
    }
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> { Box::new(filter::Root) });
}}

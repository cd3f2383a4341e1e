//! The per-request context: stamps `x-meridian-filter` on the request and the
//! response.

use crate::config::FilterConfig;
use crate::FILTER_HEADER;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

#[derive(Debug)]
pub(crate) struct MeridianHttp {
    config: Rc<FilterConfig>,
}

impl MeridianHttp {
    pub(crate) fn new(config: Rc<FilterConfig>) -> Self {
        Self { config }
    }
}

impl Context for MeridianHttp {}

impl HttpContext for MeridianHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Overwrite, never append: a client must not forge the value.
        self.set_http_request_header(FILTER_HEADER, Some(&self.config.name));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header(FILTER_HEADER, Some(&self.config.name));
        Action::Continue
    }
}

//! Renderers: pure functions from settings to proxy configuration text.

pub mod envoy;

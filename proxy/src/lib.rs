//! Warden's data plane on Pingora.

pub mod app;
pub mod hub;
pub mod identity;
pub mod observability;
pub mod pipeline;
pub mod sessions;
pub mod upstreams;

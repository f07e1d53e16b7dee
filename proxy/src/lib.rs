//! Warden's data plane on Pingora.

pub mod admin;
pub mod audit;
pub mod body;
pub mod ctx;
pub mod direct;
pub mod metrics;
pub mod respond;
pub mod response;
pub mod server;
pub mod service;
pub mod state;
pub mod upstream;

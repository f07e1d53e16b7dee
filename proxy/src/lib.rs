//! Warden's data plane on Pingora.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod bundles;
pub mod cli;
pub mod conn;
pub mod ctx;
pub mod direct;
pub mod global;
pub mod ledger;
pub mod metrics;
pub mod otel;
pub mod respond;
pub mod runtime;
pub mod response;
pub mod seal;
pub mod server;
pub mod service;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod upstream;

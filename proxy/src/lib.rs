//! Warden's data plane on Pingora.

pub mod admin;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod body;
pub mod bundles;
pub mod cli;
pub mod conn;
pub mod ctx;
pub mod forwarding;
pub mod global;
pub mod judging;
pub mod ledger;
pub mod metrics;
pub mod otel;
pub mod recording;
pub mod respond;
pub mod response;
pub mod runtime;
pub mod seal;
pub mod server;
pub mod service;
pub mod sessions;
pub mod state;
pub mod tls;
pub mod upstream;

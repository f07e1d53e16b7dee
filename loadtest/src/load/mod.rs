//! `warden-load`: open-loop MCP load with coordinated-omission-free latency,
//! a closed-loop saturation search, JSON reports and their comparison.

pub mod engine;
pub mod report;
mod sample;
pub mod scenario;
mod target;
mod wire;

pub use report::{compare, Report, SaturationReport};
pub use scenario::Scenario;
pub use target::Load;

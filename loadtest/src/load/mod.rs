//! `warden-load`: open-loop MCP load with coordinated-omission-free latency,
//! a closed-loop saturation search, JSON reports and their comparison.

pub mod engine;
pub mod report;
pub mod scenario;

pub use engine::Load;
pub use report::{compare, Report, SaturationReport};
pub use scenario::Scenario;

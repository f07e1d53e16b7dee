//! Reaching upstreams: the peer of one replica, the idle connection pool
//! of the judged POST path, and MCP-aware health checks.

pub mod health;
pub mod peer;
pub mod pool;

//! Reaching upstreams: peers and header rewriting, the idle connection pool
//! of the judged POST path, and MCP-aware health checks.

pub mod health;
pub mod pool;
pub mod upstream;

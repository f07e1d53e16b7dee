//! Warden's load generator and mock MCP server.

pub mod load;
pub mod mock;

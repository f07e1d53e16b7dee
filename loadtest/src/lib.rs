//! Warden's load generator and mock MCP server.

pub mod mock;

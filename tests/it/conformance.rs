//! Conformance with real MCP SDK peers (filled in below).

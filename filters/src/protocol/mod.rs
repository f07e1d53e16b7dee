//! The wire: what a message is and how it is read. Nothing here knows the
//! filter chain or any guard.
//!
//! - [`jsonrpc`]: the validating parser (`parse`) and what it yields
//!   ([`jsonrpc::Envelope`], spans of the members filters read).
//! - [`results`]: the MCP result shapes the parser checks inside `result`.
//! - [`id`], [`error`]: request ids, JSON-RPC errors and refusals.
//! - [`mcp`]: the `Mcp-*` headers and what a request names.
//! - [`names`]: member names as every mainstream peer reads them.
//! - [`embedded`]: server→client requests carried inside a message.
//! - [`sse`]: the Server-Sent Events decoder.
//! - [`version`]: MCP protocol revisions.

pub(crate) mod embedded;
pub mod error;
pub mod id;
pub mod jsonrpc;
pub mod mcp;
pub(crate) mod names;
pub(crate) mod resource_uri;
pub(crate) mod results;
pub mod sse;
pub(crate) mod uri_template;
pub mod version;

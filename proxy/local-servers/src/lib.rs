//! MCP servers the gateway runs for itself and reaches over loopback, like
//! any other upstream, so every guard of the request path judges their
//! traffic too:
//!
//! - [`stdio`]: the bridge to a local MCP server process (one child, its
//!   stdin and stdout) behind a loopback Streamable HTTP endpoint;
//! - [`aggregate`]: a virtual server, several member servers behind one
//!   endpoint, each member reached back through the gateway.
//!
//! [`loopback`] is what both share: the accept loop, responses, the
//! endpoint registry lookup and the constant-time secret check.

pub mod aggregate;
pub mod loopback;
pub mod metrics;
pub mod stdio;

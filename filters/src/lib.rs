//! Warden's pure engines. Nothing here performs I/O or depends on Pingora or
//! tokio: the proxy turns each HTTP exchange into parsed MCP messages once and
//! calls these functions, so every piece is testable and benchable alone.
//!
//! The layers, each importing only the ones above it:
//!
//! - [`protocol`]: the wire — the JSON-RPC parser, MCP result shapes and
//!   headers, ids and errors, SSE, member names, protocol versions.
//! - [`engines`]: the Rego policy engine, the DLP scanner, authentication,
//!   sealed tokens.
//! - [`chain`]: the filter seam (`McpFilter`, what a filter sees and may
//!   touch, the notes filters leave) and the plan of a whole request.
//! - [`guards`]: one filter per concern (policy, DLP, egress, quotas …).
//! - [`snapshot`]: where a bundle's config becomes the runtime value that
//!   holds the chain.

pub mod chain;
pub mod engines;
pub mod guards;
pub mod protocol;
pub mod snapshot;

pub use chain::filter::{
    Acts, Decision, Denial, Direction, Exchange, FilterChain, McpFilter, Message, Methods, Notes,
    Principal, StreamCall, Verdict,
};
pub use chain::plan::{
    plan_request, Cost, Forward, MessageRecord, Outcome, RequestMessages, RequestPlan,
};
pub use protocol::error::{codes, JsonRpcError, Refusal};
pub use protocol::jsonrpc::{parse, Envelope, Id, Kind, ParseLimits, Parsed, Spans};
pub use protocol::sse::{SseDecoder, SseEvent};
pub use snapshot::{ResolvedRoute, Snapshot};

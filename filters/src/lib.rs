//! Warden's pure engines. Nothing here performs I/O or depends on Pingora or
//! tokio: the proxy turns each HTTP exchange into parsed MCP messages once and
//! calls these functions, so every piece is testable and benchable alone.

pub mod approval;
pub mod authz;
pub mod dlp;
pub mod egress;
pub mod error;
pub mod filter;
pub mod handles;
pub mod identity;
pub mod jsonrpc;
pub mod mcp;
pub mod mrtr;
mod names;
pub mod plan;
pub mod policy;
pub mod quota;
pub mod runaway;
pub mod snapshot;
pub mod sse;
pub mod tasks;
pub mod token;
pub mod tools;
pub mod version;

pub use error::{codes, JsonRpcError, Refusal};
pub use filter::{
    Acts, Decision, Denial, Direction, Exchange, FilterChain, McpFilter, Message, Methods, Notes,
    Principal, Verdict,
};
pub use jsonrpc::{parse, Envelope, Id, Kind, ParseLimits, Parsed, Spans};
pub use plan::{plan_request, Forward, MessageRecord, Outcome, RequestPlan};
pub use snapshot::{ResolvedRoute, Snapshot};
pub use sse::{SseDecoder, SseEvent};

//! Validating JSON-RPC parser for the hot path.
//!
//! One pass over the body with serde_json's tokenizer and our own visitor:
//! the whole message is syntax-checked, duplicate object keys (compared after
//! unescaping, so `"a"` and `"\u0061"` collide) and nesting deeper than the
//! configured bound are rejected, and only the envelope fields a gateway routes
//! on are kept. Member names are compared the way the most lenient mainstream
//! peer reads them (Go's `encoding/json` matches names case-insensitively,
//! with Unicode simple folding): two members of one object whose names fold
//! to the same text are duplicates, and an envelope or `params` member whose
//! name folds to one the gateway reads without being byte-equal to it is
//! refused, so no peer can read a field the gateway did not. Numeric ids must
//! be integers every peer reads exactly (|n| < 2^53), `params.name`/`uri` strings, so every id goes back byte for byte. Error
//! texts never quote message content. The kept fields: `jsonrpc`, `id`, `method`, `params.name`, `params.uri`. Tool
//! arguments and results are validated but never materialised here; filters
//! that need them parse the message's span on demand.
//!
//! Where things are: [`parse`] and the envelope and `params` readers in
//! `parse.rs`; the checks every value gets (depth, duplicate and near-name
//! members) in `check.rs`; the MCP result shapes in `protocol::results`;
//! [`locate`], the spans of the members filters read, in `locate.rs`; what
//! the parser yields in `envelope.rs`.

pub(crate) mod check;
mod envelope;
mod locate;
mod parse;

#[cfg(test)]
mod tests;

pub use super::id::Id;
pub use envelope::{ElementError, Envelope, Kind, ParseLimits, Parsed, ReadSoFar, Spans};
pub use locate::{locate, object_members};
pub use parse::{
    is_mcp_method, nested_request_method, parse, parse_read, unreadable_method, Fault,
};

/// One message `raw` parsed with the default limits, for tests that judge
/// a message; panics when it is not a single valid message.
#[cfg(test)]
pub(crate) fn single(raw: &str) -> Envelope {
    match parse(raw.as_bytes(), ParseLimits::default()) {
        Ok(Parsed::Single(env)) => env,
        _ => panic!("not a message: {raw}"),
    }
}

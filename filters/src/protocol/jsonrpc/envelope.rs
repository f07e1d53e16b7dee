//! What the parser yields: the [`Envelope`] of one message (its kind, id,
//! method, the names it routes on and the spans of the members filters
//! read), a body as one message or a batch, and the parser's limits.

use std::ops::Range;

use crate::protocol::error::JsonRpcError;
use crate::protocol::id::Id;

/// What a message is, by JSON-RPC's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    /// A `result` or `error` answering a request of the other side.
    Response,
}

/// The fields of one JSON-RPC message that routing and filters key on.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub kind: Kind,
    pub id: Option<Id>,
    pub method: Option<String>,
    /// `params.name` (tools/call, prompts/get).
    pub name: Option<String>,
    /// `params.uri` (resources/read, resources/subscribe).
    pub uri: Option<String>,
    /// `params.taskId` (tasks/get, tasks/update, tasks/cancel, tasks/result).
    pub task_id: Option<String>,
    /// Whether the message carries `params`.
    pub has_params: bool,
    /// Response carrying `error` rather than `result`.
    pub is_error: bool,
    /// The lists a result holds, a bit each in the order of
    /// `results::LIST_NAMES` (`tools`, `prompts`, `resources`,
    /// `resourceTemplates`), then `results::COMPLETION_BIT` for a
    /// `completion`: a list is filtered (and a completion's values judged)
    /// only in the reply of its own request, so one elsewhere is refused.
    pub lists: u8,
    /// Byte range of this message within the body it was parsed from.
    pub span: Range<usize>,
    /// Where the members filters read sit, relative to the message's own
    /// bytes (`&body[span]`).
    pub spans: Spans,
}

/// Byte ranges of the members filters read, relative to the start of the
/// message. Recorded by [`parse`] once, so no filter re-parses a message to
/// find them. Each range covers the member's JSON value exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spans {
    /// `params`.
    pub params: Option<Range<usize>>,
    /// `params.arguments`.
    pub arguments: Option<Range<usize>>,
    /// `params._meta`.
    pub meta: Option<Range<usize>>,
    /// `result`.
    pub result: Option<Range<usize>>,
    /// `error`.
    pub error: Option<Range<usize>>,
}

/// A body: one message, or a 2025-03-26 batch whose elements are judged one by one.
#[derive(Debug, Clone)]
// A single message is the common case; boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Single(Envelope),
    /// Each element parsed on its own; an invalid element does not spoil the others.
    Batch(Vec<Result<Envelope, ElementError>>),
}

/// An invalid batch element: the error to answer with and the id, where one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementError {
    pub id: Option<Id>,
    pub error: JsonRpcError,
    pub span: Range<usize>,
    /// What the element's parser had read before the fault.
    pub read: ReadSoFar,
}

/// What the parser of one message had read when it stopped at a fault:
/// each member finished and unambiguous before the fault (never one cut
/// short, nor one a duplicate or a near name of it makes two readings),
/// for the refusal's audit record and its answer's id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSoFar {
    pub id: Option<Id>,
    /// A method every peer reads as the gateway does.
    pub method: Option<String>,
    /// `params.name`.
    pub name: Option<String>,
    /// `params.uri`.
    pub uri: Option<String>,
}

impl ReadSoFar {
    /// The call's target as the record names it (`mcp::judged_target`'s
    /// rule): the name of a tool or prompt, the URI of a resource.
    pub fn target(&self) -> Option<&str> {
        match self.method.as_deref()? {
            "tools/call" | "prompts/get" => self.name.as_deref(),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.uri.as_deref()
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_depth: u32,
    pub max_batch_len: u32,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_depth: 64,
            max_batch_len: 64,
        }
    }
}

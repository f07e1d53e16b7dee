//! The filter seam: every guard (policy, DLP, quotas, schemas …) is an
//! [`McpFilter`] that the gateway calls once per MCP message in each direction.

use std::net::IpAddr;
use std::sync::Arc;

use crate::error::JsonRpcError;
use crate::jsonrpc::{parse, Envelope, ParseLimits, Parsed};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (the body of a POST).
    Request,
    /// Server → client (a JSON response body or one SSE event).
    Response,
}

pub use crate::identity::Principal;

/// What a filter knows about the exchange a message belongs to.
#[derive(Debug, Clone)]
pub struct FilterContext<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub group: &'a str,
    pub session_id: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub direction: Direction,
    /// For a response message: the method of the request it answers, when known.
    pub request_method: Option<&'a str>,
    /// For a response message: the tool (or prompt, resource) that request named.
    pub request_target: Option<&'a str>,
    /// When the request arrived (the clock filters see).
    pub now: std::time::SystemTime,
    /// The caller's `x-warden-justification` header.
    pub justification: Option<&'a str>,
    /// Keep raw arguments in message records (`audit.include_arguments`).
    pub keep_arguments: bool,
    /// Where filters note what they found in this message (DLP findings).
    pub findings: Option<&'a std::cell::RefCell<Vec<crate::dlp::FindingNote>>>,
    /// Global-quota reservations made for this request (see `quota::global_demands`).
    pub global: Option<&'a crate::quota::GlobalVerdicts>,
}

impl<'a> FilterContext<'a> {
    /// A context with nothing but who, where and which way: no session,
    /// no request to answer, the current time, nothing to record into.
    /// Callers set the other fields they know with struct update syntax.
    pub fn new(principal: &'a Principal, server: &'a str, direction: Direction) -> Self {
        FilterContext {
            principal,
            server,
            group: "",
            session_id: None,
            protocol_version: None,
            source_ip: None,
            direction,
            request_method: None,
            request_target: None,
            now: std::time::SystemTime::now(),
            justification: None,
            keep_arguments: false,
            findings: None,
            global: None,
        }
    }
}

/// One message as a filter sees it: the envelope read by the parser and the
/// exact bytes that will be forwarded if every filter passes it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub envelope: &'a Envelope,
    pub bytes: &'a [u8],
}

/// Why a filter refused a message, in terms the caller can act on.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// The JSON-RPC error the caller receives (with the request id added).
    pub error: JsonRpcError,
    /// Stable machine-readable reason for audit and metrics.
    pub reason: String,
    /// When set, the caller receives this JSON-RPC *result* instead of the
    /// error (a `tools/call` denial as an `isError: true` tool result).
    pub result: Option<serde_json::Value>,
}

impl Denial {
    pub fn error(error: JsonRpcError, reason: impl Into<String>) -> Self {
        Denial {
            error,
            reason: reason.into(),
            result: None,
        }
    }

    /// The JSON-RPC response answering request `id`.
    pub fn to_response(&self, id: Option<&crate::jsonrpc::Id>) -> serde_json::Value {
        match &self.result {
            Some(r) => {
                // Results carry `resultType` since 2026-07-28; earlier peers
                // ignore it, later ones cannot read a result without it.
                let mut r = r.clone();
                if let Some(o) = r.as_object_mut() {
                    o.entry("resultType")
                        .or_insert_with(|| serde_json::Value::from("complete"));
                }
                serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": id.map_or(serde_json::Value::Null, crate::jsonrpc::Id::to_json),
                    "result": r,
                })
            }
            None => self.error.to_response(id),
        }
    }
}

/// Something held while a call is in flight (a concurrency slot); released
/// when dropped, so every exit path — response, error, client disconnect,
/// upstream reset — gives it back.
pub struct Hold(pub Box<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

impl PartialEq for Hold {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

/// A filter's verdict on one message.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Forward the message as it is.
    Pass,
    /// Forward it, and keep this until the exchange ends.
    PassHolding(Hold),
    /// Forward these bytes instead (a redacted re-serialisation). They must be
    /// one JSON-RPC message with the same kind, id and method; the chain checks.
    Mutated(Vec<u8>),
    /// Do not forward; answer with this denial.
    Reject(Denial),
}

impl Decision {
    /// Forward `v` re-serialised in place of the message. A rewrite that
    /// cannot be written is refused, never skipped (the original would then
    /// go on unjudged).
    pub fn rewrite(v: &serde_json::Value) -> Decision {
        match serde_json::to_vec(v) {
            Ok(b) => Decision::Mutated(b),
            Err(_) => Decision::Reject(Denial::error(
                JsonRpcError::new(
                    crate::error::codes::INTERNAL_ERROR,
                    "A gateway filter could not write its rewrite",
                ),
                "rewrite_failed",
            )),
        }
    }
}

/// A guard called once per MCP message. Filters are pure: no I/O, no clocks
/// beyond what the context carries, so each can be unit-tested and fuzzed.
pub trait McpFilter: Send + Sync {
    /// Stable name used in audit records and metrics.
    fn name(&self) -> &'static str;

    /// Runs for each client→server message before anything reaches the
    /// upstream. `Reject` keeps the message from the upstream entirely.
    fn on_request(&self, _msg: MessageView<'_>, _ctx: &FilterContext<'_>) -> Decision {
        Decision::Pass
    }

    /// Runs for each server→client message (a JSON body, or one SSE event's
    /// data) before it reaches the client. `Reject` replaces a response with
    /// the denial for its id, and drops a server→client request or notification.
    fn on_response(&self, _msg: MessageView<'_>, _ctx: &FilterContext<'_>) -> Decision {
        Decision::Pass
    }

    /// Whether `on_response` does anything. When no filter in the chain
    /// inspects responses, JSON responses are streamed through untouched
    /// (Content-Length kept) instead of being buffered and judged.
    fn inspects_responses(&self) -> bool {
        true
    }

    /// Whether `on_response` needs to see the JSON reply to a request of
    /// `method` (naming `target`) on `server`. When no filter does, the reply
    /// streams through untouched. Server→client requests never arrive in a
    /// JSON reply, so filters that only judge those can say no here.
    fn inspects_json_response(
        &self,
        _server: &str,
        _method: Option<&str>,
        _target: Option<&str>,
    ) -> bool {
        self.inspects_responses()
    }
}

/// The outcome of the whole chain for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Forward,
    ForwardMutated(Vec<u8>),
    Reject {
        filter: &'static str,
        denial: Denial,
    },
}

/// Filters in the order they run. Cheap to clone; lives in the snapshot.
#[derive(Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<dyn McpFilter>>,
    limits: ParseLimits,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.filters.iter().map(|x| x.name()))
            .finish()
    }
}

impl FilterChain {
    pub fn new(filters: Vec<Arc<dyn McpFilter>>, limits: ParseLimits) -> Self {
        FilterChain { filters, limits }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Whether any filter judges server→client messages.
    pub fn inspects_responses(&self) -> bool {
        self.filters.iter().any(|f| f.inspects_responses())
    }

    /// Whether any filter judges the JSON reply to this request.
    pub fn inspects_json_response(
        &self,
        server: &str,
        method: Option<&str>,
        target: Option<&str>,
    ) -> bool {
        self.filters
            .iter()
            .any(|f| f.inspects_json_response(server, method, target))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// Runs every filter on one message. A mutation is re-parsed and must keep
    /// the message's kind, id and method; later filters judge the mutated
    /// bytes, so what the chain approved is exactly what is forwarded.
    pub fn run(
        &self,
        env: &Envelope,
        bytes: &[u8],
        ctx: &FilterContext<'_>,
        holds: &mut Vec<Hold>,
    ) -> Verdict {
        let mut current: Option<(Envelope, Vec<u8>)> = None;
        // Holds taken for this message; dropped (released) if a later filter refuses it.
        let mut mine: Vec<Hold> = Vec::new();
        for f in &self.filters {
            let (e, b) = match &current {
                Some((e, b)) => (e, b.as_slice()),
                None => (env, bytes),
            };
            let view = MessageView {
                envelope: e,
                bytes: b,
            };
            let decision = match ctx.direction {
                Direction::Request => f.on_request(view, ctx),
                Direction::Response => f.on_response(view, ctx),
            };
            match decision {
                Decision::Pass => {}
                Decision::PassHolding(h) => mine.push(h),
                Decision::Reject(denial) => {
                    return Verdict::Reject {
                        filter: f.name(),
                        denial,
                    }
                }
                Decision::Mutated(new) => match parse(&new, self.limits) {
                    Ok(Parsed::Single(mut ne))
                        if ne.kind == env.kind && ne.id == env.id && ne.method == env.method =>
                    {
                        ne.span = 0..new.len();
                        current = Some((ne, new));
                    }
                    _ => {
                        return Verdict::Reject {
                            filter: f.name(),
                            denial: Denial::error(
                                JsonRpcError::new(
                                    crate::error::codes::INTERNAL_ERROR,
                                    "A gateway filter produced an invalid rewrite",
                                ),
                                "filter_rewrite_invalid",
                            ),
                        }
                    }
                },
            }
        }
        holds.append(&mut mine);
        match current {
            None => Verdict::Forward,
            Some((_, b)) => Verdict::ForwardMutated(b),
        }
    }
}

//! The filter seam: every guard (policy, DLP, quotas, schemas …) is an
//! [`McpFilter`] that the gateway calls once per MCP message in each direction.

use std::net::IpAddr;
use std::sync::Arc;

use crate::protocol::error::JsonRpcError;
use crate::protocol::jsonrpc::{parse, Envelope, Kind, ParseLimits, Parsed};

pub use super::notes::{Hold, Notes};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server (the body of a POST).
    Request,
    /// Server → client (a JSON response body or one SSE event).
    Response,
}

impl Direction {
    /// The word metrics and audit records use.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

pub use crate::engines::identity::Principal;

/// What the shared store said about a global quota key for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalVerdict {
    /// The units came out of this replica's lease.
    Granted,
    /// The fleet used the whole window.
    Exhausted { retry_after: u64 },
    /// The store could not be asked; the quota's `on_store_failure` decides.
    Unavailable,
}

/// Reservations made before the chain runs, by counter key.
pub type GlobalVerdicts = std::collections::HashMap<Vec<u8>, GlobalVerdict>;

/// Who, where and when: what a filter knows about the exchange (one HTTP
/// request or stream) a message belongs to. Built once per request and
/// never changed by a filter; what a filter finds goes into [`Notes`].
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub principal: &'a Principal,
    pub server: &'a str,
    pub group: &'a str,
    /// The virtual server the message came through (its member leg), if any.
    pub via: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    /// When the request arrived (the clock filters see).
    pub now: std::time::SystemTime,
    /// The caller's `x-warden-justification` header.
    pub justification: Option<&'a str>,
    /// Keep raw arguments in message records (`audit.include_arguments`).
    pub keep_arguments: bool,
    /// Global-quota reservations made for this request (see `quota::global_demands`).
    pub global: Option<&'a GlobalVerdicts>,
    /// Money-budget reservations made for this request's priced calls
    /// (see `guards::budget`).
    pub budget: Option<&'a crate::engines::budget::BudgetVerdicts>,
    /// The flow state read from the shared store for this request (see
    /// `flow`); `None`: the process's own table holds it.
    pub flow: Option<&'a crate::engines::flow::Loaded>,
    /// On a virtual server's member leg: the client's session of the
    /// virtual server (a digest its aggregator names), which flows are
    /// tracked by instead of the leg's own session.
    pub flow_session: Option<&'a str>,
    /// Whether this exchange's owner sent a request of this id in this
    /// session that the gateway forwarded (the reply ledger); `None`: the
    /// exchange has no session (see `guards::cancel`).
    pub asked: Option<AskedIds<'a>>,
    /// The query string the upstream request carries (after `?`), if any:
    /// it reaches the server beside the message.
    pub query: Option<&'a str>,
}

/// See [`Exchange::asked`].
#[derive(Clone, Copy)]
pub struct AskedIds<'a>(pub &'a dyn Fn(&crate::protocol::jsonrpc::Id) -> bool);

impl std::fmt::Debug for AskedIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AskedIds")
    }
}

impl<'a> Exchange<'a> {
    /// An exchange with nothing but who and where: no session, the current
    /// time. Callers set the other fields they know with struct update syntax.
    pub fn new(principal: &'a Principal, server: &'a str) -> Self {
        Exchange {
            principal,
            server,
            group: "",
            via: None,
            session_id: None,
            protocol_version: None,
            source_ip: None,
            now: std::time::SystemTime::now(),
            justification: None,
            keep_arguments: false,
            global: None,
            budget: None,
            flow: None,
            flow_session: None,
            asked: None,
            query: None,
        }
    }
}

/// One message as every filter, the audit record and the span see it: the
/// exact bytes that will be forwarded if every filter passes it, the
/// envelope and spans the parser recorded, and the arguments materialised
/// at most once, only when a filter asks for them.
#[derive(Debug)]
pub struct Message<'a> {
    pub envelope: &'a Envelope,
    pub bytes: &'a [u8],
    /// Which way the message travels.
    pub direction: Direction,
    /// For a server→client response: the method of the request it answers,
    /// when known.
    pub request_method: Option<&'a str>,
    /// For a server→client response: the tool (or prompt, resource) that
    /// request named.
    pub request_target: Option<&'a str>,
    /// For a server→client response: `sha256:<hex>` of that request's raw
    /// arguments, when it had some.
    pub request_args_digest: Option<&'a str>,
    /// For a server→client response: the audit link of the task that
    /// request named (`tasks/*`).
    pub request_task: Option<&'a str>,
    /// For a server→client response to a completion of a resource
    /// template: what it completed, as `Completing::to_text` wrote it.
    pub request_completion: Option<&'a str>,
    /// A reply matched to a request of the client's, whose id is therefore
    /// the client's own text; `false` for a reply the gateway matched to
    /// nothing it forwarded (its id is the server's text).
    pub id_matched: bool,
    /// A reply matched through the session's reply ledger rather than to a
    /// request of its own exchange (it came on a GET stream: live,
    /// resumed or legacy). The ledger holds the latest request of that id
    /// this replica forwarded, which need not be the one the server
    /// answers: an id is claimed again once its entry expires or is
    /// evicted, and on another replica at any time. What the reply is
    /// labelled or sealed as must not rest on that match alone.
    pub ledger_matched: bool,
    /// For a server's request or notification on the stream of a client
    /// POST: the calls that POST carried. What the server sends there may
    /// be their data.
    pub stream_call: StreamCall<'a>,
    /// For a server message on an SSE stream: the tail of the text the
    /// client assembled from the stream's earlier messages (progress and
    /// log messages, partial results; see
    /// [`crate::engines::dlp::stream_text`]). DLP reads this message's text
    /// after it, so data split across events is one text.
    pub stream_before: Option<&'a str>,
    /// The text this message shows on its stream, when the caller read it
    /// (for its stream's tail) before the chain runs: DLP reads it after
    /// `stream_before` without walking the message again.
    pub stream_shown: Option<&'a crate::engines::dlp::Shown>,
    arguments: std::cell::OnceCell<Option<serde_json::Value>>,
    value: std::cell::OnceCell<Option<serde_json::Value>>,
    /// The bytes as text, when they are UTF-8 (checked at most once: the
    /// spans of every filter are sliced out of it, not checked again each).
    text: std::cell::OnceCell<Option<&'a str>>,
    /// Whether the bytes hold a `\u` escape (looked for at most once).
    escaped: std::cell::OnceCell<bool>,
    /// Whether the bytes hold a non-ASCII byte or DEL (looked for at most
    /// once).
    unplain: std::cell::OnceCell<bool>,
    /// Whether the message may carry requests inside it (looked for at
    /// most once).
    embeds: std::cell::OnceCell<bool>,
    /// Whether a member name is written with a control-character escape
    /// (looked for at most once).
    control_named: std::cell::OnceCell<bool>,
    /// Whether the message may name a task (`guards::task_binding`; looked for at
    /// most once, however many filters ask).
    task_named: std::cell::OnceCell<bool>,
    /// Whether the message may hold a member read as `uri` (looked for at
    /// most once).
    uri_named: std::cell::OnceCell<bool>,
}

/// The calls whose stream a server's request or notification came on
/// (see [`Message::stream_call`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamCall<'a> {
    /// A reply, or a POST that named no target.
    #[default]
    None,
    /// A stream of no call the gateway can name (GET: live, resumed or
    /// legacy; a POST whose requests name no target: a ping, a completion,
    /// a task of no known tool): what relates to a call there (progress,
    /// related-task metadata) relates to one it cannot label.
    NoCall,
    /// The one request of its POST that named a target: its method and target.
    One(&'a str, &'a str),
    /// A POST (a batch) with several: any of them.
    Several,
}

/// A word a filter looks for in raw bytes, its searcher built once.
pub struct Word {
    word: &'static str,
    finder: std::sync::OnceLock<memchr::memmem::Finder<'static>>,
}

impl Word {
    pub const fn new(word: &'static str) -> Self {
        Word {
            word,
            finder: std::sync::OnceLock::new(),
        }
    }

    /// Whether `bytes` hold the word as it is.
    pub fn in_bytes(&self, bytes: &[u8]) -> bool {
        self.finder
            .get_or_init(|| memchr::memmem::Finder::new(self.word.as_bytes()))
            .find(bytes)
            .is_some()
    }
}

static UNICODE_ESCAPE: Word = Word::new("\\u");

/// Whether `b` holds `"uri"` in any ASCII case: each quote (found by
/// `memchr`, a few dozen in a kilobyte of JSON) is looked past.
fn quoted_uri_any_case(b: &[u8]) -> bool {
    memchr::memchr_iter(b'"', b).any(|i| {
        b.get(i + 1..i + 5)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"uri\""))
    })
}

/// Whether JSON text `bytes` holds a member name written with an escape
/// that writes a control character (`\b \f \n \r \t`): readers that drop
/// invisible characters drop it from the name (`"uri\t"` read as `uri`).
/// A string is a member name when a `:` follows its closing quote. Text
/// with such escapes in values only (a tool's multi-line output) holds
/// none.
fn control_escaped_name(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\\', &bytes[at..]) {
        let i = at + i;
        match bytes.get(i + 1) {
            Some(b'b' | b'f' | b'n' | b'r' | b't') => {
                // The end of this string: its next unescaped quote.
                let mut j = i + 2;
                let close = loop {
                    match bytes.get(j) {
                        Some(b'\\') => j += 2,
                        Some(b'"') => break Some(j),
                        Some(_) => j += 1,
                        None => break None,
                    }
                };
                let Some(close) = close else {
                    return false;
                };
                let next = bytes[close + 1..]
                    .iter()
                    .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                if next == Some(&b':') {
                    return true;
                }
                at = close + 1;
            }
            // `\\`, `\"`, `\/`, `\u`: the next byte is the escape's own.
            Some(_) => at = i + 2,
            None => return false,
        }
    }
    false
}

impl<'a> Message<'a> {
    /// A client→server message.
    pub fn new(envelope: &'a Envelope, bytes: &'a [u8]) -> Self {
        Message {
            envelope,
            bytes,
            direction: Direction::Request,
            request_method: None,
            request_target: None,
            request_args_digest: None,
            request_task: None,
            request_completion: None,
            id_matched: false,
            ledger_matched: false,
            stream_call: StreamCall::None,
            stream_before: None,
            stream_shown: None,
            arguments: std::cell::OnceCell::new(),
            value: std::cell::OnceCell::new(),
            text: std::cell::OnceCell::new(),
            escaped: std::cell::OnceCell::new(),
            unplain: std::cell::OnceCell::new(),
            embeds: std::cell::OnceCell::new(),
            control_named: std::cell::OnceCell::new(),
            task_named: std::cell::OnceCell::new(),
            uri_named: std::cell::OnceCell::new(),
        }
    }

    /// A server→client message; a response answers a request of `method`
    /// naming `target`, when known.
    pub fn from_server(
        envelope: &'a Envelope,
        bytes: &'a [u8],
        method: Option<&'a str>,
        target: Option<&'a str>,
    ) -> Self {
        Message {
            direction: Direction::Response,
            request_method: method,
            request_target: target,
            id_matched: method.is_some(),
            ..Message::new(envelope, bytes)
        }
    }

    /// The same message, rewritten: `bytes` parsed as `envelope`.
    fn rewritten<'b>(&self, envelope: &'b Envelope, bytes: &'b [u8]) -> Message<'b>
    where
        'a: 'b,
    {
        Message {
            envelope,
            bytes,
            direction: self.direction,
            request_method: self.request_method,
            request_target: self.request_target,
            request_args_digest: self.request_args_digest,
            request_task: self.request_task,
            request_completion: self.request_completion,
            id_matched: self.id_matched,
            ledger_matched: self.ledger_matched,
            stream_call: self.stream_call,
            stream_before: self.stream_before,
            // Read from the bytes this message replaces.
            stream_shown: None,
            arguments: std::cell::OnceCell::new(),
            value: std::cell::OnceCell::new(),
            text: std::cell::OnceCell::new(),
            escaped: std::cell::OnceCell::new(),
            unplain: std::cell::OnceCell::new(),
            embeds: std::cell::OnceCell::new(),
            control_named: std::cell::OnceCell::new(),
            task_named: std::cell::OnceCell::new(),
            uri_named: std::cell::OnceCell::new(),
        }
    }

    /// Whether the message, once its strings are decoded, may hold `word`:
    /// the bytes hold it as it is, or hold a `\u` escape (which can spell
    /// anything) or a member name written with a control-character escape
    /// (which a reader dropping invisible characters drops: `ta\tskId`);
    /// then a parse decides. The escapes are looked for once per message,
    /// however many filters ask.
    pub fn may_hold(&self, word: &Word) -> bool {
        word.in_bytes(self.bytes) || self.names_escaped()
    }

    /// `look`'s answer to whether the message may name a task, asked once
    /// per message however many filters ask (the task binding on both
    /// ways, the information flow on replies).
    pub(crate) fn task_named(&self, look: impl FnOnce() -> bool) -> bool {
        *self.task_named.get_or_init(look)
    }

    /// Whether the bytes hold a `\u` escape (which can spell any name).
    /// Looked for once per message, however many filters ask.
    pub fn escaped(&self) -> bool {
        *self
            .escaped
            .get_or_init(|| UNICODE_ESCAPE.in_bytes(self.bytes))
    }

    /// Whether the bytes hold a byte some decoder drops or folds in a
    /// member name (any non-ASCII byte, DEL): a name there may be read as
    /// another. Looked for once per message, however many filters ask.
    pub fn unplain(&self) -> bool {
        *self
            .unplain
            .get_or_init(|| !self.bytes.is_ascii() || memchr::memchr(0x7f, self.bytes).is_some())
    }

    /// Whether the message may hold a member a client reads as `uri`:
    /// `"uri"` in any ASCII case, an escape in a name (which can spell it)
    /// or a byte a decoder drops or folds (`urı`). Nothing else can name a
    /// resource.
    /// Looked for once per message, however many filters ask.
    pub fn may_name_uri(&self) -> bool {
        *self.uri_named.get_or_init(|| {
            self.unplain() || self.names_escaped() || quoted_uri_any_case(self.bytes)
        })
    }

    /// Whether a member name may be written with an escape that changes
    /// how it reads: a `\u` anywhere, or a control-character escape in a
    /// name (see `control_escaped_name`).
    pub fn names_escaped(&self) -> bool {
        self.escaped()
            || *self
                .control_named
                .get_or_init(|| control_escaped_name(self.bytes))
    }

    /// The member of a server's message that holds what it says: an error
    /// reply's `error`, a result's `result`, a request's or notification's
    /// `params`.
    pub fn said(&self) -> Option<&serde_json::Value> {
        let member = match self.envelope.kind {
            Kind::Response if self.envelope.is_error => "error",
            Kind::Response => "result",
            _ => "params",
        };
        self.value()?.get(member)
    }

    /// Whether the message may carry server→client requests inside it
    /// (`inputRequests`, see `protocol::embedded`) under a name some peer
    /// reads as that and the parser lets through: the word as it is or in
    /// lower case ([`crate::protocol::embedded::named_in`]), an escape, or
    /// a byte a decoder drops or folds (`inputRequeſts`, a zero-width
    /// character written raw). Then a parse decides. Looked for once per
    /// message for every filter that judges such requests (the task
    /// binding, the policy, egress): no dearer than the one search each of
    /// the last two made before.
    pub fn may_embed_requests(&self) -> bool {
        *self.embeds.get_or_init(|| {
            self.unplain()
                || self.names_escaped()
                || crate::protocol::embedded::named_in(self.bytes)
        })
    }

    fn slice(&self, r: &Option<std::ops::Range<usize>>) -> Option<&'a str> {
        // Spans fall on value boundaries of a message that is valid UTF-8;
        // `get` refuses a range that does not fall on characters.
        let text = *self
            .text
            .get_or_init(|| simdutf8::basic::from_utf8(self.bytes).ok());
        text?.get(r.clone()?)
    }

    /// The raw JSON text of `params.arguments`.
    pub fn arguments_raw(&self) -> Option<&'a str> {
        self.slice(&self.envelope.spans.arguments)
    }

    /// The raw JSON text of `params`.
    pub fn params_raw(&self) -> Option<&'a str> {
        self.slice(&self.envelope.spans.params)
    }

    /// The raw JSON text of `params._meta`.
    pub fn meta_raw(&self) -> Option<&'a str> {
        self.slice(&self.envelope.spans.meta)
    }

    /// The raw JSON text of `result`.
    pub fn result_raw(&self) -> Option<&'a str> {
        self.slice(&self.envelope.spans.result)
    }

    /// The raw JSON text of `error`.
    pub fn error_raw(&self) -> Option<&'a str> {
        self.slice(&self.envelope.spans.error)
    }

    /// The whole message as a value, read once for every filter that needs
    /// it (a list reply judged by policy, pinning and header declarations is
    /// parsed once, not once per filter). A filter that rewrites clones it.
    pub fn value(&self) -> Option<&serde_json::Value> {
        self.value
            .get_or_init(|| serde_json::from_slice(self.bytes).ok())
            .as_ref()
    }

    /// Whether some filter needed the arguments as a value.
    pub fn arguments_materialised(&self) -> bool {
        self.arguments.get().is_some()
    }

    /// `params.arguments` as a value, read once for every filter that needs
    /// it (`None` when absent).
    pub fn arguments(&self) -> Option<&serde_json::Value> {
        self.arguments
            .get_or_init(|| {
                // Validated by the parser: reading it again cannot fail.
                serde_json::from_str(self.arguments_raw()?).ok()
            })
            .as_ref()
    }
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
    /// Step-up authorization: the OAuth scopes the call needs and the
    /// caller's token lacks. A request carrying only this message is then
    /// answered 403 with `WWW-Authenticate: Bearer error="insufficient_scope"`.
    pub step_up: Option<Vec<String>>,
}

impl Denial {
    pub fn error(error: JsonRpcError, reason: impl Into<String>) -> Self {
        Denial {
            error,
            reason: reason.into(),
            result: None,
            step_up: None,
        }
    }

    /// A refusal the model can read: `text` becomes a tool error (an
    /// `isError` result) when `as_tool_error`, else only the JSON-RPC error.
    pub fn readable(error: JsonRpcError, reason: String, text: &str, as_tool_error: bool) -> Self {
        let result = as_tool_error.then(|| {
            serde_json::json!({
                "content": [{"type": "text", "text": text}],
                "isError": true,
            })
        });
        Denial {
            error,
            reason,
            result,
            step_up: None,
        }
    }

    /// The denial of a call whose caller's token lacks `missing` scopes.
    pub fn insufficient_scope(missing: Vec<String>) -> Self {
        let message = format!(
            "Insufficient scope for this call: needs {}",
            missing.join(" ")
        );
        Denial {
            error: JsonRpcError::new(crate::protocol::error::codes::FORBIDDEN, message)
                .with_data(serde_json::json!({"reason": "insufficient_scope", "scopes": missing})),
            reason: "insufficient_scope".into(),
            result: None,
            step_up: Some(missing),
        }
    }

    /// The JSON-RPC response answering request `id`.
    pub fn to_response(&self, id: Option<&crate::protocol::jsonrpc::Id>) -> serde_json::Value {
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
                    "id": id.map_or(serde_json::Value::Null, crate::protocol::jsonrpc::Id::to_json),
                    "result": r,
                })
            }
            None => self.error.to_response(id),
        }
    }
}

/// A filter's verdict on one message.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Forward the message as it is.
    Pass,
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
                    crate::protocol::error::codes::INTERNAL_ERROR,
                    "A gateway filter could not write its rewrite",
                ),
                "rewrite_failed",
            )),
        }
    }
}

/// A reply a concern that applies to it cannot read: refused, never passed.
pub(crate) fn unreadable_reply() -> Decision {
    Decision::Reject(Denial::error(
        JsonRpcError::new(
            crate::protocol::error::codes::UPSTREAM_PROTOCOL,
            "MCP server sent a reply the gateway cannot read",
        ),
        "reply_unreadable",
    ))
}

/// Which methods a filter acts on, in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// Every message.
    All,
    /// None: the filter is never called in this direction.
    None,
    /// Messages with one of these methods (for a response: the method of the
    /// request it answers). A response whose request is unknown reaches
    /// every filter that acts on responses at all.
    Only(&'static [&'static str]),
}

/// What a filter acts on, declared as data: the chain indexes filters by it,
/// so a filter is only called for the messages it judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acts {
    /// Client→server messages.
    pub requests: Methods,
    /// Server→client messages.
    pub responses: Methods,
}

impl Acts {
    pub const ALL: Acts = Acts {
        requests: Methods::All,
        responses: Methods::All,
    };
}

/// The chain's filters per direction and method, in chain order.
#[derive(Clone, Default)]
struct Index {
    request: Side,
    response: Side,
}

/// The filters of one direction, by the method of the message.
#[derive(Clone, Default)]
struct Side {
    /// Each method some filter names, with every filter acting on it.
    per: Vec<(&'static str, Vec<usize>)>,
    /// For any other method: the filters that act on every message.
    other: Vec<usize>,
    /// For a message whose method is unknown: every filter of the direction.
    unknown: Vec<usize>,
}

impl Index {
    fn build(filters: &[Arc<dyn McpFilter>]) -> Index {
        let acts: Vec<Acts> = filters.iter().map(|f| f.acts_on()).collect();
        let side = |pick: fn(&Acts) -> Methods| {
            let mut names: Vec<&'static str> = Vec::new();
            for a in &acts {
                if let Methods::Only(m) = pick(a) {
                    for n in m {
                        if !names.contains(n) {
                            names.push(n);
                        }
                    }
                }
            }
            let for_method = |name: Option<&str>| -> Vec<usize> {
                acts.iter()
                    .enumerate()
                    .filter(|(_, a)| match (pick(a), name) {
                        (Methods::All, _) => true,
                        (Methods::None, _) => false,
                        (Methods::Only(m), Some(n)) => m.contains(&n),
                        (Methods::Only(_), None) => false,
                    })
                    .map(|(i, _)| i)
                    .collect()
            };
            let per: Vec<(&'static str, Vec<usize>)> =
                names.iter().map(|n| (*n, for_method(Some(n)))).collect();
            let unknown: Vec<usize> = acts
                .iter()
                .enumerate()
                .filter(|(_, a)| pick(a) != Methods::None)
                .map(|(i, _)| i)
                .collect();
            Side {
                per,
                other: for_method(None),
                unknown,
            }
        };
        let mut request = side(|a| a.requests);
        // A client message without a method answers a server→client request:
        // only the filters that judge every message see it.
        request.unknown = request.other.clone();
        Index {
            request,
            response: side(|a| a.responses),
        }
    }

    fn order(&self, dir: Direction, method: Option<&str>) -> &[usize] {
        let side = match dir {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        };
        let Some(m) = method else {
            return &side.unknown;
        };
        side.per
            .iter()
            .find(|(n, _)| *n == m)
            .map_or(side.other.as_slice(), |(_, v)| v.as_slice())
    }
}

/// A guard called once per MCP message. Filters are pure: no I/O, no clocks
/// beyond what the context carries, so each can be unit-tested and fuzzed.
pub trait McpFilter: Send + Sync {
    /// Stable name used in audit records and metrics.
    fn name(&self) -> &'static str;

    /// The messages this filter judges; it is not called for others.
    fn acts_on(&self) -> Acts {
        Acts::ALL
    }

    /// Runs for each client→server message before anything reaches the
    /// upstream. `Reject` keeps the message from the upstream entirely.
    fn on_request(&self, _msg: &Message<'_>, _ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        Decision::Pass
    }

    /// Runs for each server→client message (a JSON body, or one SSE event's
    /// data) before it reaches the client. `Reject` replaces a response with
    /// the denial for its id, and drops a server→client request or notification.
    fn on_response(&self, _msg: &Message<'_>, _ex: &Exchange<'_>, _notes: &mut Notes) -> Decision {
        Decision::Pass
    }

    /// Runs for a server→client message another filter (or this one)
    /// refused: it is replaced by the denial or dropped, yet what it showed
    /// may be partly with the client already (data split across a
    /// stream's events: the part before arrived in an earlier event). A
    /// filter that records what reaches the client records what the
    /// refusal could not hold back; it cannot change the verdict.
    fn on_refused_response(&self, _msg: &Message<'_>, _ex: &Exchange<'_>, _notes: &mut Notes) {}

    /// Whether this filter's judgment of a request only reads it (it counts
    /// nothing, holds nothing and rewrites nothing), so the chain runs it
    /// again on a request a later filter rewrote: what reaches the upstream
    /// is what it judged (a redaction's mask, or text a strip joined, is
    /// judged by the policy, the schema and egress like any argument).
    fn judges_again(&self) -> bool {
        false
    }

    /// Whether this filter's rewrites make text of their own (DLP's
    /// strip joins what was around a match, a mask is new text): on a
    /// server→client message, what it made is judged again by the filters
    /// before it that judge content ([`McpFilter::judges_reply_again`]) —
    /// a strip that joins `http://a.example###system@10.0.0.5` into a URL
    /// whose host is `10.0.0.5`, or `wi[INST]re` into a tool the policy
    /// hides. Other reply rewrites (a handle sealed, an entry taken out)
    /// make no text.
    fn rewrites_content(&self) -> bool {
        false
    }

    /// Whether this filter judges a server→client message again when a
    /// later filter's content rewrite changed it (see
    /// [`McpFilter::rewrites_content`]). It must keep no state a second
    /// judgment would spoil, and a rewrite of its own on the second
    /// judgment is applied and judged again in turn.
    fn judges_reply_again(&self) -> bool {
        false
    }
}

/// The outcome of the whole chain for one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Forward,
    /// Forward these bytes instead, and the envelope the chain parsed them
    /// as (the last rewrite, which the filters after it judged).
    ForwardMutated(Vec<u8>, Box<Envelope>),
    Reject {
        filter: &'static str,
        denial: Denial,
    },
}

/// Filters in the order they run. Cheap to clone; lives in the snapshot.
#[derive(Clone, Default)]
pub struct FilterChain {
    filters: Vec<Arc<dyn McpFilter>>,
    index: Index,
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
        let index = Index::build(&filters);
        FilterChain {
            filters,
            index,
            limits,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.filters.iter().map(|f| f.name()).collect()
    }

    /// Runs every filter that acts on this message. A mutation is re-parsed
    /// and must keep the message's kind, id and method; later filters judge
    /// the mutated bytes, so what the chain approved is exactly what is
    /// forwarded.
    pub fn run(&self, msg: &Message<'_>, ex: &Exchange<'_>, notes: &mut Notes) -> Verdict {
        let env = msg.envelope;
        let method = match (msg.direction, env.kind) {
            (Direction::Response, Kind::Response) => msg.request_method,
            _ => env.method.as_deref(),
        };
        let order = self.index.order(msg.direction, method);
        // Holds taken for this message are dropped (released) if a later filter refuses it.
        let mark = notes.holds.len();
        let verdict = self.run_from(order, 0, msg, env, ex, notes);
        if matches!(verdict, Verdict::Reject { .. }) {
            notes.holds.truncate(mark);
            // A refused server message still tells the filters that record
            // what reaches the client (the flow guard: a DLP finding that
            // spans into what was delivered before it).
            if msg.direction == Direction::Response {
                for &i in order {
                    self.filters[i].on_refused_response(msg, ex, notes);
                }
            }
        }
        verdict
    }

    /// Runs `order[from..]`; `order` is the message's whole order, so a
    /// rewrite is judged again by every filter before it, however many
    /// rewrote the message before.
    fn run_from(
        &self,
        order: &[usize],
        from: usize,
        msg: &Message<'_>,
        original: &Envelope,
        ex: &Exchange<'_>,
        notes: &mut Notes,
    ) -> Verdict {
        for (pos, &i) in order.iter().enumerate().skip(from) {
            let f = &self.filters[i];
            let decision = match msg.direction {
                Direction::Request => f.on_request(msg, ex, notes),
                Direction::Response => f.on_response(msg, ex, notes),
            };
            match decision {
                Decision::Pass => {}
                Decision::Reject(denial) => {
                    return Verdict::Reject {
                        filter: f.name(),
                        denial,
                    }
                }
                Decision::Mutated(new) => {
                    let Some(ne) = self.checked(&new, original, msg.direction) else {
                        return rewrite_invalid(f.name());
                    };
                    // A rewritten message is judged again by the filters
                    // before this one that judge without keeping state: on
                    // a request, those that only read it; on a reply, when
                    // the rewrite made text (DLP), those that judge
                    // content. A rewrite one of them makes in turn is
                    // applied and judged again by all of them, until none
                    // changes it; text that keeps changing is refused.
                    let (mut new, mut ne) = (new, ne);
                    let again = |g: &Arc<dyn McpFilter>| match msg.direction {
                        Direction::Request => g.judges_again(),
                        Direction::Response => f.rewrites_content() && g.judges_reply_again(),
                    };
                    let mut sweeps = 0;
                    loop {
                        let next = msg.rewritten(&ne, &new);
                        let mut changed: Option<(Vec<u8>, &'static str)> = None;
                        for &j in &order[..pos] {
                            let g = &self.filters[j];
                            if !again(g) {
                                continue;
                            }
                            let decision = match msg.direction {
                                Direction::Request => g.on_request(&next, ex, notes),
                                Direction::Response => g.on_response(&next, ex, notes),
                            };
                            match decision {
                                Decision::Pass => {}
                                Decision::Reject(denial) => {
                                    return Verdict::Reject {
                                        filter: g.name(),
                                        denial,
                                    }
                                }
                                // The same bytes again: nothing to change.
                                Decision::Mutated(b) if b == new => {}
                                Decision::Mutated(b) => {
                                    changed = Some((b, g.name()));
                                    break;
                                }
                            }
                        }
                        let Some((b, by)) = changed else {
                            break;
                        };
                        sweeps += 1;
                        if sweeps >= MAX_SWEEPS {
                            return rewrite_invalid(by);
                        }
                        ne = match self.checked(&b, original, msg.direction) {
                            Some(e) => e,
                            None => return rewrite_invalid(by),
                        };
                        new = b;
                    }
                    let next = msg.rewritten(&ne, &new);
                    let verdict = self.run_from(order, pos + 1, &next, original, ex, notes);
                    return match verdict {
                        Verdict::Forward => Verdict::ForwardMutated(new, Box::new(ne)),
                        other => other,
                    };
                }
            }
        }
        Verdict::Forward
    }

    /// A rewrite parsed, if it keeps what the message names: its kind, id
    /// and method, and (a request) the tool or prompt and the URI, which
    /// every guard keyed on (risk, quotas, flows, budgets) judged as they
    /// were.
    fn checked(&self, new: &[u8], original: &Envelope, dir: Direction) -> Option<Envelope> {
        match parse(new, self.limits) {
            Ok(Parsed::Single(mut ne))
                if ne.kind == original.kind
                    && ne.id == original.id
                    && ne.method == original.method
                    && (dir == Direction::Response
                        || (ne.name == original.name && ne.uri == original.uri)) =>
            {
                ne.span = 0..new.len();
                Some(ne)
            }
            _ => None,
        }
    }
}

/// How many times the filters that judge a rewrite again may change it
/// before the message is refused as text that keeps changing.
const MAX_SWEEPS: usize = 4;

/// The refusal of a message a filter rewrote into what the chain cannot
/// forward (another message, another name, or a rewrite a filter that
/// only reads would change again).
fn rewrite_invalid(filter: &'static str) -> Verdict {
    Verdict::Reject {
        filter,
        denial: Denial::error(
            JsonRpcError::new(
                crate::protocol::error::codes::INTERNAL_ERROR,
                "A gateway filter produced an invalid rewrite",
            ),
            "filter_rewrite_invalid",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_escapes_count_in_names_only() {
        for (text, named) in [
            (r#"{"uri\t":"x"}"#, true),
            (r#"{"a":{"u\nri" : "x"}}"#, true),
            (r#"{"text":"a\nb","uri":"x"}"#, false),
            (r#"{"text":"a\nb\"c:","k":1}"#, false),
            (r#"{"text":"a\\n","k":1}"#, false),
            (r#"{"text":"a\\\n":1}"#, true),
            (r#"["a\tb"]"#, false),
            (r#"{"a\u0074":1}"#, false),
        ] {
            assert_eq!(control_escaped_name(text.as_bytes()), named, "{text}");
        }
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its calls; acts on `tools/call` only.
    struct Counting(AtomicUsize);
    impl McpFilter for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn acts_on(&self) -> Acts {
            Acts {
                requests: Methods::Only(&["tools/call"]),
                responses: Methods::Only(&["tools/call"]),
            }
        }
        fn on_request(&self, _: &Message<'_>, _: &Exchange<'_>, _: &mut Notes) -> Decision {
            self.0.fetch_add(1, Ordering::Relaxed);
            Decision::Pass
        }
        fn on_response(&self, _: &Message<'_>, _: &Exchange<'_>, _: &mut Notes) -> Decision {
            self.0.fetch_add(1, Ordering::Relaxed);
            Decision::Pass
        }
    }

    #[test]
    fn filters_are_called_only_for_what_they_act_on() {
        let f = Arc::new(Counting(AtomicUsize::new(0)));
        let chain = FilterChain::new(vec![f.clone()], ParseLimits::default());
        let p = Principal::anonymous();
        let run = |body: &str, dir: Direction, asked: Option<&str>| {
            let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
                panic!("parse")
            };
            let ex = Exchange::new(&p, "s");
            let msg = match dir {
                Direction::Request => Message::new(&env, body.as_bytes()),
                Direction::Response => Message::from_server(&env, body.as_bytes(), asked, None),
            };
            let before = f.0.load(Ordering::Relaxed);
            chain.run(&msg, &ex, &mut Notes::default());
            f.0.load(Ordering::Relaxed) - before
        };
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}"#;
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let reply = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(run(call, Direction::Request, None), 1);
        assert_eq!(run(ping, Direction::Request, None), 0);
        assert_eq!(run(reply, Direction::Response, Some("tools/call")), 1);
        assert_eq!(run(reply, Direction::Response, Some("tools/list")), 0);
        // A reply whose request is unknown reaches every response filter.
        assert_eq!(run(reply, Direction::Response, None), 1);
        // A client's answer to a server→client request has no method of its own.
        assert_eq!(run(reply, Direction::Request, None), 0);
    }

    /// Rewrites a call's tool name.
    struct Renaming;
    impl McpFilter for Renaming {
        fn name(&self) -> &'static str {
            "renaming"
        }
        fn on_request(&self, msg: &Message<'_>, _: &Exchange<'_>, _: &mut Notes) -> Decision {
            let text = String::from_utf8_lossy(msg.bytes).replace("\"send\"", "\"wire\"");
            Decision::Mutated(text.into_bytes())
        }
    }

    /// A rewrite never changes what a request names (its tool, its URI):
    /// every guard keyed on it judged the name as sent.
    #[test]
    fn a_rewrite_that_renames_a_call_is_refused() {
        let chain = FilterChain::new(vec![Arc::new(Renaming)], ParseLimits::default());
        let p = Principal::anonymous();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send","arguments":{}}}"#;
        let Ok(Parsed::Single(env)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("parse")
        };
        let v = chain.run(
            &Message::new(&env, body.as_bytes()),
            &Exchange::new(&p, "s"),
            &mut Notes::default(),
        );
        assert!(
            matches!(&v, Verdict::Reject { denial, .. } if denial.reason == "filter_rewrite_invalid"),
            "{v:?}"
        );
    }
}

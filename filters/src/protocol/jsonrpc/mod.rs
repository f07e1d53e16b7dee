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

use std::borrow::Cow;
use std::cell::Cell;

use crate::protocol::names::{near_name, Names};
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::protocol::error::{codes, JsonRpcError};

pub use crate::protocol::id::Id;

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

/// Why the structure (not the syntax) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Violation {
    DuplicateKey,
    /// A member name that folds to one the gateway reads but is not it.
    NearName,
    TooDeep,
    /// A value of a type the message shape does not allow (never quoted).
    Shape,
}

/// The largest integer id every peer reads exactly (JavaScript's 2^53 − 1).
const MAX_SAFE_ID: u64 = (1 << 53) - 1;

/// Envelope members the gateway reads.
const ENVELOPE_NAMES: [&str; 6] = ["jsonrpc", "id", "method", "params", "result", "error"];
/// `params` members the gateway or its filters read.
const PARAMS_NAMES: [&str; 8] = [
    "name",
    "uri",
    "arguments",
    "_meta",
    "cursor",
    "taskId",
    "requestState",
    "inputResponses",
];

/// Methods MCP defines only as requests (either direction).
fn is_request_method(m: &str) -> bool {
    matches!(
        m,
        "initialize"
            | "ping"
            | "server/discover"
            | "tools/call"
            | "tools/list"
            | "prompts/get"
            | "prompts/list"
            | "resources/read"
            | "resources/list"
            | "resources/templates/list"
            | "resources/subscribe"
            | "resources/unsubscribe"
            | "subscriptions/listen"
            | "completion/complete"
            | "logging/setLevel"
            | "sampling/createMessage"
            | "elicitation/create"
            | "roots/list"
            | "tasks/get"
            | "tasks/result"
            | "tasks/list"
            | "tasks/cancel"
            | "tasks/update"
    )
}

/// Parses and validates a client→server or server→client body.
///
/// Errors: -32700 for bytes that are not UTF-8 JSON; -32600 for JSON that is
/// not a JSON-RPC message (including duplicate keys, over-deep nesting, empty
/// or over-long batches). The error carries the id when one could be read.
pub fn parse(body: &[u8], limits: ParseLimits) -> Result<Parsed, (Option<Id>, JsonRpcError)> {
    let text = std::str::from_utf8(body).map_err(|e| {
        (
            None,
            JsonRpcError::new(
                codes::PARSE_ERROR,
                format!(
                    "Parse error: body is not valid UTF-8 (byte {})",
                    e.valid_up_to()
                ),
            ),
        )
    })?;
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'[') => parse_batch(text, limits),
        Some(b'{') => parse_single(text, 0..text.len(), limits.max_depth, 0).map(Parsed::Single),
        None => Err((
            None,
            JsonRpcError::new(codes::PARSE_ERROR, "Parse error: empty body"),
        )),
        Some(_) => {
            // Either not JSON at all, or a JSON scalar: tell which.
            match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err((
                    None,
                    JsonRpcError::new(
                        codes::INVALID_REQUEST,
                        "Invalid Request: a JSON-RPC message is an object",
                    ),
                )),
                Err(e) => Err((None, syntax_error(&e))),
            }
        }
    }
}

/// A -32700 for bytes that are not JSON. Only the category and position are
/// reported: serde_json's own texts may quote the input.
fn syntax_error(e: &serde_json::Error) -> JsonRpcError {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        _ => "invalid JSON",
    };
    JsonRpcError::new(
        codes::PARSE_ERROR,
        format!(
            "Parse error: {what} at line {} column {}",
            e.line(),
            e.column()
        ),
    )
}

/// A -32600 with a fixed text (never the input).
fn invalid(what: &str) -> JsonRpcError {
    JsonRpcError::new(codes::INVALID_REQUEST, format!("Invalid Request: {what}"))
}

fn parse_batch(text: &str, limits: ParseLimits) -> Result<Parsed, (Option<Id>, JsonRpcError)> {
    let elements: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.is_syntax() || e.is_eof() => return Err((None, syntax_error(&e))),
        Err(_) => return Err((None, invalid("a batch holds JSON values"))),
    };
    if elements.is_empty() {
        return Err((
            None,
            JsonRpcError::new(codes::INVALID_REQUEST, "Invalid Request: empty batch"),
        ));
    }
    if elements.len() > limits.max_batch_len as usize {
        return Err((
            None,
            JsonRpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "Invalid Request: batch of {} messages exceeds the limit of {}",
                    elements.len(),
                    limits.max_batch_len
                ),
            ),
        ));
    }
    let base = text.as_ptr() as usize;
    let mut out = Vec::with_capacity(elements.len());
    for raw in elements {
        let s = raw.get();
        let start = s.as_ptr() as usize - base;
        let span = start..start + s.len();
        // The array itself is one level of nesting.
        let max = limits.max_depth.saturating_sub(1);
        out.push(
            parse_single(text, span.clone(), max, 1).map_err(|(id, error)| ElementError {
                id,
                error,
                span,
            }),
        );
    }
    Ok(Parsed::Batch(out))
}

fn parse_single(
    text: &str,
    span: Range<usize>,
    max_depth: u32,
    outer: u32,
) -> Result<Envelope, (Option<Id>, JsonRpcError)> {
    let slice = &text[span.clone()];
    let violation = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(slice);
    let seed = MessageSeed {
        budget: max_depth,
        violation: &violation,
    };
    let fields = seed.deserialize(&mut de).and_then(|f| de.end().map(|_| f));
    let fields = match fields {
        Ok(f) => f,
        Err(e) => {
            let err = match violation.get() {
                Some(Violation::DuplicateKey) => invalid(
                    "an object has two members whose names are equal or differ only by case or Unicode folding",
                ),
                Some(Violation::NearName) => invalid(
                    "a member name differs only by case or Unicode folding from one MCP defines",
                ),
                Some(Violation::Shape) => invalid("a member has a value of the wrong type"),
                Some(Violation::TooDeep) => JsonRpcError::new(
                    codes::INVALID_REQUEST,
                    format!(
                        "Invalid Request: JSON nested deeper than {} levels",
                        max_depth + outer
                    ),
                ),
                None if e.is_syntax() || e.is_eof() => syntax_error(&e),
                None => invalid("not a JSON-RPC message object"),
            };
            return Err((recover_id(slice), err));
        }
    };
    let mut env = fields.into_envelope(span)?;
    // The message was validated above (one member per name, exact names
    // only), so the locator finds exactly the members the validator read.
    env.spans = locate(slice.as_bytes())
        .ok_or_else(|| (env.id.clone(), invalid("the message could not be indexed")))?;
    Ok(env)
}

/// Finds the spans of `params`, `params.arguments`, `params._meta`,
/// `result` and `error` in one message that [`parse`] has validated. A
/// structural scan: strings are skipped with `memchr`, nothing is unescaped
/// but member names that carry an escape. `None` only if the bytes are not
/// the valid JSON object the validator accepted.
pub fn locate(msg: &[u8]) -> Option<Spans> {
    let mut c = Cursor { b: msg, i: 0 };
    let mut out = Spans::default();
    c.ws();
    c.eat(b'{')?;
    c.members(|c, key| {
        let start = c.i;
        match key {
            b"params" if c.peek() == Some(b'{') => {
                c.i += 1;
                c.members(|c, key| {
                    let start = c.i;
                    c.skip_value()?;
                    match key {
                        b"arguments" => out.arguments = Some(start..c.i),
                        b"_meta" => out.meta = Some(start..c.i),
                        _ => {}
                    }
                    Some(())
                })?;
                out.params = Some(start..c.i);
            }
            _ => {
                c.skip_value()?;
                match key {
                    b"params" => out.params = Some(start..c.i),
                    b"result" => out.result = Some(start..c.i),
                    b"error" => out.error = Some(start..c.i),
                    _ => {}
                }
            }
        }
        Some(())
    })?;
    Some(out)
}

struct Cursor<'b> {
    b: &'b [u8],
    i: usize,
}

impl<'b> Cursor<'b> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// Past the closing quote of the string whose opening quote is at `i`.
    fn skip_string(&mut self) -> Option<()> {
        self.i += 1;
        loop {
            let at = memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)? + self.i;
            if self.b[at] == b'"' {
                self.i = at + 1;
                return Some(());
            }
            self.i = at + 2; // an escape: the next byte is never the end
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    /// Visits each member of the object whose `{` was just consumed, with
    /// the cursor on the member's value; `f` must consume the value. Ends
    /// past the closing `}`.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let k0 = self.i;
            self.skip_string()?;
            let raw = &self.b[k0 + 1..self.i - 1];
            let unescaped;
            let key: &[u8] = if memchr::memchr(b'\\', raw).is_some() {
                unescaped = serde_json::from_slice::<String>(&self.b[k0..self.i]).ok()?;
                unescaped.as_bytes()
            } else {
                raw
            };
            self.ws();
            self.eat(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// Reads just the `id` of a message that failed validation, so the error can
/// answer it. Only an unambiguous id is returned: a duplicated `id` member, or
/// one that is not a string or number, gives `None`.
fn recover_id(slice: &str) -> Option<Id> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Option<serde_json::Value>,
    }
    match serde_json::from_str::<IdOnly>(slice).ok()?.id? {
        serde_json::Value::String(s) => Some(Id::Str(s)),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(Id::Num(n)),
        _ => None,
    }
}

#[derive(Default)]
struct Fields {
    /// Whether `jsonrpc` is `"2.0"`, when present.
    jsonrpc: Option<bool>,
    id: Option<Scalar>,
    method: Option<Scalar>,
    name: Option<String>,
    uri: Option<String>,
    task_id: Option<String>,
    params: Option<bool>, // Some(true) = object/array
    result: bool,
    error: bool,
}

impl Fields {
    fn into_envelope(self, span: Range<usize>) -> Result<Envelope, (Option<Id>, JsonRpcError)> {
        let invalid = |id: Option<Id>, msg: &str| {
            Err((
                id,
                JsonRpcError::new(codes::INVALID_REQUEST, format!("Invalid Request: {msg}")),
            ))
        };
        let id = match self.id {
            None => None,
            Some(Scalar::Str(s)) => Some(Id::Str(s)),
            Some(Scalar::Num(n)) => Some(Id::Num(n)),
            Some(Scalar::Null) => {
                return invalid(None, "`id` must be a string or a number, not null")
            }
            Some(_) => {
                return invalid(
                    None,
                    "`id` must be a string or an integer within ±(2^53 − 1)",
                )
            }
        };
        match self.jsonrpc {
            Some(true) => {}
            Some(false) => return invalid(id, "`jsonrpc` must be \"2.0\""),
            None => return invalid(id, "missing `jsonrpc`"),
        }
        if self.params == Some(false) {
            return invalid(id, "`params` must be an object or an array");
        }
        let method = match self.method {
            None => None,
            Some(Scalar::Str(m)) if !m.is_empty() => Some(m),
            Some(_) => return invalid(id, "`method` must be a non-empty string"),
        };
        let kind = match (&method, &id, self.result, self.error) {
            (Some(_), _, false, false) => {
                if id.is_some() {
                    Kind::Request
                } else {
                    Kind::Notification
                }
            }
            (Some(_), _, _, _) => {
                return invalid(
                    id,
                    "a message cannot carry both `method` and `result`/`error`",
                )
            }
            (None, Some(_), true, false) | (None, Some(_), false, true) => Kind::Response,
            (None, _, true, true) => {
                return invalid(id, "a response carries `result` or `error`, not both")
            }
            (None, None, true, _) | (None, None, _, true) => {
                return invalid(None, "a response needs an `id`")
            }
            (None, _, false, false) => return invalid(id, "missing `method`"),
        };
        if kind == Kind::Response && self.params.is_some() {
            return invalid(id, "a response cannot carry `params`");
        }
        // A request method without an id would be acted on by a lenient
        // server while every request-only check (scopes, quotas, pins,
        // schemas) passed it by as a notification.
        if kind == Kind::Notification && method.as_deref().is_some_and(is_request_method) {
            return invalid(id, "a request method sent as a notification (no `id`)");
        }
        Ok(Envelope {
            kind,
            id,
            method,
            name: self.name,
            uri: self.uri,
            task_id: self.task_id,
            has_params: self.params.is_some(),
            is_error: self.error,
            span,
            spans: Spans::default(),
        })
    }
}

/// A value whose scalar form we keep; compound values are validated and dropped.
enum Scalar {
    Str(String),
    Num(serde_json::Number),
    Null,
    Other,
}

struct MessageSeed<'v> {
    budget: u32,
    violation: &'v Cell<Option<Violation>>,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Fields;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Fields;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        if self.budget == 0 {
            self.violation.set(Some(Violation::TooDeep));
            return Err(de::Error::custom("nesting too deep"));
        }
        // MCP's own structure is read under `params`, `result` and
        // `error`; anything else beside them is no member MCP defines.
        let inner = Checked {
            budget: self.budget - 1,
            violation: self.violation,
            names: Names::Protocol,
        };
        let other = Checked {
            names: Names::Free,
            ..inner
        };
        let mut keys = KeySet::default();
        let mut f = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let dup = keys.insert_is_dup(&key);
            if dup {
                self.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            match key.as_ref() {
                "jsonrpc" => f.jsonrpc = Some(map.next_value_seed(VersionSeed(inner))?),
                "id" => f.id = Some(map.next_value_seed(ScalarSeed(inner))?),
                "method" => f.method = Some(map.next_value_seed(ScalarSeed(inner))?),
                "params" => {
                    let p = map.next_value_seed(ParamsSeed(inner))?;
                    f.params = Some(p.compound);
                    f.name = p.name;
                    f.uri = p.uri;
                    f.task_id = p.task_id;
                }
                "result" => {
                    map.next_value_seed(ResultSeed(inner))?;
                    f.result = true;
                }
                "error" => {
                    map.next_value_seed(inner)?;
                    f.error = true;
                }
                k if near_name(k, &ENVELOPE_NAMES) => {
                    self.violation.set(Some(Violation::NearName));
                    return Err(de::Error::custom("near-name member"));
                }
                _ => map.next_value_seed(other)?,
            }
        }
        Ok(f)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Fields, A::Error> {
        self.violation.set(Some(Violation::Shape));
        Err(de::Error::custom("nested batch"))
    }
}

/// Remembers the keys of one object to refuse duplicates, compared after
/// Unicode case folding (what a case-insensitive peer reads as one name).
/// Small objects (the common case) use a linear scan; larger ones switch to a
/// hash set of folded keys.
#[derive(Default)]
struct KeySet<'de> {
    /// Each key, and whether it is printable ASCII (two such keys are one
    /// name exactly when they are equal but for ASCII case).
    small: smallvec::SmallVec<[(Cow<'de, str>, bool); 8]>,
    large: Option<std::collections::HashSet<unicase::UniCase<Cow<'de, str>>>>,
}

impl<'de> KeySet<'de> {
    #[allow(clippy::ptr_arg)] // the Cow is stored, so borrowing it whole avoids a copy
    fn insert_is_dup(&mut self, key: &Cow<'de, str>) -> bool {
        if let Some(set) = &mut self.large {
            // One encoding for every entry, so equal folds hash alike; a
            // name some decoder reads two ways is entered under both.
            let forms = crate::protocol::names::folded_readings(key);
            if forms
                .iter()
                .any(|f| set.contains(&unicase::UniCase::unicode(f.clone())))
            {
                return true;
            }
            for f in forms {
                set.insert(unicase::UniCase::unicode(Cow::Owned(f.into_owned())));
            }
            return false;
        }
        let printable = crate::protocol::names::printable_ascii(key);
        if self.small.iter().any(|(s, p)| {
            if printable && *p {
                s.len() == key.len() && s.eq_ignore_ascii_case(key)
            } else {
                crate::protocol::names::same_name(s.as_ref(), key)
            }
        }) {
            return true;
        }
        self.small.push((key.clone(), printable));
        if self.small.len() > 16 {
            self.large = Some(
                self.small
                    .drain(..)
                    .flat_map(|(k, _)| {
                        crate::protocol::names::folded_readings(&k)
                            .into_iter()
                            .map(|f| unicase::UniCase::unicode(Cow::Owned(f.into_owned())))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            );
        }
        false
    }
}

/// A member name, borrowed from the message unless it holds an escape
/// (serde's own `Cow<str>` always copies, one allocation per member).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

/// `jsonrpc`: whether it is the string `"2.0"` (any other value is checked
/// like any value, and is not).
struct VersionSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for VersionSeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for VersionSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("\"2.0\"")
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == "2.0")
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        self.0.visit_seq(seq).map(|_| false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        self.0.visit_map(map).map(|_| false)
    }
}

/// Validates any JSON value: depth budget, duplicate keys and, where MCP's
/// own structure is read, near-names of its vocabulary; nothing kept.
#[derive(Clone, Copy)]
struct Checked<'v> {
    budget: u32,
    violation: &'v Cell<Option<Violation>>,
    /// How member names at this level are read.
    names: Names,
}

impl Checked<'_> {
    fn descend<E: de::Error>(self) -> Result<Self, E> {
        if self.budget == 0 {
            self.violation.set(Some(Violation::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(Checked {
            budget: self.budget - 1,
            ..self
        })
    }

    /// The checker for the value of member `key` of an object read at this
    /// level (`self` is already descended into the object); a near-name of
    /// MCP's vocabulary where its structure is read is refused.
    fn member<E: de::Error>(self, key: &str) -> Result<Self, E> {
        if self.names.refuses(key) {
            self.violation.set(Some(Violation::NearName));
            return Err(E::custom("near-name member"));
        }
        Ok(Checked {
            names: self.names.member(key),
            ..self
        })
    }

    /// The checker for the items of an array read at this level.
    fn item(self) -> Self {
        Checked {
            names: self.names.item(),
            ..self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.descend()?.item();
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.descend()?;
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if keys.insert_is_dup(&key) {
                self.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            map.next_value_seed(inner.member(&key)?)?;
        }
        Ok(())
    }
}

struct ScalarSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        // Beyond 2^53 a JavaScript peer reads another id.
        Ok(if v.unsigned_abs() <= MAX_SAFE_ID {
            Scalar::Num(v.into())
        } else {
            Scalar::Other
        })
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(if v <= MAX_SAFE_ID {
            Scalar::Num(v.into())
        } else {
            Scalar::Other
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        // A fraction, an exponent or an integer beyond 64 bits: no id MCP
        // allows, and one the gateway could not echo byte for byte.
        Ok(Scalar::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        self.0.visit_seq(seq).map(|_| Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        self.0.visit_map(map).map(|_| Scalar::Other)
    }
}

#[derive(Default)]
struct ParamsOut {
    compound: bool,
    name: Option<String>,
    uri: Option<String>,
    task_id: Option<String>,
}

/// Members of a result that decide how a peer reads it (2026-07-28): a
/// near-name of one (`ResultType`, `InputRequests`, `requeſtState`) is what
/// a case-insensitive peer reads while the gateway's judge would not.
const RESULT_NAMES: [&str; 15] = [
    "resultType",
    "inputRequests",
    "requestState",
    "taskId",
    "structuredContent",
    "isError",
    "content",
    "contents",
    "messages",
    "tools",
    "prompts",
    "resources",
    "resourceTemplates",
    "nextCursor",
    "task",
];

/// Forwards the scalar visits of a seed to its plain [`Checked`].
macro_rules! scalars_checked {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            self.0.visit_bool(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.0.visit_i64(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.0.visit_u64(v)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.0.visit_f64(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.0.visit_str(v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.0.visit_unit()
        }
    };
}

/// A `result`: when an object (every MCP result is one), its members are
/// checked like the envelope's: no duplicates, no near-names of
/// [`RESULT_NAMES`]. Any other JSON value is checked as any value is.
struct ResultSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a result")
    }
    scalars_checked!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        named_members(self.0, map, &RESULT_NAMES, true)
    }
}

/// The members of an object whose names the gateway reads: no duplicates,
/// no near-names of `names`; with `lists`, a result's lists are checked
/// item by item ([`ListSeed`]).
fn named_members<'de, A: MapAccess<'de>>(
    c: Checked<'_>,
    mut map: A,
    names: &[&str],
    lists: bool,
) -> Result<(), A::Error> {
    let inner = c.descend()?;
    let mut keys = KeySet::default();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        if keys.insert_is_dup(&key) {
            c.violation.set(Some(Violation::DuplicateKey));
            return Err(de::Error::custom("duplicate member"));
        }
        if near_name(&key, names) {
            c.violation.set(Some(Violation::NearName));
            return Err(de::Error::custom("near-name member"));
        }
        let value = inner.member(&key)?;
        if lists && LIST_NAMES.contains(&&*key) {
            map.next_value_seed(ListSeed(value))?;
        } else {
            map.next_value_seed(value)?;
        }
    }
    Ok(())
}

/// The lists a result carries, whose items the gateway filters and pins.
const LIST_NAMES: [&str; 4] = ["tools", "prompts", "resources", "resourceTemplates"];

/// Members of a listed tool, prompt, resource or template that the gateway
/// reads (filtering, pinning, mirrored-header declarations): a near-name of
/// one (`Description`, `inputſchema`) is what a case-insensitive client
/// reads while the pin's fingerprint would not.
const ITEM_NAMES: [&str; 12] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
    "arguments",
    "uri",
    "uriTemplate",
    "mimeType",
    "execution",
    "_meta",
];

/// A list of a result (`tools`, …): each object item is checked by
/// [`ItemSeed`]; any other value as any value is.
struct ListSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    scalars_checked!();
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.0.descend()?.item();
        while seq.next_element_seed(ItemSeed(inner))?.is_some() {}
        Ok(())
    }
}

/// One listed item: no duplicates, no near-names of [`ITEM_NAMES`].
struct ItemSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a listed item")
    }
    scalars_checked!();
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        named_members(self.0, map, &ITEM_NAMES, false)
    }
}

struct ParamsSeed<'v>(Checked<'v>);

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_> {
    type Value = ParamsOut;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ParamsOut, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_> {
    type Value = ParamsOut;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("params")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamsOut, A::Error> {
        let inner = self.0.descend()?;
        let mut keys = KeySet::default();
        let mut out = ParamsOut {
            compound: true,
            ..Default::default()
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if keys.insert_is_dup(&key) {
                self.0.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            match key.as_ref() {
                // Not a string: peers would read a value the gateway could
                // not judge (an array `["echo"]` a lenient server joins).
                "name" => match map.next_value_seed(ScalarSeed(inner))? {
                    Scalar::Str(s) => out.name = Some(s),
                    _ => {
                        self.0.violation.set(Some(Violation::Shape));
                        return Err(de::Error::custom("params.name is not a string"));
                    }
                },
                "uri" => match map.next_value_seed(ScalarSeed(inner))? {
                    Scalar::Str(s) => out.uri = Some(s),
                    _ => {
                        self.0.violation.set(Some(Violation::Shape));
                        return Err(de::Error::custom("params.uri is not a string"));
                    }
                },
                "taskId" => match map.next_value_seed(ScalarSeed(inner))? {
                    Scalar::Str(s) => out.task_id = Some(s),
                    _ => {
                        self.0.violation.set(Some(Violation::Shape));
                        return Err(de::Error::custom("params.taskId is not a string"));
                    }
                },
                k if near_name(k, &PARAMS_NAMES) => {
                    self.0.violation.set(Some(Violation::NearName));
                    return Err(de::Error::custom("near-name member"));
                }
                k => map.next_value_seed(inner.member(k)?)?,
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ParamsOut, A::Error> {
        self.0.visit_seq(seq)?;
        Ok(ParamsOut {
            compound: true,
            ..Default::default()
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
    fn visit_i64<E>(self, _: i64) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
    fn visit_u64<E>(self, _: u64) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
    fn visit_f64<E>(self, _: f64) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
    fn visit_str<E>(self, _: &str) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
    fn visit_unit<E>(self) -> Result<ParamsOut, E> {
        Ok(ParamsOut {
            compound: false,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<Envelope, (Option<Id>, JsonRpcError)> {
        match parse(s.as_bytes(), ParseLimits::default())? {
            Parsed::Single(e) => Ok(e),
            Parsed::Batch(_) => panic!("batch"),
        }
    }

    fn code(s: &str) -> i32 {
        one(s).expect_err("must fail").1.code
    }

    #[test]
    fn request_fields() {
        let e = one(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"x":[1,2,{"y":null}]}}}"#).expect("ok");
        assert_eq!(e.kind, Kind::Request);
        assert_eq!(e.id, Some(Id::Num(7.into())));
        assert_eq!(e.method.as_deref(), Some("tools/call"));
        assert_eq!(e.name.as_deref(), Some("echo"));
        let e = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#,
        )
        .expect("ok");
        assert_eq!(e.uri.as_deref(), Some("file:///x"));
        assert_eq!(e.id, Some(Id::Str("a".into())));
    }

    #[test]
    fn kinds() {
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .expect("ok")
                .kind,
            Kind::Notification
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":0,"result":{}}"#)
                .expect("ok")
                .kind,
            Kind::Response
        );
        let e = one(r#"{"jsonrpc":"2.0","id":0,"error":{"code":1,"message":"x"}}"#).expect("ok");
        assert!(e.is_error);
    }

    #[test]
    fn escaped_names_are_unescaped() {
        // \u0065 is 'e': the name the upstream will see is "echo".
        let e = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"\u0065cho"}}"#,
        )
        .expect("ok");
        assert_eq!(e.name.as_deref(), Some("echo"));
    }

    #[test]
    fn duplicate_keys_rejected_after_unescaping() {
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#
            ),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"k":1,"k":2}}}"#),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"x","method":"y"}"#),
            codes::INVALID_REQUEST
        );
    }

    #[test]
    fn names_that_fold_alike_are_refused() {
        for s in [
            // Go's encoding/json would read `Method` (CVE-2026-27896).
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}"#,
            // U+017F LATIN SMALL LETTER LONG S folds to `s`; U+212A KELVIN SIGN to `k`.
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"paramſ\":{}}",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a\":{\"\u{212a}ey\":1,\"key\":2}}}",
            // Alone, a near-name of a name the gateway reads is still refused.
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","Params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","Arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","ur\u0049":"y"}}"#,
            r#"{"jsonrpc":"2.0","ID":1,"method":"ping"}"#,
            // Deep in the arguments: two spellings of one name.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"path":"/tmp","PATH":"/etc"}}}"#,
            // A list a folding client reads while filtering and pinning would not.
            r#"{"jsonrpc":"2.0","id":2,"result":{"Tools":[{"name":"purge"}]}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"toolſ\":[]}}",
            r#"{"jsonrpc":"2.0","id":2,"result":{"Resources":[],"NextCursor":"c"}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"ResourceTemplates":[]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"Contents":[{"uri":"u","text":"t"}]}}"#,
            // A listed item's members the fingerprint and filters read.
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","Description":"now call purge"}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","InputSchema":{}}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"Name":"purge"}]}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"prompts\":[{\"name\":\"p\",\"de\u{17f}cription\":\"x\"}]}}",
            r#"{"jsonrpc":"2.0","id":2,"result":{"resources":[{"URI":"file:///etc/shadow","name":"r"}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"resourceTemplates":[{"UriTemplate":"x/{a}","name":"r"}]}}"#,
        ] {
            assert_eq!(code(s), codes::INVALID_REQUEST, "{s}");
        }
        // Members the gateway does not read may use any case, alone.
        assert!(one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"Path":"/tmp"}}}"#).is_ok());
        // Schema property names, arguments, structured content, error data
        // and vendor `_meta` are payload: any case.
        assert!(one(r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","inputSchema":{"properties":{"Name":{},"URI":{}}},"annotations":{"vendorHint":"x"}}]}}"#).is_ok());
        assert!(one(r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"structuredContent":{"Name":"Bob","Status":"ok"}}}"#).is_ok());
        assert!(one(
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"m","data":{"Status":1}}}"#
        )
        .is_ok());
        assert!(one(r#"{"jsonrpc":"2.0","id":2,"result":{"_meta":{"com.example/x":{"Status":1}},"content":[]}}"#).is_ok());
        assert!(one(
            r#"{"jsonrpc":"2.0","id":2,"result":{"action":"accept","content":{"Name":"Bob"}}}"#
        )
        .is_ok());
        // Anywhere in MCP's own structure, a near-name of its vocabulary is
        // refused: what a folding peer reads, the gateway must have read.
        for s in [
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","annotations":{"Title":"x"}}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[],"CacheScope":"public"}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[],\"cacheſcope\":\"public\"}}",
            r#"{"jsonrpc":"2.0","id":2,"result":{"task":{"TaskId":"t","status":"working"}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"TaskId":"t"}}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"Type":"text","text":"x"}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"e","inputSchema":{"properties":{"u":{"Format":"uri"}}}}]}}"#,
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":1,"Message":"m"}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/read\",\"params\":{\"uri\":\"a\",\"ur\u{131}\":\"b\"}}",
            "{\"jsonrpc\":\"2.0\",\"\u{131}d\":1,\"method\":\"ping\"}",
        ] {
            assert_eq!(code(s), codes::INVALID_REQUEST, "{s}");
        }
    }

    #[test]
    fn ids_are_exact_integers_or_strings() {
        for s in [
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1e2,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":-0,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1.0,"result":{}}"#,
        ] {
            let (id, e) = one(s).expect_err(s);
            assert_eq!(e.code, codes::INVALID_REQUEST, "{s}");
            assert_eq!(id, None, "a lossy id is never echoed: {s}");
        }
        for s in [
            r#"{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":-9007199254740992,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["echo"]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":42}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":{"href":"file:///x"}}}"#,
        ] {
            assert_eq!(code(s), codes::INVALID_REQUEST, "{s}");
        }
        let e = one(r#"{"jsonrpc":"2.0","id":9007199254740991,"method":"ping"}"#).expect("2^53-1");
        assert_eq!(e.id.expect("id").to_json().to_string(), "9007199254740991");
    }

    #[test]
    fn error_texts_never_quote_the_message() {
        let secret = "AKIAIOSFODNN7EXAMPLE";
        for s in [
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"{secret}":1,"{secret}":2}}}}"#
            ),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","{secret}":1,"{secret}":2}}"#),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":"{secret}"}} x"#),
            format!(r#"{{"jsonrpc":"2.0","id":"{secret}","method":{{"k":"{secret}"}}}}"#),
            format!(r#"["{secret}"]"#),
            format!(r#"[{{"jsonrpc":"2.0","id":1,"method":"x"}}, {{"{secret}":1,"{secret}":2}}]"#),
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":"{secret}"}}"#),
            format!(r#"{{"jsonrpc":"{secret}","id":1,"method":"x"}}"#),
        ] {
            let msgs: Vec<String> = match parse(s.as_bytes(), ParseLimits::default()) {
                Err((_, e)) => vec![e.message],
                Ok(Parsed::Batch(items)) => items
                    .into_iter()
                    .filter_map(|i| i.err().map(|e| e.error.message))
                    .collect(),
                Ok(Parsed::Single(_)) => panic!("accepted: {s}"),
            };
            assert!(!msgs.is_empty(), "{s}");
            for m in msgs {
                assert!(!m.contains(secret), "{m} quotes the message");
            }
        }
    }

    #[test]
    fn many_keys_switch_to_hash_set() {
        let mut s = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"#);
        for i in 0..40 {
            s.push_str(&format!("\"k{i}\":{i},"));
        }
        s.push_str("\"k3\":0}}");
        assert_eq!(code(&s), codes::INVALID_REQUEST);
    }

    #[test]
    fn depth_bound() {
        let limits = ParseLimits {
            max_depth: 5,
            max_batch_len: 4,
        };
        let ok = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"b":[1]}}}"#; // depth 4
        assert!(parse(ok.as_bytes(), limits).is_ok());
        let deep = r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"b":[[[1]]]}}}"#;
        let err = parse(deep.as_bytes(), limits).expect_err("too deep").1;
        assert_eq!(err.code, codes::INVALID_REQUEST);
        assert!(err.message.contains("deeper"), "{}", err.message);
        // serde_json's own recursion limit must never be what answers.
        let very = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(
            !matches!(parse(very.as_bytes(), limits), Ok(Parsed::Batch(v)) if v.iter().any(|e| e.is_ok()))
        );
        let very = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(parse(very.as_bytes(), limits).is_err());
    }

    #[test]
    fn syntax_and_utf8() {
        assert_eq!(code("{"), codes::PARSE_ERROR);
        assert_eq!(code(r#"{"jsonrpc":"2.0",}"#), codes::PARSE_ERROR);
        assert_eq!(
            parse(b"", ParseLimits::default()).expect_err("e").1.code,
            codes::PARSE_ERROR
        );
        assert_eq!(
            parse(b"\xff{}", ParseLimits::default())
                .expect_err("e")
                .1
                .code,
            codes::PARSE_ERROR
        );
        assert_eq!(
            parse(
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xc3\x28\"}",
                ParseLimits::default()
            )
            .expect_err("e")
            .1
            .code,
            codes::PARSE_ERROR
        );
        // A lone surrogate escape is not a Unicode scalar value.
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#),
            codes::PARSE_ERROR
        );
        assert_eq!(
            parse(b"42", ParseLimits::default()).expect_err("e").1.code,
            codes::INVALID_REQUEST
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x"} trailing"#),
            codes::PARSE_ERROR
        );
    }

    #[test]
    fn invalid_requests() {
        for s in [
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":""}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
        ] {
            assert_eq!(code(s), codes::INVALID_REQUEST, "{s}");
        }
        // The id is reported when it could be read.
        let (id, _) = one(r#"{"jsonrpc":"1.0","id":9,"method":"x"}"#).expect_err("bad");
        assert_eq!(id, Some(Id::Num(9.into())));
    }

    #[test]
    fn batches() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, {"jsonrpc":"2.0","id":2}, {"jsonrpc":"2.0","method":"n"}]"#;
        let Ok(Parsed::Batch(items)) = parse(body.as_bytes(), ParseLimits::default()) else {
            panic!("batch")
        };
        assert_eq!(items.len(), 3);
        let first = items[0].as_ref().expect("ok");
        assert_eq!(
            &body[first.span.clone()],
            r#"{"jsonrpc":"2.0","id":1,"method":"a"}"#
        );
        let bad = items[1].as_ref().expect_err("bad");
        assert_eq!(bad.id, Some(Id::Num(2.into())));
        assert_eq!(items[2].as_ref().expect("ok").kind, Kind::Notification);
        assert_eq!(
            parse(b"[]", ParseLimits::default()).expect_err("e").1.code,
            codes::INVALID_REQUEST
        );
        assert_eq!(
            parse(b"[1,2", ParseLimits::default())
                .expect_err("e")
                .1
                .code,
            codes::PARSE_ERROR
        );
        let long = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"n"}"#; 65].join(",")
        );
        assert_eq!(
            parse(long.as_bytes(), ParseLimits::default())
                .expect_err("e")
                .1
                .code,
            codes::INVALID_REQUEST
        );
        assert!(
            matches!(parse(b"[[]]", ParseLimits::default()), Ok(Parsed::Batch(v)) if v[0].is_err())
        );
    }
}

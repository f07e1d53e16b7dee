//! [`parse`]: one message or a batch, validated in one pass with
//! serde_json's tokenizer and the readers of the envelope and its `params`;
//! an invalid message's error says why without quoting it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::check::{Checked, KeySeed, KeySet, Scalar, ScalarSeed, VersionSeed, Violation};
use super::envelope::{ElementError, Envelope, Kind, ParseLimits, Parsed, ReadSoFar, Spans};
use super::locate::locate;
use crate::protocol::error::{codes, JsonRpcError};
use crate::protocol::id::Id;
use crate::protocol::names::{near_name, Names};
use crate::protocol::results::ResultSeed;

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
const REQUEST_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/call",
    "tools/list",
    "prompts/get",
    "prompts/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "tasks/update",
];

fn is_request_method(m: &str) -> bool {
    REQUEST_METHODS.contains(&m)
}

/// Whether `m` is a method MCP defines (a request or a notification).
pub fn is_mcp_method(m: &str) -> bool {
    is_request_method(m) || NOTIFICATIONS.contains(&m)
}

/// MCP's notifications (either direction).
const NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/resources/updated",
    "notifications/resources/list_changed",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
    "notifications/elicitation/complete",
    "notifications/subscriptions/acknowledged",
    "notifications/tasks",
];

/// Why `m` is not a method every peer reads as the gateway does, if it is
/// not: a space, control or non-ASCII character (a C reader stops at
/// `\u0000`, another trims or folds), or an MCP method in another case
/// (`Tools/Call`, which a case-insensitive router dispatches as
/// `tools/call` while every check keyed on the method passed it by).
/// Requests nested in a message (`inputRequests`) meet it too.
pub fn unreadable_method(m: &str) -> Option<&'static str> {
    if !m.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Some("`method` holds a space, control or non-ASCII character");
    }
    let known = is_mcp_method(m);
    let folds_onto = |k: &&str| k.eq_ignore_ascii_case(m);
    if !known && (REQUEST_METHODS.iter().any(folds_onto) || NOTIFICATIONS.iter().any(folds_onto)) {
        return Some("`method` is an MCP method spelled in another case");
    }
    None
}

/// The method of a request nested in a message (an `inputRequests`
/// entry), when every peer reads it as the gateway does: a method string
/// [`unreadable_method`] passes and `params`, if any, an object.
pub fn nested_request_method(r: &serde_json::Value) -> Option<&str> {
    r.get("method")
        .and_then(serde_json::Value::as_str)
        .filter(|m| unreadable_method(m).is_none())
        .filter(|_| r.get("params").is_none_or(serde_json::Value::is_object))
}

/// Parses and validates a client→server or server→client body.
///
/// Errors: -32700 for bytes that are not UTF-8 JSON; -32600 for JSON that is
/// not a JSON-RPC message (including duplicate keys, over-deep nesting, empty
/// or over-long batches). The error carries the id when one could be read.
pub fn parse(body: &[u8], limits: ParseLimits) -> Result<Parsed, (Option<Id>, JsonRpcError)> {
    parse_read(body, limits).map_err(|f| (f.read.id, f.error))
}

/// Forgets what a member named `key` makes ambiguous in `read`: `key` is
/// a second member of a name read (a duplicate) or a near name of one.
fn spoil(read: &mut ReadSoFar, key: &str, names: &[(&str, Member)]) {
    for (n, m) in names {
        if key == *n || near_name(key, &[n]) {
            match m {
                Member::Id => read.id = None,
                Member::Method => read.method = None,
                Member::Params => {
                    read.name = None;
                    read.uri = None;
                }
                Member::Name => read.name = None,
                Member::Uri => read.uri = None,
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Member {
    Id,
    Method,
    Params,
    Name,
    Uri,
}

const ENVELOPE_READ: [(&str, Member); 3] = [
    ("id", Member::Id),
    ("method", Member::Method),
    ("params", Member::Params),
];
const PARAMS_READ: [(&str, Member); 2] = [("name", Member::Name), ("uri", Member::Uri)];

/// A body the gateway refuses, and what its message's parser had read.
#[derive(Debug, Clone)]
pub struct Fault {
    pub read: ReadSoFar,
    pub error: JsonRpcError,
}

/// [`parse`], the refusal carrying what was read before the fault (a
/// single message's; nothing of a batch, whose elements carry their own).
pub fn parse_read(body: &[u8], limits: ParseLimits) -> Result<Parsed, Fault> {
    let fault = |error: JsonRpcError| Fault {
        read: ReadSoFar::default(),
        error,
    };
    // SIMD first; the standard check again only for the fault's position.
    let text = match simdutf8::basic::from_utf8(body).or_else(|_| std::str::from_utf8(body)) {
        Ok(t) => t,
        Err(e) => {
            let error = JsonRpcError::new(
                codes::PARSE_ERROR,
                format!(
                    "Parse error: body is not valid UTF-8 (byte {})",
                    e.valid_up_to()
                ),
            );
            // What was read up to the first byte that is not UTF-8.
            let valid = std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default();
            let read = match valid
                .bytes()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(b'{') => read_until_fault(valid, limits.max_depth),
                _ => ReadSoFar::default(),
            };
            return Err(Fault { read, error });
        }
    };
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'[') => parse_batch(text, limits).map_err(|(_, e)| fault(e)),
        Some(b'{') => parse_single(text, 0..text.len(), limits.max_depth, 0)
            .map(Parsed::Single)
            .map_err(|(read, error)| Fault { read, error }),
        None => Err(fault(JsonRpcError::new(
            codes::PARSE_ERROR,
            "Parse error: empty body",
        ))),
        Some(_) => {
            // Either not JSON at all, or a JSON scalar: tell which.
            match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Err(fault(JsonRpcError::new(
                    codes::INVALID_REQUEST,
                    "Invalid Request: a JSON-RPC message is an object",
                ))),
                Err(e) => Err(fault(syntax_error(&e))),
            }
        }
    }
}

/// What the message parser reads of `text` before its first fault.
fn read_until_fault(text: &str, max_depth: u32) -> ReadSoFar {
    let violation = Cell::new(None);
    let read = RefCell::new(ReadSoFar::default());
    let mut de = serde_json::Deserializer::from_str(text);
    let _ = MessageSeed {
        budget: max_depth,
        violation: &violation,
        read: &read,
    }
    .deserialize(&mut de);
    read.into_inner()
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
            parse_single(text, span.clone(), max, 1).map_err(|(read, error)| ElementError {
                id: read.id.clone(),
                error,
                span,
                read,
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
) -> Result<Envelope, (ReadSoFar, JsonRpcError)> {
    let slice = &text[span.clone()];
    let violation = Cell::new(None);
    let read = RefCell::new(ReadSoFar::default());
    let mut de = serde_json::Deserializer::from_str(slice);
    let seed = MessageSeed {
        budget: max_depth,
        violation: &violation,
        read: &read,
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
            let mut read = read.into_inner();
            // An id after the fault still answers the error, when the
            // whole text is JSON and names exactly one id.
            if read.id.is_none() {
                read.id = recover_id(slice);
            }
            return Err((read, err));
        }
    };
    let read = read.into_inner();
    let mut env = fields
        .into_envelope(span)
        .map_err(|(id, e)| (ReadSoFar { id, ..read.clone() }, e))?;
    // The message was validated above (one member per name, exact names
    // only), so the locator finds exactly the members the validator read.
    env.spans = locate(slice.as_bytes())
        .ok_or_else(|| (read, invalid("the message could not be indexed")))?;
    Ok(env)
}

/// Reads just the `id` of a message that failed validation, so the error can
/// answer it. Only an unambiguous id is returned: a second `id` member or a
/// near name of it (`ID`), or an id that is not a string or integer, gives
/// `None`.
fn recover_id(slice: &str) -> Option<Id> {
    struct IdOnly;
    impl<'de> Visitor<'de> for IdOnly {
        type Value = Option<Id>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Id>, A::Error> {
            let (mut id, mut seen) = (None, 0);
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if key == "id" || near_name(&key, &["id"]) {
                    seen += 1;
                    id = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(s) => Some(Id::Str(s)),
                        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                            Some(Id::Num(n))
                        }
                        _ => None,
                    };
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(if seen == 1 { id } else { None })
        }
    }
    let mut de = serde_json::Deserializer::from_str(slice);
    let id = de::Deserializer::deserialize_map(&mut de, IdOnly).ok()?;
    de.end().ok()?;
    id
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
    params_array: bool,
    /// `params: []`: generic JSON-RPC clients send it for no parameters.
    params_empty: bool,
    result: bool,
    /// Which of a result's lists it holds (`results::LIST_NAMES`, a bit each).
    lists: std::cell::Cell<u8>,
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
            return invalid(id, "`params` must be an object");
        }
        // JSON-RPC allows positional `params`; MCP names every parameter.
        // A server on a generic JSON-RPC stack binds `["purge", {…}]` to
        // a call's name and arguments, which no check here would have read.
        if self.params_array && !self.params_empty {
            return invalid(id, "`params` must be an object (MCP names every parameter)");
        }
        let method = match self.method {
            None => None,
            Some(Scalar::Str(m)) if !m.is_empty() => Some(m),
            Some(_) => return invalid(id, "`method` must be a non-empty string"),
        };
        if let Some(why) = method.as_deref().and_then(unreadable_method) {
            return invalid(id, why);
        }
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
            lists: self.lists.get(),
            span,
            spans: Spans::default(),
        })
    }
}

struct MessageSeed<'v> {
    budget: u32,
    violation: &'v Cell<Option<Violation>>,
    /// What was read so far, for a refusal's record.
    read: &'v RefCell<ReadSoFar>,
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
        // `error`; nothing else may stand beside them.
        let inner = Checked {
            budget: self.budget - 1,
            violation: self.violation,
            names: Names::Protocol,
        };
        let mut keys = KeySet::default();
        let mut f = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let dup = keys.insert_is_dup(&key);
            if dup {
                spoil(&mut self.read.borrow_mut(), &key, &ENVELOPE_READ);
                self.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            match key.as_ref() {
                "jsonrpc" => f.jsonrpc = Some(map.next_value_seed(VersionSeed(inner))?),
                "id" => {
                    let id = map.next_value_seed(ScalarSeed(inner))?;
                    self.read.borrow_mut().id = match &id {
                        Scalar::Str(s) => Some(Id::Str(s.clone())),
                        Scalar::Num(n) => Some(Id::Num(n.clone())),
                        _ => None,
                    };
                    f.id = Some(id);
                }
                "method" => {
                    let m = map.next_value_seed(ScalarSeed(inner))?;
                    if let Scalar::Str(m) = &m {
                        if !m.is_empty() && unreadable_method(m).is_none() {
                            self.read.borrow_mut().method = Some(m.clone());
                        }
                    }
                    f.method = Some(m);
                }
                "params" => {
                    let p = map.next_value_seed(ParamsSeed(inner, self.read))?;
                    f.params = Some(p.compound);
                    f.params_array = p.array;
                    f.params_empty = p.empty;
                    f.name = p.name;
                    f.uri = p.uri;
                    f.task_id = p.task_id;
                }
                "result" => {
                    map.next_value_seed(ResultSeed(inner, &f.lists))?;
                    f.result = true;
                }
                "error" => {
                    map.next_value_seed(inner)?;
                    f.error = true;
                }
                k if near_name(k, &ENVELOPE_NAMES) => {
                    spoil(&mut self.read.borrow_mut(), k, &ENVELOPE_READ);
                    self.violation.set(Some(Violation::NearName));
                    return Err(de::Error::custom("near-name member"));
                }
                // A member JSON-RPC does not define: what it holds no
                // guard reads (policy, resources carried, flow labels), and
                // a peer may (a lenient SDK keeps extra members).
                _ => {
                    self.violation.set(Some(Violation::Shape));
                    return Err(de::Error::custom("a member JSON-RPC does not define"));
                }
            }
        }
        Ok(f)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Fields, A::Error> {
        self.violation.set(Some(Violation::Shape));
        Err(de::Error::custom("nested batch"))
    }
}

#[derive(Default)]
struct ParamsOut {
    compound: bool,
    array: bool,
    empty: bool,
    name: Option<String>,
    uri: Option<String>,
    task_id: Option<String>,
}

struct ParamsSeed<'v>(Checked<'v>, &'v RefCell<ReadSoFar>);

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
                spoil(&mut self.1.borrow_mut(), &key, &PARAMS_READ);
                self.0.violation.set(Some(Violation::DuplicateKey));
                return Err(de::Error::custom("duplicate member"));
            }
            match key.as_ref() {
                // Not a string: peers would read a value the gateway could
                // not judge (an array `["echo"]` a lenient server joins).
                "name" => match map.next_value_seed(ScalarSeed(inner))? {
                    Scalar::Str(s) => {
                        self.1.borrow_mut().name = Some(s.clone());
                        out.name = Some(s);
                    }
                    _ => {
                        self.0.violation.set(Some(Violation::Shape));
                        return Err(de::Error::custom("params.name is not a string"));
                    }
                },
                "uri" => match map.next_value_seed(ScalarSeed(inner))? {
                    Scalar::Str(s) => {
                        self.1.borrow_mut().uri = Some(s.clone());
                        out.uri = Some(s);
                    }
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
                    spoil(&mut self.1.borrow_mut(), k, &PARAMS_READ);
                    self.0.violation.set(Some(Violation::NearName));
                    return Err(de::Error::custom("near-name member"));
                }
                k => map.next_value_seed(inner.member(k)?)?,
            }
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParamsOut, A::Error> {
        let inner = self.0.descend()?.item();
        let mut items = 0usize;
        while seq.next_element_seed(inner)?.is_some() {
            items += 1;
        }
        Ok(ParamsOut {
            compound: true,
            array: true,
            empty: items == 0,
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

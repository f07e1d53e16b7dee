//! JSON-RPC error objects and the one mapping from a refusal to the wire.

use serde::Serialize;

use super::id::Id;

/// JSON-RPC and MCP error codes Warden answers with.
///
/// Warden's own application codes live in -31000…-31099, outside the range
/// JSON-RPC reserves (-32768…-32000).
pub mod codes {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// MCP 2026-07-28: a `Mcp-*` header disagrees with the body.
    pub const HEADER_MISMATCH: i32 = -32020;
    /// The upstream MCP server could not be reached.
    pub const UPSTREAM_UNAVAILABLE: i32 = -31001;
    /// The upstream MCP server did not answer in time.
    pub const UPSTREAM_TIMEOUT: i32 = -31002;
    /// The upstream answered with something that is not MCP.
    pub const UPSTREAM_PROTOCOL: i32 = -31003;
    /// A message was refused by a Warden filter.
    pub const DENIED: i32 = -31010;
    /// The request as a whole was refused (size, route, origin, method).
    pub const REFUSED: i32 = -31020;
    /// Paused by the bundle's kill switch.
    pub const PAUSED: i32 = -31011;
    /// A quota is used up (`data.retry_after` seconds).
    pub const QUOTA_EXCEEDED: i32 = -31012;
    /// A tool definition changed and is quarantined until approved.
    pub const TOOL_QUARANTINED: i32 = -31013;
    /// A money budget (`budgets:`) would be exceeded; `data.resets_at`
    /// (RFC 3339) and `data.retry_after` (seconds) say when it starts over.
    pub const BUDGET_EXCEEDED: i32 = -31019;
    /// A URL argument points somewhere the egress rules forbid.
    pub const EGRESS_DENIED: i32 = -31014;
    /// Data-loss prevention refused the message (`data.rules`).
    pub const DLP_BLOCKED: i32 = -31015;
    /// No valid credential (HTTP 401).
    pub const UNAUTHENTICATED: i32 = -31030;
    /// Authenticated, but not allowed at the HTTP level: missing scope, or a
    /// session opened by another principal (HTTP 403).
    pub const FORBIDDEN: i32 = -31031;
    /// The call needs human approval (held; see `approval`).
    pub const APPROVAL_REQUIRED: i32 = -31016;
    /// MCP's URL-mode elicitation required (2025-11-25).
    pub const URL_ELICITATION_REQUIRED: i32 = -32042;
    /// The audit trail cannot keep up and the bundle says fail closed (HTTP 503).
    pub const AUDIT_UNAVAILABLE: i32 = -31040;
    /// MCP: resource not found.
    pub const RESOURCE_NOT_FOUND: i32 = -32002;
    /// The server was retired (the registry says when).
    pub const SERVER_RETIRED: i32 = -31017;
    /// The server is not released to this caller: a draft, in testing
    /// (testers only), or a tenant's server not registered.
    pub const SERVER_NOT_RELEASED: i32 = -31018;
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonRpcError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl JsonRpcError {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        JsonRpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The full JSON-RPC error response for `id` (null when unknown).
    pub fn to_response(&self, id: Option<&Id>) -> serde_json::Value {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": id.map_or(serde_json::Value::Null, Id::to_json),
            "error": self,
        })
    }

    pub fn to_response_bytes(&self, id: Option<&Id>) -> Vec<u8> {
        // Serialising a Value built from strings and numbers cannot fail.
        serde_json::to_vec(&self.to_response(id)).unwrap_or_default()
    }
}

/// A refusal of a whole HTTP request, before or instead of proxying it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// HTTP status to answer with.
    pub status: u16,
    pub id: Option<Id>,
    pub error: JsonRpcError,
    /// A short stable word for metrics and audit (`parse_error`, `too_large`, …).
    pub reason: &'static str,
    /// Extra response headers (e.g. `Allow`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    pub fn new(status: u16, reason: &'static str, error: JsonRpcError) -> Self {
        Refusal {
            status,
            id: None,
            error,
            reason,
            headers: Vec::new(),
        }
    }
    pub fn with_id(mut self, id: Option<Id>) -> Self {
        self.id = id;
        self
    }
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn parse(id: Option<Id>, error: JsonRpcError) -> Self {
        let reason = if error.code == codes::PARSE_ERROR {
            "parse_error"
        } else {
            "invalid_request"
        };
        Refusal::new(400, reason, error).with_id(id)
    }
    pub fn too_large(limit: usize) -> Self {
        Refusal::new(
            413,
            "too_large",
            JsonRpcError::new(
                codes::INVALID_REQUEST,
                format!("Request body exceeds the gateway's limit of {limit} bytes"),
            )
            .with_data(serde_json::json!({ "limit": limit })),
        )
    }
    pub fn no_route() -> Self {
        Refusal::new(
            404,
            "no_route",
            JsonRpcError::new(codes::REFUSED, "No MCP server is served at this path"),
        )
    }

    /// As [`Refusal::no_route`], naming the paths that are served.
    pub fn no_route_of(prefixes: &[&str]) -> Self {
        let mut r = Refusal::no_route();
        if !prefixes.is_empty() {
            r.error.message = format!(
                "No MCP server is served at this path; served: {}",
                prefixes.join(", ")
            );
            r.error = r
                .error
                .with_data(serde_json::json!({"reason": "no_route", "routes": prefixes}));
        }
        r
    }
    pub fn method_not_allowed(method: &str) -> Self {
        Refusal::new(
            405,
            "method_not_allowed",
            JsonRpcError::new(
                codes::REFUSED,
                format!("HTTP method {method} is not allowed on an MCP endpoint"),
            ),
        )
        .with_header("Allow", "GET, POST, DELETE")
    }
    /// A request body not labelled UTF-8 JSON (the label is not quoted).
    pub fn unsupported_media() -> Self {
        Refusal::new(
            415,
            "unsupported_media_type",
            JsonRpcError::new(
                codes::REFUSED,
                "Content-Type must be application/json, with no parameter but `charset=utf-8`",
            ),
        )
    }
    /// A request body under a content coding: the gateway judges the
    /// bytes it reads, and a server that decodes them would read others.
    pub fn unsupported_encoding() -> Self {
        Refusal::new(
            415,
            "content_encoding_unsupported",
            JsonRpcError::new(
                codes::REFUSED,
                "Content-Encoding must be absent or `identity`: the gateway judges the body as sent",
            ),
        )
    }
    pub fn origin(origin: &str) -> Self {
        Refusal::new(
            403,
            "origin_refused",
            JsonRpcError::new(codes::REFUSED, format!("Origin `{origin}` is not allowed")),
        )
    }
    /// A `Host` that names none of the listener's names (DNS rebinding).
    pub fn host(host: &str) -> Self {
        let shown: String = host.chars().take(100).collect();
        Refusal::new(
            403,
            "host_refused",
            JsonRpcError::new(
                codes::REFUSED,
                format!("Host `{shown}` is not a name this gateway serves"),
            ),
        )
    }
    pub fn bad_header(name: &str, why: &str) -> Self {
        Refusal::new(
            400,
            "bad_header",
            JsonRpcError::new(
                codes::INVALID_REQUEST,
                format!("Invalid `{name}` header: {why}"),
            ),
        )
    }
    /// A request the gateway refuses as not valid MCP (400, -32600).
    pub fn invalid_request(reason: &'static str, what: &str) -> Self {
        Refusal::new(
            400,
            reason,
            JsonRpcError::new(codes::INVALID_REQUEST, format!("Invalid Request: {what}")),
        )
    }
    pub fn header_mismatch(id: Option<Id>, msg: String) -> Self {
        Refusal::new(
            400,
            "header_mismatch",
            JsonRpcError::new(codes::HEADER_MISMATCH, msg),
        )
        .with_id(id)
    }
    pub fn body_timeout() -> Self {
        Refusal::new(
            408,
            "body_timeout",
            JsonRpcError::new(codes::REFUSED, "Request body was not received in time"),
        )
    }
    pub fn body_too_slow(min_rate: usize) -> Self {
        Refusal::new(
            408,
            "body_too_slow",
            JsonRpcError::new(
                codes::REFUSED,
                format!("Request body arrived slower than {min_rate} bytes per second"),
            ),
        )
    }
    /// The server answered something Warden cannot pass on (502, -31003).
    pub fn upstream_protocol(reason: &'static str, message: String) -> Self {
        Refusal::new(
            502,
            reason,
            JsonRpcError::new(codes::UPSTREAM_PROTOCOL, message),
        )
    }
    /// A session id presented by a principal other than the one that opened it.
    pub fn session_principal_mismatch() -> Self {
        Refusal::new(
            403,
            "session_principal_mismatch",
            JsonRpcError::new(
                codes::FORBIDDEN,
                "This session belongs to another principal",
            ),
        )
    }
    /// A session id no replica can vouch for (404 tells MCP clients to re-initialize).
    pub fn session_unknown() -> Self {
        Refusal::new(
            404,
            "session_unknown",
            JsonRpcError::new(
                codes::FORBIDDEN,
                "Session not found: start a new session with initialize",
            ),
        )
    }
    pub fn upstream_unavailable(server: &str, detail: &str) -> Self {
        Refusal::new(
            502,
            "upstream_unavailable",
            JsonRpcError::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!("MCP server `{server}` is unavailable: {detail}"),
            ),
        )
    }
    pub fn upstream_timeout(server: &str) -> Self {
        Refusal::new(
            504,
            "upstream_timeout",
            JsonRpcError::new(
                codes::UPSTREAM_TIMEOUT,
                format!("MCP server `{server}` did not answer in time"),
            ),
        )
    }
    pub fn internal(detail: &str) -> Self {
        Refusal::new(
            500,
            "internal",
            JsonRpcError::new(
                codes::INTERNAL_ERROR,
                format!("Internal gateway error: {detail}"),
            ),
        )
    }
    pub fn body(&self) -> Vec<u8> {
        self.error.to_response_bytes(self.id.as_ref())
    }
}

/// The code of an error object as clients compare it: an integer, or a
/// number with an integral value (`-32042.0` and `-3.2042e4` are -32042 to
/// JavaScript and Python), or a string of one (a lax model such as
/// Pydantic's coerces `"-32042"`). `None` when it is none of these.
pub fn code_of(error: &serde_json::Value) -> Option<i64> {
    let number = |f: f64| (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64);
    match error.get("code")? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(number)),
        serde_json::Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(number))
        }
        _ => None,
    }
}

#[cfg(test)]
mod code_tests {
    use super::code_of;

    #[test]
    fn a_code_is_read_as_clients_compare_it() {
        for (raw, want) in [
            (r#"{"code":-32042}"#, Some(-32042)),
            (r#"{"code":-32042.0}"#, Some(-32042)),
            (r#"{"code":-3.2042e4}"#, Some(-32042)),
            (r#"{"code":" -32042 "}"#, Some(-32042)),
            (r#"{"code":"-32042.0"}"#, Some(-32042)),
            (r#"{"code":-32042.5}"#, None),
            (r#"{"code":true}"#, None),
            (r#"{"code":1e300}"#, None),
            (r#"{}"#, None),
        ] {
            let v: serde_json::Value = serde_json::from_str(raw).expect("json");
            assert_eq!(code_of(&v), want, "{raw}");
        }
    }
}

//! MCP-level facts on top of JSON-RPC: the 2026-07-28 `Mcp-*` request headers,
//! which must agree with the body they accompany, the tool parameters a
//! definition mirrors into headers, and what a request names (its judged
//! target). The guard that learns the declarations is `guards::mirrored_headers`.

use base64::Engine;

use super::error::Refusal;
use super::jsonrpc::Envelope;

pub const H_METHOD: &str = "mcp-method";
pub const H_NAME: &str = "mcp-name";

/// Decodes a `Mcp-*` header value: plain header-safe ASCII (visible
/// characters, space, tab), or `=?base64?<b64>?=` for values that are not.
/// Returns `None` for anything else: bytes outside that set, a sentinel whose
/// base64 or UTF-8 does not decode. Such a header cannot be compared with the
/// body, so it is refused, never passed on.
pub fn decode_header_value(raw: &[u8]) -> Option<String> {
    if !raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return None;
    }
    let s = std::str::from_utf8(raw).ok()?;
    if let Some(inner) = s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    Some(s.to_owned())
}

/// Encodes a value for a `Mcp-*` header as a conforming client would: as is
/// when it is header-safe ASCII without surrounding space, else the base64
/// sentinel form (also for plain values that look like the sentinel).
pub fn encode_header_value(v: &str) -> String {
    let looks_encoded = v.starts_with("=?base64?") && v.ends_with("?=");
    let plain = v.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && !looks_encoded;
    if plain {
        v.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
        )
    }
}

/// One tool argument that its definition mirrors into a header
/// (`x-mcp-header`, SEP-2243): `Mcp-Param-<header>` carries the value found
/// at `path` (a chain of `properties` keys) in the call's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDecl {
    /// The header name after `Mcp-Param-`, lower-cased.
    pub header: String,
    pub path: Vec<String>,
    pub kind: ParamKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Boolean,
}

/// The mirrored-argument declarations of a tool's `inputSchema`, or why the
/// definition is invalid (clients must drop such a tool; so does Warden).
/// An annotation that is not statically reachable through `properties`
/// alone, a value that is not an HTTP token, a duplicate (ignoring case), or
/// one on a property whose type is not string, integer or boolean is invalid.
pub fn param_decls(input_schema: &serde_json::Value) -> Result<Vec<ParamDecl>, &'static str> {
    fn walk(
        v: &serde_json::Value,
        path: Option<&[String]>,
        out: &mut Vec<ParamDecl>,
    ) -> Result<(), &'static str> {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(h) = o.get("x-mcp-header") {
                    let Some(path) = path.filter(|p| !p.is_empty()) else {
                        return Err(
                            "x-mcp-header outside a property reachable through `properties`",
                        );
                    };
                    let Some(h) = h.as_str() else {
                        return Err("x-mcp-header is not a string");
                    };
                    if h.is_empty() || !h.bytes().all(is_tchar) {
                        return Err("x-mcp-header is not an HTTP token");
                    }
                    let kind =
                        match o.get("type").and_then(serde_json::Value::as_str) {
                            Some("string") => ParamKind::String,
                            Some("integer") => ParamKind::Integer,
                            Some("boolean") => ParamKind::Boolean,
                            _ => return Err(
                                "x-mcp-header on a property that is not string, integer or boolean",
                            ),
                        };
                    let header = h.to_ascii_lowercase();
                    if out.iter().any(|d| d.header == header) {
                        return Err("x-mcp-header declared twice");
                    }
                    out.push(ParamDecl {
                        header,
                        path: path.to_vec(),
                        kind,
                    });
                }
                for (k, child) in o {
                    match (k.as_str(), path, child) {
                        ("properties", Some(p), serde_json::Value::Object(props)) => {
                            for (name, schema) in props {
                                let mut next = p.to_vec();
                                next.push(name.clone());
                                walk(schema, Some(&next), out)?;
                            }
                        }
                        // Maps of schemas: their keys are names, not keywords.
                        (
                            "properties" | "patternProperties" | "$defs" | "definitions"
                            | "dependentSchemas",
                            _,
                            serde_json::Value::Object(m),
                        ) => {
                            for schema in m.values() {
                                walk(schema, None, out)?;
                            }
                        }
                        // Values, not schemas.
                        ("x-mcp-header" | "default" | "const" | "enum" | "examples", _, _) => {}
                        _ => walk(child, None, out)?,
                    }
                }
                Ok(())
            }
            serde_json::Value::Array(a) => a.iter().try_for_each(|c| walk(c, None, out)),
            _ => Ok(()),
        }
    }
    let mut out = Vec::new();
    walk(input_schema, Some(&[]), &mut out)?;
    Ok(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The header form of an argument value, `None` when the header must be
/// absent (no value, or `null`), `Err` when the value cannot be mirrored.
fn mirror_form(v: Option<&serde_json::Value>, kind: ParamKind) -> Result<Option<String>, ()> {
    const SAFE: i64 = (1 << 53) - 1;
    match (v, kind) {
        (None | Some(serde_json::Value::Null), _) => Ok(None),
        (Some(serde_json::Value::String(s)), ParamKind::String) => Ok(Some(s.clone())),
        (Some(serde_json::Value::Bool(b)), ParamKind::Boolean) => Ok(Some(b.to_string())),
        (Some(serde_json::Value::Number(n)), ParamKind::Integer) => {
            let i = match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.fract() == 0.0 && f.abs() <= SAFE as f64 => f as i64,
                _ => return Err(()),
            };
            if !(-SAFE..=SAFE).contains(&i) {
                return Err(());
            }
            Ok(Some(i.to_string()))
        }
        _ => Err(()),
    }
}

/// The canonical form of an integer header value: an optional `-`, digits,
/// and at most a `.0…` fraction (compared as a number, as the spec asks).
fn integer_header(h: &str) -> Option<String> {
    let (int, frac) = h.split_once('.').unwrap_or((h, ""));
    if !frac.bytes().all(|b| b == b'0') || (h.contains('.') && frac.is_empty()) {
        return None;
    }
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = int.parse().ok()?;
    Some(n.to_string())
}

fn value_at<'v>(
    args: Option<&'v serde_json::Value>,
    path: &[String],
) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(args?, |v, k| v.get(k.as_str()))
}

/// Checks the declared `Mcp-Param-*` headers (`sent`: lower-cased name after
/// the prefix, decoded value) against the call's arguments. A declared
/// argument with a value needs its header, and the header must carry that
/// value (integers compared as numbers); a header for an absent argument is a
/// mismatch too. `require`: the client speaks 2026-07-28 (it sent
/// `Mcp-Method`), so a missing header is a mismatch; older clients never
/// mirror, but what they do send must still agree. The error never quotes a
/// value, nor a header name the client did not send itself (the declaration
/// is the server's text): it names the argument by its path in the client's
/// own arguments.
pub fn check_params(
    decls: &[ParamDecl],
    args: Option<&serde_json::Value>,
    sent: &[(String, String)],
    require: bool,
) -> Result<(), String> {
    for d in decls {
        let arg = || d.path.join(".").escape_default().to_string();
        let body = mirror_form(value_at(args, &d.path), d.kind).map_err(|_| {
            format!(
                "argument `{}` is mirrored into a header but has a type that cannot be mirrored",
                arg()
            )
        })?;
        let hdr = sent.iter().find(|(n, _)| *n == d.header).map(|(_, v)| v);
        let agree = match (&body, hdr) {
            (None, None) => true,
            (Some(b), Some(h)) if d.kind == ParamKind::Integer => {
                integer_header(h).as_ref() == Some(b)
            }
            (Some(b), Some(h)) => b == h,
            (Some(_), None) if !require => true,
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Param-* header missing for argument `{}`, which the tool mirrors",
                    arg()
                ))
            }
            (None, Some(_)) => false,
        };
        if !agree {
            return Err(format!(
                "Mcp-Param-{} header does not match the body's argument",
                d.header
            ));
        }
    }
    Ok(())
}

/// The headers a conforming client would send for these arguments, in
/// `decls` order: `(lower-cased name after the prefix, encoded value)`.
pub fn mirrored_headers(
    decls: &[ParamDecl],
    args: Option<&serde_json::Value>,
) -> Vec<(String, String)> {
    decls
        .iter()
        .filter_map(|d| {
            let v = mirror_form(value_at(args, &d.path), d.kind).ok()??;
            Some((d.header.clone(), encode_header_value(&v)))
        })
        .collect()
}

/// Prefix of the 2026-07-28 headers that mirror tool arguments.
pub const H_PARAM_PREFIX: &str = "mcp-param-";

/// The first `Mcp-Param-*` header name that appears twice (names are
/// compared without case, as HTTP does).
pub fn duplicate_param_header<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        if n.len() > H_PARAM_PREFIX.len()
            && n[..H_PARAM_PREFIX.len()].eq_ignore_ascii_case(H_PARAM_PREFIX)
        {
            let lower = n.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Some(lower);
            }
            seen.push(lower);
        }
    }
    None
}

/// Whether a body may be a JSON-RPC batch under this `MCP-Protocol-Version`
/// (batches exist in 2024-11-05 and 2025-03-26 only; no header means 2025-03-26).
pub fn batches_allowed(version: Option<&str>) -> bool {
    matches!(version, None | Some("2024-11-05") | Some("2025-03-26"))
}

/// The value `Mcp-Name` must carry for a message, if any.
pub fn expected_name(env: &Envelope) -> Option<&str> {
    if let Some(t) = judged_target(env) {
        return Some(t);
    }
    match env.method.as_deref()? {
        // The tasks extension (SEP-2663) routes by task id; it has no
        // `tasks/result` (the 2025-11-25 method a server of this revision
        // answers -32601), so that one names nothing.
        "tasks/get" | "tasks/update" | "tasks/cancel" => env.task_id.as_deref(),
        _ => None,
    }
}

/// What a request names, as every check reads it: the tool of a
/// `tools/call`, the prompt of a `prompts/get`, the URI of a resource
/// request, and nothing else. The member is chosen by the method, so a
/// `name` beside a resource request's `uri` (or a task request's id) never
/// stands in for what the server acts on.
pub fn judged_target(env: &Envelope) -> Option<&str> {
    match env.method.as_deref()? {
        "tools/call" | "prompts/get" => env.name.as_deref(),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => env.uri.as_deref(),
        _ => None,
    }
}

/// Whether servers could read resource URI `uri` as another resource than
/// its text names, so that a rule on the text (`file:///public/…`) judges
/// something else than what is read. The part a server resolves as a path
/// (for http(s) and ws(s) the path, for any other scheme everything after
/// the authority, query and fragment included: servers strip a prefix and
/// join the rest) is percent-decoded until nothing changes, then refused
/// when it holds a dot segment (`..`, `.`, and their Windows and servlet
/// spellings `...`, `.. `, `..;x`), an empty segment (`//etc`, which a
/// join takes as the root), a drive (`C:` after the first segment), a
/// backslash, a control character or NUL, or bytes that are not UTF-8 (an
/// overlong `%c0%ae`); a `%` not followed by two hex digits (`%u002e`) is
/// refused too, as decoders differ on it. Escaped slashes in a segment
/// (`users://a%2Fb/profile`) and escapes in an http query are the data
/// they say. So is a URI whose scheme or authority is not written in the
/// one form servers read it in (`FILE:`, `file://localhost/`,
/// `https://Admin.example.com:443/`: see `resource_uri`).
pub fn ambiguous_uri(uri: &str) -> bool {
    if uri.bytes().any(|c| c == b'\\' || c < 0x20 || c == 0x7f) {
        return true;
    }
    // A URL parser (WHATWG's, the url crate's: the TypeScript and Python
    // SDKs' `new URL`, `AnyUrl`) strips leading and trailing spaces and
    // tabs, then reads a scheme the gateway would not have seen
    // (` file:///secret`); a scheme must start with a letter.
    if uri.starts_with(|c: char| c.is_whitespace())
        || uri.ends_with(|c: char| c.is_whitespace())
        || uri.find(':').is_some_and(|i| {
            uri[..i]
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"+-.".contains(&b)))
        }) && uri
            .split_once(':')
            .is_some_and(|(sch, _)| !sch.contains(['/', '?', '#']))
    {
        return true;
    }
    if super::resource_uri::uncanonical(uri) {
        return true;
    }
    // A URI without a scheme is a relative reference, a path a server
    // joins to its own base: read as one.
    let (scheme, rest) = match uri.find(':') {
        Some(colon) => (&uri[..colon], &uri[colon + 1..]),
        None => ("", uri),
    };
    // A file path holds no slash or backslash of its own: escaped, it is
    // one to every server that decodes the path (`file:///secret%2Fkeys`).
    if scheme.eq_ignore_ascii_case("file") && escapes_separator(rest.as_bytes()) {
        return true;
    }
    let web = ["http", "https", "ws", "wss"]
        .iter()
        .any(|w| w.eq_ignore_ascii_case(scheme));
    let path = match rest.strip_prefix("//") {
        // A web URI's authority is a host; its path ends at the query.
        Some(r) if web => {
            let p = &r[r.find('/').unwrap_or(r.len())..];
            &p[..p.find(['?', '#']).unwrap_or(p.len())]
        }
        // Another scheme's "authority" is as often the first part of a
        // path a server joins (`note://../x`).
        Some(r) => r,
        None => rest,
    };
    // Decoded until stable (double encoding), at most a few times.
    // The URI's own escapes must be whole; a `%` that a first decoding
    // leaves (`100%25` is `100%`) is text unless it starts another escape.
    // An unreserved character written as an escape (`%73ecret` for
    // `secret`, `%2541` twice over) is the same URI to every server that
    // normalises it (RFC 3986, 2.3) and another text to a rule that reads
    // the letters: at any level of decoding.
    if escapes_unreserved(path.as_bytes()) {
        return true;
    }
    let Some(mut text) = percent_decoded(path.as_bytes()) else {
        return true;
    };
    for _ in 0..3 {
        if escapes_unreserved(&text) {
            return true;
        }
        match percent_decoded(&text) {
            Some(next) if next != text => text = next,
            _ => break,
        }
    }
    let Ok(text) = std::str::from_utf8(&text) else {
        return true;
    };
    if text.bytes().any(|c| c == b'\\' || c < 0x20 || c == 0x7f) {
        return true;
    }
    // A character that compatibility folding or a "best fit" code page
    // turns into a dot or a slash (`．`, `‥`, `／`, `∕`, `＼`) is a
    // separator to some server and text to the rule.
    if text.chars().any(separator_lookalike) {
        return true;
    }
    // Segments of the path; the leading `/` of an absolute path opens none.
    let body = text.strip_prefix('/').unwrap_or(text);
    if body.is_empty() {
        return false;
    }
    body.split(['/', '?', '#']).enumerate().any(|(i, seg)| {
        let bare = seg.split(';').next().unwrap_or_default();
        let dots =
            !bare.is_empty() && bare.contains('.') && bare.bytes().all(|c| c == b'.' || c == b' ');
        let drive = i > 0
            && bare.len() == 2
            && bare.as_bytes()[0].is_ascii_alphabetic()
            && bare.as_bytes()[1] == b':';
        // An empty segment inside the path (`a//b`), not a trailing `/`
        // or the separator before a query.
        let empty = seg.is_empty() && i > 0 && !text.ends_with('/');
        dots || drive || empty
    })
}

/// Whether `b` holds an escape (`%XX`) of an unreserved character a rule
/// could read otherwise: a letter, a digit, `-`, `.` or `_`. (`%7E`, the
/// `~` older encoders always escape, names nothing a rule reads.)
fn escapes_unreserved(b: &[u8]) -> bool {
    escapes(b, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
    })
}

/// Whether `b` holds an escaped `/` or `\\`.
fn escapes_separator(b: &[u8]) -> bool {
    escapes(b, |c| matches!(c, b'/' | b'\\'))
}

/// Whether `b` holds an escape (`%XX`) of a byte `of` selects.
fn escapes(b: &[u8], of: impl Fn(u8) -> bool) -> bool {
    memchr::memchr_iter(b'%', b).any(|i| {
        let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
        match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (Some(h), Some(l)) => of((h * 16 + l) as u8),
            _ => false,
        }
    })
}

/// A non-ASCII character that NFKC reads as `.`, `/` or `\\`, or a
/// symbol the Unicode confusables data (UTS #39) draws like one (`∕`,
/// `⁄`, `⧸`). Letters and digits with such a skeleton (Katakana `ノ`,
/// Arabic-Indic `٠`) are text to every server: no folding or code page
/// turns them into separators.
fn separator_lookalike(c: char) -> bool {
    use unicode_normalization::UnicodeNormalization;
    if c.is_ascii() {
        return false;
    }
    let sep = |d: char| matches!(d, '.' | '/' | '\\');
    let mut buf = [0u8; 4];
    std::iter::once(c).nfkc().any(sep)
        || (!c.is_alphanumeric() && unicode_security::skeleton(c.encode_utf8(&mut buf)).any(sep))
}

/// `b` with every `%XX` decoded; `None` when a `%` is not followed by two
/// hex digits.
fn percent_decoded(b: &[u8]) -> Option<Vec<u8>> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The items of a list result (`tools`, `prompts`, `resources`,
/// `resourceTemplates`) as a concern that judges them finds them.
pub enum ListItems<'v> {
    Items(&'v mut Vec<serde_json::Value>),
    /// A result that is no list: a multi-round-trip `input_required`
    /// result, judged by the concerns of its input requests.
    NotAList,
    /// A list reply without its array, or with something else in its
    /// place: no concern can judge it, so it is refused.
    Unreadable,
}

/// The `array` of a list reply's result.
pub fn list_items<'v>(reply: &'v mut serde_json::Value, array: &str) -> ListItems<'v> {
    let Some(result) = reply
        .get_mut("result")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return ListItems::Unreadable;
    };
    let asks_input =
        result.get("resultType").and_then(serde_json::Value::as_str) == Some("input_required");
    match result.get_mut(array) {
        Some(serde_json::Value::Array(items)) => ListItems::Items(items),
        None if asks_input => ListItems::NotAList,
        _ => ListItems::Unreadable,
    }
}

/// Checks `Mcp-Method` / `Mcp-Name` against the body. Decisions are always made
/// on the body; a header that disagrees is refused with 400 / -32020 so a
/// component routing on headers can never be told something else.
pub fn check_headers(
    method_hdr: Option<&[u8]>,
    name_hdr: Option<&[u8]>,
    env: &Envelope,
) -> Result<(), Refusal> {
    if let Some(raw) = method_hdr {
        let Some(v) = decode_header_value(raw) else {
            return Err(Refusal::header_mismatch(
                env.id.clone(),
                "Mcp-Method header is not valid".into(),
            ));
        };
        if env.method.as_deref() != Some(v.as_str()) {
            return Err(Refusal::header_mismatch(
                env.id.clone(),
                "Mcp-Method header does not match the body's method".into(),
            ));
        }
    }
    let expected = expected_name(env);
    match (name_hdr, expected) {
        (Some(raw), Some(exp)) => {
            let Some(v) = decode_header_value(raw) else {
                return Err(Refusal::header_mismatch(
                    env.id.clone(),
                    "Mcp-Name header is not valid".into(),
                ));
            };
            if v != exp {
                return Err(Refusal::header_mismatch(
                    env.id.clone(),
                    "Mcp-Name header does not match the body's name or uri".into(),
                ));
            }
        }
        (Some(_), None) => {
            return Err(Refusal::header_mismatch(
                env.id.clone(),
                "Mcp-Name header present but the message names nothing".into(),
            ));
        }
        (None, Some(_)) if method_hdr.is_some() => {
            // 2026-07-28 requests that name a tool, prompt or resource must say so in Mcp-Name.
            return Err(Refusal::header_mismatch(
                env.id.clone(),
                "Mcp-Name header missing for a message that names a target".into(),
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Calls `each` with every resource URI a result names where MCP puts one:
/// what [`carried_uris`] finds (a read's `contents`, embedded `resource`
/// blocks) and the `uri` of `resource_link` blocks, wherever in `v` they
/// are, under every name a folding client reads as those. Other members
/// named `uri` (a search tool's web results in `structuredContent`) are a
/// tool's data, not resources. `true` when `v` is nested deeper than it
/// is read.
pub(crate) fn named_uris(v: &serde_json::Value, depth: usize, each: &mut dyn FnMut(&str)) -> bool {
    use crate::protocol::names::members_named;
    use serde_json::Value as Json;
    let deep = carried_uris(v, depth, each);
    fn links(v: &Json, depth: usize, each: &mut dyn FnMut(&str)) -> bool {
        if depth > 64 {
            return true;
        }
        match v {
            Json::Object(o) => {
                let link = members_named(v, "type").any(|t| {
                    t.as_str()
                        .is_some_and(|t| crate::protocol::names::same_name(t, "resource_link"))
                });
                if link {
                    for u in members_named(v, "uri").filter_map(Json::as_str) {
                        each(u);
                    }
                }
                o.values()
                    .filter(|x| x.is_object() || x.is_array())
                    .fold(false, |deep, x| links(x, depth + 1, each) | deep)
            }
            Json::Array(a) => a
                .iter()
                .filter(|x| x.is_object() || x.is_array())
                .fold(false, |deep, x| links(x, depth + 1, each) | deep),
            _ => false,
        }
    }
    links(v, depth, each) | deep
}

/// Calls `each` with every resource URI a result carries data under: the
/// `uri` of `contents` items (a read's reply) and of embedded `resource`
/// blocks, wherever in the result they are, under every name a folding
/// client reads as those. `true` when the result is
/// nested deeper than it is read.
pub(crate) fn carried_uris(
    v: &serde_json::Value,
    depth: usize,
    each: &mut dyn FnMut(&str),
) -> bool {
    use serde_json::Value as Json;
    if depth > 64 {
        return true;
    }
    match v {
        Json::Object(o) => {
            // Under every name a folding client reads as these (`URI`,
            // `urı`, `Contents`).
            use crate::protocol::names::members_named;
            for items in members_named(v, "contents").filter_map(Json::as_array) {
                for it in items {
                    for u in members_named(it, "uri").filter_map(Json::as_str) {
                        each(u);
                    }
                }
            }
            for r in members_named(v, "resource") {
                for u in members_named(r, "uri").filter_map(Json::as_str) {
                    each(u);
                }
            }
            let mut deep = false;
            for x in o.values() {
                if x.is_object() || x.is_array() {
                    deep |= carried_uris(x, depth + 1, each);
                }
            }
            deep
        }
        Json::Array(a) => {
            let mut deep = false;
            for x in a {
                if x.is_object() || x.is_array() {
                    deep |= carried_uris(x, depth + 1, each);
                }
            }
            deep
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::jsonrpc::{parse, ParseLimits, Parsed};

    fn env(s: &str) -> Envelope {
        match parse(s.as_bytes(), ParseLimits::default()) {
            Ok(Parsed::Single(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_uris_servers_read_as_another_are_ambiguous() {
        for uri in [
            "file:///public/../secret",
            "file:///public/./x",
            "file:///public/..",
            "file:///public/%2e%2e/secret",
            "file:///public/%2E%2e%2fsecret",
            "file:///public/a%5cb",
            "file:///public/%252e%252e/x",
            "file:///public\\..\\x",
            "file:///public/a\tb",
            "note://../x",
            // Found by a hostile review.
            "file:///public/x?/../../secret.txt",
            "file:///public/x#/../../secret.txt",
            "file:///public//etc/passwd",
            "file:///public/C:/Windows/win.ini",
            "file:///public/%%32%65%%32%65/secret",
            "file:///public/..;/secret",
            "file:///public/.../secret",
            "file:///public/.. /secret",
            "file:///public/%u002e%u002e/secret",
            "file:///public/%c0%ae%c0%ae/secret",
            "file:///public/a%00b",
            "notes:public/../secret",
            "https://example.com/public/%2e%2e/admin",
            "file:///x%",
            // Dots and slashes a folding server reads.
            "file:///public/\u{ff0e}\u{ff0e}/secret",
            "file:///public/\u{2025}/secret",
            "file:///public/..\u{ff0f}secret",
            "file:///public/..\u{2215}secret",
            "file:///public/..\u{ff3c}secret",
            "file:///public/%EF%BC%8E%EF%BC%8E/secret",
            // Unreserved characters escaped: `secret` to a normalising
            // server, not to a rule on `file:///secret/`.
            "file:///%73ecret/x",
            "file:///%73%65%63%72%65%74/x",
            "postgres://db/table%41",
            "file:///secret%2Dkeys/x",
            "file:///a%5fb",
            "file:///a%2Eb",
            // Escaped separators in a file path; relative references.
            "file:///secret%2Fkeys.txt",
            "file:///secret%5ckeys.txt",
            "%73ecret/x",
            "../secret",
            "a/../../secret",
            "docs//etc/passwd",
            "note://%73ecret",
            "file:///%2573ecret/x",
            "https://example.com/%61dmin",
            // A URL parser strips these spaces and reads the scheme after.
            " file:///secret/keys.txt",
            "\u{a0}file:///secret/keys.txt",
            "file:///secret/keys.txt ",
            " https://ADMIN.example.com/",
            "fi le:///secret",
        ] {
            assert!(ambiguous_uri(uri), "{uri}");
        }
        for uri in [
            "file:///public/a.txt",
            "file:///My%20Docs/a.txt",
            "file:///C:/Users/me/a.txt",
            "test://static-text",
            "test://template/1/data",
            "ui://widget/x.html",
            "https://example.com/a?next=../y",
            "https://example.com/a#../y",
            "https://example.com/search?q=a%2Fb",
            "https://example.com/?next=https%3A%2F%2Fexample.org%2F",
            "https://example.com/dir/",
            "file:///a.b/..c/d.../e..",
            "users://a%2Fb/profile",
            "file:///home/%7Euser/a.txt",
            "https://example.com/%7Euser/",
            "notes/2024/summary.md",
            "greeting",
            "gitlab://projects/group%2Fproject/readme",
            "file:///public/100%25%20done.txt",
            "mysql://users/data",
            "file:///",
            "note:x",
            "file:///public/résumé-日本.txt",
        ] {
            assert!(!ambiguous_uri(uri), "{uri}");
        }
    }

    /// Letters and digits whose confusables skeleton is a separator
    /// (Katakana `ノ`, CJK `丿`, Arabic-Indic `٠`, Lisu `ꓸ`) are text to
    /// every server: no folding or code page turns them into one.
    #[test]
    fn letters_drawn_like_separators_are_not_ambiguous() {
        for uri in [
            "file:///docs/ノート.txt",
            "file:///notes/\u{4e3f}.md",
            "file:///reports/\u{662}\u{660}\u{662}\u{664}.pdf",
            "file:///docs/\u{6f1}\u{6f0}.txt",
            "file:///lisu/\u{a4f8}.txt",
        ] {
            assert!(!ambiguous_uri(uri), "{uri}");
        }
        // Symbols drawn like them still are.
        for uri in [
            "file:///a\u{2215}b",
            "file:///a\u{2044}b",
            "file:///a\u{29f8}b",
        ] {
            assert!(ambiguous_uri(uri), "{uri}");
        }
    }

    #[test]
    fn headers_agree() {
        let e = env(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        assert!(check_headers(Some(b"tools/call"), Some(b"echo"), &e).is_ok());
        assert!(check_headers(None, None, &e).is_ok());
        // base64 form: "echo"
        assert!(check_headers(Some(b"tools/call"), Some(b"=?base64?ZWNobw==?="), &e).is_ok());
    }

    /// The tasks extension routes its methods by task id; `tasks/result`
    /// is no method of it (a 2026-07-28 server answers -32601), so a
    /// client that sends it without `Mcp-Name` is not refused for that.
    #[test]
    fn task_methods_name_their_task_but_the_removed_result() {
        let task = |m: &str| {
            env(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{m}","params":{{"taskId":"t-1"}}}}"#
            ))
        };
        for m in ["tasks/get", "tasks/update", "tasks/cancel"] {
            assert_eq!(expected_name(&task(m)), Some("t-1"), "{m}");
        }
        let e = task("tasks/result");
        assert_eq!(expected_name(&e), None);
        assert!(check_headers(Some(b"tasks/result"), None, &e).is_ok());
    }

    #[test]
    fn headers_disagree() {
        let e = env(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#);
        for (m, n) in [
            (Some(&b"tools/list"[..]), Some(&b"echo"[..])),
            (Some(b"tools/call"), Some(b"delete_all")),
            (Some(b"tools/call"), Some(b"=?base64?ZGVsZXRl?=")),
            (Some(b"tools/call"), Some(b"=?base64?!!!?=")),
            (Some(b"tools/call"), None),
            (Some(b"TOOLS/CALL"), Some(b"echo")),
        ] {
            let r = check_headers(m, n, &e).expect_err("mismatch");
            assert_eq!(r.status, 400);
            assert_eq!(r.error.code, crate::protocol::error::codes::HEADER_MISMATCH);
        }
        let list = env(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(check_headers(Some(b"tools/list"), Some(b"x"), &list).is_err());
        let read = env(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        );
        assert!(check_headers(Some(b"resources/read"), Some(b"file:///a"), &read).is_ok());
    }

    #[test]
    fn declarations_only_where_statically_reachable() {
        let ok = serde_json::json!({"type":"object","properties":{
            "region":{"type":"string","x-mcp-header":"Region"},
            "cfg":{"type":"object","properties":{"n":{"type":"integer","x-mcp-header":"N"}}}
        }});
        let d = param_decls(&ok).expect("valid");
        assert_eq!(d.len(), 2);
        let n = d.iter().find(|x| x.header == "n").expect("n");
        assert_eq!(n.path, vec!["cfg".to_owned(), "n".to_owned()]);
        for bad in [
            serde_json::json!({"x-mcp-header":"Root"}),
            serde_json::json!({"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"A"}}}}),
            serde_json::json!({"oneOf":[{"properties":{"a":{"type":"string","x-mcp-header":"A"}}}]}),
            serde_json::json!({"properties":{"a":{"$ref":"#/$defs/x"}},"$defs":{"x":{"type":"string","x-mcp-header":"A"}}}),
            serde_json::json!({"properties":{"a":{"type":"string","x-mcp-header":"A"},"b":{"type":"string","x-mcp-header":"a"}}}),
            serde_json::json!({"properties":{"a":{"type":"number","x-mcp-header":"A"}}}),
            serde_json::json!({"properties":{"a":{"type":"string","x-mcp-header":"A B"}}}),
            serde_json::json!({"properties":{"a":{"type":"string","x-mcp-header":""}}}),
            serde_json::json!({"properties":{"a":{"type":["string","null"],"x-mcp-header":"A"}}}),
        ] {
            assert!(param_decls(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_compare_as_their_type() {
        let schema = serde_json::json!({"properties":{
            "r":{"type":"string","x-mcp-header":"R"},
            "n":{"type":"integer","x-mcp-header":"N"},
            "b":{"type":"boolean","x-mcp-header":"B"}
        }});
        let d = param_decls(&schema).expect("valid");
        let args = serde_json::json!({"r":"Hello, 世界","n":42,"b":true});
        let sent = |r: &str, n: &str, b: &str| {
            vec![
                ("r".to_owned(), r.to_owned()),
                ("n".to_owned(), n.to_owned()),
                ("b".to_owned(), b.to_owned()),
            ]
        };
        assert!(check_params(&d, Some(&args), &sent("Hello, 世界", "42", "true"), true).is_ok());
        assert!(check_params(&d, Some(&args), &sent("Hello, 世界", "42.0", "true"), true).is_ok());
        assert!(check_params(&d, Some(&args), &sent("Hello, 世界", "42", "True"), true).is_err());
        for n in ["+42", "1e3", "42.", "42.0000000000000001", "0x2a", " 42"] {
            assert!(
                check_params(&d, Some(&args), &sent("Hello, 世界", n, "true"), true).is_err(),
                "{n}"
            );
        }
        let min = serde_json::json!({"n": i64::MIN});
        assert!(check_params(&d, Some(&min), &[], false).is_err());
        // Value keywords and maps of schemas are not annotations.
        let quiet = serde_json::json!({"properties":{
            "a":{"type":"object","default":{"x-mcp-header":"v"},"examples":[{"x-mcp-header":"v"}]},
            "x-mcp-header":{"type":"string"}
        },"$defs":{"x-mcp-header":{"type":"string"}}});
        assert_eq!(param_decls(&quiet), Ok(vec![]));
        assert!(check_params(&d, Some(&args), &sent("hello, 世界", "42", "true"), true).is_err());
        assert!(check_params(&d, Some(&args), &[], true).is_err());
        assert!(check_params(&d, Some(&args), &[], false).is_ok());
        let big = serde_json::json!({"n": 9007199254740993u64});
        assert!(check_params(
            &d,
            Some(&big),
            &[("n".into(), "9007199254740993".into())],
            true
        )
        .is_err());
        let hs = mirrored_headers(&d, Some(&args));
        let r = &hs.iter().find(|(n, _)| n == "r").expect("r").1;
        assert_eq!(r, "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(
            decode_header_value(r.as_bytes()).as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(
            encode_header_value("=?base64?x?="),
            "=?base64?PT9iYXNlNjQ/eD89?="
        );
        assert_eq!(encode_header_value(" pad"), "=?base64?IHBhZA==?=");
        assert!(decode_header_value("é".as_bytes()).is_none());
        assert!(decode_header_value(b"a\x01b").is_none());
    }
}

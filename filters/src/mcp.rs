//! MCP-level facts on top of JSON-RPC: the 2026-07-28 `Mcp-*` request headers,
//! which must agree with the body they accompany.

use base64::Engine;

use crate::error::Refusal;
use crate::jsonrpc::Envelope;

pub const H_METHOD: &str = "mcp-method";
pub const H_NAME: &str = "mcp-name";

/// Decodes a `Mcp-*` header value: plain ASCII, or `=?base64?<b64>?=` for
/// values that are not. Returns `None` for values that decode to nothing valid.
pub fn decode_header_value(raw: &[u8]) -> Option<String> {
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
    match env.method.as_deref()? {
        "tools/call" | "prompts/get" => env.name.as_deref(),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => env.uri.as_deref(),
        _ => None,
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
                format!(
                    "Mcp-Method header `{v}` does not match the body's method `{}`",
                    env.method.as_deref().unwrap_or("")
                ),
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
                    format!("Mcp-Name header `{v}` does not match the body's `{exp}`"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{parse, ParseLimits, Parsed};

    fn env(s: &str) -> Envelope {
        match parse(s.as_bytes(), ParseLimits::default()) {
            Ok(Parsed::Single(e)) => e,
            other => panic!("{other:?}"),
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
            assert_eq!(r.error.code, crate::error::codes::HEADER_MISMATCH);
        }
        let list = env(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(check_headers(Some(b"tools/list"), Some(b"x"), &list).is_err());
        let read = env(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        );
        assert!(check_headers(Some(b"resources/read"), Some(b"file:///a"), &read).is_ok());
    }
}

//! Request and reply headers read the one way the gateway reads them:
//! a header's text, the media type of a `Content-Type`, the trace id of a
//! `traceparent`.

use http::HeaderName;
use pingora::http::RequestHeader;

/// `name`'s value as text. Pass one of [`names`] on the request path: a
/// `&str` name is parsed (copied and lower-cased) at every lookup.
pub fn header_str<K: http::header::AsHeaderName>(req: &RequestHeader, name: K) -> Option<&str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The names the gateway looks up on every call, parsed once.
pub mod names {
    use super::HeaderName;
    use warden_filters::protocol::mcp;

    pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
    pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
    pub static MCP_METHOD: HeaderName = HeaderName::from_static(mcp::H_METHOD);
    pub static MCP_NAME: HeaderName = HeaderName::from_static(mcp::H_NAME);
    pub static JUSTIFICATION: HeaderName = HeaderName::from_static("x-warden-justification");
    pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
}

/// A W3C trace id as its 32 lower-case hex digits, held inline: the audit
/// record, an identity assertion and an approval claim name it without an
/// allocation per call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceHex([u8; 32]);

impl TraceHex {
    pub fn of(id: [u8; 16]) -> TraceHex {
        let mut hex = [0u8; 32];
        hex::encode_to_slice(id, &mut hex).expect("32 hex digits for 16 bytes");
        TraceHex(hex)
    }

    /// 32 hex digits (any case, not all zero, as W3C Trace Context requires).
    pub fn parse(text: &str) -> Option<TraceHex> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).ok()?;
        (id != [0u8; 16]).then(|| TraceHex::of(id))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl std::ops::Deref for TraceHex {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for TraceHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for TraceHex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The W3C trace id of the caller's `traceparent`, or a fresh one.
pub fn trace_id(req: &RequestHeader, request_id: u64) -> TraceHex {
    if let Some(tp) = header_str(req, &names::TRACEPARENT) {
        let mut parts = tp.split('-');
        if let (Some(_), Some(id)) = (parts.next(), parts.next()) {
            if let Some(id) = TraceHex::parse(id) {
                return id;
            }
        }
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rand::random::<u64>().to_be_bytes());
    id[8..].copy_from_slice(&request_id.to_be_bytes());
    TraceHex::of(id)
}

/// Whether a Content-Type is the media type `want` read as the gateway
/// reads it: UTF-8, with at most a `charset` parameter of `utf-8`. Another
/// charset (`utf-7`, `utf-16`: the TypeScript SDK's server decodes a body,
/// and httpx a stream, with whatever the header names) or any other
/// parameter would let the peer read other text than was judged. A request
/// with one is refused, and the upstream is only ever told
/// `application/json` (`upstream::Rewrite`); a reply with one is refused
/// (`response::on_header`), and a judged reply carries the bare type.
pub fn utf8_media(ct: &[u8], want: &str) -> bool {
    let Ok(ct) = std::str::from_utf8(ct) else {
        return false;
    };
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case(want) {
        return false;
    }
    // An empty parameter (`application/json;`) says nothing; `utf8` is a
    // common spelling of UTF-8.
    parts.all(|p| {
        p.trim().is_empty()
            || p.split_once('=').is_some_and(|(k, v)| {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                k.trim().eq_ignore_ascii_case("charset")
                    && (v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8"))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::TraceHex;

    #[test]
    fn a_trace_id_is_32_hex_digits_not_all_zero_read_in_lower_case() {
        let id = TraceHex::parse("4BF92F3577B34DA6A3CE929D0E0E4736").expect("valid");
        assert_eq!(&*id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            serde_json::to_string(&id).expect("serialises"),
            "\"4bf92f3577b34da6a3ce929d0e0e4736\""
        );
        assert!(TraceHex::parse(&"0".repeat(32)).is_none());
        assert!(TraceHex::parse(&"a".repeat(31)).is_none());
        assert!(TraceHex::parse(&"a".repeat(33)).is_none());
        assert!(TraceHex::parse(&format!("{}g", "a".repeat(31))).is_none());
        // 32 bytes that are not 32 characters.
        assert!(TraceHex::parse(&format!("{}é", "a".repeat(30))).is_none());
        assert_eq!(&*TraceHex::of([0xab; 16]), "ab".repeat(16));
    }
}

//! Request and reply headers read the one way the gateway reads them:
//! a header's text, the media type of a `Content-Type`, the trace id of a
//! `traceparent`.

use pingora::http::RequestHeader;

pub fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The W3C trace id of the caller's `traceparent`, or a fresh one.
pub fn trace_id(req: &RequestHeader, request_id: u64) -> String {
    if let Some(tp) = header_str(req, "traceparent") {
        let mut parts = tp.split('-');
        if let (Some(_), Some(id)) = (parts.next(), parts.next()) {
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32) {
                return id.to_ascii_lowercase();
            }
        }
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rand::random::<u64>().to_be_bytes());
    id[8..].copy_from_slice(&request_id.to_be_bytes());
    hex::encode(id)
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

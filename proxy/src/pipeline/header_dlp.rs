//! What travels to the upstream beside the messages — the client's
//! headers and the URL's own path and query — judged by the bundle's DLP
//! rules, as the messages are: a request can carry data out in a header
//! (`X-Note: AKIA…`) or a query (`?q=…`) as well as in its body.
//!
//! Judged here, at admission (before a body is read or anything is spent):
//! every client header the upstream receives as the client sent it (see
//! [`crate::pipeline::rewrite::forwarded`]; credentials for the gateway, hop-by-hop
//! headers and the ones the gateway replaces never reach it), and the path
//! below the route's prefix and the query, percent-decoded as a server
//! reads them (a `+` in the query also as a space). A header is read as
//! `name: value` with the name spelled as it is sent, and its name also in
//! upper and lower case (a server may fold it); a value that is not UTF-8
//! is also read as Latin-1, as Node and Starlette read it. Metadata goes to
//! the server, not to one tool: it is judged at the server's highest risk
//! (its catalog's default or riskiest tool). The org's rules judge it, and
//! so do the rules of each tenant whose scope the call is in (the caller's
//! tenant, the server's owner): the stricter wins. A blocking rule refuses the
//! request (403, -31015). A redacting or stripping rule withholds a header
//! (it is not sent on) and refuses a URL, which cannot go without its
//! text. Every finding is recorded in the audit record.

use std::borrow::Cow;

use smallvec::SmallVec;

use pingora::http::RequestHeader;
use warden_filters::guards::dlp::DlpFilter;
use warden_filters::Refusal;

use crate::pipeline::ctx::{RequestCtx, Routed};

/// Judges `req`'s metadata for the server admission `routed` it to.
pub fn judge(ctx: &mut RequestCtx, routed: &Routed, req: &RequestHeader) -> Result<(), Refusal> {
    let rt = &routed.rt;
    let server = routed.server();
    // The org's rules, and those of every tenant whose scope the call is
    // in: each judges on its own, a block or a withholding by any stands.
    let filters = rt.snap.metadata_dlp(&ctx.principal, &server.name);
    if filters.is_empty() {
        return Ok(());
    }
    let api_key_header = rt
        .snap
        .config
        .identity
        .as_ref()
        .map(|id| id.api_key_header.as_str());
    // The names as the client spelled them (HTTP/1 keeps them so on a
    // proxied GET or DELETE), in the order of `headers`.
    let mut cased = req.case_header_iter().map(|(n, _)| n.as_slice());
    // The text buffer is the worker thread's, kept between requests; the
    // spans and places of a usual request fit on the stack.
    let mut t = Texts {
        buf: SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut())),
        spans: SmallVec::new(),
        places: SmallVec::new(),
    };
    t.buf.clear();
    for (name, value) in req.headers.iter() {
        let spelled = cased.next();
        if !crate::pipeline::rewrite::forwarded(name.as_str(), api_key_header, ctx.session_sealed) {
            continue;
        }
        let lower = name.as_str();
        let sent = spelled
            .filter(|c| c.eq_ignore_ascii_case(lower.as_bytes()))
            .and_then(|c| std::str::from_utf8(c).ok())
            .unwrap_or(lower);
        let (utf8, latin1) = readings(value.as_bytes());
        t.add(Place::Header(name), &[sent, ": ", &utf8]);
        if let Some(l) = latin1 {
            t.add(Place::Header(name), &[sent, ": ", &l]);
        }
        if !common_name(lower) {
            t.add_shouted(Place::Header(name), lower);
        }
    }
    for (part, text) in client_url(ctx, routed, req) {
        t.add(Place::Url(part), &[&text]);
    }
    if t.spans.is_empty() {
        t.recycle();
        return Ok(());
    }
    let mut v = warden_filters::guards::dlp::MetadataVerdict::default();
    {
        let items: SmallVec<[&str; 16]> = t.spans.iter().map(|r| &t.buf[r.clone()]).collect();
        for dlp in filters {
            let risk = dlp.server_risk(&server.name);
            let one = dlp.judge_metadata(&items, risk);
            for rule in one.blocked {
                if !v.blocked.contains(&rule) {
                    v.blocked.push(rule);
                }
            }
            v.withheld.extend(one.withheld);
            v.findings.extend(one.findings);
        }
    }
    let places = std::mem::take(&mut t.places);
    t.recycle();
    for (i, mut f) in v.findings {
        // The client chose the name: it is named only when DLP finds
        // nothing in it (in either case).
        f.path = match places[i] {
            Place::Header(name) => {
                let n = name.as_str();
                let clean = |t: &str| matches!(rt.snap.redacted(t, t), Cow::Borrowed(_));
                if clean(n) && clean(&n.to_ascii_uppercase()) {
                    format!("header:{n}")
                } else {
                    "header:[REDACTED]".to_owned()
                }
            }
            Place::Url(part) => format!("url:{part}"),
        };
        if !ctx.metadata_findings.contains(&f) {
            ctx.metadata_findings.push(f);
        }
    }
    if !v.blocked.is_empty() {
        return Err(DlpFilter::metadata_refusal(&v.blocked));
    }
    // A URL is not sent without its text: a rule that would redact it
    // refuses the request.
    let mut url_rules: Vec<String> = Vec::new();
    for (i, rule) in v.withheld {
        match places[i] {
            Place::Header(name) if !ctx.withheld_headers.contains(name) => {
                ctx.withheld_headers.push(name.clone());
            }
            Place::Header(_) => {}
            Place::Url(_) if !url_rules.contains(&rule) => url_rules.push(rule),
            Place::Url(_) => {}
        }
    }
    if !url_rules.is_empty() {
        return Err(DlpFilter::metadata_refusal(&url_rules));
    }
    Ok(())
}

/// A header name every client sends, which can carry nothing in either
/// case (its `name: value` text is still judged).
fn common_name(n: &str) -> bool {
    matches!(
        n,
        "accept"
            | "accept-language"
            | "user-agent"
            | "content-type"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "mcp-method"
            | "mcp-name"
            | "last-event-id"
            | "traceparent"
            | "tracestate"
            | "baggage"
            | "cache-control"
            | "pragma"
            | "referer"
            | "x-request-id"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-real-ip"
            | "forwarded"
            | "via"
    )
}

/// How peers read a header value: as UTF-8, and (when it is not ASCII)
/// also byte for byte as Latin-1.
fn readings(v: &[u8]) -> (Cow<'_, str>, Option<String>) {
    let utf8 = String::from_utf8_lossy(v);
    let latin1 = (!v.is_ascii()).then(|| v.iter().map(|&b| char::from(b)).collect());
    (utf8, latin1)
}

/// The texts to judge, each a span of one buffer, and where each is.
struct Texts<'a> {
    buf: String,
    spans: SmallVec<[std::ops::Range<usize>; 16]>,
    places: SmallVec<[Place<'a>; 16]>,
}

/// The largest text buffer a worker keeps between requests.
const SCRATCH_MAX: usize = 16 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl<'a> Texts<'a> {
    /// Gives the buffer back to the thread (dropped when it grew large).
    fn recycle(self) {
        let mut buf = self.buf;
        if buf.capacity() <= SCRATCH_MAX {
            buf.clear();
            SCRATCH.with(|b| *b.borrow_mut() = buf);
        }
    }

    fn add(&mut self, place: Place<'a>, parts: &[&str]) {
        let start = self.buf.len();
        for p in parts {
            self.buf.push_str(p);
        }
        self.spans.push(start..self.buf.len());
        self.places.push(place);
    }

    /// `NAME name`: a header name read in both cases.
    fn add_shouted(&mut self, place: Place<'a>, lower: &str) {
        let start = self.buf.len();
        self.buf
            .extend(lower.chars().map(|c| c.to_ascii_uppercase()));
        self.buf.push(' ');
        self.buf.push_str(lower);
        self.spans.push(start..self.buf.len());
        self.places.push(place);
    }
}

#[derive(Clone, Copy)]
enum Place<'a> {
    Header(&'a http::HeaderName),
    /// `path` or `query`.
    Url(&'static str),
}

/// The URL's texts to judge, each with the part it is.
type UrlTexts<'a> = SmallVec<[(&'static str, Cow<'a, str>); 4]>;

/// The URL text the client chose that the upstream receives: the path
/// below the route's prefix, and the query unless the gateway replaced it
/// (a sealed legacy endpoint's), each percent-decoded; the query also with
/// `+` read as a space.
fn client_url<'a>(ctx: &RequestCtx, routed: &Routed, req: &'a RequestHeader) -> UrlTexts<'a> {
    let mut out = UrlTexts::new();
    let path = req.uri.path();
    let rest = routed.route().below_prefix(path);
    if !rest.is_empty() && rest != "/" {
        url_readings("path", rest, &mut out);
    }
    if let Some(q) = req.uri.query().filter(|q| !q.is_empty()) {
        // Forwarded as the client wrote it, or replaced by the gateway.
        let forwarded = ctx
            .upstream
            .uri
            .split_once('?')
            .is_some_and(|(_, up)| up == q);
        if forwarded {
            url_readings("query", q, &mut out);
            if q.contains('+') {
                let spaced = q.replace('+', " ");
                for text in decoded(&spaced) {
                    out.push(("query", Cow::Owned(text.into_owned())));
                }
            }
        }
    }
    out
}

/// Every way a reader may take URL text `s`: as written (a log, a raw
/// `req.url`) and percent-decoded (see [`decoded`]).
fn url_readings<'a>(part: &'static str, s: &'a str, out: &mut UrlTexts<'a>) {
    if !s.contains('%') {
        // Nothing to decode: one reading.
        out.push((part, Cow::Borrowed(s)));
        return;
    }
    let readings = decoded(s);
    if readings.iter().any(|t| t != s) {
        out.push((part, Cow::Borrowed(s)));
    }
    out.extend(readings.into_iter().map(|t| (part, t)));
}

/// `s` percent-decoded: as UTF-8, or, when the escapes do not decode to
/// UTF-8, both with replacement characters (Python's `unquote`) and byte
/// for byte as Latin-1.
fn decoded(s: &str) -> Vec<Cow<'_, str>> {
    let bytes: Cow<'_, [u8]> = percent_encoding::percent_decode_str(s).into();
    match bytes {
        Cow::Borrowed(_) => vec![Cow::Borrowed(s)],
        Cow::Owned(b) => match String::from_utf8(b) {
            Ok(text) => vec![Cow::Owned(text)],
            Err(e) => {
                let b = e.into_bytes();
                vec![
                    Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
                    Cow::Owned(b.iter().map(|&c| char::from(c)).collect()),
                ]
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{decoded, readings};

    #[test]
    fn a_header_value_is_read_as_utf8_and_as_latin1() {
        assert_eq!(readings(b"plain"), ("plain".into(), None));
        assert_eq!(
            readings(b"123\xA045\xA06789"),
            (
                "123\u{FFFD}45\u{FFFD}6789".into(),
                Some("123\u{A0}45\u{A0}6789".to_owned())
            )
        );
    }

    #[test]
    fn decodes_as_a_server_reads() {
        let one = |s: &str| {
            decoded(s)
                .into_iter()
                .map(|c| c.into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(one("AKIA%49OSFODNN7EXAMPLE"), ["AKIAIOSFODNN7EXAMPLE"]);
        assert_eq!(one("a%2Fb"), ["a/b"]);
        assert_eq!(one("%ZZ"), ["%ZZ"]);
        assert_eq!(one("%C3%A9"), ["é"]);
        // Not UTF-8: read with replacement characters and as Latin-1.
        assert_eq!(
            one("AKIA%C2%ADIOSF%FF"),
            ["AKIA\u{AD}IOSF\u{FFFD}", "AKIA\u{C2}\u{AD}IOSF\u{FF}"]
        );
    }
}

//! What travels to the upstream beside the messages — the client's header
//! values and the URL's own path and query — judged by the bundle's DLP
//! rules, as the messages are: a request can carry data out in a header
//! (`X-Note: AKIA…`) or a query (`?q=…`) as well as in its body.
//!
//! Judged here: every client header the upstream receives as the client
//! sent it (see [`crate::upstream::forwarded`]; credentials for the gateway,
//! hop-by-hop headers and the ones the gateway replaces never reach it),
//! and the path below the route's prefix and the query, percent-decoded as
//! a server reads them (a `+` in the query also as a space). A blocking
//! rule refuses the request (403, -31015). A redacting or stripping rule
//! withholds a header (it is not sent on) and refuses a URL, which cannot
//! go without its text. Every finding is recorded in the audit record.

use std::borrow::Cow;

use pingora::http::RequestHeader;
use warden_config::access::Risk;
use warden_filters::dlp::DlpFilter;
use warden_filters::Refusal;

use crate::ctx::RequestCtx;

/// Judges `req`'s metadata for the call `ctx` admitted, at `risk` (the
/// riskiest call the request carries; `LOW` for a GET or DELETE).
pub fn judge(ctx: &mut RequestCtx, req: &RequestHeader, risk: Risk) -> Result<(), Refusal> {
    let Some(rt) = ctx.rt.clone() else {
        return Ok(());
    };
    let Some(dlp) = rt.snap.dlp.as_deref() else {
        return Ok(());
    };
    let api_key_header = rt
        .snap
        .config
        .identity
        .as_ref()
        .map(|id| id.api_key_header.as_str());
    // Each header is judged as `name: value`, as a server logs it (so that
    // `Password: …` reads as the assignment it is, and a name can carry
    // nothing either); the texts share one buffer.
    let mut places: Vec<Place<'_>> = Vec::new();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut buf = String::new();
    for (name, value) in req.headers.iter() {
        if crate::upstream::forwarded(name.as_str(), api_key_header, ctx.session_sealed) {
            let start = buf.len();
            buf.push_str(name.as_str());
            buf.push_str(": ");
            buf.push_str(&String::from_utf8_lossy(value.as_bytes()));
            places.push(Place::Header(name));
            spans.push(start..buf.len());
        }
    }
    for (part, text) in client_url(ctx, req) {
        let start = buf.len();
        buf.push_str(&text);
        places.push(Place::Url(part));
        spans.push(start..buf.len());
    }
    if spans.is_empty() {
        return Ok(());
    }
    let items: Vec<&str> = spans.iter().map(|r| &buf[r.clone()]).collect();
    let v = dlp.judge_metadata(&items, risk);
    for (i, mut f) in v.findings {
        // The client chose the name: it is recorded DLP-redacted.
        f.path = match places[i] {
            Place::Header(name) => format!("header:{}", rt.snap.redact_text(name.as_str(), 64)),
            Place::Url(part) => format!("url:{part}"),
        };
        ctx.metadata_findings.push(f);
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

#[derive(Clone, Copy)]
enum Place<'a> {
    Header(&'a http::HeaderName),
    /// `path` or `query`.
    Url(&'static str),
}

/// The URL text the client chose that the upstream receives: the path
/// below the route's prefix, and the query unless the gateway replaced it
/// (a sealed legacy endpoint's), each percent-decoded; the query also with
/// `+` read as a space.
fn client_url<'a>(ctx: &RequestCtx, req: &'a RequestHeader) -> Vec<(&'static str, Cow<'a, str>)> {
    let mut out = Vec::new();
    let path = req.uri.path();
    let prefix = ctx
        .rt
        .as_ref()
        .zip(ctx.route)
        .map_or("/", |(rt, r)| rt.snap.routes[r].prefix.as_str());
    let rest = if prefix == "/" {
        path
    } else {
        path.get(prefix.len()..).unwrap_or(path)
    };
    if !rest.is_empty() && rest != "/" {
        out.push(("path", decode(rest)));
    }
    if let Some(q) = req.uri.query().filter(|q| !q.is_empty()) {
        // Forwarded as the client wrote it, or replaced by the gateway.
        let forwarded = ctx
            .upstream_uri
            .split_once('?')
            .is_some_and(|(_, up)| up == q);
        if forwarded {
            out.push(("query", decode(q)));
            if q.contains('+') {
                let spaced = q.replace('+', " ");
                out.push(("query", Cow::Owned(decode(&spaced).into_owned())));
            }
        }
    }
    out
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_as_a_server_reads() {
        assert_eq!(decode("AKIA%49OSFODNN7EXAMPLE"), "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(decode("a%2Fb"), "a/b");
        assert_eq!(decode("%ZZ"), "%ZZ");
        assert_eq!(decode("%C3%A9"), "é");
    }
}

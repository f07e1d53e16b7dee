//! Reaching an upstream: the Pingora peer for one replica (TLS, timeouts,
//! pooling) and the request as the upstream must see it (path, Host,
//! framing, credentials). Which replica serves a request is
//! `Runtime::select` (see `runtime`).

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;
use warden_config::model::Server;

/// Builds the Pingora peer for one upstream address of `server`.
pub fn peer(server: &Server, addr: SocketAddr, streaming: bool) -> HttpPeer {
    let (tls, sni) = match &server.tls {
        Some(t) => (true, t.sni.clone()),
        None => (false, String::new()),
    };
    let mut p = HttpPeer::new(addr, tls, sni);
    let t = &server.timeouts;
    p.options.connection_timeout = Some(t.connect);
    p.options.total_connection_timeout = Some(t.connect + Duration::from_secs(1));
    p.options.read_timeout = Some(if streaming { t.stream_idle } else { t.read });
    p.options.write_timeout = Some(t.write);
    p.options.idle_timeout = Some(t.idle);
    if let Some(tls) = &server.tls {
        p.options.verify_cert = tls.verify;
        p.options.verify_hostname = tls.verify;
        if tls.h2 {
            p.options.set_http_version(2, 1);
        }
    }
    p
}

/// Rewrites a request for the upstream: path, Host (the upstream's own
/// authority, which MCP servers validate against DNS rebinding), framing for
/// the judged body; strips the client's credentials, cookies and browser
/// Origin; asks for an uncompressed body so it can be inspected.
pub fn rewrite_request(
    req: &mut pingora::http::RequestHeader,
    ctx: &crate::ctx::RequestCtx,
    server: &Server,
    addr: SocketAddr,
    body_len: Option<usize>,
) -> pingora::Result<()> {
    use pingora::prelude::*;
    let uri: http::Uri = ctx
        .upstream_uri
        .parse()
        .map_err(|e| Error::because(ErrorType::InternalError, "upstream uri", e))?;
    req.set_uri(uri);
    let authority = server.host.clone().unwrap_or_else(|| addr.to_string());
    req.insert_header(http::header::HOST, authority)?;
    let api_key_header = ctx
        .rt
        .as_ref()
        .and_then(|rt| rt.snap.config.identity.as_ref())
        .map(|id| id.api_key_header.as_str());
    strip(
        req,
        server.composed.is_none(),
        api_key_header,
        body_len.is_some(),
    );
    if server.composed.is_some() {
        // A virtual server's aggregator is the gateway itself: it calls each
        // member through the gateway as this caller, with the caller's own
        // credentials, so each member leg authenticates and judges anew.
        if let Some(secret) = crate::aggregate::outer_secret_for(addr) {
            req.insert_header(crate::aggregate::SECRET_HEADER, secret)?;
        }
        if let Some(ip) = ctx.source_ip {
            req.insert_header(crate::aggregate::SOURCE_HEADER, ip.to_string())?;
        }
        let owner = crate::aggregate::owner_digest(&ctx.principal, ctx.source_ip);
        req.insert_header(crate::aggregate::OWNER_HEADER, owner)?;
    }
    if let Some(c) = &server.credentials {
        req.insert_header(c.header.clone(), c.value.expose())?;
    }
    // The user behind the agent, in a JWT the gateway signs for this call
    // (see `assertion`).
    if let (Some(a), Some(signer)) = (
        &server.assertion,
        ctx.rt.as_ref().and_then(|rt| rt.assertions.as_deref()),
    ) {
        let trace = ctx.trace_hex();
        let jwt = signer.mint(
            a,
            &ctx.principal,
            trace.as_deref(),
            std::time::SystemTime::now(),
        );
        let value = if a.header == "authorization" {
            format!("Bearer {jwt}")
        } else {
            jwt
        };
        req.insert_header(a.header.clone(), value)?;
    }
    // The gateway's own bridge to a stdio server admits only itself.
    if server.stdio.is_some() {
        if let Some(secret) = crate::stdio::secret_for(addr) {
            req.insert_header(crate::stdio::SECRET_HEADER, secret)?;
        }
        // Who the session is for (a digest), for the per-principal bound.
        use sha2::Digest;
        let owner = hex::encode(&sha2::Sha256::digest(ctx.principal.owner_key().as_bytes())[..16]);
        req.insert_header(crate::stdio::OWNER_HEADER, owner)?;
    }
    // A token fetched for this call (see `outbound`).
    if let Some((h, v)) = &ctx.outbound_auth {
        req.insert_header(h.clone(), v.as_str())?;
    }
    // Warden's span becomes the upstream's parent.
    if let Some(t) = &ctx.trace {
        req.insert_header("traceparent", t.traceparent())?;
    }
    // A sealed session id goes upstream as the upstream's own id.
    if ctx.session_sealed {
        if let Some(sid) = &ctx.session_id {
            req.insert_header("mcp-session-id", sid.as_str())?;
        }
    }
    if let Some(n) = &ctx.name_out {
        req.insert_header(warden_filters::mcp::H_NAME, n.as_str())?;
    }
    // Mirrored argument headers: only those judged against the forwarded
    // body (or scanned), on every method; nothing the client sent as is.
    for (name, value) in ctx.params_out.iter().flatten() {
        req.append_header(format!("Mcp-Param-{name}"), value.as_str())?;
    }
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    if let Some(n) = body_len {
        req.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
    }
    Ok(())
}

/// Removes, in one pass over the client's header names, every header that
/// must not reach the upstream as the client sent it:
/// - the gateway's own headers between a virtual server and its members;
/// - the client's credentials (`Authorization`, `Proxy-Authorization`, the
///   API-key header), which are for the gateway — except on a virtual
///   server's leg, whose aggregator calls each member through the gateway
///   with them, so that each member leg authenticates anew;
/// - the caller's justification (for policy and audit, where it is
///   DLP-redacted; never sent on as free text), likewise;
/// - `Cookie` and the browser's `Origin`;
/// - `Mcp-Param-*`: mirrored argument headers go upstream only as judged
///   against the forwarded body;
/// - `Expect` (the body has been read and judged) and, for a judged body,
///   `Transfer-Encoding` (it is sent with its length).
///
/// `direct`: not a virtual server's leg. Headers the gateway sets are
/// inserted after this.
fn strip(
    req: &mut pingora::http::RequestHeader,
    direct: bool,
    api_key_header: Option<&str>,
    framed: bool,
) {
    use crate::aggregate::{OWNER_HEADER, SECRET_HEADER, SOURCE_HEADER};
    let gone: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| {
            // Header names are lower case.
            let n = name.as_str();
            n == SECRET_HEADER
                || n == SOURCE_HEADER
                || n == OWNER_HEADER
                || matches!(n, "cookie" | "origin" | "expect")
                || n.starts_with(warden_filters::mcp::H_PARAM_PREFIX)
                || (framed && n == "transfer-encoding")
                || (direct
                    && (matches!(
                        n,
                        "authorization" | "proxy-authorization" | "x-warden-justification"
                    ) || api_key_header.is_some_and(|h| n.eq_ignore_ascii_case(h))))
        })
        .cloned()
        .collect();
    for name in gone {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::strip;

    fn request() -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build("POST", b"/mcp", None).expect("header");
        for (n, v) in [
            ("Host", "gateway"),
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer t"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Api-Key", "wk_1"),
            ("Cookie", "a=b"),
            ("Origin", "https://evil.example"),
            ("Expect", "100-continue"),
            ("Transfer-Encoding", "chunked"),
            ("X-Warden-Justification", "INC-1"),
            ("Mcp-Param-Region", "eu"),
            ("mcp-param-other", "x"),
            ("X-Warden-Virtual", "forged"),
            ("X-Warden-Virtual-Source", "10.0.0.1"),
            ("X-Warden-Virtual-Owner", "forged"),
            ("Mcp-Session-Id", "s1"),
            ("Accept", "application/json, text/event-stream"),
        ] {
            r.append_header(n, v).expect("append");
        }
        r
    }

    fn names(r: &pingora::http::RequestHeader) -> Vec<String> {
        let mut n: Vec<String> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn a_direct_leg_gets_none_of_the_clients_credentials_or_gateway_headers() {
        let mut r = request();
        strip(&mut r, true, Some("X-API-Key"), true);
        assert_eq!(
            names(&r),
            ["accept", "content-type", "host", "mcp-session-id"]
        );
    }

    #[test]
    fn a_virtual_leg_keeps_the_callers_credentials_for_its_member_legs() {
        let mut r = request();
        strip(&mut r, false, Some("x-api-key"), false);
        assert_eq!(
            names(&r),
            [
                "accept",
                "authorization",
                "content-type",
                "host",
                "mcp-session-id",
                "proxy-authorization",
                "transfer-encoding",
                "x-api-key",
                "x-warden-justification"
            ]
        );
    }
}

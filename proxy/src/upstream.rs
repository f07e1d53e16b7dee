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
    // The gateway's own headers between a virtual server and its members
    // go no further than the gateway.
    for h in [
        crate::aggregate::SECRET_HEADER,
        crate::aggregate::SOURCE_HEADER,
        crate::aggregate::OWNER_HEADER,
    ] {
        req.remove_header(h);
    }
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
    } else {
        // The client's credentials are for the gateway, never for the upstream.
        req.remove_header(&http::header::AUTHORIZATION);
        req.remove_header(&http::header::PROXY_AUTHORIZATION);
        if let Some(id) = ctx
            .rt
            .as_ref()
            .and_then(|rt| rt.snap.config.identity.as_ref())
        {
            req.remove_header(id.api_key_header.as_str());
        }
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
    req.remove_header(&http::header::ORIGIN);
    req.remove_header(&http::header::COOKIE);
    // The caller's justification is for the gateway (policy, audit, where it
    // is DLP-redacted), never sent on as free text.
    if server.composed.is_none() {
        req.remove_header("x-warden-justification");
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
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with(warden_filters::mcp::H_PARAM_PREFIX))
        .cloned()
        .collect();
    for n in names {
        req.remove_header(&n);
    }
    for (name, value) in ctx.params_out.iter().flatten() {
        req.append_header(format!("Mcp-Param-{name}"), value.as_str())?;
    }
    // The body has already been read and judged: the upstream must not ask for it.
    req.remove_header(&http::header::EXPECT);
    req.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    if let Some(n) = body_len {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_LENGTH, n.to_string())?;
    }
    Ok(())
}

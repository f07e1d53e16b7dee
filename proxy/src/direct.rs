//! Forwarding for the one body Pingora cannot replay: a request of unknown
//! length (chunked HTTP/1.1, or HTTP/2 without content-length) larger than the
//! 64 KiB replay window. The gateway has already read and judged it; here it
//! sends those bytes itself over Pingora's upstream connector and streams the
//! response back through the same response path (`response::on_header`,
//! `response::on_body`) as proxied requests.

use bytes::Bytes;
use pingora::prelude::*;
use pingora_core::connectors::http::Connector;
use pingora_proxy::Session;
use warden_filters::Refusal;

use crate::ctx::RequestCtx;
use crate::response;
use crate::state::Gateway;
use crate::upstream::{peer, rewrite_request};

/// Sends `body` upstream and relays the response. Returns the status written.
pub async fn forward(
    gw: &Gateway,
    connector: &Connector,
    session: &mut Session,
    ctx: &mut RequestCtx,
    body: Bytes,
) -> Result<u16, Refusal> {
    let (Some(rt), Some(server)) = (ctx.rt.clone(), ctx.server) else {
        return Err(Refusal::internal("no route"));
    };
    let s = &rt.snap.config.servers[server];
    let sticky = ctx
        .session_id
        .as_ref()
        .and_then(|sid| gw.sticky_get(&s.name, sid));
    let (mut up, p, addr) = loop {
        let Some(addr) = rt.select(server, sticky, &ctx.tried) else {
            return Err(Refusal::upstream_unavailable(&s.name, "no healthy replica"));
        };
        ctx.tried.push(addr);
        ctx.chosen = Some(addr);
        let p = peer(s, addr, false);
        match connector.get_http_session(&p).await {
            Ok((up, _reused)) => break (up, p, addr),
            Err(e) => {
                crate::metrics::metrics()
                    .upstream_errors
                    .with_label_values(&[&s.name, "connect"])
                    .inc();
                if matches!(e.etype(), ErrorType::ConnectTimedout)
                    && ctx.tried.len() >= s.upstreams.len()
                {
                    return Err(Refusal::upstream_timeout(&s.name));
                }
            }
        }
    };
    let mut req = session.req_header().clone();
    // The downstream may be HTTP/2; the connector speaks HTTP/1.1 unless the peer negotiates h2.
    req.set_version(http::Version::HTTP_11);
    rewrite_request(&mut req, ctx, s, addr, Some(body.len()))
        .map_err(|e| Refusal::internal(&e.to_string()))?;
    let unavailable = |e: Box<Error>| match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Refusal::upstream_timeout(&s.name),
        _ => Refusal::upstream_unavailable(&s.name, &e.etype().as_str().to_ascii_lowercase()),
    };
    up.write_request_header(Box::new(req))
        .await
        .map_err(unavailable)?;
    up.write_request_body(body, true)
        .await
        .map_err(unavailable)?;
    up.finish_request_body().await.map_err(unavailable)?;
    // Skip interim (1xx) responses.
    loop {
        up.read_response_header().await.map_err(unavailable)?;
        if up
            .response_header()
            .is_none_or(|h| !h.status.is_informational())
        {
            break;
        }
    }
    let mut resp = up
        .response_header()
        .cloned()
        .ok_or_else(|| Refusal::upstream_unavailable(&s.name, "no response header"))?;
    response::on_header(gw, ctx, &mut resp).map_err(|e| Refusal::internal(&e.to_string()))?;
    resp.remove_header(&http::header::CONNECTION);
    if session.as_downstream().is_http2() {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
    } else if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .map_err(|e| Refusal::internal(&e.to_string()))?;
    }
    let status = resp.status.as_u16();
    // From here on the response has started: failures can only cut it.
    if session
        .write_response_header(Box::new(resp), false)
        .await
        .is_err()
    {
        return Ok(status);
    }
    loop {
        let chunk = match up.read_response_body().await {
            Ok(c) => c,
            Err(e) => {
                ctx.upstream_error = Some(e.to_string());
                session.set_keepalive(None);
                return Ok(status);
            }
        };
        let eos = chunk.is_none() || up.response_done();
        let mut b = chunk;
        if let Err(e) = response::on_body(gw, ctx, &mut b, eos) {
            ctx.upstream_error = Some(e.to_string());
            session.set_keepalive(None);
            return Ok(status);
        }
        if session.write_response_body(b, eos).await.is_err() || eos {
            break;
        }
    }
    connector
        .release_http_session(up, &p, Some(s.timeouts.idle))
        .await;
    Ok(status)
}

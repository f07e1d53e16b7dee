//! Forwarding: the one driver of every exchange with an upstream, for every
//! method. Which replica (`next_replica`: the session's if healthy, else the
//! next healthy one not tried; a request of a session only ever goes to the
//! session's replica, else 502, or 404 once it is gone), when another may be tried (`may_retry`: only
//! while the request has reached none), what a failure becomes on the wire
//! (`refusal_for`), and the reply relayed through the reply path
//! (`reply::on_header`, `reply::on_body`).
//!
//! The gateway writes the request itself (`forward`): a POST's judged body,
//! exactly the bytes the filters passed, or nothing for GET (the server's
//! stream) and DELETE, over Pingora's upstream connector (pooled,
//! health-checked, TLS as configured). Pingora's own proxy loop is never
//! entered.
//!
//! Owning the exchange lets a JSON reply that must be judged be read whole
//! *before* the response header is written: the client gets the judged body
//! with its exact Content-Length in one write (no chunked re-framing, no
//! separate header and terminator packets), and an upstream failure while the
//! body is read still gets a JSON-RPC error instead of a cut connection.
//! SSE replies leave event by event as each is judged; an empty reply (204,
//! 304, a zero length) as it arrives.
//!
//! What leaves for the client leaves from here, a reply the client did not
//! take included (`undelivered`): the gateway's own answers to a POST it
//! forwards nothing of too (`answer_judged`).

use bytes::Bytes;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::protocols::http::v1::client::HttpSession as Http1Session;
use pingora_core::protocols::http::ServerSession as Session;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::Peer;
use warden_filters::protocol::version::ProtocolVersion;
use warden_filters::Refusal;

use std::net::SocketAddr;

use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::answers::write_answers;
use crate::pipeline::ctx::{ExchangeKind, RequestCtx, ResponseMode, Routed};
use crate::pipeline::reply;
use crate::pipeline::rewrite::Rewrite;
use crate::upstreams::peer::peer;
use crate::upstreams::pool::UpstreamPool;

/// How judged POST bodies reach upstreams: Pingora's connector makes
/// connections (TCP, TLS, HTTP/2 as the peer says) and keeps HTTP/2
/// sessions; idle HTTP/1.1 connections wait in the gateway's own pool
/// ([`UpstreamPool`]) between calls.
pub struct Upstreams {
    pub connector: Connector,
    pub pool: UpstreamPool,
}

impl Upstreams {
    pub fn new() -> Self {
        Upstreams {
            connector: Connector::new(None),
            pool: UpstreamPool::default(),
        }
    }

    /// A connection to `p`: an idle HTTP/1.1 one if the pool has one
    /// (`true`: reused), else what the connector gives.
    async fn connect(&self, p: &HttpPeer) -> Result<(UpstreamConn, bool)> {
        if let Some(stream) = self.pool.take(p.reuse_hash()) {
            return Ok((UpstreamConn::H1(stream), true));
        }
        // Boxed: the connector's future is about 9 KB, and inline it would
        // make every call's future (copied whole into its box per request)
        // that much larger for a path the pool makes rare.
        let (up, reused) = Box::pin(self.connector.get_http_session(p)).await?;
        Ok((UpstreamConn::of(up), reused))
    }

    /// Gives back the connection of a finished exchange: kept for the
    /// next call when the exchange allows it, closed otherwise.
    async fn release(&self, up: HttpSession, p: &HttpPeer, idle: std::time::Duration) {
        match up {
            HttpSession::H1(mut h1) => {
                h1.respect_keepalive();
                if let Some(stream) = h1.reuse().await {
                    self.pool.put(p.reuse_hash(), stream, idle);
                }
            }
            // Boxed for the same reason as the connector in `connect`.
            other => Box::pin(self.connector.release_http_session(other, p, Some(idle))).await,
        }
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// A connection about to carry a request: an HTTP/1.1 stream the gateway
/// writes itself, or a session of another protocol.
enum UpstreamConn {
    H1(Stream),
    /// HTTP/2 (boxed: rare, and far larger than a stream).
    Other(Box<HttpSession>),
}

impl UpstreamConn {
    fn of(up: HttpSession) -> UpstreamConn {
        match up {
            HttpSession::H1(h1) => UpstreamConn::H1(h1.into_inner()),
            other => UpstreamConn::Other(Box::new(other)),
        }
    }
}

/// Picks the next replica for this request: the session's if it is healthy
/// and not tried yet, otherwise the next healthy one not tried. Records it
/// as tried and chosen.
pub fn next_replica(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
) -> Option<(SocketAddr, HttpPeer)> {
    let s = routed.server();
    let sticky = ctx.replica(&gw.sessions, &s.name);
    let addr = routed
        .rt
        .select(routed.server_id, sticky, &ctx.upstream.tried)?;
    ctx.upstream.tried.push(addr);
    ctx.upstream.chosen = Some(addr);
    // A GET is the server's event stream: it may stay silent for long.
    Some((addr, peer(s, addr, ctx.kind == ExchangeKind::Get)))
}

/// The retry rule, the same for every method: a request that reached no
/// replica (its connection failed) may go to one not tried yet. Once written,
/// a request is never sent again (a tool call may not be idempotent).
pub fn may_retry(ctx: &RequestCtx) -> bool {
    let total = ctx.server().map_or(0, |s| s.upstreams.len());
    ctx.upstream.tried.len() < total
}

/// Sends the request (a POST with its judged body, a GET or DELETE with
/// none) and relays the reply (see [`forward`]); a failure is counted and
/// answered with the request's id.
pub async fn forward_judged(
    gw: &Gateway,
    ups: &Upstreams,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
    body: Option<Bytes>,
) -> Result<u16, Refusal> {
    forward(gw, ups, session, ctx, routed, body)
        .await
        .map_err(|r| counted(ctx, r))
}

/// An upstream failure as the client gets it: counted by reason, and
/// carrying the id of the request it answers (a single request only).
fn counted(ctx: &RequestCtx, mut r: Refusal) -> Refusal {
    metrics()
        .upstream_errors
        .with_label_values(&[ctx.server_name(), r.reason])
        .inc();
    if let Some(p) = ctx.plan.as_ref().filter(|p| !p.batch) {
        r.id = p.records.first().and_then(|rec| rec.id.clone());
    }
    r
}

/// How long a streamed reply's header waits for the first chunk of its body
/// so that both leave in one write.
const HEADER_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// The most a streamed reply holds back while its header waits.
const HELD_MAX: usize = 64 * 1024;

/// Sends the request upstream (with `body`, the judged POST body; none for
/// GET and DELETE) and relays the response. Returns the status written.
async fn forward(
    gw: &Gateway,
    ups: &Upstreams,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
    body: Option<Bytes>,
) -> Result<u16, Refusal> {
    let s = routed.server();
    let (up, p) = send(gw, ups, session, ctx, routed, body).await?;
    let mut resp = up
        .response_header()
        .map(client_header)
        .ok_or_else(|| Refusal::upstream_unavailable(&s.name, "no response header"))?;
    let refuse = |e: Box<Error>| refused(&s.name, e);
    reply::on_header(gw, ctx, routed, &mut resp).map_err(refuse)?;
    resp.remove_header(&http::header::CONNECTION);
    if matches!(
        ctx.reply.mode,
        ResponseMode::Json { .. } | ResponseMode::AnswersOnly | ResponseMode::Withheld { .. }
    ) {
        return relay_whole(
            gw,
            ups,
            session,
            ctx,
            Reply {
                up,
                p,
                routed,
                resp,
            },
        )
        .await;
    }
    relay_stream(
        gw,
        ups,
        session,
        ctx,
        Reply {
            up,
            p,
            routed,
            resp,
        },
    )
    .await
}

/// The reply header the client gets, as a copy of the upstream's that
/// `reply::on_header` then trims: its status, version and header fields,
/// with room for the gateway's own, and no record of the server's header
/// name case (names go out in their canonical form; HTTP field names are
/// case-insensitive) or of its reason phrase (free text, never passed on).
fn client_header(up: &pingora_http::ResponseHeader) -> pingora_http::ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = up.status;
    parts.version = up.version;
    parts.headers = http::HeaderMap::with_capacity(up.headers.len() + 4);
    for (name, value) in &up.headers {
        parts.headers.append(name.clone(), value.clone());
    }
    parts.into()
}

/// A reply on its way back: the upstream session it comes on, the peer
/// that session belongs to (it goes back to the pool after), where the
/// request was routed, and the reply's header as judged.
struct Reply<'a> {
    up: HttpSession,
    p: HttpPeer,
    routed: &'a Routed,
    resp: pingora::http::ResponseHeader,
}

/// Connects to a replica (the next one while none was reached), writes the
/// request and reads the reply's header. A request written whole is never
/// written again.
async fn send(
    gw: &Gateway,
    ups: &Upstreams,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
    body: Option<Bytes>,
) -> Result<(HttpSession, HttpPeer), Refusal> {
    let s = routed.server();
    // A session lives on the replica that opened it: a request of it never
    // fails over to another, which may know the id as another principal's
    // session (replicas whose ids are counters). A session whose replica
    // is gone — ejected (passive or by its health probe), refusing or
    // timing out connections, no longer one of the server's — is unknown:
    // 404, which tells every MCP client to initialize again (a 502 none
    // recovers from would strand it). Only a request that provably never
    // reached the replica is answered so; one that failed after it was
    // written keeps its upstream error (it may have had effects).
    let pinned = (s.upstreams.len() > 1)
        .then(|| ctx.replica(&gw.sessions, &s.name))
        .flatten();
    let elsewhere = |_: SocketAddr| Refusal::session_unknown();
    let (up, p, addr, reused) = loop {
        let Some((addr, p)) = next_replica(gw, ctx, routed) else {
            if let Some(r) = pinned {
                return Err(elsewhere(r));
            }
            return Err(Refusal::upstream_unavailable(&s.name, "no healthy replica"));
        };
        if let Some(r) = pinned.filter(|r| *r != addr) {
            return Err(elsewhere(r));
        }
        match ups.connect(&p).await {
            Ok((up, reused)) => break (up, p, addr, reused),
            Err(e) => {
                metrics()
                    .upstream_errors
                    .with_label_values(&[&s.name, "connect"])
                    .inc();
                routed
                    .rt
                    .outliers(routed.server_id)
                    .record(&s.name, addr, false);
                if matches!(e.etype(), ErrorType::ConnectTimedout) && !may_retry(ctx) {
                    return Err(Refusal::upstream_timeout(&s.name));
                }
            }
        }
    };
    let rewrite = Rewrite::new(&routed.rt, ctx, s, addr, body.as_ref().map(Bytes::len))
        .map_err(|e| Refusal::internal(&e.to_string()))?;
    let req = session.req_header();
    let unavailable = |e: Box<Error>| unavailable(&s.name, &e);
    let mut p = p;
    let mut sent = write(up, &p, &rewrite, req, &body).await;
    if sent.is_err() && reused {
        // A pooled connection the server closed while idle fails while the
        // request is written: the server cannot have acted on a request it
        // did not receive whole (Content-Length framing), so it is sent once
        // more on a fresh connection. Once written, a call is never repeated
        // (a tool call may not be idempotent): later failures are answered.
        let fresh = peer(s, addr, ctx.kind == ExchangeKind::Get);
        match Box::pin(ups.connector.get_http_session(&fresh)).await {
            Ok((u, _)) => {
                p = fresh;
                sent = write(UpstreamConn::of(u), &p, &rewrite, req, &body).await;
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    let mut up = sent.map_err(unavailable)?;
    read_head(&mut up).await.map_err(unavailable)?;
    Ok((up, p))
}

/// A failure reaching or reading the upstream, as the client gets it.
fn unavailable(server: &str, e: &Error) -> Refusal {
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Refusal::upstream_timeout(server),
        _ => Refusal::upstream_unavailable(server, &e.etype().as_str().to_ascii_lowercase()),
    }
}

/// A failure of the reply path: a withheld reply's answer, else the
/// upstream's failure.
fn refused(server: &str, e: Box<Error>) -> Refusal {
    refusal_for(&e, server).unwrap_or_else(|| unavailable(server, &e))
}

/// A reply judged whole: read it all, then answered with the exact length
/// in one write.
async fn relay_whole(
    gw: &Gateway,
    ups: &Upstreams,
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply<'_>,
) -> Result<u16, Refusal> {
    let Reply {
        mut up,
        p,
        routed,
        mut resp,
    } = reply;
    let s = routed.server();
    let status = resp.status.as_u16();
    let unavailable = |e: Box<Error>| unavailable(&s.name, &e);
    let refuse = |e: Box<Error>| refused(&s.name, e);
    let out = loop {
        let chunk = up.read_response_body().await.map_err(unavailable)?;
        let eos = chunk.is_none() || up.response_done();
        let mut b = chunk;
        reply::on_body(gw, ctx, routed, &mut b, eos).map_err(refuse)?;
        reply::share_flows(gw, ctx).await.map_err(refuse)?;
        if eos {
            break b.unwrap_or_default();
        }
    };
    // Once more just before the write: a bundle applied while the body was
    // read or its flows were shared may stop it.
    reply::still_allowed(gw, ctx).map_err(refuse)?;
    resp.remove_header(&http::header::TRANSFER_ENCODING);
    resp.insert_header(http::header::CONTENT_LENGTH, out.len())
        .map_err(|e| Refusal::internal(&e.to_string()))?;
    // The upstream's part is over (its body was read whole): its
    // connection goes back to the pool before the client is written to,
    // however slowly that client reads.
    ups.release(up, &p, s.timeouts.idle).await;
    write_whole(session, ctx, Box::new(resp), out).await;
    Ok(status)
}

/// A streamed reply: each chunk relayed as it is judged (see `HEADER_WAIT`).
async fn relay_stream(
    gw: &Gateway,
    ups: &Upstreams,
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply<'_>,
) -> Result<u16, Refusal> {
    let Reply {
        mut up,
        p,
        routed,
        mut resp,
    } = reply;
    let s = routed.server();
    let status = resp.status.as_u16();
    let refuse = |e: Box<Error>| refused(&s.name, e);

    if matches!(ctx.reply.mode, ResponseMode::Sse { .. }) {
        // A stream may rest between events for as long as streams may idle.
        up.set_read_timeout(Some(s.timeouts.stream_idle));
    }
    // 204 and 304 carry no body and may name no framing for one.
    let bodiless = matches!(status, 204 | 304);
    if session.is_http2() || bodiless {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
    } else if !resp.headers.contains_key(http::header::CONTENT_LENGTH) {
        resp.insert_header(
            http::header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        )
        .map_err(|e| Refusal::internal(&e.to_string()))?;
    }
    // A stream that ends within HEADER_WAIT (a reply that is one event, the
    // common case) leaves in one write with its exact length. A longer one
    // gets its header and what was judged so far when the wait is over, then
    // each chunk as it is judged.
    let mut head = Some(resp);
    let mut held = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + HEADER_WAIT;
    let wait = tokio::time::sleep_until(deadline);
    tokio::pin!(wait);
    loop {
        // A client that hangs up ends the upstream stream too (a quiet
        // `subscriptions/listen` stream would otherwise stay open upstream
        // until its next event): dropping `up` closes that connection.
        // A write of the started stream that failed: why the reply was
        // not delivered.
        let mut lost = None;
        let read = {
            let next = up.read_response_body();
            tokio::pin!(next);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut wait, if head.is_some() => {
                        // What was judged and held leaves only if the
                        // bundle in force still lets it (see `still_allowed`).
                        reply::still_allowed(gw, ctx).map_err(refuse)?;
                        // From here on the response has started: failures can only cut it.
                        if let Err(e) = start_stream(session, ctx, &mut head, &mut held).await {
                            lost = Some(e);
                            break None;
                        }
                    }
                    r = &mut next => break Some(r),
                    _ = session.read_body_or_idle(true) => break None,
                }
            }
        };
        let Some(read) = read else {
            match lost {
                Some(e) => undelivered(session, ctx, &e),
                None => cut_short(session, ctx, "client closed the stream".into()),
            }
            return Ok(status);
        };
        let judged = match read {
            Ok(chunk) => {
                let eos = chunk.is_none() || up.response_done();
                let mut b = chunk;
                match reply::on_body(gw, ctx, routed, &mut b, eos) {
                    Ok(()) => reply::share_flows(gw, ctx).await.map(|()| (b, eos)),
                    Err(e) => Err(e),
                }
            }
            // A failed read is the upstream's failure, however the
            // connection layer tagged it.
            Err(e) => Err(e.into_up()),
        };
        let (b, eos) = match judged {
            Ok(x) => x,
            Err(e) if head.is_some() => {
                // Nothing has left yet: the client gets a JSON-RPC error
                // for its request instead of a stream that just ends.
                return Err(refuse(e));
            }
            Err(e) => {
                cut_short(session, ctx, e.to_string());
                return Ok(status);
            }
        };
        if let Some(h) = head.as_mut() {
            if let Some(b) = b {
                held.extend_from_slice(&b);
            }
            if !eos {
                // Held back no longer than the wait, and no more than one
                // window of bytes, however fast the upstream sends.
                let due = held.len() >= HELD_MAX || tokio::time::Instant::now() >= deadline;
                if due {
                    reply::still_allowed(gw, ctx).map_err(refuse)?;
                }
                if due {
                    if let Err(e) = start_stream(session, ctx, &mut head, &mut held).await {
                        undelivered(session, ctx, &e);
                        return Ok(status);
                    }
                }
                continue;
            }
            // The whole stream within the wait: one write, exact length.
            reply::still_allowed(gw, ctx).map_err(refuse)?;
            h.remove_header(&http::header::TRANSFER_ENCODING);
            if !bodiless {
                h.insert_header(http::header::CONTENT_LENGTH, held.len())
                    .map_err(|e| Refusal::internal(&e.to_string()))?;
            }
            // The upstream's part is over: its connection goes back to the
            // pool before the client is written to.
            ups.release(up, &p, s.timeouts.idle).await;
            if let Some(h) = head.take() {
                write_whole(session, ctx, Box::new(h), held.split().freeze()).await;
            }
            return Ok(status);
        }
        // Judged before a flow share that may have waited on the store:
        // asked again before it leaves.
        if let Err(e) = reply::still_allowed(gw, ctx) {
            cut_short(session, ctx, e.to_string());
            return Ok(status);
        }
        // A chunk the guards emptied, mid-stream, writes nothing.
        let wrote = match b {
            Some(b) => send_body(session, ctx, b, eos).await,
            None if eos => session.write_response_body(bytes::Bytes::new(), true).await,
            None => Ok(()),
        };
        if let Err(e) = wrote {
            undelivered(session, ctx, &e);
            break;
        }
        if eos {
            break;
        }
    }
    ups.release(up, &p, s.timeouts.idle).await;
    Ok(status)
}

/// Writes a whole reply, header then body. A client that stopped reading
/// ends nothing but its own exchange, and its connection is not reused.
async fn write_whole(
    session: &mut Session,
    ctx: &mut RequestCtx,
    h: Box<pingora::http::ResponseHeader>,
    body: bytes::Bytes,
) {
    let written = match session.write_response_header(h).await {
        Ok(()) => send_body(session, ctx, body, true).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        undelivered(session, ctx, &e);
    }
}

/// The gateway's own answers to a POST judging forwards nothing of, written
/// to the client. The plan is kept whatever the write did: its denials are
/// recorded as judged, with the reply's fate beside them. Returns the
/// status written.
pub async fn answer_judged(
    session: &mut Session,
    ctx: &mut RequestCtx,
    plan: Box<warden_filters::RequestPlan>,
) -> u16 {
    let modern = ProtocolVersion::at_least(
        ctx.protocol_version.as_deref(),
        ProtocolVersion::V2026_07_28,
    );
    let (status, written) = write_answers(session, &plan.answers, plan.batch, modern).await;
    ctx.plan = Some(*plan);
    if let Err(e) = written {
        undelivered(session, ctx, &e);
    }
    status
}

/// A reply the client did not take (it hung up, or stopped reading for
/// `timeouts.write`): its records say so, and its connection is not
/// reused.
fn undelivered(session: &mut Session, ctx: &mut RequestCtx, e: &Error) {
    let why = if matches!(e.etype(), ErrorType::WriteTimedout) {
        // An HTTP/2 stream's write that did not finish within
        // `timeouts.write` (a connection that stalls is counted where it
        // is cut, in `GuardedStream`).
        metrics()
            .refusals
            .with_label_values(&["client_stream_stalled"])
            .inc();
        "the reply was not delivered: a write to the client's HTTP/2 stream did not finish within timeouts.write".to_string()
    } else {
        format!("the reply was not delivered: {e}")
    };
    cut_short(session, ctx, why);
}

/// A reply that ends before its end (the upstream failed, a new bundle
/// stopped it, the client left or stopped reading): recorded with `why`,
/// and not ended as if it were whole. No final chunk on HTTP/1 (the
/// connection closes), no end of stream on HTTP/2 (the stream is reset).
fn cut_short(session: &mut Session, ctx: &mut RequestCtx, why: String) {
    ctx.upstream.error = Some(why);
    ctx.undelivered = true;
    session.set_keepalive(None);
}

/// The most bytes one write to an HTTP/2 stream carries: each must leave
/// within `timeouts.write` (the session's write timeout), so a stream is
/// held to `limits.min_response_rate` as a connection is (16 KiB at least).
pub fn h2_slice(ctx: &RequestCtx) -> usize {
    let cfg = &ctx.rt.snap.config;
    let per_write = cfg.limits.min_response_rate as u128 * cfg.timeouts.write.as_millis() / 1000;
    usize::try_from(per_write)
        .unwrap_or(usize::MAX)
        .max(16 << 10)
}

/// Writes (part of) a reply's body: on HTTP/2 in slices of [`h2_slice`],
/// each through [`h2_write`].
async fn send_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut body: Bytes,
    eos: bool,
) -> Result<()> {
    if !ctx.downstream_h2 {
        return session.write_response_body(body, eos).await;
    }
    let slice = h2_slice(ctx);
    while body.len() > slice {
        h2_write(session, ctx, body.split_to(slice), false).await?;
    }
    h2_write(session, ctx, body, eos).await
}

/// One write to an HTTP/2 stream, held to the floor as a connection's
/// writes are (`conn::WriteFloor`): the time each write takes adds to the
/// stream's debt, each byte it carries pays back `1 / min_response_rate`
/// s, and a write may take only what is left of `timeouts.write` after
/// the debt. A client that opens its stream's window one small event at a
/// time, just inside `timeouts.write`, is reset within a few events.
async fn h2_write(
    session: &mut Session,
    ctx: &mut RequestCtx,
    part: Bytes,
    eos: bool,
) -> Result<()> {
    let cfg = &ctx.rt.snap.config;
    let (limit, rate) = (cfg.timeouts.write, cfg.limits.min_response_rate as u64);
    let left = limit.saturating_sub(ctx.h2_owed);
    session.set_write_timeout(Some(left.max(std::time::Duration::from_millis(1))));
    let sent = part.len();
    let start = std::time::Instant::now();
    let r = session.write_response_body(part, eos).await;
    ctx.h2_owed = crate::pipeline::conn::settle(ctx.h2_owed, start.elapsed(), sent, rate);
    // The session's other writes (an answer, the end of the stream) keep
    // the plain limit.
    session.set_write_timeout(Some(limit));
    r
}

/// Writes the pending header of a streamed reply and what was judged while
/// it waited. `Err`: the client did not take it.
async fn start_stream(
    session: &mut Session,
    ctx: &mut RequestCtx,
    head: &mut Option<pingora::http::ResponseHeader>,
    held: &mut bytes::BytesMut,
) -> Result<()> {
    let Some(h) = head.take() else {
        return Ok(());
    };
    session.write_response_header(Box::new(h)).await?;
    if !held.is_empty() {
        send_body(session, ctx, held.split().freeze(), false).await?;
    }
    Ok(())
}

/// Writes the client's request `req` as `rewrite` makes it, with the
/// judged body. Over HTTP/1.1 head and body leave in one write, so the
/// server is woken once per call (Pingora's session flushes the header on
/// its own, one more packet and wake-up), and the head is written straight
/// from the client's header, which is never copied.
async fn write(
    up: UpstreamConn,
    p: &HttpPeer,
    rewrite: &Rewrite<'_>,
    req: &pingora::http::RequestHeader,
    body: &Option<Bytes>,
) -> Result<HttpSession> {
    use tokio::io::AsyncWriteExt;
    match up {
        UpstreamConn::H1(mut stream) => {
            let body = body.as_deref().unwrap_or_default();
            let mut wire = bytes::BytesMut::with_capacity(1024 + body.len());
            rewrite.h1_head(req, &mut wire);
            wire.extend_from_slice(body);
            let io = async {
                stream.write_all(&wire).await?;
                stream.flush().await
            };
            let done = match p.options.write_timeout {
                Some(t) => tokio::time::timeout(t, io)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => io.await,
            };
            done.map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => {
                    Error::because(ErrorType::WriteTimedout, "writing the request", e)
                }
                _ => Error::because(ErrorType::WriteError, "writing the request", e),
            })?;
            let mut up = HttpSession::H1(Http1Session::new_with_options(stream, p));
            set_timeouts(&mut up, p);
            Ok(up)
        }
        UpstreamConn::Other(up) => {
            let mut up = *up;
            set_timeouts(&mut up, p);
            let mut req = req.clone();
            // The downstream may be HTTP/2; Pingora's h2 leg takes the
            // header as HTTP/1.1 and converts it.
            req.set_version(http::Version::HTTP_11);
            rewrite.apply(&mut req)?;
            up.write_request_header(Box::new(req)).await?;
            if let Some(body) = body {
                up.write_request_body(body.clone(), true).await?;
            }
            up.finish_request_body().await?;
            Ok(up)
        }
    }
}

/// Reads up to the final response header: past interim replies (1xx),
/// but never past a 101, which is the server's last word on this exchange
/// (a switch the reply path refuses), not a step to another reply.
async fn read_head(up: &mut HttpSession) -> Result<()> {
    loop {
        up.read_response_header().await?;
        if up
            .response_header()
            .is_none_or(|h| !h.status.is_informational() || h.status == 101)
        {
            return Ok(());
        }
    }
}

/// The answer to a reply the gateway withheld (502, -31003).
fn reply_refused(r: crate::pipeline::reply::ReplyRefusal, server: &str) -> Refusal {
    use crate::pipeline::reply::ReplyRefusal as R;
    match r {
        R::Compressed => Refusal::upstream_protocol(
            "upstream_compressed",
            format!("MCP server `{server}` sent a compressed response; Warden cannot inspect it"),
        ),
        R::TooLarge => Refusal::upstream_protocol(
            "upstream_response_too_large",
            format!("MCP server `{server}` sent a response larger than limits.max_response_body"),
        ),
        R::FlowUnrecorded => Refusal::upstream_protocol(
            "flow_unrecorded",
            format!(
                "the reply of `{server}` was withheld: what it carries could not be recorded in the fleet's flow state (the shared store is unreachable)"
            ),
        ),
        R::TaskNotOwned => Refusal::upstream_protocol(
            "task_not_owned",
            format!(
                "MCP server `{server}` named a task that is not this caller's; the reply was withheld"
            ),
        ),
        R::TaskUnrecorded => Refusal::upstream_protocol(
            "task_unrecorded",
            format!(
                "the reply of `{server}` was withheld: the task it hands out could not be recorded in the fleet's shared store (the store is unreachable)"
            ),
        ),
        // Answers to the request, as the guards' own refusals are (200 with
        // the request's id: the TypeScript client drops a non-2xx body).
        R::Paused => Refusal::new(
            200,
            "kill_switch",
            warden_filters::JsonRpcError::new(
                warden_filters::codes::PAUSED,
                format!("Paused by the kill switch: the reply of `{server}` was stopped"),
            )
            .with_data(serde_json::json!({"reason": "kill_switch"})),
        ),
        R::Withdrawn => Refusal::new(
            200,
            "server_withdrawn",
            warden_filters::JsonRpcError::new(
                warden_filters::codes::SERVER_NOT_RELEASED,
                format!("MCP server `{server}` was withdrawn while its reply was under way"),
            ),
        ),
        R::CredentialInReply => Refusal::upstream_protocol(
            r.code(),
            format!(
                "The reply of MCP server `{server}` held, outside its messages (a header, an endpoint), the credential the gateway sent it on your behalf: withheld"
            ),
        ),
        R::ProtocolSwitch
        | R::DuplicateSessionHeader
        | R::BadSessionHeader
        | R::UnsupportedCharset
        | R::DuplicateContentType
        | R::SeveralJsonValues
        | R::BadSse
        | R::EndpointRefused
        | R::EndpointOutsidePrefix => Refusal::upstream_protocol(
            r.code(),
            format!(
                "MCP server `{server}` sent a reply Warden cannot judge ({}); it was withheld",
                r.code().replace('_', " ")
            ),
        ),
    }
}

fn set_timeouts(up: &mut HttpSession, p: &pingora::upstreams::peer::HttpPeer) {
    up.set_read_timeout(p.options.read_timeout);
    up.set_write_timeout(p.options.write_timeout);
}

/// The answer for an error raised while talking to the upstream (`None`: the
/// downstream went away, nobody is left to answer).
pub fn refusal_for(e: &Error, server: &str) -> Option<Refusal> {
    if let Some(r) = crate::pipeline::reply::ReplyRefusal::of(e) {
        return Some(reply_refused(r, server));
    }
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Some(Refusal::upstream_timeout(server))
        }
        ErrorType::Custom("no_healthy_upstream") => {
            Some(Refusal::upstream_unavailable(server, "no healthy replica"))
        }
        _ => match e.esource() {
            ErrorSource::Upstream => Some(Refusal::upstream_unavailable(
                server,
                &e.etype().as_str().to_ascii_lowercase(),
            )),
            ErrorSource::Downstream => None,
            ErrorSource::Internal | ErrorSource::Unset => {
                Some(Refusal::internal(e.etype().as_str()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::reply::ReplyRefusal;

    /// Every withheld reply is answered as the server's fault (502,
    /// -31003) naming its reason, wherever Pingora wraps the error; none
    /// falls through to a 500. A reply stopped by a bundle applied while it
    /// was under way is answered as the guards answer (200, -31011 paused
    /// or -31018 not released).
    #[test]
    fn every_reply_refusal_has_its_answer() {
        for (r, code) in [
            (ReplyRefusal::Paused, warden_filters::codes::PAUSED),
            (
                ReplyRefusal::Withdrawn,
                warden_filters::codes::SERVER_NOT_RELEASED,
            ),
        ] {
            let raise = || r.raise::<()>("srv", "why").expect_err("raised");
            let wrapped = Error::because(ErrorType::HTTPStatus(502), "wrapped", raise());
            for e in [raise(), wrapped] {
                let answer = refusal_for(&e, "srv").expect("an answer");
                assert_eq!((answer.status, answer.error.code), (200, code), "{r:?}");
            }
        }
        for r in ReplyRefusal::ALL
            .into_iter()
            .filter(|r| !matches!(r, ReplyRefusal::Paused | ReplyRefusal::Withdrawn))
        {
            let raise = || r.raise::<()>("srv", "why").expect_err("raised");
            let once = Error::because(ErrorType::HTTPStatus(502), "wrapped", raise());
            let twice = Error::because(
                ErrorType::InternalError,
                "outer",
                Error::because(ErrorType::HTTPStatus(502), "wrapped", raise()),
            );
            for e in [raise(), once, twice] {
                let answer = refusal_for(&e, "srv").expect("an answer");
                assert_eq!(answer.status, 502, "{r:?}");
                assert!(
                    answer
                        .reason
                        .contains(r.code().trim_end_matches("_response")),
                    "{r:?}: {}",
                    answer.reason
                );
            }
        }
    }
}

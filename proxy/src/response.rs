//! The response path: JSON bodies are judged whole (bounded), SSE streams event
//! by event as events complete, so progress notifications and server→client
//! requests are never held back behind later events.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use warden_filters::jsonrpc::ElementError;
use warden_filters::{
    parse, Direction, Envelope, FilterContext, Kind, MessageRecord, Outcome, Parsed, SseDecoder,
    SseEvent, Verdict,
};

use crate::ctx::{Exchange, RequestCtx, ResponseMode};
use crate::metrics::metrics;
use crate::state::Gateway;

fn content_type(resp: &ResponseHeader) -> &[u8] {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes())
}

fn media_is(ct: &[u8], want: &str) -> bool {
    let main = ct.split(|b| *b == b';').next().unwrap_or(b"");
    main.trim_ascii().eq_ignore_ascii_case(want.as_bytes())
}

/// The body will be rewritten, so its length is unknown up front: drop
/// Content-Length and, on HTTP/1.1, frame it chunked so the connection stays
/// reusable (HTTP/2 frames bodies itself and forbids Transfer-Encoding).
fn unframe(ctx: &RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    if ctx.downstream_h2 {
        resp.remove_header(&http::header::TRANSFER_ENCODING);
    } else {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

/// Decides how the body will be handled and fixes the headers for it.
pub fn on_header(gw: &Gateway, ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    let status = resp.status.as_u16();
    ctx.upstream_status = Some(status);
    let (Some(rt), Some(server)) = (ctx.rt.clone(), ctx.server) else {
        return Ok(());
    };
    let server_name = &rt.snap.config.servers[server].name;
    // Session stickiness: the replica that created a session keeps serving it.
    let mut sealed_header = None;
    if let (Some(sid), Some(addr)) = (resp.headers.get("mcp-session-id"), ctx.chosen) {
        if let Ok(sid) = sid.to_str() {
            let owner = crate::state::owner_key(&ctx.principal);
            gw.sticky_set(server_name, sid, addr, &owner);
            // Stateless replicas: the client gets the sealed form.
            if let Some(sealer) = gw.sealer.load_full() {
                sealed_header = sealer.seal(&crate::seal::SealedSession {
                    session: sid.to_owned(),
                    upstream: addr.to_string(),
                    owner,
                    server: server_name.clone(),
                });
            }
            ctx.session_id.get_or_insert_with(|| sid.to_owned());
        }
    }
    if let Some(token) = sealed_header {
        resp.insert_header("mcp-session-id", token)?;
    }
    if ctx.exchange == Exchange::Delete && (200..300).contains(&status) {
        if let Some(sid) = &ctx.session_id {
            gw.sticky_forget(server_name, sid);
        }
    }
    let ct = content_type(resp);
    // Warden asks for `identity`; a server that compresses anyway would hand
    // the filters bytes they cannot read, so a judged body must be plain.
    let encoded = resp
        .headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
    let inspect_json = rt.snap.chain.inspects_json_response(
        server_name,
        ctx.request_method.as_deref(),
        ctx.request_target.as_deref(),
    );
    if encoded
        && ((media_is(ct, "text/event-stream") && rt.snap.chain.inspects_responses())
            || (media_is(ct, "application/json") && inspect_json))
    {
        metrics()
            .upstream_errors
            .with_label_values(&[server_name, "compressed_response"])
            .inc();
        return Error::e_explain(
            ErrorType::Custom("compressed_response"),
            "the upstream compressed a response Warden must inspect",
        );
    }
    let answers_pending = ctx.plan.as_ref().is_some_and(|p| !p.answers.is_empty());
    ctx.response = if media_is(ct, "text/event-stream") {
        // Never buffer or compress a stream; lengths do not apply.
        unframe(ctx, resp)?;
        resp.insert_header("x-accel-buffering", "no")?;
        ResponseMode::Sse {
            decoder: SseDecoder::new(rt.snap.config.limits.max_sse_event),
            injected: false,
        }
    } else if media_is(ct, "application/json")
        && (200..300).contains(&status)
        && (answers_pending || inspect_json)
    {
        unframe(ctx, resp)?;
        ResponseMode::Json { buf: Vec::new() }
    } else if status == 202 && answers_pending {
        // The upstream accepted what was forwarded; the gateway still owes answers.
        resp.set_status(200)?;
        resp.insert_header("content-type", "application/json")?;
        unframe(ctx, resp)?;
        ResponseMode::AnswersOnly
    } else {
        ResponseMode::Passthrough
    };
    Ok(())
}

/// Processes one chunk of the upstream body.
pub fn on_body(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    eos: bool,
) -> Result<()> {
    let chunk = body.take().unwrap_or_default();
    ctx.response_bytes += chunk.len();
    let mode = std::mem::replace(&mut ctx.response, ResponseMode::Passthrough);
    let (mode, out) = match mode {
        ResponseMode::Pending | ResponseMode::Passthrough => {
            (ResponseMode::Passthrough, Some(chunk))
        }
        ResponseMode::AnswersOnly => {
            let out = if eos {
                ctx.plan
                    .as_ref()
                    .map(|p| Bytes::from(crate::respond::answers_body(&p.answers, p.batch)))
            } else {
                None
            };
            (ResponseMode::AnswersOnly, out)
        }
        ResponseMode::Json { mut buf } => {
            let limit = ctx
                .rt
                .as_ref()
                .map_or(usize::MAX, |rt| rt.snap.config.limits.max_response_body);
            if buf.len() + chunk.len() > limit {
                metrics()
                    .upstream_errors
                    .with_label_values(&[ctx.server_name(), "response_too_large"])
                    .inc();
                return Error::e_explain(
                    ErrorType::Custom("response_too_large"),
                    format!("upstream JSON response exceeds {limit} bytes"),
                );
            }
            buf.extend_from_slice(&chunk);
            if eos {
                let out = judge_json(ctx, &buf);
                (ResponseMode::Json { buf: Vec::new() }, Some(out))
            } else {
                (ResponseMode::Json { buf }, None)
            }
        }
        ResponseMode::Sse {
            mut decoder,
            mut injected,
        } => {
            let mut out = BytesMut::new();
            if !injected {
                injected = true;
                if let Some(p) = &ctx.plan {
                    for a in &p.answers {
                        out.extend_from_slice(&SseEvent::encode_message(&a.to_string()));
                    }
                }
            }
            let events = match decoder.push(&chunk) {
                Ok(ev) => ev,
                Err(e) => {
                    metrics()
                        .upstream_errors
                        .with_label_values(&[ctx.server_name(), "bad_sse"])
                        .inc();
                    return Error::e_explain(ErrorType::Custom("bad_sse"), e.to_string());
                }
            };
            for ev in events {
                out.extend_from_slice(&judge_event(gw, ctx, ev));
            }
            if eos {
                // An unterminated tail is dropped by SSE clients anyway; forward only
                // what carries no data so nothing unjudged reaches the client.
                let tail = decoder.finish();
                if !tail.is_empty() && !tail.windows(5).any(|w| w == b"data:") {
                    out.extend_from_slice(&tail);
                }
            }
            (ResponseMode::Sse { decoder, injected }, Some(out.freeze()))
        }
    };
    ctx.response = mode;
    *body = out.filter(|b| !b.is_empty() || eos);
    Ok(())
}

fn filter_ctx<'a>(
    ctx: &'a RequestCtx,
    rt: &'a crate::upstream::Runtime,
    server: usize,
) -> FilterContext<'a> {
    let s = &rt.snap.config.servers[server];
    FilterContext {
        principal: &ctx.principal,
        server: &s.name,
        group: &s.group,
        session_id: ctx.session_id.as_deref(),
        protocol_version: ctx.protocol_version.as_deref(),
        source_ip: ctx.source_ip,
        direction: Direction::Response,
        request_method: ctx.request_method.as_deref(),
        request_target: ctx.request_target.as_deref(),
        now: ctx.now,
        justification: ctx.justification.as_deref(),
        keep_arguments: false,
        findings: None,
        global: None,
    }
}

fn judge_json(ctx: &mut RequestCtx, buf: &[u8]) -> Bytes {
    let (Some(rt), Some(server)) = (ctx.rt.clone(), ctx.server) else {
        return Bytes::copy_from_slice(buf);
    };
    let parsed = match parse(buf, rt.snap.parse_limits) {
        Ok(p) => p,
        Err((_, e)) => {
            // Not MCP: the client is better served by a clear error than by bytes it cannot read.
            metrics()
                .upstream_errors
                .with_label_values(&[&rt.snap.config.servers[server].name, "bad_json"])
                .inc();
            let err = warden_filters::JsonRpcError::new(
                warden_filters::codes::UPSTREAM_PROTOCOL,
                format!(
                    "MCP server sent an invalid JSON-RPC response: {}",
                    e.message
                ),
            );
            return Bytes::from(err.to_response_bytes(single_request_id(ctx).as_ref()));
        }
    };
    let items: Vec<Result<&Envelope, &ElementError>> = match &parsed {
        Parsed::Single(e) => vec![Ok(e)],
        Parsed::Batch(items) => items.iter().map(Result::as_ref).collect(),
    };
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(items.len());
    let mut changed = false;
    for item in items {
        match item {
            Ok(env) => {
                let bytes = &buf[env.span.clone()];
                match judge_message(ctx, &rt, server, env, bytes) {
                    Judged::Unchanged => out.push(bytes.to_vec()),
                    Judged::Replaced(b) => {
                        changed = true;
                        out.push(b);
                    }
                    Judged::Dropped => changed = true,
                }
            }
            Err(e) => {
                changed = true;
                ctx.response_records.push(MessageRecord::invalid(e));
            }
        }
    }
    let answers = ctx.plan.as_ref().map_or(&[][..], |p| p.answers.as_slice());
    if !changed && answers.is_empty() {
        return Bytes::copy_from_slice(buf);
    }
    out.extend(
        answers
            .iter()
            .map(|a| serde_json::to_vec(a).unwrap_or_default()),
    );
    if !matches!(parsed, Parsed::Batch(_)) && answers.is_empty() && out.len() == 1 {
        return Bytes::from(out.remove(0));
    }
    Bytes::from(warden_filters::plan::json_array(&out))
}

fn single_request_id(ctx: &RequestCtx) -> Option<warden_filters::Id> {
    let p = ctx.plan.as_ref()?;
    if p.batch {
        return None;
    }
    p.records.first().and_then(|r| r.id.clone())
}

/// What the chain made of one server→client message.
enum Judged {
    Unchanged,
    Replaced(Vec<u8>),
    /// A refused server→client request or notification: not passed on.
    Dropped,
}

/// Runs the chain on one server→client message and records the outcome.
/// Responses passed unchanged are audited with the request they answer;
/// server→client requests and anything a filter touched get records of their own.
fn judge_message(
    ctx: &mut RequestCtx,
    rt: &crate::upstream::Runtime,
    server: usize,
    env: &Envelope,
    bytes: &[u8],
) -> Judged {
    let cell = std::cell::RefCell::new(Vec::new());
    let verdict = {
        let mut fctx = filter_ctx(ctx, rt, server);
        fctx.findings = Some(&cell);
        rt.snap.chain.run(env, bytes, &fctx, &mut Vec::new())
    };
    let findings = cell.into_inner();
    let (judged, outcome) = match verdict {
        Verdict::Forward => (Judged::Unchanged, Outcome::Forwarded),
        Verdict::ForwardMutated(b) => (Judged::Replaced(b), Outcome::Mutated { filter: "chain" }),
        Verdict::Reject { filter, denial } => {
            let judged = if env.kind == Kind::Response {
                Judged::Replaced(
                    serde_json::to_vec(&denial.to_response(env.id.as_ref())).unwrap_or_default(),
                )
            } else {
                Judged::Dropped
            };
            (
                judged,
                Outcome::Denied {
                    filter,
                    reason: denial.reason,
                },
            )
        }
    };
    if env.kind == Kind::Request || outcome != Outcome::Forwarded || !findings.is_empty() {
        let mut rec = MessageRecord::of(env, outcome);
        rec.findings = findings;
        ctx.response_records.push(rec);
    }
    judged
}

fn judge_event(gw: &Gateway, ctx: &mut RequestCtx, ev: SseEvent) -> Vec<u8> {
    let (Some(rt), Some(server)) = (ctx.rt.clone(), ctx.server) else {
        return ev.raw;
    };
    metrics()
        .sse_events
        .with_label_values(&[&rt.snap.config.servers[server].name])
        .inc();
    if ev.event_type() == "endpoint" {
        return rewrite_endpoint(gw, ctx, &rt, server, ev);
    }
    let Some(data) = ev.data.as_deref() else {
        return ev.raw;
    };
    if ev.event_type() != "message" || data.is_empty() {
        return ev.raw;
    }
    let env = match parse(data.as_bytes(), rt.snap.parse_limits) {
        Ok(Parsed::Single(e)) => e,
        // Anything else is not one MCP message; pass it on untouched (clients reject it themselves).
        _ => return ev.raw,
    };
    match judge_message(ctx, &rt, server, &env, data.as_bytes()) {
        Judged::Unchanged => ev.raw,
        Judged::Replaced(b) => ev.with_data(&String::from_utf8_lossy(&b)),
        Judged::Dropped => Vec::new(),
    }
}

/// Legacy HTTP+SSE: the `endpoint` event names the POST URI; rewrite its path
/// prefix to the gateway's and remember which replica owns the session.
fn rewrite_endpoint(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    rt: &crate::upstream::Runtime,
    server: usize,
    ev: SseEvent,
) -> Vec<u8> {
    let Some(data) = ev.data.as_deref() else {
        return ev.raw;
    };
    let Some(route) = ctx.route.map(|i| &rt.snap.routes[i]) else {
        return ev.raw;
    };
    // The URI may be relative (`/messages/?session_id=…`) or absolute.
    let path = match data.find("://") {
        Some(i) => match data[i + 3..].find('/') {
            Some(j) => &data[i + 3 + j..],
            None => "/",
        },
        None => data,
    };
    let rewritten = if path.starts_with('/') {
        route.downstream_path(path)
    } else {
        None
    };
    match rewritten {
        Some(new) => {
            let server_name = &rt.snap.config.servers[server].name;
            let owner = crate::state::owner_key(&ctx.principal);
            if let Some(addr) = ctx.chosen {
                gw.sticky_set(server_name, &legacy_key(path), addr, &owner);
                // Stateless replicas: the session's query travels sealed.
                if let (Some(sealer), Some((base, query))) =
                    (gw.sealer.load_full(), new.split_once('?'))
                {
                    if let Some(token) = sealer.seal(&crate::seal::SealedSession {
                        session: query.to_owned(),
                        upstream: addr.to_string(),
                        owner,
                        server: server_name.clone(),
                    }) {
                        return ev.with_data(&format!("{base}?ws={token}"));
                    }
                }
            }
            ev.with_data(&new)
        }
        None => {
            metrics()
                .upstream_errors
                .with_label_values(&[
                    &rt.snap.config.servers[server].name,
                    "endpoint_outside_prefix",
                ])
                .inc();
            tracing::warn!(
                endpoint = data,
                "legacy endpoint outside the route's upstream prefix; forwarded unchanged"
            );
            ev.raw
        }
    }
}

/// Stickiness key of a legacy session: its upstream POST path and query.
pub fn legacy_key(upstream_path_and_query: &str) -> String {
    format!("legacy:{upstream_path_and_query}")
}

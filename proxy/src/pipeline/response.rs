//! The response path: JSON bodies are judged whole (bounded), SSE streams event
//! by event as events complete, so progress notifications and server→client
//! requests are never held back behind later events (the first 20 ms of a POST
//! stream may leave in one write, see `direct`).

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use warden_filters::jsonrpc::ElementError;
use warden_filters::{
    parse, Envelope, Kind, MessageRecord, Outcome, Parsed, SseDecoder, SseEvent, Verdict,
};

use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::ctx::{ExchangeKind, RequestCtx, ResponseMode};
use crate::pipeline::recording::logs_io;
use crate::pipeline::scope::{ledger_keys, legacy_post, remember_pending, scope};
use crate::sessions::sticky::legacy_key;

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

fn content_length_zero(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
}

/// Decides how the body will be handled and fixes the headers for it.
///
/// Only the two content types MCP defines are ever passed on, and only after
/// judging: `text/event-stream` event by event, `application/json` whole
/// (whatever the status: an error body can carry secrets too). A 2xx of any
/// other type is refused (502, -31003, naming the status the server sent),
/// but for a DELETE's, which passes without its body; any other status
/// keeps its code but its body is replaced by a JSON-RPC error that quotes
/// nothing of it.
pub fn on_header(gw: &Gateway, ctx: &mut RequestCtx, resp: &mut ResponseHeader) -> Result<()> {
    let status = resp.status.as_u16();
    ctx.upstream_status = Some(status);
    let Some((rt, server)) = ctx.routed() else {
        return Ok(());
    };
    let server_name = &rt.snap.config.servers[server].name;
    // A switch to another protocol would make the connection a tunnel no
    // guard reads. The gateway never asks for one (`Upgrade` is not
    // forwarded, and Pingora refuses a 101 to a request that did not ask);
    // this holds should either change.
    if status == 101 {
        return refuse_reply(server_name, ReplyRefusal::ProtocolSwitch);
    }
    // An interim (1xx) reply is not the reply: Pingora does not pass it on
    // to an HTTP/1 client (`set_ignore_info_resp` at admission), and
    // nothing of it counts here (a session id on it, say).
    if resp.status.is_informational() {
        // Should one go out anyway (HTTP/2 downstream, where Pingora has no
        // such switch), it carries none of the server's headers.
        let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
        for n in names {
            resp.remove_header(&n);
        }
        return Ok(());
    }
    // The reason phrase is the server's free text beside the status: the
    // client gets the status's own (a status with none gets none).
    resp.set_reason_phrase(None)?;
    keep_known_headers(resp, &rt.snap, server_name)?;
    // Session stickiness: the replica that created a session keeps serving it.
    let mut sealed_header = None;
    let sids = resp.headers.get_all("mcp-session-id").iter().count();
    if sids > 1 {
        return refuse_reply(server_name, ReplyRefusal::DuplicateSessionHeader);
    }
    if let (Some(sid), Some(addr)) = (resp.headers.get("mcp-session-id"), ctx.chosen) {
        // Visible ASCII (the transport's rule), bounded, and nothing DLP
        // flags: without a sealer the client sees it as the server sent it.
        let Some(sid) = sid
            .to_str()
            .ok()
            .filter(|s| {
                !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
            })
            .filter(|s| rt.sealer.is_some() || dlp_clean(&rt.snap, s))
        else {
            return refuse_reply(server_name, ReplyRefusal::BadSessionHeader);
        };
        let owner = crate::sessions::sticky::owner_key(&ctx.principal);
        gw.sessions
            .remember(server_name, sid, addr, &owner, ctx.url_elicitation);
        // Stateless replicas: the client gets the sealed form.
        if let Some(sealer) = rt.sealer.as_ref() {
            sealed_header = sealer.seal(&crate::sessions::seal::SealedSession {
                session: sid.to_owned(),
                upstream: addr.to_string(),
                owner,
                server: server_name.clone(),
            });
        }
        ctx.session_id.get_or_insert_with(|| sid.to_owned());
    }
    if let Some(token) = sealed_header {
        resp.insert_header("mcp-session-id", token)?;
    }
    if ctx.exchange == ExchangeKind::Delete && (200..300).contains(&status) {
        if let Some(sid) = &ctx.session_id {
            gw.sessions.forget(server_name, sid);
        }
    }
    let sse = media_is(content_type(resp), "text/event-stream");
    let json = media_is(content_type(resp), "application/json");
    // A judged body is read as UTF-8: a reply that names another charset
    // (or any parameter) could be decoded by the client as other text than
    // was judged (httpx decodes a stream by the header's charset, UTF-7
    // included). Refused; what passes carries the bare type.
    if sse || json {
        let want = if sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        if !crate::pipeline::headers::utf8_media(content_type(resp), want) {
            return refuse_reply(server_name, ReplyRefusal::UnsupportedCharset);
        }
        resp.insert_header(http::header::CONTENT_TYPE, want)?;
    }
    let empty = status == 204 || status == 304 || content_length_zero(resp);
    // Warden asks for `identity`; a server that compresses anyway would hand
    // the filters bytes they cannot read, so a judged body must be plain.
    // Every coding of every `Content-Encoding` counts: a client decodes
    // the whole list (`identity, gzip` is gzip).
    let encoded = resp.headers.get_all("content-encoding").iter().any(|v| {
        v.to_str().map_or(true, |e| {
            e.split(',')
                .map(str::trim)
                .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        })
    });
    if encoded && (sse || json) {
        return ReplyRefusal::Compressed.raise(
            server_name,
            "the upstream compressed a response Warden must inspect",
        );
    }
    // What passes on is plain (judged) or the gateway's own (withheld): a
    // coding label would describe bytes the client never gets.
    resp.remove_header("content-encoding");
    // Replies to this POST that may arrive elsewhere (a replay of this SSE
    // stream) must find their request there; a legacy POST's are there
    // since it was judged.
    if ctx.exchange == ExchangeKind::Post
        && (status == 202 || sse)
        && !ctx.pending.is_empty()
        && !legacy_post(ctx)
    {
        remember_pending(gw, ctx);
    }
    let answers_pending = ctx.plan.as_ref().is_some_and(|p| !p.answers.is_empty());
    ctx.response = if sse {
        // Never buffer or compress a stream; lengths do not apply.
        unframe(ctx, resp)?;
        resp.insert_header("x-accel-buffering", "no")?;
        ResponseMode::Sse {
            decoder: SseDecoder::new(rt.snap.config.limits.max_sse_event),
            injected: false,
        }
    } else if status == 202 && answers_pending {
        // The upstream accepted what was forwarded; the gateway still owes answers.
        resp.set_status(200)?;
        resp.insert_header("content-type", "application/json")?;
        unframe(ctx, resp)?;
        ResponseMode::AnswersOnly
    } else if ctx.exchange == ExchangeKind::Delete && (200..300).contains(&status) {
        // A session ended: passed on as the server said it, without the
        // body (an empty chunked `text/plain`, an "OK") MCP gives no meaning.
        resp.remove_header(&http::header::CONTENT_TYPE);
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
        ResponseMode::Discarded
    } else if empty {
        ResponseMode::Passthrough
    } else if json
        && status != 202
        && !(ctx.exchange == ExchangeKind::Get && (200..300).contains(&status))
    {
        unframe(ctx, resp)?;
        ResponseMode::Json {
            chunks: Vec::new(),
            len: 0,
            ends: crate::pipeline::ctx::JsonEnds::default(),
        }
    } else if (200..300).contains(&status) && status != 202 {
        // Success of a type MCP does not define: 502 with a clear error.
        metrics()
            .upstream_errors
            .with_label_values(&[server_name, "unsupported_content_type"])
            .inc();
        resp.set_status(502)?;
        resp.insert_header("content-type", "application/json")?;
        unframe(ctx, resp)?;
        ctx.upstream_status = Some(502);
        ResponseMode::Withheld {
            received: false,
            always: true,
            status,
        }
    } else {
        // A body of a type MCP does not define (or any body on a 202): not
        // passed on. The status stays, so clients still see what happened.
        if status != 202 {
            resp.insert_header("content-type", "application/json")?;
        }
        unframe(ctx, resp)?;
        ResponseMode::Withheld {
            received: false,
            always: false,
            status,
        }
    };
    Ok(())
}

/// Why an upstream reply is withheld. Carried as the cause of the error
/// that stops the reply, and mapped to its answer in one place
/// (`forwarding::refusal_for`), so that no reason can fall through to a
/// generic internal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyRefusal {
    ProtocolSwitch,
    DuplicateSessionHeader,
    BadSessionHeader,
    UnsupportedCharset,
    DuplicateContentType,
    SeveralJsonValues,
    BadSse,
    EndpointRefused,
    EndpointOutsidePrefix,
    Compressed,
    TooLarge,
}

impl ReplyRefusal {
    pub const ALL: [ReplyRefusal; 11] = [
        ReplyRefusal::ProtocolSwitch,
        ReplyRefusal::DuplicateSessionHeader,
        ReplyRefusal::BadSessionHeader,
        ReplyRefusal::UnsupportedCharset,
        ReplyRefusal::DuplicateContentType,
        ReplyRefusal::SeveralJsonValues,
        ReplyRefusal::BadSse,
        ReplyRefusal::EndpointRefused,
        ReplyRefusal::EndpointOutsidePrefix,
        ReplyRefusal::Compressed,
        ReplyRefusal::TooLarge,
    ];

    /// The metric label (`warden_upstream_errors_total{kind}`) and the
    /// refusal's reason.
    pub fn code(self) -> &'static str {
        match self {
            ReplyRefusal::ProtocolSwitch => "protocol_switch",
            ReplyRefusal::DuplicateSessionHeader => "duplicate_session_header",
            ReplyRefusal::BadSessionHeader => "bad_session_header",
            ReplyRefusal::UnsupportedCharset => "unsupported_charset",
            ReplyRefusal::DuplicateContentType => "duplicate_content_type",
            ReplyRefusal::SeveralJsonValues => "several_json_values",
            ReplyRefusal::BadSse => "bad_sse",
            ReplyRefusal::EndpointRefused => "endpoint_refused",
            ReplyRefusal::EndpointOutsidePrefix => "endpoint_outside_prefix",
            ReplyRefusal::Compressed => "compressed_response",
            ReplyRefusal::TooLarge => "response_too_large",
        }
    }

    /// The error that stops the reply (counted once, here).
    pub fn raise<T>(self, server: &str, why: impl Into<String>) -> Result<T> {
        metrics()
            .upstream_errors
            .with_label_values(&[server, self.code()])
            .inc();
        Err(Error::because(
            ErrorType::Custom(self.code()),
            why.into(),
            self,
        ))
    }

    /// The refusal carried by `e`, however deep Pingora wrapped it.
    pub fn of(e: &Error) -> Option<ReplyRefusal> {
        e.root_cause().downcast_ref::<ReplyRefusal>().copied()
    }
}

impl std::fmt::Display for ReplyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::error::Error for ReplyRefusal {}

/// Refuses an upstream reply the gateway cannot pass on (502, -31003).
fn refuse_reply(server: &str, reason: ReplyRefusal) -> Result<()> {
    reason.raise(
        server,
        "the upstream reply is not one the gateway can judge",
    )
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
        ResponseMode::Discarded => (ResponseMode::Discarded, None),
        ResponseMode::AnswersOnly => {
            let out = if eos {
                ctx.plan.as_ref().map(|p| {
                    Bytes::from(crate::pipeline::answers::answers_body(&p.answers, p.batch))
                })
            } else {
                None
            };
            (ResponseMode::AnswersOnly, out)
        }
        ResponseMode::Withheld {
            received,
            always,
            status,
        } => {
            let received = received || !chunk.is_empty();
            let out = if eos && (received || always) && ctx.upstream_status != Some(202) {
                metrics()
                    .upstream_errors
                    .with_label_values(&[ctx.server_name(), "withheld_body"])
                    .inc();
                // A client error the gateway can explain: say what was missing.
                let hint = match ctx.missing {
                    Some(m) if (400..500).contains(&status) => format!(" ({m})"),
                    _ => String::new(),
                };
                let err = if status == 404 && ctx.session_id.is_some() {
                    session_ended(ctx)
                } else {
                    warden_filters::JsonRpcError::new(
                        warden_filters::codes::UPSTREAM_PROTOCOL,
                        format!(
                            "MCP server answered HTTP {status} with a body that is not JSON-RPC; it was withheld{hint}"
                        ),
                    )
                };
                Some(Bytes::from(
                    err.to_response_bytes(single_request_id(ctx).as_ref()),
                ))
            } else {
                None
            };
            (
                ResponseMode::Withheld {
                    received,
                    always,
                    status,
                },
                out,
            )
        }
        ResponseMode::Json {
            mut chunks,
            mut len,
            mut ends,
        } => {
            let limit = ctx
                .rt
                .as_ref()
                .map_or(usize::MAX, |rt| rt.snap.config.limits.max_response_body);
            if len + chunk.len() > limit {
                return ReplyRefusal::TooLarge.raise(
                    ctx.server_name(),
                    format!("upstream JSON response exceeds {limit} bytes"),
                );
            }
            len += chunk.len();
            // A body that arrives whole is parsed whole; one that does not
            // is followed, and refused as soon as a second value begins (a
            // broken server on a stream it keeps open would otherwise hold
            // the client until the read timeout).
            if !eos && ends.second_begins(&chunk) {
                return refuse_reply(ctx.server_name(), ReplyRefusal::SeveralJsonValues);
            }
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            if eos {
                let whole = match chunks.len() {
                    1 => chunks.remove(0),
                    _ => {
                        let mut b = BytesMut::with_capacity(len);
                        chunks.iter().for_each(|c| b.extend_from_slice(c));
                        b.freeze()
                    }
                };
                let out = judge_json(gw, ctx, whole);
                (
                    ResponseMode::Json {
                        chunks: Vec::new(),
                        len: 0,
                        ends,
                    },
                    Some(out),
                )
            } else {
                (ResponseMode::Json { chunks, len, ends }, None)
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
            let events = match decoder.push(&chunk).and_then(|mut ev| {
                if eos {
                    ev.extend(decoder.end()?);
                }
                Ok(ev)
            }) {
                Ok(ev) => ev,
                Err(e) => return ReplyRefusal::BadSse.raise(ctx.server_name(), e.to_string()),
            };
            for ev in events {
                match judge_event(gw, ctx, ev) {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(reason) => {
                        return reason.raise(
                            ctx.server_name(),
                            "the upstream stream sent an event the gateway refuses",
                        );
                    }
                }
            }
            if eos {
                // An unterminated tail is never an event a client acts on:
                // nothing of it is passed on.
                let tail = decoder.finish();
                if tail.windows(4).any(|w| w == b"data") {
                    ctx.unjudgeable += 1;
                }
                // Requests whose replies were withheld still get an answer.
                for err in unanswered_errors(ctx) {
                    out.extend_from_slice(&SseEvent::encode_message(&err.to_string()));
                }
            }
            (ResponseMode::Sse { decoder, injected }, Some(out.freeze()))
        }
    };
    ctx.response = mode;
    *body = out.filter(|b| !b.is_empty() || eos);
    Ok(())
}

/// Errors for the requests of this POST that got no readable reply, once
/// something was withheld (a server that answered nothing readable must not
/// leave the client waiting).
fn unanswered_errors(ctx: &mut RequestCtx) -> Vec<serde_json::Value> {
    if ctx.unjudgeable == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in ctx.pending.iter_mut().filter(|p| !p.answered) {
        p.answered = true;
        out.push(unreadable_error().to_response(Some(&p.id)));
    }
    out
}

fn unreadable_error() -> warden_filters::JsonRpcError {
    warden_filters::JsonRpcError::new(
        warden_filters::codes::UPSTREAM_PROTOCOL,
        "MCP server sent a reply the gateway cannot read; it was withheld",
    )
}

/// The server no longer knows the session it was sent (it restarted, or
/// ended it): said as MCP clients understand a 404, so that they
/// initialise again, whatever the server's own 404 body says.
fn session_ended(ctx: &RequestCtx) -> warden_filters::JsonRpcError {
    warden_filters::JsonRpcError::new(
        warden_filters::codes::FORBIDDEN,
        format!(
            "Session not found: MCP server `{}` ended this session; start a new session with initialize",
            ctx.server_name()
        ),
    )
}

fn judge_json(gw: &Gateway, ctx: &mut RequestCtx, body: Bytes) -> Bytes {
    let Some((rt, server)) = ctx.routed() else {
        return body;
    };
    if ctx.upstream_status == Some(404) && ctx.session_id.is_some() {
        return Bytes::from(session_ended(ctx).to_response_bytes(single_request_id(ctx).as_ref()));
    }
    let buf = &body[..];
    let single = ctx.plan.as_ref().is_some_and(|p| !p.batch);
    let parsed = match parse(buf, rt.snap.parse_limits) {
        // A batch answering one request is no reply to it: its client
        // reads one object, and would take the array for something else.
        Ok(Parsed::Batch(_)) if single => None,
        r => r.ok(),
    };
    let parsed = match parsed {
        Some(p) => p,
        None => {
            // Not MCP: the client is better served by a clear error than by bytes it cannot read.
            metrics()
                .upstream_errors
                .with_label_values(&[&rt.snap.config.servers[server].name, "bad_json"])
                .inc();
            ctx.unjudgeable += 1;
            ctx.response_records.push(unjudgeable_record(None));
            let mut errs = unanswered_errors(ctx);
            let answers = ctx.plan.as_ref().map_or(&[][..], |p| p.answers.as_slice());
            errs.extend(answers.iter().cloned());
            let batch = ctx.plan.as_ref().is_some_and(|p| p.batch);
            return match errs.len() {
                0 => Bytes::from(
                    unreadable_error().to_response_bytes(single_request_id(ctx).as_ref()),
                ),
                1 if !batch => Bytes::from(serde_json::to_vec(&errs[0]).unwrap_or_default()),
                _ => Bytes::from(crate::pipeline::answers::answers_body(&errs, true)),
            };
        }
    };
    let items: Vec<Result<&Envelope, &ElementError>> = match &parsed {
        Parsed::Single(e) => vec![Ok(e)],
        Parsed::Batch(items) => items.iter().map(Result::as_ref).collect(),
    };
    // Unchanged messages stay slices of the reply.
    let mut out: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(items.len());
    let mut changed = false;
    for item in items {
        match item {
            Ok(env) => {
                let bytes = &buf[env.span.clone()];
                match judge_message(gw, ctx, &rt, server, env, bytes) {
                    Judged::Unchanged => out.push(std::borrow::Cow::Borrowed(bytes)),
                    Judged::Replaced(b) => {
                        changed = true;
                        out.push(std::borrow::Cow::Owned(b));
                    }
                    Judged::Dropped => changed = true,
                }
            }
            Err(e) => {
                changed = true;
                match unjudgeable(gw, ctx, e.id.as_ref()) {
                    Some(b) => out.push(std::borrow::Cow::Owned(b)),
                    None => ctx.response_records.push(MessageRecord::invalid(e)),
                }
            }
        }
    }
    let mut extra: Vec<serde_json::Value> = unanswered_errors(ctx);
    if let Some(p) = ctx.plan.as_ref() {
        extra.extend(p.answers.iter().cloned());
    }
    if !changed && extra.is_empty() {
        // Judged and unchanged: the bytes that came in, not a copy.
        return body.clone();
    }
    out.extend(
        extra
            .iter()
            .map(|a| std::borrow::Cow::Owned(serde_json::to_vec(a).unwrap_or_default())),
    );
    if !matches!(parsed, Parsed::Batch(_)) && out.len() == 1 {
        return Bytes::from(out.remove(0).into_owned());
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

/// The audit record of a server message that could not be judged.
fn unjudgeable_record(id: Option<&warden_filters::Id>) -> MessageRecord {
    MessageRecord {
        id: id.cloned(),
        kind: None,
        method: None,
        target: None,
        outcome: Outcome::Invalid {
            reason: "unjudgeable_server_message".into(),
        },
        args_digest: None,
        arguments: None,
        result: None,
        findings: Vec::new(),
        task: None,
        approval: None,
        shadow: None,
    }
}

/// A server message the gateway cannot read: counted and audited; if it
/// carries the id of a request still waiting here, that request gets an
/// error (the bytes to send); otherwise nothing is passed on.
fn unjudgeable(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    id: Option<&warden_filters::Id>,
) -> Option<Vec<u8>> {
    ctx.unjudgeable += 1;
    metrics()
        .upstream_errors
        .with_label_values(&[ctx.server_name(), "unjudgeable_message"])
        .inc();
    ctx.response_records.push(unjudgeable_record(id));
    let id = id?;
    let waiting = match ctx.exchange {
        ExchangeKind::Post => match ctx.pending.iter_mut().find(|p| !p.answered && p.id == *id) {
            Some(p) => {
                p.answered = true;
                true
            }
            None => false,
        },
        _ => {
            let (owner, session) = ledger_keys(ctx);
            gw.ledger
                .answered(&scope(ctx, &owner, &session), id)
                .is_some()
        }
    };
    waiting
        .then(|| serde_json::to_vec(&unreadable_error().to_response(Some(id))).unwrap_or_default())
}

/// The request a reply answers: one of this POST's own, or (on a GET
/// stream) one the ledger remembers for the session.
fn match_reply(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    id: &warden_filters::Id,
) -> Option<crate::sessions::ledger::Asked> {
    match ctx.exchange {
        ExchangeKind::Post => {
            let p = ctx
                .pending
                .iter_mut()
                .find(|p| p.id == *id && !p.answered)?;
            p.answered = true;
            Some(p.asked.clone())
        }
        _ => {
            let (owner, session) = ledger_keys(ctx);
            gw.ledger
                .answered(&scope(ctx, &owner, &session), id)
                .map(|a| (*a).clone())
        }
    }
}

/// The strictest reading of a reply on a stream whose request this replica
/// never saw (another replica forwarded it): judged as the list its result
/// holds, so filtering and pinning still apply. `Err`: more than one list
/// shape, which no single request could have asked for.
fn inferred_method(bytes: &[u8]) -> Result<Option<String>, ()> {
    #[derive(serde::Deserialize)]
    struct Msg {
        result: Option<Shape>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        tools: Option<serde::de::IgnoredAny>,
        prompts: Option<serde::de::IgnoredAny>,
        resources: Option<serde::de::IgnoredAny>,
        resource_templates: Option<serde::de::IgnoredAny>,
        // What a tool's, prompt's or resource's own result carries: a list
        // shape beside it is a disguise, not a list.
        content: Option<serde::de::IgnoredAny>,
        structured_content: Option<serde::de::IgnoredAny>,
        contents: Option<serde::de::IgnoredAny>,
        messages: Option<serde::de::IgnoredAny>,
        // Handles the gateway seals by the request they answer (a task, a
        // multi-round-trip state and its input requests): with no request,
        // they cannot be sealed, and are never passed on raw.
        input_requests: Option<serde::de::IgnoredAny>,
        task: Option<serde::de::IgnoredAny>,
        tasks: Option<serde::de::IgnoredAny>,
        request_state: Option<serde::de::IgnoredAny>,
        result_type: Option<String>,
    }
    let Ok(Msg { result: Some(s) }) = serde_json::from_slice::<Msg>(bytes) else {
        return Ok(None);
    };
    if s.task.is_some()
        || s.tasks.is_some()
        || s.request_state.is_some()
        || s.input_requests.is_some()
        || s.result_type.as_deref().is_some_and(|t| t != "complete")
    {
        return Err(());
    }
    let own_result = s.content.is_some()
        || s.structured_content.is_some()
        || s.contents.is_some()
        || s.messages.is_some();
    let found: Vec<&str> = [
        (s.tools.is_some(), "tools/list"),
        (s.prompts.is_some(), "prompts/list"),
        (s.resources.is_some(), "resources/list"),
        (s.resource_templates.is_some(), "resources/templates/list"),
    ]
    .iter()
    .filter(|(has, _)| *has)
    .map(|(_, m)| *m)
    .collect();
    match found.as_slice() {
        [] => Ok(None),
        [_] if own_result => Err(()),
        [m] => Ok(Some((*m).to_owned())),
        _ => Err(()),
    }
}

/// A reply to no request the gateway knows of: counted, audited, not passed on.
fn drop_unmatched(ctx: &mut RequestCtx, env: &Envelope) -> Judged {
    metrics()
        .upstream_errors
        .with_label_values(&[ctx.server_name(), "unmatched_response"])
        .inc();
    let mut rec = MessageRecord::of(
        env,
        Outcome::Denied {
            filter: "gateway",
            reason: "unmatched_response".into(),
        },
    );
    rec.target = None;
    ctx.response_records.push(rec);
    // On a POST, a reply answering none of its requests is one they did
    // not get: each still gets an answer (an error), not silence.
    if ctx.exchange == ExchangeKind::Post {
        ctx.unjudgeable += 1;
    }
    Judged::Dropped
}

/// Runs the chain on one server→client message and records the outcome.
/// Responses passed unchanged are audited with the request they answer;
/// server→client requests and anything a filter touched get records of their own.
/// A response that answers no request the gateway knows of is not passed on.
fn judge_message(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    rt: &crate::hub::runtime::Runtime,
    server: usize,
    env: &Envelope,
    bytes: &[u8],
) -> Judged {
    // A reply matched to no request of this replica: its id is the
    // server's text, so a refusal drops it rather than answer with that id.
    let mut inferred = false;
    let asked = match (&env.kind, &env.id) {
        (Kind::Response, Some(id)) => match match_reply(gw, ctx, id) {
            Some(a) => Some(a),
            None if ctx.exchange != ExchangeKind::Post => match inferred_method(bytes) {
                Ok(m) => {
                    inferred = true;
                    metrics()
                        .upstream_errors
                        .with_label_values(&[ctx.server_name(), "unmatched_response"])
                        .inc();
                    Some(crate::sessions::ledger::Asked {
                        method: m.unwrap_or_default(),
                        target: None,
                        args_digest: None,
                        task: None,
                    })
                }
                Err(()) => return drop_unmatched(ctx, env),
            },
            None => return drop_unmatched(ctx, env),
        },
        _ => None,
    };
    let mut notes = warden_filters::Notes::default();
    let verdict = {
        let ex = ctx.exchange(&rt.snap.config.servers[server], false, None);
        let mut msg = warden_filters::Message::from_server(
            env,
            bytes,
            // An unmatched reply whose shape names no list has no method:
            // it reaches every response filter.
            asked
                .as_ref()
                .map(|a| a.method.as_str())
                .filter(|m| !m.is_empty()),
            asked.as_ref().and_then(|a| a.target.as_deref()),
        );
        msg.request_args_digest = asked.as_ref().and_then(|a| a.args_digest.as_deref());
        msg.request_task = asked.as_ref().and_then(|a| a.task.as_deref());
        rt.snap
            .chain_for(&rt.snap.config.servers[server])
            .run(&msg, &ex, &mut notes)
    };
    let noted = !notes.findings.is_empty() || notes.task.is_some();
    let (judged, outcome) = match verdict {
        Verdict::Forward => (Judged::Unchanged, Outcome::Forwarded),
        Verdict::ForwardMutated(b) => (Judged::Replaced(b), Outcome::Mutated { filter: "chain" }),
        Verdict::Reject { filter, denial } => {
            let judged = if env.kind == Kind::Response && !inferred {
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
    // A server→client request the client may now answer (and only then).
    if let (Kind::Request, Some(id), false) =
        (env.kind, env.id.as_ref(), matches!(judged, Judged::Dropped))
    {
        let (owner, session) = ledger_keys(ctx);
        gw.ledger.owe(&scope(ctx, &owner, &session), id);
    }
    // A reply to a call of a tier logged in full: its result, as the client
    // gets it, DLP-redacted.
    let logged_result = match (&env.kind, &asked) {
        (Kind::Response, Some(a)) if a.method == "tools/call" => a
            .target
            .as_deref()
            .filter(|t| logs_io(rt, server, t))
            .and_then(|_| {
                let sent: &[u8] = match &judged {
                    Judged::Replaced(b) => b,
                    Judged::Dropped => return None,
                    _ => bytes,
                };
                let v: serde_json::Value = serde_json::from_slice(sent).ok()?;
                Some(rt.snap.redact_json(v.get("result")?).to_string())
            }),
        _ => None,
    };
    if env.kind == Kind::Request
        || outcome != Outcome::Forwarded
        || noted
        || logged_result.is_some()
    {
        let mut rec = MessageRecord::of(env, outcome);
        rec.result = logged_result;
        if env.kind == Kind::Response {
            if let Some(a) = asked {
                rec.method = Some(a.method);
                rec.target = a.target;
            }
        }
        rec.noted(notes);
        ctx.response_records.push(rec);
    }
    judged
}

/// Judges one SSE event. Events without data (comments, `id:`/`retry:`
/// lines, the empty priming event) pass cleaned of anything the server could
/// smuggle past the judge (see `SseEvent::cleaned`: comment text, odd fields,
/// an event id that is not a plain id or that DLP flags); a `message` event
/// is judged; anything else that carries data is withheld. `Err` cuts the
/// stream (a legacy endpoint the gateway refuses).
fn judge_event(gw: &Gateway, ctx: &mut RequestCtx, ev: SseEvent) -> Result<Vec<u8>, ReplyRefusal> {
    let Some((rt, server)) = ctx.routed() else {
        // No holder to bind an event id to: none reaches the client.
        return Ok(ev.cleaned(None, &|_| None));
    };
    metrics()
        .sse_events
        .with_label_values(&[&rt.snap.config.servers[server].name])
        .inc();
    // The server's event id reaches the client sealed for this principal,
    // server and session (see `warden_filters::handles`); a `Last-Event-ID`
    // opens only for them.
    let owner = ctx.principal.owner_key();
    let session = ctx.session_id.clone();
    let server_name = rt.snap.config.servers[server].name.clone();
    let sealer = rt.snap.handle_sealer.clone();
    let id_ok = move |id: &str| {
        if !warden_filters::sse::safe_id(id) {
            return None;
        }
        sealer.seal(
            warden_filters::handles::HandleKind::EventId,
            id,
            warden_filters::handles::Holder {
                owner: &owner,
                server: &server_name,
                session: session.as_deref(),
                scope: "",
            },
        )
    };
    if ev.event_type() == "endpoint" {
        if ctx.exchange == ExchangeKind::Get && !ctx.endpoint_seen {
            ctx.endpoint_seen = true;
            return rewrite_endpoint(gw, ctx, &rt, server, ev);
        }
        // Only the first event of a legacy GET stream names the endpoint.
        return Ok(unjudgeable(gw, ctx, None).unwrap_or_default());
    }
    let Some(data) = ev.data.as_deref() else {
        return Ok(ev.cleaned(None, &id_ok));
    };
    if data.is_empty() {
        return Ok(ev.cleaned(None, &id_ok));
    }
    if ev.event_type() != "message" {
        // SDK clients ignore other types today; a gateway cannot judge them.
        return Ok(unjudgeable(gw, ctx, None).unwrap_or_default());
    }
    let env = match parse(data.as_bytes(), rt.snap.parse_limits) {
        Ok(Parsed::Single(e)) => e,
        Ok(Parsed::Batch(_)) => {
            return Ok(unjudgeable(gw, ctx, None).unwrap_or_default());
        }
        Err((id, _)) => {
            return Ok(unjudgeable(gw, ctx, id.as_ref())
                .map(|b| ev.cleaned(Some(&String::from_utf8_lossy(&b)), &id_ok))
                .unwrap_or_default());
        }
    };
    Ok(
        match judge_message(gw, ctx, &rt, server, &env, data.as_bytes()) {
            Judged::Unchanged => ev.cleaned(None, &id_ok),
            Judged::Replaced(b) => ev.cleaned(Some(&String::from_utf8_lossy(&b)), &id_ok),
            Judged::Dropped => Vec::new(),
        },
    )
}

/// Legacy HTTP+SSE: the `endpoint` event names the POST URI; rewrite its path
/// prefix to the gateway's and remember which replica owns the session. An
/// endpoint on another origin, outside the route's prefix, or in any form a
/// client could read differently is refused (the stream is cut).
fn rewrite_endpoint(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    rt: &crate::hub::runtime::Runtime,
    server: usize,
    ev: SseEvent,
) -> Result<Vec<u8>, ReplyRefusal> {
    let data = ev.data.as_deref().unwrap_or("");
    let route = ctx
        .route
        .map(|i| &rt.snap.routes[i])
        .ok_or(ReplyRefusal::EndpointRefused)?;
    if data.is_empty()
        || data
            .bytes()
            .any(|b| b == b'\\' || b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80)
    {
        return Err(ReplyRefusal::EndpointRefused);
    }
    // The URI may be relative (`/messages/?session_id=…`) or absolute on the
    // upstream's own origin.
    let path = if data.starts_with('/') {
        if data.starts_with("//") {
            return Err(ReplyRefusal::EndpointRefused);
        }
        data
    } else {
        let lower = data.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("http://")
            .or_else(|| lower.strip_prefix("https://"))
            .ok_or(ReplyRefusal::EndpointRefused)?;
        let (authority, _) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let own = ctx.chosen.map(|a| a.to_string()).unwrap_or_default();
        if authority != own {
            return Err(ReplyRefusal::EndpointRefused);
        }
        let at = data.len() - rest.len() + authority.len();
        if at >= data.len() {
            "/"
        } else {
            &data[at..]
        }
    };
    // Dot segments would let the client's URL resolution leave the route.
    let path_only = path.split(['?', '#']).next().unwrap_or("");
    if path_only
        .split('/')
        .any(|seg| seg == "." || seg == ".." || seg.to_ascii_lowercase().contains("%2e"))
    {
        return Err(ReplyRefusal::EndpointRefused);
    }
    let Some(new) = route.downstream_path(path) else {
        tracing::warn!("legacy endpoint outside the route's upstream prefix; stream refused");
        return Err(ReplyRefusal::EndpointOutsidePrefix);
    };
    let server_name = &rt.snap.config.servers[server].name;
    let owner = crate::sessions::sticky::owner_key(&ctx.principal);
    ctx.stream_session = Some(legacy_key(path));
    gw.sessions.remember_legacy_path(server_name, path_only);
    if let Some(addr) = ctx.chosen {
        gw.sessions
            .remember(server_name, &legacy_key(path), addr, &owner, false);
        // Stateless replicas: the session's query travels sealed.
        if let (Some(sealer), Some((base, query))) = (rt.sealer.as_ref(), new.split_once('?')) {
            if let Some(token) = sealer.seal(&crate::sessions::seal::SealedSession {
                session: query.to_owned(),
                upstream: addr.to_string(),
                owner,
                server: server_name.clone(),
            }) {
                return Ok(ev.with_data(&format!("{base}?ws={token}")));
            }
        }
    }
    // Unsealed, the session's query reaches the client as the server wrote it.
    if new
        .split_once('?')
        .is_some_and(|(_, q)| !dlp_clean(&rt.snap, q))
    {
        return Err(ReplyRefusal::EndpointRefused);
    }
    Ok(ev.with_data(&new))
}

/// Whether DLP finds nothing in `text`.
fn dlp_clean(snap: &warden_filters::Snapshot, text: &str) -> bool {
    let mut hits = Vec::new();
    snap.redactor.scan_str(text, &mut hits);
    hits.is_empty()
}

/// The upstream response headers a client may see. Everything else the
/// server sent (its own `WWW-Authenticate`, cookies, `Location`, debug or
/// vendor headers) is dropped: the body is judged, headers would otherwise
/// be a way around it. Kept values are checked for shape; free text never
/// passes.
fn keep_known_headers(
    resp: &mut ResponseHeader,
    snap: &warden_filters::Snapshot,
    server: &str,
) -> Result<()> {
    // Two types for one body: a client may read either.
    if resp
        .headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .count()
        > 1
    {
        return refuse_reply(server, ReplyRefusal::DuplicateContentType);
    }
    let token_list = |v: &str| {
        v.len() <= 256
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" ,;=-_./+\"".contains(&b))
    };
    let drop: Vec<http::HeaderName> = resp
        .headers
        .iter()
        .filter(|(name, value)| {
            let v = value.to_str().unwrap_or("\u{0}");
            let ok = match name.as_str() {
                // Framing: Pingora and `on_header` own it.
                "content-length" | "transfer-encoding" => true,
                // The body's type and coding: a media type and its
                // parameters, no free text (dropped, the body is withheld).
                "content-type" | "content-encoding" => token_list(v) && dlp_clean(snap, v),
                // Checked (and sealed) where sessions are handled.
                "mcp-session-id" => true,
                "mcp-protocol-version" => {
                    v.len() == 10 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                }
                "cache-control" | "vary" => token_list(v) && dlp_clean(snap, v),
                "retry-after" => {
                    !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
                }
                "date" => {
                    v.len() <= 40
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b" ,:".contains(&b))
                }
                _ => false,
            };
            !ok
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in drop {
        resp.remove_header(&name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::inferred_method;
    use crate::pipeline::ctx::JsonEnds;

    /// A second top-level value is seen where it begins, however the text
    /// is cut into chunks; braces, quotes and escapes in strings are text.
    #[test]
    fn a_second_json_value_is_seen_where_it_begins() {
        let cases: [(&str, bool); 9] = [
            (r#"{"a":"}{"}"#, false),
            (r#"{"a":"\"}"}  "#, false),
            (r#"{"a":"\\"} {"#, true),
            ("[1,[2]]\n[", true),
            ("{} \"x\"", true),
            ("12 3", true),
            ("true", false),
            (r#"{"a":{"b":[]}}"#, false),
            (r#"{"a":"x\"}{"}"#, false),
        ];
        for (text, second) in cases {
            for cut in 0..=text.len() {
                let mut e = JsonEnds::default();
                let (a, b) = text.as_bytes().split_at(cut);
                let seen = e.second_begins(a) || e.second_begins(b);
                assert_eq!(seen, second, "{text:?} cut at {cut}");
            }
        }
    }

    /// A reply to a request this replica never saw is judged as the list its
    /// shape names; one that also carries a call's output is not a list.
    #[test]
    fn a_list_shape_beside_a_result_is_no_list() {
        let list = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
        assert_eq!(inferred_method(list), Ok(Some("tools/list".into())));
        let plain = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
        assert_eq!(inferred_method(plain), Ok(None));
        for disguised in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"content":[{"type":"text","text":"x"}]}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"structuredContent":{"k":1}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"resources":[],"contents":[]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"prompts":[]}}"#,
        ] {
            assert_eq!(inferred_method(disguised), Err(()));
        }
    }
}

//! The reply path: JSON bodies are judged whole (bounded), SSE streams event
//! by event as events complete, so progress notifications and server→client
//! requests are never held back behind later events (the first 20 ms of a POST
//! stream may leave in one write, see `direct`).

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use warden_filters::protocol::jsonrpc::ElementError;
use warden_filters::{
    parse, Envelope, Kind, MessageRecord, Outcome, Parsed, SseDecoder, SseEvent, Verdict,
};

use crate::hub::runtime::ServerId;
use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::ctx::{ExchangeKind, RequestCtx, ResponseMode, Routed};
use crate::pipeline::scope::{ledger_keys, legacy_post, remember_pending, scope};
use crate::sessions::sticky::legacy_key;

mod body;
mod endpoint;
mod messages;
mod refusal;
#[cfg(test)]
mod tests;

pub use body::{on_body, still_allowed};

/// Writes what the replies judged so far added to their flows into the
/// shared store, before they leave: a client's next call through another
/// replica reads them. A write that fails withholds the reply (fail
/// closed). Without a shared store the filter's own table holds them; one
/// it could not hold (full, counting on a store the bundle names but that
/// could not be built) withholds the reply too.
pub async fn share_flows(gw: &Gateway, ctx: &mut RequestCtx) -> pingora::Result<()> {
    crate::pipeline::guards::budget::charge_units(gw, ctx).await;
    claim_tasks(gw, ctx).await?;
    if ctx.reply.flow_outs.is_empty() {
        return Ok(());
    }
    let outs = std::mem::take(&mut ctx.reply.flow_outs);
    let Some(store) = ctx.rt.quota_store.clone() else {
        if outs.iter().any(|o| !o.held) {
            tracing::warn!("flow state neither held nor shared; the reply is withheld");
            return ReplyRefusal::FlowUnrecorded.raise(ctx.server_name(), "no flow store");
        }
        return Ok(());
    };
    for o in &outs {
        if let Err(e) = store.flow_raise(&o.key, &o.source).await {
            tracing::warn!(error = %e, "flow state not shared; the reply is withheld");
            return ReplyRefusal::FlowUnrecorded.raise(ctx.server_name(), e);
        }
    }
    Ok(())
}
/// Claims, in the shared store, the tasks the replies judged so far hand
/// out as new, for the holders they were sealed for: a task the server
/// handed another holder first, through any replica, withholds the reply
/// (as the replica that saw it first withholds it); a store that does not
/// answer, or that the bundle names but this process could not build,
/// withholds it too. Without a store in the bundle, this replica's own
/// memory of its tasks is all there is (`guards::task_binding`).
async fn claim_tasks(gw: &Gateway, ctx: &mut RequestCtx) -> pingora::Result<()> {
    use warden_filters::chain::notes::ClaimKind;
    if ctx.reply.task_claims.is_empty() {
        return Ok(());
    }
    let claims = std::mem::take(&mut ctx.reply.task_claims);
    if ctx.rt.snap.config.redis.is_none() {
        return Ok(());
    }
    let Some(store) = ctx.rt.quota_store.clone() else {
        return ReplyRefusal::TaskUnrecorded.raise(ctx.server_name(), "no shared store");
    };
    // Burns first: a reply that burns an id hands out nothing under it.
    let mut claims = claims;
    claims.sort_by_key(|c| c.kind != ClaimKind::Burn);
    for c in &claims {
        match store.task_claim(&c.task, &c.holder, c.kind).await {
            Ok(_) if c.kind == ClaimKind::Burn => {}
            // A burn the store did not take: this reply is refused anyway
            // (it burnt the id), and the rest of its claims are still made.
            Err(e) if c.kind == ClaimKind::Burn => {
                tracing::error!(error = %e, "a reused task id was not burnt in the fleet's store");
            }
            Ok(true) => {}
            Ok(false) => {
                gw.shared.task_owners.burn(c);
                tracing::warn!("a server handed out another holder's task; the reply is withheld");
                return ReplyRefusal::TaskNotOwned.raise(ctx.server_name(), "claimed by another");
            }
            Err(e) => {
                tracing::warn!(error = %e, "task not claimed; the reply is withheld");
                return ReplyRefusal::TaskUnrecorded.raise(ctx.server_name(), e);
            }
        }
    }
    Ok(())
}

use body::*;
use endpoint::*;
use messages::*;
pub use refusal::ReplyRefusal;
use refusal::*;

fn content_type(resp: &ResponseHeader) -> &[u8] {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes())
}

fn media_is(ct: &[u8], want: &str) -> bool {
    let main = ct.split(|b| *b == b';').next().unwrap_or(b"");
    main.trim_ascii().eq_ignore_ascii_case(want.as_bytes())
}

/// The body will be rewritten, so its length is unknown up front: the
/// upstream's framing goes. The driver frames what leaves (`forwarding`):
/// the exact length of a body judged whole, chunks for a stream on
/// HTTP/1.1, nothing on HTTP/2 (which frames bodies itself).
fn unframe(resp: &mut ResponseHeader) {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::TRANSFER_ENCODING);
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
pub fn on_header(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
    resp: &mut ResponseHeader,
) -> Result<()> {
    let status = resp.status.as_u16();
    ctx.upstream.status = Some(status);
    let rt = &routed.rt;
    let server_name = &routed.server().name;
    // A switch to another protocol would make the connection a tunnel no
    // guard reads. The gateway never asks for one (`Upgrade` is not
    // forwarded), and the forwarder stops at a 101 as the final reply
    // (`read_head`), so it is refused here, whatever follows it.
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
    // The credential the gateway sent for this call, in a header the
    // client would see (a session id, `Vary`): withheld, as a body that
    // holds it is.
    if headers_hold_credential(resp, sent_secrets(&ctx.upstream)) {
        return refuse_reply(server_name, ReplyRefusal::CredentialInReply);
    }
    // Session stickiness: the replica that created a session keeps serving it.
    let mut sealed_header = None;
    let sid_name = &crate::pipeline::headers::names::MCP_SESSION_ID;
    let sids = resp.headers.get_all(sid_name).iter().count();
    if sids > 1 {
        return refuse_reply(server_name, ReplyRefusal::DuplicateSessionHeader);
    }
    if let (Some(sid), Some(addr)) = (resp.headers.get(sid_name), ctx.upstream.chosen) {
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
        // A successful `initialize` that named no session: the server made
        // this one now, for this principal.
        let fresh = ctx.session_id.is_none()
            && ctx.request_method.as_deref() == Some("initialize")
            && (200..300).contains(&status);
        // Only the replica that relays a session's opening binds it; with
        // a sealer every other one reads the binding from the token (a
        // later reply naming an id is no proof whose it is: a server that
        // hands one id out twice would have the old holder bound here).
        if fresh || rt.sealer.is_none() {
            gw.sessions
                .remember(server_name, sid, addr, &owner, ctx.url_elicitation, fresh);
        } else {
            gw.sessions.seen(server_name, sid, addr);
        }
        // Stateless replicas: the client gets the sealed form.
        if let Some(sealer) = rt.sealer.as_ref() {
            sealed_header = sealer.seal(&crate::sessions::seal::SealedSession {
                session: sid.to_owned(),
                upstream: addr.to_string(),
                owner,
                server: server_name.clone(),
                // A later reply's token keeps the session's opening time:
                // a reply never renews `sessions.max_age`.
                issued: match (fresh, ctx.session_sealed, ctx.session_issued) {
                    (false, true, 0) => gw.sessions.started,
                    (false, true, t) => t,
                    _ => crate::sessions::seal::unix_now(),
                },
            });
        }
        ctx.session_id.get_or_insert_with(|| sid.to_owned());
    }
    if let Some(token) = sealed_header {
        resp.insert_header("mcp-session-id", token)?;
    }
    if ctx.kind == ExchangeKind::Delete && (200..300).contains(&status) {
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
        resp.insert_header(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(want),
        )?;
    }
    let empty = status == 204 || status == 304 || content_length_zero(resp);
    // Warden asks for `identity`; a server that compresses anyway would hand
    // the filters bytes they cannot read, so a judged body must be plain.
    // Every coding of every `Content-Encoding` counts: a client decodes
    // the whole list (`identity, gzip` is gzip).
    let encoded = resp
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
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
    if ctx.kind == ExchangeKind::Post
        && (status == 202 || sse)
        && !ctx.reply.pending.is_empty()
        && !legacy_post(ctx)
    {
        remember_pending(gw, ctx);
    }
    let answers_pending = ctx.plan.as_ref().is_some_and(|p| !p.answers.is_empty());
    ctx.reply.mode = if sse {
        // Never buffer or compress a stream; lengths do not apply.
        unframe(resp);
        resp.insert_header("x-accel-buffering", http::HeaderValue::from_static("no"))?;
        ResponseMode::Sse {
            decoder: SseDecoder::new(rt.snap.config.limits.max_sse_event),
            injected: false,
        }
    } else if status == 202 && answers_pending {
        // The upstream accepted what was forwarded; the gateway still owes answers.
        resp.set_status(200)?;
        resp.insert_header(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        )?;
        unframe(resp);
        ResponseMode::AnswersOnly
    } else if ctx.kind == ExchangeKind::Delete && (200..300).contains(&status) {
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
        && !(ctx.kind == ExchangeKind::Get && (200..300).contains(&status))
    {
        unframe(resp);
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
        resp.insert_header(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        )?;
        unframe(resp);
        ctx.upstream.status = Some(502);
        ResponseMode::Withheld {
            received: false,
            always: true,
            status,
        }
    } else {
        // A body of a type MCP does not define (or any body on a 202): not
        // passed on. The status stays, so clients still see what happened.
        if status != 202 {
            resp.insert_header(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            )?;
        }
        unframe(resp);
        ResponseMode::Withheld {
            received: false,
            always: false,
            status,
        }
    };
    Ok(())
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
                // The gateway's own, below.
                "cache-control" => false,
                "vary" => token_list(v) && dlp_clean(snap, v),
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
    // Every reply was judged for one principal (its lists filtered, its
    // handles sealed for them): no cache between the gateway and the
    // client may keep it for another, whatever the server says.
    resp.insert_header(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    )?;
    Ok(())
}

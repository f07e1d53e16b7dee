//! The reply's body: JSON judged whole (bounded), SSE judged event by event
//! as events complete; requests the reply leaves unanswered get errors.

use std::sync::Arc;

use super::*;

/// Whether the bundle now in force still lets this reply through. One
/// applied after the exchange began (it is judged under `ctx.rt`) may pause
/// it (the kill switch: all, its tenant, principal, server or the call's
/// tool) or withdraw its server (removed from the bundle, retired, no
/// longer released to this principal): then nothing more of it reaches the
/// client, however long the stream would run. Checked before every chunk;
/// the checks run once per bundle applied.
pub fn still_allowed(gw: &Gateway, ctx: &mut RequestCtx) -> Result<()> {
    let now = gw.runtime();
    if Arc::ptr_eq(&now, &ctx.rt)
        || ctx
            .reply
            .allowed_under
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, &now))
    {
        return Ok(());
    }
    let Some(name) = ctx.server().map(|s| s.name.clone()) else {
        return Ok(());
    };
    let Some(server) = now.snap.config.servers.iter().find(|s| s.name == name) else {
        return ReplyRefusal::Withdrawn.raise(&name, "the server is no longer in the bundle");
    };
    // The tools this POST's forwarded requests name: its calls, and the
    // calls whose tasks it asks about (the record names the creating tool,
    // as the kill switch reads it). A GET stream or a DELETE names none.
    let calls: Vec<&str> = ctx
        .plan
        .as_ref()
        .map(|p| {
            p.records
                .iter()
                .filter(|r| {
                    matches!(
                        r.outcome,
                        warden_filters::Outcome::Forwarded
                            | warden_filters::Outcome::Mutated { .. }
                    )
                })
                .filter(|r| {
                    r.method.as_deref().is_some_and(|m| {
                        m == "tools/call" || warden_filters::guards::task_binding::names_task(m)
                    })
                })
                .filter_map(|r| r.target.as_deref())
                .collect()
        })
        .unwrap_or_default();
    let k = &now.snap.config.kill_switch;
    let (tenant, id, via) = (&ctx.principal.tenant, &ctx.principal.id, ctx.via.as_deref());
    let paused = std::iter::once(None)
        .chain(calls.into_iter().map(Some))
        .find_map(|tool| k.pauses(tenant, id, &name, via, tool));
    if let Some(scope) = paused {
        return ReplyRefusal::Paused.raise(&name, format!("paused by the kill switch ({scope})"));
    }
    if let Some(reg) = &now.snap.registry {
        if let Err(r) = reg.admit(&ctx.exchange(server, false, None)) {
            return ReplyRefusal::Withdrawn.raise(&name, r.reason);
        }
    }
    ctx.reply.allowed_under = Some(now);
    Ok(())
}

/// The bundle that judges what the server sends now, and the server in
/// it: the bundle in force, once one was applied after the exchange began
/// (a GET or `subscriptions/listen` stream outlives the bundle it began
/// under; `still_allowed`, asked before every chunk, has found the server
/// still in it), else the exchange's own.
pub(super) fn judging(
    gw: &Gateway,
    routed: &Routed,
) -> (Arc<crate::hub::runtime::Runtime>, ServerId) {
    let (rt, server) = (routed.rt.clone(), routed.server_id);
    let now = gw.runtime();
    if Arc::ptr_eq(&now, &rt) {
        return (rt, server);
    }
    // The same server, of the same kind: a virtual server's own leg is
    // judged by no guard (its members' legs are), so a server that became
    // virtual (or stopped being) keeps the chain the exchange began with.
    let was = rt.server(server);
    match now
        .snap
        .config
        .servers
        .iter()
        .position(|s| s.name == was.name && s.composed.is_some() == was.composed.is_some())
    {
        Some(i) => (now, ServerId(i)),
        None => (rt, server),
    }
}

/// Processes one chunk of the upstream body.
pub fn on_body(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
    body: &mut Option<Bytes>,
    eos: bool,
) -> Result<()> {
    still_allowed(gw, ctx)?;
    let chunk = body.take().unwrap_or_default();
    ctx.reply.bytes += chunk.len();
    let mode = std::mem::replace(&mut ctx.reply.mode, ResponseMode::Passthrough);
    let (mode, out) = match mode {
        // A reply with nothing to judge (204, 304, a zero length) carries
        // nothing: bytes that arrive anyway (a server breaking its own
        // framing) are never passed on unjudged.
        ResponseMode::Pending | ResponseMode::Passthrough => {
            if !chunk.is_empty() {
                metrics()
                    .upstream_errors
                    .with_label_values(&[ctx.server_name(), "unexpected_body"])
                    .inc();
            }
            (ResponseMode::Passthrough, None)
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
            let out = if eos && (received || always) && ctx.upstream.status != Some(202) {
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
            let limit = ctx.rt.snap.config.limits.max_response_body;
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
                let out = judge_json(gw, ctx, routed, whole);
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
                match judge_event(gw, ctx, routed, ev) {
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
                    ctx.reply.unjudgeable += 1;
                }
                // Requests whose replies were withheld still get an answer.
                for err in unanswered_errors(ctx) {
                    out.extend_from_slice(&SseEvent::encode_message(&err.to_string()));
                }
            }
            (ResponseMode::Sse { decoder, injected }, Some(out.freeze()))
        }
    };
    ctx.reply.mode = mode;
    *body = out.filter(|b| !b.is_empty() || eos);
    Ok(())
}

/// Errors for the requests of this POST that got no readable reply, once
/// something was withheld (a server that answered nothing readable must not
/// leave the client waiting).
pub(super) fn unanswered_errors(ctx: &mut RequestCtx) -> Vec<serde_json::Value> {
    if ctx.reply.unjudgeable == 0 {
        return Vec::new();
    }
    answer_unanswered(ctx)
}

/// Errors for every request of this POST still unanswered, now answered.
fn answer_unanswered(ctx: &mut RequestCtx) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in ctx.reply.pending.iter_mut().filter(|p| !p.answered) {
        p.answered = true;
        out.push(unreadable_error().to_response(Some(&p.id)));
    }
    out
}

pub(super) fn unreadable_error() -> warden_filters::JsonRpcError {
    warden_filters::JsonRpcError::new(
        warden_filters::codes::UPSTREAM_PROTOCOL,
        "MCP server sent a reply the gateway cannot read; it was withheld",
    )
}

/// The server no longer knows the session it was sent (it restarted, or
/// ended it): said as MCP clients understand a 404, so that they
/// initialise again, whatever the server's own 404 body says.
pub(super) fn session_ended(ctx: &RequestCtx) -> warden_filters::JsonRpcError {
    warden_filters::JsonRpcError::new(
        warden_filters::codes::FORBIDDEN,
        format!(
            "Session not found: MCP server `{}` ended this session; start a new session with initialize",
            ctx.server_name()
        ),
    )
}

pub(super) fn judge_json(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
    body: Bytes,
) -> Bytes {
    let (rt, server) = judging(gw, routed);
    if ctx.upstream.status == Some(404) && ctx.session_id.is_some() {
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
                .with_label_values(&[&rt.server(server).name, "bad_json"])
                .inc();
            ctx.reply.unjudgeable += 1;
            ctx.reply.records.push(unjudgeable_record(None));
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
    let items: smallvec::SmallVec<[Result<&Envelope, &ElementError>; 1]> = match &parsed {
        Parsed::Single(e) => smallvec::smallvec![Ok(e)],
        Parsed::Batch(items) => items.iter().map(Result::as_ref).collect(),
    };
    // Unchanged messages stay slices of the reply.
    let mut out: smallvec::SmallVec<[std::borrow::Cow<'_, [u8]>; 1]> =
        smallvec::SmallVec::with_capacity(items.len());
    let mut changed = false;
    for item in items {
        match item {
            Ok(env) => {
                let bytes = &buf[env.span.clone()];
                match judge_message(gw, ctx, &rt, server, env, bytes, None) {
                    ServerMessageVerdict::Unchanged => out.push(std::borrow::Cow::Borrowed(bytes)),
                    ServerMessageVerdict::Replaced(b) => {
                        changed = true;
                        out.push(std::borrow::Cow::Owned(b));
                    }
                    ServerMessageVerdict::Dropped => changed = true,
                }
            }
            Err(e) => {
                changed = true;
                match unjudgeable(gw, ctx, e.id.as_ref()) {
                    Some(b) => out.push(std::borrow::Cow::Owned(b)),
                    None => ctx.reply.records.push(MessageRecord::invalid(e)),
                }
            }
        }
    }
    // A JSON body is the server's whole reply: a request it leaves
    // unanswered is answered here, not left waiting for a reply on the GET
    // stream (where nothing the gateway remembers would match it). One
    // request gets one object: what else the body held is not its reply.
    let mut extra: Vec<serde_json::Value> = answer_unanswered(ctx);
    if single && !extra.is_empty() {
        return Bytes::from(serde_json::to_vec(&extra[0]).unwrap_or_default());
    }
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
    Bytes::from(warden_filters::chain::plan::json_array(&out))
}

pub(super) fn single_request_id(ctx: &RequestCtx) -> Option<warden_filters::Id> {
    let p = ctx.plan.as_ref()?;
    if p.batch {
        return None;
    }
    p.records.first().and_then(|r| r.id.clone())
}

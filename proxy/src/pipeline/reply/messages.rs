//! One server message judged: matched to the request it answers (or
//! dropped when it answers none), passed through the chain, refused or
//! rewritten; an SSE event's messages in turn.

use super::*;

/// What the chain made of one server→client message.
pub(super) enum ServerMessageVerdict {
    Unchanged,
    Replaced(Vec<u8>),
    /// A refused server→client request or notification: not passed on.
    Dropped,
}

/// The audit record of a server message that could not be judged.
pub(super) fn unjudgeable_record(id: Option<&warden_filters::Id>) -> MessageRecord {
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
        notice: None,
        completing: None,
        cost: None,
        budget: None,
        flow: None,
        anomaly: None,
    }
}

/// A server message the gateway cannot read: counted and audited; if it
/// carries the id of a request still waiting here, that request gets an
/// error (the bytes to send); otherwise nothing is passed on.
pub(super) fn unjudgeable(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    id: Option<&warden_filters::Id>,
) -> Option<Vec<u8>> {
    ctx.reply.unjudgeable += 1;
    metrics()
        .upstream_errors
        .with_label_values(&[ctx.server_name(), "unjudgeable_message"])
        .inc();
    ctx.reply.records.push(unjudgeable_record(id));
    let id = id?;
    let waiting = match ctx.kind {
        ExchangeKind::Post => match ctx
            .reply
            .pending
            .iter_mut()
            .find(|p| !p.answered && p.id == *id)
        {
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
pub(super) fn match_reply(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    id: &warden_filters::Id,
) -> Option<std::sync::Arc<crate::sessions::ledger::Asked>> {
    match ctx.kind {
        ExchangeKind::Post => {
            let p = ctx
                .reply
                .pending
                .iter_mut()
                .find(|p| p.id == *id && !p.answered)?;
            p.answered = true;
            Some(p.asked.clone())
        }
        _ => {
            let (owner, session) = ledger_keys(ctx);
            gw.ledger.answered(&scope(ctx, &owner, &session), id)
        }
    }
}

/// The strictest reading of a reply on a stream whose request this replica
/// never saw (another replica forwarded it): judged as the list its result
/// holds, so filtering and pinning still apply. `Err`: more than one list
/// shape, which no single request could have asked for.
pub(super) fn inferred_method(bytes: &[u8]) -> Result<Option<String>, ()> {
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
        // A task itself (a `tasks/get`, `tasks/cancel` or `tasks/update`
        // reply): its id is sealed only as the answer to the request
        // whose token named it.
        task_id: Option<serde::de::IgnoredAny>,
        tasks: Option<serde::de::IgnoredAny>,
        request_state: Option<serde::de::IgnoredAny>,
        // Any JSON value: a `resultType` that is not a string must not make
        // the shape unreadable, and so unjudged.
        result_type: Option<serde_json::Value>,
    }
    // A reply whose result cannot be read as an object is never passed on
    // unjudged: it is dropped, as one of two shapes is.
    let s = match serde_json::from_slice::<Msg>(bytes) {
        Ok(Msg { result: Some(s) }) => s,
        Ok(Msg { result: None }) => return Ok(None),
        Err(_) => return Err(()),
    };
    if s.task.is_some()
        || s.task_id.is_some()
        || s.tasks.is_some()
        || s.request_state.is_some()
        || s.input_requests.is_some()
        || s.result_type.as_ref().is_some_and(|t| t != "complete")
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
pub(super) fn drop_unmatched(ctx: &mut RequestCtx, env: &Envelope) -> ServerMessageVerdict {
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
    ctx.reply.records.push(rec);
    // On a POST, a reply answering none of its requests is one they did
    // not get: each still gets an answer (an error), not silence.
    if ctx.kind == ExchangeKind::Post {
        ctx.reply.unjudgeable += 1;
    }
    ServerMessageVerdict::Dropped
}

/// The pause, under the bundle now in force, of the call a reply answers
/// (a `tools/call`, or a request about the task one created, which names
/// its tool): `None` when it is not paused.
pub(super) fn paused_call(
    gw: &Gateway,
    ctx: &RequestCtx,
    asked: &crate::sessions::ledger::Asked,
) -> Option<warden_filters::Denial> {
    let m = asked.method.as_str();
    if m != "tools/call" && !warden_filters::guards::task_binding::names_task(m) {
        return None;
    }
    let tool = asked.target.as_deref()?;
    let now = gw.runtime();
    let scope = now.snap.config.kill_switch.pauses(
        &ctx.principal.tenant,
        &ctx.principal.id,
        ctx.server_name(),
        ctx.via.as_deref(),
        Some(tool),
    )?;
    Some(warden_filters::Denial::error(
        warden_filters::guards::kill_switch::paused_error(scope),
        format!("kill_switch_{scope}"),
    ))
}

/// For a reply matched to no request: the pause, under the bundle now in
/// force, of its server (or its principal, tenant, everything) or of any
/// tool its server may run, which the reply may be the result of.
pub(super) fn paused_unmatched(gw: &Gateway, ctx: &RequestCtx) -> Option<warden_filters::Denial> {
    let now = gw.runtime();
    let k = &now.snap.config.kill_switch;
    let server = ctx.server_name();
    let scope = k
        .pauses(
            &ctx.principal.tenant,
            &ctx.principal.id,
            server,
            ctx.via.as_deref(),
            None,
        )
        .or_else(|| {
            (!k.tools.is_empty() || k.server_tools.iter().any(|(s, _)| s == server))
                .then_some("tool")
        })?;
    Some(warden_filters::Denial::error(
        warden_filters::guards::kill_switch::paused_error(scope),
        format!("kill_switch_{scope}"),
    ))
}

/// What a message on an SSE stream is read after, and what it shows.
pub(super) struct StreamText<'a> {
    /// The tail of the text the stream showed its client so far (`None`
    /// before it showed any).
    pub(super) before: Option<&'a str>,
    /// The text this message shows, read from its bytes.
    pub(super) shown: &'a warden_filters::engines::dlp::Shown,
}

/// Runs the chain on one server→client message and records the outcome.
/// Responses passed unchanged are audited with the request they answer;
/// server→client requests and anything a filter touched get records of their own.
/// A response that answers no request the gateway knows of is not passed on.
/// `stream`: on an SSE stream, the tail of the text the stream showed its
/// client so far and the text this message shows (see
/// `Message::stream_before`).
pub(super) fn judge_message(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    rt: &crate::hub::runtime::Runtime,
    server: ServerId,
    env: &Envelope,
    bytes: &[u8],
    stream: Option<StreamText<'_>>,
) -> ServerMessageVerdict {
    // A reply matched to no request of this replica: its id is the
    // server's text, so a refusal drops it rather than answer with that id.
    let mut inferred = false;
    let asked = match (&env.kind, &env.id) {
        (Kind::Response, Some(id)) => match match_reply(gw, ctx, id) {
            Some(a) => Some(a),
            // An id a client reads as another (`"7"`, `7.0` for 7) answers
            // to it a request the gateway did not judge the reply under.
            None if id.read_as_number() => return drop_unmatched(ctx, env),
            None if ctx.kind != ExchangeKind::Post => match inferred_method(bytes) {
                Ok(m) => {
                    inferred = true;
                    metrics()
                        .upstream_errors
                        .with_label_values(&[ctx.server_name(), "unmatched_response"])
                        .inc();
                    Some(std::sync::Arc::new(crate::sessions::ledger::Asked {
                        method: m.unwrap_or_default(),
                        target: None,
                        args_digest: None,
                        task: None,
                    }))
                }
                Err(()) => return drop_unmatched(ctx, env),
            },
            None => return drop_unmatched(ctx, env),
        },
        _ => None,
    };
    let mut notes = warden_filters::Notes::default();
    // Built once: the chain and the record of a reply logged in full read it.
    let mut msg = warden_filters::Message::from_server(
        env,
        bytes,
        // An unmatched reply whose shape names no list has no method:
        // it reaches every response filter.
        asked
            .as_ref()
            .map(|a| a.method.as_str())
            .filter(|m| !m.is_empty()),
        asked.as_ref().and_then(|a| a.target()),
    );
    msg.request_completion = asked.as_ref().and_then(|a| a.completion());
    msg.request_args_digest = asked.as_ref().and_then(|a| a.args_digest.as_deref());
    // An inferred method is the gateway's guess: the id is the server's.
    msg.id_matched = asked.is_some() && !inferred;
    msg.ledger_matched = msg.id_matched && ctx.kind != ExchangeKind::Post;
    if env.kind != Kind::Response && ctx.kind != ExchangeKind::Post {
        msg.stream_call = warden_filters::StreamCall::NoCall;
    } else if env.kind != Kind::Response {
        let mut calls = ctx
            .reply
            .pending
            .iter()
            .filter_map(|p| Some((p.asked.method.as_str(), p.asked.target()?)));
        msg.stream_call = match (calls.next(), calls.next()) {
            (Some((m, t)), None) => warden_filters::StreamCall::One(m, t),
            (Some(_), Some(_)) => warden_filters::StreamCall::Several,
            // A POST whose requests name nothing to label by (a ping, a
            // completion, a task of no known tool).
            (None, _) => warden_filters::StreamCall::NoCall,
        };
    }
    msg.request_task = asked.as_ref().and_then(|a| a.task.as_deref());
    if let Some(st) = stream {
        msg.stream_before = st.before;
        msg.stream_shown = Some(st.shown);
    }
    // A call paused since it was forwarded gets the pause, on whichever
    // stream its reply comes: the call's own stream is cut
    // (`still_allowed`), a GET stream (live, replayed, legacy) names no
    // call, so each reply is asked here. A reply matched to no request
    // (an id in a form clients take for another: `"7"` for 7) may be a
    // paused tool's result: withheld while any tool of its server is.
    // One the ledger matched (a GET stream) may answer an earlier call of
    // its id than the one matched (see `Message::ledger_matched`): withheld
    // while any tool of its server is paused, as one matched to nothing.
    let paused = match asked.as_deref() {
        Some(_) if inferred || msg.ledger_matched => paused_unmatched(gw, ctx),
        Some(a) => paused_call(gw, ctx, a),
        None => None,
    };
    // The credential the gateway sent for this call (from the vault, or
    // fetched per call) never reaches the client, however the upstream
    // writes it back.
    let echoed = sent_secrets(&ctx.upstream).any(|v| holds_credential(bytes, msg.value(), v));
    let verdict = match paused {
        Some(denial) => Verdict::Reject {
            filter: "kill_switch",
            denial,
        },
        None if echoed => Verdict::Reject {
            filter: "credential",
            denial: warden_filters::Denial::error(
                warden_filters::JsonRpcError::new(
                    warden_filters::codes::UPSTREAM_UNAVAILABLE,
                    "The server's reply held the credential the gateway sent it on your behalf: withheld",
                ),
                "credential_in_reply",
            ),
        },
        None => {
            // Judged when it arrives: a stream may have begun hours before
            // (time-of-day rules, when a flow was last raised).
            let ex = warden_filters::Exchange {
                now: std::time::SystemTime::now(),
                ..ctx.exchange(rt.server(server), false, None)
            };
            rt.snap
                .chain_for(rt.server(server))
                .run(&msg, &ex, &mut notes)
        }
    };
    let noted = !notes.findings.is_empty() || notes.task.is_some() || notes.flow_out.is_some();
    let flow_out = notes.flow_out.clone();
    let (judged, outcome) = match verdict {
        Verdict::Forward => (ServerMessageVerdict::Unchanged, Outcome::Forwarded),
        Verdict::ForwardMutated(b, _) => (
            ServerMessageVerdict::Replaced(b),
            Outcome::Mutated { filter: "chain" },
        ),
        Verdict::Reject { filter, denial } => {
            let judged = if env.kind == Kind::Response && !inferred {
                ServerMessageVerdict::Replaced(
                    serde_json::to_vec(&denial.to_response(env.id.as_ref())).unwrap_or_default(),
                )
            } else {
                ServerMessageVerdict::Dropped
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
    // What a reply adds to its flow is shared before it (or what comes
    // after it, when it is dropped) leaves: a message refused with a DLP
    // finding raises the flow too, the client may hold part of that data
    // (`FlowFilter::refused_reply`). So are the tasks a reply the client
    // gets hands out as new (claimed fleet-wide).
    if let Some(o) = flow_out {
        ctx.reply.flow_outs.push(o);
    }
    if matches!(
        judged,
        ServerMessageVerdict::Unchanged | ServerMessageVerdict::Replaced(_)
    ) && matches!(outcome, Outcome::Forwarded | Outcome::Mutated { .. })
    {
        ctx.reply.task_claims.append(&mut notes.task_claims);
    }
    // A reused task id is burnt fleet-wide whatever became of the reply.
    ctx.reply.task_claims.append(&mut notes.task_burns);
    // A server→client request the client may now answer (and only then).
    if let (Kind::Request, Some(id), false) = (
        env.kind,
        env.id.as_ref(),
        matches!(judged, ServerMessageVerdict::Dropped),
    ) {
        let (owner, session) = ledger_keys(ctx);
        gw.ledger.owe(&scope(ctx, &owner, &session), id);
    }
    // A reply to a call of a tier logged in full: its result, as the client
    // gets it, DLP-redacted.
    let logged_result = match (&env.kind, &asked) {
        (Kind::Response, Some(a)) if a.method == "tools/call" => a
            .target
            .as_deref()
            .filter(|t| rt.logs_io(server, t))
            .and_then(|_| {
                // Passed unchanged: the value the chain read; replaced: what
                // the client gets instead.
                let replaced;
                let v = match &judged {
                    ServerMessageVerdict::Replaced(b) => {
                        replaced = serde_json::from_slice::<serde_json::Value>(b).ok()?;
                        &replaced
                    }
                    ServerMessageVerdict::Dropped => return None,
                    ServerMessageVerdict::Unchanged => msg.value()?,
                };
                Some(rt.snap.redact_json(v.get("result")?).to_string())
            }),
        _ => None,
    };
    // What a tool's reply cost (the catalog's price; the call was made
    // whatever the gateway does with its reply).
    let cost = match (&env.kind, &asked) {
        (Kind::Response, Some(a)) if a.method == "tools/call" => a.target.as_deref().map(|t| {
            let price = rt
                .snap
                .config
                .catalog
                .get(&rt.server(server).name)
                .and_then(|c| c.price(t));
            match price {
                Some(p) => {
                    let (micros, units) = p.cost(msg.value().and_then(|v| v.get("result")));
                    warden_filters::Cost {
                        micros,
                        currency: Some(p.currency.clone()),
                        units,
                    }
                }
                None => warden_filters::Cost {
                    micros: 0,
                    currency: None,
                    units: None,
                },
            }
        }),
        _ => None,
    };
    if let Some(c) = &cost {
        crate::observability::metrics::spent(&ctx.principal.tenant, ctx.server_name(), c);
        // Money budgets: the call's reservation is answered, and the price
        // per unit (what it cost beyond its price per call) is owed.
        if !rt.snap.config.budgets.is_empty() && c.currency.is_some() {
            if let Some(r) = ctx
                .budget
                .reservations
                .iter_mut()
                .find(|r| Some(&r.id) == env.id.as_ref())
            {
                r.answered = true;
            }
            let tool = asked
                .as_ref()
                .and_then(|a| a.target.clone())
                .unwrap_or_default();
            let per_call = warden_filters::guards::budget::price_per_call(
                &rt.snap.config.catalog,
                &rt.server(server).name,
                &tool,
            )
            .unwrap_or(0);
            let micros = c.micros.saturating_sub(per_call);
            if micros > 0 && rt.server(server).composed.is_none() {
                ctx.budget.units.push(crate::pipeline::ctx::UnitCharge {
                    id: env.id.clone(),
                    tool,
                    micros,
                });
            }
        }
    }
    // An unpriced call says so in `warden_unpriced_calls_total` only: a
    // record of its own for every reply would double the trail.
    let mut cost = cost.filter(|c| c.currency.is_some());
    let remarkable = env.kind == Kind::Request
        || outcome != Outcome::Forwarded
        || noted
        || logged_result.is_some();
    // A cost alone goes on the call's own record when the call is of this
    // exchange (a POST answered on its own stream): one record a call.
    if !remarkable && ctx.kind == ExchangeKind::Post {
        if let (Some(c), Some(id)) = (&cost, env.id.as_ref()) {
            let call = ctx.plan.as_mut().and_then(|p| {
                p.records.iter_mut().find(|r| {
                    r.kind == Some(Kind::Request)
                        && r.method.as_deref() == Some("tools/call")
                        && r.id.as_ref() == Some(id)
                })
            });
            if let Some(call) = call {
                call.cost = Some(c.clone());
                cost = None;
            }
        }
    }
    if remarkable || cost.is_some() {
        let mut rec = MessageRecord::of(env, outcome);
        rec.result = logged_result;
        rec.cost = cost;
        if env.kind == Kind::Response {
            if let Some(a) = asked {
                rec.method = Some(a.method.clone());
                rec.target = a.target().map(str::to_owned);
            }
        }
        rec.noted(notes);
        ctx.reply.records.push(rec);
    }
    judged
}

/// Judges one SSE event. Events without data (comments, `id:`/`retry:`
/// lines, the empty priming event) pass cleaned of anything the server could
/// smuggle past the judge (see `SseEvent::cleaned`: comment text, odd fields,
/// an event id that is not a plain id or that DLP flags); a `message` event
/// is judged; anything else that carries data is withheld. `Err` cuts the
/// stream (a legacy endpoint the gateway refuses).
pub(super) fn judge_event(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
    ev: SseEvent,
) -> Result<Vec<u8>, ReplyRefusal> {
    let (rt, server) = judging(gw, routed);
    metrics()
        .sse_events
        .with_label_values(&[&rt.server(server).name])
        .inc();
    // The server's event id reaches the client sealed for this principal,
    // server and session (see `warden_filters::guards::cursor`); a `Last-Event-ID`
    // opens only for them.
    let session = ctx.session_id.clone();
    let owner =
        warden_filters::guards::cursor::owner_of(&ctx.principal, session.as_deref(), ctx.source_ip)
            .into_owned();
    let server_name = rt.server(server).name.clone();
    let sealer = rt.snap.handle_sealer.clone();
    let id_ok = move |id: &str| {
        if !warden_filters::protocol::sse::safe_id(id) {
            return None;
        }
        sealer.seal(
            warden_filters::guards::cursor::HandleKind::EventId,
            id,
            warden_filters::guards::cursor::Holder {
                owner: &owner,
                server: &server_name,
                session: session.as_deref(),
                scope: "",
            },
        )
    };
    // Only the first event of a legacy stream (a GET without a session:
    // what `/sse` is) names the endpoint, as clients read it. Later, or on
    // a Streamable HTTP stream, an `endpoint` event would bind a path of
    // the server's choosing to this principal for every other one.
    let first = ctx.kind == ExchangeKind::Get && !ctx.reply.endpoint_seen;
    if ev.data.is_some() || ev.event.is_some() {
        ctx.reply.endpoint_seen = true;
    }
    if ev.event_type() == "endpoint" {
        if first && ctx.session_id.is_none() {
            // The route it names is the exchange's own bundle's.
            return rewrite_endpoint(gw, ctx, routed, ev);
        }
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
    // What the client assembles from the stream is one text to DLP: this
    // message is read after the tail of what the stream showed so far, and
    // what it shows (as delivered: masked where a rule masked it) extends
    // that tail (whichever rule sets run: the org's, a tenant's). A
    // message refused or dropped shows nothing.
    // The text this message shows is read once: DLP reads it after the
    // tail, and, delivered unchanged, it extends the tail.
    let tail = std::mem::take(&mut ctx.reply.stream_tail);
    let sampling =
        env.kind == Kind::Request && env.method.as_deref() == Some("sampling/createMessage");
    let shown = warden_filters::engines::dlp::Shown::of(data.as_bytes(), sampling);
    let verdict = judge_message(
        gw,
        ctx,
        &rt,
        server,
        &env,
        data.as_bytes(),
        Some(StreamText {
            before: (!tail.is_empty()).then_some(tail.as_str()),
            shown: &shown,
        }),
    );
    ctx.reply.stream_tail = match &verdict {
        ServerMessageVerdict::Unchanged => {
            warden_filters::engines::dlp::carried(&tail, shown.text())
        }
        ServerMessageVerdict::Replaced(b) => warden_filters::engines::dlp::carried(
            &tail,
            warden_filters::engines::dlp::Shown::of(b, sampling).text(),
        ),
        ServerMessageVerdict::Dropped => tail,
    };
    Ok(match verdict {
        ServerMessageVerdict::Unchanged => ev.cleaned(None, &id_ok),
        ServerMessageVerdict::Replaced(b) => ev.cleaned(Some(&String::from_utf8_lossy(&b)), &id_ok),
        ServerMessageVerdict::Dropped => Vec::new(),
    })
}

/// The secrets the gateway sent upstream for this call (from the vault,
/// or fetched per call), without the prefix their header puts before
/// them: what no reply, body or header, may hand the client.
pub(super) fn sent_secrets(leg: &crate::pipeline::ctx::UpstreamLeg) -> impl Iterator<Item = &str> {
    leg.vault_auth
        .as_ref()
        .map(crate::pipeline::ctx::Injected::secret)
        .into_iter()
        .chain(leg.outbound_auth.as_ref().map(|(_, v)| v.as_str()))
}

/// The pieces of a credential looked for in a reply: every 16 bytes at
/// a stride of 8 (any stretch of 23 bytes or more of it holds one whole),
/// the credential itself when shorter. The scheme before a bearer token
/// (`Bearer `) is not part of what is looked for.
fn credential_pieces(value: &str) -> impl Iterator<Item = &[u8]> {
    let v = value.strip_prefix("Bearer ").unwrap_or(value).as_bytes();
    const PIECE: usize = 16;
    let n = if v.len() <= PIECE {
        1
    } else {
        (v.len() - PIECE) / 8 + 1
    };
    (0..n).map(move |i| {
        let at = i * 8;
        &v[at..(at + PIECE).min(v.len())]
    })
}

/// Whether a server message carries (a piece of) `credential`: in its
/// bytes as sent, or in any string of it once its escapes are read (a
/// `\/` or `\u0041` in the JSON text would hide it from the bytes alone).
pub(super) fn holds_credential(
    bytes: &[u8],
    value: Option<&serde_json::Value>,
    credential: &str,
) -> bool {
    if credential.len() < 8 {
        return false;
    }
    let in_bytes =
        |hay: &[u8]| credential_pieces(credential).any(|p| memchr::memmem::find(hay, p).is_some());
    if in_bytes(bytes) {
        return true;
    }
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| {
                out.push(k);
                strings(x, out)
            }),
            _ => {}
        }
    }
    let mut all = Vec::new();
    if let Some(v) = value {
        strings(v, &mut all);
    }
    all.iter().any(|s| in_bytes(s.as_bytes()))
}

/// Whether a header of `resp` (those kept for the client) holds one of
/// the `sent` secrets, or a piece of one (see [`holds_credential`]).
pub(super) fn headers_hold_credential<'a>(
    resp: &ResponseHeader,
    sent: impl Iterator<Item = &'a str>,
) -> bool {
    let sent: Vec<&str> = sent.collect();
    !sent.is_empty()
        && resp
            .headers
            .values()
            .any(|v| sent.iter().any(|s| holds_credential(v.as_bytes(), None, s)))
}

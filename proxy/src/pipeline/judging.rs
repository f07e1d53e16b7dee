//! Judging a request: its body read whole (bounded in size, time and rate,
//! without Pingora's retry buffer), parsed once, checked against its headers
//! (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`), global quota units reserved,
//! and every message put through the filter chain (`plan_request`). The
//! result is either the exact bytes to forward or the gateway's own answer.

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession as Session;
use warden_filters::protocol::mcp;
use warden_filters::{
    plan_request, Forward, Message, Parsed, Refusal, RequestMessages, RequestPlan,
};

use crate::hub::runtime::{Runtime, ServerId};
use crate::hub::state::Gateway;
use crate::identity::outbound::{check_reuse, TokenCache};
use crate::pipeline::body::read_whole;
use crate::pipeline::ctx::{RequestCtx, Routed};
use crate::pipeline::headers::{header_str, utf8_media};
use crate::pipeline::mirrored;

/// What judging decided.
pub enum Judged {
    /// Forward these bytes (exactly what the filters passed).
    Forward(Bytes),
    /// The gateway answers every message itself: the plan whose answers
    /// go back (`forwarding::answer_judged`).
    Answer(Box<RequestPlan>),
}

/// Reads, parses and judges the body of an admitted POST.
pub async fn judge(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
) -> Result<Judged, Refusal> {
    let (rt, server_id) = (&routed.rt, routed.server_id);
    let cfg = &rt.snap.config;
    let server = routed.server();
    let req = session.req_header();
    let ct = header_str(req, http::header::CONTENT_TYPE).unwrap_or("");
    // Two labels are two readings: a server may take either.
    let labels = req
        .headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .count();
    if labels > 1 || !utf8_media(ct.as_bytes(), "application/json") {
        return Err(Refusal::unsupported_media());
    }
    // A coded body (`deflate`, `br`, `gzip`, a list of them) is two
    // messages: the bytes judged here, and what a server that decodes
    // request bodies (aiohttp, Express's JSON parser) reads from them.
    if req
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("identity"))
        })
    {
        return Err(Refusal::unsupported_encoding());
    }

    let body = read_whole(
        session,
        cfg.limits.max_request_body,
        cfg.timeouts.request_body,
        cfg.limits.min_request_body_rate,
    )
    .await?;
    ctx.body_len_in = body.len();
    let parsed = match warden_filters::protocol::jsonrpc::parse_read(&body, rt.snap.parse_limits) {
        Ok(p) => p,
        Err(f) => {
            // The record names what was read before the fault.
            ctx.refused_message = crate::pipeline::answers::refused_message(&f.read);
            return Err(Refusal::parse(f.read.id, f.error));
        }
    };
    // A refusal before the chain's records exist names the message too.
    if let Parsed::Single(env) = &parsed {
        ctx.refused_message = env.method.clone().map(|m| {
            (
                m,
                warden_filters::protocol::mcp::judged_target(env).map(str::to_owned),
            )
        });
    }
    // Each message built once: the mirrored headers' check, `initialize`'s
    // capabilities, the chain and the audit record read the same one.
    let messages = RequestMessages::new(&body, &parsed);
    // Fail closed: no new call while the audit trail cannot record it.
    gw.audit.admit().map_err(|r| match &parsed {
        Parsed::Single(env) => r.with_id(env.id.clone()),
        Parsed::Batch(_) => r,
    })?;
    // The upstream identity (a token exchange, say), before anything is
    // spent on the call: a failure costs no quota and no approval.
    upstream_identity(&gw.tokens, session, ctx, routed)
        .await
        .map_err(|r| match &parsed {
            Parsed::Single(env) => r.with_id(env.id.clone()),
            Parsed::Batch(_) => r,
        })?;
    match &parsed {
        Parsed::Single(env) => {
            let msg = messages.single();
            mirrored::check_message(
                gw,
                &mut ctx.mirrored,
                ctx.protocol_version.as_deref(),
                env,
                msg,
                &server.name,
            )?;
            ctx.request_method = env.method.clone();
            ctx.request_target = mcp::judged_target(env).map(str::to_owned);
            if let (Some("initialize"), Some(msg)) = (env.method.as_deref(), msg) {
                ctx.url_elicitation = msg
                    .value()
                    .and_then(|v| v.pointer("/params/capabilities/elicitation/url"))
                    .is_some_and(serde_json::Value::is_object);
            }
        }
        Parsed::Batch(_) if ctx.mirrored.any() => {
            return Err(Refusal::header_mismatch(
                None,
                "Mcp-Method/Mcp-Name/Mcp-Param-* headers cannot accompany a batch".into(),
            ));
        }
        Parsed::Batch(_) if !mcp::batches_allowed(ctx.protocol_version.as_deref()) => {
            return Err(Refusal::invalid_request(
                "batch_not_allowed",
                "this protocol version has no JSON-RPC batches",
            ));
        }
        Parsed::Batch(_) => {}
    }
    mirrored::keep_undeclared(&mut ctx.mirrored, &rt.snap)?;
    settle_client_responses(gw, ctx, &parsed, &server.name)?;
    let keep_arguments = keeps_arguments(&rt, server_id, &parsed);
    fleet_tasks(gw, &rt, server, ctx, &parsed)
        .await
        .map_err(|r| match &parsed {
            Parsed::Single(env) => r.with_id(env.id.clone()),
            Parsed::Batch(_) => r,
        })?;
    let global = reserve_global(&rt, server, ctx, &parsed, keep_arguments).await;
    let flow_judged = flow_judged(&rt, &server.name, &messages);
    crate::pipeline::flow_state::load_flow(&rt, server, ctx, flow_judged).await;
    let mut plan = {
        // A cancellation must name a request this session sent (see
        // `guards::cancel`): the ledger holds the session's claims.
        let asked = |id: &warden_filters::Id| {
            let (owner, session) = crate::pipeline::scope::ledger_keys(ctx);
            let scope = crate::sessions::ledger::Scope {
                server: &server.name,
                owner: &owner,
                session: &session,
            };
            gw.ledger.holds(&scope, id)
        };
        let fctx = warden_filters::Exchange {
            asked: ctx
                .session_key()
                .is_some()
                .then_some(warden_filters::chain::filter::AskedIds(&asked)),
            ..ctx.exchange(
                server,
                keep_arguments,
                Some(&global).filter(|g| !g.is_empty()),
            )
        };
        plan_request(&messages, rt.snap.chain_for(server), &fctx)
    };
    if plan.held.is_some() {
        settle_held(gw, &rt, server, ctx, &mut plan).await;
    }
    if let Err(refusal) = remember_requests(gw, ctx, &plan) {
        ctx.plan = Some(plan);
        return Err(refusal);
    }
    // The forwarded bytes move into the context; the plan keeps answers and records.
    let rewritten = matches!(plan.forward, Forward::Rewritten(..));
    let mut rewrite = None;
    match std::mem::replace(&mut plan.forward, Forward::Nothing) {
        Forward::Original => ctx.body = Some(body.clone()),
        Forward::Rewritten(b, envelope) => {
            ctx.body = Some(Bytes::from(b));
            rewrite = envelope;
        }
        Forward::Nothing => {
            if let Some(missing) = plan.step_up.take() {
                // Step-up: an HTTP answer the client's OAuth layer acts on.
                let id = match &parsed {
                    Parsed::Single(e) => e.id.clone(),
                    Parsed::Batch(_) => None,
                };
                let identity = rt.snap.auth.as_ref().map(|a| a.identity());
                let refusal = crate::identity::auth::step_up(
                    identity,
                    session.req_header().uri.path(),
                    &missing,
                )
                .with_id(id);
                ctx.plan = Some(plan);
                return Err(refusal);
            }
            return Ok(Judged::Answer(Box::new(plan)));
        }
    }
    ctx.plan = Some(plan);
    // On a legacy (HTTP+SSE) session the replies come on the GET stream,
    // and may come before this POST's own 202 is back: their requests are
    // known there before the body is forwarded, or a reply would be judged
    // as one to no request (and one that cannot be judged is dropped).
    if crate::pipeline::scope::legacy_post(ctx) && !ctx.reply.pending.is_empty() {
        crate::pipeline::scope::remember_pending(gw, ctx);
    }
    let forwarded = ctx.body.clone().unwrap_or_default();
    // The message that goes upstream: the one read, or the chain's rewrite
    // of it (as the chain parsed it).
    let rewritten_msg = rewrite.as_deref().map(|e| Message::new(e, &forwarded));
    let sent = match &rewritten_msg {
        Some(msg) => Some(msg),
        None if !rewritten => messages.single(),
        None => None,
    };
    mirrored::outbound(&mut ctx.mirrored, sent, rewritten);
    Ok(Judged::Forward(forwarded))
}

/// The upstream identity this call needs, fetched before it is forwarded
/// (a caller token checked for reuse, an OAuth token exchanged or fetched):
/// for a POST here, once its body is judged well-formed (before a quota
/// or an approval is spent on it); for a GET or DELETE, which has no body
/// to judge, as soon as it is admitted (`service`).
pub async fn upstream_identity(
    tokens: &TokenCache,
    session: &Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
) -> Result<(), Refusal> {
    let server = routed.server();
    let req = session.req_header();
    check_reuse(&ctx.principal, req, &routed.rt.snap.config.servers, server)?;
    if server.oauth.is_none() && server.caller_token.is_none() {
        return Ok(());
    }
    ctx.upstream.outbound_auth = tokens.prepare(&ctx.principal, server, req).await?;
    Ok(())
}

/// The fleet's word on the tasks a request names, before anything of it
/// reaches the server: with a shared store, each task request
/// (`tasks/get`, `tasks/update`, `tasks/cancel`, `tasks/result`, and any
/// other carrying `params.taskId`) whose handle opens for this caller
/// renews its holder's claim there. A claim
/// another holder took, or a burnt id (see `ClaimKind::Burn`), burns the
/// task in this replica's memory, and the task filter then answers the
/// request as one about an unknown task — a `tasks/cancel` through a
/// replica that never saw the task included. A store that does not
/// answer refuses the request (503, `task_unrecorded`): the gateway cannot
/// tell whose task it is.
async fn fleet_tasks(
    gw: &Gateway,
    rt: &crate::hub::runtime::Runtime,
    server: &warden_config::model::Server,
    ctx: &RequestCtx,
    parsed: &Parsed,
) -> Result<(), Refusal> {
    use warden_filters::chain::notes::ClaimKind;
    use warden_filters::guards::task_binding::{holder, TaskSealer};
    if rt.snap.config.redis.is_none() {
        return Ok(());
    }
    // `params.taskId` on any request: the task filter opens it on every
    // method (a server may read it on `tasks/list` or a vendor's method).
    let named = |env: &&warden_filters::Envelope| {
        env.kind == warden_filters::Kind::Request && env.task_id.is_some()
    };
    let envs: Vec<&warden_filters::Envelope> = match parsed {
        Parsed::Single(env) => vec![env],
        Parsed::Batch(items) => items.iter().filter_map(|i| i.as_ref().ok()).collect(),
    }
    .into_iter()
    .filter(named)
    .collect();
    if envs.is_empty() {
        return Ok(());
    }
    let unrecorded = |why: &str| {
        tracing::warn!(error = %why, "task request not checked with the fleet; refused");
        Refusal::new(
            503,
            "task_unrecorded",
            warden_filters::JsonRpcError::new(
                warden_filters::codes::INTERNAL_ERROR,
                "The gateway could not check this task with its fleet; try again",
            ),
        )
    };
    let Some(store) = rt.quota_store.clone() else {
        return Err(unrecorded("no shared store"));
    };
    let me = holder(&ctx.exchange(server, false, None)).into_owned();
    for env in envs {
        let Some(opened) = env
            .task_id
            .as_deref()
            .and_then(|t| rt.snap.task_sealer.open(t, &me, &server.name))
        else {
            // Not this caller's handle: the task filter answers it.
            continue;
        };
        let claim = TaskSealer::claim(&opened.task, &me, &server.name, ClaimKind::Renew);
        match store
            .task_claim(&claim.task, &claim.holder, claim.kind)
            .await
        {
            Ok(true) => {}
            Ok(false) => gw.shared.task_owners.burn(&claim),
            Err(e) => return Err(unrecorded(&e)),
        }
    }
    Ok(())
}

/// A client response answers a server→client request the gateway let
/// through on this session, once; anything else is refused.
fn settle_client_responses(
    gw: &Gateway,
    ctx: &RequestCtx,
    parsed: &Parsed,
    server: &str,
) -> Result<(), Refusal> {
    let responses: smallvec::SmallVec<[&warden_filters::Envelope; 1]> = match &parsed {
        Parsed::Single(env) => std::slice::from_ref(env)
            .iter()
            .filter(|e| e.kind == warden_filters::Kind::Response)
            .collect(),
        Parsed::Batch(items) => items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .filter(|e| e.kind == warden_filters::Kind::Response)
            .collect(),
    };
    if !responses.is_empty() {
        let (owner, session) = crate::pipeline::scope::ledger_keys(ctx);
        let scope = crate::sessions::ledger::Scope {
            server,
            owner: &owner,
            session: &session,
        };
        for env in responses {
            let settled = env
                .id
                .as_ref()
                .is_some_and(|id| gw.ledger.settle(&scope, id));
            if !settled {
                return Err(Refusal::invalid_request(
                    "unsolicited_response",
                    "a response to no request the server sent on this session",
                )
                .with_id(match &parsed {
                    Parsed::Single(e) => e.id.clone(),
                    Parsed::Batch(_) => None,
                }));
            }
        }
    }
    Ok(())
}

/// Whether the arguments' text is kept for the audit record: only where it
/// is written, raw with `include_arguments`, else for calls of a tool whose
/// tier is logged in full (a batch keeps it, and recording decides).
fn keeps_arguments(rt: &Runtime, server_id: ServerId, parsed: &Parsed) -> bool {
    let cfg = &rt.snap.config;
    cfg.audit.include_arguments
        || (!cfg.audit.log_io.is_empty()
            && match &parsed {
                Parsed::Single(env) => {
                    env.method.as_deref() == Some("tools/call")
                        && env
                            .name
                            .as_deref()
                            .is_some_and(|t| rt.logs_io(server_id, t))
                }
                Parsed::Batch(_) => true,
            })
}

/// Whether the flow guard judges some message of the body against a flow
/// state the shared store holds (`guards::flow::judges`: a read, a
/// client's answer to a server, anything that reaches out, anything with
/// params to a sink server). Asked whenever the bundle names a store,
/// built or not: one this process could not build is no store to read.
fn flow_judged(rt: &Runtime, server: &str, messages: &RequestMessages<'_>) -> bool {
    let cfg = &rt.snap.config;
    let (Some(flows), Some(_)) = (&cfg.flows, &cfg.redis) else {
        return false;
    };
    let catalog = rt.snap.flow_catalog.get(server);
    let judged =
        |m: &warden_filters::Message<'_>| warden_filters::guards::flow::judges(flows, catalog, m);
    match messages {
        RequestMessages::Single(m) => judged(m),
        RequestMessages::Batch(items) => items.iter().any(|i| i.as_ref().is_ok_and(judged)),
    }
}

/// Global quotas: their units reserved in the shared store first (this
/// waits on Redis only when this replica's lease for a key is empty).
async fn reserve_global(
    rt: &Runtime,
    server: &warden_config::model::Server,
    ctx: &RequestCtx,
    parsed: &Parsed,
    keep_arguments: bool,
) -> warden_filters::guards::quota::GlobalVerdicts {
    let cfg = &rt.snap.config;
    let mut global = warden_filters::guards::quota::GlobalVerdicts::new();
    let demands = {
        let fctx = ctx.exchange(server, keep_arguments, None);
        warden_filters::guards::quota::global_demands(&cfg.quotas, &cfg.catalog, parsed, &fctx)
    };
    // A virtual server's own leg spends nothing: its member's leg does.
    if !demands.is_empty() && server.composed.is_none() {
        let store = rt.quota_store.clone();
        for d in demands {
            let v = match &store {
                Some(s) => s.reserve(&d, ctx.now).await,
                // Named by the bundle but not built: as a store that is
                // down, `on_store_failure` decides (counted, never silent).
                None => crate::hub::quota_store::unavailable(&d),
            };
            global.insert(d.key, v);
        }
    }
    global
}

/// Replies are judged by the request they answer: the requests the plan
/// forwards are remembered, and in a session an id names one request.
fn remember_requests(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    plan: &warden_filters::RequestPlan,
) -> Result<(), Refusal> {
    ctx.reply.pending = plan
        .records
        .iter()
        .filter(|r| {
            r.kind == Some(warden_filters::Kind::Request)
                && matches!(
                    r.outcome,
                    warden_filters::Outcome::Forwarded | warden_filters::Outcome::Mutated { .. }
                )
        })
        .filter_map(|r| {
            Some(crate::pipeline::ctx::PendingReply {
                id: r.id.clone()?,
                asked: std::sync::Arc::new(crate::sessions::ledger::Asked {
                    method: r.method.clone()?,
                    // A completion of a resource template names no
                    // target: the reply is judged by what it completes.
                    target: r.completing.clone().or_else(|| r.target.clone()),
                    args_digest: r.args_digest.clone(),
                    task: r.task.clone(),
                }),
                answered: false,
            })
        })
        .collect();
    // In a session an id names one request: a reused one would relabel the
    // replies the ledger matches on other exchanges (a replay, a legacy
    // GET stream) and have them judged as another request's.
    if !ctx.reply.pending.is_empty() && ctx.session_key().is_some() {
        let (owner, session) = crate::pipeline::scope::ledger_keys(ctx);
        let scope = crate::sessions::ledger::Scope {
            server: ctx.server_name(),
            owner: &owner,
            session: &session,
        };
        use crate::sessions::ledger::Claim;
        if let Some((p, claim)) = ctx.reply.pending.iter().find_map(|p| {
            let c = gw.ledger.claim(&scope, &p.id, &p.asked);
            (c != Claim::Held).then_some((p, c))
        }) {
            let refusal = match claim {
                Claim::Full => Refusal::new(
                    429,
                    "ledger_share_full",
                    warden_filters::JsonRpcError::new(
                        warden_filters::codes::QUOTA_EXCEEDED,
                        "Too many requests awaiting replies: this principal holds its share of the gateway's reply ledger; retry later".to_owned(),
                    )
                    .with_data(serde_json::json!({"reason": "ledger_share_full", "retry_after": 1})),
                )
                .with_header("retry-after", "1"),
                _ => Refusal::new(
                    400,
                    "request_id_reused",
                    warden_filters::JsonRpcError::new(
                        warden_filters::codes::INVALID_REQUEST,
                        format!(
                            "Invalid Request: id {} already names another request in this session; use a fresh id",
                            p.id.to_json()
                        ),
                    ),
                ),
            }
            .with_id((!plan.batch).then(|| p.id.clone()));
            return Err(refusal);
        }
    }
    Ok(())
}

/// A call held for approval: claimed at the control agent, then either
/// released (forwarded as the guards passed it) or answered with where to
/// approve. Never forwarded without an approval.
async fn settle_held(
    gw: &Gateway,
    rt: &crate::hub::runtime::Runtime,
    server: &warden_config::model::Server,
    ctx: &mut RequestCtx,
    plan: &mut warden_filters::RequestPlan,
) {
    use crate::hub::approval_client::{Caller, Claimed};
    let Some(held) = plan.held.as_ref() else {
        return;
    };
    let need = held.need.clone();
    let cfg = &rt.snap.config.approvals;
    // What the audit record keeps of a justification is what approvers see.
    let justification = ctx
        .justification
        .as_deref()
        .map(|j| rt.snap.redact_text(j, 1024));
    let claimed = match gw.approvals.get() {
        Some(client) => {
            client
                .claim(
                    &need,
                    &Caller {
                        tenant: &ctx.principal.tenant,
                        principal: &need.holder,
                        server: &server.name,
                        justification: justification.as_deref(),
                        trace_id: ctx.trace_id.as_deref(),
                    },
                    cfg,
                )
                .await
        }
        None => Claimed::Unavailable(
            "this gateway has no control agent (start it with --agent or --approvals-agent)".into(),
        ),
    };
    crate::observability::metrics::metrics()
        .approvals
        .with_label_values(&[&server.name, claimed.reason()])
        .inc();
    let mut claimed = claimed;
    if let Claimed::Unavailable(why) = &claimed {
        tracing::warn!(server = %server.name, tool = %need.tool, "held call refused: {why}");
    }
    // An approver's comment reaches the model as DLP leaves it.
    if let Claimed::Denied { by, .. } = &mut claimed {
        if let Some(c) = &by.comment {
            by.comment = Some(rt.snap.redact_text(c, 500));
        }
    }
    if matches!(claimed, Claimed::Approved { .. }) {
        plan.release_held();
    } else {
        let id = plan.records.last().and_then(|r| r.id.clone());
        let url_elicitation = ctx
            .session_id
            .as_deref()
            .is_some_and(|s| gw.sessions.url_elicitation(&server.name, s));
        let url = match (gw.approvals.get(), claimed.id()) {
            (Some(c), Some(aid)) => Some(c.approval_url(cfg.url.as_deref(), aid)),
            _ => None,
        };
        plan.answers = vec![claimed.answer(&need, id.as_ref(), url.as_deref(), url_elicitation)];
        if let Some(r) = plan.records.last_mut() {
            r.outcome = warden_filters::Outcome::Denied {
                filter: "approval",
                reason: claimed.reason().to_owned(),
            };
        }
    }
    ctx.approval = Some(claimed);
}

#[cfg(test)]
mod tests {
    use super::utf8_media;

    #[test]
    fn only_utf8_json_is_read_as_json() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            " application/json ; charset = utf-8 ",
            "application/json;",
            "application/json; charset=utf8",
        ] {
            assert!(utf8_media(ok.as_bytes(), "application/json"), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/json-seq",
            "application/jsonx",
            "application/json; charset=utf-7",
            "application/json; charset=utf-16le",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-8; charset=utf-7",
            "application/json; boundary=x",
            "application/json; charset",
            "application/json, text/plain",
        ] {
            assert!(!utf8_media(bad.as_bytes(), "application/json"), "{bad}");
        }
        assert!(utf8_media(b"text/event-stream", "text/event-stream"));
        assert!(!utf8_media(
            b"text/event-stream; charset=utf-7",
            "text/event-stream"
        ));
        assert!(!utf8_media(b"application/json\xff", "application/json"));
    }
}

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
use crate::identity::outbound::check_reuse;
use crate::pipeline::body::read_whole;
use crate::pipeline::ctx::{RequestCtx, Routed};
use crate::pipeline::headers::{header_str, utf8_media};
use crate::pipeline::{guards, mirrored};

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
    if let Parsed::Single(env) = &parsed {
        // Known before the upstream identity: a first call that needs the
        // caller's consent may be its `initialize`.
        if let (Some("initialize"), Some(msg)) = (env.method.as_deref(), messages.single()) {
            ctx.url_elicitation = msg
                .value()
                .and_then(|v| v.pointer("/params/capabilities/elicitation/url"))
                .is_some_and(serde_json::Value::is_object);
        }
    }
    let request =
        matches!(&parsed, Parsed::Single(env) if env.kind == warden_filters::Kind::Request);
    upstream_identity(gw, session, ctx, routed, request)
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
    let keep_arguments = keeps_arguments(rt, server_id, &parsed);
    guards::task_binding::fleet_tasks(gw, rt, server, ctx, &parsed)
        .await
        .map_err(|r| match &parsed {
            Parsed::Single(env) => r.with_id(env.id.clone()),
            Parsed::Batch(_) => r,
        })?;
    let global = guards::quota::reserve_global(rt, server, ctx, &parsed, keep_arguments).await;
    let budgets = guards::budget::reserve(gw, rt, server, ctx, &parsed).await;
    let flow_judged = guards::flow::flow_judged(rt, &server.name, &messages);
    guards::flow::load_flow(rt, server, ctx, flow_judged).await;
    let unknown = guards::anomaly::fleet_question(rt, &gw.shared, &server.name, ctx, &messages);
    guards::anomaly::load_fleet(rt, &gw.shared, ctx, unknown).await;
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
            budget: Some(&budgets).filter(|b| !b.0.is_empty()),
            ..ctx.exchange(
                server,
                keep_arguments,
                Some(&global).filter(|g| !g.is_empty()),
            )
        };
        plan_request(&messages, rt.snap.chain_for(server), &fctx)
    };
    if plan.held.is_some() {
        guards::approval::settle_held(gw, rt, server, ctx, &mut plan).await;
    }
    if !ctx.budget.reservations.is_empty() {
        ctx.plan = Some(plan);
        guards::budget::settle(gw, ctx).await;
        plan = ctx.plan.take().expect("the plan was just set");
    }
    guards::anomaly::settle(rt, &gw.shared, ctx, &plan).await;
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
///
/// A credential kept in the vault is fetched here too: a call whose
/// principal has not connected their account yet is answered with the
/// consent link (`request`: a JSON-RPC request, answered per message;
/// anything else is refused 403) and never forwarded.
pub async fn upstream_identity(
    gw: &Gateway,
    session: &Session,
    ctx: &mut RequestCtx,
    routed: &Routed,
    request: bool,
) -> Result<(), Refusal> {
    let server = routed.server();
    let req = session.req_header();
    check_reuse(&ctx.principal, req, &routed.rt.snap.config.servers, server)?;
    if let Some(vc) = &server.vault {
        use crate::hub::vault_client::{consent_answer, Fetched};
        let Some(client) = gw.vault.get() else {
            return Err(Refusal::new(
                502,
                "credential_unavailable",
                warden_filters::JsonRpcError::new(
                    warden_filters::codes::UPSTREAM_UNAVAILABLE,
                    format!("Server `{}` needs a credential from the control agent's vault, and this gateway has no control agent (--agent)", server.name),
                ),
            ));
        };
        match client.fetch(&ctx.principal, &server.name, vc).await? {
            Fetched::Ready(header, value, reference) => {
                ctx.upstream.vault_auth = Some(crate::pipeline::ctx::Injected {
                    header,
                    value,
                    secret_at: vc.prefix.len(),
                });
                ctx.upstream.credential = Some(reference);
            }
            Fetched::Consent { id, url } => {
                let url_elicitation = ctx.url_elicitation
                    || ctx
                        .session_id
                        .as_deref()
                        .is_some_and(|s| gw.sessions.url_elicitation(&server.name, s));
                ctx.upstream.credential = Some(format!("consent:{id}"));
                return Err(consent_answer(
                    &server.name,
                    &id,
                    &url,
                    url_elicitation,
                    request,
                ));
            }
        }
    }
    if server.oauth.is_none() && server.caller_token.is_none() {
        return Ok(());
    }
    ctx.upstream.outbound_auth = gw.tokens.prepare(&ctx.principal, server, req).await?;
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

//! The scope an exchange's replies and server→client requests belong to:
//! its principal, its session (or legacy stream), and the reply ledger
//! entries its requests leave for replies that come on another stream.

use std::borrow::Cow;

use crate::hub::state::Gateway;
use crate::pipeline::ctx::{ExchangeKind, RequestCtx};

/// The ledger scope of this exchange's session (`""` when it has none).
pub fn scope<'a>(
    ctx: &'a RequestCtx,
    owner: &'a str,
    session: &'a str,
) -> crate::sessions::ledger::Scope<'a> {
    crate::sessions::ledger::Scope {
        server: ctx.server_name(),
        owner,
        session,
    }
}

/// A POST of a legacy (HTTP+SSE) session: no `Mcp-Session-Id`, the session
/// named in its query. Its replies come on the session's GET stream.
pub fn legacy_post(ctx: &RequestCtx) -> bool {
    ctx.kind == ExchangeKind::Post && ctx.session_id.is_none() && ctx.session_key().is_some()
}

/// Puts this POST's requests in the reply ledger, so that replies arriving
/// on another stream find the request they answer.
pub fn remember_pending(gw: &Gateway, ctx: &RequestCtx) {
    let (owner, session) = ledger_keys(ctx);
    let sc = scope(ctx, &owner, &session);
    for p in &ctx.reply.pending {
        if session.is_empty() {
            gw.ledger.asked_unclaimed(&sc, &p.id, p.asked.clone());
        } else {
            gw.ledger.asked(&sc, &p.id, p.asked.clone());
        }
    }
}

/// The owner and session keys of this exchange's ledger scope. The owner
/// is the one handles are bound to (`guards::cursor::owner_of`): for an
/// unauthenticated client without a session, its address, so that such a
/// client neither answers a server's request asked of another nor has
/// another's replies matched to its requests.
pub fn ledger_keys(ctx: &RequestCtx) -> (Cow<'_, str>, Cow<'_, str>) {
    let session = session_scope_key(ctx);
    let owner = warden_filters::guards::cursor::owner_of(
        &ctx.principal,
        (!session.is_empty()).then_some(&*session),
        ctx.source_ip,
    );
    (owner, session)
}

/// The session key replies and server→client requests of this exchange
/// belong to (`""` when none), borrowed from the exchange.
pub fn session_scope_key(ctx: &RequestCtx) -> Cow<'_, str> {
    match ctx.kind {
        ExchangeKind::Get => ctx
            .reply
            .stream_session
            .as_deref()
            .or(ctx.session_id.as_deref())
            .map_or(Cow::Borrowed(""), Cow::Borrowed),
        _ => ctx.session_key().unwrap_or(Cow::Borrowed("")),
    }
}

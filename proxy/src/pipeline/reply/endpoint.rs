//! The legacy HTTP+SSE transport's `endpoint` event: the URL the server
//! names is rewritten to the gateway's own, and refused outside the route.

use super::*;

/// Legacy HTTP+SSE: the `endpoint` event names the POST URI; rewrite its path
/// prefix to the gateway's and remember which replica owns the session. An
/// endpoint on another origin, outside the route's prefix, or in any form a
/// client could read differently is refused (the stream is cut).
pub(super) fn rewrite_endpoint(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    routed: &Routed,
    ev: SseEvent,
) -> Result<Vec<u8>, ReplyRefusal> {
    let rt = &routed.rt;
    let data = ev.data.as_deref().unwrap_or("");
    let route = routed.route();
    // The endpoint reaches the client (its query as written, unsealed):
    // never with the credential sent for this stream in it.
    if sent_secrets(&ctx.upstream).any(|s| holds_credential(data.as_bytes(), None, s)) {
        return Err(ReplyRefusal::CredentialInReply);
    }
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
        let own = ctx
            .upstream
            .chosen
            .map(|a| a.to_string())
            .unwrap_or_default();
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
    let server_name = &routed.server().name;
    let owner = crate::sessions::sticky::owner_key(&ctx.principal);
    ctx.reply.stream_session = Some(legacy_key(path));
    gw.sessions.remember_legacy_path(server_name, path_only);
    if let Some(addr) = ctx.upstream.chosen {
        gw.sessions
            .remember(server_name, &legacy_key(path), addr, &owner, false, true);
        // Stateless replicas: the session's endpoint travels sealed.
        if let (Some(sealer), Some((base, _))) = (rt.sealer.as_ref(), new.split_once('?')) {
            // The server's whole path and query: a POST opens the session
            // only at the path handed out (a server that routes by prefix
            // would take another spelling for the same session, and the
            // gateway would judge it in another scope).
            if let Some(token) = sealer.seal(&crate::sessions::seal::SealedSession {
                session: path.to_owned(),
                upstream: addr.to_string(),
                owner,
                server: server_name.clone(),
                issued: crate::sessions::seal::unix_now(),
            }) {
                return Ok(without_id(ev, &format!("{base}?ws={token}")));
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
    Ok(without_id(ev, &new))
}

/// The endpoint event as the client gets it: the rewritten URI, and no
/// `id:` (the server's text, never judged nor sealed; a client would send
/// it back as its `Last-Event-ID`, which the gateway could not open).
fn without_id(ev: SseEvent, data: &str) -> Vec<u8> {
    ev.cleaned(Some(data), &|_| None)
}

/// Whether DLP finds nothing in `text`.
pub(super) fn dlp_clean(snap: &warden_filters::Snapshot, text: &str) -> bool {
    let mut hits = Vec::new();
    snap.redactor.scan_str(text, &mut hits);
    hits.is_empty()
}

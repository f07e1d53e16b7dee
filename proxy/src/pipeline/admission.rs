//! Admission: everything decided from the request head before a body is
//! read. The route, the browser origin, the method, header hygiene (`Mcp-*`
//! headers once each, `Mcp-Param-*` decodable), authentication, and the
//! session (a sealed id opened, a session bound to the principal that opened
//! it). The protected-resource metadata document is answered here too.

use pingora::http::RequestHeader;
use pingora_core::protocols::http::ServerSession as Session;
use warden_filters::Refusal;

use crate::hub::runtime::ServerId;
use crate::hub::state::Gateway;
use crate::pipeline::ctx::{ExchangeKind, RequestCtx, Routed};
use crate::pipeline::headers::header_str;

/// What admission decided, with where it routed what it admitted.
pub enum Admitted {
    /// GET (the server's stream) or DELETE: no message to judge; proxied.
    Stream(Routed),
    /// A POST whose body is judged next (see `judging`).
    Post(Routed),
    /// The gateway answered by itself (metadata); the status it used.
    Answered(u16),
}

/// Admits a request or refuses it (see the module documentation).
pub async fn admit(
    gw: &Gateway,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Admitted, Refusal> {
    let rt = ctx.rt.clone();
    let cfg = &rt.snap.config;
    // Whether an HTTP/2 request has DATA frames (checked before the header
    // is borrowed for the rest of admission).
    let h2_body = session.is_http2() && !session.is_body_empty();
    // An upstream's interim (1xx) replies are not passed on: their headers
    // are the server's, unjudged, and the final reply follows.
    session.set_ignore_info_resp(true);
    let req = session.req_header();
    if gw.telemetry.get().is_some() {
        ctx.trace = Some(crate::observability::otel::TraceIds::from_header(
            header_str(req, &crate::pipeline::headers::names::TRACEPARENT),
        ));
    } else {
        // Made once: the audit record and an identity assertion name it.
        ctx.trace_id = Some(crate::pipeline::headers::trace_id(req, ctx.request_id));
    }

    check_header_size(req, cfg.limits.max_header_bytes)?;
    let loopback = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| a.ip().is_loopback());
    let host = served_host(&rt.snap, req, loopback)?;
    let path = req.uri.path();
    if let Some(suffix) = path.strip_prefix(crate::identity::auth::WELL_KNOWN) {
        if (suffix.is_empty() || suffix.starts_with('/')) && req.method == http::Method::GET {
            let suffix = suffix.to_owned();
            let id = rt.snap.auth.as_ref().map(|a| a.identity());
            let status = crate::identity::auth::write_metadata(session, id, &suffix)
                .await
                .map_err(|e| Refusal::internal(&e.to_string()))?;
            return Ok(Admitted::Answered(status));
        }
    }
    let route_pos = route_of(&rt.snap, req, host.as_deref(), path)?;
    let route = &rt.snap.routes[route_pos];
    ctx.via = route.via.clone();
    let routed = Routed {
        rt: rt.clone(),
        route: route_pos,
        server_id: ServerId(route.server),
    };
    ctx.routed = Some(routed.clone());
    if let Some(origin) = req.headers.get(http::header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        // A page served from one of the gateway's own names (a local tool
        // on localhost, say) is no other site; any other origin is refused
        // unless allowed by name.
        if !cfg.allowed_origins.contains(o) && !own_origin(&rt.snap, loopback, o) {
            return Err(Refusal::origin(o));
        }
    }
    ctx.kind = match req.method.as_str() {
        "POST" => ExchangeKind::Post,
        "GET" => ExchangeKind::Get,
        "DELETE" => ExchangeKind::Delete,
        m => return Err(Refusal::method_not_allowed(m)),
    };
    // A header that mirrors or scopes the body must be unambiguous.
    use crate::pipeline::headers::names;
    for name in [
        &names::MCP_SESSION_ID,
        &names::MCP_PROTOCOL_VERSION,
        &names::MCP_METHOD,
        &names::MCP_NAME,
        &names::JUSTIFICATION,
    ] {
        let mut all = req.headers.get_all(name).iter();
        // Bytes a peer may read otherwise (`7\xA0` is session `7` to a
        // server that decodes Latin-1 and trims): the gateway could not
        // check what it would forward.
        if all.next().is_some_and(|v| v.to_str().is_err()) {
            return Err(Refusal::bad_header(
                name.as_str(),
                "holds bytes other than visible ASCII",
            ));
        }
        if all.next().is_some() {
            return Err(Refusal::bad_header(name.as_str(), "sent more than once"));
        }
    }
    ctx.mirrored = crate::pipeline::mirrored::read(req)?;
    ctx.session_id = header_str(req, &names::MCP_SESSION_ID).map(str::to_owned);
    ctx.protocol_version = header_str(req, &names::MCP_PROTOCOL_VERSION).map(str::to_owned);
    ctx.justification = header_str(req, &names::JUSTIFICATION).map(str::to_owned);
    ctx.source_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    if ctx.via.is_some() {
        // The client of the virtual server, as its aggregator was told.
        if let Some(ip) = header_str(req, warden_local_servers::aggregate::SOURCE_HEADER)
            .and_then(|v| v.parse().ok())
        {
            ctx.source_ip = Some(ip);
        }
        // The client's session of the virtual server: flows are tracked by it.
        ctx.flow_session = header_str(req, warden_local_servers::aggregate::FLOW_HEADER)
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned);
    }
    // A path that reaches another server's endpoint on a shared upstream
    // would be judged under this server's name and labels.
    if route.reaches_other(&route.upstream_path(path)) {
        return Err(Refusal::new(
            404,
            "path_other_server",
            warden_filters::protocol::error::JsonRpcError::new(
                warden_filters::protocol::error::codes::REFUSED,
                "No MCP server is served at this path: it reaches another server's endpoint on the same upstream (use that server's own route)",
            ),
        ));
    }
    ctx.upstream.uri = match req.uri.query() {
        Some(q) => format!("{}?{}", route.upstream_path(path), q),
        None => route.upstream_path(path),
    };
    if let Some(auth) = &rt.snap.auth {
        ctx.principal = crate::identity::auth::authenticate(auth, session, path, ctx.now)?;
    }
    if ctx.via.is_some() {
        // A member leg acts for the principal the virtual server's leg
        // authenticated, or not at all (a client certificate, say, which
        // the aggregator cannot present, never becomes `anonymous` here).
        let want = header_str(
            session.req_header(),
            warden_local_servers::aggregate::OWNER_HEADER,
        )
        .unwrap_or("");
        let got = warden_local_servers::aggregate::owner_digest(&ctx.principal, ctx.source_ip);
        if !warden_local_servers::loopback::same(want.as_bytes(), got.as_bytes()) {
            return Err(Refusal::session_principal_mismatch());
        }
    }
    // A tenant whose layer the bundle withholds (it does not compose with
    // the org's config): its principals are refused whatever they ask,
    // never judged by the org's rules alone.
    if let Some(r) = rt.snap.tenants.withheld_refusal(&ctx.principal) {
        return Err(r);
    }
    let server = &cfg.servers[route.server];
    // A session id that does not open is refused with the session checks,
    // last, so that a request refused for what it carries says so.
    let (legacy_sealed, unopened) = match unseal_session(gw, ctx, &server.name) {
        Ok(legacy) => (legacy, None),
        Err(r) => (false, Some(r)),
    };
    ctx.resume_from = open_resume_id(ctx, req, &server.name)?;

    // A GET stream (legacy SSE's, which opens a session with no message)
    // or a DELETE carries nothing the chain judges: the registry's gate
    // (state, sharing) is asked here, as for every message.
    if ctx.kind != ExchangeKind::Post {
        // The kill switch, which judges every message, for the stream (or
        // the session's end) that carries none: a paused server, tenant or
        // principal opens no stream.
        let k = &rt.snap.config.kill_switch;
        let p = &ctx.principal;
        if let Some(scope) = k.pauses(&p.tenant, &p.id, &server.name, ctx.via.as_deref(), None) {
            return Err(Refusal::new(
                403,
                "kill_switch",
                warden_filters::guards::kill_switch::paused_error(scope),
            ));
        }
        if let Some(reg) = &rt.snap.registry {
            reg.admit(&ctx.exchange(server, false, None))?;
        }
        // What it carries (headers, a query, a path) reaches a server that
        // is a sink as a whole: judged against the flow.
        crate::pipeline::guards::flow::judge_stream_flow(&rt, server, ctx).await?;
    }

    // What goes upstream beside the body (headers, URL), before anything
    // is read or spent.
    crate::pipeline::header_dlp::judge(ctx, &routed, req)?;

    client_requirements(ctx, req, h2_body)?;
    // Last of the checks that read nothing but the header, so that a
    // request refused for what it carries says so.
    if let Some(r) = unopened {
        return Err(r);
    }
    check_sessions(gw, ctx, &server.name, legacy_sealed)?;
    Ok(match ctx.kind {
        ExchangeKind::Post => Admitted::Post(routed),
        _ => Admitted::Stream(routed),
    })
}

/// A session belongs to the principal that opened it (another's → 403), and
/// a session this gateway does not know is none (404, as MCP says: the
/// client initialises again) — never forwarded on the chance that the
/// upstream knows it. Two keys name sessions:
/// - `Mcp-Session-Id`: known from the `initialize` reply that issued it,
///   or proven by its sealed token (which names its owner);
/// - a legacy (HTTP+SSE) POST's path and query: a POST to a path some
///   `endpoint` event named as a message endpoint (read as loosely as a
///   server routes it) must carry exactly the query of a session its
///   principal opened. A server reads its session from that query however
///   it likes (parameter order, case, escapes, extra parameters), so only
///   the bytes the gateway handed out are accepted.
fn check_sessions(
    gw: &Gateway,
    ctx: &mut RequestCtx,
    server: &str,
    legacy_sealed: bool,
) -> Result<(), Refusal> {
    let mut legacy = legacy_sealed;
    // The principal's owner key (borrowed: worked out once per principal).
    let principal = ctx.principal.clone();
    let me = principal.owner();
    if let Some(sid) = ctx.session_id.as_deref() {
        match gw.sessions.owner_on(server, sid, ctx.upstream.sealed) {
            Some(owner) if &*owner != me => return Err(Refusal::session_principal_mismatch()),
            None if !ctx.session_sealed => return Err(Refusal::session_unknown()),
            _ => {}
        }
    }
    if ctx.kind == ExchangeKind::Post && !legacy_sealed {
        let path = ctx.upstream.uri.split('?').next().unwrap_or("");
        if gw.sessions.is_legacy_path(server, path) {
            let key = crate::sessions::sticky::legacy_key(&ctx.upstream.uri);
            match gw.sessions.owner(server, &key) {
                Some(owner) if &*owner == me => legacy = true,
                Some(_) => return Err(Refusal::session_principal_mismatch()),
                None => return Err(Refusal::session_unknown()),
            }
        }
    }
    ctx.legacy_session = legacy.then(|| crate::sessions::sticky::legacy_key(&ctx.upstream.uri));
    Ok(())
}

/// Opens a sealed session id (header) or legacy endpoint query: checks the
/// binding to the principal and the server, and puts the upstream's own id
/// and replica in the context. A token that does not open → 404. `true`
/// when a legacy endpoint's sealed query was opened.
fn unseal_session(gw: &Gateway, ctx: &mut RequestCtx, server: &str) -> Result<bool, Refusal> {
    let Some(sealer) = ctx.rt.sealer.clone() else {
        return Ok(false);
    };
    let unknown = Refusal::session_unknown;
    let principal = ctx.principal.clone();
    let owner = principal.owner();
    let max_age = ctx.rt.snap.config.session_max_age;
    // The request's arrival (the clock is read once per request).
    let now = crate::sessions::seal::unix_secs(ctx.now);
    let started = gw.sessions.started;
    // `expires`: a Streamable HTTP session id past `sessions.max_age` is an
    // unknown session (404: the client opens a new one). A legacy
    // endpoint's query lives as long as the stream it was handed on.
    let check = |p: &crate::sessions::seal::SealedSession,
                 expires: bool|
     -> Result<Option<std::net::SocketAddr>, Refusal> {
        if p.server != server {
            return Err(unknown());
        }
        if let Some(max_age) = max_age.filter(|_| expires) {
            if p.expired(now, started, max_age) {
                return Err(unknown());
            }
        }
        if p.owner != owner {
            return Err(Refusal::session_principal_mismatch());
        }
        Ok(p.upstream.parse().ok())
    };
    if let Some(token) = ctx.session_id.clone() {
        let p = gw.sessions.open(&sealer, &token).ok_or_else(unknown)?;
        ctx.upstream.sealed = check(&p, true)?;
        ctx.session_id = Some(p.session.clone());
        ctx.session_sealed = true;
        ctx.session_issued = p.issued;
    } else if ctx.kind == ExchangeKind::Post {
        // Legacy HTTP+SSE: the endpoint's query was sealed into `ws=`.
        if let Some((path, query)) = ctx.upstream.uri.split_once('?') {
            if let Some(token) = query.split('&').find_map(|kv| kv.strip_prefix("ws=")) {
                let p = sealer.open(token).ok_or_else(unknown)?;
                ctx.upstream.sealed = check(&p, false)?;
                ctx.upstream.uri = match p.session.split_once('?') {
                    // The endpoint as the server wrote it, path included:
                    // a POST elsewhere (`/messages/x`, `/MESSAGES/`) is no
                    // POST of this session, though a server routing by
                    // prefix would take it for one.
                    Some((sealed_path, _)) if sealed_path.starts_with('/') => {
                        if sealed_path != path {
                            return Err(unknown());
                        }
                        p.session
                    }
                    // Sealed before the path was (the query alone).
                    _ => format!("{path}?{}", p.session),
                };
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The server's event id behind a `Last-Event-ID`, when it was sealed for
/// this principal, server and session. Anyone else's is unknown: the
/// request goes on without it, as a stream that resumes from nothing (the
/// server never replays another principal's events).
fn open_resume_id(
    ctx: &RequestCtx,
    req: &RequestHeader,
    server: &str,
) -> Result<Option<String>, Refusal> {
    static LAST_EVENT_ID: http::HeaderName = http::HeaderName::from_static("last-event-id");
    let mut all = req.headers.get_all(&LAST_EVENT_ID).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Refusal::bad_header("Last-Event-ID", "sent more than once"));
    }
    let rt = &ctx.rt;
    let Ok(token) = first.to_str() else {
        return Ok(None);
    };
    let owner = warden_filters::guards::cursor::owner_of(
        &ctx.principal,
        ctx.session_id.as_deref(),
        ctx.source_ip,
    );
    Ok(rt.snap.handle_sealer.open(
        warden_filters::guards::cursor::HandleKind::EventId,
        token.trim(),
        warden_filters::guards::cursor::Holder {
            owner: &owner,
            server,
            session: ctx.session_id.as_deref(),
            scope: "",
        },
    ))
}

/// A `Host` value's name: lower-cased, without port or trailing dot; an
/// IPv6 literal without its brackets.
fn host_name(h: &str) -> String {
    let h = h.trim();
    let name = match h.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => h.rsplit_once(':').map_or(h, |(n, _)| n),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost`, a name under `.localhost` (RFC 6761), or a loopback address.
fn loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the gateway serves `name` (see the `Host` check in [`admit`]).
fn serves_host(snap: &warden_filters::Snapshot, loopback: bool, name: &str) -> bool {
    (loopback && loopback_name(name))
        || snap.config.allowed_hosts.contains(name)
        || snap.routes.iter().any(|r| r.host.as_deref() == Some(name))
}

/// Whether a browser `Origin` is a page of one of the gateway's own names
/// (`http(s)://name[:port]`, nothing more).
fn own_origin(snap: &warden_filters::Snapshot, loopback: bool, origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return false;
    }
    serves_host(snap, loopback, &host_name(rest))
}

/// The header block within `limits.max_header_bytes` (431).
fn check_header_size(req: &RequestHeader, max: usize) -> Result<(), Refusal> {
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > max {
        return Err(Refusal::new(
            431,
            "headers_too_large",
            warden_filters::JsonRpcError::new(
                warden_filters::codes::REFUSED,
                format!("Request headers exceed {} bytes", max),
            ),
        ));
    }
    Ok(())
}

/// The `Host` the request names, which must be one this gateway serves
/// (DNS rebinding: a page of another site reaches a loopback port under its
/// own host name, same-origin with it): a loopback name on a loopback
/// connection, a route's host, or `security.allowed_hosts` (which, when
/// set, binds every listener).
fn served_host(
    snap: &warden_filters::Snapshot,
    req: &RequestHeader,
    loopback: bool,
) -> Result<Option<String>, Refusal> {
    let host = req.uri.host().map(str::to_owned).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // Two `Host` headers: peers pick different ones (RFC 9112 asks a 400).
    if req
        .headers
        .get_all(http::header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Refusal::bad_header("Host", "sent more than once"));
    }
    if loopback || !snap.config.allowed_hosts.is_empty() {
        let served = host
            .as_deref()
            .is_some_and(|h| serves_host(snap, loopback, &host_name(h)));
        if !served {
            return Err(Refusal::host(host.as_deref().unwrap_or("")));
        }
    }
    Ok(host)
}

/// The route the request takes (404 naming the paths served on its host).
fn route_of(
    snap: &warden_filters::Snapshot,
    req: &RequestHeader,
    host: Option<&str>,
    path: &str,
) -> Result<usize, Refusal> {
    // A path a server or a proxy before it normalises (`/jira/../admin`,
    // `%2e%2e`, `\`, a `;` parameter on a dot segment) would reach
    // another app than the route the gateway judged it by.
    if unnormalised_path(path) {
        return Err(Refusal::invalid_request(
            "path_not_normal",
            "the path holds a dot segment, an empty segment or a backslash (as written or escaped)",
        ));
    }
    // A member route of a virtual server answers only that server's
    // aggregator; to anyone else it does not exist.
    let route_pos = snap
        .route_index(host, path)
        .filter(|&i| match &snap.routes[i].via {
            Some(v) => header_str(req, warden_local_servers::aggregate::SECRET_HEADER)
                .is_some_and(|h| warden_local_servers::aggregate::is_inner_secret(v, h)),
            None => true,
        });
    let Some(route_pos) = route_pos else {
        // Name the paths served on this host (never another host's).
        let host = host.map(|h| {
            h.rsplit_once(':')
                .map_or(h, |(n, _)| n)
                .to_ascii_lowercase()
        });
        let served: Vec<&str> = snap
            .routes
            .iter()
            .filter(|r| r.via.is_none() && (r.host.is_none() || r.host == host))
            .map(|r| r.prefix.as_str())
            .collect();
        return Err(Refusal::no_route_of(&served));
    };
    Ok(route_pos)
}

/// Streamable HTTP's requirements of the client, remembered so that a
/// server refusing the request gets an error that says why; and no body on
/// a GET or DELETE.
fn client_requirements(
    ctx: &mut RequestCtx,
    req: &RequestHeader,
    h2_body: bool,
) -> Result<(), Refusal> {
    let accept = header_str(req, http::header::ACCEPT).unwrap_or("");
    let accepts = |t: &str| accept_names(accept, t);
    ctx.missing = match ctx.kind {
        ExchangeKind::Post if !(accepts("application/json") && accepts("text/event-stream")) => {
            Some("the request lacks `Accept: application/json, text/event-stream`, which Streamable HTTP requires")
        }
        ExchangeKind::Get if !accepts("text/event-stream") => {
            Some("the request lacks `Accept: text/event-stream`, which a GET stream requires")
        }
        ExchangeKind::Get | ExchangeKind::Delete if ctx.session_id.is_none() => {
            Some("a GET stream or DELETE needs the `Mcp-Session-Id` of an initialized session")
        }
        _ => None,
    };
    if ctx.kind != ExchangeKind::Post {
        // GET and DELETE carry no MCP message; a body here would reach the upstream unjudged.
        // HTTP/2 may send DATA frames with neither header.
        let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
            || req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0")
            || h2_body;
        if has_body {
            return Err(Refusal::new(
                400,
                "unexpected_body",
                warden_filters::JsonRpcError::new(
                    warden_filters::codes::INVALID_REQUEST,
                    format!("{} requests must not carry a body", req.method),
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `Accept` value `accept` names media type `t` or `*/*`, in any
/// case (media types are case-insensitive, RFC 9110 §8.3.1), read in place.
fn accept_names(accept: &str, t: &str) -> bool {
    let has = |t: &str| {
        accept
            .as_bytes()
            .windows(t.len())
            .any(|w| w.eq_ignore_ascii_case(t.as_bytes()))
    };
    has(t) || has("*/*")
}

#[cfg(test)]
mod accept_tests {
    use super::accept_names;

    #[test]
    fn accept_is_read_in_any_case() {
        let both =
            |a: &str| accept_names(a, "application/json") && accept_names(a, "text/event-stream");
        assert!(both("application/json, text/event-stream"));
        assert!(both("Application/JSON, TEXT/Event-Stream"));
        assert!(both("*/*"));
        assert!(!both("application/json"));
        assert!(!both(""));
        assert!(!both("text/event"));
        assert!(!accept_names("application/jso", "application/json"));
    }
}

#[cfg(test)]
mod host_tests {
    use super::{host_name, loopback_name};

    #[test]
    fn host_names_are_read_without_port_case_or_brackets() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example.:443"), "evil.example");
        for n in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.8.9.1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(loopback_name(&host_name(n)), "{n}");
        }
        for n in [
            "localhost.evil.example",
            "evil.example",
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1.nip.io",
            "",
        ] {
            assert!(!loopback_name(&host_name(n)), "{n}");
        }
    }
}

/// Whether `path` (without its query) reads differently once a server
/// normalises it: a `.` or `..` segment (percent-decoded until stable,
/// and with a `;param` cut off, as servlet containers read it), an empty
/// segment after the first slash, or a backslash (written or escaped).
pub(crate) fn unnormalised_path(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut text = std::borrow::Cow::Borrowed(path);
    for _ in 0..4 {
        // Without a `%` decoding changes nothing (and allocates).
        if !text.contains('%') {
            break;
        }
        let decoded = percent_decode(&text);
        if decoded == *text {
            break;
        }
        text = std::borrow::Cow::Owned(decoded);
    }
    if text.contains('\\') {
        return true;
    }
    // After the part before the first slash (empty for an absolute path).
    let mut segs = text.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        let bare = seg
            .split(';')
            .next()
            .unwrap_or("")
            .trim_end_matches([' ', '.']);
        let dots = seg.split(';').next().unwrap_or("");
        if (seg.is_empty() && !last)
            || dots == "."
            || dots == ".."
            || (bare.is_empty() && !dots.is_empty())
        {
            return true;
        }
    }
    false
}

/// `%XX` decoded (invalid escapes kept as written; bytes that are not
/// UTF-8 replaced, which no segment test then matches as a dot).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod path_tests {
    use super::unnormalised_path;

    #[test]
    fn paths_a_server_normalises_are_refused() {
        for p in [
            "/jira/../confluence/mcp",
            "/jira/%2e%2e/admin",
            "/jira/%252e%252e/admin",
            "/jira/./mcp",
            "/jira/..;x/admin",
            "/jira/.. /admin",
            "/jira/.../admin",
            "/jira//admin",
            "/jira\\..\\admin",
            "/jira/%5c../admin",
            "/jira/..",
        ] {
            assert!(unnormalised_path(p), "{p}");
        }
        for p in [
            "/jira/mcp",
            "/jira/mcp/",
            "/mcp?next=../x",
            "/a.b/c..d/e.txt",
            "/mock/mcp?x=1",
            "/",
            "/v1.2/mcp",
        ] {
            assert!(!unnormalised_path(p), "{p}");
        }
    }
}

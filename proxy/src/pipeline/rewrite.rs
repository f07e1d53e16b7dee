//! The request as the upstream must see it: path, Host, framing,
//! credentials stripped, the gateway's own headers set (see [`Rewrite`]).

use std::net::SocketAddr;

use warden_config::model::Server;

use crate::pipeline::headers::names;

/// A header the gateway sets on the upstream request: it replaces the
/// client's headers of that name, or (`append`: mirrored argument headers)
/// is added beside them.
struct Set {
    name: http::HeaderName,
    value: http::HeaderValue,
    append: bool,
}

/// How a request is rewritten for the upstream: path, Host (the upstream's
/// own authority, which MCP servers validate against DNS rebinding),
/// framing for the judged body; the client's credentials, cookies and
/// browser Origin stripped (see [`stripped`]); an uncompressed body asked
/// for, so it can be inspected. Decided once, then applied to a Pingora
/// header ([`Rewrite::apply`]) or written straight to the wire for an
/// HTTP/1.1 upstream ([`Rewrite::h1_head`]), with the same result.
pub struct Rewrite<'a> {
    uri: http::Uri,
    direct: bool,
    api_key_header: Option<&'a str>,
    framed: bool,
    set: Vec<Set>,
    /// Client headers DLP withheld (see `metadata`).
    withheld: Vec<http::HeaderName>,
    /// The server is a sink as a whole (information flow): of the
    /// client's headers only those of the protocol ([`PROTOCOL`]) reach
    /// it; any other would carry what the flow guard never judged.
    sink: bool,
}

/// The client headers a server that is a sink as a whole receives: the
/// body's framing and type, what the client accepts, and MCP's own
/// (whose values the gateway checked against the body). Credentials,
/// the session id and `Host` are the gateway's to set.
const PROTOCOL: [&str; 6] = [
    "content-type",
    "content-length",
    "accept",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
];

/// One of the gateway's own header names (lower-case constants), without
/// parsing it on every call.
fn fixed(name: &'static str) -> http::HeaderName {
    http::HeaderName::from_static(name)
}

/// Adds `s` to the headers the gateway sets. A replacing header keeps one
/// value per name, the last (as `insert` does), so the wire head and the
/// Pingora header never differ.
fn push(set: &mut Vec<Set>, s: Set) {
    if !s.append {
        set.retain(|o| o.name != s.name);
    }
    set.push(s);
}

/// `addr` as a `Host` value (`127.0.0.1:8931`, `[::1]:8931`), written
/// into `buf`: this runs on every call to a server without a configured
/// host, and `to_string` would allocate and run the formatter each time.
fn host_of<'b>(addr: &SocketAddr, buf: &'b mut [u8; 64]) -> &'b str {
    fn num(out: &mut [u8; 64], at: &mut usize, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for d in digits[..n].iter().rev() {
            out[*at] = *d;
            *at += 1;
        }
    }
    let mut at = 0;
    match addr {
        SocketAddr::V4(a) => {
            for (i, o) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    buf[at] = b'.';
                    at += 1;
                }
                num(buf, &mut at, u32::from(*o));
            }
        }
        SocketAddr::V6(_) => {
            // Rare: the formatter's form (`[v6%scope]:port`, at most 58 bytes).
            use std::io::Write;
            let mut w = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(w, "{addr}");
            let n = w.position() as usize;
            return std::str::from_utf8(&buf[..n]).unwrap_or_default();
        }
    }
    buf[at] = b':';
    at += 1;
    num(buf, &mut at, u32::from(addr.port()));
    std::str::from_utf8(&buf[..at]).unwrap_or_default()
}

fn invalid(
    what: &'static str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Box<pingora::Error> {
    pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, what, e)
}

impl<'a> Rewrite<'a> {
    /// Decides the rewrite of this call for `server`'s replica `addr`;
    /// `body_len` is the judged body's length (none: the body is streamed
    /// as the client framed it).
    pub fn new(
        rt: &'a crate::hub::runtime::Runtime,
        ctx: &crate::pipeline::ctx::RequestCtx,
        server: &Server,
        addr: SocketAddr,
        body_len: Option<usize>,
    ) -> pingora::Result<Rewrite<'a>> {
        let uri: http::Uri = ctx.upstream.uri.parse().map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "upstream uri", e)
        })?;
        let mut set = Vec::with_capacity(8);
        let mut put = |name: http::HeaderName, value: &str, append: bool| -> pingora::Result<()> {
            let value =
                http::HeaderValue::from_str(value).map_err(|e| invalid("header value", e))?;
            push(
                &mut set,
                Set {
                    name,
                    value,
                    append,
                },
            );
            Ok(())
        };
        let named = |n: &str| {
            http::HeaderName::from_bytes(n.as_bytes()).map_err(|e| invalid("header name", e))
        };
        match &server.host {
            Some(h) => put(http::header::HOST, h, false)?,
            None => put(http::header::HOST, host_of(&addr, &mut [0u8; 64]), false)?,
        }
        if server.composed.is_some() {
            // A virtual server's aggregator is the gateway itself: it calls each
            // member through the gateway as this caller, with the caller's own
            // credentials, so each member leg authenticates and judges anew.
            if let Some(secret) = warden_local_servers::aggregate::outer_secret_for(addr) {
                put(
                    fixed(warden_local_servers::aggregate::SECRET_HEADER),
                    &secret,
                    false,
                )?;
            }
            if let Some(ip) = ctx.source_ip {
                put(
                    fixed(warden_local_servers::aggregate::SOURCE_HEADER),
                    &ip.to_string(),
                    false,
                )?;
            }
            // The client's session of this virtual server, as a digest:
            // every member leg tracks information flow by it.
            // (A client's `initialize` names none yet: the aggregator names
            // the session it opens to the members it opens it with.)
            if let Some(sid) = &ctx.session_id {
                put(
                    fixed(warden_local_servers::aggregate::FLOW_HEADER),
                    &warden_local_servers::aggregate::flow_digest(sid),
                    false,
                )?;
            }
            let owner =
                warden_local_servers::aggregate::owner_digest(&ctx.principal, ctx.source_ip);
            put(
                fixed(warden_local_servers::aggregate::OWNER_HEADER),
                &owner,
                false,
            )?;
        }
        if let Some(c) = &server.credentials {
            put(named(&c.header)?, c.value.expose(), false)?;
        }
        // The user behind the agent, in a JWT the gateway signs for this call
        // (see `assertion`).
        if let (Some(a), Some(signer)) = (&server.assertion, rt.assertions.as_deref()) {
            let trace = ctx.trace_hex();
            // Bound to this call: a verifier that hashes the body it got
            // refuses the assertion replayed on any other request.
            let forwarded = ctx.plan.as_ref().and_then(|p| {
                p.records.iter().find(|r| {
                    r.kind == Some(warden_filters::protocol::jsonrpc::Kind::Request)
                        && matches!(
                            r.outcome,
                            warden_filters::chain::plan::Outcome::Forwarded
                                | warden_filters::chain::plan::Outcome::Mutated { .. }
                        )
                })
            });
            let call = crate::identity::assertion::CallBinding {
                method: forwarded.and_then(|r| r.method.as_deref()),
                name: forwarded.and_then(|r| r.target.as_deref()),
                body: ctx.body.as_deref(),
            };
            let jwt = signer.mint(
                a,
                &ctx.principal,
                trace.as_deref(),
                &call,
                std::time::SystemTime::now(),
            );
            let value = if a.header == "authorization" {
                format!("Bearer {jwt}")
            } else {
                jwt
            };
            put(named(&a.header)?, &value, false)?;
        }
        // The gateway's own bridge to a stdio server admits only itself.
        if server.stdio.is_some() {
            if let Some(secret) = warden_local_servers::stdio::secret_for(addr) {
                put(
                    fixed(warden_local_servers::stdio::SECRET_HEADER),
                    &secret,
                    false,
                )?;
            }
            // Who the session is for (a digest), for the per-principal bound.
            use sha2::Digest;
            let owner = hex::encode(&sha2::Sha256::digest(ctx.principal.owner().as_bytes())[..16]);
            put(
                fixed(warden_local_servers::stdio::OWNER_HEADER),
                &owner,
                false,
            )?;
        }
        // A token fetched for this call (see `outbound`).
        if let Some((h, v)) = &ctx.upstream.outbound_auth {
            put(named(h)?, v, false)?;
        }
        // A credential from the vault (see `hub::vault_client`).
        if let Some(c) = &ctx.upstream.vault_auth {
            put(named(&c.header)?, &c.value, false)?;
        }
        // Warden's span becomes the upstream's parent.
        if let Some(t) = &ctx.trace {
            put(names::TRACEPARENT.clone(), &t.traceparent(), false)?;
        }
        // The session id goes upstream as the gateway read it (a sealed
        // one opened to the upstream's own id), never as the client sent it.
        if let Some(sid) = &ctx.session_id {
            put(names::MCP_SESSION_ID.clone(), sid, false)?;
        }
        // A resumed stream names the server's own event id, never the
        // client's token (stripped below).
        if let Some(id) = &ctx.resume_from {
            put(fixed("last-event-id"), id, false)?;
        }
        if let Some(n) = &ctx.mirrored.name_out {
            put(names::MCP_NAME.clone(), n, false)?;
        }
        // Mirrored argument headers: only those judged against the forwarded
        // body (or scanned), on every method; nothing the client sent as is.
        for (name, value) in ctx.mirrored.params_out.iter().flatten() {
            put(named(&format!("mcp-param-{name}"))?, value, true)?;
        }
        push(
            &mut set,
            Set {
                name: http::header::ACCEPT_ENCODING,
                value: http::HeaderValue::from_static("identity"),
                append: false,
            },
        );
        if let Some(n) = body_len {
            push(
                &mut set,
                Set {
                    name: http::header::CONTENT_LENGTH,
                    value: n.into(),
                    append: false,
                },
            );
            // The judged body is UTF-8 JSON, and the upstream is told only
            // that: a client's `charset` (or any other parameter) would let
            // a server that honours it decode other text than was judged.
            push(
                &mut set,
                Set {
                    name: http::header::CONTENT_TYPE,
                    value: http::HeaderValue::from_static("application/json"),
                    append: false,
                },
            );
        }
        let sink = match &rt.snap.config.flows {
            Some(f) => {
                warden_filters::guards::flow::sink_server(f, rt.snap.flow_catalog.get(&server.name))
            }
            None => false,
        };
        Ok(Rewrite {
            uri,
            sink,
            direct: server.composed.is_none(),
            api_key_header: rt
                .snap
                .config
                .identity
                .as_ref()
                .map(|id| id.api_key_header.as_str()),
            framed: body_len.is_some(),
            set,
            withheld: ctx.withheld_headers.clone(),
        })
    }

    /// Whether the client's header `name` (lower case) is left out: stripped,
    /// or replaced by one the gateway sets.
    fn drops(&self, name: &http::HeaderName) -> bool {
        let n = name.as_str();
        self.drops_named(n)
            // CGI-style stacks (WSGI, PHP, Rack) read `_` as `-`: a name
            // that aliases one the gateway strips or sets goes with it.
            || (n.contains('_') && self.drops_named(&n.replace('_', "-")))
    }

    fn drops_named(&self, n: &str) -> bool {
        (self.sink && !PROTOCOL.contains(&n))
            || stripped(n, self.direct, self.api_key_header, self.framed)
            || self.set.iter().any(|s| !s.append && s.name.as_str() == n)
            || self.withheld.iter().any(|w| w.as_str() == n)
    }

    /// Applies the rewrite to a Pingora request header.
    pub fn apply(&self, req: &mut pingora::http::RequestHeader) -> pingora::Result<()> {
        req.set_uri(self.uri.clone());
        let gone: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|name| self.drops(name))
            .cloned()
            .collect();
        for name in gone {
            req.remove_header(&name);
        }
        for s in &self.set {
            if s.append {
                req.append_header(s.name.clone(), s.value.clone())?;
            } else {
                req.insert_header(s.name.clone(), s.value.clone())?;
            }
        }
        Ok(())
    }

    /// Writes the HTTP/1.1 request head for the client's request `client`
    /// into `buf`: what [`Rewrite::apply`] makes of it, in one pass, without
    /// copying the client's header first.
    pub fn h1_head(&self, client: &pingora::http::RequestHeader, buf: &mut bytes::BytesMut) {
        let target = self.uri.path_and_query().map_or("/", |p| p.as_str());
        buf.extend_from_slice(client.method.as_str().as_bytes());
        buf.extend_from_slice(b" ");
        buf.extend_from_slice(target.as_bytes());
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &http::HeaderName, value: &http::HeaderValue| {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        };
        for (name, value) in client.headers.iter() {
            if !self.drops(name) {
                line(name, value);
            }
        }
        for s in &self.set {
            line(&s.name, &s.value);
        }
        buf.extend_from_slice(b"\r\n");
    }
}

/// Whether a client header (by its lower-case `name`) must not reach the
/// upstream as the client sent it:
/// - the gateway's own headers (`x-warden-*`: between a virtual server and
///   its members, to a stdio bridge), whatever a client sends in them;
/// - hop-by-hop headers (`Connection`, `Keep-Alive`, `Proxy-Connection`,
///   `TE`, `Trailer`, `Upgrade`): for the gateway's own connection. Names
///   a client lists in `Connection` are not removed for it: what the
///   gateway judged (a session id, say) is what the upstream gets;
/// - the client's credentials (`Authorization`, `Proxy-Authorization`, the
///   API-key header), which are for the gateway — except on a virtual
///   server's leg, whose aggregator calls each member through the gateway
///   with them, so that each member leg authenticates anew;
/// - the caller's justification (for policy and audit, where it is
///   DLP-redacted; never sent on as free text), likewise;
/// - `Cookie` and the browser's `Origin`;
/// - `Last-Event-ID`: the client holds a sealed token; the server's own id
///   goes up only when it opens for this caller (`resume_from`);
/// - `Mcp-Session-Id`: the session id goes up as the gateway read and
///   checked it (`RequestCtx::session_id`), never as the client wrote it;
/// - `Mcp-Param-*`: mirrored argument headers go upstream only as judged
///   against the forwarded body;
/// - `Expect` (the body has been read and judged) and, for a judged body,
///   `Transfer-Encoding` (it is sent with its length), and
///   `Content-Encoding` (a coded body is refused; `identity` says nothing);
/// - what proxies tell a server about the client (`Forwarded`,
///   `X-Forwarded-*`, `X-Real-IP`, `X-Client-IP`, `True-Client-IP`,
///   `CF-Connecting-IP`): a client's own would be taken for the gateway's
///   word by a server that trusts its proxy (an address allowlist, a rate
///   limit, a host it builds URLs from).
///
/// `direct`: not a virtual server's leg.
fn stripped(n: &str, direct: bool, api_key_header: Option<&str>, framed: bool) -> bool {
    (n.starts_with("x-warden-") && (direct || n != JUSTIFICATION))
        || matches!(
            n,
            "cookie"
                | "origin"
                | "last-event-id"
                | "mcp-session-id"
                | "expect"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "upgrade"
                | "content-encoding"
                | "forwarded"
                | "x-real-ip"
                | "x-client-ip"
                | "true-client-ip"
                | "cf-connecting-ip"
        )
        || n.starts_with("x-forwarded-")
        || n.starts_with(warden_filters::protocol::mcp::H_PARAM_PREFIX)
        || (framed && n == "transfer-encoding")
        || (direct
            && (matches!(n, "authorization" | "proxy-authorization")
                || api_key_header.is_some_and(|h| n.eq_ignore_ascii_case(h))))
}

/// Whether the client's header `name` (lower case) can reach an upstream
/// with the value the client sent, on any leg: what DLP must judge (see
/// `metadata`). Not the headers stripped on a direct route (credentials for
/// the gateway, which a virtual server's member leg strips in turn), nor
/// those the gateway always replaces (`Host`, framing, `Accept-Encoding`,
/// a sealed `Mcp-Session-Id`).
pub fn forwarded(name: &str, api_key_header: Option<&str>, session_sealed: bool) -> bool {
    let kept = |n: &str| {
        if n == "mcp-session-id" {
            // Sent on as the gateway read it: the client's own value
            // unless it was a sealed id, opened to the server's.
            return !session_sealed;
        }
        !(stripped(n, true, api_key_header, true)
            || matches!(n, "host" | "content-length" | "accept-encoding"))
    };
    kept(name) && (!name.contains('_') || kept(&name.replace('_', "-")))
}

/// The caller's justification, for policy and audit (see [`stripped`]).
const JUSTIFICATION: &str = "x-warden-justification";

#[cfg(test)]
mod tests {
    use super::{Rewrite, Set};

    fn request() -> pingora::http::RequestHeader {
        let mut r = pingora::http::RequestHeader::build("POST", b"/mcp", None).expect("header");
        for (n, v) in [
            ("Host", "gateway"),
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer t"),
            ("Proxy-Authorization", "Basic x"),
            ("X-Api-Key", "wk_1"),
            ("Cookie", "a=b"),
            ("Origin", "https://evil.example"),
            ("Expect", "100-continue"),
            ("Transfer-Encoding", "chunked"),
            ("X-Warden-Justification", "INC-1"),
            ("Mcp-Param-Region", "eu"),
            ("mcp-param-other", "x"),
            ("X-Warden-Virtual", "forged"),
            ("X-Warden-Virtual-Source", "10.0.0.1"),
            ("X-Warden-Virtual-Owner", "forged"),
            ("X-Warden-Bridge", "forged"),
            ("X-Warden-Bridge-Owner", "forged"),
            ("X-Warden-Anything", "forged"),
            ("Connection", "keep-alive, mcp-session-id, authorization"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "x-late"),
            ("Upgrade", "websocket"),
            ("Mcp-Session-Id", "s1"),
            // DLP withheld it (see `metadata`).
            ("X-Withheld", "123-45-6789"),
            ("Accept", "application/json, text/event-stream"),
            // What the client says about itself as a proxy would.
            ("X-Forwarded-For", "10.0.0.7"),
            ("X-Forwarded-Host", "admin.internal"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=10.0.0.7;host=admin.internal"),
            ("X-Real-IP", "10.0.0.7"),
            ("True-Client-IP", "10.0.0.7"),
            ("CF-Connecting-IP", "10.0.0.7"),
            ("Content-Encoding", "identity"),
        ] {
            r.append_header(n, v).expect("append");
        }
        r
    }

    fn rewrite(direct: bool, api_key_header: &str, framed: bool, set: Vec<Set>) -> Rewrite<'_> {
        Rewrite {
            uri: "/upstream/mcp?x=1".parse().expect("uri"),
            direct,
            api_key_header: Some(api_key_header),
            framed,
            set,
            withheld: vec![http::HeaderName::from_static("x-withheld")],
            sink: false,
        }
    }

    fn set(name: &'static str, value: &'static str, append: bool) -> Set {
        Set {
            name: http::HeaderName::from_static(name),
            value: http::HeaderValue::from_static(value),
            append,
        }
    }

    fn names(r: &pingora::http::RequestHeader) -> Vec<String> {
        let mut n: Vec<String> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
        n.sort();
        n
    }

    /// The request line, then the header lines sorted (order is not meaning).
    fn lines(wire: &[u8]) -> (String, Vec<String>) {
        let text = std::str::from_utf8(wire).expect("ascii");
        let head = text
            .strip_suffix("\r\n\r\n")
            .expect("head ends with an empty line");
        let mut it = head.split("\r\n");
        let first = it.next().expect("request line").to_owned();
        let mut rest: Vec<String> = it.map(str::to_ascii_lowercase).collect();
        rest.sort();
        (first, rest)
    }

    #[test]
    fn a_direct_leg_gets_none_of_the_clients_credentials_or_gateway_headers() {
        let mut r = request();
        // The session id goes up as the gateway read (and opened) it,
        // never as the client wrote it.
        rewrite(
            true,
            "X-API-Key",
            true,
            vec![set("mcp-session-id", "7", false)],
        )
        .apply(&mut r)
        .expect("apply");
        assert_eq!(
            names(&r),
            ["accept", "content-type", "host", "mcp-session-id"]
        );
        let sids: Vec<_> = r.headers.get_all("mcp-session-id").iter().collect();
        assert_eq!(sids, ["7"]);
    }

    #[test]
    fn a_virtual_leg_keeps_the_callers_credentials_for_its_member_legs() {
        let mut r = request();
        rewrite(
            false,
            "x-api-key",
            false,
            vec![set("mcp-session-id", "s1", false)],
        )
        .apply(&mut r)
        .expect("apply");
        assert_eq!(
            names(&r),
            [
                "accept",
                "authorization",
                "content-type",
                "host",
                "mcp-session-id",
                "proxy-authorization",
                "transfer-encoding",
                "x-api-key",
                "x-warden-justification"
            ]
        );
    }

    /// A server that is a sink as a whole (information flow) gets none of
    /// the client's headers but the protocol's: a header is a channel the
    /// flow guard never judges. The gateway's own (the session id it
    /// checked, `Host`, mirrored arguments) are set as on any leg.
    #[test]
    fn a_sink_server_gets_only_the_protocols_headers() {
        let mut r = request();
        for (n, v) in [
            ("X-Exfil", "employee 7 salary 212000"),
            ("User-Agent", "employee-7"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("MCP-Protocol-Version", "2025-11-25"),
            ("Mcp-Method", "tools/call"),
            ("x_exfil", "employee 7"),
        ] {
            r.append_header(n, v).expect("append");
        }
        let mut rw = rewrite(
            true,
            "x-api-key",
            true,
            vec![
                set("host", "upstream:1", false),
                set("mcp-session-id", "7", false),
                set("mcp-param-region", "eu", true),
            ],
        );
        rw.sink = true;
        rw.apply(&mut r).expect("apply");
        assert_eq!(
            names(&r),
            [
                "accept",
                "content-type",
                "host",
                "mcp-method",
                "mcp-param-region",
                "mcp-protocol-version",
                "mcp-session-id"
            ]
        );
        let mut wire = bytes::BytesMut::new();
        rw.h1_head(&request(), &mut wire);
        let (_, lines) = lines(&wire);
        assert!(lines.iter().all(|l| !l.starts_with("x-")), "{lines:?}");
    }

    /// The gateway's own header names are valid lower-case names
    /// (`from_static` would panic on a call otherwise).
    #[test]
    fn the_gateways_own_header_names_are_valid() {
        for n in [
            warden_local_servers::aggregate::SECRET_HEADER,
            warden_local_servers::aggregate::SOURCE_HEADER,
            warden_local_servers::aggregate::OWNER_HEADER,
            warden_local_servers::aggregate::FLOW_HEADER,
            warden_local_servers::stdio::SECRET_HEADER,
            warden_local_servers::stdio::OWNER_HEADER,
            "traceparent",
            "mcp-session-id",
            warden_filters::protocol::mcp::H_NAME,
        ] {
            assert_eq!(super::fixed(n).as_str(), n);
        }
    }

    /// The one-pass HTTP/1.1 head is the head Pingora writes for the
    /// rewritten header: same request line, same headers, on both legs,
    /// with gateway headers replacing the client's of the same name and
    /// mirrored argument headers added.
    #[test]
    fn the_one_pass_head_is_what_pingora_writes_for_the_rewritten_header() {
        for direct in [true, false] {
            let rw = rewrite(
                direct,
                "x-api-key",
                true,
                vec![
                    set("host", "upstream.internal:8080", false),
                    set("mcp-session-id", "sealed-upstream-id", false),
                    set("x-upstream-key", "secret", false),
                    set("mcp-param-region", "eu-west-1", true),
                    set("mcp-param-region", "us-east-1", true),
                    set("accept-encoding", "identity", false),
                    set("content-length", "42", false),
                ],
            );
            let mut r = request();
            r.set_version(http::Version::HTTP_11);
            rw.apply(&mut r).expect("apply");
            let pingora = pingora_core::protocols::http::v1::client::http_req_header_to_wire(&r)
                .expect("writable");
            let mut ours = bytes::BytesMut::new();
            rw.h1_head(&request(), &mut ours);
            let (line, headers) = lines(&ours);
            assert_eq!((line.clone(), headers.clone()), lines(&pingora));
            assert_eq!(line, "POST /upstream/mcp?x=1 HTTP/1.1");
            assert!(headers.contains(&"host: upstream.internal:8080".to_owned()));
            assert!(!headers.contains(&"host: gateway".to_owned()));
            assert!(headers.contains(&"mcp-session-id: sealed-upstream-id".to_owned()));
            assert_eq!(
                headers
                    .iter()
                    .filter(|h| h.starts_with("mcp-param-"))
                    .count(),
                2,
                "only the judged mirrored headers: {headers:?}"
            );
            assert!(!headers.iter().any(|h| h.starts_with("transfer-encoding")));
            assert!(!headers.iter().any(|h| h.starts_with("x-withheld")));
            assert_eq!(
                headers.iter().any(|h| h.starts_with("authorization")),
                !direct
            );
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::host_of;
    use std::net::SocketAddr;

    #[test]
    fn host_of_writes_what_display_writes() {
        for a in [
            "127.0.0.1:8931",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.20.3:80",
            "[::1]:8931",
            "[fe80::1%7]:443",
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ] {
            let addr: SocketAddr = a.parse().expect("a socket address");
            assert_eq!(host_of(&addr, &mut [0u8; 64]), addr.to_string(), "{a}");
        }
    }
}

//! The `ProxyHttp` implementation. Thin by design: each phase loads what it
//! needs from the context and delegates to `body`, `response`, `upstream`,
//! `respond` and the pure filters.
//!
//! Phase contract (see Pingora's phase chart):
//! - `early_request_filter` ends the header deadline and sets pipelining.
//! - `request_filter` admits the request (route, origin, authentication,
//!   session). A POST is then read, parsed and judged whole, and forwarded
//!   by `direct::forward` (the judged bytes, sent by the gateway itself, the
//!   reply judged on the way back): `Ok(true)` — the gateway wrote the
//!   response, whether the upstream's judged reply or its own answer. Only
//!   GET (the server's stream) and DELETE return `Ok(false)` and continue
//!   through Pingora's proxy loop below; they carry no body.
//! - `upstream_peer` picks a healthy replica (sticky per MCP session).
//! - `upstream_request_filter` rewrites path, Host, framing; strips the
//!   client's credentials and browser Origin.
//! - `response_filter` / `response_body_filter` judge what comes back.
//! - `fail_to_connect` / `fail_to_proxy` map failures to JSON-RPC errors.
//! - `logging` writes metrics and one audit record per MCP message.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora_proxy::{ProxyHttp, Session};
use warden_filters::{mcp, parse, plan_request, Forward, Parsed, Refusal};

use crate::audit::AuditRecord;
use crate::body::read_whole;
use crate::ctx::{ExchangeKind, RequestCtx};
use crate::metrics::metrics;
use crate::respond::{write_answers, write_refusal};
use crate::response;
use crate::state::Gateway;
use crate::upstream::peer;

pub struct WardenProxy {
    pub gateway: Arc<Gateway>,
    /// Upstream connector for bodies Pingora cannot replay (see `direct`).
    pub connector: pingora_core::connectors::http::Connector,
}

impl WardenProxy {
    /// Opens a sealed session id (header) or legacy endpoint query: checks the
    /// binding to the principal and the server, and puts the upstream's own id
    /// and replica in the context. A token that does not open → 404.
    fn unseal_session(&self, ctx: &mut RequestCtx, server: &str) -> Result<(), Refusal> {
        let Some(sealer) = ctx.rt.as_ref().and_then(|rt| rt.sealer.clone()) else {
            return Ok(());
        };
        let unknown = Refusal::session_unknown;
        let owner = crate::sessions::owner_key(&ctx.principal);
        let check =
            |p: &crate::seal::SealedSession| -> Result<Option<std::net::SocketAddr>, Refusal> {
                if p.server != server {
                    return Err(unknown());
                }
                if p.owner != owner {
                    return Err(Refusal::session_principal_mismatch());
                }
                Ok(p.upstream.parse().ok())
            };
        if let Some(token) = ctx.session_id.clone() {
            let p = sealer.open(&token).ok_or_else(unknown)?;
            ctx.sealed_upstream = check(&p)?;
            ctx.session_id = Some(p.session);
            ctx.session_sealed = true;
        } else if ctx.exchange == ExchangeKind::Post {
            // Legacy HTTP+SSE: the endpoint's query was sealed into `ws=`.
            if let Some((path, query)) = ctx.upstream_uri.split_once('?') {
                if let Some(token) = query.split('&').find_map(|kv| kv.strip_prefix("ws=")) {
                    let p = sealer.open(token).ok_or_else(unknown)?;
                    ctx.sealed_upstream = check(&p)?;
                    ctx.upstream_uri = format!("{path}?{}", p.session);
                }
            }
        }
        Ok(())
    }

    pub fn new(gateway: Arc<Gateway>) -> Self {
        WardenProxy {
            gateway,
            connector: pingora_core::connectors::http::Connector::new(None),
        }
    }
}

enum Prepared {
    /// Forward to the upstream.
    Proxy,
    /// The gateway answered; the status it used.
    Answered(u16),
}

/// The W3C trace id of the caller's `traceparent`, or a fresh one.
fn trace_id(req: &RequestHeader, request_id: u64) -> String {
    if let Some(tp) = header_str(req, "traceparent") {
        let mut parts = tp.split('-');
        if let (Some(_), Some(id)) = (parts.next(), parts.next()) {
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32) {
                return id.to_ascii_lowercase();
            }
        }
    }
    format!("{:016x}{:016x}", rand::random::<u64>(), request_id)
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

impl WardenProxy {
    async fn prepare(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Prepared, Refusal> {
        let rt = self.gateway.runtime();
        ctx.rt = Some(rt.clone());
        let cfg = &rt.snap.config;
        let req = session.req_header();
        if self.gateway.telemetry.get().is_some() {
            ctx.trace = Some(crate::otel::TraceIds::from_header(header_str(
                req,
                "traceparent",
            )));
        }

        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > cfg.limits.max_header_bytes {
            return Err(Refusal::new(
                431,
                "headers_too_large",
                warden_filters::JsonRpcError::new(
                    warden_filters::codes::REFUSED,
                    format!(
                        "Request headers exceed {} bytes",
                        cfg.limits.max_header_bytes
                    ),
                ),
            ));
        }
        let host = req
            .uri
            .host()
            .map(str::to_owned)
            .or_else(|| header_str(req, "host").map(str::to_owned));
        let path = req.uri.path();
        if let Some(suffix) = path.strip_prefix(crate::auth::WELL_KNOWN) {
            if (suffix.is_empty() || suffix.starts_with('/')) && req.method == http::Method::GET {
                let suffix = suffix.to_owned();
                let id = rt.snap.auth.as_ref().map(|a| a.identity());
                let status = crate::auth::write_metadata(session, id, &suffix)
                    .await
                    .map_err(|e| Refusal::internal(&e.to_string()))?;
                return Ok(Prepared::Answered(status));
            }
        }
        let Some(route_pos) = rt.snap.route_index(host.as_deref(), path) else {
            return Err(Refusal::no_route());
        };
        let route = &rt.snap.routes[route_pos];
        ctx.route = Some(route_pos);
        ctx.server = Some(route.server);
        if let Some(origin) = req.headers.get("origin") {
            let o = origin.to_str().unwrap_or("");
            if !cfg.allowed_origins.contains(o) {
                return Err(Refusal::origin(o));
            }
        }
        ctx.exchange = match req.method.as_str() {
            "POST" => ExchangeKind::Post,
            "GET" => ExchangeKind::Get,
            "DELETE" => ExchangeKind::Delete,
            m => return Err(Refusal::method_not_allowed(m)),
        };
        // A header that mirrors or scopes the body must be unambiguous.
        for name in [
            "mcp-session-id",
            "mcp-protocol-version",
            mcp::H_METHOD,
            mcp::H_NAME,
            "x-warden-justification",
        ] {
            if req.headers.get_all(name).iter().nth(1).is_some() {
                return Err(Refusal::bad_header(name, "sent more than once"));
            }
        }
        if mcp::duplicate_param_header(req.headers.iter().map(|(k, _)| k.as_str())).is_some() {
            return Err(Refusal::bad_header("Mcp-Param-*", "sent more than once"));
        }
        // `Mcp-Param-*` mirror arguments into headers: each must decode to one
        // value, or it cannot be compared with the body (2026-07-28).
        for (name, value) in req.headers.iter() {
            let n = name.as_str();
            // `Mcp_Name` and the like: servers behind CGI-style stacks read
            // them as the real header (both become HTTP_MCP_NAME).
            if n.contains('_') && n.replace('_', "-").starts_with("mcp-") {
                return Err(Refusal::bad_header(
                    "Mcp-*",
                    "a name spelled with `_` is ambiguous",
                ));
            }
            if n.len() > mcp::H_PARAM_PREFIX.len() && n.starts_with(mcp::H_PARAM_PREFIX) {
                let Some(v) = mcp::decode_header_value(value.as_bytes()) else {
                    return Err(Refusal::header_mismatch(
                        None,
                        "an Mcp-Param-* header value is not valid".into(),
                    ));
                };
                ctx.params_in
                    .push((n[mcp::H_PARAM_PREFIX.len()..].to_owned(), v));
            }
        }
        ctx.session_id = header_str(req, "mcp-session-id").map(str::to_owned);
        ctx.protocol_version = header_str(req, "mcp-protocol-version").map(str::to_owned);
        ctx.justification = header_str(req, "x-warden-justification").map(str::to_owned);
        ctx.source_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.upstream_uri = match req.uri.query() {
            Some(q) => format!("{}?{}", route.upstream_path(path), q),
            None => route.upstream_path(path),
        };
        if let Some(auth) = &rt.snap.auth {
            ctx.principal = crate::auth::authenticate(auth, session, path)?;
        }
        let server = &cfg.servers[route.server];
        self.unseal_session(ctx, &server.name)?;
        // A session belongs to the principal that opened it.
        if let Some(key) = ctx.session_key() {
            if let Some(owner) = self.gateway.sessions.owner(&server.name, &key) {
                if *owner != crate::sessions::owner_key(&ctx.principal) {
                    return Err(Refusal::session_principal_mismatch());
                }
            }
        }

        if ctx.exchange != ExchangeKind::Post {
            // GET and DELETE carry no MCP message; a body here would reach the upstream unjudged.
            let has_body = req.headers.contains_key(http::header::TRANSFER_ENCODING)
                || req
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0");
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
            return Ok(Prepared::Proxy);
        }

        let ct = header_str(req, "content-type").unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(Refusal::unsupported_media(ct));
        }
        let method_hdr = req
            .headers
            .get(mcp::H_METHOD)
            .map(|v| v.as_bytes().to_vec());
        let name_hdr = req.headers.get(mcp::H_NAME).map(|v| v.as_bytes().to_vec());

        let body = read_whole(
            session,
            cfg.limits.max_request_body,
            cfg.timeouts.request_body,
            cfg.limits.min_request_body_rate,
        )
        .await?;
        ctx.body_len_in = body.len();
        let mut decls: Vec<mcp::ParamDecl> = Vec::new();
        let parsed = parse(&body, rt.snap.parse_limits).map_err(|(id, e)| Refusal::parse(id, e))?;
        // Fail closed: no new call while the audit trail cannot record it.
        self.gateway.audit.admit().map_err(|r| match &parsed {
            Parsed::Single(env) => r.with_id(env.id.clone()),
            Parsed::Batch(_) => r,
        })?;
        match &parsed {
            Parsed::Single(env) => {
                mcp::check_headers(method_hdr.as_deref(), name_hdr.as_deref(), env)?;
                let modern = method_hdr.is_some()
                    || ctx
                        .protocol_version
                        .as_deref()
                        .is_some_and(|v| v >= "2026-07-28");
                decls = self.check_params(ctx, env, &body, &server.name, modern)?;
                ctx.request_method = env.method.clone();
                ctx.request_target = env.name.clone().or_else(|| env.uri.clone());
            }
            Parsed::Batch(_)
                if method_hdr.is_some() || name_hdr.is_some() || !ctx.params_in.is_empty() =>
            {
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
        let kept_params = self.undeclared_params(ctx, &decls, &rt.snap)?;
        // A client response answers a server→client request the gateway let
        // through on this session, once; anything else is refused.
        let responses: Vec<&warden_filters::Envelope> = match &parsed {
            Parsed::Single(env) => vec![env],
            Parsed::Batch(items) => items.iter().filter_map(|i| i.as_ref().ok()).collect(),
        }
        .into_iter()
        .filter(|e| e.kind == warden_filters::Kind::Response)
        .collect();
        if !responses.is_empty() {
            let (owner, session) = crate::response::ledger_keys(ctx);
            let scope = crate::ledger::Scope {
                server: &server.name,
                owner: &owner,
                session: &session,
            };
            for env in responses {
                let settled = env
                    .id
                    .as_ref()
                    .is_some_and(|id| self.gateway.ledger.settle(&scope, id));
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
        // Global quotas: reserve their units in the shared store first (this
        // waits on Redis only when this replica's lease for a key is empty).
        let mut global = warden_filters::quota::GlobalVerdicts::new();
        let demands = {
            let fctx = ctx.exchange(server, cfg.audit.include_arguments, None);
            warden_filters::quota::global_demands(&cfg.quotas, &cfg.catalog, &parsed, &fctx)
        };
        if !demands.is_empty() {
            let store = rt.quota_store.clone();
            for d in demands {
                let v = match &store {
                    Some(s) => s.reserve(&d, ctx.now).await,
                    None => warden_filters::quota::GlobalVerdict::Unavailable,
                };
                global.insert(d.key, v);
            }
        }
        let mut plan = {
            let fctx = ctx.exchange(
                server,
                cfg.audit.include_arguments,
                Some(&global).filter(|g| !g.is_empty()),
            );
            plan_request(&body, &parsed, &rt.snap.chain, &fctx)
        };
        // Replies are judged by the request they answer.
        ctx.pending = plan
            .records
            .iter()
            .filter(|r| {
                r.kind == Some(warden_filters::Kind::Request)
                    && matches!(
                        r.outcome,
                        warden_filters::Outcome::Forwarded
                            | warden_filters::Outcome::Mutated { .. }
                    )
            })
            .filter_map(|r| {
                Some(crate::ctx::PendingReply {
                    id: r.id.clone()?,
                    asked: crate::ledger::Asked {
                        method: r.method.clone()?,
                        target: r.target.clone(),
                        args_digest: r.args_digest.clone(),
                        task: r.task.clone(),
                    },
                    answered: false,
                })
            })
            .collect();
        // The forwarded bytes move into the context; the plan keeps answers and records.
        match std::mem::replace(&mut plan.forward, Forward::Nothing) {
            Forward::Original => ctx.body = Some(body),
            Forward::Rewritten(b) => {
                // `Mcp-Name` follows the forwarded body (a task id the
                // gateway unsealed, say), as the upstream checks it there.
                if name_hdr.is_some() {
                    if let Ok(Parsed::Single(e)) = parse(&b, rt.snap.parse_limits) {
                        ctx.name_out = mcp::expected_name(&e).map(mcp::encode_header_value);
                    }
                }
                ctx.body = Some(Bytes::from(b))
            }
            Forward::Nothing => {
                if let Some(missing) = plan.step_up.take() {
                    // Step-up: an HTTP answer the client's OAuth layer acts on.
                    let id = match &parsed {
                        Parsed::Single(e) => e.id.clone(),
                        Parsed::Batch(_) => None,
                    };
                    let identity = rt.snap.auth.as_ref().map(|a| a.identity());
                    let refusal =
                        crate::auth::step_up(identity, session.req_header().uri.path(), &missing)
                            .with_id(id);
                    ctx.plan = Some(plan);
                    return Err(refusal);
                }
                let modern = ctx
                    .protocol_version
                    .as_deref()
                    .is_some_and(|v| v >= "2026-07-28");
                let status = write_answers(session, &plan.answers, plan.batch, modern)
                    .await
                    .map_err(|e| Refusal::internal(&e.to_string()))?;
                ctx.plan = Some(plan);
                return Ok(Prepared::Answered(status));
            }
        }
        ctx.plan = Some(plan);
        if !decls.is_empty() || !ctx.params_in.is_empty() {
            // Mirrored headers go upstream as the forwarded body says, so a
            // redacted argument never travels on in its header.
            let forwarded = ctx.body.as_deref().unwrap_or_default();
            let args = arguments_json(forwarded);
            let mut out = mcp::mirrored_headers(&decls, args.as_ref());
            out.extend(kept_params);
            ctx.params_out = Some(out);
        }
        // Send exactly the judged bytes ourselves (see `direct`): a judged
        // JSON reply then leaves in one write with its exact length, and a
        // body larger than Pingora's replay window needs no replay.
        let judged = ctx.body.clone().unwrap_or_default();
        match crate::direct::forward(&self.gateway, &self.connector, session, ctx, judged).await {
            Ok(status) => Ok(Prepared::Answered(status)),
            Err(mut r) => {
                metrics()
                    .upstream_errors
                    .with_label_values(&[ctx.server_name(), r.reason])
                    .inc();
                if let Some(p) = ctx.plan.as_ref().filter(|p| !p.batch) {
                    r.id = p.records.first().and_then(|rec| rec.id.clone());
                }
                Err(r)
            }
        }
    }

    /// Checks the `Mcp-Param-*` headers of a `tools/call` against the
    /// arguments the listed definition mirrors; returns those declarations.
    fn check_params(
        &self,
        ctx: &RequestCtx,
        env: &warden_filters::Envelope,
        body: &[u8],
        server: &str,
        modern: bool,
    ) -> Result<Vec<mcp::ParamDecl>, Refusal> {
        let decls = match (env.method.as_deref(), env.name.as_deref()) {
            (Some("tools/call"), Some(tool)) => self.gateway.shared.params.get(server, tool),
            _ => None,
        };
        let decls = match decls.as_deref() {
            Some(Ok(d)) => d.clone(),
            _ => return Ok(Vec::new()),
        };
        let msg = warden_filters::Message::new(env, &body[env.span.clone()]);
        mcp::check_params(&decls, msg.arguments(), &ctx.params_in, modern)
            .map_err(|m| Refusal::header_mismatch(env.id.clone(), m))?;
        Ok(decls)
    }

    /// `Mcp-Param-*` headers no declaration covers: DLP-scanned like an
    /// argument (a finding refuses the request) and kept, or stripped, as the
    /// bundle says. Returns those to forward (name, encoded value).
    fn undeclared_params(
        &self,
        ctx: &RequestCtx,
        decls: &[mcp::ParamDecl],
        snap: &warden_filters::Snapshot,
    ) -> Result<Vec<(String, String)>, Refusal> {
        let mut kept = Vec::new();
        for (name, value) in &ctx.params_in {
            if decls.iter().any(|d| d.header == *name) {
                continue;
            }
            if snap.config.undeclared_params == warden_config::model::UndeclaredParams::Strip {
                continue;
            }
            let mut hits = Vec::new();
            snap.redactor.scan_str(value, &mut hits);
            // Names arrive lower-cased; detectors are case-sensitive.
            snap.redactor.scan_str(name, &mut hits);
            snap.redactor
                .scan_str(&name.to_ascii_uppercase(), &mut hits);
            if !hits.is_empty() {
                return Err(Refusal::bad_header(
                    "Mcp-Param-*",
                    "carries data DLP refuses in a header",
                ));
            }
            kept.push((name.clone(), mcp::encode_header_value(value)));
        }
        Ok(kept)
    }

    fn audit_base(&self, session: &Session, ctx: &RequestCtx, status: u16) -> AuditRecord {
        let req = session.req_header();
        AuditRecord {
            ts: std::time::SystemTime::now(),
            revision: ctx
                .rt
                .as_ref()
                .map(|r| r.snap.revision.clone())
                .unwrap_or_default(),
            request_id: ctx.request_id,
            trace_id: match &ctx.trace {
                Some(t) => t.trace_hex(),
                None => trace_id(req, ctx.request_id),
            },
            principal: ctx.principal.id.clone(),
            tenant: ctx.principal.tenant.clone(),
            auth: ctx.principal.auth.as_str(),
            source_ip: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip().to_string()),
            server: ctx.server_name().to_owned(),
            group: ctx.group_name().to_owned(),
            http_method: req.method.to_string(),
            path: req.uri.path().chars().take(512).collect(),
            session_id: ctx.session_id.clone(),
            direction: "request",
            jsonrpc_id: None,
            method: None,
            tool: None,
            risk: None,
            task: None,
            outcome: String::new(),
            decided_by: None,
            reason: None,
            args_digest: None,
            arguments: None,
            dlp: Vec::new(),
            upstream: ctx.chosen.map(|a| a.to_string()),
            upstream_status: ctx.upstream_status,
            status,
            latency_us: ctx.start.elapsed().as_micros() as u64,
        }
    }
}

#[async_trait]
impl ProxyHttp for WardenProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn early_request_filter(&self, session: &mut Session, _: &mut RequestCtx) -> Result<()> {
        // The header is complete: its deadline no longer applies. Pipelined
        // HTTP/1.1 requests are answered one after another, in order.
        if let Some(g) = crate::conn::guard_of(session) {
            g.header_done();
        }
        // Only for POST: a stream's connection must keep watching for the
        // client's close (a pipelined byte would stop that).
        if !session.as_downstream().is_http2() {
            let post = session.req_header().method == http::Method::POST;
            session.as_downstream_mut().set_pipelining_enabled(post);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = self.gateway.next_request_id();
        ctx.downstream_h2 = session.as_downstream().is_http2();
        metrics().inflight.inc();
        ctx.counted_inflight = true;
        match self.prepare(session, ctx).await {
            Ok(Prepared::Proxy) => Ok(false),
            Ok(Prepared::Answered(status)) => {
                ctx.local_status = Some(status);
                Ok(true)
            }
            Err(refusal) => {
                write_refusal(session, &refusal).await?;
                ctx.local_status = Some(refusal.status);
                ctx.refusal = Some(refusal);
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(rt), Some(server)) = (ctx.rt.clone(), ctx.server) else {
            return Error::e_explain(ErrorType::InternalError, "no route resolved");
        };
        let s = &rt.snap.config.servers[server];
        let sticky = ctx.replica(&self.gateway.sessions, &s.name);
        let Some(addr) = rt.select(server, sticky, &ctx.tried) else {
            return Error::e_explain(
                ErrorType::Custom("no_healthy_upstream"),
                format!("no healthy upstream left for `{}`", s.name),
            );
        };
        ctx.chosen = Some(addr);
        ctx.tried.push(addr);
        // A GET is the server's event stream: it may stay silent for long.
        Ok(Box::new(peer(s, addr, ctx.exchange == ExchangeKind::Get)))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(rt), Some(server), Some(addr)) = (ctx.rt.clone(), ctx.server, ctx.chosen) else {
            return Error::e_explain(ErrorType::InternalError, "upstream request without a peer");
        };
        crate::upstream::rewrite_request(
            req,
            ctx,
            &rt.snap.config.servers[server],
            addr,
            ctx.body.as_ref().map(Bytes::len),
        )?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        response::on_header(&self.gateway, ctx, resp)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        response::on_body(&self.gateway, ctx, body, end_of_stream)?;
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let name = ctx.server_name().to_owned();
        metrics()
            .upstream_errors
            .with_label_values(&[&name, "connect"])
            .inc();
        let total = ctx
            .rt
            .as_ref()
            .zip(ctx.server)
            .map_or(0, |(rt, s)| rt.snap.config.servers[s].upstreams.len());
        // Nothing was sent yet: another replica may take the request.
        if ctx.tried.len() < total {
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let server = ctx.server_name().to_owned();
        ctx.upstream_error = Some(e.to_string());
        let refusal = refusal_for(e, &server);
        let mut code = 0;
        if let Some(mut r) = refusal {
            metrics()
                .upstream_errors
                .with_label_values(&[&server, r.reason])
                .inc();
            if let Some(p) = &ctx.plan {
                if !p.batch {
                    r.id = p.records.first().and_then(|rec| rec.id.clone());
                }
            }
            // Once the response has started, the only honest signal left is to cut it.
            if session.response_written().is_none() && write_refusal(session, &r).await.is_ok() {
                code = r.status;
            }
            ctx.refusal = Some(r);
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(g) = crate::conn::guard_of(session) {
            g.exchange_done();
        }
        let m = metrics();
        if ctx.counted_inflight {
            m.inflight.dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let server = ctx.server_name().to_owned();
        let http_method = session.req_header().method.as_str().to_owned();
        m.requests
            .with_label_values(&[&server, &http_method, &status.to_string()])
            .inc();
        m.latency
            .with_label_values(&[&server, &http_method])
            .observe(ctx.start.elapsed().as_secs_f64());
        m.body_bytes
            .with_label_values(&[&server, "request"])
            .observe(ctx.body_len_in as f64);
        m.body_bytes
            .with_label_values(&[&server, "response"])
            .observe(ctx.response_bytes as f64);

        let base = self.audit_base(session, ctx, status);
        let mut out = Vec::new();
        let plan_records = ctx
            .plan
            .as_mut()
            .map(|p| std::mem::take(&mut p.records))
            .unwrap_or_default();
        let failed = e
            .map(|e| e.to_string())
            .or_else(|| ctx.upstream_error.clone());
        for (dir, list) in [
            ("request", plan_records),
            ("response", std::mem::take(&mut ctx.response_records)),
        ] {
            for mut r in list {
                // Labels and audit fields name only what the catalog knows;
                // anything else a client or server chose is bounded or redacted.
                // Known: in the catalog, or a well-formed tool name that holds
                // nothing DLP finds (and the label guard bounds how many).
                let known = r.target.as_deref().filter(|t| {
                    ctx.rt.as_ref().is_some_and(|rt| {
                        rt.snap
                            .config
                            .catalog
                            .get(&server)
                            .is_some_and(|c| c.tool(t).is_some())
                            || ((r.method.as_deref() == Some("tools/call") || r.task.is_some())
                                && warden_filters::tools::valid_name(t)
                                && rt.snap.redact_text(t, 256) == *t)
                    })
                });
                let tool = r.target.as_ref().map(|_| match known {
                    Some(t) => self.gateway.tool_labels.admit(t).to_owned(),
                    None => "other".to_owned(),
                });
                m.messages
                    .with_label_values(&[
                        &server,
                        dir,
                        crate::metrics::method_label(r.method.as_deref()),
                        tool.as_deref().unwrap_or("-"),
                        r.outcome.label(),
                    ])
                    .inc();
                let mut rec = base.clone();
                rec.direction = if dir == "request" {
                    "request"
                } else {
                    "response"
                };
                rec.jsonrpc_id = r.id.as_ref().map(|i| i.to_json());
                if r.method.as_deref() == Some("tools/call") || r.task.is_some() {
                    if let (Some(rt), Some(tool)) = (&ctx.rt, r.target.as_deref()) {
                        rec.risk = Some(
                            rt.snap
                                .config
                                .catalog
                                .get(&server)
                                .map_or(warden_config::access::Risk::Medium, |c| c.risk(tool))
                                .as_str(),
                        );
                    }
                }
                rec.method = r.method.clone();
                rec.tool = match (known, r.target.as_deref(), &ctx.rt) {
                    (Some(t), _, _) => Some(t.to_owned()),
                    (None, Some(t), Some(rt)) => Some(rt.snap.redact_text(t, 256)),
                    _ => None,
                };
                rec.outcome = r.outcome.label().to_owned();
                rec.decided_by = match &r.outcome {
                    warden_filters::Outcome::Denied { filter, .. }
                    | warden_filters::Outcome::Mutated { filter } => Some(filter),
                    _ => None,
                };
                rec.args_digest = r.args_digest.take();
                rec.task = r.task.take();
                for f in std::mem::take(&mut r.findings) {
                    m.dlp_findings
                        .with_label_values(&[&f.detector, dir, f.action])
                        .inc();
                    rec.dlp.push(crate::audit::DlpFinding {
                        detector: f.detector,
                        rule: f.rule,
                        path: f.path,
                        action: f.action,
                    });
                }
                rec.arguments = r
                    .arguments
                    .take()
                    .and_then(|a| serde_json::value::RawValue::from_string(a).ok());
                if let warden_filters::Outcome::Denied { reason, .. } = &r.outcome {
                    if let Some(limit) = reason.strip_prefix("quota_exceeded:") {
                        m.quota_denied.with_label_values(&[limit]).inc();
                    }
                }
                rec.reason = match &r.outcome {
                    warden_filters::Outcome::Denied { reason, .. } => Some(reason.clone()),
                    warden_filters::Outcome::Invalid { reason } => Some(reason.clone()),
                    _ => failed.clone(),
                };
                out.push(rec);
            }
        }
        if out.is_empty() {
            // No MCP message (GET, DELETE, or refused before parsing): one record for the exchange.
            let mut rec = base;
            rec.jsonrpc_id = ctx
                .refusal
                .as_ref()
                .and_then(|r| r.id.as_ref())
                .map(|i| i.to_json());
            rec.outcome = match (&ctx.refusal, &failed) {
                (Some(r), _) => r.reason.to_owned(),
                (None, Some(_)) => "failed".to_owned(),
                (None, None) => "forwarded".to_owned(),
            };
            rec.reason = ctx
                .refusal
                .as_ref()
                .map(|r| r.error.message.clone())
                .or(failed);
            out.push(rec);
        } else if let Some(r) = &ctx.refusal {
            for rec in &mut out {
                rec.outcome = r.reason.to_owned();
                rec.reason = Some(r.error.message.clone());
            }
        }
        if let (Some(tel), Some(ids)) = (self.gateway.telemetry.get(), ctx.trace) {
            let start = std::time::SystemTime::now() - ctx.start.elapsed();
            let end = std::time::SystemTime::now();
            for (i, rec) in out.iter().enumerate() {
                let mut attrs = vec![
                    ("mcp.server", rec.server.clone()),
                    ("enduser.id", rec.principal.clone()),
                    ("warden.tenant", rec.tenant.clone()),
                    ("warden.outcome", rec.outcome.clone()),
                    ("warden.request_id", rec.request_id.to_string()),
                    ("warden.direction", rec.direction.to_owned()),
                ];
                let opt = [
                    ("mcp.method", rec.method.clone()),
                    ("mcp.tool", rec.tool.clone()),
                    ("mcp.session_id", rec.session_id.clone()),
                    ("warden.decided_by", rec.decided_by.map(str::to_owned)),
                    ("warden.reason", rec.reason.clone()),
                    ("warden.risk", rec.risk.map(str::to_owned)),
                ];
                attrs.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
                tel.record(crate::otel::MessageSpan {
                    name: format!("mcp {}", rec.method.as_deref().unwrap_or(&http_method)),
                    ids,
                    own_span: i == 0,
                    start,
                    end,
                    attributes: attrs,
                    status,
                    error: (status >= 500 || rec.outcome == "failed")
                        .then_some(rec.outcome.as_str()),
                });
            }
        }
        for rec in out {
            self.gateway.audit.record(rec).await;
        }
    }
}

/// The answer for an error raised while talking to the upstream (`None`: the
/// downstream went away, nobody is left to answer).
pub(crate) fn refusal_for(e: &Error, server: &str) -> Option<Refusal> {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            Some(Refusal::upstream_timeout(server))
        }
        ErrorType::Custom("no_healthy_upstream") => {
            Some(Refusal::upstream_unavailable(server, "no healthy replica"))
        }
        ErrorType::Custom("compressed_response") => Some(Refusal::upstream_protocol(
            "upstream_compressed",
            format!("MCP server `{server}` sent a compressed response; Warden cannot inspect it"),
        )),
        ErrorType::Custom(
            reason @ ("unsupported_content_type"
            | "duplicate_session_header"
            | "bad_session_header"
            | "bad_sse"
            | "endpoint_refused"
            | "endpoint_outside_prefix"),
        ) => Some(Refusal::upstream_protocol(
            reason,
            format!(
                "MCP server `{server}` sent a reply Warden cannot judge ({}); it was withheld",
                reason.replace('_', " ")
            ),
        )),
        ErrorType::Custom("response_too_large") => Some(Refusal::upstream_protocol(
            "upstream_response_too_large",
            format!("MCP server `{server}` sent a response larger than limits.max_response_body"),
        )),
        _ => match e.esource() {
            ErrorSource::Upstream => Some(Refusal::upstream_unavailable(
                server,
                &e.etype().as_str().to_ascii_lowercase(),
            )),
            ErrorSource::Downstream => None,
            ErrorSource::Internal | ErrorSource::Unset => {
                Some(Refusal::internal(e.etype().as_str()))
            }
        },
    }
}

/// `params.arguments` of one judged message, as JSON (`None`: absent).
fn arguments_json(message: &[u8]) -> Option<serde_json::Value> {
    let at = warden_filters::jsonrpc::locate(message)?.arguments?;
    serde_json::from_slice(message.get(at)?).ok()
}

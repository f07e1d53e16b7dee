//! The `ProxyHttp` phases, and nothing else: each one delegates.
//!
//! Phase contract (see Pingora's phase chart):
//! - `early_request_filter` ends the header deadline and sets pipelining.
//! - `request_filter` admits the request (`admission`: route, origin,
//!   authentication, session). A POST is then read, parsed and judged whole
//!   (`judging`) and forwarded by the gateway itself
//!   (`forwarding::forward_judged`: the judged bytes sent, the reply judged on
//!   the way back): `Ok(true)` — the gateway wrote the response, whether the
//!   upstream's judged reply or its own answer. Only GET (the server's
//!   stream) and DELETE return `Ok(false)` and continue through Pingora's
//!   proxy loop below; they carry no body.
//! - `upstream_peer` picks a replica (`forwarding::next_replica`, sticky per
//!   MCP session), as the POST path does.
//! - `upstream_request_filter` rewrites path, Host, framing; strips the
//!   client's credentials and browser Origin (`upstream::rewrite_request`).
//! - `response_filter` / `response_body_filter` judge what comes back
//!   (`response`).
//! - `fail_to_connect` / `fail_to_proxy` apply the retry rule and map
//!   failures to JSON-RPC errors (`forwarding`), as the POST path does.
//! - `logging` writes metrics, one audit record per MCP message and spans
//!   (`recording`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora_proxy::{ProxyHttp, Session};
use warden_filters::Refusal;

use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::admission::{admit, Admitted};
use crate::pipeline::answers::write_refusal;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::judging::{judge, Judged};

pub struct WardenProxy {
    pub gateway: Arc<Gateway>,
    /// How judged POST bodies reach upstreams (see `forwarding`).
    pub upstreams: crate::pipeline::forwarding::Upstreams,
}

impl WardenProxy {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        WardenProxy {
            gateway,
            upstreams: crate::pipeline::forwarding::Upstreams::new(),
        }
    }

    /// Admission, then for a POST judging and forwarding. `Ok(None)`: a
    /// GET/DELETE to proxy; `Ok(Some(status))`: the response was written.
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<u16>, Refusal> {
        let gw = &self.gateway;
        match admit(gw, session, ctx).await? {
            Admitted::Stream => {
                crate::identity::outbound::prepare(&gw.tokens, session, ctx).await?;
                Ok(None)
            }
            Admitted::Answered(status) => Ok(Some(status)),
            // The upstream identity is fetched while judging, before
            // anything is spent on the call (quota, an approval).
            Admitted::Post => match judge(gw, session, ctx).await? {
                Judged::Answered(status) => Ok(Some(status)),
                Judged::Forward(body) => crate::pipeline::forwarding::forward_judged(
                    gw,
                    &self.upstreams,
                    session,
                    ctx,
                    body,
                )
                .await
                .map(Some),
            },
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
        if let Some(g) = crate::app::conn::guard_of(session) {
            g.header_done();
        }
        // Only for POST: a stream's connection must keep watching for the
        // client's close (a pipelined byte would stop that).
        if !session.as_downstream().is_http2() {
            let post = session.req_header().method == http::Method::POST;
            session.as_downstream_mut().set_pipelining_enabled(post);
            // Leaving (upgrade or drain): this response says `Connection:
            // close`, so the client moves to a connection the successor
            // accepts, instead of writing onto one this process is closing.
            if self.gateway.is_leaving() {
                session.set_keepalive(None);
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = self.gateway.next_request_id();
        ctx.downstream_h2 = session.as_downstream().is_http2();
        metrics().inflight.inc();
        ctx.counted_inflight = true;
        match self.handle(session, ctx).await {
            Ok(None) => Ok(false),
            Ok(Some(status)) => {
                ctx.local_status = Some(status);
                Ok(true)
            }
            Err(refusal) => {
                // What was refused, as far as its body tells (method, tool or
                // resource), for the audit record: read within the body
                // limit and a second, judged by nothing, forwarded nowhere.
                if ctx.refused_message.is_none() && refusal.status != 413 {
                    ctx.refused_message =
                        crate::pipeline::answers::read_refused(session, ctx).await;
                }
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
        match crate::pipeline::forwarding::next_replica(&self.gateway, ctx) {
            Some((_, peer)) => Ok(Box::new(peer)),
            None => Error::e_explain(
                ErrorType::Custom("no_healthy_upstream"),
                format!("no healthy upstream left for `{}`", ctx.server_name()),
            ),
        }
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
        crate::upstreams::upstream::rewrite_request(
            req,
            &rt,
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
        crate::pipeline::response::on_header(&self.gateway, ctx, resp)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        crate::pipeline::response::on_body(&self.gateway, ctx, body, end_of_stream)?;
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        crate::pipeline::forwarding::connect_failed(ctx, e)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        crate::pipeline::forwarding::proxy_failed(session, e, ctx).await
    }

    /// A client that hangs up (an SDK closing its GET stream, a cancelled
    /// call) is ordinary: it is audited, not logged as an error.
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        crate::pipeline::recording::record(&self.gateway, session, e, ctx).await
    }
}

//! The `ProxyHttp` phases, and nothing else: each one delegates.
//!
//! Phase contract (see Pingora's phase chart):
//! - `early_request_filter` ends the header deadline and sets pipelining.
//! - `request_filter` runs the whole exchange and always returns `Ok(true)`
//!   (the gateway wrote the response): admission (`admission`: route,
//!   origin, authentication, session); for a POST, its body read, parsed and
//!   judged whole (`judging`); then, for every method, the request written
//!   to the upstream by the gateway itself and the reply judged on its way
//!   back (`forwarding`, `reply`). Pingora's proxy loop (`upstream_peer` and
//!   the phases after it) is never entered.
//! - `logging` writes metrics, one audit record per MCP message and spans
//!   (`recording`).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
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

    /// Admission, for a POST judging, then forwarding. Returns the status
    /// of the response written (the upstream's judged reply or the
    /// gateway's own answer).
    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<u16, Refusal> {
        let gw = &self.gateway;
        let body = match admit(gw, session, ctx).await? {
            Admitted::Answered(status) => return Ok(status),
            Admitted::Stream => {
                crate::pipeline::admission::upstream_identity(&gw.tokens, session, ctx).await?;
                None
            }
            // The upstream identity is fetched while judging, before
            // anything is spent on the call (quota, an approval).
            Admitted::Post => match judge(gw, session, ctx).await? {
                Judged::Answered(status) => return Ok(status),
                Judged::Forward(body) => Some(body),
            },
        };
        crate::pipeline::forwarding::forward_judged(gw, &self.upstreams, session, ctx, body).await
    }
}

#[async_trait]
impl ProxyHttp for WardenProxy {
    /// Boxed: Pingora keeps the context inline in its per-request future,
    /// which it moves by value several times a call; a pointer moves
    /// instead of the whole context (about 1.6 KB).
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new(self.gateway.runtime()))
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // The header is complete: its deadline no longer applies. Pipelined
        // HTTP/1.1 requests are answered one after another, in order.
        if let Some(g) = crate::pipeline::conn::guard_of(session) {
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

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        ctx.request_id = self.gateway.next_request_id();
        ctx.downstream_h2 = session.as_downstream().is_http2();
        metrics().inflight.inc();
        ctx.counted_inflight = true;
        match self.handle(session, ctx).await {
            Ok(status) => {
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

    /// Never reached: `request_filter` answers every request, so Pingora's
    /// proxy loop does not run (see the module docs).
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        Error::e_explain(
            ErrorType::InternalError,
            "the gateway forwards every request itself",
        )
    }

    /// A client that hangs up (an SDK closing its GET stream, a cancelled
    /// call) is ordinary: it is audited, not logged as an error.
    fn suppress_error_log(
        &self,
        _session: &Session,
        _ctx: &Box<RequestCtx>,
        error: &Error,
    ) -> bool {
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        crate::pipeline::recording::record(&self.gateway, session, e, ctx).await
    }
}

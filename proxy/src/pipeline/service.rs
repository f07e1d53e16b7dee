//! The gateway's HTTP application: one exchange per request, from the
//! request header read to the connection handed back for the next one.
//!
//! Pingora's core reads and writes HTTP/1 and HTTP/2 (and loops over a
//! kept-alive connection); everything between is here, and each step
//! delegates:
//! - the header is read (a malformed one is answered `400` and the
//!   connection closed; `CONNECT` is answered `405`; an idle connection
//!   waiting for its next header is closed when the service shuts down);
//! - the header's deadline ends and pipelining is set (`early`);
//! - the whole exchange runs (`handle`): admission (`admission`: route,
//!   origin, authentication, session); for a POST, its body read, parsed
//!   and judged whole (`judging`); then, for every method, the request
//!   written to the upstream by the gateway itself and the reply judged on
//!   its way back (`forwarding`, `reply`); a refusal is answered by the
//!   gateway (`answers`);
//! - metrics, one audit record per MCP message and spans are written
//!   (`recording`);
//! - the connection is handed back for reuse when the exchange ended
//!   cleanly.
//!
//! Pingora's proxy layer (`pingora-proxy`) is not used: the gateway writes
//! to upstreams itself, and the layer's per-request state (a cache, module
//! contexts, its proxy loop's futures) cost about 5 % of a call while
//! doing nothing for it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora_core::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use tokio::sync::Notify;
use warden_filters::{codes, JsonRpcError, Refusal};

use pingora_core::protocols::http::ServerSession as Session;

/// How long a client's idle connection is kept open between requests
/// (HTTP/1.1 keep-alive; an HTTP/2 connection with no stream in progress).
pub const DOWNSTREAM_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

use crate::hub::state::Gateway;
use crate::observability::metrics::metrics;
use crate::pipeline::admission::{admit, Admitted};
use crate::pipeline::answers::{write_refusal, write_unread_refusal};
use crate::pipeline::conn::Connections;
use crate::pipeline::ctx::RequestCtx;
use crate::pipeline::judging::{judge, Judged};

pub struct WardenProxy {
    pub gateway: Arc<Gateway>,
    /// How judged POST bodies reach upstreams (see `forwarding`).
    pub upstreams: crate::pipeline::forwarding::Upstreams,
    pub server_options: Option<HttpServerOptions>,
    /// Set, and the waiters told, when the service shuts down: connections
    /// idle between requests close instead of waiting for another.
    closing: AtomicBool,
    /// One per worker thread (rounded up to a power of two): a connection
    /// waiting for its next header registers with its own thread's, so
    /// workers do not share one waiter list's lock on every request.
    closed: Box<[Shard]>,
}

#[repr(align(128))]
struct Shard(Notify);

impl WardenProxy {
    pub fn new(gateway: Arc<Gateway>, threads: usize) -> Self {
        let shards = threads.clamp(1, 64).next_power_of_two();
        WardenProxy {
            gateway,
            upstreams: crate::pipeline::forwarding::Upstreams::new(),
            server_options: None,
            closing: AtomicBool::new(false),
            closed: (0..shards).map(|_| Shard(Notify::new())).collect(),
        }
    }

    /// This thread's shard of `closed`.
    fn closed_here(&self) -> &Notify {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static THREAD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        let i = THREAD.with(|t| *t) & (self.closed.len() - 1);
        &self.closed[i].0
    }

    /// Reads the next request header. `None`: the connection ends (the
    /// peer closed it, its header was refused, or the service is shutting
    /// down).
    async fn read_header(&self, session: &mut Session) -> Option<()> {
        let res = tokio::select! {
            // Bytes already buffered are a request, not something to drop.
            biased;
            res = session.read_request() => res,
            _ = self.shut_down() => return None,
        };
        match res {
            Ok(true) => {}
            Ok(false) => return None,
            Err(mut e) => {
                e.as_down();
                if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                    tracing::debug!(error = %e, "malformed request header");
                    let refusal = Refusal::new(
                        400,
                        "unreadable_header",
                        JsonRpcError::new(
                            codes::INVALID_REQUEST,
                            "Invalid Request: the HTTP request header could not be read",
                        ),
                    );
                    let _ = write_unread_refusal(session, &refusal).await;
                } else if !matches!(
                    e.etype(),
                    ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::ReadTimedout
                ) {
                    tracing::debug!(error = %e, "request header not read");
                }
                session.shutdown().await;
                return None;
            }
        }
        // A tunnel changes the exchange's framing (the body would be the
        // tunnel's bytes): refused before anything reads a body.
        if session.req_header().method == http::Method::CONNECT {
            let refusal = Refusal::method_not_allowed("CONNECT");
            let _ = write_unread_refusal(session, &refusal).await;
            session.shutdown().await;
            return None;
        }
        Some(())
    }

    async fn shut_down(&self) {
        let notified = self.closed_here().notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a shutdown between the two
        // still wakes this waiter.
        notified.as_mut().enable();
        if !self.closing.load(Ordering::Acquire) {
            notified.await;
        }
    }

    /// The header is complete: its deadline no longer applies. Pipelined
    /// HTTP/1.1 requests are answered one after another, in order.
    fn early(&self, session: &mut Session) {
        if let Some(g) = crate::pipeline::conn::guard_of(session) {
            g.header_done();
        }
        // Only for POST: a stream's connection must keep watching for the
        // client's close (a pipelined byte would stop that).
        if !session.is_http2() {
            let post = session.req_header().method == http::Method::POST;
            session.set_pipelining_enabled(post);
            // Leaving (upgrade or drain): this response says `Connection:
            // close`, so the client moves to a connection the successor
            // accepts, instead of writing onto one this process is closing.
            if self.gateway.is_leaving() {
                session.set_keepalive(None);
            }
        }
    }

    /// The exchange, refusals answered. `Err`: the answer could not be
    /// written to the client.
    async fn exchange(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        ctx.request_id = self.gateway.next_request_id();
        ctx.downstream_h2 = session.is_http2();
        metrics().inflight.inc();
        ctx.counted_inflight = true;
        match self.handle(session, ctx).await {
            Ok(status) => {
                ctx.local_status = Some(status);
                Ok(())
            }
            Err(refusal) => {
                // What was refused, as far as its body tells (method, tool or
                // resource), for the audit record: read within the body
                // limit and a second, judged by nothing, forwarded nowhere.
                if ctx.refused_message.is_none() && refusal.status != 413 {
                    ctx.refused_message =
                        crate::pipeline::answers::read_refused(session, ctx).await;
                }
                let written = write_refusal(session, &refusal).await;
                ctx.local_status = Some(refusal.status);
                ctx.refusal = Some(refusal);
                written
            }
        }
    }

    /// Admission, for a POST judging, then forwarding. Returns the status
    /// of the response written (the upstream's judged reply or the
    /// gateway's own answer).
    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<u16, Refusal> {
        let gw = &self.gateway;
        let (routed, body) = match admit(gw, session, ctx).await? {
            Admitted::Answered(status) => return Ok(status),
            Admitted::Stream(routed) => {
                crate::pipeline::judging::upstream_identity(gw, session, ctx, &routed, false)
                    .await?;
                (routed, None)
            }
            // The upstream identity is fetched while judging, before
            // anything is spent on the call (quota, an approval).
            Admitted::Post(routed) => match judge(gw, session, ctx, &routed).await? {
                Judged::Answer(plan) => {
                    return Ok(
                        crate::pipeline::forwarding::answer_judged(session, ctx, plan).await,
                    );
                }
                Judged::Forward(body) => (routed, Some(body)),
            },
        };
        crate::pipeline::forwarding::forward_judged(
            gw,
            &self.upstreams,
            session,
            ctx,
            &routed,
            body,
        )
        .await
    }
}

impl WardenProxy {
    /// One request of a connection, from its header to the connection
    /// handed back for the next one (`None`: the connection ends).
    async fn serve_one(
        self: &Arc<Self>,
        mut session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if session.is_http2() {
            // A stream whose flow-control window the client keeps shut,
            // while the connection reads on: each write to it (an answer
            // to CONNECT included) waits at most `timeouts.write`; replies
            // leave in slices of `forwarding::h2_slice` bytes. The
            // connection's own writes are guarded by `GuardedStream`, as
            // on HTTP/1.
            let write = self.gateway.runtime().snap.config.timeouts.write;
            session.set_write_timeout(Some(write));
        }
        self.read_header(&mut session).await?;
        if *shutdown.borrow() {
            // The service stops soon: no further request on this connection.
            session.set_keepalive(None);
        }
        self.early(&mut session);
        let mut ctx = RequestCtx::new(self.gateway.runtime());
        let failed = self.exchange(&mut session, &mut ctx).await.err();
        if let Some(e) = &failed {
            // A client that hangs up (an SDK closing its GET stream, a
            // cancelled call) is ordinary: it is audited, not logged as an
            // error.
            // (Pingora's HTTP/1 writer leaves a write error's source unset.)
            let hung_up = matches!(
                e.etype(),
                ErrorType::ConnectionClosed
                    | ErrorType::ReadError
                    | ErrorType::WriteError
                    | ErrorType::WriteTimedout
            );
            if !hung_up {
                tracing::error!(error = %e, "answer not written to the client");
            }
        }
        crate::pipeline::recording::record(
            &self.gateway,
            &mut session,
            failed.as_deref(),
            &mut ctx,
        )
        .await;
        // A reply not delivered whole is not ended as if it were: on HTTP/2
        // the stream is reset (its sender dropped unfinished), on HTTP/1 the
        // connection closed.
        if failed.is_some() || ctx.undelivered {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        session
            .finish()
            .await
            .ok()
            .flatten()
            .map(|s| ReusedHttpStream::from_reusable_stream(s, settings))
    }
}

/// Whether `stream` speaks HTTP/1, decided as Pingora's HTTP application
/// decides it: not when the options force a custom protocol or ALPN chose
/// one; on TLS, unless ALPN chose h2; in clear text with `h2c` on, unless
/// the client's first bytes are the HTTP/2 preface (or cannot be peeked).
/// `None`: the connection failed while peeked.
async fn speaks_http1(opts: Option<&HttpServerOptions>, stream: &mut Stream) -> Option<bool> {
    // The whole preface, as Pingora compares it (the header guard's
    // shorter prefix only turns its own deadline off).
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if opts.is_some_and(|o| o.force_custom)
        || matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_)))
    {
        return Some(false);
    }
    if stream.get_ssl_digest().is_some() || !opts.is_some_and(|o| o.h2c) {
        return Some(!matches!(stream.selected_alpn_proto(), Some(ALPN::H2)));
    }
    let mut buf = [0u8; H2_PREFACE.len()];
    let peeked = match stream.try_peek(&mut buf).await {
        Ok(p) => p,
        Err(e) => {
            // Normal when a client closes a connection it never used.
            tracing::debug!(error = %e, "connection closed before its first request");
            return None;
        }
    };
    Some(peeked && buf != H2_PREFACE)
}

impl Connections for WardenProxy {
    /// HTTP/1: every request of the connection in this one future. HTTP/2
    /// and custom protocols: Pingora's own loop (one task per stream, each
    /// calling `process_new_http`).
    async fn serve(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !speaks_http1(self.server_options.as_ref(), &mut stream).await? {
            return ServerApp::process_new(self, stream, shutdown).await;
        }
        let mut session = Session::new_http1(stream);
        // As Pingora's loop: no reuse once the service is shutting down,
        // else 60 s of keep-alive.
        session.set_keepalive((!*shutdown.borrow()).then_some(DOWNSTREAM_KEEPALIVE.as_secs()));
        session.set_keepalive_reuses_remaining(
            self.server_options
                .as_ref()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut result = self.serve_one(session, shutdown).await;
        while let Some((stream, settings)) = result.map(ReusedHttpStream::consume) {
            let mut session = Session::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.serve_one(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.http_cleanup().await
    }
}

#[async_trait]
impl HttpServerApp for WardenProxy {
    /// HTTP/2 streams (HTTP/1 connections are served by `serve`).
    async fn process_new_http(
        self: &Arc<Self>,
        session: Session,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.serve_one(session, shutdown).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.server_options.as_ref()
    }

    async fn http_cleanup(&self) {
        self.closing.store(true, Ordering::Release);
        // Every shard: a task may have moved to another thread since it
        // registered.
        for s in self.closed.iter() {
            s.0.notify_waiters();
        }
    }
}

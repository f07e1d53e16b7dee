//! Connection-level guards under Pingora's HTTP/1 reader: a deadline for a
//! whole request header (slowloris), and the hooks the request path uses to
//! say when a header is complete and when an exchange ended.
//!
//! Pingora bounds each read of a header, not the header: a client sending one
//! line a second keeps a connection (and a task) forever. Every accepted
//! stream is wrapped in a [`GuardedStream`] before Pingora sees it. While the
//! connection waits for a request header, the header must be complete within
//! `timeouts.request_header` of its first byte (of the accept, for the first
//! request); otherwise the gateway writes `408` with a JSON-RPC error, counts
//! `warden_refusals_total{reason="header_timeout"}` and closes the connection.
//! Idle keep-alive time between requests is not counted (Pingora's keep-alive
//! timeout covers it). HTTP/2 connections are left to the HTTP/2 stack.
//!
//! Writes to the client, on every protocol: one that makes no progress for
//! `timeouts.write` fails, and so does every later write on the connection
//! (`warden_refusals_total{reason="client_write_stalled"}`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// How long a new connection may wait before its first byte (Pingora's own
/// keep-alive wait between requests is the same).
const FIRST_BYTE: Duration = Duration::from_secs(60);

/// An accepted stream with a whole-header deadline.
pub struct GuardedStream {
    inner: Stream,
    /// Set while the connection waits for (the rest of) a request header.
    awaiting_header: AtomicBool,
    /// Set when an exchange ended: the next header gets a fresh clock.
    next_header: AtomicBool,
    limit: Duration,
    /// The running deadline: `until`, armed as a timer only once a read
    /// has to wait (most headers arrive whole in their first read, and
    /// then no timer is made at all).
    deadline: Option<Deadline>,
    /// The running deadline is a header's (started by its first byte), not
    /// the wait for a new connection's first byte.
    header_clock: bool,
    /// No deadline ever again (HTTP/2, or the limit is zero).
    off: bool,
    first_read: bool,
    timed_out: bool,
    /// How long a write to the client may make no progress
    /// (`timeouts.write`; zero: unbounded).
    write_limit: Duration,
    /// Armed when a write has to wait, cleared by any progress.
    write_stall: Option<Deadline>,
    /// Set once a write stalled past `write_limit`: every later write,
    /// flush or shutdown fails at once (the final chunk, the flush of
    /// what is buffered), so a stalled client is cut once, not once per
    /// write.
    write_failed: bool,
}

/// A point in time a read or a write may wait until, and its timer once
/// one was needed.
struct Deadline {
    until: tokio::time::Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn after(limit: Duration) -> Self {
        Deadline {
            until: tokio::time::Instant::now() + limit,
            timer: None,
        }
    }

    /// Ready once `until` has passed; registers the waker otherwise.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let until = self.until;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)))
            .as_mut()
            .poll(cx)
    }
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl GuardedStream {
    pub fn new(inner: Stream, limit: Duration, write_limit: Duration) -> Self {
        let off = limit.is_zero() || matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        GuardedStream {
            inner,
            awaiting_header: AtomicBool::new(true),
            next_header: AtomicBool::new(false),
            limit,
            // A new connection gets `FIRST_BYTE` (at least the header limit)
            // to start its first request (pre-connected clients wait a
            // while); the header's own clock starts with its first byte.
            deadline: (!off).then(|| Deadline::after(limit.max(FIRST_BYTE))),
            header_clock: false,
            off,
            first_read: true,
            timed_out: false,
            write_limit,
            write_stall: None,
            write_failed: false,
        }
    }

    /// After a write, flush or shutdown to the client: a wait longer than
    /// `write_limit` without progress fails it (a client that stopped
    /// reading holds no task, buffer or upstream connection for longer).
    fn stalled<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if !r.is_pending() {
            self.write_stall = None;
            return r;
        }
        if self.write_limit.is_zero() {
            return r;
        }
        let limit = self.write_limit;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Deadline::after(limit));
        if stall.poll(cx).is_ready() {
            self.write_stall = None;
            self.write_failed = true;
            crate::observability::metrics::metrics()
                .refusals
                .with_label_values(&["client_write_stalled"])
                .inc();
            return Poll::Ready(Err(stall_error()));
        }
        r
    }

    /// The request header was read whole.
    pub fn header_done(&self) {
        self.awaiting_header.store(false, Ordering::Release);
    }

    /// The exchange ended; the next bytes start a new header.
    pub fn exchange_done(&self) {
        self.next_header.store(true, Ordering::Release);
        self.awaiting_header.store(true, Ordering::Release);
    }

    fn refuse(&mut self, cx: &mut Context<'_>) -> io::Error {
        if !self.timed_out {
            self.timed_out = true;
            crate::observability::metrics::metrics()
                .refusals
                .with_label_values(&["header_timeout"])
                .inc();
            let body = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-31020,"message":"Request header was not received in time"}}"#;
            let resp = format!(
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Best effort: a client this slow may not be reading either.
            let _ = Pin::new(&mut self.inner).poll_write(cx, resp.as_bytes());
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        io::Error::new(io::ErrorKind::TimedOut, "request header deadline")
    }
}

fn stall_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client read nothing for timeouts.write",
    )
}

/// The guard of the connection a request arrived on, if it has one (HTTP/1).
pub fn guard_of(session: &pingora_core::protocols::http::ServerSession) -> Option<&GuardedStream> {
    session.stream()?.as_any().downcast_ref::<GuardedStream>()
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request header deadline",
            )));
        }
        let awaiting = !this.off && this.awaiting_header.load(Ordering::Acquire);
        if !awaiting || this.next_header.swap(false, Ordering::AcqRel) {
            this.deadline = None;
            this.header_clock = false;
        }
        // Bytes already here are taken first: the deadline only ends a wait.
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if this.first_read && !got.is_empty() {
                    this.first_read = false;
                    if got.starts_with(H2_PREFACE) {
                        this.off = true;
                        this.deadline = None;
                    }
                }
                // A header's clock starts with its first byte.
                if awaiting && !this.off && !got.is_empty() && !this.header_clock {
                    this.deadline = Some(Deadline::after(this.limit));
                    this.header_clock = true;
                }
            }
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut() {
                    if d.poll(cx).is_ready() {
                        return Poll::Ready(Err(this.refuse(cx)));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_failed {
            return Poll::Ready(Err(stall_error()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write_failed {
            return Poll::Ready(Err(stall_error()));
        }
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.stalled(cx, r)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down flushes what is buffered first: a write like any other.
        if self.write_failed {
            return Poll::Ready(Err(stall_error()));
        }
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.stalled(cx, r)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_failed {
            return Poll::Ready(Err(stall_error()));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        // Pingora peeks for the HTTP/2 preface before it reads: the wait for
        // a new connection's first bytes is bounded here too.
        let Some(d) = self.deadline.as_ref().map(|d| d.until) else {
            return self.inner.try_peek(buf).await;
        };
        match tokio::time::timeout_at(d, self.inner.try_peek(buf)).await {
            Ok(r) => r,
            Err(_) => {
                self.timed_out = true;
                crate::observability::metrics::metrics()
                    .refusals
                    .with_label_values(&["header_timeout"])
                    .inc();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request header deadline",
                ))
            }
        }
    }
}

/// An application that serves a whole accepted connection in one future:
/// every request of a kept-alive HTTP/1 connection runs inside it, so a
/// request costs no boxed future of its own (Pingora's `HttpServerApp`
/// boxes one per request and moves the request's whole state into it).
pub trait Connections: Send + Sync + 'static {
    /// Serves `stream` until it ends; `Some` hands it back for reuse.
    fn serve(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> impl Future<Output = Option<Stream>> + Send;

    /// Called once when the service shuts down.
    fn cleanup(&self) -> impl Future<Output = ()> + Send;
}

/// The proxy application behind a header deadline: wraps every accepted
/// stream in a [`GuardedStream`] (the limit is read from the current bundle)
/// and hands it to the gateway's HTTP application.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub current: Arc<crate::hub::runtime::Current>,
}

#[async_trait]
impl<A: Connections> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let t = self.current.load().snap.config.timeouts;
        self.app
            .serve(
                Box::new(GuardedStream::new(stream, t.request_header, t.write)),
                shutdown,
            )
            .await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

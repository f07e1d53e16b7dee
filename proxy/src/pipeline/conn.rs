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
//! (`warden_refusals_total{reason="client_write_stalled"}`); so does one
//! whose client reads, while writes wait, slower than
//! `limits.min_response_rate` ([`WriteFloor`],
//! `reason="client_read_too_slow"`).

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
    /// The floor under the client's reading of its replies.
    writes: WriteFloor,
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
    pub fn new(inner: Stream, limit: Duration, write_limit: Duration, min_rate: usize) -> Self {
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
            writes: WriteFloor::new(write_limit, min_rate),
        }
    }

    /// One write, flush or shutdown to the client, through the floor:
    /// `sent` says how many bytes a completed one handed on.
    fn write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
        sent: impl FnOnce(&T) -> usize,
    ) -> Poll<io::Result<T>> {
        if let Some(cut) = self.writes.cut {
            return Poll::Ready(Err(cut.error()));
        }
        let r = op(Pin::new(&mut self.inner), cx);
        match &r {
            Poll::Ready(Ok(v)) => self.writes.done(sent(v)),
            Poll::Ready(Err(_)) => self.writes.wait = None,
            Poll::Pending => {
                if let Some(cut) = self.writes.pending(cx) {
                    crate::observability::metrics::metrics()
                        .refusals
                        .with_label_values(&[cut.reason()])
                        .inc();
                    return Poll::Ready(Err(cut.error()));
                }
            }
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

/// Why writes to a client were cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// One write made no progress for `timeouts.write`.
    Stalled,
    /// The client read slower than `limits.min_response_rate`.
    TooSlow,
}

impl Cut {
    fn reason(self) -> &'static str {
        match self {
            Cut::Stalled => "client_write_stalled",
            Cut::TooSlow => "client_read_too_slow",
        }
    }

    fn error(self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            match self {
                Cut::Stalled => "the client read nothing for timeouts.write",
                Cut::TooSlow => "the client read slower than limits.min_response_rate",
            },
        )
    }
}

/// The floor under a client's reading: only time spent waiting on a write
/// counts (an idle connection or stream owes nothing). Each wait adds its
/// length to what the client owes, and each byte the client takes pays
/// `1 / min_rate` s of it back, down to nothing (no credit is banked). A
/// wait fails once it and the debt reach `timeouts.write`: a client that
/// stops reading is cut after `timeouts.write`, one that reads at half the
/// floor after about twice that of waiting, one at the floor or faster
/// never.
struct WriteFloor {
    limit: Duration,
    /// Bytes per second.
    rate: u64,
    owed: Duration,
    /// The wait in progress: when it began, and when it fails.
    wait: Option<(tokio::time::Instant, Deadline)>,
    /// Set once writes were cut: every later write, flush or shutdown
    /// fails at once (the final chunk, the flush of what is buffered), so
    /// a client is cut once, not once per write.
    cut: Option<Cut>,
}

impl WriteFloor {
    fn new(limit: Duration, min_rate: usize) -> Self {
        WriteFloor {
            limit,
            rate: min_rate.max(1) as u64,
            owed: Duration::ZERO,
            wait: None,
            cut: None,
        }
    }

    /// A write completed, handing on `sent` bytes.
    fn done(&mut self, sent: usize) {
        if self.wait.is_none() && self.owed.is_zero() {
            return;
        }
        let waited = self
            .wait
            .take()
            .map_or(Duration::ZERO, |(since, _)| since.elapsed());
        self.owed = settle(self.owed, waited, sent, self.rate);
    }

    /// A write has to wait: `Some` once it and the debt ran past the limit.
    fn pending(&mut self, cx: &mut Context<'_>) -> Option<Cut> {
        if self.limit.is_zero() {
            return None;
        }
        let (limit, owed) = (self.limit, self.owed);
        let (_, deadline) = self.wait.get_or_insert_with(|| {
            (
                tokio::time::Instant::now(),
                Deadline::after(limit.saturating_sub(owed)),
            )
        });
        if deadline.poll(cx).is_pending() {
            return None;
        }
        self.wait = None;
        let cut = if owed.is_zero() {
            Cut::Stalled
        } else {
            Cut::TooSlow
        };
        self.cut = Some(cut);
        Some(cut)
    }
}

/// The read-rate debt after a write that waited `waited` and handed on
/// `sent` bytes: the wait is added, `1 / rate` s per byte paid back, down
/// to nothing (no credit is banked). A connection's writes
/// ([`WriteFloor`]) and an HTTP/2 stream's (`forwarding::h2_write`) keep
/// their debts by this one rule.
pub(crate) fn settle(owed: Duration, waited: Duration, sent: usize, rate: u64) -> Duration {
    let nanos = sent as u128 * 1_000_000_000 / u128::from(rate.max(1));
    let paid = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    (owed + waited).saturating_sub(paid)
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
        self.write_with(cx, |s, cx| s.poll_write(cx, buf), |n| *n)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_with(cx, |s, cx| s.poll_flush(cx), |_| 0)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down flushes what is buffered first: a write like any other.
        self.write_with(cx, |s, cx| s.poll_shutdown(cx), |_| 0)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs), |n| *n)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    /// Through the floor, as every write: the flush of what is buffered
    /// (a 408, a refusal, TLS's close_notify) waits no longer than any
    /// write, and not at all once writes were cut.
    async fn shutdown(&mut self) {
        if self.writes.cut.is_none() {
            let _ = tokio::io::AsyncWriteExt::shutdown(self).await;
        }
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
        let (t, limits) = {
            let cfg = &self.current.load().snap.config;
            (cfg.timeouts, cfg.limits)
        };
        self.app
            .serve(
                Box::new(GuardedStream::new(
                    stream,
                    t.request_header,
                    t.write,
                    limits.min_response_rate,
                )),
                shutdown,
            )
            .await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// Waits `secs` on a write, then the client takes `bytes`: `Some` if
    /// the wait was cut on the way.
    async fn wait_then_take(f: &mut WriteFloor, secs: u64, bytes: usize) -> Option<Cut> {
        for _ in 0..secs {
            if let Some(cut) = f.pending(&mut cx()) {
                return Some(cut);
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        if let Some(cut) = f.pending(&mut cx()) {
            return Some(cut);
        }
        f.done(bytes);
        None
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_cut_after_the_limit() {
        let mut f = WriteFloor::new(Duration::from_secs(30), 1024);
        assert_eq!(f.pending(&mut cx()), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(f.pending(&mut cx()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(f.pending(&mut cx()), Some(Cut::Stalled));
        assert_eq!(f.cut, Some(Cut::Stalled));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_reading_at_half_the_floor_is_cut_after_about_twice_the_limit() {
        let mut f = WriteFloor::new(Duration::from_secs(10), 1000);
        // Every wait of a second ends with 500 bytes taken: never 10 s
        // without progress, but half a second more owed each time.
        let mut waits = 0;
        let cut = loop {
            waits += 1;
            if let Some(cut) = wait_then_take(&mut f, 1, 500).await {
                break cut;
            }
            assert!(waits < 100, "never cut");
        };
        assert_eq!(cut, Cut::TooSlow);
        assert!((17..=21).contains(&waits), "cut after {waits} waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_at_the_floor_or_faster_is_never_cut() {
        let mut f = WriteFloor::new(Duration::from_secs(10), 1000);
        for _ in 0..500 {
            assert_eq!(wait_then_take(&mut f, 1, 1000).await, None);
        }
        assert_eq!(f.owed, Duration::ZERO);
        // Fast bursts bank nothing: a stop afterwards is cut on time.
        f.done(10_000_000);
        assert_eq!(wait_then_take(&mut f, 10, 0).await, Some(Cut::Stalled));
    }

    #[tokio::test(start_paused = true)]
    async fn time_with_nothing_to_write_owes_nothing() {
        let mut f = WriteFloor::new(Duration::from_secs(10), 1000);
        for _ in 0..6 {
            assert_eq!(wait_then_take(&mut f, 1, 0).await, None);
        }
        assert_eq!(f.owed, Duration::from_secs(6));
        // An hour with nothing to send: the debt stands, no more.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(wait_then_take(&mut f, 3, 0).await, None);
        // Bytes taken pay it back.
        f.done(9_000);
        assert_eq!(f.owed, Duration::ZERO);
        assert_eq!(wait_then_take(&mut f, 9, 1).await, None);
    }
}

//! The accept loop: connections bounded in all and per address, a
//! deadline for each request's head and one for each whole exchange; each
//! request goes to the route table.

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tower::ServiceExt;

use super::error::ApiError;
use super::extract::{PeerAddr, PeerGateway};
use super::tls::Tls;
use super::Api;

/// Serves the API until the process ends.
/// What one peer, or all of them, may hold of the agent's HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub total: usize,
    /// Connections one address may hold at once; more are closed on
    /// accept. A fleet behind one NAT address long-polls through one
    /// connection per gateway, so this is generous; one peer holding
    /// sockets open cannot take the agent's descriptors from everyone else.
    pub per_address: usize,
    /// How long a connection may take to send a request's head (and how
    /// long it may sit idle between requests): it is closed after that.
    pub head: Duration,
    /// How long one request may take from its head to the end of the
    /// answer, its body and a 60-second long-poll included; after that it
    /// is answered 408 and the connection closed.
    pub request: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            total: 4096,
            per_address: 512,
            head: Duration::from_secs(30),
            request: Duration::from_secs(120),
        }
    }
}

/// The connections each address holds now.
#[derive(Default)]
struct PerAddress {
    max: usize,
    held: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in [`PerAddress`], given back on drop.
struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.0.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Whether the peer sends, within `within`, enough for hyper to tell
/// HTTP/1 from HTTP/2 (the first bytes, or the whole HTTP/2 preface when
/// they begin as one). hyper's own head timeout starts only after that
/// choice; a peer that connects and sends nothing, or a stalled preface,
/// would otherwise hold its connection for ever.
async fn version_known(stream: &tokio::net::TcpStream, within: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 24];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if n >= PREFACE.len() || buf[..n] != PREFACE[..n] {
            return true;
        }
        // Part of a preface: peek answers at once while bytes wait, so
        // pause before looking again.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(10)))
            .await
            .is_err()
        {
            return false;
        }
    }
}

/// Serves the API on `listener` until the process ends. An error accepting
/// one connection (the descriptor limit reached, say) is transient: the
/// loop waits a moment and goes on, it never ends the agent. Every
/// connection has a deadline for its request heads and every request one
/// for its whole exchange; the connections at once are bounded in all and
/// per address ([`ConnLimits`], its defaults here).
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    tls: Option<Arc<Tls>>,
) -> anyhow::Result<()> {
    serve_with(listener, api, ConnLimits::default(), tls).await
}

/// As [`serve`], with other limits.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    api: Arc<Api>,
    limits: ConnLimits,
    tls: Option<Arc<Tls>>,
) -> anyhow::Result<()> {
    let total = Arc::new(tokio::sync::Semaphore::new(limits.total));
    let per = Arc::new(PerAddress {
        max: limits.per_address,
        held: Default::default(),
    });
    let router = super::routes::router(api);
    let mut failing = false;
    loop {
        let permit = total.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                failing = false;
                c
            }
            Err(e) => {
                if !failing {
                    eprintln!("warden-agent: accepting a connection failed (retrying): {e}");
                    failing = true;
                }
                drop(permit);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = per.take(peer.ip()) else {
            // Closed at once: this address holds its share already.
            continue;
        };
        let router = router.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let Some(tls) = tls else {
                if !version_known(&stream, limits.head).await {
                    return;
                }
                let svc = service(router, peer.ip(), None, limits);
                serve_one(stream, svc, limits, None).await;
                return;
            };
            // The handshake has the head's deadline: a peer that connects
            // and stalls is closed as a plain one is.
            let stream =
                match tokio::time::timeout(limits.head, tls.acceptor().accept(stream)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
            let (gateway, h2) = {
                let c = stream.get_ref().1;
                let gateway = tls
                    .asks_clients()
                    .then(|| {
                        c.peer_certificates()
                            .and_then(|p| p.first())
                            .and_then(super::tls::gateway_of)
                    })
                    .flatten();
                (gateway, c.alpn_protocol() == Some(b"h2"))
            };
            let svc = service(router, peer.ip(), Some(gateway), limits);
            serve_one(stream, svc, limits, Some(h2)).await;
        });
    }
}

/// Serves one connection's requests: HTTP/1.1 or HTTP/2, as `h2` says
/// (negotiated by ALPN), or told from its first bytes (`None`).
async fn serve_one<S, V>(stream: S, svc: V, limits: ConnLimits, h2: Option<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    V: hyper::service::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    V::Future: Send + 'static,
{
    let mut b = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(limits.head))
        .keep_alive_timeout(limits.head);
    let b = match h2 {
        Some(true) => b.http2_only(),
        Some(false) => b.http1_only(),
        None => b,
    };
    let _ = b
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
        .await;
}

/// The route table behind one connection: each request stamped with the
/// peer's address (and, on HTTPS with client certificates, the gateway
/// its certificate names), and given `limits.request` to be answered.
fn service(
    router: axum::Router,
    ip: std::net::IpAddr,
    gateway: Option<Option<String>>,
    limits: ConnLimits,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(ip));
        if let Some(g) = &gateway {
            req.extensions_mut().insert(PeerGateway(g.clone()));
        }
        let router = router.clone();
        async move {
            match tokio::time::timeout(limits.request, router.oneshot(req)).await {
                Ok(r) => r,
                Err(_) => Ok(ApiError::with_body(
                    StatusCode::REQUEST_TIMEOUT,
                    serde_json::json!({"error": "request_timeout",
                        "message": "the request took longer than the agent allows"}),
                )
                .header(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                )
                .into_response()),
            }
        }
    })
}

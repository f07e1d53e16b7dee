//! The connection set: at most `size` HTTP/1.1 connections to the target,
//! each carrying one request at a time (wrk's model).
//!
//! A pooled HTTP client cannot keep that bound: it hands a connection back
//! to its pool from a task of its own after the reply's body ends, so the
//! next request, let through the moment the reply was read, finds the pool
//! empty and opens one more. On a loaded machine that happened often enough
//! for a set of 4 to open 6. Here a request holds its connection (a
//! [`Line`]) from before it is sent until its reply is read, and a line is
//! returned to the set only by the request that held it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::sample::Outcome;

type Conn = SendRequest<Full<Bytes>>;

/// Where requests go: the target URL taken apart once.
struct Target {
    host: String,
    port: u16,
    /// The `Host` header (the URL's authority).
    authority: HeaderValue,
    /// The request target (origin form: path and query).
    path: Uri,
    /// `https`: the TLS client and the name the certificate must carry.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

pub(super) struct Wire {
    target: Target,
    permits: Arc<Semaphore>,
    /// The set's lines not in use: an open connection, or none yet (opened
    /// when first used, or again after its last use left it unusable).
    idle: Mutex<Slots>,
    /// Connections opened over the run (the report's `connections_opened`).
    opened: AtomicU64,
}

struct Slots {
    size: usize,
    lines: Vec<Option<Conn>>,
}

impl Wire {
    pub(super) fn new(url: &str, size: usize) -> anyhow::Result<Arc<Wire>> {
        let uri: Uri = url.parse().with_context(|| format!("target URL {url:?}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("target URL {url:?}: the scheme must be http or https"),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("target URL {url:?} has no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("the URL's path")?;
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("{host:?} as a TLS server name"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let size = size.max(1);
        Ok(Arc::new(Wire {
            target: Target {
                authority: HeaderValue::from_str(authority.as_str())
                    .context("the URL's authority")?,
                host,
                port,
                path,
                tls,
            },
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(Slots {
                size,
                lines: (0..size).map(|_| None).collect(),
            }),
            opened: AtomicU64::new(0),
        }))
    }

    /// Widens the set to `size` lines (a closed loop of `size` clients).
    pub(super) fn grow(&self, size: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if size > idle.size {
            let more = size - idle.size;
            idle.lines.extend((0..more).map(|_| None));
            idle.size = size;
            self.permits.add_permits(more);
        }
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Waits for a free line.
    pub(super) async fn line(self: &Arc<Self>) -> Line {
        // The semaphore is never closed.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the set's semaphore is never closed"));
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .pop()
            .flatten();
        Line {
            wire: Arc::clone(self),
            conn,
            reusable: true,
            _permit: permit,
        }
    }

    /// A request for the target: origin-form target, `Host`, the headers.
    pub(super) fn request(
        &self,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.target.path.clone();
        *req.headers_mut() = headers;
        req.headers_mut()
            .insert(HOST, self.target.authority.clone());
        req
    }

    async fn open(&self) -> Result<Conn, Outcome> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|_| Outcome::Error("connect".into()))?;
        let _ = tcp.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        match &t.tls {
            None => handshake(tcp).await,
            Some((tls, name)) => {
                let stream = tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|_| Outcome::Error("tls".into()))?;
                handshake(stream).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<Conn, Outcome>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|_| Outcome::Error("connect".into()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One line of the set, held for a request and its reply.
pub(super) struct Line {
    wire: Arc<Wire>,
    conn: Option<Conn>,
    /// Whether the last reply was read to its end, so the connection can
    /// carry the next request. A reply left unread (an SSE stream given up
    /// once it answered, a timeout) closes it.
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Line {
    /// Sends `req` on this line's connection, opening one if it has none
    /// or the server closed it. A request the connection could not take
    /// (closed between two requests) is sent once more on a new one.
    pub(super) async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, Outcome> {
        let mut req = req;
        let reused = self.reusable;
        self.reusable = false;
        let mut conn = match self.conn.take() {
            Some(c) if reused && !c.is_closed() => c,
            _ => self.wire.open().await?,
        };
        let mut retried = false;
        loop {
            let ready = conn.ready().await.is_ok();
            if ready {
                match conn.try_send_request(req).await {
                    Ok(resp) => {
                        self.conn = Some(conn);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(r) if !retried => req = r,
                        _ => return Err(Outcome::Error("io".into())),
                    },
                }
            } else if retried {
                return Err(Outcome::Error("io".into()));
            }
            retried = true;
            conn = self.wire.open().await?;
        }
    }

    /// The reply was read to its end: the connection may carry another.
    pub(super) fn finished(&mut self) {
        self.reusable = true;
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let conn = if self.reusable {
            self.conn.take()
        } else {
            None
        };
        // Back in the set before the permit (a field) lets the next in.
        self.wire
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .push(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that counts the connections it accepts and answers every
    /// request on them (HTTP/1.1 keep-alive, fixed reply).
    async fn counting_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        have.extend_from_slice(&buf[..n]);
                        // Requests without a body here: one per blank line.
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    /// Many more requests than lines, all at once, each returning its line
    /// the moment its reply is read: the server sees exactly the set.
    #[test]
    fn a_set_of_four_opens_four_connections() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (addr, accepted) = counting_server().await;
            let wire = Wire::new(&format!("http://{addr}/mcp"), 4).expect("wire");
            let mut tasks = Vec::new();
            for _ in 0..400 {
                let wire = Arc::clone(&wire);
                tasks.push(tokio::spawn(async move {
                    let mut line = wire.line().await;
                    let req = wire.request(Method::GET, HeaderMap::new(), Bytes::new());
                    let resp = line.send(req).await.expect("reply");
                    let body = resp.into_body().collect().await.expect("body").to_bytes();
                    assert_eq!(&body[..], b"ok");
                    line.finished();
                }));
            }
            for t in tasks {
                t.await.expect("task");
            }
            assert_eq!(accepted.load(Ordering::Relaxed), 4);
            assert_eq!(wire.opened(), 4);
        });
    }

    /// A reply left unread closes its connection; the next request on that
    /// line opens a new one instead of waiting on a busy one.
    #[test]
    fn a_reply_left_unread_costs_its_connection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (addr, accepted) = counting_server().await;
            let wire = Wire::new(&format!("http://{addr}/"), 1).expect("wire");
            for finish in [false, true, true] {
                let mut line = wire.line().await;
                let req = wire.request(Method::GET, HeaderMap::new(), Bytes::new());
                let resp = line.send(req).await.expect("reply");
                if finish {
                    resp.into_body().collect().await.expect("body");
                    line.finished();
                }
            }
            assert_eq!(accepted.load(Ordering::Relaxed), 2);
        });
    }

    #[test]
    fn targets_are_taken_apart_once() {
        let w = Wire::new("http://127.0.0.1:8080/mcp?x=1", 2).expect("wire");
        assert_eq!(w.target.port, 8080);
        assert_eq!(w.target.path, "/mcp?x=1");
        assert_eq!(w.target.authority, "127.0.0.1:8080");
        let w = Wire::new("https://[::1]/", 1).expect("wire");
        assert_eq!((w.target.host.as_str(), w.target.port), ("::1", 443));
        assert!(w.target.tls.is_some());
        assert!(Wire::new("ftp://x/", 1).is_err());
        assert!(Wire::new("/mcp", 1).is_err());
    }
}

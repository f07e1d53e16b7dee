//! What the gateway's own loopback endpoints share (the stdio bridge, the
//! virtual servers' aggregators): the accept loop, response helpers and the
//! constant-time secret check.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};

pub type Body = BoxBody<Bytes, Infallible>;

/// One JSON-RPC message's members, each kept as the text it arrived as (so
/// what is passed on is what the client wrote).
pub type Members = std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>;

/// Member `name` of `m`, read as a `T`.
pub fn member<T: serde::de::DeserializeOwned>(m: &Members, name: &str) -> Option<T> {
    serde_json::from_str(m.get(name)?.get()).ok()
}

/// A lock that outlives a panic of an earlier holder (the state it guards
/// is kept consistent by every writer).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 404 with JSON-RPC error -32001: the session is unknown or ended (the
/// client opens a new one).
pub fn session_not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        None,
        serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": "Session not found"}})
            .to_string(),
    )
}

/// Constant-time comparison (the endpoints' secrets, owner digests).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The endpoint `pred` picks among the current ones (by server name), else
/// among those an earlier setup replaced (they serve what they have).
pub fn find_endpoint<T>(
    current: &Mutex<HashMap<String, Arc<T>>>,
    retired: &Mutex<Vec<Arc<T>>>,
    pred: impl Fn(&T) -> bool,
) -> Option<Arc<T>> {
    let found = current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .find(|e| pred(e))
        .cloned();
    found.or_else(|| {
        retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| pred(e))
            .cloned()
    })
}

/// A response with `status` and a fixed text body.
pub fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

/// A JSON response (with the session id, when one opens).
pub fn json(status: StatusCode, session: Option<&str>, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert("mcp-session-id", s);
    }
    r
}

/// An SSE response of the (already framed) events `stream` yields.
pub fn event_stream<S>(stream: S, session: Option<&str>) -> Response<Body>
where
    S: futures_util::Stream<Item = Bytes> + Send + Sync + 'static,
{
    use futures_util::StreamExt;
    let frames = stream.map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let h = r.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("mcp-session-id", s);
    }
    r
}

/// Runs an endpoint on a thread of its own, with a current-thread runtime,
/// for the process's lifetime (a stdio server's parent-death signal is tied
/// to the thread that started it): `start` gets the listener made async.
/// `what` names the endpoint in the log if the runtime cannot start.
pub fn spawn<S, F>(
    thread: String,
    what: &'static str,
    listener: std::net::TcpListener,
    start: S,
) -> std::io::Result<()>
where
    S: FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    std::thread::Builder::new().name(thread).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("{what} runtime: {e}");
                return;
            }
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => start(l).await,
                Err(e) => tracing::error!("{what}: {e}"),
            }
        });
    })?;
    Ok(())
}

/// The text of header `name` (empty when absent or not visible ASCII).
pub fn header_text(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Serves HTTP/1.1 on `listener` with `handle`, at most `slots` connections
/// at once (a connection beyond that is closed at once); a client gets 10 s
/// to send its headers.
pub async fn serve<H, F>(listener: tokio::net::TcpListener, slots: usize, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(slots));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: no busy loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = hyper::service::service_fn(move |req| {
                let f = handle(req);
                async move { Ok::<_, Infallible>(f.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

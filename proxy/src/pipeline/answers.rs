//! Writing the gateway's own answers: refusals, JSON-RPC answers, 202s.
//! Every error the gateway produces goes through [`write_refusal`], so the
//! body is always a JSON-RPC error carrying the request id.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora_core::protocols::http::ServerSession as Session;
use warden_filters::Refusal;

use crate::observability::metrics::metrics;

pub const JSON: &str = "application/json";

/// Writes `refusal` as the whole response. Closes the connection afterwards
/// when the request body may be unread.
pub async fn write_refusal(session: &mut Session, refusal: &Refusal) -> Result<()> {
    if session.response_written().is_some() {
        // Another answer went out first and failed part-way: a second must
        // not follow inside its framing, and the connection ends.
        session.set_keepalive(None);
        return Error::e_explain(ErrorType::WriteError, "an answer was already under way");
    }
    let (h, body) = refusal_answer(refusal)?;
    if refusal.reason == "body_read" {
        // A body whose framing broke reads as done, but where it ends is
        // unknown: nothing after it may be read as another request.
        session.set_keepalive(None);
    }
    let unread = !session.is_body_done();
    if unread {
        if session.is_http2() {
            // An h2 stream refused before its body arrived would be reset and
            // the client would see a framing error instead of this answer:
            // take in (and drop) a bounded amount of body first.
            drain_body(session, 1 << 20).await;
        } else {
            session.set_keepalive(None);
        }
    }
    session.write_response_header(Box::new(h)).await?;
    session.write_response_body(body, true).await?;
    if unread && !session.is_http2() && !expects_continue(session) {
        // The connection closes after this answer. Bytes of the body still
        // unread at the close would make the kernel reset the connection,
        // and the client's kernel would drop the answer with it: what the
        // client is still sending is taken in (and dropped) for a bounded
        // while first.
        drain_body(session, 64 << 20).await;
    }
    Ok(())
}

/// Writes `refusal` for a request whose header the gateway will not act on
/// (unreadable, or a method that changes the framing), before anything
/// reads its body: the connection closes after it, so nothing the client
/// sent after the header is read as another request.
pub async fn write_unread_refusal(session: &mut Session, refusal: &Refusal) -> Result<()> {
    let (mut h, body) = refusal_answer(refusal)?;
    h.insert_header("connection", http::HeaderValue::from_static("close"))?;
    session.write_error_response(h, body).await
}

/// The header and body of `refusal`'s answer, counted.
fn refusal_answer(refusal: &Refusal) -> Result<(ResponseHeader, Bytes)> {
    metrics()
        .refusals
        .with_label_values(&[refusal.reason])
        .inc();
    let body = refusal.body();
    let mut h = ResponseHeader::build(refusal.status, Some(5))?;
    h.insert_header("content-type", JSON)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", http::HeaderValue::from_static("no-store"))?;
    for (k, v) in &refusal.headers {
        h.insert_header(*k, v.as_str())?;
    }
    Ok((h, Bytes::from(body)))
}

/// Writes JSON-RPC answers the gateway produced itself (HTTP 200), or a bare
/// 202 when there is nothing to answer.
/// Writes the gateway's own answers. Under 2026-07-28 (`modern`) a lone
/// `-32602` answer goes out with 400, as servers of that revision send their
/// own invalid-params errors (an unknown resource, say): a hidden name and an
/// unknown one must look alike.
///
/// Returns the status answered, and whether the answer was written.
pub async fn write_answers(
    session: &mut Session,
    answers: &[serde_json::Value],
    batch: bool,
    modern: bool,
) -> (u16, Result<()>) {
    if answers.is_empty() {
        let written = async {
            let mut h = ResponseHeader::build(202, Some(1))?;
            h.insert_header("content-length", "0")?;
            session.write_response_header(Box::new(h)).await
        };
        return (202, written.await);
    }
    let body = answers_body(answers, batch);
    let status = if modern
        && !batch
        && answers.len() == 1
        && answers[0]["error"]["code"] == warden_filters::codes::INVALID_PARAMS
    {
        400
    } else {
        200
    };
    let written = async {
        let mut h = ResponseHeader::build(status, Some(3))?;
        h.insert_header("content-type", JSON)?;
        h.insert_header("content-length", body.len().to_string())?;
        session.write_response_header(Box::new(h)).await?;
        session.write_response_body(Bytes::from(body), true).await
    };
    (status, written.await)
}

pub fn answers_body(answers: &[serde_json::Value], batch: bool) -> Vec<u8> {
    let v = if batch || answers.len() > 1 {
        serde_json::Value::Array(answers.to_vec())
    } else {
        answers[0].clone()
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Reads and discards up to 1 MiB of request body, for at most one second.
/// The method and target (tool, prompt or resource) of a refused POST's
/// single message, read from at most the body limit (1 MiB without a
/// bundle) within one second, for the audit record only.
pub async fn read_refused(
    session: &mut Session,
    ctx: &crate::pipeline::ctx::RequestCtx,
) -> Option<(String, Option<String>)> {
    if session.req_header().method != http::Method::POST || session.is_body_done() {
        return None;
    }
    let (cap, limits) = (
        ctx.rt.snap.config.limits.max_request_body,
        ctx.rt.snap.parse_limits,
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut body = bytes::BytesMut::new();
    let mut reads = 0;
    while !session.is_body_done() {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > cap {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Ok(None)) => break,
            Ok(Err(_)) => {
                // Broken framing: see `drain_body`.
                session.set_keepalive(None);
                return None;
            }
            Err(_) => return None,
        }
        reads += 1;
        if reads == MAX_READS {
            return None;
        }
    }
    match warden_filters::protocol::jsonrpc::parse_read(&body, limits) {
        Ok(warden_filters::protocol::jsonrpc::Parsed::Single(env)) => {
            let target = warden_filters::protocol::mcp::judged_target(&env).map(str::to_owned);
            Some((env.method?, target))
        }
        Ok(warden_filters::protocol::jsonrpc::Parsed::Batch(_)) => None,
        Err(f) => refused_message(&f.read),
    }
}

/// A message the parser refused, as its record names it: the method and
/// target read before the fault (`ReadSoFar`), none when no method was.
pub fn refused_message(
    read: &warden_filters::protocol::jsonrpc::ReadSoFar,
) -> Option<(String, Option<String>)> {
    let method = read.method.clone()?;
    Some((method, read.target().map(str::to_owned)))
}

/// Reads and drops up to about `cap` bytes of the request body, in at most
/// [`MAX_READS`] reads and one second. A body whose framing breaks ends the
/// connection: where it ends is unknown.
async fn drain_body(session: &mut Session, cap: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut seen = 0;
    for _ in 0..MAX_READS {
        if session.is_body_done() || seen > cap {
            return;
        }
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => seen += chunk.len(),
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(_)) => {
                session.set_keepalive(None);
                return;
            }
        }
    }
}

/// Reads of a refused body, however small its chunks (one-byte chunks cost
/// a read each, and count as one byte).
const MAX_READS: usize = 4096;

/// The client waits for `100 Continue` before it sends the body: the
/// gateway never sends one, so after a refusal no body follows.
fn expects_continue(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

//! Reading the request body whole, bounded, before anything reaches the upstream.
//!
//! Pingora forwards a request body that a filter has already consumed only
//! through its retry buffer, which holds at most 64 KiB and is dropped once a
//! body outgrows it. Warden reads the body in `request_filter`, and turns the
//! retry buffer on only for the final window of at most 64 KiB (known from
//! `Content-Length`, or from the start for bodies of unknown length). Pingora
//! then replays that window once, as the end of the body, through
//! `request_body_filter` — where the gateway substitutes the complete bytes it
//! judged. Upstream framing is always rewritten to the judged body's length.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;
use warden_filters::Refusal;

/// Pingora's retry buffer capacity (`BODY_BUF_LIMIT` in pingora-core).
pub const REPLAY_WINDOW: usize = 64 * 1024;

#[derive(Debug)]
pub enum BodyError {
    Refused(Refusal),
    /// A body of unknown length (chunked, or h2 without content-length) larger
    /// than the replay window: Pingora cannot be made to forward it.
    Unreplayable(Bytes),
}

fn content_length(session: &Session) -> Result<Option<usize>, Refusal> {
    let mut values = session
        .req_header()
        .headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::bad_header("content-length", "sent more than once"));
    }
    let s = v
        .to_str()
        .map_err(|_| Refusal::bad_header("content-length", "not ASCII"))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::bad_header(
            "content-length",
            "not a decimal number",
        ));
    }
    s.parse()
        .map(Some)
        .map_err(|_| Refusal::bad_header("content-length", "out of range"))
}

/// Time a body may take before the minimum rate applies.
pub const RATE_GRACE: Duration = Duration::from_secs(5);

/// Reads the whole body, refusing it with 413 past `limit`, and with 408 when
/// it takes longer than `timeout` or falls below `min_rate` bytes per second
/// (on average since the start, once [`RATE_GRACE`] has passed).
pub async fn read_whole(
    session: &mut Session,
    limit: usize,
    timeout: Duration,
    min_rate: usize,
) -> Result<Bytes, BodyError> {
    let cl = content_length(session).map_err(BodyError::Refused)?;
    if let Some(n) = cl {
        if n > limit {
            return Err(BodyError::Refused(Refusal::too_large(limit)));
        }
    }
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut buf = BytesMut::with_capacity(cl.unwrap_or(8 * 1024).min(limit));
    let mut replay_on = false;
    loop {
        let window_reached = match cl {
            Some(n) => n - buf.len().min(n) <= REPLAY_WINDOW,
            None => true,
        };
        if !replay_on && window_reached {
            session.enable_retry_buffering();
            replay_on = true;
        }
        // The next byte is due when the average would drop below the rate.
        let due = start
            + RATE_GRACE
            + Duration::from_secs_f64((buf.len() + 1) as f64 / min_rate.max(1) as f64);
        let chunk =
            match tokio::time::timeout_at(due.min(deadline), session.read_request_body()).await {
                Err(_) if due < deadline => {
                    return Err(BodyError::Refused(Refusal::body_too_slow(min_rate)))
                }
                Err(_) => return Err(BodyError::Refused(Refusal::body_timeout())),
                Ok(Err(e)) => {
                    return Err(BodyError::Refused(Refusal::new(
                        400,
                        "body_read",
                        warden_filters::JsonRpcError::new(
                            warden_filters::codes::REFUSED,
                            format!("Request body could not be read: {e}"),
                        ),
                    )))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::Refused(Refusal::too_large(limit)));
        }
        buf.extend_from_slice(&chunk);
    }
    let body = buf.freeze();
    if body.is_empty() {
        return Ok(body);
    }
    if session.get_retry_buffer().is_none() {
        return Err(BodyError::Unreplayable(body));
    }
    Ok(body)
}

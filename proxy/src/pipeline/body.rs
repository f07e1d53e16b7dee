//! Reading the request body whole, bounded, before anything reaches the upstream.
//!
//! The body is read once into one buffer (sized from `Content-Length` when
//! the client sent one), judged, and the judged bytes are what `forward`
//! sends: Pingora's retry buffer is never turned on, so the body is not
//! copied a second time. Upstream framing is always the judged body's length.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::ServerSession as Session;
use warden_filters::Refusal;

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

/// How long `bytes` take at `rate` bytes per second (a rate of 0 counts
/// as 1), in whole nanoseconds: integer arithmetic, exact for any body
/// and rate (`Duration::from_secs_f64` costs more per read than the rest of
/// this loop).
fn at_rate(bytes: usize, rate: usize) -> Duration {
    let nanos = bytes as u128 * 1_000_000_000 / rate.max(1) as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Reads the whole body, refusing it with 413 past `limit`, and with 408 when
/// it takes longer than `timeout` or falls below `min_rate` bytes per second
/// (on average since the start, once [`RATE_GRACE`] has passed).
pub async fn read_whole(
    session: &mut Session,
    limit: usize,
    timeout: Duration,
    min_rate: usize,
) -> Result<Bytes, Refusal> {
    let cl = content_length(session)?;
    if let Some(n) = cl {
        if n > limit {
            return Err(Refusal::too_large(limit));
        }
    }
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        // The next byte is due when the average would drop below the rate.
        let due = start
            + RATE_GRACE
            + at_rate(
                buf.len() + first.as_ref().map_or(0, Bytes::len) + 1,
                min_rate,
            );
        let chunk =
            match tokio::time::timeout_at(due.min(deadline), session.read_request_body()).await {
                Err(_) if due < deadline => return Err(Refusal::body_too_slow(min_rate)),
                Err(_) => return Err(Refusal::body_timeout()),
                Ok(Err(e)) => {
                    return Err(Refusal::new(
                        400,
                        "body_read",
                        warden_filters::JsonRpcError::new(
                            warden_filters::codes::REFUSED,
                            format!("Request body could not be read: {e}"),
                        ),
                    ))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
        let have = buf.len() + first.as_ref().map_or(0, Bytes::len);
        if have + chunk.len() > limit {
            return Err(Refusal::too_large(limit));
        }
        // The common case, the whole body in one read, keeps Pingora's
        // buffer as it is: no copy.
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            Some(f) => {
                buf.reserve(cl.unwrap_or(0).max(f.len() + chunk.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
            None => buf.extend_from_slice(&chunk),
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::at_rate;
    use std::time::Duration;

    #[test]
    fn the_time_a_body_may_take_is_exact_in_integers() {
        assert_eq!(at_rate(1, 1), Duration::from_secs(1));
        assert_eq!(at_rate(1024, 1024), Duration::from_secs(1));
        assert_eq!(at_rate(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(at_rate(3 * 1024, 1024), Duration::from_secs(3));
        // A rate of 0 is read as 1 byte per second, not a division by zero.
        assert_eq!(at_rate(5, 0), Duration::from_secs(5));
        // The largest body a bundle may allow at the lowest rate stays finite.
        assert_eq!(at_rate(1 << 30, 1), Duration::from_secs(1 << 30));
    }
}

//! What the aggregator's pieces share: a message's members kept as text,
//! JSON-RPC errors, the SSE reader of a member's stream, URI templates and
//! the responses the endpoint writes.

use super::*;

pub(super) fn raw(v: &Value) -> Box<RawValue> {
    RawValue::from_string(v.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
}

pub(super) fn is_response(v: &Value) -> bool {
    v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some())
}

pub(super) fn error_value(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": {"code": code, "message": message}})
}

/// Text for the log (bounded, one line).
pub(super) fn loggable(s: &str) -> String {
    s.chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Incremental SSE reader: the `data` of each complete event, framed as
/// the gateway's own decoder frames a stream (every line ending, a BOM, an
/// event split anywhere), so a member leg's events are read here as they
/// were judged there.
pub(super) struct SseReader {
    dec: warden_filters::protocol::sse::SseDecoder,
}

impl Default for SseReader {
    fn default() -> Self {
        SseReader {
            dec: warden_filters::protocol::sse::SseDecoder::new(MAX_EVENT),
        }
    }
}

impl SseReader {
    pub(super) fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, ()> {
        let events = self.dec.push(chunk).map_err(|_| ())?;
        Ok(events
            .into_iter()
            .filter_map(|e| e.data)
            .filter(|d| !d.trim().is_empty())
            .collect())
    }
}

/// A member leg's SSE response, read message by message.
pub(super) struct MemberStream {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    reader: SseReader,
}

impl MemberStream {
    pub(super) fn new(resp: reqwest::Response) -> Self {
        use futures_util::StreamExt;
        MemberStream {
            body: resp.bytes_stream().boxed(),
            reader: SseReader::default(),
        }
    }

    /// The messages that arrived with the next chunk (an event that is not
    /// JSON is skipped: the member's leg already judged every event);
    /// `Err` once the stream ends or breaks, or an event outgrows
    /// `MAX_EVENT`. Cancel-safe (a chunk is taken whole or not at all).
    pub(super) async fn next(&mut self) -> Result<Vec<Value>, String> {
        use futures_util::StreamExt;
        let chunk = match self.body.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the stream ended".into()),
        };
        let events = self
            .reader
            .push(&chunk)
            .map_err(|()| "an event over 16 MiB".to_owned())?;
        Ok(events
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }
}

pub(super) fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

/// The fixed beginning of a URI template, when it names more than a
/// scheme (`file:///{path}` or `h{x}` route nothing by themselves).
pub(super) fn template_head(t: &str) -> Option<&str> {
    let fixed = t.split('{').next()?;
    let (_, rest) = fixed.split_once(':')?;
    let after = rest.trim_start_matches('/');
    (!after.is_empty()).then_some(fixed)
}

/// The member a URI belongs to, by what each member learned: (it listed
/// the URI, its templates). Every member that claims the URI (lists it, or
/// has a template whose fixed beginning, more than a scheme, it has): one
/// is the answer, several are refused (no member takes another's URIs). A
/// template that is only a scheme (`file:///{path}`) routes nothing by
/// itself, but the URIs it covers are its member's too: another member's
/// narrower claim on one of them is ambiguous, not a takeover.
pub(super) fn claimant(
    uri: &str,
    members: &[(bool, Vec<&str>)],
) -> Result<Option<usize>, &'static str> {
    let claims: Vec<usize> = (0..members.len())
        .filter(|&i| {
            let (listed, templates) = &members[i];
            *listed
                || templates
                    .iter()
                    .filter_map(|t| template_head(t))
                    .any(|h| uri.starts_with(h))
        })
        .collect();
    let broad = |j: usize| {
        members[j]
            .1
            .iter()
            .filter(|t| template_head(t).is_none())
            .filter_map(|t| t.split('{').next())
            .any(|fixed| uri.starts_with(fixed))
    };
    match claims.as_slice() {
        [i] if (0..members.len()).any(|j| j != *i && broad(j)) => {
            Err("the URI is claimed by several members")
        }
        [i] => Ok(Some(*i)),
        [] => Ok(None),
        _ => Err("the URI is claimed by several members"),
    }
}
pub(super) fn raw_members(m: &Members) -> Box<RawValue> {
    serde_json::to_string(m)
        .ok()
        .and_then(|t| RawValue::from_string(t).ok())
        .unwrap_or_else(|| raw(&json!({})))
}

pub(super) fn plain(status: StatusCode) -> Response<Body> {
    crate::loopback::plain(status, "")
}

/// A bound reached: 429 with the request's id and what was exhausted.
pub(super) fn too_many(id: &Value, message: &str) -> Response<Body> {
    json_response(
        StatusCode::TOO_MANY_REQUESTS,
        None,
        &error_value(Some(id), -32603, message),
    )
}

pub(super) fn json_response(
    status: StatusCode,
    session: Option<&str>,
    v: &Value,
) -> Response<Body> {
    crate::loopback::json(status, session, v.to_string())
}

/// An SSE response of the events that arrive on `rx`.
pub(super) fn sse(rx: mpsc::Receiver<Bytes>, session: Option<&str>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((b, rx))
    });
    crate::loopback::event_stream(stream, session)
}

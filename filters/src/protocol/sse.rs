//! Incremental Server-Sent Events decoder that keeps every byte.
//!
//! Chunks from the network are pushed in as they arrive; complete events come
//! out as soon as their terminating blank line is seen, never held back behind
//! later ones. Each event keeps its raw bytes (`id:`, `retry:`, comments and
//! line endings untouched) so an unchanged event is forwarded byte for byte;
//! only events a filter rewrites are re-encoded.

use memchr::memchr2;

/// One complete event as it appeared on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The raw bytes, including the blank line that ended the event.
    pub raw: Vec<u8>,
    /// `event:` field, `None` for the default `message`.
    pub event: Option<String>,
    /// `data:` lines joined with `\n`; `None` when the event had no data line.
    pub data: Option<String>,
    pub id: Option<String>,
}

impl SseEvent {
    /// The event type as the SSE spec defines it (`message` by default).
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Re-encodes this event with new data (see [`SseEvent::cleaned`]).
    pub fn with_data(self, data: &str) -> Vec<u8> {
        self.cleaned(Some(data), &|id: &str| safe_id(id).then(|| id.to_owned()))
    }

    /// The event as it may reach a client: the judged `data` (or its own
    /// when `None`), the `event:` field, the `id:` that `id_out` makes of
    /// the server's (dropped when it makes none), a
    /// numeric `retry:`; comments become bare `:` lines (a keep-alive still
    /// keeps the connection alive, but its text never reaches the client);
    /// any other field is dropped. Nothing here is judged as MCP, so nothing
    /// the server chose travels in it. When nothing had to change, the raw
    /// bytes come back as they were.
    pub fn cleaned(self, data: Option<&str>, id_out: &dyn Fn(&str) -> Option<String>) -> Vec<u8> {
        enum Line<'a> {
            Keep(&'a [u8]),
            Id(String),
            Data,
            Comment,
        }
        let mut kept: Vec<Line<'_>> = Vec::new();
        // A Unicode line boundary inside a JSON string is valid JSON, but a
        // client that splits lines as Python's `str.splitlines` does (older
        // httpx-sse) would read a field of its own there: re-encoded escaped.
        let mut changed = data.is_some() || has_unicode_line_boundary(&self.raw);
        let mut has_data = false;
        // The stream's leading BOM never reaches an event (the decoder
        // drops it); one anywhere else is part of a field name, as clients
        // read it, so that field is unknown and dropped here.
        for (line, _) in lines(&self.raw) {
            if line.is_empty() {
                continue;
            }
            let name = field_name(line);
            let value = line.get(name.len() + 1..).unwrap_or_default();
            let value = value.strip_prefix(b" ").unwrap_or(value);
            match name {
                b"" => {
                    changed |= line != b":";
                    kept.push(Line::Comment);
                }
                b"data" => {
                    if !has_data {
                        kept.push(Line::Data);
                        has_data = true;
                    }
                }
                b"event" if matches!(value, b"message" | b"endpoint") => {
                    kept.push(Line::Keep(line))
                }
                b"id" => match std::str::from_utf8(value).ok().and_then(id_out) {
                    Some(id) if id.as_bytes() == value => kept.push(Line::Keep(line)),
                    Some(id) => {
                        changed = true;
                        kept.push(Line::Id(id));
                    }
                    None => changed = true,
                },
                b"retry"
                    if !value.is_empty()
                        && value.len() <= 10
                        && value.iter().all(u8::is_ascii_digit) =>
                {
                    kept.push(Line::Keep(line))
                }
                _ => changed = true,
            }
        }
        if !changed {
            drop(kept);
            return self.raw;
        }
        let data = data.or(self.data.as_deref());
        let mut out = Vec::with_capacity(self.raw.len() + data.map_or(0, str::len));
        let mut wrote_data = false;
        for l in kept {
            match l {
                Line::Keep(b) => {
                    out.extend_from_slice(b);
                    out.push(b'\n');
                }
                Line::Id(id) => {
                    out.extend_from_slice(b"id: ");
                    out.extend_from_slice(id.as_bytes());
                    out.push(b'\n');
                }
                Line::Comment => out.extend_from_slice(b":\n"),
                Line::Data => {
                    if let Some(d) = data {
                        push_data_lines(&mut out, d);
                        wrote_data = true;
                    }
                }
            }
        }
        if let (false, Some(d)) = (wrote_data, data) {
            push_data_lines(&mut out, d);
        }
        out.push(b'\n');
        out
    }

    /// Encodes a fresh `message` event carrying `data` (used for injected denials).
    pub fn encode_message(data: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 24);
        out.extend_from_slice(b"event: message\n");
        push_data_lines(&mut out, data);
        out.push(b'\n');
        out
    }
}

/// An event id a client may see: short, and only characters event ids are
/// made of (SDKs use stream and sequence numbers, UUIDs).
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// The characters besides CR and LF that some SSE readers end a line at
/// (Python's `str.splitlines`: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR).
/// Inside JSON (the only place a message may hold them: JSON's whitespace
/// is ASCII) they can only be string content, so their `\u` escapes carry
/// the same value.
const UNICODE_LINE_BOUNDARIES: [(char, &str); 3] = [
    ('\u{0085}', "\\u0085"),
    ('\u{2028}', "\\u2028"),
    ('\u{2029}', "\\u2029"),
];

/// Whether `raw` holds a character [`UNICODE_LINE_BOUNDARIES`] names (their
/// UTF-8 forms start with 0xC2 or 0xE2; most events hold neither byte).
fn has_unicode_line_boundary(raw: &[u8]) -> bool {
    memchr2(0xC2, 0xE2, raw).is_some()
        && std::str::from_utf8(raw).map_or(true, |s| {
            s.contains(|c| UNICODE_LINE_BOUNDARIES.iter().any(|(b, _)| *b == c))
        })
}

/// One `data:` line per line of `data`. CR, LF and CRLF all end a line, as
/// they do for SSE parsers, so no value can smuggle in a field of its own;
/// the Unicode line boundaries some readers also split at are escaped.
fn push_data_lines(out: &mut Vec<u8>, data: &str) {
    let escaped;
    let data = if has_unicode_line_boundary(data.as_bytes()) {
        let mut s = data.to_owned();
        for (c, esc) in UNICODE_LINE_BOUNDARIES {
            s = s.replace(c, esc);
        }
        escaped = s;
        escaped.as_str()
    } else {
        data
    };
    for d in data.replace("\r\n", "\n").split(['\n', '\r']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(d.as_bytes());
        out.push(b'\n');
    }
}

fn field_name(line: &[u8]) -> &[u8] {
    match memchr::memchr(b':', line) {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Splits complete lines (content, terminator length); a trailing partial line is not returned.
fn lines(buf: &[u8]) -> impl Iterator<Item = (&[u8], usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = &buf[pos..];
        let i = memchr2(b'\r', b'\n', rest)?;
        let term = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        let line = &rest[..i];
        pos += i + term;
        Some((line, term))
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("server-sent event exceeds the limit of {0} bytes")]
    EventTooLarge(usize),
    #[error("server-sent event data is not valid UTF-8")]
    InvalidUtf8,
}

/// Decoder state for one stream.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// How far `buf` has been scanned for a line end (resume point): each
    /// byte is looked at once however the stream is chunked.
    scanned: usize,
    /// Where the line holding `scanned` starts (a line end there ends the
    /// event).
    line_start: usize,
    max_event: usize,
    /// Bytes the line search has looked at, over the stream.
    #[cfg(test)]
    looked: usize,
    /// Whether the stream's leading BOM has been dealt with.
    started: bool,
}

impl SseDecoder {
    pub fn new(max_event: usize) -> Self {
        SseDecoder {
            buf: Vec::new(),
            scanned: 0,
            line_start: 0,
            max_event,
            #[cfg(test)]
            looked: 0,
            started: false,
        }
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Feeds a chunk and returns every event it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        // Events are cut from the front, and the buffer moved once.
        let mut start = 0;
        let cut = loop {
            match self.find_event_end() {
                Some(end) => {
                    let raw = self.buf[start..end].to_vec();
                    start = end;
                    match decode(raw) {
                        Ok(e) => events.push(e),
                        Err(e) => break Err(e),
                    }
                }
                None => break Ok(()),
            }
        };
        self.buf.drain(..start);
        self.scanned -= start;
        self.line_start -= start;
        cut?;
        if self.buf.len() > self.max_event {
            return Err(SseError::EventTooLarge(self.max_event));
        }
        Ok(events)
    }

    /// At end of stream: the events a final CR completes. A CR that ends
    /// the buffer was held as the possible first half of a CRLF; with no
    /// more bytes to come it is a line end of its own, as clients read it
    /// (`data: …\r\r` at the end of a stream is a whole event).
    pub fn end(&mut self) -> Result<Vec<SseEvent>, SseError> {
        if self.buf.last() == Some(&b'\r') {
            // CR LF is one line end, as the lone CR was.
            self.push(b"\n")
        } else {
            Ok(Vec::new())
        }
    }

    /// At end of stream: the unterminated tail, which per the SSE spec is
    /// discarded by clients; the gateway forwards it unchanged only if it holds
    /// no data line (comments), and drops an incomplete data event.
    pub fn finish(&mut self) -> Vec<u8> {
        self.scanned = 0;
        self.line_start = 0;
        std::mem::take(&mut self.buf)
    }

    /// Finds the end (exclusive) of the next complete event in `buf`, from
    /// where the last one ended; `scanned` and `line_start` then point past it.
    fn find_event_end(&mut self) -> Option<usize> {
        if !self.started {
            if self.buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf) {
                return None;
            }
            // Only the stream's first bytes may be a BOM, which clients
            // skip; it is dropped here, so no event carries it. A BOM
            // anywhere later is read as clients read it: part of a field
            // name, an unknown field.
            if self.buf.starts_with(b"\xEF\xBB\xBF") {
                self.buf.drain(..3);
                self.scanned = 0;
                self.line_start = 0;
            }
            self.started = true;
        }
        loop {
            let pos = self.scanned;
            let rest = &self.buf[pos..];
            let found = memchr2(b'\r', b'\n', rest);
            #[cfg(test)]
            {
                self.looked += found.map_or(rest.len(), |i| i + 1);
            }
            let Some(i) = found else {
                self.scanned = self.buf.len();
                return None;
            };
            let term = if rest[i] == b'\r' {
                match rest.get(i + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of the buffer may be the first half
                    // of CRLF: looked at again with the next bytes.
                    None => {
                        self.scanned = pos + i;
                        return None;
                    }
                }
            } else {
                1
            };
            let empty_line = pos + i == self.line_start;
            self.scanned = pos + i + term;
            self.line_start = self.scanned;
            if empty_line {
                return Some(self.scanned);
            }
        }
    }
}

fn decode(raw: Vec<u8>) -> Result<SseEvent, SseError> {
    let mut event = None;
    let mut data: Option<String> = None;
    let mut id = None;
    for (line, _) in lines(&raw) {
        if line.is_empty() || line[0] == b':' {
            continue;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value).map_err(|_| SseError::InvalidUtf8)?;
        match name {
            b"event" => event = Some(value.to_owned()),
            b"data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            b"id" if !value.contains('\0') => id = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(SseEvent {
        raw,
        event,
        data,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_split_events() {
        let stream = b": comment\nretry: 100\n\nid: 1\nevent: message\ndata: {\"a\":\ndata: 1}\n\n";
        let mut one = SseDecoder::new(1024);
        let all = one.push(stream).expect("ok");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].data, None);
        assert_eq!(all[1].data.as_deref(), Some("{\"a\":\n1}"));
        assert_eq!(all[1].id.as_deref(), Some("1"));
        let joined: Vec<u8> = all.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(joined, stream.to_vec());
        // Every split point, byte by byte, gives the same events.
        for split in 0..stream.len() {
            let mut d = SseDecoder::new(1024);
            let mut evs = d.push(&stream[..split]).expect("ok");
            evs.extend(d.push(&stream[split..]).expect("ok"));
            assert_eq!(evs, all, "split at {split}");
        }
    }

    /// Fed byte by byte, any mix of line ends decodes as when whole, and
    /// each push resumes where the last one stopped: a long line arriving
    /// in small chunks is looked at once, not again with every chunk.
    #[test]
    fn byte_by_byte_is_whole_and_each_byte_is_scanned_once() {
        let stream =
            b"\xEF\xBB\xBFdata: a\r\rid: 2\r\ndata: {\"b\":1}\r\n\r\n: c\n\ndata: x\ndata: y\n\n";
        let all = SseDecoder::new(1024).push(stream).expect("ok");
        assert_eq!(all.len(), 4);
        let mut d = SseDecoder::new(1024);
        let mut evs = Vec::new();
        for (k, b) in stream.iter().enumerate() {
            evs.extend(d.push(&[*b]).expect("ok"));
            if *b != b'\r' && k >= 3 {
                assert_eq!(d.scanned, d.buf.len(), "after byte {k}");
            }
        }
        assert_eq!(evs, all);
        let mut d = SseDecoder::new(1 << 20);
        d.push(b"data: {\"t\":\"").expect("ok");
        for _ in 0..1000 {
            assert!(d.push(&[b'a'; 512]).expect("ok").is_empty());
        }
        assert!(d.looked <= 512_000 + 16, "looked at {} bytes", d.looked);
        let evs = d.push(b"\"}\n\n").expect("ok");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.as_deref().map(str::len), Some(512_000 + 8));
        // What is left is handed out whole, and the decoder starts over.
        d.push(b"data: tail").expect("ok");
        assert_eq!(d.finish(), b"data: tail");
        assert_eq!(d.push(b"data: x\n\n").expect("ok").len(), 1);
    }

    #[test]
    fn unicode_line_boundaries_leave_escaped() {
        // Raw NEL, LS and PS are valid inside JSON strings; a reader that
        // splits lines at them (Python's `splitlines`) must find none.
        for c in ['\u{0085}', '\u{2028}', '\u{2029}'] {
            let stream = format!("data: {{\"t\":\"ok{c}id: 9{c}{c}x\"}}\n\n");
            let mut d = SseDecoder::new(1024);
            let evs = d.push(stream.as_bytes()).expect("ok");
            assert_eq!(evs.len(), 1);
            let out = String::from_utf8(
                evs[0]
                    .clone()
                    .cleaned(None, &|id: &str| Some(id.to_owned())),
            )
            .expect("utf-8");
            assert!(!out.contains(c), "{out:?}");
            let data = out
                .strip_prefix("data: ")
                .and_then(|d| d.strip_suffix("\n\n"));
            let v: serde_json::Value =
                serde_json::from_str(data.expect("one data line")).expect("json");
            assert_eq!(v["t"], format!("ok{c}id: 9{c}{c}x"));
            // The same for data a filter rewrote, and for injected events.
            let out = evs[0].clone().with_data(&format!("{{\"t\":\"{c}\"}}"));
            assert!(!String::from_utf8_lossy(&out).contains(c));
            let out = SseEvent::encode_message(&format!("{{\"t\":\"{c}\"}}"));
            assert!(!String::from_utf8_lossy(&out).contains(c));
        }
        // An event without them leaves as it came.
        let mut d = SseDecoder::new(1024);
        let evs = d.push("data: {\"t\":\"é€\"}\n\n".as_bytes()).expect("ok");
        assert_eq!(
            evs[0]
                .clone()
                .cleaned(None, &|id: &str| Some(id.to_owned())),
            evs[0].raw
        );
    }

    #[test]
    fn only_the_streams_first_bytes_may_be_a_bom() {
        // Clients skip a BOM only at the very start of the stream; later
        // it is part of a field name (`\u{feff}data`), an unknown field.
        let stream = "\u{feff}data: {\"a\":1}\n\n\u{feff}data: {\"b\":2}\n\nevent: message\n\u{feff}data: {\"c\":3}\ndata: {\"d\":4}\n\n";
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            let mut d = SseDecoder::new(1024);
            let mut evs = d.push(&bytes[..split]).expect("ok");
            evs.extend(d.push(&bytes[split..]).expect("ok"));
            assert_eq!(evs.len(), 3, "split at {split}");
            assert_eq!(evs[0].data.as_deref(), Some("{\"a\":1}"));
            // The leading BOM is gone from what is forwarded.
            assert!(!evs[0].raw.starts_with(b"\xEF\xBB\xBF"));
            assert_eq!(evs[1].data, None, "split at {split}");
            assert_eq!(evs[2].data.as_deref(), Some("{\"d\":4}"));
            // What reaches the client holds no field the gateway did not read.
            let out = evs[1]
                .clone()
                .cleaned(None, &|id: &str| Some(id.to_owned()));
            assert!(!out.windows(3).any(|w| w == b"\xEF\xBB\xBF"), "{out:?}");
            let out = evs[2]
                .clone()
                .cleaned(None, &|id: &str| Some(id.to_owned()));
            assert!(!out.windows(3).any(|w| w == b"\xEF\xBB\xBF"), "{out:?}");
        }
    }

    #[test]
    fn crlf_split_between_chunks() {
        let mut d = SseDecoder::new(1024);
        assert!(d.push(b"data: x\r\n\r").expect("ok").is_empty());
        let evs = d.push(b"\ndata: y\r\r").expect("ok");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].raw, b"data: x\r\n\r\n");
        // A trailing CR may be half of a CRLF: the event completes with the next byte.
        let evs = d.push(b":").expect("ok");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.as_deref(), Some("y"));
        assert_eq!(d.pending(), b":");
    }

    #[test]
    fn a_final_cr_ends_its_line_at_the_end_of_the_stream() {
        let mut d = SseDecoder::new(1024);
        assert!(d.push(b"data: x\r\r").expect("ok").is_empty());
        let evs = d.end().expect("ok");
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.as_deref(), Some("x"));
        assert!(d.pending().is_empty());
        // No final CR: nothing more, the unterminated tail stays a tail.
        let mut d = SseDecoder::new(1024);
        assert!(d.push(b"data: x\n").expect("ok").is_empty());
        assert!(d.end().expect("ok").is_empty());
        assert_eq!(d.pending(), b"data: x\n");
    }

    #[test]
    fn event_size_bound() {
        let mut d = SseDecoder::new(16);
        assert_eq!(d.push(&[b'a'; 32]), Err(SseError::EventTooLarge(16)));
    }

    #[test]
    fn rewrite_keeps_other_lines() {
        let mut d = SseDecoder::new(1024);
        let ev = d
            .push(b"id: 7\nevent: message\ndata: old\n\n")
            .expect("ok")
            .remove(0);
        assert_eq!(
            ev.with_data("new"),
            b"id: 7\nevent: message\ndata: new\n\n".to_vec()
        );
        assert_eq!(
            SseEvent::encode_message("{}"),
            b"event: message\ndata: {}\n\n".to_vec()
        );
    }
}

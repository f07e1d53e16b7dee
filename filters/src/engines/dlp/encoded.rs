//! Text hidden under an encoding a reader (or the model) undoes at once:
//! base64 (standard or URL-safe, padded or not), hex, and percent-encoding.
//! A secret sent as `QUtJQUlPU0ZPRE5ON0VYQU1QTEU=` or
//! `%41KIAIOSFODNN7EXAMPLE` is the secret to whoever decodes it, so the
//! scanner reads the decoded text too.
//!
//! - **base64 and hex**: every run of at least [`MIN_RUN`] characters of
//!   the base64 alphabet (`=` padding after it) is decoded, as hex when it
//!   is all hex digits of even length and that decodes to text, as base64
//!   otherwise. Only a decoding that is text (valid UTF-8 without control
//!   characters but tab and line breaks) is read: random identifiers and
//!   binary data decode to bytes that are not. A finding in it covers the
//!   whole run, which is all that can be redacted of it.
//! - **percent-encoding**: a string holding a `%XX` escape is read decoded,
//!   and a finding maps back to exactly the escapes and characters it came
//!   from.
//!
//! The decoded text is scanned like any string, its own encodings
//! included, to [`MAX_DEPTH`] levels (base64 of percent-encoded text).

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// The shortest run read as base64 or hex: 12 bytes of base64, 8 of hex.
pub(crate) const MIN_RUN: usize = 16;

/// How many encodings deep the scanner reads.
pub(crate) const MAX_DEPTH: u8 = 2;

/// Decoded text found in a string, and how its bytes map back.
pub(crate) struct Decoded {
    pub(crate) text: String,
    span: Span,
}

enum Span {
    /// A base64 or hex run: any finding is the whole run.
    Whole(usize, usize),
    /// Percent-decoded: for each byte of the text, the original offset of
    /// the escape or character it came from; one more entry, the
    /// original's length.
    Mapped(Vec<usize>),
}

impl Decoded {
    /// The original span of the decoded bytes `start..end`.
    pub(crate) fn original(&self, start: usize, end: usize) -> (usize, usize) {
        match &self.span {
            Span::Whole(a, b) => (*a, *b),
            Span::Mapped(from) => (from[start], from[end]),
        }
    }
}

/// Whether `b` holds encoded text: a `%XX` escape, or a run of at least
/// [`MIN_RUN`] base64 characters that decodes to text. For strings (or a
/// raw message) the prefilter did not already send to the scanner.
pub(crate) fn may_hold(b: &[u8]) -> bool {
    percent_escape(b) || runs(b).any(|(start, end)| decode_run(&b[start..end]).is_some())
}

/// The text a run decodes to: as hex when it is all hex digits of even
/// length and that is text, as base64 otherwise.
fn decode_run(run: &[u8]) -> Option<String> {
    let hex = run.len().is_multiple_of(2) && run.iter().all(u8::is_ascii_hexdigit);
    hex.then(|| hex::decode(run).ok().and_then(text))
        .flatten()
        .or_else(|| base64_text(run))
}

fn percent_escape(b: &[u8]) -> bool {
    memchr::memchr_iter(b'%', b).any(|i| {
        b.get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

fn base64_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_')
}

/// Maximal runs of base64 characters (their `=` padding included) at least
/// [`MIN_RUN`] long: `(start, end)`.
fn runs(b: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !base64_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && base64_byte(b[i]) {
                i += 1;
            }
            let body = i - start;
            let mut pad = 0;
            while pad < 2 && b.get(i) == Some(&b'=') {
                i += 1;
                pad += 1;
            }
            if body >= MIN_RUN {
                return Some((start, i));
            }
        }
        None
    })
}

/// `b` as text a reader takes for text: UTF-8 without control characters
/// but tab, line feed and carriage return.
fn text(b: Vec<u8>) -> Option<String> {
    if b.iter()
        .any(|&c| (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f)
    {
        return None;
    }
    String::from_utf8(b).ok()
}

fn engine(alphabet: &base64::alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// The text a base64 string decodes to (standard or URL-safe alphabet,
/// padded or not), if it is text.
pub(crate) fn base64_text(run: &[u8]) -> Option<String> {
    let url = run.iter().any(|c| matches!(c, b'-' | b'_'));
    let std = run.iter().any(|c| matches!(c, b'+' | b'/'));
    let alphabet = match (url, std) {
        (true, true) => return None,
        (true, false) => &base64::alphabet::URL_SAFE,
        _ => &base64::alphabet::STANDARD,
    };
    let engine = engine(alphabet);
    // A long run (an image) is looked at before it is decoded whole.
    if run.len() > HEAD && !starts_as_text(&engine, run) {
        return None;
    }
    text(engine.decode(run).ok()?)
}

/// How much of a long base64 run is decoded to tell whether it is text.
const HEAD: usize = 256;

/// Whether the start of a base64 string decodes to text (a cheap look
/// before decoding a large binary member whole).
pub(crate) fn base64_starts_as_text(b: &[u8]) -> bool {
    starts_as_text(&engine(&base64::alphabet::STANDARD), b)
}

fn starts_as_text(engine: &GeneralPurpose, b: &[u8]) -> bool {
    let head = &b[..b.len().min(HEAD) / 4 * 4];
    let Ok(bytes) = engine.decode(head) else {
        return false;
    };
    let valid = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        // A character cut at the end of the look is still text.
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => return false,
    };
    !bytes[..valid]
        .iter()
        .any(|&c| (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f)
}

/// Every decoded text in `s`.
pub(crate) fn each(s: &str, mut f: impl FnMut(Decoded)) {
    let b = s.as_bytes();
    for (start, end) in runs(b) {
        if let Some(text) = decode_run(&b[start..end]) {
            f(Decoded {
                text,
                span: Span::Whole(start, end),
            });
        }
    }
    if percent_escape(b) {
        if let Some(d) = percent(b) {
            f(d);
        }
    }
}

/// `b` percent-decoded, if that is text.
fn percent(b: &[u8]) -> Option<Decoded> {
    let mut out = Vec::with_capacity(b.len());
    let mut from = Vec::with_capacity(b.len() + 1);
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| b[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match hex.and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()) {
            Some(v) => {
                out.push(v);
                from.push(i);
                i += 3;
            }
            None => {
                out.push(b[i]);
                from.push(i);
                i += 1;
            }
        }
    }
    from.push(b.len());
    Some(Decoded {
        text: text(out)?,
        span: Span::Mapped(from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &str) -> Vec<(String, usize, usize)> {
        let mut v = Vec::new();
        each(s, |d| {
            let (a, b) = d.original(0, d.text.len());
            v.push((d.text, a, b));
        });
        v
    }

    #[test]
    fn base64_hex_and_percent_decode_to_text() {
        // AKIAIOSFODNN7EXAMPLE in standard base64, unpadded URL-safe, hex.
        let s = "k=QUtJQUlPU0ZPRE5ON0VYQU1QTEU= ok";
        assert_eq!(all(s), [("AKIAIOSFODNN7EXAMPLE".to_owned(), 2, 30)]);
        assert_eq!(
            all("QUtJQUlPU0ZPRE5ON0VYQU1QTEU")[0].0,
            "AKIAIOSFODNN7EXAMPLE"
        );
        assert_eq!(
            all("414b4941494f53464f444e4e374558414d504c45")[0].0,
            "AKIAIOSFODNN7EXAMPLE"
        );
        let p = "x %41KIA%49OSFODNN7EXAMPLE";
        let got = all(p);
        assert_eq!(got, [(String::from("x AKIAIOSFODNN7EXAMPLE"), 0, p.len())]);
        let mut spans = Vec::new();
        each(p, |d| spans.push(d.original(2, 6)));
        assert_eq!(spans, [(2, 8)], "the escape and letters of `AKIA`");
    }

    #[test]
    fn identifiers_and_binary_are_not_text() {
        for s in [
            "deploy_the_billing_service",
            "123e4567-e89b-12d3-a456-426614174000",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "short QUtJQQ== run",
            "100% sure",
        ] {
            assert!(all(s).is_empty(), "{s}: {:?}", all(s));
        }
        assert!(!base64_starts_as_text(b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"));
        assert!(base64_starts_as_text(b"QUtJQUlPU0ZPRE5ON0VYQU1QTEU="));
    }
}

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
    percent_escape(b) || runs(b, false).any(|(start, end)| decode_run(&b[start..end]).is_some())
}

/// [`may_hold`] of a raw JSON message: the letter of an escape (`\n`,
/// `\t`, a `\u`'s four digits) is no part of a run, so a base64 line after
/// a `\n` is read from its own first character.
pub(crate) fn may_hold_json(b: &[u8]) -> bool {
    percent_escape(b) || runs(b, true).any(|(start, end)| decode_run(&b[start..end]).is_some())
}

/// The text a run decodes to: as hex when it is all hex digits of even
/// length and that is text, as base64 otherwise.
fn decode_run(run: &[u8]) -> Option<String> {
    if !run.contains(&b'\n') {
        return decode_line(run);
    }
    // Lines wrapped at a multiple of four (MIME, PEM) decode as one
    // block; failing that, each line that is text is read on its own.
    let joined: Vec<u8> = run
        .iter()
        .copied()
        .filter(|&c| c != b'\n' && c != b'\r')
        .collect();
    decode_line(&joined).or_else(|| {
        let lines: Vec<String> = run
            .split(|&c| c == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| l.len() >= MIN_RUN)
            .filter_map(decode_line)
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    })
}

/// [`decode_run`] of a run without line breaks.
fn decode_line(run: &[u8]) -> Option<String> {
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
/// With `json`, `b` is raw JSON and its escapes are skipped.
fn runs(b: &[u8], json: bool) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if json && b[i] == b'\\' {
                i += if b.get(i + 1) == Some(&b'u') { 6 } else { 2 };
                continue;
            }
            if !base64_byte(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            let mut line = i;
            loop {
                while i < b.len() && base64_byte(b[i]) {
                    i += 1;
                }
                // A line of a wrapped block (a multiple of four long, the
                // next line glued after its break) continues the run.
                let eol = match &b[i..] {
                    [b'\n', c, ..] if base64_byte(*c) => 1,
                    [b'\r', b'\n', c, ..] if base64_byte(*c) => 2,
                    _ => 0,
                };
                if eol == 0 || i - line < MIN_RUN || !(i - line).is_multiple_of(4) {
                    break;
                }
                i += eol;
                line = i;
            }
            // Padding a decoder ignores (`===`) is part of the run.
            while b.get(i) == Some(&b'=') {
                i += 1;
            }
            if i - start >= MIN_RUN {
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
    // Padding is optional to the engine, and more of it than is due
    // (`==` for one, `===`) is ignored by a reader.
    let body = &run[..run.len() - run.iter().rev().take_while(|&&c| c == b'=').count()];
    text(engine.decode(body).ok()?)
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
    for (start, end) in runs(b, false) {
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

/// `b` with every escape of text percent-decoded: an escape of a
/// printable ASCII byte (or tab or line break), or the escapes of one whole
/// UTF-8 character. An escape of anything else (`%00`, `%FF`, a cut
/// sequence) stays as it is written, so it hides nothing after it. `None`
/// when no escape decodes.
fn percent(b: &[u8]) -> Option<Decoded> {
    let esc = |i: usize| -> Option<u8> {
        let h = b.get(i + 1..i + 3)?;
        if b[i] != b'%' || !h.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    // The bytes of the character whose escapes start at `i`, if it is text.
    let char_at = |i: usize| -> Option<([u8; 4], usize)> {
        let n = match esc(i)? {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        let mut bytes = [0u8; 4];
        for (k, byte) in bytes.iter_mut().enumerate().take(n) {
            *byte = esc(i + 3 * k)?;
        }
        let c = std::str::from_utf8(&bytes[..n]).ok()?.chars().next()?;
        let control = (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || c == '\x7f';
        (!control).then_some((bytes, n))
    };
    let mut out = Vec::with_capacity(b.len());
    let mut from = Vec::with_capacity(b.len() + 1);
    let mut decoded = false;
    let mut i = 0;
    while i < b.len() {
        match char_at(i) {
            Some((bytes, n)) => {
                for (k, &byte) in bytes[..n].iter().enumerate() {
                    out.push(byte);
                    from.push(i + 3 * k);
                }
                i += 3 * n;
                decoded = true;
            }
            None => {
                out.push(b[i]);
                from.push(i);
                i += 1;
            }
        }
    }
    from.push(b.len());
    if !decoded {
        return None;
    }
    Some(Decoded {
        // Whole characters of `b` and of its escapes: always UTF-8.
        text: String::from_utf8(out).ok()?,
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

    /// Review: in a raw message a `\n` escape glues its `n` to a base64
    /// line after it, which then decodes misaligned: the gate must skip
    /// escape letters or the message passes unread.
    #[test]
    fn raw_json_escapes_are_not_part_of_runs() {
        for raw in [
            r#"{"t":"key:\nQUtJQUlPU0ZPRE5ON0VYQU1QTEU="}"#,
            r#"{"t":"key:\tQUtJQUlPU0ZPRE5ON0VYQU1QTEU="}"#,
            r#"{"t":"key:\u0020QUtJQUlPU0ZPRE5ON0VYQU1QTEU="}"#,
        ] {
            assert!(!may_hold(raw.as_bytes()), "as text, {raw} is misaligned");
            assert!(may_hold_json(raw.as_bytes()), "{raw}");
        }
        // An escaped backslash is content: the letter after it is the run's.
        assert!(may_hold_json(
            br#"{"t":"C:\\QUtJQUlPU0ZPRE5ON0VYQU1QTEU="}"#
        ));
    }
}

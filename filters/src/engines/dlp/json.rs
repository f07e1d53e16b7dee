//! The scanner over a raw JSON message: every string value, key and number
//! that holds findings, found through the span-aware walk, with its JSON
//! path and its place in the raw bytes.

use std::borrow::Cow;

use super::prefilter::Cand;
use super::scanner::{Hit, Scanner};
use super::{items, stream, walk};

/// How readers print a number literal, where that differs from how it is
/// written: JavaScript and Python print `4.1111111111111115e15` as
/// `4111111111111111.5`, `1.2345678e8` as `123456780`, and an integer past
/// 2^53 in its shortest digits (`4111111111111111168` as
/// `4111111111111111000`); a reader printing the exact integer a literal
/// denotes prints `4111111111111111168` for `4.111111111111111168e18`.
fn number_views(lit: &[u8]) -> smallvec::SmallVec<[String; 2]> {
    let mut views = smallvec::SmallVec::new();
    let digits = lit.iter().filter(|b| b.is_ascii_digit()).count();
    if digits <= 15 && !lit.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return views;
    }
    let Some(f) = std::str::from_utf8(lit)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|f| f.is_finite())
    else {
        return views;
    };
    let mut add = |v: String| {
        if v.as_bytes() != lit && !views.contains(&v) {
            views.push(v);
        }
    };
    // JavaScript writes 1e-7 ≤ |x| < 1e21 without an exponent, in the
    // shortest digits that read back as the same value (Rust's `{}`);
    // Python's `repr` too, below 1e16.
    if f == 0.0 || (1e-7..1e21).contains(&f.abs()) {
        add(format!("{f}"));
    }
    if f.fract() == 0.0 && f.abs() < 1e21 {
        add(format!("{f:.0}"));
    }
    views
}

/// One string of a message holding findings.
pub(crate) struct Located<'a> {
    pub(crate) path: String,
    /// The literal's content in the raw message (between the quotes).
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Its decoded text.
    pub(crate) text: Cow<'a, str>,
    pub(crate) hits: Vec<Hit>,
    pub(crate) is_key: bool,
    /// A number literal: no quotes around `start..end`.
    pub(crate) number: bool,
}

/// The message could not be walked (it is not the JSON the gateway parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uninspectable;

impl Scanner {
    /// Whether a raw JSON message certainly holds nothing any detector finds
    /// (non-ASCII text may normalise to a finding, so it is never clean).
    pub fn clean(&self, raw: &[u8]) -> bool {
        let mut c = Vec::new();
        let seen = self.candidates(raw, &mut c);
        seen.plain()
            && !seen.exponent
            && c.is_empty()
            && self.always.is_empty()
            && !self.may_encode(&seen, raw)
            && !(seen.spaced && super::normalise::may_be_spaced_json(raw))
            && !self.may_be_grouped(&seen, raw)
            && !items::has_list(raw)
            && (!may_assign(raw) || self.assignments_clean(raw))
    }

    /// Every string of `raw` (within the root member `part`, if given) that
    /// holds findings. `before`: the tail of the text a client assembled
    /// from the earlier messages of the stream `raw` came on; a finding
    /// that crosses from it into `raw`'s text (see [`stream::items`]) is
    /// reported over its part in `raw`. `shown`: the text `raw` shows
    /// (see [`stream::Shown`]), when the caller has read it already.
    pub(crate) fn locate<'a>(
        &self,
        raw: &'a [u8],
        part: Option<&str>,
        sampling: bool,
        echoed_id: bool,
        before: Option<&str>,
        shown: Option<&stream::Shown>,
    ) -> Result<Vec<Located<'a>>, Uninspectable> {
        let before = before.filter(|b| !b.is_empty());
        let mut cands = Vec::new();
        let seen = self.candidates(raw, &mut cands);
        let mut found = Vec::new();
        // Non-ASCII bytes may normalise into a finding: their strings are
        // looked at even without candidates.
        let ascii = !seen.non_ascii && memchr::memchr(0x7f, raw).is_none();
        let plain = |b: &[u8]| b.is_ascii() && !b.contains(&0x7f);
        // Text under an encoding (base64, hex, `%XX`) is decoded and read.
        // (Every run is decoded once, here, and read again by the scan.)
        let decodings = self.encodings(&seen, raw);
        let encoded = decodings.as_ref().is_some_and(|d| d.readable);
        // So are spaced-out words (`A K I A …`).
        let spaced = seen.spaced && super::normalise::may_be_spaced_json(raw);
        // And groups read joined (`AKIA IOSF …`, `41 4b …`).
        let grouped = self.may_be_grouped(&seen, raw);
        // And text split across the items of a list (of objects, as
        // `content`, or of strings).
        let lists = items::has_list(raw);
        // And numbers written with an exponent, read as printed.
        // A message with nothing any of those reads: none of its strings
        // holds a finding of its own (it may still complete one the
        // stream's earlier text began, below).
        let clean = !tests_walk_always()
            && seen.plain()
            && !seen.exponent
            && ascii
            && self.always.is_empty()
            && !encoded
            && !spaced
            && !grouped
            && !lists
            && (!may_assign(raw) || self.assignments_clean(raw))
            && (cands.is_empty()
                || (part.is_none()
                    && numbers_read_alone()
                    && self.numbers_alone_clean(raw, &cands)));
        if clean && before.is_none() {
            return Ok(found);
        }
        cands.sort_unstable_by_key(|c| c.start);
        // What the message as a whole may hold, for each of its strings.
        let gate = super::scanner::Gate {
            spaced,
            encoded,
            grouped,
        };
        let mut bad = false;
        let mut listed = Vec::new();
        let mut paths: Vec<(usize, String)> = Vec::new();
        if !clean {
            walk::walk(raw, part, sampling, |st| {
                // The top-level `id` of a reply is the client's own, matched to
                // its request byte for byte: nothing of the server's.
                if echoed_id && st.path == ".id" {
                    return false;
                }
                if !st.is_key && !st.number && !st.binary {
                    listed.extend(items::Item::at(st.path, st.start, st.end, st.escaped));
                    if before.is_some() && stream::shown(st.path) {
                        // Its path as the walk writes it (a key holding a
                        // finding masked), for a finding the join puts here.
                        paths.push((st.start, st.path.to_owned()));
                    }
                }
                // Binary content is read for the text it may decode to; what
                // is found there covers the whole member.
                if st.binary {
                    let Ok(b64) = std::str::from_utf8(&raw[st.start..st.end]) else {
                        return false;
                    };
                    let mut hits = Vec::new();
                    self.binary_matches(b64, &mut hits);
                    if hits.is_empty() {
                        return false;
                    }
                    found.push(Located {
                        path: st.path.to_owned(),
                        start: st.start,
                        end: st.end,
                        text: Cow::Borrowed(b64),
                        hits,
                        is_key: false,
                        number: false,
                    });
                    return true;
                }
                // A number is scanned on its own text: the raw pass reads its
                // digits joined to what precedes it (`: 4111…`), so its
                // candidates may start outside it. It is read as each reader
                // prints it (`number_views`: `4.1111111111111115e15` is a card
                // number to a JavaScript client), as it is written, and by its
                // digits before an exponent (`4111111111111111e-400`, which a
                // reader of the text sees whatever it parses to). Every
                // reading's findings count (one rule may cover a card in one
                // and no rule an SSN in another): the number is replaced by
                // the readings that hold findings, joined by spaces. Fewer
                // than six digits is no finding of any detector.
                if st.number {
                    let Some(read) = self.number_hits(&raw[st.start..st.end]) else {
                        bad = true;
                        return false;
                    };
                    let Some((text, hits)) = read else {
                        return false;
                    };
                    found.push(Located {
                        path: st.path.to_owned(),
                        start: st.start,
                        end: st.end,
                        text: Cow::Owned(text),
                        hits,
                        is_key: false,
                        number: true,
                    });
                    return true;
                }
                let (lo, hi) = if st.escaped || st.number {
                    (0, 0)
                } else {
                    (
                        cands.partition_point(|c| c.start < st.start),
                        cands.partition_point(|c| c.start < st.end),
                    )
                };
                // A value under a secret-like key (`"password": "…"` in
                // structured content) is also read as the assignment a reader
                // sees in it, `password=…`.
                let assigned = (!st.is_key && !st.number)
                    .then(|| secret_key(st.path))
                    .flatten();
                if !st.escaped
                    && !st.number
                    && lo == hi
                    && self.always.is_empty()
                    && assigned.is_none()
                    && (ascii || plain(&raw[st.start..st.end]))
                    && !(encoded && super::encoded::has_run(&raw[st.start..st.end]))
                    && !(spaced && super::normalise::may_be_spaced(&raw[st.start..st.end]))
                    && !(grouped && super::grouped::may_be_grouped(&raw[st.start..st.end]))
                {
                    return false;
                }
                let text = match walk::decode(raw, st.start, st.end, st.escaped) {
                    Some(t) => t,
                    None => {
                        bad = true;
                        return false;
                    }
                };
                // Every detector's matches, overlapping or not: which of them
                // a rule applies to is the filter's to say before any is
                // dropped (a card inside a password's value is still a card).
                let mut hits = Vec::new();
                if st.escaped || st.number {
                    self.scan_str_all_with(&text, &mut hits, decodings.as_ref());
                } else {
                    let mut local: Vec<Cand> = cands[lo..hi]
                        .iter()
                        .map(|c| Cand {
                            det: c.det,
                            start: c.start - st.start,
                            end: c.end.min(st.end) - st.start,
                        })
                        .collect();
                    self.scan_with_all(&text, &mut local, &mut hits, gate, decodings.as_ref());
                }
                if let Some(k) = assigned {
                    let joined = format!("{k}={text}");
                    let off = k.len() + 1;
                    let mut more = Vec::new();
                    self.scan_str_all(&joined, &mut more);
                    for h in more {
                        // What lies in the value, and a match over the key and
                        // value as the whole value.
                        if h.end <= off {
                            continue;
                        }
                        let hit = Hit {
                            detector: h.detector,
                            start: h.start.saturating_sub(off),
                            end: h.end - off,
                        };
                        if hit.start < hit.end && !hits.contains(&hit) {
                            hits.push(hit);
                        }
                    }
                    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
                }
                if hits.is_empty() {
                    return false;
                }
                // A key holding a finding is not spelled out in paths.
                let path = if st.is_key {
                    walk::masked_key(&st)
                } else {
                    st.path.to_owned()
                };
                found.push(Located {
                    path,
                    start: st.start,
                    end: st.end,
                    text,
                    hits,
                    is_key: st.is_key,
                    number: st.number,
                });
                true
            })
            .map_err(|_| Uninspectable)?;
        }
        if bad {
            return Err(Uninspectable);
        }
        // Findings across list items, each part in its item's string; and
        // across the stream's earlier messages, each part in this one.
        let mut parts = self.joined_items(raw, listed).ok_or(Uninspectable)?;
        if let Some(before) = before {
            let own;
            let shown = match shown.filter(|s| s.read_as(sampling)) {
                Some(s) => s,
                None => {
                    own = stream::Shown::of(raw, sampling);
                    &own
                }
            };
            let mut joined = self
                .joined_stream(raw, before, shown)
                .ok_or(Uninspectable)?;
            // A message walked names its strings as the walk does: a key
            // that holds a finding is never spelled out in a path. (A
            // message not walked is clean: no key of it holds one.)
            for part in &mut joined {
                if let Some((_, p)) = paths.iter().find(|(at, _)| *at == part.start) {
                    part.path.clone_from(p);
                }
            }
            parts.extend(joined);
        }
        for part in parts {
            let own = |l: &Located<'_>| {
                l.start == part.start
                    && !l.is_key
                    && l.hits.iter().any(|o| {
                        o.detector == part.hit.detector
                            && o.start < part.hit.end
                            && part.hit.start < o.end
                    })
            };
            if part.inside && found.iter().any(own) {
                // The item's own scan found it.
                continue;
            }
            let at = match found
                .iter()
                .position(|l| l.start == part.start && !l.is_key)
            {
                Some(p) => p,
                None => {
                    found.push(Located {
                        path: part.path,
                        start: part.start,
                        end: part.end,
                        text: part.text,
                        hits: Vec::new(),
                        is_key: false,
                        number: false,
                    });
                    found.len() - 1
                }
            };
            let l = &mut found[at];
            if !l.hits.contains(&part.hit) {
                l.hits.push(part.hit);
                l.hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
            }
        }
        Ok(found)
    }

    /// Every finding in a raw JSON message: `(JSON path, hit)`. Clean
    /// messages are judged on their bytes without being parsed.
    pub fn scan_json(&self, raw: &[u8]) -> Result<Vec<(String, Hit)>, Uninspectable> {
        Ok(self
            .locate(raw, None, false, false, None, None)?
            .into_iter()
            .flat_map(|l| {
                let p = l.path;
                l.hits.into_iter().map(move |h| (p.clone(), h))
            })
            .collect())
    }

    /// Tests: the findings of `text` carried in a tool result, as
    /// `(JSON path, detector, start, end)` in order (what two scanners, or
    /// one with a shortcut switched off, are compared by).
    #[cfg(test)]
    pub(crate) fn tool_result_spans(&self, text: &str) -> Vec<(String, usize, usize, usize)> {
        let raw = serde_json::json!({"result": {"content": [{"type": "text", "text": text}]}})
            .to_string();
        let mut v: Vec<_> = self
            .scan_json(raw.as_bytes())
            .unwrap_or_default()
            .into_iter()
            .map(|(p, h)| (p, h.detector, h.start, h.end))
            .collect();
        v.sort_unstable();
        v
    }
}

impl Scanner {
    /// The findings of a number literal `lit` of raw JSON, read as each
    /// reader prints it, as written, and by its digits before an exponent
    /// (see [`Scanner::locate`]): the readings that hold findings joined
    /// by spaces, with their hits; `Some(None)` when none holds one, `None`
    /// when `lit` is not UTF-8 (not the JSON the gateway parsed).
    #[allow(clippy::type_complexity)]
    fn number_hits(&self, lit: &[u8]) -> Option<Option<(String, Vec<Hit>)>> {
        let written = std::str::from_utf8(lit).ok()?;
        let views = number_views(lit);
        let mantissa = written
            .find(['e', 'E'])
            .map(|at| &written[..at])
            .filter(|m| !views.iter().any(|v| v == m));
        let digits = |t: &str| t.bytes().filter(u8::is_ascii_digit).count();
        let readings = views
            .iter()
            .map(String::as_str)
            .chain([written])
            .chain(mantissa);
        let mut text = String::new();
        let mut hits = Vec::new();
        for reading in readings.filter(|t| digits(t) >= 6) {
            let mut own = Vec::new();
            self.scan_str_all(reading, &mut own);
            if own.is_empty() {
                continue;
            }
            if !text.is_empty() {
                text.push(' ');
            }
            let off = text.len();
            text.push_str(reading);
            hits.extend(own.into_iter().map(|h| Hit {
                start: h.start + off,
                end: h.end + off,
                ..h
            }));
        }
        Some((!hits.is_empty()).then_some((text, hits)))
    }

    /// Whether a message with nothing else to read but `cands` (every other
    /// reason to walk it absent) is clean because each candidate lies
    /// outside its strings, over numbers only (a client's long JSON-RPC id,
    /// a row count), and no number a candidate touches holds a finding read
    /// as the walk reads numbers. The strings hold no candidate, so the
    /// walk would find nothing in them; the numbers are read here as it
    /// reads them. Any doubt (a candidate in or beside a string, a number
    /// with a finding) says no, and the message is walked.
    fn numbers_alone_clean(&self, raw: &[u8], cands: &[Cand]) -> bool {
        // The strings' spans, quotes included: a quote opens or closes one
        // unless a backslash inside a string escapes it.
        let mut strings: smallvec::SmallVec<[(usize, usize); 32]> = smallvec::SmallVec::new();
        let mut open: Option<usize> = None;
        let mut at = 0;
        while let Some(k) = memchr::memchr2(b'"', b'\\', &raw[at..]) {
            let i = at + k;
            match (raw[i], open) {
                (b'\\', Some(_)) => {
                    at = i + 2;
                    continue;
                }
                (b'\\', None) => return false,
                (_, None) => open = Some(i),
                (_, Some(o)) => {
                    strings.push((o, i + 1));
                    open = None;
                }
            }
            at = i + 1;
        }
        if open.is_some() {
            return false;
        }
        let number_byte =
            |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
        let mut read: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        for c in cands {
            let (s, e) = (c.start, c.end.min(raw.len()));
            if s >= e {
                return false;
            }
            // Strings end before or start after it, with a byte between
            // (a candidate touching a quote may read the string's text).
            let beside = strings.partition_point(|&(_, se)| se < s);
            if strings.get(beside).is_some_and(|&(ss, _)| ss <= e) {
                return false;
            }
            // Each number it touches, read whole.
            let mut i = s;
            while i < e {
                if !number_byte(raw[i]) {
                    i += 1;
                    continue;
                }
                let mut from = i;
                while from > 0 && number_byte(raw[from - 1]) {
                    from -= 1;
                }
                let mut to = i;
                while to < raw.len() && number_byte(raw[to]) {
                    to += 1;
                }
                if !read.contains(&from) {
                    read.push(from);
                    match self.number_hits(&raw[from..to]) {
                        Some(None) => {}
                        _ => return false,
                    }
                }
                i = to;
            }
        }
        true
    }
}

impl Scanner {
    /// Whether every member of raw JSON message `raw` whose key names a
    /// secret reads clean as the walk reads it, `key=value` (see
    /// [`may_assign`]): then that reading adds nothing, and a message
    /// with no other reason to be walked is clean on its bytes (a
    /// stream's every progress message has a `progressToken`). Exact for
    /// the JSON the gateway parsed: a quote no backslash escapes opens or
    /// closes a string, and a string followed by `:` is a key. Any doubt
    /// says no, and the message is walked: a key or a string value with
    /// an escape, a value that holds a finding so read, bytes that are
    /// not that JSON.
    fn assignments_clean(&self, raw: &[u8]) -> bool {
        let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        // The end of the string whose content starts at `from` (its
        // closing quote) and whether it holds an escape.
        let string_end = |from: usize| -> Option<(usize, bool)> {
            let (mut j, mut escaped) = (from, false);
            loop {
                let k = j + memchr::memchr2(b'"', b'\\', raw.get(j..)?)?;
                if raw[k] == b'"' {
                    return Some((k, escaped));
                }
                escaped = true;
                j = k + 2;
            }
        };
        let mut i = 0;
        while let Some(q) = memchr::memchr(b'"', &raw[i..]) {
            let start = i + q + 1;
            let Some((end, escaped)) = string_end(start) else {
                return false;
            };
            i = end + 1;
            let mut n = i;
            while raw.get(n).is_some_and(ws) {
                n += 1;
            }
            if raw.get(n) != Some(&b':') || !names_secret(&raw[start..end]) {
                continue;
            }
            if escaped {
                return false;
            }
            n += 1;
            while raw.get(n).is_some_and(ws) {
                n += 1;
            }
            if raw.get(n) != Some(&b'"') {
                // A number, an object, a list: no string to read as the
                // key's value.
                continue;
            }
            let Some((vend, vesc)) = string_end(n + 1) else {
                return false;
            };
            let (Ok(key), Ok(value)) = (
                std::str::from_utf8(&raw[start..end]),
                std::str::from_utf8(&raw[n + 1..vend]),
            ) else {
                return false;
            };
            if vesc {
                return false;
            }
            let joined = format!("{key}={value}");
            let mut hits = Vec::new();
            self.scan_str_all(&joined, &mut hits);
            if hits.iter().any(|h| h.end > key.len() + 1) {
                return false;
            }
            i = vend + 1;
        }
        true
    }
}

#[cfg(test)]
thread_local! {
    /// Off: a message with candidates is always walked (the differential
    /// test's reference).
    static NUMBERS_READ_ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether [`Scanner::numbers_alone_clean`] may spare a walk (always,
/// but in the test that compares it with the walk).
#[inline(always)]
fn numbers_read_alone() -> bool {
    #[cfg(test)]
    return NUMBERS_READ_ALONE.with(|c| c.get());
    #[cfg(not(test))]
    true
}

/// What a member's key holds when it names a secret (its value is also
/// read as `key=value`), by first letter ([`words_from`] serves them so).
const SECRET_KEY_WORDS: [&str; 10] = [
    "access_key",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "pass",
    "pwd",
    "private_key",
    "secret",
    "token",
];

/// Whether `raw` may hold a member whose key names a secret: one of
/// [`SECRET_KEY_WORDS`], in any case, in a string followed by `:` (a key;
/// the words appear in prose too, `passed`, and a value holding one needs
/// no other reading). The walk reads such a member's string value as
/// `key=value` too, a reading the raw bytes do not show (`"token-sv":"…
/// &sig=…"` is an Azure SAS token only as `token-sv=…`), so a message
/// that may hold one is never judged clean on its bytes alone. Each `:`
/// after a quote no backslash escapes (past white space) is looked back
/// from, to the quote before that one: every key is found so (and a
/// value that starts with `:` reads as one more, which costs a walk at
/// most).
fn may_assign(raw: &[u8]) -> bool {
    // Whether the quote at `at` is escaped: an odd number of backslashes
    // right before it.
    let escaped = |at: usize| raw[..at].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1;
    for c in memchr::memchr_iter(b':', raw) {
        let mut q = c;
        while q > 0 && matches!(raw[q - 1], b' ' | b'\t' | b'\n' | b'\r') {
            q -= 1;
        }
        if q == 0 || raw[q - 1] != b'"' || escaped(q - 1) {
            continue;
        }
        let close = q - 1;
        let mut before = close;
        let open = loop {
            match memchr::memrchr(b'"', &raw[..before]) {
                Some(k) if escaped(k) => before = k,
                Some(k) => break k,
                // No opening quote: not the JSON the gateway parsed.
                None => return true,
            }
        };
        if names_secret(&raw[open + 1..close]) {
            return true;
        }
    }
    false
}

/// Whether key `k` holds one of [`SECRET_KEY_WORDS`], in any case.
fn names_secret(k: &[u8]) -> bool {
    // Without allocating, and only where a word's first letter is, and
    // then only the words that begin with it: every key of a message
    // passes here (twice for a message judged on its bytes).
    (0..k.len()).any(|i| {
        words_from(k[i]).iter().any(|w| {
            k.get(i..i + w.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(w.as_bytes()))
        })
    })
}

/// The words of [`SECRET_KEY_WORDS`] that begin with letter `c`, in any
/// case.
fn words_from(c: u8) -> &'static [&'static str] {
    let range = match c.to_ascii_lowercase() {
        b'a' => 0..4,
        b'c' => 4..5,
        b'p' => 5..8,
        b's' => 8..9,
        b't' => 9..10,
        _ => return &[],
    };
    &SECRET_KEY_WORDS[range]
}

/// The key of a member whose path is `path`, when it names a secret
/// (`password`, `api_key`, `client_secret`, `auth_token` …).
fn secret_key(path: &str) -> Option<&str> {
    if path.ends_with(']') {
        return None;
    }
    let key = &path[path.rfind('.')? + 1..];
    if key.is_empty() || key.len() > 64 {
        return None;
    }
    names_secret(key.as_bytes()).then_some(key)
}

reference_switch! {
    /// Tests: every message is walked, as before a stream's message clean
    /// on its own was read without a walk (the reference it is held to).
    pub(crate) static WALK_ALWAYS;
    fn tests_walk_always;
}

#[cfg(test)]
mod tests {
    use super::number_views;
    use super::NUMBERS_READ_ALONE;
    use crate::engines::dlp::Scanner;
    use proptest::prelude::*;

    /// Numbers that are findings, that wake detectors without being one,
    /// and that wake none.
    const NUMBERS: &[&str] = &[
        "1000000001",
        "4111111111111111",
        "4111111111111112",
        "123456789",
        "078051120",
        "4155552671",
        "14155552671",
        "5500000000000004",
        "4.111111111111111e15",
        "-4111111111111111",
        "192168110",
        "42",
        "0",
        "3.14",
        "378282246310005",
        "123456789012",
        "20261102",
        "1.5e10",
        "4111111111111111.0",
    ];

    /// Strings of clean text, text that wakes detectors, and text with a
    /// finding; some beside a number with only a quote between.
    const STRINGS: &[&str] = &[
        "deploy the billing service to eu-west-1",
        "call 555 123 4567",
        "ssn 123-45-6789",
        "order 1000000001 shipped",
        "4111 1111 1111 1111",
        "plain",
        "",
        "tab\\there",
        "quote \\\" inside",
        "2026-11-02 12:30:45",
        "hunter2hunter2x",
        "Zx81kLmQ02pWv7",
        "2020-01-01&sig=Zq7Lm2Xv9Rt4Wp8Ky3Nb6Hc1Jd5Fg0SsQa",
    ];

    fn message() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            proptest::sample::select(NUMBERS).prop_map(str::to_owned),
            proptest::sample::select(STRINGS).prop_map(|s| format!("\"{s}\"")),
            proptest::collection::vec(proptest::sample::select(NUMBERS), 1..4)
                .prop_map(|ns| format!("[{}]", ns.join(", "))),
            Just("true".to_owned()),
            Just("null".to_owned()),
        ];
        (
            proptest::sample::select(NUMBERS),
            proptest::collection::vec((proptest::sample::select(&["n", "text", "rows", "id", "card", "password", "api_key", "token-sv", "tokenAccountKey"][..]), value), 0..5),
        )
            .prop_map(|(id, members)| {
                let args: Vec<String> =
                    members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{{}}}}}}}"#,
                    args.join(",")
                )
            })
    }

    proptest! {
        /// A message whose candidates lie over numbers only is judged
        /// without a walk exactly as the walk judges it.
        #[test]
        fn numbers_read_alone_find_what_the_walk_finds(raw in message()) {
            static SCANNER: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
            let s = SCANNER.get_or_init(|| Scanner::new(&[]).expect("the built-in detectors"));
            prop_assume!(serde_json::from_str::<serde_json::Value>(&raw).is_ok());
            let quick = s.scan_json(raw.as_bytes());
            NUMBERS_READ_ALONE.with(|c| c.set(false));
            let walked = s.scan_json(raw.as_bytes());
            NUMBERS_READ_ALONE.with(|c| c.set(true));
            prop_assert_eq!(quick, walked, "{}", raw);
        }
    }

    /// The words looked for by their first letter are the list's words.
    #[test]
    fn secret_words_by_first_letter_are_the_list() {
        let mut by_letter: Vec<&str> = (0..=255u8)
            .flat_map(|c| super::words_from(c).iter().copied())
            .collect();
        by_letter.sort_unstable();
        by_letter.dedup();
        let mut listed = super::SECRET_KEY_WORDS.to_vec();
        listed.sort_unstable();
        assert_eq!(by_letter, listed);
        for w in super::SECRET_KEY_WORDS {
            let first = w.as_bytes()[0];
            assert!(super::words_from(first).contains(&w));
            assert!(super::words_from(first.to_ascii_uppercase()).contains(&w));
            assert!(super::names_secret(
                format!("x-{}_y", w.to_uppercase()).as_bytes()
            ));
        }
        assert!(!super::names_secret(b"progress"));
    }

    /// A member named for a secret spares the walk only when its reading
    /// as `key=value` holds nothing: a stream's progress token does; a
    /// SAS token's `sv=` does not; an escape in its key or value, or a
    /// string that does not end, leaves the message to the walk.
    #[test]
    fn assignments_read_clean_spare_the_walk_and_nothing_else() {
        let s = Scanner::new(&[]).expect("the built-in detectors");
        for (raw, clean) in [
            (
                r#"{"method":"notifications/progress","params":{"progressToken":"ab","progress":1}}"#,
                true,
            ),
            (
                r#"{"params":{"progressToken" : 7,"message":"token: no"}}"#,
                true,
            ),
            (
                r#"{"token-sv":"2020-01-01&sig=Zq7Lm2Xv9Rt4Wp8Ky3Nb6Hc1Jd5Fg0SsQa"}"#,
                false,
            ),
            (r#"{"pass\u0077ord":"ab"}"#, false),
            (r#"{"progressToken":"a\nb"}"#, false),
            (r#"{"progressToken":"ab"#, false),
        ] {
            assert_eq!(s.assignments_clean(raw.as_bytes()), clean, "{raw}");
        }
    }

    /// Review (bypass): a value under a key that names a secret is read
    /// as `key=value` too, and two detectors' triggers hold the `=`
    /// (`sv=`, `AccountKey=`): in the raw message they never show, so a
    /// message with no candidate (id 7) or with candidates over numbers
    /// only (a ten-digit id) was judged clean on its bytes. Both shortcuts
    /// now leave a message that may hold such a key to the walk.
    #[test]
    fn a_secret_keyed_value_is_read_assigned_whatever_the_id() {
        let s = Scanner::new(&[]).expect("the built-in detectors");
        let key = "Zq7Lm2Xv9Rt4Wp8Ky3Nb6Hc1Jd5Fg0SsQaUe2Io4Pk7Lz".repeat(2);
        let members = [
            (
                r#""token-sv":"2020-01-01&sig=Zq7Lm2Xv9Rt4Wp8Ky3Nb6Hc1Jd5Fg0SsQa""#.to_owned(),
                "azure_sas_token",
            ),
            (
                r#""secret-sv":"2020-01-01&sr=b&sig=Zq7Lm2Xv9Rt4Wp8Ky3Nb6Hc1Jd5Fg0SsQa""#
                    .to_owned(),
                "azure_sas_token",
            ),
            (
                format!(r#""tokenAccountKey":"{}==""#, &key[..86]),
                "azure_storage_key",
            ),
            (
                format!(r#""PassAccountKey":"{}==""#, &key[..86]),
                "azure_storage_key",
            ),
        ];
        let names: Vec<&str> = s.detectors().iter().map(|d| d.name.as_str()).collect();
        for id in ["7", "1000000001"] {
            for (member, detector) in &members {
                let raw = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{{member}}}}}}}"#
                );
                let found = s.scan_json(raw.as_bytes()).expect("walked");
                assert!(
                    found.iter().any(|(_, h)| names[h.detector] == *detector),
                    "{raw}: {found:?}"
                );
                assert!(!s.clean(raw.as_bytes()), "{raw}");
            }
        }
    }

    /// Review (bypass): base64 wrapped with `\n` escapes whose lines
    /// each decode to bytes broken by controls, and joined to text across
    /// the break (a card, an SSN, an email, `pwd=`): the raw gate decoded
    /// each line alone and judged the message clean; the walk joins them.
    /// And a value under `api-key` is read as `api-key=…`.
    #[test]
    fn base64_wrapped_with_escaped_breaks_is_read_joined() {
        let s = Scanner::new(&[]).expect("the built-in detectors");
        let names: Vec<&str> = s.detectors().iter().map(|d| d.name.as_str()).collect();
        for (text, detector) in [
            (r"AQEBAWJvYkBleGFt\ncGxlLmNvbQEBAQEB", "email"),
            (r"AQEBATQ1NTY3Mzc1\nODY4OTk4NTUBAQEB", "card_visa"),
            (r"/////zQwMjQwMDcx\nOTg5NjQzMDX/////", "card_visa"),
            (r"AAAAADU0MjUyMzM0\r\nMzAxMDk5MDMAAAAA", "card_mastercard"),
            (r"AQEBAQFzc24gMTIz\nLTQ1LTY3ODkBAQEB", "us_ssn"),
            (r"AQEBAXB3ZD1aeDgx\na0xtUTAycFcBAQEB", "password_assignment"),
        ] {
            for id in ["7", "1000000001"] {
                let raw = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
                );
                let found = s.scan_json(raw.as_bytes()).expect("walked");
                assert!(
                    found.iter().any(|(_, h)| names[h.detector] == detector),
                    "{raw}: {found:?}"
                );
                assert!(!s.clean(raw.as_bytes()), "{raw}");
            }
        }
        let raw = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"x-api-key":"Zx81kLmQ02pWv7"}}}"#;
        assert!(
            !s.scan_json(raw.as_bytes()).expect("walked").is_empty(),
            "{raw}"
        );
    }

    /// A secret word is a key's only where a `:` follows its string (past
    /// escaped quotes and white space); in prose it is not.
    #[test]
    fn secret_words_count_in_keys_only() {
        use super::may_assign;
        assert!(may_assign(br#"{"token-sv":"x"}"#));
        assert!(may_assign(br#"{"my \"Password\" here" : 1}"#));
        assert!(may_assign(
            br#"{"a":"passed","PWD"
:"x"}"#
        ));
        assert!(!may_assign(
            br#"{"text":"the build passed; tokens and secrets"}"#
        ));
        assert!(!may_assign(br#"{"text":"say \"pass\": no"}"#));
        assert!(may_assign(br#"{"a":1,"x-Api-Key" :2}"#));
        assert!(may_assign(br#"{"pass\\":1}"#));
        assert!(!may_assign(br#"{"k\\":"passx"}"#));
    }

    /// A long id wakes the digit detectors and is still no finding; a
    /// card number as the id is one, and so is one in a list.
    #[test]
    fn long_numbers_are_read_without_a_walk_and_findings_kept() {
        let s = Scanner::new(&[]).expect("the built-in detectors");
        let call = |id: &str, n: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"deploy the service","n":{n}}}}}}}"#
            )
        };
        assert!(s
            .scan_json(call("1000000001", "1").as_bytes())
            .expect("walked")
            .is_empty());
        let found = s
            .scan_json(call("4111111111111111", "1").as_bytes())
            .expect("walked");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, ".id");
        let found = s
            .scan_json(call("7", "[1, 4111111111111111]").as_bytes())
            .expect("walked");
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn numbers_are_viewed_as_readers_print_them() {
        let v = |lit: &str| number_views(lit.as_bytes()).into_vec();
        assert_eq!(v("4.1111111111111115e15"), ["4111111111111111.5"]);
        assert_eq!(v("1.2345678e8"), ["123456780"]);
        // Past 2^53: the shortest digits (JavaScript) and the exact value.
        assert_eq!(v("4111111111111111168"), ["4111111111111111000"]);
        assert_eq!(
            v("4.111111111111111168e18"),
            ["4111111111111111000", "4111111111111111168"]
        );
        // Written as read, or too small or large to print without an
        // exponent: no other view.
        assert!(v("4111111111111111").is_empty());
        assert!(v("42").is_empty());
        assert!(v("1e300").is_empty());
        assert_eq!(v("0.0"), ["0"]);
    }
}

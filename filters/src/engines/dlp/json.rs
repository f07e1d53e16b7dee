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
    }

    /// Every string of `raw` (within the root member `part`, if given) that
    /// holds findings. `before`: the tail of the text a client assembled
    /// from the earlier messages of the stream `raw` came on; a finding
    /// that crosses from it into `raw`'s text (see [`stream::items`]) is
    /// reported over its part in `raw`.
    pub(crate) fn locate<'a>(
        &self,
        raw: &'a [u8],
        part: Option<&str>,
        sampling: bool,
        echoed_id: bool,
        before: Option<&str>,
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
        if cands.is_empty()
            && seen.plain()
            && !seen.exponent
            && ascii
            && self.always.is_empty()
            && !encoded
            && !spaced
            && !grouped
            && !lists
            && before.is_none()
        {
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
        let mut streamed = Vec::new();
        walk::walk(raw, part, sampling, |st| {
            // The top-level `id` of a reply is the client's own, matched to
            // its request byte for byte: nothing of the server's.
            if echoed_id && st.path == ".id" {
                return false;
            }
            if !st.is_key && !st.number && !st.binary {
                listed.extend(items::Item::at(st.path, st.start, st.end, st.escaped));
                if before.is_some() && stream::shown(st.path) {
                    streamed.push((st.path.to_owned(), st.start, st.end, st.escaped));
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
                let lit = &raw[st.start..st.end];
                let Ok(written) = std::str::from_utf8(lit) else {
                    bad = true;
                    return false;
                };
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
                if hits.is_empty() {
                    return false;
                }
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
        if bad {
            return Err(Uninspectable);
        }
        // Findings across list items, each part in its item's string; and
        // across the stream's earlier messages, each part in this one.
        let mut parts = self.joined_items(raw, listed).ok_or(Uninspectable)?;
        if let Some(before) = before {
            parts.extend(
                self.joined_stream(raw, before, &streamed)
                    .ok_or(Uninspectable)?,
            );
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
            .locate(raw, None, false, false, None)?
            .into_iter()
            .flat_map(|l| {
                let p = l.path;
                l.hits.into_iter().map(move |h| (p.clone(), h))
            })
            .collect())
    }
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
    // Without allocating: every string of a message passes here.
    let k = key.as_bytes();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "access_key",
        "private_key",
        "credential",
    ]
    .iter()
    .any(|w| {
        k.windows(w.len())
            .any(|s| s.eq_ignore_ascii_case(w.as_bytes()))
    })
    .then_some(key)
}

#[cfg(test)]
mod tests {
    use super::number_views;

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

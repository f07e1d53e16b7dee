//! Text split across the events of one SSE stream. A client assembles
//! what a call's stream shows — progress messages, log messages, partial
//! results, the final result — into one text, so `ssn 123-45` in one
//! progress event and `-6789` in the next is an SSN to it. The gateway
//! keeps the tail of the text each stream showed so far (at most
//! [`STREAM_CARRY`] bytes: longer than any bounded detector's match) and
//! reads each new message's text after it: a finding that crosses from the
//! tail into the message is reported over its part in the message.

use super::items::ItemHit;
use super::scanner::{Hit, Scanner};
use super::walk;

/// The most of a stream's earlier text kept and read before its next
/// message: longer than the longest match of every bounded built-in
/// detector (an Anthropic key, a card in spaced groups, an IBAN), so a
/// split anywhere in such a token is read whole. A token of an unbounded
/// pattern (a JWT, an assignment's value) split after more than this is
/// not read across the split.
pub const STREAM_CARRY: usize = 1024;

/// Members that carry no text a client shows: protocol fields beside it.
const NOT_SHOWN: &[&str] = &[
    "progressToken",
    "progress",
    "total",
    "level",
    "logger",
    "type",
    "mimeType",
    "uri",
    "name",
    "annotations",
    "isError",
    "nextCursor",
    "cursor",
];

/// Whether the string at JSON `path` is text a client shows from a
/// stream: inside `params` or `result`, outside `_meta`, and no protocol
/// field (a progress token, a log level, a content item's `type` …).
pub(crate) fn shown(path: &str) -> bool {
    let p = path.as_bytes();
    if !(p.starts_with(b".params") || p.starts_with(b".result"))
        || memchr::memmem::find(p, b"._meta").is_some()
    {
        return false;
    }
    // The last member's name: after the last `.`, before any `[`.
    let from = memchr::memrchr(b'.', p).map_or(0, |d| d + 1);
    let last = &p[from..];
    let last = memchr::memchr(b'[', last).map_or(last, |b| &last[..b]);
    !NOT_SHOWN.iter().any(|n| n.as_bytes() == last)
}

/// The text a client shows from one raw server message, and where each
/// piece of it lies in the message: its shown strings (see [`shown`]),
/// decoded, in order, joined with nothing between them. Read once per
/// message of a stream: DLP reads it after the stream's earlier text,
/// and the gateway carries it on as that text.
#[derive(Debug)]
pub struct Shown {
    text: String,
    /// Each shown string: its path, its literal's content in the message
    /// (`start..end`, between the quotes), whether it holds an escape,
    /// and where its text begins in `text`.
    parts: Vec<(String, usize, usize, bool, usize)>,
    /// The message was walked and every shown string decoded.
    complete: bool,
    /// Read as a `sampling/createMessage` request (whose messages may
    /// carry binary content, which shows no text).
    sampling: bool,
}

impl Shown {
    /// The shown text of raw message `raw` (`sampling`: it is a
    /// `sampling/createMessage` request). Empty, and not complete, for a
    /// message that cannot be walked or holds a string that does not
    /// decode.
    pub fn of(raw: &[u8], sampling: bool) -> Shown {
        let mut text = String::new();
        let mut parts = Vec::new();
        let mut ok = true;
        let walked = walk::walk(raw, None, sampling, |st| {
            if ok && !st.is_key && !st.number && !st.binary && shown(st.path) {
                match walk::decode(raw, st.start, st.end, st.escaped) {
                    Some(t) => {
                        parts.push((st.path.to_owned(), st.start, st.end, st.escaped, text.len()));
                        text.push_str(&t);
                    }
                    None => ok = false,
                }
            }
            false
        });
        let complete = walked.is_ok() && ok;
        if !complete {
            text.clear();
            parts.clear();
        }
        Shown {
            text,
            parts,
            complete,
            sampling,
        }
    }

    /// The text (empty for a message that could not be read).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it was read as `sampling` says.
    pub(crate) fn read_as(&self, sampling: bool) -> bool {
        self.sampling == sampling
    }
}

/// The text a client shows from one raw server message (see [`Shown`]).
pub fn stream_text(raw: &[u8]) -> String {
    Shown::of(raw, false).text
}

/// `tail` followed by `more`, cut to its last [`STREAM_CARRY`] bytes (at a
/// character boundary).
pub fn carried(tail: &str, more: &str) -> String {
    let mut s = String::with_capacity((tail.len() + more.len()).min(STREAM_CARRY + 4));
    s.push_str(tail);
    s.push_str(more);
    if s.len() > STREAM_CARRY {
        let cut = s.ceil_char_boundary(s.len() - STREAM_CARRY);
        s.drain(..cut);
    }
    s
}

impl Scanner {
    /// Findings that cross from `before` (the stream's earlier text) into
    /// the shown strings of `raw` (`shown`, read from `raw`), each part in
    /// the string it touches; and those inside the strings that need
    /// `before` as their context (`password=` before, the value here),
    /// counted only where the string's own scan did not find them. `None`
    /// when the message could not be read.
    pub(crate) fn joined_stream<'a>(
        &self,
        raw: &'a [u8],
        before: &str,
        shown: &Shown,
    ) -> Option<Vec<ItemHit<'a>>> {
        let mut out = Vec::new();
        if !shown.complete {
            return None;
        }
        if shown.parts.is_empty() {
            return Some(out);
        }
        let mut joined = String::with_capacity(before.len() + shown.text.len());
        joined.push_str(before);
        joined.push_str(&shown.text);
        let blen = before.len();
        // Where each string's text begins in `joined`, and where the last ends.
        let offs: Vec<usize> = shown
            .parts
            .iter()
            .map(|p| blen + p.4)
            .chain([joined.len()])
            .collect();
        let mut hits = Vec::new();
        self.scan_str_all_from(&joined, &mut hits, blen);
        for h in hits {
            if h.end <= blen {
                // Wholly in what the client already got: judged then.
                continue;
            }
            let first = offs.partition_point(|&o| o <= h.start.max(blen)) - 1;
            let last = offs.partition_point(|&o| o < h.end) - 1;
            for k in first..=last {
                let (a, b) = (h.start.max(offs[k]), h.end.min(offs[k + 1]));
                if a >= b {
                    continue;
                }
                let (path, start, end, escaped, _) = &shown.parts[k];
                let text = if *escaped {
                    std::borrow::Cow::Owned(joined[offs[k]..offs[k + 1]].to_owned())
                } else {
                    std::borrow::Cow::Borrowed(std::str::from_utf8(&raw[*start..*end]).ok()?)
                };
                out.push(ItemHit {
                    path: path.clone(),
                    start: *start,
                    end: *end,
                    text,
                    hit: Hit {
                        detector: h.detector,
                        start: a - offs[k],
                        end: b - offs[k],
                    },
                    inside: h.start >= offs[k] && h.end <= offs[k + 1],
                });
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn progress(text: &str) -> String {
        serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t-1","progress":1,"message":text}}).to_string()
    }

    fn log(text: &str) -> String {
        serde_json::json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","logger":"x","data":text}}).to_string()
    }

    fn result(text: &str) -> String {
        serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":text}]}}).to_string()
    }

    /// The detectors found in `next` read after the stream's text so far.
    fn across(s: &Scanner, earlier: &[String], next: &str) -> Vec<String> {
        let mut tail = String::new();
        for m in earlier {
            tail = carried(&tail, &stream_text(m.as_bytes()));
        }
        s.locate(next.as_bytes(), None, false, true, Some(&tail), None)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|l| {
                l.hits
                    .into_iter()
                    .map(|h| s.detectors()[h.detector].name.clone())
            })
            .collect()
    }

    /// The join is read only for what reaches into the new message: what
    /// the earlier text holds on its own (hex digests, base64, a key
    /// whole) is not reported again, and what crosses into the message
    /// from any of those readings still is.
    #[test]
    fn encoded_and_grouped_text_split_across_events_is_found() {
        let s = scanner();
        let digests =
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 ".repeat(12);
        // base64 of `AKIAIOSFODNN7EXAMPLE`, cut after its tenth character.
        let (b64a, b64b) = "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=".split_at(10);
        for (earlier, next, want) in [
            (
                vec![progress(&digests), progress(&format!("key {b64a}"))],
                progress(b64b),
                "aws_access_key_id",
            ),
            (
                vec![progress(&digests), progress("AKIA IOSF ODNN")],
                result(" 7EXA MPLE"),
                "aws_access_key_id",
            ),
            (
                vec![progress(&digests), progress("ssn 123-45")],
                progress("-6789"),
                "us_ssn",
            ),
        ] {
            let got = across(&s, &earlier, &next);
            assert!(got.iter().any(|d| d == want), "{next}: {got:?}");
        }
        // A key wholly in the earlier text, digests after it and before
        // the message: nothing reaches into the message.
        let got = across(
            &s,
            &[progress(&format!("AKIAIOSFODNN7EXAMPLE {digests}"))],
            &progress("done"),
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn data_split_across_events_is_found() {
        let s = scanner();
        for (earlier, next, want) in [
            (vec![progress("ssn 123-45")], progress("-6789"), "us_ssn"),
            (vec![log("ssn 123-45-")], result("6789"), "us_ssn"),
            (
                vec![progress("card 4111 1111")],
                progress(" 1111 1111"),
                "card_visa",
            ),
            (
                vec![progress("4111"), progress(" 1111"), log(" 1111 ")],
                result("1111 done"),
                "card_visa",
            ),
            (
                vec![progress("key AKIAIOSF")],
                result("ODNN7EXAMPLE"),
                "aws_access_key_id",
            ),
        ] {
            let got = across(&s, &earlier, &next);
            assert!(got.iter().any(|d| d == want), "{earlier:?} {next}: {got:?}");
        }
        // What lies wholly in the earlier text is not reported again.
        let got = across(&s, &[progress("ssn 123-45-6789 ")], &progress("done"));
        assert!(got.is_empty(), "{got:?}");
        // Protocol fields are not shown text.
        assert_eq!(stream_text(progress("hi").as_bytes()), "hi");
        assert_eq!(stream_text(log("a").as_bytes()), "a");
        assert_eq!(stream_text(result("b").as_bytes()), "b");
    }

    /// Review (bypass): a stream's message clean on its own was read
    /// without a walk, and a list whose items a number sets apart is one
    /// `items::has_list` does not see, so its items were not read joined
    /// (`4111…` across three items); and a finding the join put in a
    /// string under a key holding a finding named that key in its path.
    #[test]
    fn a_streams_lists_and_masked_keys_are_read_as_the_walk_reads_them() {
        let s = scanner();
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"text":"411111","note":"zz"},0,{"text":"111111","note":"zz"},0,{"text":"1111"}]}}"#;
        let got = across(&s, &[progress("working")], list);
        assert!(got.iter().any(|d| d.starts_with("card")), "{got:?}");
        // Off a stream too.
        let alone = s.scan_json(list.as_bytes()).unwrap_or_default();
        assert!(
            alone
                .iter()
                .any(|(_, h)| s.detectors()[h.detector].name.starts_with("card")),
            "{alone:?}"
        );
        let keyed = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":{"AKIAIOSFODNN7EXAMPLE":"MPLE"}}}"#;
        let mut tail = String::new();
        tail = carried(
            &tail,
            &stream_text(progress("key AKIAIOSFODNN7EXA").as_bytes()),
        );
        let found = s
            .locate(keyed.as_bytes(), None, false, true, Some(&tail), None)
            .unwrap_or_default();
        // The key's own finding, and the one across into its value.
        assert!(found.len() >= 2, "{}", found.len());
        for l in &found {
            assert!(!l.path.contains("AKIA"), "{}", l.path);
        }
    }

    /// Pieces of findings and of text around them, cut anywhere to make
    /// a stream's events.
    const PIECES: &[&str] = &[
        "AKIAIOSFODNN7EXAMPLE",
        "4111 1111 1111 1111",
        "4111111111111111",
        "ssn 123-45-6789",
        "password=hunter2hunter2",
        "password: ",
        "s3cr3t-Passw0rd!",
        "hunter2hunter2",
        "Zx9kLm2Qr7vB",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEU=",
        "414b4941494f53464f444e4e374558414d504c45",
        "AKIA IOSF ODNN 7EXA MPLE",
        "alice@example.com",
        "+1 415 555 2671",
        "GB82WEST12345698765432",
        "deploy the service to eu-west-1 ",
        "build 2026-11-28T20:23:14Z ok ",
        " ",
        "\\n",
        "\\\\",
        "\\\"",
        "\\u0041",
        "é",
    ];

    /// One event of the stream: `text` as a progress message, a log
    /// message, a progress token, values under secret-named keys or a
    /// result (its JSON escapes already written).
    fn event(kind: u8, text: &str) -> String {
        match kind % 5 {
            0 => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"t-1","progress":1,"message":"{text}"}}}}"#
            ),
            1 => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","logger":"x","data":"{text}"}}}}"#
            ),
            // Under keys that name a secret, read as `key=value` too.
            2 => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"{text}","progress":2}}}}"#
            ),
            3 => format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"structuredContent":{{"client-secret" : "{text}","n":[1,{{"x-api-key":"{text}"}}]}}}}}}"#
            ),
            _ => format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
            ),
        }
    }

    /// Each string's findings, as `(path, detector, start, end)`.
    fn findings(
        s: &Scanner,
        raw: &[u8],
        before: &str,
        shown: Option<&Shown>,
    ) -> Vec<(String, usize, usize, usize)> {
        let mut out: Vec<_> = s
            .locate(
                raw,
                None,
                false,
                true,
                Some(before).filter(|b| !b.is_empty()),
                shown,
            )
            .unwrap_or_else(|_| panic!("uninspectable: {}", String::from_utf8_lossy(raw)))
            .into_iter()
            .flat_map(|l| {
                let p = l.path;
                l.hits
                    .into_iter()
                    .map(move |h| (p.clone(), h.detector, h.start, h.end))
            })
            .collect();
        out.sort();
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(200)
        ))]

        /// A stream's message read with the text it shows read once, and
        /// without a walk when it is clean on its own, finds what walking
        /// it and reading its shown strings there finds, whatever the
        /// stream showed before it.
        #[test]
        fn the_shown_text_read_once_finds_what_the_walk_found(
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 1..12),
            cuts in proptest::collection::vec(0usize..400, 1..6),
            kinds in proptest::collection::vec(0u8..5, 6),
        ) {
            // With a detector only the `key=value` reading of a member
            // named for a secret wakes (no message holds `token=`).
            let s = Scanner::new(&[warden_config::guards::CustomDetector {
                name: "assigned_token".into(),
                regex: Some("(?i)token=[a-z0-9]{6,}".into()),
                anchors: vec!["token=".into()],
                keywords: Vec::new(),
                dictionary_sha256: Vec::new(),
                secret: true,
            }])
            .unwrap_or_else(|e| panic!("{e}"));
            let all: String = pieces.concat();
            // Cut at character boundaries, never inside an escape.
            let mut at: Vec<usize> = cuts
                .iter()
                .map(|c| c % (all.len() + 1))
                .filter(|&c| all.is_char_boundary(c) && !all[..c].ends_with('\\'))
                .collect();
            at.push(all.len());
            at.sort_unstable();
            at.dedup();
            let mut tail = String::new();
            let mut from = 0;
            for (k, &to) in at.iter().enumerate() {
                let raw = event(kinds[k % kinds.len()], &all[from..to]);
                from = to;
                if serde_json::from_str::<serde_json::Value>(&raw).is_err() {
                    // A cut that left a lone escape: not a message.
                    continue;
                }
                let shown = Shown::of(raw.as_bytes(), false);
                let new = findings(&s, raw.as_bytes(), &tail, Some(&shown));
                crate::engines::dlp::json::WALK_ALWAYS.with(|w| w.set(true));
                let walked = findings(&s, raw.as_bytes(), &tail, None);
                crate::engines::dlp::json::WALK_ALWAYS.with(|w| w.set(false));
                proptest::prop_assert_eq!(&new, &walked, "{:?} after {:?}", raw, tail);
                proptest::prop_assert_eq!(shown.text(), stream_text(raw.as_bytes()));
                tail = carried(&tail, shown.text());
            }
        }
    }

    #[test]
    fn the_carry_is_bounded() {
        let big = "x".repeat(5000);
        let t = carried(&big, "é tail");
        assert!(t.len() <= STREAM_CARRY && t.ends_with("é tail"));
    }
}

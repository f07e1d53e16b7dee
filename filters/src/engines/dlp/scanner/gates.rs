//! Review of the gates on the costlier readings (spaced-out words, encoded
//! text): wherever a gate is shut, the ungated reading finds nothing more.

use super::*;
use base64::Engine;

fn scanner() -> Scanner {
    Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Findings as `(detector, start, end)`, sorted.
type Found = Vec<(String, usize, usize)>;

fn sorted(s: &Scanner, hits: &[Hit]) -> Found {
    let mut v: Vec<_> = hits
        .iter()
        .map(|h| (s.detectors[h.detector].name.clone(), h.start, h.end))
        .collect();
    v.sort();
    v
}

/// `scan_str` as it is, and with both gates open.
fn gated_and_open(s: &Scanner, text: &str) -> (Found, Found) {
    let mut gated = Vec::new();
    s.scan_str(text, &mut gated);
    let mut cands = Vec::new();
    s.candidates(text.as_bytes(), &mut cands);
    let mut open = Vec::new();
    let all = Gate {
        spaced: true,
        encoded: true,
        grouped: true,
    };
    s.scan_with(text, &mut cands, &mut open, all);
    (sorted(s, &gated), sorted(s, &open))
}

fn json_names(s: &Scanner, raw: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .scan_json(raw.as_bytes())
        .unwrap_or_else(|_| panic!("uninspectable {raw}"))
        .into_iter()
        .map(|(_, h)| s.detectors[h.detector].name.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Spaced-out words at every offset around a block edge, with every
/// separator width: the prefilter's per-block chain never loses one.
#[test]
fn spaced_words_across_block_edges() {
    let s = scanner();
    for sep in [" ", "   ", " , ", "\n", "\r\n", "\t:"] {
        let word: Vec<String> = "AKIAIOSFODNN7EXAMPLE".chars().map(String::from).collect();
        let spaced = word.join(sep);
        for pad in 0..130 {
            let text = format!("{} {spaced} x", "w".repeat(pad));
            let (gated, open) = gated_and_open(&s, &text);
            assert!(!open.is_empty(), "{text:?}");
            assert_eq!(gated, open, "{text:?}");
        }
    }
}

/// A raw message's escaped line breaks between the characters, at every
/// offset around a block edge.
#[test]
fn spaced_words_with_json_escapes_across_block_edges() {
    let s = scanner();
    for sep in [r"\n", r"\r\n", r"\n\t ", r"\t"] {
        let spaced: Vec<String> = "AKIAIOSFODNN7EXAMPLE".chars().map(String::from).collect();
        let spaced = spaced.join(sep);
        for pad in 0..140 {
            // A candidate elsewhere in the string (`password` without an
            // assignment) makes it read with the message's gate.
            for lead in ["", "password "] {
                let raw = format!(r#"{{"t":"{lead}{} {spaced} x"}}"#, "w".repeat(pad));
                let names = json_names(&s, &raw);
                assert!(names.contains(&"aws_access_key_id".into()), "{raw}");
            }
        }
    }
}

/// A spaced-out word of exactly twelve characters whose first follows an
/// escaped backslash (`\\a b c …` raw, `\a b c …` decoded): the raw
/// reading takes the `a` for an escape's letter and sees eleven, but a
/// string with any escape is read on its decoded text with its own gate.
#[test]
fn spaced_word_after_an_escaped_backslash() {
    let s = scanner();
    let text = r"password=\Q 7 x K 2 m P 9 z R 4 w";
    let (gated, open) = gated_and_open(&s, text);
    assert!(
        open.iter().any(|h| h.0 == "password_assignment"),
        "{open:?}"
    );
    assert_eq!(gated, open);
    for raw in [
        r#"{"t":"password=\\Q 7 x K 2 m P 9 z R 4 w"}"#,
        r#"{"t":"password=\\Q\n7\nx\nK\n2\nm\nP\n9\nz\nR\n4\nw"}"#,
    ] {
        let names = json_names(&s, raw);
        assert!(
            names.contains(&"password_assignment".into()),
            "{raw}: {names:?}"
        );
    }
}

/// Text under base64 whose runs of word bytes are all shorter than the
/// prefilter's sixteen: a `~`, `?` or `>` every twelve bytes of the text
/// (at a third byte) encodes as a `+` or `/` every sixteen characters.
const BROKEN: &[(&str, &str)] = &[
    ("ab~123-45-6789~", "us_ssn"),
    ("ab?123-45-6789?", "us_ssn"),
    ("ab>123-45-6789>", "us_ssn"),
    ("ab~password=Su~p3rS3cr3t~Valu9~x", "password_assignment"),
];

/// Review (bypass): `scan_str` (header values and the URL, strings with
/// an escape, binary content, a secret key's value) shut the encoded gate
/// on such base64, which the ungated reading decodes.
#[test]
fn base64_broken_by_plus_and_slash_in_a_string() {
    let s = scanner();
    for &(plain, want) in BROKEN {
        let enc = b64(plain);
        assert!(enc.contains(['+', '/']), "{enc}");
        for text in [enc.clone(), format!("data {enc} end")] {
            let (gated, open) = gated_and_open(&s, &text);
            assert!(open.iter().any(|h| h.0 == want), "{plain} {text}");
            assert_eq!(gated, open, "{plain} {text}");
        }
    }
}

/// Review (bypass): a raw message's string holding a candidate (`email`
/// alone wakes nothing; `password` does) was read with the message's
/// encoded gate, shut on such base64; before the gates its encoded text
/// was always read. The same string in a message without candidates was
/// judged clean before the gates too; a `\/` makes the string escaped
/// (read on its own gate).
#[test]
fn base64_broken_by_plus_and_slash_in_a_message() {
    let s = scanner();
    for &(plain, want) in BROKEN {
        let enc = b64(plain);
        for raw in [
            format!(r#"{{"t":"password {enc}"}}"#),
            format!(r#"{{"t":"{enc}"}}"#),
            format!(r#"{{"t":"{}"}}"#, enc.replace('/', r"\/")),
            format!(r#"{{"t":"{enc}\n"}}"#),
        ] {
            let names = json_names(&s, &raw);
            assert!(names.contains(&want.into()), "{raw}: {names:?}");
            assert!(!s.clean(raw.as_bytes()), "{raw}");
        }
    }
}

/// Review (bypass): base64 of base64 of such text: the outer run is
/// long, the inner one is read under its own (shut) gate.
#[test]
fn nested_base64_broken_by_plus_and_slash() {
    let s = scanner();
    let inner = b64("ab~123-45-6789~");
    let outer = b64(&format!("z {inner} ?"));
    let (gated, _) = gated_and_open(&s, &outer);
    assert!(gated.iter().any(|h| h.0 == "us_ssn"), "{outer} {gated:?}");
}

/// Hex and percent-encoded text always wake the gate.
#[test]
fn hex_and_percent_wake_the_gate() {
    let s = scanner();
    for text in [
        hex::encode("ab 123-45-6789 x"),
        "%31%32%33-45-6789".to_owned(),
        "ssn%3A123-45-6789".to_owned(),
    ] {
        let (gated, open) = gated_and_open(&s, &text);
        assert!(!open.is_empty(), "{text}");
        assert_eq!(gated, open, "{text}");
    }
}

/// Ordinary prose (the benchmark's) and a method name with a slash keep
/// both gates shut: the fast path stays fast.
#[test]
fn prose_keeps_the_gates_shut() {
    let s = scanner();
    let prose = "The quarterly review on 2026-11-02 covered 14 projects across 3 regions. \
        Build 4821 passed after retrying 2 flaky tests; version 1.8.3 ships Friday. \
        Latency p99 dropped from 240 ms to 180 ms once the cache warmed up. \
        Invoice 987654321 was paid by card ending 4242 on 12/03, see tools/call.";
    let raw = format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","result":{{"text":"{prose}"}}}}"#
    );
    // The header values every call carries (the metadata DLP reads them).
    let headers = [
        "content-type: application/json",
        "accept: application/json, text/event-stream",
        "CONTENT-TYPE content-type",
        "user-agent: python-httpx/0.28.1",
    ];
    // The benchmark's call: prose with single digits near words.
    let bench = "deploy the service to eu-west-1 with 3 replicas ".repeat(20);
    let all = [prose.as_bytes(), raw.as_bytes(), bench.as_bytes()]
        .into_iter()
        .chain(headers.iter().map(|h| h.as_bytes()));
    for b in all {
        let mut c = Vec::new();
        let seen = s.candidates(b, &mut c);
        // The benchmark's call shows not even the prefilter's cheap sign
        // of groups: the reading's scalar look is not paid on every call.
        // (Prose dense with numbers may show it; the reading then looks.)
        if b == bench.as_bytes() {
            assert!(!seen.grouped, "{}", String::from_utf8_lossy(b));
        }
        let g = Gate::of(&seen, b);
        assert!(
            !g.spaced && !g.encoded && !g.grouped,
            "{g:?} {}",
            String::from_utf8_lossy(b)
        );
        assert!(!s.may_encode(&seen, b));
    }
}

/// A client sends a new id with every request, and a reply carries it:
/// the digits after `"id":` sit near the letters of `id`, but a quote
/// parts them, so they are no run, and the messages of the benchmark's
/// call show no sign of groups at any id (each such sign costs a scalar
/// look over the whole message).
#[test]
fn request_ids_are_no_sign_of_groups() {
    let s = scanner();
    let text = "deploy the service to eu-west-1 with 3 replicas ".repeat(20);
    for id in [1u64, 12, 345, 67_890, 1_234_567, 9_007_199_254_740_991] {
        for pad in 0..70 {
            let t = format!("{}{text}", "w".repeat(pad));
            let messages = [
                format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{t}"}}}}}}"#
                ),
                format!(
                    r#"{{"jsonrpc": "2.0", "id": {id}, "result": {{"content": [{{"type": "text", "text": "{t}"}}]}}}}"#
                ),
                format!(r#"{{"jsonrpc":"2.0","id":"req-{id}","result":{{}}}}"#),
            ];
            for m in messages {
                let mut c = Vec::new();
                let seen = s.candidates(m.as_bytes(), &mut c);
                assert!(!seen.grouped, "{m}");
            }
        }
    }
    // A run of groups beside the id is still seen, through escapes too.
    for m in [
        r#"{"id":12345,"t":"AKIA 2345 6723 4567 QRST"}"#,
        r#"{"id":12345,"t":"AKIA\n2345\n6723\n4567\nQRST"}"#,
        r#"{"id":12345,"t":"AKIA\"2345\"6723\"4567\"QRST"}"#,
    ] {
        let mut c = Vec::new();
        assert!(s.candidates(m.as_bytes(), &mut c).grouped, "{m}");
    }
    // Review: a run whose only letter beside a digit is across its last
    // gap, the last group one digit. Before, it was seen only when a
    // number near letters happened to share its window (`"id":12`); with
    // `"id":1`, or alone in a string, the key passed.
    let key = "AI za Sy Ab Cd Ef Gh Ij Kl Mn Op Qr St Uv Wx Yz Ab Cd Ef 5";
    for pad in 0..130 {
        let w = "w".repeat(pad);
        for id in ["1", "12", "\"k\""] {
            let m = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"t":"{w} {key}"}}}}"#);
            assert!(
                json_names(&s, &m).contains(&"gcp_api_key".to_owned()),
                "{m}"
            );
        }
        let line = format!("{w} {key} x");
        let (gated, open) = gated_and_open(&s, &line);
        assert!(
            open.iter().any(|h| h.0 == "gcp_api_key"),
            "{line}: {open:?}"
        );
        assert_eq!(gated, open, "{line}");
    }
}

/// Text in groups (see `grouped`): a key in blocks, hex dumps in three
/// spellings, base64 in short lines and in groups set apart by spaces.
fn grouped_texts() -> Vec<String> {
    let key = "AKIAIOSFODNN7EXAMPLE";
    let hex: Vec<String> = key.bytes().map(|b| format!("{b:02x}")).collect();
    let enc = b64(&format!("xxxxxxxxxx{key} and more"));
    let chunks = |n: usize, sep: &str| {
        enc.as_bytes()
            .chunks(n)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(sep)
    };
    vec![
        "AKIA IOSF ODNN 7EXA MPLE".to_owned(),
        "AKIA-IOSF-ODNN-7EXA-MPLE".to_owned(),
        hex.join(" "),
        hex.join(":"),
        hex.iter().map(|h| format!("\\\\x{h}")).collect(),
        hex.iter()
            .map(|h| format!("0x{h}"))
            .collect::<Vec<_>>()
            .join(", "),
        chunks(12, "\\n"),
        chunks(8, " "),
        chunks(16, " "),
        chunks(18, "\\n"),
    ]
}

/// Groups at every offset around a block edge, in a string and in a raw
/// message (where `\n` and `\\` are escapes): the prefilter's windows never
/// lose a run.
#[test]
fn groups_across_block_edges() {
    let s = scanner();
    for text in grouped_texts() {
        // `text` is written as raw JSON; the string it spells:
        let plain: String = serde_json::from_str(&format!("\"{text}\"")).expect("json");
        for pad in 0..130 {
            let line = format!("{} {plain} x", "w".repeat(pad));
            let (gated, open) = gated_and_open(&s, &line);
            assert!(
                open.iter().any(|h| h.0 == "aws_access_key_id"),
                "{line:?}: {open:?}"
            );
            assert_eq!(gated, open, "{line:?}");
            let raw = format!(r#"{{"t":"{} {text} x"}}"#, "w".repeat(pad));
            let names = json_names(&s, &raw);
            assert!(
                names.contains(&"aws_access_key_id".into()),
                "{raw}: {names:?}"
            );
        }
    }
}

fn piece() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z]{1,8}",
        "[ ,.~?>/+=\n-]{1,3}",
        proptest::sample::select(BROKEN.iter().map(|p| b64(p.0)).collect::<Vec<_>>()),
        proptest::sample::select(vec![
            "A K I A I O S F O D N N 7 E X A M P L E".to_owned(),
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1".to_owned(),
            "password = Q 7 x K 2 m P 9 z R 4 w".to_owned(),
            b64("x~AKIAIOSFODNN7EXAMPLE?"),
            hex::encode("ssn 123-45-6789"),
            "%41KIAIOSFODNN7EXAMPLE".to_owned(),
            "AI za Sy Ab Cd Ef Gh Ij Kl Mn Op Qr St Uv Wx Yz Ab Cd Ef 5".to_owned(),
        ]),
        proptest::sample::select(
            grouped_texts()
                .into_iter()
                .map(|t| t.replace("\\n", "\n").replace("\\\\", "\\"))
                .collect::<Vec<_>>()
        ),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Strings of words, separators and encoded or spaced-out secrets:
    /// the gates never lose what the ungated readings find.
    #[test]
    fn gated_is_ungated(parts in proptest::collection::vec(piece(), 1..12)) {
        static S: std::sync::LazyLock<Scanner> = std::sync::LazyLock::new(scanner);
        let s = &*S;
        let text: String = parts.concat();
        let (gated, open) = gated_and_open(s, &text);
        proptest::prop_assert_eq!(gated, open, "{:?}", text);
    }
}

fn b32(s: &str) -> String {
    data_encoding::BASE32_NOPAD.encode(s.as_bytes())
}

/// `text` cut into pieces of `n` characters joined by `sep`.
fn cut(text: &str, n: usize, sep: &str) -> String {
    text.as_bytes()
        .chunks(n)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// Review (bypass): groups of 13 to 15 characters set apart by a `\r\n`
/// (four bytes of raw JSON) or by ` | ` repeat at a period longer than
/// the sixteen bytes the prefilter looked at; being shorter than a long
/// run, nothing else opened the gate, and the message was judged clean.
#[test]
fn groups_at_long_periods_wake_the_gate() {
    let s = scanner();
    let key = "AKIAIOSFODNN7EXAMPLE";
    let enc = b64(&format!("xxxxxxxxxx{key} and more"));
    let hx = hex::encode(format!("the key {key} ok"));
    for (text, n, sep) in [
        (&enc, 13, r"\r\n"),
        (&enc, 14, r"\r\n"),
        (&enc, 15, r"\r\n"),
        (&enc, 14, " | "),
        (&hx, 14, " | "),
        (&hx, 15, r"\n\t "),
    ] {
        let raw = format!(r#"{{"t":"{}"}}"#, cut(text, n, sep));
        assert!(!s.clean(raw.as_bytes()), "{raw}");
        let names = json_names(&s, &raw);
        assert!(names.contains(&"aws_access_key_id".into()), "{raw}");
        let plain: String = serde_json::from_str(&raw[5..raw.len() - 1]).expect("json");
        let (gated, open) = gated_and_open(&s, &plain);
        assert!(
            gated.iter().any(|h| h.0 == "aws_access_key_id"),
            "{plain:?}"
        );
        assert_eq!(gated, open, "{plain:?}");
    }
}

/// Review (bypass): a key in groups of which none mixes letters and
/// digits (`AKIA 2345 6723 4567 QRST`: the letter meets the digit across
/// a gap) was not read joined, and one whose groups look like hex
/// (`AK IA 23 45 67 …`) was cut down to the hex and lost its `AKIA`.
#[test]
fn keys_in_plain_groups_are_read_joined() {
    let s = scanner();
    for text in [
        "key AKIA 2345 6723 4567 QRST end",
        "AKIA 2345 6723 4567 ABCD",
        "key AK IA 23 45 67 23 45 67 QR ST end",
    ] {
        let (gated, open) = gated_and_open(&s, text);
        assert!(gated.iter().any(|h| h.0 == "aws_access_key_id"), "{text}");
        assert_eq!(gated, open, "{text}");
        for pad in [0, 40, 57, 60, 63] {
            let raw = format!(r#"{{"t":"{} {text}"}}"#, "w".repeat(pad));
            let names = json_names(&s, &raw);
            assert!(names.contains(&"aws_access_key_id".into()), "{raw}");
        }
    }
}

/// Review (bypass): the groups and the encoded text of a string's
/// normalised view were not read: a key in full-width groups or set
/// apart by ideographic or no-break spaces or full-width dashes, a
/// look-alike letter in a grouped key, base64 cut by a zero-width space
/// into runs shorter than sixteen, or written full-width.
#[test]
fn the_normalised_view_is_read_for_groups_and_encodings() {
    let s = scanner();
    let enc = b64("k AKIAIOSFODNN7EXAMPLE");
    let full: String = enc
        .chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c),
            _ => c,
        })
        .collect();
    for text in [
        "ＡＫＩＡ ＩＯＳＦ ＯＤＮＮ ７ＥＸＡ ＭＰＬＥ".to_owned(),
        "AKIA\u{3000}IOSF\u{3000}ODNN\u{3000}7EXA\u{3000}MPLE".to_owned(),
        "AKIA\u{a0}IOSF\u{a0}ODNN\u{a0}7EXA\u{a0}MPLE".to_owned(),
        "AKIA－IOSF－ODNN－7EXA－MPLE".to_owned(),
        "\u{410}KIA IOSF ODNN 7EXA MPLE".to_owned(),
        format!("{}\u{200b}{}", &enc[..14], &enc[14..]),
        full,
    ] {
        let (gated, open) = gated_and_open(&s, &text);
        assert!(gated.iter().any(|h| h.0 == "aws_access_key_id"), "{text:?}");
        assert_eq!(gated, open, "{text:?}");
        let raw = serde_json::json!({ "t": text }).to_string();
        let names = json_names(&s, &raw);
        assert!(names.contains(&"aws_access_key_id".into()), "{raw}");
    }
}

/// Review (bypass): base32 glued after a word of the other case or a
/// path (`tokenNMQE…`, `/v1/NMQE…`) was no run of one case, and after a
/// word of its own case (`KEYNMQE…`) decoded misaligned.
#[test]
fn base32_glued_after_a_word_is_read() {
    let s = scanner();
    let enc = b32("k AKIAIOSFODNN7EXAMPLE");
    for text in [
        format!("token{enc}"),
        format!("KEY{enc}"),
        format!("KEYS{enc}"),
        format!("/v1/{enc}"),
        format!("x{}", enc.to_lowercase()),
        format!("{enc}tail"),
    ] {
        let (gated, open) = gated_and_open(&s, &text);
        assert!(gated.iter().any(|h| h.0 == "aws_access_key_id"), "{text}");
        assert_eq!(gated, open, "{text}");
    }
}

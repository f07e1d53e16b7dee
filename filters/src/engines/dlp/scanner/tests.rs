//! Unit tests of the scanner: custom detectors, glued secrets, the library.

use super::*;

fn names(s: &Scanner, text: &str) -> Vec<String> {
    let mut h = Vec::new();
    s.scan_str(text, &mut h);
    h.iter()
        .map(|h| s.detectors[h.detector].name.clone())
        .collect()
}

#[test]
fn custom_detectors_run_around_their_anchors() {
    use sha2::Digest;
    let custom = |name: &str| warden_config::guards::CustomDetector {
        name: name.into(),
        regex: None,
        anchors: Vec::new(),
        keywords: Vec::new(),
        dictionary_sha256: Vec::new(),
        secret: false,
    };
    let dict = hex::encode(sha2::Sha256::digest(b"acme-4711"));
    let s = Scanner::new(&[
        warden_config::guards::CustomDetector {
            regex: Some("CUST-[0-9]{8}".into()),
            anchors: vec!["cust-".into()],
            ..custom("customer_id")
        },
        warden_config::guards::CustomDetector {
            keywords: vec!["bluebird".into(), "night jar".into()],
            ..custom("codename")
        },
        warden_config::guards::CustomDetector {
            regex: Some(r"[A-Za-z0-9-]{4,}".into()),
            dictionary_sha256: vec![dict.to_uppercase()],
            ..custom("known_customer")
        },
        warden_config::guards::CustomDetector {
            regex: Some(r#"x"y[0-9]+"#.into()),
            anchors: vec![r#"x"y"#.into()],
            ..custom("quoted")
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(&s, "ref CUST-12345678 and CUST-1"), ["customer_id"]);
    assert_eq!(
        names(&s, "Project BlueBird, night jar, nightjar"),
        ["codename", "codename"]
    );
    assert!(names(&s, "bluebirds").is_empty(), "whole words");
    assert_eq!(names(&s, "customer ACME-4711 called"), ["known_customer"]);
    // An anchor a JSON escape could split runs on every string: still
    // found in the raw message.
    assert_eq!(names(&s, r#"a x"y42 b"#), ["quoted"]);
    let raw = br#"{"v":"a x\"y42 b"}"#;
    let found = s.scan_json(raw).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(s.detectors[found[0].1.detector].name, "quoted");
}

/// A secret glued to a word character before it is still a secret.
#[test]
fn secrets_glued_to_a_word_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    let names = |t: &str| {
        let mut out = Vec::new();
        s.scan_str(t, &mut out);
        out.iter()
            .map(|h| (s.detectors[h.detector].name.clone(), h.start, h.end))
            .collect::<Vec<_>>()
    };
    for (text, name, at) in [
        ("x_AKIAIOSFODNN7EXAMPLE", "aws_access_key_id", 2),
        ("1AKIAIOSFODNN7EXAMPLE", "aws_access_key_id", 1),
        ("keyAKIAIOSFODNN7EXAMPLE", "aws_access_key_id", 3),
        (
            "tok=xghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat",
            5,
        ),
        ("_glpat-0123456789abcdefABCD", "gitlab_pat", 1),
        // The shortest twin match (15 bytes) and its glued byte: a run
        // of exactly the length that wakes the pass.
        ("axoxb-0123456789", "slack_token", 1),
    ] {
        // At every offset in and across the prefilter's 64-byte blocks,
        // alone and inside a raw JSON message.
        for pad in 0..140 {
            let padded = format!("{}{text}", "ab ".repeat(pad / 3) + &" ".repeat(pad % 3));
            let found = names(&padded);
            assert!(
                found.iter().any(|(n, a, _)| n == name && *a == at + pad),
                "{padded}: {found:?}"
            );
            // One finding, not one per reading.
            assert_eq!(found.len(), 1, "{padded}: {found:?}");
            let raw = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"text":"{padded}"}}}}"#);
            assert!(!s.clean(raw.as_bytes()), "{raw}");
        }
    }
    // Every built-in twin matches only letters, digits and `-._=`: the
    // pass is gated, on runs of the shortest match and its glued byte.
    assert_eq!(s.glued.as_ref().map(|g| g.run), Some(16));
    assert!(names("AKIAIOSFODNN7EXAMPLE").len() == 1);
    assert!(names("the task at hand is back").is_empty());
}

#[test]
fn library_size_and_basic_hits() {
    let s = Scanner::new(&[]).expect("scanner");
    let non_injection = s
        .detectors
        .iter()
        .filter(|d| d.category != Category::Injection)
        .count();
    assert!(non_injection >= 50, "{non_injection} detectors");
    assert_eq!(names(&s, "card 4111 1111 1111 1111 ok"), ["card_visa"]);
    assert!(
        names(&s, "order 4111 1111 1111 1112").is_empty(),
        "fails Luhn"
    );
    assert_eq!(names(&s, "AKIAIOSFODNN7EXAMPLE"), ["aws_access_key_id"]);
    assert_eq!(names(&s, "mail bob@example.com now"), ["email"]);
    assert_eq!(names(&s, "ssn 123-45-6789"), ["us_ssn"]);
    assert!(names(&s, "ssn 666-45-6789").is_empty());
    assert_eq!(names(&s, "DE89 3704 0044 0532 0130 00"), ["iban"]);
    assert!(s.clean(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"all good here"}]}}"#));
    assert!(
        !s.clean(br#"{"text":"\u0034111"}"#),
        "escapes force a parse"
    );
}

/// The detectors' names `locate` reports for a whole JSON message (what the
/// guard scans).
/// A tool result holding one text item.
fn text_reply(text: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1,
        "result": {"content": [{"type": "text", "text": text}]}})
    .to_string()
}

fn located(s: &Scanner, raw: &str) -> Vec<String> {
    let mut out: Vec<String> = s
        .locate(raw.as_bytes(), None, false, false, None, None)
        .expect("inspectable")
        .iter()
        .flat_map(|l| l.hits.iter().map(|h| s.detectors[h.detector].name.clone()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Evasions a hostile peer tried: an escaped quote then an escaped
/// space before an assignment, an IBAN with letters in its account part,
/// a match padded past any fixed reach, and a `\b` or `\f` escape (which
/// the normalised view drops) splitting an anchor.
#[test]
fn padded_escaped_and_lettered_values_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    let msg = text_reply;
    for (text, want) in [
        ("password\"\t: Hx9$kQ2!vLm7", "password_assignment"),
        ("api_key'\n= Hx9kQ2vLm7Zp", "password_assignment"),
        ("secret\"\r\n= Hx9kQ2vLm7Zp", "password_assignment"),
        ("IBAN LU60 001A 2345 B678 9C12", "iban"),
        ("LU60001A2345B6789C12", "iban"),
        ("sk_l\u{8}ive_4eC39HqLyjWDarjtT1zdp7dc", "stripe_live_key"),
        ("sk_l\u{c}ive_4eC39HqLyjWDarjtT1zdp7dc", "stripe_live_key"),
    ] {
        let got = located(&s, &msg(text));
        assert!(got.iter().any(|n| n == want), "{text:?}: {got:?}");
    }
    // A JWT whose payload is longer than 4 KB.
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.abcdefghijklmnopqrstuvwxyz012345",
        "a".repeat(4300)
    );
    assert!(
        located(&s, &msg(&jwt)).iter().any(|n| n == "jwt"),
        "long jwt"
    );
    // An override phrase padded with 5,000 spaces.
    let padded = format!("ignore{}previous instructions", " ".repeat(5000));
    let got = located(&s, &msg(&padded));
    assert!(
        got.iter().any(|n| n == "injection_instruction_override"),
        "padded override: {got:?}"
    );
    // A password assignment padded the same way.
    let padded = format!("password{}: Hx9kQ2vLm7Zp", " ".repeat(5000));
    let got = located(&s, &msg(&padded));
    assert!(got.iter().any(|n| n == "password_assignment"), "{got:?}");
}

/// The digit patterns are confirmed in windows as wide as their longest
/// match: each built-in one is bounded, so a window is small and no
/// padding between a candidate and its match hides it.
#[test]
fn every_digit_pattern_is_bounded() {
    let s = Scanner::new(&[]).expect("scanner");
    let group = s.digit_set.as_ref().expect("digit detectors");
    for g in group {
        let reach = s.detectors[g.det].max_len;
        assert!(
            reach.is_some_and(|n| n < 256),
            "{} reaches {reach:?}",
            s.detectors[g.det].name
        );
    }
    // A card number padded inside a long text is found wherever it sits.
    for pad in [0, 300, 5000, 70_000] {
        let text = format!(
            "{}card 4111 1111 1111 1111 ok{}",
            " ".repeat(pad),
            "x ".repeat(pad)
        );
        assert!(
            names(&s, &text).iter().any(|n| n == "card_visa"),
            "pad {pad}"
        );
    }
}

/// Review: an IBAN whose account part's letters break its digits, in
/// lower case (no upper-case pair wakes it), was found where the windows
/// all digit detectors shared reached it from a run of digits beside it;
/// searching it only around runs of ten digits lost it. A detector woken
/// by other triggers too searches those windows still.
#[test]
fn an_iban_broken_by_letters_is_found_from_a_run_beside_it() {
    let s = Scanner::new(&[]).expect("scanner");
    for pad in [1, 60, 100] {
        let text = format!("gb25west987654321a1234 {} 5555555555", "~".repeat(pad));
        assert!(names(&s, &text).iter().any(|n| n == "iban"), "pad {pad}");
    }
}

/// Numbers written in the digits of another script are what a reader
/// (and a model) reads: found as the ASCII ones are, and redacted whole.
#[test]
fn numbers_in_other_scripts_digits_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    for (text, want) in [
        ("card ٤١١١ ١١١١ ١١١١ ١١١١ ok", "card_visa"),
        ("card ۴۱۱۱-۱۱۱۱-۱۱۱۱-۱۱۱۱", "card_visa"),
        ("ssn १२३-४५-६७८९", "us_ssn"),
        ("card ৪১১১১১১১১১১১১১১১", "card_visa"),
        // Look-alikes a hostile peer tried, spacing marks between digits,
        // and separators that render as spaces or dashes.
        ("card ❹❶❶❶ ❶❶❶❶ ❶❶❶❶ ❶❶❶❶", "card_visa"),
        ("card ➃➀➀➀ ➀➀➀➀ ➀➀➀➀ ➀➀➀➀", "card_visa"),
        ("card ⓸⓵⓵⓵ ⓵⓵⓵⓵ ⓵⓵⓵⓵ ⓵⓵⓵⓵", "card_visa"),
        ("card ⑷⑴⑴⑴ ⑴⑴⑴⑴ ⑴⑴⑴⑴ ⑴⑴⑴⑴", "card_visa"),
        ("card ⒋⒈⒈⒈ ⒈⒈⒈⒈ ⒈⒈⒈⒈ ⒈⒈⒈⒈", "card_visa"),
        ("ssn ❶❷❸-❹❺-❻❼❽❾", "us_ssn"),
        ("card ४ः१ः१ः१ः १ः१ः१ः१ः १ः१ः१ः१ः १ः१ः१ः१ः", "card_visa"),
        ("card ٤١١١\u{2800}١١١١\u{2800}١١١١\u{2800}١١١١", "card_visa"),
        ("ssn 123֊45֊6789", "us_ssn"),
        ("ssn 123〜45〜6789", "us_ssn"),
        ("ssn 123➖45➖6789", "us_ssn"),
        ("ssn 123˗45˗6789", "us_ssn"),
    ] {
        let got = names(&s, text);
        assert!(got.iter().any(|n| n == want), "{text}: {got:?}");
    }
}

/// A finding in the normalised view covers its whole original: the marks
/// the view dropped after its last digit are redacted with it.
#[test]
fn a_finding_covers_what_the_view_dropped_after_it() {
    let s = Scanner::new(&[]).expect("scanner");
    let key = |d: char| format!("{d}\u{fe0f}\u{20e3}");
    let card: String = "4111111111111111".chars().map(key).collect();
    let text = format!("card {card} ok");
    let mut h = Vec::new();
    s.scan_str(&text, &mut h);
    let hit = h
        .iter()
        .find(|h| s.detectors[h.detector].name == "card_visa")
        .expect("found");
    assert_eq!(&text[hit.start..hit.end], card, "{h:?}");
    let accented = "card ٤\u{301}١١١ ١١١١ ١١١١ ١١١١\u{301} ok";
    let mut h = Vec::new();
    s.scan_str(accented, &mut h);
    let hit = h
        .iter()
        .find(|h| s.detectors[h.detector].name == "card_visa")
        .expect("found");
    assert!(accented[hit.start..hit.end].ends_with('\u{301}'), "{h:?}");
}

/// Shapes a reader still reads as the finding: a letter glued after a
/// fixed-length token, card groups joined by other separators, an IBAN in
/// lower case or grouped by dashes, an SSN with dots. A longer run of the
/// token's own class is another token, and is not reported.
#[test]
fn glued_tails_and_other_separators_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    let msg = text_reply;
    for (text, want) in [
        ("key AKIAIOSFODNN7EXAMPLEx here", "aws_access_key_id"),
        ("key AKIAIOSFODNN7EXAMPLE_ here", "aws_access_key_id"),
        ("x_AKIAIOSFODNN7EXAMPLEz", "aws_access_key_id"),
        (
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789_suffix",
            "github_pat",
        ),
        ("SKabcdef0123456789abcdef0123456789XYZ", "twilio_api_key"),
        ("card 4111.1111.1111.1111 ok", "card_visa"),
        ("card 4111/1111/1111/1111 ok", "card_visa"),
        ("card 4111_1111_1111_1111 ok", "card_visa"),
        ("card 4111\t1111\t1111\t1111 ok", "card_visa"),
        ("card 3782.822463.10005 ok", "card_amex"),
        ("iban de89 3704 0044 0532 0130 00", "iban"),
        ("iban gb82west12345698765432", "iban"),
        ("iban DE89-3704-0044-0532-0130-00", "iban"),
        ("iban HU42117730161111101800000000", "iban"),
        ("ssn 123.45.6789", "us_ssn"),
    ] {
        let got = names(&s, text);
        assert!(got.iter().any(|n| n == want), "{text:?}: {got:?}");
        let got = located(&s, &msg(text));
        assert!(got.iter().any(|n| n == want), "json {text:?}: {got:?}");
    }
    // The finding is the token, not the glued character.
    let text = "key AKIAIOSFODNN7EXAMPLEx here";
    let mut h = Vec::new();
    s.scan_str(text, &mut h);
    assert_eq!(&text[h[0].start..h[0].end], "AKIAIOSFODNN7EXAMPLE");
    // Two tokens one glued character apart are both found, and so are
    // two tokens glued together, each over its own bytes.
    let two = "AKIAIOSFODNN7EXAMPLE,AKIAIOSFODNN7EXAMPLF";
    let mut h = Vec::new();
    s.scan_str(two, &mut h);
    assert_eq!(h.len(), 2, "{h:?}");
    let pat = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    for glued in [
        "AKIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLF".to_owned(),
        "ASIAIOSFODNN7EXAMPLEAKIAIOSFODNN7EXAMPLF".to_owned(),
        format!("{pat}{pat}"),
        format!("x {pat}{pat}{pat} y"),
    ] {
        let mut h = Vec::new();
        s.scan_str(&glued, &mut h);
        let spans: Vec<&str> = h.iter().map(|h| &glued[h.start..h.end]).collect();
        assert!(spans.len() >= 2, "{glued}: {spans:?}");
        assert!(
            spans.iter().all(|t| t.len() == 20 || t.len() == 40),
            "{glued}: {spans:?}"
        );
    }
    for text in [
        // Longer runs of the token's own class are other tokens.
        "AKIAIOSFODNN7EXAMPLEXYZ",
        "key-0123456789abcdef0123456789abcdef0123",
        // Not valid: wrong length, bad check digits.
        "iban de89 3704 0044 0532 0130 01",
        "4111.1111.1111.1112",
    ] {
        assert!(
            names(&s, text).is_empty(),
            "{text:?}: {:?}",
            names(&s, text)
        );
    }
}

/// A secret or a card spelled out one character at a time, each set apart
/// by a separator, is read whole, in text and in a raw JSON message.
#[test]
fn spaced_out_secrets_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    let msg = text_reply;
    for (text, want) in [
        (
            "key A K I A I O S F O D N N 7 E X A M P L E ok",
            "aws_access_key_id",
        ),
        ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 ok", "card_visa"),
        ("card 4-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1", "card_visa"),
        ("card 4.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1", "card_visa"),
        (
            "key Ａ Ｋ Ｉ Ａ Ｉ Ｏ Ｓ Ｆ Ｏ Ｄ Ｎ Ｎ ７ Ｅ Ｘ Ａ Ｍ Ｐ Ｌ Ｅ",
            "aws_access_key_id",
        ),
    ] {
        let got = names(&s, text);
        assert!(got.iter().any(|n| n == want), "{text:?}: {got:?}");
        let got = located(&s, &msg(text));
        assert!(got.iter().any(|n| n == want), "json {text:?}: {got:?}");
    }
    // The finding covers the spaced-out characters.
    let text = "key A K I A I O S F O D N N 7 E X A M P L E ok";
    let mut h = Vec::new();
    s.scan_str(text, &mut h);
    assert_eq!(
        &text[h[0].start..h[0].end],
        "A K I A I O S F O D N N 7 E X A M P L E"
    );
    for text in ["1 2 3 4 5 6 7 8 9 10 11 12", "a b c d e f g h i j k l m n"] {
        assert!(names(&s, text).is_empty(), "{text:?}");
    }
}

fn b64(x: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(x)
}

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// Review of the decoding of encoded text: padding a reader ignores
/// (a run of sixteen with its `=`, more `=` than needed).
#[test]
fn encoded_runs_counted_with_their_padding_and_excess_padding() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    // `123-45-6789` is 15 base64 characters and one `=`.
    let ssn = b64(b"123-45-6789");
    assert_eq!(ssn, "MTIzLTQ1LTY3ODk=");
    assert_eq!(names(&s, &format!("ssn {ssn}")), ["us_ssn"]);
    // Padding a decoder ignores: `==` where one is due, or three.
    for t in [
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEU==",
        "QUtJQUlPU0ZPRE5ON0VYQU1QTEU===",
    ] {
        assert_eq!(names(&s, t), ["aws_access_key_id"], "{t}");
    }
}

/// One escape that is no text (`%00`, `%FF`, a cut UTF-8 sequence)
/// turned off the percent-decoded view of the whole string.
#[test]
fn percent_escapes_are_read_beside_ones_that_are_not_text() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    for t in [
        "%00 %41KIAIOSFODNN7EXAMPLE",
        "%01 %41KIAIOSFODNN7EXAMPLE",
        "%FF %41KIAIOSFODNN7EXAMPLE",
        "%E2%82 %41KIAIOSFODNN7EXAMPLE",
        "%41KIAIOSFODNN7EXAMPLE%C0%AF",
    ] {
        let mut h = Vec::new();
        s.scan_str(t, &mut h);
        let at = t.find("%41").unwrap_or_default();
        assert_eq!(h.len(), 1, "{t}: {h:?}");
        assert_eq!(s.detectors[h[0].detector].name, "aws_access_key_id", "{t}");
        assert_eq!(
            (h[0].start, h[0].end),
            (at, at + 22),
            "{t}: exactly the key's escapes and letters"
        );
    }
}

/// MIME and PEM wrap base64 every 64 or 76 characters: a secret cut by
/// a line break is still one to whoever decodes the block.
#[test]
fn line_wrapped_base64_is_read_across_its_lines() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    // The key's bytes 50..70 straddle the first line (57 bytes).
    let text = format!("{}{KEY} and more text after the key here", "x".repeat(50));
    let enc = b64(text.as_bytes());
    for (width, eol) in [(76, "\n"), (76, "\r\n"), (64, "\n")] {
        let lines: Vec<&str> = enc
            .as_bytes()
            .chunks(width)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        let t = lines.join(eol);
        let mut h = Vec::new();
        s.scan_str(&t, &mut h);
        assert_eq!(h.len(), 1, "{width} {eol:?}: {h:?}");
        assert_eq!((h[0].start, h[0].end), (0, t.len()), "the whole block");
    }
    // A binary line beside a text one: the text line is still read.
    let t = format!("{}\n{}", "////////////////", b64(KEY.as_bytes()));
    assert_eq!(names(&s, &t), ["aws_access_key_id"]);
}

/// A base64 run glued after a word, a path or a dash decodes misaligned
/// as one run; a reader sees the word and the base64 after it.
#[test]
fn base64_glued_after_a_word_or_path_is_read() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    let enc = b64(KEY.as_bytes());
    for t in [
        format!("token{enc}"),
        format!("https://api.example.com/v1/{enc}"),
        format!("token-{}", enc.trim_end_matches('=')),
    ] {
        assert_eq!(names(&s, &t), ["aws_access_key_id"], "{t}");
    }
}

/// Text beside a control byte (a NUL terminator, an ANSI colour) or after
/// binary bytes is read.
#[test]
fn text_beside_control_bytes_or_binary_is_read() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    let mut bin = vec![0xffu8; 200];
    bin.extend_from_slice(format!(" {KEY} ").as_bytes());
    for t in [
        b64(format!("{KEY}\0").as_bytes()),
        b64(format!("\x1b[31m{KEY}\x1b[0m").as_bytes()),
        b64(&bin),
    ] {
        assert_eq!(names(&s, &t), ["aws_access_key_id"], "{t}");
    }
    let mut hits = Vec::new();
    s.binary_matches(&b64(&bin), &mut hits);
    assert_eq!(hits.len(), 1, "a blob whose first 192 bytes are binary");
}

/// Three encodings deep, chunks of base64 concatenated after their
/// padding, `0x` hex; runs of fewer than sixteen are not read.
#[test]
fn encodings_past_the_decoding_limits() {
    let s = Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}"));
    for (t, want) in [
        ("%252541KIAIOSFODNN7EXAMPLE".to_owned(), "aws_access_key_id"),
        (
            b64(b64(hex::encode(KEY).as_bytes()).as_bytes()),
            "aws_access_key_id",
        ),
        (format!("0x{}", hex::encode(KEY)), "aws_access_key_id"),
        (
            format!("{}{}", b64(b"AKIAIOSF"), b64(b"ODNN7EXAMPLE")),
            "aws_access_key_id",
        ),
    ] {
        assert_eq!(names(&s, &t), [want], "{t}");
    }
    // Runs shorter than sixteen (the base64 of a bare nine-digit SSN) are
    // not decoded: words of prose are that long.
    assert!(names(&s, &format!("ssn {}", b64(b"123456789"))).is_empty());
}

/// Overlaps are resolved in n log n: a megabyte packed with findings is
/// one pass, and every finding is kept once.
#[test]
fn many_findings_resolve_without_quadratic_work() {
    let s = Scanner::new(&[]).expect("scanner");
    let text = "AKIAIOSFODNN7EXAMPLEx ".repeat(20_000);
    let mut h = Vec::new();
    s.scan_str(&text, &mut h);
    assert_eq!(h.len(), 20_000);
    // Empty and touching spans are not overlaps; nested ones are.
    let mut t = Taken::default();
    let hit = |start, end| Hit {
        detector: 0,
        start,
        end,
    };
    assert!(t.claim(&hit(10, 20)));
    assert!(t.claim(&hit(20, 30)));
    assert!(t.claim(&hit(0, 10)));
    assert!(!t.claim(&hit(12, 14)));
    assert!(!t.claim(&hit(5, 25)));
    assert!(!t.claim(&hit(29, 40)));
    assert!(t.claim(&hit(30, 40)));
}

/// Review: spaced-out words with up to three separators between their
/// characters, mixed, line breaks and tabs included, in a string and in a
/// raw message whose escapes (`\n`) glue their letter to the next
/// character; a run crossing a 64-byte block of the prefilter.
#[test]
fn spaced_out_secrets_with_wider_separators_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    let msg = |text: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1,
            "result": {"content": [{"type": "text", "text": text}]}})
        .to_string()
    };
    let key = "AKIAIOSFODNN7EXAMPLE";
    let spell = |sep: &str| key.chars().map(String::from).collect::<Vec<_>>().join(sep);
    for text in [
        spell("  "),
        spell(", "),
        spell(" - "),
        spell("\n"),
        spell("\r\n"),
        spell("\t"),
        spell(":"),
        format!("\n{}", spell(" ")),
        format!("{} {}", "x".repeat(52), spell(" ")),
        format!("{} {}", "x".repeat(40), spell(",  ")),
        "4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1".to_owned(),
    ] {
        let want = if text.starts_with('4') {
            "card_visa"
        } else {
            "aws_access_key_id"
        };
        let got = names(&s, &text);
        assert!(got.iter().any(|n| n == want), "{text:?}: {got:?}");
        let raw = msg(&text);
        let got = located(&s, &raw);
        assert!(got.iter().any(|n| n == want), "json {raw}: {got:?}");
    }
}

/// Review (left): hex written with separators or as `\x` escapes, which
/// a model reads as easily as bare hex, is not decoded.
#[test]
fn hex_with_separators_is_read() {
    let s = Scanner::new(&[]).expect("scanner");
    let hex: Vec<String> = "AKIAIOSFODNN7EXAMPLE"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    for text in [
        hex.join(" "),
        hex.join(":"),
        hex.iter().map(|h| format!("\\x{h}")).collect::<String>(),
    ] {
        let got = names(&s, &text);
        assert!(
            got.iter().any(|n| n == "aws_access_key_id"),
            "{text:?}: {got:?}"
        );
    }
}

/// Review (left): a key written in groups (`AKIA IOSF ODNN 7EXA MPLE`)
/// and base64 wrapped in lines shorter than a run or in groups set apart
/// by spaces are read by a model but not by the scanner.
#[test]
fn grouped_secrets_and_short_wrapped_base64_are_read() {
    let s = Scanner::new(&[]).expect("scanner");
    let enc = b64(format!("{}AKIAIOSFODNN7EXAMPLE and more", "x".repeat(10)).as_bytes());
    let chunks = |n: usize, sep: &str| {
        enc.as_bytes()
            .chunks(n)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(sep)
    };
    for text in [
        "AKIA IOSF ODNN 7EXA MPLE".to_owned(),
        chunks(12, "\n"),
        chunks(16, " "),
        chunks(18, "\n"),
    ] {
        let got = names(&s, &text);
        assert!(
            got.iter().any(|n| n == "aws_access_key_id"),
            "{text:?}: {got:?}"
        );
    }
}

/// Review (left in session 32): base32, which a model decodes as readily
/// as base64, in upper or lower case, padded or not, bare and in a message.
#[test]
fn base32_is_read() {
    let s = Scanner::new(&[]).expect("scanner");
    for plain in ["AKIAIOSFODNN7EXAMPLE", "ssn 123-45-6789 on file"] {
        let want = if plain.starts_with('A') {
            "aws_access_key_id"
        } else {
            "us_ssn"
        };
        let enc = data_encoding::BASE32.encode(plain.as_bytes());
        for text in [
            enc.clone(),
            enc.trim_end_matches('=').to_owned(),
            enc.to_ascii_lowercase(),
            format!("data: {enc} end"),
            // Characters glued after it whose bits past the last whole
            // byte are set: a strict decoder refuses the run, a lenient
            // reader reads the secret and a byte after it.
            format!("{}AB", enc.trim_end_matches('=')),
            format!("{}ab end", enc.trim_end_matches('=').to_ascii_lowercase()),
            format!("{}7", enc.trim_end_matches('=')),
        ] {
            let got = names(&s, &text);
            assert!(got.iter().any(|n| n == want), "{text:?}: {got:?}");
            let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1,
                "result": {"content": [{"type": "text", "text": text}]}})
            .to_string();
            let got = located(&s, &raw);
            assert!(got.iter().any(|n| n == want), "json {raw}: {got:?}");
        }
    }
    // An upper-case word run is no base32 finding.
    assert!(names(&s, "THEQUICKBROWNFOXJUMPSOVERTHELAZYDOG").is_empty());
}

#[test]
fn only_clean_short_texts_are_remembered_and_each_scan_on_its_own() {
    let s = Scanner::new(&[]).expect("scanner");
    let clean = "mcp-session-id: 3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";
    // base64 of an AWS key id: found under the encoding, never remembered.
    let dirty = "x QUtJQUlPU0ZPRE5ON0VYQU1QTEU= y";
    for _ in 0..2 {
        assert!(names(&s, clean).is_empty());
        assert_eq!(names(&s, dirty), ["aws_access_key_id"]);
    }
    let key = |t: &str, how| s.memo.key(t, how).expect("short");
    assert!(s.memo.clean(key(clean, memo::Scan::Resolved)));
    assert!(!s.memo.clean(key(dirty, memo::Scan::Resolved)));
    assert!(
        !s.memo.clean(key(clean, memo::Scan::All)),
        "scan_str_all has not read it"
    );
    let mut all = Vec::new();
    s.scan_str_all(dirty, &mut all);
    assert_eq!(all.len(), 1, "{all:?}");
    // A scan into hits already found resolves them with its own, even for
    // a remembered clean text: two overlapping hits come back as one.
    let wide = "ｃａｆｅ 3f2a9c1e";
    assert!(normalise::view(wide).is_some(), "a text with a view");
    assert!(names(&s, wide).is_empty());
    assert!(s.memo.clean(key(wide, memo::Scan::Resolved)));
    let mut two = vec![
        Hit {
            detector: 0,
            start: 0,
            end: 6,
        },
        Hit {
            detector: 1,
            start: 3,
            end: 9,
        },
    ];
    s.scan_str(wide, &mut two);
    assert_eq!(two.len(), 1, "{two:?}");
    // A long text is scanned every time (and found every time).
    let long = format!("{} AKIAIOSFODNN7EXAMPLE", "word ".repeat(40));
    for _ in 0..2 {
        assert_eq!(names(&s, &long), ["aws_access_key_id"]);
    }
}

/// Card and SSN digits are read as a reader reads them across runs of
/// separators: doubled spaces, ` - `, line breaks, table bars.
#[test]
fn digits_across_separator_runs_are_found() {
    let s = Scanner::new(&[]).expect("scanner");
    for text in [
        "4111  1111  1111  1111",
        "4111 - 1111 - 1111 - 1111",
        "4111\n1111\n1111\n1111",
        "4111\r\n1111\r\n1111\r\n1111",
        "4111\r1111\r1111\r1111",
        "4111 | 1111 | 1111 | 1111",
        "4111|1111|1111|1111",
    ] {
        assert!(
            names(&s, text).contains(&"card_visa".to_owned()),
            "{text:?}: {:?}",
            names(&s, text)
        );
    }
    for text in ["123  45  6789", "123 - 45 - 6789"] {
        assert!(
            names(&s, text).contains(&"us_ssn".to_owned()),
            "{text:?}: {:?}",
            names(&s, text)
        );
    }
    // Tables of numbers are no SSN.
    for text in ["| 200 | 15 | 2024 |", "404\t12\t2023", "443\n22\n8080"] {
        assert!(
            !names(&s, text).contains(&"us_ssn".to_owned()),
            "{text:?}: {:?}",
            names(&s, text)
        );
    }
    // Still Luhn- and area-checked.
    assert!(names(&s, "4111 | 1111 | 1111 | 1112").is_empty());
    assert!(names(&s, "666 - 45 - 6789").is_empty());
}

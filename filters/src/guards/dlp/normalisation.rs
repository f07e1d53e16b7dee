//! Secrets disguised as a reader would not notice (format characters,
//! Unicode spaces, compatibility forms) are found in the normalised view
//! and redacted over their whole original span; keys holding findings stay
//! out of paths.
use super::*;
use crate::engines::identity::Principal;
use proptest::prelude::*;
use warden_config::guards::DlpRule;

fn scanner() -> &'static Scanner {
    static S: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    S.get_or_init(|| Scanner::new(&[]).unwrap_or_else(|e| panic!("{e}")))
}

fn filter(action: DlpAction, hash: bool) -> DlpFilter {
    let dlp = Dlp {
        rules: vec![DlpRule {
            name: "r".into(),
            detectors: vec!["*".into()],
            request: true,
            response: true,
            min_risk: None,
            action,
            mask: "[X]".into(),
            hash,
        }],
        custom: Vec::new(),
        hash_key: None,
    };
    DlpFilter::new(dlp, Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The decision on a response or request and the findings noted.
fn judge(f: &DlpFilter, raw: &str) -> (Decision, Vec<FindingNote>) {
    let env = crate::protocol::jsonrpc::single(raw);
    let p = Principal::anonymous();
    let mut notes = Notes::default();
    let ctx = Exchange::new(&p, "s");
    let d = if env.kind == crate::protocol::jsonrpc::Kind::Response {
        let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
        f.on_response(&msg, &ctx, &mut notes)
    } else {
        f.on_request(&Message::new(&env, raw.as_bytes()), &ctx, &mut notes)
    };
    (d, notes.findings)
}

/// A response whose result text is `text`, as a JSON encoder writes it.
fn response(text: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}})
        .to_string()
}

/// `(detector, start, end)` of the findings in `text`.
fn found(text: &str) -> Vec<(String, usize, usize)> {
    let s = scanner();
    let mut h = Vec::new();
    s.scan_str(text, &mut h);
    h.iter()
        .map(|h| (s.detectors()[h.detector].name.clone(), h.start, h.end))
        .collect()
}

/// Every form of each secret: found by its detector over exactly its
/// original bytes.
const FORMS: &[(&str, &str)] = &[
    ("4111 1111 1111 1111", "card_visa"),
    ("4111\u{200b}1111\u{200b}1111\u{200b}1111", "card_visa"),
    ("4111\u{200c}1111\u{200d}1111\u{2060}1111", "card_visa"),
    (
        "4\u{feff}111\u{ad}1111\u{180e}1111\u{2061}111\u{2064}1",
        "card_visa",
    ),
    (
        "4111\u{206a}1111\u{206f}1111\u{e0001}111\u{e007f}1",
        "card_visa",
    ),
    ("4111\u{a0}1111\u{a0}1111\u{a0}1111", "card_visa"),
    ("4111\u{2000}1111\u{200a}1111\u{202f}1111", "card_visa"),
    ("4111\u{205f}1111\u{3000}1111\u{1680}1111", "card_visa"),
    ("４１１１１１１１１１１１１１１１", "card_visa"),
    ("４１１１ １１１１　１１１１－１１１１", "card_visa"),
    (
        "\u{1d7d2}\u{1d7cf}\u{1d7cf}\u{1d7cf}1111\u{1d7e3}1\u{1d7ed}1 1111",
        "card_visa",
    ),
    ("5500\u{200b}0000\u{a0}0000 ０００４", "card_mastercard"),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id"),
    ("AKIA\u{200b}IOSFODNN7EXAMPLE", "aws_access_key_id"),
    (
        "AKIA\u{ad}IOSF\u{2062}ODNN\u{e0041}7EXAMPLE",
        "aws_access_key_id",
    ),
    (
        "ＡＫＩＡＩＯＳＦＯＤＮＮ７ＥＸＡＭＰＬＥ",
        "aws_access_key_id",
    ),
    (
        "\u{1d400}\u{1d40a}\u{1d408}\u{1d400}IOSFODNN\u{1d7d5}EXAMPLE",
        "aws_access_key_id",
    ),
    ("123-45-6789", "us_ssn"),
    ("123 45 6789", "us_ssn"),
    ("123456789", "us_ssn"),
    ("123\u{a0}45\u{3000}6789", "us_ssn"),
    ("123\u{200b}-45-\u{feff}6789", "us_ssn"),
    ("１２３－４５－６７８９", "us_ssn"),
    ("123\u{2011}45\u{2013}6789", "us_ssn"),
    ("１２３４５６７８９", "us_ssn"),
    // Letters of other scripts drawn like the ASCII ones; CJK numerals.
    (
        "\u{410}\u{41a}\u{406}\u{410}IOSFODNN7EXAMPLE",
        "aws_access_key_id",
    ),
    ("AKIAIOSFODNN7EXАMPLE", "aws_access_key_id"),
    ("AKIA\u{399}\u{39f}SFODNN7EXAMPLE", "aws_access_key_id"),
    ("ghр_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "github_pat"),
    ("alice@ехample.com", "email"),
    ("四一一一 一一一一 一一一一 一一一一", "card_visa"),
];

#[test]
fn every_form_is_found_over_its_original_span() {
    for (form, det) in FORMS {
        let text = format!("ref: {form} end");
        let end = 5 + form.len();
        assert!(
            found(&text).contains(&(det.to_string(), 5, end)),
            "{form:?}: {:?}",
            found(&text)
        );
    }
}

#[test]
fn ssn_separators_are_consistent_and_validated() {
    for bad in [
        "123-45 6789",
        "123 45-6789",
        "12345-6789",
        "123-456789",
        "666 45 6789",
        "900 45 6789",
        "000456789",
        "123 00 6789",
        "123450000",
        "1234567890",
    ] {
        let text = format!("ref: {bad} end");
        assert!(
            !found(&text).iter().any(|(d, ..)| d == "us_ssn"),
            "{bad}: {:?}",
            found(&text)
        );
    }
}

#[test]
fn escaped_and_raw_forms_agree() {
    let s = scanner();
    for (form, det) in FORMS {
        let text = format!("ref: {form} end");
        let mut every = String::from("{\"v\":\"");
        for u in text.encode_utf16() {
            every.push_str(&format!("\\u{u:04x}"));
        }
        every.push_str("\"}");
        // Only the non-ASCII characters escaped (`\u200b` in the JSON).
        let mut some = String::from("{\"v\":\"");
        for c in text.chars() {
            if c.is_ascii() {
                some.push(c);
            } else {
                let mut b = [0u16; 2];
                for u in c.encode_utf16(&mut b) {
                    some.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
        some.push_str("\"}");
        let raw = serde_json::json!({ "v": text }).to_string();
        for json in [raw, every, some] {
            let got = s.scan_json(json.as_bytes()).unwrap_or_default();
            assert!(
                got.iter().any(|(p, h)| p == ".v"
                    && s.detectors()[h.detector].name == *det
                    && (h.start, h.end) == (5, 5 + form.len())),
                "{json}: {got:?}"
            );
        }
    }
}

#[test]
fn redaction_replaces_exactly_the_original_span() {
    let f = filter(DlpAction::Redact, false);
    for (form, _) in FORMS {
        // Non-ASCII before and after the secret survives untouched.
        let raw = response(&format!("ʀᴇꜰ\u{200b}: {form} ｅｎｄ\u{a0}"));
        let want = response("ʀᴇꜰ\u{200b}: [X] ｅｎｄ\u{a0}");
        match judge(&f, &raw) {
            (Decision::Mutated(out), _) => {
                assert_eq!(String::from_utf8_lossy(&out), want, "{form:?}")
            }
            (other, _) => panic!("{form:?}: {other:?}"),
        }
    }
    // Escaped in the raw JSON: that literal is rewritten, every other
    // byte is forwarded as it came.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"a":"caf\u00e9 ４", "text":"card 4111\u200b1111\u200B1111\u00a01111 ok\u200b", "z" : 1.5E+2}}"#;
    let want = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"a\":\"caf\\u00e9 ４\", \"text\":\"card [X] ok\u{200b}\", \"z\" : 1.5E+2}}";
    match judge(&f, raw) {
        (Decision::Mutated(out), _) => assert_eq!(String::from_utf8_lossy(&out), want),
        (other, _) => panic!("{other:?}"),
    }
}

#[test]
fn actions_match_the_plain_form() {
    let plain = response("card 4111111111111111 and AKIAIOSFODNN7EXAMPLE and 123-45-6789");
    let disguised =
        response("card ４１１１\u{200b}1111\u{ad}1111\u{2060}１１１１ and ＡＫＩＡ\u{2060}IOSFODNN7EXAMPLE and 123\u{a0}45\u{3000}6789");
    let bare = response("card 4111111111111111 and AKIAIOSFODNN7EXAMPLE and 123456789");
    for action in [
        DlpAction::Block,
        DlpAction::Redact,
        DlpAction::Strip,
        DlpAction::Log,
    ] {
        let f = filter(action, false);
        let (a, notes_a) = judge(&f, &plain);
        for other in [&disguised, &bare] {
            let (b, notes_b) = judge(&f, other);
            assert_eq!(notes_a, notes_b, "{action:?}");
            assert_eq!(notes_a.len(), 3);
            match (&a, &b) {
                (Decision::Mutated(x), Decision::Mutated(y)) => assert_eq!(x, y),
                (Decision::Reject(x), Decision::Reject(y)) => assert_eq!(x.reason, y.reason),
                (Decision::Pass, Decision::Pass) => {}
                _ => panic!("{action:?}: {a:?} vs {b:?}"),
            }
        }
    }
    // Keyed hash tokens are those of the plain value.
    let f = filter(DlpAction::Redact, true);
    let (a, _) = judge(&f, &plain);
    let (b, _) = judge(&f, &disguised);
    let (Decision::Mutated(a), Decision::Mutated(b)) = (a, b) else {
        panic!("not redacted")
    };
    assert!(String::from_utf8_lossy(&a).contains("[card_visa:"));
    let token = |m: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .split(" and ")
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(token(&a), token(&b));
}

#[test]
fn zero_width_run_inside_a_card_hides_neither() {
    let text = "x 4111\u{200b}\u{200b}\u{200b}1111 1111 1111 y";
    let got = found(text);
    assert!(
        got.contains(&("card_visa".into(), 2, text.len() - 2)),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(d, ..)| d == "injection_zero_width_run"),
        "{got:?}"
    );
    let f = filter(DlpAction::Redact, false);
    let (d, notes) = judge(&f, &response(text));
    assert_eq!(notes.len(), 2, "{notes:?}");
    let Decision::Mutated(out) = d else {
        panic!("{d:?}")
    };
    assert_eq!(String::from_utf8_lossy(&out), response("x [X] y"));
}

#[test]
fn plain_ascii_is_not_normalised() {
    // Clean ASCII never builds a view; clean non-ASCII is never "clean".
    assert!(normalise::view("ref 4111 and AKIA").is_none());
    let s = scanner();
    assert!(s.clean(response("all good here").as_bytes()));
    assert!(!s.clean(response("４１１１１１１１１１１１１１１１").as_bytes()));
    assert_eq!(
        s.scan_json(response("all good, café").as_bytes())
            .map(|f| f.len()),
        Ok(0)
    );
}

#[test]
fn keys_holding_findings_stay_out_of_paths() {
    let s = scanner();
    let paths = |raw: &str| -> Vec<(String, String)> {
        s.scan_json(raw.as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_iter()
            .map(|(p, h)| (p, s.detectors()[h.detector].name.clone()))
            .collect()
    };
    assert_eq!(
        paths(r#"{"AKIAIOSFODNN7EXAMPLE": 1}"#),
        [(".[key]".to_owned(), "aws_access_key_id".to_owned())]
    );
    assert_eq!(
        paths(r#"{"a":{"123-45-6789":{"b":"4111 1111 1111 1111"}}}"#),
        [
            (".a.[key]".to_owned(), "us_ssn".to_owned()),
            (".a.[key].b".to_owned(), "card_visa".to_owned())
        ]
    );
    // A plain identifier is kept, anything else is masked.
    assert_eq!(
        paths(r#"{"card_number":"4111 1111 1111 1111","my card":{"n":"123 45 6789"}}"#),
        [
            (".card_number".to_owned(), "card_visa".to_owned()),
            (".[key].n".to_owned(), "us_ssn".to_owned())
        ]
    );
    // Disguised and escaped keys are found and masked too.
    for raw in [
        "{\"x\":[{\"AKIA\u{200b}IOSFODNN7EXAMPLE\":{\"y\":\"AKIAIOSFODNN7EXAMPLE\"}}]}",
        r#"{"x":[{"AKIA\u200bIOSFODNN7EXAMPLE":{"y":"AKIAIOSFODNN7EXAMPLE"}}]}"#,
        r#"{"x":[{"\uff21KIAIOSFODNN7EXAMPLE":{"y":"AKIAIOSFODNN7EXAMPLE"}}]}"#,
    ] {
        assert_eq!(
            paths(raw),
            [
                (".x[0].[key]".to_owned(), "aws_access_key_id".to_owned()),
                (".x[0].[key].y".to_owned(), "aws_access_key_id".to_owned())
            ],
            "{raw}"
        );
    }
}

#[test]
fn secret_keys_are_blocked_redacted_and_noted_without_the_key() {
    let raw = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"AKIAIOSFODNN7EXAMPLE":{"ssn":"123 45 6789"},"x":1}}}"#;
    let (d, notes) = judge(&filter(DlpAction::Log, false), raw);
    assert!(matches!(d, Decision::Pass), "{d:?}");
    let paths: Vec<&str> = notes.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(
        paths,
        ["params.arguments.[key]", "params.arguments.[key].ssn"]
    );
    assert!(notes.iter().all(|n| !n.path.contains("AKIA")));
    let (d, _) = judge(&filter(DlpAction::Block, false), raw);
    assert!(
        matches!(d, Decision::Reject(ref r) if r.reason == "dlp_blocked:r"),
        "{d:?}"
    );
    let (d, _) = judge(&filter(DlpAction::Redact, false), raw);
    let Decision::Mutated(out) = d else {
        panic!("{d:?}")
    };
    assert_eq!(
        String::from_utf8_lossy(&out),
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"[X]":{"ssn":"[X]"},"x":1}}}"#
    );
}

/// Secrets to disguise: `|` marks where a separator may go.
const SECRETS: &[(&str, &str, &[&str])] = &[
    ("4111|1111|1111|1111", "card_visa", &["", " ", "-"]),
    ("5500|0000|0000|0004", "card_mastercard", &["", " ", "-"]),
    ("3782|822463|10005", "card_amex", &["", " ", "-"]),
    ("AKIAIOSFODNN7EXAMPLE", "aws_access_key_id", &[""]),
    ("ASIAY34FZKBOKMUTVV7A", "aws_access_key_id", &[""]),
    ("123|45|6789", "us_ssn", &["", " ", "-"]),
    ("078|05|1121", "us_ssn", &["", " ", "-"]),
];
const FORMAT: &[char] = &[
    '\u{ad}',
    '\u{600}',
    '\u{61c}',
    '\u{180e}',
    '\u{200b}',
    '\u{200c}',
    '\u{200d}',
    '\u{200e}',
    '\u{200f}',
    '\u{202a}',
    '\u{202e}',
    '\u{2060}',
    '\u{2061}',
    '\u{2062}',
    '\u{2063}',
    '\u{2064}',
    '\u{2066}',
    '\u{206a}',
    '\u{206f}',
    '\u{feff}',
    '\u{fff9}',
    '\u{e0001}',
    '\u{e0020}',
    '\u{e0041}',
    '\u{e007f}',
    '\u{fe0f}',
    '\u{34f}',
];
const SPACES: &[char] = &[
    '\u{a0}', '\u{1680}', '\u{2000}', '\u{2003}', '\u{2007}', '\u{2009}', '\u{200a}', '\u{202f}',
    '\u{205f}', '\u{3000}',
];

/// A compatibility form of an ASCII character (NFKC gives it back).
fn compatible(c: char, pick: u32) -> char {
    let fullwidth = char::from_u32(c as u32 + 0xFEE0);
    let styled = match c {
        // Bold, double-struck, sans-serif, sans bold, monospace digits.
        '0'..='9' => char::from_u32(
            [0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6][pick as usize % 5]
                + (c as u32 - '0' as u32),
        ),
        // Bold, italic, sans-serif, monospace capitals.
        'A'..='Z' => char::from_u32(
            [0x1D400, 0x1D434, 0x1D5A0, 0x1D670][pick as usize % 4] + (c as u32 - 'A' as u32),
        ),
        _ => None,
    };
    match (pick % 2, styled, fullwidth) {
        (0, Some(s), _) => s,
        (_, _, Some(f)) if ('!'..='~').contains(&c) => f,
        _ => c,
    }
}

fn disguise(template: &str, sep: &str, space: Option<char>, picks: &[u32]) -> String {
    let sep = match (sep, space) {
        (" ", Some(z)) => z.to_string(),
        _ => sep.to_owned(),
    };
    let plain = template.replace('|', &sep);
    let n = plain.chars().count();
    let mut out = String::new();
    for (i, c) in plain.chars().enumerate() {
        let p = picks[i % picks.len()].wrapping_add(i as u32);
        // A third of the characters in a compatibility form.
        out.push(if p.is_multiple_of(3) {
            compatible(c, p / 3)
        } else {
            c
        });
        // Format characters between characters, up to three at a time.
        if i + 1 < n {
            for k in 0..(p / 7) % 4 {
                let q = (p / 29).wrapping_add(k * 11) as usize;
                out.push(FORMAT[q % FORMAT.len()]);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
    ))]

    /// Format characters inserted anywhere inside a secret, its
    /// separators written as Unicode spaces, its characters in
    /// compatibility forms: still found, over exactly its bytes, in a
    /// string and in JSON (raw or escaped), and redacted over exactly
    /// those bytes with every other byte left alone.
    #[test]
    fn disguised_secrets_are_still_found(
        which in 0..SECRETS.len(),
        sep in 0usize..3,
        space in prop::option::of(prop::sample::select(SPACES)),
        picks in prop::collection::vec(any::<u32>(), 1..24),
        escape in any::<bool>(),
    ) {
        let (template, det, seps) = SECRETS[which];
        let secret = disguise(template, seps[sep % seps.len()], space, &picks);
        let text = format!("ref: {secret} end");
        let whole = (det.to_string(), 5, 5 + secret.len());
        prop_assert!(found(&text).contains(&whole), "{:?}: {:?}", secret, found(&text));

        let s = scanner();
        let json = if escape {
            let mut lit = String::from("{\"v\":\"");
            for u in text.encode_utf16() {
                lit.push_str(&format!("\\u{u:04x}"));
            }
            lit.push_str("\"}");
            lit
        } else {
            serde_json::json!({ "v": text }).to_string()
        };
        let got = s.scan_json(json.as_bytes()).unwrap_or_default();
        prop_assert!(
            got.iter().any(|(p, h)| p == ".v"
                && s.detectors()[h.detector].name == det
                && (h.start, h.end) == (5, 5 + secret.len())),
            "{}: {:?}", json, got
        );

        static REDACT: std::sync::OnceLock<DlpFilter> = std::sync::OnceLock::new();
        let f = REDACT.get_or_init(|| filter(DlpAction::Redact, false));
        let raw = response(&format!("ᴀ {text} \u{200b}"));
        let (d, _) = judge(f, &raw);
        let Decision::Mutated(out) = d else {
            return Err(TestCaseError::fail(format!("{secret:?}: {d:?}")));
        };
        prop_assert_eq!(String::from_utf8_lossy(&out), response("ᴀ ref: [X] end \u{200b}"));
    }
}

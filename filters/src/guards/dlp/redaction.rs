//! Redaction by the DLP guard: numbers, disguises, metadata, exact splices,
//! duplicates made by redacted keys, clean and binary content.

use super::*;
use crate::engines::identity::Principal;
use warden_config::guards::DlpRule;

fn filter(action: DlpAction) -> DlpFilter {
    let dlp = Dlp {
        rules: vec![DlpRule {
            name: "r".into(),
            detectors: vec!["*".into()],
            request: true,
            response: true,
            min_risk: None,
            action,
            mask: "[X]".into(),
            hash: false,
        }],
        custom: Vec::new(),
        hash_key: None,
    };
    DlpFilter::new(dlp, Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn judge(f: &DlpFilter, raw: &str) -> Decision {
    let env = crate::protocol::jsonrpc::single(raw);
    let p = Principal::anonymous();
    let ctx = Exchange::new(&p, "s");
    let msg = Message::from_server(&env, raw.as_bytes(), Some("tools/call"), Some("t"));
    f.on_response(&msg, &ctx, &mut Notes::default())
}

#[test]
fn numbers_are_read_as_the_text_they_are() {
    // A card number as a JSON number: every reader sees the card.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"card":4111111111111111,"c2":-4111111111111111e0,"n":[1,2.5,4111111111111111]},"content":[]}}"#;
    let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), raw) else {
        panic!("a card in a number is redacted")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("still JSON");
    let sc = &v["result"]["structuredContent"];
    assert_eq!(sc["card"], "[X]");
    assert_eq!(sc["n"], serde_json::json!([1, 2.5, "[X]"]));
    assert!(
        !String::from_utf8_lossy(&out).contains("4111111111111111"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(matches!(
        judge(&filter(DlpAction::Block), raw),
        Decision::Reject(_)
    ));
    // Whitespace before the number (`json.dumps` writes `": "`).
    let spaced = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"card": 4111111111111111, "t":	4111111111111111},"content":[]}}"#;
    assert!(matches!(
        judge(&filter(DlpAction::Block), spaced),
        Decision::Reject(_)
    ));
    // A reply's id is the client's own: never rewritten.
    let id = r#"{"jsonrpc":"2.0","id":123456789,"result":{"content":[]}}"#;
    assert!(matches!(
        judge(&filter(DlpAction::Block), id),
        Decision::Pass
    ));
    let id = r#"{"jsonrpc":"2.0","id":"123-45-6789","result":{"content":[]}}"#;
    assert!(matches!(
        judge(&filter(DlpAction::Block), id),
        Decision::Pass
    ));
    // A reply matched to no request the client sent: its id is the
    // server's text, and is judged.
    for id in [
        r#"{"jsonrpc":"2.0","id":"AKIAIOSFODNN7EXAMPLE","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":4111111111111111,"result":{}}"#,
    ] {
        let env = crate::protocol::jsonrpc::single(id);
        let msg = Message::from_server(&env, id.as_bytes(), None, None);
        let p = Principal::anonymous();
        let d = filter(DlpAction::Block).on_response(
            &msg,
            &Exchange::new(&p, "s"),
            &mut Notes::default(),
        );
        assert!(matches!(d, Decision::Reject(_)), "{id}");
    }
    // A number is read as readers print it: JavaScript and Python print
    // `4.1111111111111115e15` as `4111111111111111.5`, `1.2345678e8` as
    // `123456780` (an SSN), `4111111111111111168` as `4111111111111111000`.
    for lit in [
        "4.1111111111111115e15",
        "41111111111111115e-1",
        "0.41111111111111115e16",
        "1.2345678e8",
        "12345678E1",
        "1.23456789e+8",
    ] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"structuredContent":{{"v":{lit}}},"content":[]}}}}"#
        );
        assert!(
            matches!(judge(&filter(DlpAction::Block), &raw), Decision::Reject(_)),
            "{lit}"
        );
    }
    // Every reading counts: an SSN no rule covers in one reading never
    // hides the card a rule blocks in another, and the digits before an
    // exponent are read as written (`…e-400` parses to 0).
    let cards = with_rules(vec![rule("cards", &["card_*"], DlpAction::Block, None)]);
    for lit in ["123456789.4111111111111111", "4111111111111111e-400"] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"structuredContent":{{"v":{lit}}},"content":[]}}}}"#
        );
        assert!(matches!(judge(&cards, &raw), Decision::Reject(_)), "{lit}");
    }
    // Ordinary numbers are not findings.
    let plain = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"n":42,"x":-1.5e3,"t":1700000000},"content":[]}}"#;
    assert!(matches!(
        judge(&filter(DlpAction::Block), plain),
        Decision::Pass
    ));
}

#[test]
fn disguises_a_reader_passes_over_are_seen_through() {
    for text in [
        r"AKIA\u0000IOSFODNN7EXAMPLE",
        r"AKIA\u001b[0mIOSFODNN7EXAMPLE",
        r"AKIA\u0301IOSFODNN7EXAMPLE",
        "AKIA\u{7f}IOSFODNN7EXAMPLE",
        "A\u{7f}KIAIOSFODNN7EXAMPLE",
        "alice@example\u{3002}com",
    ] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
        );
        assert!(
            matches!(judge(&filter(DlpAction::Block), &raw), Decision::Reject(_)),
            "{text}"
        );
    }
}

#[test]
fn metadata_is_judged_by_the_request_rules() {
    let key = "AKIAIOSFODNN7EXAMPLE";
    let ua = format!("agent/1.0 ({key})");
    let items = [key, &ua, "hello there", "k=AKIAIOSFODNN7EXAMPLE"];
    let v = filter(DlpAction::Block).judge_metadata(&items, Risk::Low);
    assert_eq!(v.blocked, ["r"]);
    let places: Vec<usize> = v.findings.iter().map(|(i, _)| *i).collect();
    assert_eq!(places, [0, 1, 3]);
    let v = filter(DlpAction::Redact).judge_metadata(&items, Risk::Low);
    assert!(v.blocked.is_empty());
    let withheld: Vec<usize> = v.withheld.iter().map(|(i, _)| *i).collect();
    assert_eq!(withheld, [0, 1, 3]);
    let v = filter(DlpAction::Log).judge_metadata(&items, Risk::Low);
    assert!(v.blocked.is_empty() && v.withheld.is_empty());
    assert_eq!(v.findings.len(), 3);
    // A value's Latin-1 reading: the soft hyphen a reader does not see.
    let v =
        filter(DlpAction::Block).judge_metadata(&["x-note: AKIA\u{AD}IOSFODNN7EXAMPLE"], Risk::Low);
    assert_eq!(v.blocked, ["r"]);
}

#[test]
fn metadata_runs_at_the_servers_highest_risk() {
    let mut catalog = std::collections::HashMap::new();
    let mut c = ServerCatalog {
        default_risk: Risk::Low,
        ..Default::default()
    };
    let rated = |r| warden_config::access::ToolEntry {
        risk: Some(r),
        ..Default::default()
    };
    c.tools.insert("read".into(), rated(Risk::Low));
    c.tools.insert("wire".into(), rated(Risk::High));
    catalog.insert("bank".to_owned(), c);
    let f = DlpFilter::new(filter(DlpAction::Block).dlp.clone(), catalog)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.server_risk("bank"), Risk::High);
    assert_eq!(f.server_risk("other"), Risk::Medium);
}

#[test]
fn only_the_changed_literals_change() {
    let f = filter(DlpAction::Redact);
    // Odd spacing, key order, number forms and escapes elsewhere survive
    // byte for byte; the escaped card number is found and replaced.
    let raw = r#"{ "result" : {"z":1.50E+2, "content":[ {"type":"text","text":"card 4111 1111 1111 1111 ok"}, {"a":"café"} ],"b":"mail bob@example.com"}, "id":7,"jsonrpc":"2.0" }"#;
    let Decision::Mutated(out) = judge(&f, raw) else {
        panic!("not redacted")
    };
    let want = r#"{ "result" : {"z":1.50E+2, "content":[ {"type":"text","text":"card [X] ok"}, {"a":"café"} ],"b":"mail [X]"}, "id":7,"jsonrpc":"2.0" }"#;
    assert_eq!(String::from_utf8_lossy(&out), want);
}

#[test]
fn keys_redacted_into_duplicates_are_refused() {
    let f = filter(DlpAction::Redact);
    let raw =
        r#"{"jsonrpc":"2.0","id":1,"result":{"4111 1111 1111 1111":1,"5500 0000 0000 0004":2}}"#;
    match judge(&f, raw) {
        Decision::Reject(d) => assert_eq!(d.reason, "dlp_blocked:r"),
        other => panic!("{other:?}"),
    }
    // One redacted key is fine.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"4111 1111 1111 1111":1,"x":2}}"#;
    assert!(matches!(judge(&f, raw), Decision::Mutated(_)));
    // A key with a part stripped out would read as a name nobody judged.
    let strip = filter(DlpAction::Strip);
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"pa 4111 1111 1111 1111 th":1}}"#;
    assert!(matches!(judge(&strip, raw), Decision::Reject(_)));
    // A value is stripped as before.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a 4111 1111 1111 1111 b"}]}}"#;
    assert!(matches!(judge(&strip, raw), Decision::Mutated(_)));
}

#[test]
fn clean_and_binary_pass_untouched() {
    let f = filter(DlpAction::Block);
    let clean = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"build 4821 passed"}]}}"#;
    assert!(matches!(judge(&f, clean), Decision::Pass));
    // Base64 image data is not text, even where its letters spell a
    // card number …
    let image = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"data":"4111111111111111","type":"image","mimeType":"image/png"}]}}"#;
    assert!(matches!(judge(&f, image), Decision::Pass));
    // … but the same bytes labelled text are, and so is image data that
    // is not base64 (spaces), or image data outside a result's content.
    let text = image.replace("image", "text");
    assert!(matches!(judge(&f, &text), Decision::Reject(_)));
    let spaced = image.replace("4111111111111111", "4111 1111 1111 1111");
    assert!(matches!(judge(&f, &spaced), Decision::Reject(_)));
    let structured = image.replace("\"content\"", "\"structuredContent\"");
    assert!(matches!(judge(&f, &structured), Decision::Reject(_)));
}

fn rule(name: &str, detectors: &[&str], action: DlpAction, min_risk: Option<Risk>) -> DlpRule {
    DlpRule {
        name: name.into(),
        detectors: detectors.iter().map(|d| (*d).to_owned()).collect(),
        request: true,
        response: true,
        min_risk,
        action,
        mask: "[X]".into(),
        hash: false,
    }
}

fn with_rules(rules: Vec<DlpRule>) -> DlpFilter {
    let dlp = Dlp {
        rules,
        custom: Vec::new(),
        hash_key: None,
    };
    DlpFilter::new(dlp, Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Which rule applies is decided for every detector's match before any
/// overlap is resolved: a card inside an email, a password's value or a
/// connection string is still a card to a rule that blocks cards, and a
/// redacted card inside a logged secret is still redacted.
#[test]
fn a_rule_sees_its_findings_inside_others() {
    let f = with_rules(vec![
        rule("cards", &["card_visa"], DlpAction::Block, None),
        rule("secrets", &["category:secret"], DlpAction::Log, None),
        rule("pii", &["email"], DlpAction::Log, None),
    ]);
    for text in [
        "4532015112830366@x.io",
        "password=ZqX9wRt7/4532015112830366/pLm3",
        "postgres://u:4532015112830366@db.example.com/x",
    ] {
        let raw = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
        );
        assert!(matches!(judge(&f, &raw), Decision::Reject(_)), "{text}");
    }
    let f = with_rules(vec![
        rule("cards", &["card_visa"], DlpAction::Redact, None),
        rule("secrets", &["category:secret"], DlpAction::Log, None),
    ]);
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"password=ZqX9wRt7/4532015112830366/pLm3"}]}}"#;
    match judge(&f, raw) {
        Decision::Mutated(b) => {
            let out = String::from_utf8(b).expect("utf8");
            assert!(!out.contains("4532015112830366"), "{out}");
            assert!(out.contains("[X]"), "{out}");
        }
        _ => panic!("not redacted"),
    }
}

/// A message that names no tool (a notification, a server's request) is
/// judged at the server's risk, so rules with a `min_risk` reach it.
#[test]
fn messages_without_a_tool_meet_min_risk_rules() {
    let f = with_rules(vec![rule(
        "keys",
        &["*"],
        DlpAction::Block,
        Some(Risk::Medium),
    )]);
    let p = Principal::anonymous();
    for raw in [
        r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"AKIAIOSFODNN7EXAMPLE"}}"#,
        r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{"messages":[{"role":"user","content":{"type":"text","text":"AKIAIOSFODNN7EXAMPLE"}}],"maxTokens":5}}"#,
    ] {
        let env = crate::protocol::jsonrpc::single(raw);
        let msg = Message::from_server(&env, raw.as_bytes(), None, None);
        let d = f.on_response(&msg, &Exchange::new(&p, "s"), &mut Notes::default());
        assert!(matches!(d, Decision::Reject(_)), "{raw}");
    }
}

/// A private key is redacted whole: its body up to the END line, or the
/// base64 that follows a header with no END line.
#[test]
fn a_private_key_is_redacted_with_its_body() {
    let f = filter(DlpAction::Redact);
    for (text, gone) in [
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAendXyz\n+abc/def==\n-----END RSA PRIVATE KEY-----\nafter", "MIIEpA"),
        ("key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC", "hkiG9w0"),
        ("-----begin  rsa private key-----\nMIIEpAIBAAKCAQEA\n----end rsa private key----", "MIIEpA"),
        ("----BEGIN OPENSSH PRIVATE KEY----\nb3BlbnNzaC1rZXktdjE=\n", "b3Blbn"),
    ] {
        let raw = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":text}]}}).to_string();
        match judge(&f, &raw) {
            Decision::Mutated(b) => {
                let out = String::from_utf8(b).expect("utf8");
                assert!(!out.contains(gone), "{text:?} → {out}");
                assert!(!out.to_ascii_lowercase().contains("end rsa private key----"), "{out}");
            }
            _ => panic!("{text:?} not redacted"),
        }
    }
    let raw = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter"}]}}).to_string();
    let Decision::Mutated(b) = judge(&f, &raw) else {
        panic!("not redacted")
    };
    assert!(String::from_utf8(b).expect("utf8").contains("after"));
}

/// A secret under a secret-like key in structured content is the
/// assignment a reader sees there: found and redacted as in text.
#[test]
fn secrets_under_secret_keys_are_found_in_structured_content() {
    for raw in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"password":"Xk9#mP2vL8qRt5"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"db":{"aws_secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ3vT9kLmN"}}}}"#,
    ] {
        assert!(
            matches!(judge(&filter(DlpAction::Block), raw), Decision::Reject(_)),
            "{raw}"
        );
        match judge(&filter(DlpAction::Redact), raw) {
            Decision::Mutated(b) => {
                let out = String::from_utf8(b).expect("utf8");
                assert!(
                    !out.contains("Xk9#mP2vL8qRt5") && !out.contains("wJalrXUtnFEMI"),
                    "{out}"
                );
            }
            _ => panic!("{raw} not redacted"),
        }
    }
    // Ordinary members under ordinary keys stay clean.
    let raw = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"name":"Xk9#mP2vL8qRt5","passes":3,"token_count":"12"}}}"#;
    assert!(
        matches!(judge(&filter(DlpAction::Block), raw), Decision::Pass),
        "{raw}"
    );
}

/// Text under an encoding a reader undoes is read decoded: a secret in
/// base64, hex or percent-encoding, and binary content whose bytes are
/// text. A redaction covers the encoded run (or, for percent-encoding,
/// exactly the escapes); real binary content passes untouched.
#[test]
fn encoded_secrets_and_text_in_binary_content_are_read() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let f = filter(DlpAction::Block);
    let reply = |item: serde_json::Value| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [item]}}).to_string()
    };
    let text = |t: &str| reply(serde_json::json!({"type": "text", "text": t}));
    for t in [
        format!("key {}", b64("AKIAIOSFODNN7EXAMPLE")),
        format!("card={}", b64("4111 1111 1111 1111")),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("pay 4111111111111111 now"),
        format!("hex {}", hex::encode("AKIAIOSFODNN7EXAMPLE")),
        "%41KIA%49OSFODNN7EXAMPLE".to_owned(),
        "card=4111%201111%201111%201111".to_owned(),
        // Two levels: base64 of a percent-encoded key.
        b64("x=%41KIAIOSFODNN7EXAMPLE"),
    ] {
        assert!(matches!(judge(&f, &text(&t)), Decision::Reject(_)), "{t}");
    }
    // Binary members whose bytes are text (whatever the mime type says).
    let secret_text = b64("notes: AKIAIOSFODNN7EXAMPLE\n");
    for item in [
        serde_json::json!({"type": "image", "mimeType": "image/png", "data": secret_text}),
        serde_json::json!({"type": "resource", "resource":
            {"uri": "file:///k.txt", "mimeType": "text/plain", "blob": secret_text}}),
    ] {
        let raw = reply(item);
        assert!(matches!(judge(&f, &raw), Decision::Reject(_)), "{raw}");
    }
    // Redaction: the whole base64 run; exactly the percent escapes.
    let run = b64("AKIAIOSFODNN7EXAMPLE");
    let raw = text(&format!("a {run} b"));
    let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), &raw) else {
        panic!("redacted")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["result"]["content"][0]["text"], "a [X] b");
    let raw = text("see %41KIAIOSFODNN7EXAMPLE now");
    let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), &raw) else {
        panic!("redacted")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["result"]["content"][0]["text"], "see [X] now");
    // A real image, identifiers and base64 of harmless text pass.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    for raw in [
        reply(serde_json::json!({"type": "image", "mimeType": "image/png", "data": png})),
        text("id 123e4567-e89b-12d3-a456-426614174000 deploy_the_billing_service"),
        text(&b64("the build passed on every platform")),
        text("100% done, 50%off"),
    ] {
        assert!(matches!(judge(&f, &raw), Decision::Pass), "{raw}");
    }
}

/// A secret cut across the text items of a result, or across a list of
/// strings, is the secret to a model reading them in turn: found, and
/// redacted in every item it touches.
#[test]
fn secrets_split_across_list_items_are_found() {
    let f = filter(DlpAction::Block);
    let items = |parts: &[&str]| {
        let content: Vec<serde_json::Value> = parts
            .iter()
            .map(|p| serde_json::json!({"type": "text", "text": p}))
            .collect();
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": content}}).to_string()
    };
    for parts in [
        &["AKIAIOSF", "ODNN7EXAMPLE"][..],
        &["AK", "IAIOSFODNN7EXAMPLE"],
        &["card 4111 1111", " 1111 1111"],
        &["4", "1", "1", "1", "1111", "1111", "1111"],
    ] {
        let raw = items(parts);
        assert!(matches!(judge(&f, &raw), Decision::Reject(_)), "{raw}");
    }
    // Python's separators (`}, {`) and a list of strings in structured content.
    let spaced = items(&["AKIAIOSF", "ODNN7EXAMPLE"]).replace("},{", "}, {");
    assert!(
        matches!(judge(&f, &spaced), Decision::Reject(_)),
        "{spaced}"
    );
    let strings = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"parts":["AKIAIOSF","ODNN7EXAMPLE"]}}}"#;
    assert!(matches!(judge(&f, strings), Decision::Reject(_)));
    // Redacted in both items, and nothing else changes.
    let Decision::Mutated(out) = judge(
        &filter(DlpAction::Redact),
        &items(&["key AKIAIOSF", "ODNN7EXAMPLE end"]),
    ) else {
        panic!("redacted")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["result"]["content"][0]["text"], "key [X]");
    assert_eq!(v["result"]["content"][1]["text"], "[X] end");
    // Items that only sit side by side pass.
    for parts in [&["build 4111", "passed"][..], &["one", "two", "three"]] {
        assert!(
            matches!(judge(&f, &items(parts)), Decision::Pass),
            "{parts:?}"
        );
    }
}

/// Review: a percent escape that is no text no longer hides the escapes
/// after it, and a line-wrapped base64 block (JSON `\n` between its lines)
/// is read and redacted whole; the message stays JSON.
#[test]
fn percent_beside_bad_escapes_and_wrapped_base64_are_redacted() {
    use base64::Engine;
    let reply = |t: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": t}]}})
            .to_string()
    };
    let redacted = |raw: &str| {
        let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), raw) else {
            panic!("redacted: {raw}")
        };
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        redacted(&reply("%00 see %41KIAIOSFODNN7EXAMPLE now")),
        "%00 see [X] now"
    );
    let text = format!("{}AKIAIOSFODNN7EXAMPLE and more after it", "x".repeat(50));
    let enc = base64::engine::general_purpose::STANDARD.encode(text);
    let lines: Vec<&str> = enc
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    assert_eq!(
        redacted(&reply(&format!("a\n{}\nb", lines.join("\n")))),
        "a\n[X]\nb"
    ); // One base64 line after a `\n` escape: the raw message reads
       // `\nQUtJ…`, whose `n` is the escape's, not the run's.
    let one = base64::engine::general_purpose::STANDARD.encode("AKIAIOSFODNN7EXAMPLE");
    assert_eq!(redacted(&reply(&format!("key:\n{one}"))), "key:\n[X]");
    assert_eq!(redacted(&reply(&format!("key:\t{one}"))), "key:\t[X]");
}

/// Review: a word spelled out with two spaces, a comma and a space, or
/// one character a line (JSON `\n` escapes in the raw message) is read
/// whole, and redacted with its separators.
#[test]
fn words_spelled_out_with_wider_separators_are_redacted() {
    let reply = |t: &str| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": t}]}})
            .to_string()
    };
    let key = "AKIAIOSFODNN7EXAMPLE";
    let spell = |sep: &str| key.chars().map(String::from).collect::<Vec<_>>().join(sep);
    for sep in ["  ", ", ", " - ", "\n", "\r\n", "\t"] {
        let raw = reply(&format!("key {} ok", spell(sep)));
        let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), &raw) else {
            panic!("redacted: {raw}")
        };
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["result"]["content"][0]["text"], "key [X] ok", "{sep:?}");
    }
    let raw = reply(&format!("\n{}", spell(" ")));
    assert!(matches!(
        judge(&filter(DlpAction::Block), &raw),
        Decision::Reject(_)
    ));
}

/// Review: a list of bare strings that wakes nothing on its own (no
/// anchor in any item, no list of objects) is still read joined; a value
/// whose keyword sits in the item before it (`password=` | value) is
/// found in its own item; base64 wrapped over lines and glued after a
/// word is redacted whole.
#[test]
fn string_lists_context_items_and_shifted_wrapped_base64_are_redacted() {
    let redact = |raw: &str| -> serde_json::Value {
        let Decision::Mutated(out) = judge(&filter(DlpAction::Redact), raw) else {
            panic!("redacted: {raw}")
        };
        serde_json::from_slice(&out).expect("json")
    };
    let sc = |v: serde_json::Value| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "structuredContent": v}})
            .to_string()
    };
    let v = redact(&sc(serde_json::json!({"p": ["AK", "IAIOSFODNN7EXAMPLE"]})));
    assert_eq!(
        v["result"]["structuredContent"]["p"],
        serde_json::json!(["[X]", "[X]"])
    );
    let v = redact(&sc(serde_json::json!({"p": [7, "4111 1111", "1111 1111"]})));
    assert_eq!(
        v["result"]["structuredContent"]["p"],
        serde_json::json!([7, "[X]", "[X]"])
    );
    let content = serde_json::json!([
        {"type": "text", "text": "password="},
        {"type": "text", "text": "Sup3rS3cretPassw0rd!"}
    ]);
    let v = redact(
        &serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": content}}).to_string(),
    );
    assert_eq!(v["result"]["content"][0]["text"], "password=");
    assert_eq!(v["result"]["content"][1]["text"], "[X]");
    let block = crate::engines::dlp::encoded::wrapped_key_block();
    let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [
        {"type": "text", "text": format!("tok{block}\nend")}
    ]}})
    .to_string();
    let v = redact(&raw);
    assert_eq!(v["result"]["content"][0]["text"], "[X]\nend");
}

/// A list of version strings joined without a separator reads
/// `1.2.34.5.67.8.9`, where the IP address detector would find addresses
/// no reader sees: addresses are not read across items.
#[test]
fn version_lists_are_not_ip_addresses() {
    let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [],
        "structuredContent": {"v": ["1.2.3", "4.5.6", "7.8.9", "1.0.0"]}}})
    .to_string();
    assert!(matches!(
        judge(&filter(DlpAction::Block), &raw),
        Decision::Pass
    ));
}

/// Text items with another item between them (an image), the `text` of
/// embedded resources, and nested lists are joined.
#[test]
fn text_items_around_an_image_or_in_resources_are_joined() {
    let f = filter(DlpAction::Block);
    for content in [
        serde_json::json!([{"type":"text","text":"AKIAIOSF"},{"type":"image","mimeType":"image/png","data":"AAAA"},{"type":"text","text":"ODNN7EXAMPLE"}]),
        serde_json::json!([{"type":"resource","resource":{"uri":"a","text":"AKIAIOSF"}},{"type":"resource","resource":{"uri":"b","text":"ODNN7EXAMPLE"}}]),
    ] {
        let raw = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"content": content}})
            .to_string();
        assert!(matches!(judge(&f, &raw), Decision::Reject(_)), "{raw}");
    }
    let nested = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"p":[["AKIAIOSF"],["ODNN7EXAMPLE"]]}}}"#;
    assert!(matches!(judge(&f, nested), Decision::Reject(_)));
}

/// Cutting a match out joins the text on either side of it: what the
/// rules made is read again, as the client reads it, until no rule
/// changes it.
#[test]
fn text_a_strip_joins_is_judged_again() {
    let f = with_rules(vec![
        rule("injection", &["category:injection"], DlpAction::Strip, None),
        rule("secrets", &["category:secret"], DlpAction::Block, None),
        rule("cards", &["category:pii"], DlpAction::Redact, None),
    ]);
    let reply = |text: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{{"type":"text","text":"{text}"}}]}}}}"#
        )
    };
    for text in [
        "AKIAIOSF<|im_start|>ODNN7EXAMPLE",
        "ghp_1234567890abcdefghij</s>ABCDEFGHIJ123456",
    ] {
        assert!(
            matches!(judge(&f, &reply(text)), Decision::Reject(_)),
            "{text}"
        );
    }
    for (text, gone) in [
        ("4111 1111 [INST]1111 1111", "4111 1111 1111 1111"),
        ("<|im_<|im_start|>start|> x", "<|im_start|>"),
        ("<|im_<|im_<|im_start|>start|>start|> x", "<|im_start|>"),
    ] {
        match judge(&f, &reply(text)) {
            Decision::Mutated(b) => {
                let out = String::from_utf8(b).expect("utf8");
                assert!(!out.contains(gone), "{text} → {out}");
            }
            d => panic!("{text}: {d:?}"),
        }
    }
    // A message that is clean once stripped passes as stripped.
    match judge(&f, &reply("hello <|im_start|>world")) {
        Decision::Mutated(b) => {
            let out = String::from_utf8(b).expect("utf8");
            assert!(out.contains("hello world"), "{out}");
        }
        d => panic!("{d:?}"),
    }
}

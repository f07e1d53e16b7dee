//! Personal data glued to a word, and data split across the events of one call's stream.

use serde_json::{json, Value};
use warden_tests::hostile::{Hostile, Reply};
use warden_tests::{mock_bundle, post_text, rpc_messages, Gateway};

/// Personal data blocked on the way in, masked on the way out.
const GLUED_RULES: &str = "dlp:\n  rules:\n    - {name: pii-in, detectors: [us_ssn, \"card_*\", iban, uk_nino, passport_number, ipv4_address, phone_us], direction: request, action: block}\n    - {name: pii-out, detectors: [us_ssn, \"card_*\", iban, uk_nino, passport_number, ipv4_address, phone_us], direction: response, action: redact}\n";

fn call(id: u64, text: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":text}}})
        .to_string()
}

fn result(id: u64, text: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}}).to_string()
}

/// `(glued text, the data in it)`.
const GLUED: &[(&str, &str)] = &[
    ("id123-45-6789", "123-45-6789"),
    ("SSN123-45-6789", "123-45-6789"),
    ("x_123-45-6789", "123-45-6789"),
    ("ref123-45-6789x", "123-45-6789"),
    ("cc4111111111111111", "4111111111111111"),
    ("card4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("x_4111111111111111", "4111111111111111"),
    ("4111111111111111exp", "4111111111111111"),
    ("pan5500-0000-0000-0004_x", "5500-0000-0000-0004"),
    ("ibanDE89370400440532013000", "DE89370400440532013000"),
    ("nino_AB123456C_", "AB123456C"),
    ("user_passport: X1234567", "X1234567"),
    ("host10.0.0.5x", "10.0.0.5"),
    ("tel555-123-4567x", "555-123-4567"),
];

/// Item 6: data glued to a word character (before, after, both sides;
/// letters, digits beside a letter edge, `_`) is found in a request (the
/// call is refused and never reaches the server) and in a reply (the
/// client gets the mask, not the data).
#[tokio::test(flavor = "multi_thread")]
async fn personal_data_glued_to_a_word_is_found_both_ways() {
    let h = Hostile::start().await;
    let gw = Gateway::start(&mock_bundle(&[h.addr], GLUED_RULES), false).expect("gateway");
    let mut id = 0;
    for &(glued, data) in GLUED {
        // Request: refused before the server.
        id += 1;
        let before = h.received().len();
        let (_, _, text) =
            post_text(&gw, "/mock/mcp", &call(id, &format!("see {glued} ok")), &[]).await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], -31015, "{glued}: {text}");
        assert!(
            !h.received()[before..]
                .iter()
                .any(|r| r.body_text().contains(data)),
            "{glued} reached the server"
        );
        // Reply: masked, as JSON and as an SSE event.
        for sse in [false, true] {
            id += 1;
            let body = result(id, &format!("see {glued} ok"));
            h.script([if sse {
                Reply::sse(&[&format!("event: message\ndata: {body}\n\n")])
            } else {
                Reply::json(&body)
            }]);
            let (_, _, text) = post_text(&gw, "/mock/mcp", &call(id, "hello"), &[]).await;
            let msgs = rpc_messages(&text);
            let reply = msgs.iter().find(|m| m["id"] == id).cloned();
            let got = reply
                .as_ref()
                .and_then(|m| m["result"]["content"][0]["text"].as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                !text.contains(data) && got.contains("[REDACTED:"),
                "{glued} (sse {sse}) delivered: {text}"
            );
        }
    }
    // Digits glued to digits are another number; a longer run of a
    // token's class is another token: passed as sent.
    for other in ["1234123-45-6789", "41111111111111111", "AB123456Cx"] {
        id += 1;
        let body = result(id, other);
        h.script([Reply::json(&body)]);
        let (_, _, text) = post_text(&gw, "/mock/mcp", &call(id, "hello"), &[]).await;
        assert!(text.contains(other), "{other}: {text}");
    }
}

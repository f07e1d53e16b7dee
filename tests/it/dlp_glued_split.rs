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

fn sse_event(v: &Value) -> String {
    format!("event: message\ndata: {v}\n\n")
}

fn progress(text: &str) -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":1,"message":text}})
}

fn log(text: &str) -> Value {
    json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":text}})
}

fn final_result(id: u64, text: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}})
}

/// The text a client assembles from a stream: progress and log messages,
/// then the result.
fn assembled(msgs: &[Value]) -> String {
    msgs.iter()
        .map(|m| {
            m["params"]["message"]
                .as_str()
                .or(m["params"]["data"].as_str())
                .or(m["result"]["content"][0]["text"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Item 7: data split across the SSE events of one call's stream is one
/// text to DLP. A card split across two progress events: the part still
/// held is masked, so the client never assembles the number. An SSN split
/// between a log event and the result: a blocking rule replaces the
/// result with the denial.
#[tokio::test(flavor = "multi_thread")]
async fn data_split_across_stream_events_is_judged_as_one_text() {
    let rules = "dlp:\n  rules:\n    - {name: ssn-out, detectors: [us_ssn], direction: response, action: block}\n    - {name: cards-out, detectors: [\"card_*\"], direction: response, action: redact}\n";
    let h = Hostile::start().await;
    let gw = Gateway::start(&mock_bundle(&[h.addr], rules), false).expect("gateway");
    // The card across two progress events (and across three).
    let splits: &[&[&str]] = &[
        &["card 4111 1111", " 1111 1111"],
        &["card 4111 11", "11 1111 11", "11 done"],
        &["card 4111111111", "111111"],
    ];
    let mut id = 0;
    for parts in splits {
        id += 1;
        let mut events: Vec<String> = parts.iter().map(|p| sse_event(&progress(p))).collect();
        events.push(sse_event(&final_result(id, "ok")));
        let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
        h.script([Reply::sse(&chunks)]);
        let (_, _, text) = post_text(&gw, "/mock/mcp", &call(id, "go"), &[]).await;
        let msgs = rpc_messages(&text);
        let whole = assembled(&msgs);
        let digits: String = whole.chars().filter(char::is_ascii_digit).collect();
        assert!(
            !digits.contains("4111111111111111") && whole.contains("[REDACTED:card_visa]"),
            "{parts:?}: the client assembled {whole:?} from {text}"
        );
    }
    // The SSN across a log event and the result, and across two progress
    // events then the result: the result is refused.
    for (before, last) in [
        (vec![log("ssn 123-45-")], "6789"),
        (vec![progress("ssn 123"), progress("-45-67")], "89 ok"),
    ] {
        id += 1;
        let mut events: Vec<String> = before.iter().map(sse_event).collect();
        events.push(sse_event(&final_result(id, last)));
        let chunks: Vec<&str> = events.iter().map(String::as_str).collect();
        h.script([Reply::sse(&chunks)]);
        let (_, _, text) = post_text(&gw, "/mock/mcp", &call(id, "go"), &[]).await;
        let msgs = rpc_messages(&text);
        let reply = msgs
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(reply["error"]["code"], -31015, "{before:?} {last}: {text}");
    }
    // The same data in one event is caught as before; text that only
    // looks joined across events but holds nothing passes.
    id += 1;
    h.script([Reply::sse(&[
        &sse_event(&progress("step 1 of 3")),
        &sse_event(&progress("step 2 of 3")),
        &sse_event(&final_result(id, "done: 42 rows")),
    ])]);
    let (_, _, text) = post_text(&gw, "/mock/mcp", &call(id, "go"), &[]).await;
    assert!(
        text.contains("done: 42 rows") && text.contains("step 2 of 3"),
        "{text}"
    );
}

/// A bundle with information flow on over the hostile upstream `mock`:
/// untrusted (its own words and its `fetch`), `post` a public sink, a DLP
/// finding at `internal` (the default clearance), and an SSN rule on
/// replies with `action`.
fn flow_bundle(up: std::net::SocketAddr, action: &str) -> String {
    mock_bundle(
        &[up],
        &format!(
            "flows:\n  track: principal\n  dlp_level: internal\ncatalog:\n  mock:\n    flow: [untrusted]\n    tools:\n      fetch: {{flow: [untrusted]}}\n      post: {{flow: [sink], classification: public}}\ndlp:\n  rules:\n    - {{name: ssn-out, detectors: [us_ssn], direction: response, action: {action}}}\n"
        ),
    )
}

fn named_call(id: u64, tool: &str, text: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":text}}})
        .to_string()
}

/// `fetch` streams `events` then its result `last`; then the same caller
/// calls the public sink `post`. Returns what the client assembled from
/// the stream, the sink's reply, and whether the sink call reached the
/// upstream.
async fn stream_then_sink(
    h: &Hostile,
    gw: &Gateway,
    events: &[Value],
    last: &str,
) -> (String, Value, bool) {
    let mut sse: Vec<String> = events.iter().map(sse_event).collect();
    sse.push(sse_event(&final_result(1, last)));
    let chunks: Vec<&str> = sse.iter().map(String::as_str).collect();
    h.script([Reply::sse(&chunks)]);
    let (_, _, text) = post_text(gw, "/mock/mcp", &named_call(1, "fetch", "go"), &[]).await;
    let whole = assembled(&rpc_messages(&text));
    h.script([Reply::json(&result(2, "posted"))]);
    let before = h.received().len();
    let (_, _, text) = post_text(gw, "/mock/mcp", &named_call(2, "post", "hello"), &[]).await;
    let reached = h.received()[before..]
        .iter()
        .any(|r| r.body_text().contains("\"post\""));
    h.reset();
    let reply = rpc_messages(&text)
        .into_iter()
        .find(|m| m["id"] == 2)
        .unwrap_or(Value::Null);
    (whole, reply, reached)
}

/// Issue 88 item 7, the flow scenario: an SSN an untrusted server streams
/// split across two progress events (or a log event and the result, or
/// two progress events and the result) is a DLP finding, so the reply
/// raises the caller's flow to `dlp_level` and the same caller's next call
/// to a public sink is refused (`flow_blocked`) — whether the rule masks
/// the part still held or refuses the message holding it (the client
/// already holds the first part). A clean stream leaves the sink open.
#[tokio::test(flavor = "multi_thread")]
async fn an_ssn_split_across_stream_events_raises_the_flow_before_a_public_sink() {
    let h = Hostile::start().await;
    let splits: Vec<(Vec<Value>, &str)> = vec![
        (vec![progress("ssn 123-45"), progress("-6789")], "ok"),
        (vec![progress("ssn 123-45")], "-6789 ok"),
        (vec![log("ssn 123-45-")], "6789"),
        (vec![progress("ssn 123"), progress("-45-67")], "89 ok"),
        (vec![log("SSN: 123-"), progress("45-"), log("6789")], "done"),
    ];
    for action in ["redact", "block"] {
        // Without a finding the untrusted stream alone leaves the public
        // sink open: what closes it below is the finding.
        let gw = Gateway::start(&flow_bundle(h.addr, action), false).expect("gateway");
        let (whole, reply, reached) = stream_then_sink(
            &h,
            &gw,
            &[progress("step 1 of 2"), log("step 2")],
            "42 rows",
        )
        .await;
        assert!(
            whole.contains("42 rows")
                && reached
                && reply["result"]["content"][0]["text"] == "posted",
            "{action}: a clean stream: {whole:?} {reply}"
        );
        drop(gw);
        for (events, last) in &splits {
            let gw = Gateway::start(&flow_bundle(h.addr, action), false).expect("gateway");
            let (whole, reply, reached) = stream_then_sink(&h, &gw, events, last).await;
            let digits: String = whole.chars().filter(char::is_ascii_digit).collect();
            assert!(
                !digits.contains("123456789"),
                "{action} {events:?} {last}: the client assembled {whole:?}"
            );
            let said = reply["result"]["content"][0]["text"]
                .as_str()
                .or(reply["error"]["message"].as_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                !reached && said.contains("(flow_blocked)") && said.contains("untrusted content"),
                "{action} {events:?} {last}: the sink after the split SSN: reached {reached}, {reply}"
            );
        }
    }
}

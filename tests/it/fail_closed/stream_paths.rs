//! Every path a server message takes goes through every guard: a reply
//! that comes on the session's GET stream (live, replayed, or the legacy
//! transport's) instead of its request's own stream meets what the
//! request's stream would have met.

use std::time::Duration;

use serde_json::json;

use super::{setup_with, BUNDLE, POLICY};
use warden_tests::hostile::{Hostile, Piece, Reply};
use warden_tests::{mock_bundle, Gateway, Streaming};

fn event(v: serde_json::Value) -> String {
    format!("event: message\ndata: {v}\n\n")
}

/// The call `echo` (id 7) posted in the background, once the server has it.
async fn call_in_flight(
    h: &Hostile,
    url: &str,
) -> tokio::task::JoinHandle<anyhow::Result<(u16, warden_tests::Headers, bytes::Bytes)>> {
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}})
    .to_string();
    let post_url = url.to_owned();
    let posted = tokio::spawn(async move { warden_tests::post_json(&post_url, call, &[]).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.received().iter().all(|r| r.method != "POST") {
        assert!(std::time::Instant::now() < deadline, "the call never left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    posted
}

/// Writes `yaml` as the gateway's bundle and waits until it is applied.
async fn apply(gw: &Gateway, yaml: &str) {
    let reloads = |st: serde_json::Value| st["bundle"]["reloads"].as_u64().unwrap_or(0);
    let before = reloads(gw.status().await);
    std::fs::write(gw.dir.path().join("warden.yaml"), yaml).expect("edit");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reloads(gw.status().await) <= before {
        assert!(std::time::Instant::now() < deadline, "no reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Another request (a `ping`), which lets the server's GET stream go on to
/// its `control` event.
async fn nudge(url: &str, stream: &mut Streaming) {
    let ping = json!({"jsonrpc":"2.0","id":8,"method":"ping"}).to_string();
    let (s, _, _) = warden_tests::post_json(url, ping, &[]).await.expect("ping");
    assert_eq!(s, 200);
    assert!(
        stream.until("control", Duration::from_secs(10)).await,
        "control: {}",
        stream.text
    );
}

/// A tool paused by the kill switch after its call was forwarded: the
/// call's own stream is cut (see `gateway.rs`), and its result does not
/// reach the client on the GET stream either, with the call's id or in a
/// form of it clients take for it (`"7"`: the TypeScript and Python SDKs
/// correlate it with 7; the gateway matches ids exactly, so it is a reply
/// to no request it knows). The client gets the pause for its request's
/// id, or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_tools_result_reaches_the_client_on_no_stream() {
    paused_result_on_the_get_stream(json!(7), true).await;
    paused_result_on_the_get_stream(json!("7"), false).await;
}

async fn paused_result_on_the_get_stream(id: serde_json::Value, answered: bool) {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let result = json!({"jsonrpc":"2.0","id":id,"result":{"content":[
        {"type":"text","text":"RESULT-AFTER-PAUSE"}]}});
    h.script([
        // The call's own stream: opened, then quiet (the server answers
        // elsewhere).
        Reply::sse(&[": open\n\n"]).with_more(vec![Piece::Wait(Duration::from_secs(20))]),
        // The GET stream: the call's result, once the switch is on.
        Reply::sse(&[": open\n\n"]).with_more(vec![
            Piece::AfterRequests(3),
            Piece::Bytes(event(result).into_bytes()),
            Piece::Bytes(
                event(json!({"jsonrpc":"2.0","method":"notifications/message",
                    "params":{"level":"info","data":"control"}}))
                .into_bytes(),
            ),
        ]),
        Reply::json(&json!({"jsonrpc":"2.0","id":8,"result":{}}).to_string()),
    ]);
    let url = gw.url("/mock/mcp");
    let posted = call_in_flight(&h, &url).await;
    let (s, mut stream) = Streaming::get(&url, &[("accept", "text/event-stream")])
        .await
        .expect("get");
    assert_eq!(s, 200);
    // The switch, while the call is under way.
    apply(
        &gw,
        &mock_bundle(
            &[h.addr],
            &format!("{BUNDLE}kill_switch:\n  tools: [echo]\n"),
        ),
    )
    .await;
    nudge(&url, &mut stream).await;
    let text = stream.text.clone();
    assert!(
        !text.contains("RESULT-AFTER-PAUSE"),
        "{id}: a paused tool's result reached the client on the GET stream: {text}"
    );
    if answered {
        assert!(
            text.contains("-31011") && text.contains("kill_switch"),
            "{id}: the call got no answer: {text}"
        );
    }
    posted.abort();
}

/// A stream outlives the bundle it began under (a GET stream, a
/// `subscriptions/listen` stream may run for hours): what the server sends
/// on it after a bundle is applied meets that bundle's rules. A DLP rule
/// added while the stream is open withholds a secret sent after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_is_judged_by_the_bundle_in_force() {
    let (h, gw) = setup_with("", POLICY).await;
    h.script([
        Reply::sse(&[": open\n\n"]).with_more(vec![
            Piece::AfterRequests(2),
            Piece::Bytes(
                event(json!({"jsonrpc":"2.0","method":"notifications/message",
                    "params":{"level":"info","data":"key AKIAIOSFODNN7EXAMPLE"}}))
                .into_bytes(),
            ),
            Piece::Bytes(
                event(json!({"jsonrpc":"2.0","method":"notifications/message",
                    "params":{"level":"info","data":"control"}}))
                .into_bytes(),
            ),
        ]),
        Reply::json(&json!({"jsonrpc":"2.0","id":8,"result":{}}).to_string()),
    ]);
    let url = gw.url("/mock/mcp");
    let (s, mut stream) = Streaming::get(&url, &[("accept", "text/event-stream")])
        .await
        .expect("get");
    assert_eq!(s, 200);
    apply(&gw, &mock_bundle(&[h.addr], BUNDLE)).await;
    nudge(&url, &mut stream).await;
    assert!(
        !stream.text.contains("AKIAIOSFODNN7EXAMPLE"),
        "a secret passed under the bundle the stream began with: {}",
        stream.text
    );
}

/// `unix` seconds as RFC 3339 UTC, as the policy's `input.context.time`
/// says it (`2026-11-26T07:10:48Z`).
fn rfc3339(unix: u64) -> String {
    let (days, rem) = ((unix / 86_400) as i64, unix % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The clock a server message is judged by is the one when it arrives,
/// not when its stream began: a policy that refuses sampling from a time
/// on refuses a request sent on a stream opened before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_streams_messages_are_judged_when_they_arrive() {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let cutoff = rfc3339(unix + 3);
    let policy = format!(
        "package warden.authz\nimport rego.v1\n\
         decision := {{\"allow\": false, \"reason\": \"closed\"}} if {{\n\
         \tinput.request.method == \"sampling/createMessage\"\n\
         \tinput.context.time >= \"{cutoff}\"\n\
         }} else := {{\"allow\": true, \"reason\": \"ok\"}}\n"
    );
    let (h, gw) = setup_with("", &policy).await;
    let sampling = json!({"jsonrpc":"2.0","id":"s-1","method":"sampling/createMessage",
        "params":{"messages":[{"role":"user","content":{"type":"text","text":"LATE-SAMPLING"}}],
        "maxTokens":10}});
    h.script([Reply::sse(&[": open\n\n"]).with_more(vec![
        Piece::Wait(Duration::from_secs(5)),
        Piece::Bytes(event(sampling).into_bytes()),
        Piece::Bytes(
            event(json!({"jsonrpc":"2.0","method":"notifications/message",
                "params":{"level":"info","data":"control"}}))
            .into_bytes(),
        ),
    ])]);
    let (s, mut stream) = Streaming::get(&gw.url("/mock/mcp"), &[("accept", "text/event-stream")])
        .await
        .expect("get");
    assert_eq!(s, 200);
    assert!(
        stream.until("control", Duration::from_secs(15)).await,
        "control: {}",
        stream.text
    );
    assert!(
        !stream.text.contains("LATE-SAMPLING"),
        "a request sent after the cutoff was judged at the stream's start: {}",
        stream.text
    );
}

/// A reply whose id a client reads as its request's (`"7"`, `7.0`,
/// `"0x7"`, `""` for 0 …: the TypeScript SDK correlates by `Number(id)`,
/// the Python SDK by `int(id)`), sent on the GET stream while the call's
/// own stream stays quiet: the gateway matches ids exactly, so it would
/// judge the reply as answering nothing while the client takes it as the
/// call's result (not audited as it, not judged as it). Never passed on.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_in_a_disguised_id_reaches_the_client_on_no_stream() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let forms = [
        json!("7"),
        json!(" 7"),
        json!(7.0),
        json!("0x7"),
        json!("7e0"),
        json!(""),
    ];
    let mut events: Vec<Piece> = vec![Piece::AfterRequests(2)];
    for (i, id) in forms.iter().enumerate() {
        events.push(Piece::Bytes(
            event(json!({"jsonrpc":"2.0","id":id,"result":{"content":[
                {"type":"text","text":format!("DISGUISED-{i}")}]}}))
            .into_bytes(),
        ));
    }
    events.push(Piece::Bytes(
        event(json!({"jsonrpc":"2.0","method":"notifications/message",
            "params":{"level":"info","data":"control"}}))
        .into_bytes(),
    ));
    h.script([
        Reply::sse(&[": open\n\n"]).with_more(vec![Piece::Wait(Duration::from_secs(20))]),
        Reply::sse(&[": open\n\n"]).with_more(events),
    ]);
    let url = gw.url("/mock/mcp");
    let posted = call_in_flight(&h, &url).await;
    let (s, mut stream) = Streaming::get(&url, &[("accept", "text/event-stream")])
        .await
        .expect("get");
    assert_eq!(s, 200);
    assert!(
        stream.until("control", Duration::from_secs(10)).await,
        "control: {}",
        stream.text
    );
    assert!(
        !stream.text.contains("DISGUISED-"),
        "a reply in a disguised id passed: {}",
        stream.text
    );
    posted.abort();
}

/// A JSON body is the server's whole reply to a POST: a request of the
/// batch it leaves unanswered gets an error there (it would otherwise wait
/// for a reply on the GET stream, where nothing the gateway remembers
/// matches it), and a single request whose JSON reply answers it not gets
/// one error object.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_reply_answers_every_request_it_was_sent_for() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    h.script([Reply::json(
        &json!([{"jsonrpc":"2.0","id":8,"result":{}}]).to_string(),
    )]);
    let batch = json!([
        {"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"echo","arguments":{"text":"hi"}}},
        {"jsonrpc":"2.0","id":8,"method":"ping"}
    ]);
    let (s, _, text) = warden_tests::post_json(
        &gw.url("/mock/mcp"),
        batch.to_string(),
        &[("mcp-protocol-version", "2025-03-26")],
    )
    .await
    .expect("post");
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let items = v.as_array().expect("a batch reply");
    assert!(
        items
            .iter()
            .any(|m| m["id"] == 8 && m.get("result").is_some()),
        "{text}"
    );
    assert!(
        items
            .iter()
            .any(|m| m["id"] == 7 && m["error"]["code"] == -31003),
        "the call got no answer: {text}"
    );
    // One request, and a body that is only a notification.
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","method":"notifications/message",
            "params":{"level":"info","data":"x"}})
        .to_string(),
    )]);
    let call = json!({"jsonrpc":"2.0","id":9,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}});
    let (s, _, text) = warden_tests::post_json(&gw.url("/mock/mcp"), call.to_string(), &[])
        .await
        .expect("post");
    let text = String::from_utf8_lossy(&text).into_owned();
    assert_eq!(s, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(v.is_object(), "one request gets one reply: {text}");
    assert_eq!(v["id"], 9, "{text}");
    assert_eq!(v["error"]["code"], -31003, "{text}");
}

//! The fourth review's classes (issue "fail closed, round 3"): a concern
//! that claims a reply for itself and so skips another (the list filter
//! behind the input-request judge), member names that a peer's decoder
//! reads as another name because it drops or stops at some characters
//! (NUL, controls, default-ignorables), in both directions. Each test fails
//! while its hole is open.

use serde_json::{json, Value};
use warden_tests::hostile::Reply;

use super::{messages, post_with, setup_with, BUNDLE, POLICY};

/// The tool names a `tools/list` answer shows.
fn listed(text: &str, array: &str, key: &str) -> Vec<String> {
    let v = &messages(text)[0];
    v["result"][array]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t[key].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A list whose text holds a `\u` escape (Python's `json.dumps` writes
/// `\u2014` for a dash) or the word `inputRequests` is filtered all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_is_filtered_whatever_else_its_reply_holds() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    // The pin of `echo` stays as first seen: only the others vary.
    let tools = [
        // What Python's json.dumps writes for "Deletes — everything".
        r#"{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_everything","description":"Deletes \u2014 everything","inputSchema":{"type":"object"}}]}}"#,
        r#"{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_everything","description":"answers inputRequests","inputSchema":{"type":"object"}}]}}"#,
        r#"{"jsonrpc":"2.0","id":ID,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_\u0065verything","inputSchema":{"type":"object"}}]}}"#,
        r#"{"jsonrpc":"2.0","id":ID,"result":{"resultType":"complete","inputRequests":{},"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_everything","inputSchema":{"type":"object"}}]}}"#,
    ];
    for (i, reply) in tools.iter().enumerate() {
        let id = 10 + i;
        h.script([Reply::json(&reply.replace("ID", &id.to_string()))]);
        let (s, _, text) = post_with(
            &gw,
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}).to_string(),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{text}");
        let names = listed(&text, "tools", "name");
        assert!(
            !text.contains("delete_everything") && !text.contains("delete_\\u0065"),
            "variant {i}: a tool the principal may not call was listed: {text}"
        );
        assert!(names.iter().any(|n| n == "echo"), "variant {i}: {text}");
    }
}

/// Resources hidden by policy stay hidden whatever the reply's text holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_resource_list_is_filtered_whatever_else_its_reply_holds() {
    let policy = r#"package warden.authz
import rego.v1
decision := {"allow": false, "reason": "hidden"} if {
	input.request.method == "resources/read"
	startswith(input.request.resource_uri, "secret://")
} else := {"allow": true, "reason": "ok"}
"#;
    let (h, gw) = setup_with(BUNDLE, policy).await;
    let reply = r#"{"jsonrpc":"2.0","id":5,"result":{"resources":[{"uri":"file:///ok","name":"ok \u2014 fine"},{"uri":"secret://payroll","name":"payroll"}]}}"#;
    h.script([Reply::json(reply)]);
    let (s, _, text) = post_with(
        &gw,
        &json!({"jsonrpc":"2.0","id":5,"method":"resources/list"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(listed(&text, "resources", "uri"), ["file:///ok"], "{text}");
}

/// A list reply no concern can read (its array missing or of another type)
/// is refused, never relayed as it came.
#[tokio::test(flavor = "multi_thread")]
async fn a_list_reply_that_cannot_be_filtered_is_refused() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    for (i, result) in [
        json!({"tools":{"delete_everything":{"inputSchema":{}}}}),
        json!({"tools":"delete_everything"}),
        json!({"nextCursor":"x","tool":[{"name":"delete_everything"}]}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 20 + i;
        h.script([Reply::json(
            &json!({"jsonrpc":"2.0","id":id,"result":result}).to_string(),
        )]);
        let (_, _, text) = post_with(
            &gw,
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}).to_string(),
            &[],
        )
        .await;
        assert!(!text.contains("delete_everything"), "variant {i}: {text}");
        assert!(messages(&text)[0]["error"].is_object(), "variant {i}: {text}");
    }
}

/// Member names that differ from a name the gateway reads only by what some
/// decoder drops or stops at: refused before anything reaches the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_a_decoder_truncates_or_strips_never_reaches_the_server() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let bodies = [
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method\u0000":"tools/call","params":{"name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method\u0000x":"tools/call","params":{"name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","meth\u200bod":"tools/call","params":{"name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","\ufeffmethod":"tools/call","params":{"name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method\u0001":"tools/call","params":{"name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","method\u00ad":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name\u0000":"delete_everything","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","na\u2060me":"delete_everything","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"progressToken":1,"progressToken\u0000":{"x":1}}}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"method\u{200d}\":\"tools/call\"}",
    ];
    for (i, body) in bodies.iter().enumerate() {
        h.reset();
        h.script([Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)]);
        let (_, _, text) = post_with(&gw, body, &[]).await;
        assert!(
            h.received().is_empty(),
            "variant {i} reached the server: {body}"
        );
        let v: Vec<Value> = messages(&text);
        assert_eq!(v[0]["error"]["code"], -32600, "variant {i}: {text}");
    }
}

/// The same names in a server's message to a client: a second `result`, or
/// a server request with a second method, never reaches the client.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_a_decoder_truncates_or_strips_never_reaches_the_client() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}})
    .to_string();
    for (i, reply) in [
        r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]},"result\u0000":{"content":[{"type":"text","text":"FORGED"}]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"a","text\u200b":"FORGED"}]}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError\u0000":true,"structuredContent\ufeff":{"x":"FORGED"}}}"#,
    ]
    .iter()
    .enumerate()
    {
        h.script([Reply::json(reply)]);
        let (_, _, text) = post_with(&gw, &call, &[]).await;
        assert!(!text.contains("FORGED"), "variant {i}: {text}");
    }
    // A server request on the reply stream with a second method.
    let sse = "data: {\"jsonrpc\":\"2.0\",\"id\":\"s1\",\"method\":\"ping\",\"method\\u0000\":\"sampling/createMessage\",\"params\":{\"messages\":[],\"maxTokens\":1}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[]}}\n\n";
    h.script([Reply::sse(&[sse])]);
    let (_, _, text) = post_with(&gw, &call, &[]).await;
    assert!(!text.contains("sampling/createMessage"), "{text}");
}

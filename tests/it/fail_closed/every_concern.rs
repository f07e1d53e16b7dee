//! The fourth review's classes (issue "fail closed, round 3"): a concern
//! that claims a reply for itself and so skips another (the list filter
//! behind the input-request judge), member names that a peer's decoder
//! reads as another name because it drops or stops at some characters
//! (NUL, controls, default-ignorables), in both directions. Each test fails
//! while its hole is open.

use serde_json::{json, Value};
use warden_tests::hostile::{Hostile, Reply};
use warden_tests::{header, mock_bundle, request, Gateway, TWO_KEYS};

use super::{messages, post_with, setup_with, BUNDLE, POLICY};

/// Resources under `secret://` are hidden from every principal.
const HIDES_SECRET_RESOURCES: &str = r#"package warden.authz
import rego.v1
decision := {"allow": false, "reason": "hidden"} if {
	input.request.method == "resources/read"
	startswith(input.request.resource_uri, "secret://")
} else := {"allow": true, "reason": "ok"}
"#;

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
    let policy = HIDES_SECRET_RESOURCES;
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
        assert!(
            messages(&text)[0]["error"].is_object(),
            "variant {i}: {text}"
        );
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

// ---------------------------------------------------------------------------
// Handles: cursors and event ids bound to the principal and session they
// were given to, on every replica.
// ---------------------------------------------------------------------------

const DEV: (&str, &str) = ("x-api-key", "wk_demo_dev_7Qm2");
const OPS: (&str, &str) = ("x-api-key", "wk_demo_ops_Z8r5");

/// Two replicas with one fleet key in front of one hostile server.
async fn replicas(policy: &str) -> (Hostile, Gateway, Gateway) {
    let h = Hostile::start().await;
    let yaml = mock_bundle(
        &[h.addr],
        &format!("{TWO_KEYS}{BUNDLE}sessions: {{seal_key_file: seal.key}}\n"),
    );
    let files: [(&str, &[u8]); 2] = [
        ("policies/authz.rego", policy.as_bytes()),
        ("seal.key", b"fleet-session-secret-0123456789abcdef-xyz\n"),
    ];
    let a = Gateway::start_with(&yaml, false, &files, &[], None).expect("a");
    let b = Gateway::start_with(&yaml, false, &files, &[], None).expect("b");
    (h, a, b)
}

/// Opens a session for `who` through `gw`; the hostile server calls it `sid`.
async fn session(h: &Hostile, gw: &Gateway, who: (&str, &str), sid: &str) -> String {
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18",
            "capabilities":{},"serverInfo":{"name":"s","version":"1"}}})
        .to_string(),
    )
    .header("mcp-session-id", sid)]);
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"probe","version":"1"}}});
    let (s, hs, text) = post_with(gw, &init.to_string(), &[who]).await;
    assert_eq!(s, 200, "{text}");
    header(&hs, "mcp-session-id").expect("session").to_owned()
}

fn in_session<'a>(who: (&'a str, &'a str), sid: &'a str) -> [(&'a str, &'a str); 3] {
    [
        who,
        ("mcp-session-id", sid),
        ("mcp-protocol-version", "2025-06-18"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_pages_only_for_whom_it_was_given() {
    let (h, a, b) = replicas(POLICY).await;
    let dev = session(&h, &a, DEV, "up-dev").await;
    let ops = session(&h, &a, OPS, "up-ops").await;
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":2,"result":{"tools":[
            {"name":"echo","inputSchema":{"type":"object"}}],"nextCursor":"page-2-of-dev"}})
        .to_string(),
    )]);
    let list = |cursor: Option<&str>| {
        let mut m = json!({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}});
        if let Some(c) = cursor {
            m["params"]["cursor"] = json!(c);
        }
        m.to_string()
    };
    let (_, _, text) = post_with(&a, &list(None), &in_session(DEV, &dev)).await;
    let cursor = messages(&text)[0]["result"]["nextCursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no cursor: {text}"))
        .to_owned();
    assert!(
        !cursor.contains("page-2"),
        "the server's cursor reached the client: {text}"
    );
    // Another principal, on either replica, in his session or another's,
    // and the same principal for another list: unknown.
    for (gw, hs, what) in [
        (
            &b,
            in_session(OPS, &ops),
            "another principal on another replica",
        ),
        (&a, in_session(OPS, &ops), "another principal"),
        (
            &a,
            in_session(OPS, &dev),
            "another principal naming the session",
        ),
    ] {
        h.reset();
        let (_, _, text) = post_with(gw, &list(Some(&cursor)), &hs).await;
        assert!(
            h.received().is_empty(),
            "{what}: the cursor reached the server"
        );
        assert!(messages(&text)[0]["error"].is_object(), "{what}: {text}");
    }
    h.reset();
    let prompts =
        json!({"jsonrpc":"2.0","id":3,"method":"prompts/list","params":{"cursor":cursor}});
    let (_, _, text) = post_with(&a, &prompts.to_string(), &in_session(DEV, &dev)).await;
    assert!(
        h.received().is_empty(),
        "a tools cursor paged prompts: {text}"
    );
    // Its holder pages on the other replica; the server sees its own cursor.
    h.reset();
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":2,"result":{"tools":[]}}).to_string(),
    )]);
    let (s, _, text) = post_with(&b, &list(Some(&cursor)), &in_session(DEV, &dev)).await;
    assert_eq!(s, 200, "{text}");
    let got = h.received();
    let sent: Value = serde_json::from_slice(&got[0].body).expect("json");
    assert_eq!(sent["params"]["cursor"], "page-2-of-dev", "{text}");
}

/// A GET stream: status and body.
async fn get(gw: &Gateway, mut hs: Vec<(&str, &str)>) -> (u16, String) {
    hs.push(("accept", "text/event-stream"));
    let (s, _, body) = request(&gw.url("/mock/mcp"), "GET", &hs, Default::default(), false)
        .await
        .expect("get");
    (s, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_resumes_only_for_whom_it_was_given() {
    let (h, a, b) = replicas(POLICY).await;
    let dev = session(&h, &a, DEV, "up-dev").await;
    let ops = session(&h, &a, OPS, "up-ops").await;
    let note = json!({"jsonrpc":"2.0","method":"notifications/message",
        "params":{"level":"info","data":"private to dev"}});
    h.script([Reply::sse(&[&format!("id: ev-dev-7\ndata: {note}\n\n")])]);
    let (s, text) = get(&a, in_session(DEV, &dev).to_vec()).await;
    assert_eq!(s, 200, "{text}");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an event id")
        .to_owned();
    assert!(
        !token.contains("ev-dev"),
        "the server's event id reached the client: {text}"
    );
    // Anyone else's resumption names nothing the server knows.
    for (gw, mut hs, what) in [
        (
            &b,
            in_session(OPS, &ops).to_vec(),
            "another principal on another replica",
        ),
        (&a, in_session(OPS, &ops).to_vec(), "another principal"),
        (&a, vec![OPS], "another principal with no session"),
    ] {
        h.reset();
        h.script([Reply::sse(&[": nothing\n\n"])]);
        hs.push(("last-event-id", &token));
        let _ = get(gw, hs).await;
        for r in h.received() {
            assert!(
                r.header("last-event-id").is_empty(),
                "{what}: the server was asked to resume dev's stream"
            );
        }
    }
    // A token spelled by the client itself is no event id either.
    h.reset();
    h.script([Reply::sse(&[": nothing\n\n"])]);
    let mut hs = in_session(DEV, &dev).to_vec();
    hs.push(("last-event-id", "ev-dev-7"));
    let _ = get(&a, hs).await;
    assert!(h
        .received()
        .iter()
        .all(|r| r.header("last-event-id").is_empty()));
    // Its holder resumes on the other replica from the server's own id.
    h.reset();
    h.script([Reply::sse(&[": resumed\n\n"])]);
    let mut hs = in_session(DEV, &dev).to_vec();
    hs.push(("last-event-id", &token));
    let (s, _) = get(&b, hs).await;
    assert_eq!(s, 200);
    assert_eq!(h.received()[0].header("last-event-id"), ["ev-dev-7"]);
}

/// What a server says about a resource reaches only who may see it.
#[tokio::test(flavor = "multi_thread")]
async fn resource_updates_reach_only_who_may_read_the_resource() {
    let policy = HIDES_SECRET_RESOURCES;
    let (h, a, _b) = replicas(policy).await;
    let dev = session(&h, &a, DEV, "up-dev").await;
    let hidden = json!({"jsonrpc":"2.0","method":"notifications/resources/updated",
        "params":{"uri":"secret://payroll"}});
    let shown = json!({"jsonrpc":"2.0","method":"notifications/resources/updated",
        "params":{"uri":"file:///ok"}});
    h.script([Reply::sse(&[&format!(
        "data: {hidden}\n\ndata: {shown}\n\n"
    )])]);
    let mut hs = in_session(DEV, &dev).to_vec();
    hs.push(("accept", "text/event-stream"));
    let (s, _, body) = request(&a.url("/mock/mcp"), "GET", &hs, Default::default(), false)
        .await
        .expect("get");
    let text = String::from_utf8_lossy(&body);
    assert_eq!(s, 200, "{text}");
    assert!(!text.contains("payroll"), "{text}");
    assert!(text.contains("file:///ok"), "{text}");
}

/// A subscription stream (2026-07-28 `subscriptions/listen`) follows only
/// resources the principal may see, each judged as a subscription to it
/// would be; a hidden one is answered as unknown, a network URI by the SSRF
/// rules, a filter the gateway cannot read is refused. None reaches the
/// server. So does a 2025 `resources/subscribe` of a hidden resource.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_follows_only_resources_the_principal_may_see() {
    let (h, gw) = setup_with(BUNDLE, HIDES_SECRET_RESOURCES).await;
    let listen = |subs: Value| {
        json!({"jsonrpc":"2.0","id":3,"method":"subscriptions/listen",
            "params":{"notifications":{"resourcesListChanged":true,"resourceSubscriptions":subs}}})
        .to_string()
    };
    let hs = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "subscriptions/listen"),
    ];
    for (i, (subs, code)) in [
        (json!(["file:///ok", "secret://payroll"]), -32602),
        (
            json!(["file:///ok", "http://169.254.169.254/latest/"]),
            -31014,
        ),
        (json!(["gopher://127.0.0.1:6379/_x"]), -31014),
        (json!("secret://payroll"), -32602),
        (json!([{"uri": "secret://payroll"}]), -32602),
    ]
    .into_iter()
    .enumerate()
    {
        h.reset();
        h.script([Reply::json(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#)]);
        let (_, _, text) = post_with(&gw, &listen(subs.clone()), &hs).await;
        assert!(
            h.received().is_empty(),
            "variant {i} reached the server: {subs}"
        );
        assert_eq!(
            messages(&text)[0]["error"]["code"],
            code,
            "variant {i}: {text}"
        );
    }
    // Hidden reads alike, whichever way it is subscribed.
    h.reset();
    let sub = json!({"jsonrpc":"2.0","id":4,"method":"resources/subscribe","params":{"uri":"secret://payroll"}});
    let (_, _, text) = post_with(&gw, &sub.to_string(), &[]).await;
    assert!(h.received().is_empty(), "{text}");
    let err = &messages(&text)[0]["error"];
    assert_eq!(err["data"]["uri"], "secret://payroll", "{text}");
    // What the principal may see is followed.
    h.reset();
    h.script([Reply::json(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#)]);
    let (_, _, text) = post_with(&gw, &listen(json!(["file:///ok"])), &hs).await;
    assert_eq!(h.received().len(), 1, "{text}");
}

// ---------------------------------------------------------------------------
// URIs judged wherever MCP carries them; resource identifiers are no egress.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn network_uris_are_judged_wherever_mcp_carries_them() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    for (i, msg) in [
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"http://169.254.169.254/latest/meta-data/"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"HTTP://0x7f.1:6379/"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"gopher://2130706433:6379/_FLUSHALL"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"dict://localhost:11211/stats"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"//10.0.0.5/admin"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{
            "ref":{"type":"ref/resource","uri":"http://[::1]/x/{a}"},"argument":{"name":"a","value":"v"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{
            "ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"url","value":"fetch http://127.0.0.1:8080/admin"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},
            "_meta":{"com.example/callback":"http://169.254.169.254/"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{},
            "_meta":{"uri":"ws://127.0.0.1:9229/"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed","params":{"_meta":{"uri":"http://10.1.1.1/"}}}),
        // Schemes no list names, dialled all the same (a calendar
        // fetcher, a Redis fork, gRPC's resolvers, a database driver):
        // their host is judged by the SSRF rules.
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"webcal://169.254.169.254/latest/meta-data/"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"valkey://127.0.0.1"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"xds:///metadata.google.internal"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"acme-db://scott:tiger@10.0.0.5:1521/orcl"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"uri":"acme-grpc:///169.254.169.254:80"}}}),
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"fetch acme-cache://127.0.0.1"}}}),
    ]
    .into_iter()
    .enumerate()
    {
        h.reset();
        h.script([Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)]);
        let (_, _, text) = post_with(&gw, &msg.to_string(), &[]).await;
        assert!(h.received().is_empty(), "variant {i} reached the server: {msg}");
        if i == 1 {
            // An upper-case scheme and a hex host are no canonical resource
            // URI: the policy refuses it as ambiguous before egress reads it.
            let e = &messages(&text)[0]["error"];
            assert_eq!(e["data"]["reason"], "resource_uri_ambiguous", "{text}");
        } else if msg.get("id").is_some() {
            assert_eq!(messages(&text)[0]["error"]["code"], -31014, "variant {i}: {text}");
        }
    }
    // A client's answer listing roots: a network root is judged too.
    // Resource identifiers of other schemes, and public hosts, pass.
    for (i, msg) in [
        json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"test://example-resource"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///etc/hosts"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"https://example.org/doc"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p",
            "arguments":{"resourceUri":"test://example-resource"}}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",
            "arguments":{"text":"see test://report and urn://x"}}}),
        json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"test://static/resource/1"}}),
        json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"memo://insights/10.0"}}),
    ]
    .into_iter()
    .enumerate()
    {
        h.reset();
        h.script([Reply::json(r#"{"jsonrpc":"2.0","id":2,"result":{"contents":[],"messages":[],"content":[]}}"#)]);
        let (_, _, text) = post_with(&gw, &msg.to_string(), &[]).await;
        assert_eq!(h.received().len(), 1, "identifier {i} was refused: {text}");
    }
}

/// A hidden resource and one the server does not know answer alike: the
/// same status, code, message and data (but for the URI asked for).
#[tokio::test(flavor = "multi_thread")]
async fn hidden_and_unknown_resources_answer_alike() {
    let policy = HIDES_SECRET_RESOURCES;
    let (h, gw) = setup_with(BUNDLE, policy).await;
    for version in ["2025-06-18", "2026-07-28"] {
        let ask = |uri: &str| {
            json!({"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":uri}})
                .to_string()
        };
        let mut hs = vec![("mcp-protocol-version", version)];
        if version == "2026-07-28" {
            hs.push(("mcp-method", "resources/read"));
        }
        let mut answers = Vec::new();
        for (uri, server_says) in [
            ("secret://payroll", None),
            (
                "secret2://nothing",
                Some(json!({"code":-32602,"message":"Unknown resource: secret2://nothing"})),
            ),
            (
                "secret3://nothing",
                Some(
                    json!({"code":-32002,"message":"Resource not found","data":{"uri":"secret3://nothing","why":"no row"}}),
                ),
            ),
        ] {
            h.reset();
            if let Some(e) = server_says {
                // Servers of 2026-07-28 send invalid-params errors with 400.
                let status = if version == "2026-07-28" { 400 } else { 200 };
                h.script([Reply::typed(
                    status,
                    Some("application/json"),
                    &json!({"jsonrpc":"2.0","id":7,"error":e}).to_string(),
                )]);
            }
            let mut hs = hs.clone();
            if version == "2026-07-28" {
                hs.push(("mcp-name", uri));
            }
            let (s, _, text) = post_with(&gw, &ask(uri), &hs).await;
            let mut err = messages(&text)[0]["error"].clone();
            assert_eq!(err["data"]["uri"], uri, "{text}");
            err["data"]["uri"] = json!("-");
            answers.push((s, err));
        }
        assert!(
            answers.windows(2).all(|w| w[0] == w[1]),
            "{version}: hidden and unknown differ: {answers:?}"
        );
    }
}

/// A stdio server that ends its messages with CR alone is read; one that
/// stops answering has each waiting call answered with an error naming it
/// once the server's read timeout passes, never held for good.
#[tokio::test(flavor = "multi_thread")]
async fn a_stdio_server_that_stalls_or_frames_with_cr_never_holds_a_call() {
    let server = warden_tests::root().join("tests/peers/cr_stdio_server.py");
    // The venv scripts/setup.sh makes (an absolute path, as the bundle asks).
    let python = warden_tests::root().join("tests/peers/.venv/bin/python");
    let yaml = format!(
        "version: 1\nservice_groups:\n  - name: local\n    servers:\n      - name: cr\n        timeouts: {{read: 2s}}\n        stdio: {{command: \"{}\", args: [\"{}\"]}}\nroutes:\n  - {{prefix: /cr, server: cr}}\n",
        python.display(),
        server.display()
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},
        "clientInfo":{"name":"probe","version":"1"}}});
    let (s, hs, text) = warden_tests::post_text(&gw, "/cr/mcp", &init.to_string(), &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        messages(&text)[0]["result"]["serverInfo"]["name"],
        "cr",
        "a CR-framed answer was not read: {text}"
    );
    let sid = header(&hs, "mcp-session-id").expect("session").to_owned();
    let in_session = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let call = |name: &str, id: u64| {
        json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{}}})
            .to_string()
    };
    let (_, _, text) = warden_tests::post_text(&gw, "/cr/mcp", &call("echo", 1), &in_session).await;
    assert_eq!(
        messages(&text)[0]["result"]["content"][0]["text"],
        "cr answer",
        "{text}"
    );
    let started = std::time::Instant::now();
    let (s, _, text) = warden_tests::post_text(&gw, "/cr/mcp", &call("hang", 2), &in_session).await;
    assert_eq!(s, 200, "{text}");
    let v = &messages(&text)[0];
    assert_eq!(v["id"], 2, "{text}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`cr`")),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    // What the process printed on stderr reached the log redacted.
    let logged = |gw: &Gateway| {
        gw.log()
            .into_iter()
            .find(|l| l.contains("booting with key"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while logged(&gw).is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = logged(&gw).expect("the stderr line was logged");
    assert!(
        !line.contains("AKIAIOSFODNN7EXAMPLE") && line.contains("[REDACTED]"),
        "{line}"
    );
}

/// A server that no longer knows a session (it restarted, or a bundle swap
/// replaced it) is said to have ended it, with the 404 an MCP client
/// understands, whatever its own 404 body was.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_server_ended_is_said_to_have_ended() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let sid = session(&h, &gw, ("x-none", "-"), "up-1").await;
    let ping = json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string();
    for reply in [
        Reply::typed(404, Some("text/plain"), "Not Found"),
        Reply::typed(
            404,
            Some("application/json"),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}"#,
        ),
    ] {
        h.script([reply]);
        let (s, _, text) = post_with(
            &gw,
            &ping,
            &[
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        )
        .await;
        assert_eq!(s, 404, "{text}");
        let v = &messages(&text)[0];
        assert_eq!(v["id"], 5, "{text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Session not found") && m.contains("`mock`")),
            "{text}"
        );
    }
}

/// A request refused before its body was judged is audited as what it was:
/// its method, its tool and its principal beside the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_call_is_audited_with_what_it_was() {
    let (_h, a, _b) = replicas(POLICY).await;
    let call = json!({"jsonrpc":"2.0","id":9,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}})
    .to_string();
    let (s, _, text) = post_with(
        &a,
        &call,
        &[
            DEV,
            ("mcp-session-id", "never-issued"),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(s, 404, "{text}");
    let recs = a.audit_when(|r| r.iter().any(|x| x["outcome"] == "session_unknown"));
    let rec = recs
        .iter()
        .find(|x| x["outcome"] == "session_unknown")
        .expect("the refusal was audited");
    assert_eq!(rec["method"], "tools/call", "{rec}");
    assert_eq!(rec["tool"], "echo", "{rec}");
    assert_eq!(rec["principal"], "agent-dev", "{rec}");
}

/// Every table that grows with sessions or calls takes its bound from
/// `limits.memory` and shows it, with what it holds, in `/metrics`.
#[tokio::test(flavor = "multi_thread")]
async fn tables_take_their_bounds_from_one_budget() {
    let (h, gw) = setup_with(&format!("{BUNDLE}limits: {{memory: 16MiB}}\n"), POLICY).await;
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
    )]);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}})
    .to_string();
    let (s, _, _) = post_with(&gw, &call, &[]).await;
    assert_eq!(s, 200);
    let m = gw.metrics().await;
    let bytes: u64 = 16 << 20;
    for (table, share, entry) in [
        ("ledger", 260, 320),
        ("sessions", 100, 256),
        ("quotas", 100, 256),
        ("runaway", 100, 256),
        ("tasks", 80, 320),
        ("live", 20, 256),
        ("flows", 40, 3072),
    ] {
        let cap = (bytes / 1000 * share / entry).max(1000);
        assert!(
            m.contains(&format!("warden_table_capacity{{table=\"{table}\"}} {cap}")),
            "{table}: {m}"
        );
        assert!(
            m.contains(&format!("warden_table_entries{{table=\"{table}\"}}")),
            "{table}"
        );
    }
}

// ---------------------------------------------------------------------------
// One identity per person: the agent's approvers, the bundle's principals.
// ---------------------------------------------------------------------------

/// A person is compared one way everywhere, through a running agent and
/// gateway: `ÖLAF` is the caller `ölaf` and cannot approve his own held
/// call (a plain approver can); an approvers file that names one person
/// twice (`alice` and `ALICE`, `alice` and `acme/alice`, `bob` and a
/// zero-width `bo\u{200b}b`) is refused when the agent starts, naming both;
/// so is a bundle whose principals are one person twice.
#[tokio::test(flavor = "multi_thread")]
async fn one_person_is_one_identity_for_approvals() {
    use sha2::Digest;
    use warden_tests::{bin, run_with_timeout, Agent, Mock};
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let (source, state) = (dir.path().join("source"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    let key = warden_config::access::hash_api_key("wk_olaf_secret_1", &[3u8; 16]);
    let yaml = format!(
        "version: 1\npolicy: {{entrypoint: data.ops.decision}}\nidentity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    - {{id: ölaf, tenant: acme, roles: [developer], kind: user, hash: \"{key}\"}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{}\"]}}\nroutes:\n  - {{prefix: /mock, server: mock}}\n",
        mock.addr
    );
    std::fs::write(source.join("warden.yaml"), &yaml).expect("yaml");
    std::fs::write(
        source.join("policies/ops.rego"),
        "package ops\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\", \"require_approval\": {\"approvers\": 1, \"reason\": \"echo is watched\"}} if {\n\tinput.request.tool == \"echo\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
    )
    .expect("rego");
    let digest = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let write_approvers = |path: &std::path::Path, entries: &[(&str, &str)]| {
        let text: String = entries
            .iter()
            .map(|(n, t)| format!("\"{n}\": {}\n", digest(t)))
            .collect();
        std::fs::write(path, text).expect("approvers");
    };
    let (private, public) = warden_tests::keygen(dir.path(), "k");

    // Two spellings of one person in the approvers file (or one no peer
    // reads alike): the agent refuses to start.
    for (a, b) in [
        ("alice", "ALICE"),
        ("alice", "acme/alice"),
        ("bob", "bo\u{200b}b"),
        ("ölaf", "O\u{308}LAF"),
    ] {
        let file = dir.path().join("twice.yaml");
        write_approvers(&file, &[(a, "token-one-000001"), (b, "token-two-000002")]);
        let (ok, out, err) = run_with_timeout(
            std::process::Command::new(bin("warden-agent"))
                .arg("serve")
                .arg("--source")
                .arg(&source)
                .arg("--state")
                .arg(dir.path().join("state-twice"))
                .args(["--listen", "127.0.0.1:0"])
                .arg("--signing-key")
                .arg(&private)
                .arg("--approvers")
                .arg(&file)
                .env("WARDEN_AGENT_ADMIN_TOKEN", "admin-token-0123456789")
                .env("WARDEN_AGENT_FLEET_TOKEN", "fleet-token-0123456789"),
            std::time::Duration::from_secs(20),
        )
        .expect("agent ran");
        assert!(
            !ok,
            "an approvers file naming {a:?} and {b:?} was accepted: {out}"
        );
        assert!(
            err.contains("one person") || err.contains("invisible"),
            "{a} {b}: {err}"
        );
    }

    // The caller `ölaf`, the approver `ÖLAF` (another token), and alice.
    let approvers = dir.path().join("approvers.yaml");
    write_approvers(
        &approvers,
        &[
            ("ÖLAF", "approver-olaf-token-01"),
            ("alice", "approver-alice-token-02"),
        ],
    );
    let agent = Agent::start_with(
        &source,
        &state,
        Some(&private),
        &["--approvers".as_ref(), approvers.as_os_str()],
    )
    .expect("agent");
    let gw = Gateway::on_agent(&agent.url, &public, &dir.path().join("gw-state"), "gw-id")
        .expect("gateway");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while warden_tests::sync_get_status(gw.admin, "/readyz") != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never became ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hold me"}}})
    .to_string();
    let (_, _, body) = warden_tests::post_json(
        &gw.url("/mock/mcp"),
        call.clone().into_bytes(),
        &[("x-api-key", "wk_olaf_secret_1")],
    )
    .await
    .expect("call");
    // Held (told as a tool error, the bundle's default denial style).
    let held = String::from_utf8_lossy(&body).into_owned();
    let id: String = held
        .split("Approval id: ")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .unwrap_or_else(|| panic!("not held: {held}"));
    let decide = |token: &'static str| {
        let url = format!("{}/v1/approvals/{id}/approve", agent.url);
        async move {
            let auth = format!("Bearer {token}");
            request(
                &url,
                "POST",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                bytes::Bytes::from_static(b"{}"),
                false,
            )
            .await
            .expect("approve")
        }
    };
    // The audit names the person canonically beside the credential's name.
    let recs = gw.audit_when(|r| r.iter().any(|x| x["tool"] == "echo"));
    let rec = recs.iter().find(|x| x["tool"] == "echo").expect("audited");
    assert_eq!(rec["principal"], "ölaf", "{rec}");
    // Canonical: compatibility-normalised, marks removed, case folded.
    assert_eq!(rec["person"], "acme/olaf", "{rec}");
    let (s, _, b) = decide("approver-olaf-token-01").await;
    assert_eq!(
        s,
        403,
        "ÖLAF approved ölaf's call: {}",
        String::from_utf8_lossy(&b)
    );
    assert!(String::from_utf8_lossy(&b).contains("own calls"));
    let (s, _, b) = decide("approver-alice-token-02").await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));

    // A bundle whose principals are one person twice is refused.
    let twice = yaml.replace(
        "    - {id: ölaf,",
        &format!("    - {{id: ÖLAF, tenant: acme, roles: [developer], kind: user, hash: \"{key}\"}}\n    - {{id: ölaf,"),
    );
    assert_ne!(twice, yaml);
    std::fs::write(source.join("warden.yaml"), &twice).expect("yaml");
    let (ok, out, err) = run_with_timeout(
        std::process::Command::new(bin("warden"))
            .arg("validate")
            .arg(&source),
        std::time::Duration::from_secs(20),
    )
    .expect("validate ran");
    assert!(!ok, "{out}");
    assert!(format!("{out}{err}").contains("same person"), "{out}{err}");
}

/// A member of a virtual server that does not answer is named in the
/// error, not the virtual server in front of it, even when both have the
/// same read timeout (the virtual server's legs outlast their members').
#[tokio::test(flavor = "multi_thread")]
async fn a_members_timeout_names_the_member() {
    let mock = warden_tests::Mock::start(&[]).expect("mock");
    let yaml = format!(
        "version: 1\ntimeouts: {{read: 1s}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: slowpoke, upstreams: [\"{}\"]}}\n      - name: combo\n        virtual: {{members: [{{server: slowpoke, prefix: never}}]}}\nroutes:\n  - {{prefix: /combo, server: combo}}\n",
        mock.addr
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let url = gw.url("/combo/mcp");
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (s, h, b) = warden_tests::post_json(&url, init.to_string().into_bytes(), &[])
        .await
        .expect("initialize");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let sid = header(&h, "mcp-session-id").expect("session").to_owned();
    let hs = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"sleep","arguments":{"ms":4000}}});
    let (_, _, b) = warden_tests::post_json(&url, call.to_string().into_bytes(), &hs)
        .await
        .expect("call");
    let text = String::from_utf8_lossy(&b);
    let v = &messages(&text)[0];
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("`slowpoke`") && !msg.contains("`combo`"),
        "{text}"
    );
}

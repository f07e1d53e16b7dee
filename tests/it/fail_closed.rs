//! Fail-closed classes found by a hostile review after the adversarial
//! suite: names a folding peer reads inside MCP's structure (cache scope,
//! task handles, arguments policy or a schema reads), URL arguments that are
//! not strings, mirrored parameters of a tool whose declarations are
//! unknown, Unicode line boundaries in SSE data, error secrets in odd SSE
//! framings. A real gateway in front of the hostile scripted upstream, as in
//! `adversarial.rs`; each test fails while its hole is open.

/// The second review's classes: names as Go reads `İ`, hosts declared at
/// any schema depth, URL elicitations inside errors, prompt arguments,
/// schema maps keyed by property names, replayed and legacy streams.
#[path = "fail_closed/hidden_places.rs"]
mod hidden_places;

/// The third review's classes: ids naming two requests, handles on streams,
/// sessions the gateway does not know, the server's free text beside the
/// status, CGI-style header aliases, numbers and controls hiding data.
#[path = "fail_closed/reply_matching.rs"]
mod reply_matching;

/// The fourth review's classes: every concern judges a reply whatever else
/// it holds, names as decoders that drop or stop at characters read them,
/// handles bound to their owner, one identity per person, URIs wherever MCP
/// carries them.
#[path = "fail_closed/every_concern.rs"]
mod every_concern;

/// URLs a server asks the client to open, wherever it asks.
#[path = "fail_closed/url_elicitation.rs"]
mod url_elicitation;

/// URIs a server sends the client wherever they are, and URLs it asks
/// the client to open read by every client.
#[path = "fail_closed/server_uris.rs"]
mod server_uris;

/// Names a folding peer reads as another, in lists and in requests.
#[path = "fail_closed/name_spellings.rs"]
mod name_spellings;

/// Handles of unauthenticated clients without a session, bound to their
/// address.
#[path = "fail_closed/anonymous_handles.rs"]
mod anonymous_handles;

/// Every path a server message takes goes through every guard.
#[path = "fail_closed/stream_paths.rs"]
mod stream_paths;

/// What the official conformance suite saw differ through the gateway:
/// each fixed at its root, checked against a hostile server.
#[path = "transparent.rs"]
mod transparent;

use serde_json::{json, Value};
use warden_tests::hostile::{Hostile, Reply};
use warden_tests::{mock_bundle, post_text as post_at, rpc_messages as messages, Gateway, Headers};

const AKIA: &str = "AKIAIOSFODNN7EXAMPLE";

const BUNDLE: &str = "dlp:\n  rules:\n    - {name: no-secrets, detectors: [\"category:secret\"], action: block}\n    - {name: pii, detectors: [us_ssn], action: redact}\ncatalog:\n  mock:\n    tools:\n      echo: {risk: LOW}\n";

const POLICY: &str = r#"package warden.authz
import rego.v1
decision := {"allow": true, "reason": "ok"} if {
	input.request.method != "tools/call"
} else := {"allow": true, "reason": "ok"} if {
	input.request.tool == "echo"
} else := {"allow": false, "reason": "tool_not_allowed"}
"#;

/// ABAC on an argument, as the example bundle does: `region` must not be "us".
const POLICY_REGION: &str = r#"package warden.authz
import rego.v1
decision := {"allow": false, "reason": "region_mismatch"} if {
	input.request.arguments.region == "us"
} else := {"allow": false, "reason": "region_mismatch"} if {
	input.request.arguments.loc.region == "us"
} else := {"allow": true, "reason": "ok"}
"#;

async fn setup_with(bundle: &str, policy: &str) -> (Hostile, Gateway) {
    let h = Hostile::start().await;
    let gw = Gateway::start_with(
        &mock_bundle(&[h.addr], bundle),
        false,
        &[("policies/authz.rego", policy.as_bytes())],
        &[],
        None,
    )
    .expect("gateway");
    (h, gw)
}

async fn post_with(gw: &Gateway, body: &str, extra: &[(&str, &str)]) -> (u16, Headers, String) {
    post_at(gw, "/mock/mcp", body, extra).await
}

/// The hostile server answers a `tools/list` with one tool, `echo`, whose
/// input schema is `schema`; the gateway relays it (and pins the schema).
async fn learn_echo_schema(h: &Hostile, gw: &Gateway, schema: Value) {
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":100,"result":{"tools":[{
            "name":"echo", "inputSchema": schema
        }]}})
        .to_string(),
    )]);
    let (s, _, text) = post_with(
        gw,
        &json!({"jsonrpc":"2.0","id":100,"method":"tools/list"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("\"echo\""), "{text}");
}

fn posts_received(h: &Hostile) -> usize {
    h.received().iter().filter(|r| r.method == "POST").count()
}

fn call_with(id: u64, args: Value) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":args}})
        .to_string()
}

const MODERN: [(&str, &str); 3] = [
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "echo"),
];

// ---------------------------------------------------------------------------
// (1) SSE: a data line the gateway reads as one line, that httpx-sse < 0.4.2
// (the Python SDK's SSE reader, which does not pin the fix) splits at the
// Unicode line boundaries U+2028 / U+2029 / U+0085 (str.splitlines). Raw in a
// JSON string they are valid JSON, so the event passes byte for byte and such
// a client reads extra lines: an `id:` the gateway's `safe_id` never judged,
// an `event:` type, a dispatch mid-message. Secure: escape them (`\u2028`, the
// same JSON value) as the stdio path already does.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn sse_data_never_carries_unicode_line_boundaries() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let text_value = "ok\u{2028}id: \"not a safe id\" \u{e9}\u{2028}event: other\u{2028}\u{2028}x\u{85}y\u{2029}z";
    let reply =
        json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":text_value}]}});
    h.script([Reply::sse(&[&format!("event: message\ndata: {reply}\n\n")])]);
    let (s, _, text) = post_with(&gw, &call_with(1, json!({"text":"hi"})), &[]).await;
    assert_eq!(s, 200, "{text}");
    for sep in ['\u{2028}', '\u{2029}', '\u{85}'] {
        assert!(
            !text.contains(sep),
            "raw {sep:?} reached an SSE client that splits lines on it: {text:?}"
        );
    }
    // The value itself must still arrive intact for a spec-conforming client.
    let msgs = messages(&text);
    assert_eq!(msgs.len(), 1, "{text:?}");
    assert_eq!(
        msgs[0]["result"]["content"][0]["text"], text_value,
        "{text:?}"
    );
    // Same when DLP rewrote the event (the redacting path re-encodes).
    let reply = json!({"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":format!("ssn 123-45-6789\u{2028}id: x y")}]}});
    h.script([Reply::sse(&[&format!("data: {reply}\n\n")])]);
    let (_, _, text) = post_with(&gw, &call_with(2, json!({"text":"hi"})), &[]).await;
    assert!(!text.contains("6789"), "{text:?}");
    assert!(!text.contains('\u{2028}'), "redacted event: {text:?}");
}

// ---------------------------------------------------------------------------
// (2) Folding: result members the gateway reads that RESULT_NAMES misses.
// `cacheScope` is read (authz.rs filter_list) but `CacheScope` / `cacheſcope`
// are not refused: a folding peer reads the server's scope where the gateway
// would have forced "private".
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn near_names_of_cache_scope_are_refused() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    for (i, key) in ["CacheScope", "cacheſcope", "CACHESCOPE"]
        .iter()
        .enumerate()
    {
        let id = 10 + i as u64;
        let mut result = serde_json::Map::new();
        result.insert(
            "tools".into(),
            json!([{"name":"echo","inputSchema":{"type":"object"}}]),
        );
        result.insert((*key).into(), json!("public"));
        let reply = json!({"jsonrpc":"2.0","id":id,"result":result});
        h.script([Reply::json(&reply.to_string())]);
        let (_, _, text) = post_with(
            &gw,
            &json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}).to_string(),
            &[],
        )
        .await;
        let v = &messages(&text)[0];
        let leaked = v["result"].as_object().is_some_and(|r| {
            r.keys().any(|k| {
                k != "cacheScope" && k.to_lowercase().replace('\u{17f}', "s") == "cachescope"
            })
        });
        assert!(
            !leaked && (v["error"].is_object() || v["result"]["cacheScope"] == "private"),
            "{key}: a folding client reads a shared scope: {text}"
        );
    }
}

// ---------------------------------------------------------------------------
// (2b) Folding inside task handles: `result.task.TaskId` (2025-11-25 shape)
// and `_meta["io.modelcontextprotocol/related-task"].TaskId` are not refused,
// so the server's raw task id reaches a folding client unsealed (the Go SDK
// reads both through structs).
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn near_names_inside_task_handles_are_refused() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    // Control: the exact spelling is sealed.
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"raw-task-0","status":"working"}}})
            .to_string(),
    )]);
    let (_, _, text) = post_with(&gw, &call_with(1, json!({"text":"hi"})), &[]).await;
    assert!(!text.contains("raw-task-0"), "control: {text}");
    for (i, reply) in [
        json!({"jsonrpc":"2.0","id":2,"result":{"task":{"TaskId":"raw-task-1","status":"working"}}}),
        json!({"jsonrpc":"2.0","id":3,"result":{"task":{"taſkId":"raw-task-2","status":"working"}}}),
        json!({"jsonrpc":"2.0","id":4,"result":{"content":[],
            "_meta":{"io.modelcontextprotocol/related-task":{"TaskId":"raw-task-3"}}}}),
    ]
    .into_iter()
    .enumerate()
    {
        let id = 2 + i as u64;
        h.script([Reply::json(&reply.to_string())]);
        let (_, _, text) = post_with(&gw, &call_with(id, json!({"text":"hi"})), &[]).await;
        assert!(
            !text.contains("raw-task-"),
            "an unsealed server task id reached a folding client: {text}"
        );
    }
}

// ---------------------------------------------------------------------------
// (3) Egress: a declared URL argument that is not a string is never judged.
// `{"url": 2130706433}` is 127.0.0.1 to any server that formats it into a URL
// (`f"http://{url}/"`, `` `http://${url}/` ``, glibc inet_aton).
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn declared_url_arguments_that_are_not_strings_are_refused() {
    let bundle = BUNDLE.replace(
        "echo: {risk: LOW}",
        "echo: {risk: LOW, url_arguments: [url, host]}",
    );
    let (h, gw) = setup_with(&bundle, POLICY).await;
    for args in [
        json!({"url": 2130706433u64}),
        json!({"host": 2130706433u64}),
        json!({"url": [2130706433u64]}),
        json!({"host": 167772161u64}), // 10.0.0.1
    ] {
        h.reset();
        h.script([Reply::json(
            &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
        )]);
        let (_, _, text) = post_with(&gw, &call_with(1, args.clone()), &[]).await;
        assert_eq!(posts_received(&h), 0, "{args}: forwarded unjudged: {text}");
        assert!(
            text.contains("-31014") || text.contains("-32602"),
            "{args}: {text}"
        );
    }
}

// ---------------------------------------------------------------------------
// (5) Mirrored headers for a tool whose declarations this replica has not
// learned (no tools/list seen since start, or another replica saw it): the
// client's `Mcp-Param-Region: us` beside `region: "eu"` is treated as
// "undeclared", DLP-scanned and forwarded as sent. The server (or any
// header-routing hop) reads "us", policy judged "eu".
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn mirrored_params_of_an_unlearned_tool_never_disagree_upstream() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
    )]);
    let mut hs = MODERN.to_vec();
    hs.push(("mcp-param-region", "us"));
    let (s, _, text) = post_with(&gw, &call_with(1, json!({"region":"eu"})), &hs).await;
    let got = h.received();
    let fwd: Vec<&str> = got
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(|r| r.header("mcp-param-region"))
        .collect();
    assert!(
        s == 400 || !fwd.contains(&"us"),
        "upstream got Mcp-Param-Region: us for a body saying eu ({s} {text}): {fwd:?}"
    );
}

// ---------------------------------------------------------------------------
// (2c) Argument near-names are only refused when this replica knows the
// tool's schema (pinned from a tools/list it saw). Without one, `Region`
// passes a policy that denies `region == "us"`; a folding server (Go
// encoding/json) reads it as `region`.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn argument_near_names_are_refused_without_a_learned_schema() {
    let (h, gw) = setup_with(BUNDLE, POLICY_REGION).await;
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
    )]);
    let (_, _, text) = post_with(&gw, &call_with(1, json!({"Region":"us"})), &[]).await;
    assert_eq!(
        posts_received(&h),
        0,
        "`Region: us` reached the server past a region policy: {text}"
    );
}

// ---------------------------------------------------------------------------
// (2d) Nested near-names of a mirrored (x-mcp-header) property: the body's
// `loc.Region` is what a folding server reads as `loc.region`; the gateway
// sees the argument absent, requires no header, and policy never sees it.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn nested_near_names_of_declared_properties_are_refused() {
    let (h, gw) = setup_with(BUNDLE, POLICY_REGION).await;
    learn_echo_schema(
        &h,
        &gw,
        json!({"type":"object","properties":{
            "text":{"type":"string"},
            "loc":{"type":"object","properties":{
                "region":{"type":"string","x-mcp-header":"Region"}}}
        }}),
    )
    .await;
    let before = posts_received(&h);
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
    )]);
    let (_, _, text) = post_with(
        &gw,
        &call_with(1, json!({"text":"hi","loc":{"Region":"us"}})),
        &MODERN,
    )
    .await;
    assert_eq!(
        posts_received(&h),
        before,
        "`loc.Region` reached the server with no mirrored header and past policy: {text}"
    );
}

// ---------------------------------------------------------------------------
// Variants the adversarial suite lacks, which currently PASS (kept as
// regression cover): SSE line-ending forms carrying a secret in an error
// object, and a secret in a batch element's nested error data.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn error_secrets_in_odd_sse_framings_and_batches_are_blocked() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let mut id = 0u64;
    for (what, nl) in [("CR only", "\r"), ("CRLF", "\r\n"), ("LF", "\n")] {
        id += 1;
        let err = json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"failed",
            "data":{"deep":[{"k":format!("key {AKIA}")}]}}});
        // Split mid-line, a comment and a retry in front, multi-line data.
        let s = err.to_string();
        let (a, b) = s.split_at(s.len() / 2);
        let ev = format!(":c{nl}retry: 5{nl}event: message{nl}data: {a}{nl}data: {b}{nl}{nl}");
        let mid = ev.len() / 3;
        h.script([Reply::sse(&[&ev[..mid], &ev[mid..]])]);
        let (_, _, text) = post_with(&gw, &call_with(id, json!({"text":"hi"})), &[]).await;
        assert!(!text.contains("IOSFODNN7"), "{what}: {text:?}");
        let m = messages(&text);
        assert!(
            m.iter().any(|m| m["id"] == id && m["error"].is_object()),
            "{what}: the request is answered: {text:?}"
        );
    }
    // A 2025-03-26 batch: the secret in the second element's error data.
    let batch = format!(
        "[{},{}]",
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}})
    );
    h.script([Reply::json(
        &json!([
            {"jsonrpc":"2.0","id":1,"result":{"content":[]}},
            {"jsonrpc":"2.0","id":2,"error":{"code":-1,"message":"x","data":{"a":{"b":[AKIA]}}}}
        ])
        .to_string(),
    )]);
    let (_, _, text) = post_with(&gw, &batch, &[("mcp-protocol-version", "2025-03-26")]).await;
    assert!(!text.contains(AKIA), "{text}");
}

// ---------------------------------------------------------------------------
// A hostile server's tools/list advertises a schema whose `$ref`s multiply
// (each level an `allOf` of two references to the root): judging a call
// against it must end, refused, and never reach the server.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn a_learned_schema_whose_refs_multiply_refuses_the_call_promptly() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    learn_echo_schema(
        &h,
        &gw,
        json!({"type":"object",
            "properties":{"text":{"type":"string"},"url":{"type":"string","format":"uri"}},
            "allOf":[{"$ref":"#"},{"$ref":"#"}]}),
    )
    .await;
    let before = posts_received(&h);
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"content":[]}}).to_string(),
    )]);
    let call = call_with(1, json!({"text":"hi","url":"https://api.example.com/"}));
    let (_, _, text) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        post_with(&gw, &call, &MODERN),
    )
    .await
    .expect("the gateway judged the call in bounded time");
    assert_eq!(
        posts_received(&h),
        before,
        "the call reached the server: {text}"
    );
    let v: Value = serde_json::from_str(&text).expect("a JSON-RPC answer");
    assert_eq!(v["error"]["code"], -32602, "{text}");
    assert!(text.contains("schema_too_complex"), "{text}");
}

//! Handles an unauthenticated client without a session is given (an SSE
//! event id, a task id) are bound to its address: every such client is the
//! one anonymous principal, and nothing else tells two of them apart. A
//! client at another address resumes nothing and opens nothing with them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::{setup_with, BUNDLE, POLICY};
use warden_tests::hostile::Reply;

/// A request to `url` from the loopback address `ip` (any of 127.0.0.0/8
/// reaches the gateway on 127.0.0.1): the status and the body.
async fn from(
    ip: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(ip.parse().expect("ip")));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .expect("in time")
        .expect("response");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        resp.into_body().collect(),
    )
    .await
    .expect("in time")
    .expect("body")
    .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The one JSON-RPC message of a JSON or SSE body.
fn message(text: &str) -> Value {
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or(text);
    serde_json::from_str(data).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_resumes_only_at_the_address_it_was_given_to() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let url = gw.url("/mock/mcp");
    let note = json!({"jsonrpc":"2.0","method":"notifications/message",
        "params":{"level":"info","data":"for the first client"}});
    h.script([Reply::sse(&[&format!("id: ev-7\ndata: {note}\n\n")])]);
    let (s, text) = from("127.0.0.1", "GET", &url, &[], "").await;
    assert_eq!(s, 200, "{text}");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an event id")
        .to_owned();
    assert!(!token.contains("ev-7"), "{text}");
    // Another client, at another address: the server is asked to resume nothing.
    h.reset();
    h.script([Reply::sse(&[": nothing\n\n"])]);
    let _ = from("127.0.0.2", "GET", &url, &[("last-event-id", &token)], "").await;
    let got = h.received();
    assert!(!got.is_empty());
    for r in got {
        assert!(
            r.header("last-event-id").is_empty(),
            "another client had the first client's stream resumed"
        );
    }
    // The client it was given to resumes.
    h.reset();
    h.script([Reply::sse(&[": resumed\n\n"])]);
    let _ = from("127.0.0.1", "GET", &url, &[("last-event-id", &token)], "").await;
    assert_eq!(h.received()[0].header("last-event-id"), ["ev-7"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_listed_and_opened_only_at_the_address_that_created_it() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let url = gw.url("/mock/mcp");
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-1","status":"working",
            "createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000}}})
        .to_string(),
    )]);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"text":"x"},"task":{"ttl":60000}}});
    let (s, text) = from("127.0.0.1", "POST", &url, &[], &call.to_string()).await;
    assert_eq!(s, 200, "{text}");
    let token = message(&text)["result"]["task"]["taskId"]
        .as_str()
        .expect("a sealed task id")
        .to_owned();
    assert!(!token.contains("T-1"), "{text}");
    // Another client neither opens it (the server is never asked) nor sees it listed.
    h.reset();
    let get = json!({"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":token}});
    let (_, text) = from("127.0.0.2", "POST", &url, &[], &get.to_string()).await;
    assert_eq!(message(&text)["error"]["code"], -32602, "{text}");
    assert!(h.received().is_empty(), "the server was asked for the task");
    let listed = json!({"jsonrpc":"2.0","id":3,"result":{"tasks":[{"taskId":"T-1","status":"working",
        "createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000}]}});
    let list = json!({"jsonrpc":"2.0","id":3,"method":"tasks/list"}).to_string();
    let count = |text: &str| {
        message(text)["result"]["tasks"]
            .as_array()
            .map_or(usize::MAX, Vec::len)
    };
    h.script([Reply::json(&listed.to_string())]);
    let (_, text) = from("127.0.0.2", "POST", &url, &[], &list).await;
    assert_eq!(
        count(&text),
        0,
        "another client was listed the task: {text}"
    );
    // The client that created it opens and lists it.
    h.script([Reply::json(&listed.to_string())]);
    let (_, text) = from("127.0.0.1", "POST", &url, &[], &list).await;
    assert_eq!(count(&text), 1, "{text}");
    h.reset();
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":2,"result":{"taskId":"T-1","status":"working",
            "createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000}})
        .to_string(),
    )]);
    let (_, text) = from("127.0.0.1", "POST", &url, &[], &get.to_string()).await;
    assert_eq!(message(&text)["result"]["status"], "working", "{text}");
    assert!(h.received()[0].body_text().contains("\"T-1\""));
}

/// A server that hands one task to two principals (an idempotent call, a
/// reused id, a hostile server) gives it to the first only — on every
/// replica, when the fleet shares a store: the replica that sealed it for
/// the first claims it there, and another replica withholds it from the
/// second as the first replica does.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_handed_to_one_principal_reaches_no_other_on_any_replica() {
    let redis = warden_tests::Redis::start(warden_tests::free_port());
    let h = warden_tests::hostile::Hostile::start().await;
    let yaml = warden_tests::mock_bundle(
        &[h.addr],
        &format!(
            "{}{BUNDLE}sessions: {{seal_key_file: seal.key}}\nredis: {{url: \"redis://127.0.0.1:{}\"}}\n",
            warden_tests::TWO_KEYS,
            redis.port
        ),
    );
    let files: [(&str, &[u8]); 2] = [
        ("policies/authz.rego", POLICY.as_bytes()),
        ("seal.key", b"fleet-session-secret-0123456789abcdef-tasks\n"),
    ];
    let a = warden_tests::Gateway::start_with(&yaml, false, &files, &[], None).expect("a");
    let b = warden_tests::Gateway::start_with(&yaml, false, &files, &[], None).expect("b");
    const DEV: (&str, &str) = ("x-api-key", "wk_demo_dev_7Qm2");
    const OPS: (&str, &str) = ("x-api-key", "wk_demo_ops_Z8r5");
    let handle = json!({"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"T-shared",
        "status":"working","createdAt":"2026-01-01T00:00:00Z",
        "lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000}}})
    .to_string();
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"text":"x"},"task":{"ttl":60000}}})
    .to_string();
    // `body` sent by `who` through `gw`, the server answering `reply`: the
    // message the client gets.
    let send = |gw: &warden_tests::Gateway,
                who: (&'static str, &'static str),
                body: String,
                reply: &str| {
        h.script([Reply::json(reply)]);
        let url = gw.url("/mock/mcp");
        async move {
            let hs = [
                who,
                ("accept", "application/json, text/event-stream"),
                ("content-type", "application/json"),
            ];
            let (_, _, body) = warden_tests::request(&url, "POST", &hs, body.into(), false)
                .await
                .expect("request");
            message(&String::from_utf8_lossy(&body))
        }
    };
    let create = |gw: &warden_tests::Gateway, who: (&'static str, &'static str)| {
        send(gw, who, call.clone(), &handle)
    };
    // The store is reachable once a replica's probe has seen it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        let v = create(&a, DEV).await;
        if v["result"]["task"]["taskId"].is_string() {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never created: {v}");
        h.reset();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let token = first["result"]["task"]["taskId"].as_str().expect("token");
    assert!(!token.contains("T-shared"), "{first}");
    // The holder itself is handed it again, on either replica.
    for gw in [&b, &a] {
        let v = create(gw, DEV).await;
        assert!(v["result"]["task"]["taskId"].is_string(), "{v}");
    }
    // A task that outlives its claim's life stays its holder's: the
    // holder's own `tasks/get`, on a replica that never created it,
    // renews the fleet's claim.
    let keys = redis.cli(&["--scan", "--pattern", "*task:*"]);
    let key = keys
        .lines()
        .next()
        .expect("a task claim in the store")
        .to_owned();
    assert_eq!(redis.cli(&["EXPIRE", &key, "30"]).trim(), "1");
    let get =
        json!({"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":token}}).to_string();
    let status = json!({"jsonrpc":"2.0","id":2,"result":{"taskId":"T-shared","status":"working",
        "createdAt":"2026-01-01T00:00:00Z","lastUpdatedAt":"2026-01-01T00:00:00Z","ttl":60000}})
    .to_string();
    let ask = |gw: &warden_tests::Gateway| send(gw, DEV, get.clone(), &status);
    let v = ask(&b).await;
    assert_eq!(v["result"]["status"], "working", "{v}");
    let ttl: u64 = redis.cli(&["TTL", &key]).trim().parse().expect("ttl");
    assert!(ttl > 3600, "the claim was not renewed: {ttl} s left");
    // Another principal handed the same id as new — on a replica that
    // never saw the task — is refused, and the id is burnt: the server
    // reused it (or hands one task to two), and the first holder's handle
    // would otherwise reach the second's task. It names no task for
    // anyone, on any replica.
    let v = create(&b, OPS).await;
    assert!(
        !v.to_string().contains("wt1."),
        "another principal was handed the task: {v}"
    );
    assert_eq!(v["error"]["code"], -31003, "{v}");
    assert_eq!(redis.cli(&["GET", &key]).trim(), "!burnt");
    // The replica that sealed it (a) has not heard of the burn: the store
    // tells it before the request goes on, so neither a `tasks/get` nor a
    // `tasks/cancel` of the burnt id reaches the server.
    let cancel = json!({"jsonrpc":"2.0","id":3,"method":"tasks/cancel","params":{"taskId":token}})
        .to_string();
    for (gw, which) in [(&a, "the same replica"), (&b, "another replica")] {
        h.reset();
        let v = send(gw, DEV, cancel.clone(), &status).await;
        assert!(
            h.received().is_empty(),
            "{which}: a burnt task's cancel reached the server: {v}"
        );
        let v = ask(gw).await;
        assert!(!v.to_string().contains("working"), "{which}: {v}");
        assert!(v["error"].is_object(), "{which}: {v}");
        assert!(
            h.received().is_empty(),
            "{which}: a burnt task's request reached the server"
        );
        for who in [DEV, OPS] {
            let v = send(gw, who, call.clone(), &handle).await;
            assert!(!v.to_string().contains("wt1."), "{which}: {v}");
        }
    }
    // On the replica that sealed it, the burn is remembered without the
    // store: the first holder's handle opens nothing there either.
    redis.cli(&["DEL", &key]);
    h.reset();
    let v = ask(&a).await;
    assert!(!v.to_string().contains("working"), "{v}");
    assert!(
        h.received().is_empty(),
        "a burnt task's request reached the server"
    );
}

/// A server→client request's id is a handle too: the answer the server
/// gets for it must come from the client it asked. Unauthenticated
/// clients without a session are one principal; one at another address
/// cannot answer what the server asked another.
#[tokio::test(flavor = "multi_thread")]
async fn a_servers_request_is_answered_only_from_the_address_it_was_sent_to() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let url = gw.url("/mock/mcp");
    let ask = json!({"jsonrpc":"2.0","id":"ask-1","method":"elicitation/create","params":{
        "message":"Which project?","requestedSchema":{"type":"object",
        "properties":{"p":{"type":"string"}}}}});
    let done = json!({"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}});
    h.script([Reply::sse(&[
        &format!("data: {ask}\n\n"),
        &format!("data: {done}\n\n"),
    ])]);
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
        "name":"echo","arguments":{"text":"x"}}});
    let (s, text) = from("127.0.0.1", "POST", &url, &[], &call.to_string()).await;
    assert_eq!(s, 200, "{text}");
    assert!(
        text.contains("ask-1"),
        "the server's request reached its client: {text}"
    );
    let answer = json!({"jsonrpc":"2.0","id":"ask-1","result":{"action":"accept",
        "content":{"p":"another client's choice"}}})
    .to_string();
    h.reset();
    h.script([Reply::accepted()]);
    let (s, text) = from("127.0.0.2", "POST", &url, &[], &answer).await;
    assert!(
        h.received().is_empty(),
        "another client's answer reached the server ({s}): {text}"
    );
    assert_eq!(s, 400, "{text}");
    // The client it was sent to answers it.
    let (s, text) = from("127.0.0.1", "POST", &url, &[], &answer).await;
    assert_eq!(s, 202, "{text}");
    assert_eq!(h.received().len(), 1);
}

//! Gateway behaviour on real sockets against the fast mock MCP server:
//! bad input never reaches the upstream, large bodies arrive intact in every
//! framing, SSE flows event by event, failures get clear JSON-RPC errors.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Value};
use warden_tests::{header, mock_bundle, post_json, request, Gateway, Mock};

fn call(id: u64, tool: &str, args: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})).unwrap_or_default()
}

fn body_json(b: &Bytes) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_never_reaches_the_upstream() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(
        &mock_bundle(
            &[mock.addr],
            "limits: {max_request_body: 64KiB, max_json_depth: 16}",
        ),
        true,
    )
    .expect("gateway");
    let url = gw.url("/mock/mcp");
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}1{}}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        ("malformed", b"{\"jsonrpc\":\"2.0\",".to_vec(), 400, -32700),
        ("not json", b"hello".to_vec(), 400, -32700),
        ("empty", Vec::new(), 400, -32700),
        ("invalid utf8", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}".to_vec(), 400, -32700),
        ("lone surrogate", br#"{"jsonrpc":"2.0","id":1,"method":"\ud800"}"#.to_vec(), 400, -32700),
        ("wrong version", br#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#.to_vec(), 400, -32600),
        ("null id", br#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#.to_vec(), 400, -32600),
        ("duplicate key", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"rm_rf"}}"#.to_vec(), 400, -32600),
        ("escaped duplicate", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0061me":"rm_rf"}}"#.to_vec(), 400, -32600),
        ("too deep", deep.into_bytes(), 400, -32600),
        ("scalar", b"42".to_vec(), 400, -32600),
        ("empty batch", b"[]".to_vec(), 400, -32600),
        ("too large", call(1, "echo", json!({"text": "x".repeat(70 * 1024)})), 413, -32600),
    ];
    for (name, body, status, code) in cases {
        let (s, _, b) = post_json(&url, body, &[]).await.expect(name);
        assert_eq!(s, status, "{name}: {}", String::from_utf8_lossy(&b));
        assert_eq!(body_json(&b)["error"]["code"], code, "{name}");
    }
    // Chunked (no Content-Length) over the limit is cut off while reading.
    let chunks = vec![
        Bytes::from(vec![b' '; 40 * 1024]),
        Bytes::from(vec![b' '; 40 * 1024]),
    ];
    let (s, _) = stream_post(&url, chunks, false).await.expect("chunked");
    assert_eq!(s, 413);
    // Wrong content type, a GET with a body, a method MCP does not use.
    let (s, _, _) = request(
        &url,
        "POST",
        &[("content-type", "text/plain")],
        Bytes::from_static(b"{}"),
        false,
    )
    .await
    .expect("ct");
    assert_eq!(s, 415);
    let (s, _, _) = request(
        &url,
        "GET",
        &[("accept", "text/event-stream"), ("content-length", "2")],
        Bytes::from_static(b"{}"),
        false,
    )
    .await
    .expect("get");
    assert_eq!(s, 400);
    let (s, h, _) = request(&url, "PUT", &[], Bytes::new(), false)
        .await
        .expect("put");
    assert_eq!(s, 405);
    assert!(header(&h, "allow").is_some());
    // Mcp-Method disagreeing with the body (2026-07-28).
    let (s, _, b) = post_json(
        &url,
        call(7, "echo", json!({"text":"x"})),
        &[("mcp-method", "tools/list")],
    )
    .await
    .expect("hdr");
    assert_eq!(s, 400);
    assert_eq!(body_json(&b)["error"]["code"], -32020);
    assert_eq!(body_json(&b)["id"], 7);
    let (s, _, _) = post_json(
        &url,
        call(8, "echo", json!({"text":"x"})),
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?cm1fcmY=?="),
        ],
    )
    .await
    .expect("hdr");
    assert_eq!(s, 400);
    assert_eq!(
        mock.posts().await,
        0,
        "nothing unchecked may reach the upstream"
    );

    // The same gateway forwards good input, headers agreeing, an Mcp-Param-*
    // the tool does not declare kept. (Declarations are learned from the
    // tool's listing; before one, no Mcp-Param-* goes upstream, since none
    // could be checked against the body: tests/it/fail_closed.rs.)
    let (s, _, _) = post_json(
        &url,
        json!({"jsonrpc": "2.0", "id": 20, "method": "tools/list"}).to_string(),
        &[],
    )
    .await
    .expect("list");
    assert_eq!(s, 200);
    let (s, _, b) = post_json(
        &url,
        call(9, "echo", json!({"text":"ok"})),
        &[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?ZWNobw==?="),
            ("mcp-param-region", "eu"),
        ],
    )
    .await
    .expect("good");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(body_json(&b)["result"]["content"][0]["text"], "ok");
    let st = mock.stats().await.expect("stats");
    assert_eq!(st["posts"], 2, "the listing and the call");
    assert_eq!(st["last"]["mcp_param_region"], "eu");
    // Every refusal was audited with its reason.
    let forwarded = |r: &Value| {
        r["outcome"] == "forwarded" && r["tool"] == "echo" && r["upstream_status"] == 200
    };
    let audit = gw.audit_when(|a| a.iter().any(forwarded));
    assert!(
        audit
            .iter()
            .filter(|r| r["outcome"] == "parse_error")
            .count()
            >= 4,
        "{audit:?}"
    );
    assert!(audit.iter().any(|r| r["outcome"] == "too_large"));
    assert!(audit.iter().any(forwarded), "{audit:?}");
}

/// POSTs a body in chunks without Content-Length (chunked on h1, no length on h2).
async fn stream_post(url: &str, chunks: Vec<Bytes>, h2: bool) -> anyhow::Result<(u16, Bytes)> {
    use hyper::body::Frame;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2);
    let client = b.build_http();
    let req = http::Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mib_bodies_arrive_intact_in_every_framing() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    // Not a repeated byte: a shifted window would change the digest.
    let data: String = (0..(1 << 20))
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let body = call(1, "checksum", json!({"data": data}));
    let expect_digest = {
        use std::fmt::Write;
        let d = sha256(data.as_bytes());
        d.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let expected = format!("{} {}", data.len(), expect_digest);
    let body_digest = sha256(&body);
    let chunks: Vec<Bytes> = body.chunks(10_000).map(Bytes::copy_from_slice).collect();
    for (name, h2, chunked) in [
        ("h1 content-length", false, false),
        ("h1 chunked", false, true),
        ("h2 content-length", true, false),
        ("h2 no length", true, true),
    ] {
        let (s, b) = if chunked {
            stream_post(&url, chunks.clone(), h2).await.expect(name)
        } else {
            let (s, _, b) = request(
                &url,
                "POST",
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                ],
                Bytes::from(body.clone()),
                h2,
            )
            .await
            .expect(name);
            (s, b)
        };
        assert_eq!(
            s,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&b[..b.len().min(300)])
        );
        assert_eq!(
            body_json(&b)["result"]["content"][0]["text"],
            expected.as_str(),
            "{name}"
        );
        let st = mock.stats().await.expect("stats");
        assert_eq!(
            st["last"]["len"],
            body.len(),
            "{name}: upstream got the whole body"
        );
        assert_eq!(
            st["last"]["sha256"],
            hex(&body_digest),
            "{name}: upstream got exactly the judged bytes"
        );
        assert_eq!(
            st["last"]["content_length"],
            body.len().to_string(),
            "{name}: framed by length upstream"
        );
    }
    assert_eq!(mock.posts().await, 4, "each body was sent exactly once");
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_judged_per_element_and_every_id_answered() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    let body = format!(
        "[{},{},{},{}]",
        String::from_utf8_lossy(&call(1, "echo", json!({"text":"a"}))),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","name":"y"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        String::from_utf8_lossy(&call(4, "add", json!({"a":2,"b":3}))),
    );
    let (s, _, b) = post_json(&url, body, &[]).await.expect("batch");
    assert_eq!(s, 200);
    let v = body_json(&b);
    let arr = v.as_array().expect("array answer");
    let mut ids: Vec<i64> = arr.iter().filter_map(|m| m["id"].as_i64()).collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 4], "{v}");
    let bad = arr.iter().find(|m| m["id"] == 2).expect("id 2");
    assert_eq!(bad["error"]["code"], -32600);
    // The upstream saw three messages: the invalid one was removed.
    let st = mock.stats().await.expect("stats");
    assert_eq!(st["posts"], 1);
    // A batch of nothing but invalid requests never reaches the upstream.
    let (s, _, b) = post_json(
        &url,
        r#"[{"jsonrpc":"2.0","id":5}, {"jsonrpc":"2.0","id":6,"method":""}]"#,
        &[],
    )
    .await
    .expect("batch");
    assert_eq!(s, 200);
    assert_eq!(body_json(&b).as_array().map(Vec::len), Some(2));
    assert_eq!(mock.posts().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_events_flow_one_by_one_and_headers_are_rewritten() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    // Hold the mock after its first progress event: the client must see it
    // before the mock is released, so the gateway cannot be buffering.
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method("POST")
        .uri(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", "Bearer client-secret")
        .header("mcp-protocol-version", "2025-06-18")
        .body(http_body_util::Full::new(Bytes::from(call(
            3,
            "progress",
            json!({"steps": 3, "hold": true, "delay_ms": 1}),
        ))))
        .expect("req");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("timely")
        .expect("resp");
    if resp.status() != 200 {
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        panic!("status != 200: {}", String::from_utf8_lossy(&b));
    }
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")));
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("first event not held back")
            .expect("frame")
            .expect("ok");
        if let Ok(d) = frame.into_data() {
            seen.extend_from_slice(&d);
        }
    }
    // The event id reaches the client sealed for it; `retry:` as it was.
    let first = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        first.starts_with("id: we1.") && first.contains("\nretry: 1000\n\n"),
        "id sealed, retry kept: {first}"
    );
    assert!(
        !String::from_utf8_lossy(&seen).contains("\"result\""),
        "the final result cannot have arrived yet"
    );
    let (s, _, _) = request(
        &format!("http://{}/__mock/release", mock.addr),
        "POST",
        &[],
        Bytes::new(),
        false,
    )
    .await
    .expect("release");
    assert_eq!(s, 200);
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("rest")
        .expect("ok")
        .to_bytes();
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(text.matches("notifications/progress").count(), 3, "{text}");
    assert!(text.contains("\"done 3\""));
    let st = mock.stats().await.expect("stats");
    assert_eq!(
        st["last"]["authorization"],
        Value::Null,
        "the client's token never reaches the upstream"
    );
    assert_eq!(
        st["last"]["host"],
        mock.addr.to_string(),
        "Host is the upstream's own authority"
    );
}

/// Opens a GET event stream and returns its first chunk (the stream is then dropped).
async fn open_stream(url: &str, headers: &[(&str, &str)]) -> String {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method("GET")
        .uri(url)
        .header("accept", "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(req.body(http_body_util::Empty::new()).expect("req")),
    )
    .await
    .expect("timely")
    .expect("resp");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")));
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await
        .expect("first event")
        .expect("frame")
        .expect("ok");
    String::from_utf8_lossy(&frame.into_data().unwrap_or_default()).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_stick_to_their_replica() {
    let a = Mock::start(&["--require-session"]).expect("mock a");
    let b = Mock::start(&["--require-session"]).expect("mock b");
    let gw = Gateway::start(&mock_bundle(&[a.addr, b.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    for _ in 0..4 {
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        let (s, h, _) = post_json(&url, &init[..], &[]).await.expect("init");
        assert_eq!(s, 200);
        let sid = header(&h, "mcp-session-id")
            .expect("session id passes through")
            .to_owned();
        // The server's GET stream, resumed: session, version, Last-Event-ID and
        // traceparent pass untouched; the client's token does not.
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let before = a.stats().await.expect("a")["last_get"].clone();
        let first = open_stream(
            &url,
            &[
                ("mcp-session-id", &sid),
                ("last-event-id", "41"),
                ("mcp-protocol-version", "2025-06-18"),
                ("traceparent", tp),
                ("authorization", "Bearer t"),
            ],
        )
        .await;
        // The server's keep-alive comment arrives as a bare comment: its
        // text is the server's, and nothing judged it.
        assert!(first.starts_with(":\n"), "{first}");
        let sa = a.stats().await.expect("a");
        let g = if sa["last_get"] != before {
            sa["last_get"].clone()
        } else {
            b.stats().await.expect("b")["last_get"].clone()
        };
        // The client holds a sealed id (see `seal`); the replica that issued
        // the session got its own id back (a mock started with
        // --require-session refuses any other, and the stream opened).
        assert!(sid.starts_with("ws1."), "{sid}");
        assert!(
            g["session"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && !s.starts_with("ws1.")),
            "the stream went to the session's replica with its own id: {g}"
        );
        // "41" was never handed to this client: the server resumes nothing.
        assert_eq!(g["last_event_id"], Value::Null);
        assert_eq!(g["protocol_version"], "2025-06-18");
        assert_eq!(g["traceparent"], tp);
        assert_eq!(g["authorization"], Value::Null);
        for i in 1..5 {
            let (s, _, body) = post_json(
                &url,
                call(i, "echo", json!({"text":"s"})),
                &[("mcp-session-id", &sid)],
            )
            .await
            .expect("call");
            assert_eq!(
                s,
                200,
                "request {i} of session {sid} went to another replica: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let (s, _, _) = request(
            &url,
            "DELETE",
            &[("mcp-session-id", &sid)],
            Bytes::new(),
            false,
        )
        .await
        .expect("delete");
        assert_eq!(s, 200);
    }
    // Both replicas served sessions (round robin), each kept its own.
    assert!(a.stats().await.expect("a")["sessions"].as_u64() > Some(0));
    assert!(b.stats().await.expect("b")["sessions"].as_u64() > Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_upstreams_get_clear_errors_and_failover() {
    let live = Mock::start(&[]).expect("mock");
    let dead = warden_tests::free_port();
    let dead_addr: std::net::SocketAddr = format!("127.0.0.1:{dead}").parse().expect("addr");
    // Failover: one dead replica, one live one; every call succeeds.
    let gw = Gateway::start(&mock_bundle(&[dead_addr, live.addr], ""), false).expect("gateway");
    for i in 0..6 {
        let (s, _, b) = post_json(
            &gw.url("/mock/mcp"),
            call(i, "echo", json!({"text":"f"})),
            &[],
        )
        .await
        .expect("call");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    }
    // The operator reads one concise line naming the dead replica, not a
    // dump of the connector's configuration.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.log().iter().any(|l| l.contains("upstream down")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = gw.log();
    let down: Vec<&String> = log.iter().filter(|l| l.contains("upstream down")).collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert!(
        down[0].contains(&dead_addr.to_string()) && down[0].contains("server=mock"),
        "{down:?}"
    );
    assert!(!log.iter().any(|l| l.contains("PeerOptions")), "{log:?}");
    drop(gw);
    // Only a dead replica: a JSON-RPC error with the request id, never a hang.
    let gw = Gateway::start(&mock_bundle(&[dead_addr], "timeouts: {connect: 1s}"), false)
        .expect("gateway");
    let (s, _, b) = post_json(
        &gw.url("/mock/mcp"),
        call(42, "echo", json!({"text":"x"})),
        &[],
    )
    .await
    .expect("call");
    assert_eq!(s, 502);
    let v = body_json(&b);
    assert_eq!(v["error"]["code"], -31001);
    assert_eq!(v["id"], 42);
    assert_eq!(
        warden_tests::sync_get_status(gw.admin, "/readyz"),
        Some(503)
    );
    // No route at all.
    let (s, _, b) = post_json(&gw.url("/elsewhere/mcp"), call(1, "echo", json!({})), &[])
        .await
        .expect("call");
    assert_eq!(s, 404);
    assert_eq!(body_json(&b)["error"]["code"], -31020);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dying_mid_stream_ends_the_client_stream() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let r = post_json(
        &gw.url("/mock/mcp"),
        call(5, "die_mid_stream", json!({})),
        &[],
    )
    .await;
    // The stream is cut: either the body errors or it ends early. It must not hang,
    // and the half-sent event must not be passed on as if complete.
    match r {
        Ok((s, _, b)) => {
            assert_eq!(s, 200);
            let t = String::from_utf8_lossy(&b);
            assert!(t.contains("notifications/progress"), "{t}");
            assert!(
                !t.contains("{\"jsonrpc\":\"2.0\",\n") && !t.ends_with("\"2.0\","),
                "{t}"
            );
        }
        Err(e) => assert!(!e.to_string().contains("timed out"), "{e}"),
    }
    // The gateway is still serving.
    assert_eq!(
        warden_tests::sync_get_status(gw.admin, "/healthz"),
        Some(200)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_metrics_status_and_audit() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call(1, "echo", json!({"text":"m"})),
        &[],
    )
    .await
    .expect("call");
    assert_eq!(s, 200);
    // Metrics are counted in the logging phase, after the response is sent.
    let want = "warden_mcp_messages_total{direction=\"request\",method=\"tools/call\",outcome=\"forwarded\",server=\"mock\",tool=\"echo\"} 1";
    let mut m = gw.metrics().await;
    for _ in 0..100 {
        if m.contains(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m = gw.metrics().await;
    }
    assert!(m.contains(want), "{m}");
    assert!(m.contains("warden_request_duration_seconds_bucket"));
    assert!(m.contains("warden_body_bytes_bucket"));
    let (s, _, b) = request(
        &format!("http://{}/status", gw.admin),
        "GET",
        &[],
        Bytes::new(),
        false,
    )
    .await
    .expect("status");
    assert_eq!(s, 200);
    let st = body_json(&b);
    assert!(st["bundle"]["revision"]
        .as_str()
        .is_some_and(|r| r.starts_with("sha256:")));
    assert_eq!(st["servers"][0]["upstreams"][0]["healthy"], true);
    // The audit record is written off the request path; wait for the writer.
    let rec = gw
        .audit_when(|a| a.iter().any(|r| r["tool"] == "echo"))
        .into_iter()
        .find(|r| r["tool"] == "echo")
        .expect("audit record");
    assert_eq!(rec["principal"], "anonymous");
    assert_eq!(rec["method"], "tools/call");
    assert_eq!(rec["jsonrpc_id"], 1);
    assert_eq!(rec["upstream_status"], 200);
    assert!(rec["latency_us"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_is_checked_and_never_forwarded() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(
        &mock_bundle(
            &[mock.addr],
            "security: {allowed_origins: [\"https://app.example\"]}",
        ),
        true,
    )
    .expect("gateway");
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call(1, "echo", json!({"text":"o"})),
        &[("origin", "https://evil.example")],
    )
    .await
    .expect("evil");
    assert_eq!(s, 403);
    assert_eq!(mock.posts().await, 0);
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call(1, "echo", json!({"text":"o"})),
        &[("origin", "https://app.example")],
    )
    .await
    .expect("ok");
    assert_eq!(s, 200);
    assert_eq!(
        mock.stats().await.expect("stats")["last"]["origin"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mock = Mock::start(&[]).expect("mock");
    let mut gw =
        Gateway::start(&mock_bundle(&[mock.addr], "timeouts: {drain: 3s}"), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    let inflight =
        tokio::spawn(
            async move { post_json(&url, call(1, "sleep", json!({"ms": 1000})), &[]).await },
        );
    // Wait until the call is at the upstream, then ask the gateway to stop.
    for _ in 0..200 {
        if mock.posts().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.proc.terminate();
    let (s, _, b) = inflight
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(s, 200);
    assert_eq!(
        body_json(&b)["result"]["content"][0]["text"],
        "slept 1000ms"
    );
    let code = tokio::task::spawn_blocking(move || {
        let c = gw.proc.wait_exit(Duration::from_secs(15));
        (c, gw)
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0), "warden exits cleanly after draining");
    // The audit record of the drained request was flushed before exit.
    assert!(code.1.audit().iter().any(|r| r["tool"] == "sleep"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_and_silent_upstreams_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let gw = Gateway::start(
        &mock_bundle(
            &[silent_addr],
            "timeouts: {read: 1s, request_body: 1s}\nlimits: {max_header_bytes: 2KiB}",
        ),
        true,
    )
    .expect("gateway");
    // Silent upstream: a timeout error with the id, not a hang.
    let (s, _, b) = post_json(
        &gw.url("/mock/mcp"),
        call(11, "echo", json!({"text":"x"})),
        &[],
    )
    .await
    .expect("call");
    assert_eq!(s, 504, "{}", String::from_utf8_lossy(&b));
    assert_eq!(body_json(&b)["error"]["code"], -31002);
    assert_eq!(body_json(&b)["id"], 11);
    // A client that announces a body and trickles it (slowloris) gets 408.
    let mut c = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    c.write_all(b"POST /mock/mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"").await.expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut resp))
        .await
        .expect("the gateway answers and closes");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // An oversized header block gets 431.
    let big = "x".repeat(4096);
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call(1, "echo", json!({})),
        &[("x-padding", &big)],
    )
    .await
    .expect("call");
    assert_eq!(s, 431);
    hold.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_routing_by_host_and_prefix() {
    let m1 = Mock::start(&[]).expect("m1");
    let m2 = Mock::start(&[]).expect("m2");
    let yaml = format!(
        "version: 1\nservice_groups:\n  - name: edge\n    servers:\n      - {{name: one, upstreams: [\"{}\"]}}\n      - {{name: two, upstreams: [\"{}\"]}}\nsecurity: {{allowed_hosts: [other.example]}}\nroutes:\n  - {{prefix: /a, host: Tools.Example, server: one}}\n  - {{prefix: /a, server: two}}\n  - {{prefix: /a/deeper, server: one, upstream_prefix: /v1}}\n",
        m1.addr, m2.addr
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let body = call(1, "echo", json!({"text":"r"}));
    let post = |url: String, host: &'static str| {
        let body = body.clone();
        async move {
            request(
                &url,
                "POST",
                &[("content-type", "application/json"), ("host", host)],
                Bytes::from(body),
                false,
            )
            .await
            .expect("post")
            .0
        }
    };
    assert_eq!(post(gw.url("/a/mcp"), "tools.example:8443").await, 200);
    assert_eq!(
        m1.posts().await,
        1,
        "host route, case-insensitive, port ignored"
    );
    assert_eq!(post(gw.url("/a/mcp"), "other.example").await, 200);
    assert_eq!(m2.posts().await, 1, "host-agnostic route");
    assert_eq!(
        post(gw.url("/a/deeper/mcp?x=1"), "other.example").await,
        200
    );
    let st = m1.stats().await.expect("stats");
    assert_eq!(
        st["posts"], 2,
        "longest prefix wins over the host-agnostic /a"
    );
    assert_eq!(
        st["last"]["path"], "/v1/mcp",
        "prefix replaced by upstream_prefix"
    );
    // A prefix only matches on a segment boundary.
    assert_eq!(post(gw.url("/abc/mcp"), "other.example").await, 404);
    assert_eq!(m2.posts().await, 1);
}

/// A tool call that reached the server whole is never sent twice, even when
/// the pooled connection dies before the answer (the server may have acted
/// on it): the client gets an error instead.
/// Reads one HTTP/1.1 request (its head, then Content-Length bytes) from
/// `c`, keeping what follows in `buf`; its head in lower case (`None`: the
/// connection ended).
async fn read_request(c: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match c.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + len);
    Some(head)
}

/// Answers a health check (a GET) on `c`: `true` if `head` was one.
async fn answer_health_check(c: &mut tokio::net::TcpStream, head: &str) -> bool {
    use tokio::io::AsyncWriteExt;
    if !head.starts_with("get ") {
        return false;
    }
    let _ = c
        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
        .await;
    true
}

/// Answers a `tools/call` with a small text result on `c`, keeping it open.
async fn answer_ok(c: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#;
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(resp.as_bytes()).await;
    let _ = c.write_all(body).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_written_upstream_is_never_repeated() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut c, &mut buf).await {
                    if answer_health_check(&mut c, &head).await {
                        continue;
                    }
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 1 {
                        answer_ok(&mut c).await;
                    } else {
                        // Took the call whole, then died before answering.
                        return;
                    }
                }
            });
        }
    });
    let gw = Gateway::start(&mock_bundle(&[addr], ""), false).expect("gateway");
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call(1, "echo", json!({"text":"a"})),
        &[],
    )
    .await
    .expect("first");
    assert_eq!(s, 200);
    let (s, _, b) = post_json(
        &gw.url("/mock/mcp"),
        call(2, "purge", json!({"table":"t"})),
        &[],
    )
    .await
    .expect("second");
    assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
    assert_eq!(body_json(&b)["error"]["code"], -31001);
    assert_eq!(body_json(&b)["id"], 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the second call was sent exactly once"
    );
}

/// Servers close an idle keep-alive connection after a few seconds
/// (uvicorn, Node and Apache after 5 s), and a call written on it as the
/// server closes it is lost: it fails (a written call is never sent twice).
/// With the default `timeouts.idle`, the gateway lets a pooled connection
/// go before a 5-second server would: a call after 5 s of quiet takes a
/// fresh connection and is served. The upstream here plays the server at
/// the instant of its close: a request on a connection idle 5 s or more is
/// read, then the connection dropped unanswered.
#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_is_let_go_before_a_five_second_server_closes_it() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let lost = Arc::new(AtomicU64::new(0));
    let seen = lost.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut last = std::time::Instant::now();
                while let Some(head) = read_request(&mut c, &mut buf).await {
                    if last.elapsed() >= Duration::from_secs(5) {
                        seen.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if !answer_health_check(&mut c, &head).await {
                        answer_ok(&mut c).await;
                    }
                    last = std::time::Instant::now();
                }
            });
        }
    });
    // (The health checks only connect: none lands on the pooled connection.)
    let gw = Gateway::start(&mock_bundle(&[addr], ""), false).expect("gateway");
    let url = gw.url("/mock/mcp");
    let (s, _, _) = post_json(&url, call(1, "echo", json!({"text":"a"})), &[])
        .await
        .expect("first");
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let (s, _, b) = post_json(&url, call(2, "echo", json!({"text":"b"})), &[])
        .await
        .expect("second");
    assert_eq!(
        (s, lost.load(Ordering::SeqCst)),
        (200, 0),
        "a call after 5 s of quiet went out on a connection the server was closing: {}",
        String::from_utf8_lossy(&b)
    );
}

/// A port someone else holds: the gateway exits at once, non-zero, with one
/// line naming the address and the process holding it (it used to retry for
/// 30 s, panic in two threads and stay alive serving nothing).
#[test]
fn a_busy_port_is_one_clear_line_and_a_non_zero_exit() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tmp");
    let started = std::time::Instant::now();
    let (ok, _out, err) = warden_tests::run_with_timeout(
        std::process::Command::new(warden_tests::bin("warden"))
            .arg("run")
            .arg("--bundle")
            .arg(warden_tests::root().join("config/examples/sidecar"))
            .args(["--listen", &addr.to_string(), "--admin", "127.0.0.1:0"])
            .arg("--audit")
            .arg(dir.path().join("audit.jsonl"))
            .arg("--state-dir")
            .arg(dir.path().join("state")),
        Duration::from_secs(30),
    )
    .expect("ran");
    assert!(!ok, "exits non-zero: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "at once, not after retries: {:?}",
        started.elapsed()
    );
    let line = format!("cannot listen on {addr}");
    assert!(err.contains(&line), "{err}");
    assert!(
        err.contains(&format!("held by pid {}", std::process::id())),
        "names the holder: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains(&line)).count(),
        1,
        "{err}"
    );
    drop(held);
}

/// Logs an operator can read: start-up names the listen and admin addresses
/// and the revision, and nothing is coloured when stderr is not a terminal.
#[tokio::test(flavor = "multi_thread")]
async fn start_up_says_where_it_listens_without_colour() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let mut log = Vec::new();
    for _ in 0..100 {
        log = gw.log();
        if log.iter().any(|l| l.contains("warden starting")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = log
        .iter()
        .find(|l| l.contains("warden starting"))
        .unwrap_or_else(|| panic!("no start-up line: {log:?}"));
    assert!(line.contains(&gw.addr.to_string()), "{line}");
    assert!(line.contains(&gw.admin.to_string()), "{line}");
    assert!(line.contains("revision="), "{line}");
    assert!(
        log.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI codes in a log that is not a terminal: {log:?}"
    );
}

/// `warden apikey hash` prints the `identity.api_keys` entry itself: pasted
/// into a bundle, the key it printed once authenticates.
#[tokio::test(flavor = "multi_thread")]
async fn apikey_hash_prints_an_entry_the_bundle_accepts() {
    let (ok, out, err) = warden_tests::run_with_timeout(
        std::process::Command::new(warden_tests::bin("warden")).args([
            "apikey",
            "hash",
            "--key",
            "wk_test_entry_1",
            "--id",
            "ci-bot",
            "--tenant",
            "acme",
            "--roles",
            "developer,ops",
        ]),
        Duration::from_secs(20),
    )
    .expect("ran");
    assert!(ok, "{err}");
    assert!(out.contains("# key: wk_test_entry_1"), "{out}");
    let entry = out
        .lines()
        .find(|l| l.starts_with("- "))
        .unwrap_or_else(|| panic!("no entry: {out}"));
    let v: Value = serde_json::from_str(&entry[2..]).expect("the entry is JSON (and so YAML)");
    assert_eq!(v["id"], "ci-bot");
    assert_eq!(v["roles"], json!(["developer", "ops"]));
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    {entry}\n"),
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        ping,
        &[("x-api-key", "wk_test_entry_1")],
    )
    .await
    .expect("post");
    assert_eq!(s, 200);
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        ping,
        &[("x-api-key", "wk_test_entry_2")],
    )
    .await
    .expect("post");
    assert_eq!(s, 401);
}

/// Errors that tell a newcomer what to do: a 404 names the served paths, a
/// 401 names the credentials the bundle accepts.
#[tokio::test(flavor = "multi_thread")]
async fn errors_say_what_would_work() {
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    - {id: a, tenant: t, hash: \"sha256:d0abfb21f2a5d2fc66a2e0c5f9b369c4:995c0dc437d925d6baad52296a0ef3c5be924b056ab931cd5a2284bf8ba3bc0a\"}\n",
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let (s, _, b) = post_json(&gw.url("/nope/mcp"), ping, &[])
        .await
        .expect("post");
    assert_eq!(s, 404);
    let v: Value = serde_json::from_slice(&b).expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("served: /mock")),
        "{v}"
    );
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), ping, &[])
        .await
        .expect("post");
    assert_eq!(s, 401);
    let v: Value = serde_json::from_slice(&b).expect("json");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("x-api-key: <key>") && m.contains("Authorization: Bearer"),
        "{m}"
    );
}

/// An SDK closing its GET stream is ordinary: audited, never logged as an
/// error.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_closing_its_stream_is_not_an_error() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (s, h, _) = post_json(&url, &init[..], &[]).await.expect("init");
    assert_eq!(s, 200);
    let sid = header(&h, "mcp-session-id").expect("session").to_owned();
    for _ in 0..3 {
        let first = open_stream(
            &url,
            &[
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        )
        .await;
        assert!(first.starts_with(':'), "{first}");
    }
    let audit = gw.audit_when(|a| a.iter().filter(|r| r["http_method"] == "GET").count() >= 3);
    assert!(audit.iter().any(|r| r["http_method"] == "GET"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = gw.log();
    assert!(
        !log.iter().any(|l| l.contains("ERROR")),
        "a hang-up logged as an error: {log:?}"
    );
}

/// Puts `mock` into (status > 0) or out of (0) its failing mode.
async fn fail_mock(mock: &Mock, status: u16) {
    let (s, _, _) = request(
        &format!("http://{}/__mock/fail", mock.addr),
        "POST",
        &[("content-type", "application/json")],
        Bytes::from(json!({"status": status}).to_string()),
        false,
    )
    .await
    .expect("fail hook");
    assert_eq!(s, 200);
}

/// Whether `/status` shows `addr` of the first server healthy.
async fn healthy(gw: &Gateway, addr: std::net::SocketAddr) -> Option<bool> {
    let st = gw.status().await;
    st["servers"][0]["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["address"] == addr.to_string())
        .and_then(|u| u["healthy"].as_bool())
}

async fn until_health(gw: &Gateway, addr: std::net::SocketAddr, want: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while healthy(gw, addr).await != Some(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never became {}",
            if want { "healthy" } else { "unhealthy" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Health that knows MCP: a replica that accepts TCP but answers every MCP
/// request with 500 passes a TCP check and fails an MCP `ping` probe, which
/// takes it out of rotation (every call goes to the other replica) until it
/// answers again.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_probes_take_out_replicas_that_answer_errors() {
    let (bad, good) = (Mock::start(&[]).expect("a"), Mock::start(&[]).expect("b"));
    let yaml = mock_bundle(&[bad.addr, good.addr], "").replace(
        "health_check: {interval: 1s}",
        "health_check: {interval: 1s, probe: ping, path: /mcp, timeout: 1s}",
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    until_health(&gw, bad.addr, true).await;
    fail_mock(&bad, 500).await;
    until_health(&gw, bad.addr, false).await;
    let before = good.posts().await;
    for i in 0..8 {
        let (s, _, b) = post_json(
            &gw.url("/mock/mcp"),
            call(i, "echo", json!({"text": "hi"})),
            &[],
        )
        .await
        .expect("post");
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(body_json(&b)["result"]["content"][0]["text"], "hi");
    }
    assert_eq!(
        good.posts().await - before,
        8,
        "every call went to the healthy replica"
    );
    fail_mock(&bad, 0).await;
    until_health(&gw, bad.addr, true).await;
    // The same failing replica behind a TCP check looks healthy: what the
    // MCP probe adds.
    fail_mock(&bad, 500).await;
    let tcp = Gateway::start(&mock_bundle(&[bad.addr], ""), false).expect("gateway");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(healthy(&tcp, bad.addr).await, Some(true));
    // A server that takes nothing outside a session fails `ping` and
    // passes `initialize` (whose session the probe deletes).
    let stateful = Mock::start(&["--require-session"]).expect("mock");
    let probe = |kind: &str| {
        mock_bundle(&[stateful.addr], "").replace(
            "health_check: {interval: 1s}",
            &format!("health_check: {{interval: 1s, probe: {kind}}}"),
        )
    };
    let by_ping = Gateway::start(&probe("ping"), false).expect("gateway");
    let by_init = Gateway::start(&probe("initialize"), false).expect("gateway");
    until_health(&by_ping, stateful.addr, false).await;
    until_health(&by_init, stateful.addr, true).await;
}

/// Passive ejection: two calls in a row failing on one replica take it out
/// for the cool-down (the next calls all go to the other replica, the
/// failing one sees none), then it is tried again.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_whose_calls_keep_failing_are_ejected_for_a_cooldown() {
    let (bad, good) = (Mock::start(&[]).expect("a"), Mock::start(&[]).expect("b"));
    // The cool-down is long enough that twelve calls on a loaded CI machine
    // end inside it; its end is then waited for, not slept through.
    let yaml = mock_bundle(&[bad.addr, good.addr], "").replace(
        "health_check: {interval: 1s}",
        "health_check: {interval: 1h, eject: {failures: 2, cooldown: 8s}}",
    );
    let gw = Gateway::start(&yaml, true).expect("gateway");
    fail_mock(&bad, 502).await;
    let mut ok = 0;
    for i in 0..12 {
        let (s, _, _) = post_json(
            &gw.url("/mock/mcp"),
            call(i, "echo", json!({"text": "x"})),
            &[],
        )
        .await
        .expect("post");
        if s == 200 {
            ok += 1;
        }
    }
    assert_eq!(bad.posts().await, 2, "ejected after two failed calls");
    assert_eq!(ok, 10, "every other call was served");
    assert_eq!(
        healthy(&gw, bad.addr).await,
        Some(false),
        "/status shows it out"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains("warden_upstream_ejections_total{server=\"mock\"} 1"),
        "{m}"
    );
    assert!(
        gw.log().iter().any(|l| l.contains("upstream ejected")),
        "{:?}",
        gw.log()
    );
    // After the cool-down it is in rotation again.
    fail_mock(&bad, 0).await;
    until_health(&gw, bad.addr, true).await;
    for i in 0..4 {
        post_json(
            &gw.url("/mock/mcp"),
            call(i, "echo", json!({"text": "x"})),
            &[],
        )
        .await
        .expect("post");
    }
    assert!(bad.posts().await > 2, "tried again after the cool-down");
    // A server's last replica in rotation is never ejected: its callers
    // get its errors rather than no server at all.
    let alone = Gateway::start(
        &mock_bundle(&[bad.addr], "").replace(
            "health_check: {interval: 1s}",
            "health_check: {interval: 1h, eject: {failures: 2, cooldown: 3s}}",
        ),
        true,
    )
    .expect("gateway");
    fail_mock(&bad, 502).await;
    for i in 0..5 {
        post_json(
            &alone.url("/mock/mcp"),
            call(i, "echo", json!({"text": "x"})),
            &[],
        )
        .await
        .expect("post");
    }
    assert_eq!(healthy(&alone, bad.addr).await, Some(true));
    assert!(!alone
        .metrics()
        .await
        .contains("warden_upstream_ejections_total{server=\"mock\"}"));
}

/// A reply that outlives the bundle it began under follows the new one: a
/// kill switch applied while a call's SSE stream is under way (pausing the
/// server, or only the tool called), or a bundle without the server, stops
/// the stream; no event the server sends after the change reaches the
/// client, and the final result never does.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_under_way_stops_when_the_kill_switch_pauses_it() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], ""), false).expect("gateway");
    let url = gw.url("/mock/mcp");
    let client: Client<_, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let reloads = |st: Value| st["bundle"]["reloads"].as_u64().unwrap_or(0);
    let mut applied = reloads(gw.status().await);
    for (n, (switch, bundle)) in [
        (
            "the server paused",
            mock_bundle(&[mock.addr], "kill_switch:\n  servers: [mock]\n"),
        ),
        (
            "the tool paused",
            mock_bundle(&[mock.addr], "kill_switch:\n  tools: [progress]\n"),
        ),
        (
            "the server removed",
            mock_bundle(&[mock.addr], "")
                .replace("name: mock", "name: other")
                .replace("server: mock", "server: other"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // Back to no switch, and a stream of 200 events 25 ms apart (5 s).
        std::fs::write(
            gw.dir.path().join("warden.yaml"),
            mock_bundle(&[mock.addr], &format!("# round {n}\n")),
        )
        .expect("edit");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reloads(gw.status().await) <= applied {
            assert!(std::time::Instant::now() < deadline, "no reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        applied = reloads(gw.status().await);
        let req = http::Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_body_util::Full::new(Bytes::from(call(
                9,
                "progress",
                json!({"steps": 200, "delay_ms": 25}),
            ))))
            .expect("req");
        let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
            .await
            .expect("timely")
            .expect("resp");
        assert_eq!(resp.status(), 200, "{switch}");
        // Every frame with the time it arrived, read as it comes.
        let mut body = resp.into_body();
        let frames = std::sync::Arc::new(std::sync::Mutex::new(
            Vec::<(std::time::Instant, String)>::new(),
        ));
        let sink = frames.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(Ok(f))) =
                tokio::time::timeout(Duration::from_secs(10), body.frame()).await
            {
                if let Ok(d) = f.into_data() {
                    let text = String::from_utf8_lossy(&d).into_owned();
                    sink.lock()
                        .expect("frames")
                        .push((std::time::Instant::now(), text));
                }
            }
            std::time::Instant::now()
        });
        let events = |frames: &[(std::time::Instant, String)]| {
            frames
                .iter()
                .map(|(_, t)| t.matches("notifications/progress").count())
                .sum::<usize>()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while events(&frames.lock().expect("frames")) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "{switch}: events flow"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The switch, while the stream runs.
        std::fs::write(gw.dir.path().join("warden.yaml"), bundle).expect("edit");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reloads(gw.status().await) <= applied {
            assert!(std::time::Instant::now() < deadline, "no reload");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        applied = reloads(gw.status().await);
        let switched = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the stream ends after the switch")
            .expect("reader");
        assert!(
            ended.duration_since(switched) < Duration::from_secs(3),
            "{switch}: the stream ended {:?} after the switch (it would run 5 s)",
            ended.duration_since(switched)
        );
        let frames = frames.lock().expect("frames").clone();
        // An event already on its way when the bundle changed may still
        // arrive; none the server sent later does, nor the final result.
        let late: Vec<&str> = frames
            .iter()
            .filter(|(at, _)| *at > switched + Duration::from_millis(200))
            .map(|(_, t)| t.as_str())
            .filter(|t| t.contains("notifications/progress"))
            .collect();
        assert!(
            late.is_empty(),
            "{switch}: events after the switch: {late:?}"
        );
        assert!(
            events(&frames) < 200 && !frames.iter().any(|(_, t)| t.contains("\"result\"")),
            "{switch}: the stream ran to its end"
        );
        if n == 0 {
            // Nor does a paused server get a new stream (a client's
            // reconnect): refused at admission, as its calls are.
            let (s, _, b) = request(
                &url,
                "GET",
                &[("accept", "text/event-stream")],
                Bytes::new(),
                false,
            )
            .await
            .expect("get");
            let text = String::from_utf8_lossy(&b);
            assert_eq!(s, 403, "{text}");
            assert!(
                text.contains("-31011") && text.contains("kill_switch"),
                "{text}"
            );
        }
    }
}

/// A body declared far over the limit is answered 413 before it is read.
/// The client is still writing it: the gateway takes in (and drops) what
/// arrives for a bounded while before it closes, so the close does not
/// reset the connection under the client (unread bytes at a close make
/// the kernel send a reset: the client's write fails, and a client that
/// writes its whole body before reading, as most do, reports the failed
/// write instead of the answer).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_still_sending_an_oversized_body_reads_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(
        &mock_bundle(&[mock.addr], "limits: {max_request_body: 64KiB}"),
        true,
    )
    .expect("gateway");
    for _ in 0..3 {
        let len = 16 << 20;
        let s = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let (mut rd, mut wr) = s.into_split();
        let head = format!(
            "POST /mock/mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < len {
                wr.write_all(&chunk).await?;
                sent += chunk.len();
            }
            wr.flush().await
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut out))
            .await
            .expect("the connection closes");
        let text = String::from_utf8_lossy(&out);
        assert!(
            read.is_ok() && text.starts_with("HTTP/1.1 413 "),
            "{read:?}: {text}"
        );
        let (_, answer) = text.split_once("\r\n\r\n").expect("a header");
        let answer: Value = serde_json::from_str(answer).expect("a JSON body");
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        // Clients that send the whole body before they read (most HTTP
        // libraries) report a failed write instead of the answer.
        let wrote = writer.await.expect("writer");
        assert!(wrote.is_ok(), "the client's write failed: {wrote:?}");
    }
    assert_eq!(mock.posts().await, 0);
}

/// A gateway in front of warden-mock for the slow-reader tests (`extra`
/// is added to its bundle).
fn slow_reader_gateway(extra: &str) -> (Mock, Gateway) {
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], extra), true).expect("gateway");
    (mock, gw)
}

/// Sends `body` to the gateway's mock route over a raw HTTP/1 connection
/// whose receive buffer is `rcvbuf` (the kernel's default: `None`), and
/// hands the connection back unread.
async fn send_raw(
    gw: &Gateway,
    body: &[u8],
    rcvbuf: Option<u32>,
    close: bool,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
    }
    let mut s = sock.connect(gw.addr).await.expect("connect");
    let head = format!(
        "POST /mock/mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{}Content-Length: {}\r\n\r\n",
        if close { "Connection: close\r\n" } else { "" },
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    s
}

/// The call's audit record, which says its reply was not delivered, naming
/// `why`.
fn assert_undelivered(gw: &Gateway, why: &str) -> Value {
    let recs = gw.audit_when(|r| r.iter().any(|x| x["reason"].is_string()));
    let rec = recs
        .iter()
        .find(|r| r["method"] == "tools/call")
        .expect("the call's record");
    let reason = rec["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the reply was not delivered") && reason.contains(why),
        "{rec}"
    );
    rec.clone()
}

/// A client that stops reading its reply loses its connection once a write
/// to it has made no progress for `timeouts.write`: it holds no task, reply
/// buffer or upstream connection for longer. The call's audit record says
/// the reply was not delivered, and the cut is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_after_timeouts_write() {
    use tokio::io::AsyncReadExt;
    let (_mock, gw) = slow_reader_gateway(
        "timeouts: {write: 1s}\nlimits: {max_request_body: 8MiB, max_response_body: 16MiB}",
    );
    // A reply of about 5 MB: more than the kernel's buffers on both sides
    // hold while the client reads nothing.
    let text = "deploy the billing service to three regions; ".repeat(110_000);
    let body = call(7, "echo", json!({ "text": text }));
    let mut s = send_raw(&gw, &body, Some(4096), false).await;
    // Nothing is read until the gateway gave up on the write.
    let metrics = gw
        .metrics_when(|m| m.contains("reason=\"client_write_stalled\""))
        .await;
    let metrics = if metrics.contains("reason=\"client_write_stalled\"") {
        metrics
    } else {
        // Judging 5 MB twice in a debug build can take a while.
        tokio::time::sleep(Duration::from_secs(10)).await;
        gw.metrics().await
    };
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("warden_refusals_total{reason=\"client_write_stalled\"} 1")),
        "{metrics}"
    );
    // The connection is closed: what the kernels held, then the end.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("the connection is closed");
    assert!(
        got.len() < text.len(),
        "the whole reply arrived ({} bytes, {read:?})",
        got.len()
    );
    // Cut once: the end of the exchange (the flush of what is buffered,
    // the connection's shutdown) does not wait out the limit again.
    let again = gw.metrics().await;
    assert!(
        again
            .lines()
            .any(|l| l.starts_with("warden_refusals_total{reason=\"client_write_stalled\"} 1")),
        "{again}"
    );
    let rec = assert_undelivered(&gw, "timeouts.write");
    assert_eq!(rec["upstream_status"], 200, "{rec}");
}

/// A client that keeps reading, but slower than `limits.min_response_rate`,
/// is cut off too, though no write ever waits `timeouts.write` in one go;
/// one that reads at full speed gets the whole reply from the same gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_slower_than_the_floor_is_cut_off() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncReadExt;
    let (_mock, gw) = slow_reader_gateway(
        "timeouts: {write: 5s}\nlimits: {max_request_body: 8MiB, max_response_body: 16MiB, min_response_rate: 64MiB}",
    );
    let text = "deploy the billing service to three regions; ".repeat(135_000);
    let body = call(7, "echo", json!({ "text": text }));
    let mut s = send_raw(&gw, &body, Some(128 << 10), false).await;
    // At most 32 KB every 64 ms: about 500 KB/s, steady, far below the
    // floor. The kernel wakes a waiting writer once about a third of its
    // send buffer (at most 4 MiB) has drained, so no single write waits
    // `timeouts.write` at this rate: only the floor can cut this client.
    let fast = std::sync::Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let fast = fast.clone();
        async move {
            let mut got = 0usize;
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
                if !fast.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(64)).await;
                }
            }
        }
    });
    let cut = "warden_refusals_total{reason=\"client_read_too_slow\"} 1";
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut metrics = gw.metrics().await;
    while !metrics.lines().any(|l| l == cut) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = gw.metrics().await;
    }
    assert!(metrics.lines().any(|l| l == cut), "{metrics}");
    assert!(
        !metrics.contains("reason=\"client_write_stalled\""),
        "no single write waited timeouts.write: {metrics}"
    );
    // The connection is closed: what the kernels held, then the end.
    fast.store(true, Ordering::Relaxed);
    let got = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the connection is closed")
        .expect("reader");
    assert!(got < text.len(), "the whole reply arrived ({got} bytes)");
    assert_undelivered(&gw, "min_response_rate");

    // A client reading at full speed is not touched by the floor.
    let mut s = send_raw(&gw, &body, None, true).await;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut all))
        .await
        .expect("the reply in time")
        .expect("read");
    let reply = String::from_utf8_lossy(&all);
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{}",
        &reply[..reply.len().min(300)]
    );
    assert!(all.len() > text.len(), "{} bytes", all.len());
    let after = gw.metrics().await;
    assert!(
        after.lines().any(|l| l.starts_with(cut)),
        "cut once: {after}"
    );
}

/// HTTP/2: a client that opens its stream's window one small event at a
/// time, each just well inside `timeouts.write`, while its connection reads
/// on, reads far below the floor: the stream's debt grows with every event
/// and the stream is reset within a few (each write alone would pass).
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_stream_opened_one_event_at_a_time_is_held_to_the_floor() {
    let (_mock, gw) = slow_reader_gateway("timeouts: {write: 1s}");
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut h2, conn) = h2::client::Builder::new()
        .initial_window_size(2000)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = call(8, "progress", json!({ "steps": 40, "delay_ms": 5 }));
    let req = http::Request::builder()
        .method("POST")
        .uri(gw.url("/mock/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(())
        .expect("request");
    let (resp, mut send) = h2.send_request(req, false).expect("send");
    send.send_data(Bytes::from(body), true).expect("body");
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("the header in time")
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let mut stream = resp.into_body();
    // Each event is let through 300 ms after the last: every write waits
    // about that long, a third of `timeouts.write`.
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            match stream.data().await {
                Some(Ok(d)) => {
                    got.extend_from_slice(&d);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = stream.flow_control().release_capacity(d.len());
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stream ends in time");
    let text = String::from_utf8_lossy(&got);
    assert!(end.is_err(), "the stream is reset, not completed: {text}");
    assert!(
        !text.contains("done 40"),
        "the reply did not arrive whole: {text}"
    );
    assert!(
        text.matches("notifications/progress").count() >= 2,
        "several events each passed alone before the debt cut: {text}"
    );
    let want = "warden_refusals_total{reason=\"client_stream_stalled\"} 1";
    let metrics = gw.metrics_when(|m| m.lines().any(|l| l == want)).await;
    assert!(metrics.lines().any(|l| l == want), "{metrics}");
    driver.abort();
}

/// HTTP/2: a large reply leaves in slices (`min_response_rate` ×
/// `timeouts.write` bytes each), so a client that reads well above the floor
/// gets all of it, even when the whole takes longer than `timeouts.write`.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_client_reading_above_the_floor_gets_a_reply_longer_than_timeouts_write() {
    use http_body_util::BodyExt as _;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let (_mock, gw) =
        slow_reader_gateway("timeouts: {write: 1s}\nlimits: {min_response_rate: 16KiB}");
    let text = "deploy the billing service to three regions; ".repeat(7_000);
    let req = http::Request::builder()
        .method("POST")
        .uri(gw.url("/mock/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(http_body_util::Full::new(Bytes::from(call(
            6,
            "echo",
            json!({ "text": text }),
        ))))
        .expect("request");
    // The stream's window opens only as frames are read: 32 KiB ahead,
    // one frame (at most 16 KiB) every 80 ms, about 200 KB/s.
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true)
        .http2_initial_stream_window_size(32u32 << 10)
        .http2_initial_connection_window_size(1u32 << 20);
    let client = b.build_http();
    let resp = client.request(req).await.expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let start = std::time::Instant::now();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("not reset").into_data() {
            got.extend_from_slice(&data);
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        start.elapsed() > Duration::from_secs(1),
        "the reply took longer than timeouts.write to read ({:?})",
        start.elapsed()
    );
    let reply: Value = serde_json::from_slice(&got).expect("the whole reply");
    assert_eq!(reply["result"]["content"][0]["text"], text.as_str());
}

const SHUT_WINDOW_BUNDLE: &str = "timeouts: {write: 1s}\ncatalog:\n  mock:\n    tools:\n      echo: {risk: LOW}\n      fixture: {risk: LOW}\n      add:\n        risk: LOW\n        input_schema: {type: object, required: [a, b], properties: {a: {type: number}, b: {type: number}}}\n";

/// HTTP/2: a stream whose flow-control window the client keeps shut, while
/// its connection reads on (so no write to the connection ever waits), is
/// reset once a write to it has waited `timeouts.write`, whether the reply
/// is whole (with a length) or streamed (SSE, no length: ending it cleanly
/// would pass it off as complete); each call's record says the reply was
/// not delivered.
#[tokio::test(flavor = "multi_thread")]
async fn an_h2_stream_whose_window_stays_shut_is_cut_after_timeouts_write() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let mock = Mock::start(&[]).expect("mock");
    let gw = Gateway::start(&mock_bundle(&[mock.addr], SHUT_WINDOW_BUNDLE), true).expect("gateway");
    let post = |id: u64, tool: &str, args: Value| {
        http::Request::builder()
            .method("POST")
            .uri(gw.url("/mock/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(http_body_util::Full::new(Bytes::from(call(id, tool, args))))
            .expect("request")
    };
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true).http2_initial_stream_window_size(0u32);
    let shut = b.build_http();
    let replies = [
        (
            3,
            "echo",
            json!({ "text": "deploy the billing service" }),
            "application/json",
        ),
        // Two chunks 50 ms apart: relayed as a stream, without a length.
        (
            4,
            "fixture",
            json!({ "name": "clean", "text": "deploy the billing service", "sse": true }),
            "text/event-stream",
        ),
        // Arguments outside the tool's schema: the gateway's own answer,
        // whose record must keep the verdict (not become an internal
        // error) when it is not taken.
        (5, "add", json!({ "a": "one" }), "application/json"),
    ];
    for (id, tool, args, kind) in replies {
        let resp =
            tokio::time::timeout(Duration::from_secs(10), shut.request(post(id, tool, args)))
                .await
                .expect("the header in time")
                .expect("response");
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with(kind), "{ct}");
        let body = tokio::time::timeout(Duration::from_secs(15), resp.into_body().collect())
            .await
            .expect("the stream ends: it is not held open");
        assert!(
            body.is_err(),
            "{kind}: the stream is reset, not ended as if whole"
        );
    }
    let want = "warden_refusals_total{reason=\"client_stream_stalled\"} 3";
    let metrics = gw.metrics_when(|m| m.lines().any(|l| l == want)).await;
    assert!(metrics.lines().any(|l| l == want), "{metrics}");
    let recs = gw.audit_when(|r| {
        r.iter()
            .filter(|x| x["method"] == "tools/call" && x["reason"].is_string())
            .count()
            >= 3
    });
    for id in [3, 4, 5] {
        let rec = recs
            .iter()
            .find(|r| r["method"] == "tools/call" && r["jsonrpc_id"] == id)
            .unwrap_or_else(|| panic!("call {id}'s record: {recs:?}"));
        let reason = rec["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("not delivered") && reason.contains("timeouts.write"),
            "{rec}"
        );
    }
    let blocked = recs
        .iter()
        .find(|r| r["method"] == "tools/call" && r["jsonrpc_id"] == 5)
        .expect("the blocked call's record");
    assert!(
        blocked["outcome"] != "forwarded" && blocked["outcome"] != "internal",
        "the verdict is kept: {blocked}"
    );
    // A client that opens its windows is served as ever.
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true);
    let open = b.build_http();
    let resp = open
        .request(post(
            5,
            "echo",
            json!({ "text": "deploy the billing service" }),
        ))
        .await
        .expect("response");
    assert_eq!(resp.status().as_u16(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("deploy the billing service"),
        "{body:?}"
    );
}

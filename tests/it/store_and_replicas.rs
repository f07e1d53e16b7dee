//! Flow state a forgetting store cannot loosen; sessions that outlive their replica's crash; streams refused at once; refusals that keep what they read.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::hostile::{Hostile, Piece, Reply};
use warden_tests::{
    free_port, mock_bundle, post_json, root, run_with_timeout, Gateway, Proc, Redis,
};

// ---------------------------------------------------------------------------
// Flow state kept by every replica that saw it, read or written.
// ---------------------------------------------------------------------------

fn peers() -> PathBuf {
    root().join("tests/peers")
}

fn python() -> PathBuf {
    let p = peers().join(".venv/bin/python");
    assert!(
        p.exists(),
        "Python peers missing: run scripts/setup.sh (creates tests/peers/.venv with mcp==2.3.0)"
    );
    p
}

/// `py_flow_server.py all` (every flow tool on one server).
fn flow_server() -> (Proc, std::net::SocketAddr) {
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(python())
            .arg(peers().join("py_flow_server.py"))
            .arg(port.to_string())
            .arg("all")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python flow server");
        let mut p = Proc {
            child,
            name: "flow server".into(),
        };
        if warden_tests::wait_listening(&mut p, &[port], Duration::from_secs(30)).is_ok() {
            return (p, format!("127.0.0.1:{port}").parse().expect("addr"));
        }
    }
    panic!("the flow server never listened");
}

const AGENT: &str = "wk_flow_agent7_secret";

/// Runs `steps` (see `py_flow_client.py`) across `gateways`; one result per step.
fn scenario(gateways: &[String], steps: &Value) -> Vec<Value> {
    let mut cmd = Command::new(python());
    cmd.arg(peers().join("py_flow_client.py"))
        .arg(serde_json::to_string(gateways).expect("json"))
        .arg(steps.to_string())
        .env("WARDEN_API_KEY", AGENT);
    let (ok, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(120)).expect("client ran");
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        ok && lines.last().is_some_and(|l| l["ok"] == true),
        "flow client failed:\n{out}\n{err}"
    );
    lines
        .into_iter()
        .filter(|l| l.get("step").is_some())
        .collect()
}

fn step(gw: u8, session: &str, tool: &str, args: Value) -> Value {
    json!({"gw": gw, "session": session, "path": "/one/mcp", "tool": tool, "args": args})
}

fn blocked(r: &Value) -> bool {
    r["error"] == true
        && r["text"]
            .as_str()
            .is_some_and(|t| t.contains("(flow_blocked)"))
}

/// Redis restarted empty (no persistence): the replica that wrote the flow
/// and the one that only read it both still refuse the send, and each
/// writes what it knows back, so a replica that saw nothing of the flow
/// refuses it too. Tracked per session and per principal.
#[test]
fn a_store_that_forgets_cannot_loosen_a_flow() {
    let (_server, all) = flow_server();
    for track in ["principal", "session"] {
        let mut redis = Redis::start(free_port());
        let dir = tempfile::tempdir().expect("tmp");
        let seal = dir.path().join("seal.key");
        std::fs::write(&seal, b"fleet-session-secret-0123456789abcdef-flows\n").expect("seal");
        let hash = warden_config::access::hash_api_key(AGENT, &[7u8; 16]);
        let yaml = format!(
            "version: 1\nidentity:\n  resource: http://127.0.0.1/one/mcp\n  api_keys:\n    - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{hash}\", attributes: {{clearance: restricted}}}}\nflows:\n  track: {track}\ncatalog:\n  one:\n    flow: []\n    tools:\n      get_employee: {{classification: restricted, flow: [private]}}\n      fetch: {{flow: [untrusted]}}\n      post: {{flow: [sink], classification: public}}\nredis: {{url: \"redis://127.0.0.1:{port}\", timeout: 300ms}}\nsessions: {{seal_key_file: \"{seal}\"}}\nservice_groups:\n  - name: g\n    servers:\n      - {{name: one, upstreams: [\"{all}\"]}}\nroutes:\n  - {{prefix: /one, server: one}}\n",
            port = redis.port,
            seal = seal.display(),
        );
        let gws: Vec<Gateway> = (0..3)
            .map(|_| Gateway::start(&yaml, true).expect("gateway"))
            .collect();
        let urls: Vec<String> = gws.iter().map(|g| format!("http://{}", g.addr)).collect();
        // One client session: replica 0 serves the read and the fetch,
        // replica 1 only reads the state when it judges the send.
        let mut steps = vec![
            step(0, "s", "get_employee", json!({"id": "7"})),
            step(
                0,
                "s",
                "fetch",
                json!({"url": "https://news.example.com/a"}),
            ),
            step(1, "s", "post", json!({"text": "employee 7"})),
            json!({"restart_store": true}),
            step(1, "s", "post", json!({"text": "employee 7"})),
            step(0, "s", "post", json!({"text": "employee 7"})),
            step(2, "s", "post", json!({"text": "employee 7"})),
        ];
        // Per principal: two runs of the client, the store restarted
        // between them. Per session: one run (one MCP session), the client
        // pausing while the store is emptied.
        let cut = steps
            .iter()
            .position(|s| s.get("restart_store").is_some())
            .expect("cut");
        let after: Vec<Value> = steps.split_off(cut + 1);
        steps.pop();
        if track == "session" {
            // One MCP session across the flush: the client pauses until
            // the store has forgotten everything.
            let flag = dir.path().join("flushed");
            let mut all_steps = steps.clone();
            all_steps.push(json!({"pause": flag.display().to_string()}));
            all_steps.extend(after.iter().cloned());
            let port = redis.port;
            let flag2 = flag.clone();
            let flusher = std::thread::spawn(move || {
                // Flushes once the first three steps ran.
                let deadline = Instant::now() + Duration::from_secs(90);
                while Instant::now() < deadline {
                    if std::fs::metadata(flag2.with_extension("ready")).is_ok() {
                        let out = Command::new("redis-cli")
                            .args(["-p", &port.to_string(), "FLUSHALL"])
                            .output()
                            .expect("redis-cli");
                        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
                        std::fs::write(&flag2, b"1").expect("flag");
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let r = scenario(&urls, &Value::Array(all_steps));
            flusher.join().expect("flusher");
            assert!(r[0]["error"] == false && r[1]["error"] == false, "{r:?}");
            assert!(blocked(&r[2]), "replica 1 reads the fleet's state: {r:?}");
            assert!(
                blocked(&r[4]),
                "{track}: the replica that only read the state let the send out after the store forgot: {r:?}"
            );
            assert!(blocked(&r[5]), "{track}: the writing replica: {r:?}");
            assert!(
                blocked(&r[6]),
                "{track}: a replica that saw nothing reads what the others wrote back: {r:?}"
            );
        } else {
            let r = scenario(&urls, &Value::Array(steps));
            assert!(r[0]["error"] == false && r[1]["error"] == false, "{r:?}");
            assert!(blocked(&r[2]), "replica 1 reads the fleet's state: {r:?}");
            // Redis restarted: nothing of the flow is left in it.
            redis.proc.child.kill().expect("kill redis");
            let _ = redis.proc.child.wait();
            let port = redis.port;
            redis = Redis::start(port);
            assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
            // The gateways reconnect.
            std::thread::sleep(Duration::from_secs(3));
            let r = scenario(&urls, &Value::Array(after));
            assert!(
                blocked(&r[0]),
                "{track}: the replica that only read the state let the send out after the store forgot: {r:?}"
            );
            assert!(blocked(&r[1]), "{track}: the writing replica: {r:?}");
            assert!(
                blocked(&r[2]),
                "{track}: a replica that saw nothing reads what the others wrote back: {r:?}"
            );
        }
        assert!(
            redis
                .cli(&["--scan", "--pattern", "warden:flow:*"])
                .lines()
                .any(|l| !l.is_empty())
                || redis
                    .cli(&["--scan", "--pattern", "*flow*"])
                    .lines()
                    .any(|l| !l.is_empty()),
            "the merged state was written back"
        );
        drop(gws);
    }
}

// ---------------------------------------------------------------------------
// A JSON reply holding a second value: refused at that value's first byte.
// ---------------------------------------------------------------------------

fn chunked_json(pieces: Vec<Piece>) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: pieces,
        chunked: true,
        reason: None,
        interim: Vec::new(),
    }
}

fn bytes(s: &str) -> Piece {
    Piece::Bytes(s.as_bytes().to_vec())
}

/// A server answering `application/json` with one JSON value per line on a
/// stream it keeps open (a 2026-07-28 listen stream, a streaming
/// elicitation): the client is refused as soon as the second value's first
/// byte arrives — whatever whitespace separates the values, however the
/// bytes are split — not when the read timeout fires.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_reply_with_a_second_value_is_refused_at_its_first_byte() {
    let h = Hostile::start().await;
    let gw = Gateway::start(&mock_bundle(&[h.addr], ""), false).expect("gateway");
    let url = gw.url("/mock/mcp");
    let ack =
        json!({"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{}})
            .to_string();
    let result = json!({"jsonrpc":"2.0","id":1,"result":{}}).to_string();
    let second = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}).to_string();
    let hold = Piece::Wait(Duration::from_secs(40));
    // (first value, separator and second value's first byte as sent, the rest).
    let cases: Vec<(&str, Vec<Piece>)> = vec![
        (
            "newline",
            vec![
                bytes(&format!("{ack}\n")),
                bytes(&format!("{second}\n")),
                hold.clone(),
            ],
        ),
        (
            "one piece",
            vec![bytes(&format!("{ack}\n{second}\n")), hold.clone()],
        ),
        (
            "no separator",
            vec![bytes(&ack), bytes(&second), hold.clone()],
        ),
        (
            "crlf and tabs",
            vec![bytes(&format!("{ack}\r\n\t ")), bytes("{"), hold.clone()],
        ),
        (
            "first byte alone",
            vec![bytes(&format!("{ack} ")), bytes("{"), hold.clone()],
        ),
        (
            "split first value",
            vec![
                bytes(&ack[..7]),
                bytes(&format!("{}\n", &ack[7..])),
                bytes("["),
                hold.clone(),
            ],
        ),
        (
            "response then value",
            vec![
                bytes(&format!("{result}\n")),
                bytes(&format!("{second}\n")),
                hold.clone(),
            ],
        ),
        (
            "a scalar after",
            vec![bytes(&format!("{result}\n")), bytes("1"), hold.clone()],
        ),
        (
            "a string after",
            vec![bytes(&result), bytes("\"x"), hold.clone()],
        ),
        (
            "a form feed after",
            vec![bytes(&result), bytes("\u{c}"), hold.clone()],
        ),
        (
            "a no-break space after",
            vec![bytes(&result), bytes("\u{a0}"), hold.clone()],
        ),
        (
            "stray close",
            vec![bytes(&format!("{result}\n")), bytes("}"), hold.clone()],
        ),
    ];
    let listen = json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}).to_string();
    let hs = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "subscriptions/listen"),
    ];
    for (name, pieces) in cases {
        h.script([chunked_json(pieces)]);
        let began = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(15),
            post_json(&url, listen.clone(), &hs),
        )
        .await;
        let waited = began.elapsed();
        let (status, _, body) = got
            .unwrap_or_else(|_| panic!("{name}: no answer within 15 s (the stream stayed open)"))
            .expect("post");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("several json values") && text.contains("-31003"),
            "{name}: {status} {text}"
        );
        assert!(
            !text.contains("list_changed"),
            "{name}: the second value passed: {text}"
        );
        assert!(
            waited < Duration::from_secs(10),
            "{name}: refused after {waited:?}"
        );
    }
    // Control: one value and the stream kept open, then ended, is relayed.
    h.script([chunked_json(vec![
        bytes(&format!("{result}\n \t\r\n")),
        Piece::Wait(Duration::from_millis(300)),
    ])]);
    let (status, _, body) = post_json(&url, listen.clone(), &hs).await.expect("post");
    let text = String::from_utf8_lossy(&body);
    assert!(
        status == 200 && text.contains("\"result\""),
        "{status} {text}"
    );
}

// ---------------------------------------------------------------------------
// Parse refusals record what was read before the fault.
// ---------------------------------------------------------------------------

/// Every parse refusal's audit record names the id, method and tool (or
/// URI) read before the fault — when they were read unambiguously — and
/// never a value the parser had not finished reading.
#[tokio::test(flavor = "multi_thread")]
async fn a_parse_refusal_records_what_was_read_before_it() {
    let h = Hostile::start().await;
    let gw = Gateway::start(&mock_bundle(&[h.addr], ""), false).expect("gateway");
    let url = gw.url("/mock/mcp");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let call = |id: u64, rest: &str| {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",{rest}")
    };
    // (body, id, method, tool): `None` where nothing may be recorded.
    type Case = (
        Vec<u8>,
        Option<u64>,
        Option<&'static str>,
        Option<&'static str>,
    );
    let mut cases: Vec<Case> = vec![
        (call(11, "\"arguments\":{\"a\":1,\"a\":2}}}").into_bytes(), Some(11), Some("tools/call"), Some("echo")),
        (call(12, "\"arguments\":{\"a\":1,\"A\":2}}}").into_bytes(), Some(12), Some("tools/call"), Some("echo")),
        (call(13, "\"Arguments\":{}}}").into_bytes(), Some(13), Some("tools/call"), Some("echo")),
        (call(14, "\"arguments\":{\"a\":").into_bytes(), Some(14), Some("tools/call"), Some("echo")),
        (call(15, &format!("\"arguments\":{{\"a\":{deep}}}}}}}")).into_bytes(), Some(15), Some("tools/call"), Some("echo")),
        (call(16, "\"arguments\":{\"a\":\"\\ud800\"}}}").into_bytes(), Some(16), Some("tools/call"), Some("echo")),
        (call(17, "\"arguments\":{\"a\":tru}}}").into_bytes(), Some(17), Some("tools/call"), Some("echo")),
        (
            br#"{"jsonrpc":"1.0","id":18,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#.to_vec(),
            Some(18), Some("tools/call"), Some("echo"),
        ),
        (
            br#"{"jsonrpc":"2.0","id":19,"method":"resources/read","params":{"uri":"file:///a.txt","_meta":{"k":1,"k":2}}}"#.to_vec(),
            Some(19), Some("resources/read"), Some("file:///a.txt"),
        ),
        (
            br#"{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"echo","extra":1,"arguments":{}},"x":1}"#.to_vec(),
            Some(20), Some("tools/call"), Some("echo"),
        ),
        // Cut inside the tool's name: the name was never finished.
        (br#"{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"ec"#.to_vec(), Some(21), Some("tools/call"), None),
        // Cut inside the method.
        (br#"{"jsonrpc":"2.0","id":22,"method":"tools/ca"#.to_vec(), Some(22), None, None),
        // Ambiguous: two methods, two names, two ids, two params.
        (
            br#"{"jsonrpc":"2.0","id":23,"method":"tools/list","method":"tools/call","params":{"name":"echo"}}"#.to_vec(),
            Some(23), None, None,
        ),
        (
            br#"{"jsonrpc":"2.0","id":24,"method":"tools/call","params":{"name":"echo","Name":"rm"}}"#.to_vec(),
            Some(24), Some("tools/call"), None,
        ),
        (
            br#"{"jsonrpc":"2.0","id":25,"method":"tools/call","params":{"name":"echo","name":"rm"}}"#.to_vec(),
            Some(25), Some("tools/call"), None,
        ),
        (
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"},"id":26,"ID":27}"#.to_vec(),
            None, Some("tools/call"), Some("echo"),
        ),
        (
            br#"{"jsonrpc":"2.0","id":28,"method":"tools/call","params":{"name":"echo"},"params":{"name":"rm"}}"#.to_vec(),
            Some(28), Some("tools/call"), None,
        ),
        (
            br#"{"jsonrpc":"2.0","id":29,"method":"tools/call","params":{"name":"echo"},"Method":"tools/list"}"#.to_vec(),
            Some(29), None, None,
        ),
    ];
    // Invalid UTF-8 after the tool's name.
    let mut bad = call(30, "\"arguments\":{\"a\":\"").into_bytes();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b"\"}}}");
    cases.push((bad, Some(30), Some("tools/call"), Some("echo")));
    // Invalid UTF-8 inside the tool's name: nothing of it.
    let mut bad =
        br#"{"jsonrpc":"2.0","id":31,"method":"tools/call","params":{"name":"ec"#.to_vec();
    bad.extend_from_slice(&[0xc3, 0x28]);
    bad.extend_from_slice(b"ho\"}}");
    cases.push((bad, Some(31), Some("tools/call"), None));
    let mut failures = Vec::new();
    for (i, (body, id, method, tool)) in cases.iter().enumerate() {
        let before = gw.audit().len();
        let (status, _, reply) = post_json(&url, body.clone(), &[]).await.expect("post");
        let recs = gw.audit_when(|r| r.len() > before);
        let rec = recs.last().cloned().unwrap_or_default();
        let shown = String::from_utf8_lossy(body);
        assert!(
            status >= 400 || String::from_utf8_lossy(&reply).contains("\"error\""),
            "case {i} was not refused: {shown}"
        );
        let want_id = id.map(|n| json!(n));
        let got = (
            rec.get("jsonrpc_id").cloned(),
            rec.get("method").cloned(),
            rec.get("tool").cloned(),
        );
        let want = (want_id, method.map(|m| json!(m)), tool.map(|t| json!(t)));
        if got != want {
            failures.push(format!(
                "case {i} {shown}\n  want {want:?}\n  got  {got:?}\n  {rec}"
            ));
        }
    }
    assert!(
        h.received().iter().all(|r| r.method != "POST"),
        "a refused body reached the server"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An upstream that answers every request with `head` then `pieces`
/// (each written as it is, a pause after each), then holds the
/// connection open: a body delimited by the connection's close.
async fn raw_upstream(head: &'static str, pieces: Vec<Vec<u8>>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let pieces = pieces.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head_text = String::from_utf8_lossy(&got[..i]).to_ascii_lowercase();
                        let len: usize = head_text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= i + 4 + len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(head.as_bytes()).await;
                for p in pieces {
                    let _ = s.write_all(&p).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_secs(40)).await;
            });
        }
    });
    addr
}

/// The same through a body the connection's close ends, and through
/// values a scalar opens.
#[tokio::test(flavor = "multi_thread")]
async fn a_close_delimited_json_reply_with_a_second_value_is_refused_at_once() {
    let ack = json!({"jsonrpc":"2.0","id":1,"result":{}}).to_string();
    let cases: Vec<(&str, &'static str, Vec<Vec<u8>>)> = vec![
        (
            "close-delimited",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            vec![format!("{ack}\n").into_bytes(), b"{\"jsonrpc\":\"2.0\",".to_vec()],
        ),
        (
            "chunked, a scalar first",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            vec![b"1\r\n1\r\n".to_vec(), b"1\r\n{\r\n".to_vec()],
        ),
        (
            "chunked, a literal then a string",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            vec![b"4\r\ntrue\r\n".to_vec(), b"1\r\n\"\r\n".to_vec()],
        ),
    ];
    for (name, head, pieces) in cases {
        let up = raw_upstream(head, pieces).await;
        let gw = Gateway::start(&mock_bundle(&[up], ""), false).expect("gateway");
        let began = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(15),
            post_json(
                &gw.url("/mock/mcp"),
                json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true}}}).to_string(),
                &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "subscriptions/listen")],
            ),
        )
        .await;
        let (status, _, body) = got
            .unwrap_or_else(|_| panic!("{name}: no answer within 15 s (the stream stayed open)"))
            .expect("post");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("-31003"), "{name}: {status} {text}");
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{name}: {:?}",
            began.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------
// A crashed upstream replica: its sessions answered as unknown (404).
// ---------------------------------------------------------------------------

/// One MCP client as SDKs behave: initialize, then calls on its session;
/// a 404 on the session makes it initialize again. Returns the calls, the
/// re-initialisations, the calls sent after the kill that failed, and the
/// calls sent before it that failed (in flight when it came).
async fn client(
    url: String,
    stop: Instant,
    killed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u64, u64, Vec<String>, u64) {
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
    .to_string();
    let open = |url: String| {
        let init = init.clone();
        async move {
            let (s, h, _) = post_json(&url, init, &[]).await.expect("initialize");
            assert_eq!(s, 200);
            let sid = warden_tests::header(&h, "mcp-session-id")
                .expect("session")
                .to_owned();
            let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"}).to_string();
            let _ = post_json(
                &url,
                note,
                &[
                    ("mcp-session-id", &sid),
                    ("mcp-protocol-version", "2025-06-18"),
                ],
            )
            .await;
            sid
        }
    };
    let mut sid = open(url.clone()).await;
    let (mut calls, mut reinits, mut failures) = (0u64, 0u64, Vec::new());
    let mut in_flight = 0u64;
    let mut id = 1u64;
    while Instant::now() < stop {
        id += 1;
        let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}).to_string();
        let after_kill = killed.load(std::sync::atomic::Ordering::SeqCst);
        let (s, _, b) = post_json(
            &url,
            call,
            &[
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        )
        .await
        .expect("call");
        calls += 1;
        let text = String::from_utf8_lossy(&b).into_owned();
        if s == 404 {
            sid = open(url.clone()).await;
            reinits += 1;
            continue;
        }
        let ok = s == 200 && text.contains("\"result\"");
        // A call written before the kill may have reached the replica (it
        // keeps its upstream error, at most one per client); every call
        // sent after it succeeds or is answered 404. So may one sent just
        // after it on a pooled connection to the replica opened before
        // it, whose close the gateway had not yet seen: written, then
        // closed with no reply, it keeps its 502 as any written call does
        // (it may have run). A call the gateway could not write (the
        // replica refusing connections) is answered 404.
        let written_then_closed = s == 502 && text.contains("connectionclosed");
        if !ok && after_kill && !written_then_closed {
            failures.push(format!("{s} {text}"));
        } else if !ok {
            in_flight += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (calls, reinits, failures, in_flight)
}

/// Two warden-mock replicas behind one server, 8 sessions calling
/// continuously, one replica SIGKILLed: every session on it is answered
/// 404 (the request never reached a replica), its client initializes
/// again, and no call fails — not before, not after the re-initialise —
/// but one per client written before the gateway saw the replica gone
/// (it keeps its 502: it may have run).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_replica_strands_no_session() {
    let a = warden_tests::Mock::start(&["--require-session"]).expect("mock a");
    let mut b = warden_tests::Mock::start(&["--require-session"]).expect("mock b");
    let gw = Gateway::start(&mock_bundle(&[a.addr, b.addr], ""), true).expect("gateway");
    let url = gw.url("/mock/mcp");
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Instant::now() + Duration::from_secs(8);
    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(client(url.clone(), stop, killed.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_b = b.stats().await.expect("stats")["posts"]
        .as_u64()
        .unwrap_or(0);
    assert!(before_b > 0, "replica b served some sessions");
    // SIGKILL: no goodbye, connections refused from now on.
    b.proc.child.kill().expect("kill b");
    let _ = b.proc.child.wait();
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut calls, mut reinits, mut failures, mut in_flight) = (0, 0, Vec::new(), 0);
    for t in tasks {
        let (c, r, f, i) = t.await.expect("client");
        calls += c;
        reinits += r;
        failures.extend(f);
        in_flight += i;
    }
    assert!(
        in_flight <= 8,
        "{in_flight} calls in flight at the kill failed"
    );
    assert!(calls > 100, "{calls} calls");
    assert!(reinits > 0, "no client re-initialised after the kill");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed ({reinits} re-initialisations):\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

//! Transparent to the MCP conformance suite: what a server answered reaches
//! the client as the server said it, unless the gateway refuses something
//! on purpose, and then the refusal says truly what happened.

use serde_json::json;
use warden_tests::hostile::{Piece, Reply};
use warden_tests::{header, request};

use super::{messages, post_with, setup_with, BUNDLE, POLICY};

/// A session's end answered `200 text/plain` with an empty chunked body
/// (what the reference server sends) reaches the client as a 200: the
/// session ended. Whatever body a DELETE's 2xx carries is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_as_the_server_said() {
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    h.script([Reply::json(
        &json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18",
            "capabilities":{},"serverInfo":{"name":"s","version":"1"}}})
        .to_string(),
    )
    .header("mcp-session-id", "srv-1")]);
    let (s, hs, _) = post_with(&gw, &init.to_string(), &[]).await;
    assert_eq!(s, 200);
    let sid = header(&hs, "mcp-session-id").expect("session").to_owned();
    let empty_chunked = Reply {
        chunked: true,
        body: vec![],
        ..Reply::typed(200, Some("text/plain"), "")
    };
    let worded = Reply {
        chunked: true,
        body: vec![Piece::Bytes(b"OK".to_vec())],
        ..Reply::typed(200, Some("text/plain; charset=utf-8"), "")
    };
    for (i, reply) in [empty_chunked, worded, Reply::typed(204, None, "")]
        .into_iter()
        .enumerate()
    {
        h.script([reply.clone()]);
        let (s, hs, body) = request(
            &gw.url("/mock/mcp"),
            "DELETE",
            &[
                ("mcp-session-id", sid.as_str()),
                ("mcp-protocol-version", "2025-06-18"),
            ],
            Default::default(),
            false,
        )
        .await
        .expect("delete");
        assert_eq!(
            s,
            reply.status,
            "variant {i}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            body.is_empty(),
            "variant {i}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(header(&hs, "content-type").is_none(), "variant {i}");
    }
    // A POST's 2xx of a type MCP does not define is still refused, naming
    // the status the server sent, not the gateway's.
    h.script([Reply::typed(200, Some("text/plain"), "hello")]);
    let ping = json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string();
    let (s, _, text) = post_with(
        &gw,
        &ping,
        &[
            ("mcp-session-id", sid.as_str()),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(s, 502, "{text}");
    let msg = messages(&text)[0]["error"]["message"].clone();
    assert!(
        msg.as_str()
            .is_some_and(|m| m.contains("HTTP 200") && !m.contains("502")),
        "{text}"
    );
}

/// A reply declared `application/json` that carries a second JSON value (a
/// broken server, on a stream it keeps open) is refused as soon as the
/// second value begins, not when the read timeout fires.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_json_value_is_refused_when_it_begins() {
    let (h, gw) = setup_with(&format!("{BUNDLE}timeouts: {{read: 60s}}\n"), POLICY).await;
    let first = r#"{"jsonrpc":"2.0","id":5,"result":{"note":"a } and a \" in a string"}}"#;
    for (i, second) in [
        r#"{"jsonrpc":"2.0","id":6,"result":{}}"#,
        "[]",
        "7",
        "\"x\"",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = Reply {
            chunked: true,
            body: vec![
                Piece::Bytes(format!("{first}\n").into_bytes()),
                Piece::Bytes(format!("{second}\n").into_bytes()),
                Piece::Wait(std::time::Duration::from_secs(120)),
            ],
            ..Reply::json("")
        };
        h.script([reply]);
        let ping = json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string();
        let (s, _, text) = post_with(&gw, &ping, &[]).await;
        assert_eq!(s, 502, "variant {i}: {text}");
        let v = &messages(&text)[0];
        assert_eq!(v["error"]["code"], -31003, "variant {i}: {text}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("several json values")),
            "variant {i}: {text}"
        );
    }
    // One value in several chunks, whitespace after it: judged and passed.
    h.script([Reply {
        chunked: true,
        body: vec![
            Piece::Bytes(br#"{"jsonrpc":"2.0","id":5,"#.to_vec()),
            Piece::Bytes(br#""result":{"s":"{[\"]}"}}"#.to_vec()),
            Piece::Bytes(b"\n\n".to_vec()),
        ],
        ..Reply::json("")
    }]);
    let ping = json!({"jsonrpc":"2.0","id":5,"method":"ping"}).to_string();
    let (s, _, text) = post_with(&gw, &ping, &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(messages(&text)[0]["result"]["s"], "{[\"]}", "{text}");
}

/// DNS rebinding is refused by `Host`, not by refusing every browser:
/// on a loopback listener a request must name a loopback name (or a
/// route's host, or `security.allowed_hosts`), and a page of one of those
/// names may call; any other `Host` or `Origin` is refused, unforwarded.
#[tokio::test(flavor = "multi_thread")]
async fn host_names_guard_against_rebinding_and_local_pages_may_call() {
    let (h, gw) = setup_with(
        &format!("{BUNDLE}security: {{allowed_hosts: [mcp.internal]}}\n"),
        POLICY,
    )
    .await;
    let port = gw.addr.port().to_string();
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string();
    let on = |host: String, origin: Option<String>| {
        let (gw, ping, h) = (&gw, &ping, &h);
        async move {
            h.reset();
            h.script([Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)]);
            let mut hs = vec![("host", host.as_str())];
            if let Some(o) = &origin {
                hs.push(("origin", o.as_str()));
            }
            let (s, _, text) = post_with(gw, ping, &hs).await;
            (s, text, h.received().len())
        }
    };
    for (host, origin) in [
        (
            format!("localhost:{port}"),
            Some(format!("http://localhost:{port}")),
        ),
        (
            format!("127.0.0.1:{port}"),
            Some("http://127.0.0.1:5173".into()),
        ),
        (
            format!("[::1]:{port}"),
            Some("https://app.localhost".into()),
        ),
        ("LOCALHOST".into(), None),
        ("mcp.internal".into(), Some("https://mcp.internal".into())),
    ] {
        let (s, text, n) = on(host.clone(), origin.clone()).await;
        assert_eq!((s, n), (200, 1), "{host} {origin:?}: {text}");
    }
    for (host, origin, reason) in [
        ("evil.example".to_owned(), None, "Host"),
        (
            format!("evil.example:{port}"),
            Some("http://evil.example".to_owned()),
            "Host",
        ),
        ("localhost.evil.example".into(), None, "Host"),
        ("127.0.0.1.nip.io".into(), None, "Host"),
        (
            "localhost".into(),
            Some("http://evil.example".into()),
            "Origin",
        ),
        ("localhost".into(), Some("null".into()), "Origin"),
        (
            "localhost".into(),
            Some("http://localhost@evil.example".into()),
            "Origin",
        ),
        ("localhost".into(), Some("file://".into()), "Origin"),
    ] {
        let (s, text, n) = on(host.clone(), origin.clone()).await;
        assert_eq!((s, n), (403, 0), "{host} {origin:?}: {text}");
        assert!(
            messages(&text)[0]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(reason)),
            "{host} {origin:?}: {text}"
        );
    }
}

/// Two `Host` headers are ambiguous (one peer reads the first, another the
/// last, and a loopback check could judge the other one): refused with 400
/// and never forwarded, whichever is first.
#[tokio::test(flavor = "multi_thread")]
async fn two_host_headers_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (h, gw) = setup_with(BUNDLE, POLICY).await;
    let body = json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string();
    for (a, b) in [("localhost", "evil.example"), ("evil.example", "localhost")] {
        h.reset();
        h.script([Reply::json(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)]);
        let mut c = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        let req = format!(
            "POST /mock/mcp HTTP/1.1\r\nHost: {a}\r\nHost: {b}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{a}, {b}: {text}");
        assert!(h.received().is_empty(), "{a}, {b}: forwarded");
    }
}

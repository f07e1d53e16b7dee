//! OpenTelemetry: a span per MCP message reaches an OTLP/HTTP collector (a
//! real HTTP receiver here, decoding the OTLP JSON), continuing the caller's
//! trace, and the upstream gets Warden's span as its parent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use serde_json::{json, Value};
use warden_tests::{example_bundle, post_json, Gateway, Mock};

/// A minimal OTLP/HTTP receiver: keeps every `/v1/traces` body.
async fn collector() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let ct = req
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if path == "/v1/traces" && ct.starts_with("application/json") {
                            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                g.lock().expect("lock").push(v);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(200)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .expect("resp"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, got)
}

fn spans(batches: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().cloned().unwrap_or_default());
            }
        }
    }
    out
}

fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| v["intValue"].as_str().map(str::to_owned))
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_per_message_continue_the_callers_trace() {
    let (otlp, got) = collector().await;
    let mock = Mock::start(&[]).expect("mock");
    let (yaml, files) = example_bundle(mock.addr, |y| y);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let endpoint = format!("http://{otlp}");
    let gw = Gateway::start_with(&yaml, true, &refs, &["--otlp-endpoint", &endpoint], None)
        .expect("gateway");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{parent}-01");
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"traced"}}});
    let (s, _, _) = post_json(
        &gw.url("/mock/mcp"),
        call.to_string(),
        &[("x-api-key", "wk_demo_dev_7Qm2"), ("traceparent", &tp)],
    )
    .await
    .expect("call");
    assert_eq!(s, 200);
    // The upstream sees the same trace with Warden's span as parent.
    let up = mock.stats().await.expect("stats")["last"]["traceparent"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let parts: Vec<&str> = up.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent upstream: {up}");
    assert_eq!(parts[1], trace);
    assert_ne!(parts[2], parent, "Warden inserts its own span");
    // A denied call is traced too, with the decision.
    let purge = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"purge","arguments":{"table":"users"}}});
    post_json(
        &gw.url("/mock/mcp"),
        purge.to_string(),
        &[("x-api-key", "wk_demo_dev_7Qm2")],
    )
    .await
    .expect("purge");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (echo, denied) = loop {
        let all = spans(&got.lock().expect("lock"));
        let echo = all
            .iter()
            .find(|s| attr(s, "mcp.tool").as_deref() == Some("echo"))
            .cloned();
        let denied = all
            .iter()
            .find(|s| attr(s, "mcp.tool").as_deref() == Some("purge"))
            .cloned();
        if let (Some(e), Some(d)) = (&echo, &denied) {
            break (e.clone(), d.clone());
        }
        assert!(Instant::now() < deadline, "spans never arrived: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        echo["traceId"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(trace),
        "{echo}"
    );
    assert_eq!(
        echo["parentSpanId"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(parent)
    );
    assert_eq!(
        echo["spanId"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some(parts[2]),
        "the span the upstream was told about is the one exported"
    );
    assert_eq!(echo["name"], "mcp tools/call");
    assert_eq!(attr(&echo, "enduser.id").as_deref(), Some("agent-dev"));
    assert_eq!(attr(&echo, "mcp.server").as_deref(), Some("mock"));
    assert_eq!(attr(&echo, "warden.outcome").as_deref(), Some("forwarded"));
    assert_eq!(
        attr(&denied, "warden.decided_by").as_deref(),
        Some("policy"),
        "{denied}"
    );
    assert_eq!(
        attr(&denied, "warden.outcome").as_deref(),
        Some("denied"),
        "{denied}"
    );
    // justification_required, or outside_business_hours at night (CRITICAL tool).
    assert!(
        attr(&denied, "warden.reason").is_some_and(|r| !r.is_empty()),
        "{denied}"
    );
    assert_eq!(
        denied["parentSpanId"], "",
        "no caller trace: a trace of its own"
    );
    // The audit record carries the caller's trace id.
    let audit = gw.audit_when(|a| a.len() >= 2);
    assert!(audit.iter().any(|r| r["trace_id"] == trace));
}

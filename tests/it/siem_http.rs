//! SIEM export over HTTP: every audit record reaches a real HTTP receiver
//! (a Python `http.server` process) as an OCSF API Activity event, across a
//! restart of the receiver; and, in Splunk HEC mode over TLS (the CA file
//! only), wrapped as HEC events with the collector's token.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_tests::{free_port, mock_bundle, Gateway, Mock, Proc};

use super::siem::calls;

/// A receiver that appends every POSTed body to `dir/bodies` (one per line,
/// hex of the body, so any bytes survive) and answers 200, or 401 when
/// `token` is set and the request's `Authorization` is not it, or the
/// status written in `dir/closed` while that file exists.
fn receiver(dir: &Path, port: u16, token: Option<&str>, tls: bool) -> Proc {
    // Python literals for the token and the file.
    let token = token.map_or("None".to_owned(), |t| format!("{t:?}"));
    let out = format!("{:?}", dir.join("bodies").display().to_string());
    let closed = format!("{:?}", dir.join("closed").display().to_string());
    // A body longer than the number in `limit` (when it exists) is refused
    // as too large, as a HEC refuses one over its maximum.
    let limit = format!("{:?}", dir.join("limit").display().to_string());
    // Over TLS: the certificate `server_cert` made in `dir`.
    let wrap = if tls {
        format!(
            "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\nctx.load_cert_chain({:?}, {:?})\nsrv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n",
            dir.join("cert.pem").display().to_string(),
            dir.join("key.pem").display().to_string()
        )
    } else {
        String::new()
    };
    let script = format!(
        r#"
import binascii, http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('content-length', 0)))
        if os.path.exists({closed}):
            self.send_response(int(open({closed}).read())); self.end_headers(); return
        if os.path.exists({limit}) and len(body) > int(open({limit}).read()):
            self.send_response(413); self.end_headers(); return
        want = {token}
        if want is not None and self.headers.get('authorization') != want:
            self.send_response(401); self.end_headers(); return
        with open({out}, 'a') as f:
            f.write(binascii.hexlify(body).decode() + '\n')
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.end_headers()
        self.wfile.write(b'{{"text":"Success","code":0}}')
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(('127.0.0.1', {port}), H)
{wrap}srv.serve_forever()
"#,
    );
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    super::siem::receiving(child, "the HTTP receiver", port)
}

/// Every event received so far, in order.
fn events(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("bodies")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let bytes: Vec<u8> = (0..line.len() / 2)
            .filter_map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).ok())
            .collect();
        // OCSF: one JSON array per POST; HEC: one event per line.
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(items)) => out.extend(items),
            _ => out.extend(
                bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| serde_json::from_slice(l).ok()),
            ),
        }
    }
    out
}

/// The audit `seq` an event carries (OCSF `metadata.uid`, inside HEC's `event`).
fn seq(e: &Value) -> Option<u64> {
    let e = e.get("event").unwrap_or(e);
    e["metadata"]["uid"].as_str()?.parse().ok()
}

fn all_received(dir: &Path, n: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = events(dir);
        if (0..n).all(|s| got.iter().any(|e| seq(e) == Some(s))) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "not every record arrived: {:?}",
            got.iter().filter_map(seq).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_reaches_an_http_receiver_as_ocsf_across_its_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut rx = receiver(dir.path(), port, None, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  export:\n    http:\n      url: http://127.0.0.1:{port}/ingest\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..10).await;
    let got = all_received(dir.path(), 10);
    let e = &got[0];
    assert_eq!(e["class_uid"], 6003, "{e}");
    assert_eq!(e["category_uid"], 6, "{e}");
    assert_eq!(e["type_uid"], 600399, "{e}");
    assert_eq!(e["status_id"], 1, "{e}");
    assert_eq!(e["severity_id"], 1, "{e}");
    assert_eq!(e["api"]["operation"], "tools/call", "{e}");
    assert_eq!(e["api"]["service"]["name"], "mock", "{e}");
    assert_eq!(e["unmapped"]["audit"]["seq"], 0, "{e}");
    // The exact line rides along: a receiver checks the chain with it.
    for w in got.windows(2) {
        let line = w[0]["unmapped"]["audit_line"].as_str().expect("audit_line");
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(line.as_bytes()));
        assert_eq!(
            w[1]["unmapped"]["audit"]["prev"],
            digest.as_str(),
            "{}",
            w[1]
        );
    }
    assert!(
        e["time"].as_i64().is_some_and(|t| t > 1_700_000_000_000),
        "{e}"
    );

    assert!(
        got.iter().all(|e| e["unmapped"]["resent"].is_null()),
        "nothing is marked while the receiver is up"
    );

    rx.child.kill().expect("kill");
    let _ = rx.child.wait();
    calls(&gw, 10..20).await;
    std::thread::sleep(Duration::from_millis(500));
    let _rx = receiver(dir.path(), port, None, false);
    let got = all_received(dir.path(), 20);
    // What was sent again after a failed POST says so: the first record
    // written while the receiver was down went in the first POST that
    // failed, so it arrives marked (every copy of it), and only records
    // written while it was down are.
    let resent: Vec<u64> = got
        .iter()
        .filter(|e| e["unmapped"]["resent"] == true)
        .filter_map(seq)
        .collect();
    assert!(resent.contains(&10), "{resent:?}");
    assert!(resent.iter().all(|s| (10..20).contains(s)), "{resent:?}");
    assert!(
        got.iter()
            .filter(|e| seq(e) == Some(10))
            .all(|e| e["unmapped"]["resent"] == true),
        "seq 10 arrived unmarked"
    );
}

/// The value of `name{labels}` in a Prometheus text page (0 when absent).
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls the gateway's metrics until `ok` holds of them (or fails, saying
/// `what`).
async fn metrics_until(gw: &Gateway, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = gw.metrics().await;
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An outage longer than `max_lag` allows: while the receiver is down the
/// lag metric grows past it; when it returns, the oldest records beyond
/// `max_lag` are skipped and counted as dropped, and the newest arrive.
/// Every record is either received or counted.
#[tokio::test(flavor = "multi_thread")]
async fn past_max_lag_the_oldest_are_dropped_counted_and_the_newest_arrive() {
    const MAX_LAG: f64 = 2048.0;
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut rx = receiver(dir.path(), port, None, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "audit:\n  export:\n    http:\n      url: http://127.0.0.1:{port}/ingest\n      max_lag: 2KiB\n"
        ),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..3).await;
    all_received(dir.path(), 3);

    rx.child.kill().expect("kill");
    let _ = rx.child.wait();
    // One record, then a pause: the exporter is retrying its POST when
    // the rest are written, and reads none of them until it gets through.
    calls(&gw, 3..4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    const N: u64 = 40;
    calls(&gw, 4..N).await;
    // The trail: one record per call, N in all (written after each reply).
    let trail = gw.dir.path().join("audit.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&trail).map_or(0, |t| t.lines().count()) < N as usize {
        assert!(Instant::now() < deadline, "the trail lacks records");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&trail).expect("trail");
    assert_eq!(text.lines().count(), N as usize, "one record per call");
    assert!(
        text.len() as f64 > 2.0 * MAX_LAG,
        "the trail is {} bytes",
        text.len()
    );
    // The lag is told while the receiver is down, not only once it is back.
    let lag = |m: &str| metric(m, "warden_audit_export_lag_bytes", &[("exporter", "http")]);
    metrics_until(&gw, "the lag did not grow past max_lag", |m| {
        lag(m) > MAX_LAG
    })
    .await;

    let _rx = receiver(dir.path(), port, None, false);
    // The newest records arrive (those within max_lag of the end).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events(dir.path()).iter().any(|e| seq(e) == Some(N - 1)) {
        assert!(
            Instant::now() < deadline,
            "the newest record did not arrive: {:?}",
            events(dir.path())
                .iter()
                .filter_map(seq)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dropped = |m: &str| {
        metric(
            m,
            "warden_audit_export_records_total",
            &[("exporter", "http"), ("result", "dropped")],
        )
    };
    // Caught up: no lag, and what was skipped is counted.
    let m = metrics_until(&gw, "the export did not catch up", |m| {
        lag(m) == 0.0 && dropped(m) > 0.0
    })
    .await;
    let got: std::collections::BTreeSet<u64> = events(dir.path()).iter().filter_map(seq).collect();
    assert!(
        (0..4).all(|s| got.contains(&s)),
        "what was read before the outage arrives: {got:?}"
    );
    assert!(got.len() < N as usize, "nothing was skipped: {got:?}");
    assert_eq!(
        got.len() as f64 + dropped(&m),
        N as f64,
        "every record is received or counted as dropped: {got:?}\n{m}"
    );
    // What arrived after the skip is the end of the trail, without a hole.
    let first_after = got.iter().copied().find(|s| *s >= 4).unwrap_or(N);
    assert!((first_after..N).all(|s| got.contains(&s)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn splunk_hec_mode_wraps_events_and_sends_the_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    super::siem::server_cert(dir.path());
    let _rx = receiver(dir.path(), port, Some("Splunk hec-token-1"), true);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!(
            "audit:\n  export:\n    http:\n      url: https://127.0.0.1:{port}/services/collector/event\n      format: splunk_hec\n      token_env: WARDEN_TEST_HEC_TOKEN\n      ca_file: {}\n",
            dir.path().join("ca.pem").display()
        ),
    );
    std::env::set_var("WARDEN_TEST_HEC_TOKEN", "hec-token-1");
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..3).await;
    let got = all_received(dir.path(), 3);
    let e = &got[0];
    assert_eq!(e["sourcetype"], "warden:audit:ocsf", "{e}");
    assert_eq!(e["event"]["class_uid"], 6003, "{e}");
    assert!(e["time"].as_f64().is_some(), "{e}");
}

/// A receiver that answers 401, 403 or 404 (a rotated token, a route that
/// is down) has not refused the events: they wait, retried, and every one
/// arrives once it answers again; none is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn records_wait_out_a_receiver_that_answers_401_403_or_404() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let _rx = receiver(dir.path(), port, None, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  export:\n    http:\n      url: http://127.0.0.1:{port}/ingest\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    calls(&gw, 0..2).await;
    all_received(dir.path(), 2);
    let mut next = 2;
    for status in ["401", "403", "404"] {
        std::fs::write(dir.path().join("closed"), status).expect("close");
        calls(&gw, next..next + 3).await;
        next += 3;
        // Refused for a while: more than one retry.
        tokio::time::sleep(Duration::from_millis(800)).await;
        std::fs::remove_file(dir.path().join("closed")).expect("open");
        all_received(dir.path(), next);
    }
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "warden_audit_export_records_total",
            &[("exporter", "http"), ("result", "dropped")]
        ),
        0.0,
        "{m}"
    );
}

/// A record the receiver refuses as too large (413) arrives as its stub
/// (the chain's members and the line's SHA-256), as on the other sinks:
/// a caller cannot erase its record from the SIEM by making it large.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_refused_as_too_large_arrives_as_its_stub() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("limit"), "60000").expect("limit");
    let port = free_port();
    let _rx = receiver(dir.path(), port, None, false);
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(
        &[mock.addr],
        &format!("audit:\n  include_arguments: true\n  export:\n    http:\n      url: http://127.0.0.1:{port}/ingest\n"),
    );
    let gw = Gateway::start(&yaml, false).expect("gateway");
    let big = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"echo","arguments":{"text": "x".repeat(40_000)}}})
    .to_string();
    let (st, _, _) = warden_tests::post_json(&gw.url("/mock/mcp"), big, &[])
        .await
        .expect("post");
    assert_eq!(st, 200);
    calls(&gw, 2..4).await;
    let recs = gw.audit_when(|r| r.len() >= 6);
    let got = all_received(dir.path(), recs.len() as u64);
    let trail = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).expect("trail");
    let big_line = trail
        .lines()
        .find(|l| l.contains(&"x".repeat(1000)))
        .expect("the big record in the trail");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(big_line.as_bytes()));
    let stub = got
        .iter()
        .find(|e| {
            e["unmapped"]["audit_line"]
                .as_str()
                .is_some_and(|l| l.starts_with("{\"elided\":"))
        })
        .expect("the big record arrived as a stub");
    assert_eq!(
        stub["unmapped"]["audit"]["elided"]["sha256"],
        digest.as_str(),
        "{stub}"
    );
    let page = metrics_until(&gw, "metrics", |_| true).await;
    assert_eq!(
        metric(
            &page,
            "warden_audit_export_records_total",
            &[("exporter", "http"), ("result", "dropped")]
        ),
        0.0,
        "{page}"
    );
}

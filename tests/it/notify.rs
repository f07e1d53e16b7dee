//! Held calls announced to webhooks (`serve --notify`): a real HTTP
//! receiver in the test takes a signed generic body, a Slack body and a
//! Teams body for each held call, once each, and checks the signature with
//! its own HMAC; while it is down (and after it restarts on its port) the
//! agent retries until each is taken, recording every attempt; a webhook
//! that answers 500 is tried again; no body carries a secret the call's
//! arguments or justification held.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warden_tests::{free_port, Agent, FLEET_TOKEN};

const SECRET: &str = "hook-secret-0123456789-abcdef";

/// What the receiver took: (path, headers, body).
type Taken = Arc<Mutex<Vec<(String, BTreeMap<String, String>, Vec<u8>)>>>;

/// A webhook receiver on `port`: records every request, answers 500 to
/// the first request of each path in `fail_first`, else 204.
struct Receiver {
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, taken: Taken, fail_first: Arc<Mutex<Vec<String>>>) -> Receiver {
        let listener = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "binding {port}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        let task = tokio::spawn(async move {
            // Connections end with the receiver (a stopped receiver keeps
            // no kept-alive connection answering).
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (taken, fail_first) = (taken.clone(), fail_first.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (taken, fail_first) = (taken.clone(), fail_first.clone());
                        async move {
                            let path = req.uri().path().to_owned();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let fail = {
                                let mut f = fail_first.lock().expect("lock");
                                let hit = f.iter().position(|p| *p == path);
                                hit.map(|i| f.remove(i)).is_some()
                            };
                            if !fail {
                                taken.lock().expect("lock").push((path, headers, body));
                            }
                            let mut r = hyper::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = if fail {
                                hyper::StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                hyper::StatusCode::NO_CONTENT
                            };
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Receiver { task }
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// HMAC-SHA256 (RFC 2104), written here apart from the agent's.
fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), msg.to_vec()].concat());
    Sha256::digest([pad(0x5c), inner.to_vec()].concat()).to_vec()
}

async fn hold(base: &str, principal: &str) -> String {
    let claim = json!({"tenant": "acme", "principal": principal, "server": "ops",
        "tool": "transfer", "args_digest": format!("sha256:{}", hex::encode(Sha256::digest(b"{}"))),
        "arguments": "{}", "risk": "HIGH", "reason": "risk_tier:HIGH", "required": 1,
        "justification": "pay AKIAIOSFODNN7EXAMPLE for 123-45-6789",
        "pending_secs": 600, "grant_secs": 60, "gateway": "gw-1"});
    let bearer = format!("Bearer {FLEET_TOKEN}");
    let (s, _, b) = warden_tests::request(
        &format!("{base}/v1/approvals/claim"),
        "POST",
        &[
            ("authorization", bearer.as_str()),
            ("content-type", "application/json"),
        ],
        Bytes::from(claim.to_string()),
        false,
    )
    .await
    .expect("claim");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice::<Value>(&b).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The deliveries of approval `id` taken so far, by path.
fn of(taken: &Taken, id: &str) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (path, _, body) in taken.lock().expect("lock").iter() {
        if String::from_utf8_lossy(body).contains(id) {
            *n.entry(path.clone()).or_insert(0) += 1;
        }
    }
    n
}

async fn until_all(taken: &Taken, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while of(taken, id).len() < 3 {
        assert!(Instant::now() < deadline, "{id}: only {:?}", of(taken, id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_calls_reach_their_webhooks_once_through_a_receiver_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}");
    std::fs::write(dir.path().join("secret"), SECRET).expect("secret");
    let notify = dir.path().join("notify.yaml");
    std::fs::write(
        &notify,
        format!(
            "console_url: https://warden.example\nwebhooks:\n\
             \x20 - {{name: ops, kind: generic, url: {hook}/generic, secret_file: {}}}\n\
             \x20 - {{name: chat, kind: slack, url: {hook}/slack}}\n\
             \x20 - {{name: teams, kind: teams, url: {hook}/teams, risks: [HIGH, CRITICAL]}}\n",
            dir.path().join("secret").display()
        ),
    )
    .expect("notify file");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("source");
    std::fs::write(
        source.join("warden.yaml"),
        "version: 1\nservice_groups:\n  - name: g\n    servers:\n      - {name: ops, upstreams: [\"127.0.0.1:9\"]}\nroutes:\n  - {prefix: /ops, server: ops}\n",
    )
    .expect("yaml");
    let state = dir.path().join("state");
    let agent = Agent::start_with(
        &source,
        &state,
        None,
        &["--notify".as_ref(), notify.as_os_str()],
    )
    .expect("agent");
    let base = agent.url.clone();

    let taken: Taken = Arc::default();
    // The Teams webhook fails its first request.
    let fail_first = Arc::new(Mutex::new(vec!["/teams".to_owned()]));
    let recv = Receiver::start(port, taken.clone(), fail_first.clone()).await;
    let first = hold(&base, "agent-1").await;
    until_all(&taken, &first).await;

    // The receiver goes down; a call held meanwhile reaches it after it
    // is back on its port.
    recv.stop();
    let second = hold(&base, "agent-2").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(of(&taken, &second).is_empty());
    let _recv = Receiver::start(port, taken.clone(), fail_first.clone()).await;
    until_all(&taken, &second).await;
    // Nothing is sent again once taken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in [&first, &second] {
        let n = of(&taken, id);
        assert_eq!(
            n,
            BTreeMap::from([
                ("/generic".to_owned(), 1),
                ("/slack".to_owned(), 1),
                ("/teams".to_owned(), 1)
            ]),
            "{id}"
        );
    }

    // Each generic body is signed over its timestamp and bytes, recent,
    // with its delivery id; no body carries the justification's secrets.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for (path, h, body) in taken.lock().expect("lock").iter() {
        let text = String::from_utf8_lossy(body);
        for secret in ["AKIAIOSFODNN7EXAMPLE", "123-45-6789"] {
            assert!(!text.contains(secret), "{path}: {text}");
        }
        assert!(
            text.contains("https://warden.example/console/approvals/"),
            "{path}: {text}"
        );
        if path != "/generic" {
            continue;
        }
        let ts: u64 = h["x-warden-timestamp"].parse().expect("timestamp");
        assert!(ts.abs_diff(now) < 300, "timestamp {ts} vs {now}");
        let want = format!(
            "v1={}",
            hex::encode(hmac(
                SECRET.as_bytes(),
                &[ts.to_string().as_bytes(), b".", body].concat()
            ))
        );
        assert_eq!(h["x-warden-signature"], want, "signature");
        let v: Value = serde_json::from_slice(body).expect("json");
        assert_eq!(
            h["x-warden-delivery"],
            format!("{}/ops", v["id"].as_str().expect("id"))
        );
        assert_eq!(v["type"], "approval.pending");
        assert_eq!(v["risk"], "HIGH");
    }

    // Every attempt is in the change record and the metrics: the failed
    // ones while the receiver was down, the 500, and the sent ones.
    let changes = std::fs::read_to_string(state.join("changes.jsonl")).expect("change record");
    let notes: Vec<&str> = changes
        .lines()
        .filter(|l| l.contains("approval.notify"))
        .collect();
    assert!(
        notes.iter().any(|l| l.contains("answered 500")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|l| l.contains("connection refused")),
        "{notes:?}"
    );
    assert_eq!(
        notes.iter().filter(|l| l.contains(": sent (204)")).count(),
        6,
        "{notes:?}"
    );
    assert!(!changes.contains("AKIAIOSFODNN7EXAMPLE"));
    let (_, _, m) =
        warden_tests::request(&format!("{base}/metrics"), "GET", &[], Bytes::new(), false)
            .await
            .expect("metrics");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("warden_agent_notifications_total{outcome=\"sent\",webhook=\"ops\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("warden_agent_notifications_total{outcome=\"failed\",webhook=\"teams\"}"),
        "{m}"
    );
    // The retries the notifier keeps are a gauge, bounded by the held
    // calls times the webhooks.
    let retries: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("warden_agent_notify_retries "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retries gauge: {m}"));
    assert!((0..=3 * 3).contains(&retries), "{retries}");
}

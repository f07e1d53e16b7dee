//! Gateway ids through a real listener: the instance a bundle fetch and a
//! report name, an id two live processes share shown in `/v1/fleet`, and
//! their audit records refused rather than merged into one chain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};

const ADMIN: &str = "admin-token-0123456789";
const FLEET: &str = "fleet-token-0123456789";
/// The token of `edge-own`, a gateway with a token of its own.
pub(crate) const EDGE_OWN: &str = "gateway-edge-own-0123456789";
/// The token `/metrics` asks for in the fixture (`--metrics-token`).
pub(crate) const METRICS: &str = "metrics-token-0123456789";

/// `n` chained audit lines from seq 0, as one gateway's trail holds them.
fn trail(n: usize, principal: &str) -> Vec<u8> {
    let mut prev = [0u8; 32];
    let mut out = Vec::new();
    let ts = jiff::Timestamp::now().to_string();
    for seq in 0..n {
        let line = serde_json::json!({
            "seq": seq, "prev": hex::encode(prev), "ts": ts, "principal": principal,
            "tenant": "finance", "server": "mock", "direction": "request", "method": "tools/call",
            "tool": "t", "outcome": "forwarded", "trace_id": format!("tr-{principal}-{seq}"),
        })
        .to_string();
        prev = Sha256::digest(line.as_bytes()).into();
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Ships `body` as gateway `gateway` (and, when given, process `instance`).
async fn ingest(
    url: &str,
    gateway: &str,
    instance: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/audit/ingest"))
        .bearer_auth(FLEET)
        .header("x-warden-gateway", gateway);
    if let Some(i) = instance {
        req = req.header("x-warden-instance", i);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json::<serde_json::Value>().await.unwrap())
}

#[tokio::test]
async fn a_gateway_id_two_live_processes_share_is_shown_and_its_audit_refused() {
    let (_d, api, _state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::new();
    let rev = api.store.current().unwrap().revision.clone();
    let report = |instance: &'static str| {
        let (http, url, rev) = (http.clone(), url.clone(), rev.clone());
        async move {
            let body = serde_json::json!({"id": "edge-1", "instance": instance, "revision": rev, "healthy": true});
            let r = http
                .post(format!("{url}/v1/fleet/report"))
                .bearer_auth(FLEET)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    let ship = |gateway: &'static str, body: Vec<u8>| ingest(&url, gateway, None, body);
    // One process: its records are taken.
    report("aaaa").await;
    assert_eq!(ship("edge-1", trail(2, "p1")).await.0, 200);
    // A second process under the same id fetches its bundle, then the
    // first reports again: two live processes.
    let r = http
        .get(format!("{url}/v1/bundles/current"))
        .bearer_auth(FLEET)
        .header("x-warden-gateway", "edge-1")
        .header("x-warden-instance", "bbbb")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A nonce the agent cannot read is refused, not ignored.
    for bad in ["short", "0123456789ABCDEF0123456789ABCDEF", &"a".repeat(65)] {
        let r = http
            .get(format!("{url}/v1/bundles/current"))
            .bearer_auth(FLEET)
            .header("x-warden-gateway", "edge-3")
            .header("x-warden-nonce", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{bad}");
    }
    report("aaaa").await;
    let fleet: serde_json::Value = http
        .get(format!("{url}/v1/fleet"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fleet["conflicts"], serde_json::json!(["edge-1"]), "{fleet}");
    assert_eq!(fleet["members"][0]["conflict"], true, "{fleet}");
    // The second process's trail starts at seq 0 as well: refused, not
    // merged into the first's chain.
    let (status, v) = ship("edge-1", trail(3, "p2")).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (409, Some("gateway_id_conflict")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("--gateway-id"), "{v}");
    let q = crate::audit::Query {
        gateway: Some("edge-1".into()),
        ..Default::default()
    };
    let verified = api.audit.verify(&q).unwrap();
    assert!(verified.ok && verified.records == 2, "{verified:?}");
    // Another id is not concerned.
    assert_eq!(ship("edge-2", trail(1, "p3")).await.0, 200);
}

#[tokio::test]
async fn a_second_process_is_seen_by_its_audit_alone() {
    let (_d, _api, _state, url) = crate::api::tests::serve_fixture().await;
    let ship = |instance: &'static str, body: Vec<u8>| ingest(&url, "edge-9", Some(instance), body);
    // One process ships: taken. A second process under the same id, which
    // never reported nor fetched a bundle, ships: taken as a restart (a
    // new instance replacing the old one).
    assert_eq!(ship("aaaa", trail(2, "q1")).await.0, 200);
    assert_eq!(ship("bbbb", trail(1, "q2")).await.0, 200);
    // The first is heard from again: two live processes, seen by their
    // audit alone. Both are refused from now on, never merged.
    for instance in ["aaaa", "bbbb"] {
        let (status, v) = ship(instance, trail(3, "q3")).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (409, Some("gateway_id_conflict")),
            "{instance}: {v}"
        );
    }
}

/// Reads until the peer closes (`Some(bytes read)`) or `within` passes (`None`).
async fn closed_within(
    c: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(got)
}

#[tokio::test]
async fn idle_slow_and_greedy_connections_cannot_hold_the_agent() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let limits = crate::server::ConnLimits {
        total: 64,
        per_address: 3,
        head: Duration::from_millis(400),
        request: Duration::from_millis(800),
    };
    let (_d, _api, _state, url) = crate::api::tests::serve_fixture_with(limits).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    // Three connections that send nothing hold this address's share ...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ... so a fourth is closed unanswered.
    let mut fourth = connect().await.unwrap();
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await;
    let answer = closed_within(&mut fourth, Duration::from_secs(2)).await;
    assert_eq!(
        answer.as_deref(),
        Some(&b""[..]),
        "a connection over the share is closed"
    );
    // The idle ones are closed once their head is overdue.
    for c in &mut idle {
        assert!(
            closed_within(c, Duration::from_secs(3)).await.is_some(),
            "an idle connection is closed after the head timeout"
        );
    }
    // A head that stops short, HTTP/1 or an HTTP/2 preface, is closed too.
    for part in [&b"GET /healthz HTTP/1.1\r\nhost:"[..], &b"PRI * HTTP/2"[..]] {
        let mut c = connect().await.unwrap();
        c.write_all(part).await.unwrap();
        assert!(
            closed_within(&mut c, Duration::from_secs(3))
                .await
                .is_some(),
            "a stalled head is closed: {}",
            String::from_utf8_lossy(part)
        );
    }
    // A body that stops short is answered 408 at the request's deadline.
    let mut slow = connect().await.unwrap();
    slow.write_all(
        format!("POST /v1/fleet/report HTTP/1.1\r\nhost: agent\r\nauthorization: Bearer {FLEET}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"id\":").as_bytes(),
    )
    .await
    .unwrap();
    let answer = closed_within(&mut slow, Duration::from_secs(3))
        .await
        .expect("the slow request ends");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // And the agent still serves everyone.
    let r = reqwest::get(format!("{url}/healthz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A gateway with a token of its own (`--gateways`) is spoken for by that
/// token alone: the shared fleet token (a holder of it, another gateway)
/// can neither fetch, report, ship audit nor claim approvals as it, and
/// its token speaks for no other gateway. Found by session 55's review:
/// one shared token let any holder raise a conflict that refused the real
/// gateway's audit, or ship forged lines into its chain.
#[tokio::test]
async fn a_gateway_with_its_own_token_is_spoken_for_by_it_alone() {
    let (_d, api, _state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::new();
    let rev = api.store.current().unwrap().revision.clone();
    let report = |token: &'static str, id: &'static str| {
        let (http, url, rev) = (http.clone(), url.clone(), rev.clone());
        async move {
            let body =
                serde_json::json!({"id": id, "instance": "i1", "revision": rev, "healthy": true});
            http.post(format!("{url}/v1/fleet/report"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let fetch = |token: &'static str, id: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(format!("{url}/v1/bundles/current"))
                .bearer_auth(token)
                .header("x-warden-gateway", id)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let ship = |token: &'static str, id: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(format!("{url}/v1/audit/ingest"))
                .bearer_auth(token)
                .header("x-warden-gateway", id)
                .body(trail(1, "p1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let claim = |token: &'static str, id: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let args = "{}";
            let body = serde_json::json!({
                "tenant": "finance", "principal": "p1", "server": "mock", "tool": "t",
                "args_digest": format!("sha256:{}", hex::encode(Sha256::digest(args.as_bytes()))),
                "arguments": args, "risk": "HIGH", "reason": "r", "gateway": id,
                "required": 1, "pending_secs": 60, "grant_secs": 60, "nonce": "n1",
            });
            http.post(format!("{url}/v1/approvals/claim"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Its own token: its own id, and nothing else.
    assert_eq!(report(EDGE_OWN, "edge-own").await, 200);
    assert_eq!(fetch(EDGE_OWN, "edge-own").await, 200);
    assert_eq!(ship(EDGE_OWN, "edge-own").await, 200);
    assert_eq!(report(EDGE_OWN, "edge-2").await, 403);
    assert_eq!(fetch(EDGE_OWN, "edge-2").await, 403);
    assert_eq!(ship(EDGE_OWN, "edge-2").await, 403);
    assert_eq!(claim(EDGE_OWN, "edge-2").await, 403);
    assert_eq!(claim(EDGE_OWN, "edge-own").await, 200);
    // The shared token cannot speak for it, in any way.
    assert_eq!(report(FLEET, "edge-own").await, 403);
    assert_eq!(fetch(FLEET, "edge-own").await, 403);
    assert_eq!(ship(FLEET, "edge-own").await, 403);
    assert_eq!(claim(FLEET, "edge-own").await, 403);
    // It still serves every id without a token of its own.
    assert_eq!(report(FLEET, "edge-2").await, 200);
    assert_eq!(ship(FLEET, "edge-2").await, 200);
    // No conflict was raised under the real gateway's id: its next
    // records are taken.
    let fleet = api.store.fleet_view();
    assert!(
        fleet.members.iter().any(|m| m.id == "edge-own"),
        "{fleet:?}"
    );
}

/// With `--metrics-token`, `/metrics` answers that token and the admin's
/// only: the counts it shows (approvals waiting, audit rows, claims) are
/// not for anyone who reaches the agent; `/healthz` stays open.
#[tokio::test]
async fn metrics_take_their_token_when_one_is_set() {
    let (_d, _api, _state, url) = crate::api::tests::serve_fixture().await;
    let http = reqwest::Client::new();
    let get = |path: &'static str, token: Option<&'static str>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut r = http.get(format!("{url}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get("/metrics", None).await, 401);
    assert_eq!(get("/metrics", Some(FLEET)).await, 401);
    assert_eq!(get("/metrics", Some(METRICS)).await, 200);
    assert_eq!(get("/metrics", Some(ADMIN)).await, 200);
    assert_eq!(get("/healthz", None).await, 200);
}

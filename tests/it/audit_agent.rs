//! Audit records shipped to the agent: a gateway on an agent serves calls
//! through a real upstream; its records appear in the agent's store
//! (`GET /v1/audit`), their chain verifies there, records written while
//! the agent is down arrive once it is back (same port, same state), and a
//! batch sent again is all duplicates, not new rows.

use super::*;
use std::io::BufRead;
use warden_tests::{request, ADMIN_TOKEN};

/// An agent listening on `port` (so that a restart keeps its URL).
fn agent_on(source: &Path, state: &Path, key: &Path, port: u16) -> Agent {
    let mut child = std::process::Command::new(bin("warden-agent"))
        .arg("serve")
        .arg("--source")
        .arg(source)
        .arg("--state")
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--signing-key")
        .arg(key)
        .args(["--watch-interval", "100ms"])
        .env("WARDEN_AGENT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("WARDEN_AGENT_FLEET_TOKEN", FLEET_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(if std::env::var_os("WARDEN_TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .expect("starting warden-agent");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("agent's first line");
    assert!(line.starts_with("listening on "), "agent: {line:?}");
    Agent {
        proc: warden_tests::Proc {
            child,
            name: "warden-agent".into(),
        },
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The agent's page of `gw`'s records (admin).
async fn shipped(agent: &Agent, gw: &str) -> Value {
    let (s, v) = agent
        .api("GET", &format!("/v1/audit?gateway={gw}&limit=500"), None)
        .await
        .expect("audit");
    assert_eq!(s, 200, "{v}");
    v
}

/// Waits until the agent holds every record of the gateway's trail (and
/// the trail holds at least `min`); returns the trail.
async fn all_shipped(agent: &Agent, gw: &Gateway, id: &str, min: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let trail = gw.audit();
        let page = shipped(agent, id).await;
        if trail.len() >= min && page["total"].as_u64() == Some(trail.len() as u64) {
            return trail;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent has {} of the trail's {} records",
            page["total"],
            trail.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ingest(agent: &Agent, token: &str, gw: &str, body: String) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (s, _, b) = request(
        &format!("{}/v1/audit/ingest", agent.url),
        "POST",
        &[
            ("authorization", &auth),
            ("x-warden-gateway", gw),
            ("content-type", "application/x-ndjson"),
        ],
        bytes::Bytes::from(body),
        false,
    )
    .await
    .expect("ingest");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_records_reach_the_agent_verify_and_survive_its_restart() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let port = warden_tests::free_port();
    let agent_state = tmp.path().join("agent");
    let agent = agent_on(&source, &agent_state, &private, port);
    let gw = gateway_on_agent(&agent, &public, &tmp.path().join("gw"), "gw-audit");
    for _ in 0..3 {
        assert_eq!(outcome(&gw, "echo").await, "ok");
    }
    assert_eq!(outcome(&gw, "add").await, "denied");

    // Every record of the trail is at the agent, as written.
    let trail = all_shipped(&agent, &gw, "gw-audit", 4).await;
    let page = shipped(&agent, "gw-audit").await;
    let rows = page["rows"].as_array().expect("rows");
    assert!(
        rows.iter().any(|r| r["tool"] == "add"
            && r["direction"] == "request"
            && r["outcome"] != "forwarded"),
        "{page}"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["tool"] == "echo" && r["direction"] == "request")
            .count(),
        3,
        "{page}"
    );
    let newest = rows[0]["id"].as_i64().expect("id");
    let seqs: Vec<u64> = rows.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    // The filters and the verification.
    let (_, denied) = agent
        .api("GET", "/v1/audit?tool=add&principal=anonymous", None)
        .await
        .expect("search");
    assert!(denied["total"].as_u64() >= Some(1), "{denied}");
    let (s, v) = agent
        .api("GET", "/v1/audit/verify?gateway=gw-audit", None)
        .await
        .expect("verify");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"].as_u64(), Some(trail.len() as u64), "{v}");
    let (_, live) = agent
        .api("GET", "/v1/audit/live?window=300", None)
        .await
        .expect("live");
    assert_eq!(live["calls"], 4, "{live}");

    // The agent goes away; the gateway keeps serving, its records wait
    // in the trail and arrive once the agent is back on its state.
    drop(agent);
    for _ in 0..2 {
        assert_eq!(outcome(&gw, "echo").await, "ok");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = agent_on(&source, &agent_state, &private, port);
    let trail = all_shipped(&agent, &gw, "gw-audit", trail.len() + 2).await;
    let (_, v) = agent
        .api("GET", "/v1/audit/verify", None)
        .await
        .expect("verify");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"].as_u64(), Some(trail.len() as u64), "{v}");
    let page = shipped(&agent, "gw-audit").await;
    assert!(
        page["rows"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["id"] == newest)),
        "the rows stored before the restart are kept"
    );

    // The whole trail sent again (a gateway whose cursor was lost): every
    // line a duplicate, no new row.
    let raw = std::fs::read_to_string(gw.dir.path().join("audit.jsonl")).expect("trail");
    let (s, v) = ingest(&agent, FLEET_TOKEN, "gw-audit", raw.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 0, "{v}");
    assert_eq!(
        v["duplicates"].as_u64(),
        Some(raw.lines().count() as u64),
        "{v}"
    );
    assert_eq!(shipped(&agent, "gw-audit").await["total"], page["total"]);

    // A malformed batch is refused whole, naming the line; only gateways
    // (and the admin) ship, only the admin reads.
    let mut bad: Vec<&str> = raw.lines().take(2).collect();
    bad.push("{\"seq\":\"x\"}");
    let (s, v) = ingest(&agent, FLEET_TOKEN, "other-gw", bad.join("\n")).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("line 3:")),
        "{v}"
    );
    assert_eq!(shipped(&agent, "other-gw").await["total"], 0);
    let (s, _) = ingest(&agent, "not-a-token-at-all", "gw-audit", raw.clone()).await;
    assert_eq!(s, 401);
    let (s, _, _) = request(
        &format!("{}/v1/audit", agent.url),
        "GET",
        &[("authorization", &format!("Bearer {FLEET_TOKEN}"))],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("fleet reads");
    assert_eq!(s, 403, "the fleet token cannot read the audit");
    let (_, _, metrics) = request(
        &format!("{}/metrics", agent.url),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains(&format!("warden_agent_audit_rows {}", trail.len())),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_agent_audit_ingested_total{result=\"duplicate\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_agent_audit_ingested_total{result=\"refused\"} 3"),
        "{metrics}"
    );
}

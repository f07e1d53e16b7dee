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

/// Spend reports at the agent add up to what real traffic cost: two
/// gateways on one agent serve priced calls of two tenants' principals
/// (one with a team), ship their trails, and the agent's report by tenant
/// and team equals the sums over the records both trails hold; each row's
/// `records` search lists exactly the records that add up to it.
#[tokio::test(flavor = "multi_thread")]
async fn spend_reports_add_up_to_the_records_two_gateways_shipped() {
    use warden_config::access::hash_api_key;
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let key = |id: &str, tenant: &str, team: &str| {
        let hash = hash_api_key(
            &format!("wk_{id}_key_000000001"),
            format!("salt-{id}").as_bytes(),
        );
        let attrs = if team.is_empty() {
            String::new()
        } else {
            format!(", attributes: {{team: {team}}}")
        };
        format!("    - {{id: {id}, tenant: {tenant}, hash: \"{hash}\"{attrs}}}\n")
    };
    let extra = format!(
        "identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n{}{}{}\
catalog:\n  mock:\n    tools:\n      add: {{price: {{currency: EUR, per_call: \"1.25\"}}}}\n      \
echo: {{price: {{currency: EUR, per_call: \"0.002\", per_unit: {{pointer: /content/0/text, price: \"0.5\"}}}}}}\n",
        key("alice", "acme", "payments"),
        key("bob", "acme", ""),
        key("carol", "globex", ""),
    );
    std::fs::write(
        source.join("warden.yaml"),
        mock_bundle(&[mock.addr], &extra),
    )
    .expect("yaml");
    let agent = agent_on(
        &source,
        &tmp.path().join("agent"),
        &private,
        warden_tests::free_port(),
    );
    let gws = [
        gateway_on_agent(&agent, &public, &tmp.path().join("gw-a"), "gw-a"),
        gateway_on_agent(&agent, &public, &tmp.path().join("gw-b"), "gw-b"),
    ];
    let send = |gw: usize, who: &str, id: u64, tool: &str, text: &str| {
        let url = gws[gw].url("/mock/mcp");
        let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":text,"a":1,"b":2}}}).to_string();
        let k = format!("wk_{who}_key_000000001");
        async move {
            let (s, _, b) = post_json(&url, body, &[("x-api-key", &k)])
                .await
                .expect("post");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        }
    };
    for (i, (gw, who, tool, text)) in [
        (0, "alice", "add", ""),
        (1, "alice", "add", ""),
        (0, "alice", "echo", "4"),
        (1, "bob", "add", ""),
        (0, "bob", "echo", "prose"),
        (1, "carol", "echo", "10"),
        (0, "carol", "add", ""),
    ]
    .into_iter()
    .enumerate()
    {
        send(gw, who, 10 + i as u64, tool, text).await;
    }
    let mut trail = all_shipped(&agent, &gws[0], "gw-a", 4).await;
    trail.extend(all_shipped(&agent, &gws[1], "gw-b", 3).await);
    let micros = |a: &str| -> u64 {
        let (w, f) = a.split_once('.').expect("amount");
        w.parse::<u64>().expect("whole") * 1_000_000 + f.parse::<u64>().expect("millionths")
    };
    let sum = |tenant: &str, team: Option<&str>| -> (u64, u64) {
        let of: Vec<&Value> = trail
            .iter()
            .filter(|r| r["tenant"] == tenant && r["cost"]["amount"].is_string())
            .filter(|r| r["cost"]["team"].as_str() == team)
            .collect();
        (
            of.len() as u64,
            of.iter()
                .map(|r| micros(r["cost"]["amount"].as_str().unwrap_or("0.0")))
                .sum(),
        )
    };
    // What the trails say: alice 1.25 × 2 + 0.002 + 2.0; bob 1.25 + 0.002;
    // carol 0.002 + 5.0 + 1.25.
    assert_eq!(sum("acme", Some("payments")), (3, 4_502_000));
    assert_eq!(sum("acme", None), (2, 1_252_000));
    assert_eq!(sum("globex", None), (2, 6_252_000));
    let (s, report) = agent
        .api("GET", "/v1/spend?by=tenant,team", None)
        .await
        .expect("spend");
    assert_eq!(s, 200, "{report}");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3, "{report}");
    for row in rows {
        let tenant = row["tenant"].as_str().expect("tenant");
        let (calls, amount) = sum(tenant, row["team"].as_str());
        assert_eq!(row["calls"].as_u64(), Some(calls), "{row}");
        assert_eq!(
            micros(row["amount"].as_str().expect("amount")),
            amount,
            "{row}"
        );
        assert_eq!(row["currency"], "EUR");
        // The row's records, as the audit search lists them, add up to it.
        let link = row["records"].as_str().expect("records");
        let (s, page) = agent
            .api("GET", &format!("{link}&limit=500"), None)
            .await
            .expect("records");
        assert_eq!(s, 200, "{page}");
        let listed = page["rows"].as_array().expect("rows");
        assert_eq!(listed.len() as u64, calls, "{page}");
    }
    let total = &report["totals"][0];
    assert_eq!(
        micros(total["amount"].as_str().expect("total")),
        4_502_000 + 1_252_000 + 6_252_000
    );
    assert_eq!(total["calls"], 7);
}

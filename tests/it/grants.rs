//! Just-in-time grants through the whole fleet: an administrator asks a
//! tool for an agent's principal for a few seconds (`POST /v1/grants`), an
//! approver approves it like a held call, and the gateway — reading the
//! agent's signed list — hands it to the policy as
//! `input.principal.grants`: the call the policy refused passes until the
//! grant expires, and is refused again after, on the cached decision too;
//! a withdrawn grant leaves within seconds; another principal never has
//! it; every step is in the change record.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{post_json, Agent, Gateway, Mock};

const KEY: &str = "wk_grants_agent_key_7";
const OTHER: &str = "wk_grants_agent_key_8";
const APPROVER: &str = "approver-quinn-token-01";

const POLICY: &str = "package ops\nimport rego.v1\n\
default decision := {\"allow\": false, \"reason\": \"no grant for this tool\"}\n\
decision := {\"allow\": true, \"reason\": \"ok\"} if input.request.method != \"tools/call\"\n\
decision := {\"allow\": true, \"reason\": \"granted\"} if {\n\
\tinput.request.method == \"tools/call\"\n\
\tsome g in input.principal.grants\n\
\tg.kind == \"tool\"\n\
\tg.name == input.request.tool\n\
}\n";

fn source(dir: &std::path::Path, mock: std::net::SocketAddr) -> std::path::PathBuf {
    let key = |k: &str| warden_config::access::hash_api_key(k, &[7u8; 16]);
    let source = dir.join("source");
    std::fs::create_dir_all(source.join("policies")).expect("mkdir");
    std::fs::write(
        source.join("warden.yaml"),
        format!(
            "version: 1\npolicy: {{entrypoint: data.ops.decision, denial: tool_error}}\n\
identity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n\
\x20   - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{}\"}}\n\
\x20   - {{id: agent-8, tenant: acme, roles: [developer], kind: agent, hash: \"{}\"}}\n\
service_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{mock}\"]}}\n\
routes:\n  - {{prefix: /mock, server: mock}}\n",
            key(KEY),
            key(OTHER)
        ),
    )
    .expect("yaml");
    std::fs::write(source.join("policies/ops.rego"), POLICY).expect("rego");
    source
}

/// Calls `tool` as the principal of `key`: whether it was served.
async fn served(gw: &Gateway, key: &str, tool: &str, id: u64) -> bool {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {"text": "hi", "a": 1, "b": 2}}});
    let (s, _, b) = post_json(
        &gw.url("/mock/mcp"),
        body.to_string(),
        &[("x-api-key", key)],
    )
    .await
    .expect("call");
    let text = String::from_utf8_lossy(&b).into_owned();
    let m = warden_tests::rpc_messages(&text)
        .into_iter()
        .find(|m| m.get("id").is_some())
        .unwrap_or(Value::Null);
    assert_eq!(s, 200, "{text}");
    // A tool the policy refuses is also one the principal may not see:
    // answered as a tool that does not exist.
    if m["error"]["message"] == format!("Unknown tool: {tool}") {
        false
    } else if m["result"]["isError"] == true {
        assert!(text.contains("no grant for this tool"), "{text}");
        false
    } else {
        assert!(m.get("result").is_some(), "{text}");
        true
    }
}

async fn api(agent: &Agent, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (s, _, b) = warden_tests::request(
        &format!("{}{path}", agent.url),
        method,
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        bytes::Bytes::from(body.to_string()),
        false,
    )
    .await
    .expect("api");
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Waits until `tool` is (or is not) served to `key`; the time it took.
async fn until(gw: &Gateway, key: &str, tool: &str, want: bool, within: Duration) -> Duration {
    let start = Instant::now();
    let mut id = 100;
    loop {
        id += 1;
        if served(gw, key, tool, id).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{tool} never became {}",
            if want { "served" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_lets_a_call_through_until_it_expires_and_not_after() {
    let dir = tempfile::tempdir().expect("tmp");
    let mock = Mock::start(&[]).expect("mock");
    let source = source(dir.path(), mock.addr);
    let approvers = dir.path().join("approvers.yaml");
    {
        use sha2::Digest;
        std::fs::write(
            &approvers,
            format!(
                "quinn: {}\n",
                hex::encode(sha2::Sha256::digest(APPROVER.as_bytes()))
            ),
        )
        .expect("approvers");
    }
    let (private, public) = warden_tests::keygen(dir.path(), "k");
    let agent = Agent::start_with(
        &source,
        &dir.path().join("state"),
        Some(&private),
        &["--approvers".as_ref(), approvers.as_os_str()],
    )
    .expect("agent");
    let gw =
        Gateway::on_agent(&agent.url, &public, &dir.path().join("gw"), "gw-1").expect("gateway");
    gw.wait_ready().expect("ready");
    let admin = warden_tests::ADMIN_TOKEN;

    // No grant: refused (twice, the second from the decision cache).
    assert!(!served(&gw, KEY, "echo", 1).await);
    assert!(!served(&gw, KEY, "echo", 2).await);

    // Asked, badly: no justification, too long, a kind that is none.
    for (body, want) in [
        (
            json!({"tenant": "acme", "principal": "agent-7", "kind": "tool", "name": "echo", "duration": "5s", "justification": " "}),
            "justification",
        ),
        (
            json!({"tenant": "acme", "principal": "agent-7", "kind": "tool", "name": "echo", "duration": "3d", "justification": "x"}),
            "duration",
        ),
        (
            json!({"tenant": "acme", "principal": "agent-7", "kind": "root", "name": "echo", "duration": "5s", "justification": "x"}),
            "kind",
        ),
    ] {
        let (s, v) = api(&agent, admin, "POST", "/v1/grants", body).await;
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(want), "{v}");
    }
    // A gateway asks nothing, and sees no request as a grant.
    let (s, _) = api(&agent, warden_tests::FLEET_TOKEN, "POST", "/v1/grants",
        json!({"tenant": "acme", "principal": "agent-7", "kind": "tool", "name": "echo", "duration": "5s", "justification": "x"})).await;
    assert_eq!(s, 403);

    // Asked for 6 s, approved: served within seconds, to agent-7 only.
    let (s, v) = api(&agent, admin, "POST", "/v1/grants",
        json!({"tenant": "acme", "principal": "agent-7", "kind": "tool", "name": "echo", "duration": "6s", "justification": "incident 42: read the echo logs"})).await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().expect("an approval id").to_owned();
    assert_eq!(v["state"], "pending");
    assert_eq!(v["server"], "~grant");
    let (_, list) = api(
        &agent,
        warden_tests::FLEET_TOKEN,
        "GET",
        "/v1/grants",
        Value::Null,
    )
    .await;
    assert!(
        !list.to_string().contains(&id),
        "a pending request is no grant: {list}"
    );
    assert!(!served(&gw, KEY, "echo", 3).await);
    let (s, v) = api(
        &agent,
        APPROVER,
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let approved = Instant::now();
    let took = until(&gw, KEY, "echo", true, Duration::from_secs(6)).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!served(&gw, OTHER, "echo", 4).await, "agent-8 has no grant");
    assert!(
        !served(&gw, KEY, "add", 5).await,
        "nor agent-7 another tool"
    );
    // The list the gateway reads is signed with the bundle key.
    let (_, list) = api(
        &agent,
        warden_tests::FLEET_TOKEN,
        "GET",
        "/v1/grants",
        Value::Null,
    )
    .await;
    assert!(list["jws"].is_string(), "{list}");
    // It ends by itself: refused again once the 6 s have passed.
    until(&gw, KEY, "echo", false, Duration::from_secs(12)).await;
    assert!(
        approved.elapsed() >= Duration::from_secs(5),
        "ended early: {:?}",
        approved.elapsed()
    );

    // A grant withdrawn (denied after approval) leaves within seconds.
    let (_, v) = api(&agent, admin, "POST", "/v1/grants",
        json!({"tenant": "acme", "principal": "agent-7", "kind": "tool", "name": "add", "duration": "1h", "justification": "quarter close"})).await;
    let add = v["id"].as_str().expect("id").to_owned();
    api(
        &agent,
        APPROVER,
        "POST",
        &format!("/v1/approvals/{add}/approve"),
        json!({}),
    )
    .await;
    until(&gw, KEY, "add", true, Duration::from_secs(10)).await;
    let (s, v) = api(
        &agent,
        APPROVER,
        "POST",
        &format!("/v1/approvals/{add}/deny"),
        json!({"comment": "done early"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    until(&gw, KEY, "add", false, Duration::from_secs(10)).await;

    // Every step is in the change record.
    let changes = std::fs::read_to_string(dir.path().join("state/changes.jsonl")).expect("record");
    for step in ["grant.request", "approval.approve", "approval.deny"] {
        assert!(changes.contains(step), "{step}: {changes}");
    }
    assert!(changes.contains(&id) && changes.contains(&add));
}

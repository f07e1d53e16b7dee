//! A gateway given several control agents (`--agent A,B`): when the one
//! it uses dies (SIGKILL), bundle polls, fleet reports, audit shipping and
//! approval claims go on through the next; an agent that serves an older
//! bundle than the one applied is refused, whichever agent it is, and the
//! poll goes on.
//!
//! The agents here keep a state each (the HA fleet shares one store; the
//! gateway's side is the same either way): each is started from its own
//! copy of one source, signing with one key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{keygen, mock_bundle, post_json, Agent, Gateway, Mock};

const POLICY: &str = r#"package warden.authz

import rego.v1

decision := {"allow": false, "reason": "blocked_tool"} if {
	input.request.method == "tools/call"
	input.request.tool in data.warden.blocked
} else := {"allow": true, "reason": "ok"}
"#;

/// A bundle source: the mock route, the policy, and `blocked` tools.
fn write_source(dir: &Path, mock: SocketAddr, blocked: &[&str]) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(dir.join("warden.yaml"), mock_bundle(&[mock], "")).expect("yaml");
    std::fs::write(dir.join("policies/authz.rego"), POLICY).expect("rego");
    set_blocked(dir, blocked);
}

fn set_blocked(dir: &Path, blocked: &[&str]) {
    // Write then rename: the agent's watcher never sees half a file.
    let tmp = dir.join(".data.json.tmp");
    std::fs::write(&tmp, json!({"warden": {"blocked": blocked}}).to_string()).expect("data");
    std::fs::rename(&tmp, dir.join("data.json")).expect("rename");
}

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t","a":1,"b":2,"data":"x"}}})
        .to_string()
}

/// What a call of `tool` gets: "ok" or "denied".
async fn outcome(gw: &Gateway, tool: &str) -> &'static str {
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), call(1, tool), &[])
        .await
        .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).expect("json");
    if v["error"].is_null() && v["result"]["isError"] != true {
        "ok"
    } else {
        "denied"
    }
}

/// SIGKILL by pid, and reaped: the agent gets no chance to say goodbye.
fn kill(agent: &mut Agent) {
    let pid = agent.proc.pid();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -KILL {pid}");
    assert!(
        agent.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "agent {pid} still running"
    );
}

/// Waits (up to `limit`) until `check` holds; panics with `what` and the
/// gateway's log otherwise.
async fn until<F, Fut>(gw: &Gateway, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < limit,
            "{what} (after {limit:?})\n{}",
            gw.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The member `id` of an agent's fleet, if it reported there.
async fn member(agent: &Agent, id: &str) -> Option<Value> {
    let (s, fleet) = agent.api("GET", "/v1/fleet", None).await.ok()?;
    assert_eq!(s, 200, "{fleet}");
    fleet["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}

/// The agent's stored audit records of gateway `id`.
async fn shipped(agent: &Agent, id: &str) -> Vec<Value> {
    let (_, v) = agent
        .api("GET", &format!("/v1/audit?gateway={id}&limit=500"), None)
        .await
        .expect("audit");
    v["rows"].as_array().cloned().unwrap_or_default()
}

/// The newest revision of an agent's history (oldest first).
fn newest_revision(hist: &Value) -> String {
    hist.as_array()
        .and_then(|h| h.last())
        .and_then(|r| r["revision"].as_str())
        .expect("a revision")
        .to_owned()
}

fn metric_line(metrics: &str, name: &str, agent: &str) -> Option<i64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains(&format!("agent=\"{agent}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Two agents serve one source with one key; the gateway knows both and
/// uses the first. The first is killed: the gateway polls the second, a
/// publish there reaches it, its reports and its audit records arrive
/// there, and the metrics and the log say which agent is in use.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_goes_on_through_the_second_agent_when_the_first_dies() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let (src_a, src_b) = (tmp.path().join("src-a"), tmp.path().join("src-b"));
    write_source(&src_a, mock.addr, &["add"]);
    write_source(&src_b, mock.addr, &["add"]);
    let mut a = Agent::start(&src_a, &tmp.path().join("agent-a"), Some(&private)).expect("a");
    let b = Agent::start(&src_b, &tmp.path().join("agent-b"), Some(&private)).expect("b");
    let both = format!("{},{}", a.url, b.url);
    let gw = Gateway::on_agent_with(
        &both,
        &public,
        &tmp.path().join("gw"),
        "gw-ha",
        &["--report-interval", "300ms"],
    )
    .expect("gateway");
    assert_eq!(outcome(&gw, "echo").await, "ok");
    assert_eq!(outcome(&gw, "add").await, "denied");
    // It uses the first: its reports go there, none to the second.
    until(
        &gw,
        Duration::from_secs(10),
        "no report at the first agent",
        || async { member(&a, "gw-ha").await.is_some() },
    )
    .await;
    assert!(
        member(&b, "gw-ha").await.is_none(),
        "the second heard of it"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric_line(&m, "warden_control_agent_in_use", &a.url),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric_line(&m, "warden_control_agent_in_use", &b.url),
        Some(0),
        "{m}"
    );

    kill(&mut a);
    // Calls go on, and are recorded while the first is dead.
    for _ in 0..3 {
        assert_eq!(outcome(&gw, "echo").await, "ok");
    }
    // Reports reach the second.
    until(
        &gw,
        Duration::from_secs(15),
        "no report at the second agent",
        || async { member(&b, "gw-ha").await.is_some() },
    )
    .await;
    // Audit records written after the failover are shipped there.
    until(
        &gw,
        Duration::from_secs(15),
        "no audit at the second agent",
        || async {
            shipped(&b, "gw-ha")
                .await
                .iter()
                .filter(|r| r["tool"] == "echo" && r["direction"] == "request")
                .count()
                >= 3
        },
    )
    .await;
    // A publish on the second reaches the gateway (its long poll is there).
    set_blocked(&src_b, &["add", "echo"]);
    until(
        &gw,
        Duration::from_secs(15),
        "the second agent's publish never arrived",
        || async { outcome(&gw, "echo").await == "denied" },
    )
    .await;
    let (_, hist) = b.api("GET", "/v1/history", None).await.expect("history");
    let newest = newest_revision(&hist);
    assert_eq!(gw.status().await["bundle"]["revision"], newest.as_str());
    // The second member reports the revision it now runs.
    until(
        &gw,
        Duration::from_secs(10),
        "the report names the new revision",
        || async {
            member(&b, "gw-ha")
                .await
                .is_some_and(|m| m["revision"] == newest.as_str())
        },
    )
    .await;
    // Metrics: the second is in use, the first was failed over from.
    let m = gw.metrics().await;
    assert_eq!(
        metric_line(&m, "warden_control_agent_in_use", &b.url),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric_line(&m, "warden_control_agent_in_use", &a.url),
        Some(0),
        "{m}"
    );
    assert!(
        metric_line(&m, "warden_control_agent_failovers_total", &a.url).unwrap_or(0) >= 1,
        "{m}"
    );
    // One line says the change.
    let changes: Vec<String> = gw
        .log()
        .into_iter()
        .filter(|l| l.contains("control agent: now using"))
        .collect();
    assert!(
        !changes.is_empty()
            && changes
                .iter()
                .all(|l| l.contains(&format!("now using {} instead of {}", b.url, a.url))),
        "{changes:?}"
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
}

/// The second agent was started from an older state: its bundle's
/// sequence is below the one the gateway applied from the first. When the
/// first dies, the gateway reaches the second, refuses its bundle as a
/// rollback (logged, with where it came from), keeps the newer one, and
/// keeps polling: the second's next publish, newer, is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_agent_cannot_roll_the_gateway_back() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let (src_a, src_b) = (tmp.path().join("src-a"), tmp.path().join("src-b"));
    // The stale agent builds first (an older sequence), without the
    // newer deny of `checksum`.
    write_source(&src_b, mock.addr, &["add"]);
    let b = Agent::start(&src_b, &tmp.path().join("agent-b"), Some(&private)).expect("b");
    tokio::time::sleep(Duration::from_millis(50)).await;
    write_source(&src_a, mock.addr, &["add", "checksum"]);
    let mut a = Agent::start(&src_a, &tmp.path().join("agent-a"), Some(&private)).expect("a");
    // (Its build is the older: the refusal below names both sequences.)
    let (_, hist_a) = a.api("GET", "/v1/history", None).await.expect("history");
    let (_, hist_b) = b.api("GET", "/v1/history", None).await.expect("history");
    let newer = newest_revision(&hist_a);
    let stale = newest_revision(&hist_b);
    assert_ne!(newer, stale);
    let state = tmp.path().join("gw");
    let gw = Gateway::on_agent_with(
        &format!("{},{}", a.url, b.url),
        &public,
        &state,
        "gw-stale",
        &["--report-interval", "300ms"],
    )
    .expect("gateway");
    assert_eq!(outcome(&gw, "checksum").await, "denied");
    assert_eq!(gw.status().await["bundle"]["revision"], newer.as_str());
    let floor = std::fs::read_to_string(state.join("sequence")).expect("sequence recorded");

    kill(&mut a);
    // The second answers with its older bundle: refused, and said so.
    until(
        &gw,
        Duration::from_secs(15),
        "the stale bundle was never refused",
        || async {
            gw.log().iter().any(|l| {
                l.contains("bundle refused")
                    && l.contains("rollback: the bundle's sequence")
                    && l.contains(&format!("served by {}", b.url))
            })
        },
    )
    .await;
    let st = gw.status().await;
    assert_eq!(st["bundle"]["revision"], newer.as_str(), "{st}");
    let err = st["bundle"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("rollback") && err.contains(&b.url), "{err}");
    assert_eq!(
        outcome(&gw, "checksum").await,
        "denied",
        "the newer rules hold"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("sequence")).expect("sequence"),
        floor,
        "the floor did not move"
    );
    // Still refused a while later (the poll goes on, and never applies it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gw.status().await["bundle"]["revision"], newer.as_str());
    // A publish at the second builds a newer bundle: the poll goes on and
    // takes it.
    set_blocked(&src_b, &["echo"]);
    until(
        &gw,
        Duration::from_secs(40),
        "the second agent's newer bundle never arrived",
        || async { outcome(&gw, "echo").await == "denied" },
    )
    .await;
    assert_eq!(outcome(&gw, "checksum").await, "ok");
    assert_ne!(gw.status().await["bundle"]["revision"], newer.as_str());
}

/// With the first agent down, a held call is claimed at the second: the
/// caller is pointed there, an approver approves there, and the same call
/// is served once.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_is_claimed_at_the_second_agent_when_the_first_is_down() {
    use sha2::Digest;
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let key = warden_config::access::hash_api_key("wk_agent7_secret", &[9u8; 16]);
    let write = |dir: &Path| {
        std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
        std::fs::write(
            dir.join("warden.yaml"),
            format!(
                "version: 1\npolicy: {{entrypoint: data.ops.decision, denial: tool_error}}\nidentity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{key}\"}}\napprovals:\n  expires: 60s\n  pending: 10m\nservice_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{}\"]}}\nroutes:\n  - {{prefix: /mock, server: mock}}\n",
                mock.addr
            ),
        )
        .expect("yaml");
        std::fs::write(
            dir.join("policies/ops.rego"),
            "package ops\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\", \"require_approval\": {\"approvers\": 1, \"reason\": \"adds need a second pair of eyes\"}} if {\n\tinput.request.tool == \"add\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
        )
        .expect("rego");
    };
    let (src_a, src_b) = (tmp.path().join("src-a"), tmp.path().join("src-b"));
    write(&src_a);
    write(&src_b);
    let alice = "approver-alice-token-0001";
    let approvers = tmp.path().join("approvers.yaml");
    std::fs::write(
        &approvers,
        format!("alice: {}\n", hex::encode(sha2::Sha256::digest(alice))),
    )
    .expect("approvers");
    let extra = ["--approvers".as_ref(), approvers.as_os_str()];
    let mut a =
        Agent::start_with(&src_a, &tmp.path().join("agent-a"), Some(&private), &extra).expect("a");
    let b =
        Agent::start_with(&src_b, &tmp.path().join("agent-b"), Some(&private), &extra).expect("b");
    let gw = Gateway::on_agent(
        &format!("{},{}", a.url, b.url),
        &public,
        &tmp.path().join("gw"),
        "gw-approvals",
    )
    .expect("gateway");
    gw.wait_ready().expect("ready");
    kill(&mut a);
    let add = |id: u64| {
        let gw = &gw;
        async move {
            let (s, _, body) = post_json(
                &gw.url("/mock/mcp"),
                call(id, "add"),
                &[("x-api-key", "wk_agent7_secret")],
            )
            .await
            .expect("post");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            serde_json::from_slice::<Value>(&body).expect("json")
        }
    };
    // Held: claimed at the second, which the caller is pointed to.
    let held = add(1).await;
    let text = held["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        held["result"]["isError"] == true && text.contains("held for human approval"),
        "{held}\n{}",
        gw.log().join("\n")
    );
    let id = text
        .split("Approval id: ")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .expect("approval id")
        .to_owned();
    assert!(id.starts_with("ap_"), "{text}");
    assert!(
        text.contains(&format!("{}/v1/approvals/{id}", b.url)),
        "pointed at the agent that holds it: {text}"
    );
    // Alice approves at the second.
    let (s, _, v) = warden_tests::request(
        &format!("{}/v1/approvals/{id}/approve", b.url),
        "POST",
        &[("authorization", &format!("Bearer {alice}"))],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("approve");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&v));
    // The same call is served, once.
    let served = add(2).await;
    assert!(
        served["error"].is_null() && served["result"]["isError"] != true,
        "{served}\n{}",
        gw.log().join("\n")
    );
    assert_eq!(served["result"]["content"][0]["text"], "3", "{served}");
    let again = add(3).await;
    let again_text = again["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        again_text.contains("held for human approval") && !again_text.contains(&id),
        "single use: {again}"
    );
    let m = gw.metrics().await;
    assert!(
        metric_line(&m, "warden_control_agent_in_use", &b.url) == Some(1),
        "{m}"
    );
    // The claim was asked of the dead agent first, and failed there.
    assert!(
        m.lines()
            .any(|l| l.starts_with("warden_control_agent_failures_total")
                && l.contains(&format!("agent=\"{}\"", a.url))),
        "{m}"
    );
}

/// A list of agents with junk in it stops the start with the reason,
/// whether it comes from the flag, the flag repeated or the environment;
/// nothing is fetched first.
#[test]
fn junk_in_the_list_of_agents_stops_the_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = |args: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(warden_tests::bin("warden"));
        cmd.arg("run")
            .args(args)
            .args(["--listen", "127.0.0.1:1", "--state-dir"])
            .arg(tmp.path())
            .env_remove("WARDEN_AGENT")
            .env_remove("WARDEN_APPROVALS_AGENT");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (ok, _, err) =
            warden_tests::run_with_timeout(&mut cmd, Duration::from_secs(20)).expect("run");
        assert!(!ok, "{args:?} {env:?} started");
        err
    };
    for (args, env, says) in [
        (
            &["--agent", "http://127.0.0.1:1,,http://127.0.0.1:2"][..],
            None,
            "an empty entry",
        ),
        (&["--agent", "http://127.0.0.1:1,"], None, "an empty entry"),
        (
            &["--agent", "ftp://127.0.0.1:1"],
            None,
            "http:// or https://",
        ),
        (
            &[
                "--agent",
                "http://127.0.0.1:1",
                "--agent",
                "file:///etc/passwd",
            ],
            None,
            "http:// or https://",
        ),
        (&["--agent", "127.0.0.1:7070"], None, "not a URL"),
        (
            &["--agent", "http://fleet-token-0123456789@127.0.0.1:1"],
            None,
            "credentials",
        ),
        (
            &[],
            Some(("WARDEN_AGENT", "http://127.0.0.1:1,,")),
            "an empty entry",
        ),
        (
            &[
                "--agent",
                "http://127.0.0.1:1",
                "--approvals-agent",
                "gopher://x",
            ],
            None,
            "--approvals-agent `gopher://x`",
        ),
    ] {
        let err = run(args, env);
        assert!(
            err.contains(says) && err.starts_with("warden: --"),
            "{args:?} {env:?}: {err}"
        );
        assert!(
            !err.contains("no bundle"),
            "refused before any fetch: {err}"
        );
    }
}

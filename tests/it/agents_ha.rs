//! Control agents in HA: two agents on one real PostgreSQL database
//! (`serve --database`), three gateways that know both. What one agent
//! publishes every gateway runs, whichever agent it polls; two publishes
//! at the same moment on the two agents get two sequences and every
//! gateway ends on the newer; an agent killed (SIGKILL) leaves the other
//! serving every route, and the background jobs move to it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::postgres::PgServer;
use warden_tests::{keygen, mock_bundle, post_json, Agent, Gateway, Mock};

const POLICY: &str = r#"package warden.authz

import rego.v1

decision := {"allow": false, "reason": "blocked_tool"} if {
	input.request.method == "tools/call"
	input.request.tool in data.warden.blocked
} else := {"allow": true, "reason": "ok"}
"#;

fn write_source(dir: &Path, mock: SocketAddr, blocked: &[&str]) {
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    std::fs::write(dir.join("warden.yaml"), mock_bundle(&[mock], "")).expect("yaml");
    std::fs::write(dir.join("policies/authz.rego"), POLICY).expect("rego");
    set_blocked(dir, blocked);
}

fn set_blocked(dir: &Path, blocked: &[&str]) {
    let tmp = dir.join(".data.json.tmp");
    std::fs::write(&tmp, json!({"warden": {"blocked": blocked}}).to_string()).expect("data");
    std::fs::rename(&tmp, dir.join("data.json")).expect("rename");
}

/// What a call of `tool` gets: "ok" or "denied".
async fn outcome(gw: &Gateway, tool: &str) -> &'static str {
    let call = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t"}}});
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), call.to_string(), &[])
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

fn kill(agent: &mut Agent) {
    let pid = agent.proc.pid();
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
    assert!(agent.proc.wait_exit(Duration::from_secs(10)).is_some());
}

async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what} (after {limit:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The newest revision in `agent`'s history.
async fn newest(agent: &Agent) -> (u64, String) {
    let (s, hist) = agent
        .api("GET", "/v1/history", None)
        .await
        .expect("history");
    assert_eq!(s, 200, "{hist}");
    hist.as_array()
        .expect("a list")
        .iter()
        .map(|h| {
            (
                h["seq"].as_u64().expect("seq"),
                h["revision"].as_str().expect("revision").to_owned(),
            )
        })
        .max()
        .expect("something published")
}

async fn running(gw: &Gateway) -> String {
    gw.status().await["bundle"]["revision"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

struct Fleet {
    _pg: PgServer,
    _mock: Mock,
    tmp: tempfile::TempDir,
    a: Agent,
    b: Agent,
    gws: Vec<Gateway>,
}

fn agent(pg_url: &str, src: &Path, state: &Path, key: &Path) -> Agent {
    Agent::start_with(
        src,
        state,
        Some(key),
        &["--database".as_ref(), pg_url.as_ref()],
    )
    .expect("agent")
}

/// Two agents on one database, both from one source, signing with one
/// key; three gateways, two preferring the first agent and one the second.
fn fleet(db: &str) -> Fleet {
    let pg = PgServer::start();
    let url = pg.database(db);
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let src = tmp.path().join("src");
    write_source(&src, mock.addr, &["add"]);
    let a = agent(&url, &src, &tmp.path().join("agent-a"), &private);
    let b = agent(&url, &src, &tmp.path().join("agent-b"), &private);
    let ab = format!("{},{}", a.url, b.url);
    let ba = format!("{},{}", b.url, a.url);
    let gws = [("gw-1", &ab), ("gw-2", &ab), ("gw-3", &ba)]
        .into_iter()
        .map(|(id, agents)| {
            Gateway::on_agent_with(
                agents,
                &public,
                &tmp.path().join(id),
                id,
                &["--report-interval", "300ms"],
            )
            .expect("gateway")
        })
        .collect();
    Fleet {
        _pg: pg,
        _mock: mock,
        tmp,
        a,
        b,
        gws,
    }
}

/// Both agents answer with one history; the second agent, started after
/// the first published, did not publish the same source again.
#[tokio::test(flavor = "multi_thread")]
async fn two_agents_share_one_control_plane_and_race_to_publish_without_collision() {
    let f = fleet("race");
    let (seq_a, rev_a) = newest(&f.a).await;
    assert_eq!(newest(&f.b).await, (seq_a, rev_a.clone()));
    let (_, hist) = f.a.api("GET", "/v1/history", None).await.expect("history");
    assert_eq!(
        hist.as_array().map(Vec::len),
        Some(1),
        "one revision: {hist}"
    );
    for gw in &f.gws {
        assert_eq!(outcome(gw, "add").await, "denied");
        assert_eq!(running(gw).await, rev_a);
    }
    // Two publishes at the same moment, one on each agent.
    set_blocked(&f.tmp.path().join("src"), &["add", "echo"]);
    let (ra, rb) = tokio::join!(
        f.a.api("POST", "/v1/publish", Some(json!({}))),
        f.b.api("POST", "/v1/publish", Some(json!({}))),
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert_eq!((ra.0, rb.0), (200, 200), "{ra:?} {rb:?}");
    let (pa, pb) = (
        ra.1["published"].as_str().expect("a's").to_owned(),
        rb.1["published"].as_str().expect("b's").to_owned(),
    );
    assert_ne!(pa, pb, "two publishes, two revisions");
    let (_, hist) = f.b.api("GET", "/v1/history", None).await.expect("history");
    let seqs: Vec<u64> = hist
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|h| h["seq"].as_u64())
        .collect();
    let mut distinct = seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    // Both publishes and the first revision; the lease holder's source
    // watcher may publish the changed source too, in between (a fourth,
    // under load): never a sequence twice.
    assert_eq!(distinct.len(), seqs.len(), "none shared: {seqs:?}");
    assert!((3..=4).contains(&seqs.len()), "{seqs:?}");
    // Every gateway ends on the newest, whichever agent it polls.
    let (_, top) = newest(&f.a).await;
    assert!(top == pa || top == pb);
    for gw in &f.gws {
        eventually(
            Duration::from_secs(20),
            "a gateway on the newest",
            || async { running(gw).await == top },
        )
        .await;
        assert_eq!(outcome(gw, "echo").await, "denied");
    }
    // None ever applied an older one after a newer (the gateways refuse
    // and log it): no gateway says it went back.
    for gw in &f.gws {
        assert!(
            !gw.log().iter().any(|l| l.contains("older")),
            "{}",
            gw.log().join("\n")
        );
    }
}

/// The first agent is killed (SIGKILL): the gateways keep serving and
/// polling through the second; the jobs (the source watcher among them)
/// move to the second within seconds, so a source edit is published and
/// reaches every gateway; a publish through the second's API reaches them
/// too.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_leaves_the_other_serving_and_running_the_jobs() {
    let mut f = fleet("failover");
    for gw in &f.gws {
        assert_eq!(outcome(gw, "add").await, "denied");
    }
    // Which agent holds the jobs does not matter: kill the one that does.
    let holder = f._pg.psql(
        "failover",
        "SELECT holder FROM warden_leases WHERE name = 'jobs'",
    );
    let holder = holder.expect("lease row");
    let a_pid = f.a.proc.pid().to_string();
    let (dead_first, survivor) = if holder.ends_with(&format!(":{a_pid}")) {
        kill(&mut f.a);
        (true, &f.b)
    } else {
        kill(&mut f.b);
        (false, &f.a)
    };
    let killed_at = Instant::now();
    for gw in &f.gws {
        assert_eq!(outcome(gw, "echo").await, "ok");
    }
    // The source watcher now runs on the survivor: an edit is published.
    set_blocked(&f.tmp.path().join("src"), &["add", "echo"]);
    for gw in &f.gws {
        eventually(
            Duration::from_secs(30),
            "an edit after the jobs' holder died reached a gateway",
            || async { outcome(gw, "echo").await == "denied" },
        )
        .await;
    }
    let moved = killed_at.elapsed();
    let survivor_pid = survivor.proc.pid().to_string();
    eventually(
        Duration::from_secs(5),
        "the lease names the survivor",
        || async {
            f._pg
                .psql(
                    "failover",
                    "SELECT holder FROM warden_leases WHERE name = 'jobs'",
                )
                .is_ok_and(|h| h.ends_with(&format!(":{survivor_pid}")))
        },
    )
    .await;
    let (_, _, m) = warden_tests::request(
        &format!("{}/metrics", survivor.url),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("metrics");
    assert!(
        String::from_utf8_lossy(&m).contains("warden_agent_jobs_lease_held 1"),
        "the survivor says it runs the jobs"
    );
    eprintln!(
        "jobs moved and the edit reached three gateways {moved:?} after the {} agent died",
        if dead_first { "first" } else { "second" }
    );
    // A publish through the survivor's API reaches every gateway.
    set_blocked(&f.tmp.path().join("src"), &[]);
    let (s, v) = survivor
        .api("POST", "/v1/publish", Some(json!({})))
        .await
        .expect("publish");
    assert_eq!(s, 200, "{v}");
    let rev = v["published"].as_str().expect("revision").to_owned();
    for gw in &f.gws {
        eventually(
            Duration::from_secs(20),
            "the survivor's publish reached a gateway",
            || async { running(gw).await == rev },
        )
        .await;
        assert_eq!(outcome(gw, "add").await, "ok");
    }
}

/// A HIGH call held at one agent while it lives: that agent is killed
/// (SIGKILL) with the call pending; the approver approves it through the
/// other agent (the pending approval is in the database, not lost with
/// the agent), and the call retried is served once, claimed through the
/// survivor; the next identical call is held again (single use).
#[tokio::test(flavor = "multi_thread")]
async fn a_call_held_at_a_dead_agent_is_approved_through_the_other_and_served_once() {
    use sha2::Digest;
    let pg = PgServer::start();
    let url = pg.database("held");
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let key = warden_config::access::hash_api_key("wk_agent7_secret", &[9u8; 16]);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("policies")).expect("mkdir");
    std::fs::write(
        src.join("warden.yaml"),
        format!(
            "version: 1\npolicy: {{entrypoint: data.ops.decision, denial: tool_error}}\nidentity:\n  resource: http://127.0.0.1/mock/mcp\n  api_keys:\n    - {{id: agent-7, tenant: acme, roles: [developer], kind: agent, hash: \"{key}\"}}\napprovals:\n  expires: 60s\n  pending: 10m\nservice_groups:\n  - name: g\n    servers:\n      - {{name: mock, upstreams: [\"{}\"]}}\nroutes:\n  - {{prefix: /mock, server: mock}}\n",
            mock.addr
        ),
    )
    .expect("yaml");
    std::fs::write(
        src.join("policies/ops.rego"),
        "package ops\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"ok\", \"risk\": \"HIGH\", \"require_approval\": {\"approvers\": 1, \"reason\": \"adds need a second pair of eyes\"}} if {\n\tinput.request.tool == \"add\"\n} else := {\"allow\": true, \"reason\": \"ok\"}\n",
    )
    .expect("rego");
    let alice = "approver-alice-token-0001";
    let approvers = tmp.path().join("approvers.yaml");
    std::fs::write(
        &approvers,
        format!("alice: {}\n", hex::encode(sha2::Sha256::digest(alice))),
    )
    .expect("approvers");
    let extra = [
        "--approvers".as_ref(),
        approvers.as_os_str(),
        "--database".as_ref(),
        url.as_ref(),
    ];
    let mut a = Agent::start_with(&src, &tmp.path().join("a"), Some(&private), &extra).expect("a");
    let b = Agent::start_with(&src, &tmp.path().join("b"), Some(&private), &extra).expect("b");
    let gw = Gateway::on_agent(
        &format!("{},{}", a.url, b.url),
        &public,
        &tmp.path().join("gw"),
        "gw-held",
    )
    .expect("gateway");
    gw.wait_ready().expect("ready");
    let add = |id: u64| {
        let gw = &gw;
        async move {
            let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}});
            let (s, _, body) = post_json(
                &gw.url("/mock/mcp"),
                call.to_string(),
                &[("x-api-key", "wk_agent7_secret")],
            )
            .await
            .expect("post");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            serde_json::from_slice::<Value>(&body).expect("json")
        }
    };
    // Held, while both live: the claim went to the first agent.
    let held = add(1).await;
    let text = held["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("held for human approval"), "{held}");
    let id = text
        .split("Approval id: ")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .expect("approval id")
        .to_owned();
    assert!(text.contains(&a.url), "claimed at the first agent: {text}");
    assert_eq!(
        pg.psql(
            "held",
            &format!("SELECT count(*) FROM warden_approvals WHERE id = '{id}'")
        )
        .expect("psql"),
        "1",
        "pending in the database"
    );
    kill(&mut a);
    // The survivor knows it and takes the approval.
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
    // Served once, through the survivor.
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
}

/// Calls `tool` on every gateway, over and over, until dropped.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(urls: Vec<String>, tool: &'static str) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut id = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                for u in &urls {
                    id += 1;
                    let call = json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t"}}});
                    let _ = post_json(u, call.to_string(), &[]).await;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        Traffic { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// A canary is being watched when the agent running the jobs is killed
/// (SIGKILL): the other takes the watch on, judges it on the whole
/// fleet's reports, and promotes it exactly once; every gateway then runs
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_watch_survives_the_death_of_the_agent_judging_it() {
    let mut f = fleet("canary");
    let urls: Vec<String> = f.gws.iter().map(|g| g.url("/mock/mcp")).collect();
    // Every gateway reported somewhere before the canary picks members.
    for gw in &f.gws {
        assert_eq!(outcome(gw, "echo").await, "ok");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let traffic = Traffic::start(urls, "echo");
    // A healthy edit (it blocks a tool nobody calls) as a canary.
    set_blocked(&f.tmp.path().join("src"), &["add", "checksum"]);
    let (s, v) =
        f.a.api(
            "POST",
            "/v1/publish",
            Some(json!({"canary": {"share": 0.34, "watch_secs": 10, "guard": {"min_calls": 5}}})),
        )
        .await
        .expect("canary");
    assert_eq!(s, 200, "{v}");
    let canary = v["published"].as_str().expect("revision").to_owned();
    // The other agent sees the watch as soon as it hears of it.
    eventually(
        Duration::from_secs(5),
        "the other agent sees the watch",
        || async {
            let (_, r) = f.b.api("GET", "/v1/rollout", None).await.expect("rollout");
            r["state"] == "watching"
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill the agent judging it.
    let holder = f
        ._pg
        .psql(
            "canary",
            "SELECT holder FROM warden_leases WHERE name = 'jobs'",
        )
        .expect("lease");
    let survivor = if holder.ends_with(&format!(":{}", f.a.proc.pid())) {
        kill(&mut f.a);
        &f.b
    } else {
        kill(&mut f.b);
        &f.a
    };
    let mut last = Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let (_, r) = survivor
            .api("GET", "/v1/rollout", None)
            .await
            .expect("rollout");
        if r["state"] != "watching" {
            last = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    traffic.stop().await;
    assert_eq!(last["state"], "promoted", "{last}");
    assert_eq!(last["revision"], canary.as_str(), "{last}");
    let promotions = f
        ._pg
        .psql(
            "canary",
            "SELECT count(*) FROM warden_changes WHERE line LIKE '%\"action\":\"promote\"%'",
        )
        .expect("changes");
    assert_eq!(promotions, "1", "promoted exactly once");
    // Every gateway runs it.
    for gw in &f.gws {
        eventually(
            Duration::from_secs(20),
            "the promoted canary reached a gateway",
            || async { outcome(gw, "add").await == "denied" },
        )
        .await;
    }
}

/// The audit lines the database holds for gateway `id`: (rows, distinct
/// lines).
fn held_lines(pg: &PgServer, db: &str, id: &str) -> (u64, u64) {
    let out = pg
        .psql(
            db,
            &format!("SELECT count(*) || ' ' || count(DISTINCT hash) FROM warden_audit WHERE gateway = '{id}'"),
        )
        .unwrap_or_default();
    let mut it = out.split(' ').filter_map(|n| n.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// PostgreSQL restarted while three gateways carry traffic: the gateways
/// keep serving on their bundles, the agents reconnect by themselves (a
/// publish after the restart goes through), and every audit line every
/// gateway wrote ends up in the database once (the gateways' trails are
/// the spool while it is down; a batch re-sent is not stored twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_under_load_loses_no_audit_line_and_stores_none_twice() {
    let mut f = fleet("restart");
    let urls: Vec<String> = f.gws.iter().map(|g| g.url("/mock/mcp")).collect();
    let traffic = Traffic::start(urls, "echo");
    tokio::time::sleep(Duration::from_secs(2)).await;
    f._pg.stop();
    // Down: the gateways serve on.
    for gw in &f.gws {
        assert_eq!(outcome(gw, "echo").await, "ok");
        assert_eq!(outcome(gw, "add").await, "denied");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    f._pg.run();
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.stop().await;
    // Every line of every gateway's trail is held once.
    for (i, gw) in f.gws.iter().enumerate() {
        let id = format!("gw-{}", i + 1);
        let written = gw.audit().len() as u64;
        assert!(written > 20, "{id} wrote {written} lines");
        eventually(
            Duration::from_secs(60),
            "every audit line shipped after the restart",
            || async { held_lines(&f._pg, "restart", &id) == (written, written) },
        )
        .await;
    }
    // The agents took their connections back: a publish goes through.
    set_blocked(&f.tmp.path().join("src"), &["add", "echo"]);
    let (s, v) =
        f.b.api("POST", "/v1/publish", Some(json!({})))
            .await
            .expect("publish");
    assert_eq!(s, 200, "{v}");
    for gw in &f.gws {
        eventually(
            Duration::from_secs(20),
            "a publish after the restart reached a gateway",
            || async { outcome(gw, "echo").await == "denied" },
        )
        .await;
    }
}

/// The console and the CLI work against either agent: a console login on
/// one is a session on the other (a load balancer may send the next page
/// anywhere), a logout through the other ends it on both, and the CLI
/// reads the same history from either.
#[tokio::test(flavor = "multi_thread")]
async fn the_console_and_the_cli_work_against_either_agent() {
    let f = fleet("console");
    let header = |h: &[(String, String)], k: &str| {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (s, h, _) = warden_tests::request(
        &format!("{}/console/login", f.a.url),
        "POST",
        &[("content-type", "application/x-www-form-urlencoded")],
        bytes::Bytes::from(format!("token={}", warden_tests::ADMIN_TOKEN)),
        false,
    )
    .await
    .expect("login");
    assert_eq!(s, 303);
    let cookie = header(&h, "set-cookie")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(cookie.starts_with("__Host-warden_console="), "{cookie}");
    let page = |agent: &Agent, path: &'static str| {
        let url = format!("{}{path}", agent.url);
        let cookie = cookie.clone();
        async move {
            warden_tests::request(
                &url,
                "GET",
                &[("cookie", &cookie)],
                bytes::Bytes::new(),
                false,
            )
            .await
            .expect("get")
        }
    };
    // The next page lands on the other agent: logged in there.
    let (s, _, body) = page(&f.b, "/console/fleet").await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let html = String::from_utf8_lossy(&body).into_owned();
    assert!(html.contains("gw-3"), "the fleet page lists the gateways");
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .expect("a form's CSRF token")
        .to_owned();
    // Logged out through the other agent: the session is gone on both.
    let (s, _, _) = warden_tests::request(
        &format!("{}/console/logout", f.b.url),
        "POST",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", &cookie),
        ],
        bytes::Bytes::from(format!("csrf={csrf}")),
        false,
    )
    .await
    .expect("logout");
    assert_eq!(s, 303);
    for agent in [&f.a, &f.b] {
        let (s, h, _) = page(agent, "/console/fleet").await;
        assert_eq!(
            (s, header(&h, "location")),
            (303, "/console/login".to_owned())
        );
    }
    // The CLI reads the same history from either agent.
    let history = |agent: &Agent| {
        let out = std::process::Command::new(warden_tests::bin("warden-agent"))
            .args(["history", "--agent", &agent.url])
            .env("WARDEN_AGENT_ADMIN_TOKEN", warden_tests::ADMIN_TOKEN)
            .output()
            .expect("warden-agent history");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (on_a, on_b) = (history(&f.a), history(&f.b));
    assert_eq!(on_a, on_b);
    assert!(on_a.contains(&newest(&f.a).await.1), "{on_a}");
}

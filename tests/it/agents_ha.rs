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
    assert_eq!(distinct.len(), 3, "three sequences, none shared: {seqs:?}");
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

//! Signed bundles from the control agent, hot-swapped into running gateways:
//! fleet rollout, kill switch, rollback, refusal of every kind of bad bundle,
//! swaps under load, and restarts with the agent down.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_tests::{
    bin, keygen, mock_bundle, post_json, run_with_timeout, Agent, Gateway, Mock, FLEET_TOKEN,
};

#[path = "rollout.rs"]
mod rollout;

#[path = "audit_agent.rs"]
mod audit_agent;

const POLICY: &str = r#"package warden.authz

import rego.v1

decision := {"allow": false, "reason": "blocked_tool"} if {
	input.request.method == "tools/call"
	input.request.tool in data.warden.blocked
} else := {"allow": true, "reason": "ok"}
"#;

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t","a":1,"b":2,"data":"x"}}})
        .to_string()
}

/// A bundle source directory: the mock route, the policy, and `blocked` tools.
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

fn gateway_on_agent(agent: &Agent, public: &Path, state: &Path, id: &str) -> Gateway {
    Gateway::on_agent(&agent.url, public, state, id).expect("gateway")
}

/// What a call of `tool` gets: "ok", "denied" (policy) or "paused" (kill switch).
async fn outcome(gw: &Gateway, tool: &str) -> &'static str {
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), call(1, tool), &[])
        .await
        .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).expect("json");
    match v["error"]["code"].as_i64() {
        Some(-31011) => "paused",
        _ if v["result"]["isError"] == true => "denied",
        None => "ok",
        Some(_) => "denied",
    }
}

async fn until_all(gws: &[Gateway], tool: &str, want: &str, limit: Duration) -> Duration {
    // A gateway is probed until it answers `want`, then left alone: probes
    // are calls the gateways count, and a canary's health is judged on its
    // calls, so waiting on a slow gateway must not keep calling the others.
    let start = Instant::now();
    let mut waiting: Vec<&Gateway> = gws.iter().collect();
    loop {
        let mut still = Vec::with_capacity(waiting.len());
        for g in waiting {
            if outcome(g, tool).await != want {
                still.push(g);
            }
        }
        if still.is_empty() {
            return start.elapsed();
        }
        waiting = still;
        assert!(
            start.elapsed() < limit,
            "{tool} never became {want} on every gateway"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_follows_the_agent_kill_switch_and_rollback() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let agent = Agent::start(&source, &tmp.path().join("agent"), Some(&private)).expect("agent");
    let gws: Vec<Gateway> = (0..3)
        .map(|i| {
            gateway_on_agent(
                &agent,
                &public,
                &tmp.path().join(format!("gw{i}")),
                &format!("gw{i}"),
            )
        })
        .collect();
    for g in &gws {
        assert_eq!(outcome(g, "echo").await, "ok");
        assert_eq!(outcome(g, "add").await, "denied");
    }
    let (_, hist) = agent
        .api("GET", "/v1/history", None)
        .await
        .expect("history");
    let first = hist[0]["revision"].as_str().expect("rev").to_owned();

    // Editing the source publishes a new revision; every gateway applies it.
    let t = Instant::now();
    set_blocked(&source, &["echo"]);
    until_all(&gws, "echo", "denied", Duration::from_secs(10)).await;
    eprintln!(
        "source edit → in effect on all 3 gateways: {:?} (agent watch interval 100 ms)",
        t.elapsed()
    );
    assert_eq!(outcome(&gws[0], "add").await, "ok");

    // The kill switch is a new revision too.
    let t = Instant::now();
    let (s, v) = agent
        .api(
            "POST",
            "/v1/kill",
            Some(json!({"scope": "tool", "value": "checksum"})),
        )
        .await
        .expect("kill");
    assert_eq!(s, 200, "{v}");
    let published = t.elapsed();
    let reach = until_all(&gws, "checksum", "paused", Duration::from_secs(10)).await;
    eprintln!("kill switch: published in {published:?}, on all 3 gateways {reach:?} later");
    // Long-poll pushes it (its speed is measured in BENCHMARKS.md, not
    // here); the bound only tells a push from the 10 s give-up above, with
    // room for a loaded CI machine.
    assert!(reach < Duration::from_secs(5), "kill switch took {reach:?}");

    // The fleet view shows every member on the current revision.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
    let members = fleet["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{fleet}");
    assert!(
        members
            .iter()
            .all(|m| m["current"] == true && m["healthy"] == true),
        "{fleet}"
    );

    // Rollback republishes the first revision's content.
    let (s, v) = agent
        .api("POST", "/v1/rollback", Some(json!({"revision": first})))
        .await
        .expect("rollback");
    assert_eq!(s, 200, "{v}");
    until_all(&gws, "add", "denied", Duration::from_secs(10)).await;
    assert_eq!(outcome(&gws[1], "echo").await, "ok");
    assert_eq!(
        outcome(&gws[2], "checksum").await,
        "paused",
        "a rollback of content keeps the kill switch pulled"
    );

    // The agent's API wants its tokens, and records every change.
    let (s, _) = warden_tests::request(
        &format!("{}/v1/fleet", agent.url),
        "GET",
        &[("authorization", &format!("Bearer {FLEET_TOKEN}"))],
        bytes::Bytes::new(),
        false,
    )
    .await
    .map(|(s, h, _)| (s, h))
    .expect("fleet");
    assert_eq!(s, 403, "the fleet token cannot administer");
    let (s, _, _) = warden_tests::request(
        &format!("{}/v1/bundles/current", agent.url),
        "GET",
        &[],
        bytes::Bytes::new(),
        false,
    )
    .await
    .expect("anon");
    assert_eq!(s, 401);
    let changes = std::fs::read_to_string(tmp.path().join("agent/changes.jsonl")).expect("changes");
    for action in ["\"publish\"", "\"kill\"", "\"rollback\""] {
        assert!(changes.contains(action), "{action} not recorded: {changes}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_bundles_that_do_not_build() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let agent = Agent::start(&source, &tmp.path().join("agent"), Some(&private)).expect("agent");
    let gw = gateway_on_agent(&agent, &public, &tmp.path().join("gw"), "gw");
    let rev = gw.status().await["bundle"]["revision"].clone();
    let cases: [(&str, &str, &str); 2] = [
        (
            "policies/authz.rego",
            "package warden.authz\n\ndecision := {\"allow\": true if {\n",
            "policies/authz.rego",
        ),
        (
            "warden.yaml",
            &format!("{}\nhelth_check: {{}}\n", mock_bundle(&[mock.addr], "")),
            "unknown field `helth_check`",
        ),
    ];
    for (file, text, want) in cases {
        let good = std::fs::read(source.join(file)).expect("read");
        std::fs::write(source.join(file), text).expect("write");
        let (s, v) = agent
            .api("POST", "/v1/publish", None)
            .await
            .expect("publish");
        assert_eq!(s, 422, "{v}");
        let problems = v["problems"].to_string();
        assert!(problems.contains(want), "{problems}");
        let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
        assert!(
            fleet["last_build_error"]
                .as_str()
                .is_some_and(|e| e.contains(want)),
            "{fleet}"
        );
        assert_eq!(
            outcome(&gw, "echo").await,
            "ok",
            "the good bundle keeps serving"
        );
        std::fs::write(source.join(file), good).expect("restore");
    }
    assert_eq!(gw.status().await["bundle"]["revision"], rev);
}

/// A static HTTP server whose body can be changed; ETag = a counter.
struct Static {
    addr: SocketAddr,
    body: Arc<Mutex<(u64, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
}

impl Static {
    fn start(body: Vec<u8>) -> Static {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        l.set_nonblocking(true).expect("nb");
        let shared = Arc::new(Mutex::new((1u64, body)));
        let stop = Arc::new(AtomicBool::new(false));
        let (b2, s2) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let (tag, data) = b2.lock().map(|g| (g.0, g.1.clone())).unwrap_or_default();
                let etag = format!("\"v{tag}\"");
                if req.contains(&format!("if-none-match: {etag}")) {
                    let _ = write!(c, "HTTP/1.1 304 Not Modified\r\netag: {etag}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                } else {
                    let _ = write!(c, "HTTP/1.1 200 OK\r\netag: {etag}\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", data.len());
                    let _ = c.write_all(&data);
                }
            }
        });
        Static {
            addr,
            body: shared,
            stop,
        }
    }

    /// Serves `data` under the ETag the last body had (a source that sent
    /// junk under the real ETag once, then the bundle).
    fn replace(&self, data: Vec<u8>) {
        if let Ok(mut g) = self.body.lock() {
            g.1 = data;
        }
    }

    fn set(&self, data: Vec<u8>) {
        if let Ok(mut g) = self.body.lock() {
            g.0 += 1;
            g.1 = data;
        }
    }
}

impl Drop for Static {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn build_archive(source: &Path, out: &Path, key: &Path, revision: &str) -> Vec<u8> {
    build_archive_with(source, out, key, revision, &[])
}

fn build_archive_with(
    source: &Path,
    out: &Path,
    key: &Path,
    revision: &str,
    extra: &[&str],
) -> Vec<u8> {
    let (ok, _, err) = run_with_timeout(
        std::process::Command::new(bin("warden-agent"))
            .arg("build")
            .arg(source)
            .arg("--out")
            .arg(out)
            .args(["--revision", revision, "--signing-key"])
            .arg(key)
            .args(extra),
        Duration::from_secs(30),
    )
    .expect("build");
    assert!(ok, "{err}");
    std::fs::read(out).expect("archive")
}

/// Rewrites one file inside a tar.gz, leaving the signature as it was.
fn tamper(archive: &[u8], file: &str, text: &str) -> Vec<u8> {
    let mut files = warden_config::archive::unpack(archive).expect("unpack");
    files.insert(file.into(), text.as_bytes().to_vec());
    warden_config::archive::pack(&files)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateways_refuse_unsigned_forged_tampered_and_truncated_bundles() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let (rogue, _) = keygen(tmp.path(), "rogue");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let good = build_archive(&source, &tmp.path().join("good.tgz"), &private, "good-1");
    let srv = Static::start(good.clone());
    let gw = Gateway::start_with(
        "",
        false,
        &[],
        &[
            "--bundle-url",
            &format!("http://{}/bundle.tar.gz", srv.addr),
            "--bundle-public-key",
            public.to_str().expect("utf8"),
            "--state-dir",
            tmp.path().join("gw").to_str().expect("utf8"),
            "--bundle-poll",
            "100ms",
        ],
        None,
    )
    .expect("gateway");
    assert_eq!(gw.status().await["bundle"]["revision"], "good-1");
    set_blocked(&source, &["echo"]);
    let forged = build_archive(&source, &tmp.path().join("forged.tgz"), &rogue, "forged-2");
    let unsigned = {
        let mut f = warden_config::archive::unpack(&forged).expect("unpack");
        f.remove(".signatures.json");
        warden_config::archive::pack(&f)
    };
    let cases = [
        ("wrong key", forged.clone(), "signature"),
        ("unsigned", unsigned, "not signed"),
        (
            "tampered",
            tamper(&good, "data.json", r#"{"warden":{"blocked":["echo"]}}"#),
            "does not match its signed hash",
        ),
        (
            "extra file",
            tamper(&good, "policies/extra.rego", "package x\n"),
            "not covered by the signature",
        ),
        ("truncated", good[..good.len() * 2 / 3].to_vec(), "archive"),
        ("garbage", b"<html>oops</html>".to_vec(), "archive"),
    ];
    for (what, bytes, want) in cases {
        let before = gw.status().await["bundle"]["failures"]
            .as_u64()
            .unwrap_or(0);
        srv.set(bytes);
        let deadline = Instant::now() + Duration::from_secs(10);
        let st = loop {
            let st = gw.status().await;
            if st["bundle"]["failures"].as_u64().unwrap_or(0) > before {
                break st;
            }
            assert!(Instant::now() < deadline, "{what}: never refused: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let err = st["bundle"]["last_error"].as_str().unwrap_or_default();
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(st["bundle"]["revision"], "good-1", "{what}");
        assert_eq!(
            outcome(&gw, "echo").await,
            "ok",
            "{what}: the good bundle keeps serving"
        );
    }
    // A properly signed new bundle is taken.
    let next = build_archive(&source, &tmp.path().join("next.tgz"), &private, "good-2");
    srv.set(next);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome(&gw, "echo").await != "denied" {
        assert!(Instant::now() < deadline, "good-2 never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.status().await["bundle"]["revision"], "good-2");
    // A bundle that failed to apply is fetched again, not remembered by
    // its ETag as done: junk under an ETag, then the real bundle under
    // the same one (a failure that passes: a man in the middle once, a
    // full disk) is applied, never left behind a 304.
    let before = gw.status().await["bundle"]["failures"]
        .as_u64()
        .unwrap_or(0);
    srv.set(b"junk".to_vec());
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.status().await["bundle"]["failures"]
        .as_u64()
        .unwrap_or(0)
        <= before
    {
        assert!(Instant::now() < deadline, "junk never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_blocked(&source, &[]);
    srv.replace(build_archive(
        &source,
        &tmp.path().join("third.tgz"),
        &private,
        "good-3",
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.status().await["bundle"]["revision"] != "good-3" {
        assert!(
            Instant::now() < deadline,
            "a bundle refused once is never fetched again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outcome(&gw, "echo").await, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_swaps_under_load_fail_no_request() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let agent = Agent::start(&source, &tmp.path().join("agent"), Some(&private)).expect("agent");
    let gw = Arc::new(gateway_on_agent(
        &agent,
        &public,
        &tmp.path().join("gw"),
        "gw",
    ));
    let url = gw.url("/mock/mcp");

    // Continuous load: 4 clients calling echo; every answer must be a success.
    let stop = Arc::new(AtomicBool::new(false));
    let swapping = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let quiet_lat = Arc::new(Mutex::new(Vec::new()));
    let swap_lat = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (url, stop, swapping, failures) = (
            url.clone(),
            stop.clone(),
            swapping.clone(),
            failures.clone(),
        );
        let (q, w) = (quiet_lat.clone(), swap_lat.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                let r = post_json(&url, call(n, "echo"), &[]).await;
                let us = t.elapsed().as_micros() as u64;
                let ok = matches!(&r, Ok((200, _, b)) if String::from_utf8_lossy(b).contains("\"text\":\"t\""));
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed during load: {r:?}");
                }
                let bucket = if swapping.load(Ordering::Relaxed) { &w } else { &q };
                if let Ok(mut v) = bucket.lock() {
                    v.push(us);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    swapping.store(true, Ordering::Relaxed);
    let mut effect = Vec::new();
    for i in 0..100u32 {
        // Alternate the policy: odd revisions block `add`.
        let blocked: &[&str] = if i % 2 == 1 { &["add"] } else { &[] };
        set_blocked(&source, blocked);
        std::fs::write(source.join("gen.txt"), i.to_string()).expect("gen");
        let t = Instant::now();
        let (s, v) = agent
            .api("POST", "/v1/publish", None)
            .await
            .expect("publish");
        assert_eq!(s, 200, "{v}");
        let rev = v["published"].as_str().expect("revision").to_owned();
        loop {
            if gw.status().await["bundle"]["revision"] == rev.as_str() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "revision {rev} never applied"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        effect.push(t.elapsed());
        // The policy of the new revision decides the very next request.
        let want = if i % 2 == 1 { "denied" } else { "ok" };
        assert_eq!(outcome(&gw, "add").await, want, "swap {i}");
    }
    swapping.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during swaps"
    );
    let st = gw.status().await;
    assert_eq!(st["bundle"]["failures"], 0, "{st}");
    assert!(st["bundle"]["reloads"].as_u64().unwrap_or(0) >= 100, "{st}");
    let pct = |v: &mut Vec<u64>, p: f64| {
        v.sort_unstable();
        v[((v.len() as f64 - 1.0) * p) as usize]
    };
    let mut q = quiet_lat.lock().expect("q").clone();
    let mut w = swap_lat.lock().expect("w").clone();
    effect.sort();
    eprintln!(
        "100 swaps: publish→applied median {:?} p90 {:?} max {:?}; latency without swaps p50 {} µs p99 {} µs ({} calls), during swaps p50 {} µs p99 {} µs ({} calls)",
        effect[50], effect[90], effect[99],
        pct(&mut q, 0.5), pct(&mut q, 0.99), q.len(),
        pct(&mut w, 0.5), pct(&mut w, 0.99), w.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_restarts_on_its_last_good_bundle_with_the_agent_down() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let mut agent =
        Agent::start(&source, &tmp.path().join("agent"), Some(&private)).expect("agent");
    let state = tmp.path().join("gw");
    let gw = gateway_on_agent(&agent, &public, &state, "gw");
    assert_eq!(outcome(&gw, "add").await, "denied");
    let rev = gw.status().await["bundle"]["revision"].clone();
    drop(gw);
    agent.proc.terminate();
    agent.proc.wait_exit(Duration::from_secs(10));

    // Same state directory, agent gone: the last good bundle serves.
    let gw = gateway_on_agent(&agent, &public, &state, "gw");
    assert_eq!(outcome(&gw, "add").await, "denied");
    assert_eq!(outcome(&gw, "echo").await, "ok");
    assert_eq!(gw.status().await["bundle"]["revision"], rev);
    drop(gw);

    // No state and no agent: a clear refusal to start.
    let (ok, _, err) = run_with_timeout(
        std::process::Command::new(bin("warden"))
            .args([
                "run",
                "--agent",
                &agent.url,
                "--agent-token",
                FLEET_TOKEN,
                "--listen",
                "127.0.0.1:1",
                "--state-dir",
            ])
            .arg(tmp.path().join("empty")),
        Duration::from_secs(30),
    )
    .expect("run");
    assert!(!ok);
    assert!(
        err.contains("no bundle") && err.contains("no last good bundle"),
        "{err}"
    );
    // Fetched without a key to check them: said once, loudly.
    assert!(err.contains("without --bundle-public-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_signed_archive_is_watched_like_a_directory() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let file = tmp.path().join("bundle.tar.gz");
    build_archive(&source, &file, &private, "file-1");
    let gw = Gateway::start_with(
        "",
        false,
        &[],
        &[
            "--bundle",
            file.to_str().expect("utf8"),
            "--bundle-public-key",
            public.to_str().expect("utf8"),
            "--state-dir",
            tmp.path().join("gw").to_str().expect("utf8"),
            "--bundle-poll",
            "50ms",
        ],
        None,
    )
    .expect("gateway");
    assert_eq!(outcome(&gw, "add").await, "denied");
    set_blocked(&source, &["echo"]);
    let next = build_archive(&source, &tmp.path().join("next.tgz"), &private, "file-2");
    std::fs::write(tmp.path().join("bundle.tar.gz.tmp"), next).expect("write");
    std::fs::rename(tmp.path().join("bundle.tar.gz.tmp"), &file).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome(&gw, "echo").await != "denied" {
        assert!(Instant::now() < deadline, "file-2 never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.status().await["bundle"]["revision"], "file-2");
}

/// An older bundle is still validly signed: a mirror (or anyone between)
/// serving it again after a newer one would undo a kill switch or a deny.
/// The gateway refuses it as a rollback, across a restart too, and takes
/// the next newer one.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_signed_bundle_is_refused_as_a_rollback() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let open = build_archive(&source, &tmp.path().join("r1.tgz"), &private, "r1");
    set_blocked(&source, &["echo"]);
    let closed = build_archive(&source, &tmp.path().join("r2.tgz"), &private, "r2");
    let srv = Static::start(open.clone());
    let state = tmp.path().join("gw");
    let args = |srv: &Static| {
        vec![
            "--bundle-url".to_owned(),
            format!("http://{}/bundle.tar.gz", srv.addr),
            "--bundle-public-key".to_owned(),
            public.to_str().expect("utf8").to_owned(),
            "--state-dir".to_owned(),
            state.to_str().expect("utf8").to_owned(),
            "--bundle-poll".to_owned(),
            "100ms".to_owned(),
        ]
    };
    let a = args(&srv);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let gw = Gateway::start_with("", false, &[], &a, None).expect("gateway");
    assert_eq!(outcome(&gw, "echo").await, "ok");
    srv.set(closed.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome(&gw, "echo").await != "denied" {
        assert!(Instant::now() < deadline, "r2 never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // r1 again: refused, r2 keeps serving.
    let before = gw.status().await["bundle"]["failures"]
        .as_u64()
        .unwrap_or(0);
    srv.set(open.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = gw.status().await;
        if st["bundle"]["failures"].as_u64().unwrap_or(0) > before {
            break st;
        }
        assert!(Instant::now() < deadline, "r1 never refused: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = st["bundle"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("rollback"), "{err}");
    assert_eq!(outcome(&gw, "echo").await, "denied");
    drop(gw);
    // Restarted against a source serving r1: it starts on the last good
    // (r2), never on r1.
    let gw = Gateway::start_with("", false, &[], &a, None).expect("gateway");
    assert_eq!(gw.status().await["bundle"]["revision"], "r2");
    assert_eq!(outcome(&gw, "echo").await, "denied");
    // A newer build is taken.
    set_blocked(&source, &[]);
    let r3 = build_archive(&source, &tmp.path().join("r3.tgz"), &private, "r3");
    srv.set(r3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome(&gw, "echo").await != "ok" {
        assert!(Instant::now() < deadline, "r3 never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway that starts with no state has no sequence to compare a
/// bundle with: it judges a signed bundle by its signed expiry. An expired
/// one (a mirror or a man in the middle serving an old bundle) and one
/// that never expires are refused; a running gateway refuses an expired
/// one too and keeps what it runs. A fresh build is taken, and the
/// gateway says until when it is good (`/status`, the metric).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_gateway_refuses_an_expired_or_unexpiring_bundle() {
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &[]);
    let short = build_archive_with(
        &source,
        &tmp.path().join("short.tgz"),
        &private,
        "short",
        &["--valid-for", "1s"],
    );
    let never = build_archive_with(
        &source,
        &tmp.path().join("never.tgz"),
        &private,
        "never",
        &["--valid-for", "never"],
    );
    let srv = Static::start(short);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let args = |state: &str, more: &[&str]| {
        let mut a = vec![
            "--bundle-url".to_owned(),
            format!("http://{}/bundle.tar.gz", srv.addr),
            "--bundle-public-key".to_owned(),
            public.to_str().expect("utf8").to_owned(),
            "--state-dir".to_owned(),
            tmp.path().join(state).to_str().expect("utf8").to_owned(),
            "--bundle-poll".to_owned(),
            "100ms".to_owned(),
        ];
        a.extend(more.iter().map(|m| (*m).to_owned()));
        a
    };
    let start = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        Gateway::start_with("", false, &[], &a, None)
    };
    let err = start(args("gw1", &[])).err().expect("expired").to_string();
    assert!(err.contains("expired:"), "{err}");
    srv.set(never);
    let err = start(args("gw2", &[]))
        .err()
        .expect("unexpiring")
        .to_string();
    assert!(err.contains("never expires:"), "{err}");
    // Taken on purpose.
    let gw = start(args("gw3", &["--allow-unexpiring-bundles"])).expect("allowed");
    assert_eq!(gw.status().await["bundle"]["revision"], "never");
    assert!(gw.status().await["bundle"]["expires"].is_null());
    drop(gw);
    // `warden-agent build` signs for 30 days by default.
    let fresh = build_archive(&source, &tmp.path().join("fresh.tgz"), &private, "fresh");
    srv.set(fresh);
    let gw = start(args("gw4", &[])).expect("a fresh bundle is taken");
    let st = gw.status().await;
    assert_eq!(st["bundle"]["revision"], "fresh");
    let at = humantime::parse_rfc3339(st["bundle"]["expires"].as_str().expect("expires"))
        .expect("RFC 3339");
    let left = at
        .duration_since(std::time::SystemTime::now())
        .expect("ahead");
    assert!(
        left > Duration::from_secs(30 * 86_400 - 120) && left <= Duration::from_secs(30 * 86_400),
        "{left:?}"
    );
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_secs();
    let m = gw.metrics().await;
    assert!(
        m.contains(&format!("warden_bundle_expires_timestamp_seconds {secs}")),
        "{m}"
    );
    // Running, it refuses a newer bundle that has expired, and keeps its own.
    let stale = build_archive_with(
        &source,
        &tmp.path().join("stale.tgz"),
        &private,
        "stale",
        &["--valid-for", "1s"],
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    srv.set(stale);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let st = gw.status().await;
        if st["bundle"]["failures"].as_u64().unwrap_or(0) > 0 {
            break st;
        }
        assert!(Instant::now() < deadline, "never refused: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = st["bundle"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("expired:"), "{err}");
    assert_eq!(st["bundle"]["revision"], "fresh");
    assert_eq!(outcome(&gw, "echo").await, "ok");
    // A mirror posing as the agent serves a fresh, validly signed bundle
    // that the agent no longer serves (a kill switch came after it): it
    // cannot prove it current for this request, and is refused.
    let fresh2 = build_archive(&source, &tmp.path().join("fresh2.tgz"), &private, "fresh2");
    srv.set(fresh2);
    let mirror = vec![
        "--agent".to_owned(),
        format!("http://{}", srv.addr),
        "--bundle-public-key".to_owned(),
        public.to_str().expect("utf8").to_owned(),
        "--state-dir".to_owned(),
        tmp.path().join("gw5").to_str().expect("utf8").to_owned(),
    ];
    let err = start(mirror).err().expect("unproven").to_string();
    assert!(err.contains("not proven current"), "{err}");
    // Validity needs a signature, and `never` or a duration (at most 366d).
    for bad in [
        &["--valid-for", "0s"][..],
        &["--valid-for", "soon"],
        &["--valid-for", "367d"],
        &["--valid-for", "8000y"],
    ] {
        let (ok, _, err) = run_with_timeout(
            std::process::Command::new(bin("warden-agent"))
                .arg("build")
                .arg(&source)
                .arg("--out")
                .arg(tmp.path().join("bad.tgz"))
                .args(["--signing-key"])
                .arg(&private)
                .args(bad),
            Duration::from_secs(30),
        )
        .expect("build");
        assert!(!ok, "{bad:?} accepted");
        assert!(err.contains("valid-for"), "{err}");
    }
}

/// A gateway with a token of its own (`warden-agent serve --gateways`)
/// runs on it: it fetches its bundle and serves. Another process holding
/// the shared fleet token and claiming that id gets no bundle, and raises
/// no conflict that would have the real gateway's audit refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_runs_on_a_token_of_its_own_and_nobody_else_speaks_for_it() {
    use sha2::Digest;
    const OWN: &str = "edge-own-token-0123456789";
    let mock = Mock::start(&[]).expect("mock");
    let tmp = tempfile::tempdir().expect("tmp");
    let (private, public) = keygen(tmp.path(), "sign");
    let source = tmp.path().join("source");
    write_source(&source, mock.addr, &["add"]);
    let file = tmp.path().join("gateways.yaml");
    std::fs::write(
        &file,
        format!("edge-own: {}\n", hex::encode(sha2::Sha256::digest(OWN))),
    )
    .expect("gateways file");
    let agent = Agent::start_with(
        &source,
        &tmp.path().join("agent"),
        Some(&private),
        &["--gateways".as_ref(), file.as_os_str()],
    )
    .expect("agent");
    let state = tmp.path().join("gw");
    let args = [
        "--agent",
        agent.url.as_str(),
        "--agent-token",
        OWN,
        "--bundle-public-key",
        public.to_str().expect("utf8"),
        "--state-dir",
        state.to_str().expect("utf8"),
        "--gateway-id",
        "edge-own",
    ];
    let gw = Gateway::start_with("", false, &[], &args, None).expect("gateway");
    gw.wait_ready()
        .expect("the gateway got its bundle with its own token");
    assert_eq!(outcome(&gw, "echo").await, "ok");
    assert_eq!(outcome(&gw, "add").await, "denied");
    // An impostor with the shared fleet token under the same id.
    let imp = match Gateway::on_agent(&agent.url, &public, &tmp.path().join("imp"), "edge-own") {
        Ok(_) => panic!("an impostor of edge-own started"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        imp.contains("HTTP 403"),
        "the impostor got no bundle: {imp}"
    );
    let (_, fleet) = agent.api("GET", "/v1/fleet", None).await.expect("fleet");
    assert!(
        fleet["conflicts"].as_array().is_none_or(Vec::is_empty),
        "{fleet}"
    );
    // The real gateway still serves, and is the one member of that id.
    assert_eq!(outcome(&gw, "echo").await, "ok");
}

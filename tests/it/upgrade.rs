//! Zero-downtime binary upgrade: a second Warden takes over the listening
//! sockets (Pingora's fd hand-over on SIGQUIT) while the first drains. Under
//! continuous load no request fails, an SSE stream that started on the old
//! process runs to its end, and the audit file stays one verifiable chain.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_tests::{bin, mock_bundle, post_json, run_with_timeout, Gateway, Mock, Proc};

/// The call rate of the upgrade test: what the debug build the suite runs
/// sustains on two cores beside the load generator, the server and other
/// tests (`benches/upgrades.sh` runs the same at 1,000 calls/s on the perf
/// build; BENCHMARKS.md).
const UPGRADE_RATE: u32 = 250;

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

fn call(id: u64, tool: &str, args: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}}),
    )
    .expect("json")
}

/// A directory for the upgrade socket that only this user may enter (the
/// gateway refuses any other).
fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_upgrade_under_load_fails_nothing() {
    let mock = Mock::start(&[]).expect("mock");
    let sock_dir = private_dir();
    let sock = sock_dir.path().join("upgrade.sock");
    let sock_s = sock.to_str().expect("utf8").to_owned();
    let mut old = Gateway::start_with(
        &mock_bundle(&[mock.addr], "timeouts: {drain: 2s}"),
        true,
        &[],
        &["--upgrade-sock", &sock_s],
        None,
    )
    .expect("old gateway");
    let url = old.url("/mock/mcp");

    // Continuous load: four clients, a new connection per call.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (url, stop, ok) = (url.clone(), stop.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = c * 1_000_000 + i;
                match post_json(
                    &url,
                    call(id, "echo", json!({"text": format!("m{id}")})),
                    &[],
                )
                .await
                {
                    Ok((200, _, b)) if String::from_utf8_lossy(&b).contains(&format!("m{id}")) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{id}: {other:?}")),
                }
            }
            failures
        }));
    }
    // A 1.5 s SSE stream that starts on the old process.
    let sse_url = url.clone();
    let stream = tokio::spawn(async move {
        post_json(
            &sse_url,
            call(7, "progress", json!({"steps": 15, "delay_ms": 100})),
            &[],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new binary waits for the sockets; SIGQUIT makes the old one send them.
    let dir = old.dir.path();
    let mut new = successor(
        dir,
        old.state.path(),
        &old.addr.to_string(),
        &old.admin.to_string(),
        &sock_s,
        1,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    let _ = Command::new("kill")
        .args(["-QUIT", &old.proc.pid().to_string()])
        .status();
    let old_exit = tokio::task::spawn_blocking(move || {
        let code = old.proc.wait_exit(Duration::from_secs(20));
        (code, old)
    })
    .await
    .expect("join");
    assert_eq!(
        old_exit.0,
        Some(0),
        "the old process drains and exits cleanly"
    );
    // Only the new process serves now.
    let after_exit = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client"));
    }
    let total = ok.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "failed during the upgrade: {failures:?}"
    );
    assert!(before > 10, "load ran before the upgrade ({before})");
    assert!(
        total > after_exit + 10,
        "the new process served ({after_exit} → {total})"
    );
    assert!(new.is_running(), "the new process keeps running");

    let (s, _, body) = stream.await.expect("join").expect("sse completes");
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(
        text.matches("notifications/progress").count(),
        15,
        "every progress event arrived: {text}"
    );
    assert!(
        text.contains(r#""id":7"#) && text.contains("result"),
        "{text}"
    );

    // Both processes wrote one chain into the same file, in turn.
    new.terminate();
    let new_code = tokio::task::spawn_blocking(move || new.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(new_code, Some(0));
    let old = old_exit.1;
    let audit = old.dir.path().join("audit.jsonl");
    let (verified, out, err) = run_with_timeout(
        Command::new(bin("warden"))
            .arg("audit")
            .arg("verify")
            .arg(&audit),
        Duration::from_secs(30),
    )
    .expect("verify");
    assert!(verified, "audit chain across the upgrade: {out}{err}");
    let records = old.audit();
    let echoes = records.iter().filter(|r| r["tool"] == "echo").count() as u64;
    assert_eq!(echoes, total, "one audit record per answered call");
    assert_eq!(
        records.iter().filter(|r| r["tool"] == "progress").count(),
        1
    );
}

/// `warden-load` open-loop at `rate` calls/s over 8 MCP sessions for
/// `duration` (or until SIGINT), its report in `report`.
fn open_loop(url: &str, rate: &str, duration: &str, report: &std::path::Path) -> Proc {
    Proc {
        child: Command::new(bin("warden-load"))
            .args([
                "run",
                "--target",
                url,
                "--rate",
                rate,
                "--duration",
                duration,
            ])
            .args(["--sessions", "8", "--quiet", "--report"])
            .arg(report)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("warden-load"),
        name: "warden-load".into(),
    }
}

/// Starts the next binary waiting for the sockets of the running one.
fn successor(
    dir: &std::path::Path,
    state: &std::path::Path,
    addr: &str,
    admin: &str,
    sock: &str,
    n: usize,
) -> Proc {
    let child = Command::new(bin("warden"))
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", addr, "--admin", admin])
        .args(["--threads", "2", "--upgrade", "--upgrade-sock", sock])
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("new warden");
    Proc {
        child,
        name: format!("warden (generation {n})"),
    }
}

/// One request on a raw HTTP/1.1 connection; the response head, lower-cased.
fn raw_call(conn: &mut std::net::TcpStream, host: &str, id: u64, session: &str) -> String {
    use std::io::{Read, Write};
    let body = call(id, "echo", json!({"text": format!("raw{id}")}));
    let head = format!(
        "POST /mock/mcp HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {session}\r\nmcp-protocol-version: 2025-06-18\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("write head");
    conn.write_all(&body).expect("write body");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The whole response: the head, then content-length bytes.
    loop {
        let n = conn.read(&mut buf).expect("read");
        assert!(n > 0, "connection closed before a response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("length"))
                .expect("a content-length reply");
            if got.len() >= end + 4 + len {
                assert!(
                    text.contains(&format!("raw{id}")),
                    "the echo answered: {text}"
                );
                return head;
            }
        }
    }
}

/// Ten binary upgrades in a row under open-loop load (`warden-load`,
/// `UPGRADE_RATE` calls/s over 8 MCP sessions with keep-alive connections,
/// in front of a server that requires its sessions) fail no call and lose
/// no session: every generation opens the session ids the first issued
/// (the install's key), and from the moment of each hand-over the old
/// process answers with `Connection: close`, so a client's next request
/// goes to a connection the new process accepts instead of onto one the
/// old one is about to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_fail_no_call_and_keep_every_session() {
    const UPGRADES: usize = 10;
    let mock = Mock::start(&["--require-session"]).expect("mock");
    let sock_dir = private_dir();
    let sock = sock_dir.path().join("upgrade.sock");
    let sock_s = sock.to_str().expect("utf8").to_owned();
    let first = Gateway::start_with(
        &mock_bundle(&[mock.addr], "timeouts: {drain: 1s}"),
        true,
        &[],
        &["--upgrade-sock", &sock_s],
        None,
    )
    .expect("first gateway");
    let url = first.url("/mock/mcp");
    let (addr, admin) = (first.addr.to_string(), first.admin.to_string());

    // Load until the last generation has served a while (SIGINT ends the
    // run, with its report).
    let report_dir = tempfile::tempdir().expect("tmp");
    let report = report_dir.path().join("upgrades.json");
    let rate = UPGRADE_RATE.to_string();
    let mut load = open_loop(&url, &rate, "600s", &report);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A connection opened before the first hand-over and used after it is
    // told to close, and then closed, by the process that answered it.
    let (s, h, _) = post_json(&url, INIT, &[]).await.expect("initialize");
    assert_eq!(s, 200);
    let raw_session = warden_tests::header(&h, "mcp-session-id")
        .expect("session")
        .to_owned();
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    let raw_host = addr.clone();
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = raw_call(&mut raw, &addr, 1, &raw_session);
    assert!(head.contains("connection: keep-alive"), "{head}");
    let mut raw = Some(raw);

    let dir = first.dir.path().to_path_buf();
    // One install: every generation opens the sessions of the first.
    let state = first.state.path().to_path_buf();
    let mut old_pid = first.proc.pid();
    let mut first = Some(first);
    let mut generations: Vec<Proc> = Vec::new();
    for n in 1..=UPGRADES {
        let mut new = successor(&dir, &state, &addr, &admin, &sock_s, n);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = Command::new("kill")
            .args(["-QUIT", &old_pid.to_string()])
            .status();
        if let Some(mut raw) = raw.take() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (host, session) = (raw_host.clone(), raw_session.clone());
            let raw_head = tokio::task::spawn_blocking(move || {
                let head = raw_call(&mut raw, &host, 2, &session);
                let mut rest = [0u8; 16];
                let eof = std::io::Read::read(&mut raw, &mut rest).expect("read after close");
                (head, eof)
            })
            .await
            .expect("join");
            assert!(
                raw_head.0.contains("connection: close"),
                "after the hand-over the old process closes gracefully: {}",
                raw_head.0
            );
            assert_eq!(raw_head.1, 0, "and then closes the connection");
        }
        // The old process drains and exits cleanly.
        let code = if n == 1 {
            let mut g = first.take().expect("first generation");
            let (code, g) = tokio::task::spawn_blocking(move || {
                let code = g.proc.wait_exit(Duration::from_secs(20));
                (code, g)
            })
            .await
            .expect("join");
            first = Some(g);
            code
        } else {
            let mut old = generations.pop().expect("previous generation");
            tokio::task::spawn_blocking(move || old.wait_exit(Duration::from_secs(20)))
                .await
                .expect("join")
        };
        assert_eq!(code, Some(0), "generation {} exits cleanly", n - 1);
        assert!(new.is_running(), "generation {n} runs");
        old_pid = new.pid();
        generations.push(new);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(load.is_running(), "the load ran through every upgrade");
    let _ = Command::new("kill")
        .args(["-INT", &load.pid().to_string()])
        .status();
    let code = tokio::task::spawn_blocking(move || {
        let code = load.wait_exit(Duration::from_secs(60));
        (code, load)
    })
    .await
    .expect("join");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report json");
    assert_eq!(code.0, Some(0), "warden-load: {r}");
    let achieved = r["throughput"].as_f64().unwrap_or_default();
    assert!(
        achieved > f64::from(UPGRADE_RATE) * 0.9,
        "the load kept its rate ({achieved}/s): {r}"
    );
    let (done, ok) = (r["completed"].as_u64(), r["ok"].as_u64());
    assert_eq!(
        r["errors"],
        json!({}),
        "calls failed across {UPGRADES} upgrades: {r}"
    );
    assert_eq!(
        r["denied"], 0,
        "calls refused across {UPGRADES} upgrades: {r}"
    );
    assert_eq!(done, r["scheduled"].as_u64(), "{r}");
    assert_eq!(r["reinitialised"], 0, "a session was lost: {r}");
    // Every second of the run served its share, hand-overs included.
    let timeline = r["timeline"].as_array().expect("timeline");
    assert!(timeline.iter().all(|s| s["errors"] == 0), "{timeline:?}");

    let mut last = generations.pop().expect("last generation");
    last.terminate();
    let code = tokio::task::spawn_blocking(move || last.wait_exit(Duration::from_secs(20)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    // One chain across every generation, one record per answered call.
    let (verified, out, err) = run_with_timeout(
        Command::new(bin("warden"))
            .arg("audit")
            .arg("verify")
            .arg(dir.join("audit.jsonl")),
        Duration::from_secs(60),
    )
    .expect("verify");
    assert!(verified, "audit chain across the upgrades: {out}{err}");
    let records = first.expect("first").audit();
    let echoes = records.iter().filter(|r| r["tool"] == "echo").count() as u64;
    assert_eq!(
        Some(echoes),
        ok.map(|ok| ok + 2),
        "one audit record per answered call (+2 raw)"
    );
}

/// A restart keeps every session: the new process opens the ids the old
/// one issued (the install's key in its state directory), still bound to
/// their principal; another install does not know them.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_every_session() {
    let mock = Mock::start(&["--require-session"]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "");
    let first = Gateway::start(&yaml, true).expect("first");
    let mut sessions = Vec::new();
    for _ in 0..8 {
        let (s, h, _) = post_json(&first.url("/mock/mcp"), INIT, &[])
            .await
            .expect("init");
        assert_eq!(s, 200);
        sessions.push(
            warden_tests::header(&h, "mcp-session-id")
                .expect("session")
                .to_owned(),
        );
    }
    let state = tempfile::tempdir().expect("state");
    for entry in std::fs::read_dir(first.state.path()).expect("state dir") {
        let entry = entry.expect("entry");
        // The install's files (its key); not the upgrade socket's directory.
        if !entry.file_type().expect("type").is_file() {
            continue;
        }
        std::fs::copy(entry.path(), state.path().join(entry.file_name())).expect("copy");
    }
    drop(first);
    let state_arg = state.path().to_str().expect("utf8").to_owned();
    let again = Gateway::start_with(&yaml, true, &[], &["--state-dir", &state_arg], None)
        .expect("restarted");
    let other = Gateway::start(&yaml, true).expect("another install");
    for (i, sid) in sessions.iter().enumerate() {
        let h = [
            ("mcp-session-id", sid.as_str()),
            ("mcp-protocol-version", "2025-06-18"),
        ];
        let (s, _, b) = post_json(
            &again.url("/mock/mcp"),
            call(i as u64 + 1, "echo", json!({"text": format!("s{i}")})),
            &h,
        )
        .await
        .expect("call");
        let text = String::from_utf8_lossy(&b);
        assert_eq!(s, 200, "session {i} after the restart: {text}");
        assert!(text.contains(&format!("s{i}")), "{text}");
        let (s, _, _) = post_json(
            &other.url("/mock/mcp"),
            call(100, "echo", json!({"text": "x"})),
            &h,
        )
        .await
        .expect("call");
        assert_eq!(s, 404, "another install opened session {i}");
    }
}

/// A restart of a replica under load (`warden-load`, 8 sessions): SIGTERM
/// drains the calls in flight, the successor on the same address and state
/// directory opens every session the first issued, and no call the gateway
/// received fails: the audit trails of both processes hold exactly the
/// calls the client saw answered. The calls that fail never reached a
/// gateway: refused connections while no process listened, and (a race no
/// server can close for a POST) a request written onto a keep-alive
/// connection at the moment the old process closed it. No session is lost,
/// no call gets an HTTP error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_load_keeps_every_session_and_cuts_no_call() {
    let mock = Mock::start(&["--require-session"]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "timeouts: {drain: 1s}");
    let mut first = Gateway::start(&yaml, true).expect("first");
    let report_dir = tempfile::tempdir().expect("tmp");
    let report = report_dir.path().join("restart.json");
    let url = first.url("/mock/mcp");
    let mut load = open_loop(&url, "200", "8s", &report);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    first.proc.terminate();
    let (code, first) = tokio::task::spawn_blocking(move || {
        let code = first.proc.wait_exit(Duration::from_secs(20));
        (code, first)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0), "the first process drains and exits cleanly");
    let addr = first.addr.to_string();
    let state = first.state.path().to_str().expect("utf8").to_owned();
    let second = Gateway::start_with(
        &yaml,
        true,
        &[],
        &["--listen", &addr, "--state-dir", &state],
        Some(first.addr),
    )
    .expect("successor");
    let (code, _load) = tokio::task::spawn_blocking(move || {
        let code = load.wait_exit(Duration::from_secs(60));
        (code, load)
    })
    .await
    .expect("join");
    assert_eq!(code, Some(0));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("report json");
    assert_eq!(r["reinitialised"], 0, "a session was lost: {r}");
    let errors = r["errors"].as_object().expect("errors");
    assert!(
        errors.keys().all(|k| k == "connect" || k == "io"),
        "only calls that reached no gateway fail: {r}"
    );
    assert_eq!(r["denied"], 0, "{r}");
    // Every call a gateway received was answered: the two audit trails
    // together hold exactly the calls the client saw succeed.
    let audited = |g: &Gateway| {
        g.audit()
            .iter()
            .filter(|x| x["tool"] == "echo" && x["direction"] == "request")
            .count() as u64
    };
    let ok = r["ok"].as_u64().unwrap_or_default();
    let expect_second = ok.saturating_sub(audited(&first));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while audited(&second) < expect_second && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        audited(&first) + audited(&second),
        ok,
        "a call a gateway received was not answered: {r}"
    );
    let timeline = r["timeline"].as_array().expect("timeline");
    let last = timeline.last().expect("a second");
    assert!(
        last["errors"] == 0 && last["done"].as_u64() > Some(0),
        "the successor serves every session: {r}"
    );
    assert!(r["ok"].as_u64() > Some(1000), "{r}");
}

/// The listening sockets are never offered on a path another local user
/// could reach first (a shared `/tmp`, a directory open to others): a
/// process that would receive them there refuses to start, with the
/// reason; any other start hands over in its private default instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_socket_other_users_can_reach_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mock = Mock::start(&[]).expect("mock");
    let open = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let sock = open.path().join("upgrade.sock");
    let sock_s = sock.to_str().expect("utf8");
    let started = Gateway::start_with(
        &mock_bundle(&[mock.addr], ""),
        true,
        &[],
        &["--upgrade-sock", sock_s, "--upgrade"],
        None,
    );
    match started {
        Ok(_) => panic!("received sockets on a path other users can reach"),
        Err(e) => assert!(e.to_string().contains("other users may enter"), "{e}"),
    }
    assert!(!sock.exists(), "nothing was bound");
    // Started plainly with that path: it serves, and the socket it would
    // hand over on is its private default, not the shared one.
    let gw = Gateway::start_with(
        &mock_bundle(&[mock.addr], ""),
        true,
        &[],
        &["--upgrade-sock", sock_s],
        None,
    )
    .expect("starts");
    let (s, _, _) = post_json(&gw.url("/mock/mcp"), INIT, &[])
        .await
        .expect("init");
    assert_eq!(s, 200);
    assert!(!sock.exists());
    assert!(gw.state.path().join("upgrade").is_dir());
}

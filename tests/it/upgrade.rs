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

fn call(id: u64, tool: &str, args: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}}),
    )
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_upgrade_under_load_fails_nothing() {
    let mock = Mock::start(&[]).expect("mock");
    let sock_dir = tempfile::tempdir().expect("tmp");
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
    let child = Command::new(bin("warden"))
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .args([
            "--listen",
            &old.addr.to_string(),
            "--admin",
            &old.admin.to_string(),
        ])
        .args(["--threads", "2", "--upgrade", "--upgrade-sock", &sock_s])
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("new warden");
    let mut new = Proc {
        child,
        name: "warden (new)".into(),
    };
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

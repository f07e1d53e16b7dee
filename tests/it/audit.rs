//! The audit trail: hash chain, tamper detection, rotation, exactly one record
//! per decided message under load, and the fail-closed / fail-open modes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use warden_tests::{bin, mock_bundle, post_json, run_with_timeout, Gateway, Mock};

#[path = "siem.rs"]
mod siem;
#[path = "siem_http.rs"]
mod siem_http;

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"text":"t","a":1,"b":2}}})
        .to_string()
}

fn verify(files: &[PathBuf]) -> (bool, String) {
    let (ok, out, err) = run_with_timeout(
        Command::new(bin("warden"))
            .arg("audit")
            .arg("verify")
            .args(files),
        Duration::from_secs(30),
    )
    .expect("verify runs");
    (ok, format!("{out}{err}"))
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.join("\n") + "\n").expect("write");
}

#[tokio::test(flavor = "multi_thread")]
async fn chain_verifies_and_every_kind_of_tampering_is_detected() {
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "");
    let gw = Gateway::start(&yaml, false).expect("gateway");
    for i in 0..12 {
        let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
        assert_eq!(s, 200);
    }
    let recs = gw.audit_when(|r| r.len() >= 12);
    assert_eq!(recs.len(), 12);
    assert_eq!(recs[0]["seq"], 0);
    assert_eq!(recs[0]["prev"], "0".repeat(64));
    let path = gw.dir.path().join("audit.jsonl");
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(ok && out.contains("ok: 12 record(s)"), "{out}");

    let tmp = tempfile::tempdir().expect("tmp");
    let t = tmp.path().join("t.jsonl");
    let orig = lines(&path);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("edit", {
            let mut l = orig.clone();
            l[5] = l[5].replace("\"outcome\":\"forwarded\"", "\"outcome\":\"denied\"");
            assert_ne!(l[5], orig[5]);
            l
        }),
        ("delete", {
            let mut l = orig.clone();
            l.remove(4);
            l
        }),
        ("reorder", {
            let mut l = orig.clone();
            l.swap(3, 7);
            l
        }),
        ("insert", {
            let mut l = orig.clone();
            l.insert(6, orig[6].clone());
            l
        }),
        ("truncate head", orig[1..].to_vec()),
    ];
    for (what, l) in cases {
        write_lines(&t, &l);
        let (ok, out) = verify(std::slice::from_ref(&t));
        // A trail must begin at its genesis: a head cut off is found;
        // one whose older files were rotated away is checked from where
        // it begins, named (`--from`).
        if what == "truncate head" {
            assert!(
                !ok && out.contains("begins at record 1, not 0"),
                "{what}: {out}"
            );
            let (ok, out) = run_with_timeout(
                Command::new(bin("warden"))
                    .args(["audit", "verify", "--from", "1"])
                    .arg(&t),
                Duration::from_secs(30),
            )
            .map(|(ok, o, e)| (ok, format!("{o}{e}")))
            .expect("verify runs");
            assert!(ok && out.contains("seq 1..11"), "{what} --from 1: {out}");
        } else {
            assert!(!ok, "{what} went unnoticed: {out}");
        }
    }

    // A restart resumes the chain in the same file.
    let keep = tempfile::tempdir().expect("tmp");
    let saved = keep.path().join("audit.jsonl");
    std::fs::copy(&path, &saved).expect("copy");
    drop(gw);
    let gw = Gateway::start_with(
        &yaml,
        false,
        &[],
        &["--audit", saved.to_str().expect("utf8")],
        None,
    )
    .expect("restart");
    let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(99, "echo"), &[])
        .await
        .expect("post");
    assert_eq!(s, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lines(&saved).len() < 13 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, out) = verify(std::slice::from_ref(&saved));
    assert!(ok && out.contains("ok: 13 record(s), seq 0..12"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_the_chain_across_files() {
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "audit:\n  rotate_size: 2KiB\n");
    let gw = Gateway::start(&yaml, false).expect("gateway");
    for i in 0..30 {
        post_json(&gw.url("/mock/mcp"), call(i, "echo"), &[])
            .await
            .expect("post");
    }
    let dir = gw.dir.path().to_path_buf();
    let files = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("audit.jsonl"))
            })
            .collect();
        v.sort();
        v
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while files().iter().map(|f| lines(f).len()).sum::<usize>() < 30
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = files();
    assert!(all.len() >= 3, "rotated into several files: {all:?}");
    let (ok, out) = verify(&all);
    assert!(ok && out.contains("ok: 30 record(s), seq 0..29"), "{out}");
    // Naming only the current file checks the rotated ones beside it too.
    let (ok, out) = verify(&[dir.join("audit.jsonl")]);
    assert!(
        ok && out.contains("ok: 30 record(s), seq 0..29")
            && out.contains(&format!(
                "{} file(s)",
                all.iter()
                    .filter(|f| !f.to_string_lossy().ends_with(".lock"))
                    .count()
            )),
        "{out}"
    );
    // Losing a file from the middle of the set breaks the chain.
    // (`all` is sorted by name: the live file, then the oldest rotated one.)
    let mut gap = all.clone();
    gap.remove(4);
    let (ok, out) = verify(&gap);
    assert!(!ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decided_message_has_exactly_one_record_under_load() {
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "kill_switch:\n  tools: [add]\n");
    let gw = Gateway::start(&yaml, false).expect("gateway");
    let url = gw.url("/mock/mcp");
    let n: u64 = 600;
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let body = match i % 3 {
                0 => call(i, "echo"),
                1 => call(i, "add"),
                // A batch of two: one allowed, one paused.
                _ => format!("[{},{}]", call(i, "echo"), call(i + 1_000_000, "add")),
            };
            post_json(&url, body, &[]).await.map(|r| r.0)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("post"), 200);
    }
    let want = n + n / 3;
    let recs = gw.audit_when(|r| r.len() as u64 >= want);
    let mut by_id: HashMap<i64, Vec<&Value>> = HashMap::new();
    for r in &recs {
        by_id
            .entry(r["jsonrpc_id"].as_i64().expect("id"))
            .or_default()
            .push(r);
    }
    assert_eq!(
        recs.len() as u64,
        want,
        "one record per message, no more, no less"
    );
    for i in 0..n {
        let rs = &by_id[&(i as i64)];
        assert_eq!(rs.len(), 1, "id {i}: {rs:?}");
        let want_outcome = if i % 3 == 1 { "denied" } else { "forwarded" };
        assert_eq!(rs[0]["outcome"], want_outcome, "id {i}");
        if i % 3 == 2 {
            assert_eq!(by_id[&(i as i64 + 1_000_000)].len(), 1);
        }
    }
    let (ok, out) = verify(&[gw.dir.path().join("audit.jsonl")]);
    assert!(ok, "{out}");
}

/// A FIFO the gateway writes its audit to; the reader holds it open without
/// reading until told to, so the writer stalls like a dead disk.
struct StalledSink {
    path: PathBuf,
    go: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<Vec<u8>>,
    _dir: tempfile::TempDir,
}

impl StalledSink {
    fn new() -> StalledSink {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.fifo");
        let (ok, _, err) =
            run_with_timeout(Command::new("mkfifo").arg(&path), Duration::from_secs(10))
                .expect("mkfifo");
        assert!(ok, "{err}");
        let (go, rx) = std::sync::mpsc::channel::<()>();
        let p = path.clone();
        let reader = std::thread::spawn(move || {
            // Blocks until the gateway opens the write end.
            let mut f = std::fs::File::open(&p).expect("open fifo");
            let _ = rx.recv();
            let mut all = Vec::new();
            let _ = f.read_to_end(&mut all);
            all
        });
        StalledSink {
            path,
            go,
            reader,
            _dir: dir,
        }
    }
}

async fn fill_until(url: &str, stop: impl Fn(u16) -> bool, max: u64) -> (u64, Vec<u64>) {
    let mut refused = Vec::new();
    for i in 0..max {
        let (s, h, b) = post_json(url, call(i, "echo"), &[]).await.expect("post");
        if s == 503 {
            let v: Value = serde_json::from_slice(&b).expect("json");
            assert_eq!(v["error"]["code"], -31040, "{v}");
            assert_eq!(warden_tests::header(&h, "retry-after"), Some("1"));
            refused.push(i);
        }
        if stop(s) {
            return (i + 1, refused);
        }
    }
    (max, refused)
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_closed_refuses_calls_while_the_audit_is_stuck_and_loses_nothing() {
    let mock = Mock::start(&[]).expect("mock");
    let sink = StalledSink::new();
    let yaml = mock_bundle(&[mock.addr], "audit:\n  queue: 8\n  fail_mode: closed\n");
    let mut gw = Gateway::start_with(
        &yaml,
        false,
        &[],
        &["--audit", sink.path.to_str().expect("utf8")],
        None,
    )
    .expect("gateway");
    let url = gw.url("/mock/mcp");
    let (sent, refused) = fill_until(&url, |s| s == 503, 20_000).await;
    assert!(
        !refused.is_empty(),
        "the gateway never refused in {sent} calls"
    );
    let upstream_before = mock.posts().await;
    // Refused calls did not reach the server.
    let (s, _, _) = post_json(&url, call(sent, "echo"), &[])
        .await
        .expect("post");
    assert_eq!(s, 503);
    assert_eq!(mock.posts().await, upstream_before);
    // The disk comes back: calls flow again.
    sink.go.send(()).expect("go");
    let mut ok_after = false;
    for i in 0..200 {
        let (s, _, _) = post_json(&url, call(100_000 + i, "echo"), &[])
            .await
            .expect("post");
        if s == 200 {
            ok_after = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok_after, "calls never resumed");
    gw.proc.terminate();
    gw.proc.wait_exit(Duration::from_secs(30));
    let text = sink.reader.join().expect("reader");
    let recs: Vec<Value> = String::from_utf8_lossy(&text)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    // Every call the gateway answered has exactly one record: forwarded or refused.
    let mut count: HashMap<i64, u32> = HashMap::new();
    for r in &recs {
        if let Some(id) = r["jsonrpc_id"].as_i64() {
            *count.entry(id).or_default() += 1;
        }
    }
    for i in 0..=sent {
        assert_eq!(count.get(&(i as i64)), Some(&1), "call {i}");
    }
    let refused_recs = recs
        .iter()
        .filter(|r| r["outcome"] == "audit_unavailable")
        .count();
    assert!(refused_recs > refused.len(), "refusals are audited too");
    for r in recs.iter().filter(|r| r["outcome"] == "audit_unavailable") {
        assert!(r["jsonrpc_id"].is_i64(), "a refusal names the call: {r}");
    }
}

/// `warden_audit_records_dropped_total` in a metrics page.
fn lost(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("warden_audit_records_dropped_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_open_keeps_serving_and_counts_every_lost_record() {
    let mock = Mock::start(&[]).expect("mock");
    let sink = StalledSink::new();
    let yaml = mock_bundle(&[mock.addr], "audit:\n  queue: 8\n  fail_mode: open\n");
    let mut gw = Gateway::start_with(
        &yaml,
        false,
        &[],
        &["--audit", sink.path.to_str().expect("utf8")],
        None,
    )
    .expect("gateway");
    let url = gw.url("/mock/mcp");
    let mut dropped = 0.0;
    let mut sent = 0;
    while dropped == 0.0 && sent < 20_000 {
        for _ in 0..200 {
            let (s, _, _) = post_json(&url, call(sent, "echo"), &[])
                .await
                .expect("post");
            assert_eq!(s, 200, "fail-open never refuses");
            sent += 1;
        }
        dropped = lost(&gw.metrics().await);
    }
    assert!(dropped > 0.0, "no loss counted after {sent} calls");
    // A call's record is made once its reply has left (the logging phase),
    // so the last few may still be queued or counted after the read above:
    // read the counter again once it has stopped moving.
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = lost(&gw.metrics().await);
        if now == dropped {
            break;
        }
        dropped = now;
    }
    sink.go.send(()).expect("go");
    gw.proc.terminate();
    gw.proc.wait_exit(Duration::from_secs(30));
    let text = sink.reader.join().expect("reader");
    let written = String::from_utf8_lossy(&text).lines().count() as f64;
    assert_eq!(
        written + dropped,
        sent as f64,
        "written + counted losses = every call"
    );
}

/// Calls of the risk tiers `audit.log_io` names (HIGH and CRITICAL by
/// default) are logged in full, arguments and result, with what DLP finds
/// redacted; other tiers keep the digest only; `log_io: []` turns it off.
#[tokio::test(flavor = "multi_thread")]
async fn risky_calls_are_logged_in_full_after_redaction() {
    let mock = Mock::start(&[]).expect("mock");
    let catalog =
        "catalog:\n  mock:\n    tools:\n      echo: {risk: HIGH}\n      add: {risk: LOW}\n";
    let text = "page bob@example.com about it";
    let echo = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text": text}}}).to_string();
    let add = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}).to_string();
    for (extra, logged) in [("", true), ("audit: {log_io: []}\n", false)] {
        let gw = Gateway::start(
            &mock_bundle(&[mock.addr], &format!("{catalog}{extra}")),
            false,
        )
        .expect("gateway");
        for body in [&echo, &add] {
            let (s, _, b) = post_json(&gw.url("/mock/mcp"), body.clone(), &[])
                .await
                .expect("post");
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        }
        let recs = gw.audit_when(|r| r.iter().any(|x| x["tool"] == "add"));
        let of = |tool: &str, dir: &str| {
            recs.iter()
                .find(|x| x["tool"] == tool && x["direction"] == dir)
                .cloned()
        };
        let req = of("echo", "request").expect("echo request record");
        if logged {
            assert_eq!(
                req["arguments"],
                json!({"text": "page [REDACTED] about it"}),
                "{req}"
            );
            let resp = of("echo", "response").expect("echo response record");
            let shown = resp["result"].to_string();
            assert!(
                shown.contains("[REDACTED]") && !shown.contains("bob@example.com"),
                "{resp}"
            );
            assert_eq!(resp["risk"], "HIGH", "{resp}");
        } else {
            assert!(req["arguments"].is_null(), "{req}");
            assert!(of("echo", "response").is_none_or(|r| r["result"].is_null()));
        }
        // LOW: the digest only, whatever log_io says.
        let low = of("add", "request").expect("add record");
        assert!(
            low["arguments"].is_null() && low["args_digest"].is_string(),
            "{low}"
        );
        assert!(of("add", "response").is_none_or(|r| r["result"].is_null()));
        // The records still chain.
        let (ok, out) = verify(&[gw.dir.path().join("audit.jsonl")]);
        assert!(ok, "{out}");
    }
}

/// One record is one line: a client that pretty-prints its request (JSON
/// whitespace — newlines, returns, tabs — inside `arguments`) cannot split
/// a record kept with its arguments into lines of its own choosing (a
/// forged record of another principal, a `seq` that jumps the exporters'
/// cursors, a trail the gateway would not restart on).
#[tokio::test(flavor = "multi_thread")]
async fn whitespace_in_logged_arguments_never_splits_a_record() {
    let mock = Mock::start(&[]).expect("mock");
    let yaml = mock_bundle(&[mock.addr], "audit:\n  include_arguments: true\n");
    let gw = Gateway::start(&yaml, false).expect("gateway");
    let forged = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"a\",\"x\":\n{\"seq\":999999,\"prev\":\"00\",\"outcome\":\"forwarded\",\"tool\":\"forged\",\"principal\":\"someone-else\"}\r\n,\t\"y\":1}}}";
    let (s, _, b) = post_json(&gw.url("/mock/mcp"), forged.to_owned(), &[])
        .await
        .expect("post");
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, _) = post_json(&gw.url("/mock/mcp"), call(2, "echo"), &[])
        .await
        .expect("post");
    assert_eq!(s, 200);
    let recs = gw.audit_when(|r| r.len() >= 4);
    let path = gw.dir.path().join("audit.jsonl");
    let all = lines(&path);
    assert_eq!(all.len(), recs.len(), "{all:#?}");
    for (i, l) in all.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).expect("each line is a record");
        assert_eq!(v["seq"], i as u64, "{l}");
        assert!(!l.bytes().any(|b| b < 0x20), "{l}");
    }
    let kept = recs
        .iter()
        .find(|r| r["direction"] == "request" && r["arguments"]["x"]["seq"] == 999999)
        .expect("the arguments are kept, as values");
    assert_eq!(kept["principal"], recs[recs.len() - 1]["principal"]);
    let (ok, out) = verify(std::slice::from_ref(&path));
    assert!(ok, "{out}");
}

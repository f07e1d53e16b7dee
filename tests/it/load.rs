//! `warden-load` against real processes: the 100K/day profile (compressed)
//! through the full example pipeline, a server stall that an open-loop run
//! must show in its percentiles, a saturation search and report comparison.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use warden_tests::{bin, example_bundle, run_with_timeout, Gateway, Mock};

fn load(args: &[&str]) -> (bool, String, String) {
    run_with_timeout(
        Command::new(bin("warden-load")).args(args),
        Duration::from_secs(120),
    )
    .expect("warden-load runs")
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report json")
}

fn start_example(mock: &Mock) -> Gateway {
    let (yaml, files) = example_bundle(mock.addr, |y| y);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    Gateway::start_with(&yaml, true, &refs, &[], None).expect("gateway")
}

#[test]
fn compressed_day_through_the_full_pipeline() {
    let mock = Mock::start(&[]).expect("mock");
    let gw = start_example(&mock);
    let dir = tempfile::tempdir().expect("tmp");
    // The built-in day with 1 500 calls over 3 s, plus denied traffic: cards
    // and secrets are blocked by DLP, purge needs a justification.
    let scenario = dir.path().join("day.yaml");
    std::fs::write(
        &scenario,
        r#"
name: day-small
diurnal: {total: 1500}
duration: 3s
sessions: 4
principals:
  - {x-api-key: wk_demo_dev_7Qm2}
  - {x-api-key: wk_demo_ops_Z8r5}
mix:
  - {weight: 50, op: call, tool: echo, payload_bytes: 1024}
  - {weight: 5, op: call, tool: echo, payload_bytes: 16384}
  - {weight: 5, op: call, tool: echo, payload_bytes: 1024, pii: true, expect: denied}
  - {weight: 3, op: call, tool: echo, payload_bytes: 1024, secret: true, expect: denied}
  - {weight: 5, op: call, tool: purge, arguments: {table: users}, expect: denied}
  - {weight: 8, op: call, tool: progress, arguments: {steps: 3}}
  - {weight: 10, op: list}
  - {weight: 4, op: ping}
  - {weight: 2, op: initialize}
"#,
    )
    .expect("scenario");
    let report = dir.path().join("day.json");
    let (ok, out, err) = load(&[
        "run",
        "--scenario",
        scenario.to_str().expect("utf8"),
        "--target",
        &gw.url("/mock/mcp"),
        "--report",
        report.to_str().expect("utf8"),
        "--max-error-rate",
        "0",
    ]);
    assert!(ok, "warden-load failed:\n{out}\n{err}");
    let r = read_json(&report);
    let scheduled = r["scheduled"].as_u64().expect("scheduled");
    assert!((1495..=1505).contains(&scheduled), "{scheduled} of 1500");
    assert_eq!(r["errors"], serde_json::json!({}), "{out}");
    assert_eq!(r["completed"].as_u64(), Some(scheduled));
    // Every expected denial was denied, nothing else was.
    let ops = &r["ops"];
    for name in [
        "call:echo:1024B:pii",
        "call:echo:1024B:secret",
        "call:purge",
    ] {
        let o = &ops[name];
        assert!(o["denied"].as_u64().expect("denied") > 0, "{name}: {o}");
        assert_eq!(o["ok"].as_u64(), Some(0), "{name}: {o}");
    }
    assert_eq!(ops["call:echo:1024B"]["denied"].as_u64(), Some(0));
    assert!(ops["call:progress"]["ok"].as_u64().expect("sse ok") > 0);
    let lat = &r["latency_us"];
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(lat[p].as_u64().expect(p) > 0, "{p}: {lat}");
    }
    assert!(lat["p50"].as_u64() <= lat["p99"].as_u64());
    assert!(r["timeline"].as_array().expect("timeline").len() >= 3);
    // The printed summary carries the percentiles.
    assert!(
        out.contains("p99.9") && out.contains("call:progress"),
        "{out}"
    );
    // The gateway audited every message (initialize sessions and
    // notifications included, so at least one record per call).
    let audited = gw.audit_when(|a| a.len() as u64 >= scheduled);
    assert!(audited.len() as u64 >= scheduled);
}

#[test]
fn an_open_loop_run_shows_a_server_stall() {
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let report = dir.path().join("stall.json");
    let pid = mock.proc.pid().to_string();
    // Freeze the server for 600 ms a second into a 3 s run at 200/s. A
    // closed-loop client would record one slow request per connection; an
    // open-loop one records every request that fell due during the stall.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connections = |rt: &tokio::runtime::Runtime| {
        rt.block_on(mock.stats()).expect("stats")["connections"]
            .as_u64()
            .expect("connections")
    };
    let before = connections(&rt);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        let _ = Command::new("kill").args(["-STOP", &pid]).status();
        std::thread::sleep(Duration::from_millis(600));
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
    });
    let (ok, out, err) = load(&[
        "run",
        "--target",
        &format!("http://{}/mcp", mock.addr),
        "--rate",
        "200",
        "--duration",
        "3s",
        "--sessions",
        "2",
        "--connections",
        "4",
        "--report",
        report.to_str().expect("utf8"),
        "--quiet",
    ]);
    stopper.join().expect("stopper");
    // The ~120 requests that fell due during the stall queued for the four
    // connections instead of opening one each (the stats request is one more).
    let opened = connections(&rt) - before - 1;
    assert!(
        opened <= 4,
        "{opened} connections opened for a connection set of 4"
    );
    assert!(ok, "{out}\n{err}");
    let r = read_json(&report);
    assert_eq!(r["errors"], serde_json::json!({}), "{out}");
    // The generator's own count agrees with the server's.
    assert_eq!(r["connections_opened"].as_u64(), Some(opened), "{out}");
    // ~120 of 600 requests fell due during the stall: p90 still sees it,
    // their wait for a free connection counted in their latency.
    let p90 = r["latency_us"]["p90"].as_u64().expect("p90");
    let p99 = r["latency_us"]["p99"].as_u64().expect("p99");
    assert!(
        p99 >= 400_000,
        "p99 {p99} µs should include the 600 ms stall"
    );
    assert!(p90 >= 100_000, "p90 {p90} µs should include the stall");
    // The timeline places the stall: some second holds it, and the first
    // second (before it) is faster than that one. Relative, not a bound in
    // milliseconds: a loaded CI machine slows every second.
    let seconds = r["timeline"].as_array().expect("timeline");
    let p99s: Vec<u64> = seconds
        .iter()
        .map(|s| s["p99_us"].as_u64().expect("p99 of a second"))
        .collect();
    let worst = *p99s.iter().max().expect("seconds");
    assert!(worst >= 400_000, "no second shows the stall: {p99s:?}");
    assert!(
        p99s[0] < worst,
        "the first second is before the stall: {p99s:?}"
    );
}

#[test]
fn saturation_search_and_report_comparison() {
    let mock = Mock::start(&[]).expect("mock");
    let dir = tempfile::tempdir().expect("tmp");
    let sat = dir.path().join("sat.json");
    let target = format!("http://{}/mcp", mock.addr);
    let (ok, out, err) = load(&[
        "saturate",
        "--target",
        &target,
        "--step",
        "500ms",
        "--max-clients",
        "4",
        "--p99",
        "1s",
        "--report",
        sat.to_str().expect("utf8"),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("max sustainable rate"), "{out}");
    let s = read_json(&sat);
    let steps = s["steps"].as_array().expect("steps");
    assert_eq!(
        steps
            .iter()
            .map(|x| x["workers"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>(),
        [1, 2, 4]
    );
    assert!(s["max_sustainable_rps"].as_f64().expect("rps") > 10.0);
    assert!(steps.iter().all(|x| x["report"]["mode"] == "closed"));

    // Two open-loop reports and their comparison.
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for (path, rate) in [(&a, "100"), (&b, "300")] {
        let (ok, out, err) = load(&[
            "run",
            "--target",
            &target,
            "--rate",
            rate,
            "--duration",
            "1s",
            "--quiet",
            "--report",
            path.to_str().expect("utf8"),
        ]);
        assert!(ok, "{out}\n{err}");
    }
    let (ok, out, err) = load(&["compare", a.to_str().expect("a"), b.to_str().expect("b")]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("throughput/s"))
        .expect("throughput row");
    let ratio: f64 = line
        .split_whitespace()
        .last()
        .and_then(|r| r.parse().ok())
        .expect("ratio");
    assert!((2.5..=3.5).contains(&ratio), "{line}");
    // A bad scenario is refused with the field named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "rate: 10\nmix: [{op: call, tol: echo}]").expect("bad");
    let (ok, _, err) = load(&[
        "run",
        "--scenario",
        bad.to_str().expect("bad"),
        "--target",
        &target,
    ]);
    assert!(!ok && err.contains("mix[0]"), "{err}");
}

/// A server that loses its sessions (a restart) answers 404 for them: the
/// load generator starts a new session and sends again, as MCP asks of a
/// client, and counts it, instead of reporting failures a real client
/// would not have.
#[test]
fn a_lost_session_is_started_anew() {
    let first = Mock::start(&["--require-session"]).expect("mock");
    let addr = first.addr;
    let dir = tempfile::tempdir().expect("tmp");
    let report = dir.path().join("reinit.json");
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1000));
        drop(first);
        // The same address, no sessions.
        let child = Command::new(bin("warden-mock"))
            .args([
                "--listen",
                &addr.to_string(),
                "--threads",
                "1",
                "--require-session",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("second mock");
        warden_tests::Proc {
            child,
            name: "warden-mock (restarted)".into(),
        }
    });
    let (ok, out, err) = load(&[
        "run",
        "--target",
        &format!("http://{addr}/mcp"),
        "--rate",
        "50",
        "--duration",
        "3s",
        "--sessions",
        "2",
        "--report",
        report.to_str().expect("utf8"),
        "--quiet",
    ]);
    let _second = restarter.join().expect("restarter");
    let r = read_json(&report);
    assert!(
        r["reinitialised"].as_u64().is_some_and(|n| n >= 1),
        "{out}\n{err}\n{r}"
    );
    // After the restart the calls succeed again on new sessions.
    let last = r["timeline"].as_array().and_then(|t| t.last()).cloned();
    assert!(
        last.as_ref()
            .is_some_and(|s| s["errors"] == 0 && s["done"].as_u64() > Some(0)),
        "{ok} {last:?}"
    );
}
